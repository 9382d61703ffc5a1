//! IPPool status: what calico-node writes to each pool's `status`
//! (Calico-style conditions plus block usage), computed as a pure function
//! of the pools and the IPAM blocks.
//!
//! | condition `Allocatable` | when |
//! |---|---|
//! | `True`, reason `OK` | the pool can hand out addresses |
//! | `False`, reason `CIDROverlap` | its CIDR overlaps an older pool's (oldest wins; same age: the smaller name) |
//! | `False`, reason `PoolDisabled` | `spec.disabled: true` |
//!
//! An unchanged condition keeps its `lastTransitionTime`, so computing the
//! status of an unchanged cluster twice gives the same value and the
//! writer has nothing to write.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use ippool_crd::{IPAMBlockSpec, IPPool, IPPoolStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition type.
pub const ALLOCATABLE: &str = "Allocatable";
pub const REASON_OK: &str = "OK";
pub const REASON_DISABLED: &str = "PoolDisabled";
pub const REASON_OVERLAP: &str = "CIDROverlap";

/// The current time, as conditions carry it.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

fn addresses_in(net: &IpNetwork) -> u64 {
    let bits = if net.is_ipv4() { 32 } else { 128 };
    let host_bits = u32::from(bits - net.prefix());
    1u64.checked_shl(host_bits).unwrap_or(u64::MAX)
}

/// Whether `a` was created before `b` (then by name, so every node agrees).
fn older(a: &IPPool, b: &IPPool) -> bool {
    let ts = |p: &IPPool| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    match (ts(a), ts(b)) {
        (Some(x), Some(y)) if x != y => x < y,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        _ => a.name() < b.name(),
    }
}

