//! Pod interfaces made by felix, in lab namespaces: one "node" namespace
//! running felix, one namespace per "pod".
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{NODE_IP, has_route, link_exists, node, routes, run_in};
use felix::routes::{Reconciler, ReconcilerConfig};
use felix::workload::{
    AllowedCidrs, PodInterfaces, WorkloadConfig, WorkloadError, WorkloadSpec, host_iface_name,
};
use lab::Netns;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pool() -> Arc<AllowedCidrs> {
    Arc::new(AllowedCidrs(vec![
        "10.65.0.0/16".parse().unwrap(),
        "fd00:65::/48".parse().unwrap(),
    ]))
}

fn spec(namespace: &str, pod: &str, netns: PathBuf, ips: &[&str]) -> WorkloadSpec {
    WorkloadSpec {
        namespace: namespace.into(),
        pod: pod.into(),
        netns,
        ips: ips.iter().map(|s| ip(s)).collect(),
    }
}

fn start() -> (Reconciler, PodInterfaces) {
    let r = Reconciler::start(ReconcilerConfig {
        resync_interval: Duration::from_secs(3600),
        ..ReconcilerConfig::default()
    })
    .unwrap();
    let w = PodInterfaces::new(WorkloadConfig::default(), r.handle(), pool()).unwrap();
    (r, w)
}

fn ping(from: &Netns, to: &str) -> bool {
    let v = if to.contains(':') { "-6" } else { "-4" };
    from.exec("ping", &[v, "-c", "1", "-W", "2", to]).is_ok()
}

/// Lines of `ip link` in the node that name a pod interface.
fn cali_links(node: &Netns) -> Vec<String> {
    node.ip(&["-o", "link", "show"])
        .unwrap()
        .lines()
        .filter(|l| l.contains(": cali"))
        .map(String::from)
        .collect()
}

