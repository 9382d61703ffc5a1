//! The dataplane's task: one loop owning the desired state, the tunnel
//! device and the NAT table. See [`super`] for the picture.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::{IpNetwork, Ipv4Network};
use rtnetlink::Handle;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{
    Command, DataplaneConfig, DataplaneReport, DataplaneStatus, DynamicCidrs, TunnelStatus,
    Vxlan6Input, Vxlan6Status, VxlanStatus,
};
use crate::calc::{self, Desired, Inputs, NatSpec, Pool};
use crate::mtu::{self, Underlay};
use crate::nat::{NatTable, SyncOutcome};
use crate::routes::{Route, RouteHandle};
use crate::tunnel::{BackendChoice, BackendKind, PeerTable, Tunnel, TunnelError};
use crate::vxlan::userspace::{UserspaceVxlan, VtepTable};
use crate::vxlan::{self, DeviceSpec, Vtep, VxlanDevice, VxlanLocal};
use crate::workload::PodInterfaces;

/// Commands taken per loop turn at most, so one turn stays short.
const COMMANDS_PER_TURN: usize = 4096;

pub(super) struct Task {
    cfg: DataplaneConfig,
    nl: Handle,
    conn: tokio::task::JoinHandle<()>,
    routes: RouteHandle,
    tunnel: Option<Tunnel>,
    workloads: Arc<PodInterfaces>,
    policy: Arc<DynamicCidrs>,
    rx: mpsc::UnboundedReceiver<Command>,

    // Desired state, as given.
    node: Option<Ipv4Network>,
    pools: Vec<Pool>,
    local: BTreeSet<IpNetwork>,
    /// BGPPeer `reachableBy` host routes: (peer, gateway).
    peer_routes: Vec<(std::net::IpAddr, std::net::IpAddr)>,
    remote: BTreeMap<IpNetwork, crate::routes::NextHops>,
    tunnel_addr: Option<Ipv4Addr>,
    /// The tunnel address was told (with the first configuration): until
    /// then felix leaves an adopted tunnel device, its address and MTU as
    /// they are. Removing the address would take every route using it as
    /// source with it.
    tunnel_addr_told: bool,
    vxlan_local: Option<VxlanLocal>,
    vteps: Vec<Vtep>,
    /// Pools were given at least once: before, "no VXLAN pool" means
    /// "not told yet", and an existing VXLAN device is not deleted.
    pools_known: bool,
    /// The VTEPs changed since the unusable ones were last logged.
    vteps_changed: bool,

    // What was applied.
    routes_sent: BTreeMap<IpNetwork, Route>,
    peers_sent: Option<BTreeMap<Ipv4Network, Ipv4Addr>>,
    desired: Desired,
    underlay: Option<Underlay>,
    pod_mtu: u32,
    tunnel_configured: Option<(u32, Option<Ipv4Addr>)>,
    mtu_written: Option<u32>,
    nat: NatTable,
    nat_applied: Option<NatSpec>,
    nat_writes: u64,
    /// The VXLAN device, once made with `vxlan_spec`.
    vxlan: Option<VxlanDevice>,
    vxlan_spec: Option<DeviceSpec>,
    /// The userspace VTEP, when that backend is in use.
    vxlan_user: Option<UserspaceVxlan>,
    /// `FELIX_VXLANBACKEND=auto` found no vxlan in the kernel.
    vxlan_auto_userspace: bool,
    /// The device and entries last written in full.
    vxlan_synced: Option<VxlanWanted>,
    /// No VXLAN device is left since the last removal (no VXLAN pool).
    vxlan_absent: bool,
    /// No userspace IPIP device is left since the last removal (no IPIP
    /// pool).
    tunnel_absent: bool,

    // Errors of the last attempt, retried.
    tunnel_error: Option<String>,
    nat_error: Option<String>,
    mtu_error: Option<String>,
    vxlan_error: Option<String>,
    /// The VXLAN source filter's writer (`tunnel::filter`, table
    /// `calico-rs-vxlan`), started with the first VXLAN pool.
    vxlan_filter: Option<tokio::sync::watch::Sender<Option<BTreeSet<std::net::Ipv4Addr>>>>,

    // IPv6 VXLAN (`vxlan-v6.calico`, kernel backend only).
    v6: Vxlan6Input,
    /// The IPv6 VTEPs changed since the unusable ones were last logged.
    vteps6_changed: bool,
    vxlan6: Option<VxlanDevice>,
    vxlan6_spec: Option<DeviceSpec<Ipv6Addr>>,
    vxlan6_synced: Option<VxlanWanted<Ipv6Addr>>,
    vxlan6_absent: bool,
    vxlan6_error: Option<String>,
    /// The IPv6 VXLAN source filter (`calico-rs-vxlan6`).
    vxlan6_filter: Option<tokio::sync::watch::Sender<Option<BTreeSet<Ipv6Addr>>>>,

