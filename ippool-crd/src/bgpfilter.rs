//! BGPFilter: ordered accept/reject rules on the routes a BGPPeer's
//! sessions import and export, per address family. A BGPPeer names its
//! filters in `spec.filters`; they apply in that order, the first rule
//! that matches decides, and a route no rule matches gets bird's default
//! policy.

use ipnetwork::IpNetwork;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{Collector, ValidationErrors, describe};

#[cfg_attr(doc, doc = "What a matching rule does with the route.")]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FilterAction {
    #[default]
    Accept,
    Reject,
}

#[cfg_attr(doc, doc = "How the route's prefix is compared with `cidr`.")]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOperator {
    /// The prefix is `cidr` itself.
    Equal,
    /// The prefix is anything but `cidr`.
    NotEqual,
    /// The prefix is inside `cidr` (or is it), its length within
    /// `prefixLength`.
    In,
    /// The opposite of `In`.
    NotIn,
}

#[cfg_attr(doc, doc = "Which routes an export rule applies to.")]
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteSource {
    /// Routes learned from BGP peers (not this node's own blocks).
    RemotePeers,
}

/// Bounds on the prefix length an `In` / `NotIn` rule matches.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefixLength {
    /// At least this long (default: the length of `cidr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 128))]
    pub min: Option<i32>,
    /// At most this long (default: 32 for IPv4, 128 for IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 128))]
    pub max: Option<i32>,
}

/// One rule. Every field set must match for the rule to match; a rule
/// with none set matches every route.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("has(self.matchOperator) == has(self.cidr)")
        .message("matchOperator and cidr go together").reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.prefixLength) || (has(self.matchOperator) && (self.matchOperator == 'In' || self.matchOperator == 'NotIn'))")
        .message("prefixLength is only used with matchOperator In or NotIn").reason(Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct BGPFilterRule {
    pub action: FilterAction,
    /// Required with `cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_operator: Option<MatchOperator>,
    /// Required with `matchOperator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "cidr"))]
    pub cidr: Option<String>,
    /// Only with `matchOperator` In or NotIn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<PrefixLength>,
    /// Export rules only: match only routes of this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RouteSource>,
    /// Import rules only: match only routes whose next hop is reached over
    /// an interface whose name matches (`*` wildcards allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15))]
    pub interface: Option<String>,
}

/// Import and export rules per address family.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "BGPFilter",
    plural = "bgpfilters",
    singular = "bgpfilter",
    derive = "PartialEq",
    derive = "Default",
    doc = "Ordered accept/reject rules on the routes BGP peers that name this filter import and export."
)]
#[serde(rename_all = "camelCase")]
pub struct BGPFilterSpec {
    /// Rules on IPv4 routes sent to the peer.
    #[serde(rename = "exportV4", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub export_v4: Option<Vec<BGPFilterRule>>,
    /// Rules on IPv4 routes received from the peer.
    #[serde(rename = "importV4", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub import_v4: Option<Vec<BGPFilterRule>>,
    /// Rules on IPv6 routes sent to the peer.
    #[serde(rename = "exportV6", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub export_v6: Option<Vec<BGPFilterRule>>,
    /// Rules on IPv6 routes received from the peer.
    #[serde(rename = "importV6", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub import_v6: Option<Vec<BGPFilterRule>>,
}

/// The four rule lists: (field name, rules, IPv4, export).
impl BGPFilterSpec {
    pub fn lists(&self) -> [(&'static str, &[BGPFilterRule], bool, bool); 4] {
        [
            (
                "exportV4",
                self.export_v4.as_deref().unwrap_or_default(),
                true,
                true,
            ),
            (
                "importV4",
                self.import_v4.as_deref().unwrap_or_default(),
                true,
                false,
            ),
            (
                "exportV6",
                self.export_v6.as_deref().unwrap_or_default(),
                false,
                true,
            ),
            (
                "importV6",
                self.import_v6.as_deref().unwrap_or_default(),
                false,
                false,
            ),
        ]
    }
}

/// A rule checked and parsed: what bird evaluates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedRule {
    pub action: FilterAction,
    /// The operator and the CIDR, when the rule has them.
    pub prefix: Option<(MatchOperator, IpNetwork)>,
    /// Inclusive bounds on the prefix length (only with In / NotIn).
    pub min_len: Option<u8>,
    pub max_len: Option<u8>,
    pub remote_peers_only: bool,
    pub interface: Option<String>,
}

