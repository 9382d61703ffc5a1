//! IPAMHandle: the allocations one owner (a pod's network attachment, a
//! node's tunnel address) holds, counted per block, so releasing by handle
//! knows which blocks to visit.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::serde_util::null_as_default;

/// One owner's allocations.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPAMHandle",
    plural = "ipamhandles",
    singular = "ipamhandle",
    derive = "PartialEq",
    derive = "Default",
    doc = "The IPAM allocations held by one owner, counted per block."
)]
#[serde(rename_all = "camelCase")]
pub struct IPAMHandleSpec {
    /// The handle ID, e.g. `k8s-pod-network.<container id>`. The object name
    /// is its lower-cased form ([`crate::names::handle_name`]).
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// Block CIDR → number of this handle's addresses in that block.
    #[serde(default, deserialize_with = "null_as_default")]
    pub block: BTreeMap<String, usize>,
    /// Set just before deletion so racing writers conflict.
    #[serde(default)]
    pub deleted: bool,
}

impl IPAMHandleSpec {
    pub fn new(handle_id: impl Into<String>) -> Self {
        Self {
            handle_id: handle_id.into(),
            ..Default::default()
        }
    }

    /// Total addresses held across blocks.
    pub fn total(&self) -> usize {
        self.block.values().sum()
    }
}
