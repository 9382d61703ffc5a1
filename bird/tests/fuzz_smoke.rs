//! The fuzz target's regression corpus and a bounded, seeded mutation
//! loop over it, on the stable toolchain, as part of `cargo test`.
//! (`cargo +nightly fuzz run receive` in bird/fuzz runs the real
//! fuzzer over the same function and corpus.)
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bird::fuzzing::{Outcome, receive};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/receive")
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_regression_file_gets_its_rfc_action() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions.txt"))
            .unwrap();
    let mut checked = 0;
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        let data = std::fs::read(corpus_dir().join(words[0])).unwrap();
        let got = receive(&data);
        match words[1] {
            "reset" => {
                let want = (words[2].parse().unwrap(), words[3].parse().unwrap());
                assert_eq!(got.reset, Some(want), "{line}: {got:?}");
            }
            "withdraw" => assert_eq!((got.reset, got.routes), (None, 0), "{line}: {got:?}"),
            "discard" => assert_eq!((got.reset, got.routes), (None, 1), "{line}: {got:?}"),
            other => panic!("unknown expectation {other} in {line}"),
        }
        checked += 1;
    }
    assert!(checked >= 30, "manifest lists only {checked} regressions");
}

#[test]
fn seeds_decode_cleanly() {
    for (name, data) in corpus().into_iter().filter(|(n, _)| n.starts_with("seed_")) {
        let got = receive(&data);
        assert_eq!(got.reset, None, "{name}: {got:?}");
        assert!(got.messages >= 1, "{name}");
    }
}

/// xorshift64*: deterministic, so a failure reproduces from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u8; 8] = [0, 1, 2, 0x7f, 0x80, 0xfe, 0xff, 19];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, others: &[(String, Vec<u8>)]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if len > 1 => {
                input.remove(rng.below(len));
            }
            4 if len > 1 => input.truncate(rng.below(len)),
            5 if len > 2 => {
                // A 16-bit length field set to something near the edge.
                let i = rng.below(len - 1);
                let v = [0u16, 1, 18, 19, 23, 255, 256, 4096, 4097, 0xffff][rng.below(10)];
                input[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            6 => {
                // Splice in the messages of another corpus file.
                let (_, other) = &others[rng.below(others.len())];
                if other.len() > 1 {
                    let at = rng.below(len + 1).max(1).min(len);
                    input.splice(at..at, other[1..].iter().copied());
                }
            }
            _ if len > 0 => {
                let i = rng.below(len);
                input[i] = input[i].wrapping_add(1 + rng.below(3) as u8);
            }
            _ => {}
        }
    }
    input.truncate(8192);
}

#[test]
fn hundred_thousand_seeded_mutations_never_panic() {
    let seeds = corpus();
    let mut rng = Rng(0x5eed_b17d_0000_0001);
    let started = Instant::now();
    let mut resets = 0usize;
    let mut routes = 0usize;
    const N: usize = 100_000;
    for i in 0..N {
        let (_, base) = &seeds[rng.below(seeds.len())];
        let mut input = base.clone();
        mutate(&mut rng, &mut input, &seeds);
        let result = std::panic::catch_unwind(|| receive(&input));
        let out: Outcome = match result {
            Ok(o) => o,
            Err(_) => panic!("receive path panicked on iteration {i}, input {input:02x?}"),
        };
        resets += usize::from(out.reset.is_some());
        routes += out.routes;
    }
    // The loop must exercise both sides: inputs that reset and inputs that
    // install routes.
    assert!(resets > N / 20, "only {resets} resets");
    assert!(routes > N / 200, "only {routes} routes installed");
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "fuzz smoke took {:?}",
        started.elapsed()
    );
}

/// Valid BFD datagrams (with the session selector byte in front) in each
/// state, with and without Poll / Final: the seeds of the `bfd` target.
fn bfd_seeds() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for (sel, state) in [(0u8, 1u8), (1, 2), (3, 3), (3, 1), (1, 0)] {
        for flags in [0u8, 0x20, 0x10] {
            let mut p = vec![sel, 0x20, (state << 6) | flags, 3, 24];
            p.extend_from_slice(&99u32.to_be_bytes());
            p.extend_from_slice(&(if sel & 2 != 0 { 0x1234_5678u32 } else { 0 }).to_be_bytes());
            p.extend_from_slice(&100_000u32.to_be_bytes());
            p.extend_from_slice(&100_000u32.to_be_bytes());
            p.extend_from_slice(&0u32.to_be_bytes());
            v.push((format!("seed_{sel}_{state}_{flags}"), p));
        }
    }
    v.extend(bfd_auth_seeds());
    v
}

