//! `calicoctl ipam show | check | release`.
//!
//! `check` finds what IPAM holds that nothing owns any more: addresses of
//! pods that no longer exist (Pods in the Kubernetes datastore, the
//! WorkloadEndpoints felix writes in etcd), tunnel addresses of deleted
//! nodes, handles whose addresses are gone, blocks with no (or a dead)
//! node's affinity, and addresses held twice. `-o FILE` writes the leaks
//! as a report; `release --from-report FILE` releases those, by handle, so
//! an address that was released and handed to a new pod meanwhile is left
//! alone (the new pod has another handle).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, bail};
use datastore::ipam::Ipam;
use datastore::ipam::block::Block;
use datastore::{Client, Error as DsError, Key, ListKey};
use ipnetwork::IpNetwork;
use ippool_crd::{BlockAffinitySpec, IPAMBlockSpec, IPAMHandleSpec, IPPool};
use serde::{Deserialize, Serialize};

use crate::kinds::table;

/// One allocated address, with who it says it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub ip: IpAddr,
    pub block: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// What `ipam check -o` writes and `ipam release --from-report` reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Addresses whose pod or node no longer exists.
    pub leaked_addresses: Vec<Allocation>,
    /// Handles that hold no address.
    pub handles_without_addresses: Vec<String>,
    /// Blocks no existing node has an affinity to (CIDR, the node named).
    pub blocks_without_affinity: Vec<(String, Option<String>)>,
    /// Addresses allocated in more than one block.
    pub duplicate_addresses: Vec<IpAddr>,
    /// Inconsistencies between blocks, handles and affinities.
    pub problems: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.leaked_addresses.is_empty()
            && self.handles_without_addresses.is_empty()
            && self.blocks_without_affinity.is_empty()
            && self.duplicate_addresses.is_empty()
            && self.problems.is_empty()
    }
}

async fn blocks(c: &Client) -> anyhow::Result<Vec<Block>> {
    let mut out = Vec::new();
    for (_, v) in c.list_values::<IPAMBlockSpec>(&ListKey::Blocks).await? {
        out.push(Block::parse(v.value)?);
    }
    out.sort_by_key(|b| b.cidr);
    Ok(out)
}

fn allocations(b: &Block) -> Vec<Allocation> {
    b.spec
        .allocations
        .iter()
        .enumerate()
        .filter_map(|(o, a)| {
            let attr = b.spec.attributes.get((*a)?)?;
            Some(Allocation {
                ip: datastore::ipam::block::nth(&b.cidr, o as u128),
                block: b.cidr.to_string(),
                handle: attr.handle_id.clone(),
                attributes: attr.secondary.clone(),
            })
        })
        .collect()
}

fn percent(part: u128, whole: u128) -> String {
    if whole == 0 {
        return "0%".into();
    }
    format!("{}%", part * 100 / whole)
}

/// `ipam show`: usage per pool (and per block), or one address.
pub async fn show(c: &Client, show_blocks: bool, ip: Option<IpAddr>) -> anyhow::Result<String> {
    let blocks = blocks(c).await?;
    if let Some(ip) = ip {
        for b in &blocks {
            if !b.cidr.contains(ip) {
                continue;
            }
            if let Some(a) = allocations(b).into_iter().find(|a| a.ip == ip) {
                let mut out = format!("IP {ip} is in use\n");
                if let Some(h) = &a.handle {
                    out += &format!("Handle: {h}\n");
                }
                out += &format!("Block: {}\n", a.block);
                if !a.attributes.is_empty() {
                    out += "Attributes:\n";
                    for (k, v) in &a.attributes {
                        out += &format!("  {k}: {v}\n");
                    }
                }
                return Ok(out);
            }
        }
        return Ok(format!("IP {ip} is not assigned\n"));
    }
    let mut pools: Vec<(IpNetwork, String)> = Vec::new();
    for p in c.list::<IPPool>().await? {
        let name = p.metadata.name.clone().unwrap_or_default();
        match p.spec.cidr.parse::<IpNetwork>() {
            Ok(net) => pools.push((net, name)),
            Err(_) => bail!("IPPool {name:?} has an unreadable cidr {:?}", p.spec.cidr),
        }
    }
    pools.sort();
    let mut rows = Vec::new();
    let row = |grouping: &str, cidr: String, total: u128, used: u128| {
        vec![
            grouping.to_string(),
            cidr,
            total.to_string(),
            format!("{used} ({})", percent(used, total)),
            format!("{} ({})", total - used, percent(total - used, total)),
        ]
    };
    for (net, _) in &pools {
        let total = datastore::ipam::block::size_of(net);
        let inside: Vec<&Block> = blocks
            .iter()
            .filter(|b| net.contains(b.cidr.network()))
            .collect();
        let used: u128 = inside.iter().map(|b| b.num_allocated() as u128).sum();
        rows.push(row("IP Pool", net.to_string(), total, used));
        if show_blocks {
            for b in inside {
                rows.push(row(
                    "Block",
                    b.cidr.to_string(),
                    datastore::ipam::block::size_of(&b.cidr),
                    b.num_allocated() as u128,
                ));
            }
        }
    }
    Ok(table(
        &["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"],
        &rows,
    ))
}

