//! The userspace IP-in-IP backend, for kernels without the `ipip` link
//! type: a TUN device the routes point at, and a raw `IPPROTO_IPIP`
//! socket, joined by two threads.
//!
//! ```text
//!  pod ─► kernel FIB: <block> via <node> dev tunl0 onlink
//!           │ (TUN, with TSO: one read = up to 64 KiB of one TCP flow)
//!           ▼
//!     tx thread: split into MTU-sized segments (checksums filled in),
//!                find each inner destination's node (PeerTable),
//!                sendmmsg to the raw socket, each segment behind an
//!                outer header of our own (proto 4, DF) ──► underlay
//!
//!  underlay ─► raw socket (outer header included)
//!           ▼
//!     rx thread: recvmmsg a batch, drop what is not from a known node,
//!                strip the outer header, coalesce TCP segments of one
//!                flow (GRO, checksums verified), write to the TUN ─► pod
//! ```
//!
//! Every buffer is allocated once, when the threads start; the hot loops
//! move packets between preallocated buffers and count in locals that are
//! published once per batch.
//!
//! The TUN device's MTU is the underlay's less the outer header, so the
//! kernel itself answers an oversized DF packet with ICMP "fragmentation
//! needed" (or the sending socket with EMSGSIZE) before it reaches the
//! tunnel. If the path to a node is narrower still (the kernel learnt a
//! smaller path MTU from an ICMP "fragmentation needed"), the tx thread
//! answers the inner sender with ICMP "fragmentation needed" itself: it
//! knows each node's path MTU ([`PathMtus`], asked of the kernel once a
//! second per node, and at once after the raw socket reports such an ICMP
//! with an `EMSGSIZE`). Outer packets are never fragmented.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tun_rs::{DeviceBuilder, ExpandBuffer, GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

/// `struct virtio_net_hdr` flags / GSO type (`<linux/virtio_net.h>`).
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;

