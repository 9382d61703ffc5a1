//! The client of bird's route stream (`calico.routes.v1.RouteService`):
//! what felix runs, and what bird's tests and benchmarks watch with.
//! [`watch`] connects, folds bird's batches into [`RouteEvent`]s with a
//! [`Feed`], and reconnects with back-off.
//!
//! After each connect bird sends every best route, then `snapshot_done`,
//! then changes. Until `snapshot_done` the client only collects; then the
//! collected set *replaces* what the consumer holds
//! ([`RouteEvent::Replace`]: routes bird no longer has go). A batch bird
//! marks `resync` (this client fell too far behind) starts such a
//! snapshot over on the same stream. If the stream breaks (bird
//! restarting), the consumer keeps every route it has — forwarding goes
//! on, as graceful restart promises — until the next snapshot reconciles;
//! bird delays that snapshot after its own restart until its peers have
//! resent their routes.
//!
//! ECMP: bird lists every next hop of the equal best paths; the consumer
//! gets them all ([`NextHops`]), sorted, without duplicates.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use ipnetwork::IpNetwork;
use tokio::time::Instant;

use crate::routes::route_service_client::RouteServiceClient;
use crate::routes::{RouteBatch, WatchRoutesRequest};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A route's next hops: one, or the set of equal best paths (ECMP),
/// sorted and without duplicates. One next hop (nearly every route) does
/// not allocate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHops(Repr);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    One(IpAddr),
    /// Two or more.
    Many(Arc<[IpAddr]>),
}

impl NextHops {
    /// The set of `hops` (any order, duplicates dropped); `None` if empty.
    pub fn new(hops: impl IntoIterator<Item = IpAddr>) -> Option<NextHops> {
        let mut it = hops.into_iter();
        let first = it.next()?;
        // The common case, one next hop, allocates nothing.
        let Some(second) = it.next() else {
            return Some(NextHops(Repr::One(first)));
        };
        let mut v = vec![first, second];
        v.extend(it);
        v.sort_unstable();
        v.dedup();
        if v.len() == 1 {
            Some(NextHops(Repr::One(v[0])))
        } else {
            Some(NextHops(Repr::Many(v.into())))
        }
    }

    /// The lowest next hop: the one a single-path route takes.
    pub fn first(&self) -> IpAddr {
        self.as_slice()[0]
    }

    pub fn as_slice(&self) -> &[IpAddr] {
        match &self.0 {
            Repr::One(a) => std::slice::from_ref(a),
            Repr::Many(v) => v,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Never true: a set has at least one next hop.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// More than one next hop.
    pub fn is_ecmp(&self) -> bool {
        matches!(self.0, Repr::Many(_))
    }

    /// The next hops `keep` accepts; `None` if that leaves none.
    pub fn filter(&self, keep: impl Fn(IpAddr) -> bool) -> Option<NextHops> {
        if self.as_slice().iter().all(|&a| keep(a)) {
            return Some(self.clone());
        }
        NextHops::new(self.as_slice().iter().copied().filter(|&a| keep(a)))
    }
}

impl From<IpAddr> for NextHops {
    fn from(a: IpAddr) -> NextHops {
        NextHops(Repr::One(a))
    }
}

impl From<std::net::Ipv4Addr> for NextHops {
    fn from(a: std::net::Ipv4Addr) -> NextHops {
        NextHops(Repr::One(IpAddr::V4(a)))
    }
}

/// `10.0.0.2`, or an ECMP set `10.0.0.2,10.0.0.3`.
impl FromStr for NextHops {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<NextHops, Self::Err> {
        let hops = s
            .split(',')
            .map(|h| h.trim().parse())
            .collect::<Result<Vec<IpAddr>, _>>()?;
        // split yields at least one item, so the set is never empty.
        Ok(NextHops::new(hops).unwrap_or(NextHops(Repr::One(IpAddr::from([0, 0, 0, 0])))))
    }
}

impl fmt::Display for NextHops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// The pure part: folding batches into what the consumer must do.
#[derive(Debug, Default)]
pub struct Feed {
    /// `Some` while collecting a snapshot.
    pending: Option<HashMap<IpNetwork, NextHops>>,
}

/// What to tell the consumer after a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Apply {
    Nothing,
    Replace(Vec<(IpNetwork, NextHops)>),
    Changes(Vec<(IpNetwork, Option<NextHops>)>),
}

impl Feed {
    /// A new stream starts: collect its snapshot.
    pub fn start(&mut self) {
        self.pending = Some(HashMap::new());
    }

