//! felix: the dataplane agent, and the only component that writes the
//! kernel's routing state.
//!
//! ```text
//!   dataplane::DataplaneHandle (pools, node address, local / remote blocks,
//!        │                      tunnel address: plain data from confd / bird)
//!        ▼
//!   dataplane task ── calc::desired (pure) ──► block routes ──┐
//!        │                                                    ├─► routes::RouteHandle ─► Reconciler ─► FIB
//!        ├─► tunnel::Tunnel (tunl0: kernel ipip or userspace) │
//!        ├─► nat::NatTable (nftables, felix's own table)      │
//!        └─► MTU file, PodInterfaces::set_mtu                 │
//!   workload::PodInterfaces (pod veths, /32 dev caliXXX) ─────┘
//! ```
//!
//! - [`daemon`]: [`run`] (`felix run`): the dataplane and, managed by
//!   calico-node, the gRPC services of [`service`] on felix's socket and
//!   the feed of bird's routes ([`bgpfeed`]); stops it all on shutdown.
//! - [`dataplane`]: the façade that owns everything below and takes
//!   desired state as plain data.
//! - [`calc`]: the pure calculation (encapsulation per pool, CrossSubnet,
//!   NAT sets, pod MTU).
//! - [`routes`]: the route model, ownership policy, pure delta tracker and
//!   the reconciler service (batched netlink writes, dump-and-diff resyncs,
//!   event-driven resyncs, the pod-interface grace period).
//! - [`tunnel`]: the IP-in-IP device, kernel or userspace backend.
//! - [`vxlan`]: the kernel's VXLAN device `vxlan.calico`, its static
//!   neighbour and FDB entries for the other nodes' VTEPs.
//! - [`nat`]: NAT-outgoing in nftables.
//! - [`nft`]: the nftables runner both tables use (libnftables in-process,
//!   or the `nft` binary).
//! - [`mtu`]: underlay MTU detection and the CNI plugin's MTU file.
//! - [`metrics`]: duration histograms handed to calico-node over gRPC.
//! - [`workload`]: pod interfaces (Calico-style veth pairs) in a network
//!   namespace given by path.

pub mod bgpfeed;
pub mod calc;
pub mod cli;
pub mod daemon;
pub mod dataplane;
pub mod metrics;
pub mod mtu;
pub mod nat;
pub mod nft;
pub mod policy;
pub mod routes;
pub mod service;
mod sockopt;
pub mod store;
pub mod tunnel;
pub mod vxlan;
pub mod workload;

pub use daemon::{RunConfig, RunError, run};
pub use vxlan::{Vtep, VxlanLocal};
