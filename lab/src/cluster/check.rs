//! Looking at a running lab: each node's BGP peers and programmed routes,
//! convergence (every node routes every other node's blocks), and the
//! pod-to-pod ping matrix with the encapsulation seen on the wire.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;

use super::ClusterError;
use super::procs;
use super::state::{LabState, NodeState, PodState};
use crate::capture::Capture;
use crate::netns::Netns;

/// One node's `calico-node status` table, verbatim.
pub fn peer_table(state: &LabState, node: &NodeState) -> String {
    Command::new("ip")
        .args(["netns", "exec", &node.ns])
        .arg(state.bin_dir.join("calico-node"))
        .arg("status")
        .env("CALICO_RUN_DIR", &node.run_dir)
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            if o.status.success() {
                text
            } else {
                format!(
                    "calico-node status failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )
            }
        })
        .unwrap_or_else(|e| format!("calico-node status could not run: {e}"))
}

/// The peer addresses shown `up` in a `calico-node status` table.
pub fn peers_up(table: &str) -> Vec<Ipv4Addr> {
    table
        .lines()
        .filter(|l| l.contains("| up "))
        .filter_map(|l| l.trim_start_matches('|').split('|').next())
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// The IPv6 peer addresses shown `up` in a `calico-node status` table.
pub fn peers_up6(table: &str) -> Vec<Ipv6Addr> {
    table
        .lines()
        .filter(|l| l.contains("| up "))
        .filter_map(|l| l.trim_start_matches('|').split('|').next())
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// Dual stack: what felix programmed on a node for IPv6 (routes with
/// protocol 80): its own blocks (blackholes) and the other blocks it
/// routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes6 {
    pub text: String,
    pub local_blocks: Vec<ipnetwork::Ipv6Network>,
    pub remote_blocks: Vec<ipnetwork::Ipv6Network>,
}

pub fn routes6(node: &NodeState) -> Routes6 {
    let text = Netns::existing(&node.ns)
        .and_then(|ns| ns.ip(&["-6", "route", "show", "proto", "80"]))
        .unwrap_or_default();
    parse_routes6(&text)
}

pub fn parse_routes6(text: &str) -> Routes6 {
    let mut r = Routes6 {
        text: text.to_string(),
        ..Routes6::default()
    };
    for (blackhole, net, _) in block_routes::<ipnetwork::Ipv6Network>(text, 128) {
        if blackhole {
            r.local_blocks.push(net);
        } else {
            r.remote_blocks.push(net);
        }
    }
    r
}

/// The block routes of `ip route show` output, each with whether it is a
/// blackhole and the words of its line; pods' host routes (and lines
/// that are no route of `N`'s family) are left out.
fn block_routes<N>(text: &str, host_len: u8) -> impl Iterator<Item = (bool, N, Vec<&str>)>
where
    N: std::str::FromStr + Into<ipnetwork::IpNetwork> + Copy,
{
    text.lines().filter_map(move |line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (blackhole, dst) = match words.as_slice() {
            ["blackhole", dst, ..] => (true, *dst),
            [dst, ..] => (false, *dst),
            [] => return None,
        };
        let net = dst.parse::<N>().ok()?;
        // A pod's host route.
        if !dst.contains('/') || net.into().prefix() == host_len {
            return None;
        }
        Some((blackhole, net, words))
    })
}

