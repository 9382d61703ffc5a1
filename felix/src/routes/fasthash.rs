//! A fast hasher for the reconciler's prefix-keyed maps.
//!
//! A no-change resync of 100,000 routes does a few hash lookups per route;
//! with the standard SipHash those lookups cost about as much as the kernel
//! takes to produce the dump. This is a multiply-add hasher (the scheme of
//! rustc's FxHash) seeded per process, so the bucket layout still differs
//! between runs. The keys are prefixes from felix's own callers and the
//! kernel, not from untrusted peers directly.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

const K: u64 = 0xf135_7aea_2e62_a9c5;

#[derive(Debug, Clone, Copy)]
pub struct FastHasher {
    hash: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, v: u64) {
        self.hash = self.hash.wrapping_add(v).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }

    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.add(u64::from(v));
    }

    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.add(u64::from(v));
    }

    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }

    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // hashbrown takes the bucket from the low bits and a tag from the
        // top seven; the multiply leaves the best bits at the top.
        self.hash.rotate_left(26)
    }
}

/// Builds [`FastHasher`]s from one random per-process seed.
#[derive(Debug, Clone, Copy)]
pub struct FastState {
    seed: u64,
}

impl Default for FastState {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        });
        FastState { seed }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher { hash: self.seed }
    }
}

pub type FastMap<K, V> = HashMap<K, V, FastState>;
pub type FastSet<K> = HashSet<K, FastState>;

#[cfg(test)]
mod tests {
    use super::*;
    use ipnetwork::IpNetwork;

    #[test]
    fn distinct_prefixes_spread_over_buckets() {
        let state = FastState::default();
        let mut seen = HashSet::new();
        for i in 0..10_000u32 {
            let n =
                IpNetwork::new(std::net::Ipv4Addr::from(0x0a00_0000 + i * 64).into(), 26).unwrap();
            // The low 12 bits pick among 4096 buckets.
            seen.insert(state.hash_one(n) & 0xfff);
        }
        assert!(
            seen.len() > 3000,
            "only {} of 4096 buckets used",
            seen.len()
        );
    }

    #[test]
    fn map_works_as_a_map() {
        let mut m: FastMap<u32, &str> = FastMap::default();
        m.insert(1, "a");
        m.insert(2, "b");
        assert_eq!(m.get(&1), Some(&"a"));
        assert_eq!(m.len(), 2);
    }
}
