//! `calico-node`: the per-node agent.
//!
//! ```text
//! calico-node run       # register, create the default pool, supervise confd/bird/felix
//! calico-node status    # the BGP peer table, like `calicoctl node status`
//! calico-node felix|confd|bird ARGS...   # that daemon (how `run` starts them)
//! ```
//! Configuration comes from Calico's environment variables (NODENAME, IP,
//! IP_AUTODETECTION_METHOD, AS, CALICO_IPV4POOL_*, DATASTORE_TYPE,
//! ETCD_ENDPOINTS, ...).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use node::daemon::{BUNDLED, Programs, RunConfig};
use node::health::Sockets;
use node::settings::Settings;
use node::status;

#[derive(Parser)]
#[command(name = "calico-node", version, about = "calico-rs node agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the node agent (the DaemonSet's main process).
    Run {
        /// Run confd, bird and felix from separate executables in this
        /// directory (default: calico-node runs them itself, as
        /// `calico-node felix ...`).
        #[arg(long, env = "CALICO_BIN_DIR")]
        bin_dir: Option<PathBuf>,
    },
    /// Print the BGP peer table.
    Status {
        /// bird's control socket.
        #[arg(long, env = "CALICO_RUN_DIR", default_value = "/run/calico")]
        run_dir: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    if let Some(child) = args
        .peek()
        .and_then(|a| a.to_str())
        .filter(|a| BUNDLED.contains(a))
    {
        let child = child.to_string();
        name_process(&child);
        let result = match child.as_str() {
            "felix" => felix::cli::main(args),
            "confd" => confd::cli::main(args),
            _ => bird::cli::main(args),
        };
        return match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{child}: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    proto::daemon::abort_on_panic();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("calico-node: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Run { bin_dir } => {
                let settings = Settings::from_env(|k| std::env::var(k).ok())?;
                let programs = match bin_dir {
                    Some(d) => Programs::Dir(d),
                    None => Programs::Bundled(
                        std::env::current_exe().context("cannot find calico-node's own path")?,
                    ),
                };
                let cfg = RunConfig { settings, programs };
                node::run(cfg, proto::daemon::shutdown_signal()?).await?;
                anyhow::Ok(())
            }
            Cmd::Status { run_dir } => {
                let text = status::render(&Sockets::in_run_dir(&run_dir).bird).await?;
                print!("{text}");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calico-node: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Gives this process the daemon's name (`/proc/<pid>/comm`), so `ps`,
/// `pgrep felix` and the liveness of a child read as before: the kernel
/// named it after the executable, `calico-node`.
fn name_process(name: &str) {
    let Ok(name) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of which it keeps
    // at most 16 bytes; `name` outlives the call.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}
