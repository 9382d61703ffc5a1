//! The network policy truth tables (felix/tests/policy_truth/*.yaml, the
//! same data felix's evaluator and single-node kernel checks read) through
//! a whole lab: three nodes on two subnets (CrossSubnet IP-in-IP) on a
//! real kube-apiserver, the world's labelled pods in their labelled
//! Kubernetes namespaces placed so that pairs cross every path (same node,
//! same subnet, IP-in-IP), and an outside host behind the router. Every
//! scenario's policies (Kubernetes NetworkPolicy, Calico NetworkPolicy and
//! GlobalNetworkPolicy) are written through the API server, and once
//! every node's felix enforces them (bounded) the whole matrix — TCP, UDP
//! and ICMP, every source and destination — is asserted cell by cell.
//! A scenario's relabel steps (`then`) change Pod and Namespace labels
//! under the same policies, each followed by its own matrix.
//!
//! Between scenarios the policies are deleted and the open matrix must
//! hold again, so a scenario's verdicts are never the previous one's
//! leftovers.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lab::Netns;
use lab::cluster::apiserver::{self, NamedPort, PodMeta};
use lab::cluster::check::Path as LabPath;
use lab::cluster::policy::{apply_manifests, delete_written};
use lab::cluster::state::{self, LabState};
use lab::probe::{Kind, Servers, probe_within};
use lab::truth::{ProbeSpec, Scenario, TruthFile, World};
use tests::agent::{LabDown, build_node_binaries, calico_lab};

/// What every pod and the outside host serve.
const TCP_PORTS: [u16; 2] = [80, 8080];
const UDP_PORTS: [u16; 1] = [53];
/// How long a probe waits for an answer before it counts as denied (two
/// attempts, so a busy machine does not turn an allowed cell into a
/// denied one).
const DENIED_WAIT: Duration = Duration::from_secs(1);
/// How long every node may take to enforce a scenario (or the open
/// matrix after its policies are deleted).
const ENFORCE_LIMIT: Duration = Duration::from_secs(20);
/// A scenario whose matrix is the open one cannot show that its policies
/// arrived; it is judged after this long.
const SETTLE: Duration = Duration::from_secs(3);
/// While this scenario is enforced, the checker itself is checked: the
/// open matrix must fail, naming the cells it denies on every path.
const SELF_CHECK: &str = "deny-all-ingress";

/// A pod of the world, or the outside host, in the lab.
struct Member {
    /// The lab pod's name (None: the outside host).
    pod: Option<String>,
    ns: Arc<Netns>,
    ip: IpAddr,
    /// The lab node it runs on (None: the outside host).
    node: Option<usize>,
}

/// One probe of one cell.
struct Cell {
    src: String,
    dst: String,
    probe: ProbeSpec,
    kind: Kind,
    want: bool,
}

fn truth_files() -> Vec<(String, TruthFile)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../felix/tests/policy_truth");
    lab::truth::load_all(&dir).unwrap()
}

/// The lab's pods for the world: namespaces with their labels, each pod
/// on its node with its labels and named ports.
fn add_world(st: &mut LabState, world: &World) -> BTreeMap<String, Member> {
    for (ns, labels) in &world.namespaces {
        apiserver::create_namespace(st, ns, labels).unwrap();
    }
    let mut members = BTreeMap::new();
    for (id, pod) in &world.pods {
        let (namespace, _) = id.split_once('/').unwrap();
        let ports = pod
            .ports
            .iter()
            .map(|(name, spec)| {
                let (protocol, port) = spec.split_once('/').unwrap();
                NamedPort {
                    name: name.clone(),
                    protocol: protocol.to_string(),
                    port: port.parse().unwrap(),
                }
            })
            .collect();
        let meta = PodMeta {
            namespace: namespace.to_string(),
            labels: pod.labels.clone(),
            ports,
        };
        let made = lab::cluster::add_pod_as(st, pod.node, &meta).unwrap();
        println!(
            "{id}: lab pod {} on {} with {}",
            made.name,
            made.node,
            made.ip.unwrap()
        );
        members.insert(
            id.clone(),
            Member {
                pod: Some(made.name.clone()),
                ns: Arc::new(Netns::existing(&made.ns).unwrap()),
                ip: made.ip.unwrap().into(),
                node: Some(pod.node),
            },
        );
    }
    members
}

/// Replaces the labels of world pods and namespaces in the API server.
fn relabel(
    st: &LabState,
    members: &BTreeMap<String, Member>,
    pods: &BTreeMap<String, BTreeMap<String, String>>,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) {
    for (id, labels) in pods {
        let pod = members[id].pod.as_deref().unwrap();
        apiserver::set_pod_labels(st, pod, labels).unwrap();
    }
    for (ns, labels) in namespaces {
        apiserver::set_namespace_labels(st, ns, labels).unwrap();
    }
}

