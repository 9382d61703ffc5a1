//! confd turns the datastore's resources into the configuration of one
//! node: bird's AS, router ID and BGP sessions (the node-to-node mesh,
//! explicit BGPPeers, route-reflector roles) and the blocks it advertises;
//! felix's pools with their encapsulation and NAT modes, the node's blocks
//! and tunnel address. It follows Calico's confd rules so calico-rs and
//! Calico nodes agree on every peering, and writes a human-readable
//! rendering of what it pushed.
//!
//! The computation is pure: [`ClusterState`] in, [`NodeConfig`] out
//! ([`config::compute`], [`peers::compute`], [`render::render`]).
//!
//! # Tasks and channels
//!
//! [`run`] (`confd run`) starts these on one thread and stops them all
//! when its shutdown future resolves:
//!
//! ```text
//!  datastore (etcd / Kubernetes API)          password Secrets the peerings name
//!    │ 5 watch tasks: Node, BGPPeer,           │ one reader each: a Kubernetes API
//!    │ BGPConfiguration, IPPool, this node's   │ watch, or <dir>/<secret>/ polled
//!    │ block affinities (sync::DatastoreSync)  │ (secret_watch::SecretReaders)
//!    ▼ mpsc<Change> ◄──────────────────────────┘
//!  sync loop: ClusterState ─► config::compute ─► watch<Published>
//!                                                     │ (latest wins)
//!        ┌──────────────────────┬─────────────────────┼───────────────────┐
//!        ▼                      ▼                     ▼                   ▼
//!  push::deliver(Bird)  push::deliver(Felix)  push::write_rendering  readiness
//!    │ one UDS connection  │ one UDS connection   │ config.txt          │ HealthReporter
//!    │ Apply on change and │ Apply on change and  │ (atomic rename)     ▼
//!    ▼ on a new connection ▼ on a new connection  ▼              confd.sock (Health,
//!  bird.sock             felix.sock                               served by a ServerTask)
//! ```
//!
//! - [`sync`]: the watches and the sync loop (debounced recompute; nothing
//!   published before every watch has sent its snapshot).
//! - [`secrets`]: the password a peering's Secret gives, or why the
//!   session is held down; [`secret_watch`]: the readers of those Secrets.
//! - [`push`]: the pushers and the rendering writer.
//! - [`daemon`]: [`run`] and its [`daemon::RunConfig`].

pub mod cli;
pub mod config;
pub mod daemon;
pub mod peers;
pub mod push;
pub mod render;
pub mod secret_watch;
pub mod secrets;
pub mod services;
pub mod state;
pub mod sync;
pub mod wire;

pub use config::{BgpConfig, ConfigError, FelixConfig, NodeConfig, compute};
pub use daemon::{RunConfig, RunError, run};
pub use peers::{Peer, PeerKind};
pub use state::{ClusterState, NodeFacts};

#[cfg(test)]
mod tests;
