//! `scripts/bench.sh fib`: programs N remote-block routes (`<block>/26 via
//! <next hop>`, protocol 80) through felix's reconciler and the same N
//! through `ip -batch`, each into its own fresh network namespace, and
//! times a no-change resync of felix's N routes.
//!
//! Usage: fib_bench [--routes N] [--resyncs K]
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use felix::routes::{Reconciler, ReconcilerConfig, Route, RouteUpdate};
use ipnetwork::IpNetwork;
use lab::Netns;

const NEXT_HOP: Ipv4Addr = Ipv4Addr::new(192, 168, 255, 2);

fn block(i: u32) -> IpNetwork {
    // 10.0.0.0/8 holds 262,144 /26 blocks.
    IpNetwork::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 64)), 26).unwrap()
}

/// A namespace whose `up0` reaches the next hop, like a node's uplink.
fn node_namespace(tag: &str) -> anyhow::Result<Netns> {
    let ns = Netns::create(tag)?;
    ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"])?;
    ns.ip(&["link", "set", "up0", "up"])?;
    ns.ip(&["link", "set", "up1", "up"])?;
    ns.ip(&["addr", "add", "192.168.255.1/24", "dev", "up0"])?;
    Ok(ns)
}

fn count_routes(ns: &Netns) -> anyhow::Result<usize> {
    Ok(ns.ip(&["route", "show", "proto", "80"])?.lines().count())
}

struct FelixRun {
    program: Duration,
    resyncs: Vec<Duration>,
    internal_resync: Duration,
}

fn run_felix(n: u32, resyncs: usize) -> anyhow::Result<FelixRun> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let reconciler = Reconciler::start(ReconcilerConfig::default())?;
        let handle = reconciler.handle();
        // The start-up resync of the empty table is not part of the run.
        handle.flush().await?;
        let updates: Vec<RouteUpdate> = (0..n)
            .map(|i| RouteUpdate::Set(Route::via(block(i), IpAddr::V4(NEXT_HOP))))
            .collect();
        let t = Instant::now();
        handle.update(updates)?;
        let report = handle.flush().await?;
        let program = t.elapsed();
        if !report.is_ok() {
            bail!(
                "felix apply failed: {:?}",
                &report.failures[..report.failures.len().min(5)]
            );
        }
        let mut times = Vec::new();
        for _ in 0..resyncs {
            let t = Instant::now();
            let report = handle.resync().await?;
            times.push(t.elapsed());
            if report.ops != 0 || !report.is_ok() {
                bail!("no-change resync did something: {report:?}");
            }
        }
        let status = handle.status().await?;
        if status.programmed != n as usize {
            bail!(
                "felix believes {} routes are programmed, not {n}",
                status.programmed
            );
        }
        reconciler.stop().await;
        Ok(FelixRun {
            program,
            resyncs: times,
            internal_resync: status.last_resync.unwrap_or_default(),
        })
    })
}

fn run_ip_batch(ns: &Netns, n: u32) -> anyhow::Result<Duration> {
    let mut file = tempfile::NamedTempFile::new()?;
    {
        let mut w = std::io::BufWriter::new(&mut file);
        for i in 0..n {
            writeln!(w, "route add {} via {NEXT_HOP} proto 80", block(i))?;
        }
        w.flush()?;
    }
    let path = file.path().to_str().context("temp path is not UTF-8")?;
    let t = Instant::now();
    ns.ip(&["-batch", path])?;
    Ok(t.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let mut n: u32 = 100_000;
    let mut resyncs: usize = 5;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--routes" => n = args.next().context("--routes N")?.parse()?,
            "--resyncs" => resyncs = args.next().context("--resyncs K")?.parse()?,
            other => {
                bail!("unknown argument {other:?}; usage: fib_bench [--routes N] [--resyncs K]")
            }
        }
    }
    if n > 262_144 {
        bail!("at most 262144 /26 blocks fit in 10.0.0.0/8");
    }
    lab::sweep_stale();

    let felix_ns = node_namespace("fibfx")?;
    let felix = felix_ns.run(move || run_felix(n, resyncs.max(1)))??;
    let felix_count = count_routes(&felix_ns)?;
    drop(felix_ns);

    let ip_ns = node_namespace("fibip")?;
    let ip_time = run_ip_batch(&ip_ns, n)?;
    let ip_count = count_routes(&ip_ns)?;
    drop(ip_ns);

    if felix_count != n as usize || ip_count != n as usize {
        bail!("route counts differ: felix {felix_count}, ip -batch {ip_count}, wanted {n}");
    }
    let mut sorted = felix.resyncs.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let ratio = felix.program.as_secs_f64() / ip_time.as_secs_f64();
    println!("fib: {n} remote-block routes (IPv4 /26 via a connected next hop, proto 80)");
    println!(
        "  felix     : {:9.1} ms  ({:.0} routes/s)",
        ms(felix.program),
        f64::from(n) / felix.program.as_secs_f64()
    );
    println!(
        "  ip -batch : {:9.1} ms  ({:.0} routes/s)",
        ms(ip_time),
        f64::from(n) / ip_time.as_secs_f64()
    );
    println!("  ratio     : {ratio:.2}x felix / ip -batch (target <= 1.2x)");
    println!(
        "  resync    : no change, {n} routes: median {:.1} ms, min {:.1} ms over {} runs; \
         last measured inside the task {:.1} ms (target <= 100 ms)",
        ms(median),
        ms(sorted[0]),
        sorted.len(),
        ms(felix.internal_resync)
    );
    Ok(())
}