/// Dual stack: what is still missing on the IPv6 side: each node's IPv6
/// sessions (the mesh over IPv6, the ToR's IPv6 session), a route on
/// every node of the same subnet to each node's IPv6 blocks, and (between
/// subnets, where IPv6 has no tunnel) the router's route to them, learned
/// by the ToR.
fn convergence6(state: &LabState, missing: &mut Vec<String>) {
    if state.spec.pool6().is_none() {
        return;
    }
    let all: Vec<(&NodeState, Routes6)> = state.nodes.iter().map(|n| (n, routes6(n))).collect();
    for (k, node) in state.nodes.iter().enumerate() {
        let up = peers_up6(&peer_table(state, node));
        for other in state.expected_peers(k) {
            if other.ip6.is_some_and(|ip| !up.contains(&ip)) {
                missing.push(format!(
                    "{}: no IPv6 BGP session with {}",
                    node.name, other.name
                ));
            }
        }
        if state.spec.tor && node.gateway6.is_some_and(|gw| !up.contains(&gw)) {
            missing.push(format!("{}: no IPv6 BGP session with the ToR", node.name));
        }
    }
    let router = if state.spec.tor && state.subnets.len() > 1 {
        Netns::existing(&state.router_ns)
            .and_then(|ns| ns.ip(&["-6", "route", "show"]))
            .ok()
    } else {
        None
    };
    for (owner, theirs) in &all {
        if theirs.local_blocks.is_empty() && state.pods.iter().any(|p| p.node == owner.name) {
            missing.push(format!("{}: no IPv6 block yet", owner.name));
        }
        for block in &theirs.local_blocks {
            for (node, mine) in all
                .iter()
                .filter(|(n, _)| n.name != owner.name && n.subnet == owner.subnet)
            {
                if !mine.remote_blocks.contains(block) {
                    missing.push(format!(
                        "{}: no route to {}'s IPv6 block {block}",
                        node.name, owner.name
                    ));
                }
            }
            if let Some(text) = &router {
                let want = format!("{block} via {}", owner.ip6.unwrap_or(Ipv6Addr::UNSPECIFIED));
                if !text.lines().any(|l| l.starts_with(&want)) {
                    missing.push(format!(
                        "router: no route to {}'s IPv6 block {block}",
                        owner.name
                    ));
                }
            }
        }
    }
}

/// What felix programmed on a node (routes with protocol 80).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    pub text: String,
    /// `blackhole <block>`: the node's own blocks.
    pub local_blocks: Vec<Ipv4Network>,
    /// Routes to other nodes' blocks: (block, through the IPIP tunnel).
    pub remote_blocks: Vec<(Ipv4Network, bool)>,
}

pub fn routes(node: &NodeState) -> Routes {
    let text = Netns::existing(&node.ns)
        .and_then(|ns| ns.ip(&["-4", "route", "show", "proto", "80"]))
        .unwrap_or_default();
    parse_routes(&text)
}

pub fn parse_routes(text: &str) -> Routes {
    let mut r = Routes {
        text: text.to_string(),
        ..Routes::default()
    };
    for (blackhole, net, words) in block_routes::<Ipv4Network>(text, 32) {
        if blackhole {
            r.local_blocks.push(net);
        } else {
            let tunnel = words
                .windows(2)
                .any(|w| w == ["dev", "tunl0"] || w == ["dev", "vxlan.calico"]);
            r.remote_blocks.push((net, tunnel));
        }
    }
    r
}

/// What is still missing for the lab to be converged (empty: converged):
/// every node has its BGP sessions up (the mesh or its route reflectors,
/// and the ToR when there is one) and routes every other node's blocks.
pub fn convergence(state: &LabState, dir: &std::path::Path) -> Vec<String> {
    let mut missing = Vec::new();
    let all: Vec<(String, Routes)> = state
        .nodes
        .iter()
        .map(|n| (n.name.clone(), routes(n)))
        .collect();
    // IPv6 only: no IPv4 sessions to wait for (and no IPv4 blocks).
    let ipv4 = state.spec.has_ipv4();
    for (k, node) in state.nodes.iter().enumerate() {
        let up = peers_up(&peer_table(state, node));
        for other in state.expected_peers(k).into_iter().filter(|_| ipv4) {
            if !up.contains(&other.ip) {
                missing.push(format!("{}: no BGP session with {}", node.name, other.name));
            }
        }
        if ipv4 && state.spec.tor && !up.contains(&node.gateway) {
            missing.push(format!("{}: no BGP session with the ToR", node.name));
        }
        let Some((_, mine)) = all.iter().find(|(n, _)| *n == node.name) else {
            continue;
        };
        for (other, theirs) in all.iter().filter(|(n, _)| *n != node.name) {
            for block in &theirs.local_blocks {
                if !mine.remote_blocks.iter().any(|(b, _)| b == block) {
                    missing.push(format!(
                        "{}: no route to {other}'s block {block}",
                        node.name
                    ));
                }
            }
        }
    }
    if state.spec.tor {
        let protocols = procs::birdc(dir, &["show", "protocols"]).unwrap_or_default();
        let established = protocols
            .lines()
            .filter(|l| l.contains(" BGP ") && l.contains("Established"))
            .count();
        let families = usize::from(ipv4) + usize::from(state.spec.pool6().is_some());
        let sessions = state.nodes.len() * families;
        if established < sessions {
            missing.push(format!(
                "ToR: {established} of {sessions} BGP sessions established"
            ));
        }
    }
    convergence6(state, &mut missing);
    missing
}

