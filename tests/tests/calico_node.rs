//! Two nodes running the real `calico-node` (which starts confd, bird and
//! felix) on a lab underlay, etcd in the router namespace, pods made by the
//! real CNI plugin: the BGP mesh puts each node's block in the other's
//! kernel, and killing any child of calico-node loses no pod traffic.
//! Three nodes elect one to write IPPool status; when it is killed another
//! takes over, and a clean stop hands over at once.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lab::Netns;
use lab::cni::CniCall;
use lab::topology::{Topology, TopologySpec};
use tests::EtcdServer;
use tests::agent::{Proc, build_node_binaries, target_dir};

struct Node {
    name: String,
    ns: Arc<Netns>,
    ip: String,
    run_dir: PathBuf,
    log: PathBuf,
    agent: Proc,
}

fn start_node(ns: &Arc<Netns>, name: &str, ip: &str, etcd: &str, dir: &Path) -> Node {
    let run_dir = dir.join(name);
    std::fs::create_dir_all(&run_dir).unwrap();
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let child = ns
        .command(target_dir().join("calico-node").to_str().unwrap())
        .arg("run")
        .env("NODENAME", name)
        .env("IP_AUTODETECTION_METHOD", "interface=eth0")
        .env("ETCD_ENDPOINTS", etcd)
        .env("CALICO_IPV4POOL_CIDR", "10.65.0.0/16")
        // CrossSubnet: one subnet, so pods talk directly, but felix keeps
        // its tunnel device up and reports its counters.
        .env("CALICO_IPV4POOL_IPIP", "CrossSubnet")
        .env("CALICO_RUN_DIR", &run_dir)
        .env("FELIX_STATEDIR", run_dir.join("state"))
        .env("FELIX_PROMETHEUSMETRICSENABLED", "true")
        .env("FELIX_PROMETHEUSMETRICSHOST", "127.0.0.1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Node {
        name: name.into(),
        ns: ns.clone(),
        ip: ip.into(),
        run_dir,
        log: log_path,
        agent: Proc(child),
    }
}

fn status(n: &Node) -> String {
    let out =
        n.ns.command(target_dir().join("calico-node").to_str().unwrap())
            .arg("status")
            .env("CALICO_RUN_DIR", &n.run_dir)
            .output()
            .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs the CNI plugin inside the node's namespace.
fn cni_add(n: &Node, container: &str, pod: &Netns) -> serde_json::Value {
    lab::cni::invoke(&CniCall {
        plugin: &target_dir().join("calico"),
        command: "ADD",
        container,
        netns: &pod.path(),
        namespace: "default",
        pod: container,
        config: &lab::cni::network_config(&n.run_dir.join("felix.sock")),
        node_ns: Some(n.ns.name()),
    })
    .map(|o| o.json)
    .unwrap_or(serde_json::Value::Null)
}

fn pod_ip(result: &serde_json::Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// The pid of the named child process inside a namespace.
fn child_pid(ns: &Netns, comm: &str) -> Option<i32> {
    ns.pids().into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
    })
}

/// Pings for `count` × 200 ms from a pod; returns (sent, received).
fn ping_loss(from: &Netns, to: &str, count: u32) -> std::process::Child {
    from.command("ping")
        .args(["-i", "0.2", "-W", "1", "-c", &count.to_string(), to])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn ping_result(mut c: std::process::Child) -> (u32, u32) {
    let mut out = String::new();
    c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let _ = c.wait();
    // "40 packets transmitted, 40 received, 0% packet loss, time 7803ms"
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default();
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    )
}

