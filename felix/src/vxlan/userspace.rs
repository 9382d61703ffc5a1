//! The userspace VXLAN backend, for kernels without the `vxlan` link
//! type: a TUN device called `vxlan.calico` that the routes point at
//! (`<block> via <vtep> dev vxlan.calico onlink` works on a TUN device:
//! it has no link layer, so the kernel never resolves the next hop), and
//! a UDP socket bound to the node's address, port 4789, joined by two
//! threads. On the wire it is the kernel's format: UDP to 4789, VXLAN
//! header with only the I flag and VNI 4096, an inner Ethernet header
//! from this node's VTEP MAC to the remote VTEP's MAC, type IPv4.
//!
//! ```text
//!  pod ─► kernel FIB ─► TUN (TSO: one read = up to 64 KiB of one flow)
//!     tx thread: split into MSS-sized segments (tun-rs), put the VXLAN and
//!                Ethernet headers in front of each, one sendmsg with
//!                UDP_SEGMENT: the kernel carries the equal-size outer
//!                datagrams as one UDP GSO packet across the underlay
//!
//!  underlay ─► UDP socket with UDP_GRO (coalesced datagrams + gso_size)
//!     rx thread: split by gso_size, check source node, VXLAN header, VNI
//!                and inner MAC, strip, coalesce TCP segments of one flow
//!                (GRO), write to TUN ─► pod
//! ```
//!
//! Differences from the kernel device on the wire: the outer UDP source
//! port is 4789 (the socket's) rather than a hash of the inner flow, and
//! the UDP checksum is filled in (the kernel device leaves it zero by
//! default; UDP GSO requires it). Receivers accept both.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ipnetwork::Ipv4Network;
use tun_rs::{DeviceBuilder, ExpandBuffer, GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

use super::{PORT, VNI, Vtep};
use crate::tunnel::TunnelStats;
use crate::tunnel::peers::PeerTable;
use crate::tunnel::rawsock::{Waker, sockaddr, wait_readable};

/// VXLAN header (8) + inner Ethernet header (14) at the start of the UDP
/// payload.
pub const ENCAP_LEN: usize = 22;
/// The VXLAN header's flags word: only the I (valid VNI) flag.
const VXLAN_FLAGS: u8 = 0x08;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];

/// `<netinet/udp.h>`: `UDP_SEGMENT`, `UDP_GRO`.
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// Segments per UDP GSO send at most (the kernel's `UDP_MAX_SEGMENTS` is
/// 64 on older kernels).
const MAX_GSO_SEGS: usize = 64;
/// A UDP GSO send carries at most this much payload (one IP packet).
const MAX_GSO_BYTES: usize = 65507;

const MAX_PACKET: usize = 65535;
/// TSO reads split into this many segments at most.
const TX_SLOTS: usize = 128;
/// Datagrams per receive batch.
const RX_SLOTS: usize = 8;
/// Inner packets handed to the TUN device per write batch.
const OUT_SLOTS: usize = 256;
/// Where an inner packet starts in an output buffer (room for the virtio
/// header in front).
const RX_INNER: usize = 20;
const RX_CAP: usize = MAX_PACKET + 2 * RX_INNER + 64;
const POLL_MS: i32 = 200;
const SOCKET_BUFFER: libc::c_int = 16 << 20;

/// Why a received datagram (or one segment of a coalesced one) is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecapError {
    /// Shorter than the VXLAN and Ethernet headers and an IPv4 header.
    Short,
    /// Flags other than exactly I, or reserved bits set.
    BadFlags,
    WrongVni(u32),
    /// The inner frame is for another MAC than this VTEP's.
    NotOurMac,
    /// The inner frame is not an IPv4 packet, or its length lies.
    BadInner,
}

/// Writes the VXLAN header (VNI [`VNI`]) and the inner Ethernet header
/// into `out[..ENCAP_LEN]`.
pub fn encap_header(out: &mut [u8], dst_mac: &[u8; 6], src_mac: &[u8; 6]) {
    let vni = VNI.to_be_bytes();
    out[..8].copy_from_slice(&[VXLAN_FLAGS, 0, 0, 0, vni[1], vni[2], vni[3], 0]);
    out[8..14].copy_from_slice(dst_mac);
    out[14..20].copy_from_slice(src_mac);
    out[20..22].copy_from_slice(&ETHERTYPE_IPV4);
}

