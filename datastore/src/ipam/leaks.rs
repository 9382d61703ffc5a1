//! What IPAM holds that nothing owns any more, found the same way by
//! `calicoctl ipam check` and by the cluster's IPAM garbage collector:
//! addresses of pods that no longer exist (Pods in the Kubernetes
//! datastore, the WorkloadEndpoints felix writes in etcd), tunnel
//! addresses of deleted nodes, handles holding no address, blocks with no
//! (or a deleted) node's affinity, and addresses held twice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use ippool_crd::{BlockAffinitySpec, IPAMBlockSpec, IPAMHandleSpec};
use serde::{Deserialize, Serialize};

use super::block::{Block, nth};
use super::{Ipam, IpamError};
use crate::{Error, Key, ListKey};

/// One allocated address, with who it says it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldAddress {
    pub ip: IpAddr,
    pub block: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// A check over all of IPAM (`calicoctl ipam check -o` writes it as JSON,
/// `calicoctl ipam release --from-report` reads it back).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeakReport {
    /// Addresses whose pod or node no longer exists.
    pub leaked_addresses: Vec<HeldAddress>,
    /// Handles that hold no address.
    pub handles_without_addresses: Vec<String>,
    /// Blocks no existing node has an affinity to (CIDR, the node named).
    pub blocks_without_affinity: Vec<(String, Option<String>)>,
    /// Nodes named by affinities that no longer exist.
    #[serde(default)]
    pub affinities_of_deleted_nodes: Vec<String>,
    /// Addresses allocated in more than one block.
    pub duplicate_addresses: Vec<IpAddr>,
    /// Inconsistencies between blocks, handles and affinities.
    pub problems: Vec<String>,
    /// Blocks read, and addresses allocated in them.
    #[serde(default)]
    pub blocks: usize,
    #[serde(default)]
    pub in_use: usize,
}

impl LeakReport {
    pub fn is_clean(&self) -> bool {
        self.leaked_addresses.is_empty()
            && self.handles_without_addresses.is_empty()
            && self.blocks_without_affinity.is_empty()
            && self.affinities_of_deleted_nodes.is_empty()
            && self.duplicate_addresses.is_empty()
            && self.problems.is_empty()
    }
}

/// The allocated addresses of a block, with their owners.
pub fn held_addresses(b: &Block) -> Vec<HeldAddress> {
    b.spec
        .allocations
        .iter()
        .enumerate()
        .filter_map(|(o, a)| {
            let attr = b.spec.attributes.get((*a)?)?;
            Some(HeldAddress {
                ip: nth(&b.cidr, o as u128),
                block: b.cidr.to_string(),
                handle: attr.handle_id.clone(),
                attributes: attr.secondary.clone(),
            })
        })
        .collect()
}

