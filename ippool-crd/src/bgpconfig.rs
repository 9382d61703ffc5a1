//! BGPConfiguration: cluster-wide BGP settings (the object named `default`)
//! and per-node overrides (objects named `node.<name>`).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnetwork::IpNetwork;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use proto::community::{CommunityError, parse_community};

use crate::bgppeer::BGPPassword;
use crate::serde_util::empty_as_none;
use crate::validate::{Collector, ValidationErrors, describe};
use crate::{asn, defaults, duration};

// Enums that appear in `Option<...>` fields carry rustdoc-only docs
// (`cfg_attr(doc, ...)`): schemars would otherwise copy the enum's
// description over the field's own in the generated CRD.
#[cfg_attr(doc, doc = "Which addresses BIRD listens on.")]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BindMode {
    #[cfg_attr(doc, doc = "All addresses.")]
    #[default]
    None,
    #[cfg_attr(doc, doc = "Only the node's BGP address.")]
    NodeIP,
}

#[cfg_attr(
    doc,
    doc = "Whether LoadBalancer service ranges are advertised whole or per address."
)]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ServiceLoadBalancerAggregation {
    #[default]
    Enabled,
    Disabled,
}

#[cfg_attr(
    doc,
    doc = "Which pools' routes to other nodes' blocks BIRD (rather than felix)"
)]
#[cfg_attr(doc, doc = "programs into the kernel.")]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProgramClusterRoutes {
    Enabled,
    Disabled,
    #[serde(rename = "EnabledIPIPOnly")]
    EnabledIpipOnly,
    #[default]
    EnabledNoEncapOnly,
}

/// One service address range to advertise.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceIPBlock {
    #[schemars(extend("format" = "cidr"))]
    pub cidr: String,
}

/// A named BGP community value.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct Community {
    #[schemars(length(max = 253))]
    pub name: String,
    /// `aa:nn` (standard, 16-bit parts) or `aa:nn:mm` (large, 32-bit parts).
    #[schemars(
        length(max = 40),
        regex(pattern = r"^(\d+):(\d+)$|^(\d+):(\d+):(\d+)$")
    )]
    pub value: String,
}

/// Communities to attach when advertising one prefix.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixAdvertisement {
    #[schemars(extend("format" = "cidr"))]
    pub cidr: String,
    /// Community names from `communities`, or literal `aa:nn` / `aa:nn:mm`.
    #[serde(default)]
    #[schemars(length(max = 50))]
    pub communities: Vec<String>,
}

/// Cluster or per-node BGP settings.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "BGPConfiguration",
    plural = "bgpconfigurations",
    singular = "bgpconfiguration",
    derive = "PartialEq",
    derive = "Default",
    doc = "BGP settings for the whole cluster (name default) or one node (name node.<node>)."
)]
#[x_kube(
    validation = Rule::new("!has(self.nodeMeshPassword) || !has(self.nodeToNodeMeshEnabled) || self.nodeToNodeMeshEnabled")
        .message("nodeMeshPassword requires the node-to-node mesh (nodeToNodeMeshEnabled)").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.nodeMeshMaxRestartTime) || !has(self.nodeToNodeMeshEnabled) || self.nodeToNodeMeshEnabled")
        .message("nodeMeshMaxRestartTime requires the node-to-node mesh (nodeToNodeMeshEnabled)").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.communities) || size(self.communities) == 0 || (has(self.prefixAdvertisements) && size(self.prefixAdvertisements) > 0)")
        .message("communities are defined but no prefixAdvertisements use them").reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.nodeMeshBFD) || !has(self.nodeMeshBFD.authentication) || (has(self.nodeMeshBFD.authentication.type) && has(self.nodeMeshBFD.authentication.keyID) && has(self.nodeMeshBFD.authentication.secretKeyRef))")
        .message("nodeMeshBFD.authentication needs type, keyID and secretKeyRef").reason(Reason::FieldValueRequired),
)]
#[serde(rename_all = "camelCase")]
pub struct BGPConfigurationSpec {
    /// BIRD's log level: Trace, Debug, Info (default), Warning, Error, Fatal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(?i)(Trace|Debug|Info|Warning|Error|Fatal)?$"))]
    pub log_severity_screen: Option<String>,

    /// Full mesh between all nodes. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,

