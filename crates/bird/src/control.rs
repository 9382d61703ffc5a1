//! The control service (`calico.bird.v1.Bird`) on the Unix socket: peer
//! status and received routes, for `bird show` and the node agent.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use ipnetwork::IpNetwork;
use proto::bird::bird_server::{Bird, BirdServer};
use proto::bird::{
    self as pb, CountRoutesRequest, CountRoutesResponse, ListPeersRequest, ListPeersResponse,
    ListRoutesRequest, ListRoutesResponse, PeerRouteCount,
};
use proto::common::IpAddress;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::fsm::State;
use crate::packet::Family;
use crate::packet::aspath::SegmentType;
use crate::packet::attributes::{Origin, PathAttrs};
use crate::session::Local;
use crate::speaker::Peers;

/// Routes per streamed message.
const BATCH: usize = 1000;

#[derive(Debug, Clone)]
pub struct BirdService {
    peers: Arc<Peers>,
    local: Local,
}

impl BirdService {
    pub fn new(peers: Arc<Peers>, local: Local) -> Self {
        BirdService { peers, local }
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

/// The wire form of one received route.
pub fn route(peer: IpAddr, net: IpNetwork, a: &PathAttrs) -> pb::Route {
    pb::Route {
        prefix: Some(net.into()),
        peer: Some(peer.into()),
        next_hop: a.next_hop.map(IpAddress::from),
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
        link_local_next_hop: a
            .link_local_next_hop
            .map(|l| IpAddress::from(IpAddr::V6(l))),
    }
}

type RouteStream = Pin<Box<dyn Stream<Item = Result<ListRoutesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Bird for BirdService {
    async fn list_peers(
        &self,
        _: Request<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, Status> {
        let peers = self
            .peers
            .list
            .iter()
            .map(|p| {
                let s = p.status.borrow().clone();
                let received = p.rib.read().map(|r| r.len() as u64).unwrap_or(0);
                let neg = s.negotiated.as_ref();
                pb::Peer {
                    address: Some(p.config.address.into()),
                    asn: p.config.asn,
                    state: state(s.state) as i32,
                    since_unix_ms: s
                        .since
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0),
                    prefixes_received: received,
                    prefixes_advertised: s.prefixes_advertised,
                    last_error: s.last_error.unwrap_or_default(),
                    router_id: neg.map(|n| IpAddress::from(IpAddr::V4(n.peer_id))),
                    hold_time: neg.map(|n| u32::from(n.hold_time)).unwrap_or(0),
                    families: neg
                        .map(|n| n.families.iter().map(|f| f.name().to_string()).collect())
                        .unwrap_or_default(),
                    internal: p.config.internal(self.local.asn),
                    local_endpoint: s.local.map(|a| a.to_string()).unwrap_or_default(),
                    remote_endpoint: s.remote.map(|a| a.to_string()).unwrap_or_default(),
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
        let only = match &req.get_ref().peer {
            Some(a) => Some(IpAddr::try_from(a).map_err(Status::from)?),
            None => None,
        };
        // Snapshot under the lock (Arc clones only), convert outside it.
        let mut snapshots = Vec::new();
        for p in &self.peers.list {
            if only.is_some_and(|o| o.to_canonical() != p.config.address.to_canonical()) {
                continue;
            }
            let snap = p
                .rib
                .read()
                .map(|r| r.snapshot())
                .map_err(|_| Status::internal("routing table lock poisoned; restart bird"))?;
            snapshots.push((p.config.address, snap));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for (peer, mut snap) in snapshots {
                snap.sort_by_key(|a| a.0);
                for chunk in snap.chunks(BATCH) {
                    let routes = chunk.iter().map(|(n, a)| route(peer, *n, a)).collect();
                    if tx.send(Ok(ListRoutesResponse { routes })).await.is_err() {
                        return;
                    }
                }
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
        let mut total = 0;
        let mut peers = Vec::new();
        for p in &self.peers.list {
            let (v4, v6) = p
                .rib
                .read()
                .map(|r| {
                    (
                        r.count(Family::Ipv4Unicast) as u64,
                        r.count(Family::Ipv6Unicast) as u64,
                    )
                })
                .unwrap_or((0, 0));
            total += v4 + v6;
            peers.push(PeerRouteCount {
                peer: Some(p.config.address.into()),
                ipv4: v4,
                ipv6: v6,
            });
        }
        Ok(Response::new(CountRoutesResponse { peers, total }))
    }
}
