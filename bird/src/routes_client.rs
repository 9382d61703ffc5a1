//! The client of bird's route stream, for felix: [`watch`] turns
//! `RouteService.Watch` into a stream of *changes to the consumer's view*,
//! and handles reconnection itself.
//!
//! Semantics:
//! - the consumer starts with an empty view; [`RouteEvent::Changed`]
//!   events add, replace and remove routes; after bird's snapshot
//!   [`RouteEvent::InSync`] says the view now equals bird's Loc-RIB
//!   (bird's own blocks excluded);
//! - when the connection to bird is lost (bird restarting, for instance)
//!   [`RouteEvent::Disconnected`] is sent once and **the view stays as
//!   it is**: felix keeps forwarding with the routes it has (graceful
//!   restart's "preserve forwarding state"). The client reconnects with a
//!   backoff (100 ms doubling to 5 s); the new snapshot is compared with
//!   the view, only real differences come out as `Changed`, and routes
//!   bird no longer has are withdrawn only when bird declares the
//!   snapshot complete, followed by `InSync` (the same happens without a
//!   reconnect when bird marks a batch `resync` because this client fell
//!   too far behind). bird delays that point after
//!   its own restart until its peers have resent their routes, so a
//!   restarting bird never makes felix drop a route it simply has not
//!   relearned yet.
//!
//! The returned stream needs a tokio runtime (the work runs in a spawned
//! task) and ends that task when dropped.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::IpNetwork;
use proto::routes::route_service_client::RouteServiceClient;
use proto::routes::{RouteBatch, WatchRoutesRequest};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tracing::{debug, warn};

