//! BGP passwords from Kubernetes Secrets, against a real kube-apiserver
//! with `deploy/crds.yaml` and `deploy/calico-node.yaml` applied: the
//! `confd` binary runs in Kubernetes mode with a token of calico-node's
//! ServiceAccount (so it reads with exactly the shipped ClusterRole and
//! Role) and pushes to a recording BgpConfigService.
//!
//! Needs `CALICO_K8S_BIN` (see `tests::kube`).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::confd::{Recorder, apply, kube_node, kube_with_calico, repo_file, start_confd};
use datastore::KubeOptions;
use datastore::secrets::{KubeSecrets, SecretError, SecretEvent};
use proto::bgpconfig::{BgpConfig, BgpPeerConfig};
use tests::kube::KubeServer;

const NS: &str = "kube-system";
const TOR: &str = "Global_10_0_0_254";
/// Passwords no log line could contain by chance.
const ONE: &str = "first-Md5-key-7c1e";
const TWO: &str = "second-Md5-key-93ab";

fn peer<'a>(c: &'a BgpConfig, name: &str) -> Option<&'a BgpPeerConfig> {
    c.peers.iter().find(|p| p.name == name)
}

/// Waits (bounded) for a pushed config whose ToR peer satisfies `pred`.
async fn wait_for_tor(
    rec: &Recorder,
    what: &str,
    pred: impl Fn(&BgpPeerConfig) -> bool,
    log: &Path,
) -> BgpConfig {
    rec.wait_last(
        what,
        |c| peer(c, TOR).is_some_and(&pred),
        |c| format!("{:?}", peer(c, TOR)),
        log,
    )
    .await
}

fn cluster_objects() -> String {
    format!(
        "{}{}\
apiVersion: crd.projectcalico.org/v1
kind: BGPPeer
metadata: {{name: tor}}
spec:
  peerIP: 10.0.0.254
  asNumber: 65001
  password:
    secretKeyRef: {{name: bgp-passwords, key: tor}}
---
apiVersion: crd.projectcalico.org/v1
kind: BGPPeer
metadata: {{name: rr}}
spec:
  peerIP: 10.0.0.253
  asNumber: 65002
",
        kube_node("node-1", "10.0.0.1/24"),
        kube_node("node-2", "10.0.0.2/24"),
    )
}

