//! Where each [`Key`] lives in the Kubernetes API, and the model form ⇄
//! API object translation (Calico's KDD layout).
//!
//! | key | API object |
//! |---|---|
//! | IPPool / BGPPeer / BGPConfiguration / BGPFilter | the `crd.projectcalico.org/v1` object of that name |
//! | Node | the core/v1 Node: labels + `projectcalico.org/*` annotations |
//! | IPAM block 10.65.0.64/26 | IPAMBlock `10-65-0-64-26`, model form = spec |
//! | affinity of that block to node-1 | BlockAffinity `node-1-10-65-0-64-26` (`spec.node`, `spec.cidr`) |
//! | handle `k8s-pod-network.ABC` | IPAMHandle `k8s-pod-network.abc` (`spec.handleID` keeps the case) |
//! | IPAM config | IPAMConfig `default` |
//! | NetworkPolicy / GlobalNetworkPolicy | the `crd.projectcalico.org/v1` object (the first namespaced) |
//! | IPReservation | the `crd.projectcalico.org/v1` object of that name |
//! | networking.k8s.io NetworkPolicy, Pod, Namespace | the Kubernetes object; Pods and Namespaces read slimmed ([`super::objects`]) |
//! | WorkloadEndpoint, Profile | none: Calico derives them from Pods and Namespaces |
//!
//! Everything here is plain data in, plain data out; the I/O is in
//! [`super::KubeBackend`].

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use ippool_crd::names::{block_affinity_name, block_name, handle_name};
use ippool_crd::node_annotations as ann;
use serde_json::{Map, Value, json};

use crate::backend::Kv;
use crate::{Error, Key, ListKey, ResourceKind};

pub const GROUP: &str = "crd.projectcalico.org";
pub const VERSION: &str = "v1";
pub const API_VERSION: &str = "crd.projectcalico.org/v1";

/// The Calico annotations on a Kubernetes Node that carry Calico's Node
/// fields. A write patches exactly these and nothing else of the Node.
pub const NODE_ANNOTATIONS: [&str; 9] = [
    ann::IPV4_ADDRESS,
    ann::IPV6_ADDRESS,
    ann::AS_NUMBER,
    ann::IPV4_IPIP_TUNNEL_ADDR,
    ann::ROUTE_REFLECTOR_CLUSTER_ID,
    ann::IPV4_VXLAN_TUNNEL_ADDR,
    ann::IPV6_VXLAN_TUNNEL_ADDR,
    ann::VXLAN_TUNNEL_MAC_ADDR,
    ann::VXLAN_TUNNEL_MAC_ADDR_V6,
];

/// The annotation `kubectl apply` keeps the applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The name of the one IPAMConfig object Calico reads.
pub const IPAM_CONFIG_NAME: &str = "default";

/// An API resource type the backend uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiType {
    IPPool,
    BGPPeer,
    BGPConfiguration,
    BGPFilter,
    IPAMBlock,
    BlockAffinity,
    IPAMHandle,
    IPAMConfig,
    /// core/v1 Node.
    Node,
    /// Calico's, namespaced.
    NetworkPolicy,
    GlobalNetworkPolicy,
    IPReservation,
    /// networking.k8s.io/v1 NetworkPolicy.
    KubernetesNetworkPolicy,
    /// core/v1 Pod.
    Pod,
    /// core/v1 Namespace.
    Namespace,
}

