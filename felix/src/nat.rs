//! NAT-outgoing: traffic from a pool with `natOutgoing: true` to an address
//! outside every pool leaves with the node's address (masquerade); traffic
//! between pools keeps the pod's. Calico's rule, in nftables:
//!
//! ```text
//! table ip calico-rs-nat {
//!     set masq-pools { type ipv4_addr; flags interval; auto-merge; elements = { <natOutgoing pools> } }
//!     set all-pools  { type ipv4_addr; flags interval; auto-merge; elements = { <every pool> } }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr @masq-pools ip daddr != @all-pools masquerade fully-random
//!     }
//! }
//! ```
//!
//! felix owns that one table and nothing else. It is reconciled like the
//! routes: [`NatTable::sync`] reads the table back (`nft -j list table`)
//! and compares it with what felix last wrote, as the kernel normalised it
//! (handles stripped); on any difference (a change of the pools, or
//! someone editing or deleting the table) the whole table is replaced in
//! one `nft -f` transaction, so packets never see a half-written table.
//! Other tables are never read or written.

use std::io;
use std::process::Stdio;

use ipnetwork::Ipv4Network;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::calc::NatSpec;

/// felix's table (family `ip`).
pub const DEFAULT_TABLE: &str = "calico-rs-nat";

#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("cannot run `{cmd}`: {source} (install the nftables package)")]
    Spawn { cmd: String, source: io::Error },
    #[error("`{cmd}` failed: {stderr}")]
    Nft { cmd: String, stderr: String },
    #[error("`{cmd}` printed JSON felix cannot read: {error}")]
    Json { cmd: String, error: String },
    #[error("the nat table still differs from what felix wrote right after writing it")]
    NotConverged,
}

fn elements(nets: &[Ipv4Network]) -> String {
    if nets.is_empty() {
        return String::new();
    }
    let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
    format!(" elements = {{ {} }};", list.join(", "))
}

/// The `nft -f` script that replaces the table with `spec` atomically:
/// creating the table first makes the delete succeed whether it existed
/// or not, and all three statements are one transaction.
pub fn render(table: &str, spec: &NatSpec) -> String {
    format!(
        "table ip {table}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \tset masq-pools {{ type ipv4_addr; flags interval; auto-merge;{masq} }}\n\
         \tset all-pools {{ type ipv4_addr; flags interval; auto-merge;{all} }}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr @masq-pools ip daddr != @all-pools masquerade fully-random\n\
         \t}}\n\
         }}\n",
        masq = elements(&spec.masq_pools),
        all = elements(&spec.all_pools),
    )
}

/// `nft -j list table` output without what changes on every write
/// (handles, the metainfo header), so two listings of the same content
/// compare equal.
pub fn normalize(listing: &Value) -> Value {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| k.as_str() != "handle")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    let items = listing
        .get("nftables")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|i| i.get("metainfo").is_none())
                .map(strip)
                .collect()
        })
        .unwrap_or_default();
    Value::Array(items)
}

/// What a [`NatTable::sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The table already matched.
    InSync,
    /// The table was (re)written.
    Written,
}

/// felix's NAT table in the calling thread's namespace (`nft` runs as a
/// child process, which inherits it).
#[derive(Debug)]
pub struct NatTable {
    table: String,
    nft: String,
    /// The spec last written, and the table as the kernel showed it right
    /// after.
    applied: Option<(NatSpec, Value)>,
}

impl NatTable {
    pub fn new(table: &str) -> NatTable {
        NatTable {
            table: table.to_string(),
            nft: "nft".to_string(),
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
        let cmd = format!("{} -j list table ip {}", self.nft, self.table);
        let out = tokio::process::Command::new(&self.nft)
            .args(["-j", "list", "table", "ip", &self.table])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| NatError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(NatError::Nft { cmd, stderr });
        }
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| NatError::Json {
            cmd,
            error: e.to_string(),
        })?;
        Ok(Some(normalize(&v)))
    }

    async fn write(&self, script: &str) -> Result<(), NatError> {
        let cmd = format!("{} -f -", self.nft);
        let mut child = tokio::process::Command::new(&self.nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NatError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .await
                .map_err(|source| NatError::Spawn {
                    cmd: cmd.clone(),
                    source,
                })?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| NatError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(NatError::Nft {
                cmd,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_both_sets_and_replaces_atomically() {
        let spec = NatSpec {
            masq_pools: vec!["10.65.0.0/16".parse().unwrap()],
            all_pools: vec![
                "10.65.0.0/16".parse().unwrap(),
                "10.66.0.0/16".parse().unwrap(),
            ],
        };
        let s = render("t", &spec);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "table ip t");
        assert_eq!(lines[1], "delete table ip t");
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

    #[test]
    fn normalize_drops_handles_and_metainfo() {
        let a: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},{"table":{"family":"ip","name":"t","handle":3}},{"rule":{"chain":"c","handle":7,"expr":[{"masquerade":null}]}}]}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{"version":"1.0.6","json_schema_version":1}},{"table":{"family":"ip","name":"t","handle":9}},{"rule":{"chain":"c","handle":2,"expr":[{"masquerade":null}]}}]}"#,
        )
        .unwrap();
        assert_eq!(normalize(&a), normalize(&b));
        let c: Value = serde_json::from_str(
            r#"{"nftables":[{"table":{"family":"ip","name":"t","handle":9}}]}"#,
        )
        .unwrap();
        assert_ne!(normalize(&a), normalize(&c));
    }
}
