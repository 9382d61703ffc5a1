//! The nftables policy dataplane in the kernel: a "node" namespace holding
//! the pods' host veths (made by felix's own workload code), one namespace
//! per pod and per outside host, felix's policy table programmed from a
//! snapshot, and real TCP, UDP and ICMP probes between them.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::truth;
use common::{node, run_in};
use felix::policy::nft::{Applied, PolicyDataplaneConfig, PolicyTable};
use felix::policy::{Endpoint, PolicySnapshot};
use felix::routes::{Reconciler, ReconcilerConfig};
use felix::workload::{AllowedCidrs, PodInterfaces, WorkloadConfig, WorkloadSpec, host_iface_name};
use ippool_crd::policy::Protocol;
use lab::Netns;
use lab::probe::{Flow, Kind, Servers, probe_from, probe_once};

/// Ports every pod and host serves.
const TCP_PORTS: [u16; 2] = [80, 8080];
const UDP_PORTS: [u16; 1] = [53];

fn pool() -> Arc<AllowedCidrs> {
    Arc::new(AllowedCidrs(vec![
        "10.65.0.0/16".parse().unwrap(),
        "fd00:65::/48".parse().unwrap(),
    ]))
}

/// The pods and outside hosts of a world, as namespaces with servers. The
/// node is separate (felix runs there).
struct Cluster {
    node: Arc<Netns>,
    /// `namespace/name` (or host name) → its namespace.
    members: BTreeMap<String, Arc<Netns>>,
    /// Keeps the servers up; dropped (stopped) before the namespaces.
    servers: Vec<Servers>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.servers.clear();
    }
}

/// Outside hosts hang off the node on their own veth (`ext<N>`), with a
/// /32 route and proxy ARP, like a pod but not a workload interface.
fn add_host(node: &Netns, idx: usize, ip: IpAddr) -> Netns {
    let ns = Netns::create("pnfth").unwrap();
    let dev = format!("ext{idx}");
    lab::veth(node, &dev, &ns, "eth0").unwrap();
    let (fam, plen, gw) = if ip.is_ipv4() {
        ("-4", 32, "169.254.1.1".to_string())
    } else {
        ("-6", 128, "fe80::1".to_string())
    };
    ns.ip(&[fam, "addr", "add", &format!("{ip}/{plen}"), "dev", "eth0"])
        .unwrap();
    if ip.is_ipv4() {
        ns.ip(&["route", "add", &gw, "dev", "eth0", "scope", "link"])
            .unwrap();
        ns.ip(&["route", "add", "default", "via", &gw]).unwrap();
        node.sysctl(&format!("net.ipv4.conf.{dev}.proxy_arp"), "1")
            .unwrap();
    }
    node.ip(&[fam, "route", "add", &format!("{ip}/{plen}"), "dev", &dev])
        .unwrap();
    ns
}

fn snapshot(
    endpoints: BTreeMap<String, Endpoint>,
    policies: felix::policy::PolicySet,
) -> PolicySnapshot {
    let local = endpoints
        .values()
        .map(|e| (e.id(), host_iface_name("cali", &e.namespace, &e.name)))
        .collect();
    PolicySnapshot {
        policies,
        endpoints,
        local,
        errors: vec![],
        synced: true,
    }
}

