//! `calico-lab`: a Calico cluster of network namespaces on this machine.
//!
//! ```text
//! calico-lab demo [--datastore kubernetes] # 3 nodes, 2 subnets, CrossSubnet IPIP, NAT, ToR; checks; tears down
//! calico-lab up [--nodes N] [--subnets S] [--pods-per-node P] [--ipip MODE] [--tor] [--datastore etcd|kubernetes]
//! calico-lab status
//! calico-lab exec NODE|POD|router|etcd|apiserver -- CMD ...   # kubectl works there in Kubernetes mode
//! calico-lab check [--pairs]           # the ping matrix of a running lab
//! calico-lab chaos kill|etcd|apiserver|link|burst # break something, measure what it costs (scripts/chaos.sh)
//! calico-lab stats                     # memory per component, routes and sessions per node
//! calico-lab converge                  # the convergence benchmark (scripts/bench.sh converge)
//! calico-lab policy-bench               # policy to every node's kernel (scripts/bench.sh policy --lab)
//! calico-lab down
//! ```

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use lab::cluster::{
    self, Datastore, Ipip, Ipv6Mode, LabSpec, LabState, apiserver, chaos, check, state,
};
use lab::{Capture, Netns};

#[derive(Parser)]
#[command(
    name = "calico-lab",
    version,
    about = "A Calico cluster of network namespaces on this machine"
)]
struct Cli {
    /// The lab's name: `calico-lab` or `calico-lab-<suffix>`; its
    /// namespaces are `<name>-node-0`, `<name>-pod-0-0`, ...
    #[arg(long, global = true, env = "CALICO_LAB_NAME", default_value = state::LAB_PREFIX)]
    name: String,
    /// Where calico-node, confd, bird, felix and calico are (default: next
    /// to calico-lab).
    #[arg(long, global = true, env = "CALICO_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Where kube-apiserver, kube-controller-manager, kubectl and etcd 3.6
    /// are, for `--datastore kubernetes`: the directory
    /// `scripts/k8s-build.sh` prints last.
    #[arg(long, global = true, env = "CALICO_K8S_BIN")]
    k8s_bin: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Shape {
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 2)]
    subnets: usize,
    #[arg(long, default_value_t = 2)]
    pods_per_node: usize,
    /// IP-in-IP mode of the pool: always, crosssubnet or never.
    #[arg(long, default_value = "crosssubnet")]
    ipip: Ipip,
    /// NAT-outgoing on the pool.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    nat_outgoing: bool,
    /// The pool's CIDR (default 10.65.0.0/16).
    #[arg(long)]
    pool: Option<ipnetwork::Ipv4Network>,
    /// The pool's block size (default 26). A pool of one block makes
    /// every node but its owner borrow addresses (strictAffinity off, as
    /// in Calico), each advertised as a /32.
    #[arg(long)]
    block_size: Option<u8>,
    /// Run BIRD 2 in the router namespace as the top-of-rack router, eBGP
    /// with every node.
    #[arg(long)]
    tor: bool,
    /// Make the first K nodes route reflectors and turn the node-to-node
    /// mesh off (Calico's set-up for large clusters).
    #[arg(long, default_value_t = 0)]
    route_reflectors: usize,
    /// BFD on every node-to-node session (BGPConfiguration `nodeMeshBFD`,
    /// or on the route-reflector BGPPeer): a dead node's routes go in
    /// half a second.
    #[arg(long)]
    bfd: bool,
    /// Where Calico's resources live: etcd, or kubernetes (a real
    /// kube-apiserver in the lab; needs --k8s-bin).
    #[arg(long, default_value = "etcd")]
    datastore: Datastore,
    /// felix's IP-in-IP backend per node, repeated over the nodes
    /// (`FELIX_IPIPBACKEND`): e.g. `kernel,userspace` alternates them.
    /// Default: felix's own choice (auto: the kernel's ipip if it has one).
    #[arg(long, value_delimiter = ',')]
    ipip_backend: Vec<String>,
    /// felix's VXLAN backend per node, repeated over the nodes
    /// (`FELIX_VXLANBACKEND`): e.g. `kernel,userspace` alternates them.
    /// Default: felix's own choice (auto: the kernel's vxlan if it has one).
    #[arg(long, value_delimiter = ',')]
    vxlan_backend: Vec<String>,
    /// VXLAN mode of the pool (always or crosssubnet), instead of IP-in-IP
    /// (use with --ipip never).
    #[arg(long)]
    vxlan: Option<Ipip>,
    /// CALICO_NETWORKING_BACKEND of the nodes: bird (BGP, the default),
    /// vxlan (no BGP: VXLAN routes from the datastore) or none.
    #[arg(long)]
    backend: Option<String>,
    /// IPv6: off (IPv4 only), dual (every node and pod gets an IPv6
    /// address too, IPv6 pool fd00:65::/48, IPv6 BGP sessions; more than
    /// one subnet needs --tor, as IPv6 has no IP-in-IP) or only (Calico's
    /// IPv6-only set-up: no IPv4 on the underlay, nodes or pods; BGP over
    /// IPv6; etcd datastore, full mesh).
    #[arg(long, default_value = "off")]
    ipv6: Ipv6Mode,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a cluster and leave it running.
    Up(Shape),
    /// Nodes, BGP sessions, blocks and pods of the running lab.
    Status,
    /// Run a command inside a node, a pod, `router`, `etcd` or
    /// `apiserver`. In Kubernetes mode kubectl is on the PATH and
    /// KUBECONFIG names the admin's kubeconfig.
    Exec {
        target: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Ping every pod from every pod; exit 0 only when all pairs reach each
    /// other over the expected path (direct or IP-in-IP).
    Check {
        /// Also print one line per pair.
        #[arg(long)]
        pairs: bool,
    },
    /// Memory of each component, route count and BGP sessions per node.
    Stats,
    /// Break something in the running lab and measure what it costs.
    Chaos {
        #[command(subcommand)]
        case: Chaos,
    },
    /// Remove everything the lab made.
    Down,
    /// Up (3 nodes over 2 subnets, CrossSubnet IPIP, NAT-outgoing, a ToR),
    /// show peers, routes and the ping matrix, then tear down.
    Demo {
        #[arg(long)]
        pairs: bool,
        /// Leave the lab running afterwards (remove it with `down`).
        #[arg(long)]
        keep: bool,
        /// etcd, or kubernetes (a real kube-apiserver; needs --k8s-bin).
        #[arg(long, default_value = "etcd")]
        datastore: Datastore,
        /// off; dual: the same demo dual-stack, the ping matrix in both
        /// families; only: IPv6 only, the IPv6 ping matrix.
        #[arg(long, default_value = "off")]
        ipv6: Ipv6Mode,
    },
    /// Convergence benchmark on a running lab: pod reachable from another
    /// node after CNI ADD, and a brand-new node's time to converge.
    Converge {
        #[arg(long, default_value_t = 100)]
        iterations: usize,
        #[arg(long, default_value_t = 1)]
        new_nodes: usize,
    },
    /// Policy benchmark on a running lab: a policy change until every
    /// node's kernel has it, and a new pod's address until every other
    /// node's sets have it (each node's `nft monitor`).
    PolicyBench {
        #[arg(long, default_value_t = 50)]
        iterations: usize,
    },
}