/// Encodes a `struct virtio_net_hdr` (legacy layout, native byte order,
/// as a TUN device without TUNSETVNETLE/BE expects).
fn virtio_hdr(
    out: &mut [u8],
    gso_type: u8,
    hdr_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
) {
    out[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    out[1] = gso_type;
    out[2..4].copy_from_slice(&hdr_len.to_ne_bytes());
    out[4..6].copy_from_slice(&gso_size.to_ne_bytes());
    out[6..8].copy_from_slice(&csum_start.to_ne_bytes());
    out[8..10].copy_from_slice(&csum_offset.to_ne_bytes());
}

use super::peers::{PeerTable, PeersView, SharedPeers};
use super::rawsock::{RawIpip, Waker, outer_header, path_mtu, sockaddr, wait_readable};
use super::{BackendKind, TunnelBackend, TunnelStats};

/// Segment slots per transmit batch.
const TX_SLOTS: usize = 512;
/// Free slots needed before reading another TUN packet: a 64 KiB TSO
/// packet with an MSS of 512 or more splits into at most this many.
const TX_MIN_FREE: usize = 128;
/// TUN reads per transmit batch at most.
const TX_READS: usize = 16;
/// Raw packets per receive batch.
const RX_SLOTS: usize = 128;
/// The largest IP packet.
const MAX_PACKET: usize = 65535;
/// The inner packet starts here in a receive buffer (the outer header is
/// received in front of it and overwritten by the virtio header).
const RX_INNER: usize = 20;
/// Receive buffers hold a coalesced 64 KiB packet with room for the
/// headers GRO wants in front.
const RX_CAP: usize = MAX_PACKET + 2 * RX_INNER + 64;
/// The distance between two receive buffers: whole pages plus 25 cache
/// lines. Buffers 64 KiB apart would put the start of every packet of a
/// batch in the same few cache sets (evicting each other between
/// `recvmmsg` writing them and GRO reading them); 25 lines, odd, spread a
/// batch's packets over all the sets.
const RX_STRIDE: usize = RX_CAP.next_multiple_of(4096) + 25 * 64;
const _: () = assert!(
    RX_STRIDE >= RX_CAP && !RX_STRIDE.is_multiple_of(65536) && RX_STRIDE.is_multiple_of(64)
);
/// Threads look at their stop flag at least this often (ms).
const POLL_MS: i32 = 200;
/// Socket buffers of the raw socket.
const RAW_SOCKET_BUFFER: usize = 16 << 20;
/// How long a node's path MTU is taken as known before it is asked again.
const PMTU_RECHECK: Duration = Duration::from_secs(1);
/// The outer IPv4 header (no options).
const OUTER: usize = 20;

/// The path MTU towards each node the tx thread sends to, as the kernel
/// knows it (its routes and the ICMP "fragmentation needed" it received):
/// with `IP_HDRINCL` the kernel checks only the device MTU, so the tunnel
/// checks the path's itself.
struct PathMtus {
    known: std::collections::HashMap<u32, (u32, Instant)>,
}

impl PathMtus {
    fn new() -> PathMtus {
        PathMtus {
            known: std::collections::HashMap::new(),
        }
    }

    /// The largest outer packet towards `node`; asked of the kernel when
    /// not known or older than [`PMTU_RECHECK`]. When the kernel cannot
    /// say, no limit (the device MTU still holds).
    fn get(&mut self, node: u32, now: Instant) -> u32 {
        match self.known.get(&node) {
            Some(&(mtu, at)) if now.saturating_duration_since(at) < PMTU_RECHECK => mtu,
            _ => {
                let mtu = path_mtu(Ipv4Addr::from(node)).unwrap_or(u32::MAX);
                self.known.insert(node, (mtu, now));
                mtu
            }
        }
    }

    /// Forgets every node's path MTU (an ICMP arrived for one of them).
    fn forget(&mut self) {
        self.known.clear();
    }
}

#[derive(Debug, Default)]
struct Counters {
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_no_route: AtomicU64,
    tx_too_big: AtomicU64,
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

struct Shared {
    peers: Arc<SharedPeers>,
    counters: Counters,
    stop: AtomicBool,
    waker: Waker,
    /// The tunnel address (source of ICMP errors the tunnel sends), or 0.
    source: AtomicU32,
    /// The device MTU felix set (0 until configured).
    mtu: AtomicU32,
    raw: RawIpip,
    dev: SyncDevice,
}

/// The running userspace tunnel; dropping it stops its threads. The TUN
/// device is persistent: it stays, with its address and routes, until
/// [`remove`] deletes it, and the next felix adopts it.
pub struct UserspaceTunnel {
    name: String,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// The IP-in-IP table's writer ([`super::filter`]): the outer packets
    /// to and from the known nodes untracked.
    filter: tokio::sync::watch::Sender<Option<std::collections::BTreeSet<Ipv4Addr>>>,
}

impl std::fmt::Debug for UserspaceTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserspaceTunnel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl UserspaceTunnel {
    /// Creates the TUN device `name` (with TSO/checksum offload) and the
    /// raw socket in the calling thread's namespace, and starts the
    /// threads (which inherit that namespace) and the IP-in-IP table's
    /// writer (a task on the calling runtime).
    pub fn create(name: &str) -> io::Result<UserspaceTunnel> {
        // Attaches to the persistent device a previous felix left, if
        // there is one (same flags), with its MTU, address and the routes
        // through it.
        let dev = DeviceBuilder::new().name(name).offload(true).build_sync()?;
        dev.set_nonblocking(true)?;
        // Persistent: a felix restart leaves the device, its address and
        // its routes in place (packets meanwhile wait in the device's
        // queue or are dropped); [`remove`] deletes it.
        if let Err(e) = dev.persist() {
            tracing::warn!(device = name, error = %e, "the userspace IPIP device is not persistent; a felix restart recreates it");
        }
        let raw = RawIpip::open(RAW_SOCKET_BUFFER)?;
        let shared = Arc::new(Shared {
            peers: Arc::new(SharedPeers::default()),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            waker: Waker::new()?,
            source: AtomicU32::new(0),
            mtu: AtomicU32::new(0),
            raw,
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
        Ok(UserspaceTunnel {
            name: name.to_string(),
            shared,
            threads,
            filter: super::filter::spawn_writer_for(super::filter::Encap::IpipUserspace),
        })
    }
}

/// Deletes the (persistent) userspace tunnel device `name`, after the
/// [`UserspaceTunnel`] holding it was dropped; a device of another kind
/// (the kernel's own `tunl0`) is left alone. Returns whether one was
/// deleted.
pub async fn remove(nl: &rtnetlink::Handle, name: &str) -> Result<bool, super::TunnelError> {
    super::link::delete_tun(nl, name)
        .await
        .map_err(|source| super::TunnelError::Netlink {
            name: name.to_string(),
            step: "delete the device",
            source,
        })
}

fn stop(shared: &Shared, threads: &mut Vec<JoinHandle<()>>) {
    shared.stop.store(true, Ordering::Relaxed);
    shared.waker.wake();
    for t in threads.drain(..) {
        let _ = t.join();
    }
}

impl Drop for UserspaceTunnel {
    fn drop(&mut self) {
        stop(&self.shared, &mut self.threads);
        // The table goes with the tunnel (a killed felix leaves it for the
        // next one, which writes it again).
        self.filter.send_replace(None);
    }
}

impl TunnelBackend for UserspaceTunnel {
    fn kind(&self) -> BackendKind {
        BackendKind::Userspace
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn set_peers(&self, peers: PeerTable) {
        self.filter.send_replace(Some(peers.nodes()));
        self.shared.peers.set(peers);
    }

    fn set_source(&self, addr: Option<Ipv4Addr>) {
        self.shared
            .source
            .store(addr.map_or(0, u32::from), Ordering::Relaxed);
    }

    fn set_mtu(&self, mtu: u32) {
        self.shared.mtu.store(mtu, Ordering::Relaxed);
    }

    /// The tunnel's own ICMP errors come from the tunnel address, a local
    /// address arriving on the device: without `accept_local` the kernel
    /// would drop them as martians.
    fn sysctls(&self) -> &'static [(&'static str, &'static str)] {
        &[("accept_local", "1")]
    }

    fn stats(&self) -> TunnelStats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TunnelStats {
            tx_packets: g(&c.tx_packets),
            tx_bytes: g(&c.tx_bytes),
            tx_no_route: g(&c.tx_no_route),
            tx_too_big: g(&c.tx_too_big),
            tx_errors: g(&c.tx_errors),
            rx_packets: g(&c.rx_packets),
            rx_bytes: g(&c.rx_bytes),
            rx_unknown_source: g(&c.rx_unknown_source),
            rx_malformed: g(&c.rx_malformed),
            rx_errors: g(&c.rx_errors),
        }
    }
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data (pointers and integers); all-zero
    // (null pointers, zero lengths) is a valid value.
    unsafe { std::mem::zeroed() }
}

/// The distance between two transmit slots for a device MTU: one packet
/// of that size, rounded up to whole cache lines, so a batch's segments
/// lie one after another (a few hundred KiB in cache, not one page each
/// 64 KiB apart, where they would also all compete for the same cache
/// sets). 64 KiB while the MTU is not known.
fn slot_stride(mtu: u32) -> usize {
    let mtu = mtu as usize;
    if mtu == 0 || mtu >= MAX_PACKET {
        MAX_PACKET
    } else {
        mtu.next_multiple_of(64)
    }
}

/// TUN → raw socket.
fn tx_loop(sh: &Shared) {
    let mut orig = vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET];
    // One zeroed allocation for every slot: large enough for the allocator
    // to map it fresh, so only the pages packets land in become resident.
    let mut slab = vec![0u8; TX_SLOTS * MAX_PACKET];
    // The slots, [`slot_stride`] apart; laid out again when the MTU
    // changes.
    let mut stride = 0;
    let mut segs: Vec<&mut [u8]> = Vec::new();
    let mut sizes = vec![0usize; TX_SLOTS];
    let mut addrs = vec![sockaddr(0); TX_SLOTS];
    let mut outers = vec![[0u8; OUTER]; TX_SLOTS];
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    // Per message: its outer header, then the segment.
    let mut iovs = vec![[empty; 2]; TX_SLOTS];
    let mut msgs = vec![zeroed_mmsghdr(); TX_SLOTS];
    // Which segment each message carries.
    let mut slot_of = vec![0usize; TX_SLOTS];
    let mut view = PeersView::new(sh.peers.clone());
    let mut paths = PathMtus::new();
    let tun_fd = sh.dev.as_raw_fd();
    // Only poll when the last batch came back empty: under load the
    // device is read back to back without a poll per batch.
    let mut idle = true;
    // A smaller stride seen, not yet taken.
    let mut shrink = None;
    while !sh.stop.load(Ordering::Relaxed) {
        if idle && !wait_readable(tun_fd, &sh.waker, POLL_MS) {
            continue;
        }
        // Larger slots at once, before reading (the device takes a larger
        // MTU only after the tunnel was told). Smaller ones only after a
        // read that began once the smaller MTU was seen found the device's
        // queue empty: no packet queued under the old MTU is left to meet
        // a slot too small for it.
        let want = slot_stride(sh.mtu.load(Ordering::Relaxed));
        if want > stride || (want < stride && idle && shrink == Some(want)) {
            stride = want;
            segs = slab.chunks_mut(stride).take(TX_SLOTS).collect();
        }
        shrink = (want < stride).then_some(want);
        let mut n = 0;
        let mut errors = 0u64;
        for _ in 0..TX_READS {
            if TX_SLOTS - n < TX_MIN_FREE {
                break;
            }
            match sh
                .dev
                .recv_multiple(&mut orig, &mut segs[n..], &mut sizes[n..], 0)
            {
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    errors += 1;
                    tracing::debug!(error = %e, "unreadable packet from the tunnel device");
                }
            }
        }
        idle = n == 0;
        if idle {
            add(&sh.counters.tx_errors, errors);
            continue;
        }
        let table = view.refresh();
        let now = Instant::now();
        let mut no_route = 0u64;
        let mut too_big = 0u64;
        let mut m = 0;
        // (inner destination, its node, the path MTU to that node)
        let mut last: Option<(u32, u32, u32)> = None;
        for i in 0..n {
            let pkt = &segs[i][..sizes[i]];
            if pkt.len() < 20 || pkt[0] >> 4 != 4 {
                no_route += 1;
                continue;
            }
            let dst = be32(pkt, 16);
            let (node, pmtu) = match last {
                Some((d, node, pmtu)) if d == dst => (node, pmtu),
                _ => match table.lookup(dst) {
                    Some(node) => {
                        let pmtu = paths.get(node, now);
                        last = Some((dst, node, pmtu));
                        (node, pmtu)
                    }
                    None => {
                        no_route += 1;
                        continue;
                    }
                },
            };
            if pkt.len() + OUTER > pmtu as usize {
                too_big += 1;
                frag_needed(sh, pkt, pmtu);
                continue;
            }
            addrs[m] = sockaddr(node);
            outers[m] = outer_header(node);
            iovs[m] = [
                libc::iovec {
                    iov_base: outers[m].as_mut_ptr().cast(),
                    iov_len: OUTER,
                },
                libc::iovec {
                    iov_base: segs[i].as_ptr().cast_mut().cast(),
                    iov_len: pkt.len(),
                },
            ];
            let hdr = &mut msgs[m].msg_hdr;
            hdr.msg_name = (&raw mut addrs[m]).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = iovs[m].as_mut_ptr();
            hdr.msg_iovlen = 2;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            slot_of[m] = i;
            m += 1;
        }
        let (sent, bytes, refused, send_errors) =
            send_all(sh, &mut msgs[..m], &slot_of, &segs, &sizes, &mut paths);
        let c = &sh.counters;
        add(&c.tx_packets, sent);
        add(&c.tx_bytes, bytes);
        add(&c.tx_no_route, no_route);
        add(&c.tx_too_big, too_big + refused);
        add(&c.tx_errors, errors + send_errors);
    }
}

/// Sends every message, skipping (and counting) those the kernel refuses.
/// Returns (sent, bytes of the inner packets, too big, other errors).
///
/// `EMSGSIZE` is either a packet over the device's MTU or, reported on
/// whichever send comes next, an ICMP "fragmentation needed" the socket
/// received: either way the path MTUs are asked again, and a packet that
/// still fits is sent again (once).
fn send_all(
    sh: &Shared,
    msgs: &mut [libc::mmsghdr],
    slot_of: &[usize],
    segs: &[&mut [u8]],
    sizes: &[usize],
    paths: &mut PathMtus,
) -> (u64, u64, u64, u64) {
    let (mut sent, mut bytes, mut too_big, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut off = 0;
    // The message already sent again after an EMSGSIZE.
    let mut retried = usize::MAX;
    // Each turn sends at least one message or skips one, or retries one
    // once, plus a few interrupted calls.
    for _ in 0..2 * msgs.len() + 8 {
        if off >= msgs.len() {
            break;
        }
        match sh.raw.send_mmsg(&mut msgs[off..]) {
            Ok(k) => {
                for m in &msgs[off..off + k] {
                    bytes += u64::from(m.msg_len).saturating_sub(OUTER as u64);
                }
                sent += k as u64;
                off += k;
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EMSGSIZE) => {
                    paths.forget();
                    let inner = &segs[slot_of[off]][..sizes[slot_of[off]]];
                    let pmtu = paths.get(node_of(&msgs[off]), Instant::now());
                    let fits = inner.len() + OUTER <= pmtu as usize;
                    if fits && retried != off {
                        retried = off;
                        continue;
                    }
                    if fits {
                        errors += 1;
                        tracing::debug!(error = %e, path_mtu = pmtu, "raw IP-in-IP send refused a packet that fits the path");
                    } else {
                        too_big += 1;
                        frag_needed(sh, inner, pmtu);
                    }
                    off += 1;
                }
                _ => {
                    errors += 1;
                    tracing::debug!(error = %e, "raw IP-in-IP send failed");
                    off += 1;
                }
            },
        }
    }
    (sent, bytes, too_big, errors)
}

/// The node a message is addressed to.
fn node_of(msg: &libc::mmsghdr) -> u32 {
    // SAFETY: msg_name points at the sockaddr_in this batch filled in.
    let addr = unsafe { *(msg.msg_hdr.msg_name as *const libc::sockaddr_in) };
    u32::from_be(addr.sin_addr.s_addr)
}

/// Answers an inner packet too big for the path to its node (outer
/// packets of at most `path_mtu` bytes) with ICMP "fragmentation needed"
/// (RFC 1191), written back into the TUN device.
fn frag_needed(sh: &Shared, inner: &[u8], path_mtu: u32) {
    let source = sh.source.load(Ordering::Relaxed);
    if source == 0 || inner.len() < 20 {
        return;
    }
    let mtu = path_mtu.saturating_sub(OUTER as u32);
    let mut buf = [0u8; VIRTIO_NET_HDR_LEN + 20 + 8 + 60 + 8];
    let Some(len) = icmp_frag_needed(
        &mut buf[VIRTIO_NET_HDR_LEN..],
        source,
        inner,
        u16::try_from(mtu).unwrap_or(0),
    ) else {
        return;
    };
    // The virtio header stays all-zero: no offload for this packet.
    if let Err(e) = sh.dev.send(&buf[..VIRTIO_NET_HDR_LEN + len]) {
        tracing::debug!(error = %e, "could not deliver ICMP fragmentation-needed");
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

/// Builds an ICMP destination-unreachable / fragmentation-needed packet
/// about `inner` into `out`; returns its length. `None` if `inner` is an
/// ICMP error itself or a non-first fragment (RFC 1122 3.2.2).
pub(crate) fn icmp_frag_needed(
    out: &mut [u8],
    source: u32,
    inner: &[u8],
    mtu: u16,
) -> Option<usize> {
    let ihl = usize::from(inner[0] & 0x0f) * 4;
    if ihl < 20 || inner.len() < ihl {
        return None;
    }
    let frag_offset = u16::from_be_bytes([inner[6], inner[7]]) & 0x1fff;
    if frag_offset != 0 {
        return None;
    }
    if inner[9] == 1 && inner.len() > ihl && !matches!(inner[ihl], 0 | 8 | 13 | 15 | 17) {
        return None;
    }
    let quoted = (ihl + 8).min(inner.len());
    let len = 20 + 8 + quoted;
    if out.len() < len {
        return None;
    }
    let out = &mut out[..len];
    out.fill(0);
    out[0] = 0x45;
    out[2..4].copy_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
    out[8] = 64;
    out[9] = 1;
    out[12..16].copy_from_slice(&source.to_be_bytes());
    out[16..20].copy_from_slice(&inner[12..16]);
    let c = fold(ones_sum(&out[..20]));
    out[10..12].copy_from_slice(&c.to_be_bytes());
    out[20] = 3;
    out[21] = 4;
    out[26..28].copy_from_slice(&mtu.to_be_bytes());
    out[28..].copy_from_slice(&inner[..quoted]);
    let c = fold(ones_sum(&out[20..]));
    out[22..24].copy_from_slice(&c.to_be_bytes());
    Some(len)
}

/// A receive buffer: a fixed allocation and the length in use. It never
/// reallocates (GRO checks the capacity before it appends).
struct RxBuf<'a> {
    data: &'a mut [u8],
    len: usize,
}

impl AsRef<[u8]> for RxBuf<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl AsMut<[u8]> for RxBuf<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }
}

