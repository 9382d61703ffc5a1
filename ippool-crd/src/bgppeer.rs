//! BGPPeer: a BGP session some nodes should open, either to a fixed address
//! (a ToR router) or to other Calico nodes picked by label (route
//! reflectors).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::SecretKeySelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::selector::Selector;
use crate::serde_util::empty_as_none;
use crate::validate::{Collector, ValidationErrors, describe};
use crate::{asn, duration};

// Enums that appear in `Option<...>` fields carry rustdoc-only docs
// (`cfg_attr(doc, ...)`): schemars would otherwise copy the enum's
// description over the field's own in the generated CRD.
#[cfg_attr(doc, doc = "Which source address the node uses for the session.")]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SourceAddress {
    #[default]
    UseNodeIP,
    None,
}

#[cfg_attr(doc, doc = "How the next hop of routes sent to this peer is set.")]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NextHopMode {
    #[default]
    Auto,
    #[serde(rename = "Self")]
    SelfAddr,
    Keep,
}

#[cfg_attr(
    doc,
    doc = "For node-to-node peerings: whether the reverse session is implied."
)]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReversePeering {
    #[default]
    Auto,
    Manual,
}

/// Where a BGP password comes from.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BGPPassword {
    /// A key of a Secret in calico-node's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
}

/// The desired BGP sessions.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "BGPPeer",
    plural = "bgppeers",
    singular = "bgppeer",
    derive = "PartialEq",
    derive = "Default",
    doc = "A BGP session that selected Calico nodes open to a remote speaker or to other nodes."
)]
#[x_kube(
    validation = Rule::new("!has(self.node) || size(self.node) == 0 || !has(self.nodeSelector) || size(self.nodeSelector) == 0")
        .message("node and nodeSelector cannot both be set").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.peerIP) || size(self.peerIP) == 0 || !has(self.peerSelector) || size(self.peerSelector) == 0")
        .message("peerIP and peerSelector cannot both be set").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.peerSelector) || size(self.peerSelector) == 0 || !has(self.asNumber) || self.asNumber == 0")
        .message("asNumber must be empty when peerSelector is set; the remote nodes' own AS numbers are used").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.localWorkloadSelector) || size(self.localWorkloadSelector) == 0 || ((!has(self.peerIP) || size(self.peerIP) == 0) && (!has(self.peerSelector) || size(self.peerSelector) == 0) && has(self.asNumber) && self.asNumber != 0)")
        .message("localWorkloadSelector requires asNumber and excludes peerIP and peerSelector").reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.reachableBy) || size(self.reachableBy) == 0 || (has(self.peerIP) && size(self.peerIP) > 0)")
        .message("reachableBy requires peerIP").reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.keepOriginalNextHop) || !self.keepOriginalNextHop || !has(self.nextHopMode)")
        .message("keepOriginalNextHop and nextHopMode cannot both be set; use nextHopMode: Keep").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.bfd) || !has(self.bfd.authentication) || (has(self.bfd.authentication.type) && has(self.bfd.authentication.keyID) && has(self.bfd.authentication.secretKeyRef))")
        .message("bfd.authentication needs type, keyID and secretKeyRef").reason(Reason::FieldValueRequired),
)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// The one node that opens this session. Unset (and no nodeSelector)
    /// means every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub node: Option<String>,

    /// Calico selector over node labels: the nodes that open this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub node_selector: Option<String>,

    /// The peer's address, optionally with a port: `10.0.0.1`,
    /// `10.0.0.1:1179`, `fd00::1` or `[fd00::1]:1179`.
    #[serde(rename = "peerIP", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub peer_ip: Option<String>,

    /// The peer's AS number (integer, or asdot string such as "1.10").
    #[serde(default, skip_serializing_if = "Option::is_none", with = "asn::option")]
    #[schemars(schema_with = "asn::schema")]
    pub as_number: Option<u32>,

    /// The local AS number for this session, overriding the node's.
    #[serde(
        rename = "localASNumber",
        default,
        skip_serializing_if = "Option::is_none",
        with = "asn::option"
    )]
    #[schemars(schema_with = "asn::schema")]
    pub local_as_number: Option<u32>,

    /// Calico selector over node labels: peer with these Calico nodes (their
    /// own addresses and AS numbers). Excludes peerIP and asNumber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub peer_selector: Option<String>,

    /// Deprecated: use nextHopMode: Keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_original_next_hop: Option<bool>,

    /// Next-hop handling for routes sent to this peer.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub next_hop_mode: Option<NextHopMode>,

    /// TCP-MD5 password for the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BGPPassword>,

    /// Default UseNodeIP.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub source_address: Option<SourceAddress>,

    /// Graceful-restart time (Go duration, e.g. 120s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<String>,

    /// Keepalive interval (Go duration, e.g. 20s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,

    /// How many times our own AS may appear in received paths (disables
    /// loop prevention; use with care).
    #[serde(
        rename = "numAllowedLocalASNumbers",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub num_allowed_local_as_numbers: Option<i32>,

    /// GTSM: the number of hops to the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,

    /// Gateway through which the peer is reached; a /32 (/128) route to the
    /// peer via it is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub reachable_by: Option<String>,

    /// Names of BGPFilter resources applied in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub filters: Option<Vec<String>>,

    /// Calico selector over workload labels: peer with these local
    /// workloads. Requires asNumber; excludes peerIP and peerSelector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub local_workload_selector: Option<String>,

    /// Default Auto.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub reverse_peering: Option<ReversePeering>,

    /// calico-rs extension: BFD (RFC 5880/5881) on these sessions, for
    /// directly connected peers; a peer that stops answering loses its
    /// routes in under a second. Absent: no BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BFDSpec>,

    /// calico-rs extension: the most routes accepted from the peer; one
    /// more resets the session (Cease / Maximum Number of Prefixes
    /// Reached, RFC 4486) and it is tried again later. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_prefixes: Option<u32>,
}

