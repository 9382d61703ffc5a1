//! Delivers the published configuration to bird and felix, and to the
//! rendering file.
//!
//! Each pusher sends the latest config when it changes, and again every
//! [`REPUSH`] even when it did not: `Apply` is idempotent on both sides, and
//! a bird or felix that was restarted (by calico-node, after a crash) gets
//! its configuration back within that interval without anyone having to
//! tell confd. A failed push is retried with backoff; the config is never
//! queued, only the newest is ever sent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::bgpconfig::bgp_config_service_client::BgpConfigServiceClient;
use proto::felix::dataplane_config_service_client::DataplaneConfigServiceClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::render::render;
use crate::sync::Published;
use crate::wire;

/// Re-push interval when nothing changed.
pub const REPUSH: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where to push to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Bird,
    Felix,
}

async fn push_once(target: Target, socket: &Path, cfg: &NodeConfig) -> Result<(), String> {
    let channel = proto::uds::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    match target {
        Target::Bird => {
            BgpConfigServiceClient::new(channel)
                .apply(wire::bgp_config(&cfg.bgp))
                .await
                .map_err(|s| format!("bird refused the configuration: {}", s.message()))?;
        }
        Target::Felix => {
            DataplaneConfigServiceClient::new(channel)
                .apply(wire::dataplane_config(&cfg.felix))
                .await
                .map_err(|s| format!("felix refused the configuration: {}", s.message()))?;
        }
    }
    Ok(())
}

/// Pushes every published config to one daemon's socket until the
/// publisher goes away.
pub fn spawn_pusher(
    target: Target,
    socket: PathBuf,
    mut rx: watch::Receiver<Published>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = REPUSH;
        let mut failing = false;
        loop {
            let current = match &*rx.borrow_and_update() {
                Published::Config(c) => Some((**c).clone()),
                _ => None,
            };
            if let Some(cfg) = current {
                match push_once(target, &socket, &cfg).await {
                    Ok(()) => {
                        if failing {
                            tracing::info!(?target, socket = %socket.display(), "configuration delivered");
                        }
                        failing = false;
                        backoff = REPUSH;
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(?target, socket = %socket.display(), error = %e,
                                "cannot deliver configuration; retrying");
                        }
                        failing = true;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            let wait = if failing { backoff } else { REPUSH };
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// Writes the rendering of every published config to `path` (atomically:
/// a reader never sees half a file).
pub fn spawn_file_writer(path: PathBuf, mut rx: watch::Receiver<Published>) -> JoinHandle<()> {
    tokio::spawn(async move {
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
    })
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}
