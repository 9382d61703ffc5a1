//! `calico-lab policy-bench`: how long policy takes to reach every node's
//! kernel in a running lab (issue 17's two lab targets).
//!
//! Each node runs `nft monitor` in its namespace, which prints every
//! change to the node's nftables as the kernel commits it; a reader thread
//! per node stamps each line as it arrives. Nothing in felix is asked or
//! instrumented: what is timed is the kernel holding the change.
//!
//! - **Policy change**: a GlobalNetworkPolicy selecting every pod (it
//!   allows everything, so the lab keeps working) has its first rule's
//!   port changed, K times. Timed from just before the datastore write to
//!   the first committed rule with the new port on each node; the figure
//!   per change is the *last* node's (enforced everywhere).
//! - **New pod**: a pod made on node-0 through the CNI plugin, K times.
//!   Timed from the CNI ADD's return (not counting what the lab does
//!   around it as kubelet: the Pod object, its status) to the pod's
//!   address being added to a set on each other node (the policy's source selector matches every
//!   pod); again the last node's time per pod.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ippool_crd::GlobalNetworkPolicy;
use serde_json::json;

use super::apiserver::PodMeta;
use super::state::LabState;
use super::{ClusterError, add_pod_timed, del_pod, with_datastore};
use crate::Netns;

/// The benchmark's policy.
pub const NAME: &str = "calico-lab-policy-bench";
/// The first port the policy's rule names; iteration i uses `BASE_PORT + i`.
const BASE_PORT: u16 = 20_000;
/// How long one change may take to reach every node before the run fails.
const LIMIT: Duration = Duration::from_secs(10);

/// One committed line of a node's `nft monitor`.
struct Line {
    node: usize,
    at: Instant,
    text: String,
}

/// `nft monitor` in every node's namespace; stopped when dropped.
struct Monitors {
    children: Vec<Child>,
    lines: mpsc::Receiver<Line>,
}

impl Monitors {
    fn start(st: &LabState) -> Result<Monitors, ClusterError> {
        let (tx, lines) = mpsc::channel();
        let mut children = Vec::new();
        for (i, n) in st.nodes.iter().enumerate() {
            let ns = Netns::existing(&n.ns)?;
            let mut child = ns
                .command("nft")
                .arg("monitor")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| ClusterError::Spec(format!("cannot run nft monitor: {e}")))?;
            let out = child.stdout.take();
            children.push(child);
            let tx = tx.clone();
            if let Some(out) = out {
                std::thread::spawn(move || {
                    for text in BufReader::new(out).lines().map_while(Result::ok) {
                        let at = Instant::now();
                        if tx.send(Line { node: i, at, text }).is_err() {
                            return;
                        }
                    }
                });
            }
        }
        // `nft monitor` subscribes a moment after it starts.
        std::thread::sleep(Duration::from_millis(300));
        let m = Monitors { children, lines };
        m.drain();
        Ok(m)
    }

    /// Forgets what was printed so far.
    fn drain(&self) {
        while self.lines.try_recv().is_ok() {}
    }

    /// Waits until every node in `nodes` printed a line `matches` accepts
    /// at or after `since`; each node's delay after `origin` (0 if
    /// earlier), or the nodes that did not within [`LIMIT`].
    fn wait_all(
        &self,
        nodes: &[usize],
        since: Instant,
        origin: Instant,
        matches: impl Fn(&str) -> bool,
    ) -> Result<Vec<Duration>, Vec<usize>> {
        let mut got: Vec<Option<Duration>> = vec![None; nodes.len()];
        let deadline = Instant::now() + LIMIT;
        while got.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            if let Some(k) = nodes.iter().position(|n| *n == line.node)
                && got[k].is_none()
                && line.at >= since
                && matches(&line.text)
            {
                got[k] = Some(line.at.saturating_duration_since(origin));
            }
        }
        let missing: Vec<usize> = nodes
            .iter()
            .zip(&got)
            .filter(|(_, g)| g.is_none())
            .map(|(n, _)| *n)
            .collect();
        if missing.is_empty() {
            Ok(got.into_iter().flatten().collect())
        } else {
            Err(missing)
        }
    }
}

impl Drop for Monitors {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The policy with its first rule on `port`: every pod selected, every
/// rule an Allow (nothing in the lab loses a packet).
fn bench_policy(port: u16) -> Result<GlobalNetworkPolicy, ClusterError> {
    serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": NAME},
        "spec": {"order": 1000, "selector": "has(projectcalico.org/namespace)",
                 "types": ["Ingress"],
                 "ingress": [
                     {"action": "Allow", "protocol": "TCP",
                      "source": {"selector": "has(projectcalico.org/namespace)"},
                      "destination": {"ports": [port]}},
                     {"action": "Allow"}]}
    }))
    .map_err(|e| ClusterError::Spec(format!("the benchmark policy: {e}")))
}

/// Writes the policy with `port` (creating it the first time); returns the
/// moment just before the write was sent.
fn write_policy(st: &LabState, port: u16) -> Result<Instant, ClusterError> {
    let mut p = bench_policy(port)?;
    with_datastore(st, move |c| async move {
        let existing = c.get::<GlobalNetworkPolicy>(NAME).await?;
        let t0 = Instant::now();
        match existing {
            Some(old) => {
                p.metadata = old.metadata;
                c.update(&p).await.map(|_| t0)
            }
            None => c.create(&p).await.map(|_| t0),
        }
    })
}

