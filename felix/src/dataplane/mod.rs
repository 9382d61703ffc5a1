//! The dataplane façade: one service that owns everything felix writes
//! into the kernel, fed with plain desired state: from confd over gRPC
//! (pools, this node's address and blocks, its tunnel address; see
//! [`crate::service`]) and from bird's route stream (remote blocks and
//! their nodes; see [`crate::bgpfeed`]). Tests drive it directly.
//!
//! ```text
//!  DataplaneHandle (cloneable)                    ┌─► routes::Reconciler ─► FIB
//!   set_pools / set_node / set_local_blocks       │    (blocks: blackhole, via node,
//!   set_remote_blocks / update_remote_block  ──►  task ─┤     via node dev tunl0 onlink)
//!   set_tunnel_address / flush / status     calc::desired ├─► tunnel::Tunnel (kernel tunl0 or
//!   set_vxlan_local / set_vteps                      │
//!                                          (pure)  │    userspace TUN + raw socket;
//!                                                  │    MTU, up, address; peer table)
//!  PodInterfaces (pod veths) ─ same RouteHandle ─► ├─► nat::NatTable (nft, own table)
//!                                                  ├─► vxlan.calico (kernel VXLAN device,
//!                                                  │    static neighbour + FDB entries)
//!                                                  └─► MTU file + PodInterfaces::set_mtu
//! ```
//!
//! VXLAN: with a pool whose `vxlanMode` is not `Never`, and once this
//! node's VTEP ([`DataplaneHandle::set_vxlan_local`]) and address are
//! known, the task creates (or adopts) `vxlan.calico` and keeps one
//! neighbour and one FDB entry per other node's VTEP
//! ([`DataplaneHandle::set_vteps`]); the routes of VXLAN pools' blocks come
//! from those VTEPs. With no VXLAN pool the device is deleted. A kernel
//! without VXLAN is reported (`vxlan_error`), and everything else works.
//!
//! Each loop turn drains every pending command, recomputes the desired
//! state with [`crate::calc::desired`], and applies only the difference:
//! a pool's `ipipMode` changing moves its routes between direct and tunnel
//! in one reconciler batch. Failures (the tunnel, the NAT table, the MTU
//! file) are kept, shown in [`DataplaneStatus`] and retried with backoff;
//! every `refresh_interval` the tunnel device, the underlay MTU and the NAT
//! table are read back and repaired.

mod nexthop;
mod task;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::routes::NextHops;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use ippool_crd::PoolConfig;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::calc::{NatSpec, Pool};
use crate::mtu::Underlay;
use crate::routes::{ApplyReport, Reconciler, ReconcilerConfig, ReconcilerStatus, RouteError};
use crate::tunnel::{BackendChoice, BackendKind, Tunnel, TunnelError, TunnelStats};
use crate::vxlan::{Vtep, VxlanLocal};
use crate::workload::{IpPolicy, IpRejected, PodInterfaces, WorkloadConfig, WorkloadError};

#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// `FELIX_IPIPBACKEND`.
    pub ipip_backend: BackendChoice,
    pub tunnel_name: String,
    /// The VXLAN device's name (Calico's `vxlan.calico`).
    pub vxlan_name: String,
    /// `FELIX_VXLANBACKEND`: the kernel's vxlan device, felix's userspace
    /// VTEP (TUN + UDP socket), or auto (userspace only where the kernel
    /// has no vxlan link type).
    pub vxlan_backend: BackendChoice,
    /// Where the pod MTU is written for the CNI plugin; `None` writes no
    /// file.
    pub mtu_file: Option<PathBuf>,
    /// The underlay MTU assumed until the underlay interface is found.
    pub default_mtu: u32,
    pub nat_table: String,
    /// How often the tunnel device, underlay MTU and NAT table are read
    /// back and repaired.
    pub refresh_interval: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub routes: ReconcilerConfig,
    /// Pod interfaces; the MTU is replaced by the computed pod MTU.
    pub workloads: WorkloadConfig,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            ipip_backend: BackendChoice::Auto,
            tunnel_name: crate::tunnel::DEFAULT_NAME.to_string(),
            vxlan_name: crate::vxlan::DEVICE_NAME.to_string(),
            vxlan_backend: BackendChoice::Auto,
            mtu_file: Some(PathBuf::from(crate::mtu::DEFAULT_STATE_DIR).join(crate::mtu::MTU_FILE)),
            default_mtu: 1500,
            nat_table: crate::nat::DEFAULT_TABLE.to_string(),
            refresh_interval: Duration::from_secs(90),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
            routes: ReconcilerConfig::default(),
            workloads: WorkloadConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Routes(#[from] RouteError),
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    #[error(transparent)]
    Workloads(#[from] WorkloadError),
    #[error("cannot open an rtnetlink socket: {0} (felix needs CAP_NET_ADMIN)")]
    Netlink(std::io::Error),
    #[error("the dataplane has stopped")]
    Stopped,
}

/// Where the kernel stands after a [`DataplaneHandle::flush`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataplaneReport {
    pub routes: ApplyReport,
    pub tunnel_error: Option<String>,
    pub nat_error: Option<String>,
    pub mtu_error: Option<String>,
    /// Blocks that need the tunnel while it is not available.
    pub waiting_for_tunnel: Vec<IpNetwork>,
    /// Why the VXLAN device or its entries are not as wanted (a kernel
    /// without vxlan, a name taken, a netlink failure).
    pub vxlan_error: Option<String>,
    /// Blocks of VXLAN pools that need the VXLAN device while it is not
    /// available (no local VTEP yet, or `vxlan_error`).
    pub waiting_for_vxlan: Vec<IpNetwork>,
    /// Why `vxlan-v6.calico` or its entries are not as wanted (also: the
    /// userspace VXLAN backend, which has no IPv6).
    pub vxlan6_error: Option<String>,
}