#[test]
fn two_pods_reach_each_other_and_the_node_and_removal_is_exact() {
    let n = node("wlping");
    let pod_a = Arc::new(Netns::create("wlpa").unwrap());
    let pod_b = Arc::new(Netns::create("wlpb").unwrap());
    // Something of the operator's that must outlive the pods.
    n.ip(&["route", "add", "10.200.0.0/24", "via", common::NEXT_HOP])
        .unwrap();
    let (node2, a, b) = (n.clone(), pod_a.clone(), pod_b.clone());
    run_in(&n, move || async move {
        let (rec, w) = start();
        let wa = w
            .add(&spec(
                "default",
                "pod-a",
                a.path(),
                &["10.65.0.2", "fd00:65::2"],
            ))
            .await
            .unwrap();
        let wb = w
            .add(&spec(
                "default",
                "pod-b",
                b.path(),
                &["10.65.0.3", "fd00:65::3"],
            ))
            .await
            .unwrap();
        assert_eq!(wa.host_iface, host_iface_name("cali", "default", "pod-a"));
        assert_eq!(wa.container_iface, "eth0");

        // Host side, as Calico makes it.
        let link = node2.ip(&["link", "show", "dev", &wa.host_iface]).unwrap();
        assert!(link.contains("ee:ee:ee:ee:ee:ee"), "{link}");
        let r = routes(&node2, &["exact", "10.65.0.2/32"]);
        assert!(
            r.contains(&format!("dev {} proto 80 scope link", wa.host_iface)),
            "{r}"
        );
        let r6 = node2
            .ip(&["-6", "route", "show", "exact", "fd00:65::2/128"])
            .unwrap();
        assert!(
            r6.contains(&format!("dev {} proto 80", wa.host_iface)),
            "{r6}"
        );
        let proxy_arp = node2
            .exec(
                "cat",
                &[&format!(
                    "/proc/sys/net/ipv4/conf/{}/proxy_arp",
                    wa.host_iface
                )],
            )
            .unwrap();
        assert_eq!(proxy_arp.trim(), "1");

        // Pod side.
        let addrs = a.ip(&["addr", "show", "dev", "eth0"]).unwrap();
        assert!(addrs.contains("10.65.0.2/32"), "{addrs}");
        assert!(addrs.contains("fd00:65::2/128"), "{addrs}");
        let pod_routes = a.ip(&["route", "show"]).unwrap();
        assert!(
            pod_routes.contains("default via 169.254.1.1 dev eth0"),
            "{pod_routes}"
        );
        assert!(
            pod_routes.contains("169.254.1.1 dev eth0 scope link"),
            "{pod_routes}"
        );
        let pod_routes6 = a.ip(&["-6", "route", "show"]).unwrap();
        assert!(
            pod_routes6.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"),
            "{pod_routes6}"
        );

        // What felix wrote reads back as what it wants: a resync is a no-op.
        let again = rec.handle().resync().await.unwrap();
        assert_eq!(again.ops, 0, "{again:?}");

        // Traffic.
        assert!(ping(&a, "10.65.0.3"), "pod a -> pod b");
        assert!(ping(&b, "10.65.0.2"), "pod b -> pod a");
        assert!(ping(&a, NODE_IP), "pod a -> node");
        assert!(ping(&a, "fd00:65::3"), "pod a -> pod b over IPv6");

        // Removing a removes its veth and routes, and nothing else.
        let node_routes_before = routes(&node2, &[]);
        assert!(w.remove("default", "pod-a").await.unwrap());
        // The routes are withdrawn when remove returns; the veth is
        // unregistered in the background.
        assert!(!has_route(&node2, "10.65.0.2/32"));
        assert!(!has_route(&node2, "fd00:65::2/128"));
        w.settle().await;
        assert!(!link_exists(&node2, &wa.host_iface));
        assert!(link_exists(&node2, &wb.host_iface));
        assert!(has_route(&node2, "10.65.0.3/32"));
        assert!(has_route(&node2, "fd00:65::3/128"));
        let node_routes_after = routes(&node2, &[]);
        for line in node_routes_before
            .lines()
            .filter(|l| !l.starts_with("10.65.0.2 "))
        {
            assert!(node_routes_after.contains(line), "lost {line:?}");
        }
        assert!(!link_exists(&a, "eth0"), "pod side went with the pair");
        assert!(ping(&b, NODE_IP), "pod b still reaches the node");
        // Removing again is not an error, and reports nothing removed.
        assert!(!w.remove("default", "pod-a").await.unwrap());
        assert_eq!(w.list().len(), 1);
    });
}

