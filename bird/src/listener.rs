//! The BGP listener: bound with the TCP-MD5 key of every peer that has
//! one (and TTL 255 when some peer uses GTSM, see [`network::listen`]),
//! kept up to date as peers come and go, and handing each accepted
//! connection to its peer's task.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::network;
use crate::tasks::PeerCommand;

/// Where a connection from an address goes: the command channel of that
/// peer's task, if it is a configured peer.
pub type PeerLookup = Arc<dyn Fn(IpAddr) -> Option<mpsc::Sender<PeerCommand>> + Send + Sync>;

/// The bound listening sockets (one per address: the configured one, and
/// the second of a dual-stack node bound to its addresses) and their
/// accept tasks (stopped on drop).
pub struct Listener {
    socks: Vec<Socket>,
    md5: HashMap<IpAddr, Vec<u8>>,
}

struct Socket {
    addr: SocketAddr,
    sock: Arc<TcpListener>,
    accept: JoinHandle<()>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn md5_keys(cfg: &Config) -> HashMap<IpAddr, Vec<u8>> {
    cfg.peers
        .iter()
        .filter_map(|p| {
            p.session
                .password
                .as_ref()
                .map(|pw| (network::canonical(p.address()), pw.as_bytes().to_vec()))
        })
        .collect()
}

fn any_gtsm(cfg: &Config) -> bool {
    cfg.peers.iter().any(|p| p.session.ttl_security)
}

impl Listener {
    /// Listens on every address of [`Config::listen_addrs`]; connections
    /// go where `peers` says. All or none: a failure closes what was bound.
    pub fn bind(cfg: &Config, peers: PeerLookup) -> io::Result<Listener> {
        let keys = md5_keys(cfg);
        let md5: Vec<(IpAddr, Vec<u8>)> = keys.clone().into_iter().collect();
        let mut socks = Vec::new();
        for addr in cfg.listen_addrs() {
            let sock = Arc::new(network::listen(addr, &md5, any_gtsm(cfg))?);
            let accept = tokio::spawn(accept_loop(sock.clone(), peers.clone()));
            info!(listen = %addr, "listening for BGP");
            socks.push(Socket { addr, sock, accept });
        }
        Ok(Listener { socks, md5: keys })
    }

    /// The addresses listened on.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.socks.iter().map(|s| s.addr).collect()
    }

    /// Stops accepting and closes the sockets before returning, so another
    /// listener can bind an overlapping address on the same port at once
    /// (a wildcard and a specific address conflict while both listen).
    pub async fn close(mut self) {
        for mut s in self.socks.drain(..) {
            s.accept.abort();
            let accept = std::mem::replace(&mut s.accept, tokio::spawn(async {}));
            // Resolves once the aborted task is dropped, with its socket.
            let _ = accept.await;
            info!(listen = %s.addr, "stopped listening for BGP");
        }
    }

    /// Installs the keys of `cfg`'s peers and removes the others; answers
    /// with TTL 255 once some peer uses GTSM.
    pub fn update(&mut self, cfg: &Config) {
        let keys = md5_keys(cfg);
        for s in &self.socks {
            let v6 = s.addr.is_ipv6();
            for (peer, key) in &keys {
                if self.md5.get(peer) != Some(key)
                    && let Err(e) = network::set_md5(&*s.sock, *peer, Some(key), v6)
                {
                    warn!(%peer, error = %e, "cannot install the TCP-MD5 key on the listener");
                }
            }
            for peer in self.md5.keys().filter(|p| !keys.contains_key(p)) {
                let _ = network::set_md5(&*s.sock, *peer, None, v6);
            }
            if any_gtsm(cfg)
                && let Err(e) = network::listener_ttl_255(&s.sock)
            {
                warn!(error = %e, "cannot set TTL 255 on the listener for GTSM peers");
            }
        }
        self.md5 = keys;
    }
}

async fn accept_loop(listener: Arc<TcpListener>, peers: PeerLookup) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => match peers(from.ip()) {
                Some(tx) => {
                    let _ = tx.send(PeerCommand::Incoming(stream)).await;
                }
                None => debug!(%from, "connection from an unconfigured address; closing"),
            },
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
