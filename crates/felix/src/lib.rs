//! felix: the dataplane agent, and the only component that writes the
//! kernel's routing state.
//!
//! ```text
//!   blocks::BlockRoutes ──┐ (local blocks: blackhole; remote: via node)
//!                         ├─ RouteUpdate ─► routes::RouteHandle ─► Reconciler task
//!   workload::Workloads ──┘ (/32 dev caliXXX)                       │ rtnetlink
//!        │ veth pairs, sysctls, pod-side addresses and routes       ▼
//!        └──────────────────── rtnetlink (host + pod netns) ──► kernel
//! ```
//!
//! - [`routes`]: the route model, ownership policy, pure delta tracker and
//!   the reconciler service (batched netlink writes, dump-and-diff resyncs,
//!   event-driven resyncs, the pod-interface grace period).
//! - [`workload`]: pod interfaces (Calico-style veth pairs) in a network
//!   namespace given by path.
//! - [`blocks`]: the desired routes for IPAM blocks (this node's and other
//!   nodes').

pub mod blocks;
pub mod routes;
pub mod workload;