/// BFD timing (calico-rs extension; Calico's open-source resources have
/// no BFD). The peer is declared down after `multiplier` intervals
/// without a packet: 500 ms with the defaults.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BFDSpec {
    /// Interval between packets once up (Go duration, 10ms to 60s;
    /// default 100ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Packets missed before the peer is declared down (1 to 255; default
    /// 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub multiplier: Option<u32>,
    /// Authenticate BFD packets both ways (RFC 5880 section 6.7.4): every
    /// packet is signed, and one without a valid digest, with another key
    /// ID, or with a replayed sequence number is dropped, so a spoofed
    /// packet cannot take the session down. The peer must use the same
    /// type, key ID and key. Absent: no authentication (and authenticated
    /// packets are dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<BFDAuthentication>,
}

#[cfg_attr(
    doc,
    doc = "BFD authentication type: Keyed SHA1 (the sequence number may repeat) or Meticulous Keyed SHA1 (it goes up with every packet)."
)]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BFDAuthType {
    KeyedSHA1,
    MeticulousKeyedSHA1,
}

/// BFD authentication: type, key ID, and where the key (1 to 20 bytes)
/// comes from.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BFDAuthentication {
    /// KeyedSHA1 or MeticulousKeyedSHA1.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<BFDAuthType>,
    /// The Key ID both ends use, 0 to 255.
    #[serde(rename = "keyID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 255))]
    pub key_id: Option<u32>,
    /// The key: a key of a Secret in calico-node's namespace (read like
    /// the BGP password; 1 to 20 bytes, one trailing newline dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
}

impl BFDSpec {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
    pub const DEFAULT_MULTIPLIER: u8 = 5;

    /// The interval and multiplier, defaults applied; `None` when either
    /// is invalid (validation reports it).
    pub fn timing(&self) -> Option<(Duration, u8)> {
        let interval = match self.interval.as_deref() {
            None | Some("") => Self::DEFAULT_INTERVAL,
            Some(t) => duration::parse(t).ok()?,
        };
        if interval < Duration::from_millis(10) || interval > Duration::from_secs(60) {
            return None;
        }
        let multiplier = match self.multiplier {
            None => Self::DEFAULT_MULTIPLIER,
            Some(m) => u8::try_from(m).ok().filter(|m| *m > 0)?,
        };
        Some((interval, multiplier))
    }

