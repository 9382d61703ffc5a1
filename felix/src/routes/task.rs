//! The reconciler's task: one loop that owns the sockets and the delta
//! tracker. See [`super::reconciler`] for the picture.

use std::io;
use std::time::Duration;

use ipnetwork::IpNetwork;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::delta::{Op, OpResult, RouteDelta, Seen, WriteMode};
use super::fasthash::FastMap;
use super::netlink::{DumpError, Event, EventSocket, RouteSocket};
use super::reconciler::{ApplyFailure, ApplyReport, Command, ReconcilerConfig, ReconcilerStatus};
use super::{KernelRoute, OwnershipPolicy, RouteUpdate};
use crate::metrics::RouteMetrics;

/// How many event messages one loop turn reads at most, so a flood of
/// events cannot starve callers.
const EVENTS_PER_TURN: usize = 4096;
/// The same for commands.
const COMMANDS_PER_TURN: usize = 1024;

pub(super) struct LinkState {
    name: String,
    flags: u32,
    first_seen: Instant,
    epoch: u64,
}

pub(super) struct Task {
    cfg: ReconcilerConfig,
    policy: OwnershipPolicy,
    sock: RouteSocket,
    events: Option<EventSocket>,
    delta: RouteDelta,
    links: FastMap<u32, LinkState>,
    link_epoch: u64,
    in_sync: bool,
    rx: mpsc::UnboundedReceiver<Command>,
    next_periodic: Instant,
    resync_at: Option<Instant>,
    retry_at: Option<Instant>,
    grace_recheck: Option<Instant>,
    backoff: Duration,
    apply_now: bool,
    flush_waiters: Vec<oneshot::Sender<ApplyReport>>,
    resync_waiters: Vec<oneshot::Sender<ApplyReport>>,
    full_resyncs: u64,
    /// Link removals handled by forgetting that link's routes, no dump.
    interface_resyncs: u64,
    last_resync: Option<Duration>,
    last_resync_end: Option<Instant>,
    /// The last failure of every route not programmed as desired.
    outstanding: FastMap<IpNetwork, ApplyFailure>,
    ops_since_flush: usize,
    /// When each prefix's desired route changed, until the kernel has
    /// acknowledged the write (or the change needed none).
    changed_at: FastMap<IpNetwork, Instant>,
    metrics: RouteMetrics,
    /// Bumped on every change to a route felix does not own
    /// ([`super::RouteHandle::foreign_changes`]).
    foreign: watch::Sender<u64>,
}

enum Wake {
    Command(Option<Command>),
    Events(io::Result<()>),
    Timer,
}

fn earliest(a: Option<Instant>, b: Instant) -> Instant {
    a.map_or(b, |a| a.min(b))
}

impl Task {
    pub(super) fn new(
        config: ReconcilerConfig,
        sock: RouteSocket,
        events: Option<EventSocket>,
        rx: mpsc::UnboundedReceiver<Command>,
        foreign: watch::Sender<u64>,
    ) -> Task {
        let now = Instant::now();
        Task {
            policy: OwnershipPolicy {
                protocol: config.protocol,
                table: config.table,
                iface_prefixes: config.iface_prefixes.clone(),
            },
            delta: RouteDelta::new(config.table, config.protocol),
            in_sync: config.start_in_sync,
            backoff: config.retry_min,
            cfg: config,
            sock,
            events,
            links: FastMap::default(),
            link_epoch: 0,
            rx,
            next_periodic: now,
            resync_at: Some(now),
            retry_at: None,
            grace_recheck: None,
            apply_now: false,
            flush_waiters: Vec::new(),
            resync_waiters: Vec::new(),
            full_resyncs: 0,
            interface_resyncs: 0,
            last_resync: None,
            last_resync_end: None,
            outstanding: FastMap::default(),
            changed_at: FastMap::default(),
            metrics: RouteMetrics::default(),
            ops_since_flush: 0,
            foreign,
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            self.work().await;
            let mut deadline = self.next_periodic;
            for t in [self.resync_at, self.retry_at, self.grace_recheck]
                .into_iter()
                .flatten()
            {
                deadline = deadline.min(t);
            }
            let wake = tokio::select! {
                cmd = self.rx.recv() => Wake::Command(cmd),
                r = events_ready(self.events.as_ref()) => Wake::Events(r),
                () = tokio::time::sleep_until(deadline) => Wake::Timer,
            };
            match wake {
                Wake::Command(None) => return,
                Wake::Command(Some(cmd)) => {
                    self.on_command(cmd);
                    // Take what else is queued, so a burst is one apply.
                    for _ in 0..COMMANDS_PER_TURN {
                        let Ok(cmd) = self.rx.try_recv() else { break };
                        self.on_command(cmd);
                    }
                }
                Wake::Events(Ok(())) => self.on_events().await,
                Wake::Events(Err(e)) => {
                    // Drop it (the timer still resyncs); the next full
                    // resync opens a new one.
                    tracing::warn!(error = %e, "event socket failed; reopening at the next resync");
                    self.events = None;
                    self.schedule_resync(self.backoff);
                }
                Wake::Timer => {}
            }
        }
    }

