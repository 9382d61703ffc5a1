//! `/metrics` in Prometheus' text format (version 0.0.4), served by
//! calico-node when `FELIX_PROMETHEUSMETRICSENABLED=true`.
//!
//! Every scrape asks the sources afresh, each with a time limit, so a
//! value is never older than the scrape; a source that does not answer
//! is reported by `calico_metrics_source_up{source=...} 0` and the rest
//! is still served.
//!
//! | name | type | labels | from |
//! |---|---|---|---|
//! | `calico_bgp_peers` | gauge | `state` | bird: sessions per state (every state listed) |
//! | `calico_bgp_peer_prefixes_received` | gauge | `peer` | bird: routes received from the peer |
//! | `calico_bgp_peer_prefixes_advertised` | gauge | `peer` | bird: routes sent to the peer |
//! | `calico_bfd_peer_up` | gauge | `peer` | bird: 1 if the peer's BFD session is up (peers with BFD only) |
//! | `felix_route_programming_seconds` | histogram | | felix: desired-route change to kernel ack |
//! | `felix_resync_duration_seconds` | histogram | | felix: full dump-and-diff of the routing table |
//! | `felix_cni_request_duration_seconds` | histogram | `operation`, `result` | felix: CNI requests |
//! | `calico_ipam_blocks` | gauge | | datastore: blocks affine to this node |
//! | `calico_ipam_block_addresses` | gauge | | datastore: addresses in those blocks |
//! | `calico_ipam_allocations_in_use` | gauge | | datastore: of those, allocated |
//! | `calico_cluster_tasks_leader` | gauge | | 1 if this node leads the once-per-cluster tasks (IPPool status) |
//! | `calico_metrics_source_up` | gauge | `source` | 1 if the source answered this scrape |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use datastore::Client;
use datastore::ipam::Ipam;
use datastore::ipam::block::Block;
use datastore::leader::Leadership;
use ippool_crd::IPAMBlockSpec;
use proto::bird::bird_client::BirdClient;
use proto::bird::{ListPeersRequest, SessionState};
use proto::felix::felix_status_service_client::FelixStatusServiceClient as FelixStatusClient;
use proto::felix::{Counter, FelixStatusRequest, Histogram};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long one source may take per scrape.
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the numbers come from.
#[derive(Clone)]
pub struct Sources {
    pub bird: PathBuf,
    pub felix: PathBuf,
    pub client: Client,
    pub node: String,
    /// The cluster-tasks election, when this node stands in it.
    pub leadership: Option<watch::Receiver<Leadership>>,
}

/// One BGP session as the metrics see it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSample {
    pub peer: String,
    pub state: SessionState,
    pub received: u64,
    pub advertised: u64,
    /// BFD session up; `None` without BFD.
    pub bfd_up: Option<bool>,
}

/// This node's IPAM usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpamSample {
    pub blocks: u64,
    pub addresses: u64,
    pub in_use: u64,
}

/// What one scrape gathered; `None` where the source did not answer.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub peers: Option<Vec<PeerSample>>,
    pub histograms: Option<Vec<Histogram>>,
    /// felix's counters (tunnel devices); empty when felix did not answer.
    pub counters: Vec<Counter>,
    pub ipam: Option<IpamSample>,
    /// Whether this node leads the cluster tasks; `None` without an
    /// election.
    pub cluster_tasks_leader: Option<bool>,
}

