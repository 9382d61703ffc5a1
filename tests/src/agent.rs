//! One node's agent processes (felix, confd), for tests and benchmarks
//! that run inside a lab node namespace (the CNI plugin is invoked through
//! `lab::cni`).
//!
//! Call everything from a thread that has entered the node's namespace
//! (`lab::Netns::run`): processes forked from it live in that namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// The directory cargo puts binaries in (next to the running test).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Builds one binary of the workspace with the profile of the running
/// test (`--release` when it is a release build) and returns its path.
pub fn build(pkg: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let dir = target_dir();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-q", "-p", pkg, "--bin", bin]);
    if release {
        cmd.arg("--release");
    }
    let st = cmd.status().context("running cargo build")?;
    if !st.success() {
        bail!("building {bin} failed");
    }
    Ok(dir.join(bin))
}

/// calico-node, the three daemons it runs, and the CNI plugin: (package,
/// binary).
pub const NODE_BINARIES: [(&str, &str); 5] = [
    ("node", "calico-node"),
    ("confd", "confd"),
    ("bird", "bird"),
    ("felix", "felix"),
    ("cni", "calico"),
];

/// Builds [`NODE_BINARIES`] (and `calico-lab` with `with_lab`) in one
/// cargo invocation, so their dependencies are compiled once with one
/// feature set rather than once per package.
pub fn build_node_binaries(with_lab: bool) -> anyhow::Result<()> {
    let mut targets: Vec<(&str, &str)> = NODE_BINARIES.to_vec();
    if with_lab {
        targets.push(("lab", "calico-lab"));
    }
    build_many(&targets).map(|_| ())
}

/// Builds several `(package, binary)` pairs in one cargo invocation with
/// the profile of the running test; returns their paths.
pub fn build_many(targets: &[(&str, &str)]) -> anyhow::Result<Vec<PathBuf>> {
    let dir = target_dir();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-q"]);
    for (pkg, bin) in targets {
        cmd.args(["-p", pkg, "--bin", bin]);
    }
    if release {
        cmd.arg("--release");
    }
    let st = cmd.status().context("running cargo build")?;
    if !st.success() {
        let names: Vec<&str> = targets.iter().map(|(_, b)| *b).collect();
        bail!("building {} failed", names.join(", "));
    }
    Ok(targets.iter().map(|(_, b)| dir.join(b)).collect())
}

