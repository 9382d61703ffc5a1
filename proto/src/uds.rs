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
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
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

/// A gRPC server on a Unix socket, running as a task of its own.
/// [`ServerTask::shutdown`] stops it gracefully (in-flight calls finish,
/// the socket file is removed); dropping it aborts it.
pub struct ServerTask {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ServerTask {
    /// Serves `router` on `listener` (bound at `path` by [`bind`]). A
    /// failure of the server is logged; the daemon keeps its other work.
    pub fn spawn(
        router: tonic::transport::server::Router,
        listener: UnixListener,
        path: PathBuf,
    ) -> ServerTask {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = serve(router, listener, &path, shutdown).await {
                tracing::error!(socket = %path.display(), error = %e, "control socket failed");
            }
        });
        ServerTask {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops accepting, lets in-flight calls finish and waits for the end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Resolves when the one connection under a channel from
/// [`connect_watched`] has closed: the daemon at the other end exited (or
/// restarted), or closed the connection.
pub struct Closed(oneshot::Receiver<()>);

impl Future for Closed {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A Unix stream that reports, by being dropped, that hyper is done with
/// the connection (the peer closed it, or it broke).
struct Watched {
    stream: UnixStream,
    _closed: oneshot::Sender<()>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Like [`connect`], but the channel lives on exactly one connection, and
/// [`Closed`] says when that connection is gone. A client that must know
/// when the daemon behind the socket is a new process (confd, to re-send
/// configuration to a restarted bird or felix) watches `Closed`, then
/// connects again; the channel itself does not reconnect.
pub async fn connect_watched(path: &Path) -> Result<(Channel, Closed), UdsError> {
    let (tx, rx) = oneshot::channel();
    let once = Arc::new(Mutex::new(Some(tx)));
    let target = path.to_owned();
    let endpoint = Endpoint::from_static("http://uds.invalid");
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let target = target.clone();
            let closed = once.lock().unwrap_or_else(|p| p.into_inner()).take();
            async move {
                let Some(closed) = closed else {
                    return Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "this channel's connection has closed; connect again",
                    ));
                };
                let stream = UnixStream::connect(target).await?;
                Ok::<_, io::Error>(TokioIo::new(Watched {
                    stream,
                    _closed: closed,
                }))
            }
        }))
        .await
        .map_err(|source| UdsError::Connect {
            path: path.to_owned(),
            source,
        })?;
    Ok((channel, Closed(rx)))
}
