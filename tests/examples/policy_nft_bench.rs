//! How fast felix's nftables policy dataplane programs a node, in a fresh
//! network namespace (nothing of the host's is touched), and what the
//! table costs the traffic it polices:
//!
//! - cold: 1,000 policies over 100 local endpoints (plus remote endpoints
//!   whose addresses fill the selector sets) rendered and written as one
//!   transaction into an empty namespace;
//! - one changed policy (a port in one rule), rendered and written as a
//!   delta, repeated; then the same with the `nft` binary per change (the
//!   fallback when libnftables is missing, and the method before it);
//! - one remote pod added (set elements only), repeated;
//! - a no-change resync (read back and compare);
//! - the process's memory (VmRSS, VmHWM), which is felix's share for
//!   holding the snapshot, the rendered table and the nft context;
//! - throughput: two pods (namespaces with veths made by felix's
//!   `PodInterfaces`) and one TCP stream between them for a few seconds,
//!   with no policy table and with 1,000 policies over 10,000 endpoint
//!   addresses in sets (the pair selected and allowed), alternated.
//!
//! `scripts/bench.sh policy [--policies N] [--local N] [--remote N]
//! [--repeat K] [--set-addresses N] [--seconds S] [--rounds R]`. Prints
//! each number beside its target (issue 17) with the ratio; asserts
//! nothing about time.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use felix::policy::nft::{Applied, Backend, PolicyDataplaneConfig, PolicyTable, Renderer, render};
use felix::policy::{
    Endpoint, EndpointMatch, EntityMatch, NamedPort, NamespaceMatch, Policy, PolicySet,
    PolicySnapshot, Profile, Rule,
};
use felix::routes::{Reconciler, ReconcilerConfig};
use felix::workload::{AllowedCidrs, PodInterfaces, WorkloadConfig, WorkloadSpec};
use ippool_crd::Selector;
use ippool_crd::policy::{Action, PortMatch, Protocol};
use lab::Netns;

