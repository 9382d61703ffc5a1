//! The policy truth tables (`tests/policy_truth/*.yaml`): for every
//! scenario, the policies as a user writes them are converted and the
//! evaluator's verdict is compared with the expected matrix, cell by cell
//! (every source × destination × probe). The same files drive the
//! kernel probes against the nftables dataplane (`policy_nft.rs`); the
//! loader is shared (`common/truth.rs`).
#![allow(clippy::unwrap_used)]

mod common;

use common::truth::{Scenario, World, endpoints, load_all, policy_set, probe};
use felix::policy::{Flow, Peer, Verdict, explain};

/// Every cell of one scenario, in every step (its relabels): (cells
/// checked, failures).
fn check(world: &World, scenario: &Scenario) -> (usize, Vec<String>) {
    let probes: Vec<(char, Flow)> = scenario
        .probes
        .as_ref()
        .unwrap_or(&world.probes)
        .iter()
        .map(|p| probe(p))
        .collect();
    let steps = match scenario.steps(world) {
        Ok(s) => s,
        Err(e) => return (0, vec![format!("{}: bad relabel: {e}", scenario.name)]),
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for step in &steps {
        let world = &step.world;
        let cells = match scenario.matrix(&step.expect, world, probes.len()) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{}: bad matrix: {e}", step.name));
                continue;
            }
        };
        let set = policy_set(world, scenario);
        let eps = endpoints(world);
        let peer = |id: &str| match eps.get(id) {
            Some(ep) => Peer::Endpoint(ep),
            None => Peer::Address(world.hosts[id]),
        };
        for ((src, dst), cell) in &cells {
            if src == dst {
                continue;
            }
            for ((letter, flow), want) in probes.iter().zip(cell.chars()) {
                let want_allow = match want {
                    '.' => false,
                    c if c == *letter => true,
                    c => {
                        failures.push(format!(
                            "{}: {src} -> {dst}: {c:?} is neither {letter:?} nor '.'",
                            step.name
                        ));
                        continue;
                    }
                };
                let got = explain(&set, peer(src), peer(dst), *flow);
                checked += 1;
                if (got.verdict == Verdict::Allow) != want_allow {
                    failures.push(format!(
                        "{}: {src} -> {dst} {} {:?}: want {}, got {:?} ({})",
                        step.name,
                        flow.protocol,
                        flow.dst_port
                            .map(u32::from)
                            .or(flow.icmp.map(|(t, _)| u32::from(t))),
                        if want_allow { "Allow" } else { "Deny" },
                        got.verdict,
                        got.reason
                    ));
                }
            }
        }
    }
    (checked, failures)
}

#[test]
fn every_truth_table_cell_holds() {
    let mut scenarios = 0;
    let mut cells = 0;
    let mut failures = Vec::new();
    for (file, truth) in load_all() {
        let mut names = std::collections::BTreeSet::new();
        for s in &truth.scenarios {
            assert!(names.insert(&s.name), "{file}: scenario {} twice", s.name);
            let (n, f) = check(&truth.world, s);
            cells += n;
            failures.extend(f.into_iter().map(|f| format!("{file}: {f}")));
            scenarios += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The files must not silently shrink.
    assert!(scenarios >= 30, "only {scenarios} scenarios");
    assert!(cells >= 2500, "only {cells} cells");
    eprintln!("{scenarios} scenarios, {cells} cells");
}

/// The checker itself: a wrong cell, a malformed matrix, a wrong letter
/// are all reported.
#[test]
fn a_wrong_expectation_is_reported_cell_by_cell() {
    let (_, truth) = load_all()
        .into_iter()
        .find(|(f, _)| f == "kubernetes.yaml")
        .unwrap();
    let base = truth
        .scenarios
        .iter()
        .find(|s| s.name == "deny-all-ingress")
        .unwrap()
        .clone();
    let (n, f) = check(&truth.world, &base);
    assert!(f.is_empty(), "{f:#?}");
    assert_eq!(n, 30 * 3);

    // ext -> prod/web expected open: three failing cells, named.
    let mut wrong = base.clone();
    wrong.expect = wrong
        .expect
        .replacen("ext         ...", "ext         TUI", 1);
    assert_ne!(wrong.expect, base.expect);
    let (_, f) = check(&truth.world, &wrong);
    assert_eq!(f.len(), 3, "{f:#?}");
    assert!(f.iter().all(|l| l.contains("ext -> prod/web")), "{f:#?}");
    assert!(f[0].contains("want Allow, got Deny"), "{f:#?}");
    assert!(f[0].contains("end-of-tier drop"), "{f:#?}");

    let mut typo = base.clone();
    typo.expect = typo
        .expect
        .replacen("ext         ...", "ext         UTI", 1);
    let (_, f) = check(&truth.world, &typo);
    assert!(f.iter().any(|l| l.contains("is neither")), "{f:#?}");

    let mut short = base.clone();
    short.expect = short
        .expect
        .replacen("ext         ...", "ext         ..", 1);
    let (_, f) = check(&truth.world, &short);
    assert!(f[0].contains("bad matrix"), "{f:#?}");

    let mut missing_row = base;
    missing_row.expect = missing_row
        .expect
        .lines()
        .filter(|l| !l.trim_start().starts_with("ops/mon"))
        .collect::<Vec<_>>()
        .join("\n");
    let (_, f) = check(&truth.world, &missing_row);
    assert!(f[0].contains("rows"), "{f:#?}");
}
