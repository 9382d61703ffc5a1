//! Network policy end to end in a lab (etcd mode): pods labelled as the
//! orchestrator labels them (on their WorkloadEndpoints), a Calico
//! NetworkPolicy written to the datastore, and every node's felix enforcing
//! it on the three paths a packet can take to the selected pod — from a pod
//! on the same node, from a node on the same subnet (direct) and from the
//! other subnet (IP-in-IP). Deleting the policy opens the pod again.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ippool_crd::NetworkPolicy;
use lab::Netns;
use lab::cluster::state::{self, LabState};
use serde_json::json;
use tests::agent::{
    LabDown, build_node_binaries, calico_lab, with_lab_datastore as with_datastore,
};

/// One ping from pod `from` to `to` (1 s wait): answered or not.
fn ping(st: &LabState, from: &str, to: &str) -> bool {
    let ns = &st.pods.iter().find(|p| p.name == from).unwrap().ns;
    let ip = st.pods.iter().find(|p| p.name == to).unwrap().ip.unwrap();
    Netns::existing(ns)
        .unwrap()
        .command("ping")
        .args(["-c", "1", "-W", "1", &ip.to_string()])
        .output()
        .unwrap()
        .status
        .success()
}

/// Waits (at most `limit`) until every `(from, allowed)` pair pings the
/// target as expected; returns how long that took, or panics naming the
/// pairs that still disagree.
fn wait_for_verdicts(
    st: &LabState,
    to: &str,
    expected: &[(&str, bool)],
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(from, allowed)| ping(st, from, to) != *allowed)
            .map(|(from, allowed)| {
                format!(
                    "{from} -> {to} should be {}",
                    if *allowed { "allowed" } else { "denied" }
                )
            })
            .collect();
        if wrong.is_empty() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "after {limit:?}: {wrong:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_calico_policy_is_enforced_on_the_local_direct_and_ipip_paths() {
    build_node_binaries(true).unwrap();
    let name = format!("calico-lab-pol{}", std::process::id() % 100_000);
    let _down = LabDown(name.clone());
    // node-0 and node-2 share subnet 0, node-1 is alone on subnet 1.
    let out = calico_lab(
        &name,
        &[
            "up",
            "--nodes",
            "3",
            "--subnets",
            "2",
            "--pods-per-node",
            "2",
            "--ipip",
            "crosssubnet",
        ],
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = state::load(&name).unwrap().unwrap();
    let node_of = |pod: &str| st.pods.iter().find(|p| p.name == pod).unwrap().node.clone();

    // db: pod-0-0. web: pod-0-1 (same node), pod-2-0 (direct), pod-1-0
    // (IP-in-IP). pod-2-1 and pod-1-1 have no role.
    let roles = [
        ("pod-0-0", "db"),
        ("pod-0-1", "web"),
        ("pod-2-0", "web"),
        ("pod-1-0", "web"),
    ];
    let all = [
        ("pod-0-1", true),
        ("pod-2-0", true),
        ("pod-1-0", true),
        ("pod-2-1", true),
        ("pod-1-1", true),
    ];
    // Before any policy every pod reaches db.
    wait_for_verdicts(&st, "pod-0-0", &all, Duration::from_secs(10));

    let labels: Vec<(String, String, String)> = roles
        .iter()
        .map(|(pod, role)| (node_of(pod), pod.to_string(), role.to_string()))
        .collect();
    with_datastore(&st, move |c| async move {
        for (node, pod, role) in labels {
            let l = BTreeMap::from([("role".to_string(), role)]);
            lab::labels::label_pod(&c, &node, "default", &pod, &l)
                .await
                .unwrap();
        }
        let np: NetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"selector": "role == 'db'", "types": ["Ingress"],
                     "ingress": [{"action": "Allow", "protocol": "ICMP",
                                  "source": {"selector": "role == 'web'"}}]}
        }))
        .unwrap();
        c.create(&np).await.unwrap();
    });
    let enforced = wait_for_verdicts(
        &st,
        "pod-0-0",
        &[
            ("pod-0-1", true),
            ("pod-2-0", true),
            ("pod-1-0", true),
            ("pod-2-1", false),
            ("pod-1-1", false),
        ],
        Duration::from_secs(20),
    );
    println!(
        "every verdict as expected {enforced:?} after the write (one round of pings, a denied one waits 1 s)"
    );
    // The policy selects db only: the others still reach each other.
    assert!(ping(&st, "pod-2-1", "pod-1-1"));
    assert!(
        ping(&st, "pod-0-0", "pod-2-1"),
        "db's egress is not restricted"
    );

    // Deleting the policy opens db again.
    with_datastore(&st, |c| async move {
        c.delete_in::<NetworkPolicy>("default", "db", None)
            .await
            .unwrap();
    });
    wait_for_verdicts(&st, "pod-0-0", &all, Duration::from_secs(20));
}
