//! Calico's network policy resources: the namespaced
//! [`NetworkPolicy`] and the cluster-wide [`GlobalNetworkPolicy`]
//! (`crd.projectcalico.org/v1`), with Calico's field names, and their
//! validation. What a policy *means* (ordering, Pass, the default deny)
//! lives with the enforcer, felix's `policy` module; here is only what a
//! well-formed policy is.
//!
//! Both kinds share their rules ([`Rule`], [`EntityRule`]); the checks
//! that apply to both are in [`check_common`].

mod rule;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::selector::Selector;
use crate::validate::{Collector, ValidationErrors, describe};

pub use rule::{
    Action, EntityRule, ICMPFields, PolicyType, PortMatch, Protocol, Rule, is_port_name, parse_net,
};

/// The only tier calico-rs has: Calico's default tier.
pub const DEFAULT_TIER: &str = "default";

/// A namespaced Calico policy: applies to the endpoints of its namespace
/// that `selector` selects.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "NetworkPolicy",
    plural = "networkpolicies",
    singular = "networkpolicy",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    doc = "Calico network policy: ordered allow/deny/pass/log rules for the selected pods of one namespace.",
    printcolumn = r#"{"name": "Order", "type": "number", "jsonPath": ".spec.order"}"#,
    printcolumn = r#"{"name": "Selector", "type": "string", "jsonPath": ".spec.selector"}"#,
    printcolumn = r#"{"name": "Types", "type": "string", "jsonPath": ".spec.types"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("!has(self.tier) || self.tier == '' || self.tier == 'default'")
        .message("calico-rs has only the default tier; remove tier or set it to default").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.types) || size(self.types) == 0 || !has(self.ingress) || size(self.ingress) == 0 || 'Ingress' in self.types")
        .message("ingress rules are given but types does not include Ingress").reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.types) || size(self.types) == 0 || !has(self.egress) || size(self.egress) == 0 || 'Egress' in self.types")
        .message("egress rules are given but types does not include Egress").reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.serviceAccountSelector) || size(self.serviceAccountSelector) == 0")
        .message("serviceAccountSelector is not supported by calico-rs; select the pods by label").reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Only "default" (Calico's default tier) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub tier: Option<String>,
    /// Lower orders apply first; a policy without an order applies after
    /// all ordered ones (ties by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    /// Calico selector over the labels of this namespace's endpoints; empty
    /// selects all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub selector: Option<String>,
    /// Ingress, Egress or both. Default: Ingress, plus Egress when there
    /// are egress rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "types_schema")]
    pub types: Option<Vec<String>>,
    /// Rules for traffic to the selected endpoints, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), extend("x-kubernetes-list-type" = "atomic"))]
    pub ingress: Option<Vec<crate::policy::Rule>>,
    /// Rules for traffic from the selected endpoints, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), extend("x-kubernetes-list-type" = "atomic"))]
    pub egress: Option<Vec<crate::policy::Rule>>,
    /// Calico selector over service account labels: narrows the selected
    /// endpoints. Not supported by calico-rs yet (refused, not ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub service_account_selector: Option<String>,
    /// Calico's dataplane hints; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub performance_hints: Option<Vec<String>>,
}

