//! Kubernetes object names Calico derives from data, so objects we write are
//! the same objects Calico reads (and vice versa).

use ipnetwork::IpNetwork;
use sha2::{Digest, Sha256};

/// Kubernetes names are at most this long.
const MAX_NAME_LEN: usize = 253;

/// The IPAMBlock object name for a block: the CIDR's text with `.`, `:` and
/// `/` replaced by `-`, e.g. `10.65.0.0/26` → `10-65-0-0-26`,
/// `fd00:1::/122` → `fd00-1---122`.
///
/// Calico replaces at most 3 dots, 7 colons and 1 slash; a canonical CIDR
/// never has more, so replacing all of them gives the same name.
pub fn block_name(cidr: &IpNetwork) -> String {
    cidr.to_string()
        .chars()
        .map(|c| if matches!(c, '.' | ':' | '/') { '-' } else { c })
        .collect()
}

/// The BlockAffinity object name for `host`'s affinity to `cidr`:
/// `<host>-<block name>`.
///
/// When that would not fit in a Kubernetes name, Calico shortens the host part
/// and appends 11 hex digits of SHA-256 over `<host>+<block name>` so two long
/// host names sharing a prefix still get different objects; we do the same.
pub fn block_affinity_name(host: &str, cidr: &IpNetwork) -> String {
    let block = block_name(cidr);
    let name = format!("{host}-{block}");
    if name.len() < MAX_NAME_LEN {
        return name;
    }
    // 13 = the two '-' separators plus the 11-digit hash.
    let keep = (MAX_NAME_LEN - 1).saturating_sub(block.len() + 13);
    let short_host = prefix_at_char_boundary(host, keep);
    let digest = Sha256::digest(format!("{host}+{block}").as_bytes());
    let hash: String = digest
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .take(11)
        .map(|n| char::from_digit(u32::from(n), 16).unwrap_or('0'))
        .collect();
    format!("{short_host}-{block}-{hash}")
}

/// The IPAMHandle object name for a handle ID: Calico lower-cases it, because
/// handle IDs (e.g. `k8s-pod-network.<container id>`) may carry upper case and
/// Kubernetes names may not.
pub fn handle_name(handle_id: &str) -> String {
    handle_id.to_lowercase()
}

/// The BGPConfiguration object holding per-node overrides for `node`.
pub fn node_bgp_configuration_name(node: &str) -> String {
    format!("node.{node}")
}

/// `s[..max]`, moved back to a char boundary; node names are ASCII, but
/// nothing here may panic on input.
fn prefix_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_block_name_replaces_dots_and_slash() {
        assert_eq!(block_name(&net("10.65.0.0/26")), "10-65-0-0-26");
        assert_eq!(block_name(&net("192.168.82.0/26")), "192-168-82-0-26");
    }

    #[test]
    fn ipv6_block_name_replaces_colons() {
        assert_eq!(block_name(&net("fd00:1::/122")), "fd00-1---122");
        assert_eq!(
            block_name(&net("2001:db8:0:1:2:3:4:0/128")),
            "2001-db8-0-1-2-3-4-0-128"
        );
    }

    #[test]
    fn affinity_name_is_host_dash_block() {
        assert_eq!(
            block_affinity_name("node-1", &net("10.65.0.0/26")),
            "node-1-10-65-0-0-26"
        );
    }

    #[test]
    fn long_affinity_name_is_shortened_with_a_hash_and_fits() {
        let host = "h".repeat(300);
        let name = block_affinity_name(&host, &net("10.65.0.0/26"));
        assert!(name.len() < MAX_NAME_LEN, "{} chars", name.len());
        assert!(name.contains("-10-65-0-0-26-"));
        let other = block_affinity_name(&format!("{host}x"), &net("10.65.0.0/26"));
        assert_ne!(name, other, "hash must tell long hosts apart");
    }

    #[test]
    fn handle_name_is_lower_case() {
        assert_eq!(handle_name("k8s-pod-network.ABC"), "k8s-pod-network.abc");
    }
}
