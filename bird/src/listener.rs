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

/// A bound listener and its accept task (stopped on drop).
pub struct Listener {
    addr: SocketAddr,
    sock: Arc<TcpListener>,
    accept: JoinHandle<()>,
    md5: HashMap<IpAddr, Vec<u8>>,
}

impl Drop for Listener {
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
    /// Listens on `cfg.listen`; connections go where `peers` says.
    pub fn bind(cfg: &Config, peers: PeerLookup) -> io::Result<Listener> {
        let keys = md5_keys(cfg);
        let md5: Vec<(IpAddr, Vec<u8>)> = keys.clone().into_iter().collect();
        let sock = Arc::new(network::listen(cfg.listen, &md5, any_gtsm(cfg))?);
        let accept = tokio::spawn(accept_loop(sock.clone(), peers));
        info!(listen = %cfg.listen, "listening for BGP");
        Ok(Listener {
            addr: cfg.listen,
            sock,
            accept,
            md5: keys,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes the socket before returning, so another
    /// listener can bind an overlapping address on the same port at once
    /// (a wildcard and a specific address conflict while both listen).
    pub async fn close(mut self) {
        self.accept.abort();
        let accept = std::mem::replace(&mut self.accept, tokio::spawn(async {}));
        // Resolves once the aborted task is dropped, with its socket.
        let _ = accept.await;
        info!(listen = %self.addr, "stopped listening for BGP");
    }

    /// Installs the keys of `cfg`'s peers and removes the others; answers
    /// with TTL 255 once some peer uses GTSM.
    pub fn update(&mut self, cfg: &Config) {
        let keys = md5_keys(cfg);
        let v6 = self.addr.is_ipv6();
        for (peer, key) in &keys {
            if self.md5.get(peer) != Some(key)
                && let Err(e) = network::set_md5(&*self.sock, *peer, Some(key), v6)
            {
                warn!(%peer, error = %e, "cannot install the TCP-MD5 key on the listener");
            }
        }
        for peer in self.md5.keys().filter(|p| !keys.contains_key(p)) {
            let _ = network::set_md5(&*self.sock, *peer, None, v6);
        }
        self.md5 = keys;
        if any_gtsm(cfg)
            && let Err(e) = network::listener_ttl_255(&self.sock)
        {
            warn!(error = %e, "cannot set TTL 255 on the listener for GTSM peers");
        }
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
