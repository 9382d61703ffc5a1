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

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use felix::calc::Pool;
use felix::dataplane::{
    Dataplane, DataplaneConfig, DataplaneHandle, DataplaneReport, DataplaneStatus,
};
use felix::routes::ReconcilerConfig;
use felix::tunnel::BackendChoice;
use felix::workload::{Workload, WorkloadSpec};
use felix::{Vtep, VxlanLocal};
use ipnetwork::{IpNetwork, Ipv4Network};
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
