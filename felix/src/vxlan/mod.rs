//! VXLAN with the kernel's own device, the way Calico does it: one VTEP
//! per node, `vxlan.calico` (VNI 4096, UDP 4789, `local` = the node's
//! underlay address, no learning, no multicast group), holding the node's
//! VXLAN tunnel address as a /32 and the node's VTEP MAC. Every other node
//! is known from the datastore (its tunnel address, MAC, underlay address
//! and affine blocks: a [`Vtep`]), and felix writes for each:
//!
//! ```text
//!   <block> via <vtep tunnel addr> dev vxlan.calico onlink   (the route, proto 80)
//!   <vtep tunnel addr> lladdr <vtep mac> nud permanent       (ARP, on vxlan.calico)
//!   <vtep mac> dst <node ip> self permanent                  (FDB, on vxlan.calico)
//! ```
//!
//! so the kernel never floods, learns or asks: the route picks the next
//! hop, the neighbour entry its MAC, the FDB entry the node to send the
//! UDP datagram to. Routes go through felix's route reconciler like every
//! other route ([`crate::calc`] computes them); this module holds the pure
//! decisions (which VTEPs are usable, whether an existing device must be
//! replaced, the neighbour and FDB differences) and, in [`device`], the
//! rtnetlink requests.
//!
//! Where the kernel has no `vxlan` link type, [`userspace`] is the same
//! VTEP in felix (`FELIX_VXLANBACKEND=auto|kernel|userspace`; auto takes
//! it only when creating the kernel device fails with "Unknown device
//! type"): a TUN device of the same name, address, MTU and routes, and a
//! UDP socket on the node's address, port 4789, speaking the kernel's wire
//! format, so kernel and userspace nodes talk. It keeps its VTEP table
//! itself instead of neighbour and FDB entries.
//!
//! IPv6 pools with `vxlanMode` get a second device, `vxlan-v6.calico`
//! (same VNI and port; `local` = the node's IPv6 address; the node's IPv6
//! VTEP address as a /128 and a MAC of its own), with IPv6 neighbour
//! entries, FDB entries whose `dst` is the other node's IPv6 address, and
//! routes `<v6 block> via <vtep v6 addr> dev vxlan-v6.calico onlink`. The
//! types and decisions here are generic over the address family
//! ([`VtepAddr`]; IPv4 is the default). IPv6 VXLAN has the kernel backend
//! only.

pub mod device;
pub mod userspace;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

pub use device::VxlanDevice;

/// Calico's VXLAN device name.
pub const DEVICE_NAME: &str = "vxlan.calico";

/// Calico's IPv6 VXLAN device name.
pub const DEVICE_NAME_V6: &str = "vxlan-v6.calico";

/// An address family VXLAN runs over: the VTEPs' underlay and tunnel
/// addresses are of one family.
pub trait VtepAddr:
    Copy + Ord + Eq + fmt::Debug + fmt::Display + Into<IpAddr> + Send + Sync + 'static
{
    /// The host prefix length (32 or 128).
    const HOST_PREFIX: u8;
    /// `Some` if `ip` is of this family.
    fn from_ip(ip: IpAddr) -> Option<Self>;
    /// A unicast address (not unspecified, loopback or multicast; for
    /// IPv4 not broadcast either).
    fn is_unicast(&self) -> bool;
}

impl VtepAddr for Ipv4Addr {
    const HOST_PREFIX: u8 = 32;
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
    fn is_unicast(&self) -> bool {
        valid_unicast(*self)
    }
}

impl VtepAddr for Ipv6Addr {
    const HOST_PREFIX: u8 = 128;
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
    fn is_unicast(&self) -> bool {
        !(self.is_unspecified() || self.is_loopback() || self.is_multicast())
    }
}

/// Calico's VNI.
pub const VNI: u32 = 4096;

/// The IANA VXLAN port, Calico's default.
pub const PORT: u16 = 4789;

