//! `calico-node status`: the BGP peer table in the shape operators know
//! from `calicoctl node status`.

use std::fmt::Write;
use std::net::IpAddr;
use std::path::Path;

use proto::bird::bird_client::BirdClient;
use proto::bird::{ListPeersRequest, Peer, SessionState};
use proto::show::{Table, state_name};

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub address: IpAddr,
    pub peer_type: String,
    pub state: String,
    pub since: String,
    pub info: String,
}

/// Peer type from confd's peering name, as calicoctl names it.
pub fn peer_type(name: &str) -> &'static str {
    if name.starts_with("Mesh_") {
        "node-to-node mesh"
    } else if name.starts_with("Global_") {
        "global"
    } else if name.starts_with("Node_") {
        "node specific"
    } else {
        "configured"
    }
}

/// Formats a Unix-ms timestamp as calicoctl does: the time of day
/// (`HH:MM:SS`, UTC) for today, the date otherwise.
fn since(unix_ms: i64, now_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".into();
    }
    let secs = unix_ms / 1000;
    let day = secs / 86_400;
    if day == now_ms / 1000 / 86_400 {
        let t = secs % 86_400;
        format!("{:02}:{:02}:{:02}", t / 3600, t % 3600 / 60, t % 60)
    } else {
        // Civil date from days since 1970-01-01 (Howard Hinnant's method).
        let z = day + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!("{y:04}-{m:02}-{d:02}")
    }
}

pub fn row(p: &Peer, now_ms: i64) -> Option<Row> {
    let address = IpAddr::try_from(p.address.as_ref()?).ok()?;
    let up = p.state == SessionState::Established as i32;
    let mut notes: Vec<&str> = p.bfd_note().into_iter().collect();
    if !up && !p.last_error.is_empty() {
        notes.push(&p.last_error);
    }
    let mut info = state_name(p.state).unwrap_or("Unknown").to_string();
    if !notes.is_empty() {
        info = format!("{info} ({})", notes.join("; "));
    }
    Some(Row {
        address,
        peer_type: peer_type(&p.name).to_string(),
        state: if up { "up".into() } else { "start".into() },
        since: since(p.since_unix_ms, now_ms),
        info,
    })
}

fn table(rows: &[&Row]) -> String {
    let mut t = Table::new(&["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"]);
    for r in rows {
        t.push(vec![
            r.address.to_string(),
            r.peer_type.clone(),
            r.state.clone(),
            r.since.clone(),
            r.info.clone(),
        ]);
    }
    t.boxed()
}

