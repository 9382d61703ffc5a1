//! A packet capture on one interface of a lab namespace: what tcpdump would
//! show, as data a test can assert on (was anything IP-in-IP? VXLAN, with
//! which VNI? fragmented? whose source address?).
//!
//! An `AF_PACKET` socket bound to the interface sees every frame in both
//! directions, copied into a ring as it passes; only the IPv4 header (and,
//! for IP-in-IP, the inner header; for VXLAN, the UDP ports, the VNI and
//! the inner Ethernet and IPv4 headers) of each is kept. The socket is open and bound before
//! [`Capture::start`] returns, so nothing sent afterwards is missed; the
//! kernel's drop counter is reported so a test can tell a quiet wire from
//! an overrun capture.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::{LabError, Netns};

/// Packets kept per capture; more are counted, not stored.
pub const MAX_PACKETS: usize = 1_000_000;

/// A capture ends by itself after this long even if never stopped.
pub const MAX_DURATION: Duration = Duration::from_secs(300);

/// The inner header of an IP-in-IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerHeader {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
}

/// The UDP port VXLAN is recognised on (IANA's, Calico's default).
pub const VXLAN_PORT: u16 = 4789;

/// A VXLAN packet's encapsulation: UDP ports, VXLAN header and the inner
/// Ethernet header (and IPv4 header, if the inner frame is IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanView {
    pub src_port: u16,
    pub dst_port: u16,
    /// The "I" flag (a valid VNI) is set.
    pub vni_valid: bool,
    pub vni: u32,
    pub inner_dst_mac: [u8; 6],
    pub inner_src_mac: [u8; 6],
    pub inner_ethertype: u16,
    pub inner: Option<InnerHeader>,
}

impl VxlanView {
    /// Parses a UDP datagram (header and on) to [`VXLAN_PORT`].
    pub fn parse(udp: &[u8]) -> Option<VxlanView> {
        let b = udp.get(..8 + 8 + 14)?;
        let src_port = u16::from_be_bytes([b[0], b[1]]);
        let dst_port = u16::from_be_bytes([b[2], b[3]]);
        if dst_port != VXLAN_PORT {
            return None;
        }
        let vx = &b[8..16];
        let eth = &b[16..30];
        let mut inner_dst_mac = [0u8; 6];
        let mut inner_src_mac = [0u8; 6];
        inner_dst_mac.copy_from_slice(&eth[..6]);
        inner_src_mac.copy_from_slice(&eth[6..12]);
        let inner_ethertype = u16::from_be_bytes([eth[12], eth[13]]);
        let inner = if inner_ethertype == 0x0800 {
            udp.get(30..)
                .and_then(ipv4_header)
                .map(|(src, dst, protocol, ..)| InnerHeader { src, dst, protocol })
        } else {
            None
        };
        Some(VxlanView {
            src_port,
            dst_port,
            vni_valid: vx[0] & 0x08 != 0,
            vni: u32::from_be_bytes([0, vx[4], vx[5], vx[6]]),
            inner_dst_mac,
            inner_src_mac,
            inner_ethertype,
            inner,
        })
    }
}

/// One IPv4 packet seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Sent by this namespace (rather than received).
    pub outgoing: bool,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// The IP total length.
    pub len: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In bytes.
    pub fragment_offset: u16,
    /// Set for protocol 4 (IP-in-IP) packets.
    pub inner: Option<InnerHeader>,
    /// Set for UDP to [`VXLAN_PORT`] (first fragments and whole packets).
    pub vxlan: Option<VxlanView>,
}

impl Packet {
    /// A fragment of a larger packet (first, middle or last).
    pub fn is_fragment(&self) -> bool {
        self.more_fragments || self.fragment_offset != 0
    }

    /// Parses an IPv4 header (and an IP-in-IP packet's inner header).
    pub fn parse(b: &[u8], outgoing: bool) -> Option<Packet> {
        let (src, dst, protocol, len, flags_frag, ihl) = ipv4_header(b)?;
        let inner = if protocol == 4 {
            b.get(ihl..)
                .and_then(ipv4_header)
                .map(|(src, dst, protocol, ..)| InnerHeader { src, dst, protocol })
        } else {
            None
        };
        let vxlan = if protocol == 17 && flags_frag & 0x1fff == 0 {
            b.get(ihl..).and_then(VxlanView::parse)
        } else {
            None
        };
        Some(Packet {
            outgoing,
            src,
            dst,
            protocol,
            len,
            dont_fragment: flags_frag & 0x4000 != 0,
            more_fragments: flags_frag & 0x2000 != 0,
            fragment_offset: (flags_frag & 0x1fff) * 8,
            inner,
            vxlan,
        })
    }
}