#[test]
fn pod_namespace_given_as_proc_pid_path_works() {
    let n = node("wlproc");
    let pod = Netns::create("wlpp").unwrap();
    let sleeper = pod.spawn("sleep", &["30"], None).unwrap();
    let path = PathBuf::from(format!("/proc/{}/ns/net", sleeper.pid()));
    // `ip netns exec` enters the namespace after it starts: wait until the
    // process is inside, or the path would name this test's own namespace.
    let want = std::fs::metadata(pod.path()).unwrap().ino();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::metadata(&path).map(|m| m.ino()).ok() != Some(want) {
        assert!(
            std::time::Instant::now() < deadline,
            "sleeper never entered the pod namespace"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pod = Arc::new(pod);
    let p = pod.clone();
    run_in(&n, move || async move {
        let (_r, w) = start();
        let wl = w
            .add(&spec("default", "proc", path, &["10.65.1.2"]))
            .await
            .unwrap();
        assert!(
            p.ip(&["addr", "show", "dev", "eth0"])
                .unwrap()
                .contains("10.65.1.2/32")
        );
        assert_ne!(wl.container_mac, [0; 6]);
        assert!(ping(&p, NODE_IP));
    });
    drop(sleeper);
}

#[test]
fn missing_pod_namespace_is_a_clear_error_and_leaves_nothing() {
    let n = node("wlnons");
    let node2 = n.clone();
    run_in(&n, move || async move {
        let (_r, w) = start();
        let err = w
            .add(&spec(
                "default",
                "ghost",
                PathBuf::from("/run/netns/felix-test-does-not-exist"),
                &["10.65.2.2"],
            ))
            .await
            .unwrap_err();
        assert!(matches!(err, WorkloadError::NetnsNotFound { .. }), "{err}");
        assert!(
            err.to_string().contains("felix-test-does-not-exist"),
            "{err}"
        );
        assert!(cali_links(&node2).is_empty());
        assert!(!has_route(&node2, "10.65.2.2/32"));
        // The name is free again.
        assert!(w.get("default", "ghost").is_none());
    });
}

#[test]
fn file_that_is_not_a_namespace_is_an_error_and_leaves_nothing() {
    let n = node("wlnotns");
    let node2 = n.clone();
    run_in(&n, move || async move {
        let (_r, w) = start();
        let err = w
            .add(&spec(
                "default",
                "odd",
                PathBuf::from("/proc/self/status"),
                &["10.65.2.3"],
            ))
            .await
            .unwrap_err();
        assert!(matches!(err, WorkloadError::NetnsEnter { .. }), "{err}");
        assert!(cali_links(&node2).is_empty(), "{:?}", cali_links(&node2));
    });
}

#[test]
fn felix_own_namespace_is_refused_as_a_pod_namespace() {
    let n = node("wlself");
    let node2 = n.clone();
    run_in(&n, move || async move {
        let (_r, w) = start();
        let err = w
            .add(&spec("default", "self", node2.path(), &["10.65.2.4"]))
            .await
            .unwrap_err();
        assert!(matches!(err, WorkloadError::NetnsIsHost { .. }), "{err}");
        assert!(cali_links(&node2).is_empty());
        assert!(!link_exists(&node2, "eth0"));
    });
}

#[test]
fn address_outside_every_pool_is_refused_before_anything_is_made() {
    let n = node("wlpool");
    let pod = Arc::new(Netns::create("wlpo").unwrap());
    let (node2, p) = (n.clone(), pod.clone());
    run_in(&n, move || async move {
        let (_r, w) = start();
        let err = w
            .add(&spec("default", "outside", p.path(), &["10.99.0.2"]))
            .await
            .unwrap_err();
        assert!(matches!(err, WorkloadError::IpNotAllowed { .. }), "{err}");
        assert!(err.to_string().contains("10.65.0.0/16"), "{err}");
        assert!(cali_links(&node2).is_empty());
        assert!(!link_exists(&p, "eth0"));
        let err = w
            .add(&spec("default", "none", p.path(), &[]))
            .await
            .unwrap_err();
        assert!(matches!(err, WorkloadError::NoIps { .. }), "{err}");
    });
}

#[test]
fn duplicate_pod_and_reused_ip_are_refused_and_the_first_pod_keeps_working() {
    let n = node("wldup");
    let pod = Arc::new(Netns::create("wldp").unwrap());
    let other = Arc::new(Netns::create("wldo").unwrap());
    let (node2, p, o) = (n.clone(), pod.clone(), other.clone());
    run_in(&n, move || async move {
        let (_r, w) = start();
        let first = w
            .add(&spec("default", "web", p.path(), &["10.65.3.2"]))
            .await
            .unwrap();
        let err = w
            .add(&spec("default", "web", o.path(), &["10.65.3.9"]))
            .await
            .unwrap_err();
        assert!(matches!(err, WorkloadError::Duplicate { .. }), "{err}");
        let err = w
            .add(&spec("default", "web2", o.path(), &["10.65.3.2"]))
            .await
            .unwrap_err();
        assert!(matches!(err, WorkloadError::IpInUse { .. }), "{err}");
        assert!(err.to_string().contains("default/web"), "{err}");
        // Nothing half-made in the other pod, the first pod untouched.
        assert!(!link_exists(&o, "eth0"));
        assert_eq!(cali_links(&node2).len(), 1);
        assert!(link_exists(&node2, &first.host_iface));
        assert!(has_route(&node2, "10.65.3.2/32"));
        assert!(ping(&p, NODE_IP));
    });
}

#[test]
fn pod_namespace_that_already_has_eth0_is_an_error_and_leaves_nothing() {
    let n = node("wleth0");
    let pod = Netns::create("wlpe").unwrap();
    pod.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "x0"])
        .unwrap();
    let pod = Arc::new(pod);
    let (node2, p) = (n.clone(), pod.clone());
    run_in(&n, move || async move {
        let (_r, w) = start();
        let err = w
            .add(&spec("default", "taken", p.path(), &["10.65.4.2"]))
            .await
            .unwrap_err();
        assert!(matches!(err, WorkloadError::Netlink { .. }), "{err}");
        assert!(cali_links(&node2).is_empty());
        assert!(!has_route(&node2, "10.65.4.2/32"));
        // And once the pod's namespace is fixed, the same pod adds fine.
        p.ip(&["link", "del", "eth0"]).unwrap();
        w.add(&spec("default", "taken", p.path(), &["10.65.4.2"]))
            .await
            .unwrap();
        assert!(has_route(&node2, "10.65.4.2/32"));
    });
}