/// A best route as felix programs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BestRoute {
    pub prefix: IpNetwork,
    /// One or more (ECMP) next hops, sorted.
    pub next_hops: Vec<IpAddr>,
    /// Learned from a calico node (a remote pod block), not a router.
    pub from_node: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEvent {
    /// Routes added or replaced, and routes gone.
    Changed {
        upserts: Vec<BestRoute>,
        withdraws: Vec<IpNetwork>,
    },
    /// The view equals bird's Loc-RIB.
    InSync,
    /// The connection to bird is lost; keep the routes, a reconnect is
    /// under way.
    Disconnected { reason: String },
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Watches bird's best routes on its control socket, reconnecting for as
/// long as the returned stream is alive.
pub fn watch(
    socket: impl Into<PathBuf>,
) -> impl Stream<Item = RouteEvent> + Send + Unpin + 'static {
    let socket = socket.into();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(run(socket, tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[derive(Default)]
struct View {
    routes: HashMap<IpNetwork, BestRoute>,
}

/// One connection's progress through its snapshot.
struct Sync {
    seen: HashSet<IpNetwork>,
    done: bool,
}

fn convert(r: &proto::routes::Route) -> Option<BestRoute> {
    let prefix = IpNetwork::try_from(r.prefix.as_ref()?).ok()?;
    let mut next_hops: Vec<IpAddr> = r
        .next_hops
        .iter()
        .filter_map(|h| IpAddr::try_from(h).ok())
        .collect();
    next_hops.sort_unstable();
    next_hops.dedup();
    Some(BestRoute {
        prefix,
        next_hops,
        from_node: r.from_node,
    })
}

impl View {
    /// Applies one batch; returns the events for the consumer.
    fn apply(&mut self, b: &RouteBatch, sync: &mut Sync) -> Vec<RouteEvent> {
        if b.resync {
            // bird starts over: re-mark everything from this batch on.
            *sync = Sync {
                seen: HashSet::new(),
                done: false,
            };
        }
        let mut upserts = Vec::new();
        let mut withdraws = Vec::new();
        for r in b.upserts.iter().filter_map(convert) {
            if !sync.done {
                sync.seen.insert(r.prefix);
            }
            if self.routes.get(&r.prefix) != Some(&r) {
                self.routes.insert(r.prefix, r.clone());
                upserts.push(r);
            }
        }
        for p in b
            .withdraws
            .iter()
            .filter_map(|p| IpNetwork::try_from(p).ok())
        {
            sync.seen.remove(&p);
            if self.routes.remove(&p).is_some() {
                withdraws.push(p);
            }
        }
        let mut events = Vec::new();
        if b.snapshot_done && !sync.done {
            sync.done = true;
            let gone: Vec<IpNetwork> = self
                .routes
                .keys()
                .filter(|p| !sync.seen.contains(p))
                .copied()
                .collect();
            for p in gone {
                self.routes.remove(&p);
                withdraws.push(p);
            }
            sync.seen = HashSet::new();
        }
        if !upserts.is_empty() || !withdraws.is_empty() {
            events.push(RouteEvent::Changed { upserts, withdraws });
        }
        if b.snapshot_done {
            events.push(RouteEvent::InSync);
        }
        events
    }
}

async fn run(socket: PathBuf, tx: mpsc::Sender<RouteEvent>) {
    let mut view = View::default();
    let mut backoff = BACKOFF_MIN;
    // A stream was open since the last `Disconnected`.
    let mut up = false;
    loop {
        let reason = match session(&socket, &mut view, &tx, &mut backoff, &mut up).await {
            Ok(()) => return,
            Err(reason) => reason,
        };
        if std::mem::take(&mut up)
            && tx
                .send(RouteEvent::Disconnected {
                    reason: reason.clone(),
                })
                .await
                .is_err()
        {
            return;
        }
        debug!(socket = %socket.display(), %reason, "no route stream from bird; retrying");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tx.closed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: `Ok` when the consumer went away, `Err(reason)` when
/// the connection did (or never came up).
async fn session(
    socket: &std::path::Path,
    view: &mut View,
    tx: &mpsc::Sender<RouteEvent>,
    backoff: &mut Duration,
    up: &mut bool,
) -> Result<(), String> {
    let channel = proto::uds::connect(socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut stream = RouteServiceClient::new(channel)
        .watch(WatchRoutesRequest {})
        .await
        .map_err(|e| format!("watch: {}", e.message()))?
        .into_inner();
    *up = true;
    let mut sync = Sync {
        seen: HashSet::new(),
        done: false,
    };
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            _ = tx.closed() => return Ok(()),
        };
        match msg {
            Ok(Some(b)) => {
                *backoff = BACKOFF_MIN;
                for ev in view.apply(&b, &mut sync) {
                    if tx.send(ev).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(None) => return Err("stream ended by bird".into()),
            Err(e) => {
                warn!(error = %e.message(), "route stream from bird failed");
                return Err(format!("stream failed: {}", e.message()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: &str, nh: &str) -> proto::routes::Route {
        proto::routes::Route {
            prefix: Some(p.parse::<IpNetwork>().unwrap().into()),
            next_hops: vec![nh.parse::<IpAddr>().unwrap().into()],
            from_node: true,
        }
    }

    fn best(p: &str, nh: &str) -> BestRoute {
        BestRoute {
            prefix: p.parse().unwrap(),
            next_hops: vec![nh.parse().unwrap()],
            from_node: true,
        }
    }

    #[test]
    fn resync_after_reconnect_reports_only_differences() {
        let mut view = View::default();
        let mut s = Sync {
            seen: HashSet::new(),
            done: false,
        };
        let b = RouteBatch {
            upserts: vec![r("10.65.1.0/26", "10.0.0.2"), r("10.65.2.0/26", "10.0.0.3")],
            withdraws: vec![],
            snapshot_done: true,
            ..RouteBatch::default()
        };
        assert_eq!(
            view.apply(&b, &mut s),
            vec![
                RouteEvent::Changed {
                    upserts: vec![
                        best("10.65.1.0/26", "10.0.0.2"),
                        best("10.65.2.0/26", "10.0.0.3")
                    ],
                    withdraws: vec![]
                },
                RouteEvent::InSync
            ]
        );
        // Reconnected: the new snapshot has one route unchanged, one moved,
        // and no longer the other.
        let mut s = Sync {
            seen: HashSet::new(),
            done: false,
        };
        let b = RouteBatch {
            upserts: vec![r("10.65.1.0/26", "10.0.0.2"), r("10.65.3.0/26", "10.0.0.4")],
            withdraws: vec![],
            snapshot_done: false,
            ..RouteBatch::default()
        };
        assert_eq!(
            view.apply(&b, &mut s),
            vec![RouteEvent::Changed {
                upserts: vec![best("10.65.3.0/26", "10.0.0.4")],
                withdraws: vec![]
            }]
        );
        let done = RouteBatch {
            snapshot_done: true,
            ..RouteBatch::default()
        };
        assert_eq!(
            view.apply(&done, &mut s),
            vec![
                RouteEvent::Changed {
                    upserts: vec![],
                    withdraws: vec!["10.65.2.0/26".parse().unwrap()]
                },
                RouteEvent::InSync
            ]
        );
        // Later batches are plain changes.
        let b = RouteBatch {
            withdraws: vec!["10.65.1.0/26".parse::<IpNetwork>().unwrap().into()],
            ..RouteBatch::default()
        };
        assert_eq!(
            view.apply(&b, &mut s),
            vec![RouteEvent::Changed {
                upserts: vec![],
                withdraws: vec!["10.65.1.0/26".parse().unwrap()]
            }]
        );
    }

    #[test]
    fn resync_batch_starts_a_new_mark_and_sweep_without_a_reconnect() {
        let mut view = View::default();
        let mut s = Sync {
            seen: HashSet::new(),
            done: false,
        };
        let b = RouteBatch {
            upserts: vec![r("10.65.1.0/26", "10.0.0.2"), r("10.65.2.0/26", "10.0.0.3")],
            snapshot_done: true,
            ..RouteBatch::default()
        };
        view.apply(&b, &mut s);
        // bird fell behind and walks again: only 10.65.1.0/26 is left.
        let b = RouteBatch {
            upserts: vec![r("10.65.1.0/26", "10.0.0.2")],
            resync: true,
            ..RouteBatch::default()
        };
        assert!(view.apply(&b, &mut s).is_empty(), "nothing changed yet");
        let done = RouteBatch {
            snapshot_done: true,
            ..RouteBatch::default()
        };
        assert_eq!(
            view.apply(&done, &mut s),
            vec![
                RouteEvent::Changed {
                    upserts: vec![],
                    withdraws: vec!["10.65.2.0/26".parse().unwrap()]
                },
                RouteEvent::InSync
            ]
        );
    }
}
