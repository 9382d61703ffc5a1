//! Kubernetes `networking.k8s.io/v1` NetworkPolicy into the model, the way
//! Calico converts it: policy `knp.default.<name>` in the same namespace,
//! order 1000, selecting the pods of `podSelector`; each ingress/egress
//! rule becomes Allow rules, one per (port, peer) pair, so a packet is
//! allowed when it matches any peer and any port of any rule; pods the
//! policy selects are isolated in the policy's directions (the end-of-tier
//! drop does that).
//!
//! Kubernetes semantics kept exactly:
//! - an empty `podSelector` selects every pod of the namespace;
//! - a rule with no (or an empty) `from`/`to` matches every peer, with no
//!   (or empty) `ports` every port and protocol; `{}` allows everything;
//! - `podSelector` and `namespaceSelector` in one peer must both match
//!   (AND); as two peers, either (OR); `podSelector` alone means pods of
//!   the policy's namespace, `namespaceSelector: {}` every namespace;
//! - `ipBlock` matches the address (`except` carved out);
//! - a port's protocol defaults to TCP; `endPort` makes a range; a name is
//!   the destination pod's named port;
//! - `policyTypes` absent: Ingress, plus Egress when egress rules exist.

use ippool_crd::Selector;
use ippool_crd::policy::{Action, PortMatch, Protocol, parse_net};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::PolicyError;
use super::labels;
use super::model::{EndpointMatch, EntityMatch, NamespaceMatch, Policy, Rule};

/// Calico's order for converted Kubernetes policies.
pub const ORDER: f64 = 1000.0;

const KIND: &str = "NetworkPolicy";

/// Converts one Kubernetes NetworkPolicy.
pub fn convert(np: &NetworkPolicy) -> Result<Policy, PolicyError> {
    let name = np.metadata.name.clone().unwrap_or_default();
    let ns = np.metadata.namespace.clone().unwrap_or_default();
    let err = |message: String| PolicyError {
        kind: KIND,
        name: format!("{ns}/{name}"),
        message,
    };
    if ns.is_empty() {
        return Err(err("it has no namespace".into()));
    }
    let spec = np.spec.clone().unwrap_or_default();
    let selector = pod_selector(spec.pod_selector.as_ref())
        .map_err(|e| err(format!("spec.podSelector: {e}")))?;
    let ingress_rules = spec.ingress.as_deref().unwrap_or_default();
    let egress_rules = spec.egress.as_deref().unwrap_or_default();
    let (mut applies_ingress, mut applies_egress) = (false, false);
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => {
            for t in types {
                match t.as_str() {
                    "Ingress" => applies_ingress = true,
                    "Egress" => applies_egress = true,
                    other => {
                        return Err(err(format!(
                            "spec.policyTypes: unknown type {other:?}; use Ingress or Egress"
                        )));
                    }
                }
            }
        }
        _ => {
            applies_ingress = true;
            applies_egress = !egress_rules.is_empty();
        }
    }
    let mut ingress = Vec::new();
    for (i, r) in ingress_rules.iter().enumerate() {
        let field = format!("spec.ingress[{i}]");
        ingress.extend(
            rules(r.from.as_deref(), r.ports.as_deref(), &ns, Side::Source)
                .map_err(|e| err(format!("{field}.{e}")))?,
        );
    }
    let mut egress = Vec::new();
    for (i, r) in egress_rules.iter().enumerate() {
        let field = format!("spec.egress[{i}]");
        egress.extend(
            rules(r.to.as_deref(), r.ports.as_deref(), &ns, Side::Destination)
                .map_err(|e| err(format!("{field}.{e}")))?,
        );
    }
    Ok(Policy {
        name: format!("{ns}/knp.default.{name}"),
        order: Some(ORDER),
        namespace: Some(ns.clone()),
        selector,
        namespace_selector: None,
        applies_ingress,
        applies_egress,
        ingress,
        egress,
    })
}

/// Where a rule's peers go: `from` is the source, `to` the destination;
/// ports are always the destination's.
#[derive(Clone, Copy)]
enum Side {
    Source,
    Destination,
}

