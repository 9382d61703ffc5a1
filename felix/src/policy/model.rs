//! The normalized policy model: what every policy kind converts into, the
//! input of both the evaluator and the dataplane renderer.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use ippool_crd::Selector;
use ippool_crd::policy::{Action, PortMatch, Protocol};

use super::endpoint::Endpoint;

/// Which way a packet crosses an endpoint's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// To the endpoint.
    Ingress,
    /// From the endpoint.
    Egress,
}

/// The namespaces a rule's endpoint match is limited to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceMatch {
    /// Every namespace (a global policy's selector).
    Any,
    /// Only this one (a namespaced policy's own namespace).
    Named(String),
    /// Namespaces whose labels match.
    Selector(Selector),
}

/// "The peer is an endpoint in these namespaces (matching `selector`,
/// when given)". A peer that is a bare address never matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointMatch {
    pub namespace: NamespaceMatch,
    pub selector: Option<Selector>,
}

/// A rule's source or destination: every part that is set must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntityMatch {
    /// The peer's address is in one of these (when not empty).
    pub nets: Vec<IpNetwork>,
    /// The peer's address is in none of these.
    pub not_nets: Vec<IpNetwork>,
    /// The peer is one of these endpoints (when set).
    pub endpoints: Option<EndpointMatch>,
    /// The peer is not an endpoint matching this (in any namespace); bare
    /// addresses always pass.
    pub not_selector: Option<Selector>,
    /// The peer's port is one of these (when not empty). Named ports are
    /// the peer endpoint's own.
    pub ports: Vec<PortMatch>,
    /// The peer's port is none of these.
    pub not_ports: Vec<PortMatch>,
}

/// An ICMP type, and optionally code, to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpMatch {
    pub icmp_type: u8,
    pub code: Option<u8>,
}

/// One rule: when everything in it matches, `action` applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    /// 4 or 6.
    pub ip_version: Option<u8>,
    pub protocol: Option<Protocol>,
    pub not_protocol: Option<Protocol>,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
    pub source: EntityMatch,
    pub destination: EntityMatch,
}

impl Rule {
    /// A rule that matches every packet.
    pub fn any(action: Action) -> Rule {
        Rule {
            action,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: EntityMatch::default(),
            destination: EntityMatch::default(),
        }
    }
}

/// A policy in the normalized form.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The name Calico sorts and reports by: `namespace/name` for
    /// namespaced policies (`namespace/knp.default.name` for Kubernetes
    /// ones), the plain name for global ones.
    pub name: String,
    /// Lower first; `None` after every ordered policy.
    pub order: Option<f64>,
    /// A namespaced policy selects only endpoints of its namespace.
    pub namespace: Option<String>,
    /// Over endpoint labels ([`Endpoint::selector_labels`]).
    pub selector: Selector,
    /// A global policy's namespaceSelector, over namespace labels.
    pub namespace_selector: Option<Selector>,
    /// Whether the policy applies to ingress / egress (its `types`).
    pub applies_ingress: bool,
    pub applies_egress: bool,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl Policy {
    pub fn applies_to(&self, d: Direction) -> bool {
        match d {
            Direction::Ingress => self.applies_ingress,
            Direction::Egress => self.applies_egress,
        }
    }

    pub fn rules(&self, d: Direction) -> &[Rule] {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Whether the policy's selectors pick this endpoint (in any direction).
    pub fn selects(&self, ep: &Endpoint) -> bool {
        if let Some(ns) = &self.namespace
            && *ns != ep.namespace
        {
            return false;
        }
        if let Some(sel) = &self.namespace_selector
            && !sel.matches(&ep.namespace_selector_labels())
        {
            return false;
        }
        self.selector.matches(&ep.selector_labels())
    }

    /// Calico's policy order: by `order` (absent last), then by name.
    pub fn cmp_order(&self, other: &Policy) -> Ordering {
        let key = |p: &Policy| p.order.unwrap_or(f64::INFINITY);
        key(self)
            .total_cmp(&key(other))
            .then_with(|| self.order.is_none().cmp(&other.order.is_none()))
            .then_with(|| self.name.cmp(&other.name))
    }
}

/// Rules applied to endpoints no policy selects (in a direction), or after
/// a Pass. A profile with no matching rule denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl Profile {
    pub fn namespace_profile_name(namespace: &str) -> String {
        format!("kns.{namespace}")
    }

    /// The profile Calico makes for every Kubernetes namespace: allow all,
    /// both ways (Kubernetes' default: pods are not isolated).
    pub fn namespace(namespace: &str) -> Profile {
        Profile {
            name: Self::namespace_profile_name(namespace),
            ingress: vec![Rule::any(Action::Allow)],
            egress: vec![Rule::any(Action::Allow)],
        }
    }

    pub fn rules(&self, d: Direction) -> &[Rule] {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// All policies, in the order they apply, and the profiles by name.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: Vec<Policy>,
    profiles: BTreeMap<String, Profile>,
}

impl PolicySet {
    pub fn new(mut policies: Vec<Policy>, profiles: Vec<Profile>) -> PolicySet {
        policies.sort_by(Policy::cmp_order);
        PolicySet {
            policies,
            profiles: profiles.into_iter().map(|p| (p.name.clone(), p)).collect(),
        }
    }

    /// In application order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// Every profile, by name.
    pub fn profiles(&self) -> &BTreeMap<String, Profile> {
        &self.profiles
    }

    /// The policies that apply to `ep` in direction `d`, in order.
    pub fn selecting<'a>(
        &'a self,
        ep: &'a Endpoint,
        d: Direction,
    ) -> impl Iterator<Item = &'a Policy> + 'a {
        self.policies
            .iter()
            .filter(move |p| p.applies_to(d) && p.selects(ep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, order: Option<f64>) -> Policy {
        Policy {
            name: name.into(),
            order,
            namespace: None,
            selector: Selector::all(),
            namespace_selector: None,
            applies_ingress: true,
            applies_egress: false,
            ingress: vec![],
            egress: vec![],
        }
    }

    #[test]
    fn policies_sort_by_order_then_name_unordered_last() {
        let set = PolicySet::new(
            vec![
                policy("z", None),
                policy("b", Some(10.0)),
                policy("a", None),
                policy("c", Some(10.0)),
                policy("d", Some(-5.0)),
                policy("e", Some(1e300)),
            ],
            vec![],
        );
        let names: Vec<&str> = set.policies().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["d", "b", "c", "e", "a", "z"]);
    }
}
