//! The only socket code of the crate: BGP's TCP in [`bgp`] (the listener,
//! outgoing connections, TCP-MD5, GTSM) and BFD's UDP in [`bfd`] (the
//! receive sockets that report each datagram's TTL, the sending socket
//! bound to one source port).
//!
//! Options socket2 has are set through it; the few it lacks (`IP_MINTTL`,
//! `IPV6_MINHOPCOUNT`, `IP_RECVTTL`, `TCP_MD5SIG`) go through the one
//! integer `setsockopt` wrapper here, or, for the MD5 key, its own struct.

pub mod bfd;
pub mod bgp;

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};

use ipnetwork::IpNetwork;

pub use bgp::{
    ConnectOpts, connect, listen, listener_ttl_255, prepare_accepted, set_gtsm, set_md5,
};

/// Maps an address to its canonical form: IPv4 peers accepted on a
/// dual-stack listener, and IPv4 datagrams on an IPv6 socket, show up as
/// `::ffff:a.b.c.d`; peers and BFD sessions are keyed by the plain IPv4
/// address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// `setsockopt` of one `c_int`, for the options socket2 does not have.
fn set_int(
    sock: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads one c_int from a valid pointer.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The address in a socket address of `family` (`AF_INET`, `AF_INET6`).
///
/// # Safety
/// `sa` points to a valid socket address at least as large as `family`'s.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr, family: libc::c_int) -> Option<IpAddr> {
    match family {
        libc::AF_INET => {
            // SAFETY: the caller promises a sockaddr_in.
            let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: the caller promises a sockaddr_in6.
            let sin6 = unsafe { &*(sa as *const libc::sockaddr_in6) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// The addresses of this host's interfaces, loopback excepted, each with
/// its prefix length (`10.0.0.2/24`): the node networks of the import
/// policy ([`crate::policy::check_prefix`]) when the configuration does
/// not name them.
pub fn interface_networks() -> io::Result<Vec<IpNetwork>> {
    let mut out: Vec<IpNetwork> = named_interface_networks()?
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// [`interface_networks`] with the name of each address's interface.
pub fn named_interface_networks() -> io::Result<Vec<(String, IpNetwork)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not
        // freed yet.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_flags & libc::IFF_LOOPBACK as libc::c_uint != 0
            || ifa.ifa_addr.is_null()
            || ifa.ifa_netmask.is_null()
        {
            continue;
        }
        // SAFETY: a non-null ifa_addr is a valid sockaddr.
        let family = libc::c_int::from(unsafe { (*ifa.ifa_addr).sa_family });
        // SAFETY: both are valid socket addresses of the interface's
        // address family (the netmask is given in the address's family).
        let (addr, mask) = unsafe {
            (
                sockaddr_ip(ifa.ifa_addr, family),
                sockaddr_ip(ifa.ifa_netmask, family),
            )
        };
        let prefix = match mask {
            Some(IpAddr::V4(m)) => u32::from(m).count_ones(),
            Some(IpAddr::V6(m)) => u128::from(m).count_ones(),
            None => continue,
        };
        if let Some(n) = addr.and_then(|a| IpNetwork::new(a, prefix as u8).ok()) {
            let name = if ifa.ifa_name.is_null() {
                String::new()
            } else {
                // SAFETY: a non-null ifa_name is a NUL-terminated string
                // owned by the list, which lives until freed below.
                unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
                    .to_string_lossy()
                    .into_owned()
            };
            out.push((name, n));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_becomes_plain_ipv4_and_ipv6_stays() {
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(canonical(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn interface_networks_are_the_addresses_with_their_prefixes_without_loopback() {
        let nets = interface_networks().unwrap();
        assert!(nets.iter().all(|n| !n.ip().is_loopback()), "{nets:?}");
        // Each is an address with its prefix, as `ip addr` shows it.
        let shown = std::process::Command::new("ip")
            .args(["-o", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for n in &nets {
            if !shown.is_empty() {
                assert!(shown.contains(&n.to_string()), "{n} not in\n{shown}");
            }
        }
    }
}
