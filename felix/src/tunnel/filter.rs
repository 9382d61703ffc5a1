//! With the kernel's devices the kernel decapsulates any IP-in-IP packet,
//! and any VXLAN datagram to port 4789, that reaches the node, from anyone.
//! Calico accepts both only from known hosts; so does the userspace IPIP
//! backend ([`super::peers`]). For the kernel's devices felix keeps a
//! small nftables table per encapsulation in front of the decapsulation:
//!
//! ```text
//! table ip calico-rs-ipip            (calico-rs-vxlan: udp dport 4789)
//!   set nodes    the addresses of the nodes this node tunnels to
//!   chain input  (hook input: before the ipip or vxlan module sees it)
//!     IP-in-IP from @nodes  → counter accept
//!     other IP-in-IP        → counter drop
//! ```
//!
//! VXLAN over IPv6 (`vxlan-v6.calico`) has the same filter in an `ip6`
//! table, `calico-rs-vxlan6`, matching `ip6 saddr`.
//!
//! The IP-in-IP table also takes the outer packets between this node and
//! the known nodes out of connection tracking; the userspace tunnel, which
//! admits by source itself, writes only these chains
//! ([`Encap::IpipUserspace`]):
//!
//! ```text
//!   chain raw-prerouting (priority raw)  IP-in-IP from @nodes → notrack
//!   chain raw-output     (priority raw)  IP-in-IP to @nodes   → notrack
//! ```
//!
//! They need no state (they are admitted by source), and tracking them
//! cost the userspace tunnel, whose send runs the whole underlay path in
//! its own thread, about 6 % of that thread's CPU (BENCHMARKS.md, ipip).
//! The inner packets are tracked as before: they enter the stack again
//! from the tunnel device.
//!
//! Written whole, in one transaction, each time the set of nodes changes
//! (a node joining or leaving): rare, and small; removed when the
//! encapsulation is no longer used (VXLAN).

use std::collections::BTreeSet;
use std::fmt::{Display, Write as _};
use std::net::Ipv4Addr;

use tokio::sync::watch;

use crate::nft::{Nft, NftError};

/// felix's IP-in-IP table (family `ip`).
pub const TABLE: &str = "calico-rs-ipip";

/// felix's VXLAN table (family `ip`).
pub const VXLAN_TABLE: &str = "calico-rs-vxlan";

/// felix's IPv6 VXLAN table (family `ip6`).
pub const VXLAN6_TABLE: &str = "calico-rs-vxlan6";

/// Which encapsulation a filter admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    Ipip,
    /// The userspace IP-in-IP tunnel's table: the same name, only the
    /// untracking chains (the tunnel admits by source itself, and counts
    /// what it drops).
    IpipUserspace,
    /// UDP to [`crate::vxlan::PORT`].
    Vxlan,
    /// UDP over IPv6 to [`crate::vxlan::PORT`] (the node set holds IPv6
    /// addresses).
    Vxlan6,
}

impl Encap {
    pub fn table(self) -> &'static str {
        match self {
            Encap::Ipip | Encap::IpipUserspace => TABLE,
            Encap::Vxlan => VXLAN_TABLE,
            Encap::Vxlan6 => VXLAN6_TABLE,
        }
    }

    /// The nftables family of the table.
    pub fn family(self) -> &'static str {
        match self {
            Encap::Ipip | Encap::IpipUserspace | Encap::Vxlan => "ip",
            Encap::Vxlan6 => "ip6",
        }
    }

    fn matcher(self) -> String {
        match self {
            Encap::Ipip | Encap::IpipUserspace => "meta l4proto 4".to_string(),
            Encap::Vxlan | Encap::Vxlan6 => format!("udp dport {}", crate::vxlan::PORT),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encap::Ipip | Encap::IpipUserspace => "IP-in-IP",
            Encap::Vxlan => "VXLAN",
            Encap::Vxlan6 => "IPv6 VXLAN",
        }
    }
}

/// The table admitting IP-in-IP from `nodes` only, as one nft script that
/// replaces any earlier version atomically.
pub fn script(nodes: &BTreeSet<Ipv4Addr>) -> String {
    script_for(Encap::Ipip, nodes)
}

/// [`script`] for any encapsulation (`nodes` of its family: IPv6
/// addresses for [`Encap::Vxlan6`]).
pub fn script_for<A: Display>(encap: Encap, nodes: &BTreeSet<A>) -> String {
    let (table, fam) = (encap.table(), encap.family());
    let mut s =
        format!("table {fam} {table} {{}}\ndelete table {fam} {table}\ntable {fam} {table} {{\n");
    let (set_type, saddr) = if fam == "ip6" {
        ("ipv6_addr", "ip6 saddr")
    } else {
        ("ipv4_addr", "ip saddr")
    };
    let _ = writeln!(s, "\tset nodes {{\n\t\ttype {set_type}");
    if !nodes.is_empty() {
        let list: Vec<String> = nodes.iter().map(A::to_string).collect();
        let _ = writeln!(s, "\t\telements = {{ {} }}", list.join(", "));
    }
    s.push_str("\t}\n");
    let (m, what) = (encap.matcher(), encap.name());
    if encap != Encap::IpipUserspace {
        let _ = write!(
            s,
            "\tchain input {{\n\
         \t\ttype filter hook input priority -150; policy accept;\n\
         \t\t{m} {saddr} @nodes counter accept comment \"{what} from a known node\"\n\
         \t\t{m} counter drop comment \"{what} from a host that is not a known node\"\n\
         \t}}\n"
        );
    }
    if matches!(encap, Encap::Ipip | Encap::IpipUserspace) {
        let _ = write!(
            s,
            "\tchain raw-prerouting {{\n\
             \t\ttype filter hook prerouting priority raw; policy accept;\n\
             \t\t{m} {saddr} @nodes notrack comment \"{what} between nodes is not tracked\"\n\
             \t}}\n\
             \tchain raw-output {{\n\
             \t\ttype filter hook output priority raw; policy accept;\n\
             \t\t{m} ip daddr @nodes notrack comment \"{what} between nodes is not tracked\"\n\
             \t}}\n"
        );
    }
    s.push_str("}\n");
    s
}

