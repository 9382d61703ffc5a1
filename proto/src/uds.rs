//! gRPC over Unix sockets, the transport of every calico-rs control channel.
//!
//! Access control is the file system's: the socket's directory is created
//! mode 0700 when we create it, and the socket itself is chmod 0600 right
//! after bind, so only the owning user (root on a node) can connect. A stale
//! socket file from a crashed run is removed before binding; a socket that
//! another live process still answers on is not.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Debug, thiserror::Error)]
pub enum UdsError {
    #[error("cannot create socket directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error(
        "socket {path} is in use by a running process; stop it first or choose another --socket path"
    )]
    InUse { path: PathBuf },
    #[error("cannot bind control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot set mode 0600 on {path}: {source}")]
    Chmod { path: PathBuf, source: io::Error },
    #[error("cannot connect to {path}: {source} (is the daemon running, and are you root?)")]
    Connect {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("gRPC server on {path} failed: {source}")]
    Serve {
        path: PathBuf,
        source: tonic::transport::Error,
    },
}

/// Binds a Unix socket at `path` that only the current user can open.
pub async fn bind(path: &Path) -> Result<UnixListener, UdsError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| UdsError::Dir {
                path: dir.to_owned(),
                source,
            })?;
    }
    if path.exists() {
        // A socket nobody answers on is left over from a crash: replace it.
        if UnixStream::connect(path).await.is_ok() {
            return Err(UdsError::InUse {
                path: path.to_owned(),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| UdsError::Bind {
        path: path.to_owned(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        UdsError::Chmod {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(listener)
}

/// Serves `router` on an already bound listener until `shutdown` resolves,
/// then removes the socket file.
pub async fn serve(
    router: tonic::transport::server::Router,
    listener: UnixListener,
    path: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), UdsError> {
    let result = router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(path);
    result.map_err(|source| UdsError::Serve {
        path: path.to_owned(),
        source,
    })
}

/// Opens a gRPC channel to the daemon listening on `path`.
pub async fn connect(path: &Path) -> Result<Channel, UdsError> {
    let target = path.to_owned();
    // The URI is required by tonic but unused: the connector ignores it.
    let endpoint = Endpoint::from_static("http://uds.invalid");
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let target = target.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(target).await?)) }
        }))
        .await
        .map_err(|source| UdsError::Connect {
            path: path.to_owned(),
            source,
        })
}
