//! How fast felix's nftables policy dataplane programs a node, in a fresh
//! network namespace (nothing of the host's is touched):
//!
//! - cold: 1,000 policies over 100 local endpoints (plus remote endpoints
//!   whose addresses fill the selector sets) rendered and written as one
//!   transaction into an empty namespace;
//! - one changed policy (a port in one rule), rendered and written as a
//!   delta, repeated;
//! - one remote pod added (set elements only), repeated;
//! - a no-change resync (read back and compare);
//! - the process's memory (VmRSS, VmHWM), which is felix's share for
//!   holding the snapshot and the rendered table.
//!
//! `scripts/bench.sh policy [--policies N]
//! [--local N] [--remote N] [--repeat K]`. Prints numbers; asserts nothing
//! about time.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use felix::policy::nft::{Applied, PolicyDataplaneConfig, PolicyTable, Renderer, render};
use felix::policy::{
    Endpoint, EndpointMatch, EntityMatch, NamedPort, NamespaceMatch, Policy, PolicySet,
    PolicySnapshot, Profile, Rule,
};
use ippool_crd::Selector;
use ippool_crd::policy::{Action, PortMatch, Protocol};

struct Args {
    policies: usize,
    local: usize,
    remote: usize,
    repeat: usize,
}

fn args() -> Args {
    let mut a = Args {
        policies: 1000,
        local: 100,
        remote: 900,
        repeat: 20,
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

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let p = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        ms(v[i])
    };
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
        p(0.5),
        p(0.99),
        p(1.0),
        v.len()
    )
}

fn main() {
    let a = args();
    let ns = lab::Netns::create("pnftb").unwrap();
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(bench(a));
    })
    .unwrap();
}

async fn bench(a: Args) {
    println!(
        "policy dataplane: {} policies, {} local endpoints, {} remote, nft {}",
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
        .trim()
    );
    let opts = PolicyDataplaneConfig::default();
    let cold = snapshot(&a, None, 0);
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

    // One changed policy, `repeat` times (alternating ports).
    let (mut total, mut renders, mut writes) = (Vec::new(), Vec::new(), Vec::new());
    let mut prev = desired;
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
        percentiles(same)
    );
    for i in 0..a.repeat {
        let snap = snapshot(&a, Some((7, 81 + u16::try_from(i % 50).unwrap())), 0);
        let t = Instant::now();
        let next = renderer.render(&snap);
        let r = t.elapsed();
        let script = felix::policy::nft::script::delta(&opts.table_options(), &prev, &next)
            .expect("a changed policy changes the table");
        let t2 = Instant::now();
        assert_eq!(
            table.apply_desired(next.clone()).await.unwrap(),
            Applied::Delta
        );
        let w = t2.elapsed();
        total.push(t.elapsed());
        renders.push(r);
        writes.push(w);
        if i == 0 {
            println!(
                "one changed policy: {} script lines ({} chain(s) rewritten)",
                script.lines().count(),
                script
                    .lines()
                    .filter(|l| l.starts_with("flush chain"))
                    .count()
            );
        }
        prev = next;
    }
    println!("one changed policy, render + write: {}", percentiles(total));
    println!(
        "  of which render (cached renderer): {}",
        percentiles(renders)
    );
    println!("  of which nft -f (delta): {}", percentiles(writes));

    // A remote pod coming: set elements only.
    let mut adds = Vec::new();
    for i in 1..=a.repeat {
        let snap = snapshot(
            &a,
            Some((7, 81 + u16::try_from((a.repeat - 1) % 50).unwrap())),
            i,
        );
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
    println!(
        "one remote pod added, render + write: {}",
        percentiles(adds)
    );

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
    println!(
        "memory at the end: VmRSS {}, VmHWM {}",
        status("VmRSS:"),
        status("VmHWM:")
    );
}