/// Writes [`script`] through felix's nft runner ([`crate::nft`]) in one
/// transaction.
pub async fn apply(nft: &Nft, nodes: &BTreeSet<Ipv4Addr>) -> Result<(), NftError> {
    apply_for(nft, Encap::Ipip, nodes).await
}

/// [`apply`] for any encapsulation.
pub async fn apply_for<A: Display>(
    nft: &Nft,
    encap: Encap,
    nodes: &BTreeSet<A>,
) -> Result<(), NftError> {
    nft.run(&script_for(encap, nodes)).await
}

/// Removes `encap`'s table (absent already: fine).
pub async fn remove(nft: &Nft, encap: Encap) -> Result<(), NftError> {
    let (t, f) = (encap.table(), encap.family());
    nft.run(&format!("table {f} {t} {{}}\ndelete table {f} {t}\n"))
        .await
}

/// Starts the task that keeps the IP-in-IP filter equal to the newest
/// node set sent on the returned channel; see [`spawn_writer_for`].
pub fn spawn_writer() -> watch::Sender<Option<BTreeSet<Ipv4Addr>>> {
    spawn_writer_for(Encap::Ipip)
}

/// Starts the task that keeps `encap`'s filter equal to the newest node
/// set sent on the returned channel: written when it differs from what was
/// last written; `None` after a set removes the table. A failure is logged
/// and written again at the next send. The task ends when the sender is
/// dropped. Call it from the network namespace the filter is for.
pub fn spawn_writer_for<A>(encap: Encap) -> watch::Sender<Option<BTreeSet<A>>>
where
    A: Display + Ord + Clone + Send + Sync + 'static,
{
    let (tx, mut rx) = watch::channel(None::<BTreeSet<A>>);
    tokio::spawn(async move {
        let nft = Nft::new("nft", true);
        let (table, what) = (encap.table(), encap.name());
        let mut written: Option<BTreeSet<A>> = None;
        while rx.changed().await.is_ok() {
            let want = rx.borrow_and_update().clone();
            let Some(nodes) = want else {
                if written.take().is_some() {
                    match remove(&nft, encap).await {
                        Ok(()) => tracing::info!(table, "{what} filter removed"),
                        Err(e) => {
                            tracing::warn!(error = %e, table, "cannot remove the {what} filter")
                        }
                    }
                }
                continue;
            };
            if written.as_ref() == Some(&nodes) {
                continue;
            }
            match apply_for(&nft, encap, &nodes).await {
                Ok(()) => {
                    tracing::info!(
                        nodes = nodes.len(),
                        table,
                        "{what} admitted from the known nodes only"
                    );
                    written = Some(nodes);
                }
                Err(e) => {
                    tracing::error!(error = %e,
                        "cannot write the {what} filter; the kernel decapsulates {what} from anyone until it is written");
                    written = None;
                }
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_lists_the_nodes_and_drops_the_rest() {
        let nodes: BTreeSet<Ipv4Addr> = ["10.0.0.2", "10.0.1.7"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let s = script(&nodes);
        assert!(s.contains("elements = { 10.0.0.2, 10.0.1.7 }"), "{s}");
        assert!(s.contains("ip saddr @nodes counter accept"), "{s}");
        assert!(s.contains("meta l4proto 4 counter drop"), "{s}");
        assert!(s.contains("meta l4proto 4 ip saddr @nodes notrack"), "{s}");
        assert!(s.contains("meta l4proto 4 ip daddr @nodes notrack"), "{s}");
        // No nodes: the set is empty (nft refuses `elements = { }`).
        let empty = script(&BTreeSet::new());
        assert!(!empty.contains("elements"), "{empty}");
        let v = script_for(Encap::Vxlan, &nodes);
        assert!(v.contains("table ip calico-rs-vxlan {\n"), "{v}");
        assert!(
            v.contains("udp dport 4789 ip saddr @nodes counter accept"),
            "{v}"
        );
        assert!(v.contains("udp dport 4789 counter drop"), "{v}");
        assert!(!v.contains("notrack"), "{v}");
        let u = script_for(Encap::IpipUserspace, &nodes);
        assert!(u.contains("table ip calico-rs-ipip {\n"), "{u}");
        assert!(u.contains("ip saddr @nodes notrack"), "{u}");
        assert!(u.contains("ip daddr @nodes notrack"), "{u}");
        assert!(!u.contains("hook input"), "{u}");
        let six: BTreeSet<std::net::Ipv6Addr> = ["fd00::2".parse().unwrap()].into();
        let v6 = script_for(Encap::Vxlan6, &six);
        assert!(v6.contains("table ip6 calico-rs-vxlan6 {\n"), "{v6}");
        assert!(v6.contains("delete table ip6 calico-rs-vxlan6\n"), "{v6}");
        assert!(v6.contains("type ipv6_addr"), "{v6}");
        assert!(v6.contains("elements = { fd00::2 }"), "{v6}");
        assert!(
            v6.contains("udp dport 4789 ip6 saddr @nodes counter accept"),
            "{v6}"
        );
    }
}
