//! calico-node's settings, from the environment variables Calico's
//! DaemonSet sets, with Calico's defaults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use datastore::{DatastoreConfig, DatastoreType};
use ipnetwork::{IpNetwork, Ipv6Network};
use ippool_crd::EncapMode;

use crate::autodetect::{DetectError, Method};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{var}={value:?}: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Detect(#[from] DetectError),
    /// Calico refuses this too (node/pkg/lifecycle/startup).
    #[error(
        "NO_DEFAULT_POOLS=true cannot be combined with {var}: unset NO_DEFAULT_POOLS to have the pool created, or unset {var} (for an IPv6-only node, CALICO_IPV4POOL_CIDR=none without NO_DEFAULT_POOLS creates the IPv6 pool and no IPv4 one)"
    )]
    PoolConflict { var: &'static str },
}

/// How the node's IPv4 address is chosen (`IP`).
#[derive(Debug, Clone)]
pub enum IpSetting {
    /// `IP` unset or `autodetect`.
    Autodetect(Method),
    /// `IP=10.0.0.5` or `IP=10.0.0.5/24`; without a prefix the subnet is
    /// taken from the interface holding the address.
    Explicit(Ipv4Addr, Option<u8>),
    /// `IP=none`: no IPv4 BGP address (policy-only node).
    None,
}

/// The node's IPv6 address (`IP6`): its underlay address for IPv6 BGP and
/// IPv6 VXLAN (`spec.bgp.ipv6Address`).
#[derive(Debug, Clone)]
pub enum Ip6Setting {
    /// `IP6=autodetect`: found by `IP6_AUTODETECTION_METHOD` (Calico's
    /// methods, within IPv6).
    Autodetect(Method),
    /// `IP6` unset: whatever the Node already has is left alone.
    Unset,
    /// `IP6=fd00::5/64` (without a prefix length: a /128, so CrossSubnet
    /// treats every other node as in another subnet).
    Explicit(Ipv6Network),
    /// `IP6=none`: no IPv6 address (cleared).
    None,
}

/// A pool calico-node creates when the datastore has none of its family:
/// the IPv4 one (`CALICO_IPV4POOL_*`), and the IPv6 one when
/// `CALICO_IPV6POOL_CIDR` is set (`CALICO_IPV6POOL_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultPool {
    pub cidr: IpNetwork,
    pub ipip: EncapMode,
    pub vxlan: EncapMode,
    pub nat_outgoing: bool,
    pub block_size: u8,
    pub node_selector: String,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub nodename: String,
    pub ip: IpSetting,
    pub ip6: Ip6Setting,
    pub asn: Option<u32>,
    pub default_pool: Option<DefaultPool>,
    /// `CALICO_IPV6POOL_CIDR` and friends; `None` when it is unset.
    pub default_pool_v6: Option<DefaultPool>,
    /// `DATASTORE_TYPE`, `ETCD_ENDPOINTS` (and `KUBERNETES_SERVICE_HOST`
    /// when the type is not set), by the rule every calico-rs binary
    /// shares; the children are handed the same selection.
    pub datastore: DatastoreConfig,
    /// Sockets of the children live here.
    pub run_dir: PathBuf,
    /// `/liveness` and `/readiness`.
    pub health_addr: SocketAddr,
    /// Where `/metrics` is served; `None` (the default) serves none.
    pub metrics_addr: Option<MetricsBind>,
    /// `CALICO_NETWORKING_BACKEND`.
    pub networking_backend: NetworkingBackend,
    /// The IPAM garbage collector's timing, when this node leads the
    /// cluster tasks: `CALICO_IPAM_GC_INTERVAL` (default 60s) and
    /// `CALICO_IPAM_GC_GRACE_PERIOD` (Calico's leak grace period, default
    /// 15m), each a number with a unit (`500ms`, `30s`, `15m`, `1h`).
    pub ipam_gc: crate::ipam_gc::Options,
}