/// A label value escaped as the text format wants (backslash, quote,
/// newline).
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A float as Prometheus writes it (`+Inf`, shortest round-trip form).
fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Renders a sample in the text exposition format.
pub fn render(s: &Sample) -> String {
    let mut out = String::new();
    let o = &mut out;

    let _ = writeln!(
        o,
        "# HELP calico_metrics_source_up Whether the source answered this scrape."
    );
    let _ = writeln!(o, "# TYPE calico_metrics_source_up gauge");
    for (src, up) in [
        ("bird", s.peers.is_some()),
        ("felix", s.histograms.is_some()),
        ("datastore", s.ipam.is_some()),
    ] {
        let _ = writeln!(
            o,
            "calico_metrics_source_up{} {}",
            labels(&[("source", src)]),
            u8::from(up)
        );
    }

    if let Some(peers) = &s.peers {
        let _ = writeln!(o, "# HELP calico_bgp_peers BGP sessions by state.");
        let _ = writeln!(o, "# TYPE calico_bgp_peers gauge");
        for (state, name) in SessionState::NAMED {
            let n = peers.iter().filter(|p| p.state == state).count();
            let _ = writeln!(o, "calico_bgp_peers{} {n}", labels(&[("state", name)]));
        }
        for (metric, help, pick) in [
            (
                "calico_bgp_peer_prefixes_received",
                "Routes received from the peer and kept.",
                (|p: &PeerSample| p.received) as fn(&PeerSample) -> u64,
            ),
            (
                "calico_bgp_peer_prefixes_advertised",
                "Routes advertised to the peer.",
                |p: &PeerSample| p.advertised,
            ),
        ] {
            let _ = writeln!(o, "# HELP {metric} {help}");
            let _ = writeln!(o, "# TYPE {metric} gauge");
            for p in peers {
                let _ = writeln!(o, "{metric}{} {}", labels(&[("peer", &p.peer)]), pick(p));
            }
        }
    }

    if let Some(peers) = &s.peers
        && peers.iter().any(|p| p.bfd_up.is_some())
    {
        let _ = writeln!(
            o,
            "# HELP calico_bfd_peer_up Whether the BFD session to the peer is up."
        );
        let _ = writeln!(o, "# TYPE calico_bfd_peer_up gauge");
        for p in peers {
            if let Some(up) = p.bfd_up {
                let _ = writeln!(
                    o,
                    "calico_bfd_peer_up{} {}",
                    labels(&[("peer", &p.peer)]),
                    u8::from(up)
                );
            }
        }
    }

    if let Some(hs) = &s.histograms {
        // One HELP/TYPE per name, then every series of that name.
        let mut by_name: BTreeMap<&str, Vec<&Histogram>> = BTreeMap::new();
        for h in hs {
            by_name.entry(h.name.as_str()).or_default().push(h);
        }
        for (name, series) in by_name {
            let _ = writeln!(o, "# HELP {name} {}", series[0].help);
            let _ = writeln!(o, "# TYPE {name} histogram");
            for h in series {
                // Sorted by name: the protobuf map has no order.
                let mut base: Vec<(&str, &str)> = h
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                base.sort_unstable();
                for (le, c) in h.upper_bounds.iter().zip(&h.cumulative_counts) {
                    let le = float(*le);
                    let mut l = base.clone();
                    l.push(("le", &le));
                    let _ = writeln!(o, "{name}_bucket{} {c}", labels(&l));
                }
                let mut l = base.clone();
                l.push(("le", "+Inf"));
                let _ = writeln!(o, "{name}_bucket{} {}", labels(&l), h.count);
                let _ = writeln!(o, "{name}_sum{} {}", labels(&base), float(h.sum));
                let _ = writeln!(o, "{name}_count{} {}", labels(&base), h.count);
            }
        }
    }

    // One HELP/TYPE per name, then every series of that name.
    let mut counters: BTreeMap<&str, Vec<&Counter>> = BTreeMap::new();
    for c in &s.counters {
        counters.entry(c.name.as_str()).or_default().push(c);
    }
    for (name, series) in counters {
        let _ = writeln!(o, "# HELP {name} {}", series[0].help);
        let _ = writeln!(o, "# TYPE {name} counter");
        for c in series {
            let mut l: Vec<(&str, &str)> = c
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            l.sort_unstable();
            let _ = writeln!(o, "{name}{} {}", labels(&l), c.value);
        }
    }

    if let Some(ipam) = &s.ipam {
        for (metric, help, v) in [
            (
                "calico_ipam_blocks",
                "IPAM blocks affine to this node.",
                ipam.blocks,
            ),
            (
                "calico_ipam_block_addresses",
                "Addresses in the blocks affine to this node.",
                ipam.addresses,
            ),
            (
                "calico_ipam_allocations_in_use",
                "Addresses allocated in the blocks affine to this node.",
                ipam.in_use,
            ),
        ] {
            let _ = writeln!(o, "# HELP {metric} {help}");
            let _ = writeln!(o, "# TYPE {metric} gauge");
            let _ = writeln!(o, "{metric} {v}");
        }
    }

    if let Some(leader) = s.cluster_tasks_leader {
        let _ = writeln!(
            o,
            "# HELP calico_cluster_tasks_leader Whether this node leads the once-per-cluster tasks (IPPool status)."
        );
        let _ = writeln!(o, "# TYPE calico_cluster_tasks_leader gauge");
        let _ = writeln!(o, "calico_cluster_tasks_leader {}", u8::from(leader));
    }
    out
}