    /// Reports what is wrong under `field`.
    pub(crate) fn check(&self, field: &str, c: &mut Collector) {
        if let Some(t) = self.interval.as_deref().filter(|t| !t.is_empty()) {
            match duration::parse(t) {
                Err(e) => c.error(format!("{field}.interval"), e.to_string()),
                Ok(d) if d < Duration::from_millis(10) || d > Duration::from_secs(60) => c.error(
                    format!("{field}.interval"),
                    format!("{t} is outside 10ms to 60s"),
                ),
                Ok(_) => {}
            }
        }
        if let Some(m) = self.multiplier
            && !(1..=255).contains(&m)
        {
            c.error(
                format!("{field}.multiplier"),
                format!("{m} is outside 1 to 255"),
            );
        }
        if let Some(a) = &self.authentication {
            let field = format!("{field}.authentication");
            if a.auth_type.is_none() {
                c.error_hint(
                    format!("{field}.type"),
                    "is required",
                    "KeyedSHA1 or MeticulousKeyedSHA1, as the peer is configured",
                );
            }
            match a.key_id {
                None => c.error_hint(
                    format!("{field}.keyID"),
                    "is required",
                    "0 to 255, the same number as at the peer",
                ),
                Some(id) if id > 255 => c.error(
                    format!("{field}.keyID"),
                    format!("{id} is outside 0 to 255"),
                ),
                Some(_) => {}
            }
            match &a.secret_key_ref {
                Some(r) if !r.name.is_empty() && !r.key.is_empty() => {}
                _ => c.error_hint(
                    format!("{field}.secretKeyRef"),
                    "needs both the Secret's name and the key within it",
                    "the key itself never goes in the resource; put it in a Secret in calico-node's namespace",
                ),
            }
        }
    }

    /// The authentication type and key ID, if authentication is asked
    /// for and both are valid (validation reports the rest).
    pub fn authentication(&self) -> Option<(BFDAuthType, u8, &SecretKeySelector)> {
        let a = self.authentication.as_ref()?;
        let id = u8::try_from(a.key_id?).ok()?;
        Some((a.auth_type?, id, a.secret_key_ref.as_ref()?))
    }
}

/// A parsed `peerIP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddress {
    pub ip: IpAddr,
    /// `None` means the peer's configured listen port (179 by default).
    pub port: Option<u16>,
}

impl PeerAddress {
    /// The socket address, with `default_port` when none was given.
    pub fn socket_addr(&self, default_port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(default_port))
    }
}

/// Why a `peerIP` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid peer address {input:?}: {reason}; expected <IPv4>, <IPv4>:<port>, <IPv6> or [<IPv6>]:<port>"
)]
pub struct PeerAddressError {
    pub input: String,
    pub reason: &'static str,
}

/// Parses a `peerIP` in any form Calico accepts.
pub fn parse_peer_address(s: &str) -> Result<PeerAddress, PeerAddressError> {
    let err = |reason| PeerAddressError {
        input: s.to_string(),
        reason,
    };
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(PeerAddress { ip, port: None });
    }
    let (ip, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| err("a bracketed IPv6 address must be followed by :<port>"))?;
        let ip: std::net::Ipv6Addr = host.parse().map_err(|_| err("not an IPv6 address"))?;
        (IpAddr::V6(ip), port)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or_else(|| err("not an IP address"))?;
        let ip: std::net::Ipv4Addr = host
            .parse()
            .map_err(|_| err("not an IP address (put an IPv6 address with a port in brackets)"))?;
        (IpAddr::V4(ip), port)
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("the port is not a number"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| err("the port is out of range 1–65535"))?;
    if port == 0 {
        return Err(err("the port is out of range 1–65535"));
    }
    Ok(PeerAddress {
        ip,
        port: Some(port),
    })
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

impl BGPPeerSpec {
    /// The parsed peer address, if `peerIP` is set and valid.
    pub fn peer_address(&self) -> Option<PeerAddress> {
        parse_peer_address(non_empty(&self.peer_ip)?).ok()
    }

    /// The node selector: `node: X` behaves as a selector on the node name,
    /// so this is `None` for node-scoped peers; unset means all nodes.
    pub fn node_selector(&self) -> Option<Selector> {
        match non_empty(&self.node_selector) {
            Some(text) => Selector::parse(text).ok(),
            None => Some(Selector::all()),
        }
    }

    /// True when this peer applies to the node called `name` with `labels`.
    pub fn applies_to_node(
        &self,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        if let Some(node) = non_empty(&self.node) {
            return node == name;
        }
        self.node_selector().is_some_and(|s| s.matches(labels))
    }

    pub fn peer_selector(&self) -> Option<Selector> {
        Selector::parse(non_empty(&self.peer_selector)?).ok()
    }

    pub fn source_address(&self) -> SourceAddress {
        self.source_address.unwrap_or_default()
    }