/// This node's VTEP: its VXLAN tunnel address (from IPAM) and MAC (stored
/// on the Node resource, `spec.vxlanTunnelMACAddr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanLocal<A = Ipv4Addr> {
    pub tunnel_addr: A,
    pub mac: [u8; 6],
}

/// Another node's VTEP and the blocks affine to that node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vtep<A = Ipv4Addr> {
    pub node: String,
    /// The node's underlay address (where its VXLAN datagrams go).
    pub node_ip: A,
    pub tunnel_addr: A,
    pub mac: [u8; 6],
    pub blocks: Vec<IpNetwork>,
}

/// A MAC address as `ip` prints it.
pub struct Mac<'a>(pub &'a [u8; 6]);

impl fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Whether `mac` can be a VTEP's: not all zero, not multicast.
pub fn valid_mac(mac: &[u8; 6]) -> bool {
    *mac != [0; 6] && mac[0] & 1 == 0
}

/// Whether `ip` can be a VTEP's underlay or tunnel address: a unicast
/// address (not unspecified, loopback, multicast or broadcast).
pub fn valid_unicast(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast())
}

/// Why a VTEP is not programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub node: String,
    pub reason: String,
}

/// The VTEPs felix programs, by node name: not this node's (by underlay
/// or tunnel address), with unicast addresses and a usable MAC, and, where two claim the same
/// node name, MAC or tunnel address (one VTEP would overwrite the other's
/// entries), only the first by node name. The rest are returned with the
/// reason, to be logged.
pub fn usable<A: VtepAddr>(
    vteps: &[Vtep<A>],
    own_ip: Option<A>,
    own_tunnel: Option<A>,
) -> (Vec<&Vtep<A>>, Vec<Skipped>) {
    let mut sorted: Vec<&Vtep<A>> = vteps.iter().collect();
    sorted.sort_by(|a, b| a.node.cmp(&b.node));
    let mut out: Vec<&Vtep<A>> = Vec::with_capacity(sorted.len());
    let mut skipped = Vec::new();
    // Who holds each name, MAC and tunnel address already.
    let mut names: BTreeMap<&str, A> = BTreeMap::new();
    let mut macs: BTreeMap<[u8; 6], &str> = BTreeMap::new();
    let mut tunnels: BTreeMap<A, &str> = BTreeMap::new();
    for v in sorted {
        let reason = if Some(v.node_ip) == own_ip || Some(v.tunnel_addr) == own_tunnel {
            Some("it is this node's own VTEP".to_string())
        } else if !v.node_ip.is_unicast() || !v.tunnel_addr.is_unicast() {
            Some(format!(
                "node address {} or tunnel address {} is not a unicast address",
                v.node_ip, v.tunnel_addr
            ))
        } else if !valid_mac(&v.mac) {
            Some(format!("MAC {} is zero or multicast", Mac(&v.mac)))
        } else if let Some(ip) = names.get(v.node.as_str()) {
            Some(format!("node listed twice (first: {ip})"))
        } else if let Some(o) = macs.get(&v.mac) {
            Some(format!("MAC {} is also node {o}'s", Mac(&v.mac)))
        } else {
            tunnels
                .get(&v.tunnel_addr)
                .map(|o| format!("tunnel address {} is also node {o}'s", v.tunnel_addr))
        };
        match reason {
            Some(reason) => skipped.push(Skipped {
                node: v.node.clone(),
                reason,
            }),
            None => {
                names.insert(&v.node, v.node_ip);
                macs.insert(v.mac, &v.node);
                tunnels.insert(v.tunnel_addr, &v.node);
                out.push(v);
            }
        }
    }
    (out, skipped)
}

/// What `vxlan.calico` must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSpec<A = Ipv4Addr> {
    pub vni: u32,
    pub port: u16,
    /// This node's underlay address.
    pub local: A,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// The tunnel address, the device's only address of its family (a
    /// host prefix).
    pub addr: A,
}