impl BGPFilterRule {
    /// Checks the rule of list `field` (e.g. `spec.importV4[2]`); every
    /// problem goes to `c`.
    fn check_into(
        &self,
        field: &str,
        v4: bool,
        export: bool,
        c: &mut Collector,
    ) -> Option<CheckedRule> {
        let before = c.len();
        let fam = if v4 { "IPv4" } else { "IPv6" };
        let max_bits: i32 = if v4 { 32 } else { 128 };
        let cidr = match (&self.match_operator, self.cidr.as_deref()) {
            (Some(_), None) | (Some(_), Some("")) => {
                c.error(format!("{field}.cidr"), "is required with matchOperator");
                None
            }
            (None, Some(s)) if !s.is_empty() => {
                c.error_hint(
                    format!("{field}.matchOperator"),
                    "is required with cidr",
                    "use Equal, NotEqual, In or NotIn",
                );
                None
            }
            (Some(op), Some(s)) => match s.parse::<IpNetwork>() {
                Ok(n) if n.is_ipv4() != v4 => {
                    c.error(format!("{field}.cidr"), format!("{s} is not an {fam} CIDR"));
                    None
                }
                Ok(n) if n.network() != n.ip() => {
                    c.error_hint(
                        format!("{field}.cidr"),
                        format!("{s} has host bits set"),
                        format!("write the network address, {}/{}", n.network(), n.prefix()),
                    );
                    None
                }
                Ok(n) => Some((*op, n)),
                Err(_) => {
                    c.error_hint(
                        format!("{field}.cidr"),
                        format!("{s:?} is not a valid CIDR"),
                        "write it as <address>/<prefix length>, e.g. 10.65.0.0/16",
                    );
                    None
                }
            },
            _ => None,
        };
        let (mut min_len, mut max_len) = (None, None);
        if let Some(pl) = &self.prefix_length {
            if !matches!(
                self.match_operator,
                Some(MatchOperator::In | MatchOperator::NotIn)
            ) {
                c.error(
                    format!("{field}.prefixLength"),
                    "is only used with matchOperator In or NotIn",
                );
            }
            for (name, v, out) in [("min", pl.min, &mut min_len), ("max", pl.max, &mut max_len)] {
                if let Some(v) = v {
                    match u8::try_from(v) {
                        Ok(b) if v <= max_bits => *out = Some(b),
                        _ => c.error(
                            format!("{field}.prefixLength.{name}"),
                            format!("{v} is out of range for {fam}: 0–{max_bits}"),
                        ),
                    }
                }
            }
            if let (Some(lo), Some(hi)) = (min_len, max_len)
                && lo > hi
            {
                c.error(
                    format!("{field}.prefixLength"),
                    format!("min {lo} is greater than max {hi}"),
                );
            }
            if let (Some((_, n)), Some(lo)) = (cidr, min_len)
                && lo < n.prefix()
            {
                c.error_hint(
                    format!("{field}.prefixLength.min"),
                    format!("{lo} is shorter than the CIDR's /{}", n.prefix()),
                    "no prefix inside the CIDR is that short; raise min or omit it",
                );
            }
        }
        if self.source.is_some() && !export {
            c.error(format!("{field}.source"), "is only used in export rules");
        }
        if let Some(i) = &self.interface {
            if export {
                c.error(format!("{field}.interface"), "is only used in import rules");
            }
            let ok = (1..=15).contains(&i.len())
                && i.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'*' | b'-'));
            if !ok {
                c.error_hint(
                    format!("{field}.interface"),
                    format!("{i:?} is not an interface name or pattern"),
                    "use 1–15 characters from [A-Za-z0-9_.-] with optional * wildcards",
                );
            }
        }
        (c.len() == before).then(|| CheckedRule {
            action: self.action,
            prefix: cidr,
            min_len,
            max_len,
            remote_peers_only: self.source == Some(RouteSource::RemotePeers),
            interface: self.interface.clone(),
        })
    }
}

/// One filter's rules, checked, per list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckedFilter {
    pub export_v4: Vec<CheckedRule>,
    pub import_v4: Vec<CheckedRule>,
    pub export_v6: Vec<CheckedRule>,
    pub import_v6: Vec<CheckedRule>,
}

