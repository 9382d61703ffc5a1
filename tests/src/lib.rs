//! Cross-crate integration tests (in `tests/`) and the harness they share:
//! a real etcd server per test ([`EtcdServer`], the lab's: on free
//! loopback ports, with its data in a private temporary directory, that a
//! test can kill with SIGKILL and restart on the same data); [`agent`],
//! building the node binaries and running one node's felix / confd
//! processes (CNI calls go through [`lab::cni`]); [`kube`], a real
//! Kubernetes control plane per test; and [`conformance`], the datastore
//! behaviour every backend must show, run against etcd and that API server.

pub mod agent;
pub mod conformance;
pub mod kube;

pub use lab::etcd::EtcdServer;

/// Installs a tracing subscriber once (RUST_LOG controls it), so failing
/// tests show what the code under test logged.
pub fn init_tracing() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
}
