//! One rule of a Calico policy, as stored (`crd.projectcalico.org/v1`
//! shapes it), and its typed reading: [`Action`], [`Protocol`],
//! [`PortMatch`], the nets of an [`EntityRule`].
//!
//! Actions, protocols and ports are stored loosely (a string; Kubernetes
//! int-or-string values, as Calico's `numorstring` types are), so an object
//! with a bad value still decodes: validation then names the bad value
//! instead of the whole object failing to parse, and a policy that reaches
//! felix that way is reported and skipped by name, not lost with its
//! neighbours in a failed list decode.

use ipnetwork::IpNetwork;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::selector::Selector;
use crate::validate::Collector;

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Accept the packet; evaluation stops.
    Allow,
    /// Drop the packet; evaluation stops.
    Deny,
    /// Log the packet and go on with the next rule.
    Log,
    /// Skip the rest of the policies: the profiles decide.
    Pass,
}

impl Action {
    pub fn parse(s: &str) -> Result<Action, String> {
        Ok(match s {
            "Allow" => Action::Allow,
            "Deny" => Action::Deny,
            "Log" => Action::Log,
            "Pass" => Action::Pass,
            other => {
                return Err(format!(
                    "unknown action {other:?}; use Allow, Deny, Log or Pass"
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "Allow",
            Action::Deny => "Deny",
            Action::Log => "Log",
            Action::Pass => "Pass",
        }
    }
}

/// A direction a policy applies to (`types`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyType {
    Ingress,
    Egress,
}

impl PolicyType {
    pub fn parse(s: &str) -> Result<PolicyType, String> {
        match s {
            "Ingress" => Ok(PolicyType::Ingress),
            "Egress" => Ok(PolicyType::Egress),
            other => Err(format!(
                "unknown policy type {other:?}; use Ingress or Egress"
            )),
        }
    }
}

/// ICMP type and code to match (`icmp`, `notICMP`).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[x_kube(
    validation = Rule::new("!has(self.code) || has(self.type)")
        .message("an ICMP code needs an ICMP type").reason(Reason::FieldValueRequired),
)]
pub struct ICMPFields {
    /// ICMP type, 0–254.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 254))]
    pub icmp_type: Option<i64>,
    /// ICMP code, 0–255; needs a type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 255))]
    pub code: Option<i64>,
}

/// Which endpoints or addresses a rule's source or destination is. All the
/// fields that are set must match (AND).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EntityRule {
    /// CIDRs (or single addresses); the peer's address must be in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nets_schema")]
    pub nets: Option<Vec<String>>,
    /// CIDRs (or addresses) the peer's address must not be in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nets_schema")]
    pub not_nets: Option<Vec<String>>,
    /// Calico selector over endpoint labels: the peer must be one of these
    /// endpoints (in the policy's namespace, unless namespaceSelector says
    /// otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub selector: Option<String>,
    /// Calico selector: the peer must not be one of these endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub not_selector: Option<String>,
    /// Calico selector over namespace labels: the peer is an endpoint in one
    /// of these namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub namespace_selector: Option<String>,
    /// Ports: numbers, ranges "first:last", or named ports. Needs protocol
    /// TCP, UDP, SCTP or UDPLite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ports_schema")]
    pub ports: Option<Vec<IntOrString>>,
    /// Ports the peer's port must not be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ports_schema")]
    pub not_ports: Option<Vec<IntOrString>>,
    /// Not supported by calico-rs (kept so it is refused, not pruned:
    /// pruning would silently widen the rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_object")]
    pub service_accounts: Option<serde_json::Value>,
    /// Not supported by calico-rs (kept so it is refused, not pruned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_object")]
    pub services: Option<serde_json::Value>,
}

