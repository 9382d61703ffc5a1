//! The rtnetlink side of VXLAN: the `vxlan.calico` (or, over IPv6,
//! `vxlan-v6.calico`) link, its neighbour and FDB entries. A handful of
//! requests per change (one per VTEP that changes), not a bulk path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};

use super::{
    DeviceParams, DeviceSpec, EntryOp, FdbEntry, Mac, NeighEntry, VtepAddr, VxlanError,
    replace_reason,
};
use crate::tunnel::link::{self, errno};

/// The device felix made or adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub ifindex: u32,
}

/// What felix reads of a link that holds the device's name.
#[derive(Debug, Clone, Default)]
struct Existing {
    index: u32,
    kind: Option<InfoKind>,
    params: DeviceParams,
    mac: Option<Vec<u8>>,
    mtu: Option<u32>,
    up: bool,
}

fn existing_of(msg: &LinkMessage) -> Existing {
    let mut e = Existing {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        ..Existing::default()
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::Address(m) => e.mac = Some(m.clone()),
            LinkAttribute::Mtu(m) => e.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => e.kind = Some(k.clone()),
                        LinkInfo::Data(InfoData::Vxlan(data)) => {
                            for d in data {
                                match d {
                                    InfoVxlan::Id(v) => e.params.vni = Some(*v),
                                    InfoVxlan::Port(p) => e.params.port = Some(*p),
                                    InfoVxlan::Local(l) => e.params.local = Some((*l).into()),
                                    InfoVxlan::Local6(l) => e.params.local = Some((*l).into()),
                                    InfoVxlan::Learning(l) => e.params.learning = Some(*l),
                                    InfoVxlan::Group(g) => e.params.group = Some((*g).into()),
                                    InfoVxlan::Group6(g) => e.params.group = Some((*g).into()),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    e
}

async fn read(nl: &Handle, name: &str) -> Result<Option<Existing>, rtnetlink::Error> {
    let mut links = nl.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(existing_of(&msg))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

fn kind_name(k: &Option<InfoKind>) -> String {
    k.as_ref()
        .map_or_else(|| "plain".to_string(), |k| format!("{k:?}").to_lowercase())
}

fn nl_err(name: &str, step: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> VxlanError {
    let name = name.to_string();
    let step = step.into();
    move |source| VxlanError::Netlink { name, step, source }
}

/// `ip link add <name> type vxlan id <vni> dstport <port> local <local>
/// nolearning address <mac> mtu <mtu>`.
async fn create<A: VtepAddr>(
    nl: &Handle,
    name: &str,
    spec: &DeviceSpec<A>,
) -> Result<(), VxlanError> {
    let b = LinkVxlan::new(name, spec.vni).port(spec.port);
    let b = match spec.local.into() {
        IpAddr::V4(a) => b.local(a),
        IpAddr::V6(a) => b.local6(a),
    };
    let msg = b
        .learning(false)
        .address(spec.mac.to_vec())
        .mtu(spec.mtu)
        .build();
    nl.link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| create_error(name, e))
}

/// What a failed `RTM_NEWLINK` of kind vxlan means: `EOPNOTSUPP` is what
/// `ip` prints as "Unknown device type" (no such link kind, even after
/// trying to load its module).
fn create_error(name: &str, e: rtnetlink::Error) -> VxlanError {
    if errno(&e) == Some(libc::EOPNOTSUPP) {
        VxlanError::KernelUnsupported(e)
    } else {
        nl_err(name, "create the vxlan device")(e)
    }
}

impl VxlanDevice {
    /// Makes the device `spec` says, in the calling thread's namespace:
    /// creates it, adopts an existing VXLAN device with the same VNI,
    /// port and local address (and no learning, no group), or replaces
    /// one with other parameters; then sets its MAC, MTU, up and its only
    /// address where they differ. A device of another kind holding the
    /// name is an error, never deleted. Returns the device and whether
    /// anything changed.
    pub async fn ensure<A: VtepAddr>(
        nl: &Handle,
        name: &str,
        spec: &DeviceSpec<A>,
    ) -> Result<(VxlanDevice, bool), VxlanError> {
        let mut changed = false;
        let mut have = read(nl, name)
            .await
            .map_err(nl_err(name, "look up the device"))?;
        if let Some(e) = &have {
            if e.kind != Some(InfoKind::Vxlan) {
                return Err(VxlanError::NameTaken {
                    name: name.to_string(),
                    kind: kind_name(&e.kind),
                });
            }
            if let Some(why) = replace_reason(&e.params, spec) {
                tracing::warn!(device = name, reason = %why, "replacing the VXLAN device");
                match nl.link().del(e.index).execute().await {
                    Ok(()) => {}
                    Err(err) if errno(&err) == Some(libc::ENODEV) => {}
                    Err(err) => return Err(nl_err(name, "delete the mismatched device")(err)),
                }
                have = None;
            }
        }
        if have.is_none() {
            create(nl, name, spec).await?;
            changed = true;
            have = read(nl, name)
                .await
                .map_err(nl_err(name, "look up the new device"))?;
        }
        let e = have.ok_or_else(|| VxlanError::Vanished(name.to_string()))?;
        if e.kind != Some(InfoKind::Vxlan) {
            return Err(VxlanError::NameTaken {
                name: name.to_string(),
                kind: kind_name(&e.kind),
            });
        }
        if e.mac.as_deref() != Some(&spec.mac[..]) || e.mtu != Some(spec.mtu) || !e.up {
            nl.link()
                .set(
                    LinkUnspec::new_with_index(e.index)
                        .address(spec.mac.to_vec())
                        .mtu(spec.mtu)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(nl_err(name, "set MAC, MTU and up"))?;
            changed = true;
        }
        changed |= match spec.addr.into() {
            IpAddr::V4(a) => link::sync_single_address(nl, e.index, Some(a)).await,
            IpAddr::V6(a) => sync_single_v6_address(nl, e.index, a).await,
        }
        .map_err(nl_err(name, "set the tunnel address"))?;
        Ok((
            VxlanDevice {
                name: name.to_string(),
                ifindex: e.index,
            },
            changed,
        ))
    }

    /// Deletes the VXLAN device called `name`, if there is one (a device
    /// of another kind is left alone). Returns whether one was deleted.
    pub async fn remove(nl: &Handle, name: &str) -> Result<bool, VxlanError> {
        let Some(e) = read(nl, name)
            .await
            .map_err(nl_err(name, "look up the device"))?
        else {
            return Ok(false);
        };
        if e.kind != Some(InfoKind::Vxlan) {
            return Ok(false);
        }
        match nl.link().del(e.index).execute().await {
            Ok(()) => Ok(true),
            Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(false),
            Err(err) => Err(nl_err(name, "delete the device")(err)),
        }
    }

    /// The device's neighbour entries (of `A`'s family) and FDB entries.
    pub async fn entries<A: VtepAddr>(
        &self,
        nl: &Handle,
    ) -> Result<(Vec<NeighEntry<A>>, Vec<FdbEntry<A>>), VxlanError> {
        let mut neigh = Vec::new();
        let family = if A::HOST_PREFIX == 32 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let mut dump = nl.neighbours().get().set_address_family(family).execute();
        while let Some(m) = dump
            .try_next()
            .await
            .map_err(nl_err(&self.name, "list neighbours"))?
        {
            if m.header.ifindex != self.ifindex {
                continue;
            }
            let ip = m.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(d) => neigh_addr::<A>(d),
                _ => None,
            });
            if let Some(ip) = ip {
                neigh.push(NeighEntry {
                    ip,
                    mac: lladdr(&m),
                    permanent: m.header.state == NeighbourState::Permanent,
                });
            }
        }
        let mut fdb = Vec::new();
        let mut dump = nl
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        while let Some(m) = dump
            .try_next()
            .await
            .map_err(nl_err(&self.name, "list FDB entries"))?
        {
            if m.header.ifindex != self.ifindex {
                continue;
            }
            let Some(mac) = lladdr(&m) else { continue };
            let dst = m.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(d) => neigh_addr::<A>(d),
                _ => None,
            });
            fdb.push(FdbEntry {
                mac,
                dst,
                permanent: m.header.state == NeighbourState::Permanent,
            });
        }
        Ok((neigh, fdb))
    }

    /// Applies `ops` in order. Every op is tried; the first failure is
    /// returned after the others ran.
    pub async fn apply<A: VtepAddr>(
        &self,
        nl: &Handle,
        ops: &[EntryOp<A>],
    ) -> Result<(), VxlanError> {
        let mut first = None;
        for op in ops {
            let r = self.apply_one(nl, op).await;
            if let Err(e) = r {
                tracing::warn!(device = %self.name, ?op, error = %e, "VXLAN entry not written");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn apply_one<A: VtepAddr>(&self, nl: &Handle, op: &EntryOp<A>) -> Result<(), VxlanError> {
        let family = if A::HOST_PREFIX == 32 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let ignore_missing = |r: Result<(), rtnetlink::Error>| match r {
            Err(e) if matches!(errno(&e), Some(libc::ENOENT) | Some(libc::ESRCH)) => Ok(()),
            r => r,
        };
        match *op {
            EntryOp::SetNeigh(ip, mac) => nl
                .neighbours()
                .add(self.ifindex, ip.into())
                .state(NeighbourState::Permanent)
                .link_layer_address(&mac)
                .replace()
                .execute()
                .await
                .map_err(nl_err(
                    &self.name,
                    format!("neighbour {ip} -> {}", Mac(&mac)),
                )),
            EntryOp::DelNeigh(ip) => {
                let mut m = NeighbourMessage::default();
                m.header.family = family;
                m.header.ifindex = self.ifindex;
                m.attributes
                    .push(NeighbourAttribute::Destination(NeighbourAddress::from(
                        Into::<IpAddr>::into(ip),
                    )));
                ignore_missing(nl.neighbours().del(m).execute().await)
                    .map_err(nl_err(&self.name, format!("delete neighbour {ip}")))
            }
            EntryOp::SetFdb(mac, dst) => nl
                .neighbours()
                .add_bridge(self.ifindex, &mac)
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .destination(dst.into())
                .replace()
                .execute()
                .await
                .map_err(nl_err(&self.name, format!("FDB {} dst {dst}", Mac(&mac)))),
            EntryOp::DelFdb(mac, dst) => {
                let mut m = NeighbourMessage::default();
                m.header.family = AddressFamily::Bridge;
                m.header.ifindex = self.ifindex;
                m.header.flags = NeighbourFlags::Own;
                m.header.state = NeighbourState::Permanent;
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
                if let Some(d) = dst {
                    m.attributes
                        .push(NeighbourAttribute::Destination(NeighbourAddress::from(
                            Into::<IpAddr>::into(d),
                        )));
                }
                ignore_missing(nl.neighbours().del(m).execute().await)
                    .map_err(nl_err(&self.name, format!("delete FDB {}", Mac(&mac))))
            }
        }
    }
}

/// A neighbour or FDB destination of `A`'s family (the kernel reports an
/// FDB `dst` as a plain 4- or 16-byte address).
fn neigh_addr<A: VtepAddr>(d: &NeighbourAddress) -> Option<A> {
    let ip = match d {
        NeighbourAddress::Inet(ip) => IpAddr::V4(*ip),
        NeighbourAddress::Inet6(ip) => IpAddr::V6(*ip),
        NeighbourAddress::Other(b) => match b.len() {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b.as_slice()).ok()?)),
            16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b.as_slice()).ok()?)),
            _ => return None,
        },
        _ => return None,
    };
    A::from_ip(ip)
}

