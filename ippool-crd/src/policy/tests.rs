use super::*;
use crate::manifest::{CalicoResource, parse_manifests};

fn one(yaml: &str) -> CalicoResource {
    let mut all = parse_manifests(yaml).unwrap();
    assert_eq!(all.len(), 1);
    all.remove(0)
}

/// The fields of the errors `validate` reports for a policy with `spec`.
fn errors(kind: &str, spec: &str) -> Vec<String> {
    let yaml = format!(
        "apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {{name: p, namespace: ns}}\nspec:\n{spec}"
    );
    match one(&yaml).validate() {
        Ok(()) => Vec::new(),
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains(&format!("{kind} \"p\"")), "{text}");
            e.iter().map(|e| e.to_string()).collect()
        }
    }
}

fn single_error(kind: &str, spec: &str) -> String {
    let errs = errors(kind, spec);
    assert_eq!(errs.len(), 1, "{spec}: {errs:#?}");
    errs[0].clone()
}

#[test]
fn calicos_documented_policy_is_valid_and_round_trips() {
    let yaml = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-tcp-6379
  namespace: production
spec:
  selector: role == 'database'
  types: [Ingress, Egress]
  ingress:
    - action: Allow
      metadata:
        annotations: {from: frontend, to: database}
      protocol: TCP
      source:
        selector: role == 'frontend'
      destination:
        ports: [6379]
  egress:
    - action: Allow
"#;
    let r = one(yaml);
    r.validate().unwrap();
    let again = CalicoResource::from_value(r.to_value().unwrap()).unwrap();
    assert_eq!(again, r);
    let CalicoResource::NetworkPolicy(p) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        p.spec.parts().types().unwrap(),
        [PolicyType::Ingress, PolicyType::Egress]
    );
    assert_eq!(p.spec.ingress.unwrap()[0].action().unwrap(), Action::Allow);
}

#[test]
fn a_global_policy_with_every_match_kind_is_valid() {
    let spec = r#"
  order: 10.5
  selector: all()
  namespaceSelector: team == 'a'
  ingress:
    - action: Deny
      protocol: ICMP
      icmp: {type: 8, code: 0}
    - action: Log
      notProtocol: UDP
    - action: Pass
      protocol: TCP
      source: {nets: [10.0.0.0/8, 192.0.2.1], notNets: [10.1.0.0/16], notSelector: "has(x)", namespaceSelector: all()}
      destination: {ports: [80, "8000:8080", http], notPorts: [8001]}
    - action: Allow
      protocol: 132
      ipVersion: 4
  egress:
    - action: Allow
      protocol: ICMPv6
      notICMP: {type: 128}
"#;
    assert_eq!(errors("GlobalNetworkPolicy", spec), Vec::<String>::new());
}

#[test]
fn a_bad_selector_is_named_by_field() {
    let e = single_error("NetworkPolicy", "  selector: app = 'x'\n");
    assert!(e.starts_with("spec.selector: invalid selector"), "{e}");
    let e = single_error(
        "NetworkPolicy",
        "  ingress: [{action: Allow, source: {selector: \"has(\"}}]\n",
    );
    assert!(e.starts_with("spec.ingress[0].source.selector: "), "{e}");
    let e = single_error("GlobalNetworkPolicy", "  namespaceSelector: \"a ==\"\n");
    assert!(e.starts_with("spec.namespaceSelector: "), "{e}");
    let e = single_error(
        "NetworkPolicy",
        "  egress: [{action: Allow, destination: {notSelector: \"))\"}}]\n",
    );
    assert!(
        e.starts_with("spec.egress[0].destination.notSelector: "),
        "{e}"
    );
}

#[test]
fn a_backwards_or_out_of_range_port_is_named() {
    let e = single_error(
        "NetworkPolicy",
        "  ingress: [{action: Allow, protocol: TCP, destination: {ports: [\"90:80\"]}}]\n",
    );
    assert!(
        e.starts_with("spec.ingress[0].destination.ports[0]: "),
        "{e}"
    );
    assert!(e.contains("backwards"), "{e}");
    let e = single_error(
        "NetworkPolicy",
        "  ingress: [{action: Allow, protocol: UDP, source: {notPorts: [70000]}}]\n",
    );
    assert!(e.starts_with("spec.ingress[0].source.notPorts[0]: "), "{e}");
}

#[test]
fn ports_need_a_protocol_with_ports() {
    for proto in ["", "protocol: ICMP, ", "protocol: 47, "] {
        let e = single_error(
            "NetworkPolicy",
            &format!("  ingress: [{{action: Allow, {proto}destination: {{ports: [80]}}}}]\n"),
        );
        assert!(e.starts_with("spec.ingress[0].destination.ports: "), "{e}");
        assert!(e.contains("TCP, UDP, SCTP or UDPLite"), "{e}");
    }
    for proto in ["TCP", "udp", "SCTP", "UDPLite", "6"] {
        assert_eq!(
            errors(
                "NetworkPolicy",
                &format!(
                    "  ingress: [{{action: Allow, protocol: {proto}, destination: {{ports: [80]}}}}]\n"
                ),
            ),
            Vec::<String>::new()
        );
    }
}

