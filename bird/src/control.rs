//! The control service (`calico.bird.v1.Bird`) on the Unix socket: peer
//! status, the routing table and its counters, for `bird show` and the
//! node agent.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use proto::bird::bird_server::{Bird, BirdServer};
use proto::bird::{
    self as pb, CountRoutesRequest, CountRoutesResponse, ListPeersRequest, ListPeersResponse,
    ListRoutesRequest, ListRoutesResponse, PeerRouteCount,
};
use proto::common::IpAddress;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::fsm::State;
use crate::packet::aspath::SegmentType;
use crate::packet::attributes::Origin;
use crate::rib::{RouteRow, RowFilter};
use crate::speaker::Speaker;

/// Routes per streamed message.
const BATCH: usize = 1000;

#[derive(Debug, Clone)]
pub struct BirdService {
    speaker: Arc<Speaker>,
}

impl BirdService {
    pub fn new(speaker: Arc<Speaker>) -> Self {
        BirdService { speaker }
    }

    pub fn into_server(self) -> BirdServer<Self> {
        BirdServer::new(self)
    }
}

fn state(s: State) -> pb::SessionState {
    match s {
        State::Idle => pb::SessionState::Idle,
        State::Connect => pb::SessionState::Connect,
        State::Active => pb::SessionState::Active,
        State::OpenSent => pb::SessionState::OpenSent,
        State::OpenConfirm => pb::SessionState::OpenConfirm,
        State::Established => pb::SessionState::Established,
    }
}

fn segment_type(t: SegmentType) -> pb::AsPathSegmentType {
    match t {
        SegmentType::Set => pb::AsPathSegmentType::Set,
        SegmentType::Sequence => pb::AsPathSegmentType::Sequence,
        SegmentType::ConfedSequence => pb::AsPathSegmentType::ConfedSequence,
        SegmentType::ConfedSet => pb::AsPathSegmentType::ConfedSet,
    }
}

fn origin(o: Origin) -> pb::Origin {
    match o {
        Origin::Igp => pb::Origin::Igp,
        Origin::Egp => pb::Origin::Egp,
        Origin::Incomplete => pb::Origin::Incomplete,
    }
}

fn address(ip: IpAddr) -> IpAddress {
    IpAddress::from(ip)
}

/// The wire form of one path.
pub fn route(r: &RouteRow) -> pb::Route {
    let a = &r.attrs;
    pb::Route {
        prefix: Some(r.prefix.into()),
        peer: r.peer.map(address),
        next_hop: a.next_hop.map(address),
        origin: origin(a.origin) as i32,
        as_path: a
            .as_path
            .segments
            .iter()
            .map(|s| pb::AsPathSegment {
                r#type: segment_type(s.kind) as i32,
                asns: s.asns.clone(),
            })
            .collect(),
        local_pref: a.local_pref,
        med: a.med,
        communities: a.communities.clone(),
        large_communities: a
            .large_communities
            .iter()
            .map(|c| pb::LargeCommunity {
                global_admin: c[0],
                local_data1: c[1],
                local_data2: c[2],
            })
            .collect(),
        atomic_aggregate: a.atomic_aggregate,
        link_local_next_hop: a.link_local_next_hop.map(|l| address(IpAddr::V6(l))),
        best: r.best,
        ecmp: r.ecmp,
        stale: r.stale,
        local: r.peer.is_none(),
        originator_id: a.originator_id.map(|o| address(IpAddr::V4(o))),
        cluster_list: a
            .cluster_list
            .iter()
            .map(|c| address(IpAddr::V4(*c)))
            .collect(),
    }
}

type RouteStream = Pin<Box<dyn Stream<Item = Result<ListRoutesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Bird for BirdService {
    async fn list_peers(
        &self,
        _: Request<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, Status> {
        let local_as = self.speaker.local().await.map(|l| l.asn);
        let entries = self
            .speaker
            .peers()
            .read()
            .map(|t| t.list.clone())
            .unwrap_or_default();
        let peers = entries
            .iter()
            .map(|e| {
                let s = e.handle.status.borrow().clone();
                let neg = s.negotiated.as_ref();
                let stats = &e.handle.stats;
                let load =
                    |v: &std::sync::atomic::AtomicU64| v.load(std::sync::atomic::Ordering::Relaxed);
                pb::Peer {
                    address: Some(e.config.address().into()),
                    asn: e.config.asn(),
                    state: state(s.state) as i32,
                    since_unix_ms: s
                        .since
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0),
                    prefixes_received: stats.received(),
                    prefixes_advertised: e.handle.out.advertised() as u64,
                    last_error: s.last_error.unwrap_or_default(),
                    router_id: neg.map(|n| IpAddress::from(IpAddr::V4(n.peer_id))),
                    hold_time: neg.map(|n| u32::from(n.hold_time)).unwrap_or(0),
                    families: neg
                        .map(|n| n.families.iter().map(|f| f.name().to_string()).collect())
                        .unwrap_or_default(),
                    internal: local_as.is_some_and(|a| e.config.policy.internal(a)),
                    local_endpoint: s.local.map(|a| a.to_string()).unwrap_or_default(),
                    remote_endpoint: s.remote.map(|a| a.to_string()).unwrap_or_default(),
                    name: e.config.name.clone().unwrap_or_default(),
                    prefixes_stale: load(&stats.stale),
                    prefixes_rejected: load(&stats.rejected),
                    rr_client: e.config.policy.rr_client,
                    bfd: self
                        .speaker
                        .bfd_state(e.config.address())
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(ListPeersResponse { peers }))
    }

    type ListRoutesStream = RouteStream;

    async fn list_routes(
        &self,
        req: Request<ListRoutesRequest>,
    ) -> Result<Response<RouteStream>, Status> {
        let req = req.into_inner();
        let filter = RowFilter {
            peer: match &req.peer {
                Some(a) => Some(IpAddr::try_from(a).map_err(Status::from)?),
                None => None,
            },
            best_only: req.best_only,
        };
        let rib = self.speaker.rib().clone();
        // The first chunk here, so a dead RIB task is an error, not an
        // empty stream.
        let first = rib.rows(None, BATCH, filter.clone()).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut chunk = first;
            loop {
                if !chunk.rows.is_empty() {
                    let routes = chunk.rows.iter().map(route).collect();
                    if tx.send(Ok(ListRoutesResponse { routes })).await.is_err() {
                        return;
                    }
                }
                if chunk.done {
                    return;
                }
                chunk = match rib.rows(chunk.resume, BATCH, filter.clone()).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn count_routes(
        &self,
        _: Request<CountRoutesRequest>,
    ) -> Result<Response<CountRoutesResponse>, Status> {
        use std::sync::atomic::Ordering::Relaxed;
        let entries = self
            .speaker
            .peers()
            .read()
            .map(|t| t.list.clone())
            .unwrap_or_default();
        let mut total = 0;
        let mut peers = Vec::new();
        for e in &entries {
            let v4 = e.handle.stats.received_v4.load(Relaxed);
            let v6 = e.handle.stats.received_v6.load(Relaxed);
            total += v4 + v6;
            peers.push(PeerRouteCount {
                peer: Some(e.config.address().into()),
                ipv4: v4,
                ipv6: v6,
            });
        }
        let stats = self.speaker.rib().stats();
        Ok(Response::new(CountRoutesResponse {
            peers,
            total,
            loc_rib_ipv4: stats.loc_rib_v4.load(Relaxed),
            loc_rib_ipv6: stats.loc_rib_v6.load(Relaxed),
        }))
    }
}