/// The labels in `world` of what has other labels in `now`.
fn changed<T>(
    now: &BTreeMap<String, T>,
    world: &BTreeMap<String, T>,
    labels: impl Fn(&T) -> &BTreeMap<String, String>,
) -> BTreeMap<String, BTreeMap<String, String>> {
    world
        .iter()
        .filter(|(id, w)| now.get(*id).is_some_and(|n| labels(n) != labels(w)))
        .map(|(id, w)| (id.clone(), labels(w).clone()))
        .collect()
}

/// An outside host (`hosts` of the world) in a namespace of its own behind
/// the router, on a /24 of its own; the router routes each pod's address
/// to its node (what a ToR would learn over BGP).
fn add_outside_host(st: &LabState, ip: IpAddr, pods: &BTreeMap<String, Member>) -> Netns {
    let IpAddr::V4(v4) = ip else {
        panic!("outside host {ip}: IPv4 only");
    };
    let router = Netns::existing(&st.router_ns).unwrap();
    let ns = Netns::create("truthext").unwrap();
    lab::veth(&ns, "eth0", &router, "truth0").unwrap();
    let gw = std::net::Ipv4Addr::from(u32::from(v4) & 0xffff_ff00 | 0xfe);
    ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"])
        .unwrap();
    router
        .ip(&["addr", "add", &format!("{gw}/24"), "dev", "truth0"])
        .unwrap();
    ns.ip(&["route", "add", "default", "via", &gw.to_string()])
        .unwrap();
    for m in pods.values() {
        let node = &st.nodes[m.node.unwrap()];
        router
            .ip(&[
                "route",
                "replace",
                &format!("{}/32", m.ip),
                "via",
                &node.ip.to_string(),
            ])
            .unwrap();
    }
    ns
}

fn kind_of(p: ProbeSpec) -> Option<Kind> {
    match p {
        ProbeSpec::Tcp(port) => Some(Kind::Tcp(port)),
        ProbeSpec::Udp(port) => Some(Kind::Udp(port)),
        ProbeSpec::Icmp(8) => Some(Kind::Ping),
        // An unsolicited echo reply is conntrack-invalid and dropped
        // before policy (as Calico drops it): not probed.
        ProbeSpec::Icmp(_) => None,
    }
}

fn probe_name(p: ProbeSpec) -> String {
    match p {
        ProbeSpec::Tcp(port) => format!("tcp/{port}"),
        ProbeSpec::Udp(port) => format!("udp/{port}"),
        ProbeSpec::Icmp(8) => "icmp".into(),
        ProbeSpec::Icmp(t) => format!("icmp/{t}"),
    }
}

/// The cells of one matrix of a scenario, and how many cannot be probed.
fn cells(world: &World, scenario: &Scenario, matrix: &str) -> (Vec<Cell>, usize) {
    let probes = scenario.probes(world).unwrap();
    let expect = scenario.matrix(matrix, world, probes.len()).unwrap();
    let (mut out, mut skipped) = (Vec::new(), 0);
    for ((src, dst), cell) in &expect {
        if src == dst {
            continue;
        }
        for (probe, c) in probes.iter().zip(cell.chars()) {
            let want = match c {
                '.' => false,
                c if c == probe.letter() => true,
                c => panic!(
                    "{}: {src} -> {dst}: {c:?} is neither {:?} nor '.'",
                    scenario.name,
                    probe.letter()
                ),
            };
            let Some(kind) = kind_of(*probe) else {
                skipped += 1;
                continue;
            };
            out.push(Cell {
                src: src.clone(),
                dst: dst.clone(),
                probe: *probe,
                kind,
                want,
            });
        }
    }
    (out, skipped)
}

