//! `scripts/bench.sh vxlan`: TCP throughput pod → pod across two nodes in
//! different subnets, routed directly (the router has routes to the pod
//! blocks) versus through VXLAN (pool `vxlanMode: Always`): felix's
//! userspace VTEP, and the kernel's `vxlan.calico` as a reference where
//! the kernel has vxlan. Same topology and method as `ipip_bench`: per
//! backend one lab with the same pods and felix instances, only the
//! pool's mode changes between the direct and the tunnel runs.
//!
//! ```text
//! vxlan_bench [--seconds N] [--runs K] [--streams P] [--underlay-mtu M]
//!             [--wire true|false] [--kernel true|false]
//! ```
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/felix_cluster.rs"]
#[allow(dead_code)]
mod felix_cluster;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use felix::tunnel::BackendChoice;
use felix_cluster::{Cluster, block_of, pool, vxlan_pool};
use ipnetwork::IpNetwork;
use ippool_crd::EncapMode;
use lab::Netns;

struct Args {
    seconds: u32,
    runs: u32,
    streams: u32,
    underlay_mtu: Option<u32>,
    wire: bool,
    kernel: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 10,
        runs: 3,
        streams: 1,
        underlay_mtu: None,
        wire: false,
        kernel: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let e = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--seconds" => a.seconds = v.parse().map_err(|x| e(&x))?,
            "--runs" => a.runs = v.parse().map_err(|x| e(&x))?,
            "--streams" => a.streams = v.parse().map_err(|x| e(&x))?,
            "--wire" => a.wire = v.parse().map_err(|x| e(&x))?,
            "--kernel" => a.kernel = v.parse().map_err(|x| e(&x))?,
            "--underlay-mtu" => a.underlay_mtu = Some(v.parse().map_err(|x| e(&x))?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// One iperf3 run from `from` to `to_ip`; Gbit/s received.
fn iperf(from: &Netns, to: &Netns, to_ip: Ipv4Addr, seconds: u32, streams: u32) -> f64 {
    let mut server = to
        .spawn("iperf3", &["-s", "-1", "-p", "5201"], None)
        .unwrap();
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
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Direct and tunnel medians (Gbit/s) with `backend` on both nodes, or
/// `None` if the backend cannot be had here.
fn measure(args: &Args, backend: BackendChoice, tag: &str) -> Option<(f64, f64)> {
    let mut lab = lab::Topology::new(tag).unwrap();
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
        .map(|n| felix_cluster::FelixNode::start_with(n, BackendChoice::Auto, backend).unwrap())
        .collect();
    let mut c = Cluster { lab, felix };
    for k in 0..2 {
        c.lab.route_on_router(block_of(k), k).unwrap();
    }
    let direct_pools = [pool(EncapMode::Never, false)];
    let tunnel_pools = [vxlan_pool(EncapMode::Always)];
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
    let tunnel = |c: &Cluster| c.program_vxlan(&tunnel_pools).iter().all(|r| r.is_ok());

    direct(&c);
    let (p0, _) = c.felix[0].add_pod(&mut c.lab);
    let (p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    let (mut d, mut t) = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        direct(&c);
        let dg = iperf(&p0, &p1, ip1, args.seconds, args.streams);
        if !tunnel(&c) {
            println!(
                "{backend}: no VXLAN device here: {:?}",
                c.felix[0].status().vxlan_error
            );
            return None;
        }
        let kind = c.felix[0].status().vxlan.map(|v| v.backend.to_string());
        let tg = iperf(&p0, &p1, ip1, args.seconds, args.streams);
        println!(
            "{backend} run {run}: direct {dg:6.2} Gbit/s   vxlan ({}) {tg:6.2} Gbit/s   ratio {:.2}",
            kind.unwrap_or_default(),
            tg / dg
        );
        d.push(dg);
        t.push(tg);
    }
    for k in 0..2 {
        if let Some(v) = c.felix[k].status().vxlan {
            println!("{backend} node-{k} VXLAN counters: {:?}", v.stats);
        }
    }
    Some((median(d), median(t)))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vxlan_bench: {e}");
            std::process::exit(2);
        }
    };
    lab::sweep_stale();
    println!(
        "vxlan_bench: pod → pod across subnets, {} s per run, {} run(s), {} stream(s), underlay MTU {}, wire-like offloads {}",
        args.seconds,
        args.runs,
        args.streams,
        args.underlay_mtu.unwrap_or(1500),
        args.wire
    );
    let user = measure(&args, BackendChoice::Userspace, "vbu");
    let kernel = if args.kernel {
        measure(&args, BackendChoice::Kernel, "vbk")
    } else {
        None
    };
    println!("| backend | direct Gbit/s | vxlan Gbit/s | ratio |");
    println!("|---|---|---|---|");
    for (name, r) in [("userspace", user), ("kernel", kernel)] {
        if let Some((dm, tm)) = r {
            println!("| {name} | {dm:.2} | {tm:.2} | {:.2}× |", tm / dm);
        }
    }
}
