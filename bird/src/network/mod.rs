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
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

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
}
