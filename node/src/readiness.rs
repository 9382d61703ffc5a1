//! Calico's meaning of "this node is ready", as a pure rule.
//!
//! BGP: right after start, the node is ready once *every* configured peer is
//! Established (so a rolling restart does not move on while this node's
//! routes are still being exchanged). If that has not happened within the
//! start-up threshold, or once it has happened, one Established peer is
//! enough: a single dead peer must not take every node out of service. A
//! node with no peers configured is ready. felix and confd must also report
//! ready.

use std::time::{Duration, Instant};

/// Default start-up threshold for "all peers Established".
pub const ALL_PEERS_THRESHOLD: Duration = Duration::from_secs(30);

/// Why BGP does not make the node ready; `down` lists the peers that are
/// not Established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BgpNotReady {
    #[error("no BGP peer is established ({} down: {})", .down.len(), .down.join(", "))]
    NoneEstablished { down: Vec<String> },
    #[error(
        "BGP not yet established with {} (waiting for every peer, up to {}s after start)",
        .down.join(", "),
        .threshold.as_secs()
    )]
    Waiting {
        down: Vec<String>,
        threshold: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct BgpReadiness {
    started: Instant,
    threshold: Duration,
    all_up_once: bool,
}

impl BgpReadiness {
    pub fn new(started: Instant, threshold: Duration) -> Self {
        BgpReadiness {
            started,
            threshold,
            all_up_once: false,
        }
    }

    /// `down` lists the peers that are not Established.
    pub fn check(
        &mut self,
        now: Instant,
        total: usize,
        down: &[String],
    ) -> Result<(), BgpNotReady> {
        if total == 0 {
            return Ok(());
        }
        let established = total.saturating_sub(down.len());
        if down.is_empty() {
            self.all_up_once = true;
            return Ok(());
        }
        let relaxed = self.all_up_once || now.duration_since(self.started) >= self.threshold;
        if relaxed && established > 0 {
            return Ok(());
        }
        let down = down.to_vec();
        Err(if relaxed {
            BgpNotReady::NoneEstablished { down }
        } else {
            BgpNotReady::Waiting {
                down,
                threshold: self.threshold,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_peers_is_ready() {
        let t0 = Instant::now();
        assert!(
            BgpReadiness::new(t0, ALL_PEERS_THRESHOLD)
                .check(t0, 0, &[])
                .is_ok()
        );
    }

    #[test]
    fn after_start_every_peer_must_be_up_until_the_threshold() {
        let t0 = Instant::now();
        let mut r = BgpReadiness::new(t0, Duration::from_secs(30));
        let err = r
            .check(t0 + Duration::from_secs(5), 3, &down(&["10.0.0.3"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.0.0.3"), "{err}");
        // Past the threshold, one established peer is enough.
        assert!(
            r.check(t0 + Duration::from_secs(31), 3, &down(&["10.0.0.3"]))
                .is_ok()
        );
    }

    #[test]
    fn once_all_were_up_one_is_enough_but_none_is_not() {
        let t0 = Instant::now();
        let mut r = BgpReadiness::new(t0, Duration::from_secs(30));
        assert!(r.check(t0, 2, &[]).is_ok());
        assert!(
            r.check(t0 + Duration::from_secs(1), 2, &down(&["a"]))
                .is_ok()
        );
        let err = r
            .check(t0 + Duration::from_secs(2), 2, &down(&["a", "b"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no BGP peer"), "{err}");
    }
}
