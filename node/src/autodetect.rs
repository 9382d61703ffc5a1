//! Which address is this node's: Calico's `IP` / `IP_AUTODETECTION_METHOD`,
//! and for IPv6 `IP6=autodetect` / `IP6_AUTODETECTION_METHOD`.
//!
//! Methods, as Calico names them (each picks within one family):
//! - `first-found` (default): the first address on an interface that
//!   is not one of the well-known virtual ones (docker, cali, tunl, veth, ...);
//! - `can-reach=<ip or name>`: the address the kernel would use to reach it;
//! - `interface=<regex>[,<regex>]`: the first address on a matching interface;
//! - `skip-interface=<regex>[,<regex>]`: first-found, skipping matches;
//! - `cidr=<cidr>[,<cidr>]`: the first address inside one of the CIDRs.
//!
//! Selection is a pure function over the list of interfaces, so every
//! method is unit tested; reading the interfaces is the only I/O.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use ipnetwork::IpNetwork;
use regex::Regex;

/// Interfaces first-found never picks: Calico's own list of virtual ones.
const DEFAULT_SKIP: &[&str] = &[
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo$",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^vxlan.calico.*",
    "^vxlan-v6.calico.*",
    "^wireguard.cali.*",
    "^wg-v6.cali.*",
    "^nodelocaldns.*",
    "^podman.*",
    "^br-.*",
];

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(
        "IP_AUTODETECTION_METHOD {0:?} is not understood; use first-found, can-reach=, interface=, skip-interface= or cidr="
    )]
    UnknownMethod(String),
    #[error("IP_AUTODETECTION_METHOD {method:?}: {reason}")]
    BadArgument { method: String, reason: String },
    #[error(
        "no {family} address found by {method}; interfaces seen: {seen}. Set {var} explicitly or choose another {var}_AUTODETECTION_METHOD"
    )]
    NotFound {
        family: &'static str,
        var: &'static str,
        method: String,
        seen: String,
    },
    #[error("IP_AUTODETECTION_METHOD {method:?}: {source}")]
    Unreachable { method: String, source: ReachError },
    #[error("cannot list network interfaces: {0}")]
    Io(String),
}

/// Why no source address towards a `can-reach` target was found.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    #[error("cannot resolve {target:?}: {source}")]
    Resolve {
        target: String,
        source: std::io::Error,
    },
    #[error("{0:?} has no {1} address")]
    NoAddress(String, &'static str),
    #[error("no route to {dest}: {source}")]
    NoRoute {
        dest: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open a UDP socket to ask the kernel: {0}")]
    Socket(std::io::Error),
    #[error("the kernel chose a source of the other family")]
    WrongFamily,
}

/// One address on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub interface: String,
    pub addr: IpNetwork,
}

/// Which family a selection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
    fn var(self) -> &'static str {
        match self {
            Family::V4 => "IP",
            Family::V6 => "IP6",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Method {
    FirstFound,
    CanReach(String),
    Interface(Vec<Regex>),
    SkipInterface(Vec<Regex>),
    Cidr(Vec<IpNetwork>),
}

fn regexes(method: &str, list: &str) -> Result<Vec<Regex>, DetectError> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|r| {
            // Calico matches the whole interface name.
            Regex::new(&format!("^(?:{r})$")).map_err(|e| DetectError::BadArgument {
                method: method.to_string(),
                reason: format!("{r:?} is not a valid regular expression: {e}"),
            })
        })
        .collect()
}

impl Method {
    pub fn parse(s: &str) -> Result<Method, DetectError> {
        let s = s.trim();
        if s.is_empty() || s == "first-found" {
            return Ok(Method::FirstFound);
        }
        let (kind, arg) = s
            .split_once('=')
            .ok_or_else(|| DetectError::UnknownMethod(s.to_string()))?;
        if arg.is_empty() {
            return Err(DetectError::BadArgument {
                method: s.to_string(),
                reason: "the value after '=' is empty".into(),
            });
        }
        match kind {
            "can-reach" => Ok(Method::CanReach(arg.to_string())),
            "interface" => Ok(Method::Interface(regexes(s, arg)?)),
            "skip-interface" => Ok(Method::SkipInterface(regexes(s, arg)?)),
            "cidr" => arg
                .split(',')
                .map(|c| {
                    c.trim()
                        .parse::<IpNetwork>()
                        .map_err(|e| DetectError::BadArgument {
                            method: s.to_string(),
                            reason: format!("{c:?} is not a CIDR: {e}"),
                        })
                })
                .collect::<Result<_, _>>()
                .map(Method::Cidr),
            _ => Err(DetectError::UnknownMethod(s.to_string())),
        }
    }
}

fn default_skip() -> Vec<Regex> {
    DEFAULT_SKIP
        .iter()
        .filter_map(|r| Regex::new(r).ok())
        .collect()
}