fn remove_policy(st: &LabState) -> Result<(), ClusterError> {
    with_datastore(st, |c| async move {
        match c.delete::<GlobalNetworkPolicy>(NAME, None).await {
            Ok(()) | Err(datastore::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    })
}

/// Writes the policy the first time (not counted) and waits until every
/// node's table has it: `nft monitor` only follows sets that existed when
/// it started (it prints nothing for elements of a set made later), so the
/// monitors start after this.
fn first_write(st: &LabState) -> Result<(), ClusterError> {
    write_policy(st, BASE_PORT)?;
    let deadline = Instant::now() + LIMIT;
    for n in &st.nodes {
        let ns = Netns::existing(&n.ns)?;
        loop {
            let table = ns
                .exec("nft", &["list", "table", "inet", "calico-rs-filter"])
                .unwrap_or_default();
            if table.contains(&format!("dport {BASE_PORT} ")) {
                break;
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout(format!(
                    "the benchmark policy did not reach {}'s table within {LIMIT:?}",
                    n.name
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Whether `text` names `ip` as a whole address.
fn names_address(text: &str, ip: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .any(|t| t == ip)
}

/// Whether `text` is a committed rule matching destination port `port`.
fn names_port(text: &str, port: u16) -> bool {
    text.starts_with("add rule") && text.contains(&format!("dport {port} "))
        || text.ends_with(&format!("dport {port}"))
}

/// The results, sorted.
#[derive(Debug, Default)]
pub struct PolicyBench {
    /// Per change: until the last node had it.
    pub change_everywhere: Vec<Duration>,
    /// Per (change, node).
    pub change_each: Vec<Duration>,
    /// Per new pod: until the last other node had its address.
    pub pod_everywhere: Vec<Duration>,
    pub pod_each: Vec<Duration>,
    /// The CNI ADDs themselves.
    pub adds: Vec<Duration>,
}

/// Runs both measures `iterations` times on the running lab `st`, then
/// removes the policy and the pods it made.
pub fn run(st: &mut LabState, iterations: usize) -> Result<PolicyBench, ClusterError> {
    if st.nodes.len() < 2 {
        return Err(ClusterError::Spec(
            "the policy benchmark needs a lab of at least 2 nodes".into(),
        ));
    }
    let all: Vec<usize> = (0..st.nodes.len()).collect();
    let result = first_write(st).and_then(|()| measure(st, &all, iterations));
    let removed = remove_policy(st);
    let mut r = result?;
    removed?;
    for v in [
        &mut r.change_everywhere,
        &mut r.change_each,
        &mut r.pod_everywhere,
        &mut r.pod_each,
        &mut r.adds,
    ] {
        v.sort();
    }
    Ok(r)
}

fn measure(
    st: &mut LabState,
    all: &[usize],
    iterations: usize,
) -> Result<PolicyBench, ClusterError> {
    let mut r = PolicyBench::default();
    let monitors = Monitors::start(st)?;
    let names = |st: &LabState, missing: Vec<usize>| -> Vec<String> {
        missing.iter().map(|i| st.nodes[*i].name.clone()).collect()
    };
    for i in 1..=iterations {
        let port = BASE_PORT + u16::try_from(i % 40_000).unwrap_or(1);
        monitors.drain();
        let t0 = write_policy(st, port)?;
        let each = monitors
            .wait_all(all, t0, t0, |l| names_port(l, port))
            .map_err(|m| {
                ClusterError::Timeout(format!(
                    "change {i} (port {port}) did not reach {:?} within {LIMIT:?}",
                    names(st, m)
                ))
            })?;
        r.change_everywhere
            .push(each.iter().max().copied().unwrap_or_default());
        r.change_each.extend(each);
    }
    let others: Vec<usize> = all.iter().copied().filter(|n| *n != 0).collect();
    // Fresh monitors: after rules that use a set were replaced, a running
    // `nft monitor` no longer prints that set's elements.
    drop(monitors);
    let monitors = Monitors::start(st)?;
    for i in 0..iterations {
        monitors.drain();
        let (pod, cni) = add_pod_timed(st, 0, &PodMeta::default())?;
        let (t0, t1) = (cni.started, cni.returned);
        r.adds.push(t1 - t0);
        let ip = pod
            .ip
            .ok_or_else(|| ClusterError::Cni(format!("{} has no address", pod.name)))?
            .to_string();
        // Counted from the ADD's return: a node that had the address
        // before (felix on node-0 waits only for its own kernel) counts 0.
        let each = monitors
            .wait_all(&others, t0, t1, |l| {
                l.starts_with("add element") && names_address(l, &ip)
            })
            .map_err(|missing| {
                ClusterError::Timeout(format!(
                    "pod {i} ({ip}) did not reach the sets of {:?} within {LIMIT:?}",
                    names(st, missing)
                ))
            });
        let each = match each {
            Ok(e) => e,
            Err(e) => {
                del_pod(st, &pod.name)?;
                return Err(e);
            }
        };
        r.pod_everywhere
            .push(each.iter().max().copied().unwrap_or_default());
        r.pod_each.extend(each);
        del_pod(st, &pod.name)?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ports_match_whole() {
        let l = "add element inet calico-rs-filter s4-abc { 10.65.1.5, 10.65.1.50 }";
        assert!(names_address(l, "10.65.1.5"));
        assert!(names_address(l, "10.65.1.50"));
        assert!(!names_address(l, "10.65.1.4"));
        assert!(!names_address(l, "0.65.1.5"));
        let r = "add rule inet calico-rs-filter po-1-i ip saddr @s4-abc tcp dport 20001 accept";
        assert!(names_port(r, 20001));
        assert!(!names_port(r, 2000));
        assert!(!names_port(r, 20002));
    }
}
