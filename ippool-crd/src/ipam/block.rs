//! IPAMBlock: one block of a pool — which of its addresses are allocated,
//! to which handle, and which node the block is affine to.
//!
//! The JSON is exactly Calico's, since Calico and we read and write the same
//! objects: `allocations[i]` is `null` when address `i` is free, otherwise an
//! index into `attributes`; `unallocated` lists the free ordinals in the order
//! they will be handed out.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::serde_util::null_as_default;

/// Largest block [`IPAMBlockSpec::empty`] builds: a /20 (IPv4) or /116
/// (IPv6), the biggest blocks Calico allows.
const MAX_BLOCK_ADDRESSES: u128 = 4096;

/// Who an allocation belongs to.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AllocationAttribute {
    /// The IPAMHandle that owns the allocation (e.g. `k8s-pod-network.<container id>`).
    #[serde(rename = "handle_id", default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    /// Attributes of the owner: namespace, pod, node, timestamp, type.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub secondary: BTreeMap<String, String>,
    /// Attributes of a second owner during VM live migration.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub alternate_owner_attrs: BTreeMap<String, String>,
    /// When the address was released (RFC 3339); it is reused only after the
    /// IPAM cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub released_at: Option<String>,
}

/// One block's allocation state.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPAMBlock",
    plural = "ipamblocks",
    singular = "ipamblock",
    derive = "PartialEq",
    derive = "Default",
    doc = "A block of pool addresses: its allocations and the node it is affine to."
)]
#[serde(rename_all = "camelCase")]
pub struct IPAMBlockSpec {
    /// The block's range, e.g. 10.65.0.0/26.
    #[schemars(extend("format" = "cidr"))]
    pub cidr: String,
    /// `host:<node>` when the block belongs to a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// When the affinity was claimed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub affinity_claim_time: Option<String>,
    /// Per address ordinal: `null` if free, else an index into `attributes`.
    #[serde(default, deserialize_with = "null_as_default")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub allocations: Vec<Option<usize>>,
    /// Free ordinals, in allocation order.
    #[serde(default, deserialize_with = "null_as_default")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub unallocated: Vec<usize>,
    /// Owners of allocations, shared between allocations of one handle.
    #[serde(default, deserialize_with = "null_as_default")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub attributes: Vec<AllocationAttribute>,
    /// Bumped on every write; lets a release detect that the address was
    /// meanwhile released and reallocated.
    #[serde(default)]
    pub sequence_number: u64,
    /// Ordinal (as a string) → the block's sequence number when it was
    /// allocated.
    #[serde(default, deserialize_with = "null_as_default")]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    /// Set just before deletion, so a racing writer's update conflicts
    /// instead of resurrecting the block.
    #[serde(default)]
    pub deleted: bool,
    /// Deprecated and unused; IPAMConfig's strictAffinity applies.
    #[serde(default)]
    pub strict_affinity: bool,
}

impl IPAMBlockSpec {
    /// A block with every address free, in ordinal order. `None` when the
    /// range is larger than any valid block (more than 4096 addresses).
    pub fn empty(cidr: IpNetwork) -> Option<Self> {
        let bits: u8 = if cidr.is_ipv4() { 32 } else { 128 };
        let size = 1u128.checked_shl(u32::from(bits.checked_sub(cidr.prefix())?))?;
        if size > MAX_BLOCK_ADDRESSES {
            return None;
        }
        let n = usize::try_from(size).ok()?;
        Some(Self {
            cidr: cidr.to_string(),
            allocations: vec![None; n],
            unallocated: (0..n).collect(),
            ..Default::default()
        })
    }

    /// The block's range, if it parses.
    pub fn cidr_network(&self) -> Option<IpNetwork> {
        self.cidr.parse().ok()
    }

    /// The node this block is affine to (`affinity: host:<node>`).
    pub fn affinity_host(&self) -> Option<&str> {
        self.affinity.as_deref()?.strip_prefix("host:")
    }

    /// The `affinity` value for `node`.
    pub fn host_affinity(node: &str) -> String {
        format!("host:{node}")
    }

    /// Number of allocated addresses.
    pub fn allocated_count(&self) -> usize {
        self.allocations.iter().filter(|a| a.is_some()).count()
    }
}
