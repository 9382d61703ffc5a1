//! `calico-lab`, driven as a user drives it: the demo (every pod reaches
//! every pod over the expected path, direct or IP-in-IP), `up` after a
//! killed `up`, `status` / `exec` / `check`, `down` leaving nothing
//! behind, a 10-node lab passing its ping matrix, and BIRD 2 as the ToR
//! receiving the BGPConfiguration communities on each node's blocks and
//! losing exactly the block a BGPFilter rejects.
//!
//! The tests share the machine's two cores with a dozen daemons each, so
//! they run one at a time.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lab::cluster::state::{self, lab_dir};
use tests::agent::{
    build_node_binaries, calico_lab_command, lab_name, lab_namespaces as namespaces, run_lab as run,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn build_all() {
    build_node_binaries(true).unwrap();
}

fn lab(name: &str, args: &[&str]) -> Command {
    calico_lab_command(name, args)
}

fn root_links() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect()
}

/// Removes the lab even when an assertion fails half-way.
struct Down(String);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = lab(&self.0, &["down"]).output();
    }
}

/// The pod's node index from `pod-<k>-<j>`.
fn node_of(pod: &str) -> usize {
    pod.split('-').nth(1).unwrap().parse().unwrap()
}

#[test]
fn demo_every_pod_reaches_every_pod_over_the_expected_path_and_leaves_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    build_all();
    let name = lab_name("demo");
    let _down = Down(name.clone());
    let links_before = root_links();
    let out = run(&name, &["demo", "--pairs"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "demo failed");
    assert!(text.contains("demo PASSED"));

    // 3 nodes, 2 pods each: 30 ordered pairs. node-0 and node-2 share
    // subnet 0, node-1 is alone on subnet 1: CrossSubnet tunnels exactly
    // the pairs that involve node-1.
    let pairs: Vec<&str> = text.lines().filter(|l| l.starts_with("pair ")).collect();
    assert_eq!(pairs.len(), 30, "{text}");
    for line in pairs {
        // "pair pod-0-0 -> pod-1-0: reached path=ipip expected=ipip"
        let words: Vec<&str> = line.split_whitespace().collect();
        let (from, to) = (node_of(words[1]), node_of(words[3].trim_end_matches(':')));
        let expected = if from == to {
            "local"
        } else if from == 1 || to == 1 {
            "ipip"
        } else {
            "direct"
        };
        assert_eq!(words[4], "reached", "{line}");
        assert_eq!(words[5], format!("path={expected}"), "{line}");
    }
    // Every node peered with the ToR and the other two nodes.
    assert_eq!(
        text.matches("| node specific     | up    |").count(),
        3,
        "{text}"
    );
    assert_eq!(text.matches("| node-to-node mesh | up    |").count(), 6);
    // NAT-outgoing seen on the wire from each node.
    assert_eq!(text.matches("(masqueraded to the node: ok)").count(), 3);
    // The demo's policy: the web pod reaches the db pod, the two others
    // are denied, and deleting the policy lets them through again.
    for line in [
        "pod-1-0 -> pod-0-0 (role=web, over IP-in-IP): reached (should be allowed: ok)",
        "pod-0-1 -> pod-0-0 (no role, same node): no answer (should be denied: ok)",
        "pod-2-0 -> pod-0-0 (no role, direct): no answer (should be denied: ok)",
        "policy deleted: pod-2-0 -> pod-0-0 reached again (ok)",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }

    // Torn down: nothing left.
    assert!(namespaces(&name).is_empty(), "{:?}", namespaces(&name));
    assert!(!lab_dir(&name).exists());
    assert_eq!(root_links(), links_before);
}

