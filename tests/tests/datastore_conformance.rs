//! The same datastore behaviour, checked on both backends: each function
//! of `tests::conformance` runs once against a real etcd (the etcd
//! backend) and once against a real kube-apiserver with the CRDs of
//! `deploy/crds.yaml` (the Kubernetes backend).
#![allow(clippy::unwrap_used)]

use datastore::{Client, KubeOptions};
use tests::kube::KubeServer;
use tests::{EtcdServer, conformance};

async fn on_etcd() -> (EtcdServer, Client) {
    tests::init_tracing();
    let etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    (etcd, c)
}

/// A real API server with the CRDs of deploy/crds.yaml; small pages, so
/// paging is exercised with few objects.
async fn on_kube() -> (KubeServer, Client) {
    tests::init_tracing();
    let server = KubeServer::start().unwrap();
    server.install_crds().unwrap();
    let opts = KubeOptions {
        page_size: 50,
        ..Default::default()
    };
    let c = server.datastore(opts).await.unwrap();
    (server, c)
}

macro_rules! on_both {
    ($name:ident $(, $arg:expr)*) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn etcd() {
                let (_etcd, c) = on_etcd().await;
                conformance::$name(&c $(, $arg)*).await;
            }

            #[tokio::test]
            async fn kubernetes() {
                let (_server, c) = on_kube().await;
                conformance::$name(&c $(, $arg)*).await;
            }
        }
    };
}

on_both!(crud_with_compare_and_swap);
on_both!(concurrent_read_modify_write_loses_nothing);
on_both!(status_updates_are_compare_and_swap);
on_both!(ipam_values_round_trip);
on_both!(lists_are_complete_across_pages, 1_203);
on_both!(names_that_would_escape_their_key_are_refused);
on_both!(watch_snapshot_changes_and_resume);
on_both!(ipam_concurrent_assign_and_release);
on_both!(bgp_filters_round_trip);
