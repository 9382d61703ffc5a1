//! Network policy truth tables (`felix/tests/policy_truth/*.yaml`), read:
//! the world (namespaces, labelled pods, outside hosts, probes), the
//! scenarios (policies as a user writes them and the full expected
//! allow/deny matrix). The data is shared by felix's evaluator and kernel
//! checks and by the lab's multi-node suite; each turns it into its own
//! model (felix's policy types, or pods and policies in a real lab).
//!
//! Policies name pod addresses as `{{namespace/pod}}` (a world's pods
//! have fixed addresses in felix's checks but IPAM-assigned ones in a
//! lab); [`Scenario::policies_for`] fills them in.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("scenario {scenario}: {reason}")]
    Scenario { scenario: String, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruthFile {
    pub world: World,
    pub scenarios: Vec<Scenario>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone)]
#[serde(deny_unknown_fields)]
pub struct World {
    /// Namespace name → labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// `namespace/name` → pod.
    pub pods: BTreeMap<String, Pod>,
    /// Name → address of something outside the cluster.
    #[serde(default)]
    pub hosts: BTreeMap<String, IpAddr>,
    pub probes: Vec<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    /// The pod's address where the world fixes it (felix's single-node
    /// checks); a lab's IPAM picks its own.
    pub ip: IpAddr,
    /// The lab node the pod runs on (the multi-node suite places pods so
    /// that pairs cross every path: same node, same subnet, IP-in-IP).
    #[serde(default)]
    pub node: usize,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Name → `TCP/80`.
    #[serde(default)]
    pub ports: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub why: String,
    #[serde(default)]
    pub probes: Option<Vec<String>>,
    pub policies: String,
    pub expect: String,
    /// Label changes made while the policies stay, each with the matrix
    /// that holds after it (the Kubernetes e2e "updated pod / namespace"
    /// cases).
    #[serde(default)]
    pub then: Vec<Relabel>,
}

/// Labels replaced while a scenario's policies are in force.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Relabel {
    /// Pod (`namespace/name`) → all its labels from now on.
    #[serde(default)]
    pub pods: BTreeMap<String, BTreeMap<String, String>>,
    /// Namespace → all its labels from now on.
    #[serde(default)]
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub expect: String,
}

/// One matrix of a scenario: the world it holds in and its text.
#[derive(Debug, Clone)]
pub struct Step {
    /// The scenario's name, and `then[i]` for a relabel step.
    pub name: String,
    /// Which relabel brought the world here (None: the world as given).
    pub relabel: Option<Relabel>,
    pub world: World,
    pub expect: String,
}

/// What a probe sends, as the files write it (`tcp/80`, `udp/53`,
/// `icmp`, `icmp/0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeSpec {
    Tcp(u16),
    Udp(u16),
    /// ICMP of this type (8: an echo request).
    Icmp(u8),
}

impl ProbeSpec {
    pub fn parse(text: &str) -> Result<ProbeSpec, String> {
        let (kind, arg) = text.split_once('/').unwrap_or((text, ""));
        let bad = || format!("unknown probe {text:?}; use tcp/N, udp/N, icmp or icmp/TYPE");
        match kind {
            "tcp" => arg.parse().map(ProbeSpec::Tcp).map_err(|_| bad()),
            "udp" => arg.parse().map(ProbeSpec::Udp).map_err(|_| bad()),
            "icmp" if arg.is_empty() => Ok(ProbeSpec::Icmp(8)),
            "icmp" => arg.parse().map(ProbeSpec::Icmp).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    /// Its letter in a matrix cell.
    pub fn letter(self) -> char {
        match self {
            ProbeSpec::Tcp(_) => 'T',
            ProbeSpec::Udp(_) => 'U',
            ProbeSpec::Icmp(_) => 'I',
        }
    }
}

/// Every `*.yaml` truth file in `dir`, by file name, sorted.
pub fn load_all(dir: &Path) -> Result<Vec<(String, TruthFile)>, TruthError> {
    let read = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TruthError::Read { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&p).map_err(read(&p))?;
            let file = serde_yaml_ng::from_str(&text)
                .map_err(|source| TruthError::Parse { path: p, source })?;
            Ok((name, file))
        })
        .collect()
}

impl Scenario {
    fn error(&self, reason: String) -> TruthError {
        TruthError::Scenario {
            scenario: self.name.clone(),
            reason,
        }
    }

    /// The probes of this scenario (its own, or the world's).
    pub fn probes(&self, world: &World) -> Result<Vec<ProbeSpec>, TruthError> {
        self.probes
            .as_ref()
            .unwrap_or(&world.probes)
            .iter()
            .map(|p| ProbeSpec::parse(p).map_err(|e| self.error(e)))
            .collect()
    }

    /// The policies with every `{{namespace/pod}}` replaced by that pod's
    /// address (`address` knows them).
    pub fn policies_for(
        &self,
        address: impl Fn(&str) -> Option<IpAddr>,
    ) -> Result<String, TruthError> {
        let mut out = String::new();
        let mut rest = self.policies.as_str();
        while let Some(at) = rest.find("{{") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| self.error("a `{{` without its `}}`".into()))?;
            let id = after[..end].trim();
            let ip = address(id)
                .ok_or_else(|| self.error(format!("{{{{{id}}}}} names no pod of the world")))?;
            out.push_str(&ip.to_string());
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The scenario's matrices in order: its own, then one per relabel
    /// (each relabel applied on top of the ones before).
    pub fn steps(&self, world: &World) -> Result<Vec<Step>, TruthError> {
        let mut out = vec![Step {
            name: self.name.clone(),
            relabel: None,
            world: world.clone(),
            expect: self.expect.clone(),
        }];
        let mut w = world.clone();
        for (i, r) in self.then.iter().enumerate() {
            for (id, labels) in &r.pods {
                let pod = w
                    .pods
                    .get_mut(id)
                    .ok_or_else(|| self.error(format!("then[{i}]: no pod {id}")))?;
                pod.labels = labels.clone();
            }
            for (ns, labels) in &r.namespaces {
                let l = w
                    .namespaces
                    .get_mut(ns)
                    .ok_or_else(|| self.error(format!("then[{i}]: no namespace {ns}")))?;
                *l = labels.clone();
            }
            out.push(Step {
                name: format!("{} then[{i}]", self.name),
                relabel: Some(r.clone()),
                world: w.clone(),
                expect: r.expect.clone(),
            });
        }
        Ok(out)
    }