#[derive(Clone, Copy)]
struct Args {
    policies: usize,
    local: usize,
    remote: usize,
    repeat: usize,
    /// Endpoint addresses in the throughput run's sets.
    set_addresses: usize,
    seconds: u64,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        policies: 1000,
        local: 100,
        remote: 900,
        repeat: 100,
        set_addresses: 10_000,
        seconds: 2,
        rounds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v: usize = it
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--policies" => a.policies = v,
            "--local" => a.local = v,
            "--remote" => a.remote = v,
            "--repeat" => a.repeat = v.max(1),
            "--set-addresses" => a.set_addresses = v,
            "--seconds" => a.seconds = u64::try_from(v.max(1)).unwrap(),
            "--rounds" => a.rounds = v.max(1),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

const NAMESPACES: usize = 10;
const APPS: usize = 10;

fn endpoint(i: usize) -> Endpoint {
    let ns = format!("ns{}", i % NAMESPACES);
    let labels: BTreeMap<String, String> = [
        ("app".to_string(), format!("a{}", (i / NAMESPACES) % APPS)),
        ("tier".to_string(), format!("t{}", i % 3)),
    ]
    .into_iter()
    .collect();
    let ns_labels = [("team".to_string(), format!("team{}", i % 4))]
        .into_iter()
        .collect();
    let ip = Ipv4Addr::from(0x0a41_0000u32 + u32::try_from(i).unwrap() + 1);
    let mut e = Endpoint::pod(
        &ns,
        &format!("pod{i}"),
        labels,
        ns_labels,
        vec![IpAddr::V4(ip)],
    );
    e.named_ports.insert(
        "http".into(),
        NamedPort {
            protocol: Protocol::TCP,
            port: 8080,
        },
    );
    e
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

/// Kubernetes-like: policy `j` lives in namespace `j % 10`, selects one
/// app there, and admits TCP to a port (or the named port) from one app
/// of its namespace and from one team's namespaces; every tenth also has
/// an egress rule to a net.
fn policy(j: usize, port: u16) -> Policy {
    let ns = format!("ns{}", j % NAMESPACES);
    let ports = if j.is_multiple_of(5) {
        vec![PortMatch::Named("http".into())]
    } else {
        vec![PortMatch::Range(port, port)]
    };
    let from = |m: EndpointMatch| Rule {
        protocol: Some(Protocol::TCP),
        source: EntityMatch {
            endpoints: Some(m),
            ..EntityMatch::default()
        },
        destination: EntityMatch {
            ports: ports.clone(),
            ..EntityMatch::default()
        },
        ..Rule::any(Action::Allow)
    };
    let egress = if j.is_multiple_of(10) {
        vec![Rule {
            destination: EntityMatch {
                nets: vec![format!("10.{}.0.0/16", 100 + j % 100).parse().unwrap()],
                ..EntityMatch::default()
            },
            ..Rule::any(Action::Allow)
        }]
    } else {
        vec![]
    };
    Policy {
        name: format!("{ns}/knp.default.p{j}"),
        order: Some(1000.0),
        namespace: Some(ns.clone()),
        selector: sel(&format!("app == 'a{}'", (j / NAMESPACES) % APPS)),
        namespace_selector: None,
        applies_ingress: true,
        applies_egress: !egress.is_empty(),
        ingress: vec![
            from(EndpointMatch {
                namespace: NamespaceMatch::Named(ns.clone()),
                selector: Some(sel(&format!(
                    "app == 'a{}' && tier == 't{}'",
                    (j + 1) % APPS,
                    j % 3
                ))),
            }),
            from(EndpointMatch {
                namespace: NamespaceMatch::Selector(sel(&format!("team == 'team{}'", j % 4))),
                selector: Some(sel(&format!("app == 'a{}'", (j + 3) % APPS))),
            }),
        ],
        egress,
    }
}

fn snapshot(a: &Args, changed: Option<(usize, u16)>, extra: usize) -> PolicySnapshot {
    let endpoints: BTreeMap<String, Endpoint> = (0..a.local + a.remote + extra)
        .map(endpoint)
        .map(|e| (e.id(), e))
        .collect();
    let local = (0..a.local)
        .map(endpoint)
        .map(|e| {
            let iface = felix::workload::host_iface_name("cali", &e.namespace, &e.name);
            (e.id(), iface)
        })
        .collect();
    let policies = (0..a.policies)
        .map(|j| {
            let port = match changed {
                Some((k, p)) if k == j => p,
                _ => 80,
            };
            policy(j, port)
        })
        .collect();
    let profiles = (0..NAMESPACES)
        .map(|n| Profile::namespace(&format!("ns{n}")))
        .collect();
    PolicySnapshot {
        policies: PolicySet::new(policies, profiles),
        endpoints,
        local,
        errors: vec![],
        synced: true,
    }
}

fn status(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l.trim_start_matches(key).trim().to_string())
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50, p99 and max of some durations, in ms.
#[derive(Clone, Copy)]
struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
    n: usize,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let p = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        ms(v[i])
    };
    Stats {
        p50: p(0.5),
        p99: p(0.99),
        max: p(1.0),
        n: v.len(),
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
            self.p50, self.p99, self.max, self.n
        )
    }
}

/// What the timing part measured, for the summary.
struct Timings {
    cold: Duration,
    changed: Stats,
    changed_render: Stats,
    changed_write: Stats,
    changed_binary: Stats,
    pod_added: Stats,
    rss: String,
    hwm: String,
}

fn main() {
    let a = args();
    println!(
        "policy dataplane: {} policies, {} local endpoints, {} remote, {}; load average {}",
        a.policies,
        a.local,
        a.remote,
        String::from_utf8_lossy(
            &std::process::Command::new("nft")
                .arg("--version")
                .output()
                .unwrap()
                .stdout
        )
        .trim(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let ns = Netns::create("pnftb").unwrap();
    let t = ns
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(bench(&a))
        })
        .unwrap();
    drop(ns);
    let tput = throughput(&a);
    summary(&t, &tput);
}