fn rules(
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    ns: &str,
    side: Side,
) -> Result<Vec<Rule>, String> {
    let peer_field = match side {
        Side::Source => "from",
        Side::Destination => "to",
    };
    let peers: Vec<EntityMatch> = match peers {
        None | Some([]) => vec![EntityMatch::default()],
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, p)| peer(p, ns).map_err(|e| format!("{peer_field}[{i}]{e}")))
            .collect::<Result<_, _>>()?,
    };
    let ports: Vec<Option<(Protocol, Option<PortMatch>)>> = match ports {
        None | Some([]) => vec![None],
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, p)| port(p).map(Some).map_err(|e| format!("ports[{i}]{e}")))
            .collect::<Result<_, _>>()?,
    };
    let mut out = Vec::new();
    for port in &ports {
        for p in &peers {
            let mut r = Rule::any(Action::Allow);
            let mut dst_ports = Vec::new();
            if let Some((proto, pm)) = port {
                r.protocol = Some(*proto);
                dst_ports.extend(pm.clone());
            }
            match side {
                Side::Source => {
                    r.source = p.clone();
                    r.destination.ports = dst_ports;
                }
                Side::Destination => {
                    r.destination = EntityMatch {
                        ports: dst_ports,
                        ..p.clone()
                    };
                }
            }
            out.push(r);
        }
    }
    Ok(out)
}

fn peer(p: &NetworkPolicyPeer, ns: &str) -> Result<EntityMatch, String> {
    if let Some(block) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err(
                ": ipBlock cannot be combined with podSelector or namespaceSelector".into(),
            );
        }
        let cidr = parse_net(&block.cidr).map_err(|e| format!(".ipBlock.cidr: {e}"))?;
        let except = block
            .except
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, e)| parse_net(e).map_err(|m| format!(".ipBlock.except[{i}]: {m}")))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(EntityMatch {
            nets: vec![cidr],
            not_nets: except,
            ..EntityMatch::default()
        });
    }
    let namespace = match &p.namespace_selector {
        Some(s) => NamespaceMatch::Selector(
            label_selector(s).map_err(|e| format!(".namespaceSelector: {e}"))?,
        ),
        None if p.pod_selector.is_some() => NamespaceMatch::Named(ns.to_string()),
        None => {
            return Err(": a peer needs podSelector, namespaceSelector or ipBlock".into());
        }
    };
    let selector =
        pod_selector(p.pod_selector.as_ref()).map_err(|e| format!(".podSelector: {e}"))?;
    Ok(EntityMatch {
        endpoints: Some(EndpointMatch {
            namespace,
            selector: Some(selector),
        }),
        ..EntityMatch::default()
    })
}

/// A pod selector as Calico writes it: the label selector, limited to
/// Kubernetes pods.
fn pod_selector(s: Option<&LabelSelector>) -> Result<Selector, String> {
    let base = match s {
        Some(s) => selector_text(s)?,
        None => "all()".to_string(),
    };
    let text = format!("({base}) && {} == 'k8s'", labels::ORCHESTRATOR);
    Selector::parse(&text).map_err(|e| e.to_string())
}

fn port(p: &NetworkPolicyPort) -> Result<(Protocol, Option<PortMatch>), String> {
    let protocol = match p.protocol.as_deref() {
        None | Some("TCP") => Protocol::TCP,
        Some("UDP") => Protocol::UDP,
        Some("SCTP") => Protocol::SCTP,
        Some(other) => {
            return Err(format!(
                ".protocol: {other:?} is not a Kubernetes protocol; use TCP, UDP or SCTP"
            ));
        }
    };
    let pm = match (&p.port, p.end_port) {
        (None, None) => None,
        (None, Some(_)) => return Err(".endPort: endPort needs port".into()),
        (Some(port @ IntOrString::Int(first)), end) => {
            let PortMatch::Range(first_port, _) =
                PortMatch::parse(port).map_err(|e| format!(".port: {e}"))?
            else {
                return Err(format!(".port: {first} is not a port number"));
            };
            match end {
                None => Some(PortMatch::Range(first_port, first_port)),
                Some(end) => {
                    let end = u16::try_from(end)
                        .map_err(|_| format!(".endPort: {end} is outside 0–65535"))?;
                    if end < first_port {
                        return Err(format!(
                            ".endPort: {end} is below port {first_port}; endPort must be >= port"
                        ));
                    }
                    Some(PortMatch::Range(first_port, end))
                }
            }
        }
        (Some(IntOrString::String(_)), Some(_)) => {
            return Err(".endPort: endPort cannot be used with a named port".into());
        }
        (Some(port @ IntOrString::String(_)), None) => {
            Some(PortMatch::parse(port).map_err(|e| format!(".port: {e}"))?)
        }
    };
    Ok((protocol, pm))
}