#[test]
fn up_after_a_killed_up_works_and_down_leaves_nothing_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    build_all();
    let name = lab_name("up");
    let _down = Down(name.clone());
    let links_before = root_links();
    let args = [
        "up",
        "--nodes",
        "2",
        "--subnets",
        "2",
        "--pods-per-node",
        "1",
        "--ipip",
        "always",
    ];

    // An `up` killed half-way: the moment its state file says etcd runs
    // (the nodes' namespaces exist by then, no calico-node is started yet,
    // so it cannot have finished; killing after a fixed sleep could find a
    // fast machine's lab complete).
    let mut first = lab(&name, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let etcd_runs = || matches!(state::load(&name), Ok(Some(s)) if s.etcd_pid.is_some());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !etcd_runs() {
        assert!(Instant::now() < deadline, "the first up never got to etcd");
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first up ended before etcd ran"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let killed = state::load(&name)
        .unwrap()
        .expect("the killed up left its state");
    assert!(!killed.complete, "{killed:?}");
    assert!(
        namespaces(&name).iter().any(|n| n.ends_with("-etcd")),
        "the killed up left nothing to clean"
    );

    // A second up cleans up after it and builds the lab.
    let out = run(&name, &args);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("removing what an interrupted"), "{text}");
    // A complete lab is not built over.
    assert!(!run(&name, &args).status.success());

    // status, exec, check.
    let status = String::from_utf8_lossy(&run(&name, &["status"]).stdout).into_owned();
    assert!(status.contains("node-0") && status.contains("node-1"));
    assert_eq!(status.matches("running (pid").count(), 2, "{status}");
    assert!(status.contains("| node-to-node mesh | up "), "{status}");
    let route = run(
        &name,
        &["exec", "node-0", "--", "ip", "route", "show", "proto", "80"],
    );
    assert!(route.status.success());
    assert!(String::from_utf8_lossy(&route.stdout).contains("dev tunl0 onlink"));
    let check = run(&name, &["check", "--pairs"]);
    assert!(check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains("path=ipip expected=ipip"));

    // The processes it runs, before it goes.
    let st = state::load(&name)
        .unwrap()
        .expect("a lab that is up has its state");
    let mut pids: Vec<i32> = st.nodes.iter().filter_map(|n| n.pid).collect();
    pids.extend(st.etcd_pid);
    assert_eq!(pids.len(), 3);
    let children: Vec<String> = namespaces(&name)
        .iter()
        .flat_map(|ns| {
            let out = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    // calico-node, its confd, bird and felix on each node, and etcd.
    assert!(children.len() >= 9, "{children:?}");

    assert!(run(&name, &["down"]).status.success());
    assert!(namespaces(&name).is_empty(), "{:?}", namespaces(&name));
    assert!(!lab_dir(&name).exists());
    for pid in children
        .iter()
        .map(|p| p.parse::<i32>().unwrap())
        .chain(pids)
    {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "process {pid} survived down: {stat}"
        );
    }
    assert_eq!(root_links(), links_before);
    // And down again is harmless.
    assert!(run(&name, &["down"]).status.success());
}

#[test]
fn ten_node_lab_converges_and_every_pod_reaches_every_pod() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    build_all();
    let name = lab_name("ten");
    let _down = Down(name.clone());
    let started = Instant::now();
    let out = run(
        &name,
        &[
            "up",
            "--nodes",
            "10",
            "--subnets",
            "2",
            "--pods-per-node",
            "1",
        ],
    );
    assert!(out.status.success());
    println!("10-node lab up and converged in {:?}", started.elapsed());
    let check = run(&name, &["check", "--pairs"]);
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("pair ")).count(), 90);
    assert!(text.contains("90/90 pairs"));
    assert!(run(&name, &["down"]).status.success());
    assert!(namespaces(&name).is_empty());
}

#[test]
fn borrowed_addresses_are_advertised_as_host_routes_and_reached() {
    borrowed_addresses_are_host_routes("brw", &[], " via ");
}

/// The same in a VXLAN pool (felix's userspace VTEP where the kernel has
/// no vxlan): the borrowing node's VTEP carries its borrowed addresses,
/// and the other nodes route each one to that VTEP.
#[test]
fn borrowed_addresses_in_a_vxlan_pool_go_to_the_borrowers_vtep() {
    borrowed_addresses_are_host_routes(
        "brx",
        &["--ipip", "never", "--vxlan", "always"],
        " dev vxlan.calico ",
    );
}

