//! Validation of IP pools, and the defaulted, typed [`PoolConfig`] that IPAM
//! and felix consume.
//!
//! The rules are Calico's (its Go validator, its clientv3 checks and the CEL
//! rules on its CRD): a strictly masked CIDR outside the link-local ranges;
//! a block size that suits the family and fits inside the pool; at most one
//! encapsulation; no IPIP on IPv6; the LoadBalancer-pool restrictions; and,
//! across pools, no overlap.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;

use crate::defaults::{self, BLOCK_SIZE_RANGE_V4, BLOCK_SIZE_RANGE_V6};
use crate::ippool::{AllowedUse, AssignmentMode, EncapMode, IPPool, IPPoolSpec};
use crate::selector::Selector;
use crate::validate::{Collector, ValidationError, ValidationErrors, describe};

/// A defaulted + validated, fully typed view of one pool; what IPAM and
/// felix use.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    /// Strictly masked.
    pub cidr: IpNetwork,
    /// Defaulted by family; always fits the family (20–32 / 116–128).
    pub block_size: u8,
    pub ipip_mode: EncapMode,
    pub vxlan_mode: EncapMode,
    pub nat_outgoing: bool,
    pub disabled: bool,
    pub disable_bgp_export: bool,
    pub node_selector: Selector,
    /// Never empty.
    pub allowed_uses: Vec<AllowedUse>,
    /// `None` means pods in any namespace may use the pool.
    pub namespace_selector: Option<Selector>,
    pub assignment_mode: AssignmentMode,
}

impl PoolConfig {
    pub fn is_ipv4(&self) -> bool {
        self.cidr.is_ipv4()
    }

    pub fn is_ipv6(&self) -> bool {
        self.cidr.is_ipv6()
    }

    pub fn allows(&self, usage: AllowedUse) -> bool {
        self.allowed_uses.contains(&usage)
    }

    /// True when a node with these labels may take blocks from this pool.
    /// (Disabled pools select nobody for new allocations.)
    pub fn selects_node(&self, node_labels: &BTreeMap<String, String>) -> bool {
        !self.disabled && self.node_selector.matches(node_labels)
    }

    /// Number of blocks the pool divides into.
    pub fn block_count(&self) -> u128 {
        let shift = u32::from(self.block_size.saturating_sub(self.cidr.prefix()));
        1u128.checked_shl(shift).unwrap_or(u128::MAX)
    }
}