    /// `nextHopMode`, falling back to the deprecated `keepOriginalNextHop`.
    pub fn next_hop_mode(&self) -> NextHopMode {
        match (self.next_hop_mode, self.keep_original_next_hop) {
            (Some(m), _) => m,
            (None, Some(true)) => NextHopMode::Keep,
            _ => NextHopMode::Auto,
        }
    }

    pub fn max_restart_time(&self) -> Option<Duration> {
        duration::parse(non_empty(&self.max_restart_time)?).ok()
    }

    pub fn keepalive_time(&self) -> Option<Duration> {
        duration::parse(non_empty(&self.keepalive_time)?).ok()
    }

    pub fn reverse_peering(&self) -> ReversePeering {
        self.reverse_peering.unwrap_or_default()
    }
}

impl BGPPeer {
    /// Checks every rule Calico applies to a BGPPeer, collecting all
    /// problems.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let s = &self.spec;
        let mut c = Collector::default();

        if non_empty(&s.node).is_some() && non_empty(&s.node_selector).is_some() {
            c.error_hint(
                "spec.nodeSelector",
                "node and nodeSelector cannot both be set",
                "use node for one node, or nodeSelector (e.g. kubernetes.io/hostname == 'n1') for several",
            );
        }
        for (field, text) in [
            ("spec.nodeSelector", &s.node_selector),
            ("spec.peerSelector", &s.peer_selector),
            ("spec.localWorkloadSelector", &s.local_workload_selector),
        ] {
            if let Some(text) = non_empty(text)
                && let Err(e) = Selector::parse(text)
            {
                c.error(field, e.to_string());
            }
        }

        let peer = match non_empty(&s.peer_ip) {
            Some(text) => match parse_peer_address(text) {
                Ok(p) => Some(p),
                Err(e) => {
                    c.error("spec.peerIP", e.to_string());
                    None
                }
            },
            None => None,
        };
        let has_peer_ip = non_empty(&s.peer_ip).is_some();
        let has_peer_selector = non_empty(&s.peer_selector).is_some();
        let has_workload_selector = non_empty(&s.local_workload_selector).is_some();

        if has_peer_ip && has_peer_selector {
            c.error_hint(
                "spec.peerSelector",
                "peerIP and peerSelector cannot both be set",
                "peerIP names one remote speaker; peerSelector picks Calico nodes by label",
            );
        }
        if has_peer_selector && s.as_number.is_some_and(|n| n != 0) {
            c.error_hint(
                "spec.asNumber",
                "must be empty when peerSelector is set",
                "the selected nodes' own AS numbers are used; remove asNumber",
            );
        }
        if has_workload_selector {
            if has_peer_ip || has_peer_selector {
                c.error(
                    "spec.localWorkloadSelector",
                    "cannot be combined with peerIP or peerSelector",
                );
            }
            if s.as_number.is_none_or(|n| n == 0) {
                c.error_hint(
                    "spec.asNumber",
                    "is required when localWorkloadSelector is set",
                    "set the workloads' AS number",
                );
            }
        }
        if has_peer_ip && s.as_number.is_none() {
            c.error_hint(
                "spec.asNumber",
                "is required when peerIP is set",
                "set the remote speaker's AS number, e.g. asNumber: 64567",
            );
        }
        for (field, asn) in [
            ("spec.asNumber", s.as_number),
            ("spec.localASNumber", s.local_as_number),
        ] {
            if asn == Some(0) && !(field == "spec.asNumber" && has_peer_selector) {
                c.error_hint(
                    field,
                    "0 is not a valid AS number (reserved by RFC 7607)",
                    "use an AS number from 1 to 4294967295; private ASNs are 64512–65534",
                );
            }
        }

        if let Some(via) = non_empty(&s.reachable_by) {
            match via.parse::<IpAddr>() {
                Err(_) => c.error("spec.reachableBy", format!("{via:?} is not an IP address")),
                Ok(gw) => {
                    if !has_peer_ip {
                        c.error("spec.reachableBy", "requires peerIP");
                    } else if let Some(p) = peer
                        && p.ip.is_ipv4() != gw.is_ipv4()
                    {
                        c.error(
                            "spec.reachableBy",
                            format!("{gw} and peerIP {} are different address families", p.ip),
                        );
                    }
                }
            }
        }