/// Every probe of every scenario, allowed, between every two members: what
/// holds with no policy.
fn open_cells(members: &BTreeMap<String, Member>, files: &[(String, TruthFile)]) -> Vec<Cell> {
    let mut probes: Vec<ProbeSpec> = Vec::new();
    for (_, f) in files {
        for sc in &f.scenarios {
            for p in sc.probes(&f.world).unwrap() {
                if kind_of(p).is_some() && !probes.contains(&p) {
                    probes.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    for src in members.keys() {
        for dst in members.keys().filter(|d| *d != src) {
            for p in &probes {
                out.push(Cell {
                    src: src.clone(),
                    dst: dst.clone(),
                    probe: *p,
                    kind: kind_of(*p).unwrap(),
                    want: true,
                });
            }
        }
    }
    out
}

/// Probes every cell at once; the answers, in order.
fn probe_all(members: &BTreeMap<String, Member>, cells: &[Cell]) -> Vec<bool> {
    let running: Vec<_> = cells
        .iter()
        .map(|c| {
            probe_within(&members[&c.src].ns, c.kind, members[&c.dst].ip, DENIED_WAIT).unwrap()
        })
        .collect();
    running.into_iter().map(|h| h.join().unwrap()).collect()
}

fn path(st: &LabState, members: &BTreeMap<String, Member>, a: &str, b: &str) -> &'static str {
    match (members[a].node, members[b].node) {
        (Some(x), Some(y)) => LabPath::between(st, &st.nodes[x], &st.nodes[y]).name(),
        _ => "outside",
    }
}

/// The wrong cells of one round as a table.
fn mismatch_table(
    st: &LabState,
    members: &BTreeMap<String, Member>,
    cells: &[Cell],
    got: &[bool],
) -> String {
    let verdict = |b: bool| if b { "allow" } else { "deny" };
    let mut t = format!(
        "  {:<11} {:<11} {:<8} {:<9} {:<6} {}\n",
        "SOURCE", "DEST", "PATH", "PROBE", "WANT", "GOT"
    );
    for (c, g) in cells.iter().zip(got).filter(|(c, g)| c.want != **g) {
        let _ = writeln!(
            t,
            "  {:<11} {:<11} {:<8} {:<9} {:<6} {}",
            c.src,
            c.dst,
            path(st, members, &c.src, &c.dst),
            probe_name(c.probe),
            verdict(c.want),
            verdict(*g)
        );
    }
    t
}

/// Probes `cells` until every answer is as wanted or `limit` is over:
/// Ok(how long it took), or Err(the last round's mismatches as a table).
fn until_matrix_holds(
    st: &LabState,
    members: &BTreeMap<String, Member>,
    cells: &[Cell],
    limit: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let got = probe_all(members, cells);
        let wrong = cells
            .iter()
            .zip(&got)
            .filter(|(c, g)| c.want != **g)
            .count();
        if wrong == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= limit {
            return Err(format!(
                "{wrong} of {} cells wrong after {:.1} s:\n{}",
                cells.len(),
                started.elapsed().as_secs_f64(),
                mismatch_table(st, members, cells, &got)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// With a scenario in force whose denied pairs deny every probe, the open
/// matrix must not hold: one round reports exactly the open cells of
/// those pairs, with rows on every path.
fn check_the_checker(
    st: &LabState,
    members: &BTreeMap<String, Member>,
    open: &[Cell],
    scenario: &[Cell],
) {
    let denied: std::collections::BTreeSet<(&str, &str)> = scenario
        .iter()
        .filter(|c| !c.want)
        .map(|c| (c.src.as_str(), c.dst.as_str()))
        .collect();
    let wrong = open
        .iter()
        .filter(|c| denied.contains(&(c.src.as_str(), c.dst.as_str())))
        .count();
    let e = until_matrix_holds(st, members, open, Duration::ZERO)
        .expect_err("the open matrix held under a policy that denies");
    println!("the checker, given the open matrix under {SELF_CHECK}: {e}");
    assert!(
        e.starts_with(&format!("{wrong} of {} cells wrong", open.len())),
        "{e}"
    );
    for p in ["local", "direct", "ipip", "outside"] {
        assert!(
            e.lines()
                .skip(2)
                .any(|l| l.split_whitespace().nth(2) == Some(p)),
            "no {p} row: {e}"
        );
    }
}

#[test]
fn every_truth_table_cell_holds_across_a_kubernetes_lab() {
    let started = Instant::now();
    tests::kube::bin_dir().unwrap();
    build_node_binaries(true).unwrap();
    let files = truth_files();
    let world = &files[0].1.world;
    for (name, f) in &files {
        assert!(
            f.world == *world,
            "{name}: its world differs from {}'s; the lab builds one",
            files[0].0
        );
    }
    let placed: std::collections::BTreeSet<usize> = world.pods.values().map(|p| p.node).collect();
    assert_eq!(placed.len(), 3, "the world's pods must use all 3 nodes");

    let name = format!("calico-lab-truth{}", std::process::id() % 100_000);
    let _down = LabDown(name.clone());
    // node-0 and node-2 share subnet 0, node-1 is alone on subnet 1.
    let out = calico_lab(
        &name,
        &[
            "up",
            "--datastore",
            "kubernetes",
            "--nodes",
            "3",
            "--subnets",
            "2",
            "--pods-per-node",
            "0",
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
    let mut st = lab::cluster::open(&name).unwrap();
    let mut members = add_world(&mut st, world);
    lab::cluster::check::wait_converged(&st, &state::lab_dir(&name), Duration::from_secs(60))
        .unwrap();
    let mut hosts = Vec::new();
    for (host, ip) in &world.hosts {
        let ns = add_outside_host(&st, *ip, &members);
        let ns = Arc::new(ns);
        hosts.push(ns.clone());
        members.insert(
            host.clone(),
            Member {
                pod: None,
                ns,
                ip: *ip,
                node: None,
            },
        );
    }
    // Dropped (stopped) before the namespaces and the lab.
    let servers: Vec<Servers> = members
        .values()
        .map(|m| Servers::start(&m.ns, &TCP_PORTS, &UDP_PORTS).unwrap())
        .collect();
    let mut by_path: BTreeMap<&str, usize> = BTreeMap::new();
    for a in members.keys() {
        for b in members.keys().filter(|b| *b != a) {
            *by_path.entry(path(&st, &members, a, b)).or_default() += 1;
        }
    }
    println!(
        "lab up with the world in {:.1} s; ordered pairs by path: {by_path:?}",
        started.elapsed().as_secs_f64()
    );
    for p in ["local", "direct", "ipip", "outside"] {
        assert!(by_path.get(p).is_some_and(|n| *n >= 2), "{by_path:?}");
    }
    // Routes and the pods' endpoints reach every node: the open matrix.
    let open = open_cells(&members, &files);
    if let Err(e) = until_matrix_holds(&st, &members, &open, Duration::from_secs(60)) {
        panic!("before any policy: {e}");
    }

    let addresses: BTreeMap<String, IpAddr> =
        members.iter().map(|(id, m)| (id.clone(), m.ip)).collect();
    let mut failures = Vec::new();
    let (mut scenarios, mut probed, mut skipped) = (0, 0, 0);
    let mut self_checked = false;
    for (file, tf) in &files {
        for sc in &tf.scenarios {
            let t0 = Instant::now();
            let yaml = sc.policies_for(|id| addresses.get(id).copied()).unwrap();
            let written =
                apply_manifests(&st, &yaml).unwrap_or_else(|e| panic!("{file}: {}: {e}", sc.name));
            let steps = sc.steps(world).unwrap();
            let wants = |step: &lab::truth::Step| -> Vec<bool> {
                let (c, _) = cells(&step.world, sc, &step.expect);
                c.iter().map(|c| c.want).collect()
            };
            for pair in steps.windows(2) {
                // Else the later step could pass on the earlier state.
                assert_ne!(
                    wants(&pair[0]),
                    wants(&pair[1]),
                    "{file}: {}: a relabel must change the matrix",
                    pair[1].name
                );
            }
            for step in &steps {
                if let Some(r) = &step.relabel {
                    relabel(&st, &members, &r.pods, &r.namespaces);
                }
                let (want, n_skipped) = cells(&step.world, sc, &step.expect);
                if want.iter().all(|c| c.want) {
                    std::thread::sleep(SETTLE);
                }
                let result = until_matrix_holds(&st, &members, &want, ENFORCE_LIMIT);
                probed += want.len();
                skipped += n_skipped;
                match result {
                    Ok(took) => {
                        println!(
                            "{file}: {}: all {} cells hold ({:.1} s to enforce)",
                            step.name,
                            want.len(),
                            took.as_secs_f64()
                        );
                        if step.name == SELF_CHECK {
                            check_the_checker(&st, &members, &open, &want);
                            self_checked = true;
                        }
                    }
                    Err(e) => {
                        println!("{file}: {}: {e}", step.name);
                        failures.push(format!("{file}: {}: {e}", step.name));
                    }
                }
            }
            scenarios += 1;
            if steps.len() > 1 {
                // The world's own labels again, for the next scenario.
                let last = &steps[steps.len() - 1].world;
                let pods = changed(&last.pods, &world.pods, |p| &p.labels);
                let namespaces = changed(&last.namespaces, &world.namespaces, |l| l);
                relabel(&st, &members, &pods, &namespaces);
            }
            delete_written(&st, &written).unwrap();
            if let Err(e) = until_matrix_holds(&st, &members, &open, ENFORCE_LIMIT) {
                panic!("{file}: {}: deleting its policies: {e}", sc.name);
            }
            println!(
                "  (scenario and cleanup {:.1} s)",
                t0.elapsed().as_secs_f64()
            );
        }
    }
    drop(servers);
    println!(
        "{scenarios} scenarios, {probed} cells probed ({skipped} icmp/0 cells not probed) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {scenarios} scenarios have wrong cells:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(scenarios >= 40 && probed >= 3500, "{scenarios} {probed}");
    assert!(self_checked, "scenario {SELF_CHECK} is gone");
    drop(hosts);
}
