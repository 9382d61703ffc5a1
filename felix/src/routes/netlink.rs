//! The only route netlink I/O felix does: batched, pipelined writes; table
//! dumps; and the event subscription that triggers resyncs.
//!
//! Writes: many `RTM_NEWROUTE` / `RTM_DELROUTE` messages go into one
//! `sendmsg`, each with its own sequence number. The kernel handles a
//! netlink request in the sender's system call, in order, and answers every
//! failed message with an error carrying its sequence number whether or not
//! `NLM_F_ACK` was asked for. So only the last message of a batch asks for
//! an ACK: once that arrives, every error of the batch has arrived before
//! it, and the messages without one succeeded. (Asking an ACK of every
//! message costs a socket wake-up per route: 0.9 s instead of 0.55 s for
//! 100,000 routes, see BENCHMARKS.md.) If the receive buffer overflows
//! (`ENOBUFS`) or no ACK comes, the unanswered operations are reported as
//! unknown and the reconciler resyncs.
//!
//! Events: a second socket joins the link and route multicast groups. A
//! socket filter drops notifications caused by felix's own request socket
//! (the kernel stamps a notification with the requester's port id), so a
//! bulk write of 100,000 routes does not echo 100,000 events back.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use socket2::SockFilter;
use tokio::io::unix::AsyncFd;

use super::delta::{Op, OpResult, WriteMode};
use super::wire::{self, KernelRoute, NLMSG_HDRLEN};
use crate::sockopt;