/// The creation-time parameters of an existing VXLAN device, as the kernel
/// reports them (`None`: not reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceParams<A = IpAddr> {
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<A>,
    pub learning: Option<bool>,
    /// A multicast group or default remote is set.
    pub group: Option<A>,
}

impl<A> Default for DeviceParams<A> {
    fn default() -> Self {
        DeviceParams {
            vni: None,
            port: None,
            local: None,
            learning: None,
            group: None,
        }
    }
}

/// Why an existing device cannot be adopted and must be replaced (its
/// VNI, port, local address, learning or group cannot be what felix
/// wants); `None` if it can be adopted. MAC, MTU, address and up are set
/// on the existing device instead.
pub fn replace_reason<A: VtepAddr>(have: &DeviceParams, want: &DeviceSpec<A>) -> Option<String> {
    if have.vni != Some(want.vni) {
        return Some(format!("VNI {:?}, want {}", have.vni, want.vni));
    }
    if have.port != Some(want.port) {
        return Some(format!("port {:?}, want {}", have.port, want.port));
    }
    if have.local != Some(want.local.into()) {
        return Some(format!("local {:?}, want {}", have.local, want.local));
    }
    if have.learning != Some(false) {
        return Some("learning is on".into());
    }
    if let Some(g) = have.group.filter(|g| !g.is_unspecified()) {
        return Some(format!("group/remote {g} is set"));
    }
    None
}

/// A neighbour (ARP) entry on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighEntry<A = Ipv4Addr> {
    pub ip: A,
    pub mac: Option<[u8; 6]>,
    pub permanent: bool,
}

/// An FDB entry on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry<A = Ipv4Addr> {
    pub mac: [u8; 6],
    pub dst: Option<A>,
    pub permanent: bool,
}

/// One neighbour or FDB change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryOp<A = Ipv4Addr> {
    /// `ip neigh replace <ip> lladdr <mac> nud permanent dev vxlan.calico`
    SetNeigh(A, [u8; 6]),
    DelNeigh(A),
    /// `bridge fdb replace <mac> dst <ip> self permanent dev vxlan.calico`
    SetFdb([u8; 6], A),
    DelFdb([u8; 6], Option<A>),
}

/// The neighbour entries (tunnel address → MAC) and FDB entries (MAC →
/// underlay address) wanted on a device.
pub type Wanted<A> = (BTreeMap<A, [u8; 6]>, BTreeMap<[u8; 6], A>);

/// The wanted neighbour and FDB entries of `vteps`.
pub fn wanted<A: VtepAddr>(vteps: &[&Vtep<A>]) -> Wanted<A> {
    let neigh = vteps.iter().map(|v| (v.tunnel_addr, v.mac)).collect();
    let fdb = vteps.iter().map(|v| (v.mac, v.node_ip)).collect();
    (neigh, fdb)
}

/// The changes that turn the device's entries into the wanted ones:
/// deletions first (so a MAC moving between tunnel addresses is never
/// in two places), then additions. Permanent entries are felix's (nothing
/// else writes permanent entries on felix's device) and are removed when
/// not wanted; other entries (the kernel's own, e.g. a failed ARP
/// attempt) are only replaced when their address is wanted.
pub fn entry_ops<A: VtepAddr>(
    neigh_have: &[NeighEntry<A>],
    fdb_have: &[FdbEntry<A>],
    neigh_want: &BTreeMap<A, [u8; 6]>,
    fdb_want: &BTreeMap<[u8; 6], A>,
) -> Vec<EntryOp<A>> {
    let mut dels = Vec::new();
    let mut sets = Vec::new();
    for n in neigh_have {
        if n.permanent && !neigh_want.contains_key(&n.ip) {
            dels.push(EntryOp::DelNeigh(n.ip));
        }
    }
    let neigh_ok: BTreeSet<(A, [u8; 6])> = neigh_have
        .iter()
        .filter(|n| n.permanent)
        .filter_map(|n| n.mac.map(|m| (n.ip, m)))
        .collect();
    for (ip, mac) in neigh_want {
        if !neigh_ok.contains(&(*ip, *mac)) {
            sets.push(EntryOp::SetNeigh(*ip, *mac));
        }
    }
    for f in fdb_have.iter().filter(|f| f.permanent) {
        if fdb_want.get(&f.mac).copied() != f.dst {
            dels.push(EntryOp::DelFdb(f.mac, f.dst));
        }
    }
    let fdb_ok: BTreeSet<([u8; 6], A)> = fdb_have
        .iter()
        .filter(|f| f.permanent)
        .filter_map(|f| f.dst.map(|d| (f.mac, d)))
        .collect();
    for (mac, dst) in fdb_want {
        if !fdb_ok.contains(&(*mac, *dst)) {
            sets.push(EntryOp::SetFdb(*mac, *dst));
        }
    }
    dels.extend(sets);
    dels
}

