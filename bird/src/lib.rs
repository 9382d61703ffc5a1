//! bird: calico-rs' BGP speaker. It holds BGP sessions with the other
//! nodes (the full mesh, or through route reflectors) and with top-of-rack
//! routers, advertises the address blocks this node owns, selects the best
//! routes and streams them to felix, and keeps forwarding state through
//! restarts (graceful restart, both as helper and as restarting speaker).
//! confd configures it over gRPC; it also runs standalone from a TOML file
//! (`bird run --config`), which is how it is tested against BIRD 2 and
//! benchmarked (`scripts/bench.sh bgp-ingest`).
//!
//! # Layout
//! - [`packet`]: the wire format, both directions. Framing, OPEN and
//!   capabilities, UPDATE with its attributes and NLRI, NOTIFICATION,
//!   ROUTE-REFRESH; [`packet::error`] holds the RFC 7606 action enum and
//!   the one `From<DecodeError> for Notification`.
//! - [`fsm`]: the RFC 4271 session state machine, sans-IO: events in,
//!   actions out, unit-tested without sockets.
//! - [`rib`]: the routing table, sans-IO: one table holding the
//!   Adj-RIBs-In and the Loc-RIB, best-path selection ([`rib::best`]),
//!   export rules and route reflection ([`rib::export`]), per-peer
//!   Adj-RIBs-Out ([`rib::out`]) and route-stream watchers
//!   ([`rib::watch`]); [`policy`] (import guard, loop checks, max-prefix,
//!   communities) and [`gr`] (graceful restart decisions) are the plain
//!   functions it decides with.
//! - [`session`]: the tokio task of one peer driving its FSM;
//!   [`rib_task`]: the task owning the RIB; [`tasks`] draws every task and
//!   channel and holds the per-connection reader and writer.
//! - [`bfd`]: BFD (RFC 5880, 5881, 5883): a sans-IO session per peer
//!   and the task, on a thread of its own, that runs them all.
//! - [`network`]: the only socket code: BGP's TCP (listen, connect,
//!   TCP-MD5, GTSM) and BFD's UDP sockets; [`listener`] is a running
//!   speaker's BGP listener.
//! - [`config`]: the configuration, from the TOML file or from what confd
//!   pushes; [`plan`]: what applying one changes, decided on data alone;
//!   [`speaker`]: everything put together, carrying plans out.
//! - [`daemon`]: the speaker and the services on its control socket:
//!   [`control`] (`bird show`), [`apply`] (confd's `BgpConfigService`),
//!   [`route_stream`] (best routes to felix; felix's side is
//!   `proto::routes_client`). `main.rs` is the CLI.
//! - With the `fuzzing` feature, `fuzzing` runs the receive paths over
//!   untrusted bytes, for the fuzz targets and the fuzz smoke test.
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

pub mod apply;
pub mod bfd;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fsm;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gr;
pub mod listener;
pub mod network;
pub mod packet;
pub mod plan;
pub mod policy;
pub mod rib;
pub mod rib_task;
pub mod route_stream;
pub mod session;
pub mod speaker;
pub mod tasks;
#[cfg(test)]
mod test_logs;

pub use config::Config;
