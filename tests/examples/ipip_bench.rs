//! `scripts/bench.sh ipip`: TCP throughput pod → pod across two nodes in
//! different subnets, routed directly (the router has routes to the pod
//! blocks, as a ToR learns them over BGP) versus through felix's IP-in-IP
//! tunnel (pool `ipipMode: Always`, the backend `FELIX_IPIPBACKEND` picks;
//! `userspace` by default here). The same pods, the same felix instances:
//! only the pool's mode changes between the runs.
//!
//! A third number puts the ratio in context: the direct path again with
//! segmentation offload turned off in the pods (`ethtool -K eth0 tso off
//! gso off`), so every
//! hop handles MTU-sized packets, as the underlay does behind any IP-in-IP
//! tunnel that cannot hand the kernel 64 KiB super-packets.
//!
//! ```text
//! ipip_bench [--seconds N] [--runs K] [--backend auto|kernel|userspace]
//!            [--streams P] [--underlay-mtu M] [--wire true|false]
//! ```
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/felix_cluster.rs"]
#[allow(dead_code)]
mod felix_cluster;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use felix::tunnel::BackendChoice;
use felix_cluster::{Cluster, block_of, pool};
use ipnetwork::IpNetwork;
use ippool_crd::EncapMode;
use lab::Netns;