    /// The cluster's AS number. Default 64512.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "asn::option")]
    #[schemars(schema_with = "asn::schema")]
    pub as_number: Option<u32>,

    /// LoadBalancer service ranges to advertise.
    #[serde(
        rename = "serviceLoadBalancerIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub service_load_balancer_ips: Option<Vec<ServiceIPBlock>>,

    /// Service external IP ranges to advertise.
    #[serde(
        rename = "serviceExternalIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub service_external_ips: Option<Vec<ServiceIPBlock>>,

    /// Service cluster IP ranges to advertise.
    #[serde(
        rename = "serviceClusterIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub service_cluster_ips: Option<Vec<ServiceIPBlock>>,

    /// Default Enabled.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub service_load_balancer_aggregation: Option<ServiceLoadBalancerAggregation>,

    /// Named community values for prefixAdvertisements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500), extend("x-kubernetes-list-type" = "atomic"))]
    pub communities: Option<Vec<Community>>,

    /// Per-prefix advertisement settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500), extend("x-kubernetes-list-type" = "atomic"))]
    pub prefix_advertisements: Option<Vec<PrefixAdvertisement>>,

    /// The BGP port. Default 179.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub listen_port: Option<i32>,

    /// Password for the node-to-node mesh sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<BGPPassword>,

    /// Graceful-restart time for mesh sessions (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<String>,

    /// calico-rs extension: BFD on the node-to-node mesh sessions (see
    /// BGPPeer's `bfd`). Absent: no BFD on the mesh.
    #[serde(
        rename = "nodeMeshBFD",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub node_mesh_bfd: Option<crate::bgppeer::BFDSpec>,

    /// Default None (listen on all addresses).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub bind_mode: Option<BindMode>,

    /// Interfaces (`*` wildcards allowed) whose routes are not exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub ignored_interfaces: Option<Vec<String>>,

    /// Virtual IPv4 address local workloads peer with.
    #[serde(
        rename = "localWorkloadPeeringIPV4",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub local_workload_peering_ipv4: Option<String>,

    /// Virtual IPv6 address local workloads peer with.
    #[serde(
        rename = "localWorkloadPeeringIPV6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub local_workload_peering_ipv6: Option<String>,

    /// Default EnabledNoEncapOnly.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub program_cluster_routes: Option<ProgramClusterRoutes>,

    /// Metric felix uses for IPv4 workload routes. Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483646))]
    pub ipv4_normal_route_priority: Option<i32>,

    /// Metric felix uses for IPv6 workload routes. Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483646))]
    pub ipv6_normal_route_priority: Option<i32>,
}

const LOG_LEVELS: [&str; 6] = ["Trace", "Debug", "Info", "Warning", "Error", "Fatal"];

impl BGPConfigurationSpec {
    pub fn as_number(&self) -> u32 {
        self.as_number.unwrap_or(defaults::AS_NUMBER)
    }

    pub fn node_to_node_mesh_enabled(&self) -> bool {
        self.node_to_node_mesh_enabled
            .unwrap_or(defaults::NODE_TO_NODE_MESH_ENABLED)
    }

    /// The listen port; unset, 0 or out of range (which validation rejects)
    /// give the default 179.
    pub fn listen_port(&self) -> u16 {
        self.listen_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(defaults::LISTEN_PORT)
    }

    pub fn log_severity_screen(&self) -> &str {
        match self.log_severity_screen.as_deref() {
            None | Some("") => defaults::LOG_SEVERITY_SCREEN,
            Some(s) => s,
        }
    }

    pub fn bind_mode(&self) -> BindMode {
        self.bind_mode.unwrap_or_default()
    }

    pub fn node_mesh_max_restart_time(&self) -> Option<Duration> {
        duration::parse(self.node_mesh_max_restart_time.as_deref()?).ok()
    }

    /// Parsed service cluster IP ranges (invalid entries skipped; validation
    /// reports them).
    pub fn service_cluster_ip_networks(&self) -> Vec<IpNetwork> {
        parse_blocks(self.service_cluster_ips.as_deref())
    }

    pub fn service_external_ip_networks(&self) -> Vec<IpNetwork> {
        parse_blocks(self.service_external_ips.as_deref())
    }

