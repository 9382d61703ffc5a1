//! The processes of a lab: etcd, one calico-node per node, BIRD 2 as the
//! ToR, and CNI plugin calls. Long-running ones are detached (their own
//! session, output to a log file) so they outlive `calico-lab up`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ippool_crd::defaults;

use super::ClusterError;
use super::state::{LabSpec, LabState, NodeState};
use crate::cni::{self, CniCall};
use crate::etcd::{self, EtcdSpec};
use crate::netns::Netns;

/// The AS of the ToR BIRD (the nodes keep Calico's default,
/// [`defaults::AS_NUMBER`]).
pub const TOR_ASN: u32 = 65000;

/// The etcd namespace's address (its leg to the router) and the router's.
pub const ETCD_IP: Ipv4Addr = Ipv4Addr::new(172, 29, 255, 1);
pub const ETCD_ROUTER_IP: Ipv4Addr = Ipv4Addr::new(172, 29, 255, 254);
pub const ETCD_PORT: u16 = 2379;
/// In an IPv6-only lab, the etcd namespace's and the router's addresses
/// on that leg (a /64; the leg has no IPv4 then).
pub const ETCD_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x29, 0, 0, 0, 0, 0, 1);
pub const ETCD_ROUTER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x29, 0, 0, 0, 0, 0, 0xfe);

/// Where etcd listens for clients in a lab of `spec`: [`ETCD_IP`], or
/// [`ETCD_IP6`] in an IPv6-only lab (whose nodes have no IPv4 to reach
/// it over).
pub fn etcd_ip(spec: &LabSpec) -> IpAddr {
    if spec.has_ipv4() {
        IpAddr::V4(ETCD_IP)
    } else {
        IpAddr::V6(ETCD_IP6)
    }
}

/// `ETCD_ENDPOINTS` of a lab of `spec` (`http://[fd00:29::1]:2379` when
/// IPv6 only).
pub fn etcd_endpoint(spec: &LabSpec) -> String {
    format!("http://{}", SocketAddr::new(etcd_ip(spec), ETCD_PORT))
}
/// etcd's peer port, on the etcd namespace's loopback (one member).
const ETCD_PEER_PORT: u16 = 2380;

/// Debian's BIRD 2.
pub const BIRD2: &str = "/usr/sbin/bird";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Starts `program args` inside namespace `ns` in a session of its own,
/// stdout and stderr appended to `log`; returns its pid. It is not killed
/// when this process exits (`down` kills it with its namespace).
pub fn spawn_detached(
    ns: &str,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> Result<i32, ClusterError> {
    let f = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(log))?;
    let f2 = f.try_clone().map_err(io_err(log))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2);
    // SAFETY: setsid(2) in the forked child before exec touches no memory
    // shared with the parent; it only detaches from our session, so a
    // Ctrl-C on `calico-lab up` does not reach the cluster.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| ClusterError::Io {
        path: program.to_path_buf(),
        source,
    })?;
    // `ip netns exec` execs the program: the child's pid is the program's.
    i32::try_from(child.id())
        .map_err(|_| ClusterError::Spec(format!("pid {} out of range", child.id())))
}

/// The etcd the lab runs: Debian's, or in Kubernetes mode the 3.6 that
/// `scripts/k8s-build.sh` builds beside kube-apiserver (which wants 3.5
/// or newer for its watch cache).
pub fn etcd_binary(state: &LabState) -> PathBuf {
    match &state.kube {
        Some(k) => k.control_plane.bin_dir.join("etcd"),
        None => PathBuf::from("etcd"),
    }
}