async fn bird_peers(socket: &std::path::Path) -> Option<Vec<PeerSample>> {
    let ch = proto::uds::connect(socket).await.ok()?;
    let peers = BirdClient::new(ch)
        .list_peers(ListPeersRequest {})
        .await
        .ok()?
        .into_inner()
        .peers;
    Some(
        peers
            .into_iter()
            .map(|p| PeerSample {
                peer: p
                    .address
                    .as_ref()
                    .and_then(|a| IpAddr::try_from(a).ok())
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "?".into()),
                state: SessionState::try_from(p.state).unwrap_or(SessionState::Idle),
                received: p.prefixes_received,
                advertised: p.prefixes_advertised,
                bfd_up: (!p.bfd.is_empty()).then(|| p.bfd == "Up"),
            })
            .collect(),
    )
}

async fn felix_metrics(socket: &std::path::Path) -> Option<(Vec<Histogram>, Vec<Counter>)> {
    let ch = proto::uds::connect(socket).await.ok()?;
    let reply = FelixStatusClient::new(ch)
        .status(FelixStatusRequest {})
        .await
        .ok()?
        .into_inner();
    Some((reply.histograms, reply.counters))
}

/// This node's blocks (by affinity) and their usage. A block that fails
/// to read or parse makes the whole sample unavailable rather than wrong.
pub async fn ipam_usage(client: &Client, node: &str) -> Option<IpamSample> {
    let ipam = Ipam::new(client.clone());
    let cidrs = ipam.host_blocks(node).await.ok()?;
    let mut s = IpamSample::default();
    for cidr in cidrs {
        let Some(v) = client
            .get_value::<IPAMBlockSpec>(&datastore::Key::Block { cidr })
            .await
            .ok()?
        else {
            continue; // affinity without its block yet (a claim in flight)
        };
        let b = Block::parse(v.value).ok()?;
        if b.host() != Some(node) {
            continue;
        }
        s.blocks += 1;
        s.addresses += datastore::ipam::block::size_of(&cidr) as u64;
        s.in_use += b.num_allocated() as u64;
    }
    Some(s)
}

/// Asks every source (concurrently, each bounded by [`SOURCE_TIMEOUT`]).
pub async fn gather(src: &Sources) -> Sample {
    let t = SOURCE_TIMEOUT;
    let (peers, felix, ipam) = tokio::join!(
        tokio::time::timeout(t, bird_peers(&src.bird)),
        tokio::time::timeout(t, felix_metrics(&src.felix)),
        tokio::time::timeout(t, ipam_usage(&src.client, &src.node)),
    );
    let (histograms, counters) = match felix.ok().flatten() {
        Some((h, c)) => (Some(h), c),
        None => (None, Vec::new()),
    };
    Sample {
        peers: peers.ok().flatten(),
        histograms,
        counters,
        ipam: ipam.ok().flatten(),
        cluster_tasks_leader: src.leadership.as_ref().map(|l| l.borrow().leading),
    }
}