    /// The scenario's own expected matrix, checked for shape.
    pub fn expected(
        &self,
        world: &World,
        probes: usize,
    ) -> Result<BTreeMap<(String, String), String>, TruthError> {
        self.matrix(&self.expect, world, probes)
    }

    /// A matrix of this scenario, checked for shape: (src, dst) → cell,
    /// one character per probe (its letter: allowed, `.`: denied; `x` on
    /// the diagonal).
    pub fn matrix(
        &self,
        text: &str,
        world: &World,
        probes: usize,
    ) -> Result<BTreeMap<(String, String), String>, TruthError> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines
            .next()
            .ok_or_else(|| self.error("empty matrix".into()))?
            .split_whitespace()
            .collect();
        let mut ids: Vec<&str> = world.pods.keys().map(String::as_str).collect();
        ids.extend(world.hosts.keys().map(String::as_str));
        let mut sorted = header.clone();
        sorted.sort_unstable();
        ids.sort_unstable();
        if sorted != ids {
            return Err(self.error(format!(
                "header {header:?} must name every pod and host once: {ids:?}"
            )));
        }
        let mut cells = BTreeMap::new();
        let mut rows = Vec::new();
        for line in lines {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some((src, row)) = fields.split_first() else {
                continue;
            };
            if row.len() != header.len() {
                return Err(self.error(format!(
                    "row {src}: {} cells, want {}",
                    row.len(),
                    header.len()
                )));
            }
            rows.push(*src);
            for (dst, cell) in header.iter().zip(row) {
                let diagonal = src == dst;
                if diagonal != (*cell == "x") {
                    return Err(
                        self.error(format!("{src} -> {dst}: `x` marks exactly the diagonal"))
                    );
                }
                if !diagonal && cell.chars().count() != probes {
                    return Err(self.error(format!(
                        "{src} -> {dst}: {cell:?} is not {probes} probe results"
                    )));
                }
                cells.insert((src.to_string(), dst.to_string()), cell.to_string());
            }
        }
        rows.sort_unstable();
        if rows != ids {
            return Err(self.error(format!("rows {rows:?} must name every pod and host once")));
        }
        Ok(cells)
    }
}

impl World {
    /// The world's own address of pod or host `id`.
    pub fn address(&self, id: &str) -> Option<IpAddr> {
        self.pods
            .get(id)
            .map(|p| p.ip)
            .or_else(|| self.hosts.get(id).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(policies: &str) -> Scenario {
        Scenario {
            name: "s".into(),
            why: String::new(),
            probes: None,
            policies: policies.into(),
            expect: String::new(),
            then: Vec::new(),
        }
    }

    #[test]
    fn relabel_steps_build_on_each_other_and_name_what_exists() {
        let world: World = serde_yaml_ng::from_str(
            "namespaces: {a: {env: x}}\n\
             pods: {a/p: {ip: 10.65.0.1, labels: {app: p}}}\n\
             probes: [icmp]\n",
        )
        .unwrap();
        let mut s = scenario("");
        s.expect = "m0".into();
        s.then = serde_yaml_ng::from_str(
            "- {pods: {a/p: {app: q}}, expect: m1}\n\
             - {namespaces: {a: {}}, expect: m2}\n",
        )
        .unwrap();
        let steps = s.steps(&world).unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].world, world);
        assert_eq!(steps[1].world.pods["a/p"].labels["app"], "q");
        assert_eq!(steps[2].world.pods["a/p"].labels["app"], "q");
        assert!(steps[2].world.namespaces["a"].is_empty());
        assert_eq!(steps[2].expect, "m2");
        assert_eq!(steps[1].name, "s then[0]");
        s.then[0].pods.insert("a/none".into(), BTreeMap::new());
        assert!(s.steps(&world).is_err());
    }

    #[test]
    fn placeholders_become_addresses_and_unknown_ones_are_errors() {
        let addr = |id: &str| (id == "a/b").then(|| IpAddr::from([10, 65, 0, 1]));
        let s = scenario("cidr: \"{{a/b}}/32\", again {{ a/b }}");
        assert_eq!(
            s.policies_for(addr).unwrap(),
            "cidr: \"10.65.0.1/32\", again 10.65.0.1"
        );
        let e = scenario("{{a/c}}").policies_for(addr).unwrap_err();
        assert!(e.to_string().contains("{{a/c}} names no pod"), "{e}");
        assert!(scenario("{{a/b").policies_for(addr).is_err());
    }

    #[test]
    fn probes_parse_with_their_letters() {
        assert_eq!(ProbeSpec::parse("tcp/80"), Ok(ProbeSpec::Tcp(80)));
        assert_eq!(ProbeSpec::parse("icmp"), Ok(ProbeSpec::Icmp(8)));
        assert_eq!(ProbeSpec::parse("icmp/0"), Ok(ProbeSpec::Icmp(0)));
        assert_eq!(ProbeSpec::Udp(53).letter(), 'U');
        assert!(ProbeSpec::parse("sctp/1").is_err());
        assert!(ProbeSpec::parse("tcp/x").is_err());
    }
}