/// `CALICO_NETWORKING_BACKEND`, as Calico reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkingBackend {
    /// BGP (`bird`, the default): bird runs, routes come from BGP.
    #[default]
    Bird,
    /// No BGP: bird does not run; felix routes VXLAN pools' blocks from
    /// the nodes' VXLAN tunnel endpoints and block affinities.
    Vxlan,
    /// Policy only: no BGP, nothing routed between nodes by calico-rs.
    None,
}

impl NetworkingBackend {
    pub fn runs_bgp(self) -> bool {
        self == NetworkingBackend::Bird
    }
}

/// Where `/metrics` listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsBind {
    /// `FELIX_PROMETHEUSMETRICSHOST`; unset: the node's own address (the
    /// one it peers from), not every interface — a pod network's nodes
    /// need not show their counters on the pods' side.
    pub host: Option<IpAddr>,
    pub port: u16,
}

impl MetricsBind {
    /// The address to bind, given the node's: its own when no host was
    /// set (all interfaces when the node has none, `IP=none`).
    pub fn addr(&self, node: Option<IpAddr>) -> SocketAddr {
        let host = self
            .host
            .or(node)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        SocketAddr::new(host, self.port)
    }
}

/// Every environment variable calico-node itself reads (its children
/// inherit the environment and read their own, see their `--help`). The
/// deploy manifest test checks the DaemonSet sets no other.
pub const ENV_VARS: &[&str] = &[
    "NODENAME",
    "HOSTNAME",
    "IP",
    "IP6",
    "IP_AUTODETECTION_METHOD",
    "IP6_AUTODETECTION_METHOD",
    "AS",
    "NO_DEFAULT_POOLS",
    "CALICO_IPV4POOL_CIDR",
    "CALICO_IPV4POOL_BLOCK_SIZE",
    "CALICO_IPV4POOL_IPIP",
    "CALICO_IPV4POOL_VXLAN",
    "CALICO_IPV4POOL_NAT_OUTGOING",
    "CALICO_IPV4POOL_NODE_SELECTOR",
    "CALICO_IPV6POOL_CIDR",
    "CALICO_IPV6POOL_BLOCK_SIZE",
    "CALICO_IPV6POOL_VXLAN",
    "CALICO_IPV6POOL_NAT_OUTGOING",
    "CALICO_IPV6POOL_NODE_SELECTOR",
    "FELIX_HEALTHHOST",
    "FELIX_HEALTHPORT",
    "FELIX_PROMETHEUSMETRICSENABLED",
    "FELIX_PROMETHEUSMETRICSHOST",
    "FELIX_PROMETHEUSMETRICSPORT",
    "DATASTORE_TYPE",
    "ETCD_ENDPOINTS",
    "CALICO_RUN_DIR",
    "CALICO_BIN_DIR",
    "CALICO_NETWORKING_BACKEND",
    "CALICO_IPAM_GC_INTERVAL",
    "CALICO_IPAM_GC_GRACE_PERIOD",
];

/// Calico's default metrics port.
pub const DEFAULT_METRICS_PORT: u16 = 9091;

/// Calico's default port for `/liveness` and `/readiness`.
pub const DEFAULT_HEALTH_PORT: u16 = 9099;

/// The default IPv4 pool's CIDR when `CALICO_IPV4POOL_CIDR` is not set
/// (calico-node's default).
pub const DEFAULT_POOL_CIDR: &str = "192.168.0.0/16";

pub const DEFAULT_POOL_NAME: &str = "default-ipv4-ippool";
pub const DEFAULT_POOL_NAME_V6: &str = "default-ipv6-ippool";

