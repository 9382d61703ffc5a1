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
