//! BGP's sockets: the listener, outgoing connections, TCP-MD5 (RFC 2385)
//! and GTSM (RFC 5082).
//!
//! Both options must be on the socket before the handshake: an MD5 key
//! signs the SYN, and a listener without the key drops a signed SYN (and
//! vice versa), which is how a wrong password shows: no session, no error
//! on the wire. GTSM sends every segment with TTL 255 and sets the minimum
//! accepted TTL to 255 (`IP_MINTTL` / `IPV6_MINHOPCOUNT`), so only a
//! directly connected peer gets through.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::{canonical, set_int};

/// Linux `struct tcp_md5sig` (include/uapi/linux/tcp.h).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; 80],
}

fn sockaddr_for(peer: IpAddr, v6_socket: bool) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let peer = canonical(peer);
    match (peer, v6_socket) {
        (IpAddr::V4(v4), false) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for
            // sockaddr_in.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
        }
        (ip, _) => {
            // An IPv4 peer on an IPv6 socket is keyed by its mapped address.
            let v6: Ipv6Addr = match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
        }
    }
    ss
}

/// Installs (or, with `None`, removes) the TCP-MD5 key for `peer` on a
/// listening or connecting socket.
pub fn set_md5(
    sock: &impl AsFd,
    peer: IpAddr,
    key: Option<&[u8]>,
    v6_socket: bool,
) -> io::Result<()> {
    let key = key.unwrap_or_default();
    if key.len() > 80 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP-MD5 key is longer than 80 bytes",
        ));
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr_for(peer, v6_socket),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; 80],
    };
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: setsockopt reads size_of::<TcpMd5Sig>() bytes from a valid,
    // initialised struct with the kernel's layout.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            &sig as *const TcpMd5Sig as *const libc::c_void,
            size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// GTSM on a socket talking to `peer` at most `hops` hops away: send with
/// TTL (hop limit) 255 and drop anything that arrives with less than
/// `256 - hops` (RFC 5082 section 3).
pub fn set_gtsm(sock: &impl AsFd, peer: IpAddr, hops: u8) -> io::Result<()> {
    let min = 256 - libc::c_int::from(hops.max(1));
    match canonical(peer) {
        // The IPPROTO_IP options also govern IPv4 traffic on a dual-stack
        // IPv6 socket.
        IpAddr::V4(_) => {
            SockRef::from(sock).set_ttl_v4(255)?;
            set_int(sock, libc::IPPROTO_IP, libc::IP_MINTTL, min)
        }
        IpAddr::V6(_) => {
            SockRef::from(sock).set_unicast_hops_v6(255)?;
            set_int(sock, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, min)
        }
    }
}

/// Sends with TTL (and, on an IPv6 socket, hop limit) 255.
fn send_ttl_255(sock: SockRef<'_>, v6: bool) -> io::Result<()> {
    sock.set_ttl_v4(255)?;
    if v6 {
        sock.set_unicast_hops_v6(255)?;
    }
    Ok(())
}

/// Makes a listener answer SYNs with TTL 255, for GTSM peers (see
/// [`listen`]); used when such a peer is added to a running speaker.
pub fn listener_ttl_255(l: &TcpListener) -> io::Result<()> {
    send_ttl_255(SockRef::from(l), l.local_addr().is_ok_and(|a| a.is_ipv6()))
}

/// Binds the BGP listener with the MD5 keys of every peer that has one.
/// `[::]` listens dual-stack. With `ttl_255` (some peer uses GTSM) the
/// listener answers SYNs with TTL 255, or a GTSM peer's minimum-TTL check
/// would drop our SYN-ACK; the minimum TTL itself is set per accepted
/// connection, only for the peers that asked for it.
pub fn listen(
    addr: SocketAddr,
    md5: &[(IpAddr, Vec<u8>)],
    ttl_255: bool,
) -> io::Result<TcpListener> {
    let domain = Domain::for_address(addr);
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(false)?;
    }
    for (peer, key) in md5 {
        set_md5(&sock, *peer, Some(key), addr.is_ipv6())?;
    }
    if ttl_255 {
        send_ttl_255(SockRef::from(&sock), addr.is_ipv6())?;
    }
    sock.bind(&addr.into())?;
    sock.listen(128)?;
    sock.set_nonblocking(true)?;
    TcpListener::from_std(sock.into())
}

/// Options for an outgoing connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectOpts {
    pub local: Option<IpAddr>,
    pub md5: Option<Vec<u8>>,
    /// GTSM with this many hops.
    pub gtsm: Option<u8>,
}

/// Connects to `peer` with MD5 and GTSM set before the SYN goes out.
pub async fn connect(peer: SocketAddr, opts: &ConnectOpts) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(key) = &opts.md5 {
        set_md5(&sock, peer.ip(), Some(key), peer.is_ipv6())?;
    }
    if let Some(hops) = opts.gtsm {
        set_gtsm(&sock, peer.ip(), hops)?;
    }
    sock.set_tcp_nodelay(true)?;
    if let Some(local) = opts.local {
        sock.bind(&SocketAddr::new(local, 0).into())?;
    }
    sock.set_nonblocking(true)?;
    let std_stream: std::net::TcpStream = sock.into();
    TcpSocket::from_std_stream(std_stream).connect(peer).await
}

/// Applies per-peer options to a connection the listener accepted.
pub fn prepare_accepted(stream: &TcpStream, peer: IpAddr, gtsm: Option<u8>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if let Some(hops) = gtsm {
        set_gtsm(stream, peer, hops)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_struct_matches_the_kernel_layout() {
        // 128 (sockaddr_storage) + 1 + 1 + 2 + 4 + 80.
        assert_eq!(size_of::<TcpMd5Sig>(), 216);
    }

    #[tokio::test]
    async fn md5_and_gtsm_options_are_accepted_by_the_kernel() {
        let l = listen(
            "127.0.0.1:0".parse().unwrap(),
            &[("127.0.0.1".parse().unwrap(), b"k".to_vec())],
            true,
        )
        .unwrap();
        let addr = l.local_addr().unwrap();
        let opts = ConnectOpts {
            local: None,
            md5: Some(b"k".to_vec()),
            gtsm: Some(1),
        };
        let both = async { tokio::join!(connect(addr, &opts), l.accept()) };
        let (c, a) = tokio::time::timeout(std::time::Duration::from_secs(10), both)
            .await
            .expect("GTSM handshake on loopback timed out");
        let c = c.unwrap();
        let (s, peer) = a.unwrap();
        prepare_accepted(&s, peer.ip(), Some(1)).unwrap();
        listener_ttl_255(&l).unwrap();
        drop(c);
    }

    #[test]
    fn v4_peer_on_v6_socket_uses_the_mapped_address() {
        let ss = sockaddr_for("10.1.2.3".parse().unwrap(), true);
        assert_eq!(ss.ss_family, libc::AF_INET6 as libc::sa_family_t);
        let ss = sockaddr_for("::ffff:10.1.2.3".parse().unwrap(), false);
        assert_eq!(ss.ss_family, libc::AF_INET as libc::sa_family_t);
    }
}