/// A policy rule.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.icmp) || (has(self.protocol) && string(self.protocol) in ['ICMP', 'ICMPv6', 'icmp', 'icmpv6', '1', '58'])")
        .message("icmp needs protocol ICMP or ICMPv6").reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.notICMP) || (has(self.protocol) && string(self.protocol) in ['ICMP', 'ICMPv6', 'icmp', 'icmpv6', '1', '58'])")
        .message("notICMP needs protocol ICMP or ICMPv6").reason(Reason::FieldValueInvalid),
    validation = Rule::new("(has(self.protocol) && string(self.protocol) in ['TCP', 'UDP', 'SCTP', 'UDPLite', 'tcp', 'udp', 'sctp', 'udplite', '6', '17', '132', '136']) || ((!has(self.source) || ((!has(self.source.ports) || size(self.source.ports) == 0) && (!has(self.source.notPorts) || size(self.source.notPorts) == 0))) && (!has(self.destination) || ((!has(self.destination.ports) || size(self.destination.ports) == 0) && (!has(self.destination.notPorts) || size(self.destination.notPorts) == 0))))")
        .message("ports and notPorts need protocol TCP, UDP, SCTP or UDPLite").reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.http)")
        .message("http matches are not supported by calico-rs").reason(Reason::FieldValueForbidden),
    validation = Rule::new("(!has(self.source) || (!has(self.source.serviceAccounts) && !has(self.source.services))) && (!has(self.destination) || (!has(self.destination.serviceAccounts) && !has(self.destination.services)))")
        .message("serviceAccounts and services matches are not supported by calico-rs; select the pods by label").reason(Reason::FieldValueForbidden),
)]
pub struct Rule {
    /// Allow, Deny, Log or Pass.
    #[schemars(extend("enum" = ["Allow", "Deny", "Log", "Pass"]))]
    pub action: String,
    /// 4 or 6: match only that IP version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [4, 6]))]
    pub ip_version: Option<i64>,
    /// TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite, or a number 1–255.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "protocol_schema")]
    pub protocol: Option<IntOrString>,
    /// ICMP type/code to match; needs protocol ICMP or ICMPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<ICMPFields>,
    /// The protocol must not be this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "protocol_schema")]
    pub not_protocol: Option<IntOrString>,
    /// ICMP type/code that must not match; needs protocol ICMP or ICMPv6.
    #[serde(rename = "notICMP", default, skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<ICMPFields>,
    /// Where the packet comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<EntityRule>,
    /// Where the packet goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<EntityRule>,
    /// Not supported by calico-rs (kept so it is refused, not pruned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_object")]
    pub http: Option<serde_json::Value>,
    /// Annotations carried with the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_object")]
    pub metadata: Option<serde_json::Value>,
}

impl Rule {
    /// A rule with only an action: matches every packet.
    pub fn new(action: Action) -> Rule {
        Rule {
            action: action.as_str().to_string(),
            ip_version: None,
            protocol: None,
            icmp: None,
            not_protocol: None,
            not_icmp: None,
            source: None,
            destination: None,
            http: None,
            metadata: None,
        }
    }

    /// The action, read.
    pub fn action(&self) -> Result<Action, String> {
        Action::parse(&self.action)
    }

    /// The protocol, read (None: any protocol).
    pub fn protocol(&self) -> Result<Option<Protocol>, String> {
        self.protocol.as_ref().map(Protocol::parse).transpose()
    }

    /// The excluded protocol, read.
    pub fn not_protocol(&self) -> Result<Option<Protocol>, String> {
        self.not_protocol.as_ref().map(Protocol::parse).transpose()
    }
}

/// The API server checks int-or-string values with value validations at
/// the top level (`pattern`/`maxLength` apply to strings, `minimum`/
/// `maximum` to integers): Kubernetes allows only the plain
/// `anyOf: [integer, string]` pattern inside an int-or-string schema.
fn protocol_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "minimum": 1,
        "maximum": 255,
        "maxLength": 8,
        "pattern": "^(TCP|UDP|ICMP|ICMPv6|SCTP|UDPLite|tcp|udp|icmp|icmpv6|sctp|udplite|[0-9]{1,3})$",
    })
}

/// 0–65535 in a regular expression, for port strings.
const PORT_RE: &str =
    "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})";

fn ports_schema(_: &mut SchemaGenerator) -> Schema {
    let pattern = format!("^({PORT_RE}(:{PORT_RE})?|[a-z0-9]([a-z0-9-]*[a-z0-9])?)$");
    json_schema!({
        "type": "array",
        "maxItems": 128,
        "x-kubernetes-list-type": "atomic",
        "items": {
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "minimum": 0,
            "maximum": 65535,
            "maxLength": 15,
            "pattern": pattern,
            "x-kubernetes-validations": [{
                "rule": "!string(self).contains(':') || int(string(self).split(':')[0]) <= int(string(self).split(':')[1])",
                "message": "a port range must be first:last with first <= last",
                "reason": "FieldValueForbidden"
            }]
        }
    })
}

