//! Per-interface sysctls. `/proc/sys/net` shows the namespace of the thread
//! that opens it.

use std::io;
use std::path::PathBuf;

/// One `net.*` sysctl write, e.g. `("ipv4/conf/cali123/proxy_arp", "1")`.
pub(crate) fn write(key: &str, value: &str) -> Result<(), (String, io::Error)> {
    let path = PathBuf::from("/proc/sys/net").join(key);
    std::fs::write(&path, value).map_err(|e| (format!("net/{key}"), e))
}

/// The host side of a pod's veth (Calico's settings).
pub(crate) fn host_side(iface: &str, v4: bool, v6: bool) -> Result<(), (String, io::Error)> {
    if v4 {
        // The host's 127.0.0.0/8 stays unroutable from the pod: services
        // bound to the node's loopback are not the pod's to reach
        // (CVE-2020-8558's class). Written, not left to the default, so a
        // node whose defaults say otherwise is still safe.
        write(&format!("ipv4/conf/{iface}/route_localnet"), "0")?;
        // Strict reverse-path filtering: a packet from the pod must come
        // from an address the node routes back through this interface, so
        // a pod cannot send with a neighbour's (or any other) source
        // address.
        write(&format!("ipv4/conf/{iface}/rp_filter"), "1")?;
        // Answer ARP for the pod's fake gateway at once, not after the
        // default random delay.
        write(&format!("ipv4/neigh/{iface}/proxy_delay"), "0")?;
        // The host answers every ARP request from the pod with its own MAC,
        // so 169.254.1.1 needs no address anywhere.
        write(&format!("ipv4/conf/{iface}/proxy_arp"), "1")?;
        write(&format!("ipv4/conf/{iface}/forwarding"), "1")?;
    }
    if v6 {
        write(&format!("ipv6/conf/{iface}/disable_ipv6"), "0")?;
        // A point-to-point link needs no duplicate address detection, which
        // would hold the link-local gateway address for a second.
        write(&format!("ipv6/conf/{iface}/accept_dad"), "0")?;
        write(&format!("ipv6/conf/{iface}/proxy_ndp"), "1")?;
        write(&format!("ipv6/conf/{iface}/accept_ra"), "0")?;
        write(&format!("ipv6/conf/{iface}/forwarding"), "1")?;
    }
    Ok(())
}

/// The pod side, for IPv6: enabled, and no DAD on the pod's address.
pub(crate) fn pod_side_v6(iface: &str) -> Result<(), (String, io::Error)> {
    write("ipv6/conf/all/disable_ipv6", "0")?;
    write("ipv6/conf/default/disable_ipv6", "0")?;
    write(&format!("ipv6/conf/{iface}/disable_ipv6"), "0")?;
    write(&format!("ipv6/conf/{iface}/accept_dad"), "0")?;
    Ok(())
}

/// The host-wide forwarding switches. IPv6 may be absent from the kernel;
/// then there is nothing to forward for it either.
pub(crate) fn global_forwarding() -> Result<(), (String, io::Error)> {
    write("ipv4/ip_forward", "1")?;
    match write("ipv6/conf/all/forwarding", "1") {
        Err((_, e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
