//! What the runtime hands the plugin: `CNI_*` environment variables and the
//! network configuration on stdin, parsed exactly as kubelet / containerd /
//! CRI-O pass them (CNI spec 1.0, with the older versions still in use).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::{CniError, code};

/// Spec versions this plugin speaks; results are shaped for the version
/// the configuration asks for.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The plugin's own version of the spec, for VERSION and errors that occur
/// before the configuration is read.
pub const OUR_VERSION: &str = "1.0.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Version,
    Gc,
}

impl Command {
    fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            other => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("unknown CNI_COMMAND {other:?}"),
                    "expected ADD, DEL, CHECK, STATUS, VERSION or GC",
                ));
            }
        })
    }
}

/// `CNI_ARGS` (`K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub infra_container_id: Option<String>,
    pub pod_uid: Option<String>,
    /// Everything else, kept as given (`IgnoreUnknown=1`, ...).
    pub other: BTreeMap<String, String>,
}

impl CniArgs {
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut out = CniArgs::default();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    "malformed CNI_ARGS",
                    format!("{pair:?} is not KEY=VALUE (CNI_ARGS is {s:?})"),
                ));
            };
            match k {
                "K8S_POD_NAMESPACE" => out.pod_namespace = Some(v.to_string()),
                "K8S_POD_NAME" => out.pod_name = Some(v.to_string()),
                "K8S_POD_INFRA_CONTAINER_ID" => out.infra_container_id = Some(v.to_string()),
                "K8S_POD_UID" => out.pod_uid = Some(v.to_string()),
                _ => {
                    out.other.insert(k.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }
}

/// The environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub container_id: String,
    /// Required for ADD and CHECK; DEL may come without it (the namespace
    /// can already be gone).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

fn missing(var: &str, cmd: &str) -> CniError {
    CniError::new(
        code::INVALID_ENV,
        format!("{var} is not set"),
        format!("the container runtime must set {var} for {cmd}; is this being run by hand?"),
    )
}

impl Invocation {
    /// Reads the invocation from environment lookups (`std::env::var` in
    /// the binary; a map in tests).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let cmd_s = get("CNI_COMMAND").ok_or_else(|| missing("CNI_COMMAND", "any command"))?;
        let command = Command::parse(&cmd_s)?;
        let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let container_id = match get("CNI_CONTAINERID") {
            Some(c) => {
                if c.contains('/') || c.chars().any(char::is_whitespace) {
                    return Err(CniError::new(
                        code::INVALID_ENV,
                        "invalid CNI_CONTAINERID",
                        format!("{c:?} contains '/' or whitespace"),
                    ));
                }
                c
            }
            None if needs_container => return Err(missing("CNI_CONTAINERID", &cmd_s)),
            None => String::new(),
        };
        let netns = get("CNI_NETNS").map(PathBuf::from);
        if netns.is_none() && matches!(command, Command::Add | Command::Check) {
            return Err(missing("CNI_NETNS", &cmd_s));
        }
        let ifname = match get("CNI_IFNAME") {
            Some(i) => i,
            None if needs_container => return Err(missing("CNI_IFNAME", &cmd_s)),
            None => String::new(),
        };
        if ifname.len() > 15 || ifname.contains('/') {
            return Err(CniError::new(
                code::INVALID_ENV,
                "invalid CNI_IFNAME",
                format!("{ifname:?} is not a valid interface name (at most 15 characters, no '/')"),
            ));
        }
        let args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?;
        let path = get("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Invocation {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }
}

/// A boolean Calico writes either as JSON `true` or the string `"true"`.
fn loose_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!(
                "{s:?} is not \"true\" or \"false\""
            ))),
        },
        Some(other) => Err(serde::de::Error::custom(format!(
            "{other} is not a boolean"
        ))),
    }
}

/// A number that may arrive as a string; a leftover template placeholder
/// such as `"__CNI_MTU__"` is reported as such.
fn loose_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is out of range"))),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "{s:?} is not a number (an install step did not fill in a placeholder?)"
            ))
        }),
        Some(other) => Err(serde::de::Error::custom(format!("{other} is not a number"))),
    }
}

/// The `ipam` section of Calico's configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub ipam_type: String,
    #[serde(default, deserialize_with = "loose_bool")]
    pub assign_ipv4: Option<bool>,
    #[serde(default, deserialize_with = "loose_bool")]
    pub assign_ipv6: Option<bool>,
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
}

