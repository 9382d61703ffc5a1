//! `calico.routes.v1.RouteService`: bird's best routes streamed to felix.
//!
//! Each `Watch` gets a [`Watcher`] in the RIB and a task that sends: the
//! snapshot in batches of upserts, each followed by the changes queued
//! behind the walk; then `snapshot_done` once the walk is over and the RIB
//! has converged after start-up; then the changes as they come, coalesced
//! per prefix while the client is slow. A client too far behind gets a new
//! snapshot, its first batch marked `resync`. A batch never names a prefix
//! twice, so the order inside a batch does not matter.

use std::pin::Pin;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use proto::routes::route_service_server::{RouteService, RouteServiceServer};
use proto::routes::{self as pb, RouteBatch, WatchRoutesRequest};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::rib::{Changes, StreamRoute, Watcher};
use crate::rib_task::RibHandle;

/// Routes per message.
const BATCH: usize = 1000;

#[derive(Debug, Clone)]
pub struct RouteStreamService {
    rib: RibHandle,
}

pub fn service(rib: RibHandle) -> RouteServiceServer<RouteStreamService> {
    RouteServiceServer::new(RouteStreamService { rib })
}

fn route(net: IpNetwork, r: &StreamRoute) -> pb::Route {
    pb::Route {
        prefix: Some(net.into()),
        next_hops: r.next_hops.iter().map(|h| (*h).into()).collect(),
        from_node: r.from_node,
    }
}

fn batch(c: Changes) -> RouteBatch {
    RouteBatch {
        upserts: c.upserts.iter().map(|(n, r)| route(*n, r)).collect(),
        withdraws: c.withdraws.into_iter().map(Into::into).collect(),
        ..RouteBatch::default()
    }
}

type Tx = mpsc::Sender<Result<RouteBatch, Status>>;

async fn send(tx: &Tx, b: RouteBatch) -> bool {
    tx.send(Ok(b)).await.is_ok()
}

/// Feeds one watcher's stream until the client goes away.
async fn feed(rib: RibHandle, w: Arc<Watcher>, tx: Tx) {
    let mut done_sent = false;
    loop {
        if w.scanning() {
            let chunk = match rib.snapshot(w.clone(), BATCH).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            // A new walk after the watcher fell behind: a new snapshot.
            if chunk.resync {
                done_sent = false;
            }
            if !chunk.routes.is_empty() || chunk.resync {
                let b = RouteBatch {
                    upserts: chunk.routes.iter().map(|(n, r)| route(*n, r)).collect(),
                    resync: chunk.resync,
                    ..RouteBatch::default()
                };
                if !send(&tx, b).await {
                    return;
                }
            }
        }
        let mut b = batch(w.take(BATCH));
        if !done_sent && !w.has_pending() && w.snapshot_complete() {
            b.snapshot_done = true;
            done_sent = true;
        }
        if (!b.upserts.is_empty() || !b.withdraws.is_empty() || b.snapshot_done)
            && !send(&tx, b).await
        {
            return;
        }
        if w.scanning() || w.has_pending() || (!done_sent && w.snapshot_complete()) {
            continue;
        }
        tokio::select! {
            _ = w.notified() => {}
            _ = tx.closed() => return,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<RouteBatch, Status>> + Send>>;

#[tonic::async_trait]
impl RouteService for RouteStreamService {
    type WatchStream = WatchStream;

    async fn watch(&self, _: Request<WatchRoutesRequest>) -> Result<Response<WatchStream>, Status> {
        let w = self.rib.watch().await?;
        debug!("route stream watcher connected");
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(feed(self.rib.clone(), w, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