/// Serves `GET /metrics` until the task is aborted.
pub async fn serve_on(listener: TcpListener, src: Sources) -> std::io::Result<()> {
    crate::http::serve(listener, move |method, path| {
        let src = src.clone();
        async move {
            let path = path.split('?').next().unwrap_or("");
            if method == "GET" && path == "/metrics" {
                let body = render(&gather(&src).await);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            } else {
                crate::http::not_found()
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn sample() -> Sample {
        Sample {
            peers: Some(vec![
                PeerSample {
                    peer: "10.0.0.2".into(),
                    state: SessionState::Established,
                    received: 3,
                    advertised: 1,
                    bfd_up: Some(true),
                },
                PeerSample {
                    peer: "10.0.0.3".into(),
                    state: SessionState::Active,
                    received: 0,
                    advertised: 0,
                    bfd_up: None,
                },
            ]),
            histograms: Some(vec![Histogram {
                name: "felix_cni_request_duration_seconds".into(),
                help: "CNI requests.".into(),
                labels: [("operation".to_string(), "ADD".to_string())].into(),
                upper_bounds: vec![0.005, 0.01],
                cumulative_counts: vec![1, 3],
                count: 4,
                sum: 0.5,
            }]),
            counters: vec![Counter {
                name: "felix_tunnel_dropped_packets_total".into(),
                help: "Drops.".into(),
                labels: [
                    ("reason".to_string(), "rx_malformed".to_string()),
                    ("device".to_string(), "vxlan.calico".to_string()),
                ]
                .into(),
                value: 7,
            }],
            ipam: None,
            cluster_tasks_leader: Some(true),
        }
    }

    #[test]
    fn renders_the_text_format() {
        let text = render(&sample());
        for line in [
            "calico_metrics_source_up{source=\"bird\"} 1",
            "calico_metrics_source_up{source=\"datastore\"} 0",
            "calico_bgp_peers{state=\"Established\"} 1",
            "calico_bgp_peers{state=\"Active\"} 1",
            "calico_bgp_peers{state=\"Idle\"} 0",
            "calico_bgp_peer_prefixes_received{peer=\"10.0.0.2\"} 3",
            "calico_bgp_peer_prefixes_advertised{peer=\"10.0.0.3\"} 0",
            "calico_bfd_peer_up{peer=\"10.0.0.2\"} 1",
            "# TYPE felix_cni_request_duration_seconds histogram",
            "felix_cni_request_duration_seconds_bucket{operation=\"ADD\",le=\"0.005\"} 1",
            "felix_cni_request_duration_seconds_bucket{operation=\"ADD\",le=\"0.01\"} 3",
            "felix_cni_request_duration_seconds_bucket{operation=\"ADD\",le=\"+Inf\"} 4",
            "felix_cni_request_duration_seconds_sum{operation=\"ADD\"} 0.5",
            "felix_cni_request_duration_seconds_count{operation=\"ADD\"} 4",
            "# TYPE felix_tunnel_dropped_packets_total counter",
            "felix_tunnel_dropped_packets_total{device=\"vxlan.calico\",reason=\"rx_malformed\"} 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Peers without BFD have no BFD line.
        assert!(!text.contains("calico_bfd_peer_up{peer=\"10.0.0.3\"}"));
        // No IPAM lines when the datastore did not answer.
        assert!(!text.contains("calico_ipam_blocks"), "{text}");
        assert!(text.lines().any(|l| l == "calico_cluster_tasks_leader 1"));
        let follower = render(&Sample {
            cluster_tasks_leader: Some(false),
            ..Sample::default()
        });
        assert!(
            follower
                .lines()
                .any(|l| l == "calico_cluster_tasks_leader 0")
        );
        assert!(!render(&Sample::default()).contains("calico_cluster_tasks_leader"));
        // Every sample line is `name{labels} value` with a numeric value,
        // and every metric has a TYPE before its samples.
        let mut typed = std::collections::BTreeSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if l.starts_with('#') {
                continue;
            }
            let (series, value) = l.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
            let name = series.split('{').next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| typed.contains(*b)))
                .unwrap_or(name);
            assert!(typed.contains(base), "{name} has no TYPE line");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("peer", "a\"b\\c\nd")]),
            "{peer=\"a\\\"b\\\\c\\nd\"}"
        );
    }

    #[tokio::test]
    async fn a_silent_source_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        // A datastore that refuses at once.
        let client = datastore::connect_etcd("http://127.0.0.1:1").await.unwrap();
        let src = Sources {
            bird: dir.path().join("bird.sock"),
            felix: dir.path().join("felix.sock"),
            client,
            node: "n".into(),
            leadership: None,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_on(listener, src));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        for src in ["bird", "felix", "datastore"] {
            assert!(
                out.contains(&format!("calico_metrics_source_up{{source=\"{src}\"}} 0")),
                "{out}"
            );
        }
    }
}
