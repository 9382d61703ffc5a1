//! The success result of ADD (and the prevResult of CHECK/DEL), shaped for
//! the spec version the configuration asked for.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{Value, json};

use crate::spec::ips_have_version;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    /// The pod's namespace path for interfaces inside the pod.
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
}

/// What an ADD made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<RouteEntry>,
}

impl AddResult {
    pub fn to_json(&self, cni_version: &str) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut v = json!({ "name": i.name });
                if let Some(m) = &i.mac {
                    v["mac"] = json!(m);
                }
                if let Some(s) = &i.sandbox {
                    v["sandbox"] = json!(s);
                }
                v
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = json!({ "address": ip.address.to_string() });
                if ips_have_version(cni_version) {
                    v["version"] = json!(if ip.address.is_ipv4() { "4" } else { "6" });
                }
                if let Some(g) = ip.gateway {
                    v["gateway"] = json!(g.to_string());
                }
                if let Some(i) = ip.interface {
                    v["interface"] = json!(i);
                }
                v
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut v = json!({ "dst": r.dst.to_string() });
                if let Some(g) = r.gw {
                    v["gw"] = json!(g.to_string());
                }
                v
            })
            .collect();
        json!({
            "cniVersion": cni_version,
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": {},
        })
    }
}

/// The VERSION answer.
pub fn version_json() -> Value {
    json!({
        "cniVersion": crate::spec::OUR_VERSION,
        "supportedVersions": crate::spec::SUPPORTED_VERSIONS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: "cali1a2b3c4d5e6".into(),
                    mac: Some("ee:ee:ee:ee:ee:ee".into()),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:0a:41:00:05".into()),
                    sandbox: Some("/var/run/netns/cni-1".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.65.0.5/32".parse().unwrap(),
                gateway: None,
                interface: Some(1),
            }],
            routes: vec![],
        }
    }

    #[test]
    fn v1_result_has_no_ip_version_field() {
        let v = sample().to_json("1.0.0");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(
            v["ips"][0],
            json!({"address": "10.65.0.5/32", "interface": 1})
        );
        assert_eq!(v["interfaces"][1]["sandbox"], "/var/run/netns/cni-1");
    }

    #[test]
    fn pre_1_0_results_carry_the_ip_version() {
        let v = sample().to_json("0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
    }

    #[test]
    fn version_lists_what_we_support() {
        let v = version_json();
        assert!(
            v["supportedVersions"]
                .as_array()
                .unwrap()
                .contains(&json!("0.3.1"))
        );
    }
}
