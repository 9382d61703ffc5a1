//! The rtnetlink requests a pod's veth pair needs (links, addresses, the
//! pod's own routes), over the `rtnetlink` crate: these are a handful of
//! requests per pod, not a bulk path. The pod's own routes carry protocol
//! `boot`, the kernel default, as Calico's plugin leaves them.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use netlink_packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// The errno of a netlink error reply, if that is what `e` is.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// Opens an rtnetlink connection in the calling thread's namespace and
/// drives it on the current runtime.
pub(crate) fn connect() -> std::io::Result<(Handle, tokio::task::JoinHandle<()>)> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    Ok((handle, tokio::spawn(conn)))
}

pub(crate) async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) async fn mac_of(h: &Handle, index: u32) -> Result<Option<[u8; 6]>, rtnetlink::Error> {
    let mut links = h.link().get().match_index(index).execute();
    let Some(msg) = links.try_next().await? else {
        return Ok(None);
    };
    Ok(msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
        _ => None,
    }))
}

/// Creates the pair in one request: `host` here, `peer` straight inside the
/// namespace `peer_ns`. Either both ends exist afterwards or neither.
pub(crate) async fn create_veth(
    h: &Handle,
    host: &str,
    host_mac: [u8; 6],
    peer: &str,
    peer_ns: RawFd,
    mtu: u32,
) -> Result<(), rtnetlink::Error> {
    let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_string())
        .mtu(mtu)
        .setns_by_fd(peer_ns)
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .mtu(mtu)
        .address(host_mac.to_vec())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .build();
    h.link().add(msg).execute().await
}

pub(crate) async fn set_up(h: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
}

pub(crate) async fn delete(h: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    h.link().del(index).execute().await
}

/// Deletes the link called `name` if it exists; true if it did.
pub(crate) async fn delete_by_name(h: &Handle, name: &str) -> Result<bool, rtnetlink::Error> {
    let Some(index) = index_of(h, name).await? else {
        return Ok(false);
    };
    match delete(h, index).await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Adds `ip/prefix`; with `nodad` the address is usable at once (IPv6).
pub(crate) async fn add_address(
    h: &Handle,
    index: u32,
    ip: IpAddr,
    prefix: u8,
    nodad: bool,
) -> Result<(), rtnetlink::Error> {
    let mut req = h.address().add(index, ip, prefix);
    if nodad {
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match req.execute().await {
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// `ip route add <dst>/32 dev <index> scope link`.
pub(crate) async fn add_link_route_v4(
    h: &Handle,
    index: u32,
    dst: Ipv4Addr,
) -> Result<(), rtnetlink::Error> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, 32)
        .output_interface(index)
        .scope(RouteScope::Link)
        .protocol(RouteProtocol::Boot)
        .build();
    h.route().add(msg).execute().await
}

/// `ip route add default via <gw> dev <index>`.
pub(crate) async fn add_default_route(
    h: &Handle,
    index: u32,
    gw: IpAddr,
) -> Result<(), rtnetlink::Error> {
    let msg = match gw {
        IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .protocol(RouteProtocol::Boot)
            .build(),
        IpAddr::V6(gw) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .protocol(RouteProtocol::Boot)
            .build(),
    };
    h.route().add(msg).execute().await
}

/// Deletes link `index` over a blocking netlink socket of its own, in the
/// calling thread's namespace; an index already gone is no error. For a
/// thread off the runtime: the kernel does the whole unregistration (two
/// RCU grace periods, 25–40 ms for a veth pair on a busy host) inside the
/// request's `send`, and felix's runtime has one thread.
pub(crate) fn delete_blocking(index: u32) -> std::io::Result<()> {
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
    const HDR: usize = 16;
    const IFINFO: usize = 16;
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    let mut msg = Vec::with_capacity(HDR + IFINFO);
    msg.extend_from_slice(&((HDR + IFINFO) as u32).to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_DELLINK.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]); // family, pad
    msg.extend_from_slice(&0u16.to_ne_bytes()); // device type
    msg.extend_from_slice(&(index as i32).to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // change mask
    sock.send_to(&msg, &SocketAddr::new(0, 0), 0)?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        // One NLMSG_ERROR answers the request: its code, 0 for the ACK.
        if n >= HDR + 4 && u16::from_ne_bytes([buf[4], buf[5]]) == libc::NLMSG_ERROR as u16 {
            let code = i32::from_ne_bytes([buf[HDR], buf[HDR + 1], buf[HDR + 2], buf[HDR + 3]]);
            return match -code {
                0 | libc::ENODEV => Ok(()),
                e => Err(std::io::Error::from_raw_os_error(e)),
            };
        }
    }
}