/// Builds the node, a namespace per pod (its veth made by felix's
/// `PodInterfaces`, which stay for as long as `body` runs) and per host,
/// then runs `body` inside the node namespace.
fn with_cluster<F, Fut>(
    tag: &str,
    pods: BTreeMap<String, Vec<IpAddr>>,
    hosts: BTreeMap<String, IpAddr>,
    body: F,
) where
    F: FnOnce(Arc<Cluster>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let n = node(tag);
    let mut members = BTreeMap::new();
    let mut servers = Vec::new();
    for id in pods.keys() {
        let ns = Arc::new(Netns::create("pnftp").unwrap());
        servers.push(Servers::start(&ns, &TCP_PORTS, &UDP_PORTS).unwrap());
        members.insert(id.clone(), ns);
    }
    for (i, (name, ip)) in hosts.iter().enumerate() {
        let ns = Arc::new(add_host(&n, i, *ip));
        servers.push(Servers::start(&ns, &TCP_PORTS, &UDP_PORTS).unwrap());
        members.insert(name.clone(), ns);
    }
    let cluster = Arc::new(Cluster {
        node: n.clone(),
        members,
        servers,
    });
    run_in(&n, move || async move {
        let rec = Reconciler::start(ReconcilerConfig {
            resync_interval: Duration::from_secs(3600),
            ..ReconcilerConfig::default()
        })
        .unwrap();
        let w = PodInterfaces::new(WorkloadConfig::default(), rec.handle(), pool()).unwrap();
        for (id, ips) in &pods {
            let (ns, name) = id.split_once('/').unwrap();
            w.add(&WorkloadSpec {
                namespace: ns.into(),
                pod: name.into(),
                netns: cluster.members[id].path(),
                ips: ips.clone(),
            })
            .await
            .unwrap();
        }
        body(cluster).await;
        drop(w);
        drop(rec);
    });
}

fn table_listing(ns: &Netns) -> String {
    ns.exec("nft", &["list", "table", "inet", "calico-rs-filter"])
        .unwrap_or_else(|e| format!("(no table: {e})"))
}

fn probe_kind(flow: &felix::policy::Flow) -> Option<Kind> {
    match flow.protocol {
        Protocol::TCP => Some(Kind::Tcp(flow.dst_port.unwrap())),
        Protocol::UDP => Some(Kind::Udp(flow.dst_port.unwrap())),
        Protocol::ICMP | Protocol::ICMPV6 if flow.icmp.map(|(t, _)| t) == Some(8) => {
            Some(Kind::Ping)
        }
        _ => None,
    }
}

/// Every scenario of every truth file, every cell, against the kernel.
/// Each file's world is built once; scenarios follow each other as deltas
/// of the same table (the first is a full write).
#[test]
fn every_truth_table_cell_holds_in_the_kernel() {
    let started = Instant::now();
    let mut total = (0usize, 0usize, 0usize);
    for (file, tf) in truth::load_all() {
        let pod_ips = tf
            .world
            .pods
            .iter()
            .map(|(id, p)| (id.clone(), vec![p.ip]))
            .collect();
        let hosts = tf.world.hosts.clone();
        let tf = Arc::new(tf);
        let tf2 = tf.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        with_cluster("pnftt", pod_ips, hosts, move |c| async move {
            let tf = tf2;
            let world = &tf.world;
            let mut table = PolicyTable::new(PolicyDataplaneConfig::default());
            let addr = |id: &str| -> IpAddr {
                world.pods.get(id).map_or_else(|| world.hosts[id], |p| p.ip)
            };
            let (mut cells, mut skipped, mut failures) = (0usize, 0usize, Vec::new());
            // Each scenario's matrix, then one per relabel step (the
            // endpoints' labels change under the same policies).
            let steps = tf
                .scenarios
                .iter()
                .flat_map(|sc| sc.steps(world).unwrap().into_iter().map(move |st| (sc, st)));
            for (i, (sc, step)) in steps.enumerate() {
                let eps = truth::endpoints(&step.world);
                let snap = snapshot(eps, truth::policy_set(&step.world, sc));
                let how = table.apply(&snap).await.unwrap();
                if i == 0 {
                    assert_eq!(how, Applied::Full, "{}", step.name);
                }
                assert!(table.applied().unwrap().skipped.is_empty());
                let probes: Vec<(char, felix::policy::Flow)> = sc
                    .probes
                    .as_ref()
                    .unwrap_or(&world.probes)
                    .iter()
                    .map(|p| truth::probe(p))
                    .collect();
                let expect = sc.matrix(&step.expect, &step.world, probes.len()).unwrap();
                let mut running = Vec::new();
                for ((src, dst), cell) in &expect {
                    if src == dst {
                        continue;
                    }
                    for ((letter, flow), want) in probes.iter().zip(cell.chars()) {
                        let Some(kind) = probe_kind(flow) else {
                            // An unsolicited echo reply (icmp/0) is
                            // conntrack-invalid and dropped before policy,
                            // as Calico drops it: no kernel probe.
                            skipped += 1;
                            continue;
                        };
                        let h = probe_from(&c.members[src], kind, addr(dst)).unwrap();
                        running.push((src.clone(), dst.clone(), kind, want == *letter, h));
                    }
                }
                let mut wrong = 0;
                for (src, dst, kind, want, h) in running {
                    let got = h.join().unwrap();
                    cells += 1;
                    if got != want {
                        wrong += 1;
                        failures.push(format!(
                            "{file}: {}: {src} -> {dst} {kind:?}: want {}, kernel {}",
                            step.name,
                            if want { "allow" } else { "deny" },
                            if got { "allowed" } else { "denied" }
                        ));
                    }
                }
                if wrong > 0 {
                    eprintln!(
                        "{}: {wrong} cells wrong; table:\n{}",
                        step.name,
                        table_listing(&c.node)
                    );
                }
            }
            tx.send((cells, skipped, failures)).unwrap();
        });
        let (cells, skipped, failures) = rx.recv().unwrap();
        assert!(
            failures.is_empty(),
            "{} of {cells} kernel cells wrong:\n{}",
            failures.len(),
            failures.join("\n")
        );
        total.0 += tf.scenarios.len();
        total.1 += cells;
        total.2 += skipped;
    }
    eprintln!(
        "{} scenarios, {} cells probed in the kernel ({} icmp/0 cells not probed), {:.1} s",
        total.0,
        total.1,
        total.2,
        started.elapsed().as_secs_f64()
    );
    assert!(total.0 >= 30 && total.1 >= 2500, "{total:?}");
}

