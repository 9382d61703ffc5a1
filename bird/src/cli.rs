//! `bird`: run the BGP speaker, or ask a running one what it sees.
//!
//! ```text
//! bird run [--config bird.toml] [--socket /run/calico/bird.sock] [--startup-deferral SECS]
//! bird show peers [--socket PATH]
//! bird show routes [--count | --best] [--socket PATH]
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ipnetwork::IpNetwork;
use proto::bird::bird_client::BirdClient;
use proto::bird::{self as pb, CountRoutesRequest, ListPeersRequest, ListRoutesRequest};
use proto::show::{Table, state_name};

const DEFAULT_SOCKET: &str = "/run/calico/bird.sock";

#[derive(Parser)]
#[command(name = "bird", version, about = "calico-rs BGP speaker")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the speaker: from a TOML configuration file, and/or configured
    /// by confd over the control socket (BgpConfigService.Apply).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Control socket (gRPC, mode 0600).
        #[arg(long, default_value = DEFAULT_SOCKET, env = "BIRD_SOCKET")]
        socket: PathBuf,
        /// Seconds after start-up to wait for every peer's End-of-RIB
        /// before sending ours and completing the route stream's snapshot
        /// (default: the config file's `startup_deferral`, else 30).
        #[arg(long)]
        startup_deferral: Option<u64>,
    },
    /// Ask a running speaker.
    Show {
        #[command(subcommand)]
        what: Show,
    },
}

#[derive(Subcommand)]
enum Show {
    /// Sessions: peer, AS, state, since, prefixes received/advertised,
    /// last error.
    Peers {
        #[arg(long, default_value = DEFAULT_SOCKET, env = "BIRD_SOCKET")]
        socket: PathBuf,
    },
    /// Every path of every prefix (received routes and our own blocks).
    Routes {
        /// Only print how many routes each peer sent, and the Loc-RIB size.
        #[arg(long)]
        count: bool,
        /// Only the best route of each prefix (the Loc-RIB).
        #[arg(long, conflicts_with = "count")]
        best: bool,
        #[arg(long, default_value = DEFAULT_SOCKET, env = "BIRD_SOCKET")]
        socket: PathBuf,
    },
}

/// Under calico-node (configured by confd, no file): the start-up
/// deferral (RFC 4724 4.1) is for a *restart*, when peers and felix hold
/// routes from before. The first start since boot has nothing to protect,
/// and deferring there only delays a cold-started cluster (route
/// reflectors would wait on each other until the timer). A marker beside
/// the control socket (the run directory is a tmpfs) tells the two apart:
/// no marker = cold start = no deferral.
fn cold_start(socket: &Path) -> Option<u64> {
    let mut marker = socket.as_os_str().to_owned();
    marker.push(".started");
    let marker = PathBuf::from(marker);
    if marker.exists() {
        return None;
    }
    if let Err(e) = std::fs::write(&marker, b"") {
        tracing::warn!(marker = %marker.display(), error = %e, "cannot record the start; later restarts will not defer");
    }
    tracing::info!("first start since boot: no start-up deferral");
    Some(0)
}

pub fn main<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    proto::daemon::abort_on_panic();
    // One thread runs the BGP tasks, as BIRD does; BFD, the one part with
    // sub-second deadlines, has a thread of its own (`bird::bfd`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    match cli.cmd {
        Cmd::Run {
            config,
            socket,
            startup_deferral,
        } => {
            proto::daemon::init_logging(proto::daemon::LogTo::Stderr);
            let cfg = config.as_deref().map(crate::Config::load).transpose()?;
            let startup_deferral = match (startup_deferral, &cfg) {
                (None, None) => cold_start(&socket),
                (given, _) => given,
            };
            rt.block_on(async {
                let shutdown = proto::daemon::shutdown_signal()
                    .context("cannot install the SIGTERM / SIGINT handlers")?;
                crate::daemon::run(cfg, startup_deferral, &socket, shutdown).await?;
                anyhow::Ok(())
            })
        }
        Cmd::Show { what } => rt.block_on(show(what)),
    }
}

async fn client(socket: &Path) -> Result<BirdClient<tonic::transport::Channel>> {
    Ok(BirdClient::new(proto::uds::connect(socket).await?))
}

async fn show(what: Show) -> Result<()> {
    match what {
        Show::Peers { socket } => {
            let mut c = client(&socket).await?;
            let peers = c.list_peers(ListPeersRequest {}).await?.into_inner().peers;
            print!("{}", peers_table(&peers, SystemTime::now()));
        }
        Show::Routes {
            count: true,
            socket,
            ..
        } => {
            let mut c = client(&socket).await?;
            let r = c.count_routes(CountRoutesRequest {}).await?.into_inner();
            let mut t = Table::new(&["PEER", "IPV4", "IPV6"]);
            for p in &r.peers {
                t.push(vec![
                    addr(p.peer.as_ref()),
                    p.ipv4.to_string(),
                    p.ipv6.to_string(),
                ]);
            }
            print!("{}", t.plain());
            println!("total {}", r.total);
            println!("loc-rib ipv4 {} ipv6 {}", r.loc_rib_ipv4, r.loc_rib_ipv6);
        }
        Show::Routes {
            count: false,
            best,
            socket,
        } => {
            let mut c = client(&socket).await?;
            let mut stream = c
                .list_routes(ListRoutesRequest {
                    peer: None,
                    best_only: best,
                })
                .await?
                .into_inner();
            let mut t = Table::new(&[
                "PREFIX",
                "PEER",
                "NEXT HOP",
                "AS PATH",
                "ORIGIN",
                "LOCAL PREF",
                "MED",
                "COMMUNITIES",
                "FLAGS",
            ]);
            while let Some(batch) = stream.message().await? {
                for r in &batch.routes {
                    t.push(route_row(r));
                }
            }
            print!("{}", t.plain());
        }
    }
    Ok(())
}

