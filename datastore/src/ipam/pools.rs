//! Which pools a node may take blocks from, and which block to try next.

use std::collections::{BTreeMap, HashSet};

use ipnetwork::IpNetwork;
use ippool_crd::{AllowedUse, AssignmentMode, PoolConfig};

use super::block::{nth, size_of};

/// The IP family of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(net: &IpNetwork) -> Family {
        if net.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Why a pool was not usable, for the error a user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    Disabled(String),
    NotSelected(String),
    UseNotAllowed(String),
    /// `assignmentMode: Manual`: only used when asked for by name.
    Manual(String),
    /// Its namespaceSelector does not select the pod's namespace (or the
    /// namespace's labels are unknown).
    NamespaceNotSelected(String),
}

/// Whether `requested` (a pool name or CIDR) names `pool`.
fn names(requested: &str, pool: &PoolConfig) -> bool {
    requested == pool.name
        || requested
            .parse::<IpNetwork>()
            .is_ok_and(|n| n.network() == pool.cidr.network() && n.prefix() == pool.cidr.prefix())
}

/// Picks the pools a node may use: the right family, enabled, allowing the
/// use, and whose nodeSelector matches the node's labels. `requested`
/// (pool names or CIDRs, as in the CNI config's `ipv4_pools`) narrows the
/// choice; an explicitly requested pool is used even if its nodeSelector
/// does not match, as Calico does. A pool with `assignmentMode: Manual` is
/// used only when requested. A pool's `namespaceSelector` always applies:
/// `namespace_labels` are the labels of the pod's namespace (`None` when
/// unknown, which no namespaceSelector selects).
pub fn eligible<'a>(
    pools: &'a [PoolConfig],
    family: Family,
    used_for: AllowedUse,
    node_labels: &BTreeMap<String, String>,
    namespace_labels: Option<&BTreeMap<String, String>>,
    requested: &[String],
) -> (Vec<&'a PoolConfig>, Vec<Skipped>) {
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for p in pools.iter().filter(|p| Family::of(&p.cidr) == family) {
        let explicitly = requested.iter().any(|r| names(r, p));
        if !requested.is_empty() && !explicitly {
            continue;
        }
        if p.disabled {
            skipped.push(Skipped::Disabled(p.name.clone()));
        } else if !explicitly && p.assignment_mode == AssignmentMode::Manual {
            skipped.push(Skipped::Manual(p.name.clone()));
        } else if !p.allowed_uses.contains(&used_for) {
            skipped.push(Skipped::UseNotAllowed(p.name.clone()));
        } else if !explicitly && !p.node_selector.matches(node_labels) {
            skipped.push(Skipped::NotSelected(p.name.clone()));
        } else if let Some(sel) = &p.namespace_selector
            && !namespace_labels.is_some_and(|l| sel.matches(l))
        {
            skipped.push(Skipped::NamespaceNotSelected(p.name.clone()));
        } else {
            ok.push(p);
        }
    }
    (ok, skipped)
}

