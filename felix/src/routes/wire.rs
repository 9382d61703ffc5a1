//! The rtnetlink wire format for the few messages the route reconciler
//! sends and reads, encoded and parsed by hand.
//!
//! Why not `netlink-packet-route`: a no-change resync reads 100,000 routes,
//! and parsing each into a `RouteMessage` allocates a vector of attributes
//! per route. Here a dump message becomes a [`KernelRoute`] (a `Copy` struct)
//! without allocating, and requests are written straight into one reusable
//! buffer. The unit tests check both directions against
//! `netlink-packet-route`, an independent implementation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use super::{Route, RouteTarget, effective_metric};

pub(crate) const NLMSG_HDRLEN: usize = 16;
const RTMSG_LEN: usize = 12;
const IFINFOMSG_LEN: usize = 16;
const RTA_HDRLEN: usize = 4;

/// A route as the kernel reports it, only the fields felix looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelRoute {
    pub dst: IpNetwork,
    pub table: u32,
    pub protocol: u8,
    pub scope: u8,
    /// `rtm_type`: unicast, blackhole, local, ...
    pub kind: u8,
    /// `rtm_flags` (`RTNH_F_ONLINK`, `RTNH_F_LINKDOWN`, ...).
    pub flags: u32,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
    /// Priority as reported (IPv6 routes always carry one).
    pub metric: u32,
    /// A multipath route (`RTA_MULTIPATH`): the [`fingerprint`] of its
    /// next hops' gateways.
    pub multipath: Option<u64>,
}

impl KernelRoute {
    /// What the kernel will report after felix writes `route` (minus what
    /// the kernel resolves on its own, like a gateway route's interface).
    pub(crate) fn from_desired(route: &Route, table: u32, protocol: u8) -> KernelRoute {
        let (kind, scope, oif, gateway, flags) = route_shape(route);
        KernelRoute {
            dst: route.dst,
            table,
            protocol,
            scope,
            kind,
            flags,
            oif,
            gateway,
            metric: route.effective_metric(),
            multipath: match &route.target {
                RouteTarget::Multipath(hops) => Some(fingerprint(hops.as_slice().iter().copied())),
                _ => None,
            },
        }
    }

    /// The kernel identifies a route by destination and priority (and TOS,
    /// which felix never sets): two routes that agree on these cannot both
    /// exist in a table.
    pub(crate) fn same_slot(&self, route: &Route) -> bool {
        self.dst == route.dst && self.metric == route.effective_metric()
    }
}

/// An order-independent 64-bit digest of a multipath route's gateways:
/// what a dump is compared by without allocating (a sum of one mixed
/// hash per gateway).
pub(crate) fn fingerprint(gateways: impl Iterator<Item = IpAddr>) -> u64 {
    gateways.fold(0u64, |acc, gw| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: &[u8]| {
            for &x in b {
                h = (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        match gw {
            IpAddr::V4(a) => eat(&a.octets()),
            IpAddr::V6(a) => eat(&a.octets()),
        }
        // splitmix64's finaliser, so that the sum mixes well.
        let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        acc.wrapping_add(z ^ (z >> 31))
    })
}

/// The gateways of an `RTA_MULTIPATH` value: a run of `rtnexthop`s
/// (length, flags, hops, ifindex), each followed by its own attributes.
/// Stops at the first malformed entry.
fn multipath_gateways(family: i32, value: &[u8]) -> impl Iterator<Item = IpAddr> + '_ {
    const RTNH_LEN: usize = 8;
    let mut rest = value;
    std::iter::from_fn(move || {
        loop {
            let len = usize::from(u16::from_ne_bytes([*rest.first()?, *rest.get(1)?]));
            if len < RTNH_LEN || len > rest.len() {
                rest = &[];
                return None;
            }
            let attrs = Attrs {
                buf: &rest[RTNH_LEN..len],
            };
            rest = rest.get(align4(len)..).unwrap_or(&[]);
            let gw = attrs
                .filter(|(k, _)| *k == libc::RTA_GATEWAY)
                .find_map(|(_, v)| address(family, v));
            if gw.is_some() {
                return gw;
            }
        }
    })
}

/// `(rtm_type, rtm_scope, oif, gateway, rtm_flags)` for a desired route.
fn route_shape(route: &Route) -> (u8, u8, Option<u32>, Option<IpAddr>, u32) {
    // IPv6 has no route scopes; the kernel reports every route as universe.
    let link_scope = if route.is_ipv6() {
        libc::RT_SCOPE_UNIVERSE
    } else {
        libc::RT_SCOPE_LINK
    };
    match route.target {
        RouteTarget::Blackhole => (libc::RTN_BLACKHOLE, libc::RT_SCOPE_UNIVERSE, None, None, 0),
        // The next hops travel in RTA_MULTIPATH.
        RouteTarget::Multipath(_) => (libc::RTN_UNICAST, libc::RT_SCOPE_UNIVERSE, None, None, 0),
        RouteTarget::Interface(ifindex) => (libc::RTN_UNICAST, link_scope, Some(ifindex), None, 0),
        RouteTarget::Gateway(gw) => (
            libc::RTN_UNICAST,
            libc::RT_SCOPE_UNIVERSE,
            None,
            Some(gw),
            0,
        ),
        RouteTarget::Tunnel {
            dev,
            gateway,
            onlink,
        } => (
            libc::RTN_UNICAST,
            libc::RT_SCOPE_UNIVERSE,
            Some(dev),
            Some(gateway),
            if onlink { super::RTNH_F_ONLINK } else { 0 },
        ),
    }
}

/// One netlink message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NlHeader {
    pub len: u32,
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
}