fn ep(id: &str, labels: &[(&str, &str)], ips: &[&str]) -> (String, Endpoint) {
    let (ns, name) = id.split_once('/').unwrap();
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let e = Endpoint::pod(
        ns,
        name,
        labels,
        BTreeMap::new(),
        ips.iter().map(|s| s.parse().unwrap()).collect(),
    );
    (e.id(), e)
}

fn policies(yaml: &str, namespaces: &[&str]) -> felix::policy::PolicySet {
    let profiles = namespaces
        .iter()
        .map(|n| felix::policy::Profile::namespace(n))
        .collect();
    let (set, errors) = felix::policy::convert_all(&truth::policy_source(yaml), profiles);
    assert!(errors.is_empty(), "{errors:#?}");
    set
}

fn pods_of(eps: &BTreeMap<String, Endpoint>) -> BTreeMap<String, Vec<IpAddr>> {
    eps.iter()
        .map(|(id, e)| (id.clone(), e.addresses.clone()))
        .collect()
}

/// The endpoint with only its addresses of one family, so the evaluator
/// judges that family's flow.
fn only_family(e: &Endpoint, v6: bool) -> Endpoint {
    let mut e = e.clone();
    e.addresses.retain(|a| a.is_ipv6() == v6);
    e
}

/// IPv6 next to IPv4, named ports, nets and ICMPv6; pod-to-host traffic
/// passes the pod's egress policy and is then accepted
/// (`DefaultEndpointToHostAction` Accept); host-to-pod traffic is never
/// policed. Every pod/host pair, both families, four probes, compared
/// with the evaluator (host → pod: always allowed).
#[test]
fn ipv6_and_host_traffic_follow_the_evaluator() {
    let eps: BTreeMap<String, Endpoint> = [
        ep(
            "a/client",
            &[("app", "client")],
            &["10.65.3.1", "fd00:65::31"],
        ),
        ep("a/web", &[("app", "web")], &["10.65.3.2", "fd00:65::32"]),
        ep(
            "b/other",
            &[("app", "other")],
            &["10.65.3.3", "fd00:65::33"],
        ),
    ]
    .into_iter()
    .map(|(id, mut e)| {
        if id == "a/web" {
            e.named_ports.insert(
                "http".into(),
                felix::policy::NamedPort {
                    protocol: Protocol::TCP,
                    port: 80,
                },
            );
        }
        (id, e)
    })
    .collect();
    let set = policies(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web-ingress}
spec:
  selector: app == 'web'
  ingress:
    - {action: Allow, protocol: TCP, source: {selector: app == 'client'}, destination: {ports: [http]}}
    - {action: Allow, protocol: ICMPv6}
    - {action: Allow, protocol: UDP, source: {nets: ["fd00:65::/48"]}}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: client-egress, namespace: a}
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
    - {action: Allow, protocol: TCP, destination: {ports: [80]}}
    - {action: Allow, protocol: UDP, destination: {notNets: ["10.65.3.2/32"]}}
    - {action: Allow, protocol: ICMP}
