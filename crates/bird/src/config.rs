//! The standalone speaker's TOML configuration (`bird run --config`).
//!
//! ```toml
//! router_id = "10.0.0.2"
//! asn = 65000
//! listen = "0.0.0.0:179"          # "[::]:179" accepts IPv4 and IPv6 peers
//!
//! [[peers]]
//! address = "10.0.0.1"
//! asn = 65001
//! port = 179                      # the peer's port, for our connections
//! passive = false                 # never connect, only accept
//! hold_time = 90
//! password = "secret"             # TCP-MD5 (RFC 2385)
//! ttl_security = true             # GTSM (RFC 5082)
//! prefixes = ["10.65.0.0/26", "fd00:65::/122"]
//! next_hop_v6 = "fd00::2"         # for IPv6 prefixes on an IPv4 session
//! ```

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde::Deserialize;

use crate::packet::Family;

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

fn default_port() -> u16 {
    179
}

fn default_hold_time() -> u16 {
    90
}

fn default_connect_retry() -> u64 {
    5
}

fn default_graceful_restart() -> u16 {
    120
}

fn default_families() -> Vec<FamilyName> {
    vec![FamilyName::Ipv4, FamilyName::Ipv6]
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
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

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub asn: u32,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub passive: bool,
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    /// TCP-MD5 key (RFC 2385), at most 80 bytes.
    #[serde(default)]
    pub password: Option<String>,
    /// GTSM (RFC 5082): send with TTL 255 and accept only TTL 255.
    #[serde(default)]
    pub ttl_security: bool,
    /// Prefixes to advertise with next-hop self.
    #[serde(default)]
    pub prefixes: Vec<IpNetwork>,
    /// Next hop for IPv4 prefixes when the session's own address is not
    /// IPv4.
    #[serde(default)]
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Next hop for IPv6 prefixes when the session's own address is not
    /// IPv6.
    #[serde(default)]
    pub next_hop_v6: Option<Ipv6Addr>,
    /// LOCAL_PREF sent to an internal peer (default 100).
    #[serde(default)]
    pub local_pref: Option<u32>,
    #[serde(default)]
    pub med: Option<u32>,
    /// Source address of our connections.
    #[serde(default)]
    pub local_address: Option<IpAddr>,
    /// Seconds between connection attempts.
    #[serde(default = "default_connect_retry")]
    pub connect_retry: u64,
    /// Restart time advertised in the graceful-restart capability; 0 to
    /// not advertise it.
    #[serde(default = "default_graceful_restart")]
    pub graceful_restart_time: u16,
    #[serde(default = "default_families")]
    pub families: Vec<FamilyName>,
}

impl PeerConfig {
    pub fn internal(&self, local_as: u32) -> bool {
        self.asn == local_as
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    pub fn families(&self) -> Vec<Family> {
        let mut v: Vec<Family> = self.families.iter().map(|f| Family::from(*f)).collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn connect_retry(&self) -> Duration {
        Duration::from_secs(self.connect_retry.max(1))
    }
}

impl Config {
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

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.router_id.is_unspecified() {
            return bad("router_id must not be 0.0.0.0 (use this node's IPv4 address)".into());
        }
        if self.asn == 0 {
            return bad("asn must not be 0 (RFC 7607)".into());
        }
        let mut seen = HashSet::new();
        for p in &self.peers {
            let who = p.address;
            if !seen.insert(p.address.to_canonical()) {
                return bad(format!(
                    "peer {who} is listed twice; keep one [[peers]] entry"
                ));
            }
            if p.asn == 0 {
                return bad(format!("peer {who}: asn must not be 0"));
            }
            if matches!(p.hold_time, 1 | 2) {
                return bad(format!(
                    "peer {who}: hold_time must be 0 or at least 3 seconds (RFC 4271)"
                ));
            }
            if p.password
                .as_ref()
                .is_some_and(|pw| pw.is_empty() || pw.len() > 80)
            {
                return bad(format!(
                    "peer {who}: password must be 1 to 80 bytes (the TCP-MD5 key limit)"
                ));
            }
            if p.families.is_empty() {
                return bad(format!("peer {who}: families must name ipv4 and/or ipv6"));
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
        assert_eq!((p.port, p.hold_time, p.passive), (179, 90, false));
        assert_eq!(p.families(), vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
        assert_eq!(p.graceful_restart_time, 120);
        let q = &cfg.peers[1];
        assert!(q.internal(65000) && q.passive);
        assert_eq!(q.socket_addr(), "[fd00::1]:1179".parse().unwrap());
        assert_eq!(q.families(), vec![Family::Ipv6Unicast]);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<Config>("router_id = \"1.1.1.1\"\nasn = 1\nasm = 2\n");
        assert!(e.is_err());
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
}