impl ApiType {
    pub const ALL: [ApiType; 15] = [
        ApiType::IPPool,
        ApiType::BGPPeer,
        ApiType::BGPConfiguration,
        ApiType::BGPFilter,
        ApiType::IPAMBlock,
        ApiType::BlockAffinity,
        ApiType::IPAMHandle,
        ApiType::IPAMConfig,
        ApiType::Node,
        ApiType::NetworkPolicy,
        ApiType::GlobalNetworkPolicy,
        ApiType::IPReservation,
        ApiType::KubernetesNetworkPolicy,
        ApiType::Pod,
        ApiType::Namespace,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            ApiType::IPPool => "IPPool",
            ApiType::BGPPeer => "BGPPeer",
            ApiType::BGPConfiguration => "BGPConfiguration",
            ApiType::BGPFilter => "BGPFilter",
            ApiType::IPAMBlock => "IPAMBlock",
            ApiType::BlockAffinity => "BlockAffinity",
            ApiType::IPAMHandle => "IPAMHandle",
            ApiType::IPAMConfig => "IPAMConfig",
            ApiType::Node => "Node",
            ApiType::NetworkPolicy | ApiType::KubernetesNetworkPolicy => "NetworkPolicy",
            ApiType::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            ApiType::IPReservation => "IPReservation",
            ApiType::Pod => "Pod",
            ApiType::Namespace => "Namespace",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ApiType::IPPool => "ippools",
            ApiType::BGPPeer => "bgppeers",
            ApiType::BGPConfiguration => "bgpconfigurations",
            ApiType::BGPFilter => "bgpfilters",
            ApiType::IPAMBlock => "ipamblocks",
            ApiType::BlockAffinity => "blockaffinities",
            ApiType::IPAMHandle => "ipamhandles",
            ApiType::IPAMConfig => "ipamconfigs",
            ApiType::Node => "nodes",
            ApiType::NetworkPolicy | ApiType::KubernetesNetworkPolicy => "networkpolicies",
            ApiType::GlobalNetworkPolicy => "globalnetworkpolicies",
            ApiType::IPReservation => "ipreservations",
            ApiType::Pod => "pods",
            ApiType::Namespace => "namespaces",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            ApiType::Node | ApiType::Pod | ApiType::Namespace => "v1",
            ApiType::KubernetesNetworkPolicy => "networking.k8s.io/v1",
            _ => API_VERSION,
        }
    }

    /// Whether objects of this type live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(
            self,
            ApiType::NetworkPolicy | ApiType::KubernetesNetworkPolicy | ApiType::Pod
        )
    }

    /// `ippools.crd.projectcalico.org`, `nodes`: how errors name the type.
    pub fn resource_name(self) -> String {
        match self {
            ApiType::Node | ApiType::Pod | ApiType::Namespace => self.plural().into(),
            ApiType::KubernetesNetworkPolicy => "networkpolicies.networking.k8s.io".into(),
            t => format!("{}.{GROUP}", t.plural()),
        }
    }

    /// The collection's URL path (of every namespace, for a namespaced
    /// type: what list and watch read).
    pub fn collection_path(self) -> String {
        self.collection_path_in(None)
    }

    /// The collection's URL path in `namespace` (for a namespaced type).
    pub fn collection_path_in(self, namespace: Option<&str>) -> String {
        let base = match self {
            ApiType::Node | ApiType::Pod | ApiType::Namespace => "/api/v1".to_string(),
            ApiType::KubernetesNetworkPolicy => "/apis/networking.k8s.io/v1".to_string(),
            _ => format!("/apis/{GROUP}/{VERSION}"),
        };
        match namespace {
            Some(ns) if self.namespaced() => format!("{base}/namespaces/{ns}/{}", self.plural()),
            _ => format!("{base}/{}", self.plural()),
        }
    }

    /// Whether this type is one of the CRDs in `deploy/crds.yaml` (else a
    /// built-in Kubernetes type, always served).
    pub fn is_crd(self) -> bool {
        !matches!(
            self,
            ApiType::Node | ApiType::Pod | ApiType::Namespace | ApiType::KubernetesNetworkPolicy
        )
    }

    /// Whether status is written through a `/status` subresource (the
    /// CRD declares `subresources.status`). Nodes have one too, but it
    /// is kubelet's; we never write Node status.
    pub fn has_status_subresource(self) -> bool {
        matches!(self, ApiType::IPPool)
    }

    /// The API type holding `key`; an error for kinds the Kubernetes
    /// datastore does not store.
    pub fn of_key(key: &Key) -> Result<ApiType, Error> {
        Ok(match key {
            Key::Resource { kind, .. } => Self::of_kind(*kind)?,
            Key::Block { .. } => ApiType::IPAMBlock,
            Key::Affinity { .. } => ApiType::BlockAffinity,
            Key::Handle { .. } => ApiType::IPAMHandle,
            Key::IpamConfig => ApiType::IPAMConfig,
        })
    }

    pub fn of_list(list: &ListKey) -> Result<ApiType, Error> {
        Ok(match list {
            ListKey::Resources(kind) => Self::of_kind(*kind)?,
            ListKey::Blocks => ApiType::IPAMBlock,
            ListKey::Affinities { .. } => ApiType::BlockAffinity,
            ListKey::Handles => ApiType::IPAMHandle,
        })
    }

    fn of_kind(kind: ResourceKind) -> Result<ApiType, Error> {
        Ok(match kind {
            ResourceKind::IPPool => ApiType::IPPool,
            ResourceKind::BGPPeer => ApiType::BGPPeer,
            ResourceKind::BGPConfiguration => ApiType::BGPConfiguration,
            ResourceKind::BGPFilter => ApiType::BGPFilter,
            ResourceKind::Node => ApiType::Node,
            ResourceKind::NetworkPolicy => ApiType::NetworkPolicy,
            ResourceKind::GlobalNetworkPolicy => ApiType::GlobalNetworkPolicy,
            ResourceKind::IPReservation => ApiType::IPReservation,
            ResourceKind::KubernetesNetworkPolicy => ApiType::KubernetesNetworkPolicy,
            ResourceKind::Pod => ApiType::Pod,
            ResourceKind::Namespace => ApiType::Namespace,
            ResourceKind::WorkloadEndpoint | ResourceKind::Profile => {
                return Err(Error::NotStored {
                    kind: kind.kind(),
                    store: "the Kubernetes datastore",
                    reason: "with DATASTORE_TYPE=kubernetes, workload endpoints are read from \
                             Pods and namespace profiles from Namespaces",
                });
            }
        })
    }

    fn resource_kind(self) -> Option<ResourceKind> {
        Some(match self {
            ApiType::IPPool => ResourceKind::IPPool,
            ApiType::BGPPeer => ResourceKind::BGPPeer,
            ApiType::BGPConfiguration => ResourceKind::BGPConfiguration,
            ApiType::BGPFilter => ResourceKind::BGPFilter,
            ApiType::Node => ResourceKind::Node,
            ApiType::NetworkPolicy => ResourceKind::NetworkPolicy,
            ApiType::GlobalNetworkPolicy => ResourceKind::GlobalNetworkPolicy,
            ApiType::IPReservation => ResourceKind::IPReservation,
            ApiType::KubernetesNetworkPolicy => ResourceKind::KubernetesNetworkPolicy,
            ApiType::Pod => ResourceKind::Pod,
            ApiType::Namespace => ResourceKind::Namespace,
            ApiType::IPAMBlock
            | ApiType::BlockAffinity
            | ApiType::IPAMHandle
            | ApiType::IPAMConfig => return None,
        })
    }
}

