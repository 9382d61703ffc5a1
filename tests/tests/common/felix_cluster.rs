//! A small cluster for dataplane tests: a lab topology, a felix
//! [`Dataplane`] in every node namespace (on its own tokio runtime, whose
//! threads live in that namespace), one /26 block per node from the pool
//! `10.65.0.0/16` (node k owns `10.65.k.0/26`, its tunnel address is
//! `10.65.k.1`, its pods `10.65.k.2`, `.3`, …), and pods made through
//! felix's own [`PodInterfaces`].
//!
//! For VXLAN ([`Cluster::program_vxlan`]) node k's VTEP has the address
//! `10.65.k.1` (as the tunnel address above) and the MAC
//! `66:6c:00:00:00:k` ([`vxlan_mac_of`]).
//!
//! Dual stack ([`Cluster::add_ipv6_underlay`]): subnet s is also
//! `fd00:30:s::/64` (router `::1`), node k has `fd00:30:s::1k`-ish
//! ([`node6_of`]); IPv6 pool `fd00:65::/48`, node k's block
//! `fd00:65:0:k::/122`, its IPv6 VTEP `fd00:65:0:k::1` with MAC
//! `66:6c:00:00:06:k`, its pods `fd00:65:0:k::2`, `::3`, ….

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;

use felix::calc::Pool;
use felix::dataplane::{
    Dataplane, DataplaneConfig, DataplaneHandle, DataplaneReport, DataplaneStatus, Vxlan6Input,
};
use felix::routes::ReconcilerConfig;
use felix::tunnel::BackendChoice;
use felix::workload::{Workload, WorkloadSpec};
use felix::{Vtep, VxlanLocal};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use ippool_crd::EncapMode;
use lab::{Netns, Topology};

pub const POOL: &str = "10.65.0.0/16";

pub fn block_of(node: usize) -> Ipv4Network {
    format!("10.65.{node}.0/26").parse().unwrap()
}

pub fn tunnel_ip_of(node: usize) -> Ipv4Addr {
    format!("10.65.{node}.1").parse().unwrap()
}

pub fn pool(mode: EncapMode, nat_outgoing: bool) -> Pool {
    Pool {
        name: "default-ipv4-ippool".into(),
        cidr: POOL.parse().unwrap(),
        ipip_mode: mode,
        vxlan_mode: EncapMode::Never,
        nat_outgoing,
    }
}

/// The pool with `vxlanMode: mode` (and `ipipMode: Never`).
pub fn vxlan_pool(mode: EncapMode) -> Pool {
    Pool {
        vxlan_mode: mode,
        ..pool(EncapMode::Never, false)
    }
}

pub const POOL6: &str = "fd00:65::/48";

pub fn block6_of(node: usize) -> Ipv6Network {
    format!("fd00:65:0:{node:x}::/122").parse().unwrap()
}

pub fn tunnel6_of(node: usize) -> Ipv6Addr {
    format!("fd00:65:0:{node:x}::1").parse().unwrap()
}

pub fn vxlan6_mac_of(node: usize) -> [u8; 6] {
    [0x66, 0x6c, 0, 0, 6, node as u8]
}

/// Node `node`'s IPv6 underlay address on subnet `subnet`, with the
/// subnet's /64.
pub fn node6_of(subnet: usize, node: usize) -> Ipv6Network {
    format!("fd00:30:{subnet:x}::{:x}/64", 0x10 + node)
        .parse()
        .unwrap()
}

/// The IPv6 pool with `vxlanMode: mode`.
pub fn vxlan6_pool(mode: EncapMode) -> Pool {
    Pool {
        name: "default-ipv6-ippool".into(),
        cidr: POOL6.parse().unwrap(),
        ipip_mode: EncapMode::Never,
        vxlan_mode: mode,
        nat_outgoing: false,
    }
}

pub fn vxlan_mac_of(node: usize) -> [u8; 6] {
    [0x66, 0x6c, 0, 0, 0, node as u8]
}

/// `66:6c:00:00:00:0k`, as `ip` prints it.
pub fn mac_text(mac: [u8; 6]) -> String {
    felix::vxlan::Mac(&mac).to_string()
}

/// felix on one lab node.
pub struct FelixNode {
    pub node: lab::Node,
    pub handle: DataplaneHandle,
    pub state_dir: tempfile::TempDir,
    dp: Option<Dataplane>,
    rt: Option<tokio::runtime::Runtime>,
    pods: usize,
    /// What the node was started with.
    pub backend: BackendChoice,
    /// Its `FELIX_VXLANBACKEND`.
    pub vxlan_backend: BackendChoice,
}

