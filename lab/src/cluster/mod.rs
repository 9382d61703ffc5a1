//! `calico-lab up | status | exec | down | demo`: a whole Calico cluster
//! on one machine. Nodes are namespaces on a routed underlay
//! ([`Topology`]), each running the real `calico-node` (which runs confd,
//! bird and felix); etcd has a namespace of its own; pods are namespaces
//! wired by the real CNI plugin; with `--tor`, BIRD 2 in the router
//! namespace peers over eBGP with every node. With `--datastore
//! kubernetes` a real kube-apiserver (its own namespace, on etcd) holds
//! Calico's resources instead ([`apiserver`]).
//!
//! ```text
//!   <lab>-etcd ────── etcd0 ┐
//!   <lab>-apiserver ── api0 ┤    (Kubernetes mode)
//!                       <lab>-router (bridges br0..brS-1, BIRD 2 as ToR)
//!          ┌────────────┼──────────────┐
//!   <lab>-node-0   <lab>-node-1   <lab>-node-2      calico-node in each
//!      │  │            │               │
//!   pod-0-0 pod-0-1  pod-1-0 ...                     veths made by CNI ADD
//! ```
//!
//! Everything is recorded under `/run/calico-lab/<lab>/` (state, logs,
//! run directories) as it is made, and every namespace is named
//! `<lab>-<role>`, so `down` removes all of it, also after `up` was
//! killed half-way; the lab outlives `up` itself.

pub mod apiserver;
pub mod chaos;
pub mod check;
pub mod peers;
pub mod policy;
pub mod policy_bench;
pub mod procs;
pub mod state;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::Ipv4Network;
use ippool_crd::defaults;

use crate::netns::{LabError, Netns, delete_namespace, list_namespaces, process_alive, veth};
use crate::topology::Topology;
pub use state::{Datastore, Ipip, Ipv6Mode, LabSpec, LabState, NodeState, PodState};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Spec(String),
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("datastore: {0}")]
    Datastore(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    Cni(String),
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    #[error(transparent)]
    Kube(#[from] apiserver::KubeError),
    #[error(
        "lab {0} is already up; look at it with `calico-lab status`, or remove it with `calico-lab down`"
    )]
    AlreadyUp(String),
    #[error("no lab {0} is up; start one with `calico-lab up`")]
    NotUp(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The running lab `name`, as recorded by `up`.
pub fn open(name: &str) -> Result<LabState, ClusterError> {
    state::check_name(name)?;
    match state::load(name)? {
        Some(s) if s.complete => Ok(s),
        _ => Err(ClusterError::NotUp(name.to_string())),
    }
}

/// Runs `f` with a datastore client on the lab's datastore (from a thread
/// in the router namespace, the only place etcd and the API server are
/// reachable from): etcd, or the API server as its admin.
pub(crate) fn with_datastore<T, E, F, Fut>(state: &LabState, f: F) -> Result<T, ClusterError>
where
    F: FnOnce(datastore::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
    T: Send + 'static,
{
    let router = Netns::existing(&state.router_ns)?;
    let endpoint = state.etcd_endpoint.clone();
    let kube = state.kube.as_ref().map(|k| k.control_plane.clone());
    router.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Datastore(format!("cannot start a runtime: {e}")))?;
        rt.block_on(async move {
            let client = match kube {
                None => datastore::connect_etcd(&endpoint)
                    .await
                    .map_err(|e| ClusterError::Datastore(e.to_string()))?,
                Some(cp) => {
                    let server = cp.url.clone();
                    datastore::Client::new(datastore::KubeBackend::new(
                        apiserver::admin_client(&cp).await?,
                        &server,
                        datastore::KubeOptions::default(),
                    ))
                }
            };
            f(client)
                .await
                .map_err(|e| ClusterError::Datastore(e.to_string()))
        })
    })?
}

