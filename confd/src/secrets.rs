//! BGP passwords and BFD keys: which Secrets the peerings name, what
//! confd knows of each, and the password (or BFD authentication key) one
//! `secretKeyRef` selects, or why there is none. Pure data;
//! [`crate::secret_watch`] reads the Secrets.
//!
//! A peering that asks for a password never runs without one: when the
//! Secret or its key is missing, unreadable or forbidden, or its value
//! cannot be a TCP-MD5 key, the peer is held down with a reason that
//! bird shows (`calico-node status`), instead of peering unauthenticated.
//! A `secretKeyRef` marked `optional` is held down the same way: the
//! password is what protects the session, so its absence is never taken
//! as "no password wanted". A BFD key (`bfd.authentication.secretKeyRef`)
//! is the same: without it the peering is held down, never run with
//! unauthenticated BFD.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use ippool_crd::BGPPassword;

use crate::state::ClusterState;

/// The TCP-MD5 key limit (RFC 2385; Linux `TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_PASSWORD_LEN: usize = 80;
/// The BFD SHA1 key limit (RFC 5880 section 4.4: the 20-byte digest
/// field holds the key).
pub const MAX_BFD_KEY_LEN: usize = 20;

/// What a secret is used for: how it is named in messages and its limit.
struct Use {
    what: &'static str,
    max: usize,
    limit: &'static str,
}

const PASSWORD: Use = Use {
    what: "password",
    max: MAX_PASSWORD_LEN,
    limit: "the TCP-MD5 key limit",
};

const BFD_KEY: Use = Use {
    what: "BFD key",
    max: MAX_BFD_KEY_LEN,
    limit: "the BFD SHA1 key limit",
};

/// Where passwords are read from; says where a Secret is in messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SecretOrigin {
    /// Nowhere: a peering that asks for a password is held down.
    #[default]
    None,
    /// Files `<dir>/<secret>/<key>` (a mounted Secret volume).
    Dir(PathBuf),
    /// Secrets in this namespace, through the Kubernetes API.
    Kubernetes { namespace: String },
}

impl SecretOrigin {
    /// How Secret `name` is written in messages: `kube-system/name`, or
    /// its directory.
    pub fn describe(&self, name: &str) -> String {
        match self {
            SecretOrigin::None => name.to_string(),
            SecretOrigin::Dir(dir) => dir.join(name).display().to_string(),
            SecretOrigin::Kubernetes { namespace } => format!("{namespace}/{name}"),
        }
    }
}

/// What confd knows of one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretState {
    /// Its keys and values.
    Present(BTreeMap<String, Vec<u8>>),
    /// There is no Secret of that name.
    Missing,
    /// It cannot be read, and why (forbidden, unreadable, or the API
    /// server unreachable before it was ever read).
    Unreadable(String),
}

/// A reader's news about one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretUpdate {
    /// An answer: the Secret's contents, its absence, or a refusal.
    Known(SecretState),
    /// No answer (API server or filesystem unavailable), and why.
    Outage(String),
}

/// The state after `update`, given what was known. An outage keeps what
/// was known, as a datastore outage keeps the last configuration: a
/// session that has its password keeps it through an API server restart.
/// Only a Secret never read is then unreadable.
pub fn apply_update(known: Option<&SecretState>, update: SecretUpdate) -> SecretState {
    match (update, known) {
        (SecretUpdate::Known(s), _) => s,
        (SecretUpdate::Outage(_), Some(s @ (SecretState::Present(_) | SecretState::Missing))) => {
            s.clone()
        }
        (SecretUpdate::Outage(why), _) => SecretState::Unreadable(why),
    }
}

/// The Secrets confd knows, by name, and where they come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    pub origin: SecretOrigin,
    pub by_name: BTreeMap<String, SecretState>,
}

impl Secrets {
    /// The password `pw` selects: `Ok(None)` when it names no Secret key,
    /// `Err(reason)` when it names one that cannot be used.
    pub fn password(&self, pw: Option<&BGPPassword>) -> Result<Option<String>, String> {
        match pw.and_then(|p| p.secret_key_ref.as_ref()) {
            None => Ok(None),
            Some(sel) => self.value(&sel.name, &sel.key, &PASSWORD).map(Some),
        }
    }

    /// The BFD authentication key at `key` of Secret `name`, or why there
    /// is none.
    pub fn bfd_key(&self, name: &str, key: &str) -> Result<String, String> {
        self.value(name, key, &BFD_KEY)
    }

    fn value(&self, name: &str, key: &str, usage: &Use) -> Result<String, String> {
        let secret = self.origin.describe(name);
        let held = |what: String| Err(format!("{} secret {what}: session held down", usage.what));
        if self.origin == SecretOrigin::None {
            return held(format!(
                "{name} cannot be read: confd has no source of BGP passwords (with the etcd \
                 datastore, set CALICO_BGP_SECRETS_DIR to a directory of <secret>/<key> files)"
            ));
        }
        match self.by_name.get(name) {
            None => held(format!("{secret} has not been read yet")),
            Some(SecretState::Missing) => held(format!("{secret} does not exist")),
            Some(SecretState::Unreadable(why)) => held(format!("{secret} cannot be read ({why})")),
            Some(SecretState::Present(data)) => match data.get(key) {
                None => held(format!("{secret} has no key '{key}'")),
                Some(raw) => match secret_value(raw, usage) {
                    Ok(pw) => Ok(pw),
                    Err(why) => held(format!("{secret} key '{key}' {why}")),
                },
            },
        }
    }
}