/// A pool of a single /26 block: whichever node claims it first owns it;
/// the other two borrow their pods' (and tunnel) addresses from it
/// (strictAffinity off, Calico's default). Every pod reaches every pod,
/// and every node routes each address borrowed by another node as a host
/// route (`route` in its line) to that node: the owner's /26 alone would
/// send them to the owner.
fn borrowed_addresses_are_host_routes(tag: &str, args: &[&str], route: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    build_all();
    let name = lab_name(tag);
    let _down = Down(name.clone());
    let mut up = vec!["up", "--pool", "10.66.0.0/26", "--block-size", "26"];
    up.extend_from_slice(args);
    let out = run(&name, &up);
    assert!(out.status.success());
    let check = run(&name, &["check", "--pairs"]);
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{text}");
    assert!(text.contains("30/30 pairs"), "{text}");
    let mut host_routes = 0;
    for node in 0..3 {
        let routes = run(
            &name,
            &["exec", &format!("node-{node}"), "--", "ip", "route"],
        );
        let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
        assert_eq!(
            routes
                .lines()
                .filter(|l| l.starts_with("10.66.0.0/26 "))
                .count(),
            usize::from(
                !routes
                    .lines()
                    .any(|l| l.starts_with("blackhole 10.66.0.0/26"))
            ),
            "node-{node}: the block is routed to its owner unless it is this node\n{routes}"
        );
        host_routes += routes
            .lines()
            .filter(|l| l.starts_with("10.66.0.") && !l.contains('/') && l.contains(route))
            .count();
    }
    // 2 borrowing nodes × (2 pods + 1 tunnel address), seen by the 2
    // other nodes each.
    assert_eq!(host_routes, 12, "borrowed host routes across the nodes");
}

/// One route of `birdc show route all`: its prefix, the protocol it came
/// from, and its attribute lines (`BGP.community` → `(65000,100) ...`).
#[derive(Debug)]
struct BirdRoute {
    prefix: String,
    protocol: String,
    attrs: std::collections::BTreeMap<String, String>,
}

fn parse_bird_routes(text: &str) -> Vec<BirdRoute> {
    let mut out: Vec<BirdRoute> = Vec::new();
    let mut prefix = String::new();
    for line in text.lines() {
        let indented = line.starts_with(char::is_whitespace);
        if !indented && line.contains(" [") {
            // `10.65.1.0/26  unicast [node_0 12:00:00.000] * (100) [AS64512i]`
            prefix = line.split_whitespace().next().unwrap_or_default().into();
        } else if !(indented && line.trim_start().starts_with("unicast [")) {
            if indented
                && let Some((k, v)) = line.trim().split_once(": ")
                && let Some(r) = out.last_mut()
            {
                r.attrs.insert(k.to_string(), v.to_string());
            }
            continue;
        }
        let protocol = line
            .split_once(" [")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_default()
            .trim_end_matches(']')
            .to_string();
        out.push(BirdRoute {
            prefix: prefix.clone(),
            protocol,
            attrs: Default::default(),
        });
    }
    out
}

