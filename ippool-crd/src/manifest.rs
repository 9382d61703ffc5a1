//! Reading Calico manifests: multi-document YAML (or JSON) holding any of
//! our resources, written against either Calico API — the CRD form
//! (`crd.projectcalico.org/v1`, what is stored) or the user-facing form
//! (`projectcalico.org/v3`, what Calico's docs and calicoctl use). The two
//! have the same field names, so one set of types reads both.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::validate::ValidationErrors;
use crate::{
    BGPConfiguration, BGPFilter, BGPPeer, BlockAffinity, GlobalNetworkPolicy, IPAMBlock,
    IPAMConfiguration, IPAMHandle, IPPool, IPReservation, NetworkPolicy, Node,
};

/// The API groups/versions we read.
pub const API_VERSIONS: [&str; 2] = ["crd.projectcalico.org/v1", "projectcalico.org/v3"];

/// Any one resource from a manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum CalicoResource {
    IPPool(IPPool),
    BGPPeer(BGPPeer),
    BGPFilter(BGPFilter),
    BGPConfiguration(BGPConfiguration),
    IPAMBlock(IPAMBlock),
    BlockAffinity(BlockAffinity),
    IPAMHandle(IPAMHandle),
    IPAMConfiguration(IPAMConfiguration),
    IPReservation(IPReservation),
    Node(Node),
    NetworkPolicy(NetworkPolicy),
    GlobalNetworkPolicy(GlobalNetworkPolicy),
}

/// Why a manifest could not be read. `document` counts from 1.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("document {document}: not valid YAML: {source}")]
    Yaml {
        document: usize,
        source: serde_yaml_ng::Error,
    },
    #[error("document {document}: expected a mapping with apiVersion and kind")]
    NotAnObject { document: usize },
    #[error(
        "document {document}: apiVersion {api_version:?} is not a Calico API; \
         use crd.projectcalico.org/v1 or projectcalico.org/v3"
    )]
    ApiVersion {
        document: usize,
        api_version: String,
    },
    #[error(
        "document {document}: kind {kind:?} is not supported; expected IPPool, BGPPeer, BGPFilter, \
         BGPConfiguration, IPAMBlock, BlockAffinity, IPAMHandle, IPAMConfig(uration), IPReservation, Node, \
         NetworkPolicy or GlobalNetworkPolicy"
    )]
    Kind { document: usize, kind: String },
    #[error("document {document} ({kind} {name:?}): {source}")]
    Shape {
        document: usize,
        kind: String,
        name: String,
        source: serde_json::Error,
    },
}

impl ManifestError {
    fn set_document(mut self, n: usize) -> Self {
        match &mut self {
            ManifestError::Yaml { document, .. }
            | ManifestError::NotAnObject { document }
            | ManifestError::ApiVersion { document, .. }
            | ManifestError::Kind { document, .. }
            | ManifestError::Shape { document, .. } => *document = n,
        }
        self
    }
}

/// Reads every resource in a (multi-document) YAML manifest. Empty
/// documents are skipped; `List` / `<Kind>List` objects contribute their
/// items.
pub fn parse_manifests(yaml: &str) -> Result<Vec<CalicoResource>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let document = i + 1;
        let value =
            Value::deserialize(doc).map_err(|source| ManifestError::Yaml { document, source })?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
            let items = match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => return Err(ManifestError::NotAnObject { document }),
            };
            for item in items {
                out.push(CalicoResource::from_value(item).map_err(|e| e.set_document(document))?);
            }
            continue;
        }
        out.push(CalicoResource::from_value(value).map_err(|e| e.set_document(document))?);
    }
    Ok(out)
}

fn decode<T: DeserializeOwned>(value: Value, kind: &str) -> Result<T, ManifestError> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    serde_json::from_value(value).map_err(|source| ManifestError::Shape {
        document: 0,
        kind: kind.to_string(),
        name,
        source,
    })
}

impl CalicoResource {
    /// Reads one resource object, checking apiVersion and dispatching on kind.
    pub fn from_value(value: Value) -> Result<Self, ManifestError> {
        if !value.is_object() {
            return Err(ManifestError::NotAnObject { document: 0 });
        }
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !API_VERSIONS.contains(&api_version.as_str()) {
            return Err(ManifestError::ApiVersion {
                document: 0,
                api_version,
            });
        }
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(match kind.as_str() {
            "IPPool" => CalicoResource::IPPool(decode(value, &kind)?),
            "BGPPeer" => CalicoResource::BGPPeer(decode(value, &kind)?),
            "BGPFilter" => CalicoResource::BGPFilter(decode(value, &kind)?),
            "BGPConfiguration" => CalicoResource::BGPConfiguration(decode(value, &kind)?),
            "IPAMBlock" => CalicoResource::IPAMBlock(decode(value, &kind)?),
            "BlockAffinity" => CalicoResource::BlockAffinity(decode(value, &kind)?),
            "IPAMHandle" => CalicoResource::IPAMHandle(decode(value, &kind)?),
            // The CRD kind is IPAMConfig; Calico's v3 API calls it IPAMConfiguration.
            "IPAMConfig" | "IPAMConfiguration" => {
                CalicoResource::IPAMConfiguration(decode(value, &kind)?)
            }
            "IPReservation" => CalicoResource::IPReservation(decode(value, &kind)?),
            "Node" => CalicoResource::Node(decode(value, &kind)?),
            "NetworkPolicy" => CalicoResource::NetworkPolicy(decode(value, &kind)?),
            "GlobalNetworkPolicy" => CalicoResource::GlobalNetworkPolicy(decode(value, &kind)?),
            _ => return Err(ManifestError::Kind { document: 0, kind }),
        })
    }