"#,
        &["a", "b"],
    );
    let snap = snapshot(eps.clone(), set.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    with_cluster(
        "pnft6",
        pods_of(&eps),
        BTreeMap::new(),
        move |c| async move {
            let host_servers = Servers::start(&c.node, &TCP_PORTS, &UDP_PORTS).unwrap();
            let mut table = PolicyTable::new(PolicyDataplaneConfig::default());
            table.apply(&snap).await.unwrap();
            let kinds = [Kind::Tcp(80), Kind::Tcp(8080), Kind::Udp(53), Kind::Ping];
            let mut running = Vec::new();
            let names: Vec<String> = eps.keys().cloned().chain(["host".to_string()]).collect();
            for v6 in [false, true] {
                let host_ip: IpAddr = if v6 {
                    common::NODE_IP6
                } else {
                    common::NODE_IP
                }
                .parse()
                .unwrap();
                for src in &names {
                    for dst in &names {
                        if src == dst {
                            continue;
                        }
                        let dst_ip = if dst == "host" {
                            host_ip
                        } else {
                            only_family(&eps[dst], v6).addresses[0]
                        };
                        for kind in kinds {
                            let flow = match kind {
                                Kind::Tcp(p) => felix::policy::Flow::tcp(p),
                                Kind::Udp(p) => felix::policy::Flow::udp(p),
                                Kind::Ping if v6 => felix::policy::Flow {
                                    protocol: Protocol::ICMPV6,
                                    ..felix::policy::Flow::icmp(128, 0)
                                },
                                Kind::Ping => felix::policy::Flow::icmp_echo(),
                            };
                            let (s, d) = (
                                eps.get(src).map(|e| only_family(e, v6)),
                                eps.get(dst).map(|e| only_family(e, v6)),
                            );
                            fn peer(e: &Option<Endpoint>, host: IpAddr) -> felix::policy::Peer<'_> {
                                match e {
                                    Some(e) => felix::policy::Peer::Endpoint(e),
                                    None => felix::policy::Peer::Address(host),
                                }
                            }
                            let want = src == "host"
                                || felix::policy::verdict(
                                    &set,
                                    peer(&s, host_ip),
                                    peer(&d, host_ip),
                                    flow,
                                ) == felix::policy::Verdict::Allow;
                            let from = if src == "host" {
                                &c.node
                            } else {
                                &c.members[src]
                            };
                            running.push((
                                format!("{src} -> {dst} ({dst_ip}) {kind:?}"),
                                want,
                                probe_from(from, kind, dst_ip).unwrap(),
                            ));
                        }
                    }
                }
            }
            let mut failures = Vec::new();
            let (mut allowed, mut denied) = (0, 0);
            for (what, want, h) in running {
                let got = h.join().unwrap();
                if got {
                    allowed += 1
                } else {
                    denied += 1
                }
                if got != want {
                    failures.push(format!("{what}: want {want}, kernel {got}"));
                }
            }
            if !failures.is_empty() {
                eprintln!("{}", table_listing(&c.node));
            }
            drop(host_servers);
            tx.send((failures, allowed, denied)).unwrap();
        },
    );
    let (failures, allowed, denied) = rx.recv().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Both outcomes occur, in both families.
    assert!(
        allowed > 20 && denied > 10,
        "{allowed} allowed, {denied} denied"
    );
    eprintln!("{allowed} probes allowed, {denied} denied, all as the evaluator says");
}