struct Args {
    seconds: u32,
    runs: u32,
    backend: BackendChoice,
    streams: u32,
    underlay_mtu: Option<u32>,
    wire: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 10,
        runs: 3,
        backend: BackendChoice::Userspace,
        streams: 1,
        underlay_mtu: None,
        wire: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => a.seconds = v.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--runs" => a.runs = v.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--streams" => a.streams = v.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--backend" => a.backend = v.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--wire" => a.wire = v.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--underlay-mtu" => {
                a.underlay_mtu = Some(v.parse().map_err(|e| format!("{flag}: {e}"))?)
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// One iperf3 run from `from` to `to_ip`; Gbit/s received and the
/// sender's TCP retransmissions.
fn iperf(from: &Netns, to: &Netns, to_ip: Ipv4Addr, seconds: u32, streams: u32) -> (f64, u64) {
    let mut server = to
        .spawn("iperf3", &["-s", "-1", "-p", "5201"], None)
        .unwrap();
    // Bounded wait for the server to listen.
    let mut up = false;
    for _ in 0..100 {
        let ss = to.exec("ss", &["-ltn"]).unwrap_or_default();
        if ss.contains(":5201") {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(up, "iperf3 server did not start");
    let out = from
        .exec(
            "iperf3",
            &[
                "-c",
                &to_ip.to_string(),
                "-p",
                "5201",
                "-t",
                &seconds.to_string(),
                "-P",
                &streams.to_string(),
                "-J",
            ],
        )
        .unwrap();
    server.kill();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap()
            / 1e9,
        v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    )
}

/// Packets the kernel dropped at the raw IP-in-IP sockets of `ns` (the
/// `drops` column of `/proc/net/raw` for protocol 4): a receive thread
/// that falls behind shows here.
fn raw_ipip_drops(ns: &Netns) -> u64 {
    let t = ns.exec("cat", &["/proc/net/raw"]).unwrap_or_default();
    t.lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(":0004"))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ipip_bench: {e}");
            std::process::exit(2);
        }
    };
    lab::sweep_stale();
    let mut lab = lab::Topology::new("ib").unwrap();
    for _ in 0..2 {
        lab.add_subnet().unwrap();
    }
    lab.add_node(0).unwrap();
    lab.add_node(1).unwrap();
    if let Some(m) = args.underlay_mtu {
        lab.set_underlay_mtu(m).unwrap();
    }
    lab.set_wire_offloads(args.wire).unwrap();
    let felix = lab
        .nodes()
        .iter()
        .map(|n| felix_cluster::FelixNode::start(n, args.backend).unwrap())
        .collect();
    let mut c = Cluster { lab, felix };
    // Direct: the router routes the pod blocks; each node sends the other's
    // block to the router, as BGP through a ToR would have it.
    for k in 0..2 {
        c.lab.route_on_router(block_of(k), k).unwrap();
    }
    let direct_pools = [pool(EncapMode::Never, false)];
    let tunnel_pools = [pool(EncapMode::Always, false)];
    let direct = |c: &Cluster| {
        for (k, f) in c.felix.iter().enumerate() {
            let own = IpNetwork::V4(block_of(k));
            let other = IpNetwork::V4(block_of(1 - k));
            let gw = IpAddr::V4(c.lab.subnet(f.node.subnet).unwrap().gateway);
            let h = &f.handle;
            h.set_node(Some(f.node.addr)).unwrap();
            h.set_pool_modes(direct_pools.to_vec()).unwrap();
            h.set_local_blocks(vec![own]).unwrap();
            h.set_remote_blocks(vec![(other, gw)]).unwrap();
            assert!(f.flush().is_ok());
        }
    };
    let tunnel = |c: &Cluster| {
        for r in c.program(&tunnel_pools) {
            assert!(r.is_ok(), "{r:?}");
        }
    };

    direct(&c);
    let (p0, _) = c.felix[0].add_pod(&mut c.lab);
    let (p1, ip1) = c.felix[1].add_pod(&mut c.lab);

    println!(
        "ipip_bench: pod → pod across subnets, {} s per run, {} run(s), {} stream(s), backend {}, underlay MTU {}, wire-like offloads {}",
        args.seconds,
        args.runs,
        args.streams,
        args.backend,
        args.underlay_mtu.unwrap_or(1500),
        args.wire
    );
    let segs = |on: &str| {
        for p in [&p0, &p1] {
            p.exec("ethtool", &["-K", "eth0", "tso", on, "gso", on])
                .unwrap();
        }
    };
    let (mut d, mut t, mut s1) = (Vec::new(), Vec::new(), Vec::new());
    // Each run's tunnel ÷ direct without offload: the two paths of one run
    // share that run's machine load, so this varies less than the ratio
    // of the medians.
    let mut per_run = Vec::new();
    for run in 1..=args.runs {
        direct(&c);
        let (dg, _) = iperf(&p0, &p1, ip1, args.seconds, args.streams);
        segs("off");
        let (sg, sr) = iperf(&p0, &p1, ip1, args.seconds, args.streams);
        segs("on");
        tunnel(&c);
        let drops = |c: &Cluster| raw_ipip_drops(&c.felix[1].node.ns);
        let d0 = drops(&c);
        let (tg, tr) = iperf(&p0, &p1, ip1, args.seconds, args.streams);
        let dropped = drops(&c).saturating_sub(d0);
        println!(
            "run {run}: direct {dg:6.2} Gbit/s   tunnel {tg:6.2} Gbit/s   ratio {:.2}   (direct without offload {sg:6.2} Gbit/s, tunnel / that {:.2}; retransmits {sr} vs tunnel {tr}; raw socket drops on node-1 {dropped})",
            tg / dg,
            tg / sg
        );
        d.push(dg);
        t.push(tg);
        s1.push(sg);
        per_run.push(tg / sg);
    }
    let s = c.felix[0].status();
    let backend = s
        .tunnel
        .as_ref()
        .map(|t| t.backend.to_string())
        .unwrap_or_default();
    let (dm, tm, sm) = (median(d), median(t), median(s1));
    println!(
        "median: direct {dm:.2} Gbit/s, tunnel ({backend}) {tm:.2} Gbit/s, ratio {:.2}; direct without offload {sm:.2} Gbit/s (tunnel / that {:.2})",
        tm / dm,
        tm / sm
    );
    let rm = median(per_run);
    println!(
        "median of the runs' tunnel / direct without offload: {rm:.2} (issue 18's target: >= 0.90, {})",
        if rm >= 0.9 { "met" } else { "not met" }
    );
    if let Some(ts) = s.tunnel {
        println!("node-0 tunnel counters: {:?}", ts.stats);
    }
    if let Some(ts) = c.felix[1].status().tunnel {
        println!("node-1 tunnel counters: {:?}", ts.stats);
    }
}