fn ipv4_header(b: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, u16, u16, usize)> {
    if b.len() < 20 || b[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    let len = u16::from_be_bytes([b[2], b[3]]);
    let flags_frag = u16::from_be_bytes([b[6], b[7]]);
    let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
    let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    Some((src, dst, b[9], len, flags_frag, ihl))
}

/// What a stopped capture saw.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub packets: Vec<Packet>,
    /// Packets seen beyond [`MAX_PACKETS`].
    pub overflow: usize,
    /// Packets the kernel dropped because the capture fell behind.
    pub kernel_drops: u32,
}

impl Captured {
    pub fn ipip(&self) -> impl Iterator<Item = &Packet> {
        self.packets.iter().filter(|p| p.protocol == 4)
    }

    /// The VXLAN packets (UDP to [`VXLAN_PORT`]).
    pub fn vxlan(&self) -> impl Iterator<Item = (&Packet, &VxlanView)> {
        self.packets
            .iter()
            .filter_map(|p| p.vxlan.as_ref().map(|v| (p, v)))
    }
}

/// A running capture; see the module documentation.
#[derive(Debug)]
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Captured, std::io::Error>>>,
    iface: String,
}

impl Capture {
    /// Starts capturing on `iface` inside `ns`.
    pub fn start(ns: &Netns, iface: &str) -> Result<Capture, LabError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), std::io::Error>>();
        let name = iface.to_string();
        let flag = stop.clone();
        let thread = ns.spawn_thread(move || {
            let sock = match PacketSocket::open(&name) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(std::io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            };
            sock.run(&flag)
        })?;
        let io_err = |source| LabError::Io {
            path: format!("capture on {iface}").into(),
            source,
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(io_err(e)),
            Err(_) => {
                return Err(io_err(std::io::Error::other(
                    "capture thread never started",
                )));
            }
        }
        Ok(Capture {
            stop,
            thread: Some(thread),
            iface: iface.to_string(),
        })
    }

    /// Stops the capture and returns what it saw.
    pub fn stop(mut self) -> Result<Captured, LabError> {
        self.stop.store(true, Ordering::Relaxed);
        let iface = self.iface.clone();
        let io_err = |source| LabError::Io {
            path: format!("capture on {iface}").into(),
            source,
        };
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r.map_err(io_err),
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Err(io_err(std::io::Error::other("capture already stopped"))),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An `AF_PACKET` socket with a `TPACKET_V2` receive ring.
///
/// A ring, not `recvfrom`: the kernel copies a frame into the ring as it
/// passes the tap, while a plain packet socket queues a clone and copies it
/// only when read. A clone shares its data with the original, and the
/// kernel's own IP-in-IP receive path writes the inner packet's Ethernet
/// header over the outer IP header in that shared buffer before the
/// capture thread reads it: a kernel-tunnel node's incoming tunnel packets
/// came out of `recvfrom` with garbage addresses and fragment bits.
struct PacketSocket {
    fd: std::os::fd::OwnedFd,
    ring: *mut u8,
    ring_len: usize,
    frames: usize,
}

// SAFETY: the ring is a private mapping used only by the thread that owns
// the socket.
unsafe impl Send for PacketSocket {}

/// `struct tpacket2_hdr` (linux/if_packet.h), the head of each ring frame.
#[repr(C)]
struct Tpacket2Hdr {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_sec: u32,
    tp_nsec: u32,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
    tp_padding: [u8; 4],
}

/// `struct tpacket_req`.
#[repr(C)]
struct TpacketReq {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
}

const TPACKET_V2: libc::c_int = 1;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_RX_RING: libc::c_int = 5;
const TP_STATUS_USER: u32 = 1;
/// Each frame: the header, the sender's `sockaddr_ll`, and the packet's
/// first bytes (headers are all a capture keeps).
const FRAME_SIZE: usize = 256;
const BLOCK_SIZE: usize = 1 << 16;
/// 16 MiB: 65,536 frames.
const BLOCKS: usize = 256;
/// Where the `sockaddr_ll` sits in a frame (TPACKET_ALIGN of the header).
const SLL_OFFSET: usize = (std::mem::size_of::<Tpacket2Hdr>() + 15) & !15;

impl PacketSocket {
    fn open(iface: &str) -> Result<PacketSocket, std::io::Error> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let cname = std::ffi::CString::new(iface).map_err(std::io::Error::other)?;
        // SAFETY: if_nametoindex reads a NUL-terminated string we own.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        setsockopt(&fd, libc::SOL_PACKET, PACKET_VERSION, &TPACKET_V2)?;
        let frames = BLOCK_SIZE / FRAME_SIZE * BLOCKS;
        let req = TpacketReq {
            tp_block_size: BLOCK_SIZE as u32,
            tp_block_nr: BLOCKS as u32,
            tp_frame_size: FRAME_SIZE as u32,
            tp_frame_nr: frames as u32,
        };
        setsockopt(&fd, libc::SOL_PACKET, PACKET_RX_RING, &req)?;
        let ring_len = BLOCK_SIZE * BLOCKS;
        // SAFETY: maps the ring the kernel just allocated for this socket;
        // the result is checked and unmapped in Drop.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let sock = PacketSocket {
            fd,
            ring: ring.cast(),
            ring_len,
            frames,
        };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = i32::try_from(ifindex).map_err(std::io::Error::other)?;
        // SAFETY: bind with a correctly sized sockaddr_ll we own.
        let rc = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(sock)
    }

    /// The status word of frame `i`, shared with the kernel.
    fn status(&self, i: usize) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: frame i lies inside the mapping (i < frames), starts
        // 16-byte aligned, and begins with the u32 status the kernel and we
        // hand each other; AtomicU32 has u32's layout.
        unsafe {
            &*self
                .ring
                .add(i * FRAME_SIZE)
                .cast::<std::sync::atomic::AtomicU32>()
        }
    }

    /// Parses frame `i` (owned by us: its status says so).
    fn frame(&self, i: usize) -> Option<Packet> {
        // SAFETY: frame i lies inside the mapping, starts with a
        // tpacket2_hdr followed by a sockaddr_ll at SLL_OFFSET, both
        // written by the kernel before it set TP_STATUS_USER (read with
        // Acquire in `run`).
        let (hdr, sll) = unsafe {
            let base = self.ring.add(i * FRAME_SIZE);
            (
                &*base.cast::<Tpacket2Hdr>(),
                &*base.add(SLL_OFFSET).cast::<libc::sockaddr_ll>(),
            )
        };
        if sll.sll_protocol != (libc::ETH_P_IP as u16).to_be() {
            return None;
        }
        let start = usize::from(hdr.tp_net);
        let len = usize::try_from(hdr.tp_snaplen).unwrap_or(0);
        if start >= FRAME_SIZE {
            return None;
        }
        let len = len.min(FRAME_SIZE - start);
        // SAFETY: [start, start + len) lies inside frame i (checked above).
        let data =
            unsafe { std::slice::from_raw_parts(self.ring.add(i * FRAME_SIZE + start), len) };
        Packet::parse(data, sll.sll_pkttype == libc::PACKET_OUTGOING)
    }

    fn run(&self, stop: &AtomicBool) -> Result<Captured, std::io::Error> {
        use std::os::fd::AsRawFd;
        let mut out = Captured::default();
        let deadline = Instant::now() + MAX_DURATION;
        let mut next = 0;
        // One more pass over the ring after the stop flag, so packets
        // already captured when the test stops the capture are counted.
        let mut draining = false;
        loop {
            let status = self.status(next);
            if status.load(Ordering::Acquire) & TP_STATUS_USER != 0 {
                if let Some(p) = self.frame(next) {
                    if out.packets.len() < MAX_PACKETS {
                        out.packets.push(p);
                    } else {
                        out.overflow += 1;
                    }
                }
                // TP_STATUS_KERNEL: the frame is the kernel's again.
                status.store(0, Ordering::Release);
                next = (next + 1) % self.frames;
                continue;
            }
            if draining {
                break;
            }
            if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                draining = true;
                continue;
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one pollfd we own.
            let rc = unsafe { libc::poll(&raw mut pfd, 1, 20) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
        let mut stats = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut slen = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: getsockopt into a correctly sized struct we own.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut stats).cast(),
                &mut slen,
            )
        };
        if rc == 0 {
            out.kernel_drops = stats.tp_drops;
        }
        Ok(out)
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_len);
        }
    }
}

