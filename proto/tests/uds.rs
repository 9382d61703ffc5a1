//! The Unix-socket transport end to end: a real tonic server and client.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use proto::health::CheckRequest;
use proto::health::health_client::HealthClient;
use proto::health_service::HealthReporter;
use proto::uds;
use tonic::transport::Server;

#[tokio::test]
async fn health_over_unix_socket_with_owner_only_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/calico/felix.sock");
    let reporter = HealthReporter::new("felix");
    let listener = uds::bind(&path).await.unwrap();

    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket must be owner-only");
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700, "socket directory must be owner-only");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = Server::builder().add_service(reporter.service());
    let server_path = path.clone();
    let server = tokio::spawn(async move {
        uds::serve(router, listener, &server_path, async {
            let _ = stop_rx.await;
        })
        .await
    });

    let mut client = HealthClient::new(uds::connect(&path).await.unwrap());
    let r = client.check(CheckRequest {}).await.unwrap().into_inner();
    assert_eq!(r.component, "felix");
    assert!(r.live);
    assert!(!r.ready);
    assert_eq!(r.detail, "starting");

    reporter.set_ready();
    let r = client.check(CheckRequest {}).await.unwrap().into_inner();
    assert!(r.ready);

    // A second daemon must not steal a socket that is in use.
    let err = uds::bind(&path).await.unwrap_err();
    assert!(matches!(err, uds::UdsError::InUse { .. }), "{err}");

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!path.exists(), "socket file removed on shutdown");
}

#[tokio::test]
async fn stale_socket_from_a_crash_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bird.sock");
    // A bound-then-dropped listener leaves the file with nobody answering.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let _listener = uds::bind(&path).await.unwrap();
}

#[tokio::test]
async fn connecting_to_a_missing_daemon_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    let err = uds::connect(&path).await.unwrap_err();
    assert!(err.to_string().contains("nobody.sock"), "{err}");
}

/// Another (non-root) user cannot open a daemon's socket, even where the
/// directory would let them reach it: connect(2) is refused.
#[tokio::test]
async fn another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Traversable by everyone, so only the socket's own mode protects it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("felix.sock");
    let _listener = uds::bind(&path).await.unwrap();
    // Ourselves: accepted (the listener's backlog takes it).
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Without root there is no other user to become; the mode check
        // in the test above still holds.
        return;
    }
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: the child only makes async-signal-safe system calls
    // (setgid, setuid, socket, connect, _exit) before exiting.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: as above; every call's result is checked by value.
        unsafe {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(2);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (i, b) in c_path.as_bytes().iter().enumerate() {
                addr.sun_path[i] = *b as libc::c_char;
            }
            let rc = libc::connect(
                fd,
                (&raw const addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            let refused = rc != 0 && *libc::__errno_location() == libc::EACCES;
            libc::_exit(if refused { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
    }
    assert!(libc::WIFEXITED(status));
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "user 65534 could connect to an owner-only socket (or setuid failed: 2)"
    );
}

/// confd's way to notice a restarted bird or felix: the connection under a
/// watched channel closes when the server goes away, and the channel does
/// not quietly reconnect to whoever listens next.
#[tokio::test]
async fn a_watched_connection_reports_the_server_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bird.sock");
    let reporter = HealthReporter::new("bird");
    let server = uds::ServerTask::spawn(
        Server::builder().add_service(reporter.service()),
        uds::bind(&path).await.unwrap(),
        path.clone(),
    );
    let (channel, closed) = uds::connect_watched(&path).await.unwrap();
    let mut client = HealthClient::new(channel);
    assert_eq!(
        client
            .check(CheckRequest {})
            .await
            .unwrap()
            .into_inner()
            .component,
        "bird"
    );
    let mut closed = Box::pin(closed);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), &mut closed)
            .await
            .is_err(),
        "open while the server runs"
    );

    server.shutdown().await;
    tokio::time::timeout(std::time::Duration::from_secs(5), closed)
        .await
        .expect("the close is reported");

    // A new server on the same path: the old channel stays closed, a new
    // watched connection reaches the new server.
    let reporter = HealthReporter::new("bird-2");
    let _server = uds::ServerTask::spawn(
        Server::builder().add_service(reporter.service()),
        uds::bind(&path).await.unwrap(),
        path.clone(),
    );
    assert!(client.check(CheckRequest {}).await.is_err());
    let (channel, _closed) = uds::connect_watched(&path).await.unwrap();
    let r = HealthClient::new(channel)
        .check(CheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.component, "bird-2");
}