/// One BGPPeer per node, from the node to the ToR on its subnet (and in
/// a dual-stack lab a second one, `tor6-<node>`, over IPv6).
fn write_tor_peers(state: &LabState) -> Result<(), ClusterError> {
    let peer = |name: String, node: &str, ip: String| {
        ippool_crd::BGPPeer::new(
            &name,
            ippool_crd::BGPPeerSpec {
                node: Some(node.to_string()),
                peer_ip: Some(ip),
                as_number: Some(procs::TOR_ASN),
                ..Default::default()
            },
        )
    };
    let peers: Vec<ippool_crd::BGPPeer> = state
        .nodes
        .iter()
        .flat_map(|n| {
            state
                .spec
                .has_ipv4()
                .then(|| peer(format!("tor-{}", n.name), &n.name, n.gateway.to_string()))
                .into_iter()
                .chain(
                    n.gateway6
                        .map(|gw6| peer(format!("tor6-{}", n.name), &n.name, gw6.to_string())),
                )
        })
        .collect();
    with_datastore(state, move |client| async move {
        for p in peers {
            match client.create(&p).await {
                Ok(_) | Err(datastore::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
}

/// BFD on the mesh: BGPConfiguration `default` with `nodeMeshBFD: {}`.
fn write_mesh_bfd(state: &LabState) -> Result<(), ClusterError> {
    let config: ippool_crd::BGPConfiguration = serde_json::from_value(serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "BGPConfiguration",
        "metadata": {"name": "default"},
        "spec": {"nodeMeshBFD": {}},
    }))
    .map_err(|e| ClusterError::Spec(format!("BGPConfiguration: {e}")))?;
    with_datastore(state, move |client| async move {
        client.create(&config).await?;
        Ok::<_, datastore::Error>(())
    })
}

/// Calico's route-reflector set-up: the mesh off (BGPConfiguration
/// `default`), nodes `node-0 ..` labelled `route-reflector=true` with a
/// cluster ID (written before their calico-node starts; registration
/// keeps both), and one BGPPeer making every node peer with them.
fn write_route_reflectors(state: &LabState) -> Result<(), ClusterError> {
    let bad = |e: serde_json::Error| ClusterError::Spec(format!("route reflector resources: {e}"));
    let config: ippool_crd::BGPConfiguration = serde_json::from_value(serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "BGPConfiguration",
        "metadata": {"name": "default"},
        "spec": {"nodeToNodeMeshEnabled": false, "asNumber": defaults::AS_NUMBER},
    }))
    .map_err(bad)?;
    let mut peer_spec = serde_json::json!({
        "nodeSelector": defaults::NODE_SELECTOR, "peerSelector": "route-reflector == 'true'",
    });
    if state.spec.bfd {
        peer_spec["bfd"] = serde_json::json!({});
    }
    let peer: ippool_crd::BGPPeer = serde_json::from_value(serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "BGPPeer",
        "metadata": {"name": "peer-with-route-reflectors"},
        "spec": peer_spec,
    }))
    .map_err(bad)?;
    let reflectors: Vec<ippool_crd::Node> = state
        .nodes
        .iter()
        .take(state.spec.route_reflectors)
        .map(|n| {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "projectcalico.org/v3", "kind": "Node",
                "metadata": {"name": n.name, "labels": {"route-reflector": "true"}},
                "spec": {"bgp": {
                    "ipv4Address": format!("{}/{}", n.ip, n.prefix_len),
                    "routeReflectorClusterID": "244.0.0.1",
                }},
            }))
            .map_err(bad)
        })
        .collect::<Result<_, _>>()?;
    // With the Kubernetes datastore the Calico node is the Kubernetes
    // Node: the reflectors' label and cluster ID are on the Node objects
    // the lab registers (`apiserver::node_object`).
    let reflectors = if state.kube.is_some() {
        Vec::new()
    } else {
        reflectors
    };
    with_datastore(state, move |client| async move {
        client.create(&config).await?;
        client.create(&peer).await?;
        for n in reflectors {
            client.create(&n).await?;
        }
        Ok::<_, datastore::Error>(())
    })
}

/// Each node's affine blocks `(block, node)`, from IPAM in the datastore.
pub fn blocks(state: &LabState) -> Result<Vec<(String, String)>, ClusterError> {
    let nodes: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
    with_datastore(state, |client| async move {
        let ipam = datastore::ipam::Ipam::new(client);
        let mut rows = Vec::new();
        for node in nodes {
            for block in ipam.host_blocks(&node).await? {
                rows.push((block.to_string(), node.clone()));
            }
        }
        Ok::<_, datastore::ipam::IpamError>(rows)
    })
}

fn node_state(state: &LabState, dir: &Path, n: &crate::topology::Node) -> NodeState {
    let subnet = &state.subnets[n.subnet.min(state.subnets.len().saturating_sub(1))];
    NodeState {
        name: n.name.clone(),
        ns: n.ns.name().to_string(),
        ip: n.ip(),
        prefix_len: n.addr.prefix(),
        subnet: n.subnet,
        gateway: subnet.ip(),
        ip6: None,
        gateway6: None,
        run_dir: dir.join("nodes").join(&n.name),
        pid: None,
    }
}

