//! bird: calico-rs' BGP speaker. It holds BGP sessions with the other
//! nodes and with top-of-rack routers, advertises the address blocks this
//! node owns and (in later steps) streams its best routes to felix. It
//! also runs standalone from a TOML file (`bird run --config`), which is
//! how it is tested against BIRD 2 and benchmarked.
//!
//! # Layout
//! - [`packet`]: the wire format, both directions. Framing, OPEN and
//!   capabilities, UPDATE with its attributes and NLRI, NOTIFICATION,
//!   ROUTE-REFRESH; [`packet::error`] holds the RFC 7606 action enum and
//!   the one `From<DecodeError> for Notification`.
//! - [`fsm`]: the RFC 4271 session state machine, sans-IO: events in,
//!   actions out, unit-tested without sockets.
//! - [`session`]: the tokio task of one peer driving its FSM;
//!   [`tasks`] draws every task and channel and holds the per-connection
//!   reader and writer.
//! - [`network`]: the only socket code (listen, connect, TCP-MD5, GTSM).
//! - [`rib`]: the per-peer Adj-RIB-In (prefix → shared attribute set).
//! - [`config`], [`control`] (the gRPC service on the Unix socket) and
//!   [`speaker`] (everything put together); `main.rs` is the CLI.
//!
//! # What comes from zettabgp, and what does not
//! zettabgp 0.6.0 is the codec dependency, but it cannot be handed bytes
//! from the network: its header decoder subtracts 19 from the length field
//! without checking it (a length below 19 panics), its OPEN decoder
//! underflows when a capability is longer than its parameter, its AS_PATH
//! decoder loops, allocating, when a segment is shorter than two bytes,
//! and its encoder writes an AS_SEQUENCE with segment type 1 (AS_SET). Its
//! NOTIFICATION type keeps at most two data bytes, and its UPDATE model
//! allocates per prefix. So:
//! - **used**: `BgpCapability::from_buffer`, to decode each capability
//!   TLV of a received OPEN, but only after our own pass has walked the
//!   optional parameters with bounds checks and checked the length rules
//!   of that capability code, and only for the codes whose zettabgp
//!   decoders are correct on valid input (multiprotocol, route refresh,
//!   graceful restart, 4-octet AS, enhanced route refresh). The fuzz
//!   target runs through this path.
//! - **used in tests**: zettabgp's OPEN, UPDATE and NOTIFICATION decoders
//!   as an independent check that what we encode is what we mean (our
//!   output is well-formed, so they are safe there).
//! - **not used**: framing, OPEN encoding, UPDATE and attribute encode and
//!   decode, NOTIFICATION, ROUTE-REFRESH. These are project code: every
//!   decoder is a bounds-checked pass over a borrowed slice, UPDATE
//!   decoding is zero-copy (NLRI iterate over the received bytes, and the
//!   attributes of an UPDATE become one shared allocation, not one per
//!   prefix), and every malformed input maps to an RFC 4271 / RFC 7606
//!   action instead of a panic.

pub mod config;
pub mod control;
pub mod fsm;
pub mod fuzzing;
pub mod network;
pub mod packet;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod tasks;

pub use config::Config;
