//! Process plumbing every calico-rs daemon shares.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Installs SIGTERM and SIGINT handlers now (so a signal during start-up is
/// a clean stop, not the default kill) and returns a future that resolves
/// at the first of them.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
