//! calico-node: the one agent per node. It finds the node's address
//! (Calico's `IP` / `IP_AUTODETECTION_METHOD`), registers the node in the
//! datastore, creates the default pool when there is none, then starts and
//! supervises confd, bird and felix as child processes — a crashed child is
//! restarted with backoff while the kernel's routes stay in place — and
//! serves `/liveness` and `/readiness`, and `/metrics` for Prometheus when
//! enabled. `calico-node status` prints the BGP
//! peer table the way `calicoctl node status` does.
//!
//! # Tasks, processes and sockets
//!
//! [`run`] (`calico-node run`), on one thread: first the start-up steps in
//! order ([`startup`]: address, Node, default pool; retried while the
//! datastore is unreachable), then
//!
//! ```text
//!   datastore ◄── tunnel address sync (every 5 s: IPAM + Node)
//!       ▲     ◄── Elector (lock calico-rs-cluster-tasks: etcd lease / Lease)
//!       │     ◄── cluster_tasks::run, while this node leads: pool_status::run
//!       │
//!   Supervisor ── one task per child process, restarted with backoff;
//!       │          SIGTERM at shutdown (SIGKILL after a grace period)
//!       ├──► confd ── Apply ──────────────► bird.sock, felix.sock
//!       ├──► bird  ◄── WatchRoutes ─────── felix
//!       └──► felix ◄── Add/Del (CNI plugin)
//!       │ ChildStatuses (down since, restarts)
//!       ▼
//!   health::poll (every 1 s) ── Health over confd.sock, felix.sock,
//!       │                       bird.sock; ListPeers over bird.sock
//!       ▼ Arc<Mutex<Verdict>>
//!   health::serve ── HTTP /liveness, /readiness (FELIX_HEALTHPORT)
//!   metrics::serve_on ── HTTP /metrics: asks bird, felix and the
//!                        datastore per scrape (when enabled)
//! ```
//!
//! Every task is in one `JoinSet`, aborted at shutdown; then the elector
//! gives the lock up (so another node takes the cluster tasks over at
//! once) while the supervisor stops the children.

pub mod autodetect;
pub mod cluster_tasks;
pub mod daemon;
pub mod health;
pub mod http;
pub mod ipam_gc;
pub mod metrics;
pub mod pool_status;
pub mod readiness;
pub mod settings;
pub mod startup;
pub mod status;
pub mod supervisor;

pub use daemon::{RunConfig, RunError, run};