/// Messages per `sendmsg`. Even if every one fails, their errors (about
/// 1 KiB of receive buffer each, counting the skb) fit in [`RCVBUF`].
const BATCH: usize = 1024;
const SNDBUF: usize = 4 << 20;
const RCVBUF: usize = 8 << 20;
const EVENT_RCVBUF: usize = 16 << 20;
/// A dump chunk is at most 32 KiB; an event one message.
const RX_BUF: usize = 64 << 10;
/// The kernel answers a batch within its `send`; waiting longer than this
/// means the answers are gone, and only a resync can tell what happened.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// A dump of a very large table still arrives well within this.
const DUMP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a dump was not read to its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DumpError {
    #[error("netlink I/O: {0}")]
    Io(#[from] io::Error),
    #[error("the kernel refused the dump: {}", io::Error::from_raw_os_error(*.0))]
    Refused(i32),
    #[error("the table changed during the dump (NLM_F_DUMP_INTR); it will be retried")]
    Interrupted,
    #[error("the dump did not finish within {0:?}")]
    Timeout(Duration),
}

fn recv_into(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn register(sock: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor, keeps it open until it is
    // dropped (which the AsyncFd does last) and always returns the same one.
    Ok(unsafe { AsyncFd::register(sock) }?)
}

fn open_socket() -> io::Result<(Socket, u32)> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    let addr = sock.bind_auto()?;
    sock.set_non_blocking(true)?;
    Ok((sock, addr.port_number()))
}

/// The request socket: writes and dumps, one at a time.
pub(crate) struct RouteSocket {
    fd: AsyncFd<Socket>,
    port_id: u32,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
}

impl RouteSocket {
    /// Opens a socket in the calling thread's network namespace. Must be
    /// called inside a tokio runtime.
    pub fn open() -> io::Result<RouteSocket> {
        let (sock, port_id) = open_socket()?;
        sockopt::set_send_buffer(sock.as_fd(), SNDBUF)?;
        sockopt::set_recv_buffer(sock.as_fd(), RCVBUF)?;
        // Errors echo only the header of the failed request, not all of it.
        sock.set_cap_ack(true)?;
        // Make the kernel honour the table filter of a dump request.
        sock.set_netlink_get_strict_chk(true)?;
        Ok(RouteSocket {
            fd: register(sock)?,
            port_id,
            seq: 1,
            tx: Vec::with_capacity(BATCH * 80),
            rx: vec![0; RX_BUF],
        })
    }

    pub fn port_id(&self) -> u32 {
        self.port_id
    }

    fn next_seq(&mut self, count: usize) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(count as u32);
        if self.seq == 0 {
            self.seq = 1;
        }
        first
    }

    async fn send_all(&mut self) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.tx.len() {
            let mut guard = self.fd.writable().await?;
            let tx = &self.tx[sent..];
            match guard.try_io(|s| s.get_ref().send(tx, 0)) {
                // A netlink datagram goes whole or not at all.
                Ok(Ok(_)) => sent = self.tx.len(),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Receives one datagram into `self.rx`, returning its length.
    async fn recv(&mut self) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let rx = &mut self.rx;
            match guard.try_io(|s| recv_into(s.as_raw_fd(), rx)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Performs `ops` in order; one result per op.
    pub async fn apply(&mut self, ops: &[Op], table: u32, protocol: u8) -> Vec<OpResult> {
        let mut results = vec![OpResult::Unknown; ops.len()];
        let mut offset = 0;
        for chunk in ops.chunks(BATCH) {
            let first = self.next_seq(chunk.len());
            self.tx.clear();
            for (i, op) in chunk.iter().enumerate() {
                let seq = first.wrapping_add(i as u32);
                let ack = if i + 1 == chunk.len() {
                    (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16
                } else {
                    libc::NLM_F_REQUEST as u16
                };
                match op {
                    Op::Delete(k) => wire::encode_del_route(&mut self.tx, seq, ack, k),
                    Op::Write(r, mode) => {
                        let how = match mode {
                            WriteMode::Create => libc::NLM_F_CREATE | libc::NLM_F_EXCL,
                            WriteMode::Replace => libc::NLM_F_CREATE | libc::NLM_F_REPLACE,
                        } as u16;
                        wire::encode_new_route(&mut self.tx, seq, ack | how, r, table, protocol)
                    }
                }
            }
            let slots = &mut results[offset..offset + chunk.len()];
            if let Err(e) = self.send_all().await {
                tracing::warn!(error = %e, ops = chunk.len(), "netlink send failed");
                slots.fill(OpResult::Failed(e.raw_os_error().unwrap_or(libc::EIO)));
            } else {
                let acks = tokio::time::timeout(ACK_TIMEOUT, self.collect_acks(first, slots)).await;
                // Lost ACKs (ENOBUFS, or none at all) leave the rest of the
                // chunk Unknown.
                match acks {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "netlink acknowledgements lost; will resync");
                    }
                    Err(_) => tracing::warn!("no netlink acknowledgements in time; will resync"),
                }
            }
            offset += chunk.len();
        }
        results
    }

    async fn collect_acks(&mut self, first: u32, slots: &mut [OpResult]) -> io::Result<()> {
        let last = slots.len() - 1;
        loop {
            let n = self.recv().await?;
            for (hdr, payload) in wire::messages(&self.rx[..n]) {
                if hdr.kind != libc::NLMSG_ERROR as u16 {
                    continue;
                }
                let idx = hdr.seq.wrapping_sub(first) as usize;
                let (Some(slot), Some(code)) = (slots.get_mut(idx), wire::parse_error(payload))
                else {
                    continue;
                };
                *slot = if code == 0 {
                    OpResult::Done
                } else {
                    OpResult::Failed(code)
                };
                if idx == last {
                    // Everything before it has been processed and any error
                    // for it has arrived: the rest succeeded.
                    for s in &mut slots[..last] {
                        if *s == OpResult::Unknown {
                            *s = OpResult::Done;
                        }
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Reads a dump to its end, handing each message payload of `kind` to
    /// `visit`.
    async fn dump(
        &mut self,
        seq: u32,
        kind: u16,
        visit: impl FnMut(&[u8]),
    ) -> Result<(), DumpError> {
        tokio::time::timeout(DUMP_TIMEOUT, self.dump_inner(seq, kind, visit))
            .await
            .unwrap_or(Err(DumpError::Timeout(DUMP_TIMEOUT)))
    }

    async fn dump_inner(
        &mut self,
        seq: u32,
        kind: u16,
        mut visit: impl FnMut(&[u8]),
    ) -> Result<(), DumpError> {
        let mut interrupted = false;
        loop {
            let n = self.recv().await?;
            for (hdr, payload) in wire::messages(&self.rx[..n]) {
                if hdr.seq != seq || hdr.pid != self.port_id {
                    continue;
                }
                if hdr.flags & libc::NLM_F_DUMP_INTR as u16 != 0 {
                    interrupted = true;
                }
                match hdr.kind as i32 {
                    libc::NLMSG_DONE => {
                        return if interrupted {
                            Err(DumpError::Interrupted)
                        } else {
                            Ok(())
                        };
                    }
                    libc::NLMSG_ERROR => {
                        return Err(DumpError::Refused(
                            wire::parse_error(payload).unwrap_or(libc::EIO),
                        ));
                    }
                    _ if hdr.kind == kind => visit(payload),
                    _ => {}
                }
            }
        }
    }

    /// Dumps one family's routes of one table.
    pub async fn dump_routes(
        &mut self,
        family: u8,
        table: u32,
        mut visit: impl FnMut(&KernelRoute),
    ) -> Result<(), DumpError> {
        let seq = self.next_seq(1);
        self.tx.clear();
        wire::encode_route_dump(&mut self.tx, seq, family, table);
        self.send_all().await?;
        self.dump(seq, libc::RTM_NEWROUTE, |payload| {
            if let Some(k) = wire::parse_route(payload) {
                visit(&k);
            }
        })
        .await
    }

    /// Dumps all links as `(index, flags, name)`.
    pub async fn dump_links(
        &mut self,
        mut visit: impl FnMut(u32, u32, &str),
    ) -> Result<(), DumpError> {
        let seq = self.next_seq(1);
        self.tx.clear();
        wire::encode_link_dump(&mut self.tx, seq);
        self.send_all().await?;
        self.dump(seq, libc::RTM_NEWLINK, |payload| {
            if let Some(l) = wire::parse_link(payload) {
                visit(l.index, l.flags, l.name);
            }
        })
        .await
    }
}

/// A change someone else made, as the event socket reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Route {
        deleted: bool,
        route: KernelRoute,
    },
    Link {
        deleted: bool,
        index: u32,
        flags: u32,
        name: String,
    },
    /// The receive buffer overflowed: events were lost.
    Overflow,
}

/// The multicast subscription to link and route changes.
pub(crate) struct EventSocket {
    fd: AsyncFd<Socket>,
    ignore_pid: u32,
    rx: Vec<u8>,
}

impl EventSocket {
    /// Subscribes to link, IPv4-route and IPv6-route notifications, except
    /// those caused by requests from port `ignore_pid`.
    pub fn open(ignore_pid: u32) -> io::Result<EventSocket> {
        let (sock, _) = open_socket()?;
        sockopt::set_recv_buffer(sock.as_fd(), EVENT_RCVBUF)?;
        attach_pid_filter(sock.as_fd(), ignore_pid)?;
        for group in [
            libc::RTNLGRP_LINK,
            libc::RTNLGRP_IPV4_ROUTE,
            libc::RTNLGRP_IPV6_ROUTE,
        ] {
            sock.add_membership(group)?;
        }
        Ok(EventSocket {
            fd: register(sock)?,
            ignore_pid,
            rx: vec![0; RX_BUF],
        })
    }

    /// Resolves when events are waiting.
    pub async fn readable(&self) -> io::Result<()> {
        // Dropping the guard keeps the readiness, so `drain` reads at once.
        self.fd.readable().await.map(|_| ())
    }

    /// Reads up to `max` waiting messages without blocking.
    pub async fn drain(&mut self, max: usize, out: &mut Vec<Event>) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        for _ in 0..max {
            let rx = &mut self.rx;
            let n = match guard.try_io(|s| recv_into(s.as_raw_fd(), rx)) {
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    out.push(Event::Overflow);
                    continue;
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => return Ok(()),
            };
            for (hdr, payload) in wire::messages(&self.rx[..n]) {
                if hdr.pid == self.ignore_pid && hdr.pid != 0 {
                    continue;
                }
                let ev = match hdr.kind {
                    libc::RTM_NEWROUTE | libc::RTM_DELROUTE => {
                        wire::parse_route(payload).map(|route| Event::Route {
                            deleted: hdr.kind == libc::RTM_DELROUTE,
                            route,
                        })
                    }
                    libc::RTM_NEWLINK | libc::RTM_DELLINK => {
                        wire::parse_link(payload).map(|l| Event::Link {
                            deleted: hdr.kind == libc::RTM_DELLINK,
                            index: l.index,
                            flags: l.flags,
                            name: l.name.to_string(),
                        })
                    }
                    _ => None,
                };
                out.extend(ev);
            }
        }
        Ok(())
    }
}

/// A classic BPF filter that drops every message whose `nlmsg_pid` is
/// `pid`. A multicast notification is one message per datagram, so looking
/// at the first header is enough.
fn attach_pid_filter(fd: BorrowedFd<'_>, pid: u32) -> io::Result<()> {
    // BPF_LD|BPF_W|BPF_ABS loads in network byte order; nlmsg_pid is in
    // host order, so compare against the value as BPF will see it.
    let k = u32::from_be_bytes(pid.to_ne_bytes());
    let offset = (NLMSG_HDRLEN - 4) as u32;
    let code = |c: u32| c as u16;
    let prog = [
        SockFilter::new(
            code(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS),
            0,
            0,
            offset,
        ),
        SockFilter::new(code(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K), 0, 1, k),
        SockFilter::new(code(libc::BPF_RET | libc::BPF_K), 0, 0, 0),
        SockFilter::new(code(libc::BPF_RET | libc::BPF_K), 0, 0, u32::MAX),
    ];
    sockopt::attach_filter(fd, &prog)
}
