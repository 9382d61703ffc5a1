//! `calico`: the CNI plugin binary the container runtime executes.
//!
//! Input: `CNI_*` environment and the network configuration on stdin.
//! Output: the CNI result (or error) JSON on stdout, exit status 0 on
//! success. Diagnostics go to stderr, never stdout.

use std::io::{Read, Write};
use std::process::ExitCode;

use cni::client;
use cni::error::{CniError, code};
use cni::result::version_json;
use cni::spec::{Command, Invocation, NetConf, OUR_VERSION};

fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn fail(e: &CniError, version: &str) -> ExitCode {
    print(&e.to_json(version));
    eprintln!("calico: {e}");
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
}

async fn run(inv: Invocation, conf: NetConf) -> Result<Option<String>, CniError> {
    let version = conf.cni_version.clone();
    match inv.command {
        Command::Add => {
            let r = client::add(&inv, &conf).await?;
            Ok(Some(r.to_json(&version).to_string()))
        }
        Command::Del => client::del(&inv, &conf).await.map(|()| None),
        Command::Check => client::check(&inv, &conf).await.map(|()| None),
        Command::Status => client::status(&conf).await.map(|()| None),
        Command::Gc => client::gc(&conf).await.map(|()| None),
        Command::Version => Ok(Some(version_json().to_string())),
    }
}

fn main() -> ExitCode {
    let inv = match Invocation::from_env(|k| std::env::var(k).ok()) {
        Ok(i) => i,
        Err(e) => return fail(&e, OUR_VERSION),
    };
    if inv.command == Command::Version {
        print(&version_json().to_string());
        return ExitCode::SUCCESS;
    }
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        return fail(
            &CniError::new(code::IO_FAILURE, "cannot read stdin", e.to_string()),
            OUR_VERSION,
        );
    }
    let conf = match NetConf::parse(&stdin) {
        Ok(c) => c,
        Err(e) => return fail(&e, OUR_VERSION),
    };
    let version = conf.cni_version.clone();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                &CniError::new(code::IO_FAILURE, "cannot start", e.to_string()),
                &version,
            );
        }
    };
    match rt.block_on(run(inv, conf)) {
        Ok(Some(out)) => {
            print(&out);
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => fail(&e, &version),
    }
}
