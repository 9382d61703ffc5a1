//! Routes from bird into the dataplane.
//!
//! felix is a client of bird's RouteService through
//! [`proto::routes_client`], which connects, collects each snapshot and
//! reconnects with back-off. Here its events become dataplane updates: a
//! snapshot *replaces* the remote blocks (so routes bird no longer has
//! go), later changes update them one by one. While bird is away felix
//! keeps every route it has — forwarding goes on, as graceful restart
//! promises — and the next snapshot reconciles.

use std::path::PathBuf;

use futures::StreamExt;
use proto::routes_client::{self, RouteEvent};
use tokio::sync::watch;

use crate::dataplane::{DataplaneError, DataplaneHandle};

/// Runs forever: feeds the dataplane from bird's route stream.
/// `synced` turns true at the first complete snapshot.
pub async fn run(socket: PathBuf, dp: DataplaneHandle, synced: watch::Sender<bool>) {
    let mut events = routes_client::watch(socket.clone());
    while let Some(ev) = events.next().await {
        if apply(ev, &socket, &dp, &synced).is_err() {
            // The dataplane stopped: felix is shutting down.
            return;
        }
    }
}

fn apply(
    ev: RouteEvent,
    socket: &std::path::Path,
    dp: &DataplaneHandle,
    synced: &watch::Sender<bool>,
) -> Result<(), DataplaneError> {
    match ev {
        RouteEvent::Connected => tracing::info!("watching bird's routes"),
        RouteEvent::Unreachable { error } => {
            tracing::warn!(socket = %socket.display(), error = %error,
                "cannot watch bird's routes; keeping the current ones and retrying");
        }
        RouteEvent::Disconnected { .. } => {
            tracing::warn!("bird's route stream ended; keeping routes until it is back");
        }
        RouteEvent::Replace(all) => {
            tracing::info!(routes = all.len(), "route snapshot from bird");
            let r = dp.set_remote_blocks(all);
            synced.send_replace(true);
            r?;
        }
        RouteEvent::Changes(ch) => ch
            .into_iter()
            .try_for_each(|(p, nh)| dp.update_remote_block(p, nh))?,
    }
    Ok(())
}
