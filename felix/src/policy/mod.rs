//! Network policy, as felix enforces it: one normalized model that both
//! Kubernetes `networking.k8s.io/v1` NetworkPolicy and Calico
//! (Global)NetworkPolicy convert into, and a pure evaluator that says what
//! that model does to one flow. The nftables dataplane is rendered from the
//! same model, and the truth-table suite (`tests/policy_truth.rs`, and the
//! lab's probes) checks both against the evaluator.
//!
//! ```text
//!  k8s NetworkPolicy ──k8s::convert──┐
//!  Calico NetworkPolicy ─calico::────┼─► Policy ─┐
//!  Calico GlobalNetworkPolicy ───────┘           ├─► PolicySet ─► eval::verdict(src, dst, flow)
//!  namespaces ─────────────────► Profile (kns.) ─┘        ▲
//!  pods / workload endpoints ──► Endpoint (labels, addresses, named ports)
//! ```
//!
//! - [`model`]: [`Policy`], [`Rule`], [`EntityMatch`], [`Profile`],
//!   [`PolicySet`] (policies kept in Calico's order).
//! - [`endpoint`]: [`Endpoint`] and the labels selectors see; [`Peer`] and
//!   [`Flow`], what a verdict is asked about.
//! - [`k8s`] and [`calico`]: conversions; a policy that does not convert
//!   is a [`PolicyError`] naming it, and the others still convert
//!   ([`convert_all`]).
//! - [`eval`]: the verdict, per direction and end to end.
//! - [`snapshot`]: [`PolicySnapshot`], what the policy source hands the
//!   nftables dataplane.
//! - [`source`]: the policy source: watches on the datastore → snapshots.

pub mod calico;
pub mod endpoint;
pub mod eval;
pub mod k8s;
pub mod model;
pub mod nft;
pub mod snapshot;
pub mod source;

pub use endpoint::{Endpoint, Flow, NamedPort, Peer};
pub use eval::{Decision, Verdict, explain, verdict, verdict_in};
pub use model::{
    Direction, EndpointMatch, EntityMatch, IcmpMatch, NamespaceMatch, Policy, PolicySet, Profile,
    Rule,
};
pub use snapshot::PolicySnapshot;

/// Labels Calico gives every workload endpoint, so selectors can name a
/// pod's namespace and orchestrator.
pub mod labels {
    /// On an endpoint: its namespace.
    pub const NAMESPACE: &str = "projectcalico.org/namespace";
    /// On an endpoint: `k8s` for pods.
    pub const ORCHESTRATOR: &str = "projectcalico.org/orchestrator";
    /// On a namespace (what namespaceSelectors see): its name.
    pub const NAMESPACE_NAME: &str = "projectcalico.org/name";
}

/// A policy that could not be converted: which one, and why. Reported and
/// skipped; the other policies are still enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?} is not enforced: {message}")]
pub struct PolicyError {
    /// `NetworkPolicy` (networking.k8s.io), `Calico NetworkPolicy` or
    /// `GlobalNetworkPolicy`.
    pub kind: &'static str,
    /// `namespace/name`, or the name of a global policy.
    pub name: String,
    pub message: String,
}

/// Every policy the datastore holds, as read.
#[derive(Debug, Clone, Default)]
pub struct PolicySource {
    pub kubernetes: Vec<k8s_openapi::api::networking::v1::NetworkPolicy>,
    pub calico: Vec<ippool_crd::NetworkPolicy>,
    pub global: Vec<ippool_crd::GlobalNetworkPolicy>,
}

