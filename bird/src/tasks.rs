//! The speaker's tasks and the channels between them.
//!
//! ```text
//!   TCP :179        control socket (gRPC, 0600): Bird, BgpConfigService, RouteService, Health
//!      │                   │ Apply                     │ ListRoutes / Watch / CountRoutes
//! ┌────▼─────┐      ┌──────▼──────┐            ┌───────▼────────┐
//! │ listener │      │   Speaker   │ RwLock     │ control + route│◄── Arc<Watcher>: pending
//! │   task   │─────►│ (peer table,├───────────►│ stream tasks   │    changes + Notify
//! └──────────┘ find │  config)    │ PeerTable  └───────┬────────┘    (one per Watch call)
//!    Incoming(tcp)  └──┬───────┬──┘                    │ RibEvent::{Rows, Watch, Snapshot}
//!        │  spawn/stop │       │ RibEvent::{PeerAdded, PeerRemoved, Originate, Local}
//!        ▼             ▼       ▼                       ▼
//! ┌──────────────────────────┐   RibEvent (mpsc, 64)   ┌──────────────────────────────┐
//! │ peer task (one per peer):│ ──────────────────────► │ RIB task: owns the Rib       │
//! │ Fsm, timers, decodes     │  Up / Down / Update /   │ (table, best path, policy,   │
//! │ frames into UpdateMsg    │  RouteRefresh           │ GR timers, start-up deferral)│
//! └─▲──────────▲─────────┬───┘ ◄────────────────────── └──────────────┬───────────────┘
//!   │ConnEvent │         │ control msgs  PeerCommand::Reset /         │ set(prefix, attrs)
//!   │(mpsc,256)│         │ (unbounded,   SendRouteRefresh (try_send)  ▼ + Notify
//!   │          │         │  a handful)                   ┌──────────────────────────┐
//! ┌─┴──────┐ ┌─┴───────┐ │  ┌─────────────────────────┐  │ AdjRibOut (per peer):    │
//! │ reader │ │ connect │ └─►│ writer (per connection):│◄─┤ sent + pending, coalesced│
//! │ (conn) │ │ (a try) │    │ control first, then     │  └──────────────────────────┘
//! └─▲──────┘ └─────────┘    │ batches of the Adj-RIB- │
//!   └──── TCP connection ◄──┤ Out, encoded as UPDATEs │
//!                           └─────────────────────────┘
//! ```
//!
//! Why it cannot deadlock or grow without bound:
//! - readers only frame (marker, length, type) and wait when the peer
//!   task falls behind, which backs off the sender through TCP;
//! - peer tasks wait for room in the RIB channel, so a fast peer is slowed
//!   to the RIB's pace (again through TCP), but the RIB task never waits
//!   for anything: what it has for a peer goes into that peer's
//!   [`AdjRibOut`] (bounded by the table, not by time, since repeated
//!   changes of a prefix overwrite each other), and what it has for a
//!   route-stream watcher likewise into the watcher; its commands to peer
//!   tasks are `try_send`, with a spawned send as the fallback;
//! - a connection's writer sends the session's own few messages (OPEN,
//!   KEEPALIVE, NOTIFICATION: bounded in number by the protocol) before
//!   routes, so keepalives are not stuck behind a table transfer, and
//!   takes routes only when the socket has drained the last batch. The
//!   peer task never blocks on a writer, so a peer that stops reading
//!   while it sends to us cannot wedge its session.
//!
//! Closing a connection drops its control queue: the writer flushes what
//! is queued (a NOTIFICATION, typically), shuts down its half and ends;
//! the reader keeps draining for a short linger so unread input does not
//! turn the close into a reset that could discard the NOTIFICATION at the
//! peer.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::fsm::ConnId;
use crate::packet::DecodeError;
use crate::packet::header::{Frame, split_frame};
use crate::rib::AdjRibOut;

/// How long a closed connection keeps draining input before it is torn
/// down regardless.
pub const LINGER: Duration = Duration::from_secs(3);

/// Capacity of the connection-events channel into a peer task: the reader
/// waits when the peer task falls behind, which backs off the sender
/// through TCP flow control.
pub const EVENT_QUEUE: usize = 256;

/// Prefixes the writer takes from the Adj-RIB-Out per write.
const OUT_BATCH: usize = 2048;

/// What connection tasks tell their peer task.
#[derive(Debug)]
pub enum ConnEvent {
    Frame {
        conn: ConnId,
        frame: Frame,
    },
    /// The byte stream broke framing; the peer task answers with the
    /// matching NOTIFICATION.
    Malformed {
        conn: ConnId,
        error: DecodeError,
    },
    Closed {
        conn: ConnId,
        reason: String,
    },
    Connected {
        conn: ConnId,
        stream: TcpStream,
    },
    ConnectFailed {
        conn: ConnId,
        reason: String,
    },
}

/// What the rest of the daemon tells a peer task.
#[derive(Debug)]
pub enum PeerCommand {
    Incoming(TcpStream),
    /// Administrative shutdown (daemon exit).
    Stop,
    /// Stop with this NOTIFICATION (deconfigured, reconfigured).
    Shutdown {
        notification: crate::packet::Notification,
        hard_reset: bool,
    },
    /// Drop the session and come back later (max-prefix).
    Reset {
        notification: crate::packet::Notification,
        hard_reset: bool,
    },
    /// The peer is reachable again (BFD up): connect now.
    Kick,
    /// The path to the peer failed (BFD left Up): drop the session, and
    /// connect again only after the next `Kick`.
    PathDown(crate::packet::Notification),
    /// Ask the peer to send a family again (RFC 2918).
    SendRouteRefresh(crate::packet::Family),
}

