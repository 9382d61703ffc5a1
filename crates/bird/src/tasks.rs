//! The speaker's tasks and the channels between them.
//!
//! ```text
//!            TCP :179                         control socket (gRPC, 0600)
//!               │                                      │
//!        ┌──────▼───────┐                       ┌──────▼──────┐
//!        │ listener task│                       │ control svc │
//!        └──────┬───────┘                       └──▲───────▲──┘
//!               │ PeerCommand::Incoming             │       │ watch<PeerStatus>
//!               │ (mpsc, per peer)                  │       │ RwLock<AdjRibIn>
//!        ┌──────▼──────────────────────────────────┴───────┴──┐
//!        │ peer task (one per peer): owns the Fsm, the timers, │◄── PeerCommand::Stop
//!        │ decodes frames, applies UPDATEs to the Adj-RIB-In   │
//!        └──▲──────────────▲─────────────────────────┬─────────┘
//!           │ ConnEvent     │ ConnEvent               │ Bytes (unbounded mpsc,
//!           │ (mpsc, 256)   │ ::Connected/Failed      │ one per connection)
//!    ┌──────┴──────┐  ┌─────┴───────┐          ┌──────▼──────┐
//!    │ reader task │  │ connect task│          │ writer task │
//!    │ (per conn)  │  │ (one try)   │          │ (per conn)  │
//!    └──────▲──────┘  └─────────────┘          └──────┬──────┘
//!           └───────────── TCP connection ◄───────────┘
//! ```
//!
//! Readers only frame (marker, length, type); decoding needs the session's
//! negotiated parameters and happens in the peer task. Writers get their
//! own task and an unbounded queue so the peer task never blocks on a slow
//! peer while that peer blocks on us (each side writing, neither reading).
//! Closing a connection drops its queue: the writer flushes what is queued
//! (a NOTIFICATION, typically), shuts down its half and ends; the reader
//! keeps draining for a short linger so unread input does not turn the
//! close into a reset that could discard the NOTIFICATION at the peer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::fsm::ConnId;
use crate::packet::DecodeError;
use crate::packet::header::{Frame, split_frame};

/// How long a closed connection keeps draining input before it is torn
/// down regardless.
pub const LINGER: Duration = Duration::from_secs(3);

/// Capacity of the connection-events channel into a peer task: the reader
/// waits when the peer task falls behind, which backs off the sender
/// through TCP flow control.
pub const EVENT_QUEUE: usize = 256;

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
    Stop,
}

/// The running I/O of one connection.
#[derive(Debug)]
pub struct ConnIo {
    pub tx: mpsc::UnboundedSender<Bytes>,
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
        ConnIo {
            tx,
            reader: tokio::spawn(read_loop(conn, rd, events)),
            writer: tokio::spawn(write_loop(wr, rx)),
            local,
            remote,
        }
    }

    /// Flushes what is queued, then closes. Returns the writer's handle so
    /// a shutting-down daemon can wait for its NOTIFICATIONs to leave.
    pub fn close(self) -> JoinHandle<()> {
        drop(self.tx);
        let reader = self.reader.abort_handle();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            reader.abort();
        });
        self.writer
    }
}

async fn read_loop(conn: ConnId, mut rd: OwnedReadHalf, events: mpsc::Sender<ConnEvent>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
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
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        let reason = match rd.read_buf(&mut buf).await {
            Ok(0) => "closed by the peer".to_string(),
            Ok(_) => continue,
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

async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        // Coalesce what is already queued into one write.
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if wr.write_all(&batch).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}
