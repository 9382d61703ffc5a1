//! BGPConfiguration `logSeverityScreen`: confd sends it and bird logs at
//! that level from the push on, without a restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{Ours, node_a_config, pair};
use proto::bgpconfig as bgp;

/// What confd sends `a` (10.0.0.1): one peer, not `b`.
fn config(severity: &str, peer: &str) -> bgp::BgpConfig {
    bgp::BgpConfig {
        log_severity: severity.into(),
        ..node_a_config(peer)
    }
}

const STRAY: &str = "connection from an unconfigured address";
const PUSH: &str = "configuration from confd";

#[test]
fn log_severity_screen_sets_birds_level_as_it_runs() {
    // RUST_LOG would pin bird's levels; this binary runs this one test.
    // SAFETY: no other thread reads the environment yet.
    unsafe { std::env::remove_var("RUST_LOG") };
    let (a, b) = pair("lsva", "lsvb");
    let a = Arc::new(a);
    let ours = Ours::start_unconfigured(&a, &[]);
    // A connection from b, which is no peer: bird closes it, saying so at
    // debug level only. Returns once bird has closed it.
    let stray = || {
        b.exec(
            "bash",
            &["-c", "exec 3<>/dev/tcp/10.0.0.1/179 && cat <&3 >/dev/null"],
        )
        .unwrap();
    };
    let count = |what: &str| ours.log_text().matches(what).count();

    ours.apply(config("Info", "10.0.0.9"));
    assert_eq!(count(PUSH), 1, "{}", ours.log_text());
    stray();
    assert_eq!(count(STRAY), 0, "{}", ours.log_text());

    ours.apply(config("Debug", "10.0.0.10"));
    stray();
    assert_eq!(count(STRAY), 1, "{}", ours.log_text());
    assert!(
        ours.log_text()
            .contains("log level set by logSeverityScreen"),
        "{}",
        ours.log_text()
    );

    // Warning: a changed configuration no longer logs its info line.
    ours.apply(config("Warning", "10.0.0.8"));
    stray();
    assert_eq!(count(STRAY), 1, "{}", ours.log_text());
    assert_eq!(
        count(PUSH),
        2,
        "only Info's and Debug's pushes: {}",
        ours.log_text()
    );
    // Not a severity: said, and the level stays.
    ours.apply(config("Loud", "10.0.0.7"));
    assert!(
        ours.log_text()
            .contains("logSeverityScreen is not a log severity"),
        "{}",
        ours.log_text()
    );
    assert_eq!(count(PUSH), 2, "{}", ours.log_text());
}