/// The collection a key's object is in (its namespace's, for a namespaced
/// resource).
pub fn collection_path_of(ty: ApiType, key: &Key) -> String {
    match key {
        Key::Resource {
            namespace: Some(ns),
            ..
        } => ty.collection_path_in(Some(ns)),
        _ => ty.collection_path(),
    }
}

/// The API object name a key is stored under.
pub fn object_name(key: &Key) -> String {
    match key {
        Key::Resource { name, .. } => name.clone(),
        Key::Block { cidr } => block_name(cidr),
        Key::Affinity { host, cidr } => block_affinity_name(host, cidr),
        Key::Handle { id } => handle_name(id),
        Key::IpamConfig => IPAM_CONFIG_NAME.into(),
    }
}

fn decode_err(key: &Key, source: serde_json::Error) -> Error {
    Error::Decode {
        key: key.to_string(),
        kind: key.value_kind(),
        source,
    }
}

fn as_object(key: &Key, v: Value) -> Result<Map<String, Value>, Error> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(decode_err(
            key,
            serde::de::Error::custom(format!("expected a JSON object, found {other}")),
        )),
    }
}

/// Metadata the API server owns: never sent back on a write (the
/// resourceVersion is set explicitly for compare-and-swap).
const SERVER_OWNED_META: [&str; 7] = [
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
];

