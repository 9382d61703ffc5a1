//! The kernel backend: the `ipip` link `tunl0`. The kernel does all the
//! packet work; felix only creates or adopts the device (loading the
//! `ipip` module creates a catch-all `tunl0` in every namespace, which is
//! the device Calico uses too).

use std::net::Ipv4Addr;

use netlink_packet_route::link::InfoKind;
use rtnetlink::Handle;

use super::link::{self, errno};
use super::{BackendKind, PeerTable, TunnelBackend, TunnelError, TunnelStats};

#[derive(Debug)]
pub struct KernelTunnel {
    name: String,
    /// The IP-in-IP filter's writer ([`super::filter::spawn_writer`]): the
    /// nodes IP-in-IP is admitted from.
    filter: tokio::sync::watch::Sender<Option<std::collections::BTreeSet<Ipv4Addr>>>,
}

/// Whether a failed `RTM_NEWLINK` of kind ipip means "this kernel has no
/// ipip": `EOPNOTSUPP` is what `ip` prints as "Unknown device type"
/// (no such link kind, even after trying to load its module).
pub(crate) fn is_unsupported(e: &rtnetlink::Error) -> bool {
    matches!(errno(e), Some(libc::EOPNOTSUPP))
}

/// Whether this kernel's `ipip` module is installed (listed in
/// `/lib/modules/RELEASE/modules.dep`) but not loaded: an "unknown device
/// type" then means the module failed to load, not that it is missing.
/// Its load fails when any network namespace already has a device named
/// `tunl0` (its catch-all device cannot be made there) -- a userspace
/// tunnel in another namespace sharing the kernel, for instance.
fn ipip_module_installed() -> bool {
    if std::path::Path::new("/sys/module/ipip").exists() {
        return false;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    std::fs::read_to_string(format!("/lib/modules/{}/modules.dep", release.trim()))
        .is_ok_and(|deps| lists_ipip(&deps))
}

/// Whether a `modules.dep` text lists the ipip module (`.../ipip.ko`,
/// possibly compressed).
fn lists_ipip(deps: &str) -> bool {
    deps.lines().any(|l| {
        let module = l.split(':').next().unwrap_or("");
        let file = module.rsplit('/').next().unwrap_or("");
        file == "ipip.ko" || file.starts_with("ipip.ko.")
    })
}

impl KernelTunnel {
    pub async fn open(nl: &Handle, name: &str) -> Result<KernelTunnel, TunnelError> {
        let look = |step| {
            let name = name.to_string();
            move |source| TunnelError::Netlink { name, step, source }
        };
        if let Some(l) = link::by_name(nl, name)
            .await
            .map_err(look("look up the device"))?
        {
            return adopt(name, &l);
        }
        match link::add_ipip(nl, name).await {
            Ok(()) => {}
            Err(e) if is_unsupported(&e) && ipip_module_installed() => {
                return Err(TunnelError::KernelModuleBlocked(e));
            }
            Err(e) if is_unsupported(&e) => return Err(TunnelError::KernelUnsupported(e)),
            // Loading the module made the catch-all `tunl0` first.
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(TunnelError::Netlink {
                    name: name.to_string(),
                    step: "create the ipip device",
                    source,
                });
            }
        }
        let l = link::by_name(nl, name)
            .await
            .map_err(look("look up the new device"))?
            .ok_or_else(|| TunnelError::Vanished(name.to_string()))?;
        adopt(name, &l)
    }
}

fn adopt(name: &str, l: &link::LinkState) -> Result<KernelTunnel, TunnelError> {
    if l.kind == Some(InfoKind::IpIp) {
        return Ok(KernelTunnel {
            name: name.to_string(),
            filter: super::filter::spawn_writer(),
        });
    }
    Err(TunnelError::NameTaken {
        name: name.to_string(),
        kind: l
            .kind
            .as_ref()
            .map_or_else(|| "plain".to_string(), |k| format!("{k:?}").to_lowercase()),
    })
}

impl TunnelBackend for KernelTunnel {
    fn kind(&self) -> BackendKind {
        BackendKind::Kernel
    }

    fn name(&self) -> &str {
        &self.name
    }

    /// Admits IP-in-IP from these nodes only: the kernel decapsulates
    /// what reaches it, so the filter sits in front ([`super::filter`]).
    fn set_peers(&self, peers: PeerTable) {
        self.filter.send_replace(Some(peers.nodes()));
    }

    fn set_source(&self, _addr: Option<Ipv4Addr>) {}

    /// The device's own counters, from `/proc/thread-self/net/dev` (the
    /// calling thread's namespace, which is felix's; `/sys/class/net`
    /// would show whichever namespace `/sys` was mounted in). A device
    /// that is gone, or a file that cannot be read, counts zero.
    fn stats(&self) -> TunnelStats {
        device_stats(&self.name)
    }
}

pub(super) fn device_stats(name: &str) -> TunnelStats {
    std::fs::read_to_string("/proc/thread-self/net/dev")
        .ok()
        .and_then(|t| proc_net_dev(&t, name))
        .unwrap_or_default()
}

/// `name`'s line of `/proc/net/dev`: `name: rx_bytes rx_packets rx_errs
/// rx_drop fifo frame compressed multicast tx_bytes tx_packets tx_errs ...`.
fn proc_net_dev(text: &str, name: &str) -> Option<TunnelStats> {
    let line = text.lines().find_map(|l| {
        let (dev, rest) = l.split_once(':')?;
        (dev.trim() == name).then_some(rest)
    })?;
    let n: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    if n.len() < 11 {
        return None;
    }
    Some(TunnelStats {
        rx_bytes: n[0],
        rx_packets: n[1],
        rx_errors: n[2],
        tx_bytes: n[8],
        tx_packets: n[9],
        tx_errors: n[10],
        ..TunnelStats::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_dep_lists_ipip_by_its_file_name_compressed_or_not() {
        let deps = "kernel/net/ipv4/ip_tunnel.ko.xz:\nkernel/net/ipv4/ipip.ko.xz: kernel/net/ipv4/tunnel4.ko.xz kernel/net/ipv4/ip_tunnel.ko.xz\n";
        assert!(lists_ipip(deps));
        assert!(lists_ipip("kernel/net/ipv4/ipip.ko: x.ko\n"));
        // Another module that only depends on a name like it.
        assert!(!lists_ipip(
            "kernel/net/ipv4/ip_tunnel.ko:\nkernel/net/ipv6/sit.ko: kernel/net/ipv4/ipip.ko\n"
        ));
        assert!(!lists_ipip("kernel/net/ipv4/ipipx.ko:\n"));
    }

    #[test]
    fn counters_come_from_the_devices_line_of_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
 tunl0: 5000000    4000    1    0    0     0          0         0  6000000     300    2    0    0     0       0          0
";
        let s = proc_net_dev(text, "tunl0").unwrap();
        assert_eq!(
            (s.rx_bytes, s.rx_packets, s.rx_errors),
            (5_000_000, 4000, 1)
        );
        assert_eq!((s.tx_bytes, s.tx_packets, s.tx_errors), (6_000_000, 300, 2));
        assert!(proc_net_dev(text, "tunl").is_none());
        assert!(proc_net_dev("tunl0: 1 2\n", "tunl0").is_none());
    }
}