impl DataplaneReport {
    pub fn is_ok(&self) -> bool {
        self.routes.is_ok()
            && self.tunnel_error.is_none()
            && self.nat_error.is_none()
            && self.mtu_error.is_none()
            && self.waiting_for_tunnel.is_empty()
            && self.vxlan_error.is_none()
            && self.waiting_for_vxlan.is_empty()
            && self.vxlan6_error.is_none()
    }
}

/// `vxlan-v6.calico`, as the dataplane status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan6Status {
    pub device: String,
    pub ifindex: u32,
    /// This node's IPv6 VTEP address on the device.
    pub address: std::net::Ipv6Addr,
    /// Its underlay (`local`) address.
    pub local: std::net::Ipv6Addr,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub stats: TunnelStats,
}

/// The VXLAN device, as the dataplane status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanStatus {
    pub backend: BackendKind,
    pub device: String,
    pub ifindex: u32,
    /// This node's VTEP address on the device.
    pub address: Ipv4Addr,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// The kernel device's own counters (`/proc/net/dev`), or the
    /// userspace VTEP's (with drops: unknown source, malformed).
    pub stats: TunnelStats,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelStatus {
    pub backend: BackendKind,
    pub device: String,
    pub ifindex: u32,
    pub address: Option<Ipv4Addr>,
    pub stats: TunnelStats,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneStatus {
    /// The backend chosen at start (`None` only if opening the tunnel
    /// failed; see `tunnel_error`).
    pub tunnel: Option<TunnelStatus>,
    pub tunnel_error: Option<String>,
    pub ipip_enabled: bool,
    pub node: Option<Ipv4Network>,
    pub underlay: Option<Underlay>,
    pub pod_mtu: u32,
    pub nat: NatSpec,
    pub nat_error: Option<String>,
    pub nat_writes: u64,
    /// Remote blocks routed through the tunnel.
    pub tunneled_blocks: usize,
    pub waiting_for_tunnel: Vec<IpNetwork>,
    /// The VXLAN device, while it exists and is configured.
    pub vxlan: Option<VxlanStatus>,
    pub vxlan_error: Option<String>,
    /// Some IPv4 pool has `vxlanMode` other than `Never`.
    pub vxlan_enabled: bool,
    /// Other nodes' VTEPs with neighbour and FDB entries programmed (those
    /// given less the unusable ones: see [`crate::vxlan::usable`]).
    pub vteps: usize,
    /// Remote blocks routed over VXLAN.
    pub vxlan_blocks: usize,
    pub waiting_for_vxlan: Vec<IpNetwork>,
    /// `vxlan-v6.calico`, while it exists and is configured.
    pub vxlan6: Option<Vxlan6Status>,
    pub vxlan6_error: Option<String>,
    /// Some IPv6 pool has `vxlanMode` other than `Never`.
    pub vxlan6_enabled: bool,
    /// Other nodes' IPv6 VTEPs with entries programmed.
    pub vteps6: usize,
    /// Remote IPv6 blocks routed over `vxlan-v6.calico`.
    pub vxlan6_blocks: usize,
    pub routes: ReconcilerStatus,
}

pub(crate) enum Command {
    Node(Option<Ipv4Network>),
    Pools(Vec<Pool>),
    LocalBlocks(Vec<IpNetwork>),
    RemoteBlocks(Vec<(IpNetwork, NextHops)>),
    RemoteBlock(IpNetwork, Option<NextHops>),
    TunnelAddress(Option<Ipv4Addr>),
    VxlanLocal(Option<VxlanLocal>),
    Vteps(Vec<Vtep>),
    Vxlan6(Vxlan6Input),
    PeerRoutes(Vec<(std::net::IpAddr, std::net::IpAddr)>),
    Resync,
    Flush(oneshot::Sender<DataplaneReport>),
    Status(oneshot::Sender<DataplaneStatus>),
}

/// What IPv6 VXLAN needs: this node's IPv6 underlay address (with its
/// subnet), its IPv6 VTEP and every other node's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vxlan6Input {
    pub node: Option<Ipv6Network>,
    pub local: Option<VxlanLocal<std::net::Ipv6Addr>>,
    pub vteps: Vec<Vtep<std::net::Ipv6Addr>>,
}

