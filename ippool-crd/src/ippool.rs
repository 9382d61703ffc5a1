//! IPPool: a range pods (and tunnel addresses) get their IPs from, handed
//! out to nodes in blocks of `blockSize`.
//!
//! The stored spec keeps Calico's optional fields optional, so a pool reads
//! back exactly as it was written; [`IPPool::with_defaults`] fills them the
//! way Calico does, and [`IPPool::config`] (in `pool_config`) gives the
//! validated, typed view the rest of the system uses.

use ipnetwork::IpNetwork;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::defaults;
use crate::serde_util::empty_as_none;

// Enums that appear in `Option<...>` fields carry rustdoc-only docs
// (`cfg_attr(doc, ...)`): schemars would otherwise copy the enum's
// description over the field's own in the generated CRD.
#[cfg_attr(
    doc,
    doc = "When packets between pods on different nodes are encapsulated"
)]
#[cfg_attr(doc, doc = "(`ipipMode`, `vxlanMode`).")]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    #[cfg_attr(doc, doc = "Only when the destination node is in a different subnet.")]
    CrossSubnet,
}

impl EncapMode {
    /// True for `Always` and `CrossSubnet`.
    pub fn is_enabled(self) -> bool {
        self != EncapMode::Never
    }
}

#[cfg_attr(doc, doc = "What addresses from a pool may be used for.")]
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum AllowedUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

#[cfg_attr(
    doc,
    doc = "Whether IPAM hands out addresses from a pool on its own, or only when"
)]
#[cfg_attr(doc, doc = "asked for that pool by name.")]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AssignmentMode {
    #[default]
    Automatic,
    Manual,
}