    pub fn batch(&mut self, b: &RouteBatch) -> Apply {
        // bird fell too far behind this watcher and starts over with a new
        // snapshot: collect it, and replace everything at snapshot_done
        // (withdrawals missed meanwhile are applied then).
        if b.resync {
            self.start();
        }
        let mut changes = Vec::new();
        for r in &b.upserts {
            let Some(prefix) = r.prefix.as_ref().and_then(|p| IpNetwork::try_from(p).ok()) else {
                continue;
            };
            // Every next hop of the ECMP set (ones that do not parse are
            // left out); none at all: nothing to route by.
            let Some(nh) =
                NextHops::new(r.next_hops.iter().filter_map(|a| IpAddr::try_from(a).ok()))
            else {
                continue;
            };
            changes.push((prefix, Some(nh)));
        }
        for p in &b.withdraws {
            if let Ok(prefix) = IpNetwork::try_from(p) {
                changes.push((prefix, None));
            }
        }
        match &mut self.pending {
            Some(map) => {
                for (p, nh) in changes {
                    match nh {
                        Some(nh) => {
                            map.insert(p, nh);
                        }
                        None => {
                            map.remove(&p);
                        }
                    }
                }
                if b.snapshot_done {
                    let all = self.pending.take().unwrap_or_default();
                    Apply::Replace(all.into_iter().collect())
                } else {
                    Apply::Nothing
                }
            }
            None if changes.is_empty() => Apply::Nothing,
            None => Apply::Changes(changes),
        }
    }
}

/// What the consumer of [`watch`] is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEvent {
    /// A stream to bird is open; its snapshot follows.
    Connected,
    /// bird cannot be reached: reported once, at the first failed attempt
    /// since start or since the last stream; attempts go on with back-off.
    Unreachable { error: String },
    /// bird's whole table: it replaces what the consumer holds.
    Replace(Vec<(IpNetwork, NextHops)>),
    /// Routes learnt or moved (`Some(next hops)`) or withdrawn (`None`).
    Changes(Vec<(IpNetwork, Option<NextHops>)>),
    /// The stream ended or failed; keep the routes, a reconnect follows.
    Disconnected { reason: String },
}

type Routes = tonic::Streaming<RouteBatch>;

struct Client {
    socket: PathBuf,
    feed: Feed,
    stream: Option<Routes>,
    backoff: Duration,
    /// No attempt before this (back-off after a failure or a lost stream).
    retry_at: Option<Instant>,
    /// `Unreachable` was reported and no stream came up since.
    reported: bool,
}

/// Why a route stream could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Connect(#[from] crate::uds::UdsError),
    #[error("{}", .0.message())]
    Watch(#[from] tonic::Status),
}

async fn open(socket: &std::path::Path) -> Result<Routes, OpenError> {
    let ch = crate::uds::connect(socket).await?;
    Ok(RouteServiceClient::new(ch)
        .watch(WatchRoutesRequest {})
        .await?
        .into_inner())
}

impl Client {
    /// Works until there is something to tell.
    async fn next(&mut self) -> RouteEvent {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                if let Some(at) = self.retry_at.take() {
                    tokio::time::sleep_until(at).await;
                }
                match open(&self.socket).await {
                    Ok(s) => {
                        self.stream = Some(s);
                        self.reported = false;
                        self.feed.start();
                        return RouteEvent::Connected;
                    }
                    Err(error) => {
                        self.retry_at = Some(Instant::now() + self.backoff);
                        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                        if !std::mem::replace(&mut self.reported, true) {
                            return RouteEvent::Unreachable {
                                error: error.to_string(),
                            };
                        }
                        continue;
                    }
                }
            };
            let reason = match stream.message().await {
                Ok(Some(batch)) => {
                    self.backoff = BACKOFF_MIN;
                    match self.feed.batch(&batch) {
                        Apply::Nothing => continue,
                        Apply::Replace(all) => return RouteEvent::Replace(all),
                        Apply::Changes(ch) => return RouteEvent::Changes(ch),
                    }
                }
                Ok(None) => "stream ended by bird".to_string(),
                Err(e) => format!("stream failed: {}", e.message()),
            };
            self.stream = None;
            self.retry_at = Some(Instant::now() + self.backoff);
            return RouteEvent::Disconnected { reason };
        }
    }
}