    /// An event-driven resync: after the debounce, and no sooner than four
    /// resync durations after the last one ended, so someone fighting
    /// felix over a route cannot keep it dumping more than a fifth of the
    /// time.
    fn schedule_event_resync(&mut self) {
        let mut at = Instant::now() + self.cfg.event_debounce;
        if let (Some(ended), Some(took)) = (self.last_resync_end, self.last_resync) {
            at = at.max(ended + took * 4);
        }
        self.resync_at = Some(self.resync_at.map_or(at, |t| t.min(at)));
    }

    fn schedule_resync(&mut self, after: Duration) {
        self.resync_at = Some(earliest(self.resync_at, Instant::now() + after));
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Updates(layer, updates) => {
                let now = Instant::now();
                for u in updates {
                    // A new wish makes an old failure for the prefix moot.
                    let dst = match &u {
                        RouteUpdate::Set(r) => r.dst,
                        RouteUpdate::Remove(dst) => *dst,
                    };
                    self.outstanding.remove(&dst);
                    // Latency counts from the first change not yet in the
                    // kernel.
                    self.changed_at.entry(dst).or_insert(now);
                    match u {
                        RouteUpdate::Set(r) => self.delta.set_in(layer, r),
                        RouteUpdate::Remove(dst) => self.delta.remove_in(layer, dst),
                    }
                }
                self.apply_now = true;
            }
            Command::MarkInSync => {
                self.in_sync = true;
                self.apply_now = true;
            }
            Command::Flush(tx) => {
                self.flush_waiters.push(tx);
                self.apply_now = true;
            }
            Command::Resync(tx) => {
                self.resync_waiters.push(tx);
                self.resync_at = Some(Instant::now());
            }
            Command::Status(tx) => {
                let _ = tx.send(ReconcilerStatus {
                    desired: self.delta.desired_len(),
                    programmed: self.delta.actual_len(),
                    conflicts: self.delta.conflicts().copied().collect(),
                    full_resyncs: self.full_resyncs,
                    interface_resyncs: self.interface_resyncs,
                    last_resync: self.last_resync,
                    in_sync: self.in_sync,
                    metrics: self.metrics.clone(),
                });
            }
        }
    }

    async fn work(&mut self) {
        let now = Instant::now();
        if now >= self.next_periodic {
            self.resync_at = Some(now);
        }
        if self.grace_recheck.is_some_and(|t| t <= now) {
            self.grace_recheck = None;
            self.resync_at = Some(now);
        }
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            self.apply_now = true;
        }
        let mut resync_error = None;
        let resynced = self.resync_at.is_some_and(|t| t <= now);
        if resynced {
            self.resync_at = None;
            // Also after a failed attempt: its retry goes by the backoff.
            self.next_periodic = now + self.cfg.resync_interval;
            if let Err(e) = self.full_resync().await {
                tracing::warn!(error = %e, "full resync failed; retrying");
                self.schedule_resync(self.backoff);
                resync_error = Some(e.to_string());
            }
            self.apply_now = true;
        }
        if !self.apply_now {
            return;
        }
        self.apply_now = false;
        let ops = self.apply().await;
        self.ops_since_flush += ops;
        if resynced {
            let report = self.report(ops, resync_error.clone());
            for w in self.resync_waiters.drain(..) {
                let _ = w.send(report.clone());
            }
        }
        if !self.flush_waiters.is_empty() {
            let report = self.report(self.ops_since_flush, resync_error);
            self.ops_since_flush = 0;
            for w in self.flush_waiters.drain(..) {
                let _ = w.send(report.clone());
            }
        }
    }

    fn report(&self, ops: usize, resync_error: Option<String>) -> ApplyReport {
        ApplyReport {
            ops,
            failures: self.outstanding.values().cloned().collect(),
            conflicts: self.delta.conflicts().copied().collect(),
            resync_error,
        }
    }

    /// Plans and performs one batch; returns how many operations it did.
    async fn apply(&mut self) -> usize {
        let ops = self.delta.plan(self.in_sync);
        if ops.is_empty() {
            // The changes needed no write (the kernel already had them).
            self.changed_at.clear();
            return 0;
        }
        let span = tracing::debug_span!("apply", ops = ops.len());
        let results = self
            .sock
            .apply(&ops, self.cfg.table, self.cfg.protocol)
            .instrument(span)
            .await;
        let outcome = self.delta.record(&ops, &results);
        let acked = Instant::now();
        for (op, result) in ops.iter().zip(&results) {
            match result {
                OpResult::Done => {
                    self.outstanding.remove(&op.dst());
                    if let Some(t) = self.changed_at.remove(&op.dst()) {
                        self.metrics
                            .programming
                            .observe(acked.saturating_duration_since(t));
                    }
                }
                // Already gone counts as done; a refused create is a
                // conflict, reported as such.
                OpResult::Failed(libc::ESRCH) if matches!(op, Op::Delete(_)) => {
                    self.outstanding.remove(&op.dst());
                    if let Some(t) = self.changed_at.remove(&op.dst()) {
                        self.metrics
                            .programming
                            .observe(acked.saturating_duration_since(t));
                    }
                }
                OpResult::Failed(libc::EEXIST) if matches!(op, Op::Write(..)) => {}
                _ => {
                    self.outstanding
                        .insert(op.dst(), failure(&(op.clone(), *result)));
                }
            }
        }
        // Failed writes keep their start time for the retry; changes that
        // needed no write are done.
        let outstanding = &self.outstanding;
        self.changed_at
            .retain(|dst, _| outstanding.contains_key(dst));
        if outcome.failures.is_empty() {
            self.backoff = self.cfg.retry_min;
        } else {
            for (op, result) in outcome.failures.iter().take(10) {
                tracing::warn!(failure = %failure(&(op.clone(), *result)), "route write failed; will retry");
            }
            self.retry_at = Some(Instant::now() + self.backoff);
            if outcome.needs_resync {
                self.schedule_resync(self.backoff);
            }
            self.backoff = (self.backoff * 2).min(self.cfg.retry_max);
        }
        ops.len()
    }

    async fn full_resync(&mut self) -> Result<(), DumpError> {
        let span = tracing::info_span!("resync", table = self.cfg.table, n = self.full_resyncs + 1);
        self.full_resync_inner().instrument(span).await
    }

    async fn full_resync_inner(&mut self) -> Result<(), DumpError> {
        let started = Instant::now();
        if self.events.is_none() && self.cfg.event_resync {
            // Subscribe before dumping, as at start.
            match EventSocket::open(self.sock.port_id()) {
                Ok(e) => self.events = Some(e),
                Err(e) => tracing::warn!(error = %e, "cannot reopen the event socket"),
            }
        }
        self.link_epoch += 1;
        let epoch = self.link_epoch;
        let links = &mut self.links;
        self.sock
            .dump_links(|index, flags, name| match links.get_mut(&index) {
                Some(l) if l.name == name => {
                    l.flags = flags;
                    l.epoch = epoch;
                }
                _ => {
                    links.insert(
                        index,
                        LinkState {
                            name: name.to_string(),
                            flags,
                            first_seen: started,
                            epoch,
                        },
                    );
                }
            })
            .await?;
        links.retain(|_, l| l.epoch == epoch);

        self.delta.begin_resync();
        let mut grace_until = None;
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            let Task {
                sock,
                delta,
                policy,
                links,
                cfg,
                ..
            } = self;
            sock.dump_routes(family, cfg.table, |k| {
                let seen = classify(
                    k,
                    policy,
                    links,
                    cfg.grace_period,
                    started,
                    &mut grace_until,
                );
                delta.observe(k, seen);
            })
            .await?;
        }
        let counts = self.delta.finish_resync();
        self.grace_recheck = grace_until;
        self.full_resyncs += 1;
        let took = started.elapsed();
        self.last_resync = Some(took);
        self.metrics.resync.observe(took);
        let now = Instant::now();
        self.last_resync_end = Some(now);
        self.next_periodic = now + self.cfg.resync_interval;
        tracing::debug!(
            took_us = took.as_micros() as u64,
            owned = counts.owned_seen,
            deferred = counts.deferred,
            conflicts = counts.conflicts,
            "resync done"
        );
        for c in self.delta.conflicts().take(10) {
            tracing::warn!(dst = %c, "another route holds this prefix; felix leaves it alone");
        }
        Ok(())
    }

    async fn on_events(&mut self) {
        let mut events = Vec::new();
        let Some(socket) = self.events.as_mut() else {
            return;
        };
        if let Err(e) = socket.drain(EVENTS_PER_TURN, &mut events).await {
            tracing::warn!(error = %e, "reading netlink events failed; reopening at the next resync");
            self.events = None;
            self.schedule_resync(self.backoff);
            return;
        }
        let mut trigger = false;
        let mut foreign = false;
        for ev in events {
            match ev {
                Event::Overflow => {
                    tracing::info!("netlink events were lost; resyncing");
                    trigger = true;
                    foreign = true;
                }
                // The kernel drops IPv4 routes of a deleted or downed link
                // without telling anyone. For a pod interface (every CNI
                // DEL) felix knows which routes those were and forgets just
                // them; for any other link, whose routes may be gateway
                // routes felix recorded without the interface the kernel
                // chose, only a full dump can tell.
                Event::Link {
                    deleted: true,
                    index,
                    name,
                    ..
                } => {
                    self.links.remove(&index);
                    if self.policy.is_workload_iface(&name) {
                        self.forget_link(index, &name, false);
                    } else {
                        trigger = true;
                        foreign = true;
                    }
                }
                Event::Link {
                    deleted: false,
                    index,
                    flags,
                    name,
                } => match self.links.get_mut(&index) {
                    Some(l) if l.name == name => {
                        let was_up = l.flags & libc::IFF_UP as u32 != 0;
                        l.flags = flags;
                        if was_up && flags & libc::IFF_UP as u32 == 0 {
                            if self.policy.is_workload_iface(&name) {
                                self.forget_link(index, &name, true);
                            } else {
                                trigger = true;
                                foreign = true;
                            }
                        }
                    }
                    _ => {
                        self.links.insert(
                            index,
                            LinkState {
                                name,
                                flags,
                                first_seen: Instant::now(),
                                epoch: self.link_epoch,
                            },
                        );
                    }
                },
                // A deletion of a route felix holds is all a dump would
                // tell about it (IPv6 announces the routes of a removed
                // link this way).
                Event::Route {
                    deleted: true,
                    route,
                } if self.delta.forget_deleted(&route) => {
                    self.apply_now = true;
                }
                Event::Route { route, .. } => {
                    trigger |= self.cares_about(&route);
                    foreign |= self.is_foreign(&route);
                }
            }
        }
        if trigger {
            self.schedule_event_resync();
        }
        if foreign {
            self.foreign.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The per-interface resync: the kernel took link `index`'s routes
    /// (all, or with `ipv4_only` those of a downed link), so the model
    /// forgets them; desired ones among them are written again by the next
    /// apply.
    fn forget_link(&mut self, index: u32, name: &str, ipv4_only: bool) {
        let forgotten = self.delta.forget_routes_via(index, ipv4_only);
        self.interface_resyncs += 1;
        tracing::debug!(
            index,
            iface = name,
            ipv4_only,
            forgotten,
            "pod interface went; forgot its routes"
        );
        self.apply_now = true;
    }

    /// The name of the interface `route` leaves by, if known.
    fn oif_name(&self, route: &KernelRoute) -> Option<&str> {
        route
            .oif
            .and_then(|i| self.links.get(&i))
            .map(|l| l.name.as_str())
    }

    /// A route of the table that felix does not own: the underlay's.
    fn is_foreign(&self, route: &KernelRoute) -> bool {
        if route.table != self.cfg.table {
            return false;
        }
        let name = self.oif_name(route);
        !self.policy.owns(route, name) && !self.policy.is_workload_iface(name.unwrap_or(""))
    }

    fn cares_about(&self, route: &KernelRoute) -> bool {
        if route.table != self.cfg.table {
            return false;
        }
        self.policy.owns(route, self.oif_name(route)) || self.delta.desired(&route.dst).is_some()
    }
}

async fn events_ready(events: Option<&EventSocket>) -> io::Result<()> {
    match events {
        Some(e) => e.readable().await,
        None => std::future::pending().await,
    }
}

fn classify(
    k: &KernelRoute,
    policy: &OwnershipPolicy,
    links: &FastMap<u32, LinkState>,
    grace: Duration,
    now: Instant,
    grace_until: &mut Option<Instant>,
) -> Seen {
    let link = k.oif.and_then(|i| links.get(&i));
    if !policy.owns(k, link.map(|l| l.name.as_str())) {
        return Seen::Foreign;
    }
    if let Some(l) = link
        && policy.is_workload_iface(&l.name)
    {
        let ends = l.first_seen + grace;
        if ends > now {
            *grace_until = Some(earliest(*grace_until, ends));
            return Seen::OwnedInGrace;
        }
    }
    Seen::Owned
}

fn failure((op, result): &(Op, OpResult)) -> ApplyFailure {
    let op_name = match op {
        Op::Delete(_) => "delete",
        Op::Write(_, WriteMode::Create) => "create",
        Op::Write(_, WriteMode::Replace) => "replace",
    };
    ApplyFailure {
        dst: op.dst(),
        op: op_name,
        errno: match result {
            OpResult::Failed(e) => Some(*e),
            OpResult::Done | OpResult::Unknown => None,
        },
    }
}
