//! The route reconciler: a service that owns one tokio task and keeps one
//! routing table equal to the desired state.
//!
//! ```text
//!  RouteHandle (cloneable) ── Command ──► task ──► RouteSocket ──► kernel
//!  set / remove / flush / resync          │  ▲      (batched writes, dumps)
//!                                         │  └── EventSocket ◄── kernel
//!                                         │      (link / route changes made
//!                                         ▼       by anyone but felix)
//!                                    RouteDelta (pure diff)
//! ```
//!
//! Every loop turn the task (1) runs a full dump-and-diff if one is due
//! (at start, every `resync_interval`, shortly after someone else changed
//! a route felix cares about or removed / downed a link other than a pod
//! interface, when a pod interface's grace period ends, or after a failure
//! only a dump can explain), then (2) applies what the delta tracker plans.
//! A pod interface's removal (every CNI DEL) costs no dump: the kernel
//! takes the routes through a deleted link (and the IPv4 ones of a downed
//! link) itself, so the model forgets exactly the routes it recorded on
//! that ifindex; a deletion the kernel announces of a route felix holds is
//! forgotten the same way. A failed write
//! schedules a retry with exponential backoff; callers waiting in
//! [`RouteHandle::flush`] get the failures in an [`ApplyReport`].

use std::fmt;
use std::io;
use std::time::Duration;

use ipnetwork::IpNetwork;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::netlink::{EventSocket, RouteSocket};
use super::task::Task;
use super::{FELIX_PROTOCOL, InvalidRoute, Layer, MAIN_TABLE, Route, RouteUpdate};

#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    pub table: u32,
    pub protocol: u8,
    /// Name prefixes of pod interfaces, whose routes felix owns.
    pub iface_prefixes: Vec<String>,
    /// Full dump-and-diff period.
    pub resync_interval: Duration,
    /// How long routes felix was not told about survive on a pod interface
    /// that just appeared: the CNI plugin may have added them before felix
    /// heard of the pod.
    pub grace_period: Duration,
    /// Delay between a foreign change and the resync it triggers, so a
    /// burst of changes costs one dump.
    pub event_debounce: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Whether to resync on link and route changes made by others; off
    /// leaves only the timer (tests of the timer path use this).
    pub event_resync: bool,
    /// Whether felix may delete owned routes nobody asked for from the
    /// start. If false they are kept until [`RouteHandle::mark_in_sync`]:
    /// after a restart felix must not remove routes only because their
    /// owners have not re-sent them yet.
    pub start_in_sync: bool,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            table: MAIN_TABLE,
            protocol: FELIX_PROTOCOL,
            iface_prefixes: vec!["cali".to_string()],
            resync_interval: Duration::from_secs(90),
            grace_period: Duration::from_secs(10),
            event_debounce: Duration::from_millis(20),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
            event_resync: true,
            start_in_sync: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(
        "cannot open a netlink route socket: {0} (felix needs CAP_NET_ADMIN and a tokio runtime)"
    )]
    Open(io::Error),
    #[error(transparent)]
    Invalid(#[from] InvalidRoute),
    #[error("the route reconciler has stopped")]
    Stopped,
}

/// One operation the kernel refused (or never acknowledged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyFailure {
    pub dst: IpNetwork,
    pub op: &'static str,
    /// The errno, or `None` when no acknowledgement arrived.
    pub errno: Option<i32>,
}

impl fmt::Display for ApplyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno {
            Some(e) => write!(
                f,
                "{} {}: {}",
                self.op,
                self.dst,
                io::Error::from_raw_os_error(e)
            ),
            None => write!(f, "{} {}: no acknowledgement", self.op, self.dst),
        }
    }
}

/// Where the kernel stands after an apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Netlink operations done: since the previous flush's answer (for
    /// [`RouteHandle::flush`]), or by the apply right after the resync (for
    /// [`RouteHandle::resync`]).
    pub ops: usize,
    /// Every desired route not in the kernel because the kernel refused
    /// the last attempt; each is being retried.
    pub failures: Vec<ApplyFailure>,
    /// Prefixes where someone else's route holds the slot felix wants.
    pub conflicts: Vec<IpNetwork>,
    /// Set when the full resync this report answers could not read the
    /// kernel's table.
    pub resync_error: Option<String>,
}