/// Signed datagrams (keyed and meticulous keyed SHA1 with the fuzz key,
/// sequence number 3) for the authenticated sessions (selector bits 2-3):
/// the corpus files were written by Python's hashlib, so matching them
/// also checks our digest.
fn bfd_auth_seeds() -> Vec<(String, Vec<u8>)> {
    use bird::bfd::packet::{AuthKind, Control, Key};
    let mut v = Vec::new();
    for (prot, kind) in [
        (1u8, AuthKind::KeyedSha1),
        (2, AuthKind::MeticulousKeyedSha1),
    ] {
        for (sel, state) in [(0u8, 1u8), (3, 3), (3, 1)] {
            let sel = (prot << 2) | sel;
            let mut p = vec![0x20, state << 6, 3, 24];
            p.extend_from_slice(&99u32.to_be_bytes());
            p.extend_from_slice(&(if sel & 2 != 0 { 0x1234_5678u32 } else { 0 }).to_be_bytes());
            p.extend_from_slice(&100_000u32.to_be_bytes());
            p.extend_from_slice(&100_000u32.to_be_bytes());
            p.extend_from_slice(&0u32.to_be_bytes());
            let c = Control::parse(&p).unwrap();
            let key = Key::new(kind, 1, bird::fuzzing::BFD_FUZZ_KEY).unwrap();
            let mut input = vec![sel];
            input.extend_from_slice(&c.encode_signed(&key, 3));
            v.push((format!("seed_auth_{sel}_{state}"), input));
        }
    }
    v
}

#[test]
fn signed_bfd_seeds_are_admitted_and_tampered_ones_are_not() {
    for (name, data) in bfd_auth_seeds() {
        let out = bird::fuzzing::bfd_receive(&data);
        assert!(out.accepted && out.admitted, "{name}: {out:?}");
        // A flipped digest bit, another selector's key type, or a session
        // without authentication: parsed, but not admitted.
        let mut bad = data.clone();
        *bad.last_mut().unwrap() ^= 1;
        let out = bird::fuzzing::bfd_receive(&bad);
        assert!(out.accepted && !out.admitted, "{name} tampered: {out:?}");
        for other in [0u8, 3] {
            let mut bad = data.clone();
            bad[0] = (bad[0] & !0x0c) | (other << 2);
            let out = bird::fuzzing::bfd_receive(&bad);
            assert!(!out.admitted, "{name} to protection {other}: {out:?}");
        }
        let mut bad = data.clone();
        bad[0] ^= 0x0c; // keyed <-> meticulous
        assert!(
            !bird::fuzzing::bfd_receive(&bad).admitted,
            "{name} other type"
        );
    }
    // Up, through an authenticated bring-up.
    let up = bfd_auth_seeds()
        .into_iter()
        .find(|(n, _)| n == "seed_auth_11_3")
        .unwrap();
    assert_eq!(
        bird::fuzzing::bfd_receive(&up.1).state,
        bird::bfd::State::Up
    );
}

#[test]
fn bfd_seeds_are_accepted_and_the_corpus_matches_them() {
    for (name, data) in bfd_seeds() {
        assert!(bird::fuzzing::bfd_receive(&data).accepted, "{name}");
        // The checked-in corpus of `cargo fuzz run bfd` holds these.
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/bfd")
            .join(&name);
        assert_eq!(std::fs::read(&file).ok(), Some(data), "{}", file.display());
    }
    // Session selector 3 and a peer saying Up: the session comes up.
    let up = bfd_seeds()
        .into_iter()
        .find(|(n, _)| n == "seed_3_3_0")
        .unwrap();
    assert_eq!(
        bird::fuzzing::bfd_receive(&up.1).state,
        bird::bfd::State::Up
    );
}

#[test]
fn a_hundred_thousand_mutated_bfd_datagrams_never_panic() {
    let seeds = bfd_seeds();
    let mut rng = Rng(0x5eed_bfd0_0000_0001);
    let (mut accepted, mut refused) = (0usize, 0usize);
    const N: usize = 100_000;
    for i in 0..N {
        let (_, base) = &seeds[rng.below(seeds.len())];
        let mut input = base.clone();
        mutate(&mut rng, &mut input, &seeds);
        input.truncate(64);
        let out =
            std::panic::catch_unwind(|| bird::fuzzing::bfd_receive(&input)).unwrap_or_else(|_| {
                panic!("BFD receive panicked on iteration {i}, input {input:02x?}")
            });
        if out.accepted {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    assert!(accepted > N / 20, "only {accepted} accepted");
    assert!(refused > N / 20, "only {refused} refused");
}
