//! The speaker's configuration: the TOML file of `bird run --config`, and
//! what confd pushes over `BgpConfigService.Apply` ([`Config::from_proto`]),
//! which lands in the same type so both go through one validation and one
//! apply path.
//!
//! Import policy for routes outside the pools (see
//! [`crate::policy::check_prefix`] and [`crate::policy::check_next_hop`]):
//! by default no peer can install a default route or a route equal to or
//! inside one of the node's own networks, and no route is taken whose
//! next hop is a pod address, one of the node's addresses, not a usable
//! unicast address, or, from a directly connected external peer, on no
//! network the node shares with it. `accept_default_route` and
//! `accept_node_networks` open the first two; confd does not set them
//! yet (a push keeps what the file set).
//!
//! ```toml
//! router_id = "10.0.0.2"
//! asn = 64512
//! listen = "0.0.0.0:179"          # "[::]:179" accepts IPv4 and IPv6 peers
//! advertise = ["10.65.1.0/26"]    # this node's blocks, next-hop self
//! pools = ["10.65.0.0/16"]        # IP pools: the import guard, and which
//!                                 # learned routes are passed on
//! rr_cluster_id = "1.1.1.1"       # be a route reflector (RFC 4456)
//! startup_deferral = 30           # seconds; see `rib` (RFC 4724 4.1)
//! node_networks = ["10.0.0.2/24"] # this node's interface addresses with
//!                                 # their prefixes; absent: read from
//!                                 # the kernel (loopback excepted) at
//!                                 # every configuration change
//! accept_default_route = false    # take 0.0.0.0/0 and ::/0 from peers
//! accept_node_networks = false    # take routes equal to or inside the
//!                                 # node networks (host routes too)
//!
//! [[prefix_communities]]          # BGPConfiguration prefixAdvertisements
//! cidr = "10.65.0.0/16"
//! communities = ["65000:100", "65000:7:8"]   # standard and large
//!
//! [[peers]]
//! address = "10.0.0.1"
//! asn = 65001
//! port = 179                      # the peer's port, for our connections
//! passive = false                 # never connect, only accept
//! hold_time = 90
//! password = "secret"             # TCP-MD5 (RFC 2385)
//! ttl_security = true             # GTSM (RFC 5082)
//! ttl_security_hops = 1           # the peer is at most this many hops away
//! next_hop_v6 = "fd00::2"         # for IPv6 prefixes on an IPv4 session
//! rr_client = false               # reflect routes to it
//! calico_node = false             # a calico node (accept its pool routes)
//! keep_next_hop = false           # external: keep learned next hops
//! next_hop_self = false           # every route: our address as next hop
//! export_learned = false          # external router: also send learned
//!                                 # pod routes, not only our blocks
//! max_prefixes = 1000             # cut the session above this (default
//!                                 # 100000 for calico nodes, 1000000
//!                                 # for other peers)
//! bfd = { interval_ms = 100, multiplier = 5 }  # BFD (RFC 5880/5881) to
//!                                 # this directly connected peer (add
//!                                 # multihop = true behind a router:
//!                                 # then ttl_security_hops, if set, is
//!                                 # BFD's TTL floor too); with
//!                                 # auth = { type = "meticulous-keyed-sha1",
//!                                 #   key_id = 1, key = "secret" } (or
//!                                 # "keyed-sha1"; key 1 to 20 bytes)
//!                                 # packets are signed and checked
//! prefixes = ["10.65.9.0/26"]     # more blocks to originate, sent to
//!                                 # every peer (joined with `advertise`)
//! # BGPFilter rules, in order; the first that matches decides, none:
//! # the default policy. match: equal, not-equal, in, not-in (with
//! # cidr); min_len / max_len with in / not-in; family "ipv4" / "ipv6"
//! # (default: the cidr's, or both); remote_peers_only (export: learned
//! # routes only); interface (import: the interface the next hop is
//! # reached over, known when node_networks are read from the kernel).
//! export_filter = [{ action = "reject", match = "equal", cidr = "10.65.9.0/26" }]
//! import_filter = [{ action = "reject", match = "in", cidr = "172.16.0.0/12", max_len = 24 }]
//! ```

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde::Deserialize;

use crate::packet::Family;
use crate::policy::{LocalPolicy, PeerPolicy, PrefixCommunities};

