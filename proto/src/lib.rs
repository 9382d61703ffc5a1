//! Protobuf definitions and generated tonic code for every calico-rs process
//! boundary (confd→bird, confd→felix, bird→felix, CNI→felix, CLI→all), plus
//! the one piece of transport they all share: gRPC over a Unix socket that
//! only the owning user can open (socket mode 0600 in a 0700 directory).
//!
//! The `.proto` files live in `proto/calico/`; each service's messages are
//! re-exported as a module here (`common`, `health`, ...). Conversions between
//! wire types and `std::net` / `ipnetwork` types live in [`convert`], so no
//! code outside this crate handles raw address bytes. [`routes_client`] is
//! the one client of bird's route stream (felix's, and bird's tests');
//! [`show`] renders bird's peers for people (state names, text tables).

pub mod community;
pub mod convert;
pub mod daemon;
pub mod health_service;
pub mod routes_client;
pub mod show;
pub mod uds;

/// Types shared by every service (`calico.common.v1`).
pub mod common {
    tonic::include_proto!("calico.common.v1");
}

/// The liveness/readiness service every daemon serves (`calico.health.v1`).
pub mod health {
    tonic::include_proto!("calico.health.v1");
}

/// The `bird` BGP speaker's control service (`calico.bird.v1`).
pub mod bird {
    tonic::include_proto!("calico.bird.v1");
}

/// confd → bird: the node's whole BGP configuration (`calico.bgpconfig.v1`).
pub mod bgpconfig {
    tonic::include_proto!("calico.bgpconfig.v1");
}

/// bird → felix: best routes, a snapshot then changes (`calico.routes.v1`).
pub mod routes {
    tonic::include_proto!("calico.routes.v1");
}

/// felix: dataplane config from confd, pod interfaces for the CNI plugin,
/// status (`calico.felix.v1`).
pub mod felix {
    tonic::include_proto!("calico.felix.v1");
}

pub use convert::ConvertError;
pub use uds::UdsError;