/// Checks one VXLAN datagram payload for this VTEP and returns the inner
/// IPv4 packet's length (it starts at [`ENCAP_LEN`]). Trailing bytes
/// after the inner packet (Ethernet padding) are allowed.
pub fn decap(seg: &[u8], our_mac: &[u8; 6]) -> Result<usize, DecapError> {
    if seg.len() < ENCAP_LEN + 20 {
        return Err(DecapError::Short);
    }
    if seg[..4] != [VXLAN_FLAGS, 0, 0, 0] || seg[7] != 0 {
        return Err(DecapError::BadFlags);
    }
    let vni = u32::from_be_bytes([0, seg[4], seg[5], seg[6]]);
    if vni != VNI {
        return Err(DecapError::WrongVni(vni));
    }
    if seg[8..14] != our_mac[..] {
        return Err(DecapError::NotOurMac);
    }
    let ip = &seg[ENCAP_LEN..];
    if seg[20..22] != ETHERTYPE_IPV4 || ip[0] >> 4 != 4 {
        return Err(DecapError::BadInner);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || total < ihl || total > ip.len() {
        return Err(DecapError::BadInner);
    }
    Ok(total)
}

/// The segments of a datagram of `len` bytes received with UDP GRO
/// segment size `gso` (0: not coalesced): (offset, length) of each.
pub fn segments(len: usize, gso: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = if gso == 0 { len.max(1) } else { gso };
    (0..len).step_by(step).map(move |o| (o, step.min(len - o)))
}

/// The remote VTEPs the tx thread sends to and the rx thread accepts from.
#[derive(Debug, Default)]
pub struct VtepTable {
    /// Inner destination (remote block or VTEP address) → node address.
    routes: PeerTable,
    /// Node address → its VTEP MAC.
    macs: HashMap<u32, [u8; 6]>,
    our_mac: [u8; 6],
}

impl VtepTable {
    /// From the usable VTEPs and this node's VTEP MAC.
    pub fn new(vteps: &[&Vtep], our_mac: [u8; 6]) -> VtepTable {
        let mut blocks = std::collections::BTreeMap::new();
        let mut macs = HashMap::new();
        for v in vteps {
            for b in &v.blocks {
                if let ipnetwork::IpNetwork::V4(b) = b {
                    blocks.insert(*b, v.node_ip);
                }
            }
            if let Ok(host) = Ipv4Network::new(v.tunnel_addr, 32) {
                blocks.insert(host, v.node_ip);
            }
            macs.insert(u32::from(v.node_ip), v.mac);
        }
        VtepTable {
            routes: PeerTable::new(&blocks),
            macs,
            our_mac,
        }
    }

    /// The node and VTEP MAC to send an inner packet for `dst` to.
    #[inline]
    pub fn lookup(&self, dst: u32) -> Option<(u32, [u8; 6])> {
        let node = self.routes.lookup(dst)?;
        self.macs.get(&node).map(|m| (node, *m))
    }

    #[inline]
    pub fn is_node(&self, src: u32) -> bool {
        self.macs.contains_key(&src)
    }
}

#[derive(Debug, Default)]
struct Counters {
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_no_route: AtomicU64,
    tx_errors: AtomicU64,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    rx_unknown_source: AtomicU64,
    rx_malformed: AtomicU64,
    rx_errors: AtomicU64,
}

fn add(c: &AtomicU64, v: u64) {
    if v != 0 {
        c.fetch_add(v, Ordering::Relaxed);
    }
}

/// The table, replaced whole; threads re-read it when the generation
/// moves.
#[derive(Default)]
struct SharedTable {
    table: Mutex<Arc<VtepTable>>,
    generation: AtomicU64,
}

impl SharedTable {
    fn get(&self) -> Arc<VtepTable> {
        match self.table.lock() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

struct View<'a> {
    shared: &'a SharedTable,
    generation: u64,
    table: Arc<VtepTable>,
}

impl<'a> View<'a> {
    fn new(shared: &'a SharedTable) -> View<'a> {
        View {
            generation: shared.generation.load(Ordering::Acquire),
            table: shared.get(),
            shared,
        }
    }

    fn refresh(&mut self) -> &VtepTable {
        let g = self.shared.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            self.table = self.shared.get();
        }
        &self.table
    }
}

struct Shared {
    table: SharedTable,
    counters: Counters,
    stop: AtomicBool,
    waker: Waker,
    mtu: AtomicU32,
    sock: UdpSocket,
    dev: SyncDevice,
}

/// The running userspace VTEP; dropping it stops its threads and removes
/// the TUN device.
pub struct UserspaceVxlan {
    name: String,
    local: Ipv4Addr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for UserspaceVxlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserspaceVxlan")
            .field("name", &self.name)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

fn setsockopt_int(fd: i32, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: fd is an open socket; the option value is a c_int that
    // lives across the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn open_socket(local: Ipv4Addr) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind((local, PORT))?;
    sock.set_nonblocking(true)?;
    let fd = sock.as_raw_fd();
    setsockopt_int(fd, libc::SOL_UDP, UDP_GRO, 1)?;
    // As the kernel device: outer packets without DF.
    setsockopt_int(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DONT,
    )?;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
            setsockopt_int(fd, libc::SOL_SOCKET, plain, SOCKET_BUFFER)?;
        }
    }
    Ok(sock)
}

impl UserspaceVxlan {
    /// Creates the TUN device `name` (with TSO/checksum offload) and the
    /// UDP socket on `local`:4789 in the calling thread's namespace, and
    /// starts the threads.
    pub fn create(name: &str, local: Ipv4Addr) -> io::Result<UserspaceVxlan> {
        let sock = open_socket(local)?;
        // Attaches to the persistent device of a previous felix if there
        // is one (same flags), with its MTU, address and routes.
        let dev = DeviceBuilder::new().name(name).offload(true).build_sync()?;
        dev.set_nonblocking(true)?;
        // Persistent: a felix restart leaves the device, its address and
        // the routes through it in place (packets meanwhile are dropped);
        // [`remove`] deletes it.
        if let Err(e) = dev.persist() {
            tracing::warn!(device = name, error = %e, "the userspace VXLAN device is not persistent; a felix restart recreates it");
        }
        let shared = Arc::new(Shared {
            table: SharedTable::default(),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            waker: Waker::new()?,
            mtu: AtomicU32::new(0),
            sock,
            dev,
        });
        let mut threads = Vec::new();
        for (role, f) in [("tx", tx_loop as fn(&Shared)), ("rx", rx_loop)] {
            match crate::tunnel::spawn_packet_thread(name, role, shared.clone(), f) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop(&shared, &mut threads);
                    return Err(e);
                }
            }
        }
        Ok(UserspaceVxlan {
            name: name.to_string(),
            local,
            shared,
            threads,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlay address the socket is bound to.
    pub fn local(&self) -> Ipv4Addr {
        self.local
    }

    pub fn set_table(&self, table: VtepTable) {
        let t = &self.shared.table;
        match t.table.lock() {
            Ok(mut g) => *g = Arc::new(table),
            Err(p) => *p.into_inner() = Arc::new(table),
        }
        t.generation.fetch_add(1, Ordering::Release);
    }

    pub fn set_mtu(&self, mtu: u32) {
        self.shared.mtu.store(mtu, Ordering::Relaxed);
    }

    pub fn stats(&self) -> TunnelStats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TunnelStats {
            tx_packets: g(&c.tx_packets),
            tx_bytes: g(&c.tx_bytes),
            tx_no_route: g(&c.tx_no_route),
            tx_too_big: 0,
            tx_errors: g(&c.tx_errors),
            rx_packets: g(&c.rx_packets),
            rx_bytes: g(&c.rx_bytes),
            rx_unknown_source: g(&c.rx_unknown_source),
            rx_malformed: g(&c.rx_malformed),
            rx_errors: g(&c.rx_errors),
        }
    }
}

fn stop(shared: &Shared, threads: &mut Vec<JoinHandle<()>>) {
    shared.stop.store(true, Ordering::Relaxed);
    shared.waker.wake();
    for t in threads.drain(..) {
        let _ = t.join();
    }
}

impl Drop for UserspaceVxlan {
    fn drop(&mut self) {
        stop(&self.shared, &mut self.threads);
    }
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Room for one `cmsghdr` with a u16 or int payload, aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct CmsgBuf([u8; 32]);

/// Sends `iov` (datagrams of `gso` bytes, the last maybe shorter) to
/// `node`:4789 in one call, as UDP GSO when `gso` is set.
fn send_gso(
    sock: &UdpSocket,
    node: u32,
    iov: &mut [libc::iovec],
    gso: Option<u16>,
) -> io::Result<usize> {
    let mut addr = sockaddr(node);
    addr.sin_port = PORT.to_be();
    let mut cbuf = CmsgBuf([0; 32]);
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    if let Some(gso) = gso {
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
        // SAFETY: msg_control points at 32 aligned bytes, more than
        // CMSG_SPACE(2); CMSG_FIRSTHDR returns a pointer into it, and
        // CMSG_DATA of it has room for the u16 written.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&raw const msg);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), gso);
        }
    }
    // SAFETY: msg and everything it points at (address, iovecs over live
    // buffers, control buffer) outlive the call.
    let rc = unsafe { libc::sendmsg(sock.as_raw_fd(), &raw const msg, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// TUN → UDP.
fn tx_loop(sh: &Shared) {
    let mut orig = vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET];
    let mut slab = vec![0u8; TX_SLOTS * (ENCAP_LEN + MAX_PACKET)];
    let mut segs: Vec<&mut [u8]> = slab.chunks_mut(ENCAP_LEN + MAX_PACKET).collect();
    let mut sizes = vec![0usize; TX_SLOTS];
    let mut iov = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        TX_SLOTS
    ];
    let mut view = View::new(&sh.table);
    let tun_fd = sh.dev.as_raw_fd();
    let mut gso_ok = true;
    let mut idle = true;
    while !sh.stop.load(Ordering::Relaxed) {
        if idle && !wait_readable(tun_fd, &sh.waker, POLL_MS) {
            continue;
        }
        let n = match sh
            .dev
            .recv_multiple(&mut orig, &mut segs, &mut sizes, ENCAP_LEN)
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                idle = true;
                continue;
            }
            Err(e) => {
                add(&sh.counters.tx_errors, 1);
                tracing::debug!(error = %e, "unreadable packet from the VXLAN TUN device");
                idle = true;
                continue;
            }
        };
        idle = false;
        if n == 0 {
            continue;
        }
        let table = view.refresh();
        // Every segment of one read has the same destination.
        let first = &segs[0][ENCAP_LEN..ENCAP_LEN + sizes[0]];
        if first.len() < 20 || first[0] >> 4 != 4 {
            add(&sh.counters.tx_no_route, n as u64);
            continue;
        }
        let Some((node, mac)) = table.lookup(be32(first, 16)) else {
            add(&sh.counters.tx_no_route, n as u64);
            continue;
        };
        for (i, s) in segs[..n].iter_mut().enumerate() {
            encap_header(&mut s[..ENCAP_LEN], &mac, &table.our_mac);
            iov[i] = libc::iovec {
                iov_base: s.as_mut_ptr().cast(),
                iov_len: ENCAP_LEN + sizes[i],
            };
        }
        let (mut sent, mut bytes, mut errors) = (0u64, 0u64, 0u64);
        let gso = ENCAP_LEN + sizes[0];
        let per = (MAX_GSO_BYTES / gso).clamp(1, MAX_GSO_SEGS);
        let mut off = 0;
        while off < n {
            let end = (off + per).min(n);
            // Equal sizes but the last, as UDP GSO needs.
            let equal = iov[off..end.saturating_sub(1)]
                .iter()
                .all(|v| v.iov_len == gso);
            let r = if gso_ok && end - off > 1 && equal {
                match send_gso(&sh.sock, node, &mut iov[off..end], u16::try_from(gso).ok()) {
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)
                        ) =>
                    {
                        tracing::warn!(error = %e, "UDP segmentation offload refused; sending datagrams one by one");
                        gso_ok = false;
                        continue;
                    }
                    r => r.map(|_| end - off),
                }
            } else {
                let mut k = 0;
                let mut last = Ok(0);
                for j in off..end {
                    match send_gso(&sh.sock, node, &mut iov[j..j + 1], None) {
                        Ok(_) => k += 1,
                        Err(e) => last = Err(e),
                    }
                }
                errors += (end - off - k) as u64;
                if k > 0 { Ok(k) } else { last.map(|_| 0) }
            };
            match r {
                Ok(k) => {
                    sent += k as u64;
                    bytes += iov[off..off + k]
                        .iter()
                        .map(|v| v.iov_len as u64)
                        .sum::<u64>();
                }
                Err(e) => {
                    errors += (end - off) as u64;
                    tracing::debug!(error = %e, "VXLAN send failed");
                }
            }
            off = end;
        }
        let c = &sh.counters;
        add(&c.tx_packets, sent);
        add(&c.tx_bytes, bytes);
        add(&c.tx_errors, errors);
    }
}

