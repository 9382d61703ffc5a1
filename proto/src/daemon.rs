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
}
