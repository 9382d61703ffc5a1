//! Calico's Node resource (`projectcalico.org/v3`, kind `Node`): a node's BGP
//! identity (address with subnet, AS number, tunnel address, route
//! reflector cluster ID) plus its labels, which pool and peer selectors
//! match.
//!
//! It is not a CRD: with the etcd datastore Calico stores it as a resource
//! of its own, and with the Kubernetes datastore it lives in annotations on
//! the Kubernetes Node ([`annotations`], [`Node::from_k8s_node`]). So it is
//! left out of `deploy/crds.yaml`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::asn;
use crate::validate::{Collector, ValidationErrors, describe};

/// A node's BGP settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeBgpSpec {
    /// The node's AS number; unset means the cluster's (BGPConfiguration).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "asn::option")]
    #[schemars(schema_with = "asn::schema")]
    pub as_number: Option<u32>,
    /// The node's IPv4 address with its subnet, e.g. 10.0.0.1/24; the
    /// subnet decides which peers are "cross-subnet".
    #[serde(
        rename = "ipv4Address",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<String>,
    /// The node's IPv6 address with its subnet.
    #[serde(
        rename = "ipv6Address",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address: Option<String>,
    /// The address of the node's IPIP tunnel device (from an IPAM pool).
    #[serde(
        rename = "ipv4IPIPTunnelAddr",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_ipip_tunnel_addr: Option<String>,
    /// Set on route reflectors: their cluster ID (an IPv4 address).
    #[serde(
        rename = "routeReflectorClusterID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub route_reflector_cluster_id: Option<String>,
}

/// Correlates the Calico node with the orchestrator's node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OrchRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    pub orchestrator: String,
}

/// WireGuard interface addresses.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeWireguardSpec {
    #[serde(
        rename = "interfaceIPv4Address",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_ipv4_address: Option<String>,
    #[serde(
        rename = "interfaceIPv6Address",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_ipv6_address: Option<String>,
}

/// One address the node can be reached at.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeAddress {
    pub address: String,
    /// e.g. InternalIP, ExternalIP, CalicoNodeIP.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub address_type: Option<String>,
}

/// One interface of the node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInterface {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<String>>,
}

/// Node state Calico reports.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_public_key: Option<String>,
    #[serde(
        rename = "wireguardPublicKeyV6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_public_key_v6: Option<String>,
    /// The Kubernetes node's pod CIDRs.
    #[serde(rename = "podCIDRs", default, skip_serializing_if = "Option::is_none")]
    pub pod_cidrs: Option<Vec<String>>,
}

/// A Calico node.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "Node",
    plural = "nodes",
    singular = "node",
    status = "NodeStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Calico node: its BGP identity and tunnel addresses."
)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// BGP settings; unset for policy-only nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    #[serde(
        rename = "ipv4VXLANTunnelAddr",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<String>,
    #[serde(
        rename = "vxlanTunnelMACAddr",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<String>,
    #[serde(
        rename = "ipv6VXLANTunnelAddr",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_vxlan_tunnel_addr: Option<String>,
    #[serde(
        rename = "vxlanTunnelMACAddrV6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr_v6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orch_refs: Option<Vec<OrchRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<NodeWireguardSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<NodeAddress>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<NodeInterface>>,
}

/// The Kubernetes Node annotations that carry Calico's Node fields in
/// Kubernetes-datastore mode.
pub mod annotations {
    pub const IPV4_ADDRESS: &str = "projectcalico.org/IPv4Address";
    pub const IPV6_ADDRESS: &str = "projectcalico.org/IPv6Address";
    pub const AS_NUMBER: &str = "projectcalico.org/ASNumber";
    pub const IPV4_IPIP_TUNNEL_ADDR: &str = "projectcalico.org/IPv4IPIPTunnelAddr";
    pub const ROUTE_REFLECTOR_CLUSTER_ID: &str = "projectcalico.org/RouteReflectorClusterID";
    pub const IPV4_VXLAN_TUNNEL_ADDR: &str = "projectcalico.org/IPv4VXLANTunnelAddr";
    pub const IPV6_VXLAN_TUNNEL_ADDR: &str = "projectcalico.org/IPv6VXLANTunnelAddr";
    pub const VXLAN_TUNNEL_MAC_ADDR: &str = "projectcalico.org/VXLANTunnelMACAddr";
    pub const VXLAN_TUNNEL_MAC_ADDR_V6: &str = "projectcalico.org/VXLANTunnelMACAddrV6";
}

/// Parses "address/prefix" keeping the host address (not masked).
fn parse_addr_with_subnet(s: &str) -> Option<IpNetwork> {
    if !s.contains('/') {
        return None;
    }
    s.parse().ok()
}

impl Node {
    /// The node name, or "" when unset.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// The node's labels (empty when it has none); what selectors match.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    /// The BGP IPv4 address with its subnet, e.g. 10.0.0.1/24: `.ip()` is
    /// the node's address, `.network()` its subnet.
    pub fn bgp_ipv4(&self) -> Option<Ipv4Network> {
        match parse_addr_with_subnet(self.spec.bgp.as_ref()?.ipv4_address.as_deref()?)? {
            IpNetwork::V4(n) => Some(n),
            IpNetwork::V6(_) => None,
        }
    }

