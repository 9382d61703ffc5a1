//! VXLAN through felix's dataplane with the kernel's `vxlan.calico`, on a
//! routed lab underlay (two subnets joined by a router namespace). Every
//! claim about the wire is checked with a capture on the node's underlay
//! interface: UDP to 4789, VNI 4096, the inner Ethernet header carrying
//! the VTEP MACs, the pods' packets inside.
//!
//! This needs a kernel with the vxlan link type. On one without, each
//! test asserts felix's clear error instead, and that nothing else was
//! lost; the real-kernel tier
//! (`tests/tests/kernel_tier.rs`) runs this binary where vxlan exists, and
//! there (`CALICO_KERNEL_VM` set) a kernel without vxlan fails the run.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::OnceLock;
use std::time::Duration;

use common::felix_cluster::{
    Cluster, block_of, block6_of, mac_text, node6_of, ping, pool, tunnel_ip_of, tunnel6_of,
    vxlan_mac_of, vxlan_pool, vxlan6_mac_of, vxlan6_pool,
};
use felix::dataplane::DataplaneReport;
use felix::tunnel::{BackendChoice, BackendKind};
use ippool_crd::EncapMode;
use lab::{Capture, Captured, Netns, tcp_transfer};

const MB4: u64 = 4 << 20;
const T: Duration = Duration::from_secs(30);
const VXLAN_DEV: &str = "vxlan.calico";

/// Whether this kernel has the vxlan link type: tried once, in a
/// throwaway lab namespace. In the real-kernel tier it must.
fn kernel_has_vxlan() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    let has = *HAS.get_or_init(|| {
        let mut lab = lab::Topology::new("vk").unwrap();
        lab.add_subnet().unwrap();
        let node = lab.add_node(0).unwrap().clone();
        let r = node.ns.ip(&[
            "link", "add", "vxprobe", "type", "vxlan", "id", "42", "dstport", "4789",
        ]);
        match r {
            Ok(_) => true,
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("Unknown device type") || e.contains("not supported"),
                    "probing for vxlan failed otherwise: {e}"
                );
                false
            }
        }
    });
    if std::env::var_os("CALICO_KERNEL_VM").is_some() {
        assert!(has, "the real-kernel tier's kernel must have vxlan");
    }
    has
}

fn assert_ok(reports: &[DataplaneReport]) {
    for r in reports {
        assert!(r.is_ok(), "{r:?}");
    }
}

/// On a kernel without vxlan: every node reports why, its VXLAN blocks
/// wait, and the rest (local blackholes, the report's other parts) is
/// intact.
fn assert_clear_vxlan_error(c: &Cluster, reports: &[DataplaneReport]) {
    for (r, f) in reports.iter().zip(&c.felix) {
        let e = r.vxlan_error.as_deref().unwrap_or_default();
        assert!(e.contains("no vxlan link type"), "{r:?}");
        assert!(e.contains("vxlanMode: Never"), "{e}");
        assert!(!r.waiting_for_vxlan.is_empty(), "{r:?}");
        assert!(r.routes.is_ok() && r.tunnel_error.is_none() && r.nat_error.is_none());
        let s = f.status();
        assert!(s.vxlan.is_none() && s.vxlan_enabled, "{s:?}");
        assert_eq!(s.vteps, 0);
        let own = block_of(f.node.index).to_string();
        let r = f.node.ns.ip(&["route", "show", "exact", &own]).unwrap();
        assert!(r.contains("blackhole"), "{r}");
        // A VXLAN pool's blocks are never routed over IP-in-IP instead.
        let all = f.node.ns.ip(&["route", "show", "proto", "80"]).unwrap();
        assert!(!all.contains("tunl0"), "{all}");
    }
}

/// A cluster with VXLAN programmed, or `None` (after checking felix's
/// error) where the kernel has no vxlan.
fn vxlan_cluster(
    tag: &str,
    subnets: usize,
    placement: &[usize],
    mode: EncapMode,
) -> Option<Cluster> {
    vxlan_cluster_with(tag, subnets, placement, mode, BackendChoice::Auto)
}

/// [`vxlan_cluster`] with every node on `backend` (`Userspace` works on
/// any kernel).
fn vxlan_cluster_with(
    tag: &str,
    subnets: usize,
    placement: &[usize],
    mode: EncapMode,
    backend: BackendChoice,
) -> Option<Cluster> {
    let has = backend == BackendChoice::Userspace || kernel_has_vxlan();
    let c = Cluster::new_vxlan(tag, subnets, placement, BackendChoice::Auto, &[backend]);
    let reports = c.program_vxlan(&[vxlan_pool(mode)]);
    for f in c
        .felix
        .iter()
        .filter(|_| backend == BackendChoice::Userspace)
    {
        let v = f.status().vxlan.unwrap();
        assert_eq!(v.backend, BackendKind::Userspace, "{v:?}");
    }
    if !has {
        assert_clear_vxlan_error(&c, &reports);
        return None;
    }
    assert_ok(&reports);
    Some(c)
}

/// Pings and moves 4 MiB of verified TCP data from `from` to `to`.
fn talk(from: &Netns, to: &Netns, to_ip: Ipv4Addr) {
    let out = ping(from, to_ip, &[]);
    assert!(out.is_ok(), "ping {to_ip}: {out:?}");
    let r = tcp_transfer(from, to, to_ip, MB4, T).unwrap();
    assert_eq!(r.bytes, MB4);
    assert!(r.intact, "{r:?}");
}

/// The VXLAN bytes (outer lengths) between two nodes, checking every such
/// packet is VNI 4096 to port 4789 between the two VTEP MACs.
fn vxlan_bytes_between(seen: &Captured, a: (Ipv4Addr, usize), b: (Ipv4Addr, usize)) -> u64 {
    let mut total = 0;
    for (p, v) in seen.vxlan() {
        let fwd = (p.src, p.dst) == (a.0, b.0);
        let back = (p.src, p.dst) == (b.0, a.0);
        if !fwd && !back {
            continue;
        }
        assert_eq!(v.dst_port, 4789, "{p:?}");
        assert!(v.vni_valid && v.vni == 4096, "{v:?}");
        let (from, to) = if fwd { (a.1, b.1) } else { (b.1, a.1) };
        assert_eq!(v.inner_src_mac, vxlan_mac_of(from), "{v:?}");
        assert_eq!(v.inner_dst_mac, vxlan_mac_of(to), "{v:?}");
        total += u64::from(p.len);
    }
    total
}

