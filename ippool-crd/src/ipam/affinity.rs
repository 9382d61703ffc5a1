//! BlockAffinity: the claim that a node owns a block. Claims are two-phase:
//! `pending` while the node writes the block, `confirmed` once it has.

use ipnetwork::IpNetwork;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::serde_util::bool_string;

/// Where a node's claim on a block stands.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    Confirmed,
    #[default]
    Pending,
    PendingDeletion,
}

/// A node's claim on a block.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "BlockAffinity",
    plural = "blockaffinities",
    singular = "blockaffinity",
    derive = "PartialEq",
    derive = "Default",
    doc = "A node's claim on an IPAM block."
)]
#[serde(rename_all = "camelCase")]
pub struct BlockAffinitySpec {
    pub state: AffinityState,
    /// The node that claims the block.
    pub node: String,
    /// `host` (the default when unset) or `virtual`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub affinity_type: Option<String>,
    /// The block's range.
    #[schemars(extend("format" = "cidr"))]
    pub cidr: String,
    /// Set just before deletion so racing writers conflict. Stored as the
    /// string "true"/"false", as Calico does.
    #[serde(with = "bool_string", default)]
    #[schemars(with = "String", extend("enum" = ["true", "false"]))]
    pub deleted: bool,
}

impl BlockAffinitySpec {
    /// A pending claim by `node` on `cidr`.
    pub fn pending(node: &str, cidr: &IpNetwork) -> Self {
        Self {
            state: AffinityState::Pending,
            node: node.to_string(),
            affinity_type: None,
            cidr: cidr.to_string(),
            deleted: false,
        }
    }

    pub fn cidr_network(&self) -> Option<IpNetwork> {
        self.cidr.parse().ok()
    }

    /// The affinity type; unset means `host`, as in Calico.
    pub fn affinity_type(&self) -> &str {
        match self.affinity_type.as_deref() {
            None | Some("") => "host",
            Some(t) => t,
        }
    }
}