fn secret(data: &[(&str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bgp-passwords\n  namespace: {NS}\n\
         stringData:\n"
    );
    for (k, v) in data {
        s.push_str(&format!("  {k}: {v}\n"));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_password_follows_its_secret_and_other_peers_are_never_touched() {
    tests::init_tracing();
    tests::agent::build_node_binaries(false).unwrap();
    let k = kube_with_calico();
    apply(&k, &cluster_objects());

    // confd as calico-node: the ServiceAccount's token, nothing more.
    let confd = start_confd(&k, "node-1").await;
    let (rec, log) = (&confd.rec, &confd.log);

    // No Secret: the ToR is held down, with where the password was sought.
    let first = wait_for_tor(
        rec,
        "the ToR held down",
        |p| !p.password_unavailable.is_empty(),
        log,
    )
    .await;
    let tor = peer(&first, TOR).unwrap();
    assert_eq!(
        tor.password_unavailable,
        "password secret kube-system/bgp-passwords does not exist: session held down"
    );
    assert_eq!(tor.password, "", "never an unauthenticated session");
    // The peers that ask for no password, as they are from the start.
    let others = |c: &BgpConfig| -> Vec<BgpPeerConfig> {
        c.peers.iter().filter(|p| p.name != TOR).cloned().collect()
    };
    let baseline = others(&first);
    let names: Vec<&str> = baseline.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Mesh_10_0_0_2", "Global_10_0_0_253"]);

    // The Secret appears without the key.
    apply(&k, &secret(&[("other", "x")]));
    wait_for_tor(
        rec,
        "no key 'tor'",
        |p| {
            p.password_unavailable
                == "password secret kube-system/bgp-passwords has no key 'tor': session held down"
        },
        log,
    )
    .await;

    // The key arrives: the ToR comes up with it, nothing restarted.
    apply(&k, &secret(&[("other", "x"), ("tor", ONE)]));
    wait_for_tor(
        rec,
        "the first password",
        |p| p.password == ONE && p.password_unavailable.is_empty(),
        log,
    )
    .await;

    // Rotation: the new key reaches bird.
    apply(&k, &secret(&[("other", "x"), ("tor", TWO)]));
    let t = Instant::now();
    wait_for_tor(rec, "the second password", |p| p.password == TWO, log).await;
    println!(
        "Secret changed -> new key pushed to bird: {:?}",
        t.elapsed()
    );

    // The Secret is deleted: held down again.
    k.kubectl(&["-n", NS, "delete", "secret", "bgp-passwords"])
        .unwrap();
    wait_for_tor(
        rec,
        "held down after the delete",
        |p| p.password.is_empty() && p.password_unavailable.contains("does not exist"),
        log,
    )
    .await;

    // Throughout, every push carried the other peers exactly as at first.
    for c in rec.all() {
        assert_eq!(others(&c), baseline);
    }
    let text = std::fs::read_to_string(log).unwrap();
    for line in [
        "BGP session held down: its password is unavailable",
        "BGP password available: the session may start",
        "BGP password changed: that session is re-keyed",
    ] {
        assert!(text.contains(line), "{line:?} not in confd's log:\n{text}");
    }
    assert!(!text.contains(ONE) && !text.contains(TWO), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calico_nodes_account_reads_secrets_in_its_namespace_and_nowhere_else() {
    tests::init_tracing();
    let k = KubeServer::start().unwrap();
    apply(&k, &repo_file("deploy/calico-node.yaml"));
    apply(&k, &secret(&[("tor", "k")]));
    let token = k.service_account_token(NS, "calico-node").unwrap();
    let client = k
        .client_from(&k.cp.kubeconfig_for("calico-node", &token))
        .await
        .unwrap();
    let first = |ns: &str, name: &str| {
        let secrets = KubeSecrets::new(client.clone(), &k.cp.url, ns, KubeOptions::default());
        let name = name.to_string();
        async move {
            let mut w = secrets.watch(&name);
            tokio::time::timeout(Duration::from_secs(20), w.recv())
                .await
                .unwrap()
                .unwrap()
        }
    };

    // Its own namespace: read.
    match first(NS, "bgp-passwords").await {
        SecretEvent::Current(Some(d)) => assert_eq!(d["tor"], b"k"),
        other => panic!("{other:?}"),
    }
    assert_eq!(first(NS, "nothing-here").await, SecretEvent::Current(None));

    // Another namespace: refused by the API server (no ClusterRole rule
    // grants Secrets), and the error says which Role to look at.
    k.kubectl(&[
        "create",
        "secret",
        "generic",
        "bgp-passwords",
        "-n",
        "default",
        "--from-literal=tor=k",
    ])
    .unwrap();
    match first("default", "bgp-passwords").await {
        SecretEvent::Failed(e @ SecretError::Forbidden { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("default/bgp-passwords")
                    && text.contains("calico-node-bgp-passwords"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }

    // A Role narrowed to one Secret by resourceNames (what an operator
    // may do with ours) allows the reader exactly that Secret: each
    // request selects its one name.
    apply(
        &k,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: narrow, namespace: default}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
         metadata: {name: narrow, namespace: default}\n\
         rules:\n- apiGroups: ['']\n  resources: [secrets]\n  resourceNames: [bgp-passwords]\n  \
         verbs: [get, list, watch]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {name: narrow, namespace: default}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: narrow}\n\
         subjects:\n- {kind: ServiceAccount, name: narrow, namespace: default}\n",
    );
    let token = k.service_account_token("default", "narrow").unwrap();
    let narrow = k
        .client_from(&k.cp.kubeconfig_for("narrow", &token))
        .await
        .unwrap();
    let watch = |name: &str| {
        KubeSecrets::new(narrow.clone(), &k.cp.url, "default", KubeOptions::default()).watch(name)
    };
    let mut allowed = watch("bgp-passwords");
    let ev = tokio::time::timeout(Duration::from_secs(20), allowed.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ev, SecretEvent::Current(Some(_))), "{ev:?}");
    // The watch is allowed too: a change arrives through it.
    k.kubectl(&[
        "-n",
        "default",
        "patch",
        "secret",
        "bgp-passwords",
        "-p",
        r#"{"stringData":{"tor":"rotated"}}"#,
    ])
    .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(20), allowed.recv())
        .await
        .unwrap()
        .unwrap();
    match ev {
        SecretEvent::Current(Some(d)) => assert_eq!(d["tor"], b"rotated"),
        other => panic!("{other:?}"),
    }
    let mut other = watch("other");
    let ev = tokio::time::timeout(Duration::from_secs(20), other.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(ev, SecretEvent::Failed(SecretError::Forbidden { .. })),
        "{ev:?}"
    );
}
