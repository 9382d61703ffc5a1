//! The daemon: a [`Speaker`] and every service on its control socket
//! ([`BirdService`] for `bird show` and calico-node, confd's
//! [`apply`](crate::apply) service, the [`route_stream`](crate::route_stream)
//! to felix, health), until shutdown.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tonic::transport::Server;
use tracing::info;

use crate::config::Config;
use crate::control::BirdService;
use crate::speaker::{Error, Speaker};

/// Runs a speaker, configured from `cfg` if given (otherwise it waits for
/// confd's `Apply`), serving every control service on `socket`, until
/// `shutdown` resolves; then sends every peer a Cease. `startup_deferral`
/// (seconds) overrides the configuration's.
pub async fn run(
    cfg: Option<Config>,
    startup_deferral: Option<u64>,
    socket: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let deferral = startup_deferral.unwrap_or_else(|| {
        cfg.as_ref()
            .map_or(Config::DEFAULT_STARTUP_DEFERRAL, |c| c.startup_deferral)
    });
    let speaker = Speaker::new(Duration::from_secs(deferral));
    if !speaker.health().is_ready() {
        speaker
            .health()
            .set_not_ready("waiting for the BGP configuration from confd");
    }
    if let Some(cfg) = cfg {
        speaker.apply(cfg).await?;
    }
    let control = proto::uds::bind(socket).await?;
    let router = Server::builder()
        .add_service(speaker.health().service())
        .add_service(BirdService::new(speaker.clone()).into_server())
        .add_service(crate::apply::service(speaker.clone()))
        .add_service(crate::route_stream::service(speaker.rib().clone()));
    let served = proto::uds::serve(router, control, socket, shutdown).await;
    info!("shutting down: sending Cease to every peer");
    speaker.shutdown().await;
    served?;
    Ok(())
}
