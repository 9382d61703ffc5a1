//! The kernel devices' IP-in-IP and VXLAN filters ([`felix::tunnel::filter`])
//! in the kernel: a node namespace and a peer namespace on one link; the
//! peer sends IP-in-IP (a raw `IPPROTO_IPIP` socket) or UDP to port 4789
//! from a known node's address and from a stranger's; the filter's
//! counters say which were admitted and which dropped. (The `ipip` device itself needs a kernel
//! with the ipip module; the filter does not.)
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use felix::tunnel::filter::Encap;
use lab::Netns;

/// Sends `n` IP-in-IP packets from `src` to `dst` (an inner IPv4 header
/// and a few bytes; what is inside does not matter to the filter).
fn send_ipip(src: Ipv4Addr, dst: Ipv4Addr, n: usize) {
    // SAFETY: plain socket calls on a descriptor this function owns and
    // closes; the addresses are initialised sockaddr_in values whose size
    // is passed with them; the buffer outlives the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_IPIP);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let addr = |ip: Ipv4Addr| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let from = addr(src);
        assert_eq!(
            libc::bind(fd, (&raw const from).cast(), len),
            0,
            "bind {src}: {}",
            std::io::Error::last_os_error()
        );
        let to = addr(dst);
        let mut inner = [0u8; 28];
        inner[0] = 0x45;
        inner[3] = 28;
        inner[8] = 64;
        inner[9] = 17;
        for _ in 0..n {
            let sent = libc::sendto(
                fd,
                inner.as_ptr().cast(),
                inner.len(),
                0,
                (&raw const to).cast(),
                len,
            );
            assert_eq!(
                sent,
                inner.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
        }
        libc::close(fd);
    }
}

/// Sends `n` UDP datagrams from `src` to `dst`:4789.
fn send_vxlan(src: Ipv4Addr, dst: Ipv4Addr, n: usize) {
    let sock = std::net::UdpSocket::bind((src, 0)).unwrap();
    for _ in 0..n {
        sock.send_to(&[0x08, 0, 0, 0, 0, 0x10, 0, 0], (dst, 4789))
            .unwrap();
    }
}

/// Writes the IP-in-IP filter in `ns` as felix does (its nft runner).
fn write_filter(ns: &Netns, nodes: BTreeSet<Ipv4Addr>) {
    write_filter_for(ns, Encap::Ipip, nodes);
}

fn write_filter_for(ns: &Netns, encap: Encap, nodes: BTreeSet<Ipv4Addr>) {
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let nft = felix::nft::Nft::new("nft", true);
            felix::tunnel::filter::apply_for(&nft, encap, &nodes).await
        })
    })
    .unwrap()
    .unwrap();
}

fn counters_for(ns: &Netns, encap: Encap) -> (u64, u64) {
    two_counters(ns, encap.table())
}

/// The packet counts of the two counters in table `ip <table>` of `ns`.
fn two_counters(ns: &Netns, table: &str) -> (u64, u64) {
    let out = ns
        .exec("nft", &["-j", "list", "table", "ip", table])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut counts = Vec::new();
    for item in v["nftables"].as_array().unwrap() {
        if let Some(exprs) = item["rule"]["expr"].as_array() {
            for e in exprs {
                if let Some(p) = e["counter"]["packets"].as_u64() {
                    counts.push(p);
                }
            }
        }
    }
    assert_eq!(counts.len(), 2, "{out}");
    (counts[0], counts[1])
}

/// Waits (≤ 2 s: delivery on a veth is synchronous with the send, counting
/// may lag a moment) until `encap`'s counters in `ns` read `want`, then
/// asserts they do.
fn assert_counters(ns: &Netns, encap: Encap, want: (u64, u64)) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while counters_for(ns, encap) != want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(counters_for(ns, encap), want, "(admitted, dropped)");
}

/// A table in `ns` counting IP-in-IP packets connection tracking left
/// alone (`ct state untracked`), in (input) and out (output), after
/// felix's raw-priority chains and the input filter have run.
fn probe_untracked(ns: &Netns) {
    for cmd in [
        "add table ip probe",
        "add chain ip probe in { type filter hook input priority 0; }",
        "add rule ip probe in meta l4proto 4 ct state untracked counter",
        "add chain ip probe out { type filter hook output priority 0; }",
        "add rule ip probe out meta l4proto 4 ct state untracked counter",
    ] {
        ns.exec("nft", &[cmd]).unwrap();
    }
}