    /// Recursive next-hop resolution: each BGP next hop looked up so far
    /// → the gateway of the kernel's route to it (`None`: connected, or
    /// no route; used as it is).
    next_hops: BTreeMap<std::net::IpAddr, Option<std::net::IpAddr>>,
    /// The resolved ones, as [`Inputs::resolved`] takes them.
    resolved: BTreeMap<std::net::IpAddr, std::net::IpAddr>,
    /// Moves when a route felix does not own changes: look every next hop
    /// up again.
    foreign: watch::Receiver<u64>,
    /// `foreign` is still connected to the route reconciler.
    foreign_open: bool,
    /// Look every next hop up again on the next apply.
    reresolve: bool,

    dirty: bool,
    /// Ask the route reconciler for a full resync on the next apply.
    resync_routes: bool,
    /// Re-read the underlay, tunnel and NAT table on the next apply.
    refresh: bool,
    next_refresh: Instant,
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// The neighbour and FDB entries wanted on one VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VxlanWanted<A = Ipv4Addr> {
    ifindex: u32,
    neigh: BTreeMap<A, [u8; 6]>,
    fdb: BTreeMap<[u8; 6], A>,
}

/// Reads a VXLAN device's neighbour and FDB entries back and writes the
/// difference to `want`; `synced` is what the device holds afterwards
/// (`None` after a failure, so the next pass reads again), `error` why it
/// failed. `what` names the family in the log.
async fn write_entries<A: vxlan::VtepAddr>(
    nl: &Handle,
    dev: &VxlanDevice,
    want: VxlanWanted<A>,
    synced: &mut Option<VxlanWanted<A>>,
    error: &mut Option<String>,
    what: &str,
) {
    let ops = match dev.entries::<A>(nl).await {
        Ok((n, f)) => vxlan::entry_ops(&n, &f, &want.neigh, &want.fdb),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the {what} device's entries; retrying");
            *synced = None;
            *error = Some(e.to_string());
            return;
        }
    };
    if !ops.is_empty() {
        tracing::info!(device = %dev.name, changes = ops.len(), vteps = want.fdb.len(),
            "{what} neighbour and FDB entries updated");
    }
    match dev.apply(nl, &ops).await {
        Ok(()) => *synced = Some(want),
        Err(e) => {
            *synced = None;
            *error = Some(e.to_string());
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Task {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: DataplaneConfig,
        nl: Handle,
        conn: tokio::task::JoinHandle<()>,
        routes: RouteHandle,
        tunnel: Option<Tunnel>,
        workloads: Arc<PodInterfaces>,
        policy: Arc<DynamicCidrs>,
        rx: mpsc::UnboundedReceiver<Command>,
    ) -> Task {
        Task {
            nat: NatTable::new(&cfg.nat_table),
            pod_mtu: cfg.default_mtu,
            next_hops: BTreeMap::new(),
            resolved: BTreeMap::new(),
            foreign: routes.foreign_changes(),
            foreign_open: true,
            reresolve: false,
            next_refresh: Instant::now() + cfg.refresh_interval,
            backoff: cfg.retry_min,
            cfg,
            nl,
            conn,
            routes,
            tunnel,
            workloads,
            policy,
            rx,
            node: None,
            pools: Vec::new(),
            local: BTreeSet::new(),
            peer_routes: Vec::new(),
            remote: BTreeMap::new(),
            tunnel_addr: None,
            tunnel_addr_told: false,
            vxlan_local: None,
            vteps: Vec::new(),
            pools_known: false,
            vteps_changed: false,
            routes_sent: BTreeMap::new(),
            peers_sent: None,
            desired: Desired::default(),
            underlay: None,
            tunnel_configured: None,
            mtu_written: None,
            nat_applied: None,
            nat_writes: 0,
            vxlan: None,
            vxlan_spec: None,
            vxlan_user: None,
            vxlan_auto_userspace: false,
            vxlan_synced: None,
            vxlan_absent: false,
            tunnel_absent: false,
            tunnel_error: None,
            nat_error: None,
            mtu_error: None,
            vxlan_error: None,
            vxlan_filter: None,
            v6: Vxlan6Input::default(),
            vteps6_changed: false,
            vxlan6: None,
            vxlan6_spec: None,
            vxlan6_synced: None,
            vxlan6_absent: false,
            vxlan6_error: None,
            vxlan6_filter: None,
            dirty: true,
            resync_routes: false,
            refresh: true,
            retry_at: None,
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            let wake = self
                .retry_at
                .map_or(self.next_refresh, |r| r.min(self.next_refresh));
            let first = tokio::select! {
                c = self.rx.recv() => match c {
                    Some(c) => Some(c),
                    None => return,
                },
                changed = self.foreign.changed(), if self.foreign_open => {
                    match changed {
                        Ok(()) => {
                            self.reresolve = true;
                            self.dirty = true;
                        }
                        Err(_) => self.foreign_open = false,
                    }
                    None
                }
                _ = tokio::time::sleep_until(wake) => None,
            };
            let now = Instant::now();
            if now >= self.next_refresh {
                self.refresh = true;
                self.dirty = true;
                self.next_refresh = now + self.cfg.refresh_interval;
            }
            if self.retry_at.is_some_and(|r| now >= r) {
                self.retry_at = None;
                self.refresh = true;
                self.dirty = true;
            }
            let mut waiters = Vec::new();
            let mut status_waiters = Vec::new();
            let mut next = first;
            for _ in 0..COMMANDS_PER_TURN {
                let Some(c) = next.take() else { break };
                match c {
                    Command::Flush(tx) => waiters.push(tx),
                    Command::Status(tx) => status_waiters.push(tx),
                    other => self.take(other),
                }
                next = self.rx.try_recv().ok();
            }
            if let Some(c) = next {
                // Over the per-turn budget: handle it next turn, in order.
                self.dirty = true;
                match c {
                    Command::Flush(tx) => waiters.push(tx),
                    Command::Status(tx) => status_waiters.push(tx),
                    other => self.take(other),
                }
            }
            if self.dirty {
                self.apply().await;
            }
            for tx in status_waiters {
                let s = self.status().await;
                let _ = tx.send(s);
            }
            if !waiters.is_empty() {
                self.answer_flush(waiters).await;
            }
        }
    }

    fn take(&mut self, c: Command) {
        match c {
            Command::Node(n) => {
                if self.node != n {
                    self.node = n;
                    self.refresh = true;
                }
            }
            Command::Pools(p) => {
                self.pools = p;
                self.pools_known = true;
            }
            Command::LocalBlocks(b) => self.local = b.into_iter().collect(),
            Command::PeerRoutes(r) => self.peer_routes = r,
            Command::RemoteBlocks(b) => self.remote = b.into_iter().collect(),
            Command::RemoteBlock(b, Some(n)) => {
                self.remote.insert(b, n);
            }
            Command::RemoteBlock(b, None) => {
                self.remote.remove(&b);
            }
            Command::TunnelAddress(a) => {
                self.tunnel_addr = a;
                self.tunnel_addr_told = true;
            }
            Command::VxlanLocal(l) => self.vxlan_local = l,
            Command::Vteps(v) => {
                if self.vteps != v {
                    self.vteps = v;
                    self.vteps_changed = true;
                }
            }
            Command::Vxlan6(v6) => {
                if self.v6.vteps != v6.vteps {
                    self.vteps6_changed = true;
                }
                self.v6 = v6;
            }
            Command::Resync => {
                self.refresh = true;
                self.resync_routes = true;
            }
            Command::Flush(_) | Command::Status(_) => {}
        }
        self.dirty = true;
    }

    async fn apply(&mut self) {
        self.dirty = false;
        let refresh = std::mem::take(&mut self.refresh);
        if refresh {
            self.detect_underlay().await;
            if let Err(e) = self.workloads.recheck_antispoof().await {
                tracing::error!(error = %e, "cannot check the pods' source-address table");
            }
        }
        let ipip = calc::ipip_enabled(&self.pools);
        let vxlan_on = calc::vxlan_enabled(&self.pools);
        let vxlan6_on = calc::vxlan6_enabled(&self.pools);
        let underlay_mtu = self
            .underlay
            .as_ref()
            .map_or(self.cfg.default_mtu, |u| u.mtu);
        self.pod_mtu = calc::pod_mtu(underlay_mtu, calc::encap_overhead(&self.pools));

        // The tunnel device first: routes through it need it up.
        if ipip {
            self.tunnel_absent = false;
            self.configure_tunnel(refresh).await;
        } else {
            // Nothing needs the tunnel: its state is no error.
            self.tunnel_error = None;
        }
        // The VXLAN device and its neighbour / FDB entries before the
        // routes through it.
        if vxlan_on {
            self.vxlan_absent = false;
            self.configure_vxlan(refresh, underlay_mtu).await;
            self.sync_vxlan_entries(refresh).await;
        } else {
            self.vxlan_error = None;
            if let Some(f) = &self.vxlan_filter {
                f.send_replace(None);
            }
        }
        if vxlan6_on {
            self.vxlan6_absent = false;
            self.configure_vxlan6(refresh, underlay_mtu).await;
            self.sync_vxlan6_entries(refresh).await;
        } else {
            self.vxlan6_error = None;
            if let Some(f) = &self.vxlan6_filter {
                f.send_replace(None);
            }
        }
        self.resolve_next_hops(refresh).await;
        let tunnel_index = self.tunnel.as_ref().map(Tunnel::ifindex);
        let vxlan_index = self.vxlan.as_ref().filter(|_| vxlan_on).map(|d| d.ifindex);
        let vxlan6_index = self
            .vxlan6
            .as_ref()
            .filter(|_| vxlan6_on)
            .map(|d| d.ifindex);
        let (usable, _) = vxlan::usable(
            &self.vteps,
            self.node.map(|n| n.ip()),
            self.vxlan_local.map(|l| l.tunnel_addr),
        );
        let (usable6, _) = vxlan::usable(
            &self.v6.vteps,
            self.v6.node.map(|n| n.ip()),
            self.v6.local.map(|l| l.tunnel_addr),
        );
        self.desired = calc::desired(Inputs {
            pools: &self.pools,
            node: self.node,
            local_blocks: &self.local,
            remote_blocks: &self.remote,
            tunnel: tunnel_index,
            vteps: &usable,
            vxlan: vxlan_index,
            node6: self.v6.node,
            vteps6: &usable6,
            vxlan6: vxlan6_index,
            peer_routes: &self.peer_routes,
            resolved: &self.resolved,
        });
        let updates = calc::route_updates(&self.routes_sent, &self.desired.routes);
        if !updates.is_empty() {
            match self.routes.update(updates) {
                Ok(()) => self.routes_sent = self.desired.routes.clone(),
                Err(e) => tracing::error!(error = %e, "route reconciler refused the block routes"),
            }
        }
        // Not before the first configuration: an adopted userspace tunnel
        // forwards with the peers its routes name until then.
        if let Some(t) = &self.tunnel
            && self.tunnel_addr_told
            && self.peers_sent.as_ref() != Some(&self.desired.tunneled)
        {
            t.backend()
                .set_peers(PeerTable::new(&self.desired.tunneled));
            self.peers_sent = Some(self.desired.tunneled.clone());
        }
        if !ipip && self.pools_known && !self.tunnel_absent {
            // After the routes through it are gone.
            self.remove_tunnel().await;
        }
        if !vxlan_on && self.pools_known && !self.vxlan_absent {
            // After the routes through it are gone.
            self.remove_vxlan().await;
        }
        if !vxlan6_on && self.pools_known && !self.vxlan6_absent {
            self.remove_vxlan6().await;
        }
        if std::mem::take(&mut self.resync_routes)
            && let Err(e) = self.routes.resync().await
        {
            tracing::warn!(error = %e, "route resync failed");
        }
        let mut cidrs: Vec<IpNetwork> = self.pools.iter().map(|p| p.cidr).collect();
        cidrs.extend(self.local.iter().copied());
        self.policy.set(cidrs);
        self.workloads.set_mtu(self.pod_mtu);
        self.write_mtu();
        self.sync_nat(refresh).await;

        let failed = self.tunnel_error.is_some()
            || self.nat_error.is_some()
            || self.mtu_error.is_some()
            || self.vxlan_error.is_some()
            || self.vxlan6_error.is_some();
        if failed {
            self.retry_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(self.cfg.retry_max);
        } else {
            self.backoff = self.cfg.retry_min;
        }
    }

    /// Looks up the kernel's route to each BGP next hop not looked up yet
    /// (all of them again on `refresh` or after a change to a route felix
    /// does not own), and keeps the gateways of those that are not on a
    /// connected subnet: [`Inputs::resolved`].
    async fn resolve_next_hops(&mut self, refresh: bool) {
        let hops = calc::next_hops(&self.remote);
        if refresh || std::mem::take(&mut self.reresolve) {
            self.next_hops.clear();
        }
        self.next_hops.retain(|h, _| hops.contains(h));
        let mut changed = false;
        for hop in hops {
            if self.next_hops.contains_key(&hop) {
                continue;
            }
            let via = match super::nexthop::gateway_to(&self.nl, hop).await {
                Ok(via) => via,
                Err(e) => {
                    tracing::warn!(next_hop = %hop, error = %e, "cannot look up the route to a BGP next hop");
                    None
                }
            };
            if self.resolved.get(&hop).copied() != via {
                changed = true;
                match via {
                    Some(gw) => {
                        tracing::info!(next_hop = %hop, via = %gw, "BGP next hop is not a neighbour; routing through the gateway of its route")
                    }
                    None if self.resolved.contains_key(&hop) => {
                        tracing::info!(next_hop = %hop, "BGP next hop is a neighbour again")
                    }
                    None => {}
                }
            }
            self.next_hops.insert(hop, via);
        }
        if changed || self.resolved.len() != self.next_hops.values().flatten().count() {
            self.resolved = self
                .next_hops
                .iter()
                .filter_map(|(h, via)| via.map(|v| (*h, v)))
                .collect();
        }
    }

    async fn detect_underlay(&mut self) {
        let Some(node) = self.node else {
            self.underlay = None;
            return;
        };
        match mtu::detect(&self.nl, node.ip()).await {
            Ok(u) => {
                if u != self.underlay {
                    tracing::info!(underlay = ?u, "underlay interface");
                }
                self.underlay = u;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the underlay interface"),
        }
    }

    async fn configure_tunnel(&mut self, refresh: bool) {
        if self.tunnel.is_none() {
            // Not there at start, or deleted since: (re)create it. Routes
            // follow the new ifindex in this same apply.
            match Tunnel::open(&self.nl, self.cfg.ipip_backend, &self.cfg.tunnel_name).await {
                Ok(t) => {
                    tracing::info!(backend = %t.kind(), device = t.name(), "IPIP tunnel device (re)created");
                    self.tunnel = Some(t);
                    self.peers_sent = None;
                    self.tunnel_configured = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no IPIP tunnel device; retrying");
                    self.tunnel_error = Some(e.to_string());
                    return;
                }
            }
        }
        let Some(t) = &self.tunnel else {
            return;
        };
        if !self.tunnel_addr_told {
            // Before the first configuration: a device adopted from a
            // previous felix keeps its address, MTU and routes.
            return;
        }
        let want = (self.pod_mtu, self.tunnel_addr);
        if !refresh && self.tunnel_configured == Some(want) && self.tunnel_error.is_none() {
            return;
        }
        match t.configure(&self.nl, want.0, want.1).await {
            Ok(changed) => {
                if changed {
                    tracing::info!(device = t.name(), mtu = want.0, address = ?want.1, "tunnel device configured");
                }
                self.tunnel_configured = Some(want);
                self.tunnel_error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "configuring the tunnel device failed; retrying");
                if matches!(e, TunnelError::Vanished(_)) {
                    self.tunnel = None;
                }
                self.tunnel_configured = None;
                self.tunnel_error = Some(e.to_string());
            }
        }
    }

    /// No IPIP pool: the userspace tunnel stops and its (persistent) TUN
    /// device goes, also one a previous felix left. The kernel's `tunl0`
    /// stays (as Calico leaves it).
    async fn remove_tunnel(&mut self) {
        if self
            .tunnel
            .as_ref()
            .is_some_and(|t| t.kind() == BackendKind::Kernel)
        {
            self.tunnel_absent = true;
            return;
        }
        let name = self
            .tunnel
            .take()
            .map_or_else(|| self.cfg.tunnel_name.clone(), |t| t.name().to_string());
        self.peers_sent = None;
        self.tunnel_configured = None;
        let mut names = vec![name];
        if !names
            .iter()
            .any(|n| n == crate::tunnel::USERSPACE_FALLBACK_NAME)
        {
            names.push(crate::tunnel::USERSPACE_FALLBACK_NAME.to_string());
        }
        for name in names {
            match crate::tunnel::userspace::remove(&self.nl, &name).await {
                Ok(true) => {
                    tracing::info!(device = %name, "no IPIP pool; userspace IPIP device removed")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot remove the userspace IPIP device; retrying");
                    self.tunnel_error = Some(e.to_string());
                    return;
                }
            }
        }
        self.tunnel_absent = true;
    }

    /// Creates, adopts or repairs `vxlan.calico` once this node's VTEP and
    /// address are known.
    async fn configure_vxlan(&mut self, refresh: bool, underlay_mtu: u32) {
        let (Some(local), Some(node)) = (self.vxlan_local, self.node) else {
            // Not known yet (or withdrawn): VXLAN routes wait.
            if self.vxlan.take().is_some() {
                tracing::warn!(
                    "this node's VXLAN tunnel address or MAC is gone; VXLAN routes wait for it"
                );
            }
            self.vxlan_spec = None;
            self.vxlan_synced = None;
            self.vxlan_error = None;
            return;
        };
        let spec = DeviceSpec {
            vni: vxlan::VNI,
            port: vxlan::PORT,
            local: node.ip(),
            mac: local.mac,
            mtu: calc::pod_mtu(underlay_mtu, calc::VXLAN_OVERHEAD),
            addr: local.tunnel_addr,
        };
        if !refresh
            && self.vxlan.is_some()
            && self.vxlan_spec == Some(spec)
            && self.vxlan_error.is_none()
        {
            return;
        }
        let name = self.cfg.vxlan_name.clone();
        let userspace = match self.cfg.vxlan_backend {
            BackendChoice::Kernel => false,
            BackendChoice::Userspace => true,
            BackendChoice::Auto => self.vxlan_auto_userspace,
        };
        let r = if userspace {
            vxlan::userspace::ensure(&self.nl, &mut self.vxlan_user, &name, &spec).await
        } else {
            match VxlanDevice::ensure(&self.nl, &name, &spec).await {
                Err(vxlan::VxlanError::KernelUnsupported(e))
                    if self.cfg.vxlan_backend == BackendChoice::Auto =>
                {
                    tracing::info!(reason = %e, "no kernel vxlan support; using the userspace VXLAN backend");
                    self.vxlan_auto_userspace = true;
                    vxlan::userspace::ensure(&self.nl, &mut self.vxlan_user, &name, &spec).await
                }
                r => r,
            }
        };
        match r {
            Ok((dev, changed)) => {
                if changed {
                    tracing::info!(device = %dev.name, ifindex = dev.ifindex, vni = spec.vni,
                        port = spec.port, local = %spec.local, mac = %vxlan::Mac(&spec.mac),
                        mtu = spec.mtu, address = %spec.addr, "VXLAN device configured");
                }
                // A new device has no entries, and the kernel flushes a
                // device's neighbours (permanent ones too) when its MAC
                // changes: read them back and write them again.
                if changed || self.vxlan.as_ref() != Some(&dev) || self.vxlan_spec != Some(spec) {
                    self.vxlan_synced = None;
                }
                self.vxlan = Some(dev);
                self.vxlan_spec = Some(spec);
                self.vxlan_error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "no VXLAN device; VXLAN routes wait; retrying");
                // A failed netlink request leaves a working device working;
                // anything else means there is none to route through.
                if !matches!(e, vxlan::VxlanError::Netlink { .. }) {
                    self.vxlan = None;
                }
                self.vxlan_spec = None;
                self.vxlan_synced = None;
                self.vxlan_error = Some(e.to_string());
            }
        }
    }

    /// VXLAN is decapsulated only from `nodes`, those whose VTEPs are
    /// programmed (the kernel device would take it from anyone).
    fn sync_vxlan_filter(
        filter: &mut Option<tokio::sync::watch::Sender<Option<BTreeSet<std::net::Ipv4Addr>>>>,
        nodes: BTreeSet<std::net::Ipv4Addr>,
    ) {
        let writer = filter.get_or_insert_with(|| {
            crate::tunnel::filter::spawn_writer_for(crate::tunnel::filter::Encap::Vxlan)
        });
        writer.send_if_modified(|cur| {
            if cur.as_ref() == Some(&nodes) {
                false
            } else {
                *cur = Some(nodes);
                true
            }
        });
    }

    /// Keeps one neighbour and one FDB entry per usable VTEP on the device
    /// (read back and diffed when the VTEPs or the device change, and on
    /// every refresh), and the VXLAN filter admitting those VTEPs' nodes.
    async fn sync_vxlan_entries(&mut self, refresh: bool) {
        let (usable, skipped) = vxlan::usable(
            &self.vteps,
            self.node.map(|n| n.ip()),
            self.vxlan_local.map(|l| l.tunnel_addr),
        );
        if std::mem::take(&mut self.vteps_changed) {
            for s in &skipped {
                tracing::warn!(node = %s.node, reason = %s.reason, "VTEP not programmed");
            }
        }
        let (neigh, fdb) = vxlan::wanted(&usable);
        if self.vxlan_user.is_some() {
            // The userspace VTEP checks the source itself (and counts what
            // it drops): no nftables filter in front of it.
            if let Some(f) = &self.vxlan_filter {
                f.send_replace(None);
            }
        } else {
            let nodes = usable.iter().map(|v| v.node_ip).collect();
            Self::sync_vxlan_filter(&mut self.vxlan_filter, nodes);
        }
        let Some(dev) = self.vxlan.clone() else {
            return;
        };
        let want = VxlanWanted {
            ifindex: dev.ifindex,
            neigh,
            fdb,
        };
        if !refresh && self.vxlan_synced.as_ref() == Some(&want) {
            return;
        }
        if let (Some(u), Some(local)) = (&self.vxlan_user, self.vxlan_local) {
            // The userspace VTEP keeps its table itself: no neighbour or
            // FDB entries on a TUN device.
            if self.vxlan_synced.as_ref() != Some(&want) {
                tracing::info!(device = %dev.name, vteps = want.fdb.len(), "userspace VTEP table updated");
            }
            u.set_table(VtepTable::new(&usable, local.mac));
            self.vxlan_synced = Some(want);
            return;
        }
        write_entries(
            &self.nl,
            &dev,
            want,
            &mut self.vxlan_synced,
            &mut self.vxlan_error,
            "VXLAN",
        )
        .await;
    }

    /// No VXLAN pool: the device goes (with its entries and any route
    /// still through it).
    async fn remove_vxlan(&mut self) {
        // The userspace VTEP's threads stop first, then its (persistent)
        // TUN device goes, also one a previous felix left.
        self.vxlan_user = None;
        match vxlan::userspace::remove(&self.nl, &self.cfg.vxlan_name).await {
            Ok(true) => {
                tracing::info!(device = %self.cfg.vxlan_name, "no VXLAN pool; userspace VXLAN device removed")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove the userspace VXLAN device; retrying");
                self.vxlan_error = Some(e.to_string());
                return;
            }
        }
        match VxlanDevice::remove(&self.nl, &self.cfg.vxlan_name).await {
            Ok(removed) => {
                if removed {
                    tracing::info!(device = %self.cfg.vxlan_name, "no VXLAN pool; VXLAN device removed");
                }
                self.vxlan = None;
                self.vxlan_spec = None;
                self.vxlan_synced = None;
                self.vxlan_absent = true;
                self.vxlan_error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove the VXLAN device; retrying");
                self.vxlan_error = Some(e.to_string());
            }
        }
    }

    /// Creates, adopts or repairs `vxlan-v6.calico` once this node's IPv6
    /// address and IPv6 VTEP are known. Kernel backend only: with the
    /// userspace backend (chosen, or `auto` on a kernel without vxlan)
    /// this is reported as an error, and IPv6 VXLAN blocks wait.
    async fn configure_vxlan6(&mut self, refresh: bool, underlay_mtu: u32) {
        let (Some(local), Some(node)) = (self.v6.local, self.v6.node) else {
            if self.vxlan6.take().is_some() {
                tracing::warn!(
                    "this node's IPv6 address, IPv6 VXLAN tunnel address or MAC is gone; IPv6 VXLAN routes wait for them"
                );
            }
            self.vxlan6_spec = None;
            self.vxlan6_synced = None;
            self.vxlan6_error = None;
            return;
        };
        let userspace = match self.cfg.vxlan_backend {
            BackendChoice::Kernel => false,
            BackendChoice::Userspace => true,
            BackendChoice::Auto => self.vxlan_auto_userspace,
        };
        if userspace {
            let e = format!(
                "IPv6 VXLAN pools need the kernel VXLAN backend: the userspace backend (FELIX_VXLANBACKEND={}) carries IPv4 only; IPv6 blocks of VXLAN pools are not routed (use a kernel with the vxlan module and FELIX_VXLANBACKEND=kernel or auto, or set vxlanMode: Never on the IPv6 pools)",
                match self.cfg.vxlan_backend {
                    BackendChoice::Userspace => "userspace",
                    _ => "auto, no vxlan in the kernel",
                }
            );
            if self.vxlan6_error.as_deref() != Some(e.as_str()) {
                tracing::error!(error = %e, "no IPv6 VXLAN device");
            }
            self.vxlan6 = None;
            self.vxlan6_spec = None;
            self.vxlan6_synced = None;
            self.vxlan6_error = Some(e);
            return;
        }
        let spec = DeviceSpec {
            vni: vxlan::VNI,
            port: vxlan::PORT,
            local: node.ip(),
            mac: local.mac,
            mtu: calc::pod_mtu(underlay_mtu, calc::VXLAN6_OVERHEAD),
            addr: local.tunnel_addr,
        };
        if !refresh
            && self.vxlan6.is_some()
            && self.vxlan6_spec == Some(spec)
            && self.vxlan6_error.is_none()
        {
            return;
        }
        let name = vxlan::DEVICE_NAME_V6;
        match VxlanDevice::ensure(&self.nl, name, &spec).await {
            Ok((dev, changed)) => {
                if changed {
                    tracing::info!(device = %dev.name, ifindex = dev.ifindex, vni = spec.vni,
                        port = spec.port, local = %spec.local, mac = %vxlan::Mac(&spec.mac),
                        mtu = spec.mtu, address = %spec.addr, "IPv6 VXLAN device configured");
                }
                if changed || self.vxlan6.as_ref() != Some(&dev) || self.vxlan6_spec != Some(spec) {
                    self.vxlan6_synced = None;
                }
                self.vxlan6 = Some(dev);
                self.vxlan6_spec = Some(spec);
                self.vxlan6_error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "no IPv6 VXLAN device; IPv6 VXLAN routes wait; retrying");
                if !matches!(e, vxlan::VxlanError::Netlink { .. }) {
                    self.vxlan6 = None;
                }
                self.vxlan6_spec = None;
                self.vxlan6_synced = None;
                self.vxlan6_error = Some(e.to_string());
            }
        }
    }

    /// [`Task::sync_vxlan_entries`] for `vxlan-v6.calico`: IPv6 neighbour
    /// entries, FDB entries to the nodes' IPv6 addresses, and the `ip6`
    /// source filter.
    async fn sync_vxlan6_entries(&mut self, refresh: bool) {
        let (usable, skipped) = vxlan::usable(
            &self.v6.vteps,
            self.v6.node.map(|n| n.ip()),
            self.v6.local.map(|l| l.tunnel_addr),
        );
        if std::mem::take(&mut self.vteps6_changed) {
            for s in &skipped {
                tracing::warn!(node = %s.node, reason = %s.reason, "IPv6 VTEP not programmed");
            }
        }
        let (neigh, fdb) = vxlan::wanted(&usable);
        let Some(dev) = self.vxlan6.clone() else {
            return;
        };
        {
            let nodes: BTreeSet<Ipv6Addr> = usable.iter().map(|v| v.node_ip).collect();
            let writer = self.vxlan6_filter.get_or_insert_with(|| {
                crate::tunnel::filter::spawn_writer_for(crate::tunnel::filter::Encap::Vxlan6)
            });
            writer.send_if_modified(|cur| {
                if cur.as_ref() == Some(&nodes) {
                    false
                } else {
                    *cur = Some(nodes);
                    true
                }
            });
        }
        let want = VxlanWanted {
            ifindex: dev.ifindex,
            neigh,
            fdb,
        };
        if !refresh && self.vxlan6_synced.as_ref() == Some(&want) {
            return;
        }
        write_entries(
            &self.nl,
            &dev,
            want,
            &mut self.vxlan6_synced,
            &mut self.vxlan6_error,
            "IPv6 VXLAN",
        )
        .await;
    }

    /// No IPv6 VXLAN pool: `vxlan-v6.calico` goes (with its entries and
    /// any route through it), and its filter.
    async fn remove_vxlan6(&mut self) {
        if let Some(f) = &self.vxlan6_filter {
            f.send_replace(None);
        }
        match VxlanDevice::remove(&self.nl, vxlan::DEVICE_NAME_V6).await {
            Ok(removed) => {
                if removed {
                    tracing::info!(
                        device = vxlan::DEVICE_NAME_V6,
                        "no IPv6 VXLAN pool; IPv6 VXLAN device removed"
                    );
                }
                self.vxlan6 = None;
                self.vxlan6_spec = None;
                self.vxlan6_synced = None;
                self.vxlan6_absent = true;
                self.vxlan6_error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove the IPv6 VXLAN device; retrying");
                self.vxlan6_error = Some(e.to_string());
            }
        }
    }

    fn write_mtu(&mut self) {
        let Some(path) = &self.cfg.mtu_file else {
            return;
        };
        if self.mtu_written == Some(self.pod_mtu) && self.mtu_error.is_none() {
            return;
        }
        match mtu::write_file(path, self.pod_mtu) {
            Ok(_) => {
                self.mtu_written = Some(self.pod_mtu);
                self.mtu_error = None;
            }
            Err(e) => {
                self.mtu_error = Some(format!("writing {}: {e}", path.display()));
            }
        }
    }

    async fn sync_nat(&mut self, refresh: bool) {
        if !refresh
            && self.nat_error.is_none()
            && self.nat_applied.as_ref() == Some(&self.desired.nat)
        {
            return;
        }
        let spec = self.desired.nat.clone();
        match self.nat.sync(&spec).await {
            Ok(SyncOutcome::Written) => {
                self.nat_writes += 1;
                self.nat_error = None;
                tracing::info!(
                    table = self.nat.name(),
                    masq = spec.masq_pools.len(),
                    pools = spec.all_pools.len(),
                    "NAT-outgoing table written"
                );
            }
            Ok(SyncOutcome::InSync) => self.nat_error = None,
            Err(e) => {
                tracing::warn!(error = %e, "NAT-outgoing table not in sync; retrying");
                self.nat_error = Some(e.to_string());
            }
        }
        self.nat_applied = Some(spec);
    }

    async fn report(&self) -> DataplaneReport {
        DataplaneReport {
            routes: Default::default(),
            tunnel_error: self.tunnel_error.clone(),
            nat_error: self.nat_error.clone(),
            mtu_error: self.mtu_error.clone(),
            waiting_for_tunnel: self.desired.waiting_for_tunnel.clone(),
            vxlan_error: self.vxlan_error.clone(),
            waiting_for_vxlan: self.desired.waiting_for_vxlan.clone(),
            vxlan6_error: self.vxlan6_error.clone(),
        }
    }

    async fn answer_flush(&mut self, waiters: Vec<oneshot::Sender<DataplaneReport>>) {
        let mut report = self.report().await;
        match self.routes.flush().await {
            Ok(r) => report.routes = r,
            Err(e) => report.routes.resync_error = Some(e.to_string()),
        }
        for tx in waiters {
            let _ = tx.send(report.clone());
        }
    }

    async fn status(&self) -> DataplaneStatus {
        let routes = self
            .routes
            .status()
            .await
            .unwrap_or(crate::routes::ReconcilerStatus {
                desired: 0,
                programmed: 0,
                conflicts: Vec::new(),
                full_resyncs: 0,
                interface_resyncs: 0,
                last_resync: None,
                in_sync: false,
                metrics: Default::default(),
            });
        DataplaneStatus {
            tunnel: self.tunnel.as_ref().map(|t| TunnelStatus {
                backend: t.kind(),
                device: t.name().to_string(),
                ifindex: t.ifindex(),
                address: self.tunnel_addr,
                stats: t.backend().stats(),
            }),
            tunnel_error: self.tunnel_error.clone(),
            ipip_enabled: calc::ipip_enabled(&self.pools),
            node: self.node,
            underlay: self.underlay.clone(),
            pod_mtu: self.pod_mtu,
            nat: self.desired.nat.clone(),
            nat_error: self.nat_error.clone(),
            nat_writes: self.nat_writes,
            tunneled_blocks: self.desired.tunneled.len(),
            waiting_for_tunnel: self.desired.waiting_for_tunnel.clone(),
            vxlan: self
                .vxlan
                .as_ref()
                .zip(self.vxlan_spec)
                .map(|(d, spec)| VxlanStatus {
                    backend: if self.vxlan_user.is_some() {
                        BackendKind::Userspace
                    } else {
                        BackendKind::Kernel
                    },
                    device: d.name.clone(),
                    ifindex: d.ifindex,
                    address: spec.addr,
                    mac: spec.mac,
                    mtu: spec.mtu,
                    stats: self
                        .vxlan_user
                        .as_ref()
                        .map_or_else(|| crate::tunnel::device_stats(&d.name), |u| u.stats()),
                }),
            vxlan_error: self.vxlan_error.clone(),
            vxlan_enabled: calc::vxlan_enabled(&self.pools),
            vteps: self.vxlan_synced.as_ref().map_or(0, |w| w.fdb.len()),
            vxlan_blocks: self.desired.vxlan_routed.len(),
            waiting_for_vxlan: self.desired.waiting_for_vxlan.clone(),
            vxlan6: self
                .vxlan6
                .as_ref()
                .zip(self.vxlan6_spec)
                .map(|(d, spec)| Vxlan6Status {
                    device: d.name.clone(),
                    ifindex: d.ifindex,
                    address: spec.addr,
                    local: spec.local,
                    mac: spec.mac,
                    mtu: spec.mtu,
                    stats: crate::tunnel::device_stats(&d.name),
                }),
            vxlan6_error: self.vxlan6_error.clone(),
            vxlan6_enabled: calc::vxlan6_enabled(&self.pools),
            vteps6: self.vxlan6_synced.as_ref().map_or(0, |w| w.fdb.len()),
            vxlan6_blocks: self.desired.vxlan6_routed.len(),
            routes,
        }
    }
}
