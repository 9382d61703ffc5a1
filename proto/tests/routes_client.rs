//! The route-stream client against a scripted RouteService on a Unix
//! socket: unreachable, connected, snapshot, changes, a lost stream, and
//! the reconnect.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnetwork::IpNetwork;
use proto::routes::route_service_server::{RouteService, RouteServiceServer};
use proto::routes::{Route, RouteBatch, WatchRoutesRequest};
use proto::routes_client::{RouteEvent, watch};
use proto::uds;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// Each `Watch` sends the next script's batches, then ends the stream.
#[derive(Clone, Default)]
struct Scripted(Arc<Mutex<VecDeque<Vec<RouteBatch>>>>);

type Batches = Pin<Box<dyn Stream<Item = Result<RouteBatch, Status>> + Send>>;

#[tonic::async_trait]
impl RouteService for Scripted {
    type WatchStream = Batches;

    async fn watch(&self, _: Request<WatchRoutesRequest>) -> Result<Response<Batches>, Status> {
        let batches = self.0.lock().unwrap().pop_front().unwrap_or_default();
        Ok(Response::new(Box::pin(tokio_stream::iter(
            batches.into_iter().map(Ok),
        ))))
    }
}

fn route(p: &str, nh: &str) -> Route {
    Route {
        prefix: Some(p.parse::<IpNetwork>().unwrap().into()),
        next_hops: vec![nh.parse::<IpAddr>().unwrap().into()],
        from_node: true,
    }
}

fn snapshot(routes: Vec<Route>) -> RouteBatch {
    RouteBatch {
        upserts: routes,
        snapshot_done: true,
        ..Default::default()
    }
}

async fn next(s: &mut (impl Stream<Item = RouteEvent> + Unpin)) -> RouteEvent {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("no event within 10 s")
        .expect("the stream never ends")
}

#[tokio::test]
async fn reconnects_and_each_connection_starts_with_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bird.sock");
    let mut events = watch(&path);

    // Nobody listens yet: reported once, then retried quietly.
    assert!(matches!(
        next(&mut events).await,
        RouteEvent::Unreachable { .. }
    ));

    let script = Scripted::default();
    script.0.lock().unwrap().extend([
        vec![
            snapshot(vec![route("10.65.1.0/26", "10.0.0.2")]),
            RouteBatch {
                withdraws: vec!["10.65.1.0/26".parse::<IpNetwork>().unwrap().into()],
                ..Default::default()
            },
        ],
        vec![snapshot(vec![route("10.65.2.0/26", "10.0.0.3")])],
    ]);
    let listener = uds::bind(&path).await.unwrap();
    let router = Server::builder().add_service(RouteServiceServer::new(script));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_path = path.clone();
    let server = tokio::spawn(async move {
        uds::serve(router, listener, &server_path, async {
            let _ = stopped.await;
        })
        .await
    });

    assert_eq!(next(&mut events).await, RouteEvent::Connected);
    assert_eq!(
        next(&mut events).await,
        RouteEvent::Replace(vec![(
            "10.65.1.0/26".parse().unwrap(),
            "10.0.0.2".parse().unwrap()
        )])
    );
    assert_eq!(
        next(&mut events).await,
        RouteEvent::Changes(vec![("10.65.1.0/26".parse().unwrap(), None)])
    );
    // bird ended the stream: the consumer keeps its routes, and the next
    // connection's snapshot reconciles.
    assert!(matches!(
        next(&mut events).await,
        RouteEvent::Disconnected { .. }
    ));
    assert_eq!(next(&mut events).await, RouteEvent::Connected);
    assert_eq!(
        next(&mut events).await,
        RouteEvent::Replace(vec![(
            "10.65.2.0/26".parse().unwrap(),
            "10.0.0.3".parse().unwrap()
        )])
    );

    drop(events);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