/// Starts `binary` (see [`etcd_binary`]) in the etcd namespace and waits
/// until it is healthy (as seen from the router, the way the nodes and
/// the API server reach it). `for_apiserver`: etcd 3.6 under
/// kube-apiserver, which writes every few seconds (leases, events,
/// status) and gives up on a write after a few seconds: on this
/// machine's shared disk an fsync took longer than that ("etcdserver:
/// request timed out" failing `up`), so that etcd does not fsync. A
/// lab's data does not outlive the machine, and a SIGKILL of etcd (`chaos
/// etcd`) loses nothing without fsync: the page cache outlives the
/// process.
pub fn start_etcd(
    etcd_ns: &Netns,
    router: &Netns,
    dir: &Path,
    binary: &Path,
    client: IpAddr,
    for_apiserver: bool,
) -> Result<i32, ClusterError> {
    let data = dir.join("etcd");
    std::fs::create_dir_all(&data).map_err(io_err(&data))?;
    let spec = EtcdSpec {
        name: "lab",
        data_dir: &data,
        client: SocketAddr::new(client, ETCD_PORT),
        peer: SocketAddr::from((Ipv4Addr::LOCALHOST, ETCD_PEER_PORT)),
        log_level: "warn",
        no_fsync: for_apiserver,
    };
    let log = dir.join("logs/etcd.log");
    let pid = spawn_detached(etcd_ns.name(), binary, &spec.args(), &[], &log)?;
    let client = spec.client;
    router.run(move || etcd::wait_healthy(client, etcd::START_TIMEOUT, || None, &log))??;
    Ok(pid)
}

/// Starts calico-node on `node`, the way the DaemonSet would: Calico's
/// environment variables, its own run directory. In Kubernetes mode it
/// reaches the API server with the kubeconfig holding its
/// ServiceAccount's token (`apiserver::write_node_kubeconfig`), as the
/// DaemonSet's pod does with its projected token.
pub fn start_calico_node(
    state: &LabState,
    node: &NodeState,
    dir: &Path,
) -> Result<i32, ClusterError> {
    std::fs::create_dir_all(&node.run_dir).map_err(io_err(&node.run_dir))?;
    let spec = &state.spec;
    let datastore = match &state.kube {
        None => [
            ("DATASTORE_TYPE", "etcdv3".to_string()),
            ("ETCD_ENDPOINTS", state.etcd_endpoint.clone()),
        ],
        Some(_) => [
            ("DATASTORE_TYPE", "kubernetes".to_string()),
            ("KUBECONFIG", node.kubeconfig().display().to_string()),
        ],
    };
    // IPv4: found on eth0; in an IPv6-only lab none (Calico's `IP=none`),
    // and with no IPv4 address to take it from, the BGP router ID is a
    // hash of the node's name (`CALICO_ROUTER_ID=hash`).
    let ipv4 = if spec.has_ipv4() {
        vec![
            ("IP", "autodetect".to_string()),
            ("IP_AUTODETECTION_METHOD", "interface=eth0".to_string()),
        ]
    } else {
        vec![
            ("IP", "none".to_string()),
            ("CALICO_ROUTER_ID", "hash".to_string()),
        ]
    };
    // The node's place in the lab (per-node tunnel backends).
    let index = state.nodes.iter().position(|n| n.name == node.name);
    let env: Vec<(String, String)> = [("NODENAME", node.name.clone())]
        .into_iter()
        .chain(ipv4)
        .chain(datastore)
        .chain([
            ("CALICO_IPV4POOL_CIDR", spec.pool.to_string()),
            // IPv6 only: the default IPv4 pool is still created, as Calico
            // creates it, but without encapsulation: a node with no IPv4
            // address has no use for an IP-in-IP tunnel address from it.
            (
                "CALICO_IPV4POOL_IPIP",
                if spec.has_ipv4() {
                    spec.ipip.as_calico()
                } else {
                    super::Ipip::Never.as_calico()
                }
                .to_string(),
            ),
            (
                "CALICO_IPV4POOL_VXLAN",
                spec.vxlan
                    .unwrap_or(super::Ipip::Never)
                    .as_calico()
                    .to_string(),
            ),
            (
                "CALICO_NETWORKING_BACKEND",
                spec.networking_backend
                    .clone()
                    .unwrap_or_else(|| "bird".to_string()),
            ),
            (
                "CALICO_IPV4POOL_NAT_OUTGOING",
                spec.nat_outgoing.to_string(),
            ),
            ("CALICO_RUN_DIR", node.run_dir.display().to_string()),
            (
                "FELIX_STATEDIR",
                node.run_dir.join("state").display().to_string(),
            ),
        ])
        .map(|(k, v)| (k.to_string(), v))
        // The nodes log at info (bird and confd at the BGPConfiguration's
        // logSeverityScreen) unless the user of the lab asks for more, which
        // then pins every level (`RUST_LOG=info,bird::bfd=debug calico-lab up`).
        .chain(
            std::env::var("RUST_LOG")
                .ok()
                .map(|v| ("RUST_LOG".to_string(), v)),
        )
        .chain(
            spec.block_size
                .map(|b| ("CALICO_IPV4POOL_BLOCK_SIZE".to_string(), b.to_string())),
        )
        // The IPAM garbage collector's timing, passed on from the lab's own
        // environment (`CALICO_IPAM_GC_GRACE_PERIOD=5s calico-lab up ...`) so
        // a test need not wait Calico's 15 minutes.
        .chain(
            ["CALICO_IPAM_GC_INTERVAL", "CALICO_IPAM_GC_GRACE_PERIOD"]
                .into_iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))),
        )
        // Dual stack and IPv6 only: the IPv6 address found on eth0 as the
        // IPv4 one is, felix's IPv6 on, and the IPv6 pool (no IP-in-IP for
        // IPv6: routed natively, through the router between subnets).
        .chain(spec.pool6().into_iter().flat_map(|pool6| {
            [
                ("IP6", "autodetect".to_string()),
                ("IP6_AUTODETECTION_METHOD", "interface=eth0".to_string()),
                ("FELIX_IPV6SUPPORT", "true".to_string()),
                ("CALICO_IPV6POOL_CIDR", pool6.to_string()),
                (
                    "CALICO_IPV6POOL_NAT_OUTGOING",
                    spec.nat_outgoing.to_string(),
                ),
            ]
            .map(|(k, v)| (k.to_string(), v))
        }))
        .chain(
            index
                .and_then(|i| spec.ipip_backend(i))
                .map(|b| ("FELIX_IPIPBACKEND".to_string(), b.to_string())),
        )
        .chain(
            index
                .and_then(|i| spec.vxlan_backend(i))
                .map(|b| ("FELIX_VXLANBACKEND".to_string(), b.to_string())),
        )
        .collect();
    spawn_detached(
        &node.ns,
        &state.bin_dir.join("calico-node"),
        &["run".to_string()],
        &env,
        &dir.join(format!("logs/{}.log", node.name)),
    )
}