/// The Adj-RIB-Out a writer drains, and for which session.
type Attached = Option<(Arc<AdjRibOut>, u64)>;

/// The running I/O of one connection.
#[derive(Debug)]
pub struct ConnIo {
    /// The session's own messages; few by nature, so unbounded.
    pub tx: mpsc::UnboundedSender<Bytes>,
    attach: watch::Sender<Attached>,
    pub reader: JoinHandle<()>,
    pub writer: JoinHandle<()>,
    pub local: Option<std::net::SocketAddr>,
    pub remote: Option<std::net::SocketAddr>,
}

impl ConnIo {
    /// Starts the reader and writer of a connection.
    pub fn start(conn: ConnId, stream: TcpStream, events: mpsc::Sender<ConnEvent>) -> ConnIo {
        let local = stream.local_addr().ok();
        let remote = stream.peer_addr().ok();
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let (attach, attached) = watch::channel(None);
        ConnIo {
            tx,
            attach,
            reader: tokio::spawn(read_loop(conn, rd, events)),
            writer: tokio::spawn(write_loop(wr, rx, attached)),
            local,
            remote,
        }
    }

    /// The session is established: from now on the writer also sends the
    /// routes the RIB leaves in `out` for session `generation`.
    pub fn attach(&self, out: Arc<AdjRibOut>, generation: u64) {
        self.attach.send_replace(Some((out, generation)));
    }

    /// Flushes what is queued, then closes. Returns the writer's handle so
    /// a shutting-down daemon can wait for its NOTIFICATIONs to leave.
    pub fn close(self) -> JoinHandle<()> {
        drop(self.tx);
        drop(self.attach);
        let reader = self.reader.abort_handle();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            reader.abort();
        });
        self.writer
    }
}

/// A session's read buffer starts at this size, and is refilled once less
/// than this is free: an idle session's keepalives cycle through one page
/// instead of walking through (and making resident) a large buffer.
const READ_MIN: usize = 4096;
/// Reads that fill the buffer double what is reserved next, up to this: a
/// table transfer reads in large chunks after a few reads.
const READ_MAX: usize = 64 * 1024;

async fn read_loop(conn: ConnId, mut rd: OwnedReadHalf, events: mpsc::Sender<ConnEvent>) {
    let mut buf = BytesMut::with_capacity(READ_MIN);
    let mut chunk = READ_MIN;
    loop {
        loop {
            match split_frame(&mut buf) {
                Ok(Some(frame)) => {
                    if events.send(ConnEvent::Frame { conn, frame }).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let _ = events.send(ConnEvent::Malformed { conn, error }).await;
                    drain(rd).await;
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < READ_MIN {
            // Reuses the allocation in place once the frames split off it
            // have been dropped.
            buf.reserve(chunk);
        }
        let spare = buf.capacity() - buf.len();
        let reason = match rd.read_buf(&mut buf).await {
            Ok(0) => "closed by the peer".to_string(),
            Ok(n) => {
                if n == spare {
                    chunk = (chunk * 2).min(READ_MAX);
                }
                continue;
            }
            Err(e) => e.to_string(),
        };
        let _ = events.send(ConnEvent::Closed { conn, reason }).await;
        return;
    }
}

/// Reads and discards until the peer closes (bounded by the linger abort).
async fn drain(mut rd: OwnedReadHalf) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = rd.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// Takes the next batch of routes for `attached`, encoded. A writer whose
/// session has been replaced detaches, handing the wake-up on.
fn next_routes(attached: &mut Attached, buf: &mut BytesMut) {
    let Some((out, generation)) = attached.as_ref() else {
        return;
    };
    let current = out.lock().generation();
    if current > *generation {
        // A newer session's writer may have been the one to wake.
        out.notify();
        *attached = None;
        return;
    }
    if let Some(batch) = out.take(*generation, OUT_BATCH) {
        let (msgs, errors) = batch.encode();
        for e in errors {
            warn!(error = %e, "route not sent");
        }
        for m in msgs {
            buf.extend_from_slice(&m);
        }
    }
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    mut attach: watch::Receiver<Attached>,
) {
    let mut buf = BytesMut::new();
    let mut attached: Attached = None;
    let mut attach_open = true;
    loop {
        buf.clear();
        // The session's own messages first, coalesced into one write.
        let mut closed = false;
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(m) => buf.extend_from_slice(&m),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if buf.is_empty() && !closed {
            next_routes(&mut attached, &mut buf);
        }
        if !buf.is_empty() {
            if wr.write_all(&buf).await.is_err() {
                return;
            }
            continue;
        }
        if closed {
            break;
        }
        let wake = attached.as_ref().map(|(o, _)| o.clone());
        tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(m) => {
                    if wr.write_all(&m).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            changed = attach.changed(), if attach_open => {
                if changed.is_ok() {
                    attached = attach.borrow_and_update().clone();
                } else {
                    attach_open = false;
                }
            }
            _ = async { if let Some(o) = &wake { o.notified().await } }, if wake.is_some() => {}
        }
    }
    let _ = wr.shutdown().await;
}
