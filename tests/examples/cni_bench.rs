//! `scripts/bench.sh cni`: pod add / delete latency through the real CNI
//! plugin on one lab node (etcd, confd and felix running, as on a node).
//!
//! Adds N pods one after another, then deletes them, timing each plugin
//! invocation from exec to exit (what kubelet waits for). Prints p50 / p99
//! for ADD and DEL.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ippool_crd::{IPPool, Node};
use lab::Netns;
use lab::cni::{CniCall, CniOut};
use serde_json::json;
use tests::EtcdServer;
use tests::agent::{AgentDirs, build, spawn_confd, spawn_felix};

/// One plugin run in the calling thread's namespace (the node's).
fn cni(
    bin: &Path,
    cmd: &str,
    container: &str,
    netns: &Path,
    pod: &str,
    conf: &str,
) -> anyhow::Result<CniOut> {
    Ok(lab::cni::invoke(&CniCall {
        plugin: bin,
        command: cmd,
        container,
        netns,
        namespace: "default",
        pod,
        config: conf,
        node_ns: None,
    })?)
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

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip_while(|a| a != "--pods")
        .nth(1)
        .map(|s| s.parse())
        .transpose()
        .context("--pods takes a number")?
        .unwrap_or(200);
    let felix = build("felix", "felix")?;
    let confd = build("confd", "confd")?;
    let calico = build("cni", "calico")?;
    lab::sweep_stale();

    let node = Netns::create("cnib")?;
    let gw = Netns::create("cnigw")?;
    lab::veth(&node, "eth0", &gw, "down0")?;
    node.ip(&["addr", "add", "10.0.0.1/24", "dev", "eth0"])?;
    gw.ip(&["addr", "add", "10.0.0.254/24", "dev", "down0"])?;
    node.ip(&["route", "add", "default", "via", "10.0.0.254"])?;
    let pods: Vec<Netns> = (0..n)
        .map(|_| Netns::create("cnip"))
        .collect::<Result<_, _>>()?;
    let paths: Vec<_> = pods.iter().map(Netns::path).collect();

    let (adds, dels) = node.run(move || -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let tmp = tempfile::tempdir()?;
            let d = AgentDirs {
                dir: tmp.path().to_path_buf(),
            };
            let etcd = EtcdServer::start()?;
            let c = datastore::connect_etcd(&etcd.endpoint()).await?;
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "projectcalico.org/v3", "kind": "Node",
                "metadata": {"name": "node-1"}, "spec": {"bgp": {"ipv4Address": "10.0.0.1/24"}},
            }))?;
            c.create(&node).await?;
            let pool: IPPool = serde_json::from_value(json!({
                "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                "metadata": {"name": "p"}, "spec": {"cidr": "10.65.0.0/16"},
            }))?;
            c.create(&pool).await?;
            let _felix = spawn_felix(&felix, &d, "node-1", &etcd.endpoint(), &[])?;
            let _confd = spawn_confd(&confd, &d, "node-1", &etcd.endpoint())?;
            let conf = lab::cni::network_config(&d.felix_socket());

            // Warm up: wait until an ADD works (felix configured), then
            // remove that pod again; it is not counted.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let o = cni(&calico, "ADD", "warmup", &paths[0], "warmup", &conf)?;
                if o.code == 0 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("felix never became ready: {}", o.json);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            cni(&calico, "DEL", "warmup", &paths[0], "warmup", &conf)?;

            let mut adds = Vec::with_capacity(paths.len());
            for (i, p) in paths.iter().enumerate() {
                let t = Instant::now();
                let o = cni(
                    &calico,
                    "ADD",
                    &format!("c{i}"),
                    p,
                    &format!("pod-{i}"),
                    &conf,
                )?;
                adds.push(t.elapsed());
                if o.code != 0 {
                    bail!("ADD {i} failed: {}", o.json);
                }
            }
            let mut dels = Vec::with_capacity(paths.len());
            for (i, p) in paths.iter().enumerate() {
                let t = Instant::now();
                let o = cni(
                    &calico,
                    "DEL",
                    &format!("c{i}"),
                    p,
                    &format!("pod-{i}"),
                    &conf,
                )?;
                dels.push(t.elapsed());
                if o.code != 0 {
                    bail!("DEL {i} failed: {}", o.json);
                }
            }
            Ok((adds, dels))
        })
    })??;
    drop(pods);

    let mut a = adds.clone();
    a.sort();
    let mut d = dels.clone();
    d.sort();
    println!("cni: {n} pods added then deleted one after another on one lab node");
    println!(
        "  ADD  p50 {:>9}   p99 {:>9}   max {:>9}   (target p50 <= 20 ms, p99 <= 50 ms)",
        ms(percentile(&a, 0.5)),
        ms(percentile(&a, 0.99)),
        ms(*a.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "  DEL  p50 {:>9}   p99 {:>9}   max {:>9}",
        ms(percentile(&d, 0.5)),
        ms(percentile(&d, 0.99)),
        ms(*d.last().unwrap_or(&Duration::ZERO))
    );
    Ok(())
}
