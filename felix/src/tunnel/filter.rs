//! With the kernel backend the kernel decapsulates any IP-in-IP packet
//! that reaches the node, from anyone. Calico accepts IP-in-IP only from
//! known hosts; so does the userspace backend ([`super::peers`]). For the
//! kernel backend felix keeps a small nftables table of its own in front
//! of the decapsulation:
//!
//! ```text
//! table ip calico-rs-ipip
//!   set nodes    the addresses of the nodes this node tunnels to
//!   chain input  (hook input: before the ipip module sees the packet)
//!     IP-in-IP from @nodes  → counter accept
//!     other IP-in-IP        → counter drop
//! ```
//!
//! Written whole, in one transaction, each time the set of nodes changes
//! (a node joining or leaving): rare, and small.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use tokio::sync::watch;

use crate::nft::{Nft, NftError};

/// felix's table (family `ip`).
pub const TABLE: &str = "calico-rs-ipip";

/// The table admitting IP-in-IP from `nodes` only, as one nft script that
/// replaces any earlier version atomically.
pub fn script(nodes: &BTreeSet<Ipv4Addr>) -> String {
    let mut s = format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    s.push_str("\tset nodes {\n\t\ttype ipv4_addr\n");
    if !nodes.is_empty() {
        let list: Vec<String> = nodes.iter().map(Ipv4Addr::to_string).collect();
        let _ = writeln!(s, "\t\telements = {{ {} }}", list.join(", "));
    }
    s.push_str("\t}\n");
    s.push_str(
        "\tchain input {\n\
         \t\ttype filter hook input priority -150; policy accept;\n\
         \t\tmeta l4proto 4 ip saddr @nodes counter accept comment \"IP-in-IP from a known node\"\n\
         \t\tmeta l4proto 4 counter drop comment \"IP-in-IP from a host that is not a known node\"\n\
         \t}\n}\n",
    );
    s
}

/// Writes [`script`] through felix's nft runner ([`crate::nft`]) in one
/// transaction.
pub async fn apply(nft: &Nft, nodes: &BTreeSet<Ipv4Addr>) -> Result<(), NftError> {
    nft.run(&script(nodes)).await
}

/// Starts the task that keeps the filter equal to the newest node set sent
/// on the returned channel: written when it differs from what was last
/// written; a failure is logged and written again at the next send. The
/// task ends when the sender is dropped. Call it from the network
/// namespace the filter is for.
pub fn spawn_writer() -> watch::Sender<Option<BTreeSet<Ipv4Addr>>> {
    let (tx, mut rx) = watch::channel(None::<BTreeSet<Ipv4Addr>>);
    tokio::spawn(async move {
        let nft = Nft::new("nft", true);
        let mut written: Option<BTreeSet<Ipv4Addr>> = None;
        while rx.changed().await.is_ok() {
            let Some(nodes) = rx.borrow_and_update().clone() else {
                continue;
            };
            if written.as_ref() == Some(&nodes) {
                continue;
            }
            match apply(&nft, &nodes).await {
                Ok(()) => {
                    tracing::info!(
                        nodes = nodes.len(),
                        table = TABLE,
                        "IP-in-IP admitted from the known nodes only"
                    );
                    written = Some(nodes);
                }
                Err(e) => {
                    tracing::error!(error = %e,
                        "cannot write the IP-in-IP filter; tunl0 accepts IP-in-IP from anyone until it is written");
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
        // No nodes: the set is empty (nft refuses `elements = { }`).
        let empty = script(&BTreeSet::new());
        assert!(!empty.contains("elements"), "{empty}");
    }
}