/// The pre-v3 `ipip` block. Calico still reads it for backwards
/// compatibility but refuses it on writes; we keep it so old objects
/// round-trip, and report it in validation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct IPIPConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `always` or `cross-subnet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// The desired state of an IP pool.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPPool",
    plural = "ippools",
    singular = "ippool",
    status = "IPPoolStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A range of addresses Calico IPAM assigns pod and tunnel IPs from, in per-node blocks.",
    printcolumn = r#"{"name": "CIDR", "type": "string", "jsonPath": ".spec.cidr"}"#,
    printcolumn = r#"{"name": "IPIP", "type": "string", "jsonPath": ".spec.ipipMode"}"#,
    printcolumn = r#"{"name": "VXLAN", "type": "string", "jsonPath": ".spec.vxlanMode"}"#,
    printcolumn = r#"{"name": "NAT", "type": "boolean", "jsonPath": ".spec.natOutgoing"}"#,
    printcolumn = r#"{"name": "BlockSize", "type": "integer", "jsonPath": ".spec.blockSize"}"#,
    printcolumn = r#"{"name": "Disabled", "type": "boolean", "jsonPath": ".spec.disabled"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "DisableBGPExport", "type": "boolean", "priority": 1, "jsonPath": ".spec.disableBGPExport"}"#,
    printcolumn = r#"{"name": "Selector", "type": "string", "priority": 1, "jsonPath": ".spec.nodeSelector"}"#,
    printcolumn = r#"{"name": "Allocatable", "type": "string", "priority": 1, "jsonPath": ".status.conditions[?(@.type==\"Allocatable\")].reason"}"#,
    printcolumn = r#"{"name": "Blocks", "type": "integer", "priority": 1, "jsonPath": ".status.allocatedBlocks"}"#,
    printcolumn = r#"{"name": "Used", "type": "integer", "priority": 1, "jsonPath": ".status.allocatedAddresses"}"#,
    printcolumn = r#"{"name": "InBlocks", "type": "integer", "priority": 1, "jsonPath": ".status.blockAddresses"}"#
)]
#[x_kube(
    validation = Rule::new("!has(self.ipipMode) || !has(self.vxlanMode) || self.ipipMode == 'Never' || self.vxlanMode == 'Never'")
        .message("ipipMode and vxlanMode cannot both be enabled; set one of them to Never")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.ipipMode) || self.ipipMode == 'Never' || cidr(self.cidr).ip().family() == 4")
        .message("IPIP is IPv4 only; an IPv6 pool must have ipipMode Never (use vxlanMode for IPv6 encapsulation)")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("cidr(self.cidr) == cidr(self.cidr).masked()")
        .message("cidr must be strictly masked: the host bits after the prefix length must be zero")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!cidr('169.254.0.0/16').containsIP(cidr(self.cidr).ip()) && !cidr(self.cidr).containsIP('169.254.0.0')")
        .message("cidr overlaps the IPv4 link-local range 169.254.0.0/16")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!cidr('fe80::/10').containsIP(cidr(self.cidr).ip()) && !cidr(self.cidr).containsIP('fe80::')")
        .message("cidr overlaps the IPv6 link-local range fe80::/10")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.blockSize) || self.blockSize == 0 || (cidr(self.cidr).ip().family() == 4 ? (self.blockSize >= 20 && self.blockSize <= 32) : (self.blockSize >= 116 && self.blockSize <= 128))")
        .message("blockSize must be 20-32 for an IPv4 pool and 116-128 for an IPv6 pool")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("(has(self.disabled) && self.disabled) || cidr(self.cidr).prefixLength() <= ((has(self.blockSize) && self.blockSize != 0) ? self.blockSize : (cidr(self.cidr).ip().family() == 4 ? 26 : 122))")
        .message("the pool is smaller than one block: its prefix length must not be longer than blockSize")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.allowedUses) || !self.allowedUses.exists(u, u == 'LoadBalancer') || !self.allowedUses.exists(u, u == 'Workload' || u == 'Tunnel')")
        .message("a LoadBalancer pool cannot also be used for Workload or Tunnel addresses")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.allowedUses) || !self.allowedUses.exists(u, u == 'LoadBalancer') || ((!has(self.ipipMode) || self.ipipMode == 'Never') && (!has(self.vxlanMode) || self.vxlanMode == 'Never'))")
        .message("a LoadBalancer pool cannot enable IPIP or VXLAN")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.allowedUses) || !self.allowedUses.exists(u, u == 'LoadBalancer') || !has(self.disableBGPExport) || !self.disableBGPExport")
        .message("a LoadBalancer pool must be exported over BGP; unset disableBGPExport")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.allowedUses) || !self.allowedUses.exists(u, u == 'LoadBalancer') || !has(self.nodeSelector) || self.nodeSelector == 'all()'")
        .message("a LoadBalancer pool must select all nodes: nodeSelector must be all()")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.allowedUses) || !self.allowedUses.exists(u, u == 'Tunnel') || !has(self.namespaceSelector) || size(self.namespaceSelector) == 0")
        .message("a pool used for Tunnel addresses cannot have a namespaceSelector")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.nodeSelector) || !self.nodeSelector.contains('global(')")
        .message("global() is not valid in an IPPool nodeSelector")
        .reason(Reason::FieldValueInvalid),
    // Transition rules. The block size is compared as IPAM uses it: unset
    // (or 0) is the family's default, so giving an unset size its default
    // value changes nothing, and any other value would orphan the blocks.
    validation = Rule::new("(has(self.blockSize) && self.blockSize != 0 ? self.blockSize : (cidr(self.cidr).ip().family() == 4 ? 26 : 122)) == (has(oldSelf.blockSize) && oldSelf.blockSize != 0 ? oldSelf.blockSize : (cidr(oldSelf.cidr).ip().family() == 4 ? 26 : 122))")
        .message("blockSize cannot be changed; create a new pool and migrate to it")
        .field_path(".blockSize")
        .reason(Reason::FieldValueInvalid),
    // Unset allowedUses is [Workload, Tunnel].
    validation = Rule::new("!has(oldSelf.allowedUses) || !oldSelf.allowedUses.exists(u, u == 'LoadBalancer') || (has(self.allowedUses) && self.allowedUses.all(u, u == 'LoadBalancer'))")
        .message("a LoadBalancer pool cannot be changed to Workload or Tunnel use")
        .field_path(".allowedUses")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolSpec {
    /// The pool's range, strictly masked (e.g. 10.65.0.0/16). Cannot change
    /// once created.
    #[schemars(extend("format" = "cidr"), length(max = 48))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("cidr cannot be changed; create a new pool and migrate to it").reason(Reason::FieldValueInvalid))]
    pub cidr: String,

    /// VXLAN encapsulation between nodes. Default Never.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    #[schemars(extend("default" = "Never"))]
    pub vxlan_mode: Option<EncapMode>,

    /// IP-in-IP encapsulation between nodes (IPv4 pools only). Default Never.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    #[schemars(extend("default" = "Never"))]
    pub ipip_mode: Option<EncapMode>,

    /// Masquerade traffic from pods in this pool to destinations outside
    /// every pool. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub nat_outgoing: Option<bool>,

    /// Stop assigning new addresses from this pool. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub disabled: Option<bool>,

    /// Do not advertise this pool's routes over BGP. Default false.
    #[serde(
        rename = "disableBGPExport",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("default" = false))]
    pub disable_bgp_export: Option<bool>,

    /// Prefix length of the per-node blocks. Default 26 (IPv4) / 122 (IPv6);
    /// 20–32 for IPv4, 116–128 for IPv6. Cannot change once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 128))]
    pub block_size: Option<i32>,

    /// Calico selector over node labels: the nodes that may take blocks from
    /// this pool. Default all().
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), extend("default" = "all()"))]
    pub node_selector: Option<String>,

    /// Calico selector over namespace labels: pods in matching namespaces
    /// may use this pool. Unset means any namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub namespace_selector: Option<String>,

    /// Deprecated pre-v3 IPIP setting; must not be set (use ipipMode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip: Option<IPIPConfiguration>,

    /// Deprecated pre-v3 NAT setting; must not be set (use natOutgoing).
    #[serde(
        rename = "nat-outgoing",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub nat_outgoing_v1: Option<bool>,

    /// What the pool's addresses are for. Default [Workload, Tunnel].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10), extend("x-kubernetes-list-type" = "set"))]
    pub allowed_uses: Option<Vec<AllowedUse>>,

    /// Automatic (default) or Manual (only when a pod asks for this pool).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    #[schemars(extend("default" = "Automatic"))]
    pub assignment_mode: Option<AssignmentMode>,
}