    pub fn service_load_balancer_ip_networks(&self) -> Vec<IpNetwork> {
        parse_blocks(self.service_load_balancer_ips.as_deref())
    }

    /// Fills the fields Calico defaults: logSeverityScreen Info, mesh on,
    /// AS 64512, listenPort 179.
    pub fn apply_defaults(&mut self) {
        if self
            .log_severity_screen
            .as_deref()
            .is_none_or(str::is_empty)
        {
            self.log_severity_screen = Some(defaults::LOG_SEVERITY_SCREEN.to_string());
        }
        self.node_to_node_mesh_enabled
            .get_or_insert(defaults::NODE_TO_NODE_MESH_ENABLED);
        self.as_number.get_or_insert(defaults::AS_NUMBER);
        if matches!(self.listen_port, None | Some(0)) {
            self.listen_port = Some(i32::from(defaults::LISTEN_PORT));
        }
    }

    pub fn with_defaults(&self) -> Self {
        let mut s = self.clone();
        s.apply_defaults();
        s
    }
}

fn parse_blocks(blocks: Option<&[ServiceIPBlock]>) -> Vec<IpNetwork> {
    blocks
        .unwrap_or_default()
        .iter()
        .filter_map(|b| parse_cidr_or_ip(&b.cidr))
        .collect()
}

/// A CIDR, or a bare address taken as a /32 or /128 (Calico accepts both here).
fn parse_cidr_or_ip(s: &str) -> Option<IpNetwork> {
    s.parse().ok()
}

impl BGPConfiguration {
    /// A copy with Calico's defaults filled in.
    pub fn with_defaults(&self) -> BGPConfiguration {
        let mut c = self.clone();
        c.spec.apply_defaults();
        c
    }

    /// Checks every rule Calico applies to a BGPConfiguration.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let s = &self.spec;
        let mut c = Collector::default();