/// A cloneable handle to change the desired state.
#[derive(Debug, Clone)]
pub struct DataplaneHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl DataplaneHandle {
    fn send(&self, c: Command) -> Result<(), DataplaneError> {
        self.tx.send(c).map_err(|_| DataplaneError::Stopped)
    }

    /// This node's underlay address with its subnet's prefix (the
    /// CrossSubnet decision and MTU detection use it).
    pub fn set_node(&self, addr: Option<Ipv4Network>) -> Result<(), DataplaneError> {
        self.send(Command::Node(addr))
    }

    /// Every (valid) IP pool.
    pub fn set_pools(&self, pools: &[PoolConfig]) -> Result<(), DataplaneError> {
        self.set_pool_modes(pools.iter().map(Pool::from).collect())
    }

    /// [`DataplaneHandle::set_pools`] with the dataplane's own view of a
    /// pool.
    pub fn set_pool_modes(&self, pools: Vec<Pool>) -> Result<(), DataplaneError> {
        self.send(Command::Pools(pools))
    }

    /// BGPPeer `reachableBy`: a host route to each peer via its gateway,
    /// over any route to it learned from BGP.
    pub fn set_peer_routes(
        &self,
        routes: Vec<(std::net::IpAddr, std::net::IpAddr)>,
    ) -> Result<(), DataplaneError> {
        self.send(Command::PeerRoutes(routes))
    }

    /// This node's blocks (blackholed).
    pub fn set_local_blocks(&self, blocks: Vec<IpNetwork>) -> Result<(), DataplaneError> {
        self.send(Command::LocalBlocks(blocks))
    }

    /// Every remote block (every prefix learned over BGP) with the
    /// address of its node, or the next hops of its equal best paths (a
    /// full snapshot: blocks not listed are withdrawn).
    pub fn set_remote_blocks<N: Into<NextHops>>(
        &self,
        blocks: Vec<(IpNetwork, N)>,
    ) -> Result<(), DataplaneError> {
        self.send(Command::RemoteBlocks(
            blocks.into_iter().map(|(b, n)| (b, n.into())).collect(),
        ))
    }

    /// One remote block learnt (`Some(node)`, or its next hops) or
    /// withdrawn (`None`).
    pub fn update_remote_block<N: Into<NextHops>>(
        &self,
        block: IpNetwork,
        node: Option<N>,
    ) -> Result<(), DataplaneError> {
        self.send(Command::RemoteBlock(block, node.map(Into::into)))
    }

    /// The node's IPIP tunnel address (from IPAM, handle
    /// `ipip-tunnel-addr-<node>`).
    pub fn set_tunnel_address(&self, addr: Option<Ipv4Addr>) -> Result<(), DataplaneError> {
        self.send(Command::TunnelAddress(addr))
    }

    /// This node's VTEP: its VXLAN tunnel address (from IPAM) and MAC
    /// (the Node resource's `spec.vxlanTunnelMACAddr`). `None` until known:
    /// the VXLAN device is not created before.
    pub fn set_vxlan_local(&self, local: Option<VxlanLocal>) -> Result<(), DataplaneError> {
        self.send(Command::VxlanLocal(local))
    }

    /// Every other node's VTEP with the blocks affine to that node (a full
    /// snapshot: VTEPs not listed lose their routes, neighbour and FDB
    /// entries).
    pub fn set_vteps(&self, vteps: Vec<Vtep>) -> Result<(), DataplaneError> {
        self.send(Command::Vteps(vteps))
    }

    /// IPv6 VXLAN: this node's IPv6 address, its IPv6 VTEP (address from
    /// IPAM, `spec.vxlanTunnelMACAddrV6`) and every other node's (a full
    /// snapshot). `vxlan-v6.calico` is made once an IPv6 pool uses VXLAN
    /// and the address and VTEP are known.
    pub fn set_vxlan_v6(&self, v6: Vxlan6Input) -> Result<(), DataplaneError> {
        self.send(Command::Vxlan6(v6))
    }

