//! IPAM clean-up under chaos, on a 3-node calico-lab (etcd datastore,
//! 2 subnets, CrossSubnet IP-in-IP, so every node has a tunnel address):
//!
//! 1. node-2's machine dies with two pods on it (every process in its
//!    namespace SIGKILLed) and the operator deletes it the way Calico's
//!    IPAM GC acts on in etcd: `calicoctl delete node node-2`. Right
//!    after, `calicoctl ipam check` must report node-2's pods, tunnel
//!    address and affinities as leaks (the check can fail);
//! 2. a burst of pod ADDs on node-0 and node-1 at once, and felix on
//!    node-1 SIGKILLed while its ADDs are under way (the CNI plugin
//!    fails, the lab retries as kubelet does, calico-node restarts felix);
//! 3. the elected calico-node's IPAM GC (its grace period shortened with
//!    `CALICO_IPAM_GC_GRACE_PERIOD`) cleans up: `calicoctl ipam check`,
//!    the real binary against the lab's etcd, is polled until it reports
//!    IPAM consistent and node-2's WorkloadEndpoints are gone, then IPAM
//!    is read back: node-2's blocks, affinities
//!    and tunnel address are gone, every handle belongs to a live pod or a
//!    live node's tunnel, each surviving pod holds exactly its address,
//!    and new pods on both nodes get addresses and reach old ones.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use datastore::ipam::leaks::LeakReport;
use datastore::ipam::{Ipam, ipip_tunnel_handle, pod_handle};
use datastore::{Key, ListKey};
use ippool_crd::{BlockAffinitySpec, IPAMHandleSpec, WorkloadEndpoint};
use lab::Netns;
use lab::cluster::chaos::{kill_component_now, kill_node, pid_of};
use lab::cluster::procs::container_id;
use lab::cluster::state::{self, LabState, PodState};
use tests::agent::{
    LabDown, build_many, build_node_binaries, calico_lab_command,
    with_lab_datastore as with_datastore,
};

/// The GC's timing in the lab: a round a second, a leak released once
/// seen for 8 s (Calico's default is 15 minutes). Long enough that the
/// check right after the node's deletion sees the leaks, and that a pod
/// whose ADD felix's death delays is not taken for one.
const GC_INTERVAL: &str = "1s";
const GC_GRACE: &str = "8s";
/// How long the GC may take: a new leader (node-2 may have led: its
/// lease runs out after 15 s), the grace period, a few rounds.
const CLEAN_WITHIN: Duration = Duration::from_secs(90);
/// Pods each burst thread adds, and after how many of node-1's felix dies.
const BURST: usize = 8;
const KILL_AFTER: usize = 3;

/// The real calicoctl, inside node-0's namespace, on the lab's etcd.
struct Ctl {
    bin: PathBuf,
    ns: String,
    endpoint: String,
}