impl ExpandBuffer for RxBuf<'_> {
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

/// Checks an outer packet of `n` bytes at the start of `buf` and moves its
/// inner packet to [`RX_INNER`]. Returns the inner length.
fn decap(buf: &mut [u8], n: usize, table: &PeerTable) -> Result<usize, RxDrop> {
    if n < 40 || buf[0] >> 4 != 4 {
        return Err(RxDrop::Malformed);
    }
    let ihl = usize::from(buf[0] & 0x0f) * 4;
    if ihl < 20 || n < ihl + 20 {
        return Err(RxDrop::Malformed);
    }
    if !table.is_node(be32(buf, 12)) {
        return Err(RxDrop::UnknownSource);
    }
    let inner = &buf[ihl..n];
    if inner[0] >> 4 != 4 || usize::from(inner[0] & 0x0f) * 4 < 20 {
        return Err(RxDrop::Malformed);
    }
    let total = usize::from(u16::from_be_bytes([inner[2], inner[3]]));
    if total < 20 || total > inner.len() {
        return Err(RxDrop::Malformed);
    }
    if ihl != RX_INNER {
        buf.copy_within(ihl..ihl + total, RX_INNER);
    }
    Ok(total)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxDrop {
    Malformed,
    UnknownSource,
}

/// Writes `bufs` (inner packets at [`RX_INNER`]) to the TUN device, TCP
/// segments of one flow coalesced; empties them. Returns the error count.
/// The coalescing table (about 1 MB of flow slots and item pools) is made
/// on the first packet: a node that never receives tunnelled traffic
/// (IPIP Never, or every peer in its own subnet) does not carry it.
fn flush(sh: &Shared, gro: &mut Option<GROTable>, bufs: &mut [RxBuf<'_>]) -> u64 {
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
            tracing::debug!(error = %e, "writing to the tunnel device failed");
            1
        }
    }
}