/// Why an address is a leak, if it is: the pod its attributes name is not
/// in `pods`, or (a tunnel address) the node is not in `nodes`.
pub fn leak_reason(
    a: &HeldAddress,
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

impl Ipam {
    /// Every block, parsed, by CIDR.
    pub async fn all_blocks(&self) -> Result<Vec<Block>, IpamError> {
        let mut out = Vec::new();
        for (_, v) in self
            .client
            .list_values::<IPAMBlockSpec>(&ListKey::Blocks)
            .await?
        {
            out.push(Block::parse(v.value)?);
        }
        out.sort_by_key(|b| b.cidr);
        Ok(out)
    }

    /// The pods that exist, as (namespace, name): Kubernetes' Pods, or in
    /// etcd the WorkloadEndpoints felix writes for the pods it set up, on
    /// nodes in `nodes` (a deleted node's pods are gone with it; in
    /// Kubernetes its Pods are deleted by the pod garbage collector).
    pub async fn live_pods(
        &self,
        nodes: &BTreeSet<String>,
    ) -> Result<BTreeSet<(String, String)>, IpamError> {
        match self.client.list::<crate::kubernetes::objects::Pod>().await {
            Ok(pods) => Ok(pods
                .into_iter()
                .map(|p| {
                    (
                        p.metadata.namespace.unwrap_or_default(),
                        p.metadata.name.unwrap_or_default(),
                    )
                })
                .collect()),
            Err(Error::NotStored { .. }) => Ok(self
                .client
                .list::<ippool_crd::WorkloadEndpoint>()
                .await?
                .into_iter()
                .filter(|w| nodes.contains(&w.spec.node))
                .map(|w| (w.metadata.namespace.unwrap_or_default(), w.spec.pod))
                .collect()),
            Err(e) => Err(e.into()),
        }
    }

    /// The Calico nodes that exist.
    pub async fn live_nodes(&self) -> Result<BTreeSet<String>, IpamError> {
        Ok(self
            .client
            .list::<ippool_crd::Node>()
            .await?
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect())
    }

    /// In etcd, the WorkloadEndpoints of nodes that no longer exist (their
    /// pods went with the node), as (namespace, name, resourceVersion);
    /// none in Kubernetes, where the Pods are the endpoints and Kubernetes'
    /// pod garbage collector deletes a deleted node's. The endpoints are
    /// read before the nodes, so one written by a node registered
    /// meanwhile is never among them.
    pub async fn endpoints_of_deleted_nodes(
        &self,
    ) -> Result<Vec<(String, String, Option<String>)>, IpamError> {
        let weps = match self.client.list::<ippool_crd::WorkloadEndpoint>().await {
            Ok(w) => w,
            Err(Error::NotStored { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let nodes = self.live_nodes().await?;
        Ok(weps
            .into_iter()
            .filter(|w| !nodes.contains(&w.spec.node))
            .map(|w| {
                (
                    w.metadata.namespace.unwrap_or_default(),
                    w.metadata.name.unwrap_or_default(),
                    w.metadata.resource_version,
                )
            })
            .collect())
    }

    /// Deletes a WorkloadEndpoint if it is still at `revision` (one
    /// rewritten since is kept); whether it was deleted.
    pub async fn delete_endpoint(
        &self,
        namespace: &str,
        name: &str,
        revision: Option<&str>,
    ) -> Result<bool, IpamError> {
        let rev = revision.map(|r| crate::Revision(r.to_string()));
        match self
            .client
            .delete_in::<ippool_crd::WorkloadEndpoint>(namespace, name, rev.as_ref())
            .await
        {
            Ok(()) => Ok(true),
            Err(Error::NotFound { .. } | Error::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads all of IPAM and everything that owns addresses, and reports
    /// what nothing owns. Any read that fails fails the whole report: a
    /// partial view would call live addresses leaks.
    pub async fn leak_report(&self) -> Result<LeakReport, IpamError> {
        let blocks = self.all_blocks().await?;
        let nodes = self.live_nodes().await?;
        let pods = self.live_pods(&nodes).await?;
        let mut r = LeakReport {
            problems: self.audit().await?.problems,
            blocks: blocks.len(),
            ..LeakReport::default()
        };
        let affinities: BTreeSet<(String, IpNetwork)> = self
            .client
            .list_values::<BlockAffinitySpec>(&ListKey::Affinities { host: None })
            .await?
            .into_iter()
            .filter_map(|(k, _)| match k {
                Key::Affinity { host, cidr } => Some((host, cidr)),
                _ => None,
            })
            .collect();
        r.affinities_of_deleted_nodes = affinities
            .iter()
            .filter(|(h, _)| !nodes.contains(h))
            .map(|(h, _)| h.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
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
            for a in held_addresses(b) {
                r.in_use += 1;
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
        for (k, _) in self
            .client
            .list_values::<IPAMHandleSpec>(&ListKey::Handles)
            .await?
        {
            if let Key::Handle { id } = k
                && !handles_in_use.contains(&id)
            {
                r.handles_without_addresses.push(id);
            }
        }
        Ok(r)
    }

    /// Deletes a handle that holds no address (left by a release that
    /// stopped half-way). One that holds addresses again is kept.
    pub async fn delete_empty_handle(&self, handle: &str) -> Result<bool, IpamError> {
        let key = Key::Handle {
            id: handle.to_string(),
        };
        key.validate()?;
        let Some(h) = self.client.get_value::<IPAMHandleSpec>(&key).await? else {
            return Ok(false);
        };
        if h.value.block.values().any(|n| *n > 0) {
            return Ok(false);
        }
        match self.client.delete_key(&key, Some(&h.revision)).await {
            Ok(()) => Ok(true),
            Err(Error::NotFound { .. } | Error::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leak_is_an_address_whose_pod_or_node_is_gone() {
        let pods = BTreeSet::from([("default".to_string(), "web".to_string())]);
        let nodes = BTreeSet::from(["node-1".to_string()]);
        let a = |kv: &[(&str, &str)]| HeldAddress {
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
