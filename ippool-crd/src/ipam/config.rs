//! IPAMConfig (`IPAMConfiguration` in Calico's v3 API): IPAM-wide settings,
//! a singleton named `default`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::defaults;
use crate::serde_util::empty_as_none;
use crate::validate::{Collector, ValidationErrors, describe};

// Enums that appear in `Option<...>` fields carry rustdoc-only docs
// (`cfg_attr(doc, ...)`): schemars would otherwise copy the enum's
// description over the field's own in the generated CRD.
#[cfg_attr(
    doc,
    doc = "Whether KubeVirt VMs keep their addresses across pod re-creation."
)]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VMAddressPersistence {
    #[default]
    Enabled,
    Disabled,
}

fn default_auto_allocate_blocks() -> bool {
    defaults::AUTO_ALLOCATE_BLOCKS
}

/// IPAM-wide settings.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPAMConfig",
    root = "IPAMConfiguration",
    plural = "ipamconfigs",
    singular = "ipamconfig",
    derive = "PartialEq",
    derive = "Default",
    doc = "IPAM-wide settings; a singleton named default."
)]
#[serde(rename_all = "camelCase")]
pub struct IPAMConfigurationSpec {
    /// Forbid borrowing addresses from blocks affine to other nodes.
    /// Default false.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Let nodes claim new blocks on demand. Default true (also when the
    /// field is missing, as Calico's v3 API defaults it).
    #[serde(default = "default_auto_allocate_blocks")]
    pub auto_allocate_blocks: bool,
    /// Maximum blocks affine to one node; 0 or unset means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub max_blocks_per_host: Option<i32>,
    /// Default Enabled.
    #[serde(
        rename = "kubeVirtVMAddressPersistence",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub kube_virt_vm_address_persistence: Option<VMAddressPersistence>,
    /// Seconds a released address rests before reuse (0–1200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1200))]
    pub ip_cooldown_seconds: Option<i32>,
}

impl Default for IPAMConfigurationSpec {
    /// Calico's defaults (what applies when no IPAMConfig exists).
    fn default() -> Self {
        Self {
            strict_affinity: defaults::STRICT_AFFINITY,
            auto_allocate_blocks: defaults::AUTO_ALLOCATE_BLOCKS,
            max_blocks_per_host: None,
            kube_virt_vm_address_persistence: None,
            ip_cooldown_seconds: None,
        }
    }
}

impl IPAMConfigurationSpec {
    /// The per-node block limit; `None` means unlimited.
    pub fn max_blocks_per_host(&self) -> Option<u32> {
        self.max_blocks_per_host
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n != 0)
    }
}

impl IPAMConfiguration {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Collector::default();
        if let Some(n) = self.spec.max_blocks_per_host
            && n < 0
        {
            c.error_hint(
                "spec.maxBlocksPerHost",
                format!("{n} must not be negative"),
                "use 0 for no limit",
            );
        }
        if let Some(n) = self.spec.ip_cooldown_seconds
            && !(0..=1200).contains(&n)
        {
            c.error(
                "spec.ipCooldownSeconds",
                format!("{n} is out of range 0–1200"),
            );
        }
        if let Some(name) = self.metadata.name.as_deref()
            && name != defaults::DEFAULT_NAME
        {
            c.error_hint(
                "metadata.name",
                format!("is {name:?}, but IPAM configuration is a singleton"),
                "name it default",
            );
        }
        c.finish(describe("IPAMConfig", &self.metadata))
    }
}
