//! `calico-node`: the per-node agent.
//!
//! ```text
//! calico-node run       # register, create the default pool, supervise confd/bird/felix
//! calico-node status    # the BGP peer table, like `calicoctl node status`
//! ```
//! Configuration comes from Calico's environment variables (NODENAME, IP,
//! IP_AUTODETECTION_METHOD, AS, CALICO_IPV4POOL_*, DATASTORE_TYPE,
//! ETCD_ENDPOINTS, ...).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use node::daemon::RunConfig;
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
        /// Directory holding the confd, bird and felix binaries (default:
        /// next to calico-node).
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
                let bin_dir = match bin_dir {
                    Some(d) => d,
                    None => std::env::current_exe()
                        .context("cannot find calico-node's own path")?
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| PathBuf::from("/usr/local/bin")),
                };
                let cfg = RunConfig { settings, bin_dir };
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
