//! The raw `IPPROTO_IPIP` socket of the userspace tunnel.
//!
//! The sender writes the outer header itself ([`outer_header`], sent with
//! `IP_HDRINCL` as a second iovec in front of the inner packet): protocol
//! 4, DF set, so an outer packet is never fragmented; the kernel fills in
//! the length, identification, checksum and this node's underlay address
//! as source. That skips the kernel's generic append path (which copies
//! while summing), the largest per-packet cost of the send that is not
//! the underlay itself. The kernel then checks a packet only against the
//! outgoing device's MTU; a narrower path MTU it learnt is the sender's
//! to check ([`path_mtu`]). Receiving returns whole outer packets, header
//! included. Both directions move batches of packets per system call
//! (`sendmmsg` / `recvmmsg`) into buffers the caller owns.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::sockopt;

pub(crate) struct RawIpip {
    fd: OwnedFd,
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub(crate) fn sockaddr(ip: u32) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: ip.to_be() },
        sin_zero: [0; 8],
    }
}

impl RawIpip {
    /// Opens the socket in the calling thread's network namespace (needs
    /// CAP_NET_RAW).
    pub fn open(buffer: usize) -> io::Result<RawIpip> {
        // SAFETY: plain socket(2); the result is checked.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_IPIP,
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // The outer packet: never fragmented, EMSGSIZE instead (an ICMP
        // "fragmentation needed" from the path also surfaces as one
        // EMSGSIZE on a later send).
        sockopt::set_never_fragment(fd.as_fd())?;
        sockopt::set_header_included(fd.as_fd())?;
        sockopt::set_recv_buffer(fd.as_fd(), buffer)?;
        sockopt::set_send_buffer(fd.as_fd(), buffer)?;
        // A full send buffer blocks at most this long, so shutdown is never
        // stuck behind a wedged underlay.
        sockopt::set_send_timeout(fd.as_fd(), Duration::from_millis(100))?;
        Ok(RawIpip { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// `sendmmsg` of `msgs`; returns how many were sent (a prefix), or the
    /// error of the first one that failed.
    pub fn send_mmsg(&self, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
        let len = u32::try_from(msgs.len()).unwrap_or(u32::MAX);
        // SAFETY: every mmsghdr points at iovecs and sockaddrs the caller
        // keeps alive for the duration of the call.
        let n = unsafe { libc::sendmmsg(self.fd(), msgs.as_mut_ptr(), len, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Non-blocking `recvmmsg` into `msgs`; returns how many arrived (0 when
    /// none is waiting).
    pub fn recv_mmsg(&self, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
        let len = u32::try_from(msgs.len()).unwrap_or(u32::MAX);
        // SAFETY: every mmsghdr points at an iovec over a buffer the caller
        // owns and keeps alive, with its true length.
        let n = unsafe {
            libc::recvmmsg(
                self.fd(),
                msgs.as_mut_ptr(),
                len,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// The outer IPv4 header towards `node` (host order): version 4, header
/// length 20, DF, TTL 64, protocol 4 (IP-in-IP). Length, identification,
/// checksum and source stay zero for the kernel to fill in.
pub(crate) fn outer_header(node: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[6] = 0x40;
    h[8] = 64;
    h[9] = 4;
    h[16..20].copy_from_slice(&node.to_be_bytes());
    h
}

/// The path MTU the kernel currently knows towards `node` (from its route
/// and any ICMP "fragmentation needed" it received), by asking a
/// connected UDP socket. The tunnel asks once a second per node it sends
/// to, and again after an `EMSGSIZE`.
pub(crate) fn path_mtu(node: Ipv4Addr) -> io::Result<u32> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    sock.connect((node, 9))?;
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a live c_int of the size we pass.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&raw mut mtu).cast(),
            &mut len,
        )
    })?;
    u32::try_from(mtu).map_err(io::Error::other)
}

/// An `eventfd` that wakes the tunnel's threads out of `poll` to stop.
pub(crate) struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: plain eventfd(2); the result is checked.
        let raw = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: a fresh descriptor owned by nobody else.
        Ok(Waker {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe {
            libc::write(self.fd(), (&raw const one).cast(), 8);
        }
    }
}

/// Waits until `fd` is readable or `waker` fired, at most `timeout_ms`.
/// Returns true when `fd` is readable.
pub(crate) fn wait_readable(fd: RawFd, waker: &Waker, timeout_ms: i32) -> bool {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: waker.fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: poll over two pollfds we own.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    n > 0 && fds[0].revents & libc::POLLIN != 0
}