fn nets_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        // Bounds the API server's cost estimate of the rule below (every
        // rule of every policy may hold two such lists per side); the
        // longest IPv6 CIDR is 43 characters.
        "maxItems": 256,
        "x-kubernetes-list-type": "atomic",
        "items": {"type": "string", "maxLength": 43},
        "x-kubernetes-validations": [{
            "rule": "self.all(n, isCIDR(n) || isIP(n))",
            "message": "every entry must be a CIDR or an IP address"
        }]
    })
}

/// An object the API server keeps as given (for fields calico-rs refuses:
/// pruning them would silently change a rule).
fn opaque_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// An IP protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Protocol(u8);

impl Protocol {
    pub const ICMP: Protocol = Protocol(1);
    pub const TCP: Protocol = Protocol(6);
    pub const UDP: Protocol = Protocol(17);
    pub const ICMPV6: Protocol = Protocol(58);
    pub const SCTP: Protocol = Protocol(132);
    pub const UDPLITE: Protocol = Protocol(136);

    /// Calico's names (all upper or all lower case, as Calico accepts) or a
    /// number 1–255.
    pub fn parse(v: &IntOrString) -> Result<Protocol, String> {
        match v {
            IntOrString::Int(n) => u8::try_from(*n)
                .ok()
                .filter(|n| *n > 0)
                .map(Protocol)
                .ok_or_else(|| format!("protocol number {n} is outside 1–255")),
            IntOrString::String(s) => Self::from_name(s).ok_or_else(|| {
                format!(
                    "unknown protocol {s:?}; use TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1–255"
                )
            }),
        }
    }

    fn from_name(s: &str) -> Option<Protocol> {
        Some(match s {
            "TCP" | "tcp" => Self::TCP,
            "UDP" | "udp" => Self::UDP,
            "ICMP" | "icmp" => Self::ICMP,
            "ICMPv6" | "icmpv6" => Self::ICMPV6,
            "SCTP" | "sctp" => Self::SCTP,
            "UDPLite" | "udplite" => Self::UDPLITE,
            // Go's numorstring reads a number in a string as the number.
            n => return n.parse::<u8>().ok().filter(|n| *n > 0).map(Protocol),
        })
    }

    pub fn number(self) -> u8 {
        self.0
    }

    pub fn from_number(n: u8) -> Protocol {
        Protocol(n)
    }

    /// Protocols whose header starts with source and destination ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Self::TCP | Self::UDP | Self::SCTP | Self::UDPLITE)
    }

    pub fn is_icmp(self) -> bool {
        matches!(self, Self::ICMP | Self::ICMPV6)
    }

    /// The IP version the protocol belongs to, if only one.
    pub fn ip_version(self) -> Option<u8> {
        match self {
            Self::ICMP => Some(4),
            Self::ICMPV6 => Some(6),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::ICMP => f.write_str("ICMP"),
            Self::TCP => f.write_str("TCP"),
            Self::UDP => f.write_str("UDP"),
            Self::ICMPV6 => f.write_str("ICMPv6"),
            Self::SCTP => f.write_str("SCTP"),
            Self::UDPLITE => f.write_str("UDPLite"),
            Protocol(n) => write!(f, "{n}"),
        }
    }
}

/// One entry of `ports` / `notPorts`, read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortMatch {
    /// `first..=last` (a single port has first == last).
    Range(u16, u16),
    /// A named port of the endpoint (a Pod's container port name).
    Named(String),
}

impl PortMatch {
    pub fn parse(v: &IntOrString) -> Result<PortMatch, String> {
        match v {
            IntOrString::Int(n) => u16::try_from(*n)
                .map(|p| PortMatch::Range(p, p))
                .map_err(|_| format!("port {n} is outside 0–65535")),
            IntOrString::String(s) => Self::parse_str(s),
        }
    }

    fn parse_str(s: &str) -> Result<PortMatch, String> {
        let number = |t: &str| {
            t.parse::<u16>()
                .map_err(|_| format!("port {t:?} in {s:?} is not a number 0–65535"))
        };
        if let Some((a, b)) = s.split_once(':') {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(format!(
                    "port range {s:?} is backwards: write it first:last with first <= last"
                ));
            }
            return Ok(PortMatch::Range(a, b));
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let p = number(s)?;
            return Ok(PortMatch::Range(p, p));
        }
        if is_port_name(s) {
            Ok(PortMatch::Named(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is neither a port, a range first:last, nor a port name \
                 (1–15 lower-case letters, digits and '-', with a letter)"
            ))
        }
    }
}

