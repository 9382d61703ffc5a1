//! What the policy dataplane is asked to enforce on one node: a complete,
//! self-consistent snapshot. The policy source (watches on the datastore)
//! builds one after every change it reads and publishes it on a
//! `tokio::sync::watch` channel; the nftables dataplane takes the newest
//! one, compares it with what it last programmed, and writes the
//! difference as one nft transaction (a pod coming or going is a set
//! element, a changed policy is its chains).
//!
//! ```text
//!  datastore watches ──► policy source ──watch<Arc<PolicySnapshot>>──► nft dataplane ──► kernel
//! ```

use std::collections::BTreeMap;

use super::{Endpoint, PolicyError, PolicySet};

/// One node's view of the cluster's policy, as of one moment.
#[derive(Debug, Clone, Default)]
pub struct PolicySnapshot {
    /// Every policy that converted, in Calico's order, and the namespace
    /// profiles.
    pub policies: PolicySet,
    /// Every workload endpoint in the cluster, by [`Endpoint::id`]
    /// (`namespace/name`). Selector memberships (the named sets) are
    /// computed over these.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// This node's endpoints: [`Endpoint::id`] → the host side of its veth
    /// (`caliXXXXXXXXXXX`). Only these get per-endpoint chains.
    pub local: BTreeMap<String, String>,
    /// Policies that did not convert: reported, left out of `policies`.
    pub errors: Vec<PolicyError>,
    /// `false` until the source has read every resource once: the
    /// dataplane programs nothing from a partial view (a half-listed
    /// cluster would deny traffic a policy not yet read allows).
    pub synced: bool,
}
