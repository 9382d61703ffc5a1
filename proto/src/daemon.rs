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

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{Duration, Instant};

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
