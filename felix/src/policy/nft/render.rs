//! The pure half of the dataplane: a [`PolicySnapshot`] in, the table felix
//! wants out ([`Desired`]: named sets with their elements, regular chains
//! with their rules as nft text, the two dispatch maps). No I/O; the same
//! snapshot always renders the same table, so two renders can be diffed
//! ([`super::script::delta`]).
//!
//! Names are derived from what a thing *is*, never from where it is used,
//! so that a pod coming or going changes set elements only and a changed
//! policy changes only its own chains:
//!
//! | name | what |
//! | --- | --- |
//! | `po-<h>-i` / `po-<h>-e` | a policy's ingress / egress rules (`h`: hash of its name) |
//! | `pr-<h>-i` / `pr-<h>-e` | a profile's rules |
//! | `pl-<h>-i` / `pl-<h>-e` | a list of profiles (an endpoint's), then drop |
//! | `to-<iface>` / `from-<iface>` | a local endpoint's ingress / egress: its policies in order |
//! | `s4-<h>` / `s6-<h>` | addresses of the endpoints an endpoint match selects |
//! | `n4-<h>` / `n6-<h>` | a list of nets (interval set) |
//! | `p4-<h>` / `p6-<h>` | address . protocol . port of every endpoint with a named port |
//!
//! Only policies that select at least one local endpoint are rendered, and
//! only the sets their rules use.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use ippool_crd::policy::{Action, PortMatch, Protocol};
use sha1::{Digest, Sha1};

use crate::policy::{
    Direction, Endpoint, EndpointMatch, EntityMatch, NamespaceMatch, Policy, PolicySnapshot,
    Profile, Rule,
};

/// The IP protocols whose header starts with the two ports (TCP, UDP,
/// SCTP, UDPLite): what a port match implies when the rule names no
/// protocol.
const PORT_PROTOCOLS: &str = "{ 6, 17, 132, 136 }";

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn number(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }

    /// The nft keyword of the network header (`ip` / `ip6`).
    fn ip(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn nfproto(self) -> &'static str {
        match self {
            Family::V4 => "meta nfproto ipv4",
            Family::V6 => "meta nfproto ipv6",
        }
    }

    /// ICMP of this family: its protocol and its nft keyword.
    fn icmp(self) -> (Protocol, &'static str) {
        match self {
            Family::V4 => (Protocol::ICMP, "icmp"),
            Family::V6 => (Protocol::ICMPV6, "icmpv6"),
        }
    }

    fn holds(self, ip: std::net::IpAddr) -> bool {
        ip.is_ipv4() == (self == Family::V4)
    }

    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    fn digit(self) -> char {
        match self {
            Family::V4 => '4',
            Family::V6 => '6',
        }
    }
}

/// What a named set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetKind {
    /// Endpoint addresses.
    Addr(Family),
    /// Networks (an interval set).
    Net(Family),
    /// `address . protocol . port` of endpoints' named ports.
    NamedPort(Family),
}

impl SetKind {
    /// The body of an nft set declaration, without elements.
    pub fn declaration(self) -> String {
        match self {
            SetKind::Addr(f) => format!("type {};", f.addr_type()),
            SetKind::Net(f) => format!("type {}; flags interval; auto-merge;", f.addr_type()),
            SetKind::NamedPort(f) => {
                format!("type {} . inet_proto . inet_service;", f.addr_type())
            }
        }
    }
}

/// A named set and its elements (as nft text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDef {
    pub kind: SetKind,
    /// What the set is, for a human reading `nft list table`.
    pub comment: String,
    pub elements: BTreeSet<String>,
}

/// A regular chain and its rules (as nft text, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDef {
    pub comment: String,
    pub rules: Vec<String>,
}

/// A policy (or profile) that could not be rendered: left out, the rest
/// enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {name:?} is not enforced by the nftables dataplane: {message}")]
pub struct RenderError {
    pub name: String,
    pub message: String,
}