fn setsockopt<T>(
    fd: &std::os::fd::OwnedFd,
    level: i32,
    name: i32,
    value: &T,
) -> Result<(), std::io::Error> {
    use std::os::fd::AsRawFd;
    // SAFETY: `value` points at a live T of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipip_packet_parses_outer_and_inner_headers() {
        let mut b = vec![0u8; 40];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&40u16.to_be_bytes());
        b[6] = 0x40;
        b[9] = 4;
        b[12..16].copy_from_slice(&[172, 30, 0, 1]);
        b[16..20].copy_from_slice(&[172, 30, 1, 1]);
        b[20] = 0x45;
        b[29] = 6;
        b[32..36].copy_from_slice(&[10, 65, 0, 1]);
        b[36..40].copy_from_slice(&[10, 65, 1, 1]);
        let p = Packet::parse(&b, true).unwrap();
        assert_eq!(p.protocol, 4);
        assert!(p.dont_fragment && !p.is_fragment());
        assert_eq!(
            p.inner,
            Some(InnerHeader {
                src: Ipv4Addr::new(10, 65, 0, 1),
                dst: Ipv4Addr::new(10, 65, 1, 1),
                protocol: 6
            })
        );
    }

    /// Outer IPv4 + UDP + VXLAN + Ethernet + inner IPv4 (70 bytes).
    fn vxlan_packet(dst_port: u16, vni: u32, ethertype: u16) -> Vec<u8> {
        let mut b = vec![0u8; 70];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&70u16.to_be_bytes());
        b[9] = 17;
        b[12..16].copy_from_slice(&[172, 30, 0, 1]);
        b[16..20].copy_from_slice(&[172, 30, 1, 1]);
        b[20..22].copy_from_slice(&54321u16.to_be_bytes());
        b[22..24].copy_from_slice(&dst_port.to_be_bytes());
        b[24..26].copy_from_slice(&50u16.to_be_bytes());
        b[28] = 0x08;
        b[32..35].copy_from_slice(&vni.to_be_bytes()[1..]);
        b[36..42].copy_from_slice(&[0x66, 0, 0, 0, 0, 2]);
        b[42..48].copy_from_slice(&[0x66, 0, 0, 0, 0, 1]);
        b[48..50].copy_from_slice(&ethertype.to_be_bytes());
        b[50] = 0x45;
        b[59] = 1;
        b[62..66].copy_from_slice(&[10, 65, 0, 2]);
        b[66..70].copy_from_slice(&[10, 65, 1, 2]);
        b
    }

    #[test]
    fn vxlan_packet_parses_ports_vni_and_inner_headers() {
        let p = Packet::parse(&vxlan_packet(4789, 4096, 0x0800), true).unwrap();
        assert_eq!(p.protocol, 17);
        assert!(p.inner.is_none());
        let v = p.vxlan.unwrap();
        assert_eq!((v.src_port, v.dst_port), (54321, 4789));
        assert!(v.vni_valid);
        assert_eq!(v.vni, 4096);
        assert_eq!(v.inner_dst_mac, [0x66, 0, 0, 0, 0, 2]);
        assert_eq!(v.inner_src_mac, [0x66, 0, 0, 0, 0, 1]);
        assert_eq!(
            v.inner,
            Some(InnerHeader {
                src: Ipv4Addr::new(10, 65, 0, 2),
                dst: Ipv4Addr::new(10, 65, 1, 2),
                protocol: 1
            })
        );
        let seen = Captured {
            packets: vec![p],
            ..Captured::default()
        };
        assert_eq!(seen.vxlan().count(), 1);
        // The largest VNI fits 24 bits.
        let big = Packet::parse(&vxlan_packet(4789, 0xff_ffff, 0x0800), true).unwrap();
        assert_eq!(big.vxlan.unwrap().vni, 0xff_ffff);
    }

    #[test]
    fn other_udp_arp_inside_and_truncated_vxlan_are_told_apart() {
        // Another port: plain UDP.
        let p = Packet::parse(&vxlan_packet(8472, 1, 0x0800), true).unwrap();
        assert!(p.vxlan.is_none());
        // ARP inside VXLAN: the Ethernet header, no inner IPv4.
        let p = Packet::parse(&vxlan_packet(4789, 4096, 0x0806), true).unwrap();
        let v = p.vxlan.unwrap();
        assert_eq!(v.inner_ethertype, 0x0806);
        assert!(v.inner.is_none());
        // Cut inside the inner Ethernet header: not a VXLAN view.
        let b = vxlan_packet(4789, 4096, 0x0800);
        assert!(Packet::parse(&b[..45], true).unwrap().vxlan.is_none());
        // A later fragment's payload is not a UDP header.
        let mut frag = vxlan_packet(4789, 4096, 0x0800);
        frag[6..8].copy_from_slice(&185u16.to_be_bytes());
        assert!(Packet::parse(&frag, true).unwrap().vxlan.is_none());
    }

    #[test]
    fn fragment_fields_are_decoded() {
        let mut b = vec![0u8; 20];
        b[0] = 0x45;
        b[6..8].copy_from_slice(&(0x2000u16 | 185).to_be_bytes());
        let p = Packet::parse(&b, false).unwrap();
        assert!(p.more_fragments && p.is_fragment());
        assert_eq!(p.fragment_offset, 1480);
        assert!(Packet::parse(&b[..19], false).is_none());
    }
}
