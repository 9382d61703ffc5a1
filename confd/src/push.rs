//! Delivers the published configuration to bird and felix, and to the
//! rendering file.
//!
//! Each target gets its part of the configuration (bird the BGP half,
//! felix the dataplane half) once per change, over one connection kept
//! open to it. A target has lost its configuration exactly when it is a
//! new process, and a new process means a new connection: when the
//! connection closes (bird or felix exited, crashed or restarted), the
//! pusher connects again and sends the current configuration on the new
//! connection. So nothing is re-sent while nothing changes, and a
//! restarted child is configured as soon as it listens again (connection
//! attempts back off from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]). A refused
//! push is retried the same way; only the newest configuration is ever
//! sent, never a queue of them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::bgpconfig::bgp_config_service_client::BgpConfigServiceClient;
use proto::felix::dataplane_config_service_client::DataplaneConfigServiceClient;
use proto::uds::{Closed, UdsError};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::config::NodeConfig;
use crate::render::render;
use crate::sync::Published;
use crate::wire;

/// First retry after a failed connection or push.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Retries never wait longer than this, so a restarted child is
/// configured within about a second of listening.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Where to push to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Bird,
    Felix,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Bird => "bird",
            Target::Felix => "felix",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Connect(#[from] UdsError),
    #[error("{target} refused the configuration: {}", .status.message())]
    Refused {
        target: Target,
        status: tonic::Status,
    },
}

/// One target's part of the configuration, as sent.
#[derive(Debug, Clone, PartialEq)]
enum Message {
    Bgp(Box<proto::bgpconfig::BgpConfig>),
    Dataplane(Box<proto::felix::DataplaneConfig>),
}

impl Message {
    fn for_target(target: Target, cfg: &NodeConfig) -> Message {
        match target {
            Target::Bird => Message::Bgp(Box::new(wire::bgp_config(&cfg.bgp))),
            Target::Felix => Message::Dataplane(Box::new(wire::dataplane_config(&cfg.felix))),
        }
    }
}

/// The open connection to a target and what was sent over it.
struct Link {
    channel: Channel,
    closed: Closed,
    sent: Option<Message>,
}

impl Link {
    async fn open(socket: &Path) -> Result<Link, PushError> {
        let (channel, closed) = proto::uds::connect_watched(socket).await?;
        Ok(Link {
            channel,
            closed,
            sent: None,
        })
    }

    async fn send(&mut self, target: Target, msg: &Message) -> Result<(), PushError> {
        let refused = |status| PushError::Refused { target, status };
        match msg {
            Message::Bgp(m) => {
                BgpConfigServiceClient::new(self.channel.clone())
                    .apply((**m).clone())
                    .await
                    .map_err(refused)?;
            }
            Message::Dataplane(m) => {
                DataplaneConfigServiceClient::new(self.channel.clone())
                    .apply((**m).clone())
                    .await
                    .map_err(refused)?;
            }
        }
        self.sent = Some(msg.clone());
        Ok(())
    }
}

/// Resolves when the link is gone; never while there is none.
async fn closed(link: &mut Option<Link>) {
    match link {
        Some(l) => (&mut l.closed).await,
        None => std::future::pending().await,
    }
}

/// Sends `msg` over the link, opening one first if there is none. Any
/// failure drops the link: the next attempt starts on a fresh connection.
async fn deliver_once(
    target: Target,
    socket: &Path,
    link: &mut Option<Link>,
    msg: &Message,
) -> Result<(), PushError> {
    let mut l = match link.take() {
        Some(l) => l,
        None => Link::open(socket).await?,
    };
    l.send(target, msg).await?;
    *link = Some(l);
    Ok(())
}

/// Pushes every published configuration to one daemon's socket until the
/// publisher goes away.
pub async fn deliver(target: Target, socket: PathBuf, mut rx: watch::Receiver<Published>) {
    let mut link: Option<Link> = None;
    let mut backoff = BACKOFF_MIN;
    let mut failing = false;
    loop {
        let wanted = match &*rx.borrow_and_update() {
            Published::Config(c) => Some(Message::for_target(target, c)),
            _ => None,
        };
        let mut retry = false;
        if let Some(msg) = wanted
            && link.as_ref().and_then(|l| l.sent.as_ref()) != Some(&msg)
        {
            match deliver_once(target, &socket, &mut link, &msg).await {
                Ok(()) => {
                    if failing {
                        tracing::info!(%target, socket = %socket.display(), "configuration delivered");
                    }
                    failing = false;
                    backoff = BACKOFF_MIN;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(%target, socket = %socket.display(), error = %e,
                            "cannot deliver configuration; retrying");
                    }
                    failing = true;
                    retry = true;
                }
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            () = closed(&mut link) => {
                tracing::info!(%target, socket = %socket.display(),
                    "connection closed (restarted?); configuring it again when it is back");
                link = None;
            }
            () = tokio::time::sleep(backoff), if retry => {
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Writes the rendering of every published config to `path` (atomically:
/// a reader never sees half a file) until the publisher goes away.
pub async fn write_rendering(path: PathBuf, mut rx: watch::Receiver<Published>) {
    loop {
        let text = match &*rx.borrow_and_update() {
            Published::Config(c) => Some(render(c)),
            Published::Error(e) => Some(format!("# confd cannot configure this node: {e}\n")),
            Published::Syncing => None,
        };
        if let Some(text) = text
            && let Err(e) = write_atomically(&path, text.as_bytes())
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the configuration rendering");
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    proto::daemon::write_durably(path, data)
}