impl BGPFilter {
    /// Checks every rule Calico applies to a BGPFilter.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        self.checked().map(drop)
    }

    /// The checked rules, or every problem found.
    pub fn checked(&self) -> Result<CheckedFilter, ValidationErrors> {
        let mut c = Collector::default();
        let mut out = CheckedFilter::default();
        for (name, rules, v4, export) in self.spec.lists() {
            let list: Vec<CheckedRule> = rules
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.check_into(&format!("spec.{name}[{i}]"), v4, export, &mut c))
                .collect();
            *match name {
                "exportV4" => &mut out.export_v4,
                "importV4" => &mut out.import_v4,
                "exportV6" => &mut out.export_v6,
                _ => &mut out.import_v6,
            } = list;
        }
        c.finish(describe("BGPFilter", &self.metadata))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(yaml: &str) -> BGPFilter {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn calicos_sample_parses_and_checks() {
        let f = filter(
            "apiVersion: crd.projectcalico.org/v1\nkind: BGPFilter\nmetadata: {name: my-filter}\nspec:\n  exportV4:\n  - {action: Accept, matchOperator: In, cidr: 77.0.0.0/16, source: RemotePeers}\n  - {action: Reject}\n  importV4:\n  - {action: Accept, matchOperator: In, cidr: 55.0.0.0/16, prefixLength: {min: 30}}\n  - {action: Reject, matchOperator: NotIn, cidr: 44.0.0.0/16, interface: 'eth*'}\n  importV6:\n  - {action: Accept, matchOperator: Equal, cidr: '5000::/64'}\n  - {action: Reject}\n",
        );
        let c = f.checked().unwrap();
        assert_eq!(c.export_v4.len(), 2);
        assert!(c.export_v4[0].remote_peers_only);
        assert_eq!(c.export_v4[1].prefix, None);
        assert_eq!(c.import_v4[0].min_len, Some(30));
        assert_eq!(
            c.import_v4[1].prefix,
            Some((MatchOperator::NotIn, "44.0.0.0/16".parse().unwrap()))
        );
        assert_eq!(c.import_v6.len(), 2);
        assert!(c.export_v6.is_empty());
        // And back: the same YAML fields.
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["spec"]["importV4"][0]["prefixLength"]["min"], 30);
        assert_eq!(v["spec"]["exportV4"][0]["source"], "RemotePeers");
    }

    #[test]
    fn bad_rules_are_refused_naming_each_field() {
        let f = filter(
            "apiVersion: crd.projectcalico.org/v1\nkind: BGPFilter\nmetadata: {name: bad}\nspec:\n  exportV4:\n  - {action: Accept, cidr: 10.0.0.0/8}\n  - {action: Reject, matchOperator: In}\n  - {action: Reject, matchOperator: In, cidr: 'fd00::/8'}\n  - {action: Reject, matchOperator: In, cidr: 10.0.0.1/8}\n  - {action: Reject, interface: eth0}\n  importV4:\n  - {action: Reject, matchOperator: Equal, cidr: 10.0.0.0/8, prefixLength: {max: 24}}\n  - {action: Reject, matchOperator: In, cidr: 10.0.0.0/16, prefixLength: {min: 8, max: 40}}\n  - {action: Reject, source: RemotePeers}\n  - {action: Reject, matchOperator: In, cidr: 10.0.0.0/8, prefixLength: {min: 28, max: 24}}\n",
        );
        let e = f.validate().unwrap_err();
        for field in [
            "spec.exportV4[0].matchOperator",
            "spec.exportV4[1].cidr",
            "spec.exportV4[2].cidr",
            "spec.exportV4[3].cidr",
            "spec.exportV4[4].interface",
            "spec.importV4[0].prefixLength",
            "spec.importV4[1].prefixLength.min",
            "spec.importV4[1].prefixLength.max",
            "spec.importV4[2].source",
            "spec.importV4[3].prefixLength",
        ] {
            assert!(e.has_field(field), "{field} not reported: {e}");
        }
        assert!(
            e.to_string().starts_with("BGPFilter \"bad\" is invalid"),
            "{e}"
        );
        // Unknown actions and operators are refused when parsing.
        assert!(
            serde_yaml_ng::from_str::<BGPFilter>(
                "apiVersion: crd.projectcalico.org/v1\nkind: BGPFilter\nmetadata: {name: x}\nspec:\n  exportV4: [{action: Drop}]\n"
            )
            .is_err()
        );
    }
}