/// Whether pod `to` (listening on UDP 5000 for 2 s) receives a datagram
/// that pod `from` sends it from `source` (an address of `from`'s).
fn udp_arrives(from: &Netns, source: &str, to: &Netns, to_ip: &str) -> bool {
    let (family, any) = if to_ip.contains(':') {
        ("AF_INET6", "::")
    } else {
        ("AF_INET", "0.0.0.0")
    };
    let listen = format!(
        "import socket\n\
         s = socket.socket(socket.{family}, socket.SOCK_DGRAM)\n\
         s.bind(('{any}', 5000)); s.settimeout(2)\n\
         try:\n    print(s.recvfrom(100)[1][0])\n\
         except socket.timeout:\n    print('none')"
    );
    let listener = to
        .command("python3")
        .args(["-c", &listen])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let send = format!(
        "import socket\n\
         s = socket.socket(socket.{family}, socket.SOCK_DGRAM)\n\
         s.bind(('{source}', 0))\n\
         for _ in range(3): s.sendto(b'x', ('{to_ip}', 5000))"
    );
    from.exec("python3", &["-c", &send]).unwrap();
    let out = listener.wait_with_output().unwrap();
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    got == source
}

#[test]
fn a_pod_cannot_send_from_another_pods_address_nor_reach_the_nodes_loopback_services() {
    let n = node("wlspoof");
    let pods: Vec<Arc<Netns>> = ["wlsa", "wlsb", "wlsc"]
        .iter()
        .map(|t| Arc::new(Netns::create(t).unwrap()))
        .collect();
    let (node2, ps) = (n.clone(), pods.clone());
    run_in(&n, move || async move {
        let (_rec, w) = start();
        let mut ifaces = Vec::new();
        for (i, p) in ps.iter().enumerate() {
            let ip = format!("10.65.0.{}", i + 2);
            let wl = w
                .add(&spec("default", &format!("pod-{i}"), p.path(), &[&ip]))
                .await
                .unwrap();
            ifaces.push(wl.host_iface);
        }
        for iface in &ifaces {
            let read = |key: &str| {
                node2
                    .exec("cat", &[&format!("/proc/sys/net/ipv4/conf/{iface}/{key}")])
                    .unwrap()
                    .trim()
                    .to_string()
            };
            // Strict reverse-path filtering; the host's 127.0.0.0/8 is
            // not routable from a pod (CVE-2020-8558's class).
            assert_eq!(read("rp_filter"), "1", "{iface}");
            assert_eq!(read("route_localnet"), "0", "{iface}");
        }
        let (a, b, c) = (&ps[0], &ps[1], &ps[2]);
        // Its own address gets through.
        assert!(
            udp_arrives(a, "10.65.0.2", c, "10.65.0.4"),
            "a's own packet"
        );
        // pod a takes pod b's address (and one outside every pool) and
        // sends from it: the node drops both at a's interface.
        a.ip(&["addr", "add", "10.65.0.3/32", "dev", "eth0"])
            .unwrap();
        a.ip(&["addr", "add", "192.0.2.7/32", "dev", "eth0"])
            .unwrap();
        assert!(
            !udp_arrives(a, "10.65.0.3", c, "10.65.0.4"),
            "spoofed as pod b"
        );
        assert!(
            !udp_arrives(a, "192.0.2.7", c, "10.65.0.4"),
            "spoofed outside"
        );
        // b itself is unaffected.
        assert!(
            udp_arrives(b, "10.65.0.3", c, "10.65.0.4"),
            "b's own packet"
        );
    });
}

