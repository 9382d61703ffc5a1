//! The verdict: what the policy model does to one flow. Pure, and the
//! reference the dataplane is tested against.
//!
//! Per endpoint and direction (Calico's semantics, one tier):
//! 1. The policies that select the endpoint and apply in the direction,
//!    in order. In each, the first rule that matches decides: Allow or
//!    Deny end evaluation; Log is recorded and evaluation goes on with the
//!    next rule; Pass ends the policies and hands over to the profiles.
//! 2. When policies applied and none decided: deny (the end-of-tier drop;
//!    for Kubernetes policies, "a selected pod is isolated").
//! 3. When no policy applied, or after a Pass: the endpoint's profiles in
//!    order, the same way; a profile match decides, and when none does:
//!    deny. A namespace profile allows everything.
//!
//! A flow between two endpoints must be allowed by the source's egress and
//! then the destination's ingress; a bare address has no policy of its own.

use std::net::IpAddr;

use ippool_crd::policy::{Action, PortMatch};

use super::endpoint::{Endpoint, Flow, Peer};
use super::model::{Direction, EntityMatch, NamespaceMatch, PolicySet, Rule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
}

/// A verdict and what decided it, for messages and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// E.g. `egress of ns/a: policy ns/p rule 2 (Deny)`.
    pub reason: String,
}

/// The packet as a rule sees it: both ends, their addresses, the flow.
struct Packet<'a> {
    src: Peer<'a>,
    dst: Peer<'a>,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    flow: Flow,
}

/// The end-to-end verdict for `flow` from `src` to `dst`.
pub fn verdict(set: &PolicySet, src: Peer<'_>, dst: Peer<'_>, flow: Flow) -> Verdict {
    explain(set, src, dst, flow).verdict
}

/// [`verdict`], with the reason.
pub fn explain(set: &PolicySet, src: Peer<'_>, dst: Peer<'_>, flow: Flow) -> Decision {
    let Some(pkt) = packet(src, dst, flow) else {
        return Decision {
            verdict: Verdict::Deny,
            reason: "the two ends have no addresses of one IP version".into(),
        };
    };
    let mut reasons = Vec::new();
    for (ep, d) in [(src, Direction::Egress), (dst, Direction::Ingress)] {
        let Some(ep) = ep.endpoint() else { continue };
        let dec = direction(set, ep, d, &pkt);
        if dec.verdict == Verdict::Deny {
            return dec;
        }
        reasons.push(dec.reason);
    }
    Decision {
        verdict: Verdict::Allow,
        reason: if reasons.is_empty() {
            "neither end is a workload endpoint".into()
        } else {
            reasons.join("; ")
        },
    }
}

/// The verdict of one endpoint's policy in one direction: `ep` is the
/// destination for Ingress and the source for Egress; `peer` the other end.
pub fn verdict_in(
    set: &PolicySet,
    ep: &Endpoint,
    d: Direction,
    peer: Peer<'_>,
    flow: Flow,
) -> Decision {
    let (src, dst) = match d {
        Direction::Ingress => (peer, Peer::Endpoint(ep)),
        Direction::Egress => (Peer::Endpoint(ep), peer),
    };
    match packet(src, dst, flow) {
        Some(pkt) => direction(set, ep, d, &pkt),
        None => Decision {
            verdict: Verdict::Deny,
            reason: "the two ends have no addresses of one IP version".into(),
        },
    }
}

fn packet<'a>(src: Peer<'a>, dst: Peer<'a>, flow: Flow) -> Option<Packet<'a>> {
    // The flow's IP version: ICMP is IPv4, ICMPv6 is IPv6; otherwise the
    // first family both ends have.
    let families: &[u8] = match flow.protocol.ip_version() {
        Some(4) => &[4],
        Some(6) => &[6],
        _ => &[4, 6],
    };
    families.iter().find_map(|f| {
        Some(Packet {
            src,
            dst,
            src_ip: src.address(Some(*f))?,
            dst_ip: dst.address(Some(*f))?,
            flow,
        })
    })
}