/// Waits (bounded) for [`convergence`] to come up empty; how long it took.
pub fn wait_converged(
    state: &LabState,
    dir: &std::path::Path,
    timeout: Duration,
) -> Result<Duration, ClusterError> {
    let start = Instant::now();
    loop {
        let missing = convergence(state, dir);
        if missing.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            let shown: Vec<&String> = missing.iter().take(10).collect();
            return Err(ClusterError::Timeout(format!(
                "the lab did not converge within {timeout:?}; still missing ({} in all): {shown:?}; logs in {}",
                missing.len(),
                dir.join("logs").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How a ping between two pods travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Both pods on one node.
    Local,
    /// Plain IP on the underlay.
    Direct,
    /// IP-in-IP on the underlay.
    Ipip,
    /// VXLAN (UDP 4789) on the underlay.
    Vxlan,
}

impl Path {
    /// The path the lab's pool sends traffic on between pods on these
    /// two nodes.
    pub fn between(state: &LabState, a: &NodeState, b: &NodeState) -> Path {
        if a.name == b.name {
            Path::Local
        } else if state
            .spec
            .vxlan
            .is_some_and(|v| v.encapsulates(a.subnet, b.subnet))
        {
            Path::Vxlan
        } else if state.spec.ipip.encapsulates(a.subnet, b.subnet) {
            Path::Ipip
        } else {
            Path::Direct
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Path::Local => "local",
            Path::Direct => "direct",
            Path::Ipip => "ipip",
            Path::Vxlan => "vxlan",
        }
    }
}

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub from: String,
    pub to: String,
    pub reached: bool,
    /// What the source node's underlay interface carried (None: nothing
    /// of this ping was seen there).
    pub seen: Option<Path>,
    pub expected: Path,
}

impl Pair {
    pub fn ok(&self) -> bool {
        self.reached && self.seen == Some(self.expected)
    }
}

fn ping(pod_ns: &str, ip: Ipv4Addr) -> bool {
    // Two tries: the first of a brand-new pair may wait on ARP.
    (0..2).any(|_| {
        Command::new("ip")
            .args(["netns", "exec", pod_ns, "ping", "-c", "1", "-W", "2", "-q"])
            .arg(ip.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Pings every pod from every other pod, watching the source node's
/// underlay interface to see whether the ping went direct or IP-in-IP.
pub fn ping_matrix(state: &LabState) -> Result<Vec<Pair>, ClusterError> {
    let mut pairs = Vec::new();
    for from in &state.pods {
        let Some(src_node) = state.node(&from.node) else {
            continue;
        };
        let node_ns = Netns::existing(&src_node.ns)?;
        for to in state.pods.iter().filter(|p| p.name != from.name) {
            let Some(dst_node) = state.node(&to.node) else {
                continue;
            };
            let Some(ip) = to.ip else {
                pairs.push(Pair {
                    from: from.name.clone(),
                    to: to.name.clone(),
                    reached: false,
                    seen: None,
                    expected: Path::Local,
                });
                continue;
            };
            let expected = Path::between(state, src_node, dst_node);
            let cap = Capture::start(&node_ns, "eth0")?;
            let reached = ping(&from.ns, ip);
            let seen = cap.stop()?;
            let tunnelled = seen
                .packets
                .iter()
                .any(|p| p.inner.is_some_and(|i| i.dst == ip || i.src == ip));
            let vxlan = seen
                .vxlan()
                .any(|(_, v)| v.inner.is_some_and(|i| i.dst == ip || i.src == ip));
            let plain = seen
                .packets
                .iter()
                .any(|p| p.protocol == 1 && (p.dst == ip || p.src == ip));
            let seen = match (tunnelled, vxlan, plain) {
                (true, _, _) => Some(Path::Ipip),
                (false, true, _) => Some(Path::Vxlan),
                (false, false, true) => Some(Path::Direct),
                (false, false, false) if src_node.name == dst_node.name => Some(Path::Local),
                _ => None,
            };
            pairs.push(Pair {
                from: from.name.clone(),
                to: to.name.clone(),
                reached,
                seen,
                expected,
            });
        }
    }
    Ok(pairs)
}

/// One IPv6 cell of the matrix (dual stack): whether the ping reached.
/// The path is not classified: IPv6 pools are never encapsulated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair6 {
    pub from: String,
    pub to: String,
    /// The destination pod's IPv6 address (None: it has none).
    pub ip6: Option<Ipv6Addr>,
    pub reached: bool,
}

fn ping6(pod_ns: &str, ip: Ipv6Addr) -> bool {
    // Three tries: the first of a brand-new pair may wait on neighbour
    // discovery.
    (0..3).any(|_| {
        Command::new("ip")
            .args([
                "netns", "exec", pod_ns, "ping", "-6", "-c", "1", "-W", "2", "-q",
            ])
            .arg(ip.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Dual stack: every pod pings every other pod's IPv6 address (`ping
/// -6`). Empty in an IPv4-only lab.
pub fn ping_matrix6(state: &LabState) -> Vec<Pair6> {
    if state.spec.pool6().is_none() {
        return Vec::new();
    }
    let mut pairs = Vec::new();
    for from in &state.pods {
        for to in state.pods.iter().filter(|p| p.name != from.name) {
            pairs.push(Pair6 {
                from: from.name.clone(),
                to: to.name.clone(),
                ip6: to.ip6,
                reached: to.ip6.is_some_and(|ip| ping6(&from.ns, ip)),
            });
        }
    }
    pairs
}

/// The IPv6 matrix as a table and a verdict line.
pub fn render_matrix6(state: &LabState, pairs: &[Pair6]) -> String {
    let names: Vec<&PodState> = state.pods.iter().collect();
    let w = names.iter().map(|p| p.name.len()).max().unwrap_or(4).max(9);
    let mut s = String::new();
    let _ = write!(s, "{:<w$}", "from \\ to");
    for p in &names {
        let _ = write!(s, " {:>w$}", p.name);
    }
    s.push('\n');
    for from in &names {
        let _ = write!(s, "{:<w$}", from.name);
        for to in &names {
            let cell = if from.name == to.name {
                "-"
            } else {
                match pairs
                    .iter()
                    .find(|p| p.from == from.name && p.to == to.name)
                {
                    Some(p) if p.reached => "ok",
                    Some(_) => "FAIL",
                    None => "?",
                }
            };
            let _ = write!(s, " {cell:>w$}");
        }
        s.push('\n');
    }
    let good = pairs.iter().filter(|p| p.reached).count();
    let _ = writeln!(
        s,
        "IPv6 ping matrix: {good}/{} pairs reach each other: {}",
        pairs.len(),
        if good == pairs.len() && !pairs.is_empty() {
            "PASS"
        } else {
            "FAIL"
        }
    );
    s
}

/// One line per IPv6 pair, for scripts and tests.
pub fn render_pairs6(pairs: &[Pair6]) -> String {
    pairs
        .iter()
        .map(|p| {
            format!(
                "pair6 {} -> {} ({}): {}\n",
                p.from,
                p.to,
                p.ip6.map_or("-".to_string(), |ip| ip.to_string()),
                if p.reached { "reached" } else { "unreachable" },
            )
        })
        .collect()
}

/// Dual stack: what the outside saw of one node's first pod opening a TCP
/// connection to [`super::EXTERNAL_IP6`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nat6 {
    pub pod: String,
    pub pod_ip6: Ipv6Addr,
    pub node: String,
    pub node_ip6: Option<Ipv6Addr>,
    /// The connection's source address as the outside accepted it (None:
    /// it never arrived).
    pub source: Option<Ipv6Addr>,
    /// Whether the IPv6 pool masquerades (`CALICO_IPV6POOL_NAT_OUTGOING`).
    pub expect_nat: bool,
}

impl Nat6 {
    pub fn ok(&self) -> bool {
        let want = if self.expect_nat {
            self.node_ip6
        } else {
            Some(self.pod_ip6)
        };
        self.source.is_some() && self.source == want
    }
}

/// Dual stack: IPv6 NAT-outgoing. A listener on [`super::EXTERNAL_IP6`]
/// in the router namespace (outside the cluster: nothing of Calico runs
/// there) accepts one TCP connection from the first pod of each node and
/// reports the source address it came from: the node's IPv6 address when
/// the pool masquerades, the pod's otherwise. Empty in an IPv4-only lab.
pub fn nat_outgoing6(state: &LabState) -> Result<Vec<Nat6>, ClusterError> {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    if state.spec.pool6().is_none() {
        return Ok(Vec::new());
    }
    let router = Netns::existing(&state.router_ns)?;
    let ext = super::EXTERNAL_IP6;
    // Already there from an earlier check: fine.
    let _ = router.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{ext}/128"),
        "dev",
        "lo",
        "nodad",
    ]);
    let io = |what: &str, e: std::io::Error| ClusterError::Spec(format!("{what}: {e}"));
    let mut rows = Vec::new();
    for n in &state.nodes {
        let Some(pod) = state.pods.iter().find(|p| p.node == n.name) else {
            continue;
        };
        let Some(pod_ip6) = pod.ip6 else {
            continue;
        };
        let listener = router
            .run(move || TcpListener::bind(SocketAddr::from((ext, 0))))?
            .map_err(|e| io("listening outside the cluster", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| io("the listener's port", e))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(|e| io("the listener", e))?;
        let pod_ns = Netns::existing(&pod.ns)?;
        let dst = SocketAddr::from((ext, port));
        let client = pod_ns
            .spawn_thread(move || TcpStream::connect_timeout(&dst, Duration::from_secs(3)).ok())?;
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut source = None;
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((_, from)) => {
                    source = match from.ip() {
                        std::net::IpAddr::V6(ip) => Some(ip),
                        std::net::IpAddr::V4(_) => None,
                    };
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(io("accepting outside the cluster", e)),
            }
        }
        let _ = client.join();
        rows.push(Nat6 {
            pod: pod.name.clone(),
            pod_ip6,
            node: n.name.clone(),
            node_ip6: n.ip6,
            source,
            expect_nat: state.spec.nat_outgoing,
        });
    }
    Ok(rows)
}

/// The IPv6 NAT-outgoing rows, one line each.
pub fn render_nat6(rows: &[Nat6]) -> String {
    rows.iter()
        .map(|r| {
            format!(
                "{} ({}) -> [{}]: {}, source seen outside {} {}\n",
                r.pod,
                r.pod_ip6,
                super::EXTERNAL_IP6,
                if r.source.is_some() {
                    "connected"
                } else {
                    "UNREACHABLE"
                },
                r.source.map_or("unseen".to_string(), |s| s.to_string()),
                match (r.expect_nat, r.ok()) {
                    (true, true) => "(masqueraded to the node: ok)",
                    (false, true) => "(not masqueraded, as configured: ok)",
                    _ => "(WRONG)",
                }
            )
        })
        .collect()
}

/// The matrix as a table (rows: from, columns: to) and a verdict line.
pub fn render_matrix(state: &LabState, pairs: &[Pair]) -> String {
    let names: Vec<&PodState> = state.pods.iter().collect();
    let w = names.iter().map(|p| p.name.len()).max().unwrap_or(4).max(9);
    let mut s = String::new();
    let _ = write!(s, "{:<w$}", "from \\ to");
    for p in &names {
        let _ = write!(s, " {:>w$}", p.name);
    }
    s.push('\n');
    for from in &names {
        let _ = write!(s, "{:<w$}", from.name);
        for to in &names {
            let cell = if from.name == to.name {
                "-".to_string()
            } else {
                match pairs
                    .iter()
                    .find(|p| p.from == from.name && p.to == to.name)
                {
                    Some(p) if p.ok() => format!("ok {}", p.expected.name()),
                    Some(p) if p.reached => format!("BAD {}", p.seen.map_or("unseen", Path::name)),
                    Some(_) => "FAIL".to_string(),
                    None => "?".to_string(),
                }
            };
            let _ = write!(s, " {cell:>w$}");
        }
        s.push('\n');
    }
    let good = pairs.iter().filter(|p| p.ok()).count();
    let _ = writeln!(
        s,
        "ping matrix: {good}/{} pairs reach each other over the expected path: {}",
        pairs.len(),
        if good == pairs.len() && !pairs.is_empty() {
            "PASS"
        } else {
            "FAIL"
        }
    );
    s
}

/// One line per pair, for scripts and tests.
pub fn render_pairs(pairs: &[Pair]) -> String {
    pairs
        .iter()
        .map(|p| {
            format!(
                "pair {} -> {}: {} path={} expected={}\n",
                p.from,
                p.to,
                if p.reached { "reached" } else { "unreachable" },
                p.seen.map_or("unseen", Path::name),
                p.expected.name()
            )
        })
        .collect()
}

/// Resident memory of the agent's processes on one node, in KiB, by
/// process name (`calico-node`, `confd`, `bird`, `felix`): `(name, RSS,
/// anonymous part of it)`. The rest of RSS is the binary's mapped code,
/// shared between processes of one binary (in a lab, between nodes; on a
/// real node there is one of each, so RSS is what the node pays).
pub fn memory(node: &NodeState) -> Vec<(String, u64, u64)> {
    let pids = Netns::existing(&node.ns)
        .map(|ns| ns.pids())
        .unwrap_or_default();
    let mut out: Vec<(String, u64, u64)> = pids
        .into_iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim().to_string())
            };
            let name = field("Name:")?;
            let kb =
                |key: &str| -> Option<u64> { field(key)?.split_whitespace().next()?.parse().ok() };
            Some((name, kb("VmRSS:")?, kb("RssAnon:")?))
        })
        .collect();
    out.sort();
    out
}

/// The agent's processes on one node: the DaemonSet pod's.
const AGENT_PROCESSES: [&str; 4] = ["calico-node", "confd", "bird", "felix"];

/// What the node's agent processes hold in memory together, in KiB: every
/// physical page mapped by any of them, counted once. This is what a node
/// pays (and roughly what the pod's memory cgroup is charged): a page of
/// code two of its processes map is one page, though each one's RSS
/// counts it. Read from `/proc/<pid>/pagemap`, which shows page frame
/// numbers to root only; `None` without them. In a lab the nodes share
/// the binaries' page cache too; a page is still counted for every node
/// that maps it, as each real node would hold its own.
pub fn node_footprint_kb(node: &NodeState) -> Option<u64> {
    let pids = Netns::existing(&node.ns).map(|ns| ns.pids()).ok()?;
    let mut frames = std::collections::HashSet::new();
    for pid in pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !AGENT_PROCESSES.contains(&comm.trim()) {
            continue;
        }
        // A process that exits meanwhile is simply not counted.
        let _ = mapped_frames(pid, &mut frames);
    }
    if frames.contains(&0) {
        return None;
    }
    Some(frames.len() as u64 * 4)
}

/// Adds the page frame numbers of `pid`'s resident pages to `frames` (a 0
/// means the frame numbers are hidden: not root).
fn mapped_frames(pid: i32, frames: &mut std::collections::HashSet<u64>) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    const PAGE: u64 = 4096;
    const PRESENT: u64 = 1 << 63;
    const PFN_MASK: u64 = (1 << 55) - 1;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut buf = Vec::new();
    for line in maps.lines() {
        let Some((lo, hi)) = line
            .split_whitespace()
            .next()
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| {
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            })
        else {
            continue;
        };
        // [vsyscall] sits above the user range; nothing maps 64 GiB here.
        if line.ends_with("[vsyscall]") || hi <= lo || hi - lo > 64 << 30 {
            continue;
        }
        let pages = ((hi - lo) / PAGE) as usize;
        buf.resize(pages * 8, 0);
        pagemap.seek(SeekFrom::Start(lo / PAGE * 8))?;
        pagemap.read_exact(&mut buf)?;
        for entry in buf.chunks_exact(8) {
            let v = u64::from_le_bytes(entry.try_into().unwrap_or_default());
            if v & PRESENT != 0 {
                frames.insert(v & PFN_MASK);
            }
        }
    }
    Ok(())
}