/// Whether a TCP connection from `source` (an address of `from`'s) to
/// `to_ip` port 5001 in `to` is accepted and carries a line back.
fn tcp_works(from: &Netns, source: &str, to: &Netns, to_ip: &str) -> bool {
    let family = if to_ip.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let serve = format!(
        "import socket\n\
         s = socket.socket(socket.{family}, socket.SOCK_STREAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{to_ip}', 5001)); s.listen(1); s.settimeout(3)\n\
         try:\n    c, a = s.accept(); c.sendall(b'hello\\n'); print(a[0])\n\
         except socket.timeout:\n    print('none')"
    );
    let server = to
        .command("python3")
        .args(["-c", &serve])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let connect = format!(
        "import socket\n\
         s = socket.socket(socket.{family}, socket.SOCK_STREAM)\n\
         s.bind(('{source}', 0)); s.settimeout(2)\n\
         s.connect(('{to_ip}', 5001)); print(s.recv(10).decode().strip())"
    );
    let reply = from.exec("python3", &["-c", &connect]);
    let out = server.wait_with_output().unwrap();
    let peer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    matches!(reply, Ok(r) if r.trim() == "hello") && peer == source
}

/// IPv6 has no rp_filter sysctl: felix's raw-table source check
/// (`calico-rs-antispoof`) is what stops a dual-stack pod sending with a
/// neighbour's IPv6 address. It stops IPv4 spoofing too, even with the
/// kernel's reverse-path filter turned off.
#[test]
fn a_dual_stack_pod_cannot_send_from_another_pods_ipv6_or_ipv4_address() {
    let n = node("wlspoof6");
    let pods: Vec<Arc<Netns>> = ["wl6a", "wl6b", "wl6c"]
        .iter()
        .map(|t| Arc::new(Netns::create(t).unwrap()))
        .collect();
    let (node2, ps) = (n.clone(), pods.clone());
    run_in(&n, move || async move {
        let (_rec, w) = start();
        let mut ifaces = Vec::new();
        for (i, p) in ps.iter().enumerate() {
            let v4 = format!("10.65.0.{}", i + 2);
            let v6 = format!("fd00:65::{}", i + 2);
            let wl = w
                .add(&spec("default", &format!("pod-{i}"), p.path(), &[&v4, &v6]))
                .await
                .unwrap();
            ifaces.push(wl.host_iface);
        }
        let table = node2
            .exec("nft", &["list", "table", "inet", "calico-rs-antispoof"])
            .unwrap();
        assert!(table.contains("iifname \"cali*\" jump from-pod"), "{table}");
        let (a, b, c) = (&ps[0], &ps[1], &ps[2]);
        // Its own addresses work: ping6 (so neighbour discovery with the
        // node works too), UDP and TCP over both families.
        assert!(ping(a, "fd00:65::4"), "a ping6 c");
        assert!(udp_arrives(a, "fd00:65::2", c, "fd00:65::4"), "a's own v6");
        assert!(
            tcp_works(a, "fd00:65::2", c, "fd00:65::4"),
            "a's own v6 TCP"
        );
        assert!(tcp_works(a, "10.65.0.2", c, "10.65.0.4"), "a's own v4 TCP");
        // pod a takes pod b's IPv6 address, one outside every pool and the
        // node's, and sends from each: dropped at a's interface.
        for spoof in ["fd00:65::3", "2001:db8::7", common::NODE_IP6] {
            a.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{spoof}/128"),
                "dev",
                "eth0",
                "nodad",
            ])
            .unwrap();
            assert!(
                !udp_arrives(a, spoof, c, "fd00:65::4"),
                "a spoofing {spoof} over UDP"
            );
            assert!(
                !tcp_works(a, spoof, c, "fd00:65::4"),
                "a spoofing {spoof} over TCP"
            );
        }
        // b itself is unaffected.
        assert!(udp_arrives(b, "fd00:65::3", c, "fd00:65::4"), "b's own v6");
        // The drops were the table's.
        let counted = node2
            .exec(
                "nft",
                &["list", "chain", "inet", "calico-rs-antispoof", "from-pod"],
            )
            .unwrap();
        assert!(!counted.contains("counter packets 0 "), "{counted}");

        // Someone removes the table: felix's periodic check writes it
        // again, and a spoofed packet is dropped again.
        assert!(!w.recheck_antispoof().await.unwrap(), "unchanged table");
        node2
            .exec("nft", &["delete", "table", "inet", "calico-rs-antispoof"])
            .unwrap();
        assert!(
            udp_arrives(a, "fd00:65::3", c, "fd00:65::4"),
            "without the table the spoof passes (what the table is for)"
        );
        assert!(w.recheck_antispoof().await.unwrap(), "rewritten");
        assert!(
            !udp_arrives(a, "fd00:65::3", c, "fd00:65::4"),
            "dropped again"
        );
        assert!(!w.recheck_antispoof().await.unwrap(), "in sync after");

        // IPv4 with the kernel's reverse-path filter off on a's interface:
        // the table still drops a's packets from b's address.
        node2
            .exec(
                "sh",
                &[
                    "-c",
                    &format!(
                        "echo 0 > /proc/sys/net/ipv4/conf/{}/rp_filter; \
                         echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter",
                        ifaces[0]
                    ),
                ],
            )
            .unwrap();
        a.ip(&["addr", "add", "10.65.0.3/32", "dev", "eth0"])
            .unwrap();
        assert!(
            !udp_arrives(a, "10.65.0.3", c, "10.65.0.4"),
            "a spoofing b over IPv4 without rp_filter"
        );
        assert!(udp_arrives(a, "10.65.0.2", c, "10.65.0.4"), "a's own v4");
    });
}