        if let Some(level) = s.log_severity_screen.as_deref()
            && !level.is_empty()
            && !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level))
        {
            c.error_hint(
                "spec.logSeverityScreen",
                format!("{level:?} is not a log level"),
                "use one of Trace, Debug, Info, Warning, Error, Fatal",
            );
        }
        if s.as_number == Some(0) {
            c.error_hint(
                "spec.asNumber",
                "0 is not a valid AS number (reserved by RFC 7607)",
                "use 1–4294967295, or omit asNumber for the default 64512",
            );
        }
        if let Some(p) = s.listen_port
            && !(1..=65535).contains(&p)
        {
            c.error_hint(
                "spec.listenPort",
                format!("{p} is out of range; ports are 1–65535"),
                "omit listenPort to use the BGP port 179",
            );
        }
        for (field, blocks) in [
            ("spec.serviceClusterIPs", &s.service_cluster_ips),
            ("spec.serviceExternalIPs", &s.service_external_ips),
            ("spec.serviceLoadBalancerIPs", &s.service_load_balancer_ips),
        ] {
            for (i, b) in blocks.iter().flatten().enumerate() {
                if parse_cidr_or_ip(&b.cidr).is_none() {
                    c.error_hint(
                        format!("{field}[{i}].cidr"),
                        format!("{:?} is not a valid CIDR", b.cidr),
                        "write it as <address>/<prefix length>, e.g. 10.96.0.0/12",
                    );
                }
            }
        }

        let communities = s.communities.as_deref().unwrap_or_default();
        for (i, com) in communities.iter().enumerate() {
            if com.name.is_empty() {
                c.error(format!("spec.communities[{i}].name"), "is required");
            }
            if let Err(msg) = check_community_value(&com.value) {
                c.error_hint(
                    format!("spec.communities[{i}].value"),
                    msg.to_string(),
                    COMMUNITY_HINT,
                );
            }
        }
        let adverts = s.prefix_advertisements.as_deref().unwrap_or_default();
        if !communities.is_empty() && adverts.is_empty() {
            c.error_hint(
                "spec.communities",
                "communities are defined but no prefixAdvertisements use them",
                "add prefixAdvertisements that reference the communities by name, or remove them",
            );
        }
        for (i, adv) in adverts.iter().enumerate() {
            if parse_cidr_or_ip(&adv.cidr).is_none() {
                c.error(
                    format!("spec.prefixAdvertisements[{i}].cidr"),
                    format!("{:?} is not a valid CIDR", adv.cidr),
                );
            }
            for (j, v) in adv.communities.iter().enumerate() {
                let named = communities.iter().any(|com| &com.name == v);
                if !named && check_community_value(v).is_err() {
                    c.error_hint(
                        format!("spec.prefixAdvertisements[{i}].communities[{j}]"),
                        format!("{v:?} is neither a community defined in spec.communities nor a community value"),
                        COMMUNITY_HINT,
                    );
                }
            }
        }

        let mesh_on = s.node_to_node_mesh_enabled();
        if let Some(b) = &s.node_mesh_bfd {
            b.check("spec.nodeMeshBFD", &mut c);
        }
        if s.node_mesh_password.is_some() && !mesh_on {
            c.error(
                "spec.nodeMeshPassword",
                "is only used by the node-to-node mesh, which is disabled",
            );
        }
        if let Some(t) = &s.node_mesh_max_restart_time {
            if !mesh_on {
                c.error(
                    "spec.nodeMeshMaxRestartTime",
                    "is only used by the node-to-node mesh, which is disabled",
                );
            }
            if let Err(e) = duration::parse(t) {
                c.error("spec.nodeMeshMaxRestartTime", e.to_string());
            }
        }
        for (i, name) in s.ignored_interfaces.iter().flatten().enumerate() {
            let ok = name != "*"
                && (1..=15).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'*' | b'-'));
            if !ok {
                c.error_hint(
                    format!("spec.ignoredInterfaces[{i}]"),
                    format!("{name:?} is not an interface name or pattern"),
                    "use 1–15 characters from [A-Za-z0-9_.-] with optional * wildcards (not * alone)",
                );
            }
        }
        if let Some(a) = &s.local_workload_peering_ipv4
            && a.parse::<Ipv4Addr>().is_err()
        {
            c.error(
                "spec.localWorkloadPeeringIPV4",
                format!("{a:?} is not an IPv4 address"),
            );
        }
        if let Some(a) = &s.local_workload_peering_ipv6
            && a.parse::<Ipv6Addr>().is_err()
        {
            c.error(
                "spec.localWorkloadPeeringIPV6",
                format!("{a:?} is not an IPv6 address"),
            );
        }
        for (field, p) in [
            ("spec.ipv4NormalRoutePriority", s.ipv4_normal_route_priority),
            ("spec.ipv6NormalRoutePriority", s.ipv6_normal_route_priority),
        ] {
            if let Some(p) = p
                && !(1..=2_147_483_646).contains(&p)
            {
                c.error(field, format!("{p} is out of range 1–2147483646"));
            }
        }

        c.finish(describe("BGPConfiguration", &self.metadata))
    }
}

const COMMUNITY_HINT: &str = "standard communities are aa:nn with 16-bit parts; large communities are aa:nn:mm with 32-bit parts";

/// Checks a community value: `aa:nn` with 16-bit parts or `aa:nn:mm` with
/// 32-bit parts.
pub fn check_community_value(v: &str) -> Result<(), CommunityError> {
    parse_community(v).map(|_| ())
}

/// One `prefixAdvertisements` entry with its community names resolved to
/// values: what bird attaches to advertised prefixes inside `cidr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPrefixAdvertisement {
    pub cidr: IpNetwork,
    /// In the order written, duplicates removed.
    pub communities: Vec<proto::community::Community>,
}