/// Polls the ToR's `show route all` until `ok` holds (60 s at most);
/// returns the last routes seen.
fn tor_routes_until(name: &str, what: &str, ok: impl Fn(&[BirdRoute]) -> bool) -> Vec<BirdRoute> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = lab::cluster::procs::birdc(&lab_dir(name), &["show", "route", "all"])
            .unwrap_or_default();
        let routes = parse_bird_routes(&text);
        if ok(&routes) {
            return routes;
        }
        assert!(
            Instant::now() < deadline,
            "the ToR never saw {what}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn bird2_tor_gets_each_nodes_blocks_with_the_bgpconfiguration_communities() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    build_all();
    let name = lab_name("com");
    let _down = Down(name.clone());
    let out = run(
        &name,
        &[
            "up",
            "--nodes",
            "2",
            "--subnets",
            "1",
            "--pods-per-node",
            "1",
            "--tor",
        ],
    );
    assert!(out.status.success());
    let lab_ctl = LabCtl::new(&name);
    let ctl = |args: &[&str]| lab_ctl.run(args);
    let apply = |file: &str, yaml: &str| lab_ctl.apply(file, yaml);
    let is_pool_block = |r: &&BirdRoute| r.prefix.starts_with("10.65.");

    // Before: the blocks arrive without communities.
    let before = tor_routes_until(&name, "a block from each node", |rs| {
        ["node_0", "node_1"].iter().all(|p| {
            rs.iter()
                .any(|r| &r.protocol == p && r.prefix.starts_with("10.65."))
        })
    });
    for r in before.iter().filter(is_pool_block) {
        assert!(!r.attrs.contains_key("BGP.community"), "{r:?}");
        assert!(!r.attrs.contains_key("BGP.large_community"), "{r:?}");
    }

    // Named communities (standard and large) and a literal value for the
    // pool; node-1 overrides the cluster's advertisements with its own.
    let cluster = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  communities:\n  - name: gold\n    value: \"65000:100\"\n  - name: big\n    value: \"65000:7:8\"\n  prefixAdvertisements:\n  - cidr: 10.65.0.0/16\n    communities: [gold, big, \"64512:9\"]\n";
    let out = apply("default.yaml", cluster);
    assert!(out.status.success());
    let node1 = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node-1\nspec:\n  prefixAdvertisements:\n  - cidr: 10.65.0.0/16\n    communities: [\"65000:200\", \"1:2:3\"]\n";
    let out = apply("node1.yaml", node1);
    assert!(out.status.success());

    let expect = |r: &BirdRoute| -> (Option<&str>, Option<&str>) {
        if r.protocol == "node_1" {
            (Some("(65000,200)"), Some("(1, 2, 3)"))
        } else {
            (Some("(64512,9) (65000,100)"), Some("(65000, 7, 8)"))
        }
    };
    let matches = |r: &BirdRoute| {
        (
            r.attrs.get("BGP.community").map(String::as_str),
            r.attrs.get("BGP.large_community").map(String::as_str),
        ) == expect(r)
    };
    let routes = tor_routes_until(&name, "the communities on every block", |rs| {
        let blocks: Vec<&BirdRoute> = rs.iter().filter(is_pool_block).collect();
        !blocks.is_empty() && blocks.iter().all(|r| matches(r))
    });
    // Attribute by attribute: the communities changed, the rest did not.
    for r in routes.iter().filter(is_pool_block) {
        let old = before
            .iter()
            .find(|b| b.prefix == r.prefix && b.protocol == r.protocol)
            .unwrap_or_else(|| panic!("{} was not there before", r.prefix));
        let (community, large) = expect(r);
        assert_eq!(r.attrs.get("BGP.community").map(String::as_str), community);
        assert_eq!(
            r.attrs.get("BGP.large_community").map(String::as_str),
            large
        );
        for attr in ["BGP.origin", "BGP.as_path", "BGP.next_hop"] {
            assert_eq!(r.attrs.get(attr), old.attrs.get(attr), "{attr} of {r:?}");
        }
        assert_eq!(r.attrs["BGP.as_path"], "64512", "{r:?}");
    }

    // calicoctl reads back what it wrote.
    let got = ctl(&["get", "bgpconfiguration", "default", "-o", "yaml"]);
    let got: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&got.stdout).unwrap();
    let want: serde_yaml_ng::Value = serde_yaml_ng::from_str(cluster).unwrap();
    assert_eq!(got["spec"]["communities"], want["spec"]["communities"]);
    assert_eq!(
        got["spec"]["prefixAdvertisements"],
        want["spec"]["prefixAdvertisements"]
    );

    // A name that is not defined is refused with the field named, and
    // nothing changes on the ToR.
    let bad = cluster.replace("[gold, big,", "[gold, silver,");
    let out = apply("bad.yaml", &bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.prefixAdvertisements[0].communities[1]") && err.contains("silver"),
        "{err}"
    );
    let text =
        lab::cluster::procs::birdc(&lab_dir(&name), &["show", "route", "all"]).unwrap_or_default();
    let blocks = parse_bird_routes(&text);
    assert!(
        blocks.iter().filter(is_pool_block).all(matches),
        "the refused apply changed what the ToR has:\n{text}"
    );

    // Removing the advertisements takes the communities off again.
    let out = ctl(&["delete", "bgpconfiguration", "node.node-1"]);
    assert!(out.status.success());
    let plain = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec: {}\n";
    assert!(apply("plain.yaml", plain).status.success());
    let routes = tor_routes_until(&name, "the blocks without communities", |rs| {
        let blocks: Vec<&BirdRoute> = rs.iter().filter(is_pool_block).collect();
        !blocks.is_empty()
            && blocks.iter().all(|r| {
                !r.attrs.contains_key("BGP.community")
                    && !r.attrs.contains_key("BGP.large_community")
            })
    });
    let protocols: BTreeSet<&str> = routes
        .iter()
        .filter(is_pool_block)
        .map(|r| r.protocol.as_str())
        .collect();
    assert_eq!(protocols, BTreeSet::from(["node_0", "node_1"]));
}

/// calicoctl run inside the lab's router namespace, where etcd is
/// reachable.
struct LabCtl {
    lab: String,
    bin: std::path::PathBuf,
    endpoints: String,
    dir: tempfile::TempDir,
}