#[test]
fn an_add_cancelled_half_way_leaves_the_pod_free_for_the_next_add_and_del() {
    let n = node("wlcancel");
    let pod = Arc::new(Netns::create("wlcp").unwrap());
    let p = pod.clone();
    run_in(&n, move || async move {
        let (_rec, w) = start();
        let s = spec("default", "pod-c", p.path(), &["10.65.0.9"]);
        // The CNI call goes away while felix is still making the pod
        // (tonic drops the handler's future): cancel the add after its
        // first steps, several times, at different points.
        let mut cancelled = 0;
        for delay_us in [0u64, 200, 1000, 3000] {
            match tokio::time::timeout(Duration::from_micros(delay_us), w.add(&s)).await {
                Err(_) => cancelled += 1,
                // It finished in time: take it down for the next round.
                Ok(r) => {
                    r.unwrap();
                    assert!(w.remove("default", "pod-c").await.unwrap());
                }
            }
            // Nothing is left claiming the pod: DEL works...
            w.remove("default", "pod-c").await.unwrap();
        }
        assert!(cancelled > 0, "no add was cancelled half-way");
        // ...and so does a new ADD, and the pod has its network.
        w.add(&s).await.unwrap();
        assert!(ping(&p, NODE_IP), "pod -> node after cancelled adds");
    });
}
