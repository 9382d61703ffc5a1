//! The short chaos cases on a 3-node calico-lab (2 subnets, CrossSubnet
//! IPIP, BFD on the mesh): kill -9 of each component, a node's link cut,
//! etcd stopped, a burst of pods. The
//! long versions are `scripts/chaos.sh`. Each case prints what it
//! measured; `calico-lab chaos` exits non-zero when a target is missed.
#![allow(clippy::unwrap_used)]

use std::process::Output;

use tests::agent::{build_node_binaries, calico_lab};

fn lab(name: &str, args: &[&str]) -> Output {
    calico_lab(name, args).unwrap()
}

struct Down(String);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = lab(&self.0, &["down"]);
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn kills_etcd_outage_and_a_pod_burst_cost_no_pod_traffic_and_leak_nothing() {
    build_node_binaries(true).unwrap();
    let name = format!("calico-lab-chaos{}", std::process::id() % 100_000);
    let _down = Down(name.clone());
    assert!(
        lab(
            &name,
            &["up", "--nodes", "3", "--pods-per-node", "1", "--bfd"]
        )
        .status
        .success()
    );

    // bird and confd: graceful restart and felix's routes keep every
    // ping answered, also through the tunnel.
    for component in ["bird", "confd"] {
        let out = lab(
            &name,
            &["chaos", "kill", "--component", component, "--seconds", "6"],
        );
        assert!(out.status.success(), "{component}");
        assert!(text(&out).contains("lost pings in all: 0"));
        assert!(text(&out).contains("running again after"));
    }
    // felix: the userspace tunnel's device, address and routes outlive
    // it and the new felix forwards before its configuration arrives, so
    // tunnelled pings (node-1 is alone in its subnet: both pairs are
    // IP-in-IP) are lost only until felix runs again (calico-node's 1 s
    // restart delay) plus `FELIX_RESUME_MARGIN` (1 s, for a slow start
    // on a loaded machine; the old felix lost 1.3 s past its return);
    // direct pairs lose none. 10 s of pings, so a felix that never
    // forwards again exceeds the bound rather than the ping run.
    let out = lab(
        &name,
        &["chaos", "kill", "--component", "felix", "--seconds", "10"],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("running again after"), "{t}");
    assert!(
        t.lines()
            .any(|l| l.contains("tunnelled loss:") && l.ends_with("PASS")),
        "{t}"
    );
    // calico-node takes bird and confd down too, and kubelet's delay is
    // ours: tunnelled pings are lost meanwhile; counted, only its return
    // is required.
    let out = lab(
        &name,
        &[
            "chaos",
            "kill",
            "--component",
            "calico-node",
            "--seconds",
            "6",
        ],
    );
    assert!(out.status.success(), "calico-node");
    // Everything reaches everything again.
    assert!(lab(&name, &["check"]).status.success());

    // A node's link cut (node-1 is in the other subnet: multihop BFD;
    // node-2 shares node-0's: single hop), each cut starting only once BFD
    // is Up on every session of the node: its blocks leave every other
    // kernel within 1 s, are back within 2 s of the link's return, and BFD
    // protects every session again within 2 s. node-1 right before node-2
    // is the order that used to catch node-2's session to node-1
    // established but not yet protected by BFD.
    for node in ["node-1", "node-2", "node-1"] {
        let out = lab(&name, &["chaos", "link", "--node", node]);
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(t.contains("BFD Up on every session of"), "{t}");
        assert!(t.contains("BFD Up again on every session"), "{t}");
        assert!(t.contains("link cut: PASS"), "{t}");
    }
    assert!(lab(&name, &["check"]).status.success());

    // etcd down: no pod traffic lost, a pod add fails cleanly and leaves
    // nothing, adds work again once it is back.
    let out = lab(&name, &["chaos", "etcd", "--seconds", "8"]);
    assert!(out.status.success());
    let t = text(&out);
    assert!(t.contains("failed as it should"), "{t}");
    assert!(t.contains("interfaces left in the pod namespace: 0"));
    assert!(t.contains(" 0 of ") && t.contains("pings lost"));

    // A burst of pods: no address twice, nothing leaked, no stale route.
    let out = lab(&name, &["chaos", "burst", "--pods", "150"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("150 distinct addresses"), "{t}");
    assert!(
        t.contains("0 problems, 0 addresses of the burst still allocated"),
        "{t}"
    );
    assert!(t.contains("0 pods not deleted after"), "{t}");
    assert!(t.contains("stale pod routes left on the nodes: 0"), "{t}");
    assert!(lab(&name, &["check"]).status.success());
}