/// The probe's counters: (untracked in, untracked out).
fn untracked(ns: &Netns) -> (u64, u64) {
    two_counters(ns, "probe")
}

#[test]
fn ip_in_ip_is_admitted_from_known_nodes_only() {
    let node = Netns::create("ipipf").unwrap();
    let peer = Netns::create("ipipp").unwrap();
    lab::veth(&node, "eth0", &peer, "eth0").unwrap();
    node.ip(&["addr", "add", "10.9.0.1/24", "dev", "eth0"])
        .unwrap();
    node.ip(&["link", "set", "eth0", "up"]).unwrap();
    for a in ["10.9.0.2/24", "10.9.0.3/24"] {
        peer.ip(&["addr", "add", a, "dev", "eth0"]).unwrap();
    }
    peer.ip(&["link", "set", "eth0", "up"]).unwrap();
    let (known, stranger, me): (Ipv4Addr, Ipv4Addr, Ipv4Addr) = (
        "10.9.0.2".parse().unwrap(),
        "10.9.0.3".parse().unwrap(),
        "10.9.0.1".parse().unwrap(),
    );

    let nodes = BTreeSet::from([known, "10.9.7.7".parse().unwrap()]);
    write_filter(&node, nodes);
    probe_untracked(&node);
    peer.run(move || {
        send_ipip(known, me, 3);
        send_ipip(stranger, me, 5);
    })
    .unwrap();
    assert_counters(&node, Encap::Ipip, (3, 5));
    // The known node's outer packets went in untracked (the stranger's
    // were dropped before the probe); so do this node's to a known node,
    // and not those to any other host.
    node.run(move || {
        send_ipip(me, known, 2);
        send_ipip(me, stranger, 4);
    })
    .unwrap();
    assert_eq!(untracked(&node), (3, 2), "(untracked in, untracked out)");

    // The stranger becomes a node (and the other one goes): written again
    // whole, counters fresh.
    let nodes = BTreeSet::from([stranger]);
    write_filter(&node, nodes);
    peer.run(move || {
        send_ipip(stranger, me, 2);
        send_ipip(known, me, 4);
    })
    .unwrap();
    assert_counters(&node, Encap::Ipip, (2, 4));
}

#[test]
fn vxlan_is_admitted_from_known_nodes_only_and_the_table_goes_with_vxlan() {
    let node = Netns::create("vxf").unwrap();
    let peer = Netns::create("vxp").unwrap();
    lab::veth(&node, "eth0", &peer, "eth0").unwrap();
    node.ip(&["addr", "add", "10.9.1.1/24", "dev", "eth0"])
        .unwrap();
    node.ip(&["link", "set", "eth0", "up"]).unwrap();
    for a in ["10.9.1.2/24", "10.9.1.3/24"] {
        peer.ip(&["addr", "add", a, "dev", "eth0"]).unwrap();
    }
    peer.ip(&["link", "set", "eth0", "up"]).unwrap();
    let (known, stranger, me): (Ipv4Addr, Ipv4Addr, Ipv4Addr) = (
        "10.9.1.2".parse().unwrap(),
        "10.9.1.3".parse().unwrap(),
        "10.9.1.1".parse().unwrap(),
    );
    write_filter_for(&node, Encap::Vxlan, BTreeSet::from([known]));
    peer.run(move || {
        send_vxlan(known, me, 3);
        send_vxlan(stranger, me, 5);
        // Other UDP is none of the filter's business.
        let s = std::net::UdpSocket::bind((stranger, 0)).unwrap();
        s.send_to(b"x", (me, 4790)).unwrap();
    })
    .unwrap();
    assert_counters(&node, Encap::Vxlan, (3, 5));

    // No VXLAN any more: the table goes, and removing it twice is fine.
    node.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let nft = felix::nft::Nft::new("nft", true);
            felix::tunnel::filter::remove(&nft, Encap::Vxlan).await?;
            felix::tunnel::filter::remove(&nft, Encap::Vxlan).await
        })
    })
    .unwrap()
    .unwrap();
    let tables = node.exec("nft", &["list", "tables"]).unwrap();
    assert!(!tables.contains("calico-rs-vxlan"), "{tables}");
}
