//! Source-address checking for packets from pods, for IPv6 as for IPv4.
//!
//! IPv4 has the kernel's strict reverse-path filter (`rp_filter=1` on the
//! host side of each pod veth, [`super::sysctl`]); IPv6 has no such
//! sysctl, so without more a dual-stack pod could send with any IPv6
//! source. felix keeps a small nftables table of its own that checks both
//! families the same way, in the raw-priority prerouting hook (before
//! conntrack and before any policy):
//!
//! ```text
//! table inet calico-rs-antispoof
//!   chain prerouting (hook prerouting, priority raw)
//!     iifname "cali*" → jump from-pod
//!   chain from-pod
//!     IPv6 link-local source               → return (neighbour discovery)
//!     IPv6 :: source, NDP/MLD only          → return (DAD, MLD reports)
//!     IPv4 0.0.0.0:68 → :67                 → return (DHCP)
//!     source not routed back out of the interface it came in on → drop
//! ```
//!
//! The last rule is a reverse-path check: the route to the packet's source,
//! looked up as if leaving through the interface it arrived on, must exist.
//! A pod's addresses are routed to its own interface (`/32`, `/128 dev
//! caliXXX`), so its own packets pass; a neighbour's address, the node's,
//! or one outside every pool has no route through that interface.
//!
//! The table does not depend on the pods (one interface-name pattern), so
//! it is written whole, in one transaction, before felix's first pod
//! interface comes up (and again when felix re-adopts pods after a
//! restart), whether or not the policy dataplane runs; felix's periodic
//! refresh compares it with what it wrote (counters aside) and writes it
//! again if it was changed or removed.

use crate::nft::{Nft, NftError};

/// felix's table (family `inet`: both IPv4 and IPv6).
pub const TABLE: &str = "calico-rs-antispoof";

/// Why the table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AntiSpoofError {
    #[error(
        "interface prefix {0:?} cannot be matched by nftables; use letters, digits, '-', '_' or '.'"
    )]
    BadPrefix(String),
    #[error("cannot write nftables table {TABLE}: {0}")]
    Nft(#[from] NftError),
}

/// The table for pod interfaces named `iface_prefix…`, as one nft script
/// that replaces any earlier version atomically.
pub fn script(iface_prefix: &str) -> Result<String, AntiSpoofError> {
    let safe = !iface_prefix.is_empty()
        && iface_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !safe {
        return Err(AntiSpoofError::BadPrefix(iface_prefix.to_string()));
    }
    Ok(format!(
        "table inet {TABLE} {{}}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority raw; policy accept;\n\
         \t\tiifname \"{iface_prefix}*\" jump from-pod\n\
         \t}}\n\
         \tchain from-pod {{\n\
         \t\tip6 saddr fe80::/10 return comment \"link-local: neighbour discovery with the node\"\n\
         \t\tip6 saddr :: icmpv6 type {{ nd-neighbor-solicit, mld-listener-report, mld2-listener-report }} return comment \"no address yet: DAD, MLD\"\n\
         \t\tip saddr 0.0.0.0 udp sport 68 udp dport 67 return comment \"DHCP\"\n\
         \t\tfib saddr . iif oif missing counter drop comment \"source not routed back through the interface it came from: spoofed\"\n\
         \t}}\n\
         }}\n"
    ))
}

/// Writes the table once per felix, and again whenever a check finds it
/// changed or gone; through felix's nft runner in the namespace it was made
/// in.
pub(crate) struct AntiSpoof {
    prefix: String,
    nft: Nft,
    /// The table as the kernel showed it right after felix wrote it;
    /// `None` until written.
    written: tokio::sync::Mutex<Option<serde_json::Value>>,
}

impl AntiSpoof {
    /// Call in felix's network namespace.
    pub(crate) fn new(iface_prefix: &str) -> AntiSpoof {
        AntiSpoof {
            prefix: iface_prefix.to_string(),
            nft: Nft::new("nft", true),
            written: tokio::sync::Mutex::new(None),
        }
    }

    /// Writes the table unless this felix already has.
    pub(crate) async fn ensure(&self) -> Result<(), AntiSpoofError> {
        let mut written = self.written.lock().await;
        if written.is_none() {
            *written = Some(self.write().await?);
            tracing::info!(
                table = TABLE,
                "pods may only send from their own addresses (IPv4 and IPv6)"
            );
        }
        Ok(())
    }

    /// Once written: if the kernel's table is gone or differs from what
    /// felix wrote (someone flushed the ruleset, say), writes it again.
    /// Returns whether it did.
    pub(crate) async fn recheck(&self) -> Result<bool, AntiSpoofError> {
        let mut written = self.written.lock().await;
        let Some(seen) = written.as_ref() else {
            return Ok(false);
        };
        let now = self.nft.list_table("inet", TABLE).await?.map(zero_counters);
        if now.as_ref() == Some(seen) {
            return Ok(false);
        }
        *written = None;
        *written = Some(self.write().await?);
        tracing::warn!(
            table = TABLE,
            "the pods' source-address check was changed or removed; written again"
        );
        Ok(true)
    }

    async fn write(&self) -> Result<serde_json::Value, AntiSpoofError> {
        self.nft.run(&script(&self.prefix)?).await?;
        let seen = self.nft.list_table("inet", TABLE).await?.map(zero_counters);
        seen.ok_or_else(|| {
            AntiSpoofError::Nft(NftError::Nft {
                cmd: format!("nft list table inet {TABLE}"),
                stderr: "the table is missing right after writing it".into(),
            })
        })
    }
}

/// The listed table with its counters at zero: they count drops, which is
/// no change of the table.
fn zero_counters(mut v: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k == "counter" && x.is_object() {
                        *x = serde_json::json!({"packets": 0, "bytes": 0});
                    } else {
                        walk(x);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_checks_sources_on_pod_interfaces_only() {
        let s = script("cali").unwrap();
        assert!(s.starts_with(&format!(
            "table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"
        )));
        assert!(s.contains("hook prerouting priority raw"), "{s}");
        assert!(s.contains("iifname \"cali*\" jump from-pod"), "{s}");
        assert!(
            s.contains("fib saddr . iif oif missing counter drop"),
            "{s}"
        );
        assert!(s.contains("ip6 saddr fe80::/10 return"), "{s}");
        for bad in ["", "ca\"li", "cali*", "a b"] {
            assert!(script(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn counters_are_not_a_change() {
        let rule = |n: u64| serde_json::json!({"rule": {"expr": [{"counter": {"packets": n, "bytes": n * 60}}, {"drop": null}]}});
        assert_eq!(zero_counters(rule(0)), zero_counters(rule(7)));
        assert_ne!(
            zero_counters(rule(7)),
            zero_counters(serde_json::json!({"rule": {"expr": [{"accept": null}]}}))
        );
    }
}