/// A Kubernetes label selector in Calico's selector language (`{}` is
/// `all()`; every requirement must hold).
pub fn label_selector(s: &LabelSelector) -> Result<Selector, String> {
    Selector::parse(&selector_text(s)?).map_err(|e| e.to_string())
}

fn selector_text(s: &LabelSelector) -> Result<String, String> {
    let mut terms = Vec::new();
    for (k, v) in s.match_labels.iter().flatten() {
        terms.push(format!("{k} == {}", quote(v)?));
    }
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let values = || -> Result<String, String> {
            let vals = e.values.as_deref().unwrap_or_default();
            if vals.is_empty() {
                return Err(format!(
                    "matchExpressions[{i}]: operator {} needs values",
                    e.operator
                ));
            }
            Ok(vals
                .iter()
                .map(|v| quote(v))
                .collect::<Result<Vec<_>, _>>()?
                .join(", "))
        };
        let k = &e.key;
        terms.push(match e.operator.as_str() {
            "In" => format!("{k} in {{{}}}", values()?),
            "NotIn" => format!("{k} not in {{{}}}", values()?),
            "Exists" => format!("has({k})"),
            "DoesNotExist" => format!("!has({k})"),
            other => {
                return Err(format!(
                    "matchExpressions[{i}]: unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist"
                ));
            }
        });
    }
    let text = if terms.is_empty() {
        "all()".to_string()
    } else {
        terms.join(" && ")
    };
    // Parse here so a bad key is reported against the label selector.
    Selector::parse(&text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// Calico selector strings have no escapes: pick the quote the value does
/// not contain.
fn quote(v: &str) -> Result<String, String> {
    if !v.contains('\'') {
        Ok(format!("'{v}'"))
    } else if !v.contains('"') {
        Ok(format!("\"{v}\""))
    } else {
        Err(format!("label value {v:?} has both kinds of quote"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn label_selectors_convert_with_every_operator() {
        let s = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                req("tier", "In", &["a", "b"]),
                req("env", "NotIn", &["prod"]),
                req("k8s.io/x", "Exists", &[]),
                req("legacy", "DoesNotExist", &[]),
            ]),
        };
        let sel = label_selector(&s).unwrap();
        let yes = labels(&[("app", "web"), ("tier", "b"), ("k8s.io/x", "")]);
        assert!(sel.matches(&yes));
        for (k, v) in [
            ("app", "db"),
            ("tier", "c"),
            ("env", "prod"),
            ("legacy", "1"),
        ] {
            let mut no = yes.clone();
            no.insert(k.into(), v.into());
            assert!(!sel.matches(&no), "{k}={v}");
        }
        let mut no = yes.clone();
        no.remove("k8s.io/x");
        assert!(!sel.matches(&no));
        assert!(label_selector(&LabelSelector::default()).unwrap().is_all());
    }

    #[test]
    fn bad_label_selectors_are_errors() {
        let bad = |e| LabelSelector {
            match_expressions: Some(vec![e]),
            ..Default::default()
        };
        let e = label_selector(&bad(req("a", "Gt", &["1"]))).unwrap_err();
        assert!(e.contains("unknown operator \"Gt\""), "{e}");
        let e = label_selector(&bad(req("a", "In", &[]))).unwrap_err();
        assert!(e.contains("needs values"), "{e}");
        assert!(label_selector(&bad(req("a b", "Exists", &[]))).is_err());
    }
}
