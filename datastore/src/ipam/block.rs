//! Allocation inside one block, as pure functions over Calico's block
//! format (`IPAMBlockSpec`):
//!
//! - `allocations[ordinal]` is `None` when the address is free, else the
//!   index into `attributes` of who holds it;
//! - `unallocated` lists the free ordinals in the order they will be handed
//!   out (released addresses go to the back, so an address is not reused
//!   right away — a pod that just died may still have packets in flight);
//! - `attributes[i]` is `{handle_id, secondary}`; allocations with the same
//!   handle and secondary attributes share one entry.
//!
//! Blocks come from the datastore, so before anything touches one,
//! [`Block::parse`] checks it is internally consistent; a block that is not
//! is reported, never indexed blindly.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use ippool_crd::{AllocationAttribute, IPAMBlockSpec, overlaps};

/// Largest block we accept: Calico's smallest block size is /20 (v4) and
/// /116 (v6), i.e. 4096 addresses.
pub const MAX_BLOCK_ADDRESSES: u128 = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("IPAM block {cidr} is corrupt: {reason}")]
pub struct CorruptBlock {
    pub cidr: String,
    pub reason: String,
}

/// The affinity string Calico stores on a block owned by `host`.
pub fn host_affinity(host: &str) -> String {
    format!("host:{host}")
}

/// A block checked to be consistent, with its CIDR parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub cidr: IpNetwork,
    pub spec: IPAMBlockSpec,
}

fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn u128_to_ip(v: u128, like: IpAddr) -> IpAddr {
    match like {
        // Block arithmetic never leaves the block, so this fits in 32 bits.
        IpAddr::V4(_) => IpAddr::V4(u32::try_from(v).unwrap_or(u32::MAX).into()),
        IpAddr::V6(_) => IpAddr::V6(v.into()),
    }
}

/// Number of addresses in a network (saturating for huge v6 prefixes).
pub fn size_of(net: &IpNetwork) -> u128 {
    let bits = if net.is_ipv4() { 32 } else { 128 };
    let host_bits = bits - u32::from(net.prefix());
    if host_bits >= 128 {
        u128::MAX
    } else {
        1u128 << host_bits
    }
}

/// The `n`th address of a network.
pub fn nth(net: &IpNetwork, n: u128) -> IpAddr {
    u128_to_ip(ip_to_u128(net.network()) + n, net.ip())
}

impl Block {
    /// A fresh, empty block affine to `host`.
    pub fn new(cidr: IpNetwork, host: &str) -> Block {
        let n = usize::try_from(size_of(&cidr).min(MAX_BLOCK_ADDRESSES)).unwrap_or(0);
        Block {
            cidr,
            spec: IPAMBlockSpec {
                cidr: cidr.to_string(),
                affinity: Some(host_affinity(host)),
                affinity_claim_time: Some(k8s_openapi::jiff::Timestamp::now().to_string()),
                allocations: vec![None; n],
                unallocated: (0..n).collect(),
                ..Default::default()
            },
        }
    }

    /// Checks a block read from the datastore.
    pub fn parse(spec: IPAMBlockSpec) -> Result<Block, CorruptBlock> {
        let bad = |reason: String| CorruptBlock {
            cidr: spec.cidr.clone(),
            reason,
        };
        let cidr: IpNetwork = spec
            .cidr
            .parse()
            .map_err(|e| bad(format!("cidr does not parse: {e}")))?;
        let size = size_of(&cidr);
        if size > MAX_BLOCK_ADDRESSES {
            return Err(bad(format!("{size} addresses is larger than any block")));
        }
        let n = usize::try_from(size).unwrap_or(0);
        if spec.allocations.len() != n {
            return Err(bad(format!(
                "{} allocation slots for {n} addresses",
                spec.allocations.len()
            )));
        }
        if let Some(i) = spec
            .allocations
            .iter()
            .flatten()
            .find(|&&i| i >= spec.attributes.len())
        {
            return Err(bad(format!(
                "allocation points at attribute {i} of {}",
                spec.attributes.len()
            )));
        }
        let mut seen = vec![false; n];
        for &o in &spec.unallocated {
            if o >= n {
                return Err(bad(format!("free ordinal {o} is outside the block")));
            }
            if seen[o] {
                return Err(bad(format!("free ordinal {o} is listed twice")));
            }
            if spec.allocations[o].is_some() {
                return Err(bad(format!("ordinal {o} is both free and allocated")));
            }
            seen[o] = true;
        }
        Ok(Block { cidr, spec })
    }

