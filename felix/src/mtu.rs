//! MTU: the underlay's, read from the interface that holds the node's
//! address, and the pod MTU derived from it ([`crate::calc::pod_mtu`]),
//! written to a file the CNI plugin reads when it makes a pod's veth
//! (Calico writes `/var/lib/calico/mtu`; felix writes `<state dir>/mtu`
//! unless told otherwise).

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use rtnetlink::Handle;

use crate::tunnel::link;

/// The default state directory (Calico's).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/calico";

/// The MTU file's name inside the state directory.
pub const MTU_FILE: &str = "mtu";

/// The underlay interface and its MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    pub ifindex: u32,
    pub name: String,
    pub mtu: u32,
}

/// Finds the interface holding `node_ip` and reads its MTU; `None` if no
/// interface holds it (yet).
pub async fn detect(nl: &Handle, node_ip: Ipv4Addr) -> Result<Option<Underlay>, rtnetlink::Error> {
    Ok(link::holding_address(nl, node_ip).await?.and_then(|l| {
        l.mtu.map(|mtu| Underlay {
            ifindex: l.index,
            name: l.name,
            mtu,
        })
    }))
}

/// Reads the pod MTU the file holds, if any.
pub fn read_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Writes `mtu` (as decimal text with a newline) unless the file already
/// says so; atomically (temporary file, then rename), so the CNI plugin
/// never reads a half-written number. Returns whether it wrote.
pub fn write_file(path: &Path, mtu: u32) -> io::Result<bool> {
    if read_file(path) == Some(mtu) {
        return Ok(false);
    }
    proto::daemon::write_durably(path, format!("{mtu}\n").as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_written_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join(MTU_FILE);
        assert_eq!(read_file(&p), None);
        assert!(write_file(&p, 1480).unwrap());
        assert!(!write_file(&p, 1480).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "1480\n");
        assert!(write_file(&p, 1500).unwrap());
        assert_eq!(read_file(&p), Some(1500));
    }
}