/// The network configuration (one plugin's entry of a conflist, as the
/// runtime passes it), with Calico's fields.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default, deserialize_with = "loose_u32")]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub nodename: Option<String>,
    #[serde(default, rename = "nodename_file")]
    pub nodename_file: Option<PathBuf>,
    #[serde(default, rename = "datastore_type")]
    pub datastore_type: Option<String>,
    #[serde(default, rename = "log_level")]
    pub log_level: Option<String>,
    #[serde(default, rename = "log_file_path")]
    pub log_file_path: Option<PathBuf>,
    #[serde(default)]
    pub ipam: Option<IpamConf>,
    /// calico-rs: felix's CNI socket (default /var/run/calico/felix.sock).
    #[serde(default, rename = "felix_socket")]
    pub felix_socket: Option<PathBuf>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default)]
    pub runtime_config: Option<Value>,
    /// GC (spec 1.1): the attachments the runtime still has.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The same under its earlier name (libcni sets both).
    #[serde(default, rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<Attachment>>,
    /// Anything else (policy, kubernetes, capabilities, ...), kept.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// One attachment a runtime still has (GC's `cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

impl NetConf {
    /// Parses stdin. Errors name what was wrong in terms of the file the
    /// operator wrote (the conflist in /etc/cni/net.d).
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        if stdin.iter().all(u8::is_ascii_whitespace) {
            return Err(CniError::new(
                code::DECODE_FAILURE,
                "no network configuration on stdin",
                "the runtime passes the network configuration on stdin",
            ));
        }
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                "network configuration is not valid",
                format!("{e} (check the calico entry of the conflist in /etc/cni/net.d)"),
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("CNI version {:?} is not supported", conf.cni_version),
                format!("supported versions: {}", SUPPORTED_VERSIONS.join(", ")),
            ));
        }
        if let Some(ipam) = &conf.ipam
            && !ipam.ipam_type.is_empty()
            && ipam.ipam_type != "calico-ipam"
        {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("ipam type {:?} is not supported", ipam.ipam_type),
                "calico-rs allocates pod addresses itself: use \"type\": \"calico-ipam\"",
            ));
        }
        if conf
            .mtu
            .is_some_and(|m| m != 0 && !(576..=65535).contains(&m))
        {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "mtu is out of range",
                "mtu must be between 576 and 65535, or 0 / absent to use felix's",
            ));
        }
        Ok(conf)
    }

    /// (IPv4 wanted, IPv6 wanted): Calico's defaults are v4 on, v6 off.
    pub fn families(&self) -> (bool, bool) {
        let ipam = self.ipam.clone().unwrap_or_default();
        (
            ipam.assign_ipv4.unwrap_or(true),
            ipam.assign_ipv6.unwrap_or(false),
        )
    }
}