/// A cluster-wide Calico policy: applies to the endpoints of every
/// namespace that `namespaceSelector` selects (all, when empty) that
/// `selector` selects.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "GlobalNetworkPolicy",
    plural = "globalnetworkpolicies",
    singular = "globalnetworkpolicy",
    derive = "PartialEq",
    derive = "Default",
    doc = "Calico global network policy: ordered allow/deny/pass/log rules for the selected endpoints of every namespace.",
    printcolumn = r#"{"name": "Order", "type": "number", "jsonPath": ".spec.order"}"#,
    printcolumn = r#"{"name": "Selector", "type": "string", "jsonPath": ".spec.selector"}"#,
    printcolumn = r#"{"name": "NamespaceSelector", "type": "string", "jsonPath": ".spec.namespaceSelector"}"#,
    printcolumn = r#"{"name": "Types", "type": "string", "jsonPath": ".spec.types"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("!has(self.tier) || self.tier == '' || self.tier == 'default'")
        .message("calico-rs has only the default tier; remove tier or set it to default").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.types) || size(self.types) == 0 || !has(self.ingress) || size(self.ingress) == 0 || 'Ingress' in self.types")
        .message("ingress rules are given but types does not include Ingress").reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.types) || size(self.types) == 0 || !has(self.egress) || size(self.egress) == 0 || 'Egress' in self.types")
        .message("egress rules are given but types does not include Egress").reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.serviceAccountSelector) || size(self.serviceAccountSelector) == 0")
        .message("serviceAccountSelector is not supported by calico-rs; select the pods by label").reason(Reason::FieldValueForbidden),
    validation = Rule::new("(!has(self.doNotTrack) || !self.doNotTrack) && (!has(self.preDNAT) || !self.preDNAT)")
        .message("doNotTrack and preDNAT policies (host endpoints) are not supported by calico-rs").reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct GlobalNetworkPolicySpec {
    /// Only "default" (Calico's default tier) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub tier: Option<String>,
    /// Lower orders apply first; a policy without an order applies after
    /// all ordered ones (ties by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    /// Calico selector over endpoint labels; empty selects all endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub selector: Option<String>,
    /// Calico selector over namespace labels: only endpoints in these
    /// namespaces are selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub namespace_selector: Option<String>,
    /// Ingress, Egress or both. Default: Ingress, plus Egress when there
    /// are egress rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "types_schema")]
    pub types: Option<Vec<String>>,
    /// Rules for traffic to the selected endpoints, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), extend("x-kubernetes-list-type" = "atomic"))]
    pub ingress: Option<Vec<crate::policy::Rule>>,
    /// Rules for traffic from the selected endpoints, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), extend("x-kubernetes-list-type" = "atomic"))]
    pub egress: Option<Vec<crate::policy::Rule>>,
    /// Calico selector over service account labels. Not supported by
    /// calico-rs yet (refused, not ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub service_account_selector: Option<String>,
    /// Host-endpoint untracked policy: refused by calico-rs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_not_track: Option<bool>,
    /// Host-endpoint pre-DNAT policy: refused by calico-rs.
    #[serde(rename = "preDNAT", default, skip_serializing_if = "Option::is_none")]
    pub pre_dnat: Option<bool>,
    /// Host-endpoint forwarded traffic; meaningless without host endpoints,
    /// accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_on_forward: Option<bool>,
    /// Calico's dataplane hints; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub performance_hints: Option<Vec<String>>,
}

fn types_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 2,
        "x-kubernetes-list-type": "set",
        "items": {"type": "string", "enum": ["Ingress", "Egress"]},
    })
}

/// The parts of a policy both kinds have, borrowed, so one validator and
/// one reader serve both.
#[derive(Debug, Clone, Copy)]
pub struct PolicyParts<'a> {
    pub tier: Option<&'a str>,
    pub order: Option<f64>,
    pub selector: Option<&'a str>,
    pub types: Option<&'a [String]>,
    pub ingress: &'a [Rule],
    pub egress: &'a [Rule],
    pub service_account_selector: Option<&'a str>,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

impl NetworkPolicySpec {
    pub fn parts(&self) -> PolicyParts<'_> {
        PolicyParts {
            tier: non_empty(&self.tier),
            order: self.order,
            selector: non_empty(&self.selector),
            types: self.types.as_deref(),
            ingress: self.ingress.as_deref().unwrap_or_default(),
            egress: self.egress.as_deref().unwrap_or_default(),
            service_account_selector: non_empty(&self.service_account_selector),
        }
    }
}

impl GlobalNetworkPolicySpec {
    pub fn parts(&self) -> PolicyParts<'_> {
        PolicyParts {
            tier: non_empty(&self.tier),
            order: self.order,
            selector: non_empty(&self.selector),
            types: self.types.as_deref(),
            ingress: self.ingress.as_deref().unwrap_or_default(),
            egress: self.egress.as_deref().unwrap_or_default(),
            service_account_selector: non_empty(&self.service_account_selector),
        }
    }

    pub fn namespace_selector(&self) -> Option<&str> {
        non_empty(&self.namespace_selector)
    }
}

