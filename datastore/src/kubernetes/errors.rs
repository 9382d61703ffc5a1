//! Kubernetes API answers → datastore errors.
//!
//! The API server says what went wrong in a `Status` object; its `code`
//! and `reason` decide the mapping:
//!
//! | code | reason | error |
//! |---|---|---|
//! | 404 | NotFound, `details.name` set | [`Error::NotFound`] |
//! | 404 | NotFound, no details | [`Error::CrdMissing`]: the *type* is not served |
//! | 409 | AlreadyExists | [`Error::AlreadyExists`] |
//! | 409 | Conflict (stale resourceVersion, failed precondition) | [`Error::Conflict`] |
//! | 401, 403 | Unauthorized, Forbidden | [`Error::Forbidden`] (RBAC) |
//! | 429, 5xx, transport | | [`Error::Unavailable`] (transient) |
//!
//! 410 Gone (a resourceVersion too old to watch or continue a list from)
//! is not an error for the caller: the watch relists instead, so it is
//! recognised with [`is_gone`] before mapping.

use kube::core::Status;

use super::resources::ApiType;
use crate::{Error, Revision};

pub(super) const UNAVAILABLE_HINT: &str = "check that the Kubernetes API server is up and \
     reachable from this node (KUBECONFIG, or the in-cluster service account and \
     KUBERNETES_SERVICE_HOST)";

/// What was being done, for the error.
pub(super) struct Ctx<'a> {
    /// "Kubernetes API at https://10.96.0.1:443".
    pub server: &'a str,
    pub ty: ApiType,
    /// The key or list, as users read it (`IPPool "default"`).
    pub what: String,
    pub verb: &'static str,
    /// The revision a conditional write expected.
    pub expected: Option<&'a Revision>,
}

impl Ctx<'_> {
    pub fn unavailable(&self, reason: impl Into<String>) -> Error {
        Error::Unavailable {
            endpoints: self.server.to_string(),
            reason: reason.into(),
            hint: UNAVAILABLE_HINT,
        }
    }

    /// Maps a failed API call.
    pub fn map(&self, e: kube::Error) -> Error {
        match e {
            kube::Error::Api(status) => self.map_status(&status),
            kube::Error::HyperError(e) => self.unavailable(e.to_string()),
            kube::Error::Service(e) => self.unavailable(e.to_string()),
            kube::Error::ReadEvents(e) => self.unavailable(e.to_string()),
            kube::Error::Auth(e) => Error::Forbidden {
                verb: self.verb,
                resource: self.ty.resource_name(),
                reason: e.to_string(),
            },
            other => Error::Backend {
                key: self.what.clone(),
                reason: other.to_string(),
            },
        }
    }

    /// Maps a failure `Status` from the API server (an HTTP error body, or
    /// a watch's ERROR event).
    pub fn map_status(&self, status: &Status) -> Error {
        let named = status.details.as_ref().is_some_and(|d| !d.name.is_empty());
        match (status.code, status.reason.as_str()) {
            (404, _) if !named && self.ty.is_crd() => Error::CrdMissing {
                resource: self.ty.resource_name(),
            },
            (404, _) => Error::NotFound {
                key: self.what.clone(),
            },
            (409, "AlreadyExists") => Error::AlreadyExists {
                key: self.what.clone(),
            },
            (409, _) => Error::Conflict {
                key: self.what.clone(),
                expected: self
                    .expected
                    .cloned()
                    .unwrap_or_else(|| Revision(String::new())),
            },
            (401 | 403, _) => Error::Forbidden {
                verb: self.verb,
                resource: self.ty.resource_name(),
                reason: status.message.clone(),
            },
            (429 | 500..=599, _) => self.unavailable(format!(
                "{} ({} {})",
                status.message, status.code, status.reason
            )),
            _ => Error::Backend {
                key: self.what.clone(),
                reason: format!(
                    "the API server answered {} {}: {}",
                    status.code, status.reason, status.message
                ),
            },
        }
    }
}

/// A 410 Gone / Expired: the resourceVersion (or list continue token) is
/// older than the history the API server keeps.
pub(super) fn is_gone(status: &Status) -> bool {
    status.code == 410 || status.reason == "Expired" || status.reason == "Gone"
}

/// [`is_gone`] for a failed call.
pub(super) fn is_gone_err(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if is_gone(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: &str) -> Status {
        serde_json::from_str(json).unwrap()
    }

    fn ctx(ty: ApiType) -> Ctx<'static> {
        Ctx {
            server: "Kubernetes API at https://10.96.0.1:443",
            ty,
            what: "IPPool \"p1\"".into(),
            verb: "update",
            expected: None,
        }
    }

    #[test]
    fn object_not_found_and_type_not_served_are_told_apart() {
        let obj = status(
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"ippools.crd.projectcalico.org \"p1\" not found","reason":"NotFound",
            "details":{"name":"p1","group":"crd.projectcalico.org","kind":"ippools"},"code":404}"#,
        );
        assert!(matches!(
            ctx(ApiType::IPPool).map_status(&obj),
            Error::NotFound { .. }
        ));
        let ty = status(
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"the server could not find the requested resource","reason":"NotFound",
            "details":{},"code":404}"#,
        );
        let err = ctx(ApiType::IPPool).map_status(&ty);
        assert!(matches!(err, Error::CrdMissing { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("ippools.crd.projectcalico.org")
                && text.contains("kubectl apply -f deploy/crds.yaml"),
            "{text}"
        );
    }

    #[test]
    fn conflicts_and_duplicates_are_the_datastore_errors() {
        let exists = status(
            r#"{"status":"Failure","reason":"AlreadyExists","code":409,
            "message":"ippools.crd.projectcalico.org \"p1\" already exists",
            "details":{"name":"p1","group":"crd.projectcalico.org","kind":"ippools"}}"#,
        );
        assert!(matches!(
            ctx(ApiType::IPPool).map_status(&exists),
            Error::AlreadyExists { .. }
        ));
        let conflict = status(
            r#"{"status":"Failure","reason":"Conflict","code":409,
            "message":"Operation cannot be fulfilled on ippools.crd.projectcalico.org \"p1\": the object has been modified; please apply your changes to the latest version and try again",
            "details":{"name":"p1","group":"crd.projectcalico.org","kind":"ippools"}}"#,
        );
        let rev = Revision("12".into());
        let c = Ctx {
            expected: Some(&rev),
            ..ctx(ApiType::IPPool)
        };
        match c.map_status(&conflict) {
            Error::Conflict { expected, .. } => assert_eq!(expected, rev),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn rbac_refusals_point_at_the_manifest_and_overload_is_transient() {
        let forbidden = status(
            r#"{"status":"Failure","reason":"Forbidden","code":403,
            "message":"ippools.crd.projectcalico.org is forbidden: User \"system:serviceaccount:kube-system:calico-node\" cannot list resource \"ippools\""}"#,
        );
        let err = ctx(ApiType::IPPool).map_status(&forbidden);
        assert!(err.to_string().contains("deploy/calico-node.yaml"), "{err}");
        assert!(!err.is_transient());
        let busy = status(r#"{"status":"Failure","reason":"TooManyRequests","code":429}"#);
        let err = ctx(ApiType::IPPool).map_status(&busy);
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("KUBECONFIG"), "{err}");
    }

    #[test]
    fn expired_versions_are_recognised() {
        assert!(is_gone(&status(
            r#"{"status":"Failure","reason":"Expired","code":410,
            "message":"too old resource version: 10 (200)"}"#
        )));
        assert!(!is_gone(&status(r#"{"status":"Failure","code":500}"#)));
    }
}
