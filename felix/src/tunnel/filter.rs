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
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

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

/// Writes [`script`] with the `nft` binary in the calling thread's network
/// namespace.
pub fn apply(nft: &str, nodes: &BTreeSet<Ipv4Addr>) -> Result<(), String> {
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {nft}: {e} (install the nftables package)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script(nodes).as_bytes())
            .map_err(|e| format!("{nft} -f -: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{nft} -f -: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{nft} -f - failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
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
