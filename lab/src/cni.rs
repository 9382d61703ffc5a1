//! The CNI plugin, invoked the way kubelet invokes it: the `CNI_*`
//! variables in an otherwise empty environment, the network configuration
//! on stdin, the result (or a CNI error) as JSON on stdout. The lab, the
//! integration tests and the CNI benchmark all call the plugin through
//! [`invoke`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One plugin invocation.
#[derive(Debug, Clone, Copy)]
pub struct CniCall<'a> {
    /// The plugin binary (`calico`).
    pub plugin: &'a Path,
    /// `ADD`, `DEL`, `CHECK`, ...
    pub command: &'a str,
    pub container: &'a str,
    /// The pod's network namespace.
    pub netns: &'a Path,
    /// The pod's Kubernetes namespace and name.
    pub namespace: &'a str,
    pub pod: &'a str,
    /// The network configuration (see [`network_config`]).
    pub config: &'a str,
    /// Run the plugin in this named network namespace (the node's);
    /// `None`: in the calling thread's.
    pub node_ns: Option<&'a str>,
}

/// What the plugin printed and how it exited.
#[derive(Debug, Clone)]
pub struct CniOut {
    /// The exit status; -1 when it was killed by a signal.
    pub code: i32,
    /// The JSON on stdout; `Null` when it printed nothing.
    pub json: serde_json::Value,
    pub stderr: String,
}

impl CniOut {
    /// The plugin's error as one line (`msg: details`), if it failed.
    pub fn error(&self) -> Option<String> {
        if self.code == 0 {
            return None;
        }
        let msg = self.json.get("msg").and_then(|m| m.as_str());
        let details = self.json.get("details").and_then(|d| d.as_str());
        Some(match (msg, details) {
            (Some(m), Some(d)) if !d.is_empty() => format!("{m}: {d}"),
            (Some(m), _) => m.to_string(),
            (None, _) => format!(
                "exit status {} {} {}",
                self.code,
                self.json,
                self.stderr.trim()
            ),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("cannot run the CNI plugin {plugin}: {source}")]
    Run {
        plugin: PathBuf,
        source: std::io::Error,
    },
    #[error("the CNI plugin's stdout is not JSON: {0}")]
    NotJson(String),
}

/// The network configuration kubelet would hand the plugin on a node whose
/// felix listens on `felix_socket`.
pub fn network_config(felix_socket: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico",
        "ipam": {"type": "calico-ipam"},
        "felix_socket": felix_socket,
    })
    .to_string()
}

/// [`network_config`] for a dual-stack cluster: calico-ipam assigns an
/// IPv4 and an IPv6 address (`assign_ipv4`, `assign_ipv6`), as Calico's
/// manifests configure it when `CALICO_IPV6POOL_CIDR` is set.
pub fn network_config_dual(felix_socket: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico",
        "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "true"},
        "felix_socket": felix_socket,
    })
    .to_string()
}

/// [`network_config`] for an IPv6-only cluster: calico-ipam assigns an
/// IPv6 address and no IPv4 one (`assign_ipv4: "false"`), as Calico's
/// "IPv6 only" set-up configures it.
pub fn network_config_ipv6_only(felix_socket: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico",
        "ipam": {"type": "calico-ipam", "assign_ipv4": "false", "assign_ipv6": "true"},
        "felix_socket": felix_socket,
    })
    .to_string()
}

/// The `CNI_ARGS` kubelet passes: the pod's namespace and name, and the
/// sandbox's container ID (the same as `CNI_CONTAINERID`).
fn cni_args(call: &CniCall<'_>) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
        call.namespace, call.pod, call.container
    )
}

/// Runs the plugin once and waits for it.
pub fn invoke(call: &CniCall<'_>) -> Result<CniOut, CniError> {
    let mut cmd = match call.node_ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(call.plugin);
            c
        }
        None => Command::new(call.plugin),
    };
    // kubelet's CNI_PATH is the directory it found the plugin in.
    let cni_path = call.plugin.parent().unwrap_or(Path::new("/opt/cni/bin"));
    let run_err = |source| CniError::Run {
        plugin: call.plugin.to_path_buf(),
        source,
    };
    let mut child = cmd
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", cni_args(call))
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(run_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        // The plugin may exit before reading (a bad environment).
        let _ = stdin.write_all(call.config.as_bytes());
    }
    let out = child.wait_with_output().map_err(run_err)?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let json = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).map_err(|_| CniError::NotJson(text))?
    };
    Ok(CniOut {
        code: out.status.code().unwrap_or(-1),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