/// Makes `addr/128` the link's only global IPv6 address (its link-local
/// address stays), added without duplicate address detection so it is
/// usable at once. Returns whether anything changed.
async fn sync_single_v6_address(
    nl: &Handle,
    index: u32,
    addr: Ipv6Addr,
) -> Result<bool, rtnetlink::Error> {
    let mut stale = Vec::new();
    let mut have = false;
    let mut get = nl.address().get().set_link_index_filter(index).execute();
    while let Some(msg) = get.try_next().await? {
        if msg.header.family != AddressFamily::Inet6 || msg.header.index != index {
            continue;
        }
        let ip = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V6(ip)) => Some(*ip),
            _ => None,
        });
        let Some(ip) = ip else { continue };
        if ip.segments()[0] & 0xffc0 == 0xfe80 {
            continue;
        }
        if ip == addr && msg.header.prefix_len == 128 {
            have = true;
        } else {
            stale.push(msg);
        }
    }
    let mut changed = false;
    for msg in stale {
        match nl.address().del(msg).execute().await {
            Ok(()) => changed = true,
            Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => return Err(e),
        }
    }
    if !have {
        let mut req = nl.address().add(index, IpAddr::V6(addr), 128);
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        match req.execute().await {
            Ok(()) => changed = true,
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(changed)
}

fn lladdr(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nl_error(errno: i32) -> rtnetlink::Error {
        let mut m = netlink_packet_core::ErrorMessage::default();
        m.code = std::num::NonZeroI32::new(-errno);
        rtnetlink::Error::NetlinkError(m)
    }

    #[test]
    fn a_kernel_without_vxlan_is_told_apart_from_other_failures() {
        let e = create_error("vxlan.calico", nl_error(libc::EOPNOTSUPP));
        assert!(matches!(e, VxlanError::KernelUnsupported(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("no vxlan link type"), "{text}");
        assert!(text.contains("vxlanMode: Never"), "{text}");
        let e = create_error("vxlan.calico", nl_error(libc::EEXIST));
        assert!(matches!(e, VxlanError::Netlink { .. }), "{e:?}");
        assert!(e.to_string().contains("create the vxlan device"), "{e}");
    }
}