impl BGPConfigurationSpec {
    /// Resolves `prefixAdvertisements` against `communities` (and then
    /// `fallback`, the names of another configuration, e.g. the cluster's
    /// for a node's). Each entry either resolves whole or is left out with
    /// an error naming it and saying why: an unparsable CIDR, a name that
    /// is neither defined nor a community value, or a defined name whose
    /// value is invalid. One bad entry never drops the others.
    pub fn resolve_prefix_advertisements(
        &self,
        fallback: &[Community],
    ) -> (Vec<ResolvedPrefixAdvertisement>, Vec<String>) {
        let named = self.communities.as_deref().unwrap_or_default();
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        for (i, adv) in self
            .prefix_advertisements
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let at = format!("spec.prefixAdvertisements[{i}]");
            let Some(cidr) = parse_cidr_or_ip(&adv.cidr) else {
                errors.push(format!(
                    "{at}.cidr: {:?} is not a valid CIDR (write it as <address>/<prefix length>)",
                    adv.cidr
                ));
                continue;
            };
            let mut communities = Vec::new();
            let mut bad = None;
            for (j, v) in adv.communities.iter().enumerate() {
                let def = named
                    .iter()
                    .chain(fallback)
                    .find(|c| &c.name == v && !c.name.is_empty());
                let parsed = match def {
                    Some(def) => parse_community(&def.value).map_err(|e| {
                        format!(
                            "{at}.communities[{j}] ({cidr}): the community named {v:?} has an invalid value: {e}; fix its spec.communities entry"
                        )
                    }),
                    None => parse_community(v).map_err(|_| {
                        format!(
                            "{at}.communities[{j}] ({cidr}): {v:?} is neither a community defined in spec.communities nor a community value; {COMMUNITY_HINT}"
                        )
                    }),
                };
                match parsed {
                    Ok(c) if !communities.contains(&c) => communities.push(c),
                    Ok(_) => {}
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
            match bad {
                Some(e) => errors.push(e),
                None => ok.push(ResolvedPrefixAdvertisement { cidr, communities }),
            }
        }
        (ok, errors)
    }
}

#[cfg(test)]
mod resolve_tests {
    use super::*;
    use proto::community::Community as C;

    fn spec(communities: &[(&str, &str)], adverts: &[(&str, &[&str])]) -> BGPConfigurationSpec {
        BGPConfigurationSpec {
            communities: Some(
                communities
                    .iter()
                    .map(|(n, v)| Community {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
            ),
            prefix_advertisements: Some(
                adverts
                    .iter()
                    .map(|(cidr, cs)| PrefixAdvertisement {
                        cidr: cidr.to_string(),
                        communities: cs.iter().map(|c| c.to_string()).collect(),
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn names_and_literal_values_resolve_standard_and_large() {
        let s = spec(
            &[("gold", "65000:100"), ("big", "4200000000:7:8")],
            &[("10.65.0.0/16", &["gold", "big", "65001:5", "1:2:3", "gold"])],
        );
        let (ok, errors) = s.resolve_prefix_advertisements(&[]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            ok,
            vec![ResolvedPrefixAdvertisement {
                cidr: "10.65.0.0/16".parse().unwrap(),
                communities: vec![
                    C::Standard((65000 << 16) | 100),
                    C::Large([4_200_000_000, 7, 8]),
                    C::Standard((65001 << 16) | 5),
                    C::Large([1, 2, 3]),
                ],
            }]
        );
    }

    #[test]
    fn a_bad_entry_is_left_out_with_its_error_and_the_others_stay() {
        let s = spec(
            &[("gold", "65000:100"), ("broken", "70000:1")],
            &[
                ("10.65.0.0/16", &["gold"]),
                ("10.66.0.0/16", &["no-such-name"]),
                ("10.67.0.0/16", &["broken"]),
                ("not-a-cidr", &["gold"]),
                ("fd65::/48", &["65000:1:2"]),
            ],
        );
        let (ok, errors) = s.resolve_prefix_advertisements(&[]);
        let cidrs: Vec<String> = ok.iter().map(|a| a.cidr.to_string()).collect();
        assert_eq!(cidrs, ["10.65.0.0/16", "fd65::/48"]);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("spec.prefixAdvertisements[1].communities[0] (10.66.0.0/16)")
                && errors[0].contains("\"no-such-name\" is neither a community defined"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].contains("named \"broken\" has an invalid value")
                && errors[1].contains("16 bits"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].starts_with("spec.prefixAdvertisements[3].cidr"),
            "{}",
            errors[2]
        );
    }

    #[test]
    fn names_fall_back_to_the_other_configuration() {
        let node = spec(&[], &[("10.65.0.0/16", &["gold"])]);
        let global = [Community {
            name: "gold".into(),
            value: "65000:100".into(),
        }];
        let (ok, errors) = node.resolve_prefix_advertisements(&global);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ok[0].communities, vec![C::Standard((65000 << 16) | 100)]);
        // Without the fallback the name is unknown.
        let (ok, errors) = node.resolve_prefix_advertisements(&[]);
        assert!(ok.is_empty());
        assert_eq!(errors.len(), 1);
    }
}
