//! Probes for network policy tests (felix's namespace tests and the lab's
//! truth tables): TCP, UDP and ICMP servers inside a namespace, and
//! one-shot probes with bounded timeouts (an allowed flow answers within
//! milliseconds; a denied one is dropped, so the probe waits out its
//! timeout).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{LabError, Netns};
use socket2::{Domain, Protocol, Socket, Type};

/// What a probe sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp(u16),
    Udp(u16),
    /// An echo request (ICMP for IPv4, ICMPv6 for IPv6).
    Ping,
}

/// Servers in one namespace: TCP on each of `tcp_ports` (a connection
/// is accepted and, for the flow tests, echoed), UDP echo on each of
/// `udp_ports`, all dual-stack. Stopped and joined when dropped.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Binds every server inside `ns` (so a port in use is an error here,
    /// not a silent thread death) and serves from threads of this process.
    pub fn start(ns: &Netns, tcp_ports: &[u16], udp_ports: &[u16]) -> Result<Servers, LabError> {
        // Ping sockets for root in this namespace (echo requests without
        // raw sockets).
        ns.sysctl("net.ipv4.ping_group_range", "0 2147483647")?;
        let (tcp, udp) = (tcp_ports.to_vec(), udp_ports.to_vec());
        let bound = ns.run(move || -> std::io::Result<_> {
            let tcp = tcp
                .iter()
                .map(|&p| TcpListener::bind((Ipv6Addr::UNSPECIFIED, p)))
                .collect::<std::io::Result<Vec<_>>>()?;
            let udp = udp
                .iter()
                .map(|&p| UdpSocket::bind((Ipv6Addr::UNSPECIFIED, p)))
                .collect::<std::io::Result<Vec<_>>>()?;
            Ok((tcp, udp))
        })?;
        let (listeners, udp_sockets) = bound.map_err(|source| LabError::Io {
            path: ns.path(),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for l in listeners {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || serve_tcp(&l, &stop)));
        }
        for s in udp_sockets {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || serve_udp(&s, &stop)));
        }
        Ok(Servers { stop, threads })
    }
}

fn serve_tcp(l: &TcpListener, stop: &Arc<AtomicBool>) {
    if l.set_nonblocking(true).is_err() {
        return;
    }
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, _)) => {
                let stop = stop.clone();
                // An accepted socket inherits non-blocking on some systems.
                let _ = s.set_nonblocking(false);
                conns.push(std::thread::spawn(move || echo_tcp(s, &stop)));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
        conns.retain(|c| !c.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
}

fn serve_udp(s: &UdpSocket, stop: &AtomicBool) {
    if s.set_read_timeout(Some(Duration::from_millis(20))).is_err() {
        return;
    }
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    }
}

fn echo_tcp(mut s: TcpStream, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 4096];
    // Bounded: ends when the peer closes, on an error, or at stop.
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A source port (UDP) or echo identifier (ICMP) not used by an earlier
/// probe of this process, so no probe can ride on a conntrack entry an
/// earlier, allowed probe left behind (UDP and ICMP entries live 30 s).
fn fresh_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    20_000 + u16::try_from(n % 40_000).unwrap_or(0)
}

