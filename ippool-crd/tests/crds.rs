//! `deploy/crds.yaml` is what the types generate, and every generated schema
//! is structural (Kubernetes refuses CRDs whose schemas are not).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use ippool_crd::crdgen;
use serde_json::Value;

#[test]
fn checked_in_crds_match_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crdgen::CRDS_PATH);
    let generated = crdgen::crds_yaml().unwrap();
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is out of date with the types in ippool-crd.\n\
         Regenerate it from the workspace root with:\n\n    \
         cargo run -p ippool-crd --bin crdgen > deploy/crds.yaml\n",
        crdgen::CRDS_PATH
    );
}

#[test]
fn names_and_scope_are_calicos() {
    let want = [
        ("ippools", "IPPool", "ippool"),
        ("bgppeers", "BGPPeer", "bgppeer"),
        ("bgpconfigurations", "BGPConfiguration", "bgpconfiguration"),
        ("bgpfilters", "BGPFilter", "bgpfilter"),
        ("ipamblocks", "IPAMBlock", "ipamblock"),
        ("blockaffinities", "BlockAffinity", "blockaffinity"),
        ("ipamhandles", "IPAMHandle", "ipamhandle"),
        ("ipamconfigs", "IPAMConfig", "ipamconfig"),
        ("ipreservations", "IPReservation", "ipreservation"),
        ("networkpolicies", "NetworkPolicy", "networkpolicy"),
        (
            "globalnetworkpolicies",
            "GlobalNetworkPolicy",
            "globalnetworkpolicy",
        ),
    ];
    let crds = crdgen::crds().unwrap();
    assert_eq!(crds.len(), want.len());
    for (crd, (plural, kind, singular)) in crds.iter().zip(want) {
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{plural}.crd.projectcalico.org").as_str())
        );
        assert_eq!(crd.spec.group, "crd.projectcalico.org");
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.names.singular.as_deref(), Some(singular));
        assert_eq!(
            crd.spec.names.list_kind.as_deref(),
            Some(format!("{kind}List").as_str())
        );
        // Of Calico's resources only NetworkPolicy lives in a namespace.
        let scope = if kind == "NetworkPolicy" {
            "Namespaced"
        } else {
            "Cluster"
        };
        assert_eq!(crd.spec.scope, scope, "{kind}");
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, "v1");
        assert!(crd.spec.versions[0].served && crd.spec.versions[0].storage);
    }
    assert!(
        !crds.iter().any(|c| c.spec.names.kind == "Node"),
        "Calico's Node is not a CRD"
    );
}

fn schema_of(kind: &str) -> Value {
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

#[test]
fn ippool_schema_has_enums_ranges_cel_and_printer_columns() {
    let s = schema_of("IPPool");
    let spec = &s["properties"]["spec"];
    let modes = serde_json::json!(["Never", "Always", "CrossSubnet"]);
    assert_eq!(spec["properties"]["ipipMode"]["enum"], modes);
    assert_eq!(spec["properties"]["vxlanMode"]["enum"], modes);
    assert_eq!(
        spec["properties"]["allowedUses"]["items"]["enum"],
        serde_json::json!(["Workload", "Tunnel", "LoadBalancer"])
    );
    assert_eq!(spec["properties"]["blockSize"]["minimum"], 0.0);
    assert_eq!(spec["properties"]["blockSize"]["maximum"], 128.0);
    assert_eq!(spec["required"], serde_json::json!(["cidr"]));
    let rules: Vec<&str> = spec["x-kubernetes-validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(
        rules
            .iter()
            .any(|r| r.contains("ipipMode") && r.contains("vxlanMode"))
    );

    let crd = crdgen::crds().unwrap().remove(0);
    let cols: Vec<(String, String, String)> = crd.spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap()
        .into_iter()
        .map(|c| (c.name, c.type_, c.json_path))
        .collect();
    let want = [
        ("CIDR", "string", ".spec.cidr"),
        ("IPIP", "string", ".spec.ipipMode"),
        ("VXLAN", "string", ".spec.vxlanMode"),
        ("NAT", "boolean", ".spec.natOutgoing"),
        ("BlockSize", "integer", ".spec.blockSize"),
        ("Disabled", "boolean", ".spec.disabled"),
        ("Age", "date", ".metadata.creationTimestamp"),
        // -o wide: the rest of calicoctl's wide columns, and the status
        // calico-node writes.
        ("DisableBGPExport", "boolean", ".spec.disableBGPExport"),
        ("Selector", "string", ".spec.nodeSelector"),
        (
            "Allocatable",
            "string",
            ".status.conditions[?(@.type==\"Allocatable\")].reason",
        ),
        ("Blocks", "integer", ".status.allocatedBlocks"),
        ("Used", "integer", ".status.allocatedAddresses"),
        ("InBlocks", "integer", ".status.blockAddresses"),
    ];
    assert_eq!(
        cols,
        want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );
}

#[test]
fn other_schemas_have_their_enums_and_ranges() {
    let s = schema_of("BGPConfiguration");
    let port = &s["properties"]["spec"]["properties"]["listenPort"];
    assert_eq!(
        (port["minimum"].as_f64(), port["maximum"].as_f64()),
        (Some(1.0), Some(65535.0))
    );
    let s = schema_of("BlockAffinity");
    let spec = &s["properties"]["spec"]["properties"];
    assert_eq!(
        spec["state"]["enum"],
        serde_json::json!(["confirmed", "pending", "pendingDeletion"])
    );
    assert_eq!(
        spec["deleted"]["type"], "string",
        "BlockAffinity.deleted is a string in Calico's CRD"
    );
    let s = schema_of("IPAMBlock");
    let alloc = &s["properties"]["spec"]["properties"]["allocations"];
    assert_eq!(alloc["items"]["type"], "integer");
    assert_eq!(
        alloc["items"]["nullable"], true,
        "free allocations are null"
    );
}

#[test]
fn policy_schemas_check_actions_protocols_ports_and_show_order_and_selector() {
    for kind in ["NetworkPolicy", "GlobalNetworkPolicy"] {
        let s = schema_of(kind);
        let spec = &s["properties"]["spec"]["properties"];
        assert_eq!(spec["order"]["type"], "number", "{kind}");
        assert_eq!(
            spec["types"]["items"]["enum"],
            serde_json::json!(["Ingress", "Egress"])
        );
        for dir in ["ingress", "egress"] {
            let rule = &spec[dir]["items"];
            assert_eq!(
                rule["properties"]["action"]["enum"],
                serde_json::json!(["Allow", "Deny", "Log", "Pass"]),
                "{kind}.{dir}"
            );
            assert_eq!(rule["required"], serde_json::json!(["action"]));
            // The int-or-string pattern the API server type-checks with.
            let typed = serde_json::json!([{"type": "integer"}, {"type": "string"}]);
            assert_eq!(rule["properties"]["protocol"]["anyOf"], typed);
            let ports = &rule["properties"]["destination"]["properties"]["ports"]["items"];
            assert_eq!(ports["anyOf"], typed);
            assert_eq!(ports["x-kubernetes-int-or-string"], true);
            let messages: Vec<&str> = rule["x-kubernetes-validations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["message"].as_str().unwrap())
                .collect();
            assert!(
                messages
                    .iter()
                    .any(|m| m.starts_with("ports and notPorts need")),
                "{messages:?}"
            );
        }
        let crd = crdgen::crds()
            .unwrap()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .unwrap();
        let cols: Vec<(String, String)> = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.json_path))
            .collect();
        assert_eq!(cols[0], ("Order".to_string(), ".spec.order".to_string()));
        assert_eq!(
            cols[1],
            ("Selector".to_string(), ".spec.selector".to_string())
        );
    }
}