/// A Kubernetes port name (IANA service name): 1–15 characters of
/// `[a-z0-9-]`, at least one letter, no leading, trailing or double `-`.
pub fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// A net as Calico reads it: a CIDR, or a single address (a /32 or /128).
/// Host bits are masked off, as Calico normalises them.
pub fn parse_net(s: &str) -> Result<IpNetwork, String> {
    let net = if s.contains('/') {
        s.parse::<IpNetwork>()
            .map_err(|e| format!("{s:?} is not a CIDR: {e}"))?
    } else {
        let ip: std::net::IpAddr = s
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR or an IP address"))?;
        IpNetwork::from(ip)
    };
    IpNetwork::new(net.network(), net.prefix()).map_err(|e| format!("{s:?}: {e}"))
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

impl EntityRule {
    pub fn selector(&self) -> Option<&str> {
        non_empty(&self.selector)
    }
    pub fn not_selector(&self) -> Option<&str> {
        non_empty(&self.not_selector)
    }
    pub fn namespace_selector(&self) -> Option<&str> {
        non_empty(&self.namespace_selector)
    }

    fn has_ports(&self) -> bool {
        self.ports.as_ref().is_some_and(|p| !p.is_empty())
            || self.not_ports.as_ref().is_some_and(|p| !p.is_empty())
    }

    /// Reports every problem under `field`; returns the nets that parsed.
    fn check(&self, field: &str, c: &mut Collector) -> Vec<IpNetwork> {
        let mut nets = Vec::new();
        for (name, list) in [("nets", &self.nets), ("notNets", &self.not_nets)] {
            for (i, n) in list.iter().flatten().enumerate() {
                match parse_net(n) {
                    Ok(net) => nets.push(net),
                    Err(e) => c.error(format!("{field}.{name}[{i}]"), e),
                }
            }
        }
        for (name, text) in [
            ("selector", self.selector()),
            ("notSelector", self.not_selector()),
            ("namespaceSelector", self.namespace_selector()),
        ] {
            if let Some(text) = text
                && let Err(e) = Selector::parse(text)
            {
                c.error(format!("{field}.{name}"), e.to_string());
            }
        }
        for (name, list) in [("ports", &self.ports), ("notPorts", &self.not_ports)] {
            for (i, p) in list.iter().flatten().enumerate() {
                if let Err(e) = PortMatch::parse(p) {
                    c.error(format!("{field}.{name}[{i}]"), e);
                }
            }
        }
        if self.service_accounts.is_some() {
            c.error_hint(
                format!("{field}.serviceAccounts"),
                "serviceAccounts matches are not supported by calico-rs",
                "select the pods by label instead",
            );
        }
        if self.services.is_some() {
            c.error_hint(
                format!("{field}.services"),
                "services matches are not supported by calico-rs",
                "match the service's pods by selector, or its addresses by nets",
            );
        }
        nets
    }
}

impl Rule {
    /// Reports every problem under `field` (e.g. `spec.ingress[0]`).
    pub(crate) fn check(&self, field: &str, c: &mut Collector) {
        if let Err(e) = self.action() {
            c.error(format!("{field}.action"), e);
        }
        let protocol = match self.protocol() {
            Ok(p) => p,
            Err(e) => {
                c.error(format!("{field}.protocol"), e);
                None
            }
        };
        if let Err(e) = self.not_protocol() {
            c.error(format!("{field}.notProtocol"), e);
        }
        let version = match self.ip_version {
            None => None,
            Some(4) => Some(4u8),
            Some(6) => Some(6u8),
            Some(v) => {
                c.error(format!("{field}.ipVersion"), format!("{v} is not 4 or 6"));
                None
            }
        };
        for (name, icmp) in [("icmp", &self.icmp), ("notICMP", &self.not_icmp)] {
            let Some(icmp) = icmp else { continue };
            if !protocol.is_some_and(Protocol::is_icmp) {
                c.error_hint(
                    format!("{field}.{name}"),
                    "ICMP type and code need protocol ICMP or ICMPv6",
                    "add protocol: ICMP (or ICMPv6) to the rule",
                );
            }
            if icmp.code.is_some() && icmp.icmp_type.is_none() {
                c.error(format!("{field}.{name}.code"), "an ICMP code needs a type");
            }
            if let Some(t) = icmp.icmp_type
                && !(0..=254).contains(&t)
            {
                c.error(
                    format!("{field}.{name}.type"),
                    format!("{t} is outside 0–254"),
                );
            }
            if let Some(code) = icmp.code
                && !(0..=255).contains(&code)
            {
                c.error(
                    format!("{field}.{name}.code"),
                    format!("{code} is outside 0–255"),
                );
            }
        }
        if let (Some(v), Some(pv)) = (version, protocol.and_then(Protocol::ip_version))
            && v != pv
        {
            c.error(
                format!("{field}.ipVersion"),
                format!("ipVersion {v} contradicts the protocol, which is IPv{pv} only"),
            );
        }
        let mut nets = Vec::new();
        for (name, entity) in [("source", &self.source), ("destination", &self.destination)] {
            let Some(entity) = entity else { continue };
            nets.extend(entity.check(&format!("{field}.{name}"), c));
            if entity.has_ports() && !protocol.is_some_and(Protocol::has_ports) {
                c.error_hint(
                    format!("{field}.{name}.ports"),
                    "ports and notPorts need protocol TCP, UDP, SCTP or UDPLite",
                    "add protocol: TCP (or UDP, SCTP, UDPLite) to the rule",
                );
            }
        }
        if let Some(v) = version.or(protocol.and_then(Protocol::ip_version)) {
            for n in nets {
                let nv = if n.is_ipv4() { 4 } else { 6 };
                if nv != v {
                    c.error(
                        field.to_string(),
                        format!("net {n} is IPv{nv} but the rule matches only IPv{v}"),
                    );
                }
            }
        }
        if self.http.is_some() {
            c.error_hint(
                format!("{field}.http"),
                "http matches are not supported by calico-rs",
                "remove http; calico-rs enforces policy at layers 3 and 4",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> IntOrString {
        IntOrString::String(v.into())
    }

    #[test]
    fn protocols_by_name_either_case_or_number() {
        assert_eq!(Protocol::parse(&s("TCP")), Ok(Protocol::TCP));
        assert_eq!(Protocol::parse(&s("udplite")), Ok(Protocol::UDPLITE));
        assert_eq!(Protocol::parse(&s("ICMPv6")), Ok(Protocol::ICMPV6));
        assert_eq!(Protocol::parse(&IntOrString::Int(132)), Ok(Protocol::SCTP));
        assert_eq!(Protocol::parse(&s("47")).map(Protocol::number), Ok(47));
        for bad in [
            s("tcpx"),
            s("Tcp"),
            IntOrString::Int(0),
            IntOrString::Int(256),
        ] {
            assert!(Protocol::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn actions_are_calicos_four_exactly() {
        assert_eq!(Action::parse("Pass"), Ok(Action::Pass));
        let e = Action::parse("allow").unwrap_err();
        assert!(e.contains("Allow, Deny, Log or Pass"), "{e}");
        for a in [Action::Allow, Action::Deny, Action::Log, Action::Pass] {
            assert_eq!(Action::parse(a.as_str()), Ok(a));
        }
    }

    #[test]
    fn ports_numbers_ranges_and_names() {
        assert_eq!(
            PortMatch::parse(&IntOrString::Int(80)),
            Ok(PortMatch::Range(80, 80))
        );
        assert_eq!(
            PortMatch::parse(&s("8080")),
            Ok(PortMatch::Range(8080, 8080))
        );
        assert_eq!(
            PortMatch::parse(&s("1000:2000")),
            Ok(PortMatch::Range(1000, 2000))
        );
        assert_eq!(
            PortMatch::parse(&s("http-alt")),
            Ok(PortMatch::Named("http-alt".into()))
        );
        let backwards = PortMatch::parse(&s("90:80")).unwrap_err();
        assert!(backwards.contains("backwards"), "{backwards}");
        for bad in [
            "70000",
            "1:70000",
            "Http",
            "-x",
            "a--b",
            "1234567890abcdef",
            "",
            "1:",
        ] {
            assert!(PortMatch::parse(&s(bad)).is_err(), "{bad:?}");
        }
        assert!(PortMatch::parse(&IntOrString::Int(65536)).is_err());
    }

    #[test]
    fn nets_take_cidrs_or_addresses_and_are_masked() {
        assert_eq!(parse_net("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(parse_net("10.1.2.3/16").unwrap().to_string(), "10.1.0.0/16");
        assert_eq!(parse_net("fd00::1").unwrap().to_string(), "fd00::1/128");
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("pod-a").is_err());
    }
}
