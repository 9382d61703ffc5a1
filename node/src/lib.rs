//! calico-node: the one agent per node. It finds the node's address
//! (Calico's `IP` / `IP_AUTODETECTION_METHOD`), registers the node in the
//! datastore, creates the default pool when there is none, then starts and
//! supervises confd, bird and felix as child processes — a crashed child is
//! restarted with backoff while the kernel's routes stay in place — and
//! serves `/liveness` and `/readiness`, and `/metrics` for Prometheus when
//! enabled. `calico-node status` prints the BGP
//! peer table the way `calicoctl node status` does.

pub mod autodetect;
pub mod health;
pub mod http;
pub mod metrics;
pub mod pool_status;
pub mod readiness;
pub mod settings;
pub mod startup;
pub mod status;
pub mod supervisor;