/// `calico-lab ARGS` on lab `name` (as `CALICO_LAB_NAME`), with
/// `/usr/sbin` on the PATH for BIRD and iproute2, stdin closed.
pub fn calico_lab_command(name: &str, args: &[&str]) -> Command {
    let mut c = Command::new(target_dir().join("calico-lab"));
    c.args(args)
        .env("CALICO_LAB_NAME", name)
        .env(
            "PATH",
            format!(
                "/usr/sbin:/sbin:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(Stdio::null());
    c
}

/// `calico-lab down` on lab `.0` when dropped: removes a test's lab even
/// when an assertion fails half-way.
pub struct LabDown(pub String);

impl Drop for LabDown {
    fn drop(&mut self) {
        let _ = calico_lab_command(&self.0, &["down"]).output();
    }
}

/// Runs [`calico_lab_command`] to completion; prints and returns its
/// output.
pub fn calico_lab(name: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let out = calico_lab_command(name, args)
        .output()
        .context("running calico-lab")?;
    println!(
        "$ calico-lab {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// A lab name of this test run's own (`calico-lab-<what><pid>`).
pub fn lab_name(what: &str) -> String {
    format!("calico-lab-{what}{}", std::process::id() % 100_000)
}

/// [`calico_lab`] for tests: panics when calico-lab cannot be run at all
/// (its exit status is the caller's to judge).
pub fn run_lab(name: &str, args: &[&str]) -> std::process::Output {
    calico_lab(name, args).unwrap_or_else(|e| panic!("calico-lab {args:?}: {e:#}"))
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where one node agent keeps its sockets and state.
pub struct AgentDirs {
    pub dir: PathBuf,
}

impl AgentDirs {
    pub fn felix_socket(&self) -> PathBuf {
        self.dir.join("felix.sock")
    }
    pub fn bird_socket(&self) -> PathBuf {
        self.dir.join("bird.sock")
    }
    pub fn confd_socket(&self) -> PathBuf {
        self.dir.join("confd.sock")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("felix-state")
    }
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }
}

fn log_file(path: &Path) -> anyhow::Result<(std::fs::File, std::fs::File)> {
    let f = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)?;
    Ok((f.try_clone()?, f))
}

/// Starts felix in managed mode (services on its socket, IPAM on etcd).
pub fn spawn_felix(
    felix: &Path,
    d: &AgentDirs,
    node: &str,
    etcd: &str,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let (out, err) = log_file(&d.log("felix"))?;
    let child = Command::new(felix)
        .args(["run", "--node", node, "--etcd-endpoints", etcd])
        .arg("--socket")
        .arg(d.felix_socket())
        .arg("--state-dir")
        .arg(d.state_dir())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("starting felix")?;
    Ok(Proc(child))
}

/// Starts confd pushing to this agent's bird and felix sockets.
pub fn spawn_confd(confd: &Path, d: &AgentDirs, node: &str, etcd: &str) -> anyhow::Result<Proc> {
    let (out, err) = log_file(&d.log("confd"))?;
    let child = Command::new(confd)
        .args(["run", "--node", node, "--etcd-endpoints", etcd])
        .arg("--bird-socket")
        .arg(d.bird_socket())
        .arg("--felix-socket")
        .arg(d.felix_socket())
        .arg("--render-file")
        .arg(d.dir.join("confd.txt"))
        .arg("--socket")
        .arg(d.confd_socket())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("starting confd")?;
    Ok(Proc(child))
}

/// A node namespace with an uplink to a gateway namespace, as a real node
/// has: `10.0.0.1/24` on `eth0` and a default route via `10.0.0.254`
/// (proxy ARP for the pods' 169.254.1.1 gateway answers only when the
/// host has a route for it). Returns (node, gateway).
pub fn node_with_uplink(
    node_name: &str,
    gw_name: &str,
) -> anyhow::Result<(lab::Netns, lab::Netns)> {
    let node = lab::Netns::create(node_name)?;
    let gw = lab::Netns::create(gw_name)?;
    lab::veth(&node, "eth0", &gw, "down0")?;
    node.ip(&["addr", "add", "10.0.0.1/24", "dev", "eth0"])?;
    gw.ip(&["addr", "add", "10.0.0.254/24", "dev", "down0"])?;
    node.ip(&["route", "add", "default", "via", "10.0.0.254"])?;
    Ok((node, gw))
}

/// Registers the node [`node_with_uplink`] makes, `node-1` at its
/// `10.0.0.1/24`, as calico-node would.
pub async fn register_uplink_node(c: &datastore::Client) -> anyhow::Result<()> {
    let n: ippool_crd::Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "projectcalico.org/v3", "kind": "Node",
        "metadata": {"name": "node-1"},
        "spec": {"bgp": {"ipv4Address": "10.0.0.1/24"}},
    }))?;
    c.create(&n).await?;
    Ok(())
}

/// Runs `f` against a lab's etcd from its node-0's namespace (the lab's
/// etcd is reachable from the nodes, not from the host) and returns what
/// it returns.
pub fn with_lab_datastore<T, F, Fut>(st: &lab::cluster::state::LabState, f: F) -> T
where
    F: FnOnce(datastore::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let endpoint = st.etcd_endpoint.clone();
    lab::Netns::existing(&st.nodes[0].ns)
        .expect("the lab's node-0 namespace")
        .spawn_thread(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(async move {
                    let client =
                        datastore::DatastoreConfig::Etcdv3(datastore::EtcdConfig::new([endpoint]))
                            .connect()
                            .await
                            .expect("the lab's etcd");
                    f(client).await
                })
        })
        .expect("a thread in node-0's namespace")
        .join()
        .expect("the datastore thread")
}

/// The network namespaces of lab `name` that exist now.
pub fn lab_namespaces(name: &str) -> Vec<String> {
    let prefix = format!("{name}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}