mod file;
mod from_proto;

pub use proto::community::{Community, CommunityError, parse_community};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config: {0}")]
    Invalid(String),
}

fn default_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 179))
}

fn default_startup_deferral() -> u64 {
    Config::DEFAULT_STARTUP_DEFERRAL
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A second address to listen on, on `listen`'s port: a dual-stack
    /// node's IPv6 address when bindMode NodeIP binds it to its addresses.
    #[serde(default)]
    pub listen_also: Option<IpAddr>,
    /// This node's blocks, originated with next-hop self.
    #[serde(default)]
    pub advertise: Vec<IpNetwork>,
    /// Every IP pool.
    #[serde(default)]
    pub pools: Vec<IpNetwork>,
    /// Set to be a route reflector with this cluster ID.
    #[serde(default)]
    pub rr_cluster_id: Option<Ipv4Addr>,
    #[serde(default)]
    pub prefix_communities: Vec<PrefixCommunitiesConfig>,
    /// Interfaces whose addresses are not read as this node's networks
    /// (`*` wildcards), beyond [`Config::ALWAYS_IGNORED`].
    #[serde(default)]
    pub ignored_interfaces: Vec<String>,
    /// Seconds after start-up before End-of-RIB is sent and the route
    /// stream declares its snapshot complete even if some peer has not
    /// sent its End-of-RIB.
    #[serde(default = "default_startup_deferral")]
    pub startup_deferral: u64,
    /// This node's interface addresses with their prefix lengths
    /// (`"10.0.0.2/24"`), for the import policy. Absent: read from the
    /// kernel's non-loopback interfaces whenever the configuration is
    /// applied.
    #[serde(default)]
    pub node_networks: Option<Vec<IpNetwork>>,
    /// Accept a default route (`0.0.0.0/0`, `::/0`) from peers; refused
    /// by default so no peer can take over the node's own default route.
    #[serde(default)]
    pub accept_default_route: bool,
    /// Accept routes equal to or inside the node's own networks (its
    /// underlay subnets and host addresses); refused by default so no peer
    /// can divert the node's traffic to its neighbours or its API server.
    #[serde(default)]
    pub accept_node_networks: bool,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
}

/// Communities for advertised prefixes inside `cidr`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PrefixCommunitiesConfig {
    pub cidr: IpNetwork,
    /// `"aa:nn"` (standard) or `"aa:nn:mm"` (large).
    pub communities: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FamilyName {
    Ipv4,
    Ipv6,
}

impl From<FamilyName> for Family {
    fn from(f: FamilyName) -> Family {
        match f {
            FamilyName::Ipv4 => Family::Ipv4Unicast,
            FamilyName::Ipv6 => Family::Ipv6Unicast,
        }
    }
}

/// One peer: who it is and what the RIB does with its routes and ours
/// (its [`PeerPolicy`], changed in place), how the session is held (its
/// [`SessionConfig`]: a change needs a new session), and what neither
/// touches. The TOML file writes it flat (see [`file`]).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(from = "file::PeerFile")]
pub struct PeerConfig {
    /// The peer's address and AS, and the policy settings the RIB decides
    /// with.
    pub policy: PeerPolicy,
    pub session: SessionConfig,
    /// More blocks to originate; they join the top-level `advertise` and
    /// go to every peer.
    pub prefixes: Vec<IpNetwork>,
    /// The peering's name, for status output.
    pub name: Option<String>,
    /// BFD to this directly connected peer: its session going down resets
    /// the BGP session at once (see [`crate::bfd`]).
    pub bfd: Option<BfdConfig>,
}

/// How the session with one peer is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The peer's port, for our connections.
    pub port: u16,
    /// Never connect, only accept.
    pub passive: bool,
    pub hold_time: u16,
    /// TCP-MD5 key (RFC 2385), at most 80 bytes.
    pub password: Option<String>,
    /// GTSM (RFC 5082): send with TTL 255 and accept only packets that
    /// come from at most `ttl_security_hops` hops away.
    pub ttl_security: bool,
    pub ttl_security_hops: u8,
    /// Source address of our connections.
    pub local_address: Option<IpAddr>,
    /// Seconds between connection attempts.
    pub connect_retry: u64,
    /// The connect retry time doubles after each failed attempt up to
    /// this (seconds).
    pub connect_retry_max: u64,
    /// After a session error the peer waits (1 s, doubling) up to this
    /// many seconds before trying again.
    pub error_wait_max: u64,
    /// Restart time advertised in the graceful-restart capability; 0 to
    /// not advertise it.
    pub graceful_restart_time: u16,
    pub families: Vec<FamilyName>,
    /// Set when the session must not run, with why (confd cannot get the
    /// password or the BFD key the peering asks for): the peer stays
    /// configured but Idle, refuses connections, and shows this as its
    /// last error. A session without them would be an unauthenticated
    /// one.
    pub held_down: Option<String>,
}