fn addr(a: Option<&proto::common::IpAddress>) -> String {
    a.and_then(|a| IpAddr::try_from(a).ok())
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "-".into())
}

fn ago(since_ms: i64, now: SystemTime) -> String {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let secs = Duration::from_millis(now_ms.saturating_sub(since_ms).max(0) as u64).as_secs();
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

fn peers_table(peers: &[pb::Peer], now: SystemTime) -> String {
    let mut t = Table::new(&[
        "PEER",
        "AS",
        "STATE",
        "SINCE",
        "RECEIVED",
        "ADVERTISED",
        "BFD",
        "LAST ERROR",
    ]);
    for p in peers {
        t.push(vec![
            addr(p.address.as_ref()),
            p.asn.to_string(),
            state_name(p.state).unwrap_or("?").to_string(),
            ago(p.since_unix_ms, now),
            p.prefixes_received.to_string(),
            p.prefixes_advertised.to_string(),
            match (p.bfd.as_str(), p.bfd_note()) {
                ("", _) => "-".into(),
                (bfd, Some(note)) => format!("{bfd} ({note})"),
                (bfd, None) => bfd.to_string(),
            },
            if p.last_error.is_empty() {
                "-".into()
            } else {
                p.last_error.clone()
            },
        ]);
    }
    t.plain()
}

fn route_row(r: &pb::Route) -> Vec<String> {
    let prefix = r
        .prefix
        .as_ref()
        .and_then(|p| IpNetwork::try_from(p).ok())
        .map(|n| n.to_string())
        .unwrap_or_else(|| "-".into());
    let path = r
        .as_path
        .iter()
        .map(|s| {
            let asns: Vec<String> = s.asns.iter().map(u32::to_string).collect();
            match pb::AsPathSegmentType::try_from(s.r#type) {
                Ok(pb::AsPathSegmentType::Set) => format!("{{{}}}", asns.join(",")),
                Ok(pb::AsPathSegmentType::ConfedSequence) => format!("({})", asns.join(" ")),
                Ok(pb::AsPathSegmentType::ConfedSet) => format!("[{}]", asns.join(",")),
                _ => asns.join(" "),
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let origin = match pb::Origin::try_from(r.origin) {
        Ok(pb::Origin::Igp) => "IGP",
        Ok(pb::Origin::Egp) => "EGP",
        _ => "incomplete",
    };
    let communities = r
        .communities
        .iter()
        .map(|c| format!("({},{})", c >> 16, c & 0xffff))
        .collect::<Vec<_>>()
        .join(" ");
    let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let flags: Vec<&str> = [
        (r.best, "best"),
        (r.ecmp && !r.best, "ecmp"),
        (r.stale, "stale"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, f)| *f)
    .collect();
    vec![
        prefix,
        if r.local {
            "local".into()
        } else {
            addr(r.peer.as_ref())
        },
        addr(r.next_hop.as_ref()),
        if path.is_empty() { "-".into() } else { path },
        origin.into(),
        opt(r.local_pref),
        opt(r.med),
        if communities.is_empty() {
            "-".into()
        } else {
            communities
        },
        if flags.is_empty() {
            "-".into()
        } else {
            flags.join(",")
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_table_has_every_column() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let p = pb::Peer {
            address: Some("10.0.0.1".parse::<IpAddr>().unwrap().into()),
            asn: 65001,
            state: pb::SessionState::Established as i32,
            since_unix_ms: (10_000 - 83) * 1000,
            prefixes_received: 3,
            prefixes_advertised: 2,
            last_error: String::new(),
            bfd: "Up".into(),
            ..Default::default()
        };
        let t = peers_table(&[p], now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("PEER"));
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            vec![
                "10.0.0.1",
                "65001",
                "Established",
                "00:01:23",
                "3",
                "2",
                "Up",
                "-"
            ]
        );
    }

    #[test]
    fn route_row_renders_path_and_communities() {
        let r = pb::Route {
            prefix: Some("10.1.0.0/16".parse::<IpNetwork>().unwrap().into()),
            peer: Some("10.0.0.1".parse::<IpAddr>().unwrap().into()),
            next_hop: Some("10.0.0.1".parse::<IpAddr>().unwrap().into()),
            as_path: vec![pb::AsPathSegment {
                r#type: pb::AsPathSegmentType::Sequence as i32,
                asns: vec![65001, 65002],
            }],
            local_pref: Some(100),
            communities: vec![(65001 << 16) | 7],
            best: true,
            stale: true,
            ..Default::default()
        };
        assert_eq!(
            route_row(&r),
            vec![
                "10.1.0.0/16",
                "10.0.0.1",
                "10.0.0.1",
                "65001 65002",
                "IGP",
                "100",
                "-",
                "(65001,7)",
                "best,stale"
            ]
        );
    }
}
