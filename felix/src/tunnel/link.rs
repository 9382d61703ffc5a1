//! The rtnetlink requests of the tunnel device and of MTU detection, over
//! the `rtnetlink` crate (a handful per reconcile, not a bulk path).

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkIpIp, LinkUnspec};

pub(crate) use crate::workload::link::errno;

/// What felix needs to know of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkState {
    pub index: u32,
    pub name: String,
    pub kind: Option<InfoKind>,
    pub mtu: Option<u32>,
    pub up: bool,
}

fn state_of(msg: &LinkMessage) -> LinkState {
    let mut s = LinkState {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        mtu: None,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Mtu(m) => s.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                s.kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.clone()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    s
}

pub(crate) async fn by_name(h: &Handle, name: &str) -> Result<Option<LinkState>, rtnetlink::Error> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(state_of(&msg))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) async fn by_index(
    h: &Handle,
    index: u32,
) -> Result<Option<LinkState>, rtnetlink::Error> {
    let mut links = h.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(state_of(&msg))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes the TUN device `name` (a persistent one outlives the process
/// that made it); a device of another kind is left alone. Returns whether
/// one was deleted.
pub(crate) async fn delete_tun(h: &Handle, name: &str) -> Result<bool, rtnetlink::Error> {
    let Some(e) = by_name(h, name).await? else {
        return Ok(false);
    };
    if e.kind != Some(InfoKind::Tun) {
        return Ok(false);
    }
    match h.link().del(e.index).execute().await {
        Ok(()) => Ok(true),
        Err(x) if errno(&x) == Some(libc::ENODEV) => Ok(false),
        Err(x) => Err(x),
    }
}

/// `ip link add <name> type ipip` (no local / remote: the catch-all
/// device that takes IP-in-IP from any host).
pub(crate) async fn add_ipip(h: &Handle, name: &str) -> Result<(), rtnetlink::Error> {
    h.link().add(LinkIpIp::new(name).build()).execute().await
}

/// Sets the MTU and brings the link up, in one request.
pub(crate) async fn set_mtu_up(h: &Handle, index: u32, mtu: u32) -> Result<(), rtnetlink::Error> {
    h.link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
        .execute()
        .await
}

/// The IPv4 addresses on a link, with their prefix lengths.
pub(crate) async fn ipv4_addresses(
    h: &Handle,
    index: u32,
) -> Result<Vec<(Ipv4Addr, u8)>, rtnetlink::Error> {
    let mut out = Vec::new();
    let mut addrs = h.address().get().set_link_index_filter(index).execute();
    while let Some(msg) = addrs.try_next().await? {
        if msg.header.index != index {
            continue;
        }
        for a in &msg.attributes {
            if let AddressAttribute::Local(IpAddr::V4(ip))
            | AddressAttribute::Address(IpAddr::V4(ip)) = a
                && !out.iter().any(|(o, _)| o == ip)
            {
                out.push((*ip, msg.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// Makes `addr/32` the link's only IPv4 address (`None`: no address).
/// Returns whether anything changed.
pub(crate) async fn sync_single_address(
    h: &Handle,
    index: u32,
    addr: Option<Ipv4Addr>,
) -> Result<bool, rtnetlink::Error> {
    let have = ipv4_addresses(h, index).await?;
    let mut changed = false;
    for (ip, len) in &have {
        if Some(*ip) == addr && *len == 32 {
            continue;
        }
        let mut get = h
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(*ip))
            .execute();
        while let Some(msg) = get.try_next().await? {
            match h.address().del(msg).execute().await {
                Ok(()) => changed = true,
                Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if let Some(ip) = addr
        && !have.iter().any(|(o, l)| *o == ip && *l == 32)
    {
        match h.address().add(index, IpAddr::V4(ip), 32).execute().await {
            Ok(()) => changed = true,
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(changed)
}

/// The link holding `ip` (the node's underlay interface).
pub(crate) async fn holding_address(
    h: &Handle,
    ip: Ipv4Addr,
) -> Result<Option<LinkState>, rtnetlink::Error> {
    let mut index = None;
    let mut addrs = h.address().get().execute();
    while let Some(msg) = addrs.try_next().await? {
        let holds = msg.attributes.iter().any(|a| {
            matches!(a, AddressAttribute::Local(IpAddr::V4(x)) | AddressAttribute::Address(IpAddr::V4(x)) if *x == ip)
        });
        if holds && index.is_none() {
            index = Some(msg.header.index);
        }
    }
    match index {
        Some(i) => by_index(h, i).await,
        None => Ok(None),
    }
}

/// The routes through device `index` with a gateway, as `block → node`
/// (the remote blocks felix routed through the tunnel before a restart).
pub(crate) async fn gateway_routes_via(
    h: &Handle,
    index: u32,
) -> Result<std::collections::BTreeMap<ipnetwork::Ipv4Network, Ipv4Addr>, rtnetlink::Error> {
    use netlink_packet_route::route::{RouteAddress, RouteAttribute};
    let mut out = std::collections::BTreeMap::new();
    let mut routes = h
        .route()
        .get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(msg) = routes.try_next().await? {
        let (mut dst, mut gw, mut oif) = (None, None, None);
        for a in &msg.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                RouteAttribute::Oif(o) => oif = Some(*o),
                _ => {}
            }
        }
        if oif != Some(index) {
            continue;
        }
        let len = msg.header.destination_prefix_length;
        if let (Some(dst), Some(gw)) = (dst.or((len == 0).then_some(Ipv4Addr::UNSPECIFIED)), gw)
            && let Ok(net) = ipnetwork::Ipv4Network::new(dst, len)
        {
            out.insert(net, gw);
        }
    }
    Ok(out)
}