/// Pod traffic to or from `ip` that left unencapsulated.
fn bare(seen: &Captured, ip: Ipv4Addr) -> usize {
    seen.packets
        .iter()
        .filter(|p| p.vxlan.is_none() && (p.src == ip || p.dst == ip))
        .count()
}

#[test]
fn always_encapsulates_every_pair_with_vni_4096_and_programs_device_neighbours_and_fdb() {
    always_encapsulates_every_pair(BackendChoice::Auto, "va");
}

#[test]
fn always_encapsulates_every_pair_with_vni_4096_userspace() {
    always_encapsulates_every_pair(BackendChoice::Userspace, "vau");
}

/// The device (kernel: its VXLAN parameters, neighbour and FDB entries;
/// userspace: a TUN device), routes, MTU, and the wire for every pair.
fn always_encapsulates_every_pair(backend: BackendChoice, tag: &str) {
    let user = backend == BackendChoice::Userspace;
    // node-0 and node-2 share subnet 0; node-1 is behind the router.
    let Some(mut c) = vxlan_cluster_with(tag, 2, &[0, 1, 0], EncapMode::Always, backend) else {
        return;
    };
    let (p0, ip0) = c.felix[0].add_pod(&mut c.lab);
    let (p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    let (p2, ip2) = c.felix[2].add_pod(&mut c.lab);
    let n0 = c.felix[0].node.clone();
    let (a0, a1, a2) = (n0.ip(), c.felix[1].node.ip(), c.felix[2].node.ip());

    // The device: VNI, port, local, no learning, MAC, MTU, address.
    let link = n0.ns.ip(&["-d", "link", "show", VXLAN_DEV]).unwrap();
    if user {
        assert!(
            link.contains("tun") && link.contains("mtu 1450") && link.contains(",UP"),
            "{link}"
        );
    }
    for want in [
        "vxlan id 4096".to_string(),
        "dstport 4789".to_string(),
        format!("local {a0}"),
        "nolearning".to_string(),
        format!("link/ether {}", mac_text(vxlan_mac_of(0))),
        "mtu 1450".to_string(),
        ",UP".to_string(),
    ]
    .iter()
    .filter(|_| !user)
    {
        assert!(link.contains(want), "{want:?} in {link}");
    }
    let addrs = n0
        .ns
        .ip(&["-4", "-o", "addr", "show", "dev", VXLAN_DEV])
        .unwrap();
    assert_eq!(addrs.lines().count(), 1, "{addrs}");
    assert!(
        addrs.contains(&format!("{}/32", tunnel_ip_of(0))),
        "{addrs}"
    );

    // VXLAN is admitted from the two other nodes only (the filter is
    // written by its own task: give it a moment). The userspace VTEP
    // checks sources itself and counts the drops: no filter table.
    let mut table = String::new();
    for _ in (0..100).filter(|_| !user) {
        table = n0
            .ns
            .exec("nft", &["list", "table", "ip", "calico-rs-vxlan"])
            .unwrap_or_default();
        if table.contains(&a1.to_string()) && table.contains(&a2.to_string()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if user {
        let t = n0
            .ns
            .exec("nft", &["list", "table", "ip", "calico-rs-vxlan"]);
        assert!(t.as_ref().map_or(true, |t| t.trim().is_empty()), "{t:?}");
    } else {
        assert!(
            table.contains(&format!("elements = {{ {}, {} }}", a2.min(a1), a2.max(a1)))
                && table.contains("udp dport 4789 counter packets"),
            "{table}"
        );
    }

    // Routes, neighbours, FDB entries for both other nodes.
    let routes = n0.ns.ip(&["route", "show", "proto", "80"]).unwrap();
    let neigh = n0
        .ns
        .ip(&["neigh", "show", "dev", VXLAN_DEV, "nud", "permanent"])
        .unwrap();
    let fdb = n0
        .ns
        .command("bridge")
        .args(["fdb", "show", "dev", VXLAN_DEV])
        .output()
        .unwrap();
    let fdb = String::from_utf8_lossy(&fdb.stdout).into_owned();
    for (k, a) in [(1, a1), (2, a2)] {
        let t = tunnel_ip_of(k);
        let mac = mac_text(vxlan_mac_of(k));
        assert!(
            routes.contains(&format!("10.65.{k}.0/26 via {t} dev {VXLAN_DEV} onlink")),
            "{routes}"
        );
        if !user {
            assert!(
                neigh.contains(&format!("{t} lladdr {mac} PERMANENT")),
                "{neigh}"
            );
            assert!(
                fdb.contains(&format!("{mac} dst {a} self permanent")),
                "{fdb}"
            );
        }
    }
    assert!(!routes.contains("tunl0"), "{routes}");

    // Pod MTU: underlay less 50.
    let s = c.felix[0].status();
    assert_eq!(s.pod_mtu, 1450);
    assert_eq!(
        std::fs::read_to_string(c.felix[0].mtu_file()).unwrap(),
        "1450\n"
    );
    let pod_link = p0.ip(&["link", "show", "eth0"]).unwrap();
    assert!(pod_link.contains("mtu 1450"), "{pod_link}");

    // Same subnet and across: VXLAN both, nothing bare.
    let cap = Capture::start(&n0.ns, &n0.iface).unwrap();
    talk(&p0, &p2, ip2);
    talk(&p0, &p1, ip1);
    let seen = cap.stop().unwrap();
    assert_eq!(seen.kernel_drops, 0);
    for (peer, a) in [(2, a2), (1, a1)] {
        let b = vxlan_bytes_between(&seen, (a0, 0), (a, peer));
        assert!(b > MB4, "only {b} bytes of VXLAN to node-{peer} for 4 MiB");
    }
    assert!(
        seen.vxlan()
            .any(|(p, v)| p.outgoing && v.inner.is_some_and(|i| i.src == ip0 && i.dst == ip1))
    );
    assert!(
        seen.vxlan()
            .any(|(p, v)| !p.outgoing && v.inner.is_some_and(|i| i.src == ip2 && i.dst == ip0))
    );
    assert_eq!(bare(&seen, ip1), 0, "pod traffic left unencapsulated");
    assert_eq!(bare(&seen, ip2), 0, "pod traffic left unencapsulated");

    let s = c.felix[0].status();
    let v = s.vxlan.unwrap();
    assert_eq!(v.device, VXLAN_DEV);
    assert_eq!(v.address, tunnel_ip_of(0));
    assert_eq!(v.mac, vxlan_mac_of(0));
    assert!(v.ifindex > 0);
    assert!(
        v.stats.tx_bytes > 2 * MB4 && v.stats.rx_packets > 0,
        "{v:?}"
    );
    assert_eq!((s.vteps, s.vxlan_blocks), (2, 2));
    assert!(s.vxlan_enabled && s.vxlan_error.is_none());
    if user {
        assert_eq!(v.backend, BackendKind::Userspace);
        assert_eq!(
            (v.stats.rx_unknown_source, v.stats.rx_malformed),
            (0, 0),
            "{v:?}"
        );
    }
}

#[test]
fn cross_subnet_routes_directly_inside_a_subnet_and_over_vxlan_across() {
    cross_subnet(BackendChoice::Auto, "vx");
}

#[test]
fn cross_subnet_routes_directly_inside_a_subnet_and_over_vxlan_across_userspace() {
    cross_subnet(BackendChoice::Userspace, "vxu");
}

fn cross_subnet(backend: BackendChoice, tag: &str) {
    let Some(mut c) = vxlan_cluster_with(tag, 2, &[0, 1, 0], EncapMode::CrossSubnet, backend)
    else {
        return;
    };
    let (p0, ip0) = c.felix[0].add_pod(&mut c.lab);
    let (p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    let (p2, ip2) = c.felix[2].add_pod(&mut c.lab);
    let n0 = c.felix[0].node.clone();
    let (a0, a1, a2) = (n0.ip(), c.felix[1].node.ip(), c.felix[2].node.ip());

    let routes = n0.ns.ip(&["route", "show", "proto", "80"]).unwrap();
    assert!(
        routes.contains(&format!(
            "10.65.1.0/26 via {} dev {VXLAN_DEV} onlink",
            tunnel_ip_of(1)
        )),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("10.65.2.0/26 via {a2} dev eth0")),
        "{routes}"
    );

    let cap = Capture::start(&n0.ns, &n0.iface).unwrap();
    talk(&p0, &p2, ip2);
    let seen = cap.stop().unwrap();
    assert_eq!(seen.kernel_drops, 0);
    assert_eq!(seen.vxlan().count(), 0, "{:?}", seen.vxlan().next());
    assert!(
        seen.packets
            .iter()
            .any(|p| p.protocol == 6 && p.src == ip0 && p.dst == ip2)
    );

    let cap = Capture::start(&n0.ns, &n0.iface).unwrap();
    talk(&p0, &p1, ip1);
    let seen = cap.stop().unwrap();
    assert_eq!(seen.kernel_drops, 0);
    let b = vxlan_bytes_between(&seen, (a0, 0), (a1, 1));
    assert!(b > MB4, "only {b} bytes of VXLAN for 4 MiB");
    assert!(
        seen.vxlan()
            .any(|(p, v)| !p.outgoing && v.inner.is_some_and(|i| i.src == ip1 && i.dst == ip0))
    );
    assert_eq!(bare(&seen, ip1), 0, "pod traffic left unencapsulated");
    let s = c.felix[0].status();
    assert_eq!((s.vteps, s.vxlan_blocks), (2, 1));
    // The pod MTU leaves room for VXLAN everywhere (a pod cannot know
    // which peers are across).
    assert_eq!(s.pod_mtu, 1450);

    // Jumbo underlay: felix notices on its next refresh, and the device
    // follows.
    c.lab.set_underlay_mtu(9000).unwrap();
    c.felix[0].handle.resync().unwrap();
    let report = c.felix[0].flush();
    assert!(report.is_ok(), "{report:?}");
    let s = c.felix[0].status();
    assert_eq!((s.pod_mtu, s.vxlan.as_ref().unwrap().mtu), (8950, 8950));
    let link = n0.ns.ip(&["link", "show", VXLAN_DEV]).unwrap();
    assert!(link.contains("mtu 8950"), "{link}");
    assert_eq!(
        std::fs::read_to_string(c.felix[0].mtu_file()).unwrap(),
        "8950\n"
    );
}

fn fdb_of(ns: &Netns) -> String {
    let out = ns
        .command("bridge")
        .args(["fdb", "show", "dev", VXLAN_DEV])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_leaving_vtep_loses_its_entries_changes_replace_them_and_resync_repairs() {
    let Some(mut c) = vxlan_cluster("vl", 2, &[0, 1, 0], EncapMode::Always) else {
        return;
    };
    let (p0, _) = c.felix[0].add_pod(&mut c.lab);
    let (_p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    let ns = c.felix[0].node.ns.clone();
    let h = c.felix[0].handle.clone();
    let (a1, a2) = (c.felix[1].node.ip(), c.felix[2].node.ip());
    let (t1, t2) = (tunnel_ip_of(1), tunnel_ip_of(2));
    let neigh = |ns: &Netns| ns.ip(&["neigh", "show", "dev", VXLAN_DEV]).unwrap();

    // node-2 leaves (its VTEP and its BGP announcement).
    h.set_vteps(vec![c.vtep_of(1)]).unwrap();
    h.update_remote_block(
        ipnetwork::IpNetwork::V4(block_of(2)),
        None::<std::net::IpAddr>,
    )
    .unwrap();
    assert!(c.felix[0].flush().is_ok());
    let r = ns.ip(&["route", "show", "exact", "10.65.2.0/26"]).unwrap();
    assert!(r.trim().is_empty(), "{r}");
    assert!(!neigh(&ns).contains(&t2.to_string()), "{}", neigh(&ns));
    let fdb = fdb_of(&ns);
    assert!(!fdb.contains(&mac_text(vxlan_mac_of(2))), "{fdb}");
    assert!(fdb.contains(&format!("dst {a1}")), "{fdb}");
    assert_eq!(c.felix[0].status().vteps, 1);
    let _ = a2;

    // node-1's VTEP gets a new MAC (node-1's own device too): node-0's
    // entries are replaced and the path works.
    let new_mac = [0x66, 0x6c, 0, 0, 0x11, 0x01];
    c.felix[1]
        .handle
        .set_vxlan_local(Some(felix::VxlanLocal {
            tunnel_addr: t1,
            mac: new_mac,
        }))
        .unwrap();
    assert!(c.felix[1].flush().is_ok());
    let mut v1 = c.vtep_of(1);
    v1.mac = new_mac;
    h.set_vteps(vec![v1.clone()]).unwrap();
    assert!(c.felix[0].flush().is_ok());
    let n = neigh(&ns);
    assert!(
        n.contains(&format!("{t1} lladdr {} PERMANENT", mac_text(new_mac))),
        "{n}"
    );
    let fdb = fdb_of(&ns);
    assert!(!fdb.contains(&mac_text(vxlan_mac_of(1))), "{fdb}");
    assert!(
        fdb.contains(&format!("{} dst {a1} self permanent", mac_text(new_mac))),
        "{fdb}"
    );
    let ns1 = c.felix[1].node.ns.clone();
    let link1 = ns1.ip(&["link", "show", VXLAN_DEV]).unwrap();
    assert!(link1.contains(&mac_text(new_mac)), "{link1}");
    let out = ping(&p0, ip1, &[]);
    assert!(
        out.is_ok(),
        "{out:?}\nnode-1: {link1}\nnode-0 neigh: {}\nnode-0 fdb: {}",
        neigh(&ns),
        fdb_of(&ns)
    );

    // Someone deletes the neighbour entry and the FDB entry: a resync puts
    // them back.
    ns.ip(&["neigh", "del", &t1.to_string(), "dev", VXLAN_DEV])
        .unwrap();
    let out = ns
        .command("bridge")
        .args([
            "fdb",
            "del",
            &mac_text(new_mac),
            "dev",
            VXLAN_DEV,
            "dst",
            &a1.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    h.resync().unwrap();
    assert!(c.felix[0].flush().is_ok());
    assert!(neigh(&ns).contains("PERMANENT"), "{}", neigh(&ns));
    assert!(fdb_of(&ns).contains(&format!("dst {a1}")));

    // Someone deletes the device: a resync makes it again, with its
    // routes and entries.
    ns.ip(&["link", "del", VXLAN_DEV]).unwrap();
    h.resync().unwrap();
    let report = c.felix[0].flush();
    assert!(report.is_ok(), "{report:?}");
    let r = ns.ip(&["route", "show", "exact", "10.65.1.0/26"]).unwrap();
    assert!(r.contains(&format!("via {t1} dev {VXLAN_DEV}")), "{r}");
    assert!(neigh(&ns).contains("PERMANENT"), "{}", neigh(&ns));
    let out = ping(&p0, ip1, &[]);
    assert!(out.is_ok(), "{out:?}");

    // Every VTEP gone: no entries, no VXLAN routes, the device stays (the
    // pool is still VXLAN). BGP still announces node-1's block: it is not
    // routed some other way, and the report says it waits for a VTEP.
    h.set_vteps(Vec::new()).unwrap();
    let report = c.felix[0].flush();
    assert!(
        report.routes.is_ok() && report.vxlan_error.is_none(),
        "{report:?}"
    );
    assert_eq!(
        report.waiting_for_vxlan,
        vec![ipnetwork::IpNetwork::V4(block_of(1))]
    );
    assert!(!neigh(&ns).contains("PERMANENT"), "{}", neigh(&ns));
    assert!(!fdb_of(&ns).contains("permanent"), "{}", fdb_of(&ns));
    let routes = ns.ip(&["route", "show", "proto", "80"]).unwrap();
    assert!(!routes.contains(VXLAN_DEV), "{routes}");
}

#[test]
fn always_to_never_keeps_a_live_transfer_and_removes_the_device() {
    always_to_never(BackendChoice::Auto, "vm");
}

#[test]
fn always_to_never_keeps_a_live_transfer_and_removes_the_device_userspace() {
    always_to_never(BackendChoice::Userspace, "vmu");
}

fn always_to_never(backend: BackendChoice, tag: &str) {
    let Some(mut c) = vxlan_cluster_with(tag, 1, &[0, 0], EncapMode::Always, backend) else {
        return;
    };
    let (p0, ip0) = c.felix[0].add_pod(&mut c.lab);
    let (p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    let n0 = c.felix[0].node.clone();
    let (a0, a1) = (n0.ip(), c.felix[1].node.ip());
    let route = |ns: &Netns| ns.ip(&["route", "show", "exact", "10.65.1.0/26"]).unwrap();
    assert!(route(&n0.ns).contains(VXLAN_DEV), "{}", route(&n0.ns));

    // Always → Never while a transfer is in flight: the routes move to the
    // BGP-learned ones in one reconcile, and the stream survives intact.
    let sink = lab::TcpSink::start(&p1, T).unwrap();
    let p0c = p0.clone();
    let port = sink.port();
    let sender =
        std::thread::spawn(move || lab::send_pattern(&p0c, (ip1, port).into(), 16 << 20, T));
    std::thread::sleep(Duration::from_millis(50));
    let cap = Capture::start(&n0.ns, &n0.iface).unwrap();
    assert_ok(&c.set_pools(&[vxlan_pool(EncapMode::Never)]));
    assert!(
        route(&n0.ns).contains(&format!("via {a1} dev eth0 proto 80")),
        "{}",
        route(&n0.ns)
    );
    sender.join().unwrap().unwrap();
    let r = sink.wait().unwrap();
    assert!(r.intact && r.bytes == 16 << 20, "{r:?}");
    talk(&p0, &p1, ip1);
    let _ = cap.stop().unwrap();

    // The device is gone, so is the VXLAN filter, and the pod MTU is the
    // underlay's again.
    for f in &c.felix {
        let mut tables = String::new();
        for _ in 0..100 {
            tables = f.node.ns.exec("nft", &["list", "tables"]).unwrap();
            if !tables.contains("calico-rs-vxlan") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!tables.contains("calico-rs-vxlan"), "{tables}");
        let link = f.node.ns.ip(&["link", "show", VXLAN_DEV]);
        assert!(link.is_err(), "{link:?}");
        let s = f.status();
        assert!(s.vxlan.is_none() && !s.vxlan_enabled, "{s:?}");
        assert_eq!(s.pod_mtu, 1500);
    }
    let cap = Capture::start(&n0.ns, &n0.iface).unwrap();
    talk(&p0, &p1, ip1);
    let seen = cap.stop().unwrap();
    assert_eq!(seen.vxlan().count(), 0);
    assert!(
        seen.packets
            .iter()
            .any(|p| p.protocol == 6 && p.src == ip0 && p.dst == ip1)
    );

    // And back to Always: the device returns.
    assert_ok(&c.set_pools(&[vxlan_pool(EncapMode::Always)]));
    assert!(route(&n0.ns).contains(VXLAN_DEV), "{}", route(&n0.ns));
    let cap = Capture::start(&n0.ns, &n0.iface).unwrap();
    talk(&p0, &p1, ip1);
    let seen = cap.stop().unwrap();
    assert!(vxlan_bytes_between(&seen, (a0, 0), (a1, 1)) > MB4);
}

#[test]
fn a_mismatched_device_is_replaced_and_a_foreign_one_is_reported() {
    let has = kernel_has_vxlan();
    let c = Cluster::new("vr", 1, &[0, 0], BackendChoice::Auto);
    let (ns0, ns1) = (c.felix[0].node.ns.clone(), c.felix[1].node.ns.clone());
    if has {
        // A VXLAN device of the same name with another VNI and port.
        ns0.ip(&[
            "link", "add", VXLAN_DEV, "type", "vxlan", "id", "42", "dstport", "8472",
        ])
        .unwrap();
    }
    // A device of another kind holding the name.
    ns1.ip(&[
        "link", "add", VXLAN_DEV, "type", "veth", "peer", "name", "vxpeer",
    ])
    .unwrap();
    let reports = c.program_vxlan(&[vxlan_pool(EncapMode::Always)]);
    let e1 = reports[1].vxlan_error.as_deref().unwrap_or_default();
    if has {
        assert!(reports[0].is_ok(), "{:?}", reports[0]);
        let link = ns0.ip(&["-d", "link", "show", VXLAN_DEV]).unwrap();
        assert!(
            link.contains("vxlan id 4096") && link.contains("dstport 4789"),
            "{link}"
        );
        assert!(e1.contains("is a veth device, not VXLAN"), "{e1}");
    } else {
        assert_clear_vxlan_error(&c, &reports[..1]);
        // The foreign device is looked at first.
        assert!(
            e1.contains("is a veth device, not VXLAN") || e1.contains("no vxlan link type"),
            "{e1}"
        );
    }
    // Never deleted.
    assert!(ns1.ip(&["link", "show", "vxpeer"]).is_ok());
    assert!(
        reports[1]
            .waiting_for_vxlan
            .contains(&"10.65.0.0/26".parse().unwrap())
    );
    // IP-in-IP is unaffected by VXLAN's trouble: an IPIP pool still works
    // (this kernel's tunnel or the userspace one).
    let reports = c.program(&[pool(EncapMode::Always, false)]);
    assert!(reports[0].is_ok(), "{:?}", reports[0]);
}

/// The userspace VTEP's counters on node k.
fn user_stats(c: &Cluster, k: usize) -> felix::tunnel::TunnelStats {
    let v = c.felix[k].status().vxlan.unwrap();
    assert_eq!(v.backend, BackendKind::Userspace, "{v:?}");
    v.stats
}

/// Sends `payloads` as UDP datagrams from `ns` to `to`:4789.
fn send_udp(ns: &Netns, to: Ipv4Addr, payloads: Vec<Vec<u8>>) {
    ns.run(move || {
        let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        for p in payloads {
            s.send_to(&p, (to, 4789)).unwrap();
        }
    })
    .unwrap();
}

/// A VXLAN frame for `dst_mac` with VNI `vni`, carrying a small UDP
/// packet from `src` to `dst`.
fn vxlan_frame(flags: u8, vni: u32, dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut b = vec![flags, 0, 0, 0, v[1], v[2], v[3], 0];
    b.extend_from_slice(&dst_mac);
    b.extend_from_slice(&[0x66, 0, 0, 0, 0, 0x77]);
    b.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 12, 0, 0, 1, 2, 3, 4]);
    b.extend_from_slice(&ip);
    b
}

#[test]
fn a_kernel_node_and_a_userspace_node_talk_with_the_kernels_wire_format() {
    if !kernel_has_vxlan() {
        return;
    }
    // node-0: the kernel's device; node-1: the userspace VTEP, across
    // the router.
    let mut c = Cluster::new_vxlan(
        "vkm",
        2,
        &[0, 1],
        BackendChoice::Auto,
        &[BackendChoice::Kernel, BackendChoice::Userspace],
    );
    assert_ok(&c.program_vxlan(&[vxlan_pool(EncapMode::Always)]));
    let s0 = c.felix[0].status().vxlan.unwrap();
    assert_eq!(s0.backend, BackendKind::Kernel, "{s0:?}");
    let (p0, ip0) = c.felix[0].add_pod(&mut c.lab);
    let (p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    let n1 = c.felix[1].node.clone();
    let (a0, a1) = (c.felix[0].node.ip(), n1.ip());

    // The userspace side: a TUN device with the same name, MTU, address
    // and onlink routes.
    let link = n1.ns.ip(&["-d", "link", "show", VXLAN_DEV]).unwrap();
    assert!(link.contains("tun") && link.contains("mtu 1450"), "{link}");
    let addrs = n1
        .ns
        .ip(&["-4", "-o", "addr", "show", "dev", VXLAN_DEV])
        .unwrap();
    assert!(
        addrs.contains(&format!("{}/32", tunnel_ip_of(1))),
        "{addrs}"
    );
    let routes = n1.ns.ip(&["route", "show", "proto", "80"]).unwrap();
    assert!(
        routes.contains(&format!(
            "10.65.0.0/26 via {} dev {VXLAN_DEV} onlink",
            tunnel_ip_of(0)
        )),
        "{routes}"
    );

    let cap = Capture::start(&n1.ns, &n1.iface).unwrap();
    talk(&p0, &p1, ip1);
    talk(&p1, &p0, ip0);
    let seen = cap.stop().unwrap();
    assert_eq!(seen.kernel_drops, 0);
    // VNI 4096 to port 4789 between the VTEP MACs, both ways.
    let b = vxlan_bytes_between(&seen, (a0, 0), (a1, 1));
    assert!(b > 2 * MB4, "only {b} bytes of VXLAN for 2 × 4 MiB");
    assert!(
        seen.vxlan()
            .any(|(p, v)| p.outgoing && v.inner.is_some_and(|i| i.src == ip1 && i.dst == ip0))
    );
    assert!(
        seen.vxlan()
            .any(|(p, v)| !p.outgoing && v.inner.is_some_and(|i| i.src == ip0 && i.dst == ip1))
    );
    assert_eq!(bare(&seen, ip0), 0, "pod traffic left unencapsulated");
    let st = user_stats(&c, 1);
    assert!(st.tx_bytes > MB4 && st.rx_bytes > MB4, "{st:?}");
    assert_eq!((st.rx_unknown_source, st.rx_malformed), (0, 0), "{st:?}");
    assert_eq!((st.tx_errors, st.rx_errors), (0, 0), "{st:?}");
    // The kernel side never had to ask for the userspace VTEP's MAC.
    let neigh = c.felix[0]
        .node
        .ns
        .ip(&["neigh", "show", "dev", VXLAN_DEV])
        .unwrap();
    assert!(
        neigh.contains(&format!(
            "{} lladdr {} PERMANENT",
            tunnel_ip_of(1),
            mac_text(vxlan_mac_of(1))
        )),
        "{neigh}"
    );
}

#[test]
fn userspace_vtep_drops_unknown_sources_and_malformed_datagrams_and_counts_them() {
    let mut c = Cluster::new_vxlan(
        "vd",
        2,
        &[0, 1],
        BackendChoice::Auto,
        &[BackendChoice::Userspace],
    );
    assert_ok(&c.program_vxlan(&[vxlan_pool(EncapMode::Always)]));
    let (p0, _) = c.felix[0].add_pod(&mut c.lab);
    let (p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    let a1 = c.felix[1].node.ip();
    let good = |flags, vni, mac| vxlan_frame(flags, vni, mac, Ipv4Addr::new(10, 65, 0, 9), ip1);

    // A well-formed frame from the router (not a node): dropped, counted.
    let router = c.lab.router().clone();
    send_udp(&router, a1, vec![good(0x08, 4096, vxlan_mac_of(1)); 3]);
    // From a known node: short, bad flags, wrong VNI, another MAC, not
    // IPv4 inside, a lying inner length, empty.
    let mut not_ip = good(0x08, 4096, vxlan_mac_of(1));
    not_ip[20] = 0x86;
    let mut lying = good(0x08, 4096, vxlan_mac_of(1));
    lying[24..26].copy_from_slice(&1000u16.to_be_bytes());
    let bad = vec![
        vec![0x08, 0, 0, 0],
        good(0x0c, 4096, vxlan_mac_of(1)),
        good(0x00, 4096, vxlan_mac_of(1)),
        good(0x08, 4097, vxlan_mac_of(1)),
        good(0x08, 4096, vxlan_mac_of(0)),
        not_ip,
        lying,
        Vec::new(),
    ];
    let nbad = bad.len() as u64;
    send_udp(&c.felix[0].node.ns, a1, bad);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let st = loop {
        let st = user_stats(&c, 1);
        if (st.rx_unknown_source >= 3 && st.rx_malformed >= nbad)
            || std::time::Instant::now() > deadline
        {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!((st.rx_unknown_source, st.rx_malformed), (3, nbad), "{st:?}");
    assert_eq!(st.rx_packets, 0, "{st:?}");
    // And the VTEP still works.
    talk(&p0, &p1, ip1);
    let st = user_stats(&c, 1);
    assert!(st.rx_packets > 0, "{st:?}");
}

fn ifindex_of(ns: &Netns, dev: &str) -> Option<u32> {
    let out = ns.ip(&["-o", "link", "show", dev]).ok()?;
    out.split(':').next()?.trim().parse().ok()
}

#[test]
fn a_felix_restart_keeps_the_userspace_device_its_address_and_routes() {
    let Some(mut c) = vxlan_cluster_with(
        "vrs",
        1,
        &[0, 0],
        EncapMode::Always,
        BackendChoice::Userspace,
    ) else {
        return;
    };
    let (p0, ip0) = c.felix[0].add_pod(&mut c.lab);
    let (p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    talk(&p0, &p1, ip1);
    let n1 = c.felix[1].node.clone();
    let before = ifindex_of(&n1.ns, VXLAN_DEV).unwrap();

    // felix on node-1 stops: the device stays, with its address and the
    // routes through it.
    drop(c.felix.remove(1));
    assert_eq!(ifindex_of(&n1.ns, VXLAN_DEV), Some(before));
    let addrs = n1
        .ns
        .ip(&["-4", "-o", "addr", "show", "dev", VXLAN_DEV])
        .unwrap();
    assert!(
        addrs.contains(&format!("{}/32", tunnel_ip_of(1))),
        "{addrs}"
    );
    let routes = n1.ns.ip(&["route", "show", "proto", "80"]).unwrap();
    assert!(
        routes.contains(&format!("dev {VXLAN_DEV} onlink")),
        "{routes}"
    );

    // A new felix adopts the same device and traffic flows both ways.
    c.felix.insert(
        1,
        common::felix_cluster::FelixNode::start_with(
            &n1,
            BackendChoice::Auto,
            BackendChoice::Userspace,
        )
        .unwrap(),
    );
    assert_ok(&c.program_vxlan(&[vxlan_pool(EncapMode::Always)]));
    assert_eq!(ifindex_of(&n1.ns, VXLAN_DEV), Some(before));
    talk(&p0, &p1, ip1);
    talk(&p1, &p0, ip0);
    let st = user_stats(&c, 1);
    assert!(st.rx_packets > 0 && st.tx_packets > 0, "{st:?}");

    // No VXLAN pool: the persistent device is deleted.
    assert_ok(&c.set_pools(&[vxlan_pool(EncapMode::Never)]));
    assert_eq!(ifindex_of(&n1.ns, VXLAN_DEV), None);
}

// ---- IPv6 VXLAN (`vxlan-v6.calico`) -----------------------------------

const VXLAN6_DEV: &str = "vxlan-v6.calico";

/// `count` pings from `from` to the IPv6 address `to`.
fn ping6(from: &Netns, to: std::net::Ipv6Addr, count: u32) -> Result<String, String> {
    let out = from
        .command("ping")
        .args([
            "-6",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            &to.to_string(),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// `ping6` until it answers (a new neighbour or route settles), within T.
fn wait_ping6(from: &Netns, to: std::net::Ipv6Addr) {
    let start = std::time::Instant::now();
    loop {
        match ping6(from, to, 1) {
            Ok(_) => return,
            Err(e) if start.elapsed() > T => panic!("ping -6 {to}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn v6_stats(c: &Cluster, k: usize) -> felix::tunnel::TunnelStats {
    c.felix[k]
        .status()
        .vxlan6
        .unwrap_or_else(|| panic!("node {k} has no {VXLAN6_DEV}"))
        .stats
}

/// A dual-stack cluster (IPv4 VXLAN `v4_mode`, IPv6 VXLAN `v6_mode`), or
/// `None` where the kernel has no vxlan.
fn dual_cluster(
    tag: &str,
    subnets: usize,
    placement: &[usize],
    v4_mode: EncapMode,
    v6_mode: EncapMode,
) -> Option<Cluster> {
    if !kernel_has_vxlan() {
        return None;
    }
    let c = Cluster::new(tag, subnets, placement, BackendChoice::Auto);
    c.add_ipv6_underlay();
    assert_ok(&c.program_vxlan_dual(&[vxlan_pool(v4_mode), vxlan6_pool(v6_mode)]));
    Some(c)
}

#[test]
fn ipv6_vxlan_always_carries_pod_ipv6_over_vxlan_v6_calico_with_v6_entries_and_routes() {
    let Some(mut c) = dual_cluster("vx6a", 2, &[0, 1], EncapMode::Always, EncapMode::Always) else {
        return;
    };
    let n0 = c.felix[0].node.clone();
    let n1 = c.felix[1].node.clone();
    let n1_v6 = node6_of(n1.subnet, n1.index).ip();

    // The device: VNI 4096, port 4789, local = the node's IPv6 address,
    // no learning, MTU underlay - 70, the IPv6 VTEP as its /128.
    let link = n0.ns.ip(&["-d", "link", "show", VXLAN6_DEV]).unwrap();
    assert!(link.contains("vxlan id 4096"), "{link}");
    assert!(
        link.contains(&format!("local {}", node6_of(n0.subnet, n0.index).ip())),
        "{link}"
    );
    assert!(link.contains("dstport 4789"), "{link}");
    assert!(link.contains("nolearning"), "{link}");
    assert!(link.contains("mtu 1430"), "{link}");
    assert!(link.contains(&mac_text(vxlan6_mac_of(n0.index))), "{link}");
    let addrs = n0
        .ns
        .ip(&[
            "-6", "-o", "addr", "show", "dev", VXLAN6_DEV, "scope", "global",
        ])
        .unwrap();
    assert!(
        addrs.contains(&format!("{}/128", tunnel6_of(n0.index))),
        "{addrs}"
    );
    // The IPv4 device keeps its own 50-byte overhead; pods get the larger.
    let v4 = n0.ns.ip(&["link", "show", VXLAN_DEV]).unwrap();
    assert!(v4.contains("mtu 1450"), "{v4}");
    let s0 = c.felix[0].status();
    assert_eq!(s0.pod_mtu, 1430, "{s0:?}");
    assert_eq!((s0.vteps6, s0.vxlan6_blocks), (1, 1), "{s0:?}");
    assert!(s0.vxlan6_enabled && s0.vxlan6_error.is_none(), "{s0:?}");
    let mtu = std::fs::read_to_string(c.felix[0].mtu_file()).unwrap();
    assert_eq!(mtu.trim(), "1430");

    // Neighbour, FDB (dst = the other node's IPv6 address) and route.
    let neigh = n0
        .ns
        .ip(&["-6", "neigh", "show", "dev", VXLAN6_DEV])
        .unwrap();
    assert!(
        neigh.contains(&format!(
            "{} lladdr {} PERMANENT",
            tunnel6_of(n1.index),
            mac_text(vxlan6_mac_of(n1.index))
        )),
        "{neigh}"
    );
    let fdb = n0
        .ns
        .command("bridge")
        .args(["fdb", "show", "dev", VXLAN6_DEV])
        .output()
        .unwrap();
    let fdb = String::from_utf8_lossy(&fdb.stdout).to_string();
    assert!(
        fdb.contains(&format!(
            "{} dst {n1_v6} self permanent",
            mac_text(vxlan6_mac_of(n1.index))
        )),
        "{fdb}"
    );
    let routes = n0.ns.ip(&["-6", "route", "show", "proto", "80"]).unwrap();
    assert!(
        routes.contains(&format!(
            "{} via {} dev {VXLAN6_DEV}",
            block6_of(n1.index),
            tunnel6_of(n1.index)
        )) && routes.contains("onlink"),
        "{routes}"
    );
    // IPv6 VXLAN is admitted from the known nodes only.
    let table = n1
        .ns
        .command("nft")
        .args(["list", "table", "ip6", "calico-rs-vxlan6"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.contains(&node6_of(n0.subnet, n0.index).ip().to_string()),
        "{table}"
    );

    // Pod to pod over IPv6 (and IPv4 still works), through the v6 device.
    let (p0, ip0, ip6_0) = c.felix[0].add_pod_dual(&mut c.lab);
    let (p1, _ip1, ip6_1) = c.felix[1].add_pod_dual(&mut c.lab);
    wait_ping6(&p0, ip6_1);
    let (b0, b1) = (v6_stats(&c, 0), v6_stats(&c, 1));
    ping6(&p0, ip6_1, 5).unwrap();
    ping6(&p1, ip6_0, 5).unwrap();
    let (a0, a1) = (v6_stats(&c, 0), v6_stats(&c, 1));
    assert!(a0.tx_packets >= b0.tx_packets + 10, "{b0:?} -> {a0:?}");
    assert!(a0.rx_packets >= b0.rx_packets + 10, "{b0:?} -> {a0:?}");
    assert!(a1.rx_packets >= b1.rx_packets + 10, "{b1:?} -> {a1:?}");
    assert_eq!(a0.tx_errors + a0.rx_errors, 0, "{a0:?}");
    let out = ping(&p1, ip0, &[]);
    assert!(out.is_ok(), "IPv4 next to IPv6: {out:?}");
    // The filter on node 1 counted node 0's datagrams as accepted.
    let table = n1
        .ns
        .command("nft")
        .args(["list", "table", "ip6", "calico-rs-vxlan6"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    let accepted = table
        .lines()
        .find(|l| l.contains("counter") && l.contains("accept"))
        .and_then(|l| l.split("packets ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(accepted >= 10, "{table}");
}

#[test]
fn ipv6_vxlan_cross_subnet_routes_directly_inside_the_ipv6_subnet() {
    let Some(mut c) = dual_cluster(
        "vx6x",
        2,
        &[0, 0, 1],
        EncapMode::CrossSubnet,
        EncapMode::CrossSubnet,
    ) else {
        return;
    };
    let n0 = c.felix[0].node.clone();
    let (n1, n2) = (c.felix[1].node.clone(), c.felix[2].node.clone());
    let routes = n0.ns.ip(&["-6", "route", "show", "proto", "80"]).unwrap();
    // Same IPv6 subnet: via the node's IPv6 address, no device.
    let direct = routes
        .lines()
        .find(|l| l.starts_with(&block6_of(n1.index).to_string()))
        .unwrap_or_default()
        .to_string();
    assert!(
        direct.contains(&format!("via {}", node6_of(n1.subnet, n1.index).ip()))
            && !direct.contains(VXLAN6_DEV),
        "{routes}"
    );
    // Across the router: over vxlan-v6.calico.
    assert!(
        routes.contains(&format!(
            "{} via {} dev {VXLAN6_DEV}",
            block6_of(n2.index),
            tunnel6_of(n2.index)
        )),
        "{routes}"
    );
    let (p0, _, _) = c.felix[0].add_pod_dual(&mut c.lab);
    let (_p1, _, ip6_1) = c.felix[1].add_pod_dual(&mut c.lab);
    let (_p2, _, ip6_2) = c.felix[2].add_pod_dual(&mut c.lab);
    wait_ping6(&p0, ip6_1);
    wait_ping6(&p0, ip6_2);
    let before = v6_stats(&c, 0);
    ping6(&p0, ip6_1, 5).unwrap();
    let mid = v6_stats(&c, 0);
    assert!(
        mid.tx_packets < before.tx_packets + 5,
        "same subnet went over VXLAN: {before:?} -> {mid:?}"
    );
    ping6(&p0, ip6_2, 5).unwrap();
    let after = v6_stats(&c, 0);
    assert!(
        after.tx_packets >= mid.tx_packets + 5,
        "{mid:?} -> {after:?}"
    );
}

#[test]
fn the_last_ipv6_vxlan_pool_going_removes_vxlan_v6_calico_its_routes_and_filter() {
    let Some(c) = dual_cluster("vx6r", 1, &[0, 0], EncapMode::Always, EncapMode::Always) else {
        return;
    };
    let n0 = c.felix[0].node.clone();
    assert!(ifindex_of(&n0.ns, VXLAN6_DEV).is_some());
    // The IPv6 pool goes (the IPv4 VXLAN pool stays).
    let reports = c.set_pools(&[vxlan_pool(EncapMode::Always)]);
    assert_ok(&reports);
    assert_eq!(ifindex_of(&n0.ns, VXLAN6_DEV), None);
    assert!(ifindex_of(&n0.ns, VXLAN_DEV).is_some());
    let routes = n0.ns.ip(&["-6", "route", "show", "proto", "80"]).unwrap();
    assert!(!routes.contains(VXLAN6_DEV), "{routes}");
    // The filter goes (its writer is asynchronous).
    let start = std::time::Instant::now();
    loop {
        let ok = n0
            .ns
            .command("nft")
            .args(["list", "table", "ip6", "calico-rs-vxlan6"])
            .output()
            .unwrap()
            .status
            .success();
        if !ok {
            break;
        }
        assert!(start.elapsed() < T, "calico-rs-vxlan6 is still there");
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = c.felix[0].status();
    assert!(s.vxlan6.is_none() && !s.vxlan6_enabled, "{s:?}");
    assert_eq!(s.pod_mtu, 1450, "back to IPv4 VXLAN's overhead");
    // Back again: the device returns.
    assert_ok(&c.set_pools(&[
        vxlan_pool(EncapMode::Always),
        vxlan6_pool(EncapMode::Always),
    ]));
    assert!(ifindex_of(&n0.ns, VXLAN6_DEV).is_some());
}

#[test]
fn the_userspace_backend_reports_that_it_has_no_ipv6_vxlan() {
    let c = Cluster::new_vxlan(
        "vx6u",
        1,
        &[0, 0],
        BackendChoice::Auto,
        &[BackendChoice::Userspace],
    );
    c.add_ipv6_underlay();
    let reports = c.program_vxlan_dual(&[
        vxlan_pool(EncapMode::Always),
        vxlan6_pool(EncapMode::Always),
    ]);
    for (r, f) in reports.iter().zip(&c.felix) {
        let e = r.vxlan6_error.as_deref().unwrap_or_default();
        assert!(e.contains("userspace") && e.contains("IPv6"), "{r:?}");
        assert!(!r.is_ok());
        // IPv4 VXLAN works on the userspace backend regardless.
        assert!(r.vxlan_error.is_none(), "{r:?}");
        assert_eq!(ifindex_of(&f.node.ns, VXLAN6_DEV), None);
        let s = f.status();
        assert!(s.vxlan6.is_none() && s.vxlan6_error.is_some(), "{s:?}");
    }
}
