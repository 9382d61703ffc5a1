//! IP-in-IP through felix's dataplane on a routed lab underlay (two
//! subnets joined by a router namespace), with the backend this kernel
//! supports (`auto`: the userspace tunnel where there is no ipip link
//! type). Every claim about the wire is checked with a capture on the
//! node's underlay interface.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::felix_cluster::{Cluster, block_of, ping, pool, tunnel_ip_of};
use felix::tunnel::{BackendChoice, BackendKind};
use ippool_crd::EncapMode;
use lab::{Capture, Captured, Netns, tcp_transfer};

const MB4: u64 = 4 << 20;
const T: Duration = Duration::from_secs(30);

fn assert_ok(reports: Vec<felix::dataplane::DataplaneReport>) {
    for r in reports {
        assert!(r.is_ok(), "{r:?}");
    }
}

/// Pings and moves 4 MiB of verified TCP data from `from` to `to`.
fn talk(from: &Netns, to: &Netns, to_ip: Ipv4Addr) {
    let out = ping(from, to_ip, &[]);
    assert!(out.is_ok(), "ping {to_ip}: {out:?}");
    let r = tcp_transfer(from, to, to_ip, MB4, T).unwrap();
    assert_eq!(r.bytes, MB4);
    assert!(r.intact, "{r:?}");
}

/// The IP-in-IP bytes on the wire between two nodes (outer lengths). In
/// bytes, not packets: the kernel's tunnel hands the underlay super-packets
/// (GSO), the userspace one MTU-sized packets.
fn ipip_bytes_between(seen: &Captured, a: Ipv4Addr, b: Ipv4Addr) -> u64 {
    seen.ipip()
        .filter(|p| (p.src, p.dst) == (a, b) || (p.src, p.dst) == (b, a))
        .map(|p| u64::from(p.len))
        .sum()
}

#[test]
fn cross_subnet_talks_directly_inside_a_subnet_and_tunnels_across() {
    // node-0 and node-2 share subnet 0; node-1 is behind the router.
    let mut c = Cluster::new("xs", 2, &[0, 1, 0], BackendChoice::Auto);
    assert_ok(c.program(&[pool(EncapMode::CrossSubnet, false)]));
    let (p0, ip0) = c.felix[0].add_pod(&mut c.lab);
    let (p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    let (p2, ip2) = c.felix[2].add_pod(&mut c.lab);
    let n0 = c.felix[0].node.clone();
    let (a0, a1, a2) = (n0.ip(), c.felix[1].node.ip(), c.felix[2].node.ip());

    let routes = n0.ns.ip(&["route", "show", "proto", "80"]).unwrap();
    assert!(
        routes.contains(&format!("10.65.1.0/26 via {a1} dev tunl0 onlink")),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("10.65.2.0/26 via {a2} dev eth0")),
        "{routes}"
    );

    // Same subnet: the pods' own packets on the wire, nothing encapsulated.
    let cap = Capture::start(&n0.ns, &n0.iface).unwrap();
    talk(&p0, &p2, ip2);
    let seen = cap.stop().unwrap();
    assert_eq!(seen.kernel_drops, 0);
    assert_eq!(seen.ipip().count(), 0, "{:?}", seen.ipip().next());
    assert!(
        seen.packets
            .iter()
            .any(|p| p.protocol == 6 && p.src == ip0 && p.dst == ip2)
    );

    // Across subnets: only protocol 4 between the node addresses, carrying
    // the pods' packets both ways.
    let cap = Capture::start(&n0.ns, &n0.iface).unwrap();
    talk(&p0, &p1, ip1);
    let seen = cap.stop().unwrap();
    assert_eq!(seen.kernel_drops, 0);
    let tunnelled = ipip_bytes_between(&seen, a0, a1);
    assert!(
        tunnelled > MB4,
        "only {tunnelled} bytes of IP-in-IP for 4 MiB"
    );
    assert!(
        seen.ipip()
            .any(|p| p.outgoing && p.inner.is_some_and(|i| i.src == ip0 && i.dst == ip1))
    );
    assert!(
        seen.ipip()
            .any(|p| !p.outgoing && p.inner.is_some_and(|i| i.src == ip1 && i.dst == ip0))
    );
    assert!(
        !seen
            .packets
            .iter()
            .any(|p| p.protocol != 4 && (p.src == ip1 || p.dst == ip1)),
        "pod traffic to node-1's pod left unencapsulated"
    );

    let s = c.felix[0].status();
    let t = s.tunnel.unwrap();
    assert_eq!(t.device, "tunl0");
    assert!(t.stats.tx_bytes > MB4 && t.stats.rx_packets > 0, "{t:?}");
    assert_eq!(t.stats.rx_unknown_source, 0);
    assert_eq!(s.tunneled_blocks, 1);
}