fn direction(set: &PolicySet, ep: &Endpoint, d: Direction, pkt: &Packet<'_>) -> Decision {
    let dir = match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let at = format!("{dir} of {}", ep.id());
    let mut selected = false;
    let mut passed = None;
    'policies: for p in set.selecting(ep, d) {
        selected = true;
        for (i, rule) in p.rules(d).iter().enumerate() {
            if !matches(rule, pkt) {
                continue;
            }
            let what = format!("policy {} rule {i} ({})", p.name, rule.action.as_str());
            match rule.action {
                Action::Allow => return decided(Verdict::Allow, &at, what),
                Action::Deny => return decided(Verdict::Deny, &at, what),
                Action::Log => {}
                Action::Pass => {
                    passed = Some(what);
                    break 'policies;
                }
            }
        }
    }
    if selected && passed.is_none() {
        return decided(
            Verdict::Deny,
            &at,
            "policies select it and no rule matched (end-of-tier drop)".into(),
        );
    }
    let via = passed.map_or_else(String::new, |w| format!("after {w}, "));
    for name in &ep.profiles {
        let Some(profile) = set.profile(name) else {
            continue;
        };
        for (i, rule) in profile.rules(d).iter().enumerate() {
            if !matches(rule, pkt) {
                continue;
            }
            let what = format!("{via}profile {name} rule {i} ({})", rule.action.as_str());
            match rule.action {
                Action::Allow => return decided(Verdict::Allow, &at, what),
                Action::Deny => return decided(Verdict::Deny, &at, what),
                // Pass has no further tier to go to in a profile.
                Action::Log | Action::Pass => {}
            }
        }
    }
    decided(
        Verdict::Deny,
        &at,
        format!("{via}no profile rule matched (profiles {:?})", ep.profiles),
    )
}

fn decided(verdict: Verdict, at: &str, what: String) -> Decision {
    Decision {
        verdict,
        reason: format!("{at}: {what}"),
    }
}

/// Whether every part of `rule` matches the packet.
fn matches(rule: &Rule, pkt: &Packet<'_>) -> bool {
    let flow = &pkt.flow;
    if let Some(v) = rule.ip_version {
        let is = if pkt.src_ip.is_ipv4() { 4 } else { 6 };
        if v != is {
            return false;
        }
    }
    if rule.protocol.is_some_and(|p| p != flow.protocol) {
        return false;
    }
    if rule.not_protocol.is_some_and(|p| p == flow.protocol) {
        return false;
    }
    let icmp_hits = |m: &super::model::IcmpMatch| {
        flow.icmp
            .is_some_and(|(t, c)| t == m.icmp_type && m.code.is_none_or(|code| code == c))
    };
    if let Some(m) = &rule.icmp
        && !icmp_hits(m)
    {
        return false;
    }
    if let Some(m) = &rule.not_icmp
        && icmp_hits(m)
    {
        return false;
    }
    entity_matches(&rule.source, pkt.src, pkt.src_ip, flow.src_port, pkt)
        && entity_matches(&rule.destination, pkt.dst, pkt.dst_ip, flow.dst_port, pkt)
}

fn entity_matches(
    m: &EntityMatch,
    peer: Peer<'_>,
    ip: IpAddr,
    port: Option<u16>,
    pkt: &Packet<'_>,
) -> bool {
    if !m.nets.is_empty() && !m.nets.iter().any(|n| n.contains(ip)) {
        return false;
    }
    if m.not_nets.iter().any(|n| n.contains(ip)) {
        return false;
    }
    if let Some(em) = &m.endpoints {
        let Some(ep) = peer.endpoint() else {
            return false;
        };
        let in_namespace = match &em.namespace {
            NamespaceMatch::Any => true,
            NamespaceMatch::Named(ns) => ep.namespace == *ns,
            NamespaceMatch::Selector(s) => s.matches(&ep.namespace_selector_labels()),
        };
        if !in_namespace {
            return false;
        }
        if let Some(s) = &em.selector
            && !s.matches(&ep.selector_labels())
        {
            return false;
        }
    }
    if let Some(s) = &m.not_selector
        && let Some(ep) = peer.endpoint()
        && s.matches(&ep.selector_labels())
    {
        return false;
    }
    let port_hits = |pm: &PortMatch| port_matches(pm, peer, port, pkt);
    if !m.ports.is_empty() && !m.ports.iter().any(port_hits) {
        return false;
    }
    !m.not_ports.iter().any(port_hits)
}

/// A number or range matches the port; a named port matches when the
/// peer is an endpoint with a port of that name, protocol and number.
fn port_matches(pm: &PortMatch, peer: Peer<'_>, port: Option<u16>, pkt: &Packet<'_>) -> bool {
    let Some(port) = port else { return false };
    match pm {
        PortMatch::Range(a, b) => (*a..=*b).contains(&port),
        PortMatch::Named(name) => peer
            .endpoint()
            .and_then(|ep| ep.named_ports.get(name))
            .is_some_and(|np| np.port == port && np.protocol == pkt.flow.protocol),
    }
}