impl FelixNode {
    pub fn start(node: &lab::Node, backend: BackendChoice) -> Result<FelixNode, String> {
        FelixNode::start_with(node, backend, BackendChoice::Auto)
    }

    /// [`FelixNode::start`] with a VXLAN backend choice too.
    pub fn start_with(
        node: &lab::Node,
        backend: BackendChoice,
        vxlan_backend: BackendChoice,
    ) -> Result<FelixNode, String> {
        FelixNode::start_full(node, backend, vxlan_backend, true)
    }

    /// [`FelixNode::start`] as calico-node starts felix (after a restart
    /// too): owned routes nobody has asked for yet stay until
    /// [`FelixNode::mark_in_sync`].
    #[allow(dead_code)]
    pub fn start_managed(node: &lab::Node, backend: BackendChoice) -> Result<FelixNode, String> {
        FelixNode::start_full(node, backend, BackendChoice::Auto, false)
    }

    /// Lets the route reconciler delete owned routes nobody asked for.
    #[allow(dead_code)]
    pub fn mark_in_sync(&self) {
        self.dp
            .as_ref()
            .unwrap()
            .routes()
            .unwrap()
            .mark_in_sync()
            .unwrap();
    }

    fn start_full(
        node: &lab::Node,
        backend: BackendChoice,
        vxlan_backend: BackendChoice,
        start_in_sync: bool,
    ) -> Result<FelixNode, String> {
        let state_dir = tempfile::tempdir().unwrap();
        let cfg = DataplaneConfig {
            ipip_backend: backend,
            vxlan_backend,
            mtu_file: Some(state_dir.path().join("mtu")),
            routes: ReconcilerConfig {
                start_in_sync,
                ..ReconcilerConfig::default()
            },
            ..DataplaneConfig::default()
        };
        let (rt, dp) = node
            .ns
            .run(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                let dp = rt
                    .block_on(Dataplane::start(cfg))
                    .map_err(|e| e.to_string());
                (rt, dp)
            })
            .unwrap();
        let dp = dp?;
        Ok(FelixNode {
            node: node.clone(),
            handle: dp.handle(),
            state_dir,
            dp: Some(dp),
            rt: Some(rt),
            pods: 0,
            backend,
            vxlan_backend,
        })
    }

    pub fn mtu_file(&self) -> PathBuf {
        self.state_dir.path().join("mtu")
    }

    /// Starts `f` on this node's runtime (inside its namespace); it runs
    /// until it ends or the node stops.
    #[allow(dead_code)]
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.as_ref().unwrap().spawn(f)
    }

    /// Runs `f` on this node's runtime (inside its namespace) and waits.
    pub fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self.rt.as_ref().unwrap();
        futures::executor::block_on(rt.spawn(f)).unwrap()
    }

    pub fn flush(&self) -> DataplaneReport {
        let h = self.handle.clone();
        self.run(async move { h.flush().await.unwrap() })
    }

    pub fn status(&self) -> DataplaneStatus {
        let h = self.handle.clone();
        self.run(async move { h.status().await.unwrap() })
    }

    /// Makes a dual-stack pod with the next addresses of this node's IPv4
    /// and IPv6 blocks.
    pub fn add_pod_dual(&mut self, lab: &mut Topology) -> (Arc<Netns>, Ipv4Addr, Ipv6Addr) {
        let ns = lab.add_pod().unwrap();
        self.pods += 1;
        let base = u32::from(block_of(self.node.index).network());
        let ip = Ipv4Addr::from(base + 1 + self.pods as u32);
        let base6 = u128::from(block6_of(self.node.index).network());
        let ip6 = Ipv6Addr::from(base6 + 1 + self.pods as u128);
        let w = self.dp.as_ref().unwrap().workloads();
        let spec = WorkloadSpec {
            namespace: "default".into(),
            pod: format!("pod-{}-{}", self.node.index, self.pods),
            netns: ns.path(),
            ips: vec![IpAddr::V4(ip), IpAddr::V6(ip6)],
        };
        let _: Workload = self.run(async move { w.add(&spec).await.unwrap() });
        (ns, ip, ip6)
    }

    /// Makes a pod with the next address of this node's block.
    pub fn add_pod(&mut self, lab: &mut Topology) -> (Arc<Netns>, Ipv4Addr) {
        let ns = lab.add_pod().unwrap();
        self.pods += 1;
        let base = u32::from(block_of(self.node.index).network());
        let ip = Ipv4Addr::from(base + 1 + self.pods as u32);
        let w = self.dp.as_ref().unwrap().workloads();
        let spec = WorkloadSpec {
            namespace: "default".into(),
            pod: format!("pod-{}-{}", self.node.index, self.pods),
            netns: ns.path(),
            ips: vec![IpAddr::V4(ip)],
        };
        let _: Workload = self.run(async move { w.add(&spec).await.unwrap() });
        (ns, ip)
    }
}