/// Model form → the API object to POST or PUT. `rev` goes into
/// `metadata.resourceVersion` (the compare-and-swap precondition).
/// Not for Nodes, which are patched ([`node_patch`]).
pub fn to_object(key: &Key, model: &[u8], rev: Option<&str>) -> Result<Value, Error> {
    let ty = ApiType::of_key(key)?;
    let model: Value = serde_json::from_slice(model).map_err(|e| decode_err(key, e))?;
    let mut obj = match key {
        Key::Resource { .. } => as_object(key, model)?,
        _ => {
            let mut spec = as_object(key, model)?;
            // The key is the truth about what the object describes.
            match key {
                Key::Affinity { host, cidr } => {
                    spec.insert("node".into(), host.clone().into());
                    spec.insert("cidr".into(), cidr.to_string().into());
                }
                Key::Handle { id } => {
                    spec.insert("handleID".into(), id.clone().into());
                }
                Key::Block { cidr } => {
                    spec.insert("cidr".into(), cidr.to_string().into());
                }
                _ => {}
            }
            let mut m = Map::new();
            m.insert("spec".into(), Value::Object(spec));
            m
        }
    };
    obj.insert("apiVersion".into(), ty.api_version().into());
    obj.insert("kind".into(), ty.kind().into());
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Value::Object(meta) = meta {
        for k in SERVER_OWNED_META {
            meta.remove(k);
        }
        meta.insert("name".into(), object_name(key).into());
        if let Key::Resource {
            namespace: Some(ns),
            ..
        } = key
        {
            meta.insert("namespace".into(), ns.clone().into());
        }
        if let Some(rev) = rev {
            meta.insert("resourceVersion".into(), rev.into());
        }
    }
    Ok(Value::Object(obj))
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The object's resourceVersion.
pub fn revision_of(obj: &Value) -> Option<&str> {
    str_at(obj, "/metadata/resourceVersion")
}

/// An API object → the key it stores and its model form. `None` for
/// objects that are not well formed (no name, a spec without a parseable
/// CIDR, ...): they are skipped, never guessed at.
pub fn from_object(ty: ApiType, obj: &Value) -> Option<Kv> {
    let name = str_at(obj, "/metadata/name")?;
    let revision = crate::Revision(revision_of(obj)?.to_string());
    let spec = || obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let resource_key = |kind: ResourceKind| -> Option<Key> {
        if kind.namespaced() {
            Some(Key::namespaced(
                kind,
                str_at(obj, "/metadata/namespace")?,
                name,
            ))
        } else {
            Some(Key::resource(kind, name))
        }
    };
    let (key, value) = match ty {
        ApiType::IPPool
        | ApiType::BGPPeer
        | ApiType::BGPConfiguration
        | ApiType::BGPFilter
        | ApiType::NetworkPolicy
        | ApiType::GlobalNetworkPolicy
        | ApiType::IPReservation
        | ApiType::KubernetesNetworkPolicy => {
            let mut v = obj.clone();
            // A list's items may leave out their type (built-in types'
            // do); the typed layer checks it.
            if let Some(o) = v.as_object_mut() {
                o.insert("apiVersion".into(), ty.api_version().into());
                o.insert("kind".into(), ty.kind().into());
            }
            if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("managedFields");
                // kubectl apply's copy of the whole object: nobody reads it
                // here, and it doubles what a policy costs to keep.
                if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
                    ann.remove(LAST_APPLIED);
                }
            }
            (resource_key(ty.resource_kind()?)?, v)
        }
        ApiType::Pod => (
            resource_key(ResourceKind::Pod)?,
            super::objects::slim_pod(obj)?,
        ),
        ApiType::Namespace => (
            resource_key(ResourceKind::Namespace)?,
            super::objects::slim_namespace(obj)?,
        ),
        ApiType::Node => (Key::resource(ResourceKind::Node, name), node_model(obj)?),
        ApiType::IPAMBlock => {
            let cidr: IpNetwork = str_at(obj, "/spec/cidr")?.parse().ok()?;
            (Key::Block { cidr }, spec())
        }
        ApiType::BlockAffinity => {
            let cidr: IpNetwork = str_at(obj, "/spec/cidr")?.parse().ok()?;
            let host = str_at(obj, "/spec/node")?.to_string();
            (Key::Affinity { host, cidr }, spec())
        }
        ApiType::IPAMHandle => {
            let id = str_at(obj, "/spec/handleID")?.to_string();
            (Key::Handle { id }, spec())
        }
        ApiType::IPAMConfig => {
            if name != IPAM_CONFIG_NAME {
                return None;
            }
            (Key::IpamConfig, spec())
        }
    };
    key.validate().ok()?;
    let value = serde_json::to_vec(&value).ok()?;
    Some(Kv {
        key,
        value,
        revision,
    })
}

/// A Kubernetes Node → Calico's Node (model form): name, labels, the
/// Calico annotations, and the Node's uid and creation time.
fn node_model(obj: &Value) -> Option<Value> {
    let name = str_at(obj, "/metadata/name")?;
    let labels = string_map(obj.pointer("/metadata/labels"));
    let annotations = string_map(obj.pointer("/metadata/annotations"));
    let mut node = ippool_crd::Node::from_k8s_node(name, &labels, &annotations);
    node.metadata.uid = str_at(obj, "/metadata/uid").map(String::from);
    let mut v = serde_json::to_value(&node).ok()?;
    if let (Some(ts), Some(meta)) = (
        obj.pointer("/metadata/creationTimestamp"),
        v.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        meta.insert("creationTimestamp".into(), ts.clone());
    }
    Some(v)
}

