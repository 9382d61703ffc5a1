//! `/liveness` and `/readiness`, as kubelet probes them.
//!
//! A poller asks each child over its control socket every second (Health
//! for all three, the peer list for bird) and keeps the verdict; the HTTP
//! handlers only read it, so a probe never waits on a child.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use proto::bird::bird_client::BirdClient;
use proto::bird::{ListPeersRequest, SessionState};
use proto::health::CheckRequest;
use proto::health::health_client::HealthClient;
use tokio::net::TcpListener;

use crate::readiness::{BgpNotReady, BgpReadiness};
use crate::supervisor::ChildStatus;

/// A child may be down this long (being restarted) before the node is not
/// live any more and kubelet should restart the whole pod.
pub const LIVENESS_GRACE: Duration = Duration::from_secs(60);

/// Why the node is not live or not ready (the probe's response body).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unhealthy {
    #[error("starting")]
    Starting,
    #[error("{name} has been down for over {}s ({last_exit})", LIVENESS_GRACE.as_secs())]
    ChildDown {
        name: &'static str,
        last_exit: String,
    },
    #[error("{0} is not answering")]
    NotAnswering(&'static str),
    #[error("{0} is not running")]
    NotRunning(&'static str),
    /// The child answered the health call with an error.
    #[error("{name}: {message}")]
    Failed { name: &'static str, message: String },
    #[error("{name} is not ready: {detail}")]
    NotReady { name: &'static str, detail: String },
    #[error(transparent)]
    Bgp(#[from] BgpNotReady),
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub live: Result<(), Unhealthy>,
    pub ready: Result<(), Unhealthy>,
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict {
            live: Ok(()),
            ready: Err(Unhealthy::Starting),
        }
    }
}

pub type Shared = Arc<Mutex<Verdict>>;

/// The sockets of the children.
#[derive(Debug, Clone)]
pub struct Sockets {
    pub confd: PathBuf,
    pub bird: PathBuf,
    pub felix: PathBuf,
}

async fn child_ready(name: &'static str, socket: &Path) -> Result<(), Unhealthy> {
    let ch = tokio::time::timeout(Duration::from_secs(2), proto::uds::connect(socket))
        .await
        .map_err(|_| Unhealthy::NotAnswering(name))?
        .map_err(|_| Unhealthy::NotRunning(name))?;
    let r = HealthClient::new(ch)
        .check(CheckRequest {})
        .await
        .map_err(|s| Unhealthy::Failed {
            name,
            message: s.message().to_string(),
        })?
        .into_inner();
    if r.ready {
        Ok(())
    } else {
        Err(Unhealthy::NotReady {
            name,
            detail: r.detail,
        })
    }
}

/// Peers bird knows and those not Established.
async fn bird_peers(socket: &Path) -> Result<(usize, Vec<String>), Unhealthy> {
    let ch = proto::uds::connect(socket)
        .await
        .map_err(|_| Unhealthy::NotRunning("bird"))?;
    let peers = BirdClient::new(ch)
        .list_peers(ListPeersRequest {})
        .await
        .map_err(|s| Unhealthy::Failed {
            name: "bird",
            message: s.message().to_string(),
        })?
        .into_inner()
        .peers;
    let down = peers
        .iter()
        .filter(|p| p.state != SessionState::Established as i32)
        .map(|p| {
            p.address
                .as_ref()
                .and_then(|a| IpAddr::try_from(a).ok())
                .map(|a| a.to_string())
                .unwrap_or_else(|| "?".into())
        })
        .collect();
    Ok((peers.len(), down))
}

/// Liveness from the supervisor's view: every child runs, or has been down
/// for less than [`LIVENESS_GRACE`].
pub fn liveness(
    children: &[(&'static str, ChildStatus)],
    now: SystemTime,
) -> Result<(), Unhealthy> {
    for (name, st) in children {
        if let Some(since) = st.down_since
            && now.duration_since(since).unwrap_or_default() > LIVENESS_GRACE
        {
            return Err(Unhealthy::ChildDown {
                name,
                last_exit: st.last_exit.clone().unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// Polls every second until the task is aborted.
pub async fn poll(
    sockets: Sockets,
    shared: Shared,
    children: impl Fn() -> Vec<(&'static str, ChildStatus)> + Send + 'static,
    mut bgp: Option<BgpReadiness>,
) {
    loop {
        let live = liveness(&children(), SystemTime::now());
        let mut ready = Ok(());
        // Without BGP (`bgp` None: CALICO_NETWORKING_BACKEND vxlan or
        // none) there is no bird to ask.
        let bird = bgp.is_some().then_some(("bird", &sockets.bird));
        for (name, sock) in [("confd", &sockets.confd), ("felix", &sockets.felix)]
            .into_iter()
            .chain(bird)
        {
            if let Err(e) = child_ready(name, sock).await {
                ready = Err(e);
                break;
            }
        }
        if ready.is_ok()
            && let Some(bgp) = bgp.as_mut()
        {
            ready = match bird_peers(&sockets.bird).await {
                Ok((total, down)) => bgp
                    .check(Instant::now(), total, &down)
                    .map_err(Unhealthy::from),
                Err(e) => Err(e),
            };
        }
        if let Ok(mut v) = shared.lock() {
            *v = Verdict { live, ready };
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn response(result: &Result<(), Unhealthy>) -> Vec<u8> {
    let (status, body) = match result {
        Ok(()) => ("200 OK", "ok\n".to_string()),
        Err(e) => ("503 Service Unavailable", format!("{e}\n")),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `/liveness` and `/readiness` (HTTP/1.x GET, as kubelet sends)
/// until the task is aborted.
pub async fn serve(addr: SocketAddr, shared: Shared) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_on(listener, shared).await
}

pub async fn serve_on(listener: TcpListener, shared: Shared) -> std::io::Result<()> {
    crate::http::serve(listener, move |_method, path| {
        let verdict = shared.lock().map(|v| v.clone()).unwrap_or_default();
        async move {
            match path.as_str() {
                "/liveness" => response(&verdict.live),
                "/readiness" => response(&verdict.ready),
                _ => crate::http::not_found(),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn probes_answer_from_the_last_verdict() {
        let shared: Shared = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_on(listener, shared.clone()));
        assert!(get(addr, "/liveness").await.starts_with("HTTP/1.1 200"));
        let r = get(addr, "/readiness").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("starting"),
            "{r}"
        );
        *shared.lock().unwrap() = Verdict {
            live: Ok(()),
            ready: Err(Unhealthy::Bgp(BgpNotReady::Waiting {
                down: vec!["10.0.0.2".into()],
                threshold: Duration::from_secs(30),
            })),
        };
        assert!(get(addr, "/readiness").await.contains("10.0.0.2"));
        shared.lock().unwrap().ready = Ok(());
        assert!(get(addr, "/readiness").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/metrics").await.starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn a_child_down_too_long_fails_liveness() {
        let now = SystemTime::now();
        let mut st = ChildStatus::default();
        assert!(liveness(&[("felix", st.clone())], now).is_ok());
        st.down_since = Some(now - Duration::from_secs(5));
        assert!(
            liveness(&[("felix", st.clone())], now).is_ok(),
            "restarting is fine"
        );
        st.down_since = Some(now - Duration::from_secs(61));
        st.last_exit = Some("killed by signal 9".into());
        let err = liveness(&[("felix", st)], now).unwrap_err().to_string();
        assert!(err.contains("felix") && err.contains("signal 9"), "{err}");
    }
}