impl IPPool {
    /// Validates this pool alone (every rule except overlap with other
    /// pools) and returns its defaulted, typed configuration.
    pub fn config(&self) -> Result<PoolConfig, ValidationErrors> {
        let mut c = Collector::default();
        let name = match self.metadata.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => {
                c.error("metadata.name", "is required");
                String::new()
            }
        };
        let config = check_spec(&self.spec, name, &mut c);
        c.finish(describe("IPPool", &self.metadata))?;
        // check_spec returns None only after recording an error.
        config.ok_or_else(|| ValidationErrors {
            resource: describe("IPPool", &self.metadata),
            errors: vec![ValidationError::new("spec", "is invalid")],
        })
    }

    /// Validates this pool alone; see [`IPPool::config`].
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        self.config().map(|_| ())
    }

    /// Validates this pool, then that it overlaps none of `others`
    /// (a pool with the same name as this one is taken to be this pool's
    /// previous version and skipped, as Calico does).
    pub fn validate_against(&self, others: &[IPPool]) -> Result<PoolConfig, ValidationErrors> {
        let config = self.config()?;
        let mut c = Collector::default();
        for other in others {
            if other.name() == config.name {
                continue;
            }
            if let Some(other_net) = other.spec.cidr_network()
                && overlaps(&config.cidr, &other_net)
            {
                c.push(overlap_error(
                    &config.name,
                    &config.cidr,
                    other.name(),
                    &other_net,
                ));
            }
        }
        c.finish(describe("IPPool", &self.metadata))?;
        Ok(config)
    }

    /// Checks an update from `old` to `self`: Calico refuses to change a
    /// pool's CIDR or block size (existing blocks would be orphaned), or to
    /// turn a LoadBalancer pool into a Workload/Tunnel pool.
    pub fn validate_update(&self, old: &IPPool) -> Result<(), ValidationErrors> {
        let mut c = Collector::default();
        if let Err(e) = self.config() {
            c.extend(e.errors);
        }
        let (new_net, old_net) = (self.spec.cidr_network(), old.spec.cidr_network());
        if new_net.map(|n| (n.network(), n.prefix())) != old_net.map(|n| (n.network(), n.prefix()))
        {
            c.error_hint(
                "spec.cidr",
                format!("cannot change from {} to {}", old.spec.cidr, self.spec.cidr),
                "create a new pool with the new CIDR, disable the old one and migrate workloads",
            );
        }
        if self.spec.block_size() != old.spec.block_size() {
            c.error_hint(
                "spec.blockSize",
                format!(
                    "cannot change from {} to {}",
                    show_size(old.spec.block_size()),
                    show_size(self.spec.block_size())
                ),
                "create a new pool with the new block size and migrate workloads",
            );
        }
        let was_lb = old.spec.allowed_uses().contains(&AllowedUse::LoadBalancer);
        if was_lb
            && self
                .spec
                .allowed_uses()
                .iter()
                .any(|u| *u != AllowedUse::LoadBalancer)
        {
            c.error(
                "spec.allowedUses",
                "a LoadBalancer pool cannot be changed to Workload or Tunnel use",
            );
        }
        c.finish(describe("IPPool", &self.metadata))
    }
}

fn show_size(s: Option<u8>) -> String {
    s.map_or_else(|| "unknown".to_string(), |n| n.to_string())
}

/// Validates every pool, then that no two overlap (naming both). Returns the
/// configs in input order.
pub fn validate_pool_set(pools: &[IPPool]) -> Result<Vec<PoolConfig>, ValidationErrors> {
    let mut c = Collector::default();
    let mut configs = Vec::with_capacity(pools.len());
    for pool in pools {
        match pool.config() {
            Ok(cfg) => configs.push(cfg),
            Err(e) => c.extend(e.errors.into_iter().map(|mut err| {
                err.message = format!("{}: {}", e.resource, err.message);
                err
            })),
        }
    }
    for (i, a) in configs.iter().enumerate() {
        for b in &configs[i + 1..] {
            if overlaps(&a.cidr, &b.cidr) {
                c.push(overlap_error(&b.name, &b.cidr, &a.name, &a.cidr));
            }
        }
    }
    c.finish(format!("IPPool set of {}", pools.len()))?;
    Ok(configs)
}

/// True when the two ranges share any address.
pub fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

fn overlap_error(
    name: &str,
    cidr: &IpNetwork,
    other: &str,
    other_cidr: &IpNetwork,
) -> ValidationError {
    ValidationError::new(
        "spec.cidr",
        format!("IPPool {name:?} ({cidr}) overlaps IPPool {other:?} ({other_cidr})"),
    )
    .with_hint("IP pools must not overlap; shrink, move or delete one of them")
}

