//! Routes: the model felix programs, who owns what, and the reconciler that
//! keeps the kernel's routing table equal to the desired state.
//!
//! - [`Route`] / [`RouteTarget`]: one desired route per destination prefix.
//! - [`OwnershipPolicy`]: which kernel routes felix may delete or replace
//!   (its own protocol number, or any route on a pod interface).
//! - [`delta`]: the pure desired-vs-kernel tracker; no I/O.
//! - `netlink`: the only code that talks rtnetlink for routes (batched
//!   writes, dumps, the event subscription).
//! - [`reconciler`]: the task tying them together, with its resync timer.

pub mod delta;
mod fasthash;
mod netlink;
pub mod reconciler;
mod task;
mod wire;

use std::net::IpAddr;

use ipnetwork::IpNetwork;
pub use proto::routes_client::NextHops;

pub use reconciler::{
    ApplyFailure, ApplyReport, Reconciler, ReconcilerConfig, ReconcilerStatus, RouteError,
    RouteHandle,
};
pub use wire::KernelRoute;

/// The route protocol felix writes (`proto 80` in `ip route`), the same
/// number Calico's felix uses, so an operator can tell our routes apart.
pub const FELIX_PROTOCOL: u8 = 80;

/// The kernel's main routing table.
pub const MAIN_TABLE: u32 = libc::RT_TABLE_MAIN as u32;

/// The default metric the kernel gives an IPv6 route added without one. An
/// IPv4 route keeps metric 0. Comparisons normalise through this so a
/// desired metric of 0 matches what the kernel reports back.
const IPV6_DEFAULT_METRIC: u32 = 1024;

/// `RTNH_F_ONLINK` from `<linux/rtnetlink.h>` (not in the libc crate).
pub(crate) const RTNH_F_ONLINK: u32 = 4;

/// Where packets for a destination go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// Dropped (`blackhole <block>`): the blocks this node owns, so traffic
    /// to an unallocated address in them does not leak out of the default
    /// route.
    Blackhole,
    /// Directly on a link (`<pod ip> dev caliXXX scope link`).
    Interface(u32),
    /// Via a next hop on a connected subnet (`<block> via <node ip>`).
    Gateway(IpAddr),
    /// Via a next hop through a tunnel device (`via <node> dev tunl0
    /// onlink`): remote blocks of IP-in-IP pools. `onlink` because the
    /// node's address is not on the tunnel's subnet.
    Tunnel {
        dev: u32,
        gateway: IpAddr,
        onlink: bool,
    },
    /// Via several next hops on connected subnets at once (`nexthop via A
    /// nexthop via B`, equal weights): a prefix learned over BGP with
    /// equal best paths from more than one router (ECMP), two ToRs
    /// advertising one prefix, say. Two or more, sorted.
    Multipath(NextHops),
}

/// One desired route. Felix keeps at most one per destination prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub dst: IpNetwork,
    pub target: RouteTarget,
    /// Route priority; 0 means the kernel default (0 for IPv4, 1024 for
    /// IPv6).
    pub metric: u32,
}

/// Who desires a route. Felix keeps one route per prefix; when two
/// callers want the same prefix the higher layer wins, and each caller's
/// removal only takes back its own wish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// Block routes: this node's blackholes and the routes learned from
    /// BGP (the dataplane task).
    Blocks,
    /// A local pod's `/32 dev caliXXX`: always wins over a learned route
    /// for the same prefix, so a BGP peer can neither hijack a local pod's
    /// address nor delete its route by withdrawing one.
    Workload,
}

/// A change to the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteUpdate {
    Set(Route),
    Remove(IpNetwork),
}

/// A route that cannot be programmed as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRoute {
    #[error(
        "{dst} has host bits set; give the network address ({network}/{prefix})",
        network = dst.network(),
        prefix = dst.prefix()
    )]
    HostBits { dst: IpNetwork },
    #[error("route to {dst} has next hop {gateway} of the other address family")]
    FamilyMismatch { dst: IpNetwork, gateway: IpAddr },
}

impl Route {
    pub fn blackhole(dst: IpNetwork) -> Route {
        Route {
            dst,
            target: RouteTarget::Blackhole,
            metric: 0,
        }
    }

    pub fn via(dst: IpNetwork, gateway: IpAddr) -> Route {
        Route {
            dst,
            target: RouteTarget::Gateway(gateway),
            metric: 0,
        }
    }