fn http_get(ns: &Netns, addr: &'static str, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    ns.run(move || {
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return "no answer".to_string();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = s.write_all(req.as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .unwrap()
}

fn readiness(ns: &Netns) -> String {
    http_get(ns, "127.0.0.1:9099", "/readiness")
}

/// The value of one series in a `/metrics` scrape (`series` as printed,
/// labels included).
fn metric(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn two_calico_nodes_mesh_and_survive_their_children_being_killed() {
    build_node_binaries(false).unwrap();
    let mut topo = Topology::build(&TopologySpec {
        tag: "cn".into(),
        subnets: 1,
        nodes: 2,
    })
    .unwrap();
    let gw = topo.subnet(0).unwrap().gateway;
    let etcd = topo
        .router()
        .run(move || EtcdServer::start_on(gw.into()))
        .unwrap()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let nodes: Vec<Node> = topo
        .nodes()
        .iter()
        .map(|n| {
            start_node(
                &n.ns,
                &n.name,
                &n.ip().to_string(),
                &etcd.endpoint(),
                tmp.path(),
            )
        })
        .collect();
    let (a, b) = (&nodes[0], &nodes[1]);

    // The mesh comes up, both directions, as calicoctl would show it.
    for (me, other) in [(a, b), (b, a)] {
        wait_for(
            &format!("{} to peer with {}", me.name, other.name),
            Duration::from_secs(60),
            || {
                let s = status(me);
                s.lines().any(|l| {
                    l.contains(&other.ip) && l.contains("node-to-node mesh") && l.contains("| up ")
                })
            },
        );
    }

    // A pod on each node, through the real CNI plugin.
    let pod_a = topo.add_pod().unwrap();
    let pod_b = topo.add_pod().unwrap();
    let mut ra = serde_json::Value::Null;
    wait_for("ADD on node-0", Duration::from_secs(60), || {
        ra = cni_add(a, "pod-a", &pod_a);
        ra["ips"].is_array()
    });
    let mut rb = serde_json::Value::Null;
    wait_for("ADD on node-1", Duration::from_secs(60), || {
        rb = cni_add(b, "pod-b", &pod_b);
        rb["ips"].is_array()
    });
    let (ip_a, ip_b) = (pod_ip(&ra), pod_ip(&rb));

    // Each node's block reaches the other's kernel over BGP.
    for (me, other) in [(a, b), (b, a)] {
        wait_for(
            &format!("{}'s block in {}'s kernel", other.name, me.name),
            Duration::from_secs(60),
            || {
                let routes = me
                    .ns
                    .ip(&["route", "show", "proto", "80"])
                    .unwrap_or_default();
                routes
                    .lines()
                    .any(|l| l.contains("/26") && l.contains(&format!("via {}", other.ip)))
            },
        );
    }
    wait_for("pod-a -> pod-b", Duration::from_secs(30), || {
        pod_a.exec("ping", &["-c", "1", "-W", "1", &ip_b]).is_ok()
    });
    assert!(pod_b.exec("ping", &["-c", "1", "-W", "1", &ip_a]).is_ok());
    wait_for("node-0 ready", Duration::from_secs(60), || {
        readiness(&a.ns).starts_with("HTTP/1.1 200")
    });

    // Prometheus metrics from the real bird, felix and datastore.
    let scrape = http_get(&a.ns, "127.0.0.1:9091", "/metrics");
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    println!("node-0 /metrics:\n{scrape}");
    for src in ["bird", "felix", "datastore"] {
        let s = format!("calico_metrics_source_up{{source=\"{src}\"}}");
        assert_eq!(metric(&scrape, &s), Some(1.0), "{s}\n{scrape}");
    }
    let m = |s: &str| metric(&scrape, s).unwrap_or_else(|| panic!("no {s} in\n{scrape}"));
    assert_eq!(m("calico_bgp_peers{state=\"Established\"}"), 1.0);
    assert_eq!(m("calico_bgp_peers{state=\"Active\"}"), 0.0);
    let peer = format!("{{peer=\"{}\"}}", b.ip);
    assert!(m(&format!("calico_bgp_peer_prefixes_received{peer}")) >= 1.0);
    assert!(m(&format!("calico_bgp_peer_prefixes_advertised{peer}")) >= 1.0);
    assert_eq!(m("calico_ipam_blocks"), 1.0);
    assert_eq!(m("calico_ipam_block_addresses"), 64.0);
    assert!(m("calico_ipam_allocations_in_use") >= 1.0);
    assert!(m("felix_cni_request_duration_seconds_count{operation=\"ADD\",result=\"ok\"}") >= 1.0);
    assert!(m("felix_route_programming_seconds_count") >= 1.0);
    assert!(m("felix_resync_duration_seconds_count") >= 1.0);
    // The tunnel device's counters, whichever backend and name felix took.
    for (name, label) in [
        ("felix_tunnel_packets_total", "direction=\"tx\""),
        ("felix_tunnel_bytes_total", "direction=\"rx\""),
        (
            "felix_tunnel_dropped_packets_total",
            "reason=\"rx_unknown_source\"",
        ),
    ] {
        assert!(
            scrape.lines().any(|l| l.starts_with(&format!("{name}{{"))
                && l.contains("encapsulation=\"ipip\"")
                && l.contains(label)),
            "no {name} {label} in\n{scrape}"
        );
    }

    // Kill each child of calico-node on node-1 in turn (SIGKILL): it comes
    // back, and not one ping between the pods is lost meanwhile.
    for child in ["bird", "felix", "confd"] {
        let old = child_pid(&b.ns, child).unwrap_or_else(|| panic!("no {child} on node-1"));
        // Each child is calico-node's own executable, run as `calico-node
        // <child> run ...` (one file for the node's daemons).
        let exe = std::fs::read_link(format!("/proc/{old}/exe")).unwrap();
        assert_eq!(
            exe.file_name().and_then(|n| n.to_str()),
            Some("calico-node"),
            "{child} runs {}",
            exe.display()
        );
        let pinger = ping_loss(&pod_a, &ip_b, 40);
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: kill(2) on a pid read from the node namespace's process list.
        unsafe {
            libc::kill(old, libc::SIGKILL);
        }
        let (sent, received) = ping_result(pinger);
        println!("{child} killed: {received}/{sent} pings answered");
        assert_eq!(sent, 40);
        assert_eq!(received, sent, "pings lost while {child} restarted");
        wait_for(
            &format!("{child} restarted"),
            Duration::from_secs(30),
            || child_pid(&b.ns, child).is_some_and(|p| p != old),
        );
    }
    // And the sessions re-establish.
    wait_for(
        "mesh back after bird restart",
        Duration::from_secs(60),
        || {
            status(a)
                .lines()
                .any(|l| l.contains(&b.ip) && l.contains("| up "))
        },
    );
    assert!(pod_b.exec("ping", &["-c", "1", "-W", "1", &ip_a]).is_ok());
    drop(nodes);
    drop(etcd);
}

/// This node's `calico_cluster_tasks_leader` gauge (`None`: no answer).
fn leads(n: &Node) -> Option<bool> {
    metric(
        &http_get(&n.ns, "127.0.0.1:9091", "/metrics"),
        "calico_cluster_tasks_leader",
    )
    .map(|v| v == 1.0)
}

/// The nodes whose gauge says they lead, once every node answers.
fn leaders<'a>(nodes: &[&'a Node]) -> Option<Vec<&'a Node>> {
    let mut out = Vec::new();
    for n in nodes {
        if leads(n)? {
            out.push(*n);
        }
    }
    Some(out)
}

