//! nft scripts from rendered tables: [`full`] replaces the whole table in
//! one transaction (start-up, resync, recovery); [`delta`] turns one
//! rendered table into another, also in one transaction, touching only
//! what differs (set elements for a pod coming or going, the chains of a
//! changed policy).
//!
//! The fixed part of the table, around the rendered chains:
//!
//! ```text
//! table inet calico-rs-filter {
//!   map from-wl { type ifname : verdict; }         # cali… → goto from-cali…
//!   map to-wl   { type ifname : verdict; }         # cali… → goto to-cali…
//!   chain forward-egress  { type filter hook forward priority filter; iifname "cali*" jump from-wl-dispatch }
//!   chain forward-ingress { type filter hook forward priority filter + 1; oifname "cali*" jump to-wl-dispatch }
//!   chain input           { type filter hook input priority filter; iifname "cali*" goto wl-to-host }
//!   chain from-wl-dispatch { ct state established,related accept; ct state invalid drop;
//!                            iifname vmap @from-wl; drop }
//!   chain to-wl-dispatch   { … oifname vmap @to-wl; drop }
//!   chain wl-to-host { ICMPv6 neighbour discovery accept; goto from-wl-dispatch }
//! }
//! ```
//!
//! Egress and ingress are two base chains on the forward hook: an accept
//! ends only its own base chain, so a packet between two local pods is
//! allowed by the source's egress and then judged by the destination's
//! ingress; a drop in either is final. Every endpoint chain ends in a
//! verdict. Host-to-pod traffic is not policed (Calico's choice, so the
//! kubelet's probes reach every pod); pod-to-host traffic passes the pod's
//! egress policy, then `DefaultEndpointToHostAction` applies.

use std::fmt::Write as _;

use super::render::{ChainDef, Desired, SetDef};

/// What the fixed part of the table depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOptions {
    pub table: String,
    /// Workload interfaces: this prefix followed by anything.
    pub iface_prefix: String,
    /// `DefaultEndpointToHostAction`: after a pod's egress policy allows a
    /// packet to the host itself, accept it (`true`, Calico's Kubernetes
    /// default) or drop it.
    pub endpoint_to_host_accept: bool,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            table: super::DEFAULT_TABLE.to_string(),
            iface_prefix: "cali".to_string(),
            endpoint_to_host_accept: true,
        }
    }
}

/// ICMPv6 a pod needs to reach its host at all (multicast listener
/// messages, router and neighbour solicitation and advertisement), accepted
/// before the pod's egress policy as Calico does.
const ICMPV6_TO_HOST: &str = "{ 130, 131, 132, 133, 135, 136 }";

fn elements_clause(elements: &std::collections::BTreeSet<String>) -> String {
    if elements.is_empty() {
        return String::new();
    }
    let list: Vec<&str> = elements.iter().map(String::as_str).collect();
    format!(" elements = {{ {} }};", list.join(", "))
}

fn map_clause(map: &std::collections::BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return String::new();
    }
    let list: Vec<String> = map
        .iter()
        .map(|(iface, chain)| format!("\"{iface}\" : goto {chain}"))
        .collect();
    format!(" elements = {{ {} }};", list.join(", "))
}

fn set_block(name: &str, s: &SetDef) -> String {
    format!(
        "\tset {name} {{ {} comment \"{}\";{} }}\n",
        s.kind.declaration(),
        s.comment,
        elements_clause(&s.elements)
    )
}

fn chain_block(name: &str, c: &ChainDef) -> String {
    let mut out = format!("\tchain {name} {{\n\t\tcomment \"{}\";\n", c.comment);
    for r in &c.rules {
        let _ = writeln!(out, "\t\t{r}");
    }
    out.push_str("\t}\n");
    out
}

/// The fixed chains (base chains and dispatch).
fn fixed_chains(o: &TableOptions) -> String {
    let wl = format!("\"{}*\"", o.iface_prefix);
    let to_host = if o.endpoint_to_host_accept {
        "\t\tgoto from-wl-dispatch\n".to_string()
    } else {
        "\t\tct state established,related accept\n\t\tdrop comment \"DefaultEndpointToHostAction Drop\"\n"
            .to_string()
    };
    format!(
        "\tchain forward-egress {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname {wl} jump from-wl-dispatch\n\
         \t}}\n\
         \tchain forward-ingress {{\n\
         \t\ttype filter hook forward priority filter + 1; policy accept;\n\
         \t\toifname {wl} jump to-wl-dispatch\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname {wl} goto wl-to-host\n\
         \t}}\n\
         \tchain from-wl-dispatch {{\n\
         \t\tct state established,related accept\n\
         \t\tct state invalid drop\n\
         \t\tiifname vmap @from-wl\n\
         \t\tdrop comment \"unknown workload interface\"\n\
         \t}}\n\
         \tchain to-wl-dispatch {{\n\
         \t\tct state established,related accept\n\
         \t\tct state invalid drop\n\
         \t\toifname vmap @to-wl\n\
         \t\tdrop comment \"unknown workload interface\"\n\
         \t}}\n\
         \tchain wl-to-host {{\n\
         \t\ticmpv6 type {ICMPV6_TO_HOST} accept\n\
         {to_host}\
         \t}}\n"
    )
}