    /// Via every next hop of `hops`: a plain gateway route for one, a
    /// multipath route for more.
    pub fn via_all(dst: IpNetwork, hops: NextHops) -> Route {
        if hops.is_ecmp() {
            Route {
                dst,
                target: RouteTarget::Multipath(hops),
                metric: 0,
            }
        } else {
            Route::via(dst, hops.first())
        }
    }

    pub fn dev(dst: IpNetwork, ifindex: u32) -> Route {
        Route {
            dst,
            target: RouteTarget::Interface(ifindex),
            metric: 0,
        }
    }

    pub fn with_metric(&self, metric: u32) -> Route {
        Route {
            metric,
            ..self.clone()
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// The metric the kernel will report for this route.
    pub fn effective_metric(&self) -> u32 {
        effective_metric(self.dst, self.metric)
    }

    /// Checks what the kernel would reject with a less helpful EINVAL.
    pub fn validate(&self) -> Result<(), InvalidRoute> {
        if self.dst.network() != self.dst.ip() {
            return Err(InvalidRoute::HostBits { dst: self.dst });
        }
        let gateways: &[IpAddr] = match &self.target {
            RouteTarget::Gateway(gw) | RouteTarget::Tunnel { gateway: gw, .. } => {
                std::slice::from_ref(gw)
            }
            RouteTarget::Multipath(hops) => hops.as_slice(),
            RouteTarget::Blackhole | RouteTarget::Interface(_) => &[],
        };
        match gateways
            .iter()
            .find(|gw| gw.is_ipv6() != self.dst.is_ipv6())
        {
            Some(&gateway) => Err(InvalidRoute::FamilyMismatch {
                dst: self.dst,
                gateway,
            }),
            None => Ok(()),
        }
    }

    /// Whether a route read from the kernel is this route as felix would
    /// have written it. Only what felix sets is compared: the kernel fills
    /// in the out interface of a gateway route and puts IPv6 blackholes on
    /// `lo`, and neither makes the route different.
    pub fn matches(&self, k: &KernelRoute) -> bool {
        if k.dst != self.dst || k.protocol != FELIX_PROTOCOL || k.metric != self.effective_metric()
        {
            return false;
        }
        if let RouteTarget::Multipath(hops) = &self.target {
            return k.kind == libc::RTN_UNICAST
                && k.multipath == Some(wire::fingerprint(hops.as_slice().iter().copied()));
        }
        if k.multipath.is_some() {
            return false;
        }
        let v4 = !self.is_ipv6();
        let onlink = k.flags & RTNH_F_ONLINK != 0;
        match self.target {
            RouteTarget::Multipath(_) => false,
            RouteTarget::Blackhole => k.kind == libc::RTN_BLACKHOLE,
            RouteTarget::Interface(ifindex) => {
                k.kind == libc::RTN_UNICAST
                    && k.oif == Some(ifindex)
                    && k.gateway.is_none()
                    && (!v4 || k.scope == libc::RT_SCOPE_LINK)
            }
            RouteTarget::Gateway(gw) => {
                k.kind == libc::RTN_UNICAST
                    && k.gateway == Some(gw)
                    && !onlink
                    && (!v4 || k.scope == libc::RT_SCOPE_UNIVERSE)
            }
            RouteTarget::Tunnel {
                dev,
                gateway,
                onlink: want_onlink,
            } => {
                k.kind == libc::RTN_UNICAST
                    && k.oif == Some(dev)
                    && k.gateway == Some(gateway)
                    && onlink == want_onlink
            }
        }
    }
}

pub(crate) fn effective_metric(dst: IpNetwork, metric: u32) -> u32 {
    if metric == 0 && dst.is_ipv6() {
        IPV6_DEFAULT_METRIC
    } else {
        metric
    }
}

/// Which kernel routes felix may change. Modelled on Calico's: a route is
/// felix's if it carries felix's protocol number, or if it leaves through a
/// pod interface (whatever wrote it: the CNI plugin of an older version, an
/// operator). Everything else (other protocols on other interfaces, kernel
/// routes, IPv6 link-local routes, other tables) is never touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnershipPolicy {
    pub protocol: u8,
    pub table: u32,
    /// Name prefixes of pod interfaces (`cali`).
    pub iface_prefixes: Vec<String>,
}

impl Default for OwnershipPolicy {
    fn default() -> Self {
        OwnershipPolicy {
            protocol: FELIX_PROTOCOL,
            table: MAIN_TABLE,
            iface_prefixes: vec!["cali".to_string()],
        }
    }
}

impl OwnershipPolicy {
    pub fn is_workload_iface(&self, name: &str) -> bool {
        self.iface_prefixes.iter().any(|p| name.starts_with(p))
    }