/// Whether results for `version` still carry the per-IP `version` field
/// (it was dropped in 1.0).
pub fn ips_have_version(version: &str) -> bool {
    version.starts_with("0.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    /// What containerd's CRI plugin sets for a pod sandbox ADD.
    fn containerd_add() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            (
                "CNI_CONTAINERID",
                "8f0b9a4a2c1d4e0f9e5d6c7b8a9f0e1d2c3b4a5968778695a4b3c2d1e0f9a8b7",
            ),
            (
                "CNI_NETNS",
                "/var/run/netns/cni-1c2d3e4f-5a6b-7c8d-9e0f-a1b2c3d4e5f6",
            ),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "K8S_POD_INFRA_CONTAINER_ID=8f0b9a4a2c1d;K8S_POD_UID=0d7c6b5a-4938-2716-a5b4-c3d2e1f0a9b8;IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
            ),
            ("CNI_PATH", "/opt/cni/bin:/usr/libexec/cni"),
        ]
    }

    #[test]
    fn containerd_add_environment_parses() {
        let inv = Invocation::from_env(env(&containerd_add())).unwrap();
        assert_eq!(inv.command, Command::Add);
        assert_eq!(inv.ifname, "eth0");
        assert_eq!(inv.args.pod_namespace.as_deref(), Some("default"));
        assert_eq!(inv.args.pod_name.as_deref(), Some("web-0"));
        assert_eq!(
            inv.args.other.get("IgnoreUnknown").map(String::as_str),
            Some("1")
        );
        assert_eq!(inv.path.len(), 2);
    }

    #[test]
    fn missing_or_bad_environment_is_a_clear_cni_error() {
        let mut e = containerd_add();
        e.retain(|(k, _)| *k != "CNI_NETNS");
        let err = Invocation::from_env(env(&e)).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        assert!(err.msg.contains("CNI_NETNS"), "{err}");

        let err = Invocation::from_env(env(&[("CNI_COMMAND", "FROB")])).unwrap_err();
        assert!(err.msg.contains("FROB"), "{err}");

        let err = Invocation::from_env(env(&[])).unwrap_err();
        assert!(err.msg.contains("CNI_COMMAND"), "{err}");

        let mut e = containerd_add();
        e.retain(|(k, _)| *k != "CNI_ARGS");
        e.push(("CNI_ARGS", "garbage"));
        let err = Invocation::from_env(env(&e)).unwrap_err();
        assert!(err.msg.contains("CNI_ARGS"), "{err}");

        let mut e = containerd_add();
        e.retain(|(k, _)| *k != "CNI_CONTAINERID");
        e.push(("CNI_CONTAINERID", "../../etc"));
        assert!(Invocation::from_env(env(&e)).is_err());
    }

    #[test]
    fn del_without_a_netns_is_allowed_and_version_needs_nothing() {
        let inv = Invocation::from_env(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap();
        assert_eq!(inv.netns, None);
        let inv = Invocation::from_env(env(&[("CNI_COMMAND", "VERSION")])).unwrap();
        assert_eq!(inv.command, Command::Version);
    }

    /// Calico's manifest conflist entry, as the runtime passes it (with
    /// the list's name and version injected).
    const CALICO_CONF: &str = r#"{
        "cniVersion": "0.3.1", "name": "k8s-pod-network", "type": "calico",
        "log_level": "info", "log_file_path": "/var/log/calico/cni/cni.log",
        "datastore_type": "kubernetes", "nodename": "node-1", "mtu": 1430,
        "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "false",
                 "ipv4_pools": ["default-ipv4-ippool"]},
        "policy": {"type": "k8s"},
        "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}
    }"#;

    #[test]
    fn calicos_conflist_entry_parses_with_unknown_fields_kept() {
        let c = NetConf::parse(CALICO_CONF.as_bytes()).unwrap();
        assert_eq!(c.plugin_type, "calico");
        assert_eq!(c.mtu, Some(1430));
        assert_eq!(c.families(), (true, false));
        assert_eq!(
            c.ipam.as_ref().unwrap().ipv4_pools,
            vec!["default-ipv4-ippool".to_string()]
        );
        assert!(c.other.contains_key("policy"));
        assert!(c.other.contains_key("kubernetes"));
    }

    #[test]
    fn the_shipped_conflist_entry_parses() {
        let text = include_str!("../../deploy/10-calico.conflist");
        let list: Value = serde_json::from_str(text).unwrap();
        // The runtime injects the list's name and version into each entry.
        let mut entry = list["plugins"][0].clone();
        entry["name"] = list["name"].clone();
        entry["cniVersion"] = list["cniVersion"].clone();
        let c = NetConf::parse(entry.to_string().as_bytes()).unwrap();
        assert_eq!(c.plugin_type, "calico");
        assert_eq!(c.mtu, Some(0), "0 means felix's MTU");
        assert_eq!(c.families(), (true, false));
    }

    #[test]
    fn bad_configurations_are_clear_errors() {
        let err = NetConf::parse(b"{not json").unwrap_err();
        assert_eq!(err.code, code::DECODE_FAILURE);
        assert!(err.details.contains("/etc/cni/net.d"), "{err}");

        let err = NetConf::parse(b"  ").unwrap_err();
        assert!(err.msg.contains("stdin"), "{err}");

        let err =
            NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"calico"}"#).unwrap_err();
        assert_eq!(err.code, code::INCOMPATIBLE_VERSION);

        let err = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"calico","mtu":"__CNI_MTU__"}"#,
        )
        .unwrap_err();
        assert!(err.details.contains("placeholder"), "{err}");

        let err =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"calico","mtu":70000}"#)
                .unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);

        let err = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"calico","ipam":{"type":"host-local"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);

        let err = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"calico","ipam":{"assign_ipv4":"yes"}}"#,
        )
        .unwrap_err();
        assert!(err.details.contains("\"yes\""), "{err}");
    }
}