fn usable(a: &IfAddr) -> bool {
    match a.addr.ip() {
        IpAddr::V4(ip) => {
            !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified() && !ip.is_multicast()
        }
        // Link-local (fe80::/10) is on every interface and routes nowhere.
        IpAddr::V6(ip) => {
            !ip.is_loopback()
                && !ip.is_unspecified()
                && !ip.is_multicast()
                && (ip.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// Picks the node's `family` address from `ifaces` (in the order the
/// kernel lists them). `reach` resolves can-reach targets to the local
/// source address.
pub fn select(
    method: &Method,
    family: Family,
    ifaces: &[IfAddr],
    reach: impl Fn(&str, Family) -> Result<IpAddr, ReachError>,
) -> Result<IfAddr, DetectError> {
    let all = ifaces;
    let ifaces: Vec<IfAddr> = ifaces
        .iter()
        .filter(|a| Family::of(a.addr.ip()) == family)
        .cloned()
        .collect();
    let name = match method {
        Method::FirstFound => "first-found".to_string(),
        Method::CanReach(t) => format!("can-reach={t}"),
        Method::Interface(_) => "interface=".to_string(),
        Method::SkipInterface(_) => "skip-interface=".to_string(),
        Method::Cidr(_) => "cidr=".to_string(),
    };
    let skip = default_skip();
    let found = match method {
        Method::FirstFound => ifaces
            .iter()
            .filter(|a| usable(a))
            .find(|a| !skip.iter().any(|r| r.is_match(&a.interface))),
        Method::SkipInterface(user) => ifaces
            .iter()
            .filter(|a| usable(a))
            .filter(|a| !skip.iter().any(|r| r.is_match(&a.interface)))
            .find(|a| !user.iter().any(|r| r.is_match(&a.interface))),
        Method::Interface(wanted) => wanted.iter().find_map(|r| {
            ifaces
                .iter()
                .filter(|a| usable(a))
                .find(|a| r.is_match(&a.interface))
        }),
        Method::Cidr(cidrs) => ifaces
            .iter()
            .filter(|a| usable(a))
            .find(|a| cidrs.iter().any(|c| c.contains(a.addr.ip()))),
        Method::CanReach(target) => {
            let src = reach(target, family).map_err(|source| DetectError::Unreachable {
                method: name.clone(),
                source,
            })?;
            // A loopback source means no real route to the target.
            ifaces
                .iter()
                .filter(|a| usable(a))
                .find(|a| a.addr.ip() == src)
        }
    };
    found.cloned().ok_or_else(|| DetectError::NotFound {
        family: family.name(),
        var: family.var(),
        method: name,
        seen: all
            .iter()
            .map(|a| format!("{} {}", a.interface, a.addr))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The addresses (IPv4 and IPv6) of this namespace's interfaces, in
/// kernel order.
pub fn interfaces() -> Result<Vec<IfAddr>, DetectError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| DetectError::Io(e.to_string()))?;
    let mut out = Vec::new();
    for a in addrs {
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        let net = if let (Some(addr), Some(mask)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            let prefix = u32::from(mask.ip()).count_ones();
            u8::try_from(prefix)
                .ok()
                .and_then(|p| IpNetwork::new(IpAddr::V4(addr.ip()), p).ok())
        } else if let (Some(addr), Some(mask)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            let prefix = u128::from(mask.ip()).count_ones();
            u8::try_from(prefix)
                .ok()
                .and_then(|p| IpNetwork::new(IpAddr::V6(addr.ip()), p).ok())
        } else {
            None
        };
        if let Some(addr) = net {
            out.push(IfAddr {
                interface: a.interface_name,
                addr,
            });
        }
    }
    Ok(out)
}

/// The source address the kernel picks to reach `target` (an IP or a host
/// name) in `family`. A UDP "connect" sends nothing.
pub fn route_source(target: &str, family: Family) -> Result<IpAddr, ReachError> {
    use std::net::ToSocketAddrs;
    let dest: SocketAddr = match target.parse::<IpAddr>() {
        Ok(ip) if Family::of(ip) == family => SocketAddr::new(ip, 53),
        Ok(_) => return Err(ReachError::NoAddress(target.to_string(), family.name())),
        Err(_) => (target, 53)
            .to_socket_addrs()
            .map_err(|source| ReachError::Resolve {
                target: target.to_string(),
                source,
            })?
            .find(|a| Family::of(a.ip()) == family)
            .ok_or_else(|| ReachError::NoAddress(target.to_string(), family.name()))?,
    };
    let bind = match family {
        Family::V4 => "0.0.0.0:0",
        Family::V6 => "[::]:0",
    };
    let sock = UdpSocket::bind(bind).map_err(ReachError::Socket)?;
    sock.connect(dest)
        .map_err(|source| ReachError::NoRoute { dest, source })?;
    let ip = sock.local_addr().map_err(ReachError::Socket)?.ip();
    if Family::of(ip) == family {
        Ok(ip)
    } else {
        Err(ReachError::WrongFamily)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifs() -> Vec<IfAddr> {
        [
            ("lo", "127.0.0.1/8"),
            ("docker0", "172.17.0.1/16"),
            ("cali1234567890a", "169.254.1.1/32"),
            ("eth0", "10.0.0.5/24"),
            ("eth1", "192.168.50.7/24"),
            ("tunl0", "10.65.0.1/32"),
            ("eth0", "fe80::1/64"),
            ("eth0", "fd00:10::5/64"),
            ("eth1", "2001:db8:50::7/64"),
            ("vxlan-v6.calico", "fd00:65::1/128"),
        ]
        .iter()
        .map(|(i, a)| IfAddr {
            interface: i.to_string(),
            addr: a.parse().unwrap(),
        })
        .collect()
    }

    fn no_reach(_: &str, _: Family) -> Result<IpAddr, ReachError> {
        Err(ReachError::WrongFamily)
    }

    fn pick(m: &str) -> Result<String, DetectError> {
        select(&Method::parse(m).unwrap(), Family::V4, &ifs(), no_reach).map(|a| a.addr.to_string())
    }

    fn pick6(m: &str) -> Result<String, DetectError> {
        select(&Method::parse(m).unwrap(), Family::V6, &ifs(), no_reach).map(|a| a.addr.to_string())
    }

    #[test]
    fn ipv6_methods_pick_within_the_family_past_link_local() {
        assert_eq!(pick6("first-found").unwrap(), "fd00:10::5/64");
        assert_eq!(pick6("interface=eth1").unwrap(), "2001:db8:50::7/64");
        assert_eq!(pick6("skip-interface=eth0").unwrap(), "2001:db8:50::7/64");
        assert_eq!(pick6("cidr=2001:db8::/32").unwrap(), "2001:db8:50::7/64");
        // An IPv4 CIDR finds no IPv6 address, and says IP6.
        let msg = pick6("cidr=10.0.0.0/8").unwrap_err().to_string();
        assert!(
            msg.contains("no IPv6 address") && msg.contains("Set IP6 explicitly"),
            "{msg}"
        );
        let m = Method::parse("can-reach=fd00:10::fe").unwrap();
        let a = select(&m, Family::V6, &ifs(), |t, f| {
            assert_eq!((t, f), ("fd00:10::fe", Family::V6));
            Ok("fd00:10::5".parse().unwrap())
        })
        .unwrap();
        assert_eq!(a.interface, "eth0");
    }

    #[test]
    fn first_found_skips_virtual_interfaces_and_keeps_the_subnet() {
        assert_eq!(pick("first-found").unwrap(), "10.0.0.5/24");
        assert_eq!(pick("").unwrap(), "10.0.0.5/24");
    }

    #[test]
    fn interface_skip_interface_and_cidr() {
        assert_eq!(pick("interface=eth1").unwrap(), "192.168.50.7/24");
        assert_eq!(pick("interface=ens.*,eth.*").unwrap(), "10.0.0.5/24");
        assert_eq!(pick("skip-interface=eth0").unwrap(), "192.168.50.7/24");
        assert_eq!(pick("cidr=192.168.0.0/16").unwrap(), "192.168.50.7/24");
        // Regexes match whole names: "eth" alone matches nothing.
        assert!(matches!(
            pick("interface=eth"),
            Err(DetectError::NotFound { .. })
        ));
    }

    #[test]
    fn can_reach_uses_the_kernels_source_address() {
        let m = Method::parse("can-reach=10.0.0.254").unwrap();
        let a = select(&m, Family::V4, &ifs(), |t, _| {
            assert_eq!(t, "10.0.0.254");
            Ok("10.0.0.5".parse().unwrap())
        })
        .unwrap();
        assert_eq!(a.interface, "eth0");
        let err = select(&m, Family::V4, &ifs(), |_, _| {
            Err(ReachError::NoRoute {
                dest: "10.0.0.254:53".parse().unwrap(),
                source: std::io::Error::other("unreachable"),
            })
        })
        .unwrap_err();
        assert!(err.to_string().contains("no route"), "{err}");
    }

    #[test]
    fn bad_methods_say_what_is_accepted() {
        let err = Method::parse("guess").unwrap_err();
        assert!(err.to_string().contains("first-found"), "{err}");
        assert!(Method::parse("interface=(").is_err());
        assert!(Method::parse("cidr=10.0.0.0/40").is_err());
        assert!(Method::parse("interface=").is_err());
    }

    #[test]
    fn nothing_found_lists_what_was_seen() {
        let err = pick("cidr=203.0.113.0/24").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("eth0 10.0.0.5/24"), "{msg}");
        assert!(msg.contains("Set IP explicitly"), "{msg}");
    }

    #[test]
    fn interfaces_reads_the_real_machine() {
        // Every namespace has at least lo.
        let all = interfaces().unwrap();
        assert!(all.iter().any(|a| a.addr.ip().is_loopback()), "{all:?}");
        // This test's own namespace: loopback answers in both families.
        assert_eq!(
            route_source("127.0.0.1", Family::V4).unwrap(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(route_source("127.0.0.1", Family::V6).is_err());
    }
}