/// An inner packet bigger than the MTU can only be the underlay's GRO at
/// work (a real NIC, or a veth with GRO on, merges the IP-in-IP segments
/// of a TCP flow before the raw socket sees them; the kernel has left a
/// partial checksum in the TCP header). It goes to the TUN device as what
/// it is, a TSO packet, so the kernel re-segments it if it must; written
/// as a plain packet it would exceed every MTU on its way to the pod.
fn write_merged(sh: &Shared, buf: &mut [u8], inner: usize, mtu: usize) -> Result<(), RxDrop> {
    let pkt = &mut buf[RX_INNER..RX_INNER + inner];
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if pkt[9] != 6 || inner < ihl + 20 {
        return Err(RxDrop::Malformed);
    }
    let thl = usize::from(pkt[ihl + 12] >> 4) * 4;
    if thl < 20 || inner < ihl + thl || mtu <= ihl + thl {
        return Err(RxDrop::Malformed);
    }
    // The IPv4 header checksum over the merged length, and the TCP
    // checksum field as the pseudo-header sum the device will complete.
    pkt[10] = 0;
    pkt[11] = 0;
    let c = fold(ones_sum(&pkt[..ihl]));
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp_len = u32::try_from(inner - ihl).map_err(|_| RxDrop::Malformed)?;
    let pseudo = ones_sum(&pkt[12..20]) + 6 + tcp_len;
    let partial = !fold(pseudo);
    pkt[ihl + 16..ihl + 18].copy_from_slice(&partial.to_be_bytes());
    let err = |_| RxDrop::Malformed;
    let start = RX_INNER - VIRTIO_NET_HDR_LEN;
    virtio_hdr(
        &mut buf[start..RX_INNER],
        VIRTIO_NET_HDR_GSO_TCPV4,
        u16::try_from(ihl + thl).map_err(err)?,
        u16::try_from(mtu - ihl - thl).map_err(err)?,
        u16::try_from(ihl).map_err(err)?,
        16,
    );
    if let Err(e) = sh.dev.send(&buf[start..RX_INNER + inner]) {
        tracing::debug!(error = %e, "writing a merged packet to the tunnel device failed");
        return Err(RxDrop::Malformed);
    }
    Ok(())
}

