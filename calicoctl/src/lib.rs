//! calicoctl's pieces: where the datastore is ([`config`]), which kinds
//! and how they print ([`kinds`]), the resource commands ([`resources`])
//! and the IPAM reports ([`ipam`]).

pub mod config;
pub mod ipam;
pub mod kinds;
pub mod resources;