    /// The kind as it appears in the CRD (IPAMConfiguration is `IPAMConfig`).
    pub fn kind(&self) -> &'static str {
        match self {
            CalicoResource::IPPool(_) => "IPPool",
            CalicoResource::BGPPeer(_) => "BGPPeer",
            CalicoResource::BGPFilter(_) => "BGPFilter",
            CalicoResource::BGPConfiguration(_) => "BGPConfiguration",
            CalicoResource::IPAMBlock(_) => "IPAMBlock",
            CalicoResource::BlockAffinity(_) => "BlockAffinity",
            CalicoResource::IPAMHandle(_) => "IPAMHandle",
            CalicoResource::IPAMConfiguration(_) => "IPAMConfig",
            CalicoResource::IPReservation(_) => "IPReservation",
            CalicoResource::Node(_) => "Node",
            CalicoResource::NetworkPolicy(_) => "NetworkPolicy",
            CalicoResource::GlobalNetworkPolicy(_) => "GlobalNetworkPolicy",
        }
    }

    pub fn name(&self) -> &str {
        let meta = match self {
            CalicoResource::IPPool(r) => &r.metadata,
            CalicoResource::BGPPeer(r) => &r.metadata,
            CalicoResource::BGPFilter(r) => &r.metadata,
            CalicoResource::BGPConfiguration(r) => &r.metadata,
            CalicoResource::IPAMBlock(r) => &r.metadata,
            CalicoResource::BlockAffinity(r) => &r.metadata,
            CalicoResource::IPAMHandle(r) => &r.metadata,
            CalicoResource::IPAMConfiguration(r) => &r.metadata,
            CalicoResource::IPReservation(r) => &r.metadata,
            CalicoResource::Node(r) => &r.metadata,
            CalicoResource::NetworkPolicy(r) => &r.metadata,
            CalicoResource::GlobalNetworkPolicy(r) => &r.metadata,
        };
        meta.name.as_deref().unwrap_or("")
    }

    /// The resource as JSON, in its stored form (`crd.projectcalico.org/v1`,
    /// or `projectcalico.org/v3` for Node).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        match self {
            CalicoResource::IPPool(r) => serde_json::to_value(r),
            CalicoResource::BGPPeer(r) => serde_json::to_value(r),
            CalicoResource::BGPFilter(r) => serde_json::to_value(r),
            CalicoResource::BGPConfiguration(r) => serde_json::to_value(r),
            CalicoResource::IPAMBlock(r) => serde_json::to_value(r),
            CalicoResource::BlockAffinity(r) => serde_json::to_value(r),
            CalicoResource::IPAMHandle(r) => serde_json::to_value(r),
            CalicoResource::IPAMConfiguration(r) => serde_json::to_value(r),
            CalicoResource::IPReservation(r) => serde_json::to_value(r),
            CalicoResource::Node(r) => serde_json::to_value(r),
            CalicoResource::NetworkPolicy(r) => serde_json::to_value(r),
            CalicoResource::GlobalNetworkPolicy(r) => serde_json::to_value(r),
        }
    }

    /// Runs the resource's validation (kinds without rules always pass).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        match self {
            CalicoResource::IPPool(r) => r.validate(),
            CalicoResource::BGPPeer(r) => r.validate(),
            CalicoResource::BGPFilter(r) => r.validate(),
            CalicoResource::BGPConfiguration(r) => r.validate(),
            CalicoResource::IPAMConfiguration(r) => r.validate(),
            CalicoResource::IPReservation(r) => r.validate(),
            CalicoResource::Node(r) => r.validate(),
            CalicoResource::NetworkPolicy(r) => r.validate(),
            CalicoResource::GlobalNetworkPolicy(r) => r.validate(),
            CalicoResource::IPAMBlock(_)
            | CalicoResource::BlockAffinity(_)
            | CalicoResource::IPAMHandle(_) => Ok(()),
        }
    }
}
