//! NAT-outgoing: traffic from a pool with `natOutgoing: true` to an address
//! outside every pool leaves with the node's address (masquerade); traffic
//! between pools keeps the pod's. Calico's rule, in nftables, for both
//! families in one table:
//!
//! ```text
//! table inet calico-rs-nat {
//!     set masq-pools  { type ipv4_addr; flags interval; auto-merge; elements = { <natOutgoing IPv4 pools> } }
//!     set all-pools   { type ipv4_addr; flags interval; auto-merge; elements = { <every IPv4 pool> } }
//!     set masq-pools6 { type ipv6_addr; ... }
//!     set all-pools6  { type ipv6_addr; ... }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr @masq-pools ip daddr != @all-pools masquerade fully-random
//!         ip6 saddr @masq-pools6 ip6 daddr != @all-pools6 masquerade fully-random
//!     }
//! }
//! ```
//!
//! felix owns that one table and nothing else (and removes the `ip`-family
//! table of the same name that earlier versions wrote). It is reconciled like the
//! routes: [`NatTable::sync`] reads the table back (`nft -j list table`)
//! and compares it with what felix last wrote, as the kernel normalised it
//! (handles stripped); on any difference (a change of the pools, or
//! someone editing or deleting the table) the whole table is replaced in
//! one transaction, so packets never see a half-written table. Both go
//! through [`crate::nft`] (libnftables in-process, or the `nft` binary).
//! Other tables are never read or written.

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::calc::NatSpec;
use crate::nft::{Nft, NftError};

/// felix's table (family `inet`).
pub const DEFAULT_TABLE: &str = "calico-rs-nat";

#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error("the nat table still differs from what felix wrote right after writing it")]
    NotConverged,
}

fn elements(nets: &[IpNetwork], v4: bool) -> String {
    let list: Vec<String> = nets
        .iter()
        .filter(|n| n.is_ipv4() == v4)
        .map(ToString::to_string)
        .collect();
    if list.is_empty() {
        return String::new();
    }
    format!(" elements = {{ {} }};", list.join(", "))
}

/// The `nft -f` script that replaces the table with `spec` atomically:
/// creating the table first makes the delete succeed whether it existed
/// or not, and every statement is one transaction. The `ip` table of the
/// same name (earlier versions) goes in the same transaction.
pub fn render(table: &str, spec: &NatSpec) -> String {
    format!(
        "table ip {table}\n\
         delete table ip {table}\n\
         table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         \tset masq-pools {{ type ipv4_addr; flags interval; auto-merge;{masq} }}\n\
         \tset all-pools {{ type ipv4_addr; flags interval; auto-merge;{all} }}\n\
         \tset masq-pools6 {{ type ipv6_addr; flags interval; auto-merge;{masq6} }}\n\
         \tset all-pools6 {{ type ipv6_addr; flags interval; auto-merge;{all6} }}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr @masq-pools ip daddr != @all-pools masquerade fully-random\n\
         \t\tip6 saddr @masq-pools6 ip6 daddr != @all-pools6 masquerade fully-random\n\
         \t}}\n\
         }}\n",
        masq = elements(&spec.masq_pools, true),
        all = elements(&spec.all_pools, true),
        masq6 = elements(&spec.masq_pools, false),
        all6 = elements(&spec.all_pools, false),
    )
}

/// What a [`NatTable::sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The table already matched.
    InSync,
    /// The table was (re)written.
    Written,
}

/// felix's NAT table in the namespace of the thread that made it (see
/// [`crate::nft`]).
#[derive(Debug)]
pub struct NatTable {
    table: String,
    nft: Nft,
    /// The spec last written, and the table as the kernel showed it right
    /// after.
    applied: Option<(NatSpec, Value)>,
}

impl NatTable {
    pub fn new(table: &str) -> NatTable {
        NatTable {
            table: table.to_string(),
            nft: Nft::new("nft", true),
            applied: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.table
    }

    /// Makes the kernel's table equal to `spec`.
    pub async fn sync(&mut self, spec: &NatSpec) -> Result<SyncOutcome, NatError> {
        if let Some((applied, seen)) = &self.applied
            && applied == spec
            && self.list().await?.as_ref() == Some(seen)
        {
            return Ok(SyncOutcome::InSync);
        }
        self.applied = None;
        self.write(&render(&self.table, spec)).await?;
        let seen = self.list().await?.ok_or(NatError::NotConverged)?;
        self.applied = Some((spec.clone(), seen));
        Ok(SyncOutcome::Written)
    }

    /// The normalised table, or `None` if it does not exist.
    async fn list(&self) -> Result<Option<Value>, NatError> {
        Ok(self.nft.list_table("inet", &self.table).await?)
    }

    async fn write(&self, script: &str) -> Result<(), NatError> {
        Ok(self.nft.run(script).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_both_sets_and_replaces_atomically() {
        let spec = NatSpec {
            masq_pools: vec![
                "10.65.0.0/16".parse().unwrap(),
                "fd00:65::/48".parse().unwrap(),
            ],
            all_pools: vec![
                "10.65.0.0/16".parse().unwrap(),
                "10.66.0.0/16".parse().unwrap(),
                "fd00:65::/48".parse().unwrap(),
            ],
        };
        let s = render("t", &spec);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "table ip t");
        assert_eq!(lines[1], "delete table ip t");
        assert_eq!(lines[2], "table inet t");
        assert_eq!(lines[3], "delete table inet t");
        assert!(s.contains("set masq-pools6 { type ipv6_addr; flags interval; auto-merge; elements = { fd00:65::/48 }; }"), "{s}");
        assert!(
            s.contains("ip6 saddr @masq-pools6 ip6 daddr != @all-pools6 masquerade"),
            "{s}"
        );
        assert!(s.contains("set masq-pools { type ipv4_addr; flags interval; auto-merge; elements = { 10.65.0.0/16 }; }"), "{s}");
        assert!(
            s.contains("elements = { 10.65.0.0/16, 10.66.0.0/16 };"),
            "{s}"
        );
        assert!(s.contains("ip saddr @masq-pools ip daddr != @all-pools masquerade"));
    }

    #[test]
    fn empty_sets_have_no_elements_clause() {
        let s = render("t", &NatSpec::default());
        assert!(!s.contains("elements"), "{s}");
    }
}