impl Ctl {
    fn run(&self, args: &[&str]) -> Output {
        Netns::existing(&self.ns)
            .unwrap()
            .command(self.bin.to_str().unwrap())
            .args(args)
            .env_remove("KUBECONFIG")
            .env("DATASTORE_TYPE", "etcdv3")
            .env("ETCD_ENDPOINTS", &self.endpoint)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "calicoctl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `calicoctl ipam check -o FILE`: what it printed, and its report.
    fn check(&self, dir: &Path) -> (String, LeakReport) {
        let file = dir.join("ipam-check.json");
        let _ = std::fs::remove_file(&file);
        let text = self.ok(&["ipam", "check", "-o", file.to_str().unwrap()]);
        let report: LeakReport = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(
            report.is_clean(),
            text.contains("IPAM is consistent."),
            "{text}"
        );
        (text, report)
    }
}

/// The WorkloadEndpoints on `node`, by name.
fn endpoints_on(st: &LabState, node: &str) -> Vec<String> {
    let node = node.to_string();
    with_datastore(st, move |c| async move {
        c.list::<WorkloadEndpoint>()
            .await
            .unwrap()
            .into_iter()
            .filter(|w| w.spec.node == node)
            .filter_map(|w| w.metadata.name)
            .collect()
    })
}

/// One ping from pod namespace `from` to `ip` (1 s wait).
fn ping(from: &PodState, ip: IpAddr) -> bool {
    Netns::existing(&from.ns)
        .unwrap()
        .command("ping")
        .args(["-c", "1", "-W", "1", &ip.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Pings until answered, at most `limit`.
fn wait_ping(from: &PodState, to: &PodState, limit: Duration) -> Duration {
    let ip = IpAddr::V4(to.ip.unwrap());
    let start = Instant::now();
    while !ping(from, ip) {
        assert!(
            start.elapsed() < limit,
            "{} does not reach {} ({ip}) after {limit:?}",
            from.name,
            to.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    start.elapsed()
}

/// Adds `n` pods on node `k`, one after another, counting each one made
/// in `done`; each pod with when its `add_pod` call started and ended.
fn burst(
    st: &LabState,
    k: usize,
    n: usize,
    done: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Vec<(PodState, Instant, Instant)>> {
    let mut mine = st.clone();
    std::thread::spawn(move || {
        (0..n)
            .map(|_| {
                let started = Instant::now();
                let pod = lab::cluster::add_pod(&mut mine, k).unwrap();
                let ended = Instant::now();
                done.fetch_add(1, Ordering::SeqCst);
                (pod, started, ended)
            })
            .collect()
    })
}

fn set(v: &[IpAddr]) -> BTreeSet<IpAddr> {
    v.iter().copied().collect()
}

#[test]
fn a_deleted_node_and_a_felix_killed_mid_add_leave_ipam_clean() {
    let test_start = Instant::now();
    build_node_binaries(true).unwrap();
    let ctl_bin = build_many(&[("calicoctl", "calicoctl")]).unwrap().remove(0);
    let up_start = Instant::now();
    let name = format!("calico-lab-cipam{}", std::process::id() % 100_000);
    let _down = LabDown(name.clone());
    let out = calico_lab_command(&name, &["up", "--nodes", "3", "--pods-per-node", "2"])
        .env("CALICO_IPAM_GC_INTERVAL", GC_INTERVAL)
        .env("CALICO_IPAM_GC_GRACE_PERIOD", GC_GRACE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "binaries built in {:.1} s, lab up in {:.1} s",
        up_start.duration_since(test_start).as_secs_f64(),
        up_start.elapsed().as_secs_f64()
    );
    let mut st = state::load(&name).unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctl = Ctl {
        bin: ctl_bin,
        ns: st.nodes[0].ns.clone(),
        endpoint: st.etcd_endpoint.clone(),
    };

    // A freshly built lab is consistent: 6 pods and 3 tunnel addresses
    // (each node allocates its own as it starts).
    let start = Instant::now();
    loop {
        let (text, before) = ctl.check(dir.path());
        assert!(before.is_clean(), "{text}");
        if before.in_use == 6 + 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not 6 pods and 3 tunnel addresses:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // node-2 dies with its pods, and the operator deletes it.
    let victim = st.nodes[2].name.clone();
    let victim_pods: Vec<PodState> = st
        .pods
        .iter()
        .filter(|p| p.node == victim)
        .cloned()
        .collect();
    assert_eq!(victim_pods.len(), 2);
    let v = victim.clone();
    let (victim_blocks, victim_tunnel) = with_datastore(&st, move |c| async move {
        let ipam = Ipam::new(c);
        let blocks: Vec<String> = ipam
            .all_blocks()
            .await
            .unwrap()
            .into_iter()
            .filter(|b| b.host() == Some(v.as_str()))
            .map(|b| b.cidr.to_string())
            .collect();
        let tunnel = ipam.ips_by_handle(&ipip_tunnel_handle(&v)).await.unwrap();
        (blocks, tunnel)
    });
    assert!(!victim_blocks.is_empty(), "{victim} has no block");
    assert_eq!(victim_tunnel.len(), 1, "{victim}'s tunnel address");
    // felix on node-2 wrote an endpoint per pod; only its DEL removes one.
    assert_eq!(endpoints_on(&st, &victim).len(), 2);
    let killed = kill_node(&st, 2, Duration::from_secs(10)).unwrap();
    assert!(killed >= 4, "calico-node, confd, bird and felix: {killed}");
    let deleted_at = Instant::now();
    let out = ctl.ok(&["delete", "node", &victim]);
    assert!(out.contains("Successfully deleted 1 'Node'"), "{out}");

    // Before the GC: the check names every address node-2 held, and node-2
    // as a deleted node with affinities.
    let (text, leaking) = ctl.check(dir.path());
    assert!(
        deleted_at.elapsed() < Duration::from_secs(7),
        "the check came too late to see the leaks before the GC"
    );
    assert!(!leaking.is_clean(), "{text}");
    assert_eq!(leaking.affinities_of_deleted_nodes, vec![victim.clone()]);
    let leaked: BTreeSet<IpAddr> = leaking.leaked_addresses.iter().map(|a| a.ip).collect();
    let expected: BTreeSet<IpAddr> = victim_pods
        .iter()
        .map(|p| IpAddr::V4(p.ip.unwrap()))
        .chain(victim_tunnel.iter().copied())
        .collect();
    assert_eq!(leaked, expected, "{text}");
    assert!(leaking.duplicate_addresses.is_empty(), "{text}");
    assert!(leaking.problems.is_empty(), "{text}");
    println!("$ calicoctl ipam check (right after the delete)\n{text}");

    // A burst of ADDs on node-0 and node-1. Once 3 of node-1's pods are
    // made, node-1's felix is SIGKILLed as soon as IPAM holds an address
    // for the pod it is adding (an ADD caught between its allocation and
    // its reply: the worst moment for a leak).
    let felix_before = pid_of(&st.nodes[1].ns, "felix").unwrap();
    let done: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let threads: Vec<_> = (0..2)
        .map(|k| burst(&st, k, BURST, done[k].clone()))
        .collect();
    let (watch, node1) = (done[1].clone(), st.nodes[1].ns.clone());
    let (target, held, killed_pid, killed_at) = with_datastore(&st, move |c| async move {
        let ipam = Ipam::new(c);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "the burst is stuck");
            let d = watch.load(Ordering::SeqCst);
            assert!(d < BURST, "no ADD of the burst was caught in flight");
            if d < KILL_AFTER {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            // node-1 had pod-1-0 and pod-1-1; the burst adds pod-1-2, ...
            let target = format!("pod-1-{}", 2 + d);
            let held = ipam
                .ips_by_handle(&pod_handle(&container_id(&target)))
                .await
                .unwrap();
            if !held.is_empty() && watch.load(Ordering::SeqCst) == d {
                let pid = kill_component_now(&node1, "felix").unwrap();
                return (target, held, pid, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    assert_eq!(killed_pid, felix_before);
    let made: Vec<Vec<(PodState, Instant, Instant)>> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let felix_after = pid_of(&st.nodes[1].ns, "felix").expect("calico-node restarted felix");
    assert_ne!(felix_after, felix_before);
    // The kill fell inside that pod's ADD, which the retries (as kubelet
    // makes them) finished once calico-node had restarted felix.
    let (hit, s, e) = made[1].iter().find(|(p, _, _)| p.name == target).unwrap();
    assert!(*s <= killed_at && killed_at <= *e, "{target}");
    println!(
        "burst: {} pods on node-0, {} on node-1; felix killed while {target}'s ADD held {held:?}; \
         the ADD returned {:?} after {:.1} s",
        made[0].len(),
        made[1].len(),
        hit.ip,
        e.duration_since(*s).as_secs_f64()
    );
    for (p, _, _) in made.iter().flatten() {
        if !st.pods.iter().any(|q| q.name == p.name) {
            st.pods.push(p.clone());
        } else if let Some(q) = st.pods.iter_mut().find(|q| q.name == p.name) {
            *q = p.clone();
        }
    }
    state::save(&state::lab_dir(&name), &st).unwrap();

    // The GC cleans up; the check says so, and node-2's endpoints are
    // gone too (a stale one would keep its labels on its addresses in
    // every felix's policy sets, for the next pods that get them).
    let start = Instant::now();
    let (text, clean) = loop {
        let (text, r) = ctl.check(dir.path());
        let stale = endpoints_on(&st, &victim);
        if r.is_clean() && stale.is_empty() {
            break (text, r);
        }
        assert!(
            start.elapsed() < CLEAN_WITHIN,
            "not clean {CLEAN_WITHIN:?} after the burst; endpoints of {victim}: {stale:?}\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    println!(
        "$ calicoctl ipam check ({:.1} s after the node's deletion)\n{text}",
        deleted_at.elapsed().as_secs_f64()
    );
    let survivors: Vec<PodState> = st
        .pods
        .iter()
        .filter(|p| p.node != victim)
        .cloned()
        .collect();
    assert_eq!(survivors.len(), 4 + 2 * BURST);
    let ips: BTreeSet<IpAddr> = survivors
        .iter()
        .map(|p| IpAddr::V4(p.ip.unwrap()))
        .collect();
    assert_eq!(ips.len(), survivors.len(), "an address handed out twice");
    // Exactly the survivors' addresses and the two live tunnel addresses.
    assert_eq!(clean.in_use, survivors.len() + 2, "{text}");

    // IPAM read back: nothing of node-2's, each survivor's handle holds
    // exactly its address, every handle belongs to a survivor or a live
    // node's tunnel.
    let v = victim.clone();
    let pods: Vec<(String, IpAddr)> = survivors
        .iter()
        .map(|p| (p.name.clone(), IpAddr::V4(p.ip.unwrap())))
        .collect();
    let live: Vec<String> = st.nodes[..2].iter().map(|n| n.name.clone()).collect();
    with_datastore(&st, move |c| async move {
        let ipam = Ipam::new(c.clone());
        for b in ipam.all_blocks().await.unwrap() {
            assert_ne!(b.host(), Some(v.as_str()), "block {} kept", b.cidr);
        }
        let affinities = c
            .list_values::<BlockAffinitySpec>(&ListKey::Affinities { host: None })
            .await
            .unwrap();
        for (k, _) in &affinities {
            if let Key::Affinity { host, cidr } = k {
                assert_ne!(host, &v, "affinity {cidr} kept");
            }
        }
        assert!(
            ipam.ips_by_handle(&ipip_tunnel_handle(&v))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            ipam.live_nodes().await.unwrap(),
            live.iter().cloned().collect()
        );
        let mut wanted: BTreeSet<String> = live.iter().map(|n| ipip_tunnel_handle(n)).collect();
        for (pod, ip) in &pods {
            let h = pod_handle(&container_id(pod));
            assert_eq!(
                set(&ipam.ips_by_handle(&h).await.unwrap()),
                BTreeSet::from([*ip]),
                "{pod}"
            );
            wanted.insert(h);
        }
        let handles: BTreeSet<String> = c
            .list_values::<IPAMHandleSpec>(&ListKey::Handles)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|(k, _)| match k {
                Key::Handle { id } => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(handles, wanted);
    });
    println!("{victim}'s blocks {victim_blocks:?} and tunnel address {victim_tunnel:?} released");

    // felix restarted: new pods on node-1 and node-0 get addresses and
    // reach each other and the old pods, across the tunnel too.
    let new1 = lab::cluster::add_pod(&mut st, 1).unwrap();
    let new0 = lab::cluster::add_pod(&mut st, 0).unwrap();
    assert!(!ips.contains(&IpAddr::V4(new1.ip.unwrap())));
    assert!(!ips.contains(&IpAddr::V4(new0.ip.unwrap())));
    let old0 = survivors
        .iter()
        .find(|p| p.node == st.nodes[0].name)
        .unwrap();
    let old1 = survivors
        .iter()
        .find(|p| p.node == st.nodes[1].name)
        .unwrap();
    let limit = Duration::from_secs(20);
    for (from, to) in [
        (&new1, &new0),
        (&new0, &new1),
        (&new1, old0),
        (&new1, old1),
        (&new0, old1),
    ] {
        wait_ping(from, to, limit);
    }
    // Every burst pod made across felix's death is reachable from node-0.
    for (p, _, _) in &made[1] {
        wait_ping(&new0, p, limit);
    }
    let (text, r) = ctl.check(dir.path());
    assert!(r.is_clean(), "{text}");
    assert_eq!(r.in_use, survivors.len() + 2 + 2, "{text}");
    println!("test took {:.1} s", test_start.elapsed().as_secs_f64());
}
