//! calico-lab: real clusters built out of network namespaces on one Linux
//! machine. It is both the demo a new user runs first and the harness every
//! integration test and benchmark uses, so no test carries its own ad-hoc
//! namespace plumbing.
//!
//! This first layer is the plumbing: [`Netns`] (a uniquely named namespace
//! removed on drop, also while a panic unwinds), [`veth`] pairs between
//! namespaces, [`NsProcess`] (a child process inside a namespace, killed on
//! drop), and [`Netns::run`] to execute Rust code with its sockets inside a
//! namespace. Cluster building (`calico-lab up`) comes on top of it.
//!
//! Every namespace is named `cl<tag>-<pid>-<seq>`; [`sweep_stale`] removes
//! those whose creating process is gone, so a killed test run leaves nothing
//! behind for long.

mod netns;

pub use netns::{LabError, Netns, NsProcess, sweep_stale, veth};