/// BFD timing and authentication of one peer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdConfig {
    /// Our packet interval once up, and the fastest we ask the peer for.
    #[serde(default = "default_bfd_interval")]
    pub interval_ms: u32,
    /// Packets missed before the peer is declared down.
    #[serde(default = "default_bfd_multiplier")]
    pub multiplier: u8,
    /// The peer is behind a router: multihop BFD (RFC 5883, port 4784,
    /// TTL at least `256 - ttl_security_hops` with `ttl_security`, else
    /// any) instead of single hop (RFC 5881, port 3784, TTL 255).
    #[serde(default)]
    pub multihop: bool,
    /// SHA1 authentication (RFC 5880 section 6.7.4); absent: none (and
    /// authenticated packets are dropped).
    #[serde(default)]
    pub auth: Option<BfdAuthConfig>,
}

/// A BFD session's key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdAuthConfig {
    #[serde(rename = "type")]
    pub kind: BfdAuthKind,
    /// The Key ID both ends use (0 to 255).
    pub key_id: u8,
    /// The secret, 1 to 20 bytes.
    pub key: String,
}

impl std::fmt::Debug for BfdAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BfdAuthConfig")
            .field("kind", &self.kind)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BfdAuthKind {
    KeyedSha1,
    MeticulousKeyedSha1,
}

fn default_bfd_interval() -> u32 {
    100
}

fn default_bfd_multiplier() -> u8 {
    5
}

impl Default for BfdConfig {
    fn default() -> Self {
        BfdConfig {
            interval_ms: default_bfd_interval(),
            multiplier: default_bfd_multiplier(),
            multihop: false,
            auth: None,
        }
    }
}

impl BfdConfig {
    pub fn timing(&self) -> crate::bfd::Timing {
        let d = Duration::from_millis(u64::from(self.interval_ms));
        crate::bfd::Timing {
            min_tx: d,
            min_rx: d,
            multiplier: self.multiplier,
        }
    }

    /// What the session demands of received packets: the TTL floor (from
    /// `session`'s GTSM hop count for multihop) and the key. `None` if the
    /// key is unusable ([`Config::validate`] refuses that).
    pub fn protection(&self, session: &SessionConfig) -> Option<crate::bfd::Protection> {
        use crate::bfd::packet::{AuthKind, Key};
        let hops = session.ttl_security.then_some(session.ttl_security_hops);
        let key = match &self.auth {
            None => None,
            Some(a) => {
                let kind = match a.kind {
                    BfdAuthKind::KeyedSha1 => AuthKind::KeyedSha1,
                    BfdAuthKind::MeticulousKeyedSha1 => AuthKind::MeticulousKeyedSha1,
                };
                Some(Key::new(kind, a.key_id, a.key.as_bytes()).ok()?)
            }
        };
        Some(crate::bfd::Protection {
            min_ttl: crate::bfd::Protection::min_ttl(self.multihop, hops),
            key,
        })
    }
}

impl PeerConfig {
    pub fn address(&self) -> IpAddr {
        self.policy.address
    }

    pub fn asn(&self) -> u32 {
        self.policy.asn
    }

    pub fn internal(&self, local_as: u32) -> bool {
        self.policy.internal(local_as)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address(), self.session.port)
    }

    /// Whether moving from `self` to `new` needs a new session: another
    /// address or AS (the OPEN names it), or other session parameters.
    /// Otherwise only policy, name, prefixes or BFD changed, which apply
    /// to the running session.
    pub fn session_differs(&self, new: &PeerConfig) -> bool {
        self.address() != new.address()
            || self.asn() != new.asn()
            || self.policy.local_asn != new.policy.local_asn
            || self.session != new.session
    }
}

