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

use common::probe::{Flow, Kind, Servers, probe_from, probe_once};
use common::truth;
use common::{node, run_in};
use felix::policy::nft::{Applied, PolicyDataplaneConfig, PolicyTable};
use felix::policy::{Endpoint, PolicySnapshot};
use felix::routes::{Reconciler, ReconcilerConfig};
use felix::workload::{AllowedCidrs, PodInterfaces, WorkloadConfig, WorkloadSpec, host_iface_name};
use ippool_crd::policy::Protocol;
use lab::Netns;

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
        servers.push(Servers::start(&ns, &TCP_PORTS, &UDP_PORTS));
        members.insert(id.clone(), ns);
    }
    for (i, (name, ip)) in hosts.iter().enumerate() {
        let ns = Arc::new(add_host(&n, i, *ip));
        servers.push(Servers::start(&ns, &TCP_PORTS, &UDP_PORTS));
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
            let eps = truth::endpoints(world);
            let addr = |id: &str| -> IpAddr {
                world.pods.get(id).map_or_else(|| world.hosts[id], |p| p.ip)
            };
            let (mut cells, mut skipped, mut failures) = (0usize, 0usize, Vec::new());
            for (i, sc) in tf.scenarios.iter().enumerate() {
                let snap = snapshot(eps.clone(), truth::policy_set(world, sc));
                let how = table.apply(&snap).await.unwrap();
                if i == 0 {
                    assert_eq!(how, Applied::Full, "{}", sc.name);
                }
                assert!(table.applied().unwrap().skipped.is_empty());
                let probes: Vec<(char, felix::policy::Flow)> = sc
                    .probes
                    .as_ref()
                    .unwrap_or(&world.probes)
                    .iter()
                    .map(|p| truth::probe(p))
                    .collect();
                let expect = truth::expected(world, sc, probes.len()).unwrap();
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
                        let h = probe_from(&c.members[src], kind, addr(dst));
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
                            sc.name,
                            if want { "allow" } else { "deny" },
                            if got { "allowed" } else { "denied" }
                        ));
                    }
                }
                if wrong > 0 {
                    eprintln!(
                        "{}: {wrong} cells wrong; table:\n{}",
                        sc.name,
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