/// A stored value as a TCP-MD5 or BFD key. One trailing newline is
/// dropped: a Secret made with `kubectl create secret --from-file` from a
/// file written by an editor ends in one, and a mounted Secret's file
/// holds the same bytes, so both sources agree.
fn secret_value(raw: &[u8], usage: &Use) -> Result<String, String> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let text = std::str::from_utf8(raw).map_err(|_| "is not UTF-8 text".to_string())?;
    if text.is_empty() {
        return Err("is empty".into());
    }
    if text.len() > usage.max {
        return Err(format!(
            "is longer than {} bytes ({})",
            usage.max, usage.limit
        ));
    }
    Ok(text.to_string())
}

/// Every Secret a BGPPeer or the cluster's mesh password or BFD key
/// names.
pub fn referenced(state: &ClusterState) -> BTreeSet<String> {
    let peers = state.bgp_peers.values().map(|p| p.spec.password.as_ref());
    let global = state.global_bgp();
    let mesh = global.map(|c| c.spec.node_mesh_password.as_ref());
    let bfd = state
        .bgp_peers
        .values()
        .map(|p| p.spec.bfd.as_ref())
        .chain(global.map(|c| c.spec.node_mesh_bfd.as_ref()))
        .flatten()
        .filter_map(|b| b.authentication.as_ref()?.secret_key_ref.as_ref());
    peers
        .chain(mesh)
        .flatten()
        .filter_map(|pw| pw.secret_key_ref.as_ref())
        .chain(bfd)
        .map(|sel| sel.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(name: &str, key: &str) -> BGPPassword {
        serde_json::from_value(serde_json::json!({"secretKeyRef": {"name": name, "key": key}}))
            .unwrap()
    }

    fn kube(by_name: &[(&str, SecretState)]) -> Secrets {
        Secrets {
            origin: SecretOrigin::Kubernetes {
                namespace: "kube-system".into(),
            },
            by_name: by_name
                .iter()
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect(),
        }
    }

    fn present(kv: &[(&str, &[u8])]) -> SecretState {
        SecretState::Present(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        )
    }

    #[test]
    fn no_secret_reference_means_no_password() {
        let s = kube(&[]);
        assert_eq!(s.password(None), Ok(None));
        assert_eq!(s.password(Some(&BGPPassword::default())), Ok(None));
    }

    #[test]
    fn a_present_key_is_the_password_without_its_trailing_newline() {
        let s = kube(&[("bgp-passwords", present(&[("tor", b"s3cret\n")]))]);
        assert_eq!(
            s.password(Some(&pw("bgp-passwords", "tor"))),
            Ok(Some("s3cret".into()))
        );
    }

    #[test]
    fn each_reason_for_no_password_is_told_with_where_the_secret_is() {
        let s = kube(&[
            ("bgp-passwords", present(&[("other", b"x")])),
            ("gone", SecretState::Missing),
            (
                "locked",
                SecretState::Unreadable("the API server refused to list it".into()),
            ),
            (
                "bad",
                present(&[("empty", b""), ("long", &[b'a'; 81]), ("bin", b"\xff\xfe")]),
            ),
        ]);
        let why = |name: &str, key: &str| s.password(Some(&pw(name, key))).unwrap_err();
        assert_eq!(
            why("bgp-passwords", "tor"),
            "password secret kube-system/bgp-passwords has no key 'tor': session held down"
        );
        assert_eq!(
            why("gone", "tor"),
            "password secret kube-system/gone does not exist: session held down"
        );
        assert_eq!(
            why("locked", "tor"),
            "password secret kube-system/locked cannot be read (the API server refused to \
             list it): session held down"
        );
        assert_eq!(
            why("never-read", "tor"),
            "password secret kube-system/never-read has not been read yet: session held down"
        );
        assert!(why("bad", "empty").contains("key 'empty' is empty"));
        assert!(why("bad", "long").contains("longer than 80 bytes"));
        assert!(why("bad", "bin").contains("not UTF-8"));
    }

    #[test]
    fn without_a_source_a_password_is_held_down_with_the_fix() {
        let s = Secrets::default();
        let why = s.password(Some(&pw("bgp-passwords", "tor"))).unwrap_err();
        assert!(why.contains("CALICO_BGP_SECRETS_DIR"), "{why}");
        assert!(why.ends_with("session held down"), "{why}");
    }

    #[test]
    fn files_are_described_by_their_directory() {
        let s = Secrets {
            origin: SecretOrigin::Dir("/etc/calico/bgp".into()),
            by_name: [("bgp-passwords".to_string(), present(&[]))].into(),
        };
        assert_eq!(
            s.password(Some(&pw("bgp-passwords", "tor"))).unwrap_err(),
            "password secret /etc/calico/bgp/bgp-passwords has no key 'tor': session held down"
        );
    }

    #[test]
    fn an_outage_keeps_what_was_known_and_a_refusal_does_not() {
        let known = present(&[("tor", b"k")]);
        let outage = || SecretUpdate::Outage("no answer".into());
        assert_eq!(apply_update(Some(&known), outage()), known);
        assert_eq!(
            apply_update(Some(&SecretState::Missing), outage()),
            SecretState::Missing
        );
        assert_eq!(
            apply_update(None, outage()),
            SecretState::Unreadable("no answer".into())
        );
        let refused = SecretState::Unreadable("forbidden".into());
        assert_eq!(
            apply_update(Some(&known), SecretUpdate::Known(refused.clone())),
            refused
        );
    }
}