impl Drop for FelixNode {
    fn drop(&mut self) {
        if let (Some(rt), Some(dp)) = (self.rt.as_ref(), self.dp.take()) {
            let _ = futures::executor::block_on(rt.spawn(dp.stop()));
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// A topology with felix on every node.
pub struct Cluster {
    pub lab: Topology,
    pub felix: Vec<FelixNode>,
}

impl Cluster {
    /// `subnets` subnets, node k on subnet `placement[k]`.
    pub fn new(tag: &str, subnets: usize, placement: &[usize], backend: BackendChoice) -> Cluster {
        Cluster::new_vxlan(tag, subnets, placement, backend, &[BackendChoice::Auto])
    }

    /// [`Cluster::new`] with node k's VXLAN backend `vxlan[k % len]`.
    pub fn new_vxlan(
        tag: &str,
        subnets: usize,
        placement: &[usize],
        backend: BackendChoice,
        vxlan: &[BackendChoice],
    ) -> Cluster {
        let mut lab = Topology::new(tag).unwrap();
        for _ in 0..subnets {
            lab.add_subnet().unwrap();
        }
        for s in placement {
            lab.add_node(*s).unwrap();
        }
        let felix = lab
            .nodes()
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let v = vxlan
                    .get(k % vxlan.len().max(1))
                    .copied()
                    .unwrap_or_default();
                FelixNode::start_with(n, backend, v).unwrap()
            })
            .collect();
        Cluster { lab, felix }
    }

    /// Feeds every node the same pools, its own block and tunnel address,
    /// and every other node's block (what confd and bird will do), then
    /// flushes each node and returns the reports.
    pub fn program(&self, pools: &[Pool]) -> Vec<DataplaneReport> {
        let blocks: Vec<(IpNetwork, IpAddr)> = self
            .felix
            .iter()
            .map(|f| {
                (
                    IpNetwork::V4(block_of(f.node.index)),
                    IpAddr::V4(f.node.ip()),
                )
            })
            .collect();
        for f in &self.felix {
            let h = &f.handle;
            let own = IpNetwork::V4(block_of(f.node.index));
            h.set_node(Some(f.node.addr)).unwrap();
            h.set_pool_modes(pools.to_vec()).unwrap();
            h.set_local_blocks(vec![own]).unwrap();
            h.set_remote_blocks(blocks.iter().filter(|(b, _)| *b != own).copied().collect())
                .unwrap();
            h.set_tunnel_address(Some(tunnel_ip_of(f.node.index)))
                .unwrap();
        }
        let reports = self.felix.iter().map(FelixNode::flush).collect();
        // In the real-kernel tier (scripts/kernel-test.sh) `auto` must
        // have found the kernel's ipip: a silent fallback to userspace
        // would prove nothing about the kernel backend.
        if std::env::var_os("CALICO_KERNEL_VM").is_some() {
            for f in &self.felix {
                if f.backend == BackendChoice::Auto
                    && let Some(t) = f.status().tunnel
                {
                    assert_eq!(t.backend, felix::tunnel::BackendKind::Kernel, "{t:?}");
                }
            }
        }
        reports
    }

    /// Node k's VTEP, as the other nodes see it.
    pub fn vtep_of(&self, k: usize) -> Vtep {
        let f = &self.felix[k];
        Vtep {
            node: format!("node-{}", f.node.index),
            node_ip: f.node.ip(),
            tunnel_addr: tunnel_ip_of(f.node.index),
            mac: vxlan_mac_of(f.node.index),
            blocks: vec![IpNetwork::V4(block_of(f.node.index))],
        }
    }

    /// Every node's VTEP but node k's.
    pub fn vteps_for(&self, k: usize) -> Vec<Vtep> {
        (0..self.felix.len())
            .filter(|j| *j != k)
            .map(|j| self.vtep_of(j))
            .collect()
    }

    /// [`Cluster::program`] (which BGP would also do: every block is
    /// announced, and the VTEP table must win for VXLAN pools), plus each
    /// node's own VTEP and every other node's (what confd will do from the
    /// Node resources and block affinities); flushes each node and returns
    /// the reports.
    pub fn program_vxlan(&self, pools: &[Pool]) -> Vec<DataplaneReport> {
        for (k, f) in self.felix.iter().enumerate() {
            f.handle
                .set_vxlan_local(Some(VxlanLocal {
                    tunnel_addr: tunnel_ip_of(f.node.index),
                    mac: vxlan_mac_of(f.node.index),
                }))
                .unwrap();
            f.handle.set_vteps(self.vteps_for(k)).unwrap();
        }
        self.program(pools)
    }

    /// Gives every subnet and node an IPv6 underlay address too
    /// ([`node6_of`]; the router forwards IPv6 between the subnets) and
    /// turns IPv6 forwarding on in the nodes. Returns node k's address.
    pub fn add_ipv6_underlay(&self) -> Vec<Ipv6Network> {
        let r = self.lab.router();
        r.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
        let mut subnets: Vec<usize> = self.felix.iter().map(|f| f.node.subnet).collect();
        subnets.sort_unstable();
        subnets.dedup();
        for s in subnets {
            let bridge = self.lab.subnet(s).unwrap().bridge.clone();
            let gw = format!("fd00:30:{s:x}::1/64");
            r.ip(&["-6", "addr", "add", &gw, "dev", &bridge, "nodad"])
                .unwrap();
        }
        self.felix
            .iter()
            .map(|f| {
                let n = &f.node;
                let a = node6_of(n.subnet, n.index);
                n.ns.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
                n.ns.ip(&[
                    "-6",
                    "addr",
                    "add",
                    &a.to_string(),
                    "dev",
                    &n.iface,
                    "nodad",
                ])
                .unwrap();
                let gw = format!("fd00:30:{:x}::1", n.subnet);
                n.ns.ip(&["-6", "route", "add", "default", "via", &gw])
                    .unwrap();
                a
            })
            .collect()
    }

    /// Node k's IPv6 VTEP, as the other nodes see it.
    pub fn vtep6_of(&self, k: usize) -> Vtep<Ipv6Addr> {
        let n = &self.felix[k].node;
        Vtep {
            node: format!("node-{}", n.index),
            node_ip: node6_of(n.subnet, n.index).ip(),
            tunnel_addr: tunnel6_of(n.index),
            mac: vxlan6_mac_of(n.index),
            blocks: vec![IpNetwork::V6(block6_of(n.index))],
        }
    }

    /// What confd sends node k for IPv6 VXLAN.
    pub fn vxlan6_input(&self, k: usize) -> Vxlan6Input {
        let n = &self.felix[k].node;
        Vxlan6Input {
            node: Some(node6_of(n.subnet, n.index)),
            local: Some(VxlanLocal {
                tunnel_addr: tunnel6_of(n.index),
                mac: vxlan6_mac_of(n.index),
            }),
            vteps: (0..self.felix.len())
                .filter(|j| *j != k)
                .map(|j| self.vtep6_of(j))
                .collect(),
        }
    }

    /// Dual stack: [`Cluster::program_vxlan`] with `pools` (IPv4 and IPv6
    /// pools), each node's IPv4 and IPv6 block local, and the IPv6 VTEPs
    /// ([`Cluster::vxlan6_input`]); call [`Cluster::add_ipv6_underlay`]
    /// first. Flushes each node and returns the reports.
    pub fn program_vxlan_dual(&self, pools: &[Pool]) -> Vec<DataplaneReport> {
        for (k, f) in self.felix.iter().enumerate() {
            f.handle.set_vxlan_v6(self.vxlan6_input(k)).unwrap();
        }
        self.program_vxlan(pools);
        for f in &self.felix {
            let i = f.node.index;
            f.handle
                .set_local_blocks(vec![
                    IpNetwork::V4(block_of(i)),
                    IpNetwork::V6(block6_of(i)),
                ])
                .unwrap();
        }
        self.felix.iter().map(FelixNode::flush).collect()
    }

    pub fn set_pools(&self, pools: &[Pool]) -> Vec<DataplaneReport> {
        for f in &self.felix {
            f.handle.set_pool_modes(pools.to_vec()).unwrap();
        }
        self.felix.iter().map(FelixNode::flush).collect()
    }
}

pub fn ping(from: &Netns, dst: Ipv4Addr, args: &[&str]) -> Result<String, String> {
    let dst = dst.to_string();
    let mut full = vec!["-c", "1", "-W", "2"];
    full.extend_from_slice(args);
    full.push(&dst);
    let out = from
        .command("ping")
        .args(&full)
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