/// Builds lab `spec` and waits until it has converged. A lab of the same
/// name left half-built by an interrupted `up` is removed first; a
/// complete one is an error. On failure everything made is removed.
/// `k8s_bin` is where `scripts/k8s-build.sh` put the Kubernetes binaries
/// (needed for `--datastore kubernetes` only).
pub fn up(
    spec: &LabSpec,
    bin_dir: &Path,
    k8s_bin: Option<&Path>,
    out: &mut dyn Write,
) -> Result<LabState, ClusterError> {
    spec.validate()?;
    for bin in ["calico-node", "confd", "bird", "felix", "calico"] {
        if !bin_dir.join(bin).is_file() {
            return Err(ClusterError::Spec(format!(
                "{} is missing; build the workspace first (`cargo build --release --bins`)",
                bin_dir.join(bin).display()
            )));
        }
    }
    let k8s_bin = match spec.datastore {
        Datastore::Kubernetes => Some(apiserver::check_bin_dir(k8s_bin)?),
        Datastore::Etcd => None,
    };
    match state::load(&spec.name) {
        Ok(Some(s)) if s.complete => return Err(ClusterError::AlreadyUp(spec.name.clone())),
        _ => {}
    }
    let leftovers = list_namespaces()
        .iter()
        .any(|ns| state::is_lab_namespace(&spec.name, ns))
        || state::lab_dir(&spec.name).exists();
    if leftovers {
        let _ = writeln!(
            out,
            "removing what an interrupted `calico-lab up` left behind"
        );
        down(&spec.name)?;
    }
    match build(spec, bin_dir, k8s_bin.as_deref(), out) {
        Ok(s) => Ok(s),
        Err(e) => {
            let _ = writeln!(out, "up failed: {e}; removing what was made");
            log_errors(&state::lab_dir(&spec.name).join("logs"), out);
            if let Err(e2) = down(&spec.name) {
                let _ = writeln!(out, "cleaning up failed too: {e2}");
            }
            Err(e)
        }
    }
}