    /// Reads back and repairs the tunnel device, the underlay MTU and the
    /// NAT table now (and the routes, with a full dump-and-diff), as the
    /// periodic refresh does.
    pub fn resync(&self) -> Result<(), DataplaneError> {
        self.send(Command::Resync)
    }

    /// Waits until everything sent before is applied; returns where the
    /// kernel stands.
    pub async fn flush(&self) -> Result<DataplaneReport, DataplaneError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Flush(tx))?;
        rx.await.map_err(|_| DataplaneError::Stopped)
    }

    pub async fn status(&self) -> Result<DataplaneStatus, DataplaneError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Status(tx))?;
        rx.await.map_err(|_| DataplaneError::Stopped)
    }
}

/// Pod addresses must lie in a pool (or in one of this node's blocks).
#[derive(Debug, Default)]
pub(crate) struct DynamicCidrs(RwLock<Vec<IpNetwork>>);

impl DynamicCidrs {
    pub fn set(&self, cidrs: Vec<IpNetwork>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = cidrs;
    }
}

impl IpPolicy for DynamicCidrs {
    fn check(&self, ip: IpAddr) -> Result<(), IpRejected> {
        let cidrs = self.0.read().unwrap_or_else(|p| p.into_inner());
        if cidrs.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        Err(IpRejected {
            what: "IP pools or blocks",
            allowed: cidrs.clone(),
        })
    }
}

/// The running dataplane. Dropping it stops its tasks (and the userspace
/// tunnel's threads; its persistent TUN device, routes and the NAT table
/// stay in the kernel for the next felix).
pub struct Dataplane {
    handle: DataplaneHandle,
    reconciler: Option<Reconciler>,
    workloads: Arc<PodInterfaces>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Starts everything in the calling thread's network namespace, on the
    /// current tokio runtime: the route reconciler, the tunnel device (its
    /// backend is chosen here and logged), and the dataplane task.
    pub async fn start(cfg: DataplaneConfig) -> Result<Dataplane, DataplaneError> {
        let reconciler = Reconciler::start(cfg.routes.clone())?;
        let routes = reconciler.handle();
        let (conn, nl, _) = rtnetlink::new_connection().map_err(DataplaneError::Netlink)?;
        let conn = tokio::spawn(conn);
        let tunnel = Tunnel::open(&nl, cfg.ipip_backend, &cfg.tunnel_name).await;
        let tunnel = match tunnel {
            Ok(t) => {
                tracing::info!(backend = %t.kind(), device = t.name(), choice = %cfg.ipip_backend, "IPIP backend chosen");
                Some(t)
            }
            // An explicit choice that cannot be honoured is a configuration
            // error the operator must see at start.
            Err(e) if cfg.ipip_backend != BackendChoice::Auto => {
                conn.abort();
                return Err(e.into());
            }
            Err(e) => {
                tracing::error!(error = %e, "no IPIP tunnel available; IPIP routes wait for it");
                None
            }
        };
        let policy = Arc::new(DynamicCidrs::default());
        let mut wcfg = cfg.workloads.clone();
        wcfg.mtu = cfg.default_mtu;
        // Pod routes go in the workload layer: a route learned over BGP
        // for a local pod's address can neither replace nor delete them.
        let pod_routes = routes.with_layer(crate::routes::Layer::Workload);
        let workloads = Arc::new(PodInterfaces::new(wcfg, pod_routes, policy.clone())?);
        let (tx, rx) = mpsc::unbounded_channel();
        let t = task::Task::new(cfg, nl, conn, routes, tunnel, workloads.clone(), policy, rx);
        let task = tokio::spawn(t.run().instrument(tracing::info_span!("dataplane")));
        Ok(Dataplane {
            handle: DataplaneHandle { tx },
            reconciler: Some(reconciler),
            workloads,
            task: Some(task),
        })
    }

    pub fn handle(&self) -> DataplaneHandle {
        self.handle.clone()
    }

    /// The route reconciler's handle (to release deletions held since
    /// start, see `ReconcilerConfig::start_in_sync`).
    pub fn routes(&self) -> Option<crate::routes::RouteHandle> {
        self.reconciler.as_ref().map(Reconciler::handle)
    }

    /// Pod interfaces, made with the current pod MTU.
    pub fn workloads(&self) -> Arc<PodInterfaces> {
        self.workloads.clone()
    }

    /// Stops the tasks and waits for them.
    pub async fn stop(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        if let Some(r) = self.reconciler.take() {
            r.stop().await;
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