/// Everything of the table that depends on the snapshot. The fixed part
/// (base chains, dispatch chains) is added by [`super::script`].
///
/// Sets and chains are shared (`Arc`) between the renders that did not
/// change them, so keeping the last table, cloning it and diffing two
/// renders cost about what changed ([`super::script::delta`] skips a
/// chain or set that is the same allocation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub sets: BTreeMap<String, Arc<SetDef>>,
    pub chains: BTreeMap<String, Arc<ChainDef>>,
    /// Host interface → its egress chain (`from-<iface>`).
    pub from_wl: BTreeMap<String, String>,
    /// Host interface → its ingress chain (`to-<iface>`).
    pub to_wl: BTreeMap<String, String>,
    /// Policies and profiles left out.
    pub skipped: Vec<RenderError>,
    /// Sets asked for and not yet filled (empty in a finished render).
    pending_sets: SetRequests,
}

/// Options of the rendering that are not in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// The packet mark bit a Pass rule sets to hand over to the profiles.
    pub pass_mark: u32,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            pass_mark: DEFAULT_PASS_MARK,
        }
    }
}

/// Bit 17, the bit Calico's felix uses for "pass" by default.
pub const DEFAULT_PASS_MARK: u32 = 0x0002_0000;

/// The first 12 hex digits of SHA-1(`text`): stable short names.
pub fn short_hash(text: &str) -> String {
    let digest = Sha1::digest(text.as_bytes());
    let mut s = String::with_capacity(12);
    for b in digest.iter().take(6) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Text safe inside an nft `comment "…"` (at most 120 characters, no
/// quotes or backslashes).
pub fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ./:_-=()!&|,'".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect()
}

fn dir_suffix(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "i",
        Direction::Egress => "e",
    }
}