/// Iterates the netlink messages in one datagram. Stops at the first
/// truncated or malformed header rather than reading past it.
pub(crate) struct Messages<'a> {
    buf: &'a [u8],
}

pub(crate) fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf }
}

impl<'a> Iterator for Messages<'a> {
    type Item = (NlHeader, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let hdr = NlHeader {
            len: u32_at(self.buf, 0),
            kind: u16::from_ne_bytes([self.buf[4], self.buf[5]]),
            flags: u16::from_ne_bytes([self.buf[6], self.buf[7]]),
            seq: u32_at(self.buf, 8),
            pid: u32_at(self.buf, 12),
        };
        let len = hdr.len as usize;
        if len < NLMSG_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let payload = &self.buf[NLMSG_HDRLEN..len];
        self.buf = self.buf.get(align4(len)..).unwrap_or(&[]);
        Some((hdr, payload))
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Iterates `(type, value)` of the route attributes after a fixed header.
struct Attrs<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < RTA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([self.buf[0], self.buf[1]]) as usize;
        // The top two bits are the nested / byte-order flags.
        let kind = u16::from_ne_bytes([self.buf[2], self.buf[3]]) & 0x3fff;
        if len < RTA_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let value = &self.buf[RTA_HDRLEN..len];
        self.buf = self.buf.get(align4(len)..).unwrap_or(&[]);
        Some((kind, value))
    }
}

/// The error code of an `NLMSG_ERROR` payload: 0 for an ACK, else a
/// positive errno.
pub(crate) fn parse_error(payload: &[u8]) -> Option<i32> {
    let raw = i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?);
    Some(-raw)
}

/// Parses the payload of an `RTM_NEWROUTE` / `RTM_DELROUTE`. Returns `None`
/// for families other than IPv4/IPv6 and for malformed messages.
pub(crate) fn parse_route(payload: &[u8]) -> Option<KernelRoute> {
    let hdr = payload.get(..RTMSG_LEN)?;
    let family = i32::from(hdr[0]);
    let dst_len = hdr[1];
    let mut r = KernelRoute {
        dst: unspecified(family, dst_len)?,
        table: u32::from(hdr[4]),
        protocol: hdr[5],
        scope: hdr[6],
        kind: hdr[7],
        flags: u32_at(hdr, 8),
        oif: None,
        gateway: None,
        metric: 0,
        multipath: None,
    };
    let attrs = Attrs {
        buf: &payload[RTMSG_LEN..],
    };
    for (kind, value) in attrs {
        match kind {
            libc::RTA_DST => r.dst = network(family, value, dst_len)?,
            libc::RTA_OIF => r.oif = Some(u32_at(value.get(..4)?, 0)),
            libc::RTA_GATEWAY => r.gateway = Some(address(family, value)?),
            libc::RTA_PRIORITY => r.metric = u32_at(value.get(..4)?, 0),
            libc::RTA_TABLE => r.table = u32_at(value.get(..4)?, 0),
            libc::RTA_MULTIPATH => {
                r.multipath = Some(fingerprint(multipath_gateways(family, value)));
            }
            _ => {}
        }
    }
    Some(r)
}

