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

pub mod config;
pub mod peers;
pub mod push;
pub mod render;
pub mod state;
pub mod sync;
pub mod wire;

pub use config::{BgpConfig, ConfigError, FelixConfig, NodeConfig, compute};
pub use peers::{Peer, PeerKind};
pub use state::{ClusterState, NodeFacts};

#[cfg(test)]
mod tests;