/// An output buffer: a fixed allocation and the length in use; never
/// grows past its allocation.
struct OutBuf<'a> {
    data: &'a mut [u8],
    len: usize,
}

impl AsRef<[u8]> for OutBuf<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl AsMut<[u8]> for OutBuf<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }
}

impl ExpandBuffer for OutBuf<'_> {
    fn buf_capacity(&self) -> usize {
        self.data.len()
    }

    fn buf_resize(&mut self, new_len: usize, value: u8) {
        let new_len = new_len.min(self.data.len());
        if new_len > self.len {
            self.data[self.len..new_len].fill(value);
        }
        self.len = new_len;
    }

    fn buf_extend_from_slice(&mut self, src: &[u8]) {
        let end = (self.len + src.len()).min(self.data.len());
        let n = end - self.len;
        self.data[self.len..end].copy_from_slice(&src[..n]);
        self.len = end;
    }
}

fn flush(sh: &Shared, gro: &mut Option<GROTable>, bufs: &mut [OutBuf<'_>]) -> u64 {
    if bufs.is_empty() {
        return 0;
    }
    let gro = gro.get_or_insert_with(GROTable::default);
    let r = sh.dev.send_multiple(gro, bufs, RX_INNER);
    for b in bufs.iter_mut() {
        b.len = 0;
    }
    match r {
        Ok(_) => 0,
        Err(e) => {
            tracing::debug!(error = %e, "writing to the VXLAN TUN device failed");
            1
        }
    }
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ones_sum(b: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// An inner packet bigger than the MTU was merged by GRO on the underlay
/// (the kernel leaves a partial TCP checksum): it goes to the TUN device
/// as a TSO packet so the kernel re-segments it. `buf` holds it at
/// [`RX_INNER`]. Returns false if it is not a TCP packet that can be.
fn write_merged(sh: &Shared, buf: &mut [u8], inner: usize, mtu: usize) -> bool {
    let pkt = &mut buf[RX_INNER..RX_INNER + inner];
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if pkt[9] != 6 || inner < ihl + 20 {
        return false;
    }
    let thl = usize::from(pkt[ihl + 12] >> 4) * 4;
    if thl < 20 || inner < ihl + thl || mtu <= ihl + thl {
        return false;
    }
    pkt[10] = 0;
    pkt[11] = 0;
    let c = fold(ones_sum(&pkt[..ihl]));
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
    let Ok(tcp_len) = u32::try_from(inner - ihl) else {
        return false;
    };
    let partial = !fold(ones_sum(&pkt[12..20]) + 6 + tcp_len);
    pkt[ihl + 16..ihl + 18].copy_from_slice(&partial.to_be_bytes());
    let (Ok(hdr_len), Ok(gso), Ok(start)) = (
        u16::try_from(ihl + thl),
        u16::try_from(mtu - ihl - thl),
        u16::try_from(ihl),
    ) else {
        return false;
    };
    // struct virtio_net_hdr: NEEDS_CSUM, GSO_TCPV4, native byte order.
    let h = &mut buf[RX_INNER - VIRTIO_NET_HDR_LEN..RX_INNER];
    h[0] = 1;
    h[1] = 1;
    h[2..4].copy_from_slice(&hdr_len.to_ne_bytes());
    h[4..6].copy_from_slice(&gso.to_ne_bytes());
    h[6..8].copy_from_slice(&start.to_ne_bytes());
    h[8..10].copy_from_slice(&16u16.to_ne_bytes());
    sh.dev
        .send(&buf[RX_INNER - VIRTIO_NET_HDR_LEN..RX_INNER + inner])
        .is_ok()
}

/// UDP → TUN.
fn rx_loop(sh: &Shared) {
    let mut rx_slab = vec![0u8; RX_SLOTS * MAX_PACKET];
    let mut rx: Vec<&mut [u8]> = rx_slab.chunks_mut(MAX_PACKET).collect();
    let mut out_slab = vec![0u8; OUT_SLOTS * RX_CAP];
    let mut out: Vec<OutBuf> = out_slab
        .chunks_mut(RX_CAP)
        .map(|data| OutBuf { data, len: 0 })
        .collect();
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; RX_SLOTS];
    let mut names = [sockaddr(0); RX_SLOTS];
    let mut cmsgs = vec![CmsgBuf([0; 32]); RX_SLOTS];
    // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; RX_SLOTS];
    let mut gro = None;
    let mut view = View::new(&sh.table);
    let fd = sh.sock.as_raw_fd();
    let mut idle = true;
    while !sh.stop.load(Ordering::Relaxed) {
        if idle && !wait_readable(fd, &sh.waker, POLL_MS) {
            continue;
        }
        for i in 0..RX_SLOTS {
            iovs[i] = libc::iovec {
                iov_base: rx[i].as_mut_ptr().cast(),
                iov_len: MAX_PACKET,
            };
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&raw mut names[i]).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &raw mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = cmsgs[i].0.as_mut_ptr().cast();
            h.msg_controllen = 32;
            h.msg_flags = 0;
        }
        // SAFETY: every message points at live buffers of the lengths
        // given (iovecs over rx, names, control buffers), all outliving
        // the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                RX_SLOTS as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
                    add(&sh.counters.rx_errors, 1);
                    tracing::debug!(error = %e, "VXLAN receive failed");
                }
            }
            idle = true;
            continue;
        }
        idle = false;
        let table = view.refresh();
        let mtu = sh.mtu.load(Ordering::Relaxed) as usize;
        let (mut malformed, mut unknown, mut bytes, mut delivered, mut errors) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut w = 0;
        for i in 0..n as usize {
            let len = msgs[i].msg_len as usize;
            let h = &msgs[i].msg_hdr;
            let gso = gro_size(h);
            let truncated = h.msg_flags & libc::MSG_TRUNC != 0;
            let src = u32::from_be(names[i].sin_addr.s_addr);
            let data = &rx[i][..len.min(MAX_PACKET)];
            if truncated || len == 0 {
                malformed += 1;
                continue;
            }
            if !table.is_node(src) {
                unknown += segments(len, gso).count() as u64;
                continue;
            }
            for (o, l) in segments(len, gso) {
                let seg = &data[o..o + l];
                let inner = match decap(seg, &table.our_mac) {
                    Ok(t) => t,
                    Err(_) => {
                        malformed += 1;
                        continue;
                    }
                };
                let b = &mut out[w];
                b.data[RX_INNER..RX_INNER + inner]
                    .copy_from_slice(&seg[ENCAP_LEN..ENCAP_LEN + inner]);
                bytes += inner as u64;
                if inner > mtu && mtu >= 576 {
                    errors += flush(sh, &mut gro, &mut out[..w]);
                    delivered += w as u64;
                    w = 0;
                    if write_merged(sh, out[0].data, inner, mtu) {
                        delivered += 1;
                    } else {
                        malformed += 1;
                    }
                    continue;
                }
                b.len = RX_INNER + inner;
                w += 1;
                if w == OUT_SLOTS {
                    errors += flush(sh, &mut gro, &mut out[..w]);
                    delivered += w as u64;
                    w = 0;
                }
            }
        }
        errors += flush(sh, &mut gro, &mut out[..w]);
        delivered += w as u64;
        let c = &sh.counters;
        add(&c.rx_packets, delivered);
        add(&c.rx_bytes, bytes);
        add(&c.rx_malformed, malformed);
        add(&c.rx_unknown_source, unknown);
        add(&c.rx_errors, errors);
    }
}