    pub fn host(&self) -> Option<&str> {
        self.spec.affinity.as_deref()?.strip_prefix("host:")
    }

    pub fn num_free(&self) -> usize {
        self.spec.unallocated.len()
    }

    pub fn num_allocated(&self) -> usize {
        self.spec.allocations.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.num_allocated() == 0
    }

    pub fn ordinal_of(&self, ip: IpAddr) -> Option<usize> {
        if !self.cidr.contains(ip) || ip.is_ipv4() != self.cidr.is_ipv4() {
            return None;
        }
        usize::try_from(ip_to_u128(ip) - ip_to_u128(self.cidr.network())).ok()
    }

    fn attribute_index(&mut self, handle: &str, secondary: &BTreeMap<String, String>) -> usize {
        if let Some(i) = self
            .spec
            .attributes
            .iter()
            .position(|a| a.handle_id.as_deref() == Some(handle) && &a.secondary == secondary)
        {
            return i;
        }
        self.spec.attributes.push(AllocationAttribute {
            handle_id: Some(handle.to_string()),
            secondary: secondary.clone(),
            ..Default::default()
        });
        self.spec.attributes.len() - 1
    }

    fn bump_sequence(&mut self) {
        self.spec.sequence_number = self.spec.sequence_number.wrapping_add(1);
    }

    /// Takes up to `n` free addresses for `handle`. Returns what it took
    /// (fewer than `n` when the block runs out).
    pub fn assign(
        &mut self,
        n: usize,
        handle: &str,
        secondary: &BTreeMap<String, String>,
    ) -> Vec<IpAddr> {
        self.assign_skipping(n, handle, secondary, &[])
    }

    /// [`Block::assign`], leaving free addresses inside `reserved`
    /// (IPReservations) where they are.
    pub fn assign_skipping(
        &mut self,
        n: usize,
        handle: &str,
        secondary: &BTreeMap<String, String>,
        reserved: &[IpNetwork],
    ) -> Vec<IpAddr> {
        let reserved: Vec<&IpNetwork> = reserved
            .iter()
            .filter(|r| overlaps(r, &self.cidr))
            .collect();
        let mut ordinals = Vec::with_capacity(n.min(self.spec.unallocated.len()));
        if reserved.is_empty() {
            let take = n.min(self.spec.unallocated.len());
            ordinals.extend(self.spec.unallocated.drain(..take));
        } else {
            let cidr = self.cidr;
            self.spec.unallocated.retain(|&o| {
                if ordinals.len() == n || reserved.iter().any(|r| r.contains(nth(&cidr, o as u128)))
                {
                    return true;
                }
                ordinals.push(o);
                false
            });
        }
        if ordinals.is_empty() {
            return Vec::new();
        }
        let attr = self.attribute_index(handle, secondary);
        self.bump_sequence();
        let mut ips = Vec::with_capacity(ordinals.len());
        for o in ordinals {
            self.spec.allocations[o] = Some(attr);
            self.spec
                .sequence_number_for_allocation
                .insert(o.to_string(), self.spec.sequence_number);
            ips.push(nth(&self.cidr, o as u128));
        }
        ips
    }

    /// Takes one specific address for `handle`; false if it is not free.
    pub fn assign_ip(
        &mut self,
        ip: IpAddr,
        handle: &str,
        secondary: &BTreeMap<String, String>,
    ) -> bool {
        let Some(o) = self.ordinal_of(ip) else {
            return false;
        };
        let Some(pos) = self.spec.unallocated.iter().position(|&u| u == o) else {
            return false;
        };
        let attr = self.attribute_index(handle, secondary);
        self.bump_sequence();
        self.spec.unallocated.remove(pos);
        self.spec.allocations[o] = Some(attr);
        self.spec
            .sequence_number_for_allocation
            .insert(o.to_string(), self.spec.sequence_number);
        true
    }

