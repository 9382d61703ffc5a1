//! The CEL rules we put into the CRDs (`x-kubernetes-validations`), case
//! by case from `crd_rules.yaml`, evaluated with kube's CEL interpreter:
//! every rule compiles, and refuses what the API server refuses with the
//! message it gives. The API server is the authority
//! (`tests/tests/deploy_on_apiserver.rs` runs the same cases on one); this
//! catches a broken rule without one.
#![allow(clippy::unwrap_used)]

use ippool_crd::crdgen;
use kube::core::cel::Validator;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Case {
    kind: String,
    spec: Value,
    #[serde(default)]
    old: Option<Value>,
    /// The API server's error, `<field>: <reason>: <message>`.
    #[serde(default)]
    error: Option<String>,
    /// Decided by the OpenAPI schema, not by a CEL rule.
    #[serde(default)]
    schema: bool,
}

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/crd_rules.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn schema(kind: &str) -> Value {
    let crd = crdgen::crds()
        .unwrap()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn object(kind: &str, spec: &Value) -> Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": spec,
    })
}

/// The message part of an API server field error: what follows
/// `Forbidden: `, `Required value: ` or `Invalid value: <value>: `.
fn message_of(error: &str) -> &str {
    let (_field, rest) = error.split_once(": ").unwrap();
    if let Some(r) = rest.strip_prefix("Invalid value: ") {
        return r.split_once(": ").unwrap().1;
    }
    rest.strip_prefix("Forbidden: ")
        .or_else(|| rest.strip_prefix("Required value: "))
        .unwrap_or_else(|| panic!("unexpected reason in {error:?}"))
}

#[test]
fn the_cel_rules_refuse_what_the_api_server_refuses_with_its_messages() {
    let cases = cases();
    assert!(cases.len() > 30, "crd_rules.yaml lost its cases");
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases.iter().filter(|c| !c.schema) {
        let schema = schema(&case.kind);
        let old = case.old.as_ref().map(|o| object(&case.kind, o));
        let got = Validator::new()
            .validate(&schema, &object(&case.kind, &case.spec), old.as_ref())
            .map_err(|e| format!("{e:?}"));
        match (&case.error, got) {
            (None, Ok(())) => {}
            (Some(want), Err(got)) if got.contains(message_of(want)) => {}
            (want, got) => failures.push(format!(
                "{} {} (old {:?}): want {want:?}, got {got:?}",
                case.kind, case.spec, case.old
            )),
        }
        checked += 1;
    }
    assert!(checked > 25);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn message_of_takes_the_message_after_the_reason() {
    assert_eq!(message_of("spec: Forbidden: a: b"), "a: b");
    assert_eq!(message_of("spec: Required value: x"), "x");
    assert_eq!(
        message_of(r#"spec.cidr: Invalid value: "string": cidr cannot be changed"#),
        "cidr cannot be changed"
    );
}
