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

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, bail};
use datastore::Client;
use datastore::ipam::Ipam;
use datastore::ipam::block::Block;
use datastore::ipam::leaks::{LeakReport, held_addresses};
use ipnetwork::IpNetwork;
use ippool_crd::IPPool;

use crate::kinds::table;

async fn blocks(c: &Client) -> anyhow::Result<Vec<Block>> {
    Ok(Ipam::new(c.clone()).all_blocks().await?)
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
            if let Some(a) = held_addresses(b).into_iter().find(|a| a.ip == ip) {
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

/// Reads all of IPAM and everything that owns addresses, and reports.
pub async fn report(c: &Client) -> anyhow::Result<LeakReport> {
    Ok(Ipam::new(c.clone()).leak_report().await?)
}

/// `ipam check [-o FILE]`: the summary to print.
pub async fn check(c: &Client, output: Option<&Path>) -> anyhow::Result<String> {
    let r = report(c).await?;
    let mut out = format!(
        "Checking IPAM for inconsistencies...\n\n{} blocks, {} addresses in use\n",
        r.blocks, r.in_use
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
        "Found {} deleted nodes still holding affinities\n",
        r.affinities_of_deleted_nodes.len()
    );
    for n in &r.affinities_of_deleted_nodes {
        out += &format!("  {n}\n");
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
    let report: LeakReport = serde_json::from_slice(&text).with_context(|| {
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