/// BIRD 2's configuration for the ToR: eBGP with every node, routes it
/// learns go into the router's kernel table, nothing is sent back.
pub fn tor_config(state: &LabState) -> String {
    let router_id = state.nodes.first().map_or(ETCD_ROUTER_IP, |n| n.gateway);
    let mut c = format!(
        "# The lab's top-of-rack router: BIRD 2, AS {TOR_ASN}, eBGP with every node.\n\
         router id {router_id};\n\
         log stderr all;\n\
         protocol device {{ }}\n"
    );
    if state.spec.has_ipv4() {
        c.push_str(&format!(
            "protocol kernel {{ ipv4 {{ import none; export all; }}; }}\n\
             template bgp node {{\n  local as {TOR_ASN};\n  hold time 30;\n  \
             ipv4 {{ import all; export none; }};\n}}\n"
        ));
    }
    if state.spec.pool6().is_some() {
        c.push_str(&format!(
            "protocol kernel kernel6 {{ ipv6 {{ import none; export all; }}; }}\n\
             template bgp node6 {{\n  local as {TOR_ASN};\n  hold time 30;\n  \
             ipv6 {{ import all; export none; }};\n}}\n"
        ));
    }
    for n in &state.nodes {
        if state.spec.has_ipv4() {
            c.push_str(&tor_peer(n));
        }
        if let Some(p) = tor_peer6(n) {
            c.push_str(&p);
        }
    }
    c
}

/// Dual stack: the ToR's IPv6 session with a node (its own protocol,
/// `node_<k>_v6`, over the IPv6 underlay).
fn tor_peer6(n: &NodeState) -> Option<String> {
    let (ip6, gw6) = (n.ip6?, n.gateway6?);
    Some(format!(
        "protocol bgp {}_v6 from node6 {{ source address {gw6}; neighbor {ip6} as {}; }}\n",
        n.name.replace('-', "_"),
        defaults::AS_NUMBER
    ))
}

fn tor_peer(n: &NodeState) -> String {
    format!(
        "protocol bgp {} from node {{ source address {}; neighbor {} as {}; }}\n",
        n.name.replace('-', "_"),
        n.gateway,
        n.ip,
        defaults::AS_NUMBER
    )
}

pub fn tor_socket(dir: &Path) -> PathBuf {
    dir.join("tor-bird.ctl")
}

