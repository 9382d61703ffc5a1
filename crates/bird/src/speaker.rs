//! The standalone speaker: peers, the BGP listener and the control
//! socket, run until a shutdown signal.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use tonic::transport::Server;
use tracing::{debug, info, warn};

use crate::config::{Config, ConfigError};
use crate::control::BirdService;
use crate::network;
use crate::session::{self, Local, PeerHandle};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "cannot listen for BGP on {addr}: {source} (is another BGP daemon running, or is the address not local?)"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Control(#[from] proto::UdsError),
}

/// The peers of a running speaker, shared with the listener and the
/// control service.
#[derive(Debug, Default)]
pub struct Peers {
    pub list: Vec<PeerHandle>,
}

impl Peers {
    pub fn find(&self, ip: IpAddr) -> Option<&PeerHandle> {
        let ip = network::canonical(ip);
        self.list
            .iter()
            .find(|p| network::canonical(p.config.address) == ip)
    }
}

/// Runs the speaker described by `cfg`, serving the control API on
/// `socket`, until `shutdown` resolves; then sends every peer a Cease.
pub async fn run(
    cfg: Config,
    socket: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    cfg.validate()?;
    let md5: Vec<(IpAddr, Vec<u8>)> = cfg
        .peers
        .iter()
        .filter_map(|p| {
            p.password
                .as_ref()
                .map(|pw| (p.address, pw.as_bytes().to_vec()))
        })
        .collect();
    let gtsm = cfg.peers.iter().any(|p| p.ttl_security);
    let listener = network::listen(cfg.listen, &md5, gtsm).map_err(|source| Error::Listen {
        addr: cfg.listen,
        source,
    })?;
    info!(listen = %cfg.listen, router_id = %cfg.router_id, asn = cfg.asn, peers = cfg.peers.len(), "BGP speaker starting");

    let control = proto::uds::bind(socket).await?;
    let health = proto::health_service::HealthReporter::new("bird");

    let local = Local {
        asn: cfg.asn,
        router_id: cfg.router_id,
    };
    let peers = Arc::new(Peers {
        list: cfg
            .peers
            .iter()
            .cloned()
            .map(|p| session::spawn(local, p))
            .collect(),
    });

    let accept_peers = peers.clone();
    let accept = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => match accept_peers.find(from.ip()) {
                    Some(p) => p.incoming(stream).await,
                    None => debug!(%from, "connection from an unconfigured address; closing"),
                },
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });

    let router = Server::builder()
        .add_service(health.service())
        .add_service(BirdService::new(peers.clone(), local).into_server());
    health.set_ready();
    let served = proto::uds::serve(router, control, socket, shutdown).await;
    info!("shutting down: sending Cease to every peer");
    accept.abort();
    let mut stopping = tokio::task::JoinSet::new();
    for i in 0..peers.list.len() {
        let peers = peers.clone();
        stopping.spawn(async move {
            if let Some(p) = peers.list.get(i) {
                p.stop().await;
            }
        });
    }
    while stopping.join_next().await.is_some() {}
    served?;
    Ok(())
}