#[test]
fn icmp_fields_need_an_icmp_protocol_and_code_needs_type() {
    let e = single_error(
        "NetworkPolicy",
        "  ingress: [{action: Allow, protocol: TCP, icmp: {type: 8}}]\n",
    );
    assert!(e.starts_with("spec.ingress[0].icmp: "), "{e}");
    let e = single_error(
        "GlobalNetworkPolicy",
        "  egress: [{action: Deny, notICMP: {type: 3}}]\n",
    );
    assert!(e.starts_with("spec.egress[0].notICMP: "), "{e}");
    let e = single_error(
        "NetworkPolicy",
        "  ingress: [{action: Allow, protocol: ICMP, icmp: {code: 1}}]\n",
    );
    assert_eq!(e, "spec.ingress[0].icmp.code: an ICMP code needs a type");
    let e = single_error(
        "NetworkPolicy",
        "  ingress: [{action: Allow, protocol: ICMP, icmp: {type: 255}}]\n",
    );
    assert!(e.starts_with("spec.ingress[0].icmp.type: "), "{e}");
}

#[test]
fn a_bad_cidr_is_named_with_its_index() {
    let e = single_error(
        "NetworkPolicy",
        "  egress: [{action: Allow, destination: {nets: [10.0.0.0/8, 10.0.0.0/33]}}]\n",
    );
    assert!(e.starts_with("spec.egress[0].destination.nets[1]: "), "{e}");
    let e = single_error(
        "NetworkPolicy",
        "  egress: [{action: Allow, destination: {notNets: [pod-a]}}]\n",
    );
    assert!(
        e.starts_with("spec.egress[0].destination.notNets[0]: "),
        "{e}"
    );
}

#[test]
fn an_unknown_action_or_protocol_is_named() {
    let e = single_error("NetworkPolicy", "  ingress: [{action: Accept}]\n");
    assert_eq!(
        e,
        "spec.ingress[0].action: unknown action \"Accept\"; use Allow, Deny, Log or Pass"
    );
    let e = single_error(
        "NetworkPolicy",
        "  ingress: [{action: Allow, protocol: GRE}]\n",
    );
    assert!(
        e.starts_with("spec.ingress[0].protocol: unknown protocol"),
        "{e}"
    );
    let e = single_error(
        "NetworkPolicy",
        "  ingress: [{action: Allow, notProtocol: 0}]\n",
    );
    assert!(e.starts_with("spec.ingress[0].notProtocol: "), "{e}");
}

#[test]
fn rules_for_a_direction_not_in_types_are_refused() {
    let e = single_error(
        "NetworkPolicy",
        "  types: [Egress]\n  ingress: [{action: Allow}]\n",
    );
    assert!(e.starts_with("spec.ingress: "), "{e}");
    let e = single_error("NetworkPolicy", "  types: [Sideways]\n");
    assert!(e.starts_with("spec.types: "), "{e}");
}

#[test]
fn unsupported_features_are_refused_not_ignored() {
    let e = single_error("NetworkPolicy", "  tier: security\n");
    assert!(e.starts_with("spec.tier: "), "{e}");
    assert_eq!(
        errors("NetworkPolicy", "  tier: default\n"),
        Vec::<String>::new()
    );
    let e = single_error("NetworkPolicy", "  serviceAccountSelector: all()\n");
    assert!(e.starts_with("spec.serviceAccountSelector: "), "{e}");
    let e = single_error(
        "NetworkPolicy",
        "  ingress: [{action: Allow, source: {serviceAccounts: {names: [x]}}}]\n",
    );
    assert!(
        e.starts_with("spec.ingress[0].source.serviceAccounts: "),
        "{e}"
    );
    let e = single_error("GlobalNetworkPolicy", "  preDNAT: true\n");
    assert!(e.starts_with("spec.preDNAT: "), "{e}");
    let e = single_error(
        "NetworkPolicy",
        "  ingress: [{action: Allow, http: {methods: [GET]}}]\n",
    );
    assert!(e.starts_with("spec.ingress[0].http: "), "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let errs = errors(
        "NetworkPolicy",
        "  selector: \"((\"\n  ingress: [{action: Nope, protocol: TCP, icmp: {type: 1}, source: {nets: [x]}}]\n",
    );
    assert_eq!(errs.len(), 4, "{errs:#?}");
}

#[test]
fn default_types_follow_calico() {
    let p = NetworkPolicySpec::default();
    assert_eq!(p.parts().types().unwrap(), [PolicyType::Ingress]);
    let p = NetworkPolicySpec {
        egress: Some(vec![Rule::new(Action::Allow)]),
        ..Default::default()
    };
    assert_eq!(
        p.parts().types().unwrap(),
        [PolicyType::Ingress, PolicyType::Egress]
    );
    let p = NetworkPolicySpec {
        types: Some(vec!["Egress".into()]),
        ..Default::default()
    };
    assert_eq!(p.parts().types().unwrap(), [PolicyType::Egress]);
}
