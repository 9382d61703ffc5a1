//! IPReservation: addresses IPAM must never hand out on its own. A block
//! holding reserved addresses may still be claimed; auto-assignment skips
//! the reserved ones (an address asked for by name is still given, as in
//! Calico).

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::validate::{Collector, ValidationErrors, describe};

/// The addresses auto-assignment must skip.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPReservation",
    plural = "ipreservations",
    singular = "ipreservation",
    derive = "PartialEq",
    derive = "Default",
    doc = "Addresses Calico IPAM never assigns automatically.",
    printcolumn = r#"{"name": "CIDRs", "type": "string", "jsonPath": ".spec.reservedCIDRs"}"#
)]
#[x_kube(
    validation = Rule::new("!has(self.reservedCIDRs) || self.reservedCIDRs.all(c, isCIDR(c) || isIP(c))")
        .message("every reservedCIDRs entry must be an IP address or a CIDR, e.g. 10.65.0.10 or 10.65.1.0/28")
        .reason(Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct IPReservationSpec {
    /// Addresses and CIDRs (IPv4 or IPv6) IPAM skips when it picks
    /// addresses itself.
    #[serde(
        rename = "reservedCIDRs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(length(max = 1000), inner(length(max = 64)))]
    pub reserved_cidrs: Vec<String>,
}

/// One `reservedCIDRs` entry: an address (a /32 or /128) or a CIDR, host
/// bits ignored as Calico does.
pub fn parse_reserved(entry: &str) -> Option<IpNetwork> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(IpNetwork::from(ip));
    }
    let net: IpNetwork = entry.parse().ok()?;
    IpNetwork::new(net.network(), net.prefix()).ok()
}

impl IPReservation {
    /// The valid entries, parsed (invalid ones are left out: see
    /// [`IPReservation::validate`]).
    pub fn cidrs(&self) -> Vec<IpNetwork> {
        self.spec
            .reserved_cidrs
            .iter()
            .filter_map(|e| parse_reserved(e))
            .collect()
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Collector::default();
        for (i, entry) in self.spec.reserved_cidrs.iter().enumerate() {
            if parse_reserved(entry).is_none() {
                c.error_hint(
                    format!("spec.reservedCIDRs[{i}]"),
                    format!("{entry:?} is neither an IP address nor a CIDR"),
                    "write an address (10.65.0.10, fd00::a) or a CIDR (10.65.1.0/28)",
                );
            }
        }
        c.finish(describe("IPReservation", &self.metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reservation(cidrs: &[&str]) -> IPReservation {
        serde_json::from_value(json!({
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "IPReservation",
            "metadata": {"name": "r"},
            "spec": {"reservedCIDRs": cidrs},
        }))
        .unwrap()
    }

    #[test]
    fn addresses_and_cidrs_parse_and_bad_entries_are_named() {
        let r = reservation(&["10.65.0.10", "10.65.1.7/28", "fd00::a", "fd00:1::/120"]);
        r.validate().unwrap();
        assert_eq!(
            r.cidrs(),
            [
                "10.65.0.10/32",
                "10.65.1.0/28",
                "fd00::a/128",
                "fd00:1::/120"
            ]
            .map(|s| s.parse::<IpNetwork>().unwrap())
        );
        let bad = reservation(&["10.65.0.10", "10.65.0.300", "nope/24"]);
        let e = bad.validate().unwrap_err();
        assert_eq!(e.len(), 2, "{e}");
        assert!(e.has_field("spec.reservedCIDRs[1]"), "{e}");
        assert!(e.has_field("spec.reservedCIDRs[2]"), "{e}");
        assert_eq!(bad.cidrs().len(), 1);
    }

    #[test]
    fn round_trips_in_calicos_field_names() {
        let r = reservation(&["10.65.0.10"]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["spec"], json!({"reservedCIDRs": ["10.65.0.10"]}));
    }
}
