//! calicoctl: Calico's command line for its resources, on etcd or the
//! Kubernetes API.
//!
//! ```text
//! calicoctl get ippools -o wide
//! calicoctl apply -f pools.yaml          # projectcalico.org/v3 or crd.projectcalico.org/v1
//! calicoctl patch ippool default-ipv4-ippool -p '{"spec":{"disabled":true}}'
//! calicoctl delete bgppeer tor-a
//! calicoctl ipam show --show-blocks
//! calicoctl ipam check -o report.json && calicoctl ipam release --from-report report.json
//! calicoctl node status
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use calicoctl::config;
use calicoctl::ipam;
use calicoctl::kinds::Kind;
use calicoctl::resources::{self, Action, Namespaces, Output};

#[derive(Parser)]
#[command(name = "calicoctl", version, about = "Manage Calico resources")]
struct Cli {
    /// The CalicoAPIConfig file; when the default is absent the
    /// environment is used (DATASTORE_TYPE, ETCD_ENDPOINTS, KUBECONFIG...).
    #[arg(short = 'c', long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Ns {
    /// The namespace of namespaced kinds (networkpolicies,
    /// workloadendpoints).
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Every namespace (get only).
    #[arg(short = 'A', long)]
    all_namespaces: bool,
}

impl Ns {
    fn scope(&self) -> Namespaces {
        if self.all_namespaces {
            Namespaces::All
        } else {
            Namespaces::One(self.namespace.clone())
        }
    }
}

#[derive(clap::Args)]
struct File {
    /// A YAML or JSON manifest; `-` reads standard input.
    #[arg(short = 'f', long)]
    filename: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Shows resources.
    Get {
        kind: String,
        names: Vec<String>,
        #[arg(short = 'o', long, value_enum, default_value = "ps")]
        output: Output,
        #[command(flatten)]
        ns: Ns,
    },
    /// Creates the resources in a file; fails on one that exists.
    Create {
        #[command(flatten)]
        file: File,
        #[command(flatten)]
        ns: Ns,
    },
    /// Creates or replaces the resources in a file.
    Apply {
        #[command(flatten)]
        file: File,
        #[command(flatten)]
        ns: Ns,
    },
    /// Replaces the resources in a file; fails on one that does not exist.
    Replace {
        #[command(flatten)]
        file: File,
        #[command(flatten)]
        ns: Ns,
    },
    /// Deletes resources by kind and name, or those in a file.
    Delete {
        kind: Option<String>,
        names: Vec<String>,
        #[arg(short = 'f', long)]
        filename: Option<String>,
        /// Do not fail on a resource that does not exist.
        #[arg(long)]
        skip_not_exists: bool,
        #[command(flatten)]
        ns: Ns,
    },
    /// Merge-patches one resource (RFC 7386).
    Patch {
        kind: String,
        name: String,
        #[arg(short = 'p', long)]
        patch: String,
        #[command(flatten)]
        ns: Ns,
    },
    /// IP address management.
    Ipam {
        #[command(subcommand)]
        cmd: IpamCmd,
    },
    /// This node.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// The client's version and the datastore it talks to.
    Version,
}

#[derive(Subcommand)]
enum IpamCmd {
    /// Pool usage; with --show-blocks each block, with --ip one address.
    Show {
        #[arg(long)]
        show_blocks: bool,
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
    },
    /// Finds leaked addresses, handles without a pod, blocks without an
    /// affinity and duplicates; -o writes a report `ipam release` reads.
    Check {
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Releases an address, or every leak in a report from `ipam check`.
    Release {
        #[arg(long, conflicts_with = "from_report")]
        ip: Option<std::net::IpAddr>,
        #[arg(long)]
        from_report: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// The BGP peer table of the node this runs on.
    Status {
        #[arg(long, env = "CALICO_RUN_DIR", default_value = "/run/calico")]
        run_dir: PathBuf,
    },
}

fn read_file(name: &str) -> anyhow::Result<String> {
    if name == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        Ok(s)
    } else {
        std::fs::read_to_string(name).with_context(|| format!("cannot read {name}"))
    }
}

/// The datastore variables: the config file's, or the environment's.
fn datastore_vars(
    cli_config: Option<&PathBuf>,
) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    let (path, explicit) = match cli_config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(config::DEFAULT_CONFIG), false),
    };
    Ok(config::load(&path, explicit)?)
}