impl LabCtl {
    fn new(lab: &str) -> LabCtl {
        let bin = tests::agent::build_many(&[("calicoctl", "calicoctl")])
            .unwrap()
            .remove(0);
        let st = lab::cluster::open(lab).unwrap();
        LabCtl {
            lab: lab.to_string(),
            bin,
            endpoints: format!("ETCD_ENDPOINTS={}", st.etcd_endpoint),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "exec",
            "router",
            "--",
            "env",
            "DATASTORE_TYPE=etcdv3",
            self.endpoints.as_str(),
            self.bin.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run(&self.lab, &all)
    }

    fn apply(&self, file: &str, yaml: &str) -> Output {
        let path = self.dir.path().join(file);
        std::fs::write(&path, yaml).unwrap();
        self.run(&["apply", "-f", path.to_str().unwrap()])
    }
}

#[test]
fn bird2_tor_loses_exactly_the_block_a_bgpfilter_rejects() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    build_all();
    let name = lab_name("flt");
    let _down = Down(name.clone());
    let out = run(
        &name,
        &[
            "up",
            "--nodes",
            "2",
            "--subnets",
            "1",
            "--pods-per-node",
            "1",
            "--tor",
        ],
    );
    assert!(out.status.success());
    let ctl = LabCtl::new(&name);
    let blocks = |rs: &[BirdRoute], proto: &str| -> Vec<String> {
        rs.iter()
            .filter(|r| r.protocol == proto && r.prefix.starts_with("10.65."))
            .map(|r| r.prefix.clone())
            .collect()
    };
    let before = tor_routes_until(&name, "a block from each node", |rs| {
        !blocks(rs, "node_0").is_empty() && !blocks(rs, "node_1").is_empty()
    });
    let node0 = blocks(&before, "node_0");
    let node1 = blocks(&before, "node_1");
    let rejected = node0[0].clone();

    // The filter, and node-0's ToR peering naming it.
    let filter = format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: hide-one\nspec:\n  exportV4:\n  - action: Reject\n    matchOperator: Equal\n    cidr: {rejected}\n"
    );
    assert!(ctl.apply("filter.yaml", &filter).status.success());
    let got = ctl.run(&["get", "bgpfilters", "-o", "yaml"]);
    let text = String::from_utf8_lossy(&got.stdout).into_owned();
    assert!(
        text.contains("hide-one") && text.contains(&rejected),
        "{text}"
    );
    let st = lab::cluster::open(&name).unwrap();
    let peer = format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor-node-0\nspec:\n  node: node-0\n  peerIP: {}\n  asNumber: 65000\n  filters: [hide-one]\n",
        st.nodes[0].gateway
    );
    assert!(ctl.apply("peer.yaml", &peer).status.success());

    let after = tor_routes_until(&name, "node-0's block gone, the rest kept", |rs| {
        !blocks(rs, "node_0").contains(&rejected) && blocks(rs, "node_1") == node1
    });
    let mut kept0 = node0.clone();
    kept0.retain(|b| *b != rejected);
    assert_eq!(blocks(&after, "node_0"), kept0);
    // The session itself stayed up.
    let protos = lab::cluster::procs::birdc(&lab_dir(&name), &["show", "protocols"]).unwrap();
    assert!(
        protos
            .lines()
            .filter(|l| l.starts_with("node_"))
            .all(|l| l.contains("Established")),
        "{protos}"
    );

    // An invalid filter is refused by calicoctl, naming the field.
    let bad = filter.replace("    matchOperator: Equal\n", "");
    let out = ctl.apply("bad.yaml", &bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.exportV4[0].matchOperator"), "{err}");

    // Deleting the filter holds node-0's ToR session down (it names a
    // filter that is gone: never run unfiltered) ...
    assert!(
        ctl.run(&["delete", "bgpfilter", "hide-one"])
            .status
            .success()
    );
    tor_routes_until(&name, "node-0's routes withdrawn with its session", |rs| {
        blocks(rs, "node_0").is_empty() && blocks(rs, "node_1") == node1
    });
    // ... and taking the name off the peer brings the block back.
    let unfiltered = peer.replace("  filters: [hide-one]\n", "");
    assert!(ctl.apply("peer2.yaml", &unfiltered).status.success());
    tor_routes_until(&name, "node-0's block back", |rs| {
        blocks(rs, "node_0").contains(&rejected)
    });
}
