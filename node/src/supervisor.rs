//! Runs confd, bird and felix as child processes and restarts any that
//! exits.
//!
//! A child that crashes is started again after a backoff (1 s doubling to
//! 30 s, back to 1 s once it has run for a minute), so a crash loop does
//! not spin. Nothing is torn down meanwhile: felix leaves its routes in the
//! kernel when it dies, and bird's peers keep this node's routes through
//! graceful restart. Children get SIGTERM if calico-node itself dies
//! (PR_SET_PDEATHSIG), so none outlive it.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long is considered healthy: backoff resets.
const STABLE: Duration = Duration::from_secs(60);
/// How long children get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// What the supervisor knows of one child.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildStatus {
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// When the child last went down, if it is down now.
    pub down_since: Option<std::time::SystemTime>,
}

/// Supervises a set of children. [`Supervisor::stop`] stops them
/// gracefully (SIGTERM, then SIGKILL after a grace period); dropping the
/// supervisor kills them.
pub struct Supervisor {
    stop_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    status: ChildStatuses,
}

/// A cloneable view of every child's status, for the health poller.
#[derive(Debug, Clone, Default)]
pub struct ChildStatuses(Arc<Mutex<Vec<(&'static str, ChildStatus)>>>);

impl ChildStatuses {
    pub fn get(&self) -> Vec<(&'static str, ChildStatus)> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn spawn(spec: &ChildSpec) -> std::io::Result<Child> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and only affects
    // the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "exited".into(),
        },
        Err(e) => format!("wait failed: {e}"),
    }
}

async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

impl Supervisor {
    pub fn start(children: Vec<ChildSpec>) -> Supervisor {
        let (stop_tx, stop_rx) = watch::channel(false);
        let status = ChildStatuses(Arc::new(Mutex::new(
            children
                .iter()
                .map(|c| (c.name, ChildStatus::default()))
                .collect::<Vec<_>>(),
        )));
        let tasks = children
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let mut stop = stop_rx.clone();
                let status = status.0.clone();
                tokio::spawn(async move {
                    let mut backoff = BACKOFF_MIN;
                    loop {
                        let started = Instant::now();
                        let mut child = match spawn(&spec) {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::error!(child = spec.name, program = %spec.program.display(), error = %e,
                                    "cannot start child");
                                if let Ok(mut s) = status.lock() {
                                    s[i].1.last_exit = Some(format!("cannot start: {e}"));
                                    s[i].1.down_since.get_or_insert_with(std::time::SystemTime::now);
                                }
                                tokio::select! {
                                    _ = tokio::time::sleep(backoff) => {}
                                    _ = stop.changed() => return,
                                }
                                backoff = (backoff * 2).min(BACKOFF_MAX);
                                continue;
                            }
                        };
                        tracing::info!(child = spec.name, pid = ?child.id(), "started");
                        if let Ok(mut s) = status.lock() {
                            s[i].1.pid = child.id();
                            s[i].1.down_since = None;
                        }
                        let exit = tokio::select! {
                            r = child.wait() => describe(r),
                            _ = stop.changed() => {
                                terminate(&mut child).await;
                                return;
                            }
                        };
                        tracing::warn!(child = spec.name, exit = %exit, restart_in = ?backoff, "child exited; restarting");
                        if let Ok(mut s) = status.lock() {
                            s[i].1.pid = None;
                            s[i].1.restarts += 1;
                            s[i].1.last_exit = Some(exit);
                            s[i].1.down_since = Some(std::time::SystemTime::now());
                        }
                        if started.elapsed() >= STABLE {
                            backoff = BACKOFF_MIN;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => return,
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                })
            })
            .collect();
        Supervisor {
            stop_tx,
            tasks,
            status,
        }
    }

    pub fn status(&self) -> Vec<(&'static str, ChildStatus)> {
        self.status.get()
    }

    /// The children's status, as a handle that outlives this borrow.
    pub fn statuses(&self) -> ChildStatuses {
        self.status.clone()
    }

    /// Sends SIGTERM to every child and waits for them (SIGKILL after a
    /// grace period).
    pub async fn stop(mut self) {
        let _ = self.stop_tx.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Each task holds its child with kill_on_drop: aborting it kills
        // the child.
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(name: &'static str, script: &str) -> ChildSpec {
        ChildSpec {
            name,
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![],
        }
    }

    #[tokio::test]
    async fn a_crashed_child_is_restarted_and_stop_ends_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let script = format!("echo x >> {}; exit 3", count.display());
        let sup = Supervisor::start(vec![sh("crasher", &script), sh("sleeper", "exec sleep 60")]);
        // First start, then a restart after the 1 s backoff.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = std::fs::read_to_string(&count)
                .map(|s| s.lines().count())
                .unwrap_or(0);
            if n >= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "not restarted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let st = sup.status();
        assert!(st[0].1.restarts >= 1);
        assert_eq!(st[0].1.last_exit.as_deref(), Some("exited with status 3"));
        let sleeper = st[1].1.pid.unwrap();
        assert!(Path::new(&format!("/proc/{sleeper}")).exists());
        let t = Instant::now();
        sup.stop().await;
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "SIGTERM is enough for sleep"
        );
        // Reaped: the pid is gone (or reused by something else, which we
        // cannot tell apart; accept not a zombie of ours).
        let stat = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap_or_default();
        assert!(!stat.contains("(sleep)"), "{stat}");
    }

    #[tokio::test]
    async fn a_missing_program_is_reported_not_fatal() {
        let sup = Supervisor::start(vec![ChildSpec {
            name: "ghost",
            program: "/nonexistent/felix".into(),
            args: vec![],
            env: vec![],
        }]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let st = sup.status();
        assert!(
            st[0]
                .1
                .last_exit
                .as_deref()
                .unwrap()
                .contains("cannot start")
        );
        assert!(st[0].1.down_since.is_some());
        sup.stop().await;
    }

    use std::path::Path;
}