async fn probe_async(ns: &Arc<Netns>, kind: Kind, dst: IpAddr, timeout: Duration) -> bool {
    let ns = ns.clone();
    tokio::task::spawn_blocking(move || {
        ns.spawn_thread(move || probe_once(kind, dst, timeout))
            .unwrap()
            .join()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Polls until `kind` from `src` to `dst` is allowed (`want`) for at most
/// `limit`.
async fn wait_probe(ns: &Arc<Netns>, kind: Kind, dst: IpAddr, want: bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if probe_async(ns, kind, dst, Duration::from_millis(200)).await == want {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const SRV: &str = "a/srv";

fn three_pods() -> BTreeMap<String, Endpoint> {
    [
        ep("a/x", &[("app", "x")], &["10.65.4.1"]),
        ep("a/y", &[("app", "y")], &["10.65.4.2"]),
        ep(SRV, &[("app", "srv")], &["10.65.4.3"]),
    ]
    .into_iter()
    .collect()
}

fn srv_allows(apps: &str) -> felix::policy::PolicySet {
    policies(
        &format!(
            r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: srv, namespace: a}}
spec:
  selector: app == 'srv'
  ingress:
    - {{action: Allow, protocol: TCP, source: {{selector: "app in {{{apps}}}"}}}}
"#
        ),
        &["a"],
    )
}

/// A changed policy is a delta: the established flow that stays allowed
/// keeps exchanging without a single failure, the peer that is now denied
/// cannot open a new connection, and one still allowed can.
#[test]
fn a_policy_change_under_traffic_keeps_allowed_flows_and_stops_new_denied_ones() {
    let eps = three_pods();
    let srv: IpAddr = eps[SRV].addresses[0];
    with_cluster(
        "pnftc",
        pods_of(&eps),
        BTreeMap::new(),
        move |c| async move {
            let mut table = PolicyTable::new(PolicyDataplaneConfig::default());
            let before = snapshot(eps.clone(), srv_allows("'x', 'y'"));
            assert_eq!(table.apply(&before).await.unwrap(), Applied::Full);
            let (x, y) = (c.members["a/x"].clone(), c.members["a/y"].clone());
            assert!(probe_async(&y, Kind::Tcp(80), srv, Duration::from_secs(1)).await);
            let fx = Flow::start(&x, SocketAddr::new(srv, 80)).unwrap();
            let fy = Flow::start(&y, SocketAddr::new(srv, 8080)).unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = snapshot(eps.clone(), srv_allows("'x'"));
            let started = Instant::now();
            assert_eq!(table.apply(&after).await.unwrap(), Applied::Delta);
            let took = started.elapsed();
            let at_change = fx.counts();
            tokio::time::sleep(Duration::from_millis(400)).await;
            let (ok, failed) = fx.counts();
            assert_eq!(failed, 0, "the allowed flow was cut");
            assert!(
                ok >= at_change.0 + 5,
                "the allowed flow stalled: {at_change:?} -> {ok}"
            );
            // New connections: y is denied, x still allowed.
            assert!(!probe_async(&y, Kind::Tcp(80), srv, Duration::from_millis(500)).await);
            assert!(probe_async(&x, Kind::Tcp(8080), srv, Duration::from_secs(1)).await);
            // y's established flow is conntrack's business: it stays (as in
            // Calico); only new connections are judged by the new policy.
            eprintln!(
                "policy delta applied in {took:?}; flow x: {:?}, flow y: {:?}",
                fx.counts(),
                fy.counts()
            );
        },
    );
}

/// The normalized listing of felix's table in the calling namespace.
async fn listing(table: &PolicyTable) -> Option<serde_json::Value> {
    table.list().await.unwrap()
}

/// Restart: a stopped task leaves the table enforcing; a new task does
/// nothing while its snapshot is not synced, then replaces the table in
/// one transaction: a probe hammering a denied pair throughout never
/// gets through, and an established allowed flow never fails.
#[test]
fn a_restart_keeps_policy_enforced_and_opens_nothing() {
    let eps = three_pods();
    let srv: IpAddr = eps[SRV].addresses[0];
    with_cluster(
        "pnftr",
        pods_of(&eps),
        BTreeMap::new(),
        move |c| async move {
            let (x, y) = (c.members["a/x"].clone(), c.members["a/y"].clone());
            let snap = Arc::new(snapshot(eps.clone(), srv_allows("'x'")));
            let cfg = PolicyDataplaneConfig::default();
            let (tx1, rx1) = tokio::sync::watch::channel(snap.clone());
            let first = tokio::spawn(felix::policy::nft::run(rx1, cfg.clone()));
            assert!(wait_probe(&y, Kind::Tcp(80), srv, false, Duration::from_secs(10)).await);
            assert!(probe_async(&x, Kind::Tcp(80), srv, Duration::from_secs(1)).await);
            // Stop felix's task: the table stays, and so does the policy.
            drop(tx1);
            tokio::time::timeout(Duration::from_secs(5), first)
                .await
                .unwrap()
                .unwrap();
            let reader = PolicyTable::new(cfg.clone());
            let kept = listing(&reader)
                .await
                .expect("the table went with the task");
            assert!(!probe_async(&y, Kind::Tcp(80), srv, Duration::from_millis(500)).await);
            // Traffic across the restart.
            let flow = Flow::start(&x, SocketAddr::new(srv, 80)).unwrap();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (stop2, y2) = (stop.clone(), y.clone());
            let hammer = std::thread::spawn(move || {
                let (mut tries, mut through) = (0u32, 0u32);
                while !stop2.load(std::sync::atomic::Ordering::Relaxed) && tries < 10_000 {
                    let h = y2
                        .spawn_thread(move || {
                            probe_once(Kind::Tcp(80), srv, Duration::from_millis(50))
                        })
                        .unwrap();
                    tries += 1;
                    through += u32::from(h.join().unwrap());
                }
                (tries, through)
            });
            // A new task with a snapshot that is not synced (and empty): it
            // must not touch the table.
            let unsynced = Arc::new(PolicySnapshot::default());
            let (tx2, rx2) = tokio::sync::watch::channel(unsynced);
            let second = tokio::spawn(felix::policy::nft::run(rx2, cfg.clone()));
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                listing(&reader).await.as_ref(),
                Some(&kept),
                "an unsynced task wrote"
            );
            // Synced, with one more (remote) endpoint so the write shows.
            let mut next = (*snap).clone();
            let (id, e) = ep("a/remote", &[("app", "x")], &["10.65.9.9"]);
            next.endpoints.insert(id, e);
            tx2.send(Arc::new(next)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !table_listing(&c.node).contains("10.65.9.9") {
                assert!(Instant::now() < deadline, "the new task never wrote");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let (tries, through) = tokio::task::spawn_blocking(move || hammer.join().unwrap())
                .await
                .unwrap();
            assert!(tries > 5, "{tries}");
            assert_eq!(
                through, 0,
                "{through} of {tries} denied connections got through"
            );
            let (ok, failed) = flow.counts();
            assert_eq!(failed, 0);
            assert!(ok > 5, "{ok}");
            assert!(!probe_async(&y, Kind::Tcp(80), srv, Duration::from_millis(500)).await);
            eprintln!(
                "restart: {tries} denied probes, none through; flow {ok} exchanges, none failed"
            );
            drop(tx2);
            tokio::time::timeout(Duration::from_secs(5), second)
                .await
                .unwrap()
                .unwrap();
        },
    );
}

/// Resync: a flushed chain or a deleted table is restored by the periodic
/// resync, and what it denied is denied again.
#[test]
fn the_periodic_resync_restores_a_flushed_chain_and_a_deleted_table() {
    let eps = three_pods();
    let srv: IpAddr = eps[SRV].addresses[0];
    with_cluster(
        "pnfts",
        pods_of(&eps),
        BTreeMap::new(),
        move |c| async move {
            let y = c.members["a/y"].clone();
            let cfg = PolicyDataplaneConfig {
                resync_interval: Duration::from_millis(300),
                ..PolicyDataplaneConfig::default()
            };
            let reader = PolicyTable::new(cfg.clone());
            let (tx, rx) =
                tokio::sync::watch::channel(Arc::new(snapshot(eps.clone(), srv_allows("'x'"))));
            let task = tokio::spawn(felix::policy::nft::run(rx, cfg.clone()));
            assert!(wait_probe(&y, Kind::Tcp(80), srv, false, Duration::from_secs(10)).await);
            // Let a resync see it in order.
            tokio::time::sleep(Duration::from_millis(700)).await;
            let good = listing(&reader).await.unwrap();
            let chain = format!("to-{}", host_iface_name("cali", "a", "srv"));
            let edits: [&[&str]; 2] = [
                &["flush", "chain", "inet", "calico-rs-filter", &chain],
                &["delete", "table", "inet", "calico-rs-filter"],
            ];
            for edit in edits {
                c.node.exec("nft", edit).unwrap();
                assert_ne!(listing(&reader).await.as_ref(), Some(&good));
                let started = Instant::now();
                let deadline = started + Duration::from_secs(10);
                while listing(&reader).await.as_ref() != Some(&good) {
                    assert!(
                        Instant::now() < deadline,
                        "`nft {}` was never repaired",
                        edit.join(" ")
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                eprintln!(
                    "`nft {}` repaired after {:?}",
                    edit.join(" "),
                    started.elapsed()
                );
                assert!(!probe_async(&y, Kind::Tcp(80), srv, Duration::from_millis(500)).await);
            }
            drop(tx);
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .unwrap()
                .unwrap();
        },
    );
}

#[test]
fn libnftables_and_the_nft_binary_write_list_and_fail_alike_in_the_callers_namespace() {
    use felix::nft::{Backend, Nft};
    let n = node("pnftr");
    let ns = n.clone();
    run_in(&n, move || async move {
        let lib = Nft::new("nft", true);
        assert_eq!(lib.backend(), Backend::Library);
        let bin = Nft::new("nft", false);
        assert_eq!(bin.backend(), Backend::Binary);
        assert_eq!(lib.list_table("inet", "t").await.unwrap(), None);
        lib.run(
            "table inet t {\n\tset s { type ipv4_addr; elements = { 10.0.0.1 }; }\n\tchain c { ip saddr @s accept; }\n}\n",
        )
        .await
        .unwrap();
        // Written in this namespace (where the node's `nft` sees it).
        assert!(
            ns.exec("nft", &["list", "table", "inet", "t"])
                .unwrap()
                .contains("10.0.0.1")
        );
        let listed = lib.list_table("inet", "t").await.unwrap().unwrap();
        assert_eq!(
            bin.list_table("inet", "t").await.unwrap(),
            Some(listed.clone())
        );
        // A failing script is one transaction: nothing of it applies, and
        // the error is nft's.
        for nft in [&lib, &bin] {
            let e = nft
                .run("add element inet t s { 10.0.0.2 }\nadd rule inet t nochain accept\n")
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("No such file or directory"), "{e}");
            assert_eq!(
                nft.list_table("inet", "t").await.unwrap(),
                Some(listed.clone())
            );
        }
        bin.run("delete table inet t\n").await.unwrap();
        assert_eq!(lib.list_table("inet", "t").await.unwrap(), None);
    });
}
