//! BFD's sockets (see [`crate::bfd`]): per address family, one receiving
//! socket for single-hop packets, one for multihop, both reporting each
//! datagram's TTL (RFC 5881 checks it is 255), and one sending socket
//! bound to a single source port.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::set_int;

/// The receiving sockets (single hop, multihop) and the sending socket of
/// one address family.
pub struct Sockets {
    pub rx: UdpSocket,
    pub rx_multihop: UdpSocket,
    pub tx: UdpSocket,
}

/// The unspecified address and the socket domain of one family.
fn family(v6: bool) -> (IpAddr, Domain) {
    if v6 {
        (Ipv6Addr::UNSPECIFIED.into(), Domain::IPV6)
    } else {
        (Ipv4Addr::UNSPECIFIED.into(), Domain::IPV4)
    }
}

fn rx_socket(v6: bool, port: u16) -> io::Result<UdpSocket> {
    let (any, domain) = family(v6);
    let rx = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if v6 {
        rx.set_only_v6(true)?;
        rx.set_recv_hoplimit_v6(true)?;
    } else {
        set_int(&rx, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?;
    }
    rx.set_reuse_address(true)?;
    rx.set_nonblocking(true)?;
    rx.bind(&SocketAddr::new(any, port).into())?;
    UdpSocket::from_std(rx.into())
}

impl Sockets {
    /// Binds the sockets of one family: receiving on `port` and
    /// `multihop_port` on every address, sending from a free port in
    /// 49152-65535, searched from a point that `seed` picks.
    pub fn bind(v6: bool, port: u16, multihop_port: u16, seed: u32) -> io::Result<Sockets> {
        let (any, domain) = family(v6);
        let rx = rx_socket(v6, port)?;
        let rx_multihop = rx_socket(v6, multihop_port)?;

        // RFC 5881 section 4: one source port in 49152-65535, TTL 255.
        let tx = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if v6 {
            tx.set_only_v6(true)?;
            tx.set_unicast_hops_v6(255)?;
        } else {
            tx.set_ttl_v4(255)?;
        }
        tx.set_nonblocking(true)?;
        let start = (seed % 16384) as u16;
        let mut bound = Err(io::Error::other("no free source port in 49152-65535"));
        for i in 0..16384u16 {
            let p = 49152 + (start + i) % 16384;
            match tx.bind(&SocketAddr::new(any, p).into()) {
                Ok(()) => {
                    bound = Ok(());
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    bound = Err(e);
                    break;
                }
            }
        }
        bound?;
        let tx = UdpSocket::from_std(tx.into())?;
        Ok(Sockets {
            rx,
            rx_multihop,
            tx,
        })
    }
}

/// One datagram and the TTL / hop limit it arrived with.
pub fn recv_with_ttl(fd: i32, buf: &mut [u8]) -> io::Result<(usize, IpAddr, Option<u8>)> {
    // SAFETY: every pointer handed to recvmsg points into a live local of
    // the size given; the control messages are walked with the CMSG
    // macros within msg_controllen, and the address is read according to
    // the family the kernel wrote.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ttl = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if (h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_TTL)
                || (h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_HOPLIMIT)
            {
                let v: i32 = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                ttl = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        let ip = match i32::from(addr.ss_family) {
            libc::AF_INET => {
                let a: libc::sockaddr_in =
                    std::ptr::read_unaligned((&addr as *const libc::sockaddr_storage).cast());
                IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                let a: libc::sockaddr_in6 =
                    std::ptr::read_unaligned((&addr as *const libc::sockaddr_storage).cast());
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr))
            }
            _ => return Err(io::Error::other("datagram without a source address")),
        };
        Ok((n as usize, ip, ttl))
    }
}

/// Waits for the next datagram on `s`, with its TTL.
pub async fn recv(s: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, IpAddr, Option<u8>)> {
    loop {
        s.readable().await?;
        match s.try_io(Interest::READABLE, || recv_with_ttl(s.as_raw_fd(), buf)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

/// [`recv`] on a socket that may not exist (no IPv6): then never.
pub async fn recv_opt(
    s: Option<&UdpSocket>,
    buf: &mut [u8],
) -> io::Result<(usize, IpAddr, Option<u8>)> {
    match s {
        Some(s) => recv(s, buf).await,
        None => std::future::pending().await,
    }
}