fn build(
    spec: &LabSpec,
    bin_dir: &Path,
    k8s_bin: Option<&Path>,
    out: &mut dyn Write,
) -> Result<LabState, ClusterError> {
    let started = std::time::Instant::now();
    let dir = state::lab_dir(&spec.name);
    std::fs::create_dir_all(dir.join("logs")).map_err(io_err(&dir))?;
    let prefix = format!("{}-", spec.name);
    let mut st = LabState {
        spec: spec.clone(),
        bin_dir: bin_dir.to_path_buf(),
        subnets: Vec::new(),
        router_ns: format!("{prefix}router"),
        etcd_ns: format!("{prefix}etcd"),
        etcd_endpoint: procs::etcd_endpoint(spec),
        etcd_pid: None,
        tor_pid: None,
        kube: None,
        nodes: Vec::new(),
        pods: Vec::new(),
        complete: false,
    };
    state::save(&dir, &st)?;

    let _ = writeln!(
        out,
        "building {}: {} nodes on {} subnets, pool {} (IPIP {}, NAT-outgoing {}){}, datastore {}{}",
        spec.name,
        spec.nodes,
        spec.subnets,
        spec.pool,
        spec.ipip.as_calico(),
        spec.nat_outgoing,
        spec.pool6()
            .map(|p| format!(" and IPv6 pool {p} (no encapsulation)"))
            .unwrap_or_default(),
        spec.datastore.as_str(),
        if spec.tor { ", BIRD 2 as ToR" } else { "" }
    );
    raise_neighbour_limits(out);
    if spec.ipip_backends.iter().any(|b| b == "userspace") {
        load_ipip_module(out);
    }
    let topo = Topology::build_named(&prefix, spec.subnets, spec.nodes)?;
    topo.keep();
    st.subnets = topo.subnets().iter().map(|s| s.cidr).collect();
    st.nodes = topo
        .nodes()
        .iter()
        .map(|n| node_state(&st, &dir, n))
        .collect();
    if spec.pool6().is_some() {
        topo.enable_ipv6_router()?;
        for (k, n) in st.nodes.iter_mut().enumerate() {
            let (ip6, gw6) = topo.enable_ipv6_node(k)?;
            n.ip6 = Some(ip6);
            n.gateway6 = Some(gw6);
        }
    }
    // IPv6 only: the underlay loses its IPv4 addresses (and with them
    // every IPv4 route), the router's bridges and the nodes' eth0 alike.
    if !spec.has_ipv4() {
        topo.remove_ipv4_router()?;
        for k in 0..st.nodes.len() {
            topo.remove_ipv4_node(k)?;
        }
    }
    state::save(&dir, &st)?;

    // etcd: its own namespace, one leg to the router (IPv6 in an
    // IPv6-only lab, whose nodes reach it over IPv6).
    let etcd_ns = Netns::create_named(&st.etcd_ns)?;
    etcd_ns.keep();
    veth(&etcd_ns, "eth0", topo.router(), "etcd0")?;
    if spec.has_ipv4() {
        etcd_ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", procs::ETCD_IP),
            "dev",
            "eth0",
        ])?;
        etcd_ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &procs::ETCD_ROUTER_IP.to_string(),
        ])?;
        topo.router().ip(&[
            "addr",
            "add",
            &format!("{}/24", procs::ETCD_ROUTER_IP),
            "dev",
            "etcd0",
        ])?;
    } else {
        etcd_ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", procs::ETCD_IP6),
            "dev",
            "eth0",
            "nodad",
        ])?;
        etcd_ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &procs::ETCD_ROUTER_IP6.to_string(),
        ])?;
        topo.router().ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", procs::ETCD_ROUTER_IP6),
            "dev",
            "etcd0",
            "nodad",
        ])?;
    }
    // Kubernetes mode: the API server's namespace beside etcd's, and its
    // certificates; etcd is then the build's 3.6 (what the API server
    // wants), holding only the API server's data.
    if let Some(k8s_bin) = k8s_bin {
        st.kube = Some(apiserver::prepare(&st, topo.router(), &dir, k8s_bin)?);
        state::save(&dir, &st)?;
    }
    st.etcd_pid = Some(procs::start_etcd(
        &etcd_ns,
        topo.router(),
        &dir,
        &procs::etcd_binary(&st),
        procs::etcd_ip(spec),
        st.kube.is_some(),
    )?);
    state::save(&dir, &st)?;
    let _ = writeln!(out, "etcd is up at {}", st.etcd_endpoint);

    if st.kube.is_some() {
        start_kubernetes(&mut st, &dir, out)?;
    }
    if spec.route_reflectors > 0 {
        write_route_reflectors(&st)?;
    } else if spec.bfd {
        write_mesh_bfd(&st)?;
    }
    if spec.tor {
        write_tor_peers(&st)?;
        st.tor_pid = Some(procs::start_tor(&st, &dir)?);
        state::save(&dir, &st)?;
    }
    // The datastore's CPU while the nodes converge, beside the time it took.
    let datastore_cpu = |st: &LabState| -> Vec<(&'static str, Option<check::Usage>)> {
        check::datastore_processes(st)
            .into_iter()
            .map(|(name, pid)| (name, check::usage(pid)))
            .collect()
    };
    let cpu_before = datastore_cpu(&st);
    for i in 0..st.nodes.len() {
        if st.kube.is_some() {
            apiserver::write_node_kubeconfig(&st, &st.nodes[i])?;
        }
        let pid = procs::start_calico_node(&st, &st.nodes[i], &dir)?;
        st.nodes[i].pid = Some(pid);
    }
    let nodes_started = std::time::Instant::now();
    state::save(&dir, &st)?;
    let _ = writeln!(
        out,
        "calico-node started on {} nodes{}",
        st.nodes.len(),
        match &st.kube {
            Some(k) => format!(
                ", each with a token of ServiceAccount {}/{}",
                k.service_account.namespace, k.service_account.name
            ),
            None => String::new(),
        }
    );

    for k in 0..st.nodes.len() {
        for _ in 0..spec.pods_per_node {
            add_pod(&mut st, k)?;
        }
    }
    let _ = writeln!(
        out,
        "{} pods made through the CNI plugin{}",
        st.pods.len(),
        if st.kube.is_some() {
            format!(
                " (each a Pod object in namespace {} first)",
                apiserver::POD_NAMESPACE
            )
        } else {
            String::new()
        }
    );
    let timeout = Duration::from_secs(60 + 3 * spec.nodes as u64);
    let took = check::wait_converged(&st, &dir, timeout)?;
    st.complete = true;
    state::save(&dir, &st)?;
    let _ = writeln!(
        out,
        "converged {:.1} s after the last calico-node started ({:.1} s after the last pod was made); up took {:.1} s",
        nodes_started.elapsed().as_secs_f64(),
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for ((name, before), (_, after)) in cpu_before.iter().zip(datastore_cpu(&st)) {
        if let (Some(b), Some(a)) = (before, after) {
            let _ = writeln!(
                out,
                "datastore: {name} used {:.1} s CPU while the nodes started and converged; RSS {:.1} MB (peak {:.1} MB)",
                a.cpu_s - b.cpu_s,
                a.rss_kb as f64 / 1024.0,
                a.peak_kb as f64 / 1024.0
            );
        }
    }
    Ok(st)
}