/// The whole report for a set of rows.
pub fn format(rows: &[Row]) -> String {
    let mut s = String::from("Calico process is running.\n");
    for (family, v4) in [("IPv4", true), ("IPv6", false)] {
        let _ = write!(s, "\n{family} BGP status\n");
        let rows: Vec<&Row> = rows.iter().filter(|r| r.address.is_ipv4() == v4).collect();
        if rows.is_empty() {
            let _ = writeln!(s, "No {family} peers found.");
        } else {
            s.push_str(&table(&rows));
        }
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("Calico process is not running: {0}")]
    NotRunning(#[from] proto::UdsError),
    #[error("bird did not answer: {}", .0.message())]
    NoAnswer(tonic::Status),
}

/// Asks bird and formats the answer.
pub async fn render(bird_socket: &Path) -> Result<String, StatusError> {
    let ch = proto::uds::connect(bird_socket).await?;
    let peers = BirdClient::new(ch)
        .list_peers(ListPeersRequest {})
        .await
        .map_err(StatusError::NoAnswer)?
        .into_inner()
        .peers;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let rows: Vec<Row> = peers.iter().filter_map(|p| row(p, now_ms)).collect();
    Ok(format(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::common::IpAddress;

    fn peer(addr: &str, name: &str, state: SessionState, since_ms: i64, err: &str) -> Peer {
        Peer {
            address: Some(IpAddress::from(addr.parse::<IpAddr>().unwrap())),
            name: name.into(),
            state: state as i32,
            since_unix_ms: since_ms,
            last_error: err.into(),
            ..Default::default()
        }
    }

    #[test]
    fn table_looks_like_calicoctl_node_status() {
        // 2026-11-22 09:34:12 UTC and the same day 10:00.
        let t = 1_795_340_052_000;
        let now = t + 1_548_000;
        let rows: Vec<Row> = [
            peer(
                "10.0.0.2",
                "Mesh_10_0_0_2",
                SessionState::Established,
                t,
                "",
            ),
            peer(
                "10.0.0.254",
                "Global_10_0_0_254",
                SessionState::Active,
                t,
                "Connection refused",
            ),
            peer(
                "10.0.0.9",
                "Node_10_0_0_9",
                SessionState::Established,
                t - 2 * 86_400_000,
                "",
            ),
        ]
        .iter()
        .filter_map(|p| row(p, now))
        .collect();
        let expected = "\
Calico process is running.

IPv4 BGP status
+--------------+-------------------+-------+------------+-----------------------------+
| PEER ADDRESS |     PEER TYPE     | STATE |   SINCE    |            INFO             |
+--------------+-------------------+-------+------------+-----------------------------+
| 10.0.0.2     | node-to-node mesh | up    | 09:34:12   | Established                 |
| 10.0.0.254   | global            | start | 09:34:12   | Active (Connection refused) |
| 10.0.0.9     | node specific     | up    | 2026-11-20 | Established                 |
+--------------+-------------------+-------+------------+-----------------------------+

IPv6 BGP status
No IPv6 peers found.
";
        assert_eq!(format(&rows), expected);
    }

    #[test]
    fn ipv6_peers_get_their_own_table() {
        let rows: Vec<Row> = [peer(
            "fd00::2",
            "Mesh_fd00__2",
            SessionState::Established,
            0,
            "",
        )]
        .iter()
        .filter_map(|p| row(p, 0))
        .collect();
        let out = format(&rows);
        assert!(out.contains("No IPv4 peers found."), "{out}");
        assert!(out.contains("| fd00::2 "), "{out}");
        assert!(
            out.contains("| up    | -     |"),
            "unknown since is '-': {out}"
        );
    }

    #[test]
    fn a_peer_held_down_for_its_password_says_why() {
        let why = "password secret kube-system/bgp-passwords has no key 'tor': session held down";
        let rows: Vec<Row> = [
            peer(
                "10.0.0.2",
                "Mesh_10_0_0_2",
                SessionState::Established,
                0,
                "",
            ),
            peer(
                "10.0.0.254",
                "Global_10_0_0_254",
                SessionState::Idle,
                0,
                why,
            ),
        ]
        .iter()
        .filter_map(|p| row(p, 0))
        .collect();
        assert_eq!(rows[1].state, "start");
        assert_eq!(rows[1].info, format!("Idle ({why})"));
        let out = format(&rows);
        assert!(
            out.contains(
                "| 10.0.0.254   | global            | start | -     | Idle (password secret \
                 kube-system/bgp-passwords has no key 'tor': session held down) |"
            ),
            "{out}"
        );
    }

    #[test]
    fn a_session_waiting_for_bfd_says_so_beside_its_last_error() {
        let mut p = peer(
            "172.30.0.2",
            "Mesh_172_30_0_2",
            SessionState::Active,
            0,
            "sent Cease / BFD Down",
        );
        p.bfd = "Down".into();
        let r = row(&p, 0).unwrap();
        assert_eq!(r.info, "Active (waiting for BFD; sent Cease / BFD Down)");
        p.state = SessionState::Established as i32;
        p.bfd = "Init".into();
        let r = row(&p, 0).unwrap();
        assert_eq!(r.info, "Established (not yet protected by BFD)");
        p.bfd = "Up".into();
        assert_eq!(row(&p, 0).unwrap().info, "Established");
    }
}