/// A stable per-host starting point, so nodes spread over a pool instead of
/// all racing for its first block (FNV-1a of the host name).
pub fn host_hash(host: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Up to `limit` block CIDRs of `pool` not in `taken`, starting at a
/// host-dependent offset and wrapping around. Looking at `taken.len() + 1`
/// candidates is always enough to find a free one if any exists, so huge
/// IPv6 pools are never enumerated.
pub fn free_blocks(
    pool: &PoolConfig,
    host: &str,
    taken: &HashSet<IpNetwork>,
    limit: usize,
) -> Vec<IpNetwork> {
    let block_prefix = pool.block_size;
    let Ok(first) = IpNetwork::new(pool.cidr.network(), block_prefix) else {
        return Vec::new();
    };
    let block_len = size_of(&first);
    let total = size_of(&pool.cidr) / block_len.max(1);
    if total == 0 {
        return Vec::new();
    }
    let start = u128::from(host_hash(host)) % total;
    let budget = (taken.len() as u128 + 1).min(total);
    let mut out = Vec::new();
    for i in 0..budget {
        let idx = (start + i) % total;
        let Ok(b) = IpNetwork::new(nth(&pool.cidr, idx * block_len), block_prefix) else {
            continue;
        };
        if !taken.contains(&b) {
            out.push(b);
            if out.len() >= limit {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ippool_crd::{AssignmentMode, EncapMode, Selector};

    fn pool(name: &str, cidr: &str, block: u8) -> PoolConfig {
        PoolConfig {
            name: name.into(),
            cidr: cidr.parse().unwrap(),
            block_size: block,
            ipip_mode: EncapMode::Never,
            vxlan_mode: EncapMode::Never,
            nat_outgoing: false,
            disabled: false,
            disable_bgp_export: false,
            node_selector: Selector::all(),
            allowed_uses: vec![AllowedUse::Workload, AllowedUse::Tunnel],
            namespace_selector: None,
            assignment_mode: AssignmentMode::Automatic,
        }
    }

    #[test]
    fn disabled_unselected_and_wrong_use_pools_are_skipped_with_reasons() {
        let mut a = pool("a", "10.0.0.0/16", 26);
        a.disabled = true;
        let mut b = pool("b", "10.1.0.0/16", 26);
        b.node_selector = Selector::parse("rack == 'r2'").unwrap();
        let mut c = pool("c", "10.2.0.0/16", 26);
        c.allowed_uses = vec![AllowedUse::Tunnel];
        let d = pool("d", "10.3.0.0/16", 26);
        let v6 = pool("v6", "fd00::/64", 122);
        let pools = [a, b, c, d, v6];
        let labels = BTreeMap::from([("rack".to_string(), "r1".to_string())]);
        let (ok, skipped) = eligible(&pools, Family::V4, AllowedUse::Workload, &labels, None, &[]);
        assert_eq!(
            ok.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["d"]
        );
        assert_eq!(
            skipped,
            vec![
                Skipped::Disabled("a".into()),
                Skipped::NotSelected("b".into()),
                Skipped::UseNotAllowed("c".into()),
            ]
        );
        // Asking for a pool by name (or CIDR) overrides its nodeSelector.
        let (ok, _) = eligible(
            &pools,
            Family::V4,
            AllowedUse::Workload,
            &labels,
            None,
            &["10.1.0.0/16".into()],
        );
        assert_eq!(
            ok.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
    }

    #[test]
    fn manual_pools_need_a_request_and_namespace_selectors_always_apply() {
        let auto = pool("auto", "10.0.0.0/16", 26);
        let mut manual = pool("manual", "10.1.0.0/16", 26);
        manual.assignment_mode = AssignmentMode::Manual;
        let mut team = pool("team-a", "10.2.0.0/16", 26);
        team.namespace_selector = Some(Selector::parse("team == 'a'").unwrap());
        let pools = [auto, manual, team];
        let node = BTreeMap::new();
        let ns_a = BTreeMap::from([("team".to_string(), "a".to_string())]);
        let ns_b = BTreeMap::from([("team".to_string(), "b".to_string())]);
        let pick = |ns: Option<&BTreeMap<String, String>>, req: &[&str]| {
            let req: Vec<String> = req.iter().map(|s| s.to_string()).collect();
            let (ok, skipped) = eligible(&pools, Family::V4, AllowedUse::Workload, &node, ns, &req);
            (
                ok.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
                skipped,
            )
        };
        // Automatic: the manual pool is skipped; team-a only for team a.
        let (ok, skipped) = pick(Some(&ns_b), &[]);
        assert_eq!(ok, ["auto"]);
        assert_eq!(
            skipped,
            vec![
                Skipped::Manual("manual".into()),
                Skipped::NamespaceNotSelected("team-a".into())
            ]
        );
        assert_eq!(pick(Some(&ns_a), &[]).0, ["auto", "team-a"]);
        // Unknown namespace labels: no namespaceSelector matches.
        assert_eq!(pick(None, &[]).0, ["auto"]);
        // Asked for by name or CIDR (any spelling of it), a Manual pool is used.
        assert_eq!(pick(None, &["manual"]).0, ["manual"]);
        assert_eq!(pick(None, &["10.1.0.0/16"]).0, ["manual"]);
        // Asking for a pool does not get around its namespaceSelector.
        let (ok, skipped) = pick(Some(&ns_b), &["team-a"]);
        assert!(ok.is_empty());
        assert_eq!(
            skipped,
            vec![Skipped::NamespaceNotSelected("team-a".into())]
        );
        assert_eq!(pick(Some(&ns_a), &["team-a"]).0, ["team-a"]);
    }

    #[test]
    fn free_blocks_skip_taken_ones_and_stay_inside_the_pool() {
        let p = pool("p", "10.0.0.0/24", 26);
        let all = free_blocks(&p, "node-1", &HashSet::new(), 10);
        assert_eq!(all.len(), 1, "budget is taken+1");
        let taken: HashSet<IpNetwork> = ["10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/26"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let free = free_blocks(&p, "node-1", &taken, 10);
        assert_eq!(free, vec!["10.0.0.192/26".parse::<IpNetwork>().unwrap()]);
        let mut full = taken.clone();
        full.insert("10.0.0.192/26".parse().unwrap());
        assert!(free_blocks(&p, "node-1", &full, 10).is_empty());
    }

    #[test]
    fn different_hosts_start_at_different_blocks() {
        let p = pool("p", "10.0.0.0/16", 26);
        let starts: HashSet<IpNetwork> = (0..20)
            .map(|i| free_blocks(&p, &format!("node-{i}"), &HashSet::new(), 1)[0])
            .collect();
        assert!(starts.len() > 10, "{starts:?}");
    }

    #[test]
    fn huge_ipv6_pools_are_not_enumerated() {
        let p = pool("v6", "fd00::/48", 122);
        let free = free_blocks(&p, "n", &HashSet::new(), 5);
        assert_eq!(free.len(), 1);
        assert!(p.cidr.contains(free[0].ip()));
        assert_eq!(free[0].prefix(), 122);
    }
}