async fn bench(a: &Args) -> Timings {
    let opts = PolicyDataplaneConfig::default();
    let cold = snapshot(a, None, 0);
    let t = Instant::now();
    let desired = render(&cold, &opts.render_options());
    let render_cold = t.elapsed();
    let rules: usize = desired.chains.values().map(|c| c.rules.len()).sum();
    let elements: usize = desired.sets.values().map(|s| s.elements.len()).sum();
    let script = felix::policy::nft::script::full(&opts.table_options(), &desired);
    println!(
        "table: {} chains, {rules} rules, {} sets, {elements} set elements, script {} KiB",
        desired.chains.len(),
        desired.sets.len(),
        script.len() / 1024
    );
    if let Ok(path) = std::env::var("POLICY_NFT_BENCH_SCRIPT") {
        std::fs::write(path, &script).unwrap();
    }
    let policy_chains = desired
        .chains
        .keys()
        .filter(|k| k.starts_with("po-"))
        .count();
    let mut table = PolicyTable::new(opts.clone());
    println!("nft backend: {:?}", table.backend());
    let t = Instant::now();
    assert_eq!(table.apply(&cold).await.unwrap(), Applied::Full);
    let cold_total = t.elapsed();
    // The same write alone (render excluded), and the read-back.
    let t = Instant::now();
    table.write(&script).await.unwrap();
    let write_full = t.elapsed();
    let t = Instant::now();
    table.list().await.unwrap().unwrap();
    let list = t.elapsed();
    println!(
        "cold: {:.0} ms total (render {:.0} ms; the full nft transaction alone {:.0} ms; read-back {:.0} ms); {policy_chains} policy chains",
        ms(cold_total),
        ms(render_cold),
        ms(write_full),
        ms(list)
    );
    println!(
        "memory after cold: VmRSS {}, VmHWM {}",
        status("VmRSS:"),
        status("VmHWM:")
    );

    // felix keeps one renderer: unchanged policies and, with the same
    // endpoints, set elements are reused.
    let mut renderer = Renderer::new(opts.render_options());
    renderer.render(&cold);
    let mut same = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        renderer.render(&cold);
        same.push(t.elapsed());
    }
    println!(
        "render of an unchanged snapshot (cached renderer): {}",
        stats(same)
    );
    let mut prev = desired;
    let (changed, changed_render, changed_write) =
        changed_policy(a, &mut renderer, &mut table, &mut prev, 0).await;
    println!("one changed policy, render + write: {changed}");
    println!("  of which render (cached renderer): {changed_render}");
    println!("  of which the delta transaction: {changed_write}");

    // A remote pod coming: set elements only.
    let mut adds = Vec::new();
    for i in 1..=a.repeat {
        let snap = snapshot(a, Some((7, port_of(a.repeat - 1))), i);
        let t = Instant::now();
        let next = renderer.render(&snap);
        let script = felix::policy::nft::script::delta(&opts.table_options(), &prev, &next);
        if let Some(s) = &script {
            assert!(s.lines().all(|l| l.contains(" element ")), "{s}");
        }
        table.apply_desired(next.clone()).await.unwrap();
        adds.push(t.elapsed());
        prev = next;
    }
    let pod_added = stats(adds);
    println!("one remote pod added, render + write: {pod_added}");

    // Resync with nothing changed: after the deltas, the first is a full
    // replace; the next only reads back and compares.
    let t = Instant::now();
    let first = table.resync().await.unwrap();
    let resync_first = t.elapsed();
    let t = Instant::now();
    let second = table.resync().await.unwrap();
    let resync_second = t.elapsed();
    println!(
        "resync after deltas: {first:?} in {:.0} ms; then {second:?} in {:.0} ms",
        ms(resync_first),
        ms(resync_second)
    );
    let (rss, hwm) = (status("VmRSS:"), status("VmHWM:"));
    println!("memory at the end: VmRSS {rss}, VmHWM {hwm}");

    // The same changes through the nft binary, one process per change.
    let mut binary = PolicyTable::new(PolicyDataplaneConfig {
        nft_library: false,
        ..opts.clone()
    });
    assert_eq!(binary.backend(), Backend::Binary);
    let mut renderer = Renderer::new(opts.render_options());
    let mut prev = renderer.render(&cold);
    binary.apply_desired(prev.clone()).await.unwrap();
    let (changed_binary, _, _) = changed_policy(a, &mut renderer, &mut binary, &mut prev, 1).await;
    println!("one changed policy through the nft binary, render + write: {changed_binary}");
    Timings {
        cold: cold_total,
        changed,
        changed_render,
        changed_write,
        changed_binary,
        pod_added,
        rss,
        hwm,
    }
}