impl ApplyReport {
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty() && self.conflicts.is_empty() && self.resync_error.is_none()
    }

    pub fn failure_for(&self, dst: &IpNetwork) -> Option<&ApplyFailure> {
        self.failures.iter().find(|f| f.dst == *dst)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcilerStatus {
    pub desired: usize,
    pub programmed: usize,
    pub conflicts: Vec<IpNetwork>,
    pub full_resyncs: u64,
    /// Pod interface removals handled without a dump (the routes through
    /// the interface forgotten, see the module doc).
    pub interface_resyncs: u64,
    pub last_resync: Option<Duration>,
    pub in_sync: bool,
    /// Route programming latency and resync durations so far.
    pub metrics: crate::metrics::RouteMetrics,
}

pub(super) enum Command {
    Updates(Layer, Vec<RouteUpdate>),
    MarkInSync,
    Flush(oneshot::Sender<ApplyReport>),
    Resync(oneshot::Sender<ApplyReport>),
    Status(oneshot::Sender<ReconcilerStatus>),
}

/// A cloneable handle to change the desired routes.
#[derive(Debug, Clone)]
pub struct RouteHandle {
    tx: mpsc::UnboundedSender<Command>,
    /// Whose wishes this handle sends (see [`Layer`]).
    layer: Layer,
    /// Counts changes to routes felix does not own (see
    /// [`RouteHandle::foreign_changes`]).
    foreign: watch::Receiver<u64>,
}

impl RouteHandle {
    fn send(&self, cmd: Command) -> Result<(), RouteError> {
        self.tx.send(cmd).map_err(|_| RouteError::Stopped)
    }

    /// A handle whose routes belong to `layer`: its removals take back
    /// only its own routes, and a [`Layer::Workload`] route wins over a
    /// [`Layer::Blocks`] one for the same prefix. [`Reconciler::handle`]
    /// gives a block-layer handle.
    pub fn with_layer(&self, layer: Layer) -> RouteHandle {
        RouteHandle {
            tx: self.tx.clone(),
            layer,
            foreign: self.foreign.clone(),
        }
    }

    /// A counter that moves whenever the kernel reports a change to a
    /// route of the table that felix does not own (an underlay route, the
    /// default route), a non-pod link going down or away, or lost events:
    /// what a route felix derived from the kernel's routes (a recursively
    /// resolved next hop) must be looked at again after. Only with event
    /// resyncs on ([`ReconcilerConfig::event_resync`]).
    pub fn foreign_changes(&self) -> watch::Receiver<u64> {
        self.foreign.clone()
    }

    /// Desires `route` (replacing any desired route to the same prefix).
    pub fn set(&self, route: Route) -> Result<(), RouteError> {
        self.update(vec![RouteUpdate::Set(route)])
    }

    /// Stops desiring a route to `dst`.
    pub fn remove(&self, dst: IpNetwork) -> Result<(), RouteError> {
        self.update(vec![RouteUpdate::Remove(dst)])
    }

    /// Applies many changes at once; all are validated first, and none is
    /// taken if one is invalid.
    pub fn update(&self, updates: Vec<RouteUpdate>) -> Result<(), RouteError> {
        for u in &updates {
            if let RouteUpdate::Set(r) = u {
                r.validate()?;
            }
        }
        self.send(Command::Updates(self.layer, updates))
    }

    /// Tells the reconciler its callers have sent their whole desired
    /// state, so owned routes nobody asked for may now be deleted.
    pub fn mark_in_sync(&self) -> Result<(), RouteError> {
        self.send(Command::MarkInSync)
    }

    /// Waits until everything sent before has been applied (or has failed,
    /// and a retry is scheduled); returns where the kernel stands.
    pub async fn flush(&self) -> Result<ApplyReport, RouteError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Flush(tx))?;
        rx.await.map_err(|_| RouteError::Stopped)
    }

    /// Runs a full dump-and-diff now and applies its result.
    pub async fn resync(&self) -> Result<ApplyReport, RouteError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Resync(tx))?;
        rx.await.map_err(|_| RouteError::Stopped)
    }

    pub async fn status(&self) -> Result<ReconcilerStatus, RouteError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Status(tx))?;
        rx.await.map_err(|_| RouteError::Stopped)
    }
}

/// The running reconciler. Dropping it stops its task.
#[derive(Debug)]
pub struct Reconciler {
    handle: RouteHandle,
    task: Option<JoinHandle<()>>,
}

impl Reconciler {
    /// Opens the netlink sockets in the calling thread's network namespace
    /// and starts the task on the current tokio runtime. The first full
    /// resync runs at once; [`RouteHandle::flush`] waits for it.
    pub fn start(config: ReconcilerConfig) -> Result<Reconciler, RouteError> {
        let sock = RouteSocket::open().map_err(RouteError::Open)?;
        // Subscribe before the first dump, so no change between the two is
        // missed.
        let events = if config.event_resync {
            Some(EventSocket::open(sock.port_id()).map_err(RouteError::Open)?)
        } else {
            None
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (foreign_tx, foreign) = watch::channel(0);
        let task = Task::new(config, sock, events, rx, foreign_tx);
        let task = tokio::spawn(
            task.run()
                .instrument(tracing::info_span!("route_reconciler")),
        );
        Ok(Reconciler {
            handle: RouteHandle {
                tx,
                layer: Layer::Blocks,
                foreign,
            },
            task: Some(task),
        })
    }

    pub fn handle(&self) -> RouteHandle {
        self.handle.clone()
    }

    /// Stops the task and waits for it to end. Routes stay in the kernel.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
