//! felix's metrics: duration histograms kept in memory and handed to
//! calico-node in `FelixStatusReply.histograms`; calico-node serves them
//! to Prometheus. felix itself serves no HTTP.
//!
//! | name | labels | what |
//! |---|---|---|
//! | `felix_route_programming_seconds` | | a desired-route change to the kernel's ack of the write |
//! | `felix_resync_duration_seconds` | | one full dump-and-diff of the routing table |
//! | `felix_cni_request_duration_seconds` | `operation` (ADD, DEL), `result` | one CNI request |

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

pub const ROUTE_PROGRAMMING: &str = "felix_route_programming_seconds";
pub const RESYNC_DURATION: &str = "felix_resync_duration_seconds";
pub const CNI_REQUEST_DURATION: &str = "felix_cni_request_duration_seconds";

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Bucket bounds for route programming (a batched netlink write).
pub const ROUTE_BUCKETS: &[Duration] = &[
    Duration::from_micros(500),
    ms(1),
    ms(2),
    ms(5),
    ms(10),
    ms(25),
    ms(50),
    ms(100),
    ms(250),
    ms(500),
    ms(1000),
    ms(2500),
    ms(5000),
    ms(10000),
];

/// Bucket bounds for a full resync (a dump of the table).
pub const RESYNC_BUCKETS: &[Duration] = &[
    ms(1),
    ms(5),
    ms(10),
    ms(25),
    ms(50),
    ms(100),
    ms(250),
    ms(500),
    ms(1000),
    ms(2500),
    ms(5000),
    ms(10000),
    ms(30000),
];

/// Bucket bounds for CNI requests (IPAM round trips and netlink).
pub const CNI_BUCKETS: &[Duration] = &[
    ms(5),
    ms(10),
    ms(25),
    ms(50),
    ms(100),
    ms(250),
    ms(500),
    ms(1000),
    ms(2500),
    ms(5000),
    ms(10000),
    ms(30000),
];

/// A histogram of durations: per-bucket counts (not cumulative), plus the
/// overflow above the last bound, the count and the sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationHistogram {
    bounds: &'static [Duration],
    /// `counts[i]`: observations in (bounds[i-1], bounds[i]]; the last
    /// element counts those above every bound.
    counts: Vec<u64>,
    count: u64,
    sum: Duration,
}

impl DurationHistogram {
    /// `bounds` must be ascending.
    pub fn new(bounds: &'static [Duration]) -> Self {
        DurationHistogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: Duration::ZERO,
        }
    }

    pub fn observe(&mut self, d: Duration) {
        let i = self.bounds.partition_point(|b| *b < d);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.count += 1;
        self.sum = self.sum.saturating_add(d);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// The Prometheus form: cumulative counts per upper bound, in seconds.
    pub fn to_proto(
        &self,
        name: &str,
        help: &str,
        labels: BTreeMap<String, String>,
    ) -> proto::felix::Histogram {
        let mut acc = 0;
        let cumulative_counts = self
            .counts
            .iter()
            .take(self.bounds.len())
            .map(|c| {
                acc += c;
                acc
            })
            .collect();
        proto::felix::Histogram {
            name: name.to_string(),
            help: help.to_string(),
            labels: labels.into_iter().collect(),
            upper_bounds: self.bounds.iter().map(Duration::as_secs_f64).collect(),
            cumulative_counts,
            count: self.count,
            sum: self.sum.as_secs_f64(),
        }
    }
}

/// The reconciler's histograms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMetrics {
    pub programming: DurationHistogram,
    pub resync: DurationHistogram,
}

impl Default for RouteMetrics {
    fn default() -> Self {
        RouteMetrics {
            programming: DurationHistogram::new(ROUTE_BUCKETS),
            resync: DurationHistogram::new(RESYNC_BUCKETS),
        }
    }
}

impl RouteMetrics {
    pub fn to_proto(&self) -> Vec<proto::felix::Histogram> {
        vec![
            self.programming.to_proto(
                ROUTE_PROGRAMMING,
                "Time from a change of the desired routes to the kernel acknowledging the write.",
                BTreeMap::new(),
            ),
            self.resync.to_proto(
                RESYNC_DURATION,
                "Duration of a full dump-and-diff of the routing table.",
                BTreeMap::new(),
            ),
        ]
    }
}

/// CNI request durations by operation and result.
#[derive(Debug, Default)]
pub struct CniMetrics(Mutex<BTreeMap<(&'static str, String), DurationHistogram>>);

impl CniMetrics {
    pub fn observe(&self, operation: &'static str, result: &str, d: Duration) {
        if let Ok(mut m) = self.0.lock() {
            m.entry((operation, result.to_string()))
                .or_insert_with(|| DurationHistogram::new(CNI_BUCKETS))
                .observe(d);
        }
    }

    pub fn to_proto(&self) -> Vec<proto::felix::Histogram> {
        let Ok(m) = self.0.lock() else {
            return Vec::new();
        };
        m.iter()
            .map(|((op, result), h)| {
                h.to_proto(
                    CNI_REQUEST_DURATION,
                    "Duration of CNI requests felix served, by operation and result.",
                    BTreeMap::from([
                        ("operation".to_string(), op.to_string()),
                        ("result".to_string(), result.clone()),
                    ]),
                )
            })
            .collect()
    }
}

/// A gRPC result as a metric label: `ok`, or the status code in snake case
/// (`unavailable`, `resource_exhausted`, ...).
pub fn result_label<T>(r: &Result<T, tonic::Status>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(s) => {
            let mut out = String::new();
            for (i, ch) in format!("{:?}", s.code()).chars().enumerate() {
                if ch.is_ascii_uppercase() {
                    if i > 0 {
                        out.push('_');
                    }
                    out.push(ch.to_ascii_lowercase());
                } else {
                    out.push(ch);
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_right_buckets_and_accumulate() {
        static B: &[Duration] = &[ms(1), ms(10), ms(100)];
        let mut h = DurationHistogram::new(B);
        for d in [ms(0), ms(1), ms(2), ms(10), ms(50), ms(500)] {
            h.observe(d);
        }
        let p = h.to_proto("x_seconds", "help", BTreeMap::new());
        // <=1ms: 0 and 1; <=10ms: +2, 10; <=100ms: +50; 500ms only in +Inf.
        assert_eq!(p.cumulative_counts, vec![2, 4, 5]);
        assert_eq!(p.upper_bounds, vec![0.001, 0.01, 0.1]);
        assert_eq!(p.count, 6);
        assert!((p.sum - 0.563).abs() < 1e-9, "{}", p.sum);
    }

    #[test]
    fn cni_results_are_labelled() {
        let m = CniMetrics::default();
        m.observe("ADD", &result_label::<()>(&Ok(())), ms(20));
        m.observe(
            "ADD",
            &result_label::<()>(&Err(tonic::Status::resource_exhausted("full"))),
            ms(3),
        );
        m.observe("DEL", "ok", ms(7));
        let p = m.to_proto();
        let labels: Vec<(String, String)> = p
            .iter()
            .map(|h| (h.labels["operation"].clone(), h.labels["result"].clone()))
            .collect();
        assert_eq!(
            labels,
            [
                ("ADD".into(), "ok".into()),
                ("ADD".into(), "resource_exhausted".into()),
                ("DEL".into(), "ok".into())
            ]
        );
        assert!(
            p.iter()
                .all(|h| h.name == CNI_REQUEST_DURATION && h.count == 1)
        );
    }
}
