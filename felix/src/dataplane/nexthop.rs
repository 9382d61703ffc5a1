//! Recursive next-hop resolution's one piece of I/O: the kernel's route
//! to a BGP next hop (`ip route get <next hop>`), and its gateway when the
//! next hop is not on a connected subnet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteType, RouteVia};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::workload::link::errno;

/// The gateway of the kernel's route to `hop`; `None` when `hop` is on a
/// connected subnet (or local, or unreachable: nothing to resolve it to).
pub(super) async fn gateway_to(
    nl: &Handle,
    hop: IpAddr,
) -> Result<Option<IpAddr>, rtnetlink::Error> {
    let msg = match hop {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(a, 32)
            .build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(a, 128)
            .build(),
    };
    let mut replies = nl.route().get(msg).execute();
    let mut via = None;
    loop {
        let reply = match replies.try_next().await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            // No route at all: the route through it is refused either way.
            Err(e)
                if matches!(
                    errno(&e),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN)
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if reply.header.kind != RouteType::Unicast {
            continue;
        }
        for a in &reply.attributes {
            let gw = match a {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => IpAddr::V4(*g),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => IpAddr::V6(*g),
                RouteAttribute::Via(RouteVia::Inet(g)) => IpAddr::V4(*g),
                RouteAttribute::Via(RouteVia::Inet6(g)) => IpAddr::V6(*g),
                _ => continue,
            };
            if gw != hop && gw.is_ipv4() == hop.is_ipv4() {
                via = Some(gw);
            }
        }
    }
    Ok(via)
}
