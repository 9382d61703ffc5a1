//! felix's memory of the pods it wired, on disk, so a restarted felix
//! re-adopts them instead of treating their routes as stale.
//!
//! One small JSON file per container under `<state dir>/workloads/`,
//! written atomically (temporary file, then rename) when a CNI ADD
//! succeeds and removed on DEL. A record that cannot be read is reported
//! and skipped; it never stops felix from starting.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::workload::Workload;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    pub container_id: String,
    pub namespace: String,
    pub pod: String,
    pub netns: PathBuf,
    pub host_iface: String,
    pub container_iface: String,
    pub container_mac: String,
    pub ips: Vec<IpAddr>,
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(s: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(s.split(':')) {
        *o = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    out
}

impl WorkloadRecord {
    pub fn new(container_id: &str, w: &Workload) -> Self {
        WorkloadRecord {
            container_id: container_id.to_string(),
            namespace: w.namespace.clone(),
            pod: w.pod.clone(),
            netns: w.netns.clone(),
            host_iface: w.host_iface.clone(),
            container_iface: w.container_iface.clone(),
            container_mac: mac_string(w.container_mac),
            ips: w.ips.clone(),
        }
    }

    /// The workload as [`crate::workload::PodInterfaces::restore`] takes it
    /// (the interface index is looked up again).
    pub fn workload(&self) -> Workload {
        Workload {
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            netns: self.netns.clone(),
            host_iface: self.host_iface.clone(),
            host_ifindex: 0,
            container_iface: self.container_iface.clone(),
            container_mac: parse_mac(&self.container_mac),
            ips: self.ips.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkloadStore {
    dir: PathBuf,
}

fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && id != "."
        && id != ".."
}

impl WorkloadStore {
    pub fn open(state_dir: &Path) -> std::io::Result<WorkloadStore> {
        let dir = state_dir.join("workloads");
        std::fs::create_dir_all(&dir)?;
        Ok(WorkloadStore { dir })
    }

    fn path(&self, container_id: &str) -> Option<PathBuf> {
        safe_id(container_id).then(|| self.dir.join(format!("{container_id}.json")))
    }

    pub fn save(&self, rec: &WorkloadRecord) -> std::io::Result<()> {
        let path = self.path(&rec.container_id).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad container id")
        })?;
        // Durable: a pod whose ADD returned must be re-adopted after a
        // crash or a power loss, not dropped.
        proto::daemon::write_durably(
            &path,
            &serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?,
        )
    }

    pub fn load(&self, container_id: &str) -> Option<WorkloadRecord> {
        let path = self.path(container_id)?;
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable workload record");
                None
            }
        }
    }

    pub fn remove(&self, container_id: &str) -> std::io::Result<()> {
        match self.path(container_id) {
            Some(p) => match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    pub fn list(&self) -> Vec<WorkloadRecord> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<WorkloadRecord> = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".json")?;
                self.load(id)
            })
            .collect();
        out.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        out
    }

    /// The records of pod `namespace/pod`'s other sandboxes than
    /// `container_id`.
    pub fn other_sandboxes(
        &self,
        container_id: &str,
        namespace: &str,
        pod: &str,
    ) -> Vec<WorkloadRecord> {
        self.list()
            .into_iter()
            .filter(|rec| {
                rec.container_id != container_id && rec.namespace == namespace && rec.pod == pod
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> WorkloadRecord {
        WorkloadRecord {
            container_id: id.into(),
            namespace: "default".into(),
            pod: "web-0".into(),
            netns: "/run/netns/x".into(),
            host_iface: "cali0123456789a".into(),
            container_iface: "eth0".into(),
            container_mac: "0a:58:0a:41:00:05".into(),
            ips: vec!["10.65.0.5".parse().unwrap()],
        }
    }

    #[test]
    fn records_round_trip_and_unsafe_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = WorkloadStore::open(dir.path()).unwrap();
        s.save(&rec("abc123")).unwrap();
        assert_eq!(s.load("abc123"), Some(rec("abc123")));
        assert_eq!(s.list(), vec![rec("abc123")]);
        assert_eq!(
            s.load("abc123").unwrap().workload().container_mac,
            [0x0a, 0x58, 0x0a, 0x41, 0, 5]
        );
        assert!(s.save(&rec("../escape")).is_err());
        assert_eq!(s.load("../escape"), None);
        s.remove("abc123").unwrap();
        s.remove("abc123").unwrap();
        assert!(s.list().is_empty());
    }

    #[test]
    fn a_corrupt_record_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = WorkloadStore::open(dir.path()).unwrap();
        s.save(&rec("good")).unwrap();
        std::fs::write(dir.path().join("workloads/bad.json"), b"{garbage").unwrap();
        assert_eq!(s.list(), vec![rec("good")]);
    }
}