/// Observed state of an IP pool, written by calico-node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolStatus {
    /// `Allocatable`: whether IPAM may assign addresses from the pool
    /// (reason `OK`, `PoolDisabled` or `CIDROverlap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,

    /// IPAM blocks carved out of the pool (claimed by nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_blocks: Option<u32>,

    /// Addresses in those blocks that are assigned (pods, tunnels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_addresses: Option<u64>,

    /// All addresses in those blocks, assigned or free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_addresses: Option<u64>,
}

impl IPPoolSpec {
    /// A spec for `cidr` with everything else unset.
    pub fn new(cidr: impl Into<String>) -> Self {
        Self {
            cidr: cidr.into(),
            ..Default::default()
        }
    }

    /// The CIDR, if it parses (masked or not; see validation for the rules).
    pub fn cidr_network(&self) -> Option<IpNetwork> {
        if !self.cidr.contains('/') {
            return None;
        }
        self.cidr.parse().ok()
    }

    pub fn ipip_mode(&self) -> EncapMode {
        self.ipip_mode.unwrap_or_default()
    }

    pub fn vxlan_mode(&self) -> EncapMode {
        self.vxlan_mode.unwrap_or_default()
    }

    pub fn nat_outgoing(&self) -> bool {
        self.nat_outgoing.unwrap_or(false)
    }

    pub fn disabled(&self) -> bool {
        self.disabled.unwrap_or(false)
    }

    pub fn disable_bgp_export(&self) -> bool {
        self.disable_bgp_export.unwrap_or(false)
    }

    /// The block size, defaulted by address family (unset and 0 both mean
    /// "default", as in Calico). `None` when the size is out of `u8` range
    /// or the family is unknown because the CIDR does not parse.
    pub fn block_size(&self) -> Option<u8> {
        match self.block_size {
            Some(n) if n != 0 => u8::try_from(n).ok(),
            _ => Some(match self.cidr_network()? {
                IpNetwork::V4(_) => defaults::BLOCK_SIZE_V4,
                IpNetwork::V6(_) => defaults::BLOCK_SIZE_V6,
            }),
        }
    }

    /// The node selector text; empty or unset means `all()`.
    pub fn node_selector(&self) -> &str {
        match self.node_selector.as_deref() {
            None | Some("") => defaults::NODE_SELECTOR,
            Some(s) => s,
        }
    }

    /// The allowed uses; unset or empty means [Workload, Tunnel].
    pub fn allowed_uses(&self) -> Vec<AllowedUse> {
        match self.allowed_uses.as_deref() {
            None | Some([]) => vec![AllowedUse::Workload, AllowedUse::Tunnel],
            Some(uses) => uses.to_vec(),
        }
    }

    pub fn assignment_mode(&self) -> AssignmentMode {
        self.assignment_mode.unwrap_or_default()
    }

    /// Fills every defaultable field the way Calico's API does on create:
    /// blockSize by family, ipipMode/vxlanMode Never, nodeSelector all(),
    /// allowedUses [Workload, Tunnel], assignmentMode Automatic; and, when
    /// the CIDR is valid and masked, rewrites it in canonical form
    /// (e.g. `FD00::0/48` → `fd00::/48`).
    pub fn apply_defaults(&mut self) {
        if let Some(net) = self.cidr_network()
            && net.ip() == net.network()
        {
            self.cidr = net.to_string();
        }
        if matches!(self.block_size, None | Some(0)) {
            self.block_size = self.cidr_network().map(|n| {
                i32::from(if n.is_ipv4() {
                    defaults::BLOCK_SIZE_V4
                } else {
                    defaults::BLOCK_SIZE_V6
                })
            });
        }
        self.ipip_mode.get_or_insert(EncapMode::Never);
        self.vxlan_mode.get_or_insert(EncapMode::Never);
        if self.node_selector.as_deref().is_none_or(str::is_empty) {
            self.node_selector = Some(defaults::NODE_SELECTOR.to_string());
        }
        if self.allowed_uses.as_deref().is_none_or(<[_]>::is_empty) {
            self.allowed_uses = Some(vec![AllowedUse::Workload, AllowedUse::Tunnel]);
        }
        self.assignment_mode
            .get_or_insert(AssignmentMode::Automatic);
    }

    /// A copy with [`Self::apply_defaults`] applied.
    pub fn with_defaults(&self) -> Self {
        let mut s = self.clone();
        s.apply_defaults();
        s
    }
}

impl IPPool {
    /// A copy of this pool with Calico's defaults filled in (see
    /// [`IPPoolSpec::apply_defaults`]).
    pub fn with_defaults(&self) -> IPPool {
        let mut p = self.clone();
        p.spec.apply_defaults();
        p
    }

    /// The object name, or "" when unset.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
}