fn invalid(var: &'static str, value: &str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        var,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// The `CALICO_IPV4POOL_*` or `CALICO_IPV6POOL_*` variables of one
/// family's default pool.
struct PoolVars {
    v6: bool,
    cidr: &'static str,
    block_size: &'static str,
    /// `None` for IPv6: IP-in-IP carries IPv4 only.
    ipip: Option<&'static str>,
    vxlan: &'static str,
    nat_outgoing: &'static str,
    /// Calico's default: on for IPv4, off for IPv6.
    nat_default: bool,
    node_selector: &'static str,
}

const POOL_VARS_V4: PoolVars = PoolVars {
    v6: false,
    cidr: "CALICO_IPV4POOL_CIDR",
    block_size: "CALICO_IPV4POOL_BLOCK_SIZE",
    ipip: Some("CALICO_IPV4POOL_IPIP"),
    vxlan: "CALICO_IPV4POOL_VXLAN",
    nat_outgoing: "CALICO_IPV4POOL_NAT_OUTGOING",
    nat_default: true,
    node_selector: "CALICO_IPV4POOL_NODE_SELECTOR",
};

const POOL_VARS_V6: PoolVars = PoolVars {
    v6: true,
    cidr: "CALICO_IPV6POOL_CIDR",
    block_size: "CALICO_IPV6POOL_BLOCK_SIZE",
    ipip: None,
    vxlan: "CALICO_IPV6POOL_VXLAN",
    nat_outgoing: "CALICO_IPV6POOL_NAT_OUTGOING",
    nat_default: false,
    node_selector: "CALICO_IPV6POOL_NODE_SELECTOR",
};

/// One family's default pool from its variables, `text` its CIDR.
fn parse_default_pool(
    get: &impl Fn(&str) -> Option<String>,
    vars: &PoolVars,
    text: &str,
) -> Result<DefaultPool, SettingsError> {
    let family = if vars.v6 { "IPv6" } else { "IPv4" };
    let cidr: IpNetwork = text
        .parse()
        .ok()
        .filter(|c: &IpNetwork| c.is_ipv6() == vars.v6)
        .ok_or_else(|| invalid(vars.cidr, text, format!("not an {family} CIDR")))?;
    if cidr.network() != cidr.ip() {
        return Err(invalid(
            vars.cidr,
            text,
            format!(
                "host bits set; did you mean {}/{}?",
                cidr.network(),
                cidr.prefix()
            ),
        ));
    }
    let (default_size, range) = if vars.v6 {
        (
            ippool_crd::defaults::BLOCK_SIZE_V6,
            ippool_crd::defaults::BLOCK_SIZE_RANGE_V6,
        )
    } else {
        (
            ippool_crd::defaults::BLOCK_SIZE_V4,
            ippool_crd::defaults::BLOCK_SIZE_RANGE_V4,
        )
    };
    let block_size = match get(vars.block_size) {
        None => default_size,
        Some(v) => v
            .parse::<u8>()
            .ok()
            .filter(|b| range.contains(b) && *b >= cidr.prefix())
            .ok_or_else(|| {
                invalid(
                    vars.block_size,
                    &v,
                    format!(
                        "must be {}-{} and not shorter than the pool prefix",
                        range.start(),
                        range.end()
                    ),
                )
            })?,
    };
    Ok(DefaultPool {
        cidr,
        ipip: match vars.ipip {
            Some(var) => encap(var, get(var))?,
            None => EncapMode::Never,
        },
        vxlan: encap(vars.vxlan, get(vars.vxlan))?,
        nat_outgoing: boolean(vars.nat_outgoing, get(vars.nat_outgoing), vars.nat_default)?,
        block_size,
        node_selector: get(vars.node_selector)
            .unwrap_or_else(|| ippool_crd::defaults::NODE_SELECTOR.into()),
    })
}

fn encap(var: &'static str, v: Option<String>) -> Result<EncapMode, SettingsError> {
    match v.unwrap_or_default().to_ascii_lowercase().as_str() {
        "" | "off" | "never" | "false" => Ok(EncapMode::Never),
        "always" | "true" => Ok(EncapMode::Always),
        "crosssubnet" | "cross-subnet" => Ok(EncapMode::CrossSubnet),
        other => Err(invalid(var, other, "use Always, CrossSubnet or Never")),
    }
}

/// A duration as `500ms`, `30s`, `15m` or `1h` (a bare number: seconds).
fn duration(
    var: &'static str,
    v: Option<String>,
    default: std::time::Duration,
) -> Result<std::time::Duration, SettingsError> {
    use std::time::Duration;
    let Some(v) = v else { return Ok(default) };
    let t = v.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let bad = || {
        invalid(
            var,
            &v,
            "use a whole number with a unit: 500ms, 30s, 15m or 1h",
        )
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(invalid(var, &v, "must be more than zero"));
    }
    Ok(d)
}

fn boolean(var: &'static str, v: Option<String>, default: bool) -> Result<bool, SettingsError> {
    match v.map(|s| s.to_ascii_lowercase()).as_deref() {
        None | Some("") => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(invalid(var, other, "use true or false")),
    }
}

/// The datastore Calico's variables select. An unsupported
/// `DATASTORE_TYPE` or a malformed `ETCD_ENDPOINTS` is reported against
/// its variable.
fn datastore_config(
    get: impl Fn(&str) -> Option<String>,
) -> Result<DatastoreConfig, SettingsError> {
    const TYPES: [DatastoreType; 2] = [DatastoreType::Etcdv3, DatastoreType::Kubernetes];
    if let Some(v) = get("DATASTORE_TYPE")
        && !TYPES.iter().any(|t| t.as_str() == v)
    {
        let accepted: Vec<&str> = TYPES.iter().map(|t| t.as_str()).collect();
        return Err(invalid(
            "DATASTORE_TYPE",
            &v,
            format!("not a supported datastore; use {}", accepted.join(" or ")),
        ));
    }
    DatastoreConfig::from_lookup(&get).map_err(|e| {
        let reason = match e {
            datastore::Error::Config(reason) => reason,
            other => other.to_string(),
        };
        // Reported against the variable the reason starts with (the TLS
        // files, the login), else ETCD_ENDPOINTS; never showing a password.
        const VARS: [&str; 5] = [
            "ETCD_USERNAME",
            "ETCD_PASSWORD",
            "ETCD_CA_CERT_FILE",
            "ETCD_CERT_FILE",
            "ETCD_KEY_FILE",
        ];
        let var = VARS
            .into_iter()
            .find(|v| reason.starts_with(&format!("{v} ")))
            .unwrap_or("ETCD_ENDPOINTS");
        let value = match var {
            "ETCD_PASSWORD" => "<redacted>".to_string(),
            "ETCD_ENDPOINTS" => get("ETCD_ENDPOINTS").unwrap_or_default(),
            v => get(v).unwrap_or_default(),
        };
        invalid(var, &value, reason)
    })
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

impl Settings {
    /// Reads the settings through `get` (`std::env::var` in the binary).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let nodename = get("NODENAME")
            .or_else(|| get("HOSTNAME"))
            .unwrap_or_else(hostname);
        datastore::check_name("NODENAME", &nodename)
            .map_err(|e| invalid("NODENAME", &nodename, e.to_string()))?;

        let method = Method::parse(&get("IP_AUTODETECTION_METHOD").unwrap_or_default())?;
        let ip = match get("IP").as_deref() {
            None | Some("autodetect") => IpSetting::Autodetect(method),
            Some("none") => IpSetting::None,
            Some(v) => {
                let (addr, prefix) =
                    match v.split_once('/') {
                        Some((a, p)) => (
                            a,
                            Some(p.parse::<u8>().ok().filter(|p| *p <= 32).ok_or_else(|| {
                                invalid("IP", v, "the prefix length must be 0-32")
                            })?),
                        ),
                        None => (v, None),
                    };
                let addr: Ipv4Addr = addr
                    .parse()
                    .map_err(|_| invalid("IP", v, "not an IPv4 address, 'autodetect' or 'none'"))?;
                IpSetting::Explicit(addr, prefix)
            }
        };

        let ip6 = match get("IP6").as_deref().map(str::trim) {
            None | Some("") => Ip6Setting::Unset,
            Some("none") => Ip6Setting::None,
            Some("autodetect") => Ip6Setting::Autodetect(Method::parse(
                &get("IP6_AUTODETECTION_METHOD").unwrap_or_default(),
            )?),
            Some(v) => {
                let with_len = if v.contains('/') {
                    v.to_string()
                } else {
                    format!("{v}/128")
                };
                Ip6Setting::Explicit(with_len.parse::<Ipv6Network>().map_err(|_| {
                    invalid(
                        "IP6",
                        v,
                        "not an IPv6 address (optionally with /prefix) or 'none'",
                    )
                })?)
            }
        };

        let asn = match get("AS") {
            None => None,
            Some(v) => {
                Some(ippool_crd::asn::parse(&v).map_err(|e| invalid("AS", &v, e.to_string()))?)
            }
        };

        // As Calico: NO_DEFAULT_POOLS=true creates no pool and refuses a
        // pool CIDR beside it; a CIDR of `none` skips that family's pool
        // (an IPv6-only cluster: CALICO_IPV4POOL_CIDR=none).
        let no_default = boolean("NO_DEFAULT_POOLS", get("NO_DEFAULT_POOLS"), false)?;
        let cidr_var = get("CALICO_IPV4POOL_CIDR");
        let cidr_var6 = get("CALICO_IPV6POOL_CIDR");
        if no_default {
            for (var, value) in [
                ("CALICO_IPV4POOL_CIDR", &cidr_var),
                ("CALICO_IPV6POOL_CIDR", &cidr_var6),
            ] {
                if value.as_deref().is_some_and(|v| !v.is_empty()) {
                    return Err(SettingsError::PoolConflict { var });
                }
            }
        }
        let is_none = |v: &str| v.eq_ignore_ascii_case("none");
        let default_pool = match cidr_var {
            _ if no_default => None,
            Some(text) if is_none(&text) => None,
            text => {
                let text = text.unwrap_or_else(|| DEFAULT_POOL_CIDR.into());
                Some(parse_default_pool(&get, &POOL_VARS_V4, &text)?)
            }
        };
        let default_pool_v6 = match cidr_var6 {
            None => None,
            Some(text) if is_none(&text) => None,
            Some(text) => Some(parse_default_pool(&get, &POOL_VARS_V6, &text)?),
        };

        let host = get("FELIX_HEALTHHOST").unwrap_or_else(|| "127.0.0.1".into());
        let host: IpAddr = if host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse()
                .map_err(|_| invalid("FELIX_HEALTHHOST", &host, "not an IP address"))?
        };
        let port = match get("FELIX_HEALTHPORT") {
            None => DEFAULT_HEALTH_PORT,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| invalid("FELIX_HEALTHPORT", &p, "not a port number"))?,
        };

        let metrics_addr = if boolean(
            "FELIX_PROMETHEUSMETRICSENABLED",
            get("FELIX_PROMETHEUSMETRICSENABLED"),
            false,
        )? {
            let host = match get("FELIX_PROMETHEUSMETRICSHOST") {
                None => None,
                Some(h) if h == "localhost" => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                Some(h) => Some(h.parse().map_err(|_| {
                    invalid(
                        "FELIX_PROMETHEUSMETRICSHOST",
                        &h,
                        "not an IP address (0.0.0.0 for all interfaces; unset: the node's address)",
                    )
                })?),
            };
            let port = match get("FELIX_PROMETHEUSMETRICSPORT") {
                None => DEFAULT_METRICS_PORT,
                Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                    invalid(
                        "FELIX_PROMETHEUSMETRICSPORT",
                        &p,
                        "not a port number (1-65535)",
                    )
                })?,
            };
            Some(MetricsBind { host, port })
        } else {
            None
        };

        Ok(Settings {
            nodename,
            ip,
            ip6,
            asn,
            default_pool,
            default_pool_v6,
            datastore: datastore_config(get)?,
            run_dir: get("CALICO_RUN_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/run/calico")),
            health_addr: SocketAddr::new(host, port),
            metrics_addr,
            networking_backend: match get("CALICO_NETWORKING_BACKEND")
                .as_deref()
                .map(str::trim)
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("" | "bird") => NetworkingBackend::Bird,
                Some("vxlan") => NetworkingBackend::Vxlan,
                Some("none") => NetworkingBackend::None,
                Some(other) => {
                    return Err(invalid(
                        "CALICO_NETWORKING_BACKEND",
                        other,
                        "use bird, vxlan or none",
                    ));
                }
            },
            ipam_gc: {
                let d = crate::ipam_gc::Options::default();
                crate::ipam_gc::Options {
                    interval: duration(
                        "CALICO_IPAM_GC_INTERVAL",
                        get("CALICO_IPAM_GC_INTERVAL"),
                        d.interval,
                    )?,
                    grace: duration(
                        "CALICO_IPAM_GC_GRACE_PERIOD",
                        get("CALICO_IPAM_GC_GRACE_PERIOD"),
                        d.grace,
                    )?,
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn the_ipam_gc_timing_defaults_to_calicos_and_takes_units() {
        let s = Settings::from_env(env(&[("NODENAME", "n")])).unwrap();
        assert_eq!(s.ipam_gc.interval, std::time::Duration::from_secs(60));
        assert_eq!(s.ipam_gc.grace, std::time::Duration::from_secs(15 * 60));
        let s = Settings::from_env(env(&[
            ("NODENAME", "n"),
            ("CALICO_IPAM_GC_INTERVAL", "500ms"),
            ("CALICO_IPAM_GC_GRACE_PERIOD", "2m"),
        ]))
        .unwrap();
        assert_eq!(s.ipam_gc.interval, std::time::Duration::from_millis(500));
        assert_eq!(s.ipam_gc.grace, std::time::Duration::from_secs(120));
        for bad in ["0s", "5x", "-1s", "s"] {
            let e = Settings::from_env(env(&[("NODENAME", "n"), ("CALICO_IPAM_GC_INTERVAL", bad)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("CALICO_IPAM_GC_INTERVAL"), "{bad}: {e}");
        }
    }

    #[test]
    fn calicos_defaults() {
        let s = Settings::from_env(env(&[("NODENAME", "node-1")])).unwrap();
        assert_eq!(s.nodename, "node-1");
        assert!(matches!(s.ip, IpSetting::Autodetect(Method::FirstFound)));
        let p = s.default_pool.unwrap();
        assert_eq!(p.cidr.to_string(), "192.168.0.0/16");
        assert_eq!(p.ipip, EncapMode::Never);
        assert!(p.nat_outgoing);
        assert_eq!(p.block_size, 26);
        assert_eq!(p.node_selector, "all()");
        assert_eq!(s.datastore.datastore_type(), DatastoreType::Etcdv3);
        assert_eq!(s.health_addr.to_string(), "127.0.0.1:9099");
        assert_eq!(s.metrics_addr, None, "metrics are off by default");
    }

    #[test]
    fn an_unsupported_datastore_type_names_the_variable_the_value_and_the_choices() {
        let err = Settings::from_env(env(&[("DATASTORE_TYPE", "consul")])).unwrap_err();
        let msg = err.to_string();
        for part in ["DATASTORE_TYPE", "consul", "etcdv3", "kubernetes"] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
        assert!(!msg.contains("invalid key"), "{msg}");
        let s = Settings::from_env(env(&[
            ("DATASTORE_TYPE", "etcdv3"),
            (
                "ETCD_ENDPOINTS",
                "http://10.0.0.1:2379,http://10.0.0.2:2379",
            ),
        ]))
        .unwrap();
        match s.datastore {
            DatastoreConfig::Etcdv3(c) => assert_eq!(c.endpoints.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    /// etcd's login (`ETCD_USERNAME`, `ETCD_PASSWORD`) reaches the
    /// datastore settings; one without the other is refused, and the
    /// password is never in the message.
    #[test]
    fn etcd_username_and_password_reach_the_datastore() {
        let s = Settings::from_env(env(&[
            ("DATASTORE_TYPE", "etcdv3"),
            ("ETCD_USERNAME", "calico"),
            ("ETCD_PASSWORD", "s3cret"),
        ]))
        .unwrap();
        let DatastoreConfig::Etcdv3(c) = &s.datastore else {
            panic!("{:?}", s.datastore)
        };
        let auth = c.auth.as_ref().unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.as_str()),
            ("calico", "s3cret")
        );
        assert!(!format!("{s:?}").contains("s3cret"));
        let msg = Settings::from_env(env(&[("ETCD_PASSWORD", "s3cret")]))
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("ETCD_PASSWORD=\"<redacted>\""), "{msg}");
        assert!(msg.contains("ETCD_USERNAME is not"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
    }

    #[test]
    fn metrics_settings() {
        let s = Settings::from_env(env(&[("FELIX_PROMETHEUSMETRICSENABLED", "true")])).unwrap();
        // Unset host: the node's address, not every interface.
        let m = s.metrics_addr.unwrap();
        assert_eq!(m.host, None);
        let node: IpAddr = "172.30.0.5".parse().unwrap();
        assert_eq!(m.addr(Some(node)).to_string(), "172.30.0.5:9091");
        assert_eq!(m.addr(None).to_string(), "0.0.0.0:9091");
        let s = Settings::from_env(env(&[
            ("FELIX_PROMETHEUSMETRICSENABLED", "true"),
            ("FELIX_PROMETHEUSMETRICSHOST", "127.0.0.1"),
            ("FELIX_PROMETHEUSMETRICSPORT", "19091"),
        ]))
        .unwrap();
        let node: IpAddr = "172.30.0.5".parse().unwrap();
        assert_eq!(
            s.metrics_addr.unwrap().addr(Some(node)).to_string(),
            "127.0.0.1:19091"
        );
        // All interfaces only when asked for.
        let s = Settings::from_env(env(&[
            ("FELIX_PROMETHEUSMETRICSENABLED", "true"),
            ("FELIX_PROMETHEUSMETRICSHOST", "0.0.0.0"),
        ]))
        .unwrap();
        assert_eq!(
            s.metrics_addr.unwrap().addr(Some(node)).to_string(),
            "0.0.0.0:9091"
        );
        // The port alone does not switch them on.
        let s = Settings::from_env(env(&[("FELIX_PROMETHEUSMETRICSPORT", "19091")])).unwrap();
        assert_eq!(s.metrics_addr, None);
    }

    /// Every variable the code reads is in [`ENV_VARS`] and every entry
    /// is read somewhere, so the list the manifest test relies on cannot
    /// drift from the code.
    #[test]
    fn env_vars_lists_exactly_what_is_read() {
        let sources = [include_str!("settings.rs"), include_str!("main.rs")];
        let mut read = std::collections::BTreeSet::new();
        for src in sources {
            for pat in ["get(\"", "env = \""] {
                for (i, _) in src.match_indices(pat) {
                    let rest = &src[i + pat.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
                        .collect();
                    if rest[name.len()..].starts_with('"') && !name.is_empty() {
                        read.insert(name);
                    }
                }
            }
        }
        // The default pools' variables are read through `get(vars.*)`.
        for v in [&POOL_VARS_V4, &POOL_VARS_V6] {
            read.extend(
                [
                    v.cidr,
                    v.block_size,
                    v.vxlan,
                    v.nat_outgoing,
                    v.node_selector,
                ]
                .into_iter()
                .chain(v.ipip)
                .map(String::from),
            );
        }
        let listed: std::collections::BTreeSet<String> =
            ENV_VARS.iter().map(|s| s.to_string()).collect();
        assert_eq!(read, listed);
    }

    #[test]
    fn pool_and_address_settings() {
        let s = Settings::from_env(env(&[
            ("NODENAME", "n"),
            ("IP", "10.0.0.5/24"),
            ("AS", "64513"),
            ("CALICO_IPV4POOL_CIDR", "10.65.0.0/16"),
            ("CALICO_IPV4POOL_IPIP", "CrossSubnet"),
            ("CALICO_IPV4POOL_NAT_OUTGOING", "false"),
            ("CALICO_IPV4POOL_BLOCK_SIZE", "24"),
        ]))
        .unwrap();
        assert!(matches!(s.ip, IpSetting::Explicit(a, Some(24)) if a.to_string() == "10.0.0.5"));
        assert_eq!(s.asn, Some(64513));
        let p = s.default_pool.unwrap();
        assert_eq!(p.ipip, EncapMode::CrossSubnet);
        assert!(!p.nat_outgoing);
        assert_eq!(p.block_size, 24);

        let s = Settings::from_env(env(&[
            ("NODENAME", "n"),
            ("NO_DEFAULT_POOLS", "true"),
            ("IP", "none"),
        ]))
        .unwrap();
        assert!(s.default_pool.is_none());
        assert!(matches!(s.ip, IpSetting::None));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("IP", "10.0.0.300"),
            ("AS", "banana"),
            ("CALICO_IPV4POOL_CIDR", "10.65.0.1/16"),
            ("CALICO_IPV4POOL_IPIP", "sometimes"),
            ("CALICO_IPV4POOL_BLOCK_SIZE", "8"),
            ("FELIX_HEALTHPORT", "99999"),
            ("FELIX_PROMETHEUSMETRICSENABLED", "maybe"),
            ("NODENAME", "a/b"),
            ("DATASTORE_TYPE", "consul"),
            ("ETCD_ENDPOINTS", "10.0.0.1:2379"),
        ] {
            let err = Settings::from_env(env(&[("NODENAME", "n"), (k, v)])).unwrap_err();
            assert!(err.to_string().contains(k), "{k}: {err}");
        }
        let err = Settings::from_env(env(&[("CALICO_IPV4POOL_CIDR", "10.65.0.1/16")])).unwrap_err();
        assert!(err.to_string().contains("10.65.0.0/16"), "{err}");
        assert!(matches!(
            Settings::from_env(env(&[
                ("NO_DEFAULT_POOLS", "true"),
                ("CALICO_IPV4POOL_CIDR", "10.0.0.0/8")
            ])),
            Err(SettingsError::PoolConflict {
                var: "CALICO_IPV4POOL_CIDR"
            })
        ));
    }

    #[test]
    fn ipv6_only_pools_follow_calico() {
        // Calico's IPv6-only node: the IPv6 pool, and its default IPv4
        // pool too unless CALICO_IPV4POOL_CIDR=none.
        let only = [
            ("IP", "none"),
            ("IP6", "autodetect"),
            ("CALICO_IPV6POOL_CIDR", "fd00:65::/48"),
        ];
        let s = Settings::from_env(env(&only)).unwrap();
        assert_eq!(
            s.default_pool_v6.as_ref().map(|p| p.cidr.to_string()),
            Some("fd00:65::/48".into())
        );
        assert!(s.default_pool.is_some());
        let mut no_v4 = only.to_vec();
        no_v4.push(("CALICO_IPV4POOL_CIDR", "none"));
        let s = Settings::from_env(env(&no_v4)).unwrap();
        assert!(s.default_pool.is_none());
        assert!(s.default_pool_v6.is_some());
        // NO_DEFAULT_POOLS with an IPv6 CIDR: refused as Calico refuses
        // it, naming the variable and the way out.
        let mut conflict = only.to_vec();
        conflict.push(("NO_DEFAULT_POOLS", "true"));
        let err = Settings::from_env(env(&conflict)).unwrap_err();
        assert!(matches!(
            err,
            SettingsError::PoolConflict {
                var: "CALICO_IPV6POOL_CIDR"
            }
        ));
        let text = err.to_string();
        assert!(text.contains("CALICO_IPV6POOL_CIDR"), "{text}");
        assert!(text.contains("CALICO_IPV4POOL_CIDR=none"), "{text}");
        // NO_DEFAULT_POOLS alone: no pools at all, still a valid node.
        let s = Settings::from_env(env(&[("IP", "none"), ("NO_DEFAULT_POOLS", "true")])).unwrap();
        assert!(s.default_pool.is_none() && s.default_pool_v6.is_none());
    }
}