#[test]
fn always_tunnels_never_routes_and_a_live_mode_switch_keeps_connectivity() {
    let mut c = Cluster::new("am", 1, &[0, 0], BackendChoice::Auto);
    assert_ok(c.program(&[pool(EncapMode::Never, false)]));
    let (p0, _) = c.felix[0].add_pod(&mut c.lab);
    let (p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    let n0 = c.felix[0].node.clone();
    let (a0, a1) = (n0.ip(), c.felix[1].node.ip());
    let route = |ns: &Netns| ns.ip(&["route", "show", "exact", "10.65.1.0/26"]).unwrap();

    let cap = Capture::start(&n0.ns, &n0.iface).unwrap();
    talk(&p0, &p1, ip1);
    assert_eq!(cap.stop().unwrap().ipip().count(), 0);
    assert!(route(&n0.ns).contains(&format!("via {a1} dev eth0")));

    // Never → Always while a transfer is in flight: one reconcile moves the
    // route, and the stream survives the switch intact.
    let sink = lab::TcpSink::start(&p1, T).unwrap();
    let p0c = p0.clone();
    let port = sink.port();
    let sender =
        std::thread::spawn(move || lab::send_pattern(&p0c, (ip1, port).into(), 16 << 20, T));
    std::thread::sleep(Duration::from_millis(50));
    let cap = Capture::start(&n0.ns, &n0.iface).unwrap();
    let reports = c.set_pools(&[pool(EncapMode::Always, false)]);
    assert_ok(reports);
    assert!(
        route(&n0.ns).contains(&format!("via {a1} dev tunl0 proto 80 onlink")),
        "{}",
        route(&n0.ns)
    );
    sender.join().unwrap().unwrap();
    let r = sink.wait().unwrap();
    assert!(r.intact && r.bytes == 16 << 20, "{r:?}");
    talk(&p0, &p1, ip1);
    let seen = cap.stop().unwrap();
    assert!(
        ipip_bytes_between(&seen, a0, a1) > MB4,
        "Always must tunnel inside the subnet too"
    );

    // And back to Never.
    assert_ok(c.set_pools(&[pool(EncapMode::Never, false)]));
    assert!(route(&n0.ns).contains(&format!("via {a1} dev eth0")));
    let cap = Capture::start(&n0.ns, &n0.iface).unwrap();
    talk(&p0, &p1, ip1);
    assert_eq!(cap.stop().unwrap().ipip().count(), 0);
}

#[test]
fn tunnel_device_gets_mtu_address_and_pods_get_the_pod_mtu() {
    let mut c = Cluster::new("mt", 2, &[0, 1], BackendChoice::Auto);
    assert_ok(c.program(&[pool(EncapMode::Always, false)]));
    let f = &c.felix[0];
    let s = f.status();
    let backend = s.tunnel.as_ref().unwrap().backend;
    assert_eq!(s.underlay.as_ref().unwrap().name, "eth0");
    assert_eq!(s.underlay.as_ref().unwrap().mtu, 1500);
    assert_eq!(s.pod_mtu, 1480);
    assert_eq!(std::fs::read_to_string(f.mtu_file()).unwrap(), "1480\n");
    let ns = f.node.ns.clone();
    let link = ns.ip(&["-d", "link", "show", "tunl0"]).unwrap();
    assert!(link.contains("mtu 1480") && link.contains("UP"), "{link}");
    if backend == BackendKind::Userspace {
        assert!(link.contains("tun"), "{link}");
    } else {
        assert!(link.contains("ipip"), "{link}");
    }
    let addrs = ns
        .ip(&["-4", "-o", "addr", "show", "dev", "tunl0"])
        .unwrap();
    assert_eq!(addrs.lines().count(), 1, "{addrs}");
    assert!(
        addrs.contains(&format!("{}/32", tunnel_ip_of(0))),
        "{addrs}"
    );

    let (p0, _) = c.felix[0].add_pod(&mut c.lab);
    let pod_link = p0.ip(&["link", "show", "eth0"]).unwrap();
    assert!(pod_link.contains("mtu 1480"), "{pod_link}");

    // A new tunnel address replaces the old one.
    let h = c.felix[0].handle.clone();
    h.set_tunnel_address(Some("10.65.0.60".parse().unwrap()))
        .unwrap();
    assert!(c.felix[0].flush().is_ok());
    let addrs = ns
        .ip(&["-4", "-o", "addr", "show", "dev", "tunl0"])
        .unwrap();
    assert_eq!(addrs.lines().count(), 1, "{addrs}");
    assert!(addrs.contains("10.65.0.60/32"), "{addrs}");

    // Jumbo underlay: felix notices on its next refresh.
    c.lab.set_underlay_mtu(9000).unwrap();
    h.resync().unwrap();
    assert!(c.felix[0].flush().is_ok());
    assert_eq!(c.felix[0].status().pod_mtu, 8980);
    assert_eq!(
        std::fs::read_to_string(c.felix[0].mtu_file()).unwrap(),
        "8980\n"
    );
    assert!(
        ns.ip(&["link", "show", "tunl0"])
            .unwrap()
            .contains("mtu 8980")
    );
    // Pods made now get the jumbo pod MTU, and a packet of that size
    // crosses the tunnel whole both ways (the userspace tunnel's buffers
    // follow the MTU up); back at 1,500, a full-size one still does (they
    // follow it down once the device's queue is empty).
    for (underlay, payload) in [(9000, "8952"), (1500, "1452"), (9000, "8952")] {
        c.lab.set_underlay_mtu(underlay).unwrap();
        for k in 0..2 {
            c.felix[k].handle.resync().unwrap();
            assert!(c.felix[k].flush().is_ok());
        }
        assert_eq!(c.felix[0].status().pod_mtu, underlay - 20);
        let (from, _) = c.felix[0].add_pod(&mut c.lab);
        let (_to, to_ip) = c.felix[1].add_pod(&mut c.lab);
        let out = ping(&from, to_ip, &["-M", "do", "-s", payload]);
        assert!(
            out.is_ok(),
            "DF ping of {payload} bytes over an underlay of MTU {underlay}: {out:?}"
        );
    }

    // No IPIP pool: pods get the whole underlay MTU. node-1 is in another
    // subnet: its block goes via the gateway of node-0's route to node-1
    // (the next hop resolved recursively), not through the tunnel.
    let reports = c.set_pools(&[pool(EncapMode::Never, false)]);
    assert!(
        reports[0].routes.failures.is_empty(),
        "{:?}",
        reports[0].routes.failures
    );
    let to_node1 = ns
        .ip(&["route", "get", &c.felix[1].node.ip().to_string()])
        .unwrap();
    let gw = to_node1
        .split_whitespace()
        .skip_while(|w| *w != "via")
        .nth(1)
        .unwrap_or_else(|| panic!("no gateway to node-1: {to_node1}"))
        .to_string();
    let block = ns.ip(&["route", "show", "10.65.1.0/26"]).unwrap();
    assert!(block.contains(&format!("via {gw} ")), "{block}");
    assert!(!block.contains("tunl0"), "{block}");
    assert_eq!(c.felix[0].status().pod_mtu, 9000);
    assert!(!c.felix[0].status().ipip_enabled);
    assert_eq!(
        std::fs::read_to_string(c.felix[0].mtu_file()).unwrap(),
        "9000\n"
    );
}

/// The nice value of every thread of this process whose name starts
/// with `prefix` (field 19 of `/proc/self/task/<tid>/stat`).
fn thread_nices(prefix: &str) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // The fields after the parenthesised name: state is field 3.
        if let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) {
            let nice = rest.split_whitespace().nth(16).unwrap().parse().unwrap();
            out.push((comm.to_string(), nice));
        }
    }
    out
}