impl PolicyParts<'_> {
    /// The directions the policy applies to: `types` when given, else
    /// Ingress, plus Egress when there are egress rules (Calico's default).
    pub fn types(&self) -> Result<Vec<PolicyType>, String> {
        match self.types {
            Some(types) if !types.is_empty() => {
                let mut out = types
                    .iter()
                    .map(|t| PolicyType::parse(t))
                    .collect::<Result<Vec<_>, _>>()?;
                out.sort();
                out.dedup();
                Ok(out)
            }
            _ if self.egress.is_empty() => Ok(vec![PolicyType::Ingress]),
            _ => Ok(vec![PolicyType::Ingress, PolicyType::Egress]),
        }
    }
}

/// The checks both kinds share, reported into `c`.
pub(crate) fn check_common(p: &PolicyParts<'_>, c: &mut Collector) {
    if let Some(tier) = p.tier
        && tier != DEFAULT_TIER
    {
        c.error_hint(
            "spec.tier",
            format!("tier {tier:?} is not supported: calico-rs has only the default tier"),
            "remove tier (or set it to default) and use order to place the policy",
        );
    }
    if let Some(order) = p.order
        && !order.is_finite()
    {
        c.error("spec.order", format!("{order} is not a finite number"));
    }
    if let Some(text) = p.selector
        && let Err(e) = Selector::parse(text)
    {
        c.error("spec.selector", e.to_string());
    }
    if p.service_account_selector.is_some() {
        c.error_hint(
            "spec.serviceAccountSelector",
            "serviceAccountSelector is not supported by calico-rs",
            "select the pods by label in selector instead",
        );
    }
    match p.types() {
        Err(e) => c.error("spec.types", e),
        Ok(types) => {
            // Calico refuses rules for a direction the policy does not
            // apply to: they would silently do nothing.
            if !types.contains(&PolicyType::Ingress) && !p.ingress.is_empty() {
                c.error_hint(
                    "spec.ingress",
                    "ingress rules are given but types does not include Ingress",
                    "add Ingress to types, or remove the ingress rules",
                );
            }
            if !types.contains(&PolicyType::Egress) && !p.egress.is_empty() {
                c.error_hint(
                    "spec.egress",
                    "egress rules are given but types does not include Egress",
                    "add Egress to types, or remove the egress rules",
                );
            }
        }
    }
    for (i, r) in p.ingress.iter().enumerate() {
        r.check(&format!("spec.ingress[{i}]"), c);
    }
    for (i, r) in p.egress.iter().enumerate() {
        r.check(&format!("spec.egress[{i}]"), c);
    }
}

impl NetworkPolicy {
    /// Checks every rule Calico applies to a NetworkPolicy, collecting all
    /// problems.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Collector::default();
        check_common(&self.spec.parts(), &mut c);
        c.finish(describe("NetworkPolicy", &self.metadata))
    }
}

impl GlobalNetworkPolicy {
    /// Checks every rule Calico applies to a GlobalNetworkPolicy,
    /// collecting all problems.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let s = &self.spec;
        let mut c = Collector::default();
        check_common(&s.parts(), &mut c);
        if let Some(text) = s.namespace_selector()
            && let Err(e) = Selector::parse(text)
        {
            c.error("spec.namespaceSelector", e.to_string());
        }
        if s.do_not_track == Some(true) {
            c.error_hint(
                "spec.doNotTrack",
                "doNotTrack policies (host endpoints) are not supported by calico-rs",
                "remove doNotTrack",
            );
        }
        if s.pre_dnat == Some(true) {
            c.error_hint(
                "spec.preDNAT",
                "preDNAT policies (host endpoints) are not supported by calico-rs",
                "remove preDNAT",
            );
        }
        c.finish(describe("GlobalNetworkPolicy", &self.metadata))
    }
}

#[cfg(test)]
mod tests;