/// One attempt: whether `dst` answered within `timeout`.
pub fn probe_once(kind: Kind, dst: IpAddr, timeout: Duration) -> bool {
    match kind {
        Kind::Tcp(port) => {
            match TcpStream::connect_timeout(&SocketAddr::new(dst, port), timeout) {
                Ok(_) => true,
                // A reset came back: the SYN got through.
                Err(e) => e.kind() == ErrorKind::ConnectionRefused,
            }
        }
        Kind::Udp(port) => {
            let local: IpAddr = if dst.is_ipv4() {
                IpAddr::from([0u8; 4])
            } else {
                IpAddr::from([0u16; 8])
            };
            let Ok(s) =
                UdpSocket::bind((local, fresh_port())).or_else(|_| UdpSocket::bind((local, 0)))
            else {
                return false;
            };
            let payload = b"calico-rs policy probe";
            if s.send_to(payload, (dst, port)).is_err() {
                return false;
            }
            let deadline = Instant::now() + timeout;
            let mut buf = [0u8; 64];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                let _ = s.set_read_timeout(Some(left));
                match s.recv_from(&mut buf) {
                    Ok((n, from)) if from.ip() == dst && &buf[..n] == payload => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        }
        Kind::Ping => ping(dst, timeout),
    }
}

fn ping(dst: IpAddr, timeout: Duration) -> bool {
    let (domain, proto, request, reply) = if dst.is_ipv4() {
        (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8)
    } else {
        (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8)
    };
    let Ok(s) = Socket::new(domain, Type::DGRAM, Some(proto)) else {
        return false;
    };
    let local: IpAddr = if dst.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u16; 8])
    };
    // For a ping socket the bound "port" is the echo identifier.
    if s.bind(&SocketAddr::new(local, fresh_port()).into())
        .is_err()
        && s.bind(&SocketAddr::new(local, 0).into()).is_err()
    {
        return false;
    }
    if s.connect(&SocketAddr::new(dst, 0).into()).is_err() {
        return false;
    }
    // Type, code, checksum and identifier are filled in by the kernel.
    let msg = [request, 0, 0, 0, 0, 0, 0, 1, b'c', b'r', b's'];
    if s.send(&msg).is_err() {
        return false;
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 128];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = s.set_read_timeout(Some(left));
        match s.recv(&mut buf) {
            // SAFETY: recv initialised the first n bytes.
            Ok(n) if n > 0 && unsafe { buf[0].assume_init() } == reply => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// A probe from inside `ns`: a short attempt, and when it fails a longer
/// one, so a busy machine does not turn an allowed flow into a denied
/// one (a denied flow waits 1.3 s). Runs on its own thread; join the
/// handle for the answer.
pub fn probe_from(ns: &Netns, kind: Kind, dst: IpAddr) -> Result<JoinHandle<bool>, LabError> {
    probe_within(ns, kind, dst, Duration::from_millis(1300))
}

/// [`probe_from`] with a denied flow waiting `bound` in all: a quarter
/// for the first attempt, the rest for the second.
pub fn probe_within(
    ns: &Netns,
    kind: Kind,
    dst: IpAddr,
    bound: Duration,
) -> Result<JoinHandle<bool>, LabError> {
    let first = (bound / 4).max(Duration::from_millis(100));
    let second = bound.saturating_sub(first);
    ns.spawn_thread(move || probe_once(kind, dst, first) || probe_once(kind, dst, second))
}

/// A long-lived TCP connection from `ns` to `dst`, exchanging a message
/// every 20 ms; counts exchanges that worked and failed, until dropped.
pub struct Flow {
    stop: Arc<AtomicBool>,
    ok: Arc<std::sync::atomic::AtomicU64>,
    failed: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Flow {
    /// Connects; an error if it cannot (the flow must start allowed).
    pub fn start(ns: &Netns, dst: SocketAddr) -> Result<Flow, LabError> {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s2, o2, f2) = (stop.clone(), ok.clone(), failed.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = ns.spawn_thread(move || {
            let mut s = match TcpStream::connect_timeout(&dst, Duration::from_secs(2)) {
                Ok(s) => {
                    let _ = tx.send(true);
                    s
                }
                Err(_) => {
                    let _ = tx.send(false);
                    return;
                }
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 8];
            let mut i = 0u64;
            while !s2.load(Ordering::Relaxed) {
                i += 1;
                let msg = i.to_be_bytes();
                let good =
                    s.write_all(&msg).is_ok() && s.read_exact(&mut buf).is_ok() && buf == msg;
                if good {
                    o2.fetch_add(1, Ordering::Relaxed);
                } else {
                    f2.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })?;
        if !rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false) {
            let _ = thread.join();
            return Err(LabError::Topology(format!(
                "the flow to {dst} could not connect from {}",
                ns.name()
            )));
        }
        Ok(Flow {
            stop,
            ok,
            failed,
            thread: Some(thread),
        })
    }

    /// (exchanges that worked, exchanges that failed).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