#[derive(Subcommand)]
enum Chaos {
    /// SIGKILL one component on a node while pods on every other node
    /// ping a pod on it; count lost pings.
    Kill {
        /// bird, felix, confd or calico-node.
        #[arg(long)]
        component: String,
        #[arg(long, default_value = "node-1")]
        node: String,
        /// How long the pods ping (100 ms apart).
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// For calico-node: start it again after this many ms (kubelet's
        /// part).
        #[arg(long, default_value_t = 1000)]
        restart_after_ms: u64,
    },
    /// Stop etcd for a while: traffic keeps flowing, pod adds fail
    /// cleanly, everything catches up.
    Etcd {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Stop the API server of a Kubernetes-mode lab for a while: traffic
    /// keeps flowing, a pod add fails with "try again later" and leaves
    /// nothing, adds work again within a second of its return.
    Apiserver {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Cut a node's underlay link (every packet on its eth0 dropped, no
    /// carrier change): time until its blocks are gone from every other
    /// node's kernel, then until they are back after the link returns.
    Link {
        #[arg(long, default_value = "node-1")]
        node: String,
        /// How long the link stays cut.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Cut it this many times in a row (each cut waits for BFD to be
        /// Up again first) and print the distribution.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// Add and delete many pods at once over all nodes; audit IPAM and
    /// the routes afterwards.
    Burst {
        #[arg(long, default_value_t = 500)]
        pods: usize,
    },
}

fn bin_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    match &cli.bin_dir {
        Some(d) => Ok(d.clone()),
        None => Ok(std::env::current_exe()
            .context("cannot find calico-lab's own path")?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("calico-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn spec(name: &str, shape: &Shape) -> LabSpec {
    LabSpec {
        nodes: shape.nodes,
        subnets: shape.subnets,
        pods_per_node: shape.pods_per_node,
        ipip: shape.ipip,
        nat_outgoing: shape.nat_outgoing,
        tor: shape.tor,
        route_reflectors: shape.route_reflectors,
        bfd: shape.bfd,
        datastore: shape.datastore,
        ipip_backends: shape.ipip_backend.clone(),
        vxlan_backends: shape.vxlan_backend.clone(),
        block_size: shape.block_size,
        pool: shape.pool.unwrap_or(LabSpec::new(name).pool),
        vxlan: shape.vxlan,
        networking_backend: shape.backend.clone(),
        ipv6: shape.ipv6,
        ..LabSpec::new(name)
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("calico-lab needs root (it creates network namespaces); run it with sudo");
    }
    let mut out = std::io::stdout();
    match &cli.cmd {
        Cmd::Up(shape) => {
            let st = cluster::up(
                &spec(&cli.name, shape),
                &bin_dir(&cli)?,
                cli.k8s_bin.as_deref(),
                &mut out,
            )?;
            println!("\n{}", cluster::status(&st));
            println!(
                "the lab keeps running; `calico-lab status`, `calico-lab exec`, `calico-lab down`"
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status => {
            print!("{}", cluster::status(&cluster::open(&cli.name)?));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Exec { target, cmd } => {
            let st = cluster::open(&cli.name)?;
            let ns = cluster::target_namespace(&st, target).with_context(|| {
                format!(
                    "{target} is not a node, pod, `router`, `etcd` or `apiserver` of {}",
                    cli.name
                )
            })?;
            let mut command = std::process::Command::new("ip");
            command.args(["netns", "exec", &ns]).args(cmd);
            if let Some(k) = &st.kube {
                let cp = &k.control_plane;
                command.env("KUBECONFIG", &cp.admin_kubeconfig).env(
                    "PATH",
                    format!(
                        "{}:{}",
                        cp.bin_dir.display(),
                        std::env::var("PATH").unwrap_or_default()
                    ),
                );
            }
            let status = command.status().context("running ip netns exec")?;
            Ok(ExitCode::from(
                u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
            ))
        }
        Cmd::Check { pairs } => {
            let st = cluster::open(&cli.name)?;
            let ok = matrix(&st, *pairs)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Chaos { case } => {
            let mut st = cluster::open(&cli.name)?;
            needs_ipv4(&st, "chaos")?;
            let (report, ok) = match case {
                Chaos::Kill {
                    component,
                    node,
                    seconds,
                    restart_after_ms,
                } => {
                    let k = st
                        .nodes
                        .iter()
                        .position(|n| &n.name == node)
                        .with_context(|| format!("no node {node} in {}", cli.name))?;
                    if !["bird", "felix", "confd", "calico-node"].contains(&component.as_str()) {
                        bail!("--component {component}: use bird, felix, confd or calico-node");
                    }
                    chaos::kill_component(
                        &mut st,
                        k,
                        component,
                        *seconds,
                        Duration::from_millis(*restart_after_ms),
                    )?
                }
                Chaos::Etcd { seconds } => chaos::etcd_outage(&mut st, *seconds)?,
                Chaos::Apiserver { seconds } => chaos::apiserver_outage(&mut st, *seconds)?,
                Chaos::Link {
                    node,
                    seconds,
                    rounds,
                } => {
                    let k = st
                        .nodes
                        .iter()
                        .position(|n| &n.name == node)
                        .with_context(|| format!("no node {node} in {}", cli.name))?;
                    chaos::link_cut(&st, k, Duration::from_secs(*seconds), *rounds)?
                }
                Chaos::Burst { pods } => chaos::pod_burst(&mut st, *pods)?,
            };
            print!("{report}");
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Stats => {
            print!("{}", check::render_stats(&cluster::open(&cli.name)?));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down => {
            let r = cluster::down(&cli.name)?;
            println!(
                "{} removed: {} namespaces, {} processes",
                cli.name, r.namespaces, r.processes
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo {
            pairs,
            keep,
            datastore,
            ipv6,
        } => demo(&cli, *pairs, *keep, *datastore, *ipv6),
        Cmd::Converge {
            iterations,
            new_nodes,
        } => {
            let mut st = cluster::open(&cli.name)?;
            needs_ipv4(&st, "converge")?;
            converge(&mut st, *iterations, *new_nodes)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::PolicyBench { iterations } => {
            let mut st = cluster::open(&cli.name)?;
            needs_ipv4(&st, "policy-bench")?;
            policy_bench(&mut st, *iterations)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The measurements that probe pods over IPv4 refuse an IPv6-only lab
/// up front, rather than failing half-way on a pod without an IPv4
/// address.
fn needs_ipv4(st: &LabState, what: &str) -> anyhow::Result<()> {
    if !st.spec.has_ipv4() {
        bail!(
            "calico-lab {what} measures over IPv4 and does not run on an --ipv6 only lab yet; use a lab with --ipv6 off or dual"
        );
    }
    Ok(())
}

fn matrix(st: &LabState, pairs: bool) -> anyhow::Result<bool> {
    // IPv6 only: no pod has an IPv4 address to ping.
    let ok4 = if st.spec.has_ipv4() {
        let result = check::ping_matrix(st)?;
        print!("{}", check::render_matrix(st, &result));
        if pairs {
            print!("{}", check::render_pairs(&result));
        }
        !result.is_empty() && result.iter().all(check::Pair::ok)
    } else {
        println!("no IPv4 (--ipv6 only): the IPv6 ping matrix only");
        true
    };
    if st.spec.pool6().is_none() {
        return Ok(ok4);
    }
    let result6 = check::ping_matrix6(st);
    println!("\nIPv6 (ping -6 to every pod's IPv6 address):");
    print!("{}", check::render_matrix6(st, &result6));
    if pairs {
        print!("{}", check::render_pairs6(&result6));
    }
    Ok(ok4 && !result6.is_empty() && result6.iter().all(|p| p.reached))
}

fn demo(
    cli: &Cli,
    pairs: bool,
    keep: bool,
    datastore: Datastore,
    ipv6: Ipv6Mode,
) -> anyhow::Result<ExitCode> {
    let shape = Shape {
        nodes: 3,
        subnets: 2,
        pods_per_node: 2,
        ipip: Ipip::CrossSubnet,
        nat_outgoing: true,
        tor: true,
        route_reflectors: 0,
        bfd: false,
        datastore,
        ipip_backend: Vec::new(),
        vxlan_backend: Vec::new(),
        vxlan: None,
        pool: None,
        block_size: None,
        backend: None,
        ipv6,
    };
    let started = Instant::now();
    let mut out = std::io::stdout();
    let st = cluster::up(
        &spec(&cli.name, &shape),
        &bin_dir(cli)?,
        cli.k8s_bin.as_deref(),
        &mut out,
    )?;
    let result = show(&st, pairs);
    let ok = match &result {
        Ok(ok) => *ok,
        Err(e) => {
            println!("demo failed: {e:#}");
            false
        }
    };
    if keep {
        println!("\nthe lab keeps running (--keep); remove it with `calico-lab down`");
    } else {
        let r = cluster::down(&cli.name)?;
        println!(
            "\ntorn down: {} namespaces and {} processes removed",
            r.namespaces, r.processes
        );
    }
    println!(
        "demo {} in {:.0} s",
        if ok { "PASSED" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    let _ = out.flush();
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn show(st: &LabState, pairs: bool) -> anyhow::Result<bool> {
    let dir = state::lab_dir(&st.spec.name);
    println!("\n== Nodes ==");
    for n in &st.nodes {
        if st.spec.has_ipv4() {
            println!(
                "{}  {}/{}  subnet {}  (gateway and ToR {})",
                n.name, n.ip, n.prefix_len, n.subnet, n.gateway
            );
        } else {
            println!("{}  no IPv4  subnet {}", n.name, n.subnet);
        }
        if let (Some(ip6), Some(gw6)) = (n.ip6, n.gateway6) {
            println!(
                "{}  {ip6}/{}  (IPv6 gateway and ToR {gw6})",
                " ".repeat(n.name.len()),
                lab::topology::UNDERLAY6_PREFIX
            );
        }
    }
    println!("\n== BGP peers of each node (calico-node status) ==");
    for n in &st.nodes {
        println!("--- {} ---", n.name);
        print!("{}", check::peer_table(st, n));
    }
    println!("\n== The ToR's view (birdc show protocols; show route) ==");
    print!(
        "{}",
        cluster::procs::birdc(&dir, &["show", "protocols"]).unwrap_or_default()
    );
    print!(
        "{}",
        cluster::procs::birdc(&dir, &["show", "route"]).unwrap_or_default()
    );
    println!("\n== Routes felix programmed (ip route show proto 80) ==");
    for n in &st.nodes {
        println!("--- {} ---", n.name);
        print!("{}", check::routes(n).text);
        if st.spec.pool6().is_some() {
            print!("{}", check::routes6(n).text);
        }
    }
    println!("\n== Pod-to-pod ping matrix (every pod to every pod; path seen on the wire) ==");
    let matrix_ok = matrix(st, pairs)?;
    let mut nat_ok = if st.spec.has_ipv4() {
        println!(
            "\n== NAT-outgoing: each node's first pod pings {} outside the cluster ==",
            cluster::EXTERNAL_IP
        );
        nat_check(st)?
    } else {
        true
    };
    if st.spec.pool6().is_some() {
        println!(
            "\n== IPv6 NAT-outgoing: each node's first pod connects to [{}] outside the cluster ==",
            cluster::EXTERNAL_IP6
        );
        let rows = check::nat_outgoing6(st)?;
        print!("{}", check::render_nat6(&rows));
        nat_ok &= !rows.is_empty() && rows.iter().all(check::Nat6::ok);
    }
    let policy_ok = policy_check(st)?;
    let kube_ok = match &st.kube {
        Some(_) => show_kubernetes(st)?,
        None => true,
    };
    Ok(matrix_ok && nat_ok && policy_ok && kube_ok)
}

/// Kubernetes mode: what the API server holds (as its admin sees it), and
/// who calico-node is to it.
fn show_kubernetes(st: &LabState) -> anyhow::Result<bool> {
    let mut ok = true;
    for (title, args) in [
        (
            "Nodes (registered by the lab as kubelet would)",
            &["get", "nodes", "-o", "wide"][..],
        ),
        (
            "Pods (made before their CNI ADD, reported Running by the lab after it)",
            &["get", "pods", "-o", "wide"][..],
        ),
        (
            "Pod addresses felix wrote on each Pod at its CNI ADD (Calico's annotation)",
            &[
                "get",
                "pods",
                "-o",
                "custom-columns=POD:.metadata.name,PODIPS:.metadata.annotations.cni\\.projectcalico\\.org/podIPs",
            ][..],
        ),
        (
            "IP pools (calico-node made the default one)",
            &["get", "ippools", "-o", "wide"][..],
        ),
        (
            "Block affinities (IPAM through the API server)",
            &["get", "blockaffinities"][..],
        ),
    ] {
        println!("\n== {title}: kubectl {} ==", args.join(" "));
        match apiserver::kubectl(st, args, None) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                println!("FAILED: {e}");
                ok = false;
            }
        }
    }
    let Some(k) = &st.kube else {
        return Ok(ok);
    };
    let Some(node) = st.nodes.first() else {
        return Ok(ok);
    };
    println!(
        "\n== calico-node's identity: kubectl auth whoami, with {}'s kubeconfig, from {} ==",
        node.name, node.name
    );
    let who = node_kubectl(
        st,
        node,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    let user = k.service_account.user();
    let is_sa = who.as_ref().is_ok_and(|w| w.trim() == user);
    println!(
        "{} {}",
        who.as_deref().unwrap_or("(failed)").trim(),
        if is_sa {
            "(the DaemonSet's ServiceAccount, not the admin: ok)"
        } else {
            "(WRONG: expected the DaemonSet's ServiceAccount)"
        }
    );
    let can = node_kubectl(st, node, &["auth", "can-i", "create", "secrets"])
        .unwrap_or_else(|e| e.to_string());
    println!("may it create Secrets? {}", can.trim());
    Ok(ok && is_sa)
}

/// kubectl with a node's own kubeconfig (calico-node's identity), run in
/// the node's namespace; its stdout (kubectl's `no` exits 1: still output).
fn node_kubectl(st: &LabState, node: &cluster::NodeState, args: &[&str]) -> anyhow::Result<String> {
    let k = st.kube.as_ref().context("not a Kubernetes-mode lab")?;
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &node.ns])
        .arg(k.control_plane.kubectl_bin())
        .arg("--kubeconfig")
        .arg(node.kubeconfig())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running kubectl")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if stdout.trim().is_empty() && !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(stdout)
}

/// Pings an address outside the cluster from one pod per node, watching
/// the router's leg to that node: the source must be the node's address.
/// The demo's network policy: applied, then each pair that should reach
/// `role=db` does and the others do not (felix drops them), then deleted
/// and the denied pair gets through again.
fn policy_check(st: &LabState) -> anyhow::Result<bool> {
    use cluster::policy::{DB, WEB};
    println!(
        "\n== Network policy: {DB} (role=db) admits only role=web pods (a Calico NetworkPolicy) =="
    );
    cluster::policy::apply(st)?;
    // IPv6 only: the db pod's IPv6 address, and its pool has no IP-in-IP.
    let web = if st.spec.has_ipv4() {
        "role=web, over IP-in-IP"
    } else {
        "role=web, through the router"
    };
    let pairs = [
        (WEB, true, web),
        ("pod-0-1", false, "no role, same node"),
        ("pod-2-0", false, "no role, direct"),
    ];
    let reaches = |from: &str| -> anyhow::Result<bool> {
        let ns = st
            .pods
            .iter()
            .find(|p| p.name == from)
            .context("no such pod")?;
        let ip: std::net::IpAddr = st
            .pods
            .iter()
            .find(|p| p.name == DB)
            .and_then(|p| p.ip.map(Into::into).or(p.ip6.map(Into::into)))
            .context("no address for the db pod")?;
        let family = if ip.is_ipv6() { "-6" } else { "-4" };
        Ok(Netns::existing(&ns.ns)?
            .command("ping")
            .args([family, "-c", "1", "-W", "1", &ip.to_string()])
            .output()?
            .status
            .success())
    };
    // The policy reaches every node's felix within a moment; give it up
    // to 15 s before calling a pair wrong.
    let deadline = Instant::now() + Duration::from_secs(15);
    let results = loop {
        let mut results = Vec::new();
        for (from, allowed, how) in pairs {
            results.push((from, allowed, how, reaches(from)?));
        }
        if results.iter().all(|r| r.1 == r.3) || Instant::now() > deadline {
            break results;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let mut ok = true;
    for (from, allowed, how, reached) in results {
        let seen = if reached { "reached" } else { "no answer" };
        let verdict = if allowed { "allowed" } else { "denied" };
        let mark = if reached == allowed { "ok" } else { "WRONG" };
        println!("{from} -> {DB} ({how}): {seen} (should be {verdict}: {mark})");
        ok &= reached == allowed;
    }
    cluster::policy::remove(st)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let reopened = loop {
        if reaches("pod-2-0")? {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    println!(
        "policy deleted: pod-2-0 -> {DB} {}",
        if reopened {
            "reached again (ok)"
        } else {
            "still no answer (WRONG)"
        }
    );
    Ok(ok && reopened)
}

fn nat_check(st: &LabState) -> anyhow::Result<bool> {
    let router = Netns::existing(&st.router_ns)?;
    let _ = router.ip(&[
        "addr",
        "add",
        &format!("{}/32", cluster::EXTERNAL_IP),
        "dev",
        "lo",
    ]);
    let mut all = true;
    for (k, n) in st.nodes.iter().enumerate() {
        let Some(pod) = st.pods.iter().find(|p| p.node == n.name) else {
            continue;
        };
        let cap = Capture::start(&router, &format!("n{k}"))?;
        let reached = std::process::Command::new("ip")
            .args(["netns", "exec", &pod.ns, "ping", "-c", "1", "-W", "2", "-q"])
            .arg(cluster::EXTERNAL_IP.to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let seen = cap.stop()?;
        let sources: Vec<Ipv4Addr> = seen
            .packets
            .iter()
            .filter(|p| p.dst == cluster::EXTERNAL_IP && p.protocol == 1)
            .map(|p| p.src)
            .collect();
        let masqueraded = !sources.is_empty() && sources.iter().all(|s| *s == n.ip);
        let expect_nat = st.spec.nat_outgoing;
        let ok = reached && masqueraded == expect_nat;
        all &= ok;
        println!(
            "{} ({}) -> {}: {}, source on the wire {} {}",
            pod.name,
            pod.ip.map_or("-".into(), |i| i.to_string()),
            cluster::EXTERNAL_IP,
            if reached { "reached" } else { "UNREACHABLE" },
            sources.first().map_or("unseen".into(), |s| s.to_string()),
            match (masqueraded, ok) {
                (true, true) => "(masqueraded to the node: ok)",
                (false, true) => "(not masqueraded, as configured: ok)",
                _ => "(WRONG)",
            }
        );
    }
    Ok(all)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn ping_until_reply(pod_ns: &str, ip: Ipv4Addr) -> bool {
    // One echo every 2 ms until the first reply, at most 5 s.
    std::process::Command::new("ip")
        .args([
            "netns", "exec", pod_ns, "ping", "-c", "1", "-w", "5", "-i", "0.002", "-q",
        ])
        .arg(ip.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn policy_bench(st: &mut LabState, iterations: usize) -> anyhow::Result<()> {
    let n = st.nodes.len();
    println!(
        "policy on {n} nodes ({} datastore), timed by each node's `nft monitor`, {iterations} times each:",
        if st.kube.is_some() {
            "Kubernetes"
        } else {
            "etcd"
        }
    );
    let r = cluster::policy_bench::run(st, iterations)?;
    let row = |what: &str, v: &[Duration], target: Option<Duration>| {
        let p99 = percentile(v, 0.99);
        let verdict = match target {
            Some(t) => format!(
                "  target p99 <= {}: {} ({:.2}x the target)",
                ms(t),
                if p99 <= t { "met" } else { "NOT met" },
                p99.as_secs_f64() / t.as_secs_f64()
            ),
            None => String::new(),
        };
        println!(
            "  {what:<46} p50 {:>9}  p99 {:>9}  max {:>9}{verdict}",
            ms(percentile(v, 0.5)),
            ms(p99),
            ms(v.last().copied().unwrap_or_default()),
        );
    };
    row(
        "policy change, on every node (write -> kernel)",
        &r.change_everywhere,
        Some(Duration::from_millis(200)),
    );
    row("policy change, each node", &r.change_each, None);
    row(
        "CNI ADD on node-0 (exec to exit of the plugin)",
        &r.adds,
        None,
    );
    row(
        &format!("new pod, in all {} other nodes' sets", n - 1),
        &r.pod_everywhere,
        Some(Duration::from_millis(500)),
    );
    row("new pod, each other node", &r.pod_each, None);
    Ok(())
}

fn converge(st: &mut LabState, iterations: usize, new_nodes: usize) -> anyhow::Result<()> {
    let dir = state::lab_dir(&st.spec.name);
    if st.nodes.len() < 2 {
        bail!("the convergence benchmark needs a lab of at least 2 nodes");
    }
    // A: node-0; B: the first node on another subnet (else node-1).
    let a = 0;
    let b = st
        .nodes
        .iter()
        .position(|n| n.subnet != st.nodes[0].subnet)
        .unwrap_or(1);
    let watcher = match st.pods.iter().find(|p| p.node == st.nodes[b].name) {
        Some(p) => p.clone(),
        None => cluster::add_pod(st, b)?,
    };
    println!(
        "pod reachability: pod made on {} (CNI ADD), pinged from {} on {} until the first echo reply; {iterations} times",
        st.nodes[a].name, watcher.name, st.nodes[b].name
    );
    let mut adds = Vec::new();
    let mut reach = Vec::new();
    for i in 0..iterations {
        let t0 = Instant::now();
        let pod = cluster::add_pod(st, a)?;
        let t1 = Instant::now();
        let ip = pod.ip.context("pod without an address")?;
        if !ping_until_reply(&watcher.ns, ip) {
            bail!(
                "iteration {i}: {} ({ip}) never answered {} within 5 s",
                pod.name,
                watcher.name
            );
        }
        let t2 = Instant::now();
        adds.push(t1 - t0);
        reach.push(t2 - t1);
        cluster::del_pod(st, &pod.name)?;
    }
    adds.sort();
    reach.sort();
    println!(
        "  CNI ADD:                          p50 {}  p99 {}",
        ms(percentile(&adds, 0.5)),
        ms(percentile(&adds, 0.99))
    );
    println!(
        "  reachable from {} after ADD: p50 {}  p99 {}  (target p99 <= 200 ms)",
        st.nodes[b].name,
        ms(percentile(&reach, 0.5)),
        ms(percentile(&reach, 0.99))
    );

    for _ in 0..new_nodes {
        let subnet = st.nodes.len() % st.subnets.len().max(1);
        let others: Vec<ipnetwork::Ipv4Network> = st
            .nodes
            .iter()
            .flat_map(|n| check::routes(n).local_blocks)
            .collect();
        let t0 = Instant::now();
        let node = cluster::add_node(st, subnet)?;
        let deadline = t0 + Duration::from_secs(120);
        let mut has_all = None;
        let mut full = None;
        while full.is_none() {
            if Instant::now() > deadline {
                bail!(
                    "{} did not converge within 120 s; see {}",
                    node.name,
                    dir.join("logs").display()
                );
            }
            let mine = check::routes(&node);
            if has_all.is_none()
                && others
                    .iter()
                    .all(|b| mine.remote_blocks.iter().any(|(r, _)| r == b))
            {
                has_all = Some(t0.elapsed());
            }
            if has_all.is_some() && !mine.local_blocks.is_empty() {
                let everyone = st.nodes.iter().filter(|n| n.name != node.name).all(|n| {
                    let r = check::routes(n);
                    mine.local_blocks
                        .iter()
                        .all(|b| r.remote_blocks.iter().any(|(x, _)| x == b))
                });
                if everyone {
                    full = Some(t0.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let missing = check::convergence(st, &dir);
        println!(
            "new node {} ({} nodes in the mesh): has every other node's {} blocks {:.2} s after calico-node started; \
             every node routes its block {:.2} s after; sessions complete: {}",
            node.name,
            st.nodes.len(),
            others.len(),
            has_all.unwrap_or_default().as_secs_f64(),
            full.unwrap_or_default().as_secs_f64(),
            if missing.is_empty() {
                "yes".to_string()
            } else {
                format!("no ({missing:?})")
            }
        );
    }
    Ok(())
}