        if s.keep_original_next_hop == Some(true) && s.next_hop_mode.is_some() {
            c.error_hint(
                "spec.keepOriginalNextHop",
                "cannot be combined with nextHopMode",
                "remove keepOriginalNextHop and use nextHopMode: Keep",
            );
        }
        for (field, text) in [
            ("spec.maxRestartTime", &s.max_restart_time),
            ("spec.keepaliveTime", &s.keepalive_time),
        ] {
            if let Some(text) = text
                && let Err(e) = duration::parse(text)
            {
                c.error(field, e.to_string());
            }
        }
        if let Some(b) = &s.bfd {
            b.check("spec.bfd", &mut c);
        }
        if s.max_prefixes == Some(0) {
            c.error(
                "spec.maxPrefixes",
                "must be at least 1 (leave it out for no limit)",
            );
        }
        if let Some(n) = s.num_allowed_local_as_numbers
            && n < 0
        {
            c.error(
                "spec.numAllowedLocalASNumbers",
                format!("{n} must not be negative"),
            );
        }
        if let Some(pw) = &s.password {
            match &pw.secret_key_ref {
                Some(r) if r.name.is_empty() || r.key.is_empty() => c.error(
                    "spec.password.secretKeyRef",
                    "needs both the Secret's name and the key within it",
                ),
                _ => {}
            }
        }
        if let Some(filters) = &s.filters {
            for (i, f) in filters.iter().enumerate() {
                if f.is_empty() {
                    c.error(format!("spec.filters[{i}]"), "is empty; name a BGPFilter");
                }
            }
        }

        c.finish(describe("BGPPeer", &self.metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_address_forms() {
        let p = parse_peer_address("192.168.1.1").unwrap();
        assert_eq!((p.ip.to_string(), p.port), ("192.168.1.1".into(), None));
        let p = parse_peer_address("192.168.1.1:1179").unwrap();
        assert_eq!(p.port, Some(1179));
        let p = parse_peer_address("fd00::1").unwrap();
        assert!(p.ip.is_ipv6() && p.port.is_none());
        let p = parse_peer_address("[fd00::1]:1179").unwrap();
        assert_eq!((p.ip.to_string(), p.port), ("fd00::1".into(), Some(1179)));
        assert_eq!(p.socket_addr(179).port(), 1179);
    }

    #[test]
    fn bad_peer_addresses() {
        for bad in [
            "",
            "host",
            "192.168.1.1:",
            "192.168.1.1:0",
            "192.168.1.1:70000",
            "fd00::1:x",
            "[fd00::1]",
            "[fd00::1]:",
            "[192.168.1.1]:179",
            "192.168.1.1:+1",
            "[fd00::1]:1:2",
        ] {
            assert!(
                parse_peer_address(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    fn bfd(yaml: &str) -> BFDSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn bfd_errors(b: &BFDSpec) -> String {
        let mut c = Collector::default();
        b.check("spec.bfd", &mut c);
        c.finish("BGPPeer tor")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn bfd_authentication_parses_and_is_checked_field_by_field() {
        let good = bfd(
            "authentication:\n  type: MeticulousKeyedSHA1\n  keyID: 7\n  secretKeyRef:\n    name: bfd\n    key: tor\n",
        );
        assert_eq!(bfd_errors(&good), "");
        let (t, id, sel) = good.authentication().unwrap();
        assert_eq!((t, id), (BFDAuthType::MeticulousKeyedSHA1, 7));
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("bfd", "tor"));
        assert_eq!(
            good.timing(),
            BFDSpec::default().timing(),
            "timing unaffected"
        );

        let e = bfd_errors(&bfd("authentication:\n  keyID: 256\n"));
        assert!(e.contains("spec.bfd.authentication.type"), "{e}");
        assert!(
            e.contains("spec.bfd.authentication.keyID: 256 is outside 0 to 255"),
            "{e}"
        );
        assert!(e.contains("spec.bfd.authentication.secretKeyRef"), "{e}");
        let e = bfd_errors(&bfd(
            "authentication:\n  type: KeyedSHA1\n  secretKeyRef:\n    name: bfd\n    key: ''\n",
        ));
        assert!(
            e.contains("spec.bfd.authentication.keyID: is required"),
            "{e}"
        );
        assert!(e.contains("secretKeyRef: needs both"), "{e}");
        assert!(!e.contains(".type"), "{e}");
        // An unknown type is not a BFDSpec at all.
        assert!(serde_yaml_ng::from_str::<BFDSpec>("authentication:\n  type: KeyedMD5\n").is_err());
    }
}
