//! Model-form JSON ⇄ the JSON Calico keeps in etcd.
//!
//! Calico's etcd values differ from the CRD shapes in small ways, and we
//! match them so one etcd can serve Calico and calico-rs nodes alike:
//! - resources are stored as `projectcalico.org/v3` objects without a
//!   `resourceVersion` (the etcd mod revision is the version);
//! - a block affinity stores only `{state, deleted}` with `deleted` a bool
//!   (the CRD has node and cidr, which the key already holds, and `deleted`
//!   as a string);
//! - a handle stores `{block, deleted}` (the id is the key);
//! - the IPAM config uses snake_case `strict_affinity` and
//!   `auto_allocate_blocks`.
//!
//! Blocks are stored as they are.

use serde_json::{Map, Value, json};

use crate::{Error, Key};

const STORED_API_VERSION: &str = "projectcalico.org/v3";

fn decode_err(key: &Key, source: serde_json::Error) -> Error {
    Error::Decode {
        key: key.to_string(),
        kind: key.value_kind(),
        source,
    }
}

fn object(key: &Key, bytes: &[u8]) -> Result<Map<String, Value>, Error> {
    match serde_json::from_slice::<Value>(bytes).map_err(|e| decode_err(key, e))? {
        Value::Object(m) => Ok(m),
        other => Err(decode_err(
            key,
            serde::de::Error::custom(format!("expected a JSON object, found {other}")),
        )),
    }
}

fn to_bytes(key: &Key, v: &Value) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|source| Error::Encode {
        key: key.to_string(),
        kind: key.value_kind(),
        source,
    })
}

/// Truthiness of a `deleted` field that may be a bool or the strings
/// "true"/"false" (Calico has written both).
fn flag(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// Model form → what goes into etcd.
pub fn encode(key: &Key, model: &[u8]) -> Result<Vec<u8>, Error> {
    match key {
        Key::Resource { .. } => {
            let mut m = object(key, model)?;
            m.insert("apiVersion".into(), STORED_API_VERSION.into());
            if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                meta.remove("resourceVersion");
            }
            to_bytes(key, &Value::Object(m))
        }
        Key::Block { .. } => Ok(model.to_vec()),
        Key::Affinity { .. } => {
            let m = object(key, model)?;
            let state = m.get("state").cloned().unwrap_or(Value::Null);
            to_bytes(
                key,
                &json!({ "state": state, "deleted": flag(m.get("deleted")) }),
            )
        }
        Key::Handle { .. } => {
            let m = object(key, model)?;
            to_bytes(
                key,
                &json!({
                    "block": m.get("block").cloned().unwrap_or_else(|| json!({})),
                    "deleted": flag(m.get("deleted")),
                }),
            )
        }
        Key::IpamConfig => {
            let m = object(key, model)?;
            let mut out = Map::new();
            for (model_name, etcd_name) in [
                ("strictAffinity", "strict_affinity"),
                ("autoAllocateBlocks", "auto_allocate_blocks"),
                ("maxBlocksPerHost", "maxBlocksPerHost"),
            ] {
                if let Some(v) = m.get(model_name) {
                    out.insert(etcd_name.into(), v.clone());
                }
            }
            to_bytes(key, &Value::Object(out))
        }
    }
}

/// What etcd holds → model form.
pub fn decode(key: &Key, stored: &[u8]) -> Result<Vec<u8>, Error> {
    match key {
        // The typed layer accepts either API version and fills in
        // resourceVersion, so resources and blocks pass through.
        Key::Resource { .. } | Key::Block { .. } => {
            object(key, stored)?;
            Ok(stored.to_vec())
        }
        Key::Affinity { host, cidr } => {
            let m = object(key, stored)?;
            let deleted = if flag(m.get("deleted")) {
                "true"
            } else {
                "false"
            };
            to_bytes(
                key,
                &json!({
                    "state": m.get("state").cloned().unwrap_or(Value::Null),
                    "node": host,
                    "cidr": cidr.to_string(),
                    "deleted": deleted,
                }),
            )
        }
        Key::Handle { id } => {
            let m = object(key, stored)?;
            to_bytes(
                key,
                &json!({
                    "handleID": id,
                    "block": m.get("block").cloned().unwrap_or_else(|| json!({})),
                    "deleted": flag(m.get("deleted")),
                }),
            )
        }
        Key::IpamConfig => {
            let m = object(key, stored)?;
            let mut out = Map::new();
            for (etcd_name, model_name) in [
                ("strict_affinity", "strictAffinity"),
                ("auto_allocate_blocks", "autoAllocateBlocks"),
                ("maxBlocksPerHost", "maxBlocksPerHost"),
            ] {
                if let Some(v) = m.get(etcd_name) {
                    out.insert(model_name.into(), v.clone());
                }
            }
            to_bytes(key, &Value::Object(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResourceKind;

    fn j(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn resources_are_stored_as_v3_without_resource_version() {
        let key = Key::resource(ResourceKind::IPPool, "p");
        let model = br#"{"apiVersion":"crd.projectcalico.org/v1","kind":"IPPool",
            "metadata":{"name":"p","resourceVersion":"42"},"spec":{"cidr":"10.0.0.0/16"}}"#;
        let stored = j(&encode(&key, model).unwrap());
        assert_eq!(stored["apiVersion"], "projectcalico.org/v3");
        assert_eq!(stored["metadata"].get("resourceVersion"), None);
        assert_eq!(stored["spec"]["cidr"], "10.0.0.0/16");
    }

    #[test]
    fn affinity_round_trips_through_calicos_etcd_shape() {
        let key = Key::Affinity {
            host: "node-1".into(),
            cidr: "10.0.0.64/26".parse().unwrap(),
        };
        let model =
            br#"{"state":"pending","node":"node-1","cidr":"10.0.0.64/26","deleted":"false"}"#;
        let stored = encode(&key, model).unwrap();
        assert_eq!(j(&stored), json!({"state":"pending","deleted":false}));
        assert_eq!(j(&decode(&key, &stored).unwrap()), j(model));
    }

    #[test]
    fn handle_and_config_use_calicos_etcd_field_names() {
        let key = Key::Handle {
            id: "k8s-pod-network.abc".into(),
        };
        let model =
            br#"{"handleID":"k8s-pod-network.abc","block":{"10.0.0.0/26":2},"deleted":false}"#;
        let stored = encode(&key, model).unwrap();
        assert_eq!(
            j(&stored),
            json!({"block":{"10.0.0.0/26":2},"deleted":false})
        );
        assert_eq!(j(&decode(&key, &stored).unwrap()), j(model));

        let model = br#"{"strictAffinity":true,"autoAllocateBlocks":true,"maxBlocksPerHost":20}"#;
        let stored = encode(&Key::IpamConfig, model).unwrap();
        assert_eq!(
            j(&stored),
            json!({"strict_affinity":true,"auto_allocate_blocks":true,"maxBlocksPerHost":20})
        );
        assert_eq!(j(&decode(&Key::IpamConfig, &stored).unwrap()), j(model));
    }

    #[test]
    fn garbage_in_etcd_is_a_decode_error_naming_the_key() {
        let key = Key::Handle { id: "h".into() };
        let err = decode(&key, b"not json").unwrap_err();
        assert!(err.to_string().contains("IPAM handle \"h\""), "{err}");
        let err = decode(&key, b"[1,2]").unwrap_err();
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
    }
}
