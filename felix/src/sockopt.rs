//! Socket options on felix's own sockets (the userspace tunnel's raw
//! IP-in-IP socket, the route reconciler's netlink sockets): through
//! socket2 where it has the option. [`set_int`] is the one raw
//! `setsockopt(2)`, for the integer options socket2 lacks
//! (`SO_RCVBUFFORCE`, `SO_SNDBUFFORCE`, `IP_MTU_DISCOVER`, `IP_HDRINCL`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use socket2::{SockFilter, SockRef};

fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is open for the borrow; `value` is a live c_int and we
    // pass its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The FORCE variants go past `net.core.rmem_max` / `wmem_max` but need
/// CAP_NET_ADMIN, which felix has; the plain options (capped by those
/// sysctls) are the fallback.
fn forced(size: usize) -> libc::c_int {
    libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX)
}

/// Sets the receive buffer to `size` bytes (see [`forced`]).
pub(crate) fn set_recv_buffer(fd: BorrowedFd<'_>, size: usize) -> io::Result<()> {
    set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, forced(size))
        .or_else(|_| SockRef::from(&fd).set_recv_buffer_size(size))
}

/// Sets the send buffer to `size` bytes (see [`forced`]).
pub(crate) fn set_send_buffer(fd: BorrowedFd<'_>, size: usize) -> io::Result<()> {
    set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, forced(size))
        .or_else(|_| SockRef::from(&fd).set_send_buffer_size(size))
}

/// Path-MTU discovery forced on (`IP_PMTUDISC_DO`): the kernel sets DF and
/// never fragments; a packet too big for the path fails with `EMSGSIZE`.
pub(crate) fn set_never_fragment(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DO,
    )
}

/// The sender writes the IPv4 header itself (`IP_HDRINCL`): the kernel
/// fills in the total length, the checksum, a zero identification and a
/// zero source address, and checks the packet only against the outgoing
/// device's MTU, not a learnt path MTU.
pub(crate) fn set_header_included(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_IP, libc::IP_HDRINCL, 1)
}

/// How long a send may block on a full buffer (`SO_SNDTIMEO`).
pub(crate) fn set_send_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    SockRef::from(&fd).set_write_timeout(Some(timeout))
}

/// Attaches a classic BPF program (`SO_ATTACH_FILTER`).
pub(crate) fn attach_filter(fd: BorrowedFd<'_>, prog: &[SockFilter]) -> io::Result<()> {
    SockRef::from(&fd).attach_filter(prog)
}