impl SessionConfig {
    pub fn families(&self) -> Vec<Family> {
        let mut v: Vec<Family> = self.families.iter().map(|f| Family::from(*f)).collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn connect_retry(&self) -> Duration {
        Duration::from_secs(self.connect_retry.max(1))
    }

    pub fn connect_retry_max(&self) -> Duration {
        Duration::from_secs(self.connect_retry_max).max(self.connect_retry())
    }

    pub fn error_wait_max(&self) -> Duration {
        Duration::from_secs(self.error_wait_max.max(1))
    }
}

impl Config {
    /// Interfaces never read as the node's: pods' veths and kube-proxy's
    /// IPVS dummy (it holds every Service address), as in Calico.
    pub const ALWAYS_IGNORED: [&'static str; 2] = ["cali*", "kube-ipvs*"];

    /// Every address bird listens on: `listen`, and `listen_also` on its
    /// port.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.listen)
            .chain(
                self.listen_also
                    .map(|ip| SocketAddr::new(ip, self.listen.port())),
            )
            .collect()
    }

    /// Whether bird ignores the interface `name`.
    pub fn ignores_interface(&self, name: &str) -> bool {
        Self::ALWAYS_IGNORED
            .iter()
            .copied()
            .chain(self.ignored_interfaces.iter().map(String::as_str))
            .any(|p| crate::policy::glob_match(p, name))
    }