/// The status each pool (by name) should have. `previous` conditions come
/// from the pools themselves; `now` is the transition time of conditions
/// that change. Pools without a parseable CIDR get no status.
pub fn pool_statuses(
    pools: &[IPPool],
    blocks: &[IPAMBlockSpec],
    now: &Time,
) -> BTreeMap<String, IPPoolStatus> {
    let nets: Vec<(&IPPool, IpNetwork)> = pools
        .iter()
        .filter_map(|p| Some((p, p.spec.cidr_network()?)))
        .collect();
    let block_nets: Vec<(&IPAMBlockSpec, IpNetwork)> = blocks
        .iter()
        .filter_map(|b| Some((b, b.cidr_network()?)))
        .collect();
    let mut out = BTreeMap::new();
    for (pool, net) in &nets {
        let winner = nets
            .iter()
            .filter(|(other, onet)| {
                other.name() != pool.name() && overlaps(net, onet) && older(other, pool)
            })
            .min_by(|(a, _), (b, _)| {
                if older(a, b) {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                }
            });
        let (status, reason, message) = match winner {
            Some((other, onet)) => (
                "False",
                REASON_OVERLAP,
                format!(
                    "cidr {net} overlaps IPPool {:?} ({onet}), which is older; \
                     delete or replace one of them",
                    other.name()
                ),
            ),
            None if pool.spec.disabled() => (
                "False",
                REASON_DISABLED,
                "spec.disabled is true: no new addresses are assigned from this pool".to_string(),
            ),
            None => (
                "True",
                REASON_OK,
                "addresses can be assigned from this pool".to_string(),
            ),
        };
        let mine = block_nets
            .iter()
            .filter(|(_, b)| net.contains(b.network()) && b.prefix() >= net.prefix());
        let (mut n_blocks, mut used, mut capacity) = (0u32, 0u64, 0u64);
        for (block, bnet) in mine {
            n_blocks = n_blocks.saturating_add(1);
            used = used.saturating_add(block.allocated_count() as u64);
            capacity = capacity.saturating_add(addresses_in(bnet));
        }
        let previous = pool
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == ALLOCATABLE));
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => now.clone(),
        };
        let condition = Condition {
            type_: ALLOCATABLE.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time,
            observed_generation: pool.metadata.generation,
        };
        out.insert(
            pool.name().to_string(),
            IPPoolStatus {
                conditions: Some(vec![condition]),
                allocated_blocks: Some(n_blocks),
                allocated_addresses: Some(used),
                block_addresses: Some(capacity),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ippool_crd::IPPoolSpec;
    use k8s_openapi::jiff::Timestamp;

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn pool(name: &str, cidr: &str, created: i64) -> IPPool {
        let mut p = IPPool::new(name, IPPoolSpec::new(cidr));
        p.metadata.creation_timestamp = Some(time(created));
        p
    }

    fn block(cidr: &str, used: usize) -> IPAMBlockSpec {
        let mut b = IPAMBlockSpec::empty(cidr.parse().unwrap()).unwrap();
        for slot in b.allocations.iter_mut().take(used) {
            *slot = Some(0);
        }
        b
    }

    fn cond(s: &IPPoolStatus) -> &Condition {
        &s.conditions.as_ref().unwrap()[0]
    }

    #[test]
    fn usage_counts_the_blocks_inside_each_pool() {
        let pools = [pool("a", "10.65.0.0/16", 1), pool("b", "10.66.0.0/16", 2)];
        let blocks = [
            block("10.65.0.0/26", 3),
            block("10.65.0.64/26", 0),
            block("10.66.1.0/26", 64),
            block("10.99.0.0/26", 5),
        ];
        let st = pool_statuses(&pools, &blocks, &time(100));
        assert_eq!(st["a"].allocated_blocks, Some(2));
        assert_eq!(st["a"].allocated_addresses, Some(3));
        assert_eq!(st["a"].block_addresses, Some(128));
        assert_eq!(st["b"].allocated_blocks, Some(1));
        assert_eq!(st["b"].allocated_addresses, Some(64));
        let c = cond(&st["a"]);
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            (ALLOCATABLE, "True", REASON_OK)
        );
        assert_eq!(c.last_transition_time, time(100));
    }

    #[test]
    fn the_younger_of_two_overlapping_pools_is_not_allocatable() {
        let pools = [
            pool("young", "10.65.0.0/24", 50),
            pool("old", "10.65.0.0/16", 10),
            pool("v6", "fd00::/48", 1),
        ];
        let st = pool_statuses(&pools, &[], &time(100));
        assert_eq!(cond(&st["old"]).reason, REASON_OK);
        let y = cond(&st["young"]);
        assert_eq!(
            (y.status.as_str(), y.reason.as_str()),
            ("False", REASON_OVERLAP)
        );
        assert!(
            y.message.contains("\"old\"") && y.message.contains("10.65.0.0/16"),
            "{}",
            y.message
        );
        assert_eq!(cond(&st["v6"]).reason, REASON_OK);
        // Same creation time: the name decides, the same way on every node.
        let tie = [pool("b", "10.0.0.0/8", 5), pool("a", "10.1.0.0/16", 5)];
        let st = pool_statuses(&tie, &[], &time(100));
        assert_eq!(cond(&st["a"]).reason, REASON_OK);
        assert_eq!(cond(&st["b"]).reason, REASON_OVERLAP);
    }

    #[test]
    fn a_disabled_pool_says_so() {
        let mut p = pool("p", "10.65.0.0/16", 1);
        p.spec.disabled = Some(true);
        let st = pool_statuses(&[p], &[], &time(100));
        let c = cond(&st["p"]);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", REASON_DISABLED)
        );
    }

    #[test]
    fn recomputing_an_unchanged_pool_gives_the_same_status() {
        let mut p = pool("p", "10.65.0.0/16", 1);
        let blocks = [block("10.65.0.0/26", 2)];
        let first = pool_statuses(std::slice::from_ref(&p), &blocks, &time(100));
        p.status = Some(first["p"].clone());
        let again = pool_statuses(std::slice::from_ref(&p), &blocks, &time(200));
        assert_eq!(again["p"], first["p"], "nothing to write");
        // A flip moves the transition time; usage changes do not.
        p.spec.disabled = Some(true);
        let flipped = pool_statuses(std::slice::from_ref(&p), &blocks, &time(300));
        assert_eq!(cond(&flipped["p"]).last_transition_time, time(300));
        p.spec.disabled = None;
        let more = pool_statuses(&[p], &[block("10.65.0.0/26", 9)], &time(400));
        assert_eq!(cond(&more["p"]).last_transition_time, time(100));
        assert_eq!(more["p"].allocated_addresses, Some(9));
    }
}