    /// The BGP IPv6 address with its subnet.
    pub fn bgp_ipv6(&self) -> Option<Ipv6Network> {
        match parse_addr_with_subnet(self.spec.bgp.as_ref()?.ipv6_address.as_deref()?)? {
            IpNetwork::V6(n) => Some(n),
            IpNetwork::V4(_) => None,
        }
    }

    /// The node's own AS number, if it overrides the cluster's.
    pub fn asn(&self) -> Option<u32> {
        self.spec.bgp.as_ref()?.as_number
    }

    /// The node's AS number, or `cluster_default` (BGPConfiguration's).
    pub fn asn_or(&self, cluster_default: u32) -> u32 {
        self.asn().unwrap_or(cluster_default)
    }

    pub fn ipip_tunnel_addr(&self) -> Option<Ipv4Addr> {
        self.spec
            .bgp
            .as_ref()?
            .ipv4_ipip_tunnel_addr
            .as_deref()?
            .parse()
            .ok()
    }

    /// Set when this node is a route reflector.
    pub fn route_reflector_cluster_id(&self) -> Option<Ipv4Addr> {
        self.spec
            .bgp
            .as_ref()?
            .route_reflector_cluster_id
            .as_deref()
            .filter(|s| !s.is_empty())?
            .parse()
            .ok()
    }

    pub fn vxlan_tunnel_addr_v4(&self) -> Option<Ipv4Addr> {
        self.spec.ipv4_vxlan_tunnel_addr.as_deref()?.parse().ok()
    }

    pub fn vxlan_tunnel_addr_v6(&self) -> Option<Ipv6Addr> {
        self.spec.ipv6_vxlan_tunnel_addr.as_deref()?.parse().ok()
    }

    /// The IPv4 VTEP's MAC (`spec.vxlanTunnelMACAddr`), if it parses.
    pub fn vxlan_tunnel_mac(&self) -> Option<[u8; 6]> {
        parse_mac(self.spec.vxlan_tunnel_mac_addr.as_deref()?)
    }

    /// The IPv6 VTEP's MAC (`spec.vxlanTunnelMACAddrV6`), if it parses.
    pub fn vxlan_tunnel_mac_v6(&self) -> Option<[u8; 6]> {
        parse_mac(self.spec.vxlan_tunnel_mac_addr_v6.as_deref()?)
    }

