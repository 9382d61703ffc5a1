//! Which pools (or which exact addresses) a pod asks for, as Calico's CNI
//! plugin reads it: the pod's `cni.projectcalico.org/ipv4pools` /
//! `ipv6pools` annotations (JSON lists of pool names or CIDRs), else its
//! namespace's, else the CNI network config's `ipam.ipv4_pools` /
//! `ipv6_pools`, else every eligible pool. `cni.projectcalico.org/ipAddrs`
//! (a JSON list of addresses) asks for exactly those addresses instead.
//! Each family is decided on its own. Pure: the caller reads the Pod and
//! Namespace.

use std::collections::BTreeMap;
use std::net::IpAddr;

pub const IPV4_POOLS_ANNOTATION: &str = "cni.projectcalico.org/ipv4pools";
pub const IPV6_POOLS_ANNOTATION: &str = "cni.projectcalico.org/ipv6pools";
pub const IP_ADDRS_ANNOTATION: &str = "cni.projectcalico.org/ipAddrs";

/// What one pod's ADD should allocate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSelection {
    /// Pool names or CIDRs; empty means every eligible pool.
    pub pools_v4: Vec<String>,
    pub pools_v6: Vec<String>,
    /// When not empty: exactly these addresses, and no pools.
    pub addrs: Vec<IpAddr>,
}

/// A Calico IPAM annotation that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(
        "{on} annotation {annotation}={value:?} is not a JSON list of strings: {reason}; write e.g. [\"pool-a\", \"10.65.0.0/16\"]"
    )]
    NotAList {
        on: &'static str,
        annotation: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "pod annotation {IP_ADDRS_ANNOTATION} entry {0:?} is not an IP address; write e.g. [\"10.65.0.10\"]"
    )]
    BadAddress(String),
    #[error(
        "the pod has both {IP_ADDRS_ANNOTATION} and {0}; use one: exact addresses, or pools to pick from"
    )]
    Both(&'static str),
}

fn list(
    on: &'static str,
    annotation: &'static str,
    value: &str,
) -> Result<Vec<String>, SelectError> {
    serde_json::from_str::<Vec<String>>(value)
        .map(|v| {
            v.into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .map_err(|e| SelectError::NotAList {
            on,
            annotation,
            value: value.to_string(),
            reason: e.to_string(),
        })
}

/// Applies Calico's precedence: pod annotation > namespace annotation >
/// CNI config pools > all eligible pools (empty), per family.
pub fn pod_selection(
    pod_annotations: &BTreeMap<String, String>,
    namespace_annotations: &BTreeMap<String, String>,
    cni_pools_v4: &[String],
    cni_pools_v6: &[String],
) -> Result<PodSelection, SelectError> {
    if let Some(v) = pod_annotations.get(IP_ADDRS_ANNOTATION) {
        for a in [IPV4_POOLS_ANNOTATION, IPV6_POOLS_ANNOTATION] {
            if pod_annotations.contains_key(a) {
                return Err(SelectError::Both(a));
            }
        }
        let addrs = list("pod", IP_ADDRS_ANNOTATION, v)?
            .into_iter()
            .map(|s| s.parse::<IpAddr>().map_err(|_| SelectError::BadAddress(s)))
            .collect::<Result<Vec<_>, _>>()?;
        if !addrs.is_empty() {
            return Ok(PodSelection {
                addrs,
                ..Default::default()
            });
        }
    }
    let family = |annotation: &'static str, cni: &[String]| {
        if let Some(v) = pod_annotations.get(annotation) {
            list("pod", annotation, v)
        } else if let Some(v) = namespace_annotations.get(annotation) {
            list("namespace", annotation, v)
        } else {
            Ok(cni.to_vec())
        }
    };
    Ok(PodSelection {
        pools_v4: family(IPV4_POOLS_ANNOTATION, cni_pools_v4)?,
        pools_v6: family(IPV6_POOLS_ANNOTATION, cni_pools_v6)?,
        addrs: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn pod_beats_namespace_beats_cni_config_per_family() {
        let cni4 = s(&["cni-v4"]);
        let cni6 = s(&["cni-v6"]);
        let none = BTreeMap::new();
        // Nothing annotated: the CNI config's pools.
        let got = pod_selection(&none, &none, &cni4, &cni6).unwrap();
        assert_eq!((got.pools_v4, got.pools_v6), (cni4.clone(), cni6.clone()));
        // Nothing anywhere: every eligible pool.
        let got = pod_selection(&none, &none, &[], &[]).unwrap();
        assert!(got.pools_v4.is_empty() && got.pools_v6.is_empty());
        // The namespace's annotation beats the config.
        let ns = ann(&[
            (IPV4_POOLS_ANNOTATION, r#"["ns-v4"]"#),
            (IPV6_POOLS_ANNOTATION, r#"["fd00:1::/64"]"#),
        ]);
        let got = pod_selection(&none, &ns, &cni4, &cni6).unwrap();
        assert_eq!(got.pools_v4, s(&["ns-v4"]));
        assert_eq!(got.pools_v6, s(&["fd00:1::/64"]));
        // The pod's beats the namespace's, for its family only.
        let pod = ann(&[(IPV4_POOLS_ANNOTATION, r#"["pod-v4", "10.9.0.0/16"]"#)]);
        let got = pod_selection(&pod, &ns, &cni4, &cni6).unwrap();
        assert_eq!(got.pools_v4, s(&["pod-v4", "10.9.0.0/16"]));
        assert_eq!(got.pools_v6, s(&["fd00:1::/64"]));
        assert!(got.addrs.is_empty());
    }

    #[test]
    fn ip_addrs_ask_for_exact_addresses() {
        let pod = ann(&[(IP_ADDRS_ANNOTATION, r#"["10.65.0.10", "fd00::10"]"#)]);
        let got = pod_selection(&pod, &BTreeMap::new(), &s(&["x"]), &[]).unwrap();
        assert_eq!(
            got.addrs,
            vec![
                "10.65.0.10".parse::<IpAddr>().unwrap(),
                "fd00::10".parse().unwrap()
            ]
        );
        assert!(got.pools_v4.is_empty());
    }

    #[test]
    fn bad_annotations_say_which_and_how_to_fix() {
        let none = BTreeMap::new();
        let e =
            pod_selection(&ann(&[(IPV4_POOLS_ANNOTATION, "pool-a")]), &none, &[], &[]).unwrap_err();
        assert!(matches!(e, SelectError::NotAList { on: "pod", .. }), "{e}");
        assert!(e.to_string().contains(IPV4_POOLS_ANNOTATION), "{e}");
        let e = pod_selection(&none, &ann(&[(IPV6_POOLS_ANNOTATION, "{}")]), &[], &[]).unwrap_err();
        assert!(e.to_string().starts_with("namespace annotation"), "{e}");
        let e = pod_selection(
            &ann(&[(IP_ADDRS_ANNOTATION, r#"["10.65.0.300"]"#)]),
            &none,
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(e, SelectError::BadAddress("10.65.0.300".into()));
        let e = pod_selection(
            &ann(&[
                (IP_ADDRS_ANNOTATION, r#"["10.65.0.1"]"#),
                (IPV4_POOLS_ANNOTATION, r#"["a"]"#),
            ]),
            &none,
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(e, SelectError::Both(IPV4_POOLS_ANNOTATION));
    }
}