/// Walks every schema node and checks Kubernetes' structural rules as far as
/// they can be checked locally.
fn check_structural(path: &str, s: &Value, problems: &mut Vec<String>) {
    let Value::Object(m) = s else {
        problems.push(format!("{path}: schema is not an object"));
        return;
    };
    let escape = m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !m.contains_key("type") && !escape {
        problems.push(format!("{path}: no type"));
    }
    // Kubernetes' one exception: an int-or-string value may (and should,
    // for the server to check the type) say `anyOf: [integer, string]`.
    let int_or_string = m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if int_or_string
        && let Some(any) = m.get("anyOf")
        && *any != serde_json::json!([{"type": "integer"}, {"type": "string"}])
    {
        problems.push(format!(
            "{path}: int-or-string with an anyOf other than [integer, string]"
        ));
    }
    for key in ["anyOf", "oneOf", "allOf", "not"] {
        if key == "anyOf" && int_or_string {
            continue;
        }
        if m.contains_key(key) && !m.contains_key("type") {
            problems.push(format!("{path}: {key} without a type"));
        }
    }
    if m.contains_key("$ref") {
        problems.push(format!("{path}: $ref is not allowed"));
    }
    if let Some(Value::Array(values)) = m.get("enum")
        && values.iter().any(Value::is_null)
    {
        problems.push(format!("{path}: null in enum"));
    }
    if let Some(f) = m.get("format").and_then(Value::as_str)
        && f.starts_with("uint")
    {
        problems.push(format!("{path}: unknown format {f}"));
    }
    match m.get("type").and_then(Value::as_str) {
        Some("array") => match m.get("items") {
            Some(items) => check_structural(&format!("{path}[]"), items, problems),
            None => problems.push(format!("{path}: array without items")),
        },
        Some("object") => {
            if m.contains_key("properties") && m.contains_key("additionalProperties") {
                problems.push(format!("{path}: both properties and additionalProperties"));
            }
            if let Some(Value::Object(props)) = m.get("properties") {
                for (k, v) in props {
                    check_structural(&format!("{path}.{k}"), v, problems);
                }
            }
            if let Some(ap) = m.get("additionalProperties")
                && ap.is_object()
            {
                check_structural(&format!("{path}.*"), ap, problems);
            }
        }
        _ => {}
    }
}

#[test]
fn every_crd_schema_is_structural() {
    for crd in crdgen::crds().unwrap() {
        let kind = crd.spec.names.kind.clone();
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let mut problems = Vec::new();
        check_structural(&kind, &schema, &mut problems);
        assert!(
            problems.is_empty(),
            "{kind} schema is not structural:\n{}",
            problems.join("\n")
        );
        assert_eq!(schema["properties"]["spec"]["type"], "object", "{kind}");
    }
}

#[test]
fn the_checker_catches_non_structural_schemas() {
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "a": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "b": {"type": "array"},
            "c": {"type": "string", "enum": ["x", null]},
            "d": {"x-kubernetes-int-or-string": true, "anyOf": [{}, {}]}
        }
    });
    let mut problems = Vec::new();
    check_structural("T", &bad, &mut problems);
    assert_eq!(problems.len(), 5, "{problems:?}");
}