/// CPU and memory of one process, from `/proc/<pid>/stat` and `status`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// User plus system CPU time since the process started, in seconds.
    pub cpu_s: f64,
    /// Seconds since the process started.
    pub age_s: f64,
    pub rss_kb: u64,
    /// Peak RSS (VmHWM).
    pub peak_kb: u64,
}

/// The CPU and memory `pid` has used; `None` once it is gone.
pub fn usage(pid: i32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let (cpu_ticks, start_ticks) = parse_stat_times(&stat)?;
    // SAFETY: sysconf reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    let kb = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(Usage {
        cpu_s: cpu_ticks as f64 / hz,
        age_s: (uptime - start_ticks as f64 / hz).max(0.0),
        rss_kb: kb("VmRSS:")?,
        peak_kb: kb("VmHWM:")?,
    })
}

/// `utime + stime` and `starttime` (clock ticks) from a `/proc/<pid>/stat`
/// line. The command name (field 2) may hold spaces and parentheses, so
/// the fields are counted from its closing parenthesis.
fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15,
    // starttime 22.
    let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    Some((field(14)? + field(15)?, field(22)?))
}

/// The datastore's processes: etcd, and in Kubernetes mode the API server
/// and the controller-manager, by name and pid.
pub fn datastore_processes(state: &LabState) -> Vec<(&'static str, i32)> {
    let mut out = Vec::new();
    if let Some(k) = &state.kube {
        out.extend(k.apiserver_pid.map(|p| ("kube-apiserver", p)));
        out.extend(
            k.controller_manager_pid
                .map(|p| ("kube-controller-manager", p)),
        );
    }
    out.extend(state.etcd_pid.map(|p| ("etcd", p)));
    out
}