/// Runs every single-pool rule, recording problems in `c`. Returns the
/// config when the fields it needs were usable (even if other rules failed;
/// the caller decides by whether `c` has errors).
fn check_spec(spec: &IPPoolSpec, name: String, c: &mut Collector) -> Option<PoolConfig> {
    let cidr = check_cidr(&spec.cidr, c);

    let block_size = check_block_size(spec, cidr.as_ref(), c);

    let ipip_mode = spec.ipip_mode();
    let vxlan_mode = spec.vxlan_mode();
    if ipip_mode.is_enabled() && vxlan_mode.is_enabled() {
        c.error_hint(
            "spec.ipipMode",
            format!("ipipMode {ipip_mode:?} and vxlanMode {vxlan_mode:?} cannot both be enabled"),
            "choose one encapsulation and set the other to Never",
        );
    }
    if let Some(IpNetwork::V6(net)) = cidr
        && ipip_mode.is_enabled()
    {
        c.error_hint(
            "spec.ipipMode",
            format!("is {ipip_mode:?}, but IPIP is IPv4-only and this pool ({net}) is IPv6"),
            "set ipipMode: Never; use vxlanMode for IPv6 encapsulation",
        );
    }

    let node_selector = check_selector("spec.nodeSelector", spec.node_selector(), c);
    if let Some(sel) = &node_selector
        && sel.uses_global()
    {
        c.error(
            "spec.nodeSelector",
            "global() is not valid in an IPPool node selector",
        );
    }
    let namespace_selector = match spec.namespace_selector.as_deref() {
        None | Some("") => Some(None),
        Some(text) => {
            let sel = check_selector("spec.namespaceSelector", text, c);
            if sel.as_ref().is_some_and(Selector::uses_global) {
                c.error(
                    "spec.namespaceSelector",
                    "global() is not valid in an IPPool namespace selector",
                );
            }
            sel.map(Some)
        }
    };

    let allowed_uses = spec.allowed_uses();
    check_allowed_uses(spec, &allowed_uses, c);

    if spec.ipip.is_some() {
        c.error_hint(
            "spec.ipip",
            "the pre-v3 ipip field is no longer supported",
            "remove it and set ipipMode: Always or CrossSubnet instead",
        );
    }
    if spec.nat_outgoing_v1 == Some(true) {
        c.error_hint(
            "spec.nat-outgoing",
            "the pre-v3 nat-outgoing field is no longer supported",
            "remove it and set natOutgoing: true instead",
        );
    }

    Some(PoolConfig {
        name,
        cidr: cidr?,
        block_size: block_size?,
        ipip_mode,
        vxlan_mode,
        nat_outgoing: spec.nat_outgoing(),
        disabled: spec.disabled(),
        disable_bgp_export: spec.disable_bgp_export(),
        node_selector: node_selector?,
        allowed_uses,
        namespace_selector: namespace_selector?,
        assignment_mode: spec.assignment_mode(),
    })
}

fn check_cidr(text: &str, c: &mut Collector) -> Option<IpNetwork> {
    if text.is_empty() {
        c.error_hint(
            "spec.cidr",
            "is required",
            "set the pool's range, e.g. 10.65.0.0/16",
        );
        return None;
    }
    if !text.contains('/') {
        c.error_hint(
            "spec.cidr",
            format!("{text:?} has no prefix length"),
            format!("write the range as a CIDR, e.g. {text}/16"),
        );
        return None;
    }
    let net: IpNetwork = match text.parse() {
        Ok(n) => n,
        Err(_) => {
            c.error_hint(
                "spec.cidr",
                format!("{text:?} is not a valid IPv4 or IPv6 CIDR"),
                "write it as <address>/<prefix length>, e.g. 10.65.0.0/16 or fd00:10::/48",
            );
            return None;
        }
    };
    let masked = IpNetwork::new(net.network(), net.prefix()).unwrap_or(net);
    if net.ip() != net.network() {
        c.error_hint(
            "spec.cidr",
            format!(
                "{text} is not strictly masked: bits after the /{} prefix are set",
                net.prefix()
            ),
            format!("did you mean {masked}?"),
        );
    }
    let (link_local, family): (IpNetwork, &str) = if net.is_ipv4() {
        (
            IpNetwork::V4(ipnetwork::Ipv4Network::new([169, 254, 0, 0].into(), 16).ok()?),
            "IPv4",
        )
    } else {
        (
            IpNetwork::V6(
                ipnetwork::Ipv6Network::new([0xfe80, 0, 0, 0, 0, 0, 0, 0].into(), 10).ok()?,
            ),
            "IPv6",
        )
    };
    if overlaps(&masked, &link_local) {
        c.error_hint(
            "spec.cidr",
            format!("{masked} overlaps the {family} link-local range {link_local}"),
            format!("choose a range outside {link_local}"),
        );
    }
    Some(masked)
}