    /// True when `addr` is in this node's BGP IPv4 or IPv6 subnet — the
    /// "same subnet" test behind CrossSubnet encapsulation.
    pub fn same_subnet(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.bgp_ipv4().is_some_and(|n| n.contains(a)),
            IpAddr::V6(a) => self.bgp_ipv6().is_some_and(|n| n.contains(a)),
        }
    }

    /// Builds the Calico node from a Kubernetes Node's name, labels and
    /// annotations (Kubernetes-datastore mode). Annotations are taken as they
    /// are; run [`Node::validate`] to check them.
    pub fn from_k8s_node(
        name: &str,
        labels: &BTreeMap<String, String>,
        node_annotations: &BTreeMap<String, String>,
    ) -> Node {
        let get = |k: &str| node_annotations.get(k).filter(|v| !v.is_empty()).cloned();
        let bgp = NodeBgpSpec {
            as_number: get(annotations::AS_NUMBER).and_then(|s| asn::parse(&s).ok()),
            ipv4_address: get(annotations::IPV4_ADDRESS),
            ipv6_address: get(annotations::IPV6_ADDRESS),
            ipv4_ipip_tunnel_addr: get(annotations::IPV4_IPIP_TUNNEL_ADDR),
            route_reflector_cluster_id: get(annotations::ROUTE_REFLECTOR_CLUSTER_ID),
        };
        let mut node = Node::new(
            name,
            NodeSpec {
                bgp: (bgp != NodeBgpSpec::default()).then_some(bgp),
                ipv4_vxlan_tunnel_addr: get(annotations::IPV4_VXLAN_TUNNEL_ADDR),
                ipv6_vxlan_tunnel_addr: get(annotations::IPV6_VXLAN_TUNNEL_ADDR),
                vxlan_tunnel_mac_addr: get(annotations::VXLAN_TUNNEL_MAC_ADDR),
                vxlan_tunnel_mac_addr_v6: get(annotations::VXLAN_TUNNEL_MAC_ADDR_V6),
                ..Default::default()
            },
        );
        if !labels.is_empty() {
            node.metadata.labels = Some(labels.clone());
        }
        node
    }

    /// The Kubernetes Node annotations that carry this node's Calico fields
    /// (the inverse of [`Node::from_k8s_node`]).
    pub fn to_k8s_annotations(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                out.insert(k.to_string(), v);
            }
        };
        if let Some(bgp) = &self.spec.bgp {
            put(annotations::IPV4_ADDRESS, bgp.ipv4_address.clone());
            put(annotations::IPV6_ADDRESS, bgp.ipv6_address.clone());
            put(annotations::AS_NUMBER, bgp.as_number.map(|n| n.to_string()));
            put(
                annotations::IPV4_IPIP_TUNNEL_ADDR,
                bgp.ipv4_ipip_tunnel_addr.clone(),
            );
            put(
                annotations::ROUTE_REFLECTOR_CLUSTER_ID,
                bgp.route_reflector_cluster_id.clone(),
            );
        }
        put(
            annotations::IPV4_VXLAN_TUNNEL_ADDR,
            self.spec.ipv4_vxlan_tunnel_addr.clone(),
        );
        put(
            annotations::IPV6_VXLAN_TUNNEL_ADDR,
            self.spec.ipv6_vxlan_tunnel_addr.clone(),
        );
        put(
            annotations::VXLAN_TUNNEL_MAC_ADDR,
            self.spec.vxlan_tunnel_mac_addr.clone(),
        );
        put(
            annotations::VXLAN_TUNNEL_MAC_ADDR_V6,
            self.spec.vxlan_tunnel_mac_addr_v6.clone(),
        );
        out
    }

    /// Checks the node's addresses the way Calico does.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Collector::default();
        if let Some(bgp) = &self.spec.bgp {
            if *bgp == NodeBgpSpec::default() {
                c.error_hint(
                    "spec.bgp",
                    "is present but empty",
                    "remove it, or set ipv4Address",
                );
            }
            check_addr_with_subnet(
                &mut c,
                "spec.bgp.ipv4Address",
                bgp.ipv4_address.as_deref(),
                true,
            );
            check_addr_with_subnet(
                &mut c,
                "spec.bgp.ipv6Address",
                bgp.ipv6_address.as_deref(),
                false,
            );
            check_plain_addr(
                &mut c,
                "spec.bgp.ipv4IPIPTunnelAddr",
                bgp.ipv4_ipip_tunnel_addr.as_deref(),
                true,
            );
            check_plain_addr(
                &mut c,
                "spec.bgp.routeReflectorClusterID",
                bgp.route_reflector_cluster_id.as_deref(),
                true,
            );
            if bgp.as_number == Some(0) {
                c.error_hint(
                    "spec.bgp.asNumber",
                    "0 is not a valid AS number (reserved by RFC 7607)",
                    "omit asNumber to use the cluster's, or use 1–4294967295",
                );
            }
        }
        check_plain_addr(
            &mut c,
            "spec.ipv4VXLANTunnelAddr",
            self.spec.ipv4_vxlan_tunnel_addr.as_deref(),
            true,
        );
        check_plain_addr(
            &mut c,
            "spec.ipv6VXLANTunnelAddr",
            self.spec.ipv6_vxlan_tunnel_addr.as_deref(),
            false,
        );
        check_mac(
            &mut c,
            "spec.vxlanTunnelMACAddr",
            self.spec.vxlan_tunnel_mac_addr.as_deref(),
        );
        check_mac(
            &mut c,
            "spec.vxlanTunnelMACAddrV6",
            self.spec.vxlan_tunnel_mac_addr_v6.as_deref(),
        );
        c.finish(describe("Node", &self.metadata))
    }
}

fn family(v4: bool) -> &'static str {
    if v4 { "IPv4" } else { "IPv6" }
}

fn check_addr_with_subnet(c: &mut Collector, field: &str, value: Option<&str>, v4: bool) {
    let Some(text) = value.filter(|s| !s.is_empty()) else {
        return;
    };
    let example = if v4 { "10.0.0.1/24" } else { "fd00::1/64" };
    match parse_addr_with_subnet(text) {
        Some(n) if n.is_ipv4() == v4 => {}
        Some(_) => c.error(field, format!("{text:?} is not an {} address", family(v4))),
        None if text.parse::<IpAddr>().is_ok() => c.error_hint(
            field,
            format!("{text:?} has no subnet"),
            format!("write the address with its subnet's prefix length, e.g. {example}"),
        ),
        None => c.error_hint(
            field,
            format!("{text:?} is not an {} address with subnet", family(v4)),
            format!("e.g. {example}"),
        ),
    }
}

fn check_plain_addr(c: &mut Collector, field: &str, value: Option<&str>, v4: bool) {
    let Some(text) = value.filter(|s| !s.is_empty()) else {
        return;
    };
    let ok = match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => v4,
        Ok(IpAddr::V6(_)) => !v4,
        Err(_) => false,
    };
    if !ok {
        c.error(field, format!("{text:?} is not an {} address", family(v4)));
    }
}

fn check_mac(c: &mut Collector, field: &str, value: Option<&str>) {
    let Some(text) = value.filter(|s| !s.is_empty()) else {
        return;
    };
    let parts: Vec<&str> = text.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        c.error_hint(
            field,
            format!("{text:?} is not a MAC address"),
            "e.g. 66:1e:6b:7a:a2:0f",
        );
    }
}

/// `aa:bb:cc:dd:ee:ff` (either case), as Calico stores a VTEP's MAC.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The inverse of [`parse_mac`], lower case.
pub fn format_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}