/// The JSON merge patch that makes a Kubernetes Node carry the Calico
/// Node `model`: every Calico annotation set or removed (`null`), nothing
/// else touched, and `metadata.resourceVersion` as the compare-and-swap
/// precondition (the API server refuses the patch with a conflict if the
/// Node has changed since).
pub fn node_patch(key: &Key, model: &[u8], expected: &str) -> Result<Value, Error> {
    let node: ippool_crd::Node = serde_json::from_slice(model).map_err(|e| decode_err(key, e))?;
    let wanted = node.to_k8s_annotations();
    let annotations: Map<String, Value> = NODE_ANNOTATIONS
        .iter()
        .map(|k| {
            let v = wanted
                .get(*k)
                .map(|v| Value::String(v.clone()))
                .unwrap_or(Value::Null);
            (k.to_string(), v)
        })
        .collect();
    Ok(json!({
        "metadata": {
            "resourceVersion": expected,
            "annotations": annotations,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn names_follow_calicos_kdd_layout() {
        let cases = [
            (Key::resource(ResourceKind::IPPool, "pool-a"), "pool-a"),
            (
                Key::Block {
                    cidr: net("10.65.0.64/26"),
                },
                "10-65-0-64-26",
            ),
            (
                Key::Affinity {
                    host: "node-1".into(),
                    cidr: net("10.65.0.64/26"),
                },
                "node-1-10-65-0-64-26",
            ),
            (
                Key::Handle {
                    id: "k8s-pod-network.ABC".into(),
                },
                "k8s-pod-network.abc",
            ),
            (Key::IpamConfig, "default"),
        ];
        for (key, name) in cases {
            assert_eq!(object_name(&key), name, "{key}");
        }
        assert_eq!(
            ApiType::of_key(&Key::resource(ResourceKind::Node, "n"))
                .unwrap()
                .collection_path(),
            "/api/v1/nodes"
        );
        let np = Key::namespaced(ResourceKind::KubernetesNetworkPolicy, "prod", "x");
        let ty = ApiType::of_key(&np).unwrap();
        assert_eq!(
            collection_path_of(ty, &np),
            "/apis/networking.k8s.io/v1/namespaces/prod/networkpolicies"
        );
        assert_eq!(
            ty.collection_path(),
            "/apis/networking.k8s.io/v1/networkpolicies"
        );
        let cnp = Key::namespaced(ResourceKind::NetworkPolicy, "prod", "x");
        assert_eq!(
            collection_path_of(ApiType::of_key(&cnp).unwrap(), &cnp),
            "/apis/crd.projectcalico.org/v1/namespaces/prod/networkpolicies"
        );
        assert_eq!(
            ApiType::of_list(&ListKey::Resources(ResourceKind::Pod))
                .unwrap()
                .collection_path(),
            "/api/v1/pods"
        );
        let err =
            ApiType::of_list(&ListKey::Resources(ResourceKind::WorkloadEndpoint)).unwrap_err();
        assert!(err.to_string().contains("read from Pods"), "{err}");
        assert_eq!(
            ApiType::of_list(&ListKey::Affinities { host: None })
                .unwrap()
                .collection_path(),
            "/apis/crd.projectcalico.org/v1/blockaffinities"
        );
    }

    #[test]
    fn ipam_objects_round_trip_with_the_key_in_the_spec() {
        let key = Key::Affinity {
            host: "node-1".into(),
            cidr: net("10.65.0.64/26"),
        };
        let model =
            br#"{"state":"confirmed","node":"node-1","cidr":"10.65.0.64/26","deleted":"false"}"#;
        let mut obj = to_object(&key, model, Some("41")).unwrap();
        assert_eq!(obj["apiVersion"], "crd.projectcalico.org/v1");
        assert_eq!(obj["kind"], "BlockAffinity");
        assert_eq!(obj["metadata"]["name"], "node-1-10-65-0-64-26");
        assert_eq!(obj["metadata"]["resourceVersion"], "41");
        assert_eq!(obj["spec"]["state"], "confirmed");
        obj["metadata"]["uid"] = "u-1".into();
        let kv = from_object(ApiType::BlockAffinity, &obj).unwrap();
        assert_eq!(kv.key, key);
        assert_eq!(kv.revision.0, "41");
        let back: Value = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(back, serde_json::from_slice::<Value>(model).unwrap());

        let handle = Key::Handle {
            id: "k8s-pod-network.ABC".into(),
        };
        let obj = to_object(&handle, br#"{"block":{"10.65.0.0/26":1}}"#, None).unwrap();
        assert_eq!(obj["metadata"]["name"], "k8s-pod-network.abc");
        assert_eq!(obj["spec"]["handleID"], "k8s-pod-network.ABC");
        assert!(obj["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn server_owned_metadata_is_never_written_back() {
        let key = Key::resource(ResourceKind::IPPool, "p");
        let model = br#"{"apiVersion":"crd.projectcalico.org/v1","kind":"IPPool",
            "metadata":{"name":"p","uid":"local-guess","resourceVersion":"3",
              "creationTimestamp":"2024-01-01T00:00:00Z","labels":{"a":"b"}},
            "spec":{"cidr":"10.0.0.0/16"}}"#;
        let obj = to_object(&key, model, Some("7")).unwrap();
        let meta = obj["metadata"].as_object().unwrap();
        assert_eq!(meta.get("uid"), None);
        assert_eq!(meta.get("creationTimestamp"), None);
        assert_eq!(meta["resourceVersion"], "7");
        assert_eq!(meta["labels"]["a"], "b");
    }

    #[test]
    fn objects_that_are_not_well_formed_are_skipped() {
        let no_cidr = json!({"metadata":{"name":"x","resourceVersion":"1"},"spec":{}});
        assert!(from_object(ApiType::IPAMBlock, &no_cidr).is_none());
        let other_config =
            json!({"metadata":{"name":"not-default","resourceVersion":"1"},"spec":{}});
        assert!(from_object(ApiType::IPAMConfig, &other_config).is_none());
        let bad_host = json!({"metadata":{"name":"x","resourceVersion":"1"},
            "spec":{"node":"a/b","cidr":"10.0.0.0/26"}});
        assert!(from_object(ApiType::BlockAffinity, &bad_host).is_none());
    }

    #[test]
    fn a_kubernetes_node_reads_as_calicos_node() {
        let k8s = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": "node-1", "resourceVersion": "900", "uid": "abc",
                "labels": {"kubernetes.io/hostname": "node-1", "rack": "r1"},
                "annotations": {
                    "projectcalico.org/IPv4Address": "10.0.0.1/24",
                    "projectcalico.org/ASNumber": "64513",
                    "projectcalico.org/IPv4IPIPTunnelAddr": "10.65.0.1",
                    "node.alpha.kubernetes.io/ttl": "0"
                }
            },
            "status": {"conditions": []}
        });
        let kv = from_object(ApiType::Node, &k8s).unwrap();
        assert_eq!(kv.key, Key::resource(ResourceKind::Node, "node-1"));
        assert_eq!(kv.revision.0, "900");
        let node: ippool_crd::Node = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(node.bgp_ipv4().unwrap().to_string(), "10.0.0.1/24");
        assert_eq!(node.asn(), Some(64513));
        assert_eq!(node.ipip_tunnel_addr().unwrap().to_string(), "10.65.0.1");
        assert_eq!(node.labels()["rack"], "r1");
        assert_eq!(node.metadata.uid.as_deref(), Some("abc"));
    }

    #[test]
    fn a_node_write_patches_only_calicos_annotations() {
        let key = Key::resource(ResourceKind::Node, "node-1");
        let model = br#"{"apiVersion":"projectcalico.org/v3","kind":"Node",
            "metadata":{"name":"node-1","labels":{"rack":"r9"}},
            "spec":{"bgp":{"ipv4Address":"10.0.0.1/24"}}}"#;
        let patch = node_patch(&key, model, "900").unwrap();
        assert_eq!(patch["metadata"]["resourceVersion"], "900");
        let ann = patch["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(ann.len(), NODE_ANNOTATIONS.len());
        assert_eq!(ann["projectcalico.org/IPv4Address"], "10.0.0.1/24");
        // Unset fields remove their annotation.
        assert_eq!(ann["projectcalico.org/IPv4IPIPTunnelAddr"], Value::Null);
        // Labels, spec and status of the Node are not ours to write.
        assert_eq!(patch["metadata"].get("labels"), None);
        assert_eq!(patch.as_object().unwrap().len(), 1);
    }
}
