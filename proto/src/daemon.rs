//! Process plumbing every calico-rs daemon shares.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Installs SIGTERM and SIGINT handlers now (so a signal during start-up is
/// a clean stop, not the default kill) and returns a future that resolves
/// at the first of them.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Makes any panic, in any thread or task, end the whole process (after
/// the usual message). A daemon is a set of tasks and threads that need
/// each other; tokio would otherwise catch a task's panic and keep the
/// rest running half-working, where nothing notices. Dead, it is
/// restarted by calico-node's supervisor (or the DaemonSet), and its
/// state is rebuilt from the kernel and the datastore.
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        tracing::error!(panic = %info, "a panic ends the process so it is restarted whole");
        std::process::abort();
    }));
}

/// Replaces the file at `path` with `data` so that a reader sees the old
/// content or the new, never half of it, and a crash or power loss right
/// after the call keeps the new: the data is written to `<path>.tmp` and
/// synced, renamed into place, and the directory synced (the rename is
/// durable only then). Creates the directory if needed.
pub fn write_durably(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces the log filter with one parsed from a directive string.
type Reload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The daemon's log level, changeable while it runs (BGPConfiguration
/// `logSeverityScreen`), unless `RUST_LOG` chose it at start.
struct LogControl {
    reload: Reload,
    /// The level set last (`None`: the start-up one).
    current: std::sync::Mutex<Option<&'static str>>,
}

static LOG: std::sync::OnceLock<LogControl> = std::sync::OnceLock::new();

/// Where a daemon's log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTo {
    Stdout,
    Stderr,
}

/// Logs to `to` at `RUST_LOG`'s levels if it is set, else at `info`,
/// which [`set_log_severity`] can change later. ANSI colours only on a
/// terminal. Call once, first thing.
pub fn init_logging(to: LogTo) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, fmt, reload};
    let from_env = EnvFilter::try_from_default_env().ok();
    let pinned = from_env.is_some();
    let (filter, handle) = reload::Layer::new(from_env.unwrap_or_else(|| EnvFilter::new("info")));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match to {
        LogTo::Stdout => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stdout)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
            )
            .try_init(),
        LogTo::Stderr => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .try_init(),
    };
    if installed.is_err() {
        return;
    }
    if !pinned {
        let _ = LOG.set(LogControl {
            reload: Box::new(move |level| {
                handle
                    .reload(EnvFilter::new(level))
                    .map_err(|e| e.to_string())
            }),
            current: std::sync::Mutex::new(None),
        });
    }
}

/// The tracing level of a Calico log severity (`logSeverityScreen`,
/// case-insensitive): Trace, Debug, Info, Warning, Error, Fatal.
pub fn tracing_level(severity: &str) -> Option<&'static str> {
    Some(match severity.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => return None,
    })
}

/// The filter for a level: more than info only for calico-rs's own crates
/// (the HTTP/2 and gRPC libraries' debug lines drown everything else).
fn filter_for(level: &str) -> String {
    match level {
        "debug" | "trace" => {
            let ours = [
                "bird",
                "confd",
                "felix",
                "node",
                "proto",
                "datastore",
                "cni",
            ];
            std::iter::once("info".to_string())
                .chain(ours.iter().map(|c| format!("{c}={level}")))
                .collect::<Vec<_>>()
                .join(",")
        }
        _ => level.to_string(),
    }
}

/// What [`set_log_severity`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogChange {
    /// The level was already this.
    Unchanged,
    /// Now logging at this tracing level.
    Changed(&'static str),
    /// `RUST_LOG` chose the levels when the daemon started; they stay.
    PinnedByEnv,
    /// Not a Calico severity.
    Unknown,
}

/// Sets the daemon's log level from a Calico severity, unless `RUST_LOG`
/// pinned it at start ([`init_logging`]).
pub fn set_log_severity(severity: &str) -> LogChange {
    let Some(level) = tracing_level(severity) else {
        return LogChange::Unknown;
    };
    let Some(log) = LOG.get() else {
        return LogChange::PinnedByEnv;
    };
    let mut current = log.current.lock().unwrap_or_else(|e| e.into_inner());
    if current.unwrap_or("info") == level {
        *current = Some(level);
        return LogChange::Unchanged;
    }
    match (log.reload)(&filter_for(level)) {
        Ok(()) => {
            *current = Some(level);
            LogChange::Changed(level)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot change the log level");
            LogChange::Unchanged
        }
    }
}

/// [`set_log_severity`], saying so in the log when the level changes or
/// the severity is not one (at warn, so that it shows at any level).
pub fn apply_log_severity(severity: &str) {
    match set_log_severity(severity) {
        LogChange::Changed(level) => {
            tracing::warn!(severity, level, "log level set by logSeverityScreen");
        }
        LogChange::Unknown => {
            tracing::warn!(
                severity,
                "logSeverityScreen is not a log severity; level unchanged"
            );
        }
        LogChange::Unchanged | LogChange::PinnedByEnv => {}
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn calico_severities_are_tracing_levels_more_only_for_our_crates() {
        use super::{filter_for, tracing_level};
        assert_eq!(tracing_level("Warning"), Some("warn"));
        assert_eq!(tracing_level("fatal"), Some("error"));
        assert_eq!(tracing_level("DEBUG"), Some("debug"));
        assert_eq!(tracing_level("Loud"), None);
        assert_eq!(filter_for("warn"), "warn");
        let debug = filter_for("debug");
        assert!(
            debug.starts_with("info,") && debug.contains("bird=debug"),
            "{debug}"
        );
    }

    /// In the child (re-run of this test binary): a panicking tokio task,
    /// while the main task would happily go on.
    #[test]
    fn a_panicking_task_ends_the_process() {
        if std::env::var_os("ABORT_ON_PANIC_CHILD").is_some() {
            super::abort_on_panic();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|_| std::process::exit(3));
            rt.block_on(async {
                tokio::spawn(async { panic!("a task's bug") });
                tokio::time::sleep(Duration::from_secs(20)).await;
            });
            // Still alive 20 s later: the panic was swallowed.
            std::process::exit(0);
        }
        let exe = std::env::current_exe().unwrap_or_default();
        let start = Instant::now();
        let out = Command::new(exe)
            .args([
                "--exact",
                "daemon::tests::a_panicking_task_ends_the_process",
                "--nocapture",
            ])
            .env("ABORT_ON_PANIC_CHILD", "1")
            .output();
        let Ok(out) = out else {
            panic!("cannot re-run the test binary");
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(6),
            "the child should die of SIGABRT: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(start.elapsed() < Duration::from_secs(15));
        assert!(String::from_utf8_lossy(&out.stderr).contains("a task's bug"));
    }

    #[test]
    fn a_durable_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub").join("state.json");
        super::write_durably(&path, b"first").unwrap_or_else(|e| panic!("{e}"));
        super::write_durably(&path, b"second, longer").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read(&path).ok().as_deref(),
            Some(&b"second, longer"[..])
        );
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap_or(dir.path()))
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["state.json"]);
    }
}