fn port_of(i: usize) -> u16 {
    81 + u16::try_from(i % 50).unwrap()
}

/// `repeat` times: policy 7's port changes; (render + write, render,
/// write).
async fn changed_policy(
    a: &Args,
    renderer: &mut Renderer,
    table: &mut PolicyTable,
    prev: &mut felix::policy::nft::Desired,
    offset: usize,
) -> (Stats, Stats, Stats) {
    let opts = table.config().clone();
    let (mut total, mut renders, mut writes) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..a.repeat {
        let snap = snapshot(a, Some((7, port_of(i + offset))), 0);
        let t = Instant::now();
        let next = renderer.render(&snap);
        let r = t.elapsed();
        let t2 = Instant::now();
        assert_eq!(
            table.apply_desired(next.clone()).await.unwrap(),
            Applied::Delta
        );
        let w = t2.elapsed();
        total.push(t.elapsed());
        renders.push(r);
        writes.push(w);
        if i == 0 && offset == 0 {
            let script = felix::policy::nft::script::delta(&opts.table_options(), prev, &next)
                .expect("a changed policy changes the table");
            println!(
                "one changed policy: {} script lines ({} chain(s) rewritten)",
                script.lines().count(),
                script
                    .lines()
                    .filter(|l| l.starts_with("flush chain"))
                    .count()
            );
        }
        *prev = next;
    }
    (stats(total), stats(renders), stats(writes))
}

/// Throughput without and with the policy table (Gbit/s per round), and
/// the number of set elements.
struct Throughput {
    /// No nftables table at all.
    none: Vec<f64>,
    /// felix's table, no policy.
    empty: Vec<f64>,
    policy: Vec<f64>,
    elements: usize,
    addresses: usize,
    seconds: u64,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 65, 200, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 65, 200, 2);
const SERVER_PORT: u16 = 8080;

/// The server pod: in `ns0`, app `a0`, so policies 0, 100, … select it,
/// and its `http` port is the named port they admit.
fn server_pod() -> Endpoint {
    let mut e = Endpoint::pod(
        "ns0",
        "server",
        [("app".to_string(), "a0".to_string())].into(),
        [("team".to_string(), "team0".to_string())].into(),
        vec![IpAddr::V4(SERVER_IP)],
    );
    e.named_ports.insert(
        "http".into(),
        NamedPort {
            protocol: Protocol::TCP,
            port: SERVER_PORT,
        },
    );
    e
}

/// The client: app `a3` in a `team0` namespace, which policy 0's second
/// ingress rule admits; no policy selects it (its namespace's profile
/// allows its egress).
fn client_pod() -> Endpoint {
    Endpoint::pod(
        "client",
        "client",
        [("app".to_string(), "a3".to_string())].into(),
        [("team".to_string(), "team0".to_string())].into(),
        vec![IpAddr::V4(CLIENT_IP)],
    )
}

fn throughput_snapshot(a: &Args) -> PolicySnapshot {
    let t = Args {
        remote: a.set_addresses.saturating_sub(a.local),
        ..*a
    };
    let mut snap = snapshot(&t, None, 0);
    let mut profiles: Vec<Profile> = (0..NAMESPACES)
        .map(|n| Profile::namespace(&format!("ns{n}")))
        .collect();
    profiles.push(Profile::namespace("client"));
    snap.policies = PolicySet::new(snap.policies.policies().to_vec(), profiles);
    for e in [server_pod(), client_pod()] {
        let iface = felix::workload::host_iface_name("cali", &e.namespace, &e.name);
        snap.local.insert(e.id(), iface);
        snap.endpoints.insert(e.id(), e);
    }
    snap
}