/// Starts BIRD 2 in the router namespace and waits for its control socket.
pub fn start_tor(state: &LabState, dir: &Path) -> Result<i32, ClusterError> {
    let conf = dir.join("tor-bird.conf");
    std::fs::write(&conf, tor_config(state)).map_err(io_err(&conf))?;
    let sock = tor_socket(dir);
    let pid = spawn_detached(
        &state.router_ns,
        Path::new(BIRD2),
        &[
            "-f".to_string(),
            "-c".to_string(),
            conf.display().to_string(),
            "-s".to_string(),
            sock.display().to_string(),
        ],
        &[],
        &dir.join("logs/tor-bird.log"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while birdc(dir, &["show", "status"]).is_none() {
        if Instant::now() > deadline {
            return Err(ClusterError::Timeout(format!(
                "BIRD 2 (the ToR) did not start; see {}",
                dir.join("logs/tor-bird.log").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(pid)
}

/// `birdc` against the ToR; `None` when BIRD does not answer.
pub fn birdc(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("birdc")
        .arg("-s")
        .arg(tor_socket(dir))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The container ID the lab's CNI calls give pod `pod` (kubelet's is
/// the pod sandbox's).
pub fn container_id(pod: &str) -> String {
    format!("lab-{pod}")
}

/// Runs the CNI plugin inside the node's namespace the way kubelet does
/// (see [`crate::cni`]); what it printed and its exit status.
pub fn cni_out(
    state: &LabState,
    node: &NodeState,
    command: &str,
    pod: &str,
    pod_ns: &Path,
) -> Result<cni::CniOut, ClusterError> {
    let plugin = state.bin_dir.join("calico");
    // A recorded pod's namespace; a probe pod (chaos) is in `default`.
    let namespace = state
        .pods
        .iter()
        .find(|p| p.name == pod)
        .map_or(super::apiserver::POD_NAMESPACE, |p| p.namespace.as_str());
    cni::invoke(&CniCall {
        plugin: &plugin,
        command,
        container: &container_id(pod),
        netns: pod_ns,
        namespace,
        pod,
        config: &if !state.spec.has_ipv4() {
            cni::network_config_ipv6_only(&node.run_dir.join("felix.sock"))
        } else if state.spec.pool6().is_some() {
            cni::network_config_dual(&node.run_dir.join("felix.sock"))
        } else {
            cni::network_config(&node.run_dir.join("felix.sock"))
        },
        node_ns: Some(&node.ns),
    })
    .map_err(|e| ClusterError::Cni(format!("CNI {command} of {pod} on {}: {e}", node.name)))
}

/// [`cni_out`]: its stdout as JSON, or the plugin's error.
pub fn cni(
    state: &LabState,
    node: &NodeState,
    command: &str,
    pod: &str,
    pod_ns: &Path,
) -> Result<serde_json::Value, ClusterError> {
    let out = cni_out(state, node, command, pod, pod_ns)?;
    match out.error() {
        None => Ok(out.json),
        Some(e) => Err(ClusterError::Cni(format!(
            "CNI {command} of {pod} on {}: {e}",
            node.name
        ))),
    }
}

/// The first IPv4 address of a CNI ADD result.
pub fn result_ip(result: &serde_json::Value) -> Option<Ipv4Addr> {
    result_ips(result).find_map(|a| a.parse().ok())
}

/// The first IPv6 address of a CNI ADD result (dual stack).
pub fn result_ip6(result: &serde_json::Value) -> Option<Ipv6Addr> {
    result_ips(result).find_map(|a| a.parse().ok())
}

/// The addresses of a CNI ADD result, without their prefix lengths.
fn result_ips(result: &serde_json::Value) -> impl Iterator<Item = &str> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str()?.split('/').next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dual_stack_cni_result_gives_both_addresses_whatever_their_order() {
        let r = serde_json::json!({"ips": [
            {"address": "fd00:65::401/128"},
            {"address": "10.65.4.2/32"},
        ]});
        assert_eq!(result_ip(&r), Some(Ipv4Addr::new(10, 65, 4, 2)));
        assert_eq!(result_ip6(&r), "fd00:65::401".parse().ok());
        let v4 = serde_json::json!({"ips": [{"address": "10.65.4.2/32"}]});
        assert_eq!(result_ip6(&v4), None);
        assert_eq!(result_ip(&serde_json::Value::Null), None);
    }
}
