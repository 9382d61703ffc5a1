//! CNI errors: what the runtime (kubelet via containerd/CRI-O) shows a
//! person when a pod cannot get its network. Printed as the spec's error
//! JSON on stdout, with a non-zero exit.

use serde::Serialize;

/// Error codes from the CNI specification (1–99 are reserved for it);
/// 100 and up are ours.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADDs (felix not running).
    pub const NOT_AVAILABLE: u32 = 50;
    /// calico-rs: IP address management failed (pool exhausted, ...).
    pub const IPAM_FAILURE: u32 = 101;
    /// calico-rs: building the pod interface failed.
    pub const INTERFACE_FAILURE: u32 = 102;
    /// calico-rs: CHECK found the pod's network broken.
    pub const CHECK_FAILED: u32 = 103;
    /// calico-rs: the local felix cannot be reached.
    pub const FELIX_UNREACHABLE: u32 = 104;
}

/// A CNI error: `msg` is the short what, `details` the longer why and what
/// to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The JSON the runtime reads from stdout.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            cni_version: &'a str,
            #[serde(flatten)]
            err: &'a CniError,
        }
        serde_json::to_string(&Out {
            cni_version,
            err: self,
        })
        .unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"error\"}}", self.code))
    }

    /// A process exit status for this error (1–255, never 0).
    pub fn exit_code(&self) -> i32 {
        i32::try_from(self.code.clamp(1, 255)).unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(
            code::INVALID_ENV,
            "CNI_NETNS is not set",
            "kubelet must pass it for ADD",
        );
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "1.0.0", "code": 4,
                "msg": "CNI_NETNS is not set", "details": "kubelet must pass it for ADD"})
        );
        assert_eq!(e.exit_code(), 4);
        assert_eq!(CniError::new(1000, "x", "").exit_code(), 255);
    }
}
