//! The calico-rs CNI plugin (binary `calico`). It is deliberately thin: it
//! reads what the container runtime passes (`CNI_*` environment and the
//! network configuration on stdin), asks the local felix over gRPC to
//! allocate the pod's addresses and build its interface, and prints the CNI
//! result, or a CNI error a person can act on. A pod add therefore costs no
//! datastore connection set-up in the plugin.
//!
//! This crate's library holds the pure parts: [`spec`] (environment and
//! configuration parsing, version negotiation), [`result`] (result JSON per
//! spec version) and [`error`] (CNI error JSON and codes).

pub mod client;
pub mod error;
pub mod result;
pub mod spec;

pub use error::{CniError, code};
pub use result::AddResult;
pub use spec::{Command, Invocation, NetConf};
