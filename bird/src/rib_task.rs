//! The RIB task: the one owner of the [`Rib`], fed by the peer tasks, the
//! speaker and the control services through one bounded channel, and
//! timed by the RIB's own deadlines (graceful restart, start-up
//! deferral). See [`crate::tasks`] for the picture.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ipnetwork::IpNetwork;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::fsm::DownCause;
use crate::packet::Family;
use crate::policy::{LocalPolicy, PeerPolicy};
use crate::rib::{
    AdjRibOut, Chunk, PeerKey, PeerStats, Rib, RibAction, RibStats, RowFilter, Rows, SessionInfo,
    UpdateMsg, Watcher,
};
use crate::tasks::PeerCommand;

/// Capacity of the channel into the RIB task: peer tasks wait for room,
/// which slows a fast sender down to the RIB's pace through TCP.
pub const RIB_QUEUE: usize = 64;

/// Events handled after one another without yielding, before the RIB
/// task looks at its timers again.
const BURST: usize = 64;

#[derive(Debug)]
pub enum RibEvent {
    PeerAdded {
        key: PeerKey,
        policy: PeerPolicy,
        out: Arc<AdjRibOut>,
        stats: Arc<PeerStats>,
        commands: mpsc::Sender<PeerCommand>,
    },
    PeerPolicy {
        key: PeerKey,
        policy: PeerPolicy,
    },
    PeerRemoved {
        key: PeerKey,
    },
    Up {
        key: PeerKey,
        session: SessionInfo,
    },
    Down {
        key: PeerKey,
        cause: DownCause,
    },
    Update {
        key: PeerKey,
        msg: UpdateMsg,
    },
    /// The peer asked us to send `family` again.
    RefreshRequested {
        key: PeerKey,
        family: Family,
    },
    Originate(Vec<IpNetwork>),
    Local(LocalPolicy),
    Rows {
        after: Option<IpNetwork>,
        max: usize,
        filter: RowFilter,
        reply: oneshot::Sender<Rows>,
    },
    Watch {
        reply: oneshot::Sender<Arc<Watcher>>,
    },
    Snapshot {
        watcher: Arc<Watcher>,
        max: usize,
        reply: oneshot::Sender<Chunk>,
    },
}

/// A cloneable handle to the RIB task.
#[derive(Debug, Clone)]
pub struct RibHandle {
    tx: mpsc::Sender<RibEvent>,
    stats: Arc<RibStats>,
}

/// The RIB task stopped (the speaker is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("bird's routing table task has stopped; the daemon is shutting down")]
pub struct RibGone;

impl From<RibGone> for tonic::Status {
    fn from(e: RibGone) -> tonic::Status {
        tonic::Status::unavailable(e.to_string())
    }
}

impl RibHandle {
    pub fn sender(&self) -> mpsc::Sender<RibEvent> {
        self.tx.clone()
    }

    pub fn stats(&self) -> &Arc<RibStats> {
        &self.stats
    }

    /// A handle without a RIB task: its events arrive on the receiver,
    /// for tests of what the speaker sends.
    #[cfg(test)]
    pub(crate) fn detached() -> (RibHandle, mpsc::Receiver<RibEvent>) {
        let (tx, rx) = mpsc::channel(RIB_QUEUE);
        let stats = Arc::new(RibStats::default());
        (RibHandle { tx, stats }, rx)
    }

    pub async fn send(&self, ev: RibEvent) -> Result<(), RibGone> {
        self.tx.send(ev).await.map_err(|_| RibGone)
    }

    pub async fn rows(
        &self,
        after: Option<IpNetwork>,
        max: usize,
        filter: RowFilter,
    ) -> Result<Rows, RibGone> {
        let (reply, rx) = oneshot::channel();
        self.send(RibEvent::Rows {
            after,
            max,
            filter,
            reply,
        })
        .await?;
        rx.await.map_err(|_| RibGone)
    }

    pub async fn watch(&self) -> Result<Arc<Watcher>, RibGone> {
        let (reply, rx) = oneshot::channel();
        self.send(RibEvent::Watch { reply }).await?;
        rx.await.map_err(|_| RibGone)
    }