/// Waits until exactly one of `nodes` leads; returns it.
fn one_leader<'a>(nodes: &[&'a Node], timeout: Duration) -> &'a Node {
    let mut found = None;
    wait_for("exactly one leader", timeout, || {
        found = leaders(nodes).filter(|l| l.len() == 1).map(|l| l[0]);
        found.is_some()
    });
    found.unwrap()
}

fn log_of(n: &Node) -> String {
    std::fs::read_to_string(&n.log).unwrap_or_default()
}

/// An IPPool's status, read from etcd through the router namespace.
fn pool_status(router: &Netns, etcd: &str, name: &'static str) -> Option<ippool_crd::IPPoolStatus> {
    let etcd = etcd.to_string();
    router
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let c = datastore::connect_etcd(&etcd).await.unwrap();
                c.get::<ippool_crd::IPPool>(name)
                    .await
                    .unwrap()
                    .and_then(|p| p.status)
            })
        })
        .unwrap()
}

fn create_pool(router: &Netns, etcd: &str, name: &str, cidr: &str) {
    let (etcd, pool) = (
        etcd.to_string(),
        ippool_crd::IPPool::new(name, ippool_crd::IPPoolSpec::new(cidr)),
    );
    router
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let c = datastore::connect_etcd(&etcd).await.unwrap();
                c.create(&pool).await.unwrap();
            })
        })
        .unwrap();
}