/// The script that replaces the table with `d` atomically: creating the
/// table first makes the delete succeed whether it existed or not, and
/// everything is one transaction, so no packet sees a missing or half
/// table.
pub fn full(o: &TableOptions, d: &Desired) -> String {
    let t = &o.table;
    let mut s = format!("table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n");
    for (name, set) in &d.sets {
        s.push_str(&set_block(name, set));
    }
    for (name, c) in &d.chains {
        s.push_str(&chain_block(name, c));
    }
    let _ = writeln!(
        s,
        "\tmap from-wl {{ type ifname : verdict;{} }}",
        map_clause(&d.from_wl)
    );
    let _ = writeln!(
        s,
        "\tmap to-wl {{ type ifname : verdict;{} }}",
        map_clause(&d.to_wl)
    );
    s.push_str(&fixed_chains(o));
    s.push_str("}\n");
    s
}

/// The script that turns table `old` (as last written) into `new`, or
/// `None` when they are the same. One transaction: new sets and chains
/// first, then changed chains (flushed and refilled), set and map
/// elements, and last the chains and sets nothing refers to any more.
pub fn delta(o: &TableOptions, old: &Desired, new: &Desired) -> Option<String> {
    let t = &o.table;
    let mut s = String::new();
    // New sets (whole), and sets whose type changed are replaced.
    for (name, set) in &new.sets {
        match old.sets.get(name) {
            None => {
                let _ = writeln!(
                    s,
                    "add set inet {t} {name} {{ {} comment \"{}\";{} }}",
                    set.kind.declaration(),
                    set.comment,
                    elements_clause(&set.elements)
                );
            }
            // The same allocation: a set no change touched.
            Some(prev) if std::sync::Arc::ptr_eq(prev, set) => {}
            Some(prev) => {
                let gone: Vec<&str> = prev
                    .elements
                    .difference(&set.elements)
                    .map(String::as_str)
                    .collect();
                let added: Vec<&str> = set
                    .elements
                    .difference(&prev.elements)
                    .map(String::as_str)
                    .collect();
                if !gone.is_empty() {
                    let _ = writeln!(
                        s,
                        "delete element inet {t} {name} {{ {} }}",
                        gone.join(", ")
                    );
                }
                if !added.is_empty() {
                    let _ = writeln!(s, "add element inet {t} {name} {{ {} }}", added.join(", "));
                }
            }
        }
    }
    // New chains are declared before any rule refers to them.
    for (name, c) in &new.chains {
        if !old.chains.contains_key(name) {
            let _ = writeln!(
                s,
                "add chain inet {t} {name} {{ comment \"{}\"; }}",
                c.comment
            );
        }
    }
    for (name, c) in &new.chains {
        match old.chains.get(name) {
            Some(prev) if std::sync::Arc::ptr_eq(prev, c) || prev.rules == c.rules => continue,
            Some(_) => {
                let _ = writeln!(s, "flush chain inet {t} {name}");
            }
            None => {}
        }
        for r in &c.rules {
            let _ = writeln!(s, "add rule inet {t} {name} {r}");
        }
    }
    for (map, before, after) in [
        ("from-wl", &old.from_wl, &new.from_wl),
        ("to-wl", &old.to_wl, &new.to_wl),
    ] {
        for (iface, chain) in before {
            if after.get(iface) != Some(chain) {
                let _ = writeln!(s, "delete element inet {t} {map} {{ \"{iface}\" }}");
            }
        }
        for (iface, chain) in after {
            if before.get(iface) != Some(chain) {
                let _ = writeln!(
                    s,
                    "add element inet {t} {map} {{ \"{iface}\" : goto {chain} }}"
                );
            }
        }
    }
    // Chains no longer wanted: emptied first (they may jump to each
    // other), then deleted; then the sets only they used.
    let gone: Vec<&String> = old
        .chains
        .keys()
        .filter(|n| !new.chains.contains_key(*n))
        .collect();
    for name in &gone {
        let _ = writeln!(s, "flush chain inet {t} {name}");
    }
    for name in &gone {
        let _ = writeln!(s, "delete chain inet {t} {name}");
    }
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            let _ = writeln!(s, "delete set inet {t} {name}");
        }
    }
    if s.is_empty() { None } else { Some(s) }
}