/// Kubernetes mode, once etcd runs: the API server (ready), the
/// controller-manager, the CRDs and calico-node's RBAC objects, and every
/// node registered as a Node.
fn start_kubernetes(
    st: &mut LabState,
    dir: &Path,
    out: &mut dyn Write,
) -> Result<(), ClusterError> {
    let Some(ks) = st.kube.clone() else {
        return Ok(());
    };
    let pid = apiserver::spawn_apiserver(&ks, dir)?;
    if let Some(k) = st.kube.as_mut() {
        k.apiserver_pid = Some(pid);
    }
    state::save(dir, st)?;
    let took = apiserver::wait_ready(st, pid, dir)?;
    let _ = writeln!(
        out,
        "kube-apiserver is ready at {} ({:.1} s after it started)",
        ks.control_plane.url,
        took.as_secs_f64()
    );
    let cm = apiserver::start_controller_manager(&ks, dir)?;
    if let Some(k) = st.kube.as_mut() {
        k.controller_manager_pid = Some(cm);
    }
    state::save(dir, st)?;
    let kinds = apiserver::install(st)?;
    let _ = writeln!(
        out,
        "kubectl applied deploy/crds.yaml and, from deploy/calico-node.yaml, {}",
        kinds.join(", ")
    );
    let nodes: Vec<(NodeState, bool)> = st
        .nodes
        .iter()
        .enumerate()
        .map(|(k, n)| (n.clone(), st.is_route_reflector(k)))
        .collect();
    apiserver::register_nodes(st, &nodes)?;
    let _ = writeln!(
        out,
        "{} Node objects registered, each with its InternalIP",
        nodes.len()
    );
    Ok(())
}

/// The kernel's IPv4 neighbour (ARP) table is counted across all network
/// namespaces together, and its default hard limit (1024 entries) is
/// reached by a lab of a few dozen nodes: every node knows every node on
/// its subnet, every pod its node. Past it, ARP resolution fails and
/// packets (BGP SYNs first) are dropped ("neighbor table overflow" in
/// dmesg). Large real clusters raise the same limits; the lab raises
/// them (never lowers them) on the host.
/// The error lines (ERROR, WARN, panics) of the lab's logs, the last few
/// of each file, printed before a failed `up` removes them.
fn log_errors(dir: &Path, out: &mut dyn Write) {
    const PER_FILE: usize = 6;
    const IN_ALL: usize = 60;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    let mut shown = 0;
    for f in files {
        let Ok(text) = std::fs::read(&f) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.contains("panicked"))
            .collect();
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        for l in &bad[bad.len().saturating_sub(PER_FILE)..] {
            if shown == IN_ALL {
                let _ = writeln!(out, "  (more in the logs)");
                return;
            }
            let _ = writeln!(out, "  {name}: {}", l.chars().take(400).collect::<String>());
            shown += 1;
        }
    }
}