const WROTE_STATUS: &str = "updated IPPool status";

#[test]
fn one_of_three_calico_nodes_writes_pool_status_and_another_takes_over_when_it_dies() {
    build_node_binaries(false).unwrap();
    let topo = Topology::build(&TopologySpec {
        tag: "ct".into(),
        subnets: 1,
        nodes: 3,
    })
    .unwrap();
    let gw = topo.subnet(0).unwrap().gateway;
    let etcd = topo
        .router()
        .run(move || EtcdServer::start_on(gw.into()))
        .unwrap()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Option<Node>> = topo
        .nodes()
        .iter()
        .map(|n| {
            Some(start_node(
                &n.ns,
                &n.name,
                &n.ip().to_string(),
                &etcd.endpoint(),
                tmp.path(),
            ))
        })
        .collect();
    let router = topo.router().clone();
    fn refs(nodes: &[Option<Node>]) -> Vec<&Node> {
        nodes.iter().flatten().collect()
    }
    fn index_of(nodes: &[Option<Node>], name: &str) -> usize {
        nodes
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.name == name))
            .unwrap()
    }

    // One leads; it alone writes the default pool's status.
    let first = one_leader(&refs(&nodes), Duration::from_secs(60))
        .name
        .clone();
    wait_for("the default pool's status", Duration::from_secs(30), || {
        pool_status(&router, &etcd.endpoint(), "default-ipv4-ippool").is_some()
    });
    std::thread::sleep(Duration::from_secs(3));
    let first_i = index_of(&nodes, &first);
    for n in refs(&nodes) {
        let log = log_of(n);
        assert_eq!(
            log.contains(WROTE_STATUS),
            n.name == first,
            "{}: only the leader ({first}) writes pool status:\n{log}",
            n.name
        );
        assert_eq!(
            log.contains("leading the cluster tasks"),
            n.name == first,
            "{}",
            n.name
        );
    }

    // The leader dies (SIGKILL: no release). Another takes over once its
    // lease (15 s) runs out, and writes the status of a pool made after.
    let killed = std::time::Instant::now();
    drop(nodes[first_i].take());
    let second = one_leader(&refs(&nodes), Duration::from_secs(40))
        .name
        .clone();
    let failover = killed.elapsed();
    println!("calico-node {first} killed: {second} leads after {failover:?}");
    assert_ne!(second, first);
    assert!(
        failover >= Duration::from_secs(10),
        "took over after {failover:?}, before the dead leader's lease ran out"
    );
    create_pool(&router, &etcd.endpoint(), "after-failover", "10.66.0.0/16");
    wait_for("the new pool's status", Duration::from_secs(30), || {
        pool_status(&router, &etcd.endpoint(), "after-failover").is_some()
    });
    for n in refs(&nodes) {
        assert_eq!(
            log_of(n).contains(WROTE_STATUS),
            n.name == second,
            "{}: only the new leader ({second}) writes pool status",
            n.name
        );
    }

    // The new leader stops cleanly (SIGTERM): it gives the lock up and the
    // last node leads at once, not a lease later.
    let second_i = index_of(&nodes, &second);
    let mut stopped = nodes[second_i].take().unwrap();
    let stopping = std::time::Instant::now();
    let pid = i32::try_from(stopped.agent.0.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child this test started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let third = one_leader(&refs(&nodes), Duration::from_secs(10))
        .name
        .clone();
    let handover = stopping.elapsed();
    let _ = stopped.agent.0.wait();
    assert!(
        log_of(&stopped).contains("released the lock"),
        "{}",
        log_of(&stopped)
    );
    println!("calico-node {second} stopped: {third} leads after {handover:?}");
    assert!(
        handover < Duration::from_secs(10),
        "a clean stop handed over after {handover:?}"
    );
    drop(nodes);
    drop(etcd);
}