#[derive(Debug, thiserror::Error)]
pub enum VxlanError {
    #[error(
        "the kernel has no vxlan link type ({0}); VXLAN pools need a kernel with the vxlan module (load it with `modprobe vxlan`), or set vxlanMode: Never"
    )]
    KernelUnsupported(rtnetlink::Error),
    #[error(
        "{name} exists but is a {kind} device, not VXLAN; delete it so felix can create its VXLAN device"
    )]
    NameTaken { name: String, kind: String },
    #[error("VXLAN device {name}: {step}: {source}")]
    Netlink {
        name: String,
        step: String,
        source: rtnetlink::Error,
    },
    #[error("VXLAN device {0} vanished after it was created")]
    Vanished(String),
    #[error(
        "userspace VXLAN device {name}: {step}: {source} (needs /dev/net/tun, CAP_NET_ADMIN and UDP port 4789 free on the node address)"
    )]
    Userspace {
        name: String,
        step: &'static str,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vtep(node: &str, last: u8) -> Vtep {
        Vtep {
            node: node.into(),
            node_ip: Ipv4Addr::new(172, 30, 0, last),
            tunnel_addr: Ipv4Addr::new(10, 65, last, 0),
            mac: [0x66, 0, 0, 0, 0, last],
            blocks: vec![format!("10.65.{last}.0/26").parse().unwrap()],
        }
    }

    #[test]
    fn macs_that_cannot_be_a_vteps_are_refused() {
        assert!(valid_mac(&[0x66, 1, 2, 3, 4, 5]));
        assert!(!valid_mac(&[0; 6]));
        assert!(!valid_mac(&[0x01, 0, 0x5e, 0, 0, 1]));
        assert_eq!(
            Mac(&[0x66, 0xab, 0, 1, 2, 0xff]).to_string(),
            "66:ab:00:01:02:ff"
        );
    }

    #[test]
    fn usable_vteps_drop_own_invalid_and_duplicates_first_name_wins() {
        let mut bad_mac = vtep("e", 5);
        bad_mac.mac = [0xff; 6];
        let mut dup_mac = vtep("c", 3);
        dup_mac.mac = vtep("b", 2).mac;
        let mut dup_tunnel = vtep("d", 4);
        dup_tunnel.tunnel_addr = vtep("b", 2).tunnel_addr;
        let own = vtep("a", 1);
        let mut zero_ip = vtep("g", 7);
        zero_ip.node_ip = Ipv4Addr::UNSPECIFIED;
        let mut mcast_tunnel = vtep("h", 8);
        mcast_tunnel.tunnel_addr = Ipv4Addr::new(224, 0, 0, 1);
        let vteps = vec![
            zero_ip,
            mcast_tunnel,
            vtep("b", 2),
            bad_mac,
            dup_tunnel,
            dup_mac,
            own.clone(),
            vtep("f", 6),
            vtep("b", 9),
        ];
        let (ok, skipped) = usable(&vteps, Some(own.node_ip), None);
        let names: Vec<&str> = ok.iter().map(|v| v.node.as_str()).collect();
        assert_eq!(names, vec!["b", "f"]);
        let why: Vec<(&str, &str)> = skipped
            .iter()
            .map(|s| (s.node.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(why.len(), 7, "{why:?}");
        assert!(why.iter().any(|(n, r)| *n == "g" && r.contains("0.0.0.0")));
        assert!(
            why.iter()
                .any(|(n, r)| *n == "h" && r.contains("224.0.0.1"))
        );
        assert!(why.iter().any(|(n, r)| *n == "a" && r.contains("own")));
        assert!(
            why.iter()
                .any(|(n, r)| *n == "c" && r.contains("also node b's"))
        );
        assert!(
            why.iter()
                .any(|(n, r)| *n == "d" && r.contains("tunnel address"))
        );
        assert!(
            why.iter()
                .any(|(n, r)| *n == "e" && r.contains("multicast"))
        );
        assert!(why.iter().any(|(n, r)| *n == "b" && r.contains("twice")));
        // Own tunnel address alone identifies this node too.
        let (ok, _) = usable(&vteps[..1], None, Some(vtep("b", 2).tunnel_addr));
        assert!(ok.is_empty());
    }

    fn spec() -> DeviceSpec {
        DeviceSpec {
            vni: VNI,
            port: PORT,
            local: Ipv4Addr::new(172, 30, 0, 1),
            mac: [0x66, 0, 0, 0, 0, 1],
            mtu: 1450,
            addr: Ipv4Addr::new(10, 65, 0, 0),
        }
    }

    #[test]
    fn a_device_with_other_creation_parameters_is_replaced() {
        let good = DeviceParams {
            vni: Some(VNI),
            port: Some(PORT),
            local: Some(Ipv4Addr::new(172, 30, 0, 1).into()),
            learning: Some(false),
            group: None,
        };
        assert_eq!(replace_reason(&good, &spec()), None);
        let unspecified_group = DeviceParams {
            group: Some(Ipv4Addr::UNSPECIFIED.into()),
            ..good
        };
        assert_eq!(replace_reason(&unspecified_group, &spec()), None);
        for bad in [
            DeviceParams {
                vni: Some(1),
                ..good
            },
            DeviceParams {
                port: Some(8472),
                ..good
            },
            DeviceParams {
                local: Some(Ipv4Addr::new(172, 30, 0, 9).into()),
                ..good
            },
            DeviceParams {
                local: None,
                ..good
            },
            DeviceParams {
                learning: Some(true),
                ..good
            },
            DeviceParams {
                group: Some(Ipv4Addr::new(239, 1, 1, 1).into()),
                ..good
            },
        ] {
            assert!(replace_reason(&bad, &spec()).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn entries_follow_the_vteps_and_leave_the_kernels_own_alone() {
        let b = vtep("b", 2);
        let c = vtep("c", 3);
        let (nw, fw) = wanted(&[&b, &c]);
        // Empty device: everything added.
        let ops = entry_ops(&[], &[], &nw, &fw);
        assert_eq!(ops.len(), 4);
        assert!(ops.contains(&EntryOp::SetNeigh(b.tunnel_addr, b.mac)));
        assert!(ops.contains(&EntryOp::SetFdb(c.mac, c.node_ip)));

        // In step: nothing to do; a kernel (non-permanent) entry for an
        // address nobody wants stays.
        let stray = Ipv4Addr::new(10, 65, 99, 0);
        let neigh: Vec<NeighEntry> = [&b, &c]
            .iter()
            .map(|v| NeighEntry {
                ip: v.tunnel_addr,
                mac: Some(v.mac),
                permanent: true,
            })
            .chain([NeighEntry {
                ip: stray,
                mac: None,
                permanent: false,
            }])
            .collect();
        let fdb: Vec<FdbEntry> = [&b, &c]
            .iter()
            .map(|v| FdbEntry {
                mac: v.mac,
                dst: Some(v.node_ip),
                permanent: true,
            })
            .collect();
        assert!(entry_ops(&neigh, &fdb, &nw, &fw).is_empty());

        // c leaves; b's MAC and node address change.
        let mut b2 = b.clone();
        b2.mac = [0x66, 0, 0, 0, 0, 0x22];
        b2.node_ip = Ipv4Addr::new(172, 30, 1, 2);
        let (nw2, fw2) = wanted(&[&b2]);
        let ops = entry_ops(&neigh, &fdb, &nw2, &fw2);
        assert_eq!(
            ops,
            vec![
                EntryOp::DelNeigh(c.tunnel_addr),
                EntryOp::DelFdb(b.mac, Some(b.node_ip)),
                EntryOp::DelFdb(c.mac, Some(c.node_ip)),
                EntryOp::SetNeigh(b2.tunnel_addr, b2.mac),
                EntryOp::SetFdb(b2.mac, b2.node_ip),
            ]
        );

        // Only the node address changes: the FDB entry is replaced.
        let mut b3 = b.clone();
        b3.node_ip = Ipv4Addr::new(172, 30, 1, 2);
        let (nw3, fw3) = wanted(&[&b3, &c]);
        let ops = entry_ops(&neigh, &fdb, &nw3, &fw3);
        assert_eq!(
            ops,
            vec![
                EntryOp::DelFdb(b.mac, Some(b.node_ip)),
                EntryOp::SetFdb(b.mac, b3.node_ip)
            ]
        );

        // A kernel entry for a wanted address is made permanent.
        let mut failed = neigh.clone();
        failed[0].permanent = false;
        failed[0].mac = None;
        assert_eq!(
            entry_ops(&failed, &fdb, &nw, &fw),
            vec![EntryOp::SetNeigh(b.tunnel_addr, b.mac)]
        );
        // No VTEPs at all: every permanent entry goes.
        let none = entry_ops(&neigh, &fdb, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(none.len(), 4, "{none:?}");
    }

    #[test]
    fn ipv6_vteps_and_devices_use_the_same_decisions() {
        let v = |node: &str, last: u16| Vtep::<Ipv6Addr> {
            node: node.into(),
            node_ip: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last),
            tunnel_addr: Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, last),
            mac: [0x66, 0, 0, 0, 6, last as u8],
            blocks: vec![format!("fd00:65::{last:x}00/122").parse().unwrap()],
        };
        let mut mcast = v("c", 3);
        mcast.node_ip = "ff02::1".parse().unwrap();
        let vteps = vec![v("a", 1), v("b", 2), mcast];
        let (ok, skipped) = usable(&vteps, Some(v("a", 1).node_ip), None);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].node, "b");
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        let (nw, fw) = wanted(&ok);
        let ops = entry_ops(&[], &[], &nw, &fw);
        assert_eq!(
            ops,
            vec![
                EntryOp::SetNeigh(v("b", 2).tunnel_addr, v("b", 2).mac),
                EntryOp::SetFdb(v("b", 2).mac, v("b", 2).node_ip),
            ]
        );
        let want = DeviceSpec::<Ipv6Addr> {
            vni: VNI,
            port: PORT,
            local: v("a", 1).node_ip,
            mac: v("a", 1).mac,
            mtu: 1430,
            addr: v("a", 1).tunnel_addr,
        };
        let have = DeviceParams {
            vni: Some(VNI),
            port: Some(PORT),
            local: Some(IpAddr::V6(v("a", 1).node_ip)),
            learning: Some(false),
            group: Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        };
        assert_eq!(replace_reason(&have, &want), None);
        let other = DeviceParams {
            local: Some(IpAddr::V4(Ipv4Addr::new(172, 30, 0, 1))),
            ..have
        };
        assert!(replace_reason(&other, &want).is_some());
    }
}