fn throughput(a: &Args) -> Throughput {
    let node = Arc::new(Netns::create("pnftt").unwrap());
    // An uplink with a default route, as a node has: proxy ARP answers a
    // pod's ARP for its gateway (169.254.1.1) only when the node routes
    // that address somewhere.
    for args in [
        &["link", "add", "up0", "type", "veth", "peer", "name", "up1"][..],
        &["link", "set", "up0", "up"],
        &["link", "set", "up1", "up"],
        &["addr", "add", "192.168.255.1/24", "dev", "up0"],
        &["route", "add", "default", "via", "192.168.255.2"],
    ] {
        node.ip(args).unwrap();
    }
    let server = Arc::new(Netns::create("pnfts").unwrap());
    let client = Arc::new(Netns::create("pnftc").unwrap());
    let snap = throughput_snapshot(a);
    let d = render(&snap, &PolicyDataplaneConfig::default().render_options());
    let elements: usize = d.sets.values().map(|s| s.elements.len()).sum();
    // Addresses alone or first in a named port's `address . proto . port`.
    let addresses = d
        .sets
        .values()
        .flat_map(|s| s.elements.iter())
        .filter_map(|e| e.split_whitespace().next()?.parse::<IpAddr>().ok())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let (a_rounds, secs) = (a.rounds, a.seconds);
    // felix's table with the same two pods and no policy at all (their
    // namespaces' profiles allow everything).
    let mut unpoliced = snap.clone();
    unpoliced.policies =
        PolicySet::new(vec![], snap.policies.profiles().values().cloned().collect());
    let (srv, cli) = (server.clone(), client.clone());
    let (none, empty, policy) = node
        .run(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let rec = Reconciler::start(ReconcilerConfig {
                    resync_interval: Duration::from_secs(3600),
                    ..ReconcilerConfig::default()
                })
                .unwrap();
                let pool = Arc::new(AllowedCidrs(vec!["10.65.0.0/16".parse().unwrap()]));
                let w = PodInterfaces::new(WorkloadConfig::default(), rec.handle(), pool).unwrap();
                for (e, ns) in [(server_pod(), &srv), (client_pod(), &cli)] {
                    w.add(&WorkloadSpec {
                        namespace: e.namespace.clone(),
                        pod: e.name.clone(),
                        netns: ns.path(),
                        ips: e.addresses.clone(),
                    })
                    .await
                    .unwrap();
                }
                let (mut none, mut empty, mut policy) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..a_rounds {
                    none.push(transfer(&srv, &cli, secs).await);
                    let mut table = PolicyTable::new(PolicyDataplaneConfig::default());
                    table.apply(&unpoliced).await.unwrap();
                    empty.push(transfer(&srv, &cli, secs).await);
                    table.apply(&snap).await.unwrap();
                    policy.push(transfer(&srv, &cli, secs).await);
                    table
                        .write("delete table inet calico-rs-filter\n")
                        .await
                        .unwrap();
                }
                drop(w);
                drop(rec);
                (none, empty, policy)
            })
        })
        .unwrap();
    Throughput {
        none,
        empty,
        policy,
        elements,
        addresses,
        seconds: a.seconds,
    }
}