    /// Addresses held by `handle`.
    pub fn ips_of(&self, handle: &str) -> Vec<IpAddr> {
        self.spec
            .allocations
            .iter()
            .enumerate()
            .filter_map(|(o, a)| {
                let attr = self.spec.attributes.get((*a)?)?;
                (attr.handle_id.as_deref() == Some(handle)).then(|| nth(&self.cidr, o as u128))
            })
            .collect()
    }

    fn free_ordinal(&mut self, o: usize) {
        self.spec.allocations[o] = None;
        self.spec.unallocated.push(o);
        self.spec
            .sequence_number_for_allocation
            .remove(&o.to_string());
    }

    /// Frees every address `handle` holds; returns how many.
    pub fn release_handle(&mut self, handle: &str) -> usize {
        let ordinals: Vec<usize> = self
            .spec
            .allocations
            .iter()
            .enumerate()
            .filter_map(|(o, a)| {
                let attr = self.spec.attributes.get((*a)?)?;
                (attr.handle_id.as_deref() == Some(handle)).then_some(o)
            })
            .collect();
        if ordinals.is_empty() {
            return 0;
        }
        self.bump_sequence();
        for &o in &ordinals {
            self.free_ordinal(o);
        }
        self.compact_attributes();
        ordinals.len()
    }

    /// Frees specific addresses; returns those that were allocated here.
    pub fn release_ips(&mut self, ips: &[IpAddr]) -> Vec<IpAddr> {
        let mut freed = Vec::new();
        for &ip in ips {
            if let Some(o) = self.ordinal_of(ip)
                && self.spec.allocations[o].is_some()
            {
                self.free_ordinal(o);
                freed.push(ip);
            }
        }
        if !freed.is_empty() {
            self.bump_sequence();
            self.compact_attributes();
        }
        freed
    }

    /// Drops attribute entries nothing points at any more and renumbers the
    /// rest, so attributes do not grow without bound over pod churn.
    fn compact_attributes(&mut self) {
        let mut used = vec![false; self.spec.attributes.len()];
        for a in self.spec.allocations.iter().flatten() {
            used[*a] = true;
        }
        if used.iter().all(|u| *u) {
            return;
        }
        let mut remap = vec![usize::MAX; used.len()];
        let mut kept = Vec::new();
        for (i, attr) in std::mem::take(&mut self.spec.attributes)
            .into_iter()
            .enumerate()
        {
            if used[i] {
                remap[i] = kept.len();
                kept.push(attr);
            }
        }
        self.spec.attributes = kept;
        for a in self.spec.allocations.iter_mut().flatten() {
            *a = remap[*a];
        }
    }

