//! Routes from bird into the dataplane.
//!
//! felix is a client of bird's RouteService: on connect bird sends every
//! best route, then `snapshot_done`, then changes. Until `snapshot_done`
//! felix only collects; at `snapshot_done` the collected set *replaces*
//! the remote blocks (so routes bird no longer has go). If the stream
//! breaks (bird restarting), felix keeps every route it has — forwarding
//! goes on, as graceful restart promises — and reconnects with backoff;
//! the next snapshot reconciles.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::IpNetwork;
use proto::routes::route_service_client::RouteServiceClient;
use proto::routes::{RouteBatch, WatchRoutesRequest};
use tokio::sync::watch;

use crate::dataplane::DataplaneHandle;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The pure part: folding batches into the dataplane's remote blocks.
#[derive(Debug, Default)]
pub struct Feed {
    /// `Some` while collecting a snapshot.
    pending: Option<HashMap<IpNetwork, IpAddr>>,
}

/// What to tell the dataplane after a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Apply {
    Nothing,
    Replace(Vec<(IpNetwork, IpAddr)>),
    Changes(Vec<(IpNetwork, Option<IpAddr>)>),
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
            // ECMP: the kernel route takes the first next hop.
            let Some(nh) = r.next_hops.iter().find_map(|a| IpAddr::try_from(a).ok()) else {
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

/// Runs forever: connects to bird, feeds the dataplane, reconnects.
/// `synced` turns true at the first complete snapshot.
pub async fn run(socket: PathBuf, dp: DataplaneHandle, synced: watch::Sender<bool>) {
    let mut feed = Feed::default();
    let mut backoff = BACKOFF_MIN;
    let mut warned = false;
    loop {
        let stream = async {
            let ch = proto::uds::connect(&socket)
                .await
                .map_err(|e| e.to_string())?;
            RouteServiceClient::new(ch)
                .watch(WatchRoutesRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| s.message().to_string())
        }
        .await;
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                if !warned {
                    tracing::warn!(socket = %socket.display(), error = %e,
                        "cannot watch bird's routes; keeping the current ones and retrying");
                    warned = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        tracing::info!("watching bird's routes");
        warned = false;
        feed.start();
        loop {
            match stream.message().await {
                Ok(Some(batch)) => {
                    backoff = BACKOFF_MIN;
                    let r = match feed.batch(&batch) {
                        Apply::Nothing => Ok(()),
                        Apply::Replace(all) => {
                            tracing::info!(routes = all.len(), "route snapshot from bird");
                            let r = dp.set_remote_blocks(all);
                            synced.send_replace(true);
                            r
                        }
                        Apply::Changes(ch) => ch
                            .into_iter()
                            .try_for_each(|(p, nh)| dp.update_remote_block(p, nh)),
                    };
                    if r.is_err() {
                        // The dataplane stopped: felix is shutting down.
                        return;
                    }
                }
                Ok(None) | Err(_) => {
                    tracing::warn!("bird's route stream ended; keeping routes until it is back");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::common::{IpAddress, IpPrefix};
    use proto::routes::Route;

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