fn dir_word(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

pub fn policy_chain(name: &str, d: Direction) -> String {
    format!("po-{}-{}", short_hash(name), dir_suffix(d))
}

pub fn profile_chain(name: &str, d: Direction) -> String {
    format!("pr-{}-{}", short_hash(name), dir_suffix(d))
}

pub fn endpoint_chain(iface: &str, d: Direction) -> String {
    match d {
        Direction::Ingress => format!("to-{iface}"),
        Direction::Egress => format!("from-{iface}"),
    }
}

/// A name the kernel could give an interface and nft can carry unquoted
/// in a chain name and quoted in a map element.
fn valid_iface(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Alternatives: a rule matches when all matches of any one alternative
/// do. `vec![]` never matches, `vec![vec![]]` always does.
type Alts = Vec<Vec<String>>;

fn always() -> Alts {
    vec![vec![]]
}

fn one(m: String) -> Alts {
    vec![vec![m]]
}

/// Both must hold: every pairing of an alternative of each.
fn and(a: Alts, b: Alts) -> Alts {
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in &a {
        for y in &b {
            let mut c = x.clone();
            c.extend(y.iter().cloned());
            out.push(c);
        }
    }
    out
}

/// What an endpoint address set selects: canonical text (the set's key).
fn endpoint_match_key(m: &EndpointMatch) -> String {
    let ns = match &m.namespace {
        NamespaceMatch::Any => "any".to_string(),
        NamespaceMatch::Named(n) => format!("ns={n}"),
        NamespaceMatch::Selector(s) => format!("nssel={s}"),
    };
    let sel = m
        .selector
        .as_ref()
        .map_or_else(|| "all()".to_string(), ToString::to_string);
    format!("{ns} sel={sel}")
}

/// The sets the rendered rules asked for; filled with elements at the end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct SetRequests {
    /// name → (family, the match).
    addr: BTreeMap<String, Arc<(Family, EndpointMatch)>>,
    /// name → (family, nets).
    net: BTreeMap<String, Arc<(Family, Vec<IpNetwork>)>>,
    /// name → (family, port name).
    port: BTreeMap<String, Arc<(Family, String)>>,
}

impl SetRequests {
    fn addr(&mut self, f: Family, m: &EndpointMatch) -> String {
        let name = format!("s{}-{}", f.digit(), short_hash(&endpoint_match_key(m)));
        self.addr
            .entry(name.clone())
            .or_insert_with(|| Arc::new((f, m.clone())));
        name
    }

    fn net(&mut self, f: Family, nets: &[IpNetwork]) -> String {
        let mut sorted: Vec<IpNetwork> = nets.to_vec();
        sorted.sort();
        sorted.dedup();
        let key: Vec<String> = sorted.iter().map(ToString::to_string).collect();
        let name = format!("n{}-{}", f.digit(), short_hash(&key.join(",")));
        self.net
            .entry(name.clone())
            .or_insert_with(|| Arc::new((f, sorted)));
        name
    }

    fn port(&mut self, f: Family, port_name: &str) -> String {
        let name = format!("p{}-{}", f.digit(), short_hash(port_name));
        self.port
            .entry(name.clone())
            .or_insert_with(|| Arc::new((f, port_name.to_string())));
        name
    }

    /// Asks for the same sets (so, the endpoints being the same, the same
    /// elements).
    fn same_names(&self, other: &SetRequests) -> bool {
        self.addr.keys().eq(other.addr.keys())
            && self.net.keys().eq(other.net.keys())
            && self.port.keys().eq(other.port.keys())
    }

    fn merge(&mut self, other: &SetRequests) {
        for (k, v) in &other.addr {
            self.addr.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &other.net {
            self.net.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &other.port {
            self.port.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// What a matching rule does, as the end of an nft rule; `None` renders
/// no rule (Pass in a profile: there is nothing after the profiles).
fn verdict(action: Action, in_profile: bool, opts: &RenderOptions, what: &str) -> Option<String> {
    Some(match action {
        Action::Allow => "accept".to_string(),
        Action::Deny => "drop".to_string(),
        Action::Log => format!("log prefix \"calico-rs {}: \"", comment_text(what)),
        Action::Pass if in_profile => return None,
        Action::Pass => format!("meta mark set meta mark | {:#010x} return", opts.pass_mark),
    })
}

/// Whether the rule needs a per-family rendering (it matches addresses,
/// ICMP types or an IP version).
fn family_specific(rule: &Rule) -> bool {
    let entity = |e: &EntityMatch| {
        !e.nets.is_empty()
            || !e.not_nets.is_empty()
            || e.endpoints.is_some()
            || e.not_selector.is_some()
            || e.ports
                .iter()
                .chain(&e.not_ports)
                .any(|p| matches!(p, PortMatch::Named(_)))
    };
    rule.ip_version.is_some()
        || rule.icmp.is_some()
        || rule.not_icmp.is_some()
        || entity(&rule.source)
        || entity(&rule.destination)
}

fn port_set_text(ranges: &[(u16, u16)]) -> Result<String, String> {
    let mut parts = Vec::with_capacity(ranges.len());
    for &(a, b) in ranges {
        if a > b {
            return Err(format!("port range {a}:{b} is backwards"));
        }
        parts.push(if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        });
    }
    Ok(format!("{{ {} }}", parts.join(", ")))
}

fn split_ports(list: &[PortMatch]) -> (Vec<(u16, u16)>, Vec<&str>) {
    let mut ranges = Vec::new();
    let mut names = Vec::new();
    for p in list {
        match p {
            PortMatch::Range(a, b) => ranges.push((*a, *b)),
            PortMatch::Named(n) => names.push(n.as_str()),
        }
    }
    (ranges, names)
}

/// One side of a rule (`source` with `saddr`/`sport`, or `destination`).
fn entity_alts(
    e: &EntityMatch,
    side: Side,
    fam: Option<Family>,
    protocol: Option<Protocol>,
    sets: &mut SetRequests,
) -> Result<Alts, String> {
    let (addr, port) = match side {
        Side::Source => ("saddr", "sport"),
        Side::Destination => ("daddr", "dport"),
    };
    let mut alts = always();
    // Address matches only appear in a per-family rendering.
    if let Some(f) = fam {
        let ip = f.ip();
        if !e.nets.is_empty() {
            let mine: Vec<IpNetwork> = e.nets.iter().copied().filter(|n| f.holds(n.ip())).collect();
            if mine.is_empty() {
                return Ok(vec![]);
            }
            let set = sets.net(f, &mine);
            alts = and(alts, one(format!("{ip} {addr} @{set}")));
        }
        let not_mine: Vec<IpNetwork> = e
            .not_nets
            .iter()
            .copied()
            .filter(|n| f.holds(n.ip()))
            .collect();
        if !not_mine.is_empty() {
            let set = sets.net(f, &not_mine);
            alts = and(alts, one(format!("{ip} {addr} != @{set}")));
        }
        if let Some(m) = &e.endpoints {
            let set = sets.addr(f, m);
            alts = and(alts, one(format!("{ip} {addr} @{set}")));
        }
        if let Some(s) = &e.not_selector {
            let m = EndpointMatch {
                namespace: NamespaceMatch::Any,
                selector: Some(s.clone()),
            };
            let set = sets.addr(f, &m);
            alts = and(alts, one(format!("{ip} {addr} != @{set}")));
        }
    }
    // Which packets have ports at all, given the rule's protocol.
    let guard: Option<Option<String>> = match protocol {
        Some(p) if p.has_ports() => Some(None),
        Some(_) => None,
        None => Some(Some(format!("meta l4proto {PORT_PROTOCOLS}"))),
    };
    if !e.ports.is_empty() {
        let Some(guard) = &guard else {
            // A protocol without ports never has a matching port.
            return Ok(vec![]);
        };
        let (ranges, names) = split_ports(&e.ports);
        let mut any: Alts = Vec::new();
        if !ranges.is_empty() {
            let mut c: Vec<String> = guard.iter().cloned().collect();
            c.push(format!("th {port} {}", port_set_text(&ranges)?));
            any.push(c);
        }
        for name in names {
            let Some(f) = fam else {
                return Err("a named port outside a per-family rendering".into());
            };
            let set = sets.port(f, name);
            any.push(vec![format!(
                "{} {addr} . meta l4proto . th {port} @{set}",
                f.ip()
            )]);
        }
        alts = and(alts, any);
    }
    if !e.not_ports.is_empty()
        && let Some(guard) = &guard
    {
        let (ranges, names) = split_ports(&e.not_ports);
        let mut any: Alts = Vec::new();
        if guard.is_some() {
            // No ports at all: no port to exclude.
            any.push(vec![format!("meta l4proto != {PORT_PROTOCOLS}")]);
        }
        let mut c: Vec<String> = guard.iter().cloned().collect();
        if !ranges.is_empty() {
            c.push(format!("th {port} != {}", port_set_text(&ranges)?));
        }
        for name in names {
            let Some(f) = fam else {
                return Err("a named port outside a per-family rendering".into());
            };
            let set = sets.port(f, name);
            c.push(format!(
                "{} {addr} . meta l4proto . th {port} != @{set}",
                f.ip()
            ));
        }
        any.push(c);
        alts = and(alts, any);
    }
    Ok(alts)
}

#[derive(Clone, Copy)]
enum Side {
    Source,
    Destination,
}

/// The nft rules for one model rule (one per alternative and family), each
/// ending in `verdict`.
fn render_rule(rule: &Rule, verdict: &str, sets: &mut SetRequests) -> Result<Vec<String>, String> {
    if let Some(v) = rule.ip_version
        && v != 4
        && v != 6
    {
        return Err(format!("ipVersion {v} is not 4 or 6"));
    }
    let families: Vec<Option<Family>> = if family_specific(rule) {
        Family::BOTH.iter().copied().map(Some).collect()
    } else {
        vec![None]
    };
    let mut out = Vec::new();
    for fam in families {
        let mut alts = always();
        if let Some(f) = fam {
            if rule.ip_version.is_some_and(|v| v != f.number()) {
                continue;
            }
            alts = and(alts, one(f.nfproto().to_string()));
        }
        if let Some(p) = rule.protocol {
            if let (Some(pv), Some(f)) = (p.ip_version(), fam)
                && pv != f.number()
            {
                continue;
            }
            alts = and(alts, one(format!("meta l4proto {}", p.number())));
        }
        if let Some(p) = rule.not_protocol {
            alts = and(alts, one(format!("meta l4proto != {}", p.number())));
        }
        if let Some(m) = &rule.icmp {
            let Some(f) = fam else {
                return Err("an ICMP match outside a per-family rendering".into());
            };
            let (icmp_proto, kw) = f.icmp();
            if rule.protocol.is_some_and(|p| p != icmp_proto) {
                continue;
            }
            let mut text = format!("{kw} type {}", m.icmp_type);
            if let Some(c) = m.code {
                let _ = write!(text, " {kw} code {c}");
            }
            alts = and(alts, one(text));
        }
        if let Some(m) = &rule.not_icmp {
            let Some(f) = fam else {
                return Err("an ICMP match outside a per-family rendering".into());
            };
            let (icmp_proto, kw) = f.icmp();
            match rule.protocol {
                // Not this family's ICMP at all: nothing to exclude.
                Some(p) if p != icmp_proto => {}
                p => {
                    let mut any: Alts = Vec::new();
                    if p.is_none() {
                        any.push(vec![format!("meta l4proto != {}", icmp_proto.number())]);
                    }
                    any.push(vec![format!("{kw} type != {}", m.icmp_type)]);
                    if let Some(c) = m.code {
                        any.push(vec![
                            format!("{kw} type {}", m.icmp_type),
                            format!("{kw} code != {c}"),
                        ]);
                    }
                    alts = and(alts, any);
                }
            }
        }
        alts = and(
            alts,
            entity_alts(&rule.source, Side::Source, fam, rule.protocol, sets)?,
        );
        alts = and(
            alts,
            entity_alts(
                &rule.destination,
                Side::Destination,
                fam,
                rule.protocol,
                sets,
            )?,
        );
        for a in alts {
            let mut text = a.join(" ");
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(verdict);
            out.push(text);
        }
    }
    Ok(out)
}

/// A policy's rules in one direction, as its chain.
fn render_rules(
    what: &str,
    rules: &[Rule],
    in_profile: bool,
    opts: &RenderOptions,
    sets: &mut SetRequests,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let Some(v) = verdict(rule.action, in_profile, opts, what) else {
            continue;
        };
        let lines = render_rule(rule, &v, sets).map_err(|e| format!("rule {i}: {e}"))?;
        out.extend(lines);
    }
    Ok(out)
}

/// Whether any rule passes (so endpoint chains must look for the mark).
fn has_pass(rules: &[Rule]) -> bool {
    rules.iter().any(|r| r.action == Action::Pass)
}

/// An endpoint and the labels its selectors see.
struct Labeled<'a> {
    ep: &'a Endpoint,
    labels: &'a BTreeMap<String, String>,
    ns_labels: &'a BTreeMap<String, String>,
}

fn selects(m: &EndpointMatch, l: &Labeled<'_>) -> bool {
    let ns_ok = match &m.namespace {
        NamespaceMatch::Any => true,
        NamespaceMatch::Named(n) => l.ep.namespace == *n,
        NamespaceMatch::Selector(s) => s.matches(l.ns_labels),
    };
    ns_ok && m.selector.as_ref().is_none_or(|s| s.matches(l.labels))
}

fn policy_selects(p: &Policy, l: &Labeled<'_>) -> bool {
    if let Some(ns) = &p.namespace
        && *ns != l.ep.namespace
    {
        return false;
    }
    if let Some(s) = &p.namespace_selector
        && !s.matches(l.ns_labels)
    {
        return false;
    }
    p.selector.matches(l.labels)
}

/// Renders the table for `snap` (which should be `synced`; the caller
/// decides). [`Renderer`] does the same, reusing its previous work.
pub fn render(snap: &PolicySnapshot, opts: &RenderOptions) -> Desired {
    Renderer::new(*opts).render(snap)
}

/// The policies (indices in the set's order) that select one endpoint,
/// per direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Selected {
    ingress: Vec<usize>,
    egress: Vec<usize>,
}

impl Selected {
    fn of(&self, d: Direction) -> &[usize] {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    fn compute(policies: &[Policy], ep: &Endpoint) -> Selected {
        let (labels, ns_labels) = (ep.selector_labels(), ep.namespace_selector_labels());
        let l = Labeled {
            ep,
            labels: &labels,
            ns_labels: &ns_labels,
        };
        let mut s = Selected::default();
        for (i, p) in policies.iter().enumerate() {
            if (p.applies_ingress || p.applies_egress) && policy_selects(p, &l) {
                if p.applies_ingress {
                    s.ingress.push(i);
                }
                if p.applies_egress {
                    s.egress.push(i);
                }
            }
        }
        s
    }
}

/// What decides which endpoints a policy selects, and where it sorts.
#[derive(Debug, Clone, PartialEq)]
struct SelectionKey {
    name: String,
    namespace: Option<String>,
    namespace_selector: Option<ippool_crd::Selector>,
    selector: ippool_crd::Selector,
    applies: (bool, bool),
}

impl SelectionKey {
    fn of(p: &Policy) -> SelectionKey {
        SelectionKey {
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            namespace_selector: p.namespace_selector.clone(),
            selector: p.selector.clone(),
            applies: (p.applies_ingress, p.applies_egress),
        }
    }

    fn same(&self, p: &Policy) -> bool {
        self.name == p.name
            && self.namespace == p.namespace
            && self.namespace_selector == p.namespace_selector
            && self.selector == p.selector
            && self.applies == (p.applies_ingress, p.applies_egress)
    }
}

/// A policy's rules in one direction, rendered: its chain, the sets the
/// rules use, whether any rule passes.
#[derive(Debug)]
struct RenderedRules {
    chain: Arc<ChainDef>,
    sets: SetRequests,
    pass: bool,
}

/// What a policy renders to in one direction (`Err`: why it cannot be).
type Rendered = Result<Arc<RenderedRules>, String>;

/// A renderer that remembers its last render, so rendering the next
/// snapshot costs about what changed: a policy whose content is the same
/// reuses its chain, an unchanged local endpoint its selection (while no
/// policy's selector or order changed), and a set's elements are
/// recomputed only for the endpoints that changed. When only the rules of
/// some policies or remote endpoints changed (the same selections, local
/// endpoints, interfaces and profiles), the last table is patched: those
/// policies' chains are replaced, the sets updated, and nothing else is
/// rebuilt. The output is always
/// exactly [`render`]'s.
#[derive(Debug, Default)]
pub struct Renderer {
    opts: RenderOptions,
    /// Policy name → the policy as rendered, and its chains.
    policies: HashMap<String, PolicyEntry>,
    /// Set elements, per endpoint.
    sets: sets::SetCache,
    /// The selecting parts of the policies, in order, as of the last
    /// render; while they stay the same, an unchanged local endpoint keeps
    /// its selection.
    selection_keys: Vec<SelectionKey>,
    selection: HashMap<String, (Endpoint, Selected)>,
    /// The last render and what it was made from besides the policies.
    last: Option<Last>,
}

#[derive(Debug)]
struct PolicyEntry {
    policy: Policy,
    /// Ingress, egress: rendered when some local endpoint used it.
    rendered: [Option<Rendered>; 2],
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

#[derive(Debug)]
struct Last {
    local: BTreeMap<String, String>,
    profiles: BTreeMap<String, Profile>,
    /// The sets the table uses.
    requests: SetRequests,
    desired: Desired,
}

impl Renderer {
    pub fn new(opts: RenderOptions) -> Renderer {
        Renderer {
            opts,
            ..Renderer::default()
        }
    }

    /// Renders `snap`.
    pub fn render(&mut self, snap: &PolicySnapshot) -> Desired {
        let policies = snap.policies.policies();
        let same_keys = self.selection_keys.len() == policies.len()
            && self
                .selection_keys
                .iter()
                .zip(policies)
                .all(|(k, p)| k.same(p));
        let changed_endpoints = self.sets.update(&snap.endpoints);
        if same_keys && let Some(d) = self.patch(snap, &changed_endpoints) {
            return d;
        }
        if !same_keys {
            self.selection_keys = policies.iter().map(SelectionKey::of).collect();
            self.selection.clear();
        }
        let opts = &self.opts.clone();
        let mut prev_selection = std::mem::take(&mut self.selection);
        let mut selection = HashMap::with_capacity(snap.local.len());
        let mut select = |id: &str, ep: &Endpoint| -> Selected {
            let (ep, s) = match prev_selection.remove(id) {
                Some((prev, s)) if prev == *ep => (prev, s),
                _ => (ep.clone(), Selected::compute(policies, ep)),
            };
            let out = s.clone();
            selection.insert(id.to_string(), (ep, s));
            out
        };
        let mut cache = std::mem::take(&mut self.policies);
        let mut used: HashMap<String, PolicyEntry> = HashMap::new();
        let mut d = render_with(
            snap,
            opts,
            &mut |p: &Policy, dir: Direction| {
                let entry = match used.get_mut(p.name.as_str()) {
                    Some(e) => e,
                    None => {
                        let e = match cache.remove(p.name.as_str()) {
                            Some(e) if e.policy == *p => e,
                            _ => PolicyEntry {
                                policy: p.clone(),
                                rendered: [None, None],
                            },
                        };
                        used.entry(p.name.clone()).or_insert(e)
                    }
                };
                entry.rendered[dir_index(dir)]
                    .get_or_insert_with(|| render_policy(p, dir, opts))
                    .clone()
            },
            &mut select,
        );
        self.policies = used;
        self.selection = selection;
        let requests = std::mem::take(&mut d.pending_sets);
        self.sets.fill(&mut d, requests.clone(), &changed_endpoints);
        self.last = Some(Last {
            local: snap.local.clone(),
            profiles: snap.policies.profiles().clone(),
            requests,
            desired: d.clone(),
        });
        d
    }

    /// The last table with the chains of the policies whose rules alone
    /// changed replaced and the elements the changed remote endpoints
    /// bring or take, or `None` when anything else may have changed (the
    /// caller checked the selections): a policy that starts or stops
    /// rendering, passing, or using a set, a local endpoint, an interface
    /// or a profile changed.
    fn patch(&mut self, snap: &PolicySnapshot, changed_endpoints: &[String]) -> Option<Desired> {
        let last = self.last.as_mut()?;
        if last.local != snap.local
            || last.profiles != *snap.policies.profiles()
            || changed_endpoints
                .iter()
                .any(|id| snap.local.contains_key(id))
        {
            return None;
        }
        let mut staged = Vec::new();
        for p in snap.policies.policies() {
            let Some(entry) = self.policies.get(p.name.as_str()) else {
                // Selects no local endpoint: not in the table.
                continue;
            };
            if entry.policy == *p {
                continue;
            }
            let mut rendered: [Option<Rendered>; 2] = [None, None];
            for dir in [Direction::Ingress, Direction::Egress] {
                let i = dir_index(dir);
                let Some(old) = &entry.rendered[i] else {
                    continue;
                };
                let new = render_policy(p, dir, &self.opts);
                let same_shape = match (old, &new) {
                    (Ok(a), Ok(b)) => a.pass == b.pass && a.sets.same_names(&b.sets),
                    (Err(a), Err(b)) => a == b,
                    _ => false,
                };
                if !same_shape {
                    return None;
                }
                rendered[i] = Some(new);
            }
            staged.push((p, rendered));
        }
        for (p, rendered) in staged {
            for dir in [Direction::Ingress, Direction::Egress] {
                if let Some(Ok(r)) = &rendered[dir_index(dir)] {
                    last.desired
                        .chains
                        .insert(policy_chain(&p.name, dir), r.chain.clone());
                }
            }
            self.policies.insert(
                p.name.clone(),
                PolicyEntry {
                    policy: p.clone(),
                    rendered,
                },
            );
        }
        // Remote endpoints only change set elements.
        if !changed_endpoints.is_empty() {
            self.sets
                .fill(&mut last.desired, last.requests.clone(), changed_endpoints);
        }
        Some(last.desired.clone())
    }
}

/// One policy's chain in one direction.
fn render_policy(p: &Policy, dir: Direction, opts: &RenderOptions) -> Rendered {
    let what = format!("{} {}", p.name, dir_word(dir));
    let mut sets = SetRequests::default();
    let lines = render_rules(&what, p.rules(dir), false, opts, &mut sets)?;
    Ok(Arc::new(RenderedRules {
        chain: Arc::new(ChainDef {
            comment: comment_text(&format!("policy {what}")),
            rules: lines,
        }),
        sets,
        pass: has_pass(p.rules(dir)),
    }))
}

/// The render, with policy rules from `rules_of`; leaves the set requests
/// in `pending_sets` for the caller to fill.
fn render_with(
    snap: &PolicySnapshot,
    opts: &RenderOptions,
    rules_of: &mut dyn FnMut(&Policy, Direction) -> Rendered,
    select: &mut dyn FnMut(&str, &Endpoint) -> Selected,
) -> Desired {
    let mut d = Desired::default();
    let mut sets = SetRequests::default();
    // Rendered policy chains: (policy name, direction) → has a Pass rule;
    // absent when the policy failed to render.
    let mut rendered: BTreeMap<(String, Direction), Option<bool>> = BTreeMap::new();
    let mut profile_lists: BTreeMap<(Vec<String>, Direction), String> = BTreeMap::new();

    for (id, iface) in &snap.local {
        if !valid_iface(iface) {
            tracing::error!(endpoint = %id, %iface, "not a Linux interface name; the endpoint gets no chains and its traffic is dropped");
            d.skipped.push(RenderError {
                name: id.clone(),
                message: format!("interface name {iface:?} is not a Linux interface name"),
            });
            continue;
        }
        let Some(ep) = snap.endpoints.get(id) else {
            tracing::warn!(endpoint = %id, %iface, "a local interface has no endpoint in the snapshot; its traffic is dropped");
            continue;
        };
        let selected = select(id, ep);
        for dir in [Direction::Ingress, Direction::Egress] {
            let mut rules = Vec::new();
            let selecting: Vec<&Policy> = selected
                .of(dir)
                .iter()
                .filter_map(|i| snap.policies.policies().get(*i))
                .collect();
            let mut chosen: Vec<(&Policy, bool)> = Vec::new();
            for p in selecting {
                let key = (p.name.clone(), dir);
                let state = match rendered.get(&key) {
                    Some(s) => *s,
                    None => {
                        let s = match rules_of(p, dir) {
                            Ok(r) => {
                                sets.merge(&r.sets);
                                d.chains.insert(policy_chain(&p.name, dir), r.chain.clone());
                                Some(r.pass)
                            }
                            Err(message) => {
                                tracing::error!(policy = %p.name, direction = dir_word(dir), %message, "policy not enforced: it cannot be rendered");
                                d.skipped.push(RenderError {
                                    name: p.name.clone(),
                                    message: format!("{}: {message}", dir_word(dir)),
                                });
                                None
                            }
                        };
                        rendered.insert(key, s);
                        s
                    }
                };
                if let Some(pass) = state {
                    chosen.push((p, pass));
                }
            }
            let profiles = profile_list_chain(
                &ep.profiles,
                dir,
                snap,
                opts,
                &mut sets,
                &mut d,
                &mut profile_lists,
            );
            let any_pass = chosen.iter().any(|(_, pass)| *pass);
            if any_pass {
                rules.push(format!(
                    "meta mark set meta mark & {:#010x}",
                    !opts.pass_mark
                ));
            }
            for (p, pass) in &chosen {
                rules.push(format!("jump {}", policy_chain(&p.name, dir)));
                if *pass {
                    rules.push(format!(
                        "meta mark & {m:#010x} == {m:#010x} goto {profiles}",
                        m = opts.pass_mark
                    ));
                }
            }
            if chosen.is_empty() {
                rules.push(format!("goto {profiles}"));
            } else {
                rules.push("drop comment \"no policy allowed it\"".into());
            }
            let chain = endpoint_chain(iface, dir);
            d.chains.insert(
                chain.clone(),
                Arc::new(ChainDef {
                    comment: comment_text(&format!("{} of {id}", dir_word(dir))),
                    rules,
                }),
            );
            match dir {
                Direction::Ingress => d.to_wl.insert(iface.clone(), chain),
                Direction::Egress => d.from_wl.insert(iface.clone(), chain),
            };
        }
    }
    d.pending_sets = sets;
    d
}

/// The chain that applies an endpoint's profiles in order, then drops;
/// shared by every endpoint with the same list. Renders the profiles.
fn profile_list_chain(
    names: &[String],
    dir: Direction,
    snap: &PolicySnapshot,
    opts: &RenderOptions,
    sets: &mut SetRequests,
    d: &mut Desired,
    lists: &mut BTreeMap<(Vec<String>, Direction), String>,
) -> String {
    let key = (names.to_vec(), dir);
    if let Some(c) = lists.get(&key) {
        return c.clone();
    }
    let chain = format!("pl-{}-{}", short_hash(&names.join(",")), dir_suffix(dir));
    let mut rules = vec![format!(
        "meta mark set meta mark & {:#010x}",
        !opts.pass_mark
    )];
    for name in names {
        let Some(profile) = snap.policies.profile(name) else {
            continue;
        };
        let pchain = profile_chain(name, dir);
        if !d.chains.contains_key(&pchain) {
            let what = format!("profile {name} {}", dir_word(dir));
            let mut mine = SetRequests::default();
            match render_rules(&what, profile.rules(dir), true, opts, &mut mine) {
                Ok(lines) => {
                    sets.merge(&mine);
                    d.chains.insert(
                        pchain.clone(),
                        Arc::new(ChainDef {
                            comment: comment_text(&what),
                            rules: lines,
                        }),
                    );
                }
                Err(message) => {
                    tracing::error!(profile = %name, %message, "profile not enforced: it cannot be rendered");
                    d.skipped.push(RenderError {
                        name: name.clone(),
                        message,
                    });
                    continue;
                }
            }
        }
        rules.push(format!("jump {pchain}"));
    }
    rules.push("drop comment \"no profile allowed it\"".into());
    d.chains.insert(
        chain.clone(),
        Arc::new(ChainDef {
            comment: comment_text(&format!("profiles {} {}", names.join(","), dir_word(dir))),
            rules,
        }),
    );
    lists.insert(key, chain.clone());
    chain
}

mod sets;
#[cfg(test)]
mod tests;
