//! The BGP sessions of a lab node, read from its bird's control socket
//! (a Unix socket, so it is reachable from outside the node's network
//! namespace): what the chaos cases wait for before they break something.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use proto::bird::bird_client::BirdClient;
use proto::bird::{ListPeersRequest, SessionState};

use super::ClusterError;
use super::state::{LabState, NodeState};

/// One BGP session as bird reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub peer: IpAddr,
    pub established: bool,
    /// BFD's state ("Up", "Down", "Init", "AdminDown"); empty without BFD.
    pub bfd: String,
}

/// Every BGP session of `node`.
pub fn sessions(node: &NodeState) -> Result<Vec<Session>, ClusterError> {
    let socket = node.run_dir.join("bird.sock");
    let err = |what: String| ClusterError::Spec(format!("{}: bird's {what}", node.name));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(format!("runtime: {e}")))?;
    rt.block_on(async {
        let channel = proto::uds::connect(&socket)
            .await
            .map_err(|e| err(format!("socket {}: {e}", socket.display())))?;
        let peers = BirdClient::new(channel)
            .list_peers(ListPeersRequest {})
            .await
            .map_err(|e| err(format!("peer list: {}", e.message())))?
            .into_inner()
            .peers;
        Ok(peers
            .into_iter()
            .filter_map(|p| {
                Some(Session {
                    peer: IpAddr::try_from(p.address.as_ref()?).ok()?,
                    established: p.state == SessionState::Established as i32,
                    bfd: p.bfd,
                })
            })
            .collect())
    })
}

/// The sessions between node `victim` and every other node, seen from
/// both ends, that are not established with BFD Up: `"node-0 -> node-2
/// (BFD Down)"`. Empty when every one is protected.
pub fn unprotected(st: &LabState, victim: usize) -> Vec<String> {
    let v = &st.nodes[victim];
    let mut out = Vec::new();
    for (i, n) in st.nodes.iter().enumerate() {
        if i == victim {
            continue;
        }
        for (from, to) in [(n, v), (v, n)] {
            let state = match sessions(from) {
                Err(e) => format!("{e}"),
                Ok(all) => match all.iter().find(|s| s.peer == IpAddr::V4(to.ip)) {
                    None => "no session".to_string(),
                    Some(s) if s.established && s.bfd == "Up" => continue,
                    Some(s) if !s.established => format!("BGP not established, BFD {}", s.bfd),
                    Some(s) => format!("BFD {}", s.bfd),
                },
            };
            out.push(format!("{} -> {} ({state})", from.name, to.name));
        }
    }
    out
}

/// Polls (every 20 ms, at most `limit`) until every session between
/// `victim` and the other nodes is established with BFD Up: how long that
/// took, or what was still unprotected at the limit.
pub fn wait_protected(
    st: &LabState,
    victim: usize,
    limit: Duration,
) -> Result<Duration, Vec<String>> {
    let start = Instant::now();
    loop {
        let missing = unprotected(st, victim);
        if missing.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= limit {
            return Err(missing);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
