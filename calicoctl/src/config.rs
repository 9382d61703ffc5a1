//! Where calicoctl finds the datastore, as Calico's calicoctl does: the
//! `CalicoAPIConfig` file (`--config`, default `/etc/calico/calicoctl.cfg`)
//! when it exists, otherwise the environment (`DATASTORE_TYPE`,
//! `ETCD_ENDPOINTS`, `ETCD_USERNAME`, ..., `KUBECONFIG`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/calico/calicoctl.cfg";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a CalicoAPIConfig: {reason}")]
    Shape { path: String, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiConfig {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    spec: ApiConfigSpec,
}

/// The fields Calico's CalicoAPIConfig spec has that we use; each maps to
/// the environment variable of the same meaning.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiConfigSpec {
    datastore_type: Option<String>,
    etcd_endpoints: Option<String>,
    etcd_username: Option<String>,
    etcd_password: Option<String>,
    etcd_key_file: Option<String>,
    etcd_cert_file: Option<String>,
    #[serde(rename = "etcdCACertFile")]
    etcd_ca_cert_file: Option<String>,
    kubeconfig: Option<String>,
}

/// The datastore settings as environment-style variables: from the
/// config file when there is one, otherwise `None` (use the environment).
/// A file named explicitly (`explicit`) must exist.
pub fn load(path: &Path, explicit: bool) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    parse(&text).map(Some).map_err(|reason| ConfigError::Shape {
        path: path.display().to_string(),
        reason,
    })
}

fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let cfg: ApiConfig = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    if cfg.kind != "CalicoAPIConfig" {
        return Err(format!("kind is {:?}, want CalicoAPIConfig", cfg.kind));
    }
    if !cfg.api_version.is_empty() && cfg.api_version != "projectcalico.org/v3" {
        return Err(format!(
            "apiVersion is {:?}, want projectcalico.org/v3",
            cfg.api_version
        ));
    }
    let s = cfg.spec;
    Ok([
        ("DATASTORE_TYPE", s.datastore_type),
        ("ETCD_ENDPOINTS", s.etcd_endpoints),
        ("ETCD_USERNAME", s.etcd_username),
        ("ETCD_PASSWORD", s.etcd_password),
        ("ETCD_KEY_FILE", s.etcd_key_file),
        ("ETCD_CERT_FILE", s.etcd_cert_file),
        ("ETCD_CA_CERT_FILE", s.etcd_ca_cert_file),
        ("KUBECONFIG", s.kubeconfig),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_string(), v.filter(|v| !v.is_empty())?)))
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_calicos_config_file() {
        let vars = parse(
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata:\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: http://10.0.0.1:2379\n  etcdCACertFile: /ca.pem\n",
        )
        .unwrap();
        assert_eq!(vars["DATASTORE_TYPE"], "etcdv3");
        assert_eq!(vars["ETCD_ENDPOINTS"], "http://10.0.0.1:2379");
        assert_eq!(vars["ETCD_CA_CERT_FILE"], "/ca.pem");
        assert!(!vars.contains_key("KUBECONFIG"));
        let k =
            parse("kind: CalicoAPIConfig\nspec:\n  datastoreType: kubernetes\n  kubeconfig: /k\n")
                .unwrap();
        assert_eq!(k["KUBECONFIG"], "/k");
        assert!(
            parse("kind: IPPool\n")
                .unwrap_err()
                .contains("CalicoAPIConfig")
        );
    }

    #[test]
    fn a_missing_default_file_means_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("calicoctl.cfg");
        assert!(load(&p, false).unwrap().is_none());
        assert!(load(&p, true).is_err());
    }
}
