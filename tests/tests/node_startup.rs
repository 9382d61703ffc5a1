//! calico-node's start-up steps against a real etcd.
#![allow(clippy::unwrap_used)]

use ippool_crd::{EncapMode, IPPool, Node};
use node::settings::{IpSetting, Settings};
use node::startup::{self, StartupError};
use tests::EtcdServer;

fn settings(name: &str, extra: &[(&str, &str)]) -> Settings {
    let mut vars: Vec<(String, String)> = vec![("NODENAME".into(), name.into())];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::from_env(move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap()
}

#[tokio::test]
async fn registration_sets_address_and_as_and_refuses_a_duplicate_address() {
    let etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    let s1 = settings("node-1", &[("IP", "10.0.0.1/24"), ("AS", "64513")]);
    let addr = startup::resolve_address(&s1.ip).unwrap();
    startup::register_node(&c, &s1, addr).await.unwrap();
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert_eq!(n.bgp_ipv4().unwrap().to_string(), "10.0.0.1/24");
    assert_eq!(n.asn(), Some(64513));

    // Re-registering with a new address updates it in place.
    let s1b = settings("node-1", &[("IP", "10.0.0.9/24")]);
    startup::register_node(&c, &s1b, startup::resolve_address(&s1b.ip).unwrap())
        .await
        .unwrap();
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert_eq!(n.bgp_ipv4().unwrap().ip().to_string(), "10.0.0.9");
    assert_eq!(n.asn(), Some(64513), "AS kept when AS is unset");

    // Another node may not take the same address.
    let s2 = settings("node-2", &[("IP", "10.0.0.9/24")]);
    let err = startup::register_node(&c, &s2, startup::resolve_address(&s2.ip).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StartupError::AddressInUse { .. }), "{err}");
    assert!(err.to_string().contains("node-1"), "{err}");
    assert!(c.get::<Node>("node-2").await.unwrap().is_none());
}

#[tokio::test]
async fn the_default_pool_is_created_once_and_never_over_an_operators_pool() {
    let etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    let s = settings(
        "n",
        &[
            ("CALICO_IPV4POOL_CIDR", "10.65.0.0/16"),
            ("CALICO_IPV4POOL_IPIP", "CrossSubnet"),
        ],
    );
    let pool = s.default_pool.clone().unwrap();
    assert!(startup::ensure_default_pool(&c, &pool).await.unwrap());
    assert!(
        !startup::ensure_default_pool(&c, &pool).await.unwrap(),
        "only once"
    );
    let p: IPPool = c.get("default-ipv4-ippool").await.unwrap().unwrap();
    let cfg = p.config().unwrap();
    assert_eq!(cfg.cidr.to_string(), "10.65.0.0/16");
    assert_eq!(cfg.ipip_mode, EncapMode::CrossSubnet);
    assert!(cfg.nat_outgoing);

    // A cluster whose operator made their own IPv4 pool gets no default.
    let etcd2 = EtcdServer::start().unwrap();
    let c2 = datastore::connect_etcd(&etcd2.endpoint()).await.unwrap();
    let mine: IPPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": "operators-pool"}, "spec": {"cidr": "172.20.0.0/16"},
    }))
    .unwrap();
    c2.create(&mine).await.unwrap();
    assert!(!startup::ensure_default_pool(&c2, &pool).await.unwrap());
    assert!(
        c2.get::<IPPool>("default-ipv4-ippool")
            .await
            .unwrap()
            .is_none()
    );
}

#[test]
fn ip_none_registers_no_address() {
    let s = settings("n", &[("IP", "none")]);
    assert!(matches!(s.ip, IpSetting::None));
    assert_eq!(startup::resolve_address(&s.ip).unwrap(), None);
}