    /// Seconds of start-up deferral when nothing says otherwise.
    pub const DEFAULT_STARTUP_DEFERRAL: u64 = 30;

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every block this speaker originates.
    pub fn originated(&self) -> Vec<IpNetwork> {
        let mut v: Vec<IpNetwork> = self
            .advertise
            .iter()
            .chain(self.peers.iter().flat_map(|p| p.prefixes.iter()))
            .copied()
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The RIB's speaker-wide policy (call after `validate`).
    pub fn local_policy(&self) -> LocalPolicy {
        LocalPolicy {
            asn: self.asn,
            router_id: self.router_id,
            cluster_id: self.rr_cluster_id,
            pools: self.pools.clone(),
            node_networks: self.node_networks.clone().unwrap_or_default(),
            node_interfaces: Vec::new(),
            import: crate::policy::ImportOptions {
                accept_default_route: self.accept_default_route,
                accept_node_networks: self.accept_node_networks,
            },
            communities: self
                .prefix_communities
                .iter()
                .map(|pc| {
                    let mut out = PrefixCommunities {
                        cidr: pc.cidr,
                        communities: Vec::new(),
                        large: Vec::new(),
                    };
                    for c in pc
                        .communities
                        .iter()
                        .filter_map(|c| parse_community(c).ok())
                    {
                        match c {
                            Community::Standard(v) => out.communities.push(v),
                            Community::Large(v) => out.large.push(v),
                        }
                    }
                    out
                })
                .collect(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if let Some(also) = self.listen_also
            && (self.listen.ip().is_unspecified()
                || also.is_unspecified()
                || also == self.listen.ip())
        {
            return bad(format!(
                "listen_also {also} needs listen to be another specific address (it is {})",
                self.listen.ip()
            ));
        }
        if let Some(p) = self
            .ignored_interfaces
            .iter()
            .find(|p| p.is_empty() || p.contains(char::is_whitespace))
        {
            return bad(format!(
                "ignored_interfaces: {p:?} is not an interface name or pattern"
            ));
        }
        for n in self.advertise.iter().chain(&self.pools) {
            if n.network() != n.ip() {
                return bad(format!(
                    "prefix {n} has host bits set; did you mean {}/{}?",
                    n.network(),
                    n.prefix()
                ));
            }
        }
        for pc in &self.prefix_communities {
            for c in &pc.communities {
                if let Err(e) = parse_community(c) {
                    return bad(format!("prefix_communities {}: {e}", pc.cidr));
                }
            }
        }
        if self.router_id.is_unspecified() {
            return bad("router_id must not be 0.0.0.0 (use this node's IPv4 address)".into());
        }
        if self.asn == 0 {
            return bad("asn must not be 0 (RFC 7607)".into());
        }
        let mut seen = HashSet::new();
        for p in &self.peers {
            let who = p.address();
            if !seen.insert(p.address().to_canonical()) {
                return bad(format!(
                    "peer {who} is listed twice; keep one [[peers]] entry"
                ));
            }
            if p.asn() == 0 {
                return bad(format!("peer {who}: asn must not be 0"));
            }
            for (list, rules) in [
                ("import_filter", &p.policy.import_filter),
                ("export_filter", &p.policy.export_filter),
            ] {
                for (i, r) in rules.iter().enumerate() {
                    if let Err(e) = r.check() {
                        return bad(format!("peer {who}: {list}[{i}]: {e}"));
                    }
                }
            }
            if matches!(p.session.hold_time, 1 | 2) {
                return bad(format!(
                    "peer {who}: hold_time must be 0 or at least 3 seconds (RFC 4271)"
                ));
            }
            if p.session
                .password
                .as_ref()
                .is_some_and(|pw| pw.is_empty() || pw.len() > 80)
            {
                return bad(format!(
                    "peer {who}: password must be 1 to 80 bytes (the TCP-MD5 key limit)"
                ));
            }
            if p.session.families.is_empty() {
                return bad(format!("peer {who}: families must name ipv4 and/or ipv6"));
            }
            if p.session.ttl_security && p.session.ttl_security_hops == 0 {
                return bad(format!(
                    "peer {who}: ttl_security_hops must be at least 1 (1 = directly connected)"
                ));
            }
            if let Some(b) = &p.bfd
                && (!(10..=60_000).contains(&b.interval_ms) || b.multiplier == 0)
            {
                return bad(format!(
                    "peer {who}: bfd needs interval_ms 10 to 60000 and a multiplier of at least 1"
                ));
            }
            if let Some(a) = p.bfd.as_ref().and_then(|b| b.auth.as_ref())
                && !(1..=crate::bfd::packet::MAX_KEY_LEN).contains(&a.key.len())
            {
                return bad(format!(
                    "peer {who}: bfd auth key must be 1 to 20 bytes (the SHA1 key limit), it has {}",
                    a.key.len()
                ));
            }
            if p.policy.rr_client && !p.internal(self.asn) {
                return bad(format!(
                    "peer {who}: rr_client needs an internal peer (asn {}), it has asn {}",
                    p.policy.local_as(self.asn),
                    p.asn()
                ));
            }
            if p.policy.local_asn == Some(0) {
                return bad(format!("peer {who}: local_asn must not be 0"));
            }
            for n in &p.prefixes {
                if n.network() != n.ip() {
                    return bad(format!(
                        "peer {who}: prefix {n} has host bits set; did you mean {}/{}?",
                        n.network(),
                        n.prefix()
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses_with_defaults() {
        let cfg: Config = toml::from_str(
            r#"
            router_id = "10.0.0.2"
            asn = 65000

            [[peers]]
            address = "10.0.0.1"
            asn = 65001
            password = "secret"
            ttl_security = true
            prefixes = ["10.65.0.0/26", "fd00:65::/122"]

            [[peers]]
            address = "fd00::1"
            asn = 65000
            passive = true
            port = 1179
            hold_time = 30
            families = ["ipv6"]
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:179".parse().unwrap());
        let p = &cfg.peers[0];
        assert_eq!(
            (p.session.port, p.session.hold_time, p.session.passive),
            (179, 90, false)
        );
        assert_eq!(
            p.session.families(),
            vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
        );
        assert_eq!(p.session.graceful_restart_time, 120);
        // Pods' veths and kube-proxy's IPVS dummy are never the node's.
        assert!(cfg.ignores_interface("cali12ab") && cfg.ignores_interface("kube-ipvs0"));
        assert!(!cfg.ignores_interface("eth0"));
        let mut ign = cfg.clone();
        ign.ignored_interfaces = vec!["vlan*".into()];
        assert!(ign.ignores_interface("vlan10") && !ign.ignores_interface("eth0"));
        ign.validate().unwrap();
        ign.ignored_interfaces = vec!["".into()];
        assert!(ign.validate().is_err());
        let q = &cfg.peers[1];
        assert!(q.internal(65000) && q.session.passive);
        // Another local AS: external, and a new session.
        let mut r = q.clone();
        r.policy.local_asn = Some(65100);
        assert!(!r.internal(65000) && q.session_differs(&r));
        assert_eq!(q.socket_addr(), "[fd00::1]:1179".parse().unwrap());
        assert_eq!(q.session.families(), vec![Family::Ipv6Unicast]);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<Config>("router_id = \"1.1.1.1\"\nasn = 1\nasm = 2\n");
        assert!(e.is_err());
    }

    #[test]
    fn unknown_peer_keys_are_rejected() {
        let e = toml::from_str::<Config>(
            "router_id = \"1.1.1.1\"\nasn = 1\n[[peers]]\naddress = \"10.0.0.1\"\nasn = 2\nhold_tme = 9\n",
        );
        assert!(e.unwrap_err().to_string().contains("hold_tme"));
    }

    fn invalid(extra: &str) -> String {
        let cfg: Config = toml::from_str(&format!(
            "router_id = \"1.1.1.1\"\nasn = 65000\n[[peers]]\naddress = \"10.0.0.1\"\nasn = 65001\n{extra}"
        ))
        .unwrap();
        cfg.validate().unwrap_err().to_string()
    }

    #[test]
    fn hold_time_of_two_is_rejected_with_the_rule() {
        assert!(invalid("hold_time = 2").contains("at least 3"));
    }

    #[test]
    fn bfd_auth_in_the_file() {
        let cfg: Config = toml::from_str(
            r#"
            router_id = "1.1.1.1"
            asn = 65000
            [[peers]]
            address = "10.0.0.1"
            asn = 65001
            bfd = { multihop = true, auth = { type = "keyed-sha1", key_id = 7, key = "s" } }
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        let a = cfg.peers[0].bfd.as_ref().unwrap().auth.as_ref().unwrap();
        assert_eq!(
            (a.kind, a.key_id, a.key.as_str()),
            (BfdAuthKind::KeyedSha1, 7, "s")
        );
        assert!(
            invalid(r#"bfd = { auth = { type = "keyed-sha1", key_id = 1, key = "" } }"#)
                .contains("bfd auth key must be 1 to 20 bytes")
        );
        assert!(
            invalid(&format!(
                r#"bfd = {{ auth = {{ type = "keyed-sha1", key_id = 1, key = "{}" }} }}"#,
                "k".repeat(21)
            ))
            .contains("it has 21")
        );
        for bad in [
            r#"bfd = { auth = { type = "keyed-md5", key_id = 1, key = "k" } }"#,
            r#"bfd = { auth = { type = "keyed-sha1", key_id = 256, key = "k" } }"#,
            r#"bfd = { auth = { type = "keyed-sha1", key = "k" } }"#,
        ] {
            let toml = format!(
                "router_id = \"1.1.1.1\"\nasn = 65000\n[[peers]]\naddress = \"10.0.0.1\"\nasn = 65001\n{bad}"
            );
            assert!(toml::from_str::<Config>(&toml).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlong_password_is_rejected() {
        assert!(invalid(&format!("password = \"{}\"", "x".repeat(81))).contains("80 bytes"));
    }

    #[test]
    fn prefix_with_host_bits_suggests_the_network() {
        assert!(invalid("prefixes = [\"10.1.2.3/24\"]").contains("10.1.2.0/24"));
    }

    #[test]
    fn duplicate_peer_is_rejected() {
        let cfg: Config = toml::from_str(
            "router_id = \"1.1.1.1\"\nasn = 1\n[[peers]]\naddress = \"10.0.0.1\"\nasn = 2\n[[peers]]\naddress = \"10.0.0.1\"\nasn = 3\n",
        )
        .unwrap();
        assert!(cfg.validate().unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn calico_settings_parse_into_the_rib_policies() {
        let cfg: Config = toml::from_str(
            r#"
            router_id = "10.0.0.2"
            asn = 64512
            advertise = ["10.65.1.0/26"]
            pools = ["10.65.0.0/16"]
            rr_cluster_id = "1.1.1.1"
            [[prefix_communities]]
            cidr = "10.65.0.0/16"
            communities = ["65000:100", "65000:7:8"]
            [[peers]]
            address = "10.0.0.3"
            asn = 64512
            rr_client = true
            calico_node = true
            prefixes = ["10.65.9.0/26"]
            [[peers]]
            address = "10.0.0.254"
            asn = 65000
            max_prefixes = 100
            export_learned = true
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        let l = cfg.local_policy();
        assert_eq!(l.cluster_id, Some(Ipv4Addr::new(1, 1, 1, 1)));
        assert_eq!(l.communities[0].communities, vec![(65000 << 16) | 100]);
        assert_eq!(l.communities[0].large, vec![[65000, 7, 8]]);
        assert_eq!(
            cfg.originated(),
            vec![
                "10.65.1.0/26".parse().unwrap(),
                "10.65.9.0/26".parse().unwrap()
            ]
        );
        assert!(cfg.peers[0].policy.rr_client);
        assert_eq!(cfg.peers[1].policy.max_prefixes, Some(100));
        assert_eq!(cfg.startup_deferral, 30);
    }

    #[test]
    fn peer_filters_parse_from_the_file_and_bad_rules_are_refused_naming_them() {
        use crate::policy::{FilterAction, MatchOp};
        let base = "router_id = \"1.1.1.1\"\nasn = 1\n[[peers]]\naddress = \"10.0.0.1\"\nasn = 2\n";
        let cfg: Config = toml::from_str(&format!(
            "{base}export_filter = [{{ action = \"reject\", match = \"equal\", cidr = \"10.65.9.0/26\" }}]\n\
             import_filter = [{{ action = \"reject\", match = \"in\", cidr = \"172.16.0.0/12\", max_len = 24 }}, \
                              {{ action = \"accept\", family = \"ipv6\" }}]\n"
        ))
        .unwrap();
        cfg.validate().unwrap();
        let p = &cfg.peers[0].policy;
        assert_eq!(p.export_filter.len(), 1);
        assert_eq!(p.export_filter[0].action, FilterAction::Reject);
        assert_eq!(p.export_filter[0].op, Some(MatchOp::Equal));
        assert_eq!(p.import_filter[0].max_len, Some(24));
        assert_eq!(p.import_filter[1].ipv4, Some(false));
        // A policy change only: the session stays.
        let mut plain = cfg.peers[0].clone();
        plain.policy.export_filter = std::sync::Arc::from([]);
        assert!(!plain.session_differs(&cfg.peers[0]));
        // Inconsistent: refused, naming the peer and the rule.
        let bad: Config = toml::from_str(&format!(
            "{base}import_filter = [{{ action = \"reject\", match = \"in\" }}]\n"
        ))
        .unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("peer 10.0.0.1: import_filter[0]"), "{e}");
        // Misspelt keys and values are parse errors.
        assert!(
            toml::from_str::<Config>(&format!(
                "{base}export_filter = [{{ action = \"drop\" }}]\n"
            ))
            .is_err()
        );
        assert!(
            toml::from_str::<Config>(&format!(
                "{base}export_filter = [{{ action = \"accept\", cdr = \"10.0.0.0/8\" }}]\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn only_session_settings_need_a_new_session() {
        let cfg: Config = toml::from_str(
            "router_id = \"1.1.1.1\"\nasn = 1\n[[peers]]\naddress = \"10.0.0.1\"\nasn = 2\n",
        )
        .unwrap();
        let a = cfg.peers[0].clone();
        let mut b = a.clone();
        b.policy.max_prefixes = Some(5);
        b.policy.export_learned = true;
        assert!(!a.session_differs(&b));
        b.session.password = Some("x".into());
        assert!(a.session_differs(&b));
    }

    #[test]
    fn import_options_and_node_networks_reach_the_rib_policy() {
        let base = "router_id = \"1.1.1.1\"\nasn = 1\n";
        let cfg: Config = toml::from_str(base).unwrap();
        assert_eq!(cfg.node_networks, None, "read from the kernel");
        let l = cfg.local_policy();
        assert!(!l.import.accept_default_route && !l.import.accept_node_networks);
        let cfg: Config = toml::from_str(&format!(
            "{base}node_networks = [\"10.0.0.2/24\"]\naccept_default_route = true\naccept_node_networks = true\n"
        ))
        .unwrap();
        let l = cfg.local_policy();
        assert_eq!(l.node_networks, vec!["10.0.0.2/24".parse().unwrap()]);
        assert!(l.import.accept_default_route && l.import.accept_node_networks);
    }

    #[test]
    fn rr_client_must_be_internal() {
        assert!(invalid("rr_client = true").contains("internal"));
    }
}