/// The pods that exist, as (namespace, name): Kubernetes' Pods, or in
/// etcd the WorkloadEndpoints felix writes for the pods it set up.
async fn live_pods(c: &Client) -> anyhow::Result<BTreeSet<(String, String)>> {
    match c.list::<datastore::kubernetes::objects::Pod>().await {
        Ok(pods) => Ok(pods
            .into_iter()
            .map(|p| {
                (
                    p.metadata.namespace.unwrap_or_default(),
                    p.metadata.name.unwrap_or_default(),
                )
            })
            .collect()),
        Err(DsError::NotStored { .. }) => Ok(c
            .list::<ippool_crd::WorkloadEndpoint>()
            .await?
            .into_iter()
            .map(|w| (w.metadata.namespace.unwrap_or_default(), w.spec.pod))
            .collect()),
        Err(e) => Err(e.into()),
    }
}

/// Why an allocation is a leak, if it is.
fn leak_reason(
    a: &Allocation,
    pods: &BTreeSet<(String, String)>,
    nodes: &BTreeSet<String>,
) -> Option<String> {
    let attr = |k: &str| a.attributes.get(k).filter(|v| !v.is_empty());
    if let (Some(ns), Some(pod)) = (attr("namespace"), attr("pod")) {
        return (!pods.contains(&(ns.clone(), pod.clone())))
            .then(|| format!("pod {ns}/{pod} does not exist"));
    }
    if let Some(node) = attr("node") {
        return (!nodes.contains(node)).then(|| format!("node {node} does not exist"));
    }
    None
}

/// Reads all of IPAM and everything that owns addresses, and reports.
pub async fn report(c: &Client) -> anyhow::Result<Report> {
    let blocks = blocks(c).await?;
    let pods = live_pods(c).await?;
    let nodes: BTreeSet<String> = c
        .list::<ippool_crd::Node>()
        .await?
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let mut r = Report {
        problems: Ipam::new(c.clone()).audit().await?.problems,
        ..Report::default()
    };
    let affinities: BTreeSet<(String, IpNetwork)> = c
        .list_values::<BlockAffinitySpec>(&ListKey::Affinities { host: None })
        .await?
        .into_iter()
        .filter_map(|(k, _)| match k {
            Key::Affinity { host, cidr } => Some((host, cidr)),
            _ => None,
        })
        .collect();
    let mut seen: BTreeMap<IpAddr, usize> = BTreeMap::new();
    let mut handles_in_use = BTreeSet::new();
    for b in &blocks {
        let host = b.host().map(str::to_string);
        let affine = host
            .as_ref()
            .is_some_and(|h| nodes.contains(h) && affinities.contains(&(h.clone(), b.cidr)));
        if !affine {
            r.blocks_without_affinity.push((b.cidr.to_string(), host));
        }
        for a in allocations(b) {
            *seen.entry(a.ip).or_default() += 1;
            if let Some(h) = &a.handle {
                handles_in_use.insert(h.clone());
            }
            if leak_reason(&a, &pods, &nodes).is_some() {
                r.leaked_addresses.push(a);
            }
        }
    }
    r.duplicate_addresses = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(ip, _)| ip)
        .collect();
    for (k, _) in c.list_values::<IPAMHandleSpec>(&ListKey::Handles).await? {
        if let Key::Handle { id } = k
            && !handles_in_use.contains(&id)
        {
            r.handles_without_addresses.push(id);
        }
    }
    Ok(r)
}

