//! The resource kinds calicoctl handles, the names it accepts for them on
//! the command line (Calico's aliases, any case), and their table columns.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    IPPool,
    BGPPeer,
    BGPConfiguration,
    BGPFilter,
    Node,
    NetworkPolicy,
    GlobalNetworkPolicy,
    WorkloadEndpoint,
    IPReservation,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::IPPool,
        Kind::BGPPeer,
        Kind::BGPConfiguration,
        Kind::BGPFilter,
        Kind::Node,
        Kind::NetworkPolicy,
        Kind::GlobalNetworkPolicy,
        Kind::WorkloadEndpoint,
        Kind::IPReservation,
    ];

    /// The kind as the v3 API spells it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::IPPool => "IPPool",
            Kind::BGPPeer => "BGPPeer",
            Kind::BGPConfiguration => "BGPConfiguration",
            Kind::BGPFilter => "BGPFilter",
            Kind::Node => "Node",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            Kind::WorkloadEndpoint => "WorkloadEndpoint",
            Kind::IPReservation => "IPReservation",
        }
    }

    fn aliases(self) -> &'static [&'static str] {
        match self {
            Kind::IPPool => &["ippool", "ippools", "ipp", "ipps", "pool", "pools"],
            Kind::BGPPeer => &["bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"],
            Kind::BGPConfiguration => &[
                "bgpconfiguration",
                "bgpconfigurations",
                "bgpconfig",
                "bgpconfigs",
            ],
            Kind::BGPFilter => &["bgpfilter", "bgpfilters", "bgpf", "bgpfs"],
            Kind::Node => &["node", "nodes", "no", "nos"],
            Kind::NetworkPolicy => &["networkpolicy", "networkpolicies", "policy", "np", "pol"],
            Kind::GlobalNetworkPolicy => &[
                "globalnetworkpolicy",
                "globalnetworkpolicies",
                "gnp",
                "gnps",
            ],
            Kind::WorkloadEndpoint => &["workloadendpoint", "workloadendpoints", "wep", "weps"],
            Kind::IPReservation => &["ipreservation", "ipreservations", "ipr", "iprs"],
        }
    }

    pub fn parse(s: &str) -> Result<Kind, String> {
        let l = s.to_ascii_lowercase();
        // `ippool.projectcalico.org` as kubectl spells it works too.
        let l = l.split('.').next().unwrap_or_default();
        Kind::ALL
            .into_iter()
            .find(|k| k.aliases().contains(&l))
            .ok_or_else(|| {
                format!(
                    "resource type {s:?} is not supported; use one of: {}",
                    Kind::ALL
                        .iter()
                        .map(|k| k.aliases()[1])
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    pub fn namespaced(self) -> bool {
        matches!(self, Kind::NetworkPolicy | Kind::WorkloadEndpoint)
    }

    /// The table's columns (`-o ps`, the default, or `-o wide`).
    pub fn columns(self, wide: bool) -> Vec<Column> {
        use Column as C;
        match (self, wide) {
            (Kind::IPPool, false) => vec![C::Name, C::Cidr, C::Selector],
            (Kind::IPPool, true) => vec![
                C::Name,
                C::Cidr,
                C::Nat,
                C::IpipMode,
                C::VxlanMode,
                C::Disabled,
                C::DisableBgpExport,
                C::Selector,
            ],
            (Kind::BGPPeer, false) => vec![C::Name, C::PeerIp, C::PeerNode, C::PeerAsn],
            (Kind::BGPPeer, true) => {
                vec![C::Name, C::PeerIp, C::PeerNode, C::PeerAsn, C::PeerSelector]
            }
            (Kind::BGPConfiguration, _) => {
                vec![C::Name, C::LogSeverity, C::MeshEnabled, C::AsNumber]
            }
            (Kind::BGPFilter, _) => vec![C::Name],
            (Kind::Node, false) => vec![C::Name],
            (Kind::Node, true) => vec![C::Name, C::NodeAsn, C::NodeIpv4, C::NodeIpv6],
            (Kind::NetworkPolicy | Kind::GlobalNetworkPolicy, false) => vec![C::Name],
            (Kind::NetworkPolicy | Kind::GlobalNetworkPolicy, true) => {
                vec![C::Name, C::Order, C::Selector]
            }
            (Kind::WorkloadEndpoint, false) => {
                vec![C::Workload, C::WepNode, C::Networks, C::Interface]
            }
            (Kind::WorkloadEndpoint, true) => vec![
                C::Name,
                C::Workload,
                C::WepNode,
                C::Networks,
                C::Interface,
                C::Profiles,
            ],
            (Kind::IPReservation, _) => vec![C::Name, C::ReservedCidrs],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Namespace,
    Name,
    Cidr,
    Selector,
    Nat,
    IpipMode,
    VxlanMode,
    Disabled,
    DisableBgpExport,
    PeerIp,
    PeerNode,
    PeerAsn,
    PeerSelector,
    LogSeverity,
    MeshEnabled,
    AsNumber,
    NodeAsn,
    NodeIpv4,
    NodeIpv6,
    Order,
    Workload,
    WepNode,
    Networks,
    Interface,
    Profiles,
    ReservedCidrs,
}

fn text(v: &Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        // An order of 10 is stored as 10.0; show it as written.
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// A list of strings as one comma-separated cell.
fn joined(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn or(s: String, default: &str) -> String {
    if s.is_empty() { default.to_string() } else { s }
}

impl Column {
    pub fn heading(self) -> &'static str {
        match self {
            Column::Namespace => "NAMESPACE",
            Column::Name => "NAME",
            Column::Cidr => "CIDR",
            Column::Selector => "SELECTOR",
            Column::Nat => "NAT",
            Column::IpipMode => "IPIPMODE",
            Column::VxlanMode => "VXLANMODE",
            Column::Disabled => "DISABLED",
            Column::DisableBgpExport => "DISABLEBGPEXPORT",
            Column::PeerIp => "PEERIP",
            Column::PeerNode | Column::WepNode => "NODE",
            Column::PeerAsn => "ASN",
            Column::PeerSelector => "PEERSELECTOR",
            Column::LogSeverity => "LOGSEVERITY",
            Column::MeshEnabled => "MESHENABLED",
            Column::AsNumber => "ASNUMBER",
            Column::NodeAsn => "ASN",
            Column::NodeIpv4 => "IPV4",
            Column::NodeIpv6 => "IPV6",
            Column::Order => "ORDER",
            Column::Workload => "WORKLOAD",
            Column::Networks => "NETWORKS",
            Column::Interface => "INTERFACE",
            Column::Profiles => "PROFILES",
            Column::ReservedCidrs => "CIDRS",
        }
    }

    /// The cell for one object (its JSON, stored form); `global_asn` is
    /// what a node without its own AS number uses (shown in brackets, as
    /// calicoctl does).
    pub fn cell(self, v: &Value, global_asn: u32) -> String {
        match self {
            Column::Namespace => text(v, "/metadata/namespace"),
            Column::Name => text(v, "/metadata/name"),
            Column::Cidr => text(v, "/spec/cidr"),
            Column::Selector => or(
                text(v, "/spec/nodeSelector").replace('\n', " ")
                    + &text(v, "/spec/selector").replace('\n', " "),
                "all()",
            ),
            Column::Nat => or(text(v, "/spec/natOutgoing"), "false"),
            Column::IpipMode => or(text(v, "/spec/ipipMode"), "Never"),
            Column::VxlanMode => or(text(v, "/spec/vxlanMode"), "Never"),
            Column::Disabled => or(text(v, "/spec/disabled"), "false"),
            Column::DisableBgpExport => or(text(v, "/spec/disableBGPExport"), "false"),
            Column::PeerIp => text(v, "/spec/peerIP"),
            Column::PeerNode => or(
                text(v, "/spec/node") + &text(v, "/spec/nodeSelector"),
                "(global)",
            ),
            Column::PeerAsn => text(v, "/spec/asNumber"),
            Column::PeerSelector => text(v, "/spec/peerSelector"),
            Column::LogSeverity => text(v, "/spec/logSeverityScreen"),
            Column::MeshEnabled => text(v, "/spec/nodeToNodeMeshEnabled"),
            Column::AsNumber => text(v, "/spec/asNumber"),
            Column::NodeAsn => match v.pointer("/spec/bgp") {
                None | Some(Value::Null) => String::new(),
                Some(_) => or(text(v, "/spec/bgp/asNumber"), &format!("({global_asn})")),
            },
            Column::NodeIpv4 => text(v, "/spec/bgp/ipv4Address"),
            Column::NodeIpv6 => text(v, "/spec/bgp/ipv6Address"),
            Column::Order => text(v, "/spec/order"),
            Column::Workload => or(text(v, "/spec/workload"), &text(v, "/spec/pod")),
            Column::WepNode => text(v, "/spec/node"),
            Column::Networks => joined(v, "/spec/ipNetworks"),
            Column::Interface => text(v, "/spec/interfaceName"),
            Column::ReservedCidrs => v
                .pointer("/spec/reservedCIDRs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
            Column::Profiles => joined(v, "/spec/profiles"),
        }
    }
}

/// Left-aligned columns, three spaces apart, as calicoctl prints them.
pub fn table(headings: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headings.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headings.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aliases_in_any_case() {
        assert_eq!(Kind::parse("IPPools").unwrap(), Kind::IPPool);
        assert_eq!(
            Kind::parse("ippool.projectcalico.org").unwrap(),
            Kind::IPPool
        );
        assert_eq!(Kind::parse("gnp").unwrap(), Kind::GlobalNetworkPolicy);
        assert_eq!(Kind::parse("bgpconfig").unwrap(), Kind::BGPConfiguration);
        let e = Kind::parse("pods").unwrap_err();
        assert!(e.contains("ippools") && e.contains("bgppeers"), "{e}");
    }

    #[test]
    fn ip_reservations_list_their_cidrs() {
        assert_eq!(Kind::parse("ipr").unwrap(), Kind::IPReservation);
        assert_eq!(Kind::parse("IPReservations").unwrap(), Kind::IPReservation);
        assert!(!Kind::IPReservation.namespaced());
        let cols = Kind::IPReservation.columns(false);
        assert_eq!(
            cols.iter().map(|c| c.heading()).collect::<Vec<_>>(),
            ["NAME", "CIDRS"]
        );
        let v = json!({"metadata": {"name": "gw"},
                       "spec": {"reservedCIDRs": ["10.65.0.1", "10.65.1.0/28"]}});
        assert_eq!(cols[1].cell(&v, 64512), "10.65.0.1,10.65.1.0/28");
    }

    #[test]
    fn pool_cells_default_as_calico_shows_them() {
        let v = json!({"metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/16", "natOutgoing": true}});
        let cells: Vec<String> = Kind::IPPool
            .columns(true)
            .iter()
            .map(|c| c.cell(&v, 64512))
            .collect();
        assert_eq!(
            cells,
            [
                "p",
                "10.0.0.0/16",
                "true",
                "Never",
                "Never",
                "false",
                "false",
                "all()"
            ]
        );
        let n = json!({"metadata": {"name": "n"}, "spec": {"bgp": {"ipv4Address": "10.0.0.1/24"}}});
        assert_eq!(Column::NodeAsn.cell(&n, 64512), "(64512)");
        assert_eq!(Column::NodeAsn.cell(&json!({"spec": {}}), 64512), "");
    }

    #[test]
    fn table_aligns() {
        let t = table(
            &["NAME", "CIDR"],
            &[vec!["a-long-name".into(), "10.0.0.0/8".into()]],
        );
        assert_eq!(t, "NAME          CIDR\na-long-name   10.0.0.0/8\n");
    }
}