fn unspecified(family: i32, prefix: u8) -> Option<IpNetwork> {
    match family {
        libc::AF_INET => Ipv4Network::new(Ipv4Addr::UNSPECIFIED, prefix)
            .ok()
            .map(IpNetwork::V4),
        libc::AF_INET6 => Ipv6Network::new(Ipv6Addr::UNSPECIFIED, prefix)
            .ok()
            .map(IpNetwork::V6),
        _ => None,
    }
}

fn address(family: i32, value: &[u8]) -> Option<IpAddr> {
    match family {
        libc::AF_INET => {
            let b: [u8; 4] = value.get(..4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        libc::AF_INET6 => {
            let b: [u8; 16] = value.get(..16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

fn network(family: i32, value: &[u8], prefix: u8) -> Option<IpNetwork> {
    IpNetwork::new(address(family, value)?, prefix).ok()
}

/// A link as an `RTM_NEWLINK` / `RTM_DELLINK` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkInfo<'a> {
    pub index: u32,
    pub flags: u32,
    pub name: &'a str,
}

pub(crate) fn parse_link(payload: &[u8]) -> Option<LinkInfo<'_>> {
    let hdr = payload.get(..IFINFOMSG_LEN)?;
    let index = u32_at(hdr, 4);
    let flags = u32_at(hdr, 8);
    let attrs = Attrs {
        buf: &payload[IFINFOMSG_LEN..],
    };
    for (kind, value) in attrs {
        if kind == libc::IFLA_IFNAME {
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            let name = std::str::from_utf8(&value[..end]).ok()?;
            return Some(LinkInfo { index, flags, name });
        }
    }
    None
}

/// Appends netlink messages to one buffer, patching each length at the end.
pub(crate) struct Encoder<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Encoder<'a> {
    pub fn begin(buf: &'a mut Vec<u8>, kind: u16, flags: u16, seq: u32) -> Encoder<'a> {
        let start = buf.len();
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        // nlmsg_pid 0: the kernel.
        buf.extend_from_slice(&0u32.to_ne_bytes());
        Encoder { buf, start }
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    pub fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = RTA_HDRLEN + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf
            .resize(self.start + align4(self.buf.len() - self.start), 0);
        self
    }

    pub fn u32_attr(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    pub fn addr_attr(&mut self, kind: u16, addr: IpAddr) -> &mut Self {
        match addr {
            IpAddr::V4(a) => self.attr(kind, &a.octets()),
            IpAddr::V6(a) => self.attr(kind, &a.octets()),
        }
    }

    pub fn finish(self) {
        let len = (self.buf.len() - self.start) as u32;
        self.buf[self.start..self.start + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

fn family_of(dst: IpNetwork) -> u8 {
    if dst.is_ipv6() {
        libc::AF_INET6 as u8
    } else {
        libc::AF_INET as u8
    }
}

/// `rtmsg` with the table in the header when it fits (RTA_TABLE carries it
/// in full either way).
#[allow(clippy::too_many_arguments)]
fn rtmsg(
    family: u8,
    dst_len: u8,
    table: u32,
    protocol: u8,
    scope: u8,
    kind: u8,
    flags: u32,
) -> [u8; 12] {
    let t = u8::try_from(table).unwrap_or(libc::RT_TABLE_UNSPEC);
    let f = flags.to_ne_bytes();
    [
        family, dst_len, 0, 0, t, protocol, scope, kind, f[0], f[1], f[2], f[3],
    ]
}

/// Appends an `RTM_NEWROUTE` writing `route`; `nl_flags` says create or
/// replace.
pub(crate) fn encode_new_route(
    buf: &mut Vec<u8>,
    seq: u32,
    nl_flags: u16,
    route: &Route,
    table: u32,
    protocol: u8,
) {
    let (kind, scope, oif, gateway, flags) = route_shape(route);
    let mut e = Encoder::begin(buf, libc::RTM_NEWROUTE, nl_flags, seq);
    e.bytes(&rtmsg(
        family_of(route.dst),
        route.dst.prefix(),
        table,
        protocol,
        scope,
        kind,
        flags,
    ));
    e.u32_attr(libc::RTA_TABLE, table);
    e.addr_attr(libc::RTA_DST, route.dst.network());
    if let Some(oif) = oif {
        e.u32_attr(libc::RTA_OIF, oif);
    }
    if let Some(gw) = gateway {
        e.addr_attr(libc::RTA_GATEWAY, gw);
    }
    if let RouteTarget::Multipath(hops) = &route.target {
        e.attr(libc::RTA_MULTIPATH, &multipath_value(hops.as_slice()));
    }
    let metric = effective_metric(route.dst, route.metric);
    if metric != 0 {
        e.u32_attr(libc::RTA_PRIORITY, metric);
    }
    e.finish();
}

/// The `RTA_MULTIPATH` value for `gateways`: one `rtnexthop` each (equal
/// weights, the kernel picks the interface), carrying its `RTA_GATEWAY`.
fn multipath_value(gateways: &[IpAddr]) -> Vec<u8> {
    let mut v = Vec::with_capacity(gateways.len() * 28);
    for gw in gateways {
        let octets = match gw {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let attr_len = RTA_HDRLEN + octets.len();
        let len = 8 + align4(attr_len);
        v.extend_from_slice(&(len as u16).to_ne_bytes());
        // rtnh_flags 0, rtnh_hops 0 (weight 1), rtnh_ifindex 0 (any).
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&0i32.to_ne_bytes());
        v.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        v.extend_from_slice(&libc::RTA_GATEWAY.to_ne_bytes());
        v.extend_from_slice(&octets);
        v.resize(v.len() + align4(attr_len) - attr_len, 0);
    }
    v
}

/// Appends an `RTM_DELROUTE` for exactly `route` as the kernel reported it.
/// The protocol, type, priority, interface and gateway are all given so the
/// kernel deletes this route and not another in the same slot that someone
/// else wrote in the meantime.
pub(crate) fn encode_del_route(buf: &mut Vec<u8>, seq: u32, nl_flags: u16, route: &KernelRoute) {
    let mut e = Encoder::begin(buf, libc::RTM_DELROUTE, nl_flags, seq);
    e.bytes(&rtmsg(
        family_of(route.dst),
        route.dst.prefix(),
        route.table,
        route.protocol,
        // "Any scope", as `ip route del` sends.
        libc::RT_SCOPE_NOWHERE,
        route.kind,
        0,
    ));
    e.u32_attr(libc::RTA_TABLE, route.table);
    e.addr_attr(libc::RTA_DST, route.dst.network());
    // IPv6 puts blackholes on `lo`; naming it would not match.
    if route.kind == libc::RTN_UNICAST
        && let Some(oif) = route.oif
    {
        e.u32_attr(libc::RTA_OIF, oif);
    }
    if let Some(gw) = route.gateway {
        e.addr_attr(libc::RTA_GATEWAY, gw);
    }
    e.u32_attr(libc::RTA_PRIORITY, route.metric);
    e.finish();
}

/// Appends an `RTM_GETROUTE` dump request for one family and table (the
/// table filter is honoured with `NETLINK_GET_STRICT_CHK`).
pub(crate) fn encode_route_dump(buf: &mut Vec<u8>, seq: u32, family: u8, table: u32) {
    let mut e = Encoder::begin(
        buf,
        libc::RTM_GETROUTE,
        (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
        seq,
    );
    e.bytes(&rtmsg(family, 0, table, 0, 0, 0, 0));
    e.u32_attr(libc::RTA_TABLE, table);
    e.finish();
}

/// Appends an `RTM_GETLINK` dump request.
pub(crate) fn encode_link_dump(buf: &mut Vec<u8>, seq: u32) {
    let mut e = Encoder::begin(
        buf,
        libc::RTM_GETLINK,
        (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
        seq,
    );
    e.bytes(&[0u8; IFINFOMSG_LEN]);
    e.finish();
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{Emitable, Parseable};
    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use netlink_packet_route::route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    };

    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn payload_of(buf: &[u8]) -> (NlHeader, Vec<u8>) {
        let mut it = messages(buf);
        let (h, p) = it.next().unwrap();
        assert!(it.next().is_none());
        (h, p.to_vec())
    }

    fn reference_parse(payload: &[u8]) -> RouteMessage {
        RouteMessage::parse(payload).unwrap()
    }

    #[test]
    fn new_route_via_gateway_encodes_as_netlink_packet_route_reads_it() {
        let mut buf = Vec::new();
        let route = Route::via(net("10.65.0.0/26"), "192.168.1.2".parse().unwrap());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE) as u16;
        encode_new_route(&mut buf, 42, flags, &route, 254, 80);
        let (hdr, payload) = payload_of(&buf);
        assert_eq!(hdr.kind, libc::RTM_NEWROUTE);
        assert_eq!(hdr.seq, 42);
        assert_eq!(hdr.flags, flags);
        let m = reference_parse(&payload);
        assert_eq!(m.header.address_family, AddressFamily::Inet);
        assert_eq!(m.header.destination_prefix_length, 26);
        assert_eq!(m.header.protocol, RouteProtocol::Other(80));
        assert_eq!(m.header.kind, RouteType::Unicast);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert!(m.attributes.contains(&RouteAttribute::Table(254)));
        assert!(
            m.attributes
                .contains(&RouteAttribute::Destination(RouteAddress::Inet(
                    "10.65.0.0".parse().unwrap()
                )))
        );
        assert!(
            m.attributes
                .contains(&RouteAttribute::Gateway(RouteAddress::Inet(
                    "192.168.1.2".parse().unwrap()
                )))
        );
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Priority(_)))
        );
    }

    #[test]
    fn ipv6_interface_route_carries_oif_and_default_metric() {
        let mut buf = Vec::new();
        let route = Route::dev(net("fd00::5/128"), 9);
        encode_new_route(&mut buf, 1, libc::NLM_F_REQUEST as u16, &route, 254, 80);
        let (_, payload) = payload_of(&buf);
        let m = reference_parse(&payload);
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
        assert!(m.attributes.contains(&RouteAttribute::Oif(9)));
        assert!(m.attributes.contains(&RouteAttribute::Priority(1024)));
        // And our own parser reads back what felix's matcher expects.
        let k = parse_route(&payload).unwrap();
        assert!(route.matches(&k), "{k:?}");
    }

    #[test]
    fn every_desired_shape_round_trips_through_our_parser() {
        let routes = [
            Route::blackhole(net("10.64.0.0/26")),
            Route::dev(net("10.64.0.7/32"), 12),
            Route::via(net("10.65.0.0/26"), "172.16.0.9".parse().unwrap()),
            Route {
                dst: net("10.66.0.0/26"),
                target: RouteTarget::Tunnel {
                    dev: 3,
                    gateway: "172.16.0.10".parse().unwrap(),
                    onlink: true,
                },
                metric: 0,
            },
            Route::blackhole(net("fd00:1::/122")),
            Route::via(net("fd00:2::/122"), "fd00:ff::2".parse().unwrap()).with_metric(7),
            Route::via_all(
                net("0.0.0.0/0"),
                "172.16.0.2,172.16.0.1,172.16.1.1".parse().unwrap(),
            ),
            Route::via_all(net("::/0"), "fd00:ff::2,fd00:ff::3".parse().unwrap()),
        ];
        for route in routes {
            let mut buf = Vec::new();
            encode_new_route(&mut buf, 1, 0, &route, 254, 80);
            let (_, payload) = payload_of(&buf);
            let k = parse_route(&payload).unwrap();
            assert!(route.matches(&k), "{route:?} vs {k:?}");
            assert_eq!(k, KernelRoute::from_desired(&route, 254, 80));
        }
    }

    #[test]
    fn multipath_route_encodes_as_netlink_packet_route_reads_it_and_compares_by_its_set() {
        use netlink_packet_route::route::RouteNextHop;
        let route = Route::via_all(net("198.51.100.0/24"), "10.0.0.3,10.0.0.2".parse().unwrap());
        let mut buf = Vec::new();
        encode_new_route(&mut buf, 1, 0, &route, 254, 80);
        let (_, payload) = payload_of(&buf);
        let m = reference_parse(&payload);
        let hops: Vec<&RouteNextHop> = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::MultiPath(h) => Some(h.iter().collect()),
                _ => None,
            })
            .unwrap();
        let gateways: Vec<String> = hops
            .iter()
            .flat_map(|h| h.attributes.iter())
            .filter_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(g.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(gateways, ["10.0.0.2", "10.0.0.3"]);
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Gateway(_)))
        );

        // The kernel may list the next hops in another order: the same
        // set matches; another set, a plain route or a subset does not.
        let mut k = parse_route(&payload).unwrap();
        let other = |hops: &str| Route::via_all(net("198.51.100.0/24"), hops.parse().unwrap());
        k.multipath = Some(fingerprint(
            ["10.0.0.3", "10.0.0.2"].iter().map(|a| a.parse().unwrap()),
        ));
        assert!(route.matches(&k));
        assert!(!other("10.0.0.2,10.0.0.4").matches(&k));
        assert!(!other("10.0.0.2").matches(&k));
        assert!(!other("10.0.0.2,10.0.0.3,10.0.0.4").matches(&k));
        let plain = parse_route(&{
            let mut b = Vec::new();
            encode_new_route(&mut b, 1, 0, &other("10.0.0.2"), 254, 80);
            payload_of(&b).1
        })
        .unwrap();
        assert!(!route.matches(&plain));
        assert!(Route::via(net("198.51.100.0/24"), "10.0.0.2".parse().unwrap()).matches(&plain));
    }

    #[test]
    fn kernel_style_message_from_reference_encoder_parses_without_allocation() {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet6;
        m.header.destination_prefix_length = 122;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Other(80);
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::BlackHole;
        m.attributes = vec![
            RouteAttribute::Table(254),
            RouteAttribute::Destination(RouteAddress::Inet6("fd00:1::".parse().unwrap())),
            RouteAttribute::Priority(1024),
            RouteAttribute::Oif(1),
        ];
        let mut payload = vec![0u8; m.buffer_len()];
        m.emit(&mut payload);
        let k = parse_route(&payload).unwrap();
        assert_eq!(k.dst, net("fd00:1::/122"));
        assert_eq!(k.kind, libc::RTN_BLACKHOLE);
        assert_eq!(k.metric, 1024);
        assert_eq!(k.oif, Some(1));
        assert_eq!(k.protocol, 80);
    }

    #[test]
    fn delete_names_protocol_type_and_metric() {
        let mut k = KernelRoute::from_desired(&Route::blackhole(net("10.64.0.0/26")), 254, 80);
        k.protocol = 3;
        let mut buf = Vec::new();
        encode_del_route(&mut buf, 5, libc::NLM_F_REQUEST as u16, &k);
        let (hdr, payload) = payload_of(&buf);
        assert_eq!(hdr.kind, libc::RTM_DELROUTE);
        let m = reference_parse(&payload);
        assert_eq!(m.header.protocol, RouteProtocol::Boot);
        assert_eq!(m.header.kind, RouteType::BlackHole);
        assert!(m.attributes.contains(&RouteAttribute::Priority(0)));
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(_)))
        );
    }

    #[test]
    fn link_name_is_read_from_ifla_ifname() {
        let mut m = LinkMessage::default();
        m.header.index = 17;
        m.attributes = vec![
            LinkAttribute::Mtu(1500),
            LinkAttribute::IfName("cali0123456789a".into()),
        ];
        let mut payload = vec![0u8; m.buffer_len()];
        m.emit(&mut payload);
        let _ = LinkMessage::parse(&payload[..]).unwrap();
        let l = parse_link(&payload).unwrap();
        assert_eq!(l.index, 17);
        assert_eq!(l.name, "cali0123456789a");
    }

    #[test]
    fn truncated_messages_and_attributes_stop_the_iterators() {
        let mut buf = Vec::new();
        encode_new_route(
            &mut buf,
            1,
            0,
            &Route::blackhole(net("10.0.0.0/8")),
            254,
            80,
        );
        // Claim more than is there.
        let mut bad = buf.clone();
        bad[0] = 200;
        assert!(messages(&bad).next().is_none());
        // An attribute cut in half is ignored, not read past.
        let (_, payload) = payload_of(&buf);
        let cut = &payload[..payload.len() - 2];
        let k = parse_route(cut).unwrap();
        assert_eq!(k.dst.prefix(), 8);
        assert!(parse_route(&payload[..5]).is_none());
    }

    #[test]
    fn ack_and_error_codes() {
        assert_eq!(parse_error(&0i32.to_ne_bytes()), Some(0));
        assert_eq!(
            parse_error(&(-libc::EEXIST).to_ne_bytes()),
            Some(libc::EEXIST)
        );
        assert_eq!(parse_error(&[1, 2]), None);
    }
}
