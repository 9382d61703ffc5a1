//! A peer as the TOML file writes it: one flat `[[peers]]` table (every
//! key is in the example of [`crate::config`]), with Calico's defaults,
//! nested here into a [`PeerConfig`]. serde's `flatten` would do the
//! nesting, but it cannot be combined with `deny_unknown_fields`, and a
//! misspelt key must stay an error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde::Deserialize;

use super::{BfdConfig, FamilyName, PeerConfig, SessionConfig};
use crate::policy::{FilterRule, PeerPolicy};

fn default_port() -> u16 {
    179
}

fn default_hold_time() -> u16 {
    90
}

fn default_connect_retry() -> u64 {
    5
}

fn default_connect_retry_max() -> u64 {
    120
}

fn default_error_wait_max() -> u64 {
    60
}

fn default_graceful_restart() -> u16 {
    120
}

fn default_families() -> Vec<FamilyName> {
    vec![FamilyName::Ipv4, FamilyName::Ipv6]
}

fn default_hops() -> u8 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PeerFile {
    address: IpAddr,
    asn: u32,
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default)]
    passive: bool,
    #[serde(default = "default_hold_time")]
    hold_time: u16,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    ttl_security: bool,
    #[serde(default = "default_hops")]
    ttl_security_hops: u8,
    #[serde(default)]
    prefixes: Vec<IpNetwork>,
    #[serde(default)]
    next_hop_v4: Option<Ipv4Addr>,
    #[serde(default)]
    next_hop_v6: Option<Ipv6Addr>,
    #[serde(default)]
    local_pref: Option<u32>,
    #[serde(default)]
    med: Option<u32>,
    #[serde(default)]
    local_address: Option<IpAddr>,
    #[serde(default = "default_connect_retry")]
    connect_retry: u64,
    #[serde(default = "default_connect_retry_max")]
    connect_retry_max: u64,
    #[serde(default = "default_error_wait_max")]
    error_wait_max: u64,
    #[serde(default = "default_graceful_restart")]
    graceful_restart_time: u16,
    #[serde(default = "default_families")]
    families: Vec<FamilyName>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    rr_client: bool,
    #[serde(default)]
    calico_node: bool,
    #[serde(default)]
    keep_next_hop: bool,
    #[serde(default)]
    next_hop_self: bool,
    #[serde(default)]
    export_learned: bool,
    #[serde(default)]
    max_prefixes: Option<u32>,
    #[serde(default)]
    allow_local_as: u32,
    /// The AS to speak as on this session (default: the top-level asn).
    #[serde(default)]
    local_asn: Option<u32>,
    #[serde(default)]
    igp_cost: Option<u32>,
    #[serde(default)]
    bfd: Option<BfdConfig>,
    #[serde(default)]
    import_filter: Vec<FilterRule>,
    #[serde(default)]
    export_filter: Vec<FilterRule>,
}

impl From<PeerFile> for PeerConfig {
    fn from(p: PeerFile) -> PeerConfig {
        PeerConfig {
            policy: PeerPolicy {
                address: p.address,
                asn: p.asn,
                rr_client: p.rr_client,
                calico_node: p.calico_node,
                keep_next_hop: p.keep_next_hop,
                next_hop_self: p.next_hop_self,
                export_learned: p.export_learned,
                max_prefixes: p.max_prefixes,
                allow_local_as: p.allow_local_as,
                local_asn: p.local_asn,
                local_pref: p.local_pref,
                med: p.med,
                next_hop_v4: p.next_hop_v4,
                next_hop_v6: p.next_hop_v6,
                igp_cost: p.igp_cost,
                import_filter: p.import_filter.into(),
                export_filter: p.export_filter.into(),
            },
            session: SessionConfig {
                port: p.port,
                passive: p.passive,
                hold_time: p.hold_time,
                password: p.password,
                ttl_security: p.ttl_security,
                ttl_security_hops: p.ttl_security_hops,
                local_address: p.local_address,
                connect_retry: p.connect_retry,
                connect_retry_max: p.connect_retry_max,
                error_wait_max: p.error_wait_max,
                graceful_restart_time: p.graceful_restart_time,
                families: p.families,
                // Only confd holds a peer down (its password or BFD key
                // is missing); a file names its keys itself.
                held_down: None,
            },
            prefixes: p.prefixes,
            name: p.name,
            bfd: p.bfd,
        }
    }
}