#[test]
fn the_userspace_tunnel_threads_run_ahead_of_ordinary_tasks() {
    let c = Cluster::new("nc", 2, &[0, 1], BackendChoice::Userspace);
    assert_ok(c.program(&[pool(EncapMode::Always, false)]));
    // Other tests of this process may run tunnels too: every one of them
    // must have the raised priority (a thread just started may not have
    // raised it yet: looked at again for up to a second).
    let mut nices = Vec::new();
    for _ in 0..10 {
        nices = thread_nices("tunl0");
        if nices.iter().all(|(_, n)| *n == -10) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        nices.iter().any(|(n, _)| n.ends_with("-tx"))
            && nices.iter().any(|(n, _)| n.ends_with("-rx")),
        "{nices:?}"
    );
    for (name, nice) in &nices {
        assert_eq!(*nice, -10, "{name}: {nices:?}");
    }
}

#[test]
fn large_packets_cross_the_tunnel_and_nothing_is_fragmented_on_the_underlay() {
    let mut c = Cluster::new("lp", 2, &[0, 1], BackendChoice::Auto);
    assert_ok(c.program(&[pool(EncapMode::Always, false)]));
    let (p0, ip0) = c.felix[0].add_pod(&mut c.lab);
    let (_p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    let n0 = c.felix[0].node.clone();
    let cap = Capture::start(&n0.ns, &n0.iface).unwrap();

    // 1,400 bytes of payload with DF, and the largest that fits (1,480).
    for size in ["1400", "1452"] {
        let out = ping(&p0, ip1, &["-M", "do", "-s", size]);
        assert!(out.is_ok(), "DF ping of {size}: {out:?}");
    }
    // One byte more does not fit the pod MTU: the pod's own stack refuses.
    let out = ping(&p0, ip1, &["-M", "do", "-s", "1453"]).unwrap_err();
    assert!(
        out.contains("too long") || out.contains("mtu=1480"),
        "{out}"
    );

    // A pod with a wrong (too big) MTU sends a full 1,500-byte DF packet:
    // node-0 answers with fragmentation-needed naming the tunnel MTU
    // instead of fragmenting anything.
    p0.ip(&["link", "set", "eth0", "mtu", "1500"]).unwrap();
    let host_if = n0.ns.ip(&["-o", "route", "get", &ip0.to_string()]).unwrap();
    let cali = host_if
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .unwrap()
        .to_string();
    n0.ns.ip(&["link", "set", &cali, "mtu", "1500"]).unwrap();
    let out = ping(&p0, ip1, &["-M", "do", "-s", "1472"]).unwrap_err();
    assert!(
        out.contains("mtu = 1480") || out.contains("mtu=1480"),
        "{out}"
    );

    // Without DF the pod fragments the inner packet itself; each fragment
    // travels in its own, unfragmented outer packet.
    let out = ping(&p0, ip1, &["-M", "dont", "-s", "3000"]);
    assert!(out.is_ok(), "{out:?}");

    let seen = cap.stop().unwrap();
    assert_eq!(seen.kernel_drops, 0);
    assert!(seen.ipip().count() >= 6, "{seen:?}");
    for p in &seen.packets {
        assert!(!p.is_fragment(), "fragment on the underlay: {p:?}");
        assert!(p.len <= 1500, "{p:?}");
    }
    // The userspace tunnel sets DF on every outer packet. The kernel's
    // catch-all tunl0 (the device Calico uses too) is `nopmtudisc`: its
    // outer packets copy the inner DF bit, so the fragments of the
    // no-DF ping go out without it, and the DF pings with it.
    let backend = c.felix[0].status().tunnel.unwrap().backend;
    for p in seen.ipip().filter(|p| p.outgoing) {
        match backend {
            BackendKind::Userspace => assert!(p.dont_fragment, "outer packet without DF: {p:?}"),
            BackendKind::Kernel => {}
        }
    }
    if backend == BackendKind::Kernel {
        assert!(
            seen.ipip().any(|p| p.outgoing && p.dont_fragment),
            "{seen:?}"
        );
    }
}

#[test]
fn a_narrower_path_gets_fragmentation_needed_from_the_tunnel() {
    let mut c = Cluster::new("pm", 2, &[0, 1], BackendChoice::Auto);
    assert_ok(c.program(&[pool(EncapMode::Always, false)]));
    let (p0, _) = c.felix[0].add_pod(&mut c.lab);
    let (_p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    if c.felix[0].status().tunnel.unwrap().backend != BackendKind::Userspace {
        // The kernel's ipip device handles path MTU itself.
        return;
    }
    // Subnet 1 is narrower than node-0's own link: node-0 learns that from
    // the router's ICMP, and the tunnel passes it on to the pod.
    c.lab.set_subnet_mtu(1, 1400).unwrap();
    let n0 = c.felix[0].node.clone();
    let cap = Capture::start(&n0.ns, &n0.iface).unwrap();
    let mut last = String::new();
    let mut told = false;
    for _ in 0..10 {
        match ping(&p0, ip1, &["-M", "do", "-s", "1452"]) {
            Ok(o) | Err(o) => last = o,
        }
        if last.contains("mtu = 1380") || last.contains("mtu=1380") {
            told = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(told, "{last}");
    let out = ping(&p0, ip1, &["-M", "do", "-s", "1300"]);
    assert!(out.is_ok(), "{out:?}");
    let seen = cap.stop().unwrap();
    assert!(seen.packets.iter().all(|p| !p.is_fragment()), "{seen:?}");
    assert!(c.felix[0].status().tunnel.unwrap().stats.tx_too_big > 0);
}

/// An IPv4 + ICMP echo request from `src` to `dst`.
fn echo_request(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    fn csum(b: &[u8]) -> u16 {
        let mut s = 0u32;
        for c in b.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = 1;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = csum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20] = 8;
    p[24..28].copy_from_slice(&[0x12, 0x34, 0, 1]);
    let c = csum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

/// Sends `inner` IP-in-IP to `node` from inside `ns` (the kernel writes the
/// outer header with the namespace's own address as source).
fn send_ipip(ns: &Netns, node: Ipv4Addr, inner: Vec<u8>) {
    ns.run(move || {
        // SAFETY: plain socket(2); checked below.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_IPIP) };
        assert!(s >= 0);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(node).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sendto from a live buffer and sockaddr_in, sizes given.
        let n = unsafe {
            libc::sendto(
                s,
                inner.as_ptr().cast(),
                inner.len(),
                0,
                (&raw const sa).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        assert_eq!(n, inner.len() as isize);
        // SAFETY: closes the descriptor this closure opened.
        unsafe { libc::close(s) };
    })
    .unwrap();
}

#[test]
fn ip_in_ip_from_unknown_hosts_is_dropped_and_from_known_nodes_delivered() {
    let mut c = Cluster::new("us", 2, &[0, 1], BackendChoice::Auto);
    assert_ok(c.program(&[pool(EncapMode::Always, false)]));
    let (p0, ip0) = c.felix[0].add_pod(&mut c.lab);
    if c.felix[0].status().tunnel.unwrap().backend != BackendKind::Userspace {
        return;
    }
    let a0 = c.felix[0].node.ip();
    let spoofed = Ipv4Addr::new(10, 65, 1, 99);

    // From the router (not a node): dropped before decapsulation.
    let cap = Capture::start(&p0, "eth0").unwrap();
    send_ipip(c.lab.router(), a0, echo_request(spoofed, ip0));
    std::thread::sleep(Duration::from_millis(200));
    let seen = cap.stop().unwrap();
    assert!(!seen.packets.iter().any(|p| p.src == spoofed), "{seen:?}");
    let stats = c.felix[0].status().tunnel.unwrap().stats;
    assert_eq!(stats.rx_unknown_source, 1, "{stats:?}");

    // From node-1 (a known node): decapsulated and delivered to the pod.
    let cap = Capture::start(&p0, "eth0").unwrap();
    send_ipip(&c.felix[1].node.ns, a0, echo_request(spoofed, ip0));
    let mut delivered = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !delivered && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        delivered = c.felix[0].status().tunnel.unwrap().stats.rx_packets > stats.rx_packets;
    }
    std::thread::sleep(Duration::from_millis(100));
    let seen = cap.stop().unwrap();
    assert!(
        seen.packets
            .iter()
            .any(|p| p.src == spoofed && p.dst == ip0 && p.protocol == 1),
        "{seen:?}"
    );
}

#[test]
fn forcing_the_kernel_backend_fails_clearly_where_the_kernel_has_no_ipip() {
    let lab = {
        let mut l = lab::Topology::new("kb").unwrap();
        l.add_subnet().unwrap();
        l.add_node(0).unwrap();
        l
    };
    let node = lab.node(0).unwrap();
    match common::felix_cluster::FelixNode::start(node, BackendChoice::Kernel) {
        Ok(f) => {
            // A kernel with ipip: the real device.
            assert_eq!(f.status().tunnel.unwrap().backend, BackendKind::Kernel);
            let link = node.ns.ip(&["-d", "link", "show", "tunl0"]).unwrap();
            assert!(link.contains("ipip"), "{link}");
        }
        Err(e) => {
            assert!(e.contains("no ipip link type"), "{e}");
            assert!(e.contains("FELIX_IPIPBACKEND"), "{e}");
            // Auto falls back to the userspace tunnel on the same kernel.
            let f = common::felix_cluster::FelixNode::start(node, BackendChoice::Auto).unwrap();
            assert_eq!(f.status().tunnel.unwrap().backend, BackendKind::Userspace);
        }
    }
    // The blocks of this file use one pool; keep the helper honest.
    assert_eq!(block_of(3).to_string(), "10.65.3.0/26");
}

/// A TCP segment of `payload` bytes from `src` to `dst` (port 9, closed),
/// with a correct checksum, DF set.
fn tcp_segment(src: Ipv4Addr, dst: Ipv4Addr, payload: usize) -> Vec<u8> {
    let total = 40 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..28].copy_from_slice(&1u32.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x18; // PSH | ACK
    p[34..36].copy_from_slice(&1024u16.to_be_bytes());
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let sum = |b: &[u8], init: u32| {
        let mut s = init;
        for c in b.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    };
    let c = sum(&p[..20], 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let pseudo = {
        let mut s = 6u32 + (total as u32 - 20);
        for c in p[12..20].chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        s
    };
    let c = sum(&p[20..], pseudo);
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn a_merged_oversized_segment_from_a_node_reaches_the_pod_as_tso() {
    // What the underlay's GRO (a real NIC) hands the raw socket: one IP-in-IP
    // packet holding a TCP segment bigger than any MTU. Made here by
    // letting node-1's kernel fragment the outer packet, which node-0
    // reassembles before the tunnel sees it.
    let mut c = Cluster::new("mg", 2, &[0, 1], BackendChoice::Auto);
    assert_ok(c.program(&[pool(EncapMode::Always, false)]));
    let (p0, ip0) = c.felix[0].add_pod(&mut c.lab);
    if c.felix[0].status().tunnel.unwrap().backend != BackendKind::Userspace {
        return;
    }
    let from = Ipv4Addr::new(10, 65, 1, 50);
    let cap = Capture::start(&p0, "eth0").unwrap();
    send_ipip(
        &c.felix[1].node.ns,
        c.felix[0].node.ip(),
        tcp_segment(from, ip0, 4000),
    );
    // The pod's stack takes it (valid checksum, TSO) and answers the closed
    // port with a reset.
    let mut seen = None;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(40));
        let s = c.felix[0].status().tunnel.unwrap().stats;
        if s.rx_packets > 0 {
            seen = Some(s);
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let got = cap.stop().unwrap();
    assert!(seen.is_some(), "nothing decapsulated");
    let inbound: u32 = got
        .packets
        .iter()
        .filter(|p| !p.outgoing && p.src == from && p.protocol == 6)
        .map(|p| u32::from(p.len))
        .sum();
    assert!(inbound >= 4040, "{got:?}");
    assert!(
        got.packets
            .iter()
            .any(|p| p.outgoing && p.src == ip0 && p.dst == from && p.protocol == 6),
        "no reset from the pod: {got:?}"
    );
}

#[test]
fn remote_blocks_come_and_go_one_at_a_time() {
    let c = Cluster::new("rb", 2, &[0, 1], BackendChoice::Auto);
    assert_ok(c.program(&[pool(EncapMode::CrossSubnet, false)]));
    let f = &c.felix[0];
    let ns = f.node.ns.clone();
    let a1 = c.felix[1].node.ip();
    let block: ipnetwork::IpNetwork = "10.65.7.0/26".parse().unwrap();
    f.handle
        .update_remote_block(block, Some(std::net::IpAddr::V4(a1)))
        .unwrap();
    assert!(f.flush().is_ok());
    let r = ns.ip(&["route", "show", "exact", "10.65.7.0/26"]).unwrap();
    assert!(r.contains(&format!("via {a1} dev tunl0")), "{r}");
    assert_eq!(f.status().tunneled_blocks, 2);

    f.handle
        .update_remote_block(block, None::<std::net::IpAddr>)
        .unwrap();
    assert!(f.flush().is_ok());
    assert!(
        ns.ip(&["route", "show", "exact", "10.65.7.0/26"])
            .unwrap()
            .trim()
            .is_empty()
    );
    assert_eq!(f.status().tunneled_blocks, 1);
    // Routes of other protocols are not felix's to touch.
    assert!(
        ns.ip(&["route", "show", "default"])
            .unwrap()
            .contains("via")
    );
}

fn ifindex_of(ns: &Netns, dev: &str) -> Option<u32> {
    let out = ns.ip(&["-o", "link", "show", dev]).ok()?;
    out.split(':').next()?.trim().parse().ok()
}

/// `(sent, answered)` from ping's summary line.
fn ping_summary(out: &str) -> (u32, u32) {
    let nums: Vec<u32> = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    )
}

#[test]
fn a_felix_restart_keeps_the_userspace_tunnel_its_address_and_routes() {
    // The userspace device: the real-kernel tier has the kernel's tunl0,
    // which needs none of this.
    if std::env::var_os("CALICO_KERNEL_VM").is_some() {
        return;
    }
    let mut c = Cluster::new("irs", 1, &[0, 0], BackendChoice::Userspace);
    assert_ok(c.program(&[pool(EncapMode::Always, false)]));
    let (p0, ip0) = c.felix[0].add_pod(&mut c.lab);
    let (p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    talk(&p0, &p1, ip1);
    let n1 = c.felix[1].node.clone();
    let a0 = c.felix[0].node.ip();
    let before = ifindex_of(&n1.ns, "tunl0").unwrap();
    let tunnel_route = format!("10.65.0.0/26 via {a0} dev tunl0 proto 80 onlink");

    // A transfer and pings (10 a second for 6 s) run across the kill.
    let sink = lab::TcpSink::start(&p1, T).unwrap();
    let port = sink.port();
    let p0c = p0.clone();
    let sender =
        std::thread::spawn(move || lab::send_pattern(&p0c, (ip1, port).into(), 64 << 20, T));
    let p0c = p0.clone();
    let pinger = std::thread::spawn(move || {
        let out = p0c
            .command("ping")
            .args(["-i", "0.1", "-W", "1", "-c", "60", &ip1.to_string()])
            .output()
            .unwrap();
        ping_summary(&String::from_utf8_lossy(&out.stdout))
    });
    std::thread::sleep(Duration::from_millis(500));

    // felix on node-1 stops: the device stays, with its address and the
    // routes through it.
    drop(c.felix.remove(1));
    assert_eq!(ifindex_of(&n1.ns, "tunl0"), Some(before));
    let addrs = n1
        .ns
        .ip(&["-4", "-o", "addr", "show", "dev", "tunl0"])
        .unwrap();
    assert!(
        addrs.contains(&format!("{}/32", tunnel_ip_of(1))),
        "{addrs}"
    );
    let route = || {
        n1.ns
            .ip(&["route", "show", "exact", "10.65.0.0/26"])
            .unwrap()
    };
    assert!(route().contains(&tunnel_route), "{}", route());
    std::thread::sleep(Duration::from_secs(1));

    // A new felix adopts the same device; before its configuration
    // arrives it touches neither the address nor the routes.
    c.felix.insert(
        1,
        // `auto`, as calico-node runs it: the TUN device it finds is
        // adopted, not taken for a foreign device holding the name.
        common::felix_cluster::FelixNode::start_managed(&n1, BackendChoice::Auto).unwrap(),
    );
    assert!(c.felix[1].flush().is_ok());
    assert_eq!(ifindex_of(&n1.ns, "tunl0"), Some(before));
    let addrs = n1
        .ns
        .ip(&["-4", "-o", "addr", "show", "dev", "tunl0"])
        .unwrap();
    assert!(
        addrs.contains(&format!("{}/32", tunnel_ip_of(1))),
        "{addrs}"
    );
    assert!(route().contains(&tunnel_route), "{}", route());
    // And it forwards already: the routes through the device name the
    // peer nodes until the configuration does.
    let out = ping(&p0, ip1, &[]);
    assert!(out.is_ok(), "ping {ip1} before the configuration: {out:?}");
    assert_ok(c.program(&[pool(EncapMode::Always, false)]));
    c.felix[1].mark_in_sync();
    assert!(c.felix[1].flush().is_ok());
    assert_eq!(ifindex_of(&n1.ns, "tunl0"), Some(before));
    assert!(route().contains(&tunnel_route), "{}", route());

    // The transfer completed intact (TCP retransmitted over the gap), and
    // the pings sent after the restart were answered.
    sender.join().unwrap().unwrap();
    let r = sink.wait().unwrap();
    assert!(r.intact && r.bytes == 64 << 20, "{r:?}");
    let (sent, answered) = pinger.join().unwrap();
    assert_eq!(sent, 60);
    // About 1.5 s without a felix on node-1 is 15 pings; the rest of the
    // 6 s must have come through.
    assert!(answered >= 30, "{answered}/{sent} answered");
    talk(&p0, &p1, ip1);
    talk(&p1, &p0, ip0);
    let t = c.felix[1].status().tunnel.unwrap();
    assert_eq!(t.backend, BackendKind::Userspace);
    assert!(t.stats.rx_packets > 0 && t.stats.tx_packets > 0, "{t:?}");

    // No IPIP pool: the persistent device is deleted; one back makes a
    // new device that carries traffic again.
    assert_ok(c.set_pools(&[pool(EncapMode::Never, false)]));
    assert_eq!(ifindex_of(&n1.ns, "tunl0"), None);
    assert_ok(c.set_pools(&[pool(EncapMode::Always, false)]));
    assert!(ifindex_of(&n1.ns, "tunl0").is_some());
    talk(&p0, &p1, ip1);
}
