//! Prints `deploy/crds.yaml`: `cargo run -p ippool-crd --bin crdgen > deploy/crds.yaml`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match ippool_crd::crdgen::crds_yaml() {
        Ok(yaml) => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(yaml.as_bytes()).and_then(|()| out.flush()) {
                eprintln!("crdgen: writing the CRDs failed: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}