/// One TCP stream client → server for `secs` seconds; Gbit/s as the
/// server received it.
async fn transfer(server: &Arc<Netns>, client: &Arc<Netns>, secs: u64) -> f64 {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = server
        .spawn_thread(move || {
            let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, SERVER_PORT)).unwrap();
            ready_tx.send(()).unwrap();
            let (mut s, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 1 << 18];
            let mut n = 0u64;
            let mut first = None;
            loop {
                let k = s.read(&mut buf).unwrap();
                if k == 0 {
                    break;
                }
                first.get_or_insert_with(Instant::now);
                n += k as u64;
            }
            let secs = first.map_or(f64::NAN, |t| t.elapsed().as_secs_f64());
            n as f64 * 8.0 / secs / 1e9
        })
        .unwrap();
    let sender = client
        .spawn_thread(move || {
            ready_rx.recv().unwrap();
            // The pods' routes are programmed a moment after their ADD.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut s = loop {
                match TcpStream::connect(SocketAddr::from((SERVER_IP, SERVER_PORT))) {
                    Ok(s) => break s,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => panic!("cannot reach the server pod: {e}"),
                }
            };
            let buf = vec![0x5au8; 1 << 18];
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                s.write_all(&buf).unwrap();
            }
            s.shutdown(std::net::Shutdown::Write).unwrap();
        })
        .unwrap();
    tokio::task::spawn_blocking(move || {
        sender.join().unwrap();
        receiver.join().unwrap()
    })
    .await
    .unwrap()
}

/// Each number beside its target, with the ratio (below 1 is within a
/// time budget; at or above 1 meets a throughput floor).
fn summary(t: &Timings, tp: &Throughput) {
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!(
        "throughput, one TCP stream between two pods ({} s per run):",
        tp.seconds
    );
    for i in 0..tp.none.len() {
        println!(
            "  round {i}: no table {:.2} Gbit/s, felix's table without policy {:.2} Gbit/s, with the policies {:.2} Gbit/s",
            tp.none[i], tp.empty[i], tp.policy[i]
        );
    }
    println!(
        "  with the policy table: {} set elements, {} distinct addresses",
        tp.elements, tp.addresses
    );
    println!();
    println!(
        "{:<44} {:>22} {:>10} {:>7}  verdict",
        "issue 17", "result", "target", "ratio"
    );
    let row = |what: &str, result: String, target: String, ratio: f64, ok: Option<bool>| {
        println!(
            "{what:<44} {result:>22} {target:>10} {ratio:>6.2}×  {}",
            ok.map_or("reported", verdict)
        );
    };
    let cold = ms(t.cold);
    row(
        "cold: 1,000 policies over 100 endpoints",
        format!("{cold:.0} ms"),
        "≤ 1000 ms".into(),
        cold / 1000.0,
        Some(cold <= 1000.0),
    );
    for (what, v) in [("p50", t.changed.p50), ("p99", t.changed.p99)] {
        row(
            &format!("one changed policy, {what}"),
            format!("{v:.2} ms"),
            "≤ 10 ms".into(),
            v / 10.0,
            Some(v <= 10.0),
        );
    }
    row(
        "  of which render, p50",
        format!("{:.2} ms", t.changed_render.p50),
        "".into(),
        t.changed_render.p50 / 10.0,
        None,
    );
    row(
        "  of which the delta transaction, p50",
        format!("{:.2} ms", t.changed_write.p50),
        "".into(),
        t.changed_write.p50 / 10.0,
        None,
    );
    row(
        "one changed policy via the nft binary, p50",
        format!("{:.2} ms", t.changed_binary.p50),
        "≤ 10 ms".into(),
        t.changed_binary.p50 / 10.0,
        Some(t.changed_binary.p50 <= 10.0),
    );
    row(
        "one remote pod added, p50",
        format!("{:.2} ms", t.pod_added.p50),
        "".into(),
        t.pod_added.p50 / 10.0,
        None,
    );
    let (n, e, p) = (median(&tp.none), median(&tp.empty), median(&tp.policy));
    row(
        "throughput, policies / no table (median)",
        format!("{p:.2}/{n:.2} Gbit/s"),
        "≥ 0.95×".into(),
        p / n,
        Some(p / n >= 0.95),
    );
    row(
        "throughput, policies / table without policy",
        format!("{p:.2}/{e:.2} Gbit/s"),
        "≥ 0.95×".into(),
        p / e,
        Some(p / e >= 0.95),
    );
    println!(
        "felix's memory (this process): VmRSS {}, VmHWM {}",
        t.rss, t.hwm
    );
}