    /// Whether felix owns `route`; `iface` is the name of its out
    /// interface, if it has one felix knows.
    pub fn owns(&self, route: &KernelRoute, iface: Option<&str>) -> bool {
        if route.table != self.table
            || route.protocol == libc::RTPROT_KERNEL
            || is_ipv6_link_local(route.dst)
            || !matches!(
                route.kind,
                libc::RTN_UNICAST
                    | libc::RTN_BLACKHOLE
                    | libc::RTN_UNREACHABLE
                    | libc::RTN_PROHIBIT
            )
        {
            return false;
        }
        route.protocol == self.protocol || iface.is_some_and(|n| self.is_workload_iface(n))
    }
}

fn is_ipv6_link_local(dst: IpNetwork) -> bool {
    match dst {
        IpNetwork::V6(n) => n.ip().segments()[0] & 0xffc0 == 0xfe80,
        IpNetwork::V4(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn kernel(dst: &str) -> KernelRoute {
        KernelRoute {
            dst: net(dst),
            table: MAIN_TABLE,
            protocol: FELIX_PROTOCOL,
            scope: libc::RT_SCOPE_UNIVERSE,
            kind: libc::RTN_UNICAST,
            flags: 0,
            oif: None,
            gateway: None,
            metric: 0,
            multipath: None,
        }
    }

    #[test]
    fn host_bits_are_rejected_with_the_network_to_use() {
        let err = Route::blackhole(net("10.0.0.5/26")).validate().unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/26"), "{err}");
    }

    #[test]
    fn gateway_of_other_family_is_rejected() {
        let r = Route::via(net("fd00::/64"), "10.0.0.1".parse().unwrap());
        assert!(matches!(
            r.validate(),
            Err(InvalidRoute::FamilyMismatch { .. })
        ));
    }

    #[test]
    fn gateway_route_matches_whatever_oif_the_kernel_resolved() {
        let mut k = kernel("10.1.0.0/26");
        k.gateway = Some("192.168.0.2".parse().unwrap());
        k.oif = Some(7);
        assert!(Route::via(net("10.1.0.0/26"), "192.168.0.2".parse().unwrap()).matches(&k));
        assert!(!Route::via(net("10.1.0.0/26"), "192.168.0.3".parse().unwrap()).matches(&k));
    }

    #[test]
    fn ipv6_blackhole_on_lo_with_default_metric_matches() {
        let mut k = kernel("fd00:1::/122");
        k.kind = libc::RTN_BLACKHOLE;
        k.oif = Some(1);
        k.metric = 1024;
        assert!(Route::blackhole(net("fd00:1::/122")).matches(&k));
    }

    #[test]
    fn route_of_another_protocol_never_matches() {
        let mut k = kernel("10.1.0.0/26");
        k.kind = libc::RTN_BLACKHOLE;
        k.protocol = libc::RTPROT_STATIC;
        assert!(!Route::blackhole(net("10.1.0.0/26")).matches(&k));
    }

    #[test]
    fn interface_route_needs_link_scope_on_ipv4() {
        let mut k = kernel("10.1.0.5/32");
        k.oif = Some(4);
        assert!(!Route::dev(net("10.1.0.5/32"), 4).matches(&k));
        k.scope = libc::RT_SCOPE_LINK;
        assert!(Route::dev(net("10.1.0.5/32"), 4).matches(&k));
    }

    #[test]
    fn ownership_is_protocol_or_pod_interface_never_kernel_or_link_local() {
        let p = OwnershipPolicy::default();
        let mut k = kernel("10.1.0.0/26");
        assert!(p.owns(&k, None));
        k.protocol = libc::RTPROT_BOOT;
        assert!(!p.owns(&k, None));
        assert!(!p.owns(&k, Some("eth0")));
        assert!(p.owns(&k, Some("cali12345678901")));
        k.protocol = libc::RTPROT_KERNEL;
        assert!(!p.owns(&k, Some("cali12345678901")));
        let mut ll = kernel("fe80::/64");
        ll.protocol = libc::RTPROT_BOOT;
        assert!(!p.owns(&ll, Some("cali12345678901")));
        let mut other_table = kernel("10.1.0.0/26");
        other_table.table = 100;
        assert!(!p.owns(&other_table, None));
    }
}