/// Watches bird's best routes on its control socket, reconnecting for as
/// long as the stream is polled. It never ends. Work happens only while
/// it is polled, and a `next()` given up (a timeout) loses nothing: the
/// attempt in progress resumes at the next poll.
pub fn watch(socket: impl Into<PathBuf>) -> impl Stream<Item = RouteEvent> + Send + Unpin {
    let client = Client {
        socket: socket.into(),
        feed: Feed::default(),
        stream: None,
        backoff: BACKOFF_MIN,
        retry_at: None,
        reported: false,
    };
    Box::pin(futures::stream::unfold(client, |mut c| async move {
        let ev = c.next().await;
        Some((ev, c))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::{IpAddress, IpPrefix};
    use crate::routes::Route;

    fn route(p: &str, nh: &str) -> Route {
        Route {
            prefix: Some(IpPrefix::from(p.parse::<IpNetwork>().unwrap())),
            next_hops: vec![IpAddress::from(nh.parse::<IpAddr>().unwrap())],
            from_node: true,
        }
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn a_snapshot_replaces_only_when_done_then_changes_flow() {
        let mut f = Feed::default();
        f.start();
        let b1 = RouteBatch {
            upserts: vec![
                route("10.65.1.0/26", "10.0.0.2"),
                route("10.65.2.0/26", "10.0.0.3"),
            ],
            ..Default::default()
        };
        assert_eq!(f.batch(&b1), Apply::Nothing, "nothing applied mid-snapshot");
        let b2 = RouteBatch {
            withdraws: vec![IpPrefix::from(net("10.65.2.0/26"))],
            snapshot_done: true,
            ..Default::default()
        };
        assert_eq!(
            f.batch(&b2),
            Apply::Replace(vec![(net("10.65.1.0/26"), "10.0.0.2".parse().unwrap())])
        );
        let b3 = RouteBatch {
            upserts: vec![route("10.65.3.0/26", "10.0.0.4")],
            withdraws: vec![IpPrefix::from(net("10.65.1.0/26"))],
            ..Default::default()
        };
        assert_eq!(
            f.batch(&b3),
            Apply::Changes(vec![
                (net("10.65.3.0/26"), Some("10.0.0.4".parse().unwrap())),
                (net("10.65.1.0/26"), None)
            ])
        );
    }

    #[test]
    fn every_next_hop_of_an_ecmp_set_reaches_the_consumer_sorted() {
        let mut f = Feed::default();
        let mut r = route("0.0.0.0/0", "10.0.0.3");
        r.next_hops.extend([
            IpAddress::from("10.0.0.2".parse::<IpAddr>().unwrap()),
            IpAddress::from("10.0.0.3".parse::<IpAddr>().unwrap()),
        ]);
        let b = RouteBatch {
            upserts: vec![r],
            ..Default::default()
        };
        let Apply::Changes(ch) = f.batch(&b) else {
            panic!("no change");
        };
        let hops = ch[0].1.clone().unwrap();
        assert!(hops.is_ecmp());
        assert_eq!(hops.to_string(), "10.0.0.2,10.0.0.3");
        assert_eq!(hops, "10.0.0.3, 10.0.0.2".parse().unwrap());
        assert_eq!(hops.first().to_string(), "10.0.0.2");
        // A next hop bird sends that does not parse is left out; none
        // left: the route is skipped.
        let mut bad = route("10.1.0.0/16", "10.0.0.2");
        bad.next_hops[0].addr = vec![1, 2, 3];
        let b = RouteBatch {
            upserts: vec![bad],
            ..Default::default()
        };
        assert_eq!(f.batch(&b), Apply::Nothing);
        let one: NextHops = "10.0.0.9".parse().unwrap();
        assert!(!one.is_ecmp());
        assert_eq!(one.filter(|a| a.is_ipv6()), None);
        assert_eq!(
            hops.filter(|a| a.to_string() != "10.0.0.2"),
            Some("10.0.0.3".parse().unwrap())
        );
    }

    #[test]
    fn a_resync_batch_starts_a_new_snapshot() {
        let mut f = Feed::default();
        f.start();
        let done = RouteBatch {
            upserts: vec![
                route("10.65.1.0/26", "10.0.0.2"),
                route("10.65.2.0/26", "10.0.0.3"),
            ],
            snapshot_done: true,
            ..Default::default()
        };
        assert!(matches!(f.batch(&done), Apply::Replace(v) if v.len() == 2));
        // Resync: 10.65.2.0/26 was withdrawn while we were behind.
        let resync = RouteBatch {
            upserts: vec![route("10.65.1.0/26", "10.0.0.2")],
            resync: true,
            ..Default::default()
        };
        assert_eq!(f.batch(&resync), Apply::Nothing);
        let end = RouteBatch {
            snapshot_done: true,
            ..Default::default()
        };
        assert_eq!(
            f.batch(&end),
            Apply::Replace(vec![(net("10.65.1.0/26"), "10.0.0.2".parse().unwrap())])
        );
    }

    #[test]
    fn malformed_routes_are_skipped() {
        let mut f = Feed::default();
        f.start();
        let b = RouteBatch {
            upserts: vec![
                Route {
                    prefix: Some(IpPrefix {
                        addr: vec![1, 2, 3],
                        prefix_len: 8,
                    }),
                    next_hops: vec![],
                    from_node: true,
                },
                Route {
                    prefix: Some(IpPrefix::from(net("10.65.9.0/26"))),
                    next_hops: vec![],
                    from_node: true,
                },
            ],
            snapshot_done: true,
            ..Default::default()
        };
        assert_eq!(f.batch(&b), Apply::Replace(vec![]));
    }
}
