//! Test traffic between namespaces: a TCP sink that verifies what it
//! receives byte for byte and reports who connected, and a sender of the
//! same deterministic pattern. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::{LabError, Netns};

/// Byte `i` of the test stream: not periodic at any packet or page size,
/// so a reordered, duplicated or lost segment cannot go unnoticed.
pub fn pattern_byte(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8 ^ (i >> 13) as u8
}

/// What a [`TcpSink`] saw on its one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkReport {
    /// The peer's address as the sink's namespace sees it (after any NAT).
    pub peer: SocketAddr,
    pub bytes: u64,
    /// Every byte matched [`pattern_byte`].
    pub intact: bool,
}

/// A one-connection TCP server inside a namespace.
#[derive(Debug)]
pub struct TcpSink {
    port: u16,
    thread: Option<JoinHandle<Result<SinkReport, std::io::Error>>>,
}

fn lab_io(what: &str, source: std::io::Error) -> LabError {
    LabError::Io {
        path: what.into(),
        source,
    }
}

impl TcpSink {
    /// Listens on `0.0.0.0:<ephemeral>` inside `ns`, accepts one connection
    /// within `timeout` and reads it to the end (bounded by `timeout` too).
    pub fn start(ns: &Netns, timeout: Duration) -> Result<TcpSink, LabError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = ns.spawn_thread(move || -> Result<SinkReport, std::io::Error> {
            let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            };
            let _ = tx.send(listener.local_addr().map(|a| a.port()));
            listener.set_nonblocking(true)?;
            let deadline = Instant::now() + timeout;
            let (mut stream, peer) = loop {
                match listener.accept() {
                    Ok(c) => break c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() >= deadline {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "no connection arrived",
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e),
                }
            };
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(Duration::from_millis(200)))?;
            let mut buf = vec![0u8; 1 << 16];
            let (mut bytes, mut intact) = (0u64, true);
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        for (k, b) in buf[..n].iter().enumerate() {
                            intact &= *b == pattern_byte(bytes + k as u64);
                        }
                        bytes += n as u64;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(e),
                }
                if Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("stream not finished after {bytes} bytes"),
                    ));
                }
            }
            Ok(SinkReport {
                peer,
                bytes,
                intact,
            })
        })?;
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| {
                lab_io(
                    "tcp sink",
                    std::io::Error::other("sink thread never started"),
                )
            })?
            .map_err(|e| lab_io("tcp sink bind", e))?;
        Ok(TcpSink {
            port,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits for the connection to finish; its report.
    pub fn wait(mut self) -> Result<SinkReport, LabError> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r.map_err(|e| lab_io("tcp sink", e)),
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Err(lab_io("tcp sink", std::io::Error::other("already waited"))),
        }
    }
}

/// Connects from inside `ns` to `dst` and sends `bytes` bytes of the
/// pattern, then closes. Bounded by `timeout`.
pub fn send_pattern(
    ns: &Netns,
    dst: SocketAddr,
    bytes: u64,
    timeout: Duration,
) -> Result<(), LabError> {
    ns.run(move || -> Result<(), std::io::Error> {
        let deadline = Instant::now() + timeout;
        let mut s = TcpStream::connect_timeout(&dst, timeout)?;
        s.set_write_timeout(Some(Duration::from_millis(200)))?;
        let mut buf = vec![0u8; 1 << 16];
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(buf.len() as u64) as usize;
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern_byte(sent + k as u64);
            }
            let mut off = 0;
            while off < n {
                match s.write(&buf[off..n]) {
                    Ok(w) => off += w,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(e),
                }
                if Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("sent only {} of {bytes} bytes", sent + off as u64),
                    ));
                }
            }
            sent += n as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    })?
    .map_err(|e| lab_io(&format!("tcp send to {dst}"), e))
}

/// Runs a sink in `to`, sends `bytes` from `from` to `to_ip`, and returns
/// the sink's report.
pub fn tcp_transfer(
    from: &Netns,
    to: &Netns,
    to_ip: Ipv4Addr,
    bytes: u64,
    timeout: Duration,
) -> Result<SinkReport, LabError> {
    let sink = TcpSink::start(to, timeout)?;
    send_pattern(from, SocketAddr::from((to_ip, sink.port())), bytes, timeout)?;
    sink.wait()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_not_periodic_at_packet_sizes() {
        for period in [1u64, 2, 4, 1448, 1460, 4096, 65536] {
            let same = (0..10_000u64)
                .filter(|i| pattern_byte(*i) == pattern_byte(i + period))
                .count();
            assert!(same < 200, "period {period}: {same} matches");
        }
    }
}