/// Converts every policy that converts; the ones that do not are returned
/// as errors, by name, and left out. `profiles` are passed through.
pub fn convert_all(source: &PolicySource, profiles: Vec<Profile>) -> (PolicySet, Vec<PolicyError>) {
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    let results = source
        .kubernetes
        .iter()
        .map(k8s::convert)
        .chain(source.calico.iter().map(calico::convert_namespaced))
        .chain(source.global.iter().map(calico::convert_global));
    for r in results {
        match r {
            Ok(p) => policies.push(p),
            Err(e) => errors.push(e),
        }
    }
    (PolicySet::new(policies, profiles), errors)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn source(kubernetes: &[serde_json::Value], calico: &[serde_json::Value]) -> PolicySource {
        let mut s = PolicySource::default();
        for v in kubernetes {
            s.kubernetes
                .push(serde_json::from_value(v.clone()).unwrap());
        }
        for v in calico {
            match ippool_crd::CalicoResource::from_value(v.clone()).unwrap() {
                ippool_crd::CalicoResource::NetworkPolicy(p) => s.calico.push(p),
                ippool_crd::CalicoResource::GlobalNetworkPolicy(p) => s.global.push(p),
                other => panic!("{other:?}"),
            }
        }
        s
    }

    fn knp(name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": name, "namespace": "prod"}, "spec": spec})
    }

    fn calico(kind: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "crd.projectcalico.org/v1", "kind": kind,
               "metadata": {"name": name, "namespace": "prod"}, "spec": spec})
    }

    #[test]
    fn a_policy_that_does_not_convert_is_reported_by_name_and_the_others_apply() {
        let src = source(
            &[
                knp("deny-all", json!({"podSelector": {}})),
                knp(
                    "empty-peer",
                    json!({"podSelector": {}, "ingress": [{"from": [{}]}]}),
                ),
                knp(
                    "bad-operator",
                    json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}}),
                ),
                knp(
                    "backwards-end-port",
                    json!({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
                ),
            ],
            &[
                calico(
                    "NetworkPolicy",
                    "bad-selector",
                    json!({"selector": "app = 'x'", "ingress": [{"action": "Allow"}]}),
                ),
                calico(
                    "GlobalNetworkPolicy",
                    "bad-range",
                    json!({"ingress": [{"action": "Allow", "protocol": "TCP",
                                         "destination": {"ports": ["90:80"]}}]}),
                ),
                calico(
                    "GlobalNetworkPolicy",
                    "unknown-action",
                    json!({"ingress": [{"action": "Accept"}]}),
                ),
                calico(
                    "GlobalNetworkPolicy",
                    "fine",
                    json!({"order": 5, "selector": "has(nothing)"}),
                ),
            ],
        );
        let (set, errors) = convert_all(&src, vec![Profile::namespace("prod")]);
        let named: BTreeMap<String, String> = errors
            .iter()
            .map(|e| (format!("{} {}", e.kind, e.name), e.to_string()))
            .collect();
        let want = [
            (
                "NetworkPolicy prod/empty-peer",
                "spec.ingress[0].from[0]: a peer needs",
            ),
            (
                "NetworkPolicy prod/bad-operator",
                "spec.podSelector: matchExpressions[0]: unknown operator",
            ),
            (
                "NetworkPolicy prod/backwards-end-port",
                "spec.ingress[0].ports[0].endPort: 80 is below port 90",
            ),
            (
                "Calico NetworkPolicy prod/bad-selector",
                "spec.selector: invalid selector",
            ),
            (
                "GlobalNetworkPolicy bad-range",
                "spec.ingress[0].destination.ports[0]: port range \"90:80\" is backwards",
            ),
            (
                "GlobalNetworkPolicy unknown-action",
                "spec.ingress[0].action: unknown action \"Accept\"",
            ),
        ];
        assert_eq!(named.len(), want.len(), "{named:#?}");
        for (key, text) in want {
            let got = named
                .get(key)
                .unwrap_or_else(|| panic!("no error for {key}: {named:#?}"));
            assert!(got.contains(text), "{key}: {got}");
            assert!(got.contains("is not enforced"), "{got}");
        }
        let names: Vec<&str> = set.policies().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["fine", "prod/knp.default.deny-all"]);

        // The policies that converted are enforced.
        let pod = |name: &str, ip: &str| {
            Endpoint::pod(
                "prod",
                name,
                BTreeMap::new(),
                BTreeMap::new(),
                vec![ip.parse().unwrap()],
            )
        };
        let (a, b) = (pod("a", "10.0.0.1"), pod("b", "10.0.0.2"));
        let d = explain(&set, Peer::Endpoint(&a), Peer::Endpoint(&b), Flow::tcp(80));
        assert_eq!(d.verdict, Verdict::Deny, "{d:?}");
        assert!(d.reason.contains("ingress of prod/b"), "{d:?}");
    }

    #[test]
    fn an_endpoint_without_its_profile_is_denied_and_ip_versions_do_not_mix() {
        let v6 = Endpoint::pod(
            "x",
            "v6",
            BTreeMap::new(),
            BTreeMap::new(),
            vec!["fd00::1".parse().unwrap()],
        );
        let v4 = Endpoint::pod(
            "x",
            "v4",
            BTreeMap::new(),
            BTreeMap::new(),
            vec!["10.0.0.1".parse().unwrap()],
        );
        let with = PolicySet::new(vec![], vec![Profile::namespace("x")]);
        let without = PolicySet::new(vec![], vec![]);
        let ext6 = Peer::Address("2001:db8::1".parse().unwrap());
        assert_eq!(
            verdict(&with, Peer::Endpoint(&v6), ext6, Flow::tcp(80)),
            Verdict::Allow
        );
        // ICMP (v4) has no IPv6 path between these two.
        assert_eq!(
            verdict(&with, Peer::Endpoint(&v6), ext6, Flow::icmp_echo()),
            Verdict::Deny
        );
        assert_eq!(
            verdict(&with, Peer::Endpoint(&v4), ext6, Flow::tcp(80)),
            Verdict::Deny
        );
        let d = explain(&without, Peer::Endpoint(&v6), ext6, Flow::tcp(80));
        assert_eq!(d.verdict, Verdict::Deny);
        assert!(d.reason.contains("no profile rule matched"), "{d:?}");
    }
}
