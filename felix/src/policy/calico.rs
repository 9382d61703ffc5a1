//! Calico NetworkPolicy and GlobalNetworkPolicy into the model.
//!
//! Rule selectors are scoped the way Calico scopes them: in a namespaced
//! policy, a rule's `selector` (or `notSelector`, or an empty-selector
//! entity with only a `namespaceSelector`) means endpoints of the policy's
//! namespace unless the rule's `namespaceSelector` names others; in a
//! global policy, with no `namespaceSelector`, endpoints of every
//! namespace. `notSelector` itself excludes matching endpoints of any
//! namespace.

use ippool_crd::policy::{self as crd, PolicyParts, PolicyType, PortMatch};
use ippool_crd::{GlobalNetworkPolicy, NetworkPolicy, Selector};

use super::PolicyError;
use super::model::{EndpointMatch, EntityMatch, IcmpMatch, NamespaceMatch, Policy, Rule};

const NAMESPACED_KIND: &str = "Calico NetworkPolicy";
const GLOBAL_KIND: &str = "GlobalNetworkPolicy";

/// A Calico NetworkPolicy, named `namespace/name`.
pub fn convert_namespaced(np: &NetworkPolicy) -> Result<Policy, PolicyError> {
    let name = np.metadata.name.clone().unwrap_or_default();
    let ns = np.metadata.namespace.clone().unwrap_or_default();
    let err = |message: String| PolicyError {
        kind: NAMESPACED_KIND,
        name: format!("{ns}/{name}"),
        message,
    };
    if ns.is_empty() {
        return Err(err("it has no namespace".into()));
    }
    np.validate().map_err(|e| err(e.to_string()))?;
    convert(&np.spec.parts(), Some(&ns), None, format!("{ns}/{name}")).map_err(err)
}

/// A Calico GlobalNetworkPolicy, named by its name.
pub fn convert_global(gnp: &GlobalNetworkPolicy) -> Result<Policy, PolicyError> {
    let name = gnp.metadata.name.clone().unwrap_or_default();
    let err = |message: String| PolicyError {
        kind: GLOBAL_KIND,
        name: name.clone(),
        message,
    };
    gnp.validate().map_err(|e| err(e.to_string()))?;
    let ns_sel = gnp
        .spec
        .namespace_selector()
        .map(|s| parse_selector(s, "spec.namespaceSelector"))
        .transpose()
        .map_err(err)?;
    convert(&gnp.spec.parts(), None, ns_sel, name.clone()).map_err(err)
}

fn parse_selector(text: &str, field: &str) -> Result<Selector, String> {
    Selector::parse(text).map_err(|e| format!("{field}: {e}"))
}

/// The shared part; `ns` is the namespace of a namespaced policy.
/// Validation has run, so errors here are only defence in depth.
fn convert(
    parts: &PolicyParts<'_>,
    ns: Option<&str>,
    namespace_selector: Option<Selector>,
    name: String,
) -> Result<Policy, String> {
    let types = parts.types()?;
    let selector = match parts.selector {
        Some(s) => parse_selector(s, "spec.selector")?,
        None => Selector::all(),
    };
    let rules = |list: &[crd::Rule], dir: &str| {
        list.iter()
            .enumerate()
            .map(|(i, r)| rule(r, ns).map_err(|e| format!("spec.{dir}[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Policy {
        name,
        order: parts.order,
        namespace: ns.map(str::to_string),
        selector,
        namespace_selector,
        applies_ingress: types.contains(&PolicyType::Ingress),
        applies_egress: types.contains(&PolicyType::Egress),
        ingress: rules(parts.ingress, "ingress")?,
        egress: rules(parts.egress, "egress")?,
    })
}

/// One Calico rule; `ns` scopes its selectors (see the module doc).
pub fn rule(r: &crd::Rule, ns: Option<&str>) -> Result<Rule, String> {
    let icmp = |f: &Option<crd::ICMPFields>, field: &str| -> Result<Option<IcmpMatch>, String> {
        let Some(f) = f else { return Ok(None) };
        let t = f
            .icmp_type
            .ok_or_else(|| format!("{field}: an ICMP match needs a type"))?;
        let icmp_type = u8::try_from(t).map_err(|_| format!("{field}.type: {t} is not 0–254"))?;
        let code = f
            .code
            .map(|c| u8::try_from(c).map_err(|_| format!("{field}.code: {c} is not 0–255")))
            .transpose()?;
        Ok(Some(IcmpMatch { icmp_type, code }))
    };
    Ok(Rule {
        action: r.action().map_err(|e| format!("action: {e}"))?,
        ip_version: r.ip_version.and_then(|v| u8::try_from(v).ok()),
        protocol: r.protocol().map_err(|e| format!("protocol: {e}"))?,
        not_protocol: r.not_protocol().map_err(|e| format!("notProtocol: {e}"))?,
        icmp: icmp(&r.icmp, "icmp")?,
        not_icmp: icmp(&r.not_icmp, "notICMP")?,
        source: entity(r.source.as_ref(), ns).map_err(|e| format!("source.{e}"))?,
        destination: entity(r.destination.as_ref(), ns).map_err(|e| format!("destination.{e}"))?,
    })
}

fn entity(e: Option<&crd::EntityRule>, ns: Option<&str>) -> Result<EntityMatch, String> {
    let Some(e) = e else {
        return Ok(EntityMatch::default());
    };
    let nets = |list: &Option<Vec<String>>, field: &str| {
        list.iter()
            .flatten()
            .map(|n| crd::parse_net(n).map_err(|m| format!("{field}: {m}")))
            .collect::<Result<Vec<_>, _>>()
    };
    let ports = |list: &Option<Vec<_>>, field: &str| {
        list.iter()
            .flatten()
            .map(|p| PortMatch::parse(p).map_err(|m| format!("{field}: {m}")))
            .collect::<Result<Vec<_>, _>>()
    };
    let selector = e
        .selector()
        .map(|s| parse_selector(s, "selector"))
        .transpose()?;
    let not_selector = e
        .not_selector()
        .map(|s| parse_selector(s, "notSelector"))
        .transpose()?;
    let ns_selector = e
        .namespace_selector()
        .map(|s| parse_selector(s, "namespaceSelector"))
        .transpose()?;
    // Calico limits the rule to endpoints when it names endpoints at all
    // (a selector, or a namespace scope that some selector field brings
    // in): a namespaced policy's `notSelector: x` means "endpoints of
    // this namespace other than x", not "anything but x".
    let scope = match (&ns_selector, ns) {
        (Some(s), _) => Some(NamespaceMatch::Selector(s.clone())),
        (None, Some(ns)) => Some(NamespaceMatch::Named(ns.to_string())),
        (None, None) => None,
    };
    let names_endpoints = selector.is_some() || not_selector.is_some() || ns_selector.is_some();
    let endpoints = match scope {
        Some(namespace) if names_endpoints => Some(EndpointMatch {
            namespace,
            selector: selector.clone(),
        }),
        _ => selector.map(|s| EndpointMatch {
            namespace: NamespaceMatch::Any,
            selector: Some(s),
        }),
    };
    Ok(EntityMatch {
        nets: nets(&e.nets, "nets")?,
        not_nets: nets(&e.not_nets, "notNets")?,
        endpoints,
        not_selector,
        ports: ports(&e.ports, "ports")?,
        not_ports: ports(&e.not_ports, "notPorts")?,
    })
}