fn check_block_size(spec: &IPPoolSpec, cidr: Option<&IpNetwork>, c: &mut Collector) -> Option<u8> {
    let requested = spec.block_size.filter(|n| *n != 0);
    let Some(net) = cidr else {
        // Family unknown: only the family-independent bound can be checked.
        if let Some(n) = requested
            && !(0..=128).contains(&n)
        {
            c.error(
                "spec.blockSize",
                format!("{n} is out of range; block sizes are 20–32 for IPv4 and 116–128 for IPv6"),
            );
        }
        return None;
    };
    let (range, family, default) = if net.is_ipv4() {
        (BLOCK_SIZE_RANGE_V4, "IPv4", defaults::BLOCK_SIZE_V4)
    } else {
        (BLOCK_SIZE_RANGE_V6, "IPv6", defaults::BLOCK_SIZE_V6)
    };
    let size = match requested {
        None => default,
        Some(n) => match u8::try_from(n).ok().filter(|s| range.contains(s)) {
            Some(s) => s,
            None => {
                c.error_hint(
                    "spec.blockSize",
                    format!(
                        "{n} is out of range; {family} block sizes are {}–{}",
                        range.start(),
                        range.end()
                    ),
                    format!("omit blockSize to use the default of {default}"),
                );
                return None;
            }
        },
    };
    // Calico skips this rule for disabled pools, so an existing too-small
    // pool can be disabled while it is drained.
    if size < net.prefix() && !spec.disabled() {
        c.error_hint(
            "spec.blockSize",
            format!(
                "a /{size} block does not fit in the /{} pool {net}; the pool must be at least one block",
                net.prefix()
            ),
            format!(
                "use a blockSize between {} and {}, or a larger pool",
                net.prefix(),
                range.end()
            ),
        );
    }
    Some(size)
}

fn check_selector(field: &str, text: &str, c: &mut Collector) -> Option<Selector> {
    match Selector::parse(text) {
        Ok(s) => Some(s),
        Err(e) => {
            c.error_hint(
                field,
                e.to_string(),
                "selectors look like all(), has(label), label == 'value', label in {'a', 'b'}, \
                 combined with &&, || and !",
            );
            None
        }
    }
}

fn check_allowed_uses(spec: &IPPoolSpec, uses: &[AllowedUse], c: &mut Collector) {
    let mut seen = Vec::new();
    for u in uses {
        if seen.contains(u) {
            c.error(
                "spec.allowedUses",
                format!("{u:?} is listed more than once"),
            );
        }
        seen.push(*u);
    }
    let lb = uses.contains(&AllowedUse::LoadBalancer);
    if lb && uses.iter().any(|u| *u != AllowedUse::LoadBalancer) {
        c.error_hint(
            "spec.allowedUses",
            "LoadBalancer cannot be combined with Workload or Tunnel",
            "use a separate pool for LoadBalancer addresses",
        );
    }
    if lb && (spec.ipip_mode().is_enabled() || spec.vxlan_mode().is_enabled()) {
        c.error_hint(
            "spec.allowedUses",
            "a LoadBalancer pool cannot enable IPIP or VXLAN",
            "set ipipMode and vxlanMode to Never",
        );
    }
    if lb && spec.disable_bgp_export() {
        c.error(
            "spec.disableBGPExport",
            "a LoadBalancer pool must be advertised over BGP; unset disableBGPExport",
        );
    }
    if lb && spec.node_selector() != defaults::NODE_SELECTOR {
        c.error(
            "spec.nodeSelector",
            "a LoadBalancer pool must select all nodes: nodeSelector must be all()",
        );
    }
    if uses.contains(&AllowedUse::Tunnel)
        && spec
            .namespace_selector
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    {
        c.error_hint(
            "spec.namespaceSelector",
            "a pool used for Tunnel addresses cannot have a namespaceSelector",
            "remove Tunnel from allowedUses, or remove the namespaceSelector",
        );
    }
}