/// Raw socket → TUN.
fn rx_loop(sh: &Shared) {
    // One allocation for every slot (see tx_loop).
    let mut slab = vec![0u8; RX_SLOTS * RX_STRIDE];
    let mut bufs: Vec<RxBuf> = slab
        .chunks_mut(RX_STRIDE)
        .map(|data| RxBuf {
            data: &mut data[..RX_CAP],
            len: 0,
        })
        .collect();
    let mut iovs = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        RX_SLOTS
    ];
    let mut msgs = vec![zeroed_mmsghdr(); RX_SLOTS];
    let mut gro = None;
    let mut view = PeersView::new(sh.peers.clone());
    let raw_fd = sh.raw.fd();
    let mut idle = true;
    while !sh.stop.load(Ordering::Relaxed) {
        if idle && !wait_readable(raw_fd, &sh.waker, POLL_MS) {
            continue;
        }
        for (i, b) in bufs.iter_mut().enumerate() {
            iovs[i] = libc::iovec {
                iov_base: b.data.as_mut_ptr().cast(),
                iov_len: MAX_PACKET + RX_INNER,
            };
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_name = std::ptr::null_mut();
            hdr.msg_namelen = 0;
            hdr.msg_iov = &raw mut iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
        }
        let n = match sh.raw.recv_mmsg(&mut msgs) {
            Ok(n) => n,
            Err(e) => {
                add(&sh.counters.rx_errors, 1);
                tracing::debug!(error = %e, "raw IP-in-IP receive failed");
                idle = true;
                continue;
            }
        };
        idle = n == 0;
        if idle {
            continue;
        }
        let table = view.refresh();
        let mtu = sh.mtu.load(Ordering::Relaxed) as usize;
        let (mut malformed, mut unknown, mut bytes, mut delivered, mut errors) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut w = 0;
        for i in 0..n {
            let len = msgs[i].msg_len as usize;
            let truncated = msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let b = &mut bufs[i];
            let r = if truncated {
                Err(RxDrop::Malformed)
            } else {
                decap(b.data, len, table)
            };
            match r {
                Ok(inner) if inner > mtu && mtu >= 576 => {
                    // Merged by GRO on the underlay interface: already one
                    // big segment of a TCP flow. Everything before it goes
                    // first, so the flow stays in order.
                    errors += flush(sh, &mut gro, &mut bufs[..w]);
                    delivered += w as u64;
                    w = 0;
                    bytes += inner as u64;
                    match write_merged(sh, bufs[i].data, inner, mtu) {
                        Ok(()) => delivered += 1,
                        Err(RxDrop::Malformed) => malformed += 1,
                        Err(RxDrop::UnknownSource) => unknown += 1,
                    }
                }
                Ok(inner) => {
                    b.len = RX_INNER + inner;
                    bytes += inner as u64;
                    bufs.swap(i, w);
                    w += 1;
                }
                Err(RxDrop::Malformed) => malformed += 1,
                Err(RxDrop::UnknownSource) => unknown += 1,
            }
        }
        errors += flush(sh, &mut gro, &mut bufs[..w]);
        delivered += w as u64;
        let c = &sh.counters;
        add(&c.rx_packets, delivered);
        add(&c.rx_bytes, bytes);
        add(&c.rx_malformed, malformed);
        add(&c.rx_unknown_source, unknown);
        add(&c.rx_errors, errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_slots_hold_one_packet_of_the_mtu_and_64_kib_while_it_is_unknown() {
        assert_eq!(slot_stride(0), MAX_PACKET);
        assert_eq!(slot_stride(1480), 1536);
        assert_eq!(slot_stride(8980), 9024);
        assert_eq!(slot_stride(65535), MAX_PACKET);
        // Whole cache lines, never smaller than the MTU.
        for mtu in [68, 576, 1280, 1450, 1480, 9000, 65000] {
            let s = slot_stride(mtu);
            assert!(s >= mtu as usize && s.is_multiple_of(64), "{mtu}: {s}");
        }
    }

    fn outer(src: [u8; 4], inner_len: u16) -> Vec<u8> {
        let mut b = vec![0u8; 20 + usize::from(inner_len)];
        b[0] = 0x45;
        b[9] = 4;
        b[12..16].copy_from_slice(&src);
        b[20] = 0x45;
        b[22..24].copy_from_slice(&inner_len.to_be_bytes());
        b[29] = 6;
        b
    }

    fn table() -> PeerTable {
        PeerTable::new(
            &[(
                "10.65.1.0/26".parse().unwrap(),
                "172.30.1.1".parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
    }

    #[test]
    fn decap_accepts_known_nodes_only() {
        let mut b = outer([172, 30, 1, 1], 40);
        let n = b.len();
        assert_eq!(decap(&mut b, n, &table()), Ok(40));
        let mut b = outer([172, 30, 9, 9], 40);
        assert_eq!(decap(&mut b, n, &table()), Err(RxDrop::UnknownSource));
    }

    #[test]
    fn decap_rejects_lying_lengths_and_moves_past_options() {
        let mut b = outer([172, 30, 1, 1], 40);
        let n = b.len();
        b[22..24].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(decap(&mut b, n, &table()), Err(RxDrop::Malformed));
        // An outer header with 4 bytes of options.
        let mut b = vec![0u8; 24 + 40];
        b[0] = 0x46;
        b[12..16].copy_from_slice(&[172, 30, 1, 1]);
        b[24] = 0x45;
        b[26..28].copy_from_slice(&40u16.to_be_bytes());
        b[33] = 17;
        assert_eq!(decap(&mut b, 64, &table()), Ok(40));
        assert_eq!(b[RX_INNER], 0x45);
        assert_eq!(b[RX_INNER + 9], 17);
    }

    #[test]
    fn frag_needed_quotes_the_header_and_checksums() {
        let mut inner = vec![0u8; 1500];
        inner[0] = 0x45;
        inner[9] = 6;
        inner[12..16].copy_from_slice(&[10, 65, 0, 5]);
        inner[16..20].copy_from_slice(&[10, 65, 1, 5]);
        let mut out = [0u8; 128];
        let len = icmp_frag_needed(
            &mut out,
            u32::from(Ipv4Addr::new(10, 65, 0, 1)),
            &inner,
            1400,
        )
        .unwrap();
        assert_eq!(len, 20 + 8 + 28);
        assert_eq!(&out[16..20], &[10, 65, 0, 5]);
        assert_eq!((out[20], out[21]), (3, 4));
        assert_eq!(u16::from_be_bytes([out[26], out[27]]), 1400);
        assert_eq!(fold(ones_sum(&out[..20])), 0);
        assert_eq!(fold(ones_sum(&out[20..len])), 0);
        // Never an error about an error.
        inner[9] = 1;
        inner[20] = 3;
        assert!(icmp_frag_needed(&mut out, 1, &inner, 1400).is_none());
    }

    #[test]
    fn rx_buffer_never_grows_past_its_allocation() {
        let mut data = [0u8; 8];
        let mut b = RxBuf {
            data: &mut data,
            len: 0,
        };
        b.buf_extend_from_slice(&[1; 6]);
        b.buf_extend_from_slice(&[2; 6]);
        assert_eq!(b.as_ref(), &[1, 1, 1, 1, 1, 1, 2, 2]);
        b.buf_resize(3, 0);
        b.buf_resize(20, 9);
        assert_eq!(b.as_ref().len(), 8);
        assert_eq!(b.as_ref()[3..], [9; 5]);
    }
}
