//! The fuzz target's regression corpus and a bounded, seeded mutation
//! loop over it, on the stable toolchain, as part of `cargo test`.
//! (`cargo +nightly fuzz run receive` in crates/bird/fuzz runs the real
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