/// `calico-lab stats`: per node, the memory of each component, its route
/// count and BGP sessions; then the worst and mean of bird + felix + confd.
pub fn render_stats(state: &LabState) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<9} {:>11} {:>8} {:>8} {:>8} {:>16} {:>10} {:>8} {:>7} {:>9}",
        "NODE",
        "calico-node",
        "confd",
        "bird",
        "felix",
        "bird+felix+confd",
        "(private)",
        "node",
        "routes",
        "sessions"
    );
    let mut totals = Vec::new();
    for n in &state.nodes {
        let mem = memory(n);
        let get = |name: &str| {
            mem.iter()
                .filter(|(p, _, _)| p == name)
                .map(|(_, kb, _)| *kb)
                .sum::<u64>()
        };
        let private: u64 = mem
            .iter()
            .filter(|(p, _, _)| ["bird", "felix", "confd"].contains(&p.as_str()))
            .map(|(_, _, anon)| *anon)
            .sum();
        let agents = get("bird") + get("felix") + get("confd");
        let footprint = node_footprint_kb(n);
        totals.push((agents, private, footprint));
        let r = routes(n);
        let sessions = peers_up(&peer_table(state, n)).len();
        let mb = |kb: u64| format!("{:.1} MB", kb as f64 / 1024.0);
        let _ = writeln!(
            s,
            "{:<9} {:>11} {:>8} {:>8} {:>8} {:>16} {:>10} {:>8} {:>7} {:>9}",
            n.name,
            mb(get("calico-node")),
            mb(get("confd")),
            mb(get("bird")),
            mb(get("felix")),
            mb(agents),
            mb(private),
            footprint.map_or_else(|| "-".to_string(), mb),
            r.text.lines().count(),
            sessions
        );
    }
    if let Some(max) = totals.iter().map(|t| t.0).max() {
        let mean = totals.iter().map(|t| t.0).sum::<u64>() as f64 / totals.len() as f64;
        let private = totals.iter().map(|t| t.1).max().unwrap_or(0);
        let _ = writeln!(
            s,
            "bird + felix + confd per node: RSS max {:.1} MB, mean {:.1} MB over {} nodes (target <= 30 MB); \
             private (anonymous) max {:.1} MB",
            max as f64 / 1024.0,
            mean / 1024.0,
            totals.len(),
            private as f64 / 1024.0
        );
    }
    let footprints: Vec<u64> = totals.iter().filter_map(|t| t.2).collect();
    if let Some(max) = footprints.iter().max() {
        let mean = footprints.iter().sum::<u64>() as f64 / footprints.len() as f64;
        let _ = writeln!(
            s,
            "node footprint (calico-node + confd + bird + felix, each page once): max {:.1} MB, mean {:.1} MB (target <= 30 MB)",
            *max as f64 / 1024.0,
            mean / 1024.0,
        );
    }
    for (name, pid) in datastore_processes(state) {
        let Some(u) = usage(pid) else {
            let _ = writeln!(s, "{name:<23} (pid {pid}) is not running");
            continue;
        };
        let _ = writeln!(
            s,
            "{name:<23} RSS {:.1} MB (peak {:.1} MB), CPU {:.1} s in {:.0} s since it started ({:.0}% of one core)",
            u.rss_kb as f64 / 1024.0,
            u.peak_kb as f64 / 1024.0,
            u.cpu_s,
            u.age_s,
            100.0 * u.cpu_s / u.age_s.max(1.0)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis; utime 1200,
        // stime 34, starttime 5678.
        let line = "4242 (kube (api) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1200 34 0 0 20 0 12 0 5678 1000 200";
        assert_eq!(parse_stat_times(line), Some((1234, 5678)));
        assert_eq!(parse_stat_times("4242 (short) S 1"), None);
    }

    #[test]
    fn frames_of_a_process_match_its_rss_and_shared_pages_count_once() {
        // Two idle processes of one executable: nothing changes their
        // pages while they are read.
        let mut kids: Vec<std::process::Child> = (0..2)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let pids: Vec<i32> = kids.iter().map(|k| k.id() as i32).collect();
        let frames_of = |pid: i32| {
            let mut f = std::collections::HashSet::new();
            mapped_frames(pid, &mut f).unwrap();
            f
        };
        let (a, b) = (frames_of(pids[0]), frames_of(pids[1]));
        // Root sees frame numbers (the tests run as root); others see 0s.
        assert!(!a.contains(&0), "frame numbers hidden: not root?");
        let rss = usage(pids[0]).unwrap().rss_kb;
        let kb = a.len() as u64 * 4;
        assert!(
            kb * 10 >= rss * 9 && kb <= rss + 8,
            "{kb} KiB of frames, RSS {rss} KiB"
        );
        // Together: the code and libc they share once, not twice.
        let mut both = a.clone();
        mapped_frames(pids[1], &mut both).unwrap();
        let shared = a.intersection(&b).count();
        assert!(shared > 0, "two sleeps share no page?");
        assert_eq!(both.len(), a.len() + b.len() - shared);
        for k in &mut kids {
            let _ = k.kill();
            let _ = k.wait();
        }
    }

    #[test]
    fn usage_of_this_process_is_plausible() {
        let u = usage(std::process::id() as i32).unwrap();
        assert!(u.rss_kb > 0 && u.peak_kb >= u.rss_kb, "{u:?}");
        assert!(u.cpu_s >= 0.0 && u.age_s >= 0.0, "{u:?}");
        assert_eq!(usage(-1), None);
    }

    #[test]
    fn felix_routes_are_sorted_into_local_and_remote_blocks() {
        let r = parse_routes(
            "blackhole 10.65.0.0/26 \n\
             10.65.0.1 dev cali1234 scope link \n\
             10.65.1.0/26 via 172.30.1.1 dev tunl0 onlink \n\
             10.65.2.64/26 via 172.30.0.2 dev eth0 \n",
        );
        assert_eq!(r.local_blocks, vec!["10.65.0.0/26".parse().unwrap()]);
        assert_eq!(
            r.remote_blocks,
            vec![
                ("10.65.1.0/26".parse().unwrap(), true),
                ("10.65.2.64/26".parse().unwrap(), false)
            ]
        );
    }

    #[test]
    fn ipv6_peers_and_routes_are_read_from_a_dual_stack_node() {
        let t = "IPv4 BGP status\n\
                 | 172.30.0.2   | node-to-node mesh | up    | 10:00:00 | Established |\n\
                 IPv6 BGP status\n\
                 | fd00:30::2   | node-to-node mesh | up    | 10:00:00 | Established |\n\
                 | fd00:30:1::1 | node-to-node mesh | start | 10:00:00 | Active      |\n\
                 | fd00:30::fe  | node specific     | up    | 10:00:00 | Established |\n";
        assert_eq!(
            peers_up6(t),
            vec![
                "fd00:30::2".parse::<Ipv6Addr>().unwrap(),
                "fd00:30::fe".parse().unwrap()
            ]
        );
        assert_eq!(peers_up(t), vec![Ipv4Addr::new(172, 30, 0, 2)]);
        let r = parse_routes6(
            "fd00:65::400 dev cali24b98c23e22 metric 1024 pref medium\n\
             blackhole fd00:65::400/122 dev lo metric 1024 pref medium\n\
             fd00:65::dd80/122 via fd00:30::2 dev eth0 metric 1024 pref medium\n",
        );
        assert_eq!(r.local_blocks, vec!["fd00:65::400/122".parse().unwrap()]);
        assert_eq!(r.remote_blocks, vec!["fd00:65::dd80/122".parse().unwrap()]);
    }

    #[test]
    fn peers_up_reads_the_calicoctl_table() {
        let t = "+--------------+-------------------+-------+----------+-------------+\n\
                 | PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |\n\
                 +--------------+-------------------+-------+----------+-------------+\n\
                 | 172.30.0.2   | node-to-node mesh | up    | 10:00:00 | Established |\n\
                 | 172.30.1.1   | node-to-node mesh | start | 10:00:00 | Active      |\n";
        assert_eq!(peers_up(t), vec![Ipv4Addr::new(172, 30, 0, 2)]);
    }
}