    /// Every allocated address with its handle (for audits).
    pub fn allocations(&self) -> Vec<(IpAddr, Option<&str>)> {
        self.spec
            .allocations
            .iter()
            .enumerate()
            .filter_map(|(o, a)| {
                let attr = self.spec.attributes.get((*a)?)?;
                Some((nth(&self.cidr, o as u128), attr.handle_id.as_deref()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(s: &str) -> Block {
        Block::new(s.parse().unwrap(), "node-1")
    }

    fn none() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn a_new_block_is_empty_and_affine() {
        let b = block("10.65.0.64/26");
        assert_eq!(b.num_free(), 64);
        assert!(b.is_empty());
        assert_eq!(b.host(), Some("node-1"));
        assert_eq!(b.spec.affinity.as_deref(), Some("host:node-1"));
        assert_eq!(Block::parse(b.spec.clone()).unwrap(), b);
    }

    #[test]
    fn assign_hands_out_addresses_in_order_and_never_twice() {
        let mut b = block("10.65.0.64/26");
        let a = b.assign(3, "h1", &none());
        assert_eq!(
            a,
            ["10.65.0.64", "10.65.0.65", "10.65.0.66"].map(|s| s.parse::<IpAddr>().unwrap())
        );
        let c = b.assign(100, "h2", &none());
        assert_eq!(c.len(), 61, "only what is left");
        assert!(a.iter().all(|ip| !c.contains(ip)));
        assert_eq!(b.num_free(), 0);
        assert!(b.assign(1, "h3", &none()).is_empty());
        assert_eq!(b.spec.attributes.len(), 2, "one entry per handle");
    }

    #[test]
    fn reserved_addresses_are_skipped_and_stay_free() {
        let mut b = block("10.65.0.0/29");
        let reserved: Vec<IpNetwork> = ["10.65.0.0/31", "10.65.0.5", "10.66.0.0/16"]
            .iter()
            .map(|s| ippool_crd::parse_reserved(s).unwrap())
            .collect();
        let got = b.assign_skipping(10, "h", &none(), &reserved);
        assert_eq!(
            got,
            [
                "10.65.0.2",
                "10.65.0.3",
                "10.65.0.4",
                "10.65.0.6",
                "10.65.0.7"
            ]
            .map(|s| s.parse::<IpAddr>().unwrap())
        );
        // The reserved ones are still free, in their order; the block is
        // consistent, and asking again gives nothing.
        assert_eq!(b.spec.unallocated, vec![0, 1, 5]);
        Block::parse(b.spec.clone()).unwrap();
        assert!(b.assign_skipping(1, "h", &none(), &reserved).is_empty());
        // A reservation covering the whole block leaves it untouched.
        let mut whole = block("10.65.1.0/30");
        let all = [ippool_crd::parse_reserved("10.65.0.0/16").unwrap()];
        assert!(whole.assign_skipping(1, "h", &none(), &all).is_empty());
        assert_eq!(whole.num_free(), 4);
        assert_eq!(
            whole.spec.sequence_number,
            block("10.65.1.0/30").spec.sequence_number
        );
    }

    #[test]
    fn release_by_handle_frees_only_that_handle_and_compacts_attributes() {
        let mut b = block("10.65.0.0/30");
        let a = b.assign(1, "a", &none());
        let bb = b.assign(2, "b", &none());
        assert_eq!(b.release_handle("a"), 1);
        assert_eq!(b.release_handle("a"), 0);
        assert_eq!(b.ips_of("b"), bb);
        assert_eq!(b.spec.attributes.len(), 1);
        assert_eq!(b.spec.attributes[0].handle_id.as_deref(), Some("b"));
        // The released address goes to the back of the free list.
        assert_eq!(b.spec.unallocated.last(), Some(&0));
        assert_eq!(b.ordinal_of(a[0]), Some(0));
        Block::parse(b.spec.clone()).unwrap();
    }

    #[test]
    fn release_ips_and_assign_ip() {
        let mut b = block("fd00::/126");
        let ip: IpAddr = "fd00::2".parse().unwrap();
        assert!(b.assign_ip(ip, "t", &none()));
        assert!(!b.assign_ip(ip, "t", &none()), "already taken");
        assert!(
            !b.assign_ip("fd00::9".parse().unwrap(), "t", &none()),
            "outside"
        );
        assert_eq!(b.release_ips(&[ip, "fd00::1".parse().unwrap()]), vec![ip]);
        assert!(b.is_empty());
    }

    #[test]
    fn sequence_number_moves_on_every_change() {
        let mut b = block("10.0.0.0/30");
        let s0 = b.spec.sequence_number;
        b.assign(1, "a", &none());
        let s1 = b.spec.sequence_number;
        b.release_handle("a");
        assert!(s0 < s1 && s1 < b.spec.sequence_number);
    }

    #[test]
    fn corrupt_blocks_are_rejected_not_indexed() {
        let good = block("10.0.0.0/30").spec;
        let mut bad = good.clone();
        bad.allocations.pop();
        assert!(Block::parse(bad).unwrap_err().reason.contains("slots"));

        let mut bad = good.clone();
        bad.allocations[0] = Some(7);
        bad.unallocated.retain(|&o| o != 0);
        assert!(
            Block::parse(bad)
                .unwrap_err()
                .reason
                .contains("attribute 7")
        );

        let mut bad = good.clone();
        bad.unallocated.push(9);
        assert!(Block::parse(bad).unwrap_err().reason.contains("outside"));

        let mut bad = good.clone();
        bad.unallocated.push(1);
        assert!(Block::parse(bad).unwrap_err().reason.contains("twice"));

        let mut bad = good;
        bad.cidr = "10.0.0.0/8".into();
        assert!(Block::parse(bad).unwrap_err().reason.contains("larger"));
    }
}