async fn connect(vars: &Option<BTreeMap<String, String>>) -> anyhow::Result<datastore::Client> {
    let cfg = match vars {
        Some(v) => datastore::DatastoreConfig::from_lookup(|k| v.get(k).cloned())?,
        None => datastore::DatastoreConfig::from_env()?,
    };
    Ok(cfg.connect().await?)
}

async fn run(cli: Cli, vars: Option<BTreeMap<String, String>>) -> anyhow::Result<String> {
    match cli.cmd {
        Cmd::Get {
            kind,
            names,
            output,
            ns,
        } => {
            let kind = Kind::parse(&kind).map_err(anyhow::Error::msg)?;
            let c = connect(&vars).await?;
            resources::get(&c, kind, &names, &ns.scope(), output).await
        }
        Cmd::Create { file, ns } => write(&vars, &file.filename, Action::Create, &ns).await,
        Cmd::Apply { file, ns } => write(&vars, &file.filename, Action::Apply, &ns).await,
        Cmd::Replace { file, ns } => write(&vars, &file.filename, Action::Replace, &ns).await,
        Cmd::Delete {
            kind,
            names,
            filename,
            skip_not_exists,
            ns,
        } => match (filename, kind) {
            (Some(f), None) => {
                let resources = resources::read_manifest(&read_file(&f)?, &f)?;
                let c = connect(&vars).await?;
                resources::write_all(
                    &c,
                    resources,
                    Action::Delete,
                    &ns.namespace,
                    skip_not_exists,
                )
                .await
            }
            (None, Some(kind)) if !names.is_empty() => {
                let kind = Kind::parse(&kind).map_err(anyhow::Error::msg)?;
                let c = connect(&vars).await?;
                resources::delete_named(&c, kind, &names, &ns.scope(), skip_not_exists).await
            }
            _ => anyhow::bail!("name what to delete: `delete KIND NAME...` or `delete -f FILE`"),
        },
        Cmd::Patch {
            kind,
            name,
            patch,
            ns,
        } => {
            let kind = Kind::parse(&kind).map_err(anyhow::Error::msg)?;
            let c = connect(&vars).await?;
            resources::patch(&c, kind, &name, &ns.scope(), &patch).await
        }
        Cmd::Ipam { cmd } => {
            let c = connect(&vars).await?;
            match cmd {
                IpamCmd::Show { show_blocks, ip } => ipam::show(&c, show_blocks, ip).await,
                IpamCmd::Check { output } => ipam::check(&c, output.as_deref()).await,
                IpamCmd::Release { ip, from_report } => match (ip, from_report) {
                    (Some(ip), None) => ipam::release_ip(&c, ip).await,
                    (None, Some(f)) => ipam::release_report(&c, &f).await,
                    _ => anyhow::bail!("name what to release: --ip ADDRESS or --from-report FILE"),
                },
            }
        }
        Cmd::Node {
            cmd: NodeCmd::Status { run_dir },
        } => {
            let socket = node::health::Sockets::in_run_dir(&run_dir).bird;
            let table = node::status::render(&socket).await.with_context(|| {
                format!(
                    "is calico-node running on this host? (its BGP socket is {})",
                    socket.display()
                )
            })?;
            Ok(format!("Calico process is running.\n\n{table}"))
        }
        Cmd::Version => {
            let cfg = match &vars {
                Some(v) => datastore::DatastoreConfig::from_lookup(|k| v.get(k).cloned())?,
                None => datastore::DatastoreConfig::from_env()?,
            };
            Ok(format!(
                "Client Version:    v{}\nDatastore Type:    {}\n",
                env!("CARGO_PKG_VERSION"),
                cfg.datastore_type().as_str()
            ))
        }
    }
}

async fn write(
    vars: &Option<BTreeMap<String, String>>,
    file: &str,
    action: Action,
    ns: &Ns,
) -> anyhow::Result<String> {
    // Everything is read and checked before the datastore is touched.
    let resources = resources::read_manifest(&read_file(file)?, file)?;
    let c = connect(vars).await?;
    resources::write_all(&c, resources, action, &ns.namespace, false).await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let vars = match datastore_vars(cli.config.as_ref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("calicoctl: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(k) = vars.as_ref().and_then(|v| v.get("KUBECONFIG")) {
        // SAFETY: no other thread exists yet; the Kubernetes client reads
        // KUBECONFIG from the environment.
        unsafe { std::env::set_var("KUBECONFIG", k) };
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("calicoctl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, vars)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("calicoctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