/// `ipam check [-o FILE]`: the summary to print.
pub async fn check(c: &Client, output: Option<&Path>) -> anyhow::Result<String> {
    let r = report(c).await?;
    let blocks = blocks(c).await?;
    let in_use: usize = blocks.iter().map(Block::num_allocated).sum();
    let mut out = format!(
        "Checking IPAM for inconsistencies...\n\n{} blocks, {in_use} addresses in use\n",
        blocks.len()
    );
    out += &format!("Found {} leaked addresses\n", r.leaked_addresses.len());
    for a in &r.leaked_addresses {
        out += &format!(
            "  {} in {} (handle {})",
            a.ip,
            a.block,
            a.handle.as_deref().unwrap_or("none")
        );
        for k in ["namespace", "pod", "node"] {
            if let Some(v) = a.attributes.get(k) {
                out += &format!(" {k}={v}");
            }
        }
        out += "\n";
    }
    out += &format!(
        "Found {} handles without addresses\n",
        r.handles_without_addresses.len()
    );
    for h in &r.handles_without_addresses {
        out += &format!("  {h}\n");
    }
    out += &format!(
        "Found {} blocks without a live node's affinity\n",
        r.blocks_without_affinity.len()
    );
    for (b, h) in &r.blocks_without_affinity {
        out += &format!("  {b} (node {})\n", h.as_deref().unwrap_or("none"));
    }
    out += &format!(
        "Found {} addresses allocated twice\n",
        r.duplicate_addresses.len()
    );
    for ip in &r.duplicate_addresses {
        out += &format!("  {ip}\n");
    }
    out += &format!("Found {} other problems\n", r.problems.len());
    for p in &r.problems {
        out += &format!("  {p}\n");
    }
    out += if r.is_clean() {
        "IPAM is consistent.\n"
    } else {
        "IPAM has problems (see above).\n"
    };
    if let Some(path) = output {
        std::fs::write(path, serde_json::to_vec_pretty(&r)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        out += &format!("Report written to {}\n", path.display());
    }
    Ok(out)
}

/// `ipam release --ip A`.
pub async fn release_ip(c: &Client, ip: IpAddr) -> anyhow::Result<String> {
    let released = Ipam::new(c.clone()).release_ips(&[ip]).await?;
    if released.is_empty() {
        bail!("IP {ip} is not assigned");
    }
    Ok(format!("Successfully released IP {ip}\n"))
}

/// `ipam release --from-report FILE`: releases the report's leaked
/// addresses, each only if it still leaks (its owner is still gone and it
/// is still held by the same handle).
pub async fn release_report(c: &Client, path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let report: Report = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not a report from `calicoctl ipam check -o`",
            path.display()
        )
    })?;
    let now = self::report(c).await?;
    let ipam = Ipam::new(c.clone());
    let (mut released, mut skipped) = (0usize, 0usize);
    for a in &report.leaked_addresses {
        if !now.leaked_addresses.contains(a) {
            skipped += 1;
            continue;
        }
        let n = match &a.handle {
            Some(h) => ipam
                .release_by_handle(h)
                .await?
                .into_iter()
                .filter(|ip| *ip == a.ip)
                .count(),
            None => ipam.release_ips(&[a.ip]).await?.len(),
        };
        released += n;
    }
    Ok(format!(
        "Released {released} leaked addresses; {skipped} in the report no longer leak (left alone)\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leak_is_an_address_whose_pod_or_node_is_gone() {
        let pods = BTreeSet::from([("default".to_string(), "web".to_string())]);
        let nodes = BTreeSet::from(["node-1".to_string()]);
        let a = |kv: &[(&str, &str)]| Allocation {
            ip: "10.0.0.1".parse().unwrap(),
            block: "10.0.0.0/26".into(),
            handle: Some("h".into()),
            attributes: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let live = a(&[("namespace", "default"), ("pod", "web"), ("node", "node-1")]);
        assert_eq!(leak_reason(&live, &pods, &nodes), None);
        let gone = a(&[("namespace", "default"), ("pod", "db"), ("node", "node-1")]);
        assert!(
            leak_reason(&gone, &pods, &nodes)
                .unwrap()
                .contains("default/db")
        );
        let tunnel = a(&[("node", "node-2"), ("type", "ipipTunnelAddress")]);
        assert!(
            leak_reason(&tunnel, &pods, &nodes)
                .unwrap()
                .contains("node-2")
        );
        assert_eq!(leak_reason(&a(&[]), &pods, &nodes), None);
    }
}