/// Loads the kernel's ipip module, where it has one, before any node
/// starts: the nodes share this kernel, and the module cannot load once a
/// userspace tunnel has taken the name `tunl0` in any namespace (its
/// catch-all `tunl0` is made in every one), which would leave the
/// kernel-backend nodes of a mixed lab without a tunnel. Loaded first,
/// the userspace devices take their fallback name. Without the module
/// (or `modprobe`) nothing changes: the kernel has no ipip to block.
fn load_ipip_module(out: &mut dyn Write) {
    if Path::new("/sys/module/ipip").exists() {
        return;
    }
    let loaded = std::process::Command::new("modprobe")
        .args(["-q", "ipip"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if loaded && Path::new("/sys/module/ipip").exists() {
        let _ = writeln!(
            out,
            "loaded the ipip module first (userspace tunnels share this kernel)"
        );
    }
}

fn raise_neighbour_limits(out: &mut dyn Write) {
    for (key, want) in [
        ("gc_thresh1", 4096u64),
        ("gc_thresh2", 8192),
        ("gc_thresh3", 16384),
    ] {
        let path = format!("/proc/sys/net/ipv4/neigh/default/{key}");
        let Some(current) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            continue;
        };
        if current < want {
            match std::fs::write(&path, want.to_string()) {
                Ok(()) => {
                    let _ = writeln!(
                        out,
                        "raised net.ipv4.neigh.default.{key} from {current} to {want}"
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        out,
                        "could not raise net.ipv4.neigh.default.{key} ({e}); large labs may lose ARP entries"
                    );
                }
            }
        }
    }
}

/// Makes a pod on node `k` through the CNI plugin (retrying while the
/// node's felix is still starting) and records it.
pub fn add_pod(st: &mut LabState, k: usize) -> Result<PodState, ClusterError> {
    add_pod_as(st, k, &apiserver::PodMeta::default())
}

/// [`add_pod`] in Kubernetes namespace `meta.namespace`, with its labels
/// and named ports: on its Pod object in Kubernetes mode (the namespace
/// must exist, [`apiserver::create_namespace`]); in etcd mode the labels
/// go on its WorkloadEndpoint before the ADD ([`crate::labels`]; named
/// ports and namespace labels need Kubernetes mode).
pub fn add_pod_as(
    st: &mut LabState,
    k: usize,
    meta: &apiserver::PodMeta,
) -> Result<PodState, ClusterError> {
    add_pod_timed(st, k, meta).map(|(pod, _)| pod)
}

/// When a pod's CNI ADD (the call that succeeded) was made and returned,
/// without what the lab does around it as kubelet (the Pod object, its
/// status).
#[derive(Debug, Clone, Copy)]
pub struct CniTiming {
    pub started: std::time::Instant,
    pub returned: std::time::Instant,
}

/// [`add_pod_as`], also saying when the CNI ADD ran.
pub fn add_pod_timed(
    st: &mut LabState,
    k: usize,
    meta: &apiserver::PodMeta,
) -> Result<(PodState, CniTiming), ClusterError> {
    let dir = state::lab_dir(&st.spec.name);
    let node = st
        .nodes
        .get(k)
        .cloned()
        .ok_or_else(|| ClusterError::Spec(format!("no node {k}")))?;
    let j = (0..)
        .find(|j| {
            let name = format!("pod-{k}-{j}");
            !st.pods.iter().any(|p| p.name == name)
        })
        .unwrap_or(0);
    let name = format!("pod-{k}-{j}");
    let ns = Netns::create_named(&format!("{}{name}", st.prefix()))?;
    ns.keep();
    let mut pod = PodState {
        name: name.clone(),
        namespace: meta.namespace.clone(),
        node: node.name.clone(),
        ns: ns.name().to_string(),
        ip: None,
        ip6: None,
    };
    // Dual stack: the pod's interface (made by the CNI ADD) skips
    // duplicate address detection, as the underlay's do, so its IPv6
    // address is usable at once instead of a second or two later.
    if st.spec.pool6().is_some() {
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
    }
    st.pods.push(pod.clone());
    state::save(&dir, st)?;
    // kubelet only sets up the network of a pod it was given.
    if st.kube.is_some() {
        apiserver::create_pod(st, &name, &node.name, meta)?;
    } else if !meta.labels.is_empty() {
        let (node, ns, pod, labels) = (
            node.name.clone(),
            meta.namespace.clone(),
            name.clone(),
            meta.labels.clone(),
        );
        with_datastore(st, move |c| async move {
            crate::labels::label_pod(&c, &node, &ns, &pod, &labels).await
        })?;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let (result, timing) = loop {
        let started = std::time::Instant::now();
        match procs::cni(st, &node, "ADD", &name, &ns.path()) {
            Ok(r) => {
                let returned = std::time::Instant::now();
                break (r, CniTiming { started, returned });
            }
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(ClusterError::Timeout(format!("{e} (for 90 s)")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    pod.ip = procs::result_ip(&result);
    if st.spec.has_ipv4() && pod.ip.is_none() {
        return Err(ClusterError::Cni(format!(
            "CNI ADD of {name} returned no IPv4 address: {result}"
        )));
    }
    if !st.spec.has_ipv4() && pod.ip.is_some() {
        return Err(ClusterError::Cni(format!(
            "CNI ADD of {name} returned an IPv4 address in an IPv6-only lab (assign_ipv4 is false): {result}"
        )));
    }
    if st.spec.pool6().is_some() {
        pod.ip6 = procs::result_ip6(&result);
        if pod.ip6.is_none() {
            return Err(ClusterError::Cni(format!(
                "CNI ADD of {name} returned no IPv6 address in a lab with IPv6 ({}): {result}",
                st.spec.ipv6.as_str()
            )));
        }
    }
    if let (Some(_), Some(ip)) = (&st.kube, pod.ip) {
        apiserver::set_pod_running(st, &name, ip.into())?;
    }
    if let Some(p) = st.pods.iter_mut().find(|p| p.name == name) {
        *p = pod.clone();
    }
    state::save(&dir, st)?;
    Ok((pod, timing))
}

/// Deletes a pod through the CNI plugin and removes its namespace.
pub fn del_pod(st: &mut LabState, name: &str) -> Result<(), ClusterError> {
    let dir = state::lab_dir(&st.spec.name);
    let pod = st
        .pods
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| ClusterError::Spec(format!("no pod {name}")))?;
    let node = st
        .node(&pod.node)
        .cloned()
        .ok_or_else(|| ClusterError::Spec(format!("no node {}", pod.node)))?;
    let path = Path::new("/run/netns").join(&pod.ns);
    procs::cni(st, &node, "DEL", name, &path)?;
    delete_namespace(&pod.ns);
    if st.kube.is_some() {
        apiserver::delete_pod(st, name)?;
    }
    st.pods.retain(|p| p.name != name);
    state::save(&dir, st)
}

/// Adds a brand-new node to a running lab (on subnet `subnet`) and starts
/// its calico-node; returns it. Its convergence is the caller's to wait
/// for.
pub fn add_node(st: &mut LabState, subnet: usize) -> Result<NodeState, ClusterError> {
    let dir = state::lab_dir(&st.spec.name);
    let nodes: Vec<(usize, Ipv4Network)> = st
        .nodes
        .iter()
        .map(|n| {
            Ipv4Network::new(n.ip, n.prefix_len)
                .map(|a| (n.subnet, a))
                .map_err(|e| ClusterError::Spec(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let mut topo = Topology::reopen_named(&st.prefix(), &st.subnets, &nodes)?;
    let node = topo.add_node(subnet)?.clone();
    node.ns.keep();
    let mut ns = node_state(st, &dir, &node);
    if st.spec.pool6().is_some() {
        let (ip6, gw6) = topo.enable_ipv6_node(node.index)?;
        ns.ip6 = Some(ip6);
        ns.gateway6 = Some(gw6);
    }
    if !st.spec.has_ipv4() {
        topo.remove_ipv4_node(node.index)?;
    }
    st.nodes.push(ns.clone());
    state::save(&dir, st)?;
    if st.kube.is_some() {
        apiserver::register_nodes(st, &[(ns.clone(), false)])?;
        apiserver::write_node_kubeconfig(st, &ns)?;
    }
    ns.pid = Some(procs::start_calico_node(st, &ns, &dir)?);
    if let Some(last) = st.nodes.last_mut() {
        *last = ns.clone();
    }
    state::save(&dir, st)?;
    Ok(ns)
}

/// What `down` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DownReport {
    pub namespaces: usize,
    pub processes: usize,
}

/// Removes lab `name`: every process and namespace (from the state file
/// and, in case it is lost, by name), then its directory.
pub fn down(name: &str) -> Result<DownReport, ClusterError> {
    state::check_name(name)?;
    let mut report = DownReport::default();
    let recorded = state::load(name).ok().flatten();
    let mut names: Vec<String> = list_namespaces()
        .into_iter()
        .filter(|ns| state::is_lab_namespace(name, ns))
        .collect();
    // Nodes first (their agents stop routing), the router, the API
    // server and etcd last.
    names.sort_by_key(|n| {
        (
            n.ends_with("-router") || n.ends_with("-etcd") || n.ends_with("-apiserver"),
            n.clone(),
        )
    });
    for ns in &names {
        report.processes += delete_namespace(ns).len();
        report.namespaces += 1;
    }
    // Recorded processes that somehow left their namespace.
    if let Some(s) = &recorded {
        let pids = s
            .nodes
            .iter()
            .filter_map(|n| n.pid)
            .chain(s.etcd_pid)
            .chain(s.tor_pid)
            .chain(s.kube.iter().flat_map(|k| {
                [k.apiserver_pid, k.controller_manager_pid]
                    .into_iter()
                    .flatten()
            }));
        for pid in pids {
            if process_alive(pid) && pid_in_lab(pid, name) {
                // SAFETY: kill(2) on a pid this lab started (checked by
                // its command line naming the lab's directory).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                report.processes += 1;
            }
        }
    }
    let dir = state::lab_dir(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    }
    // The root goes too once no lab is left in it.
    let _ = std::fs::remove_dir(state::root_dir());
    Ok(report)
}

fn pid_in_lab(pid: i32, name: &str) -> bool {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = state::lab_dir(name);
    let needle = needle.to_string_lossy();
    [environ, cmdline]
        .iter()
        .any(|b| String::from_utf8_lossy(b).contains(needle.as_ref()))
}

/// `calico-lab status`: nodes, BGP sessions per node, blocks, pods.
pub fn status(st: &LabState) -> String {
    use std::fmt::Write as _;
    let dir = state::lab_dir(&st.spec.name);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "lab {}: {} nodes, {} subnets, pool {} (IPIP {}, NAT-outgoing {}){}, datastore {}{}{}{}\n",
        st.spec.name,
        st.nodes.len(),
        st.subnets.len(),
        st.spec.pool,
        st.spec.ipip.as_calico(),
        st.spec.nat_outgoing,
        st.spec
            .pool6()
            .map(|p| format!(", IPv6 pool {p}"))
            .unwrap_or_default(),
        match &st.kube {
            Some(k) => format!("kubernetes ({})", k.control_plane.url),
            None => format!("etcd ({})", st.etcd_endpoint),
        },
        if st.spec.tor {
            ", ToR BIRD 2 (AS 65000)"
        } else {
            ""
        },
        if st.spec.route_reflectors > 0 {
            format!(", {} route reflectors, no mesh", st.spec.route_reflectors)
        } else {
            String::new()
        },
        if st.spec.bfd { ", BFD" } else { "" }
    );
    if st.kube.is_some() {
        let _ = writeln!(s, "{}\n", apiserver::describe(st));
    }
    let _ = writeln!(
        s,
        "NODE       ADDRESS          SUBNET  NAMESPACE                    CALICO-NODE"
    );
    for n in &st.nodes {
        let alive = n.pid.is_some_and(process_alive);
        let _ = writeln!(
            s,
            "{:<10} {:<16} {:<7} {:<28} {}",
            n.name,
            if st.spec.has_ipv4() {
                format!("{}/{}", n.ip, n.prefix_len)
            } else {
                "no IPv4".to_string()
            },
            n.subnet,
            n.ns,
            match (n.pid, alive) {
                (Some(p), true) => format!("running (pid {p})"),
                _ => "NOT RUNNING".to_string(),
            }
        );
    }
    for n in st.nodes.iter().filter(|n| n.ip6.is_some()) {
        let _ = writeln!(
            s,
            "{:<10} IPv6 {}/{}",
            n.name,
            n.ip6.map_or(String::new(), |ip| ip.to_string()),
            crate::topology::UNDERLAY6_PREFIX
        );
    }
    for n in &st.nodes {
        let _ = writeln!(s, "\n{} BGP sessions:", n.name);
        s.push_str(&check::peer_table(st, n));
    }
    if st.spec.tor {
        let _ = writeln!(s, "\nToR (BIRD 2 in {}):", st.router_ns);
        s.push_str(
            &procs::birdc(&dir, &["show", "protocols"])
                .unwrap_or_else(|| "BIRD 2 does not answer\n".into()),
        );
    }
    let _ = writeln!(s, "\nBLOCK              AFFINE TO");
    match blocks(st) {
        Ok(rows) => {
            for (block, node) in rows {
                let _ = writeln!(s, "{block:<18} {node}");
            }
        }
        Err(e) => {
            let _ = writeln!(s, "cannot read blocks: {e}");
        }
    }
    let _ = writeln!(s, "\nPOD        NODE       IP               NAMESPACE");
    for p in &st.pods {
        let _ = writeln!(
            s,
            "{:<10} {:<10} {:<16} {}{}",
            p.name,
            p.node,
            p.ip.map_or("-".to_string(), |ip| ip.to_string()),
            p.ns,
            p.ip6.map_or(String::new(), |ip| format!("  IPv6 {ip}"))
        );
    }
    s
}

/// The namespace of a node, pod, `router`, `etcd` or (Kubernetes mode)
/// `apiserver` of the lab.
pub fn target_namespace(st: &LabState, target: &str) -> Option<String> {
    match target {
        "router" => Some(st.router_ns.clone()),
        "etcd" => Some(st.etcd_ns.clone()),
        "apiserver" => st.kube.as_ref().map(|k| k.ns.clone()),
        _ => st
            .nodes
            .iter()
            .find(|n| n.name == target)
            .map(|n| n.ns.clone())
            .or_else(|| {
                st.pods
                    .iter()
                    .find(|p| p.name == target)
                    .map(|p| p.ns.clone())
            }),
    }
}

/// An address outside the cluster (on the router's loopback), for the
/// NAT-outgoing check.
pub const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// Dual stack: the IPv6 address outside the cluster (on the router's
/// loopback, in the documentation prefix), for the IPv6 NAT-outgoing
/// check.
pub const EXTERNAL_IP6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x10);