    /// The next part of `watcher`'s snapshot.
    pub async fn snapshot(&self, watcher: Arc<Watcher>, max: usize) -> Result<Chunk, RibGone> {
        let (reply, rx) = oneshot::channel();
        self.send(RibEvent::Snapshot {
            watcher,
            max,
            reply,
        })
        .await?;
        rx.await.map_err(|_| RibGone)
    }
}

/// Starts the RIB task with `rib`; it ends when every handle is dropped.
pub fn spawn(rib: Rib) -> (RibHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(RIB_QUEUE);
    let stats = rib.stats();
    let task = tokio::spawn(run(rib, rx));
    (RibHandle { tx, stats }, task)
}

struct Task {
    rib: Rib,
    commands: HashMap<PeerKey, mpsc::Sender<PeerCommand>>,
}

async fn run(rib: Rib, mut rx: mpsc::Receiver<RibEvent>) {
    let mut t = Task {
        rib,
        commands: HashMap::new(),
    };
    loop {
        let deadline = t.rib.next_deadline();
        let wake = deadline.map(tokio::time::Instant::from_std);
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                t.handle(ev);
                for _ in 1..BURST {
                    match rx.try_recv() {
                        Ok(ev) => t.handle(ev),
                        Err(_) => break,
                    }
                }
            }
            _ = async { if let Some(w) = wake { tokio::time::sleep_until(w).await } }, if wake.is_some() => {
                t.rib.on_timer(Instant::now());
            }
        }
        t.dispatch();
    }
}

impl Task {
    fn handle(&mut self, ev: RibEvent) {
        let now = Instant::now();
        match ev {
            RibEvent::PeerAdded {
                key,
                policy,
                out,
                stats,
                commands,
            } => {
                self.rib.add_peer_with(key, policy, out, stats);
                self.commands.insert(key, commands);
            }
            RibEvent::PeerPolicy { key, policy } => self.rib.set_peer_policy(key, policy),
            RibEvent::PeerRemoved { key } => {
                self.rib.remove_peer(key, now);
                self.commands.remove(&key);
            }
            RibEvent::Up { key, session } => self.rib.peer_up(key, session, now),
            RibEvent::Down { key, cause } => {
                self.rib.peer_down(key, &cause, now);
            }
            RibEvent::Update { key, msg } => {
                let a = self.rib.apply_update(key, msg, now);
                if let Some(why) = a.rejection {
                    debug!(peer = key.id.0, rejected = a.rejected, reason = ?why, "routes refused by import policy");
                }
            }
            RibEvent::RefreshRequested { key, family } => self.rib.refresh_out(key, family),
            RibEvent::Originate(prefixes) => self.rib.set_originated(&prefixes),
            RibEvent::Local(local) => self.rib.set_local(local),
            RibEvent::Rows {
                after,
                max,
                filter,
                reply,
            } => {
                let _ = reply.send(self.rib.rows(after, max, &filter));
            }
            RibEvent::Watch { reply } => {
                let _ = reply.send(self.rib.watch());
            }
            RibEvent::Snapshot {
                watcher,
                max,
                reply,
            } => {
                let _ = reply.send(self.rib.snapshot_chunk(&watcher, max));
            }
        }
    }

    fn dispatch(&mut self) {
        for action in self.rib.take_actions() {
            let (key, cmd) = match action {
                RibAction::Reset { peer, notification } => {
                    info!(peer = peer.id.0, %notification, "maximum number of prefixes exceeded; resetting the session");
                    (
                        peer,
                        PeerCommand::Reset {
                            notification,
                            hard_reset: true,
                        },
                    )
                }
                RibAction::RouteRefresh { peer, family } => {
                    (peer, PeerCommand::SendRouteRefresh(family))
                }
            };
            let Some(tx) = self.commands.get(&key) else {
                continue;
            };
            // Never wait on a peer task: if its queue is full, hand the
            // command to a task of its own.
            if let Err(mpsc::error::TrySendError::Full(cmd)) = tx.try_send(cmd) {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if tx.send(cmd).await.is_err() {
                        warn!("peer task gone before its command arrived");
                    }
                });
            }
        }
    }
}