/// The `UDP_GRO` segment size of a received message (0 if none).
fn gro_size(h: &libc::msghdr) -> usize {
    if h.msg_controllen == 0 || h.msg_control.is_null() {
        return 0;
    }
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed cmsghdrs; CMSG_FIRSTHDR/NXTHDR stay inside them, and
    // the data of a UDP_GRO message is an int.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(v).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    0
}

/// Deletes the (persistent) TUN device `name` after the VTEP holding it
/// was dropped; a device of another kind is left alone. Returns whether
/// one was deleted.
pub async fn remove(nl: &rtnetlink::Handle, name: &str) -> Result<bool, super::VxlanError> {
    crate::tunnel::link::delete_tun(nl, name)
        .await
        .map_err(|source| super::VxlanError::Netlink {
            name: name.to_string(),
            step: "delete the device".to_string(),
            source,
        })
}

/// Makes the userspace VTEP `spec` says in the calling thread's
/// namespace: keeps `current` if it is bound to the spec's local address,
/// else (re)creates it (a kernel VXLAN device holding the name, left by
/// the kernel backend, is deleted first); then sets the TUN device's MTU,
/// up and its only address where they differ. Returns the device and
/// whether anything changed.
pub async fn ensure(
    nl: &rtnetlink::Handle,
    current: &mut Option<UserspaceVxlan>,
    name: &str,
    spec: &super::DeviceSpec,
) -> Result<(super::VxlanDevice, bool), super::VxlanError> {
    use super::VxlanError;
    use crate::tunnel::link;
    let nl_err = |step: &'static str| {
        let name = name.to_string();
        move |source| VxlanError::Netlink {
            name,
            step: step.to_string(),
            source,
        }
    };
    let mut changed = false;
    if current
        .as_ref()
        .is_some_and(|u| u.local != spec.local || u.name != name)
    {
        tracing::info!(device = name, local = %spec.local, "the node address moved; recreating the userspace VTEP");
        *current = None;
    }
    if current.is_none() {
        if let Some(e) = link::by_name(nl, name)
            .await
            .map_err(nl_err("look up the device"))?
        {
            if e.kind == Some(netlink_packet_route::link::InfoKind::Tun) {
                tracing::info!(
                    device = name,
                    "adopting the userspace VXLAN device left by a previous felix"
                );
            } else if e.kind == Some(netlink_packet_route::link::InfoKind::Vxlan) {
                tracing::warn!(
                    device = name,
                    "replacing the kernel VXLAN device with the userspace one"
                );
                super::VxlanDevice::remove(nl, name).await?;
            } else {
                return Err(VxlanError::NameTaken {
                    name: name.to_string(),
                    kind: e
                        .kind
                        .map_or_else(|| "plain".to_string(), |k| format!("{k:?}").to_lowercase()),
                });
            }
        }
        let u =
            UserspaceVxlan::create(name, spec.local).map_err(|source| VxlanError::Userspace {
                name: name.to_string(),
                step: "create the TUN device and UDP socket",
                source,
            })?;
        *current = Some(u);
        changed = true;
    }
    // Before the device goes up: no IPv6 link-local address, so the
    // kernel sends no router or multicast-listener solicitations into a
    // VTEP that carries IPv4 only. Best effort (IPv6 may be off).
    if let Err((key, e)) =
        crate::workload::sysctl::write(&format!("ipv6/conf/{name}/disable_ipv6"), "1")
    {
        tracing::debug!(%key, error = %e, "cannot turn IPv6 off on the userspace VXLAN device");
    }
    let state = link::by_name(nl, name)
        .await
        .map_err(nl_err("look up the TUN device"))?
        .ok_or_else(|| VxlanError::Vanished(name.to_string()))?;
    if state.mtu != Some(spec.mtu) || !state.up {
        link::set_mtu_up(nl, state.index, spec.mtu)
            .await
            .map_err(nl_err("set MTU and up"))?;
        changed = true;
    }
    changed |= link::sync_single_address(nl, state.index, Some(spec.addr))
        .await
        .map_err(nl_err("set the tunnel address"))?;
    if let Some(u) = current.as_ref() {
        u.set_mtu(spec.mtu);
    }
    Ok((
        super::VxlanDevice {
            name: name.to_string(),
            ifindex: state.index,
        },
        changed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: [u8; 6] = [0x66, 0, 0, 0, 0, 1];
    const THEIRS: [u8; 6] = [0x66, 0, 0, 0, 0, 2];

    fn frame(inner_len: u16) -> Vec<u8> {
        let mut b = vec![0u8; ENCAP_LEN + usize::from(inner_len)];
        encap_header(&mut b, &OURS, &THEIRS);
        b[ENCAP_LEN] = 0x45;
        b[ENCAP_LEN + 2..ENCAP_LEN + 4].copy_from_slice(&inner_len.to_be_bytes());
        b
    }

    #[test]
    fn the_header_is_the_kernels_layout() {
        let mut h = [0u8; ENCAP_LEN];
        encap_header(&mut h, &THEIRS, &OURS);
        // Flags I, reserved, VNI 4096 = 0x001000, reserved.
        assert_eq!(&h[..8], &[0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0]);
        assert_eq!(&h[8..14], &THEIRS);
        assert_eq!(&h[14..20], &OURS);
        assert_eq!(&h[20..22], &[0x08, 0x00]);
    }

    #[test]
    fn decap_accepts_our_frames_and_names_what_is_wrong() {
        let b = frame(60);
        assert_eq!(decap(&b, &OURS), Ok(60));
        // Ethernet padding after the inner packet is fine.
        let mut padded = frame(28);
        padded.extend_from_slice(&[0; 18]);
        assert_eq!(decap(&padded, &OURS), Ok(28));
        assert_eq!(decap(&b[..30], &OURS), Err(DecapError::Short));
        let mut f = b.clone();
        f[0] = 0x0c;
        assert_eq!(decap(&f, &OURS), Err(DecapError::BadFlags));
        let mut f = b.clone();
        f[0] = 0;
        assert_eq!(decap(&f, &OURS), Err(DecapError::BadFlags));
        let mut f = b.clone();
        f[7] = 1;
        assert_eq!(decap(&f, &OURS), Err(DecapError::BadFlags));
        let mut f = b.clone();
        f[6] = 1;
        assert_eq!(decap(&f, &OURS), Err(DecapError::WrongVni(4097)));
        assert_eq!(decap(&b, &THEIRS), Err(DecapError::NotOurMac));
        let mut f = b.clone();
        f[20] = 0x86;
        f[21] = 0xdd;
        assert_eq!(decap(&f, &OURS), Err(DecapError::BadInner));
        let mut f = b.clone();
        f[ENCAP_LEN + 2..ENCAP_LEN + 4].copy_from_slice(&61u16.to_be_bytes());
        assert_eq!(decap(&f, &OURS), Err(DecapError::BadInner));
        let mut f = b.clone();
        f[ENCAP_LEN] = 0x44;
        assert_eq!(decap(&f, &OURS), Err(DecapError::BadInner));
    }

    #[test]
    fn coalesced_datagrams_split_by_gso_size() {
        let v: Vec<_> = segments(250, 100).collect();
        assert_eq!(v, vec![(0, 100), (100, 100), (200, 50)]);
        let v: Vec<_> = segments(250, 0).collect();
        assert_eq!(v, vec![(0, 250)]);
        assert_eq!(segments(0, 0).count(), 0);
    }

    #[test]
    fn the_table_routes_blocks_and_vtep_addresses_to_node_and_mac() {
        let v = Vtep {
            node: "b".into(),
            node_ip: Ipv4Addr::new(172, 30, 0, 2),
            tunnel_addr: Ipv4Addr::new(10, 65, 9, 1),
            mac: THEIRS,
            blocks: vec!["10.65.1.0/26".parse().unwrap()],
        };
        let t = VtepTable::new(&[&v], OURS);
        let node = u32::from(v.node_ip);
        assert_eq!(
            t.lookup(u32::from(Ipv4Addr::new(10, 65, 1, 5))),
            Some((node, THEIRS))
        );
        assert_eq!(t.lookup(u32::from(v.tunnel_addr)), Some((node, THEIRS)));
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(10, 65, 2, 5))), None);
        assert!(t.is_node(node));
        assert!(!t.is_node(u32::from(Ipv4Addr::new(172, 30, 0, 3))));
    }

    /// Random bytes, random lengths, random segment sizes: the parser
    /// never panics and anything it accepts fits the segment.
    #[test]
    fn decap_survives_random_input() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut buf = vec![0u8; 2048];
        for round in 0..20_000 {
            let len = (next() % 2048) as usize;
            for b in buf.iter_mut().take(len) {
                *b = next() as u8;
            }
            if round % 2 == 0 && len >= ENCAP_LEN + 20 {
                // Mostly valid headers, to reach the inner checks.
                encap_header(&mut buf[..ENCAP_LEN], &OURS, &THEIRS);
                buf[ENCAP_LEN] = 0x40 | (next() as u8 & 0x0f);
            }
            let gso = (next() % 1600) as usize;
            for (o, l) in segments(len, gso) {
                assert!(o + l <= len);
                if let Ok(t) = decap(&buf[o..o + l], &OURS) {
                    assert!(ENCAP_LEN + t <= l);
                }
            }
        }
    }
}
