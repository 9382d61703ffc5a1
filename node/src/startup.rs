//! What calico-node does before starting its children: find the node's
//! address, register the node, make sure a default pool exists.

use std::time::Duration;

use datastore::{Client, Error as DsError};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use ippool_crd::{EncapMode, IPPool, Node, NodeBgpSpec};
use serde_json::json;

use crate::autodetect::{self, DetectError, Family};
use crate::settings::{DEFAULT_POOL_NAME, DEFAULT_POOL_NAME_V6, DefaultPool, IpSetting, Settings};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error("{0}")]
    Datastore(#[from] DsError),
    #[error(
        "node {other:?} already uses {addr}; two nodes cannot share a BGP address. Check IP / IP_AUTODETECTION_METHOD on this node ({me:?})"
    )]
    AddressInUse {
        addr: String,
        other: String,
        me: String,
    },
    #[error("gave up updating node {0:?} after repeated conflicting writes")]
    Contention(String),
}

/// The node's IPv4 address with its subnet, or `None` for `IP=none`.
pub fn resolve_address(setting: &IpSetting) -> Result<Option<Ipv4Network>, StartupError> {
    match setting {
        IpSetting::None => Ok(None),
        IpSetting::Autodetect(m) => {
            let ifs = autodetect::interfaces()?;
            match autodetect::select(m, Family::V4, &ifs, autodetect::route_source)?.addr {
                IpNetwork::V4(n) => Ok(Some(n)),
                IpNetwork::V6(_) => Ok(None),
            }
        }
        IpSetting::Explicit(a, Some(p)) => Ok(Ipv4Network::new(*a, *p).ok()),
        IpSetting::Explicit(a, None) => {
            let ifs = autodetect::interfaces()?;
            match ifs.iter().find_map(|i| match i.addr {
                IpNetwork::V4(n) if n.ip() == *a => Some(n),
                _ => None,
            }) {
                Some(n) => Ok(Some(n)),
                None => {
                    tracing::warn!(ip = %a, "IP is not on any interface here; using it as a /32");
                    Ok(Ipv4Network::new(*a, 32).ok())
                }
            }
        }
    }
}

/// Creates or updates this node's Node resource: its BGP address and AS.
/// Fails if another node already claims the address.
pub async fn register_node(
    client: &Client,
    settings: &Settings,
    addr: Option<Ipv4Network>,
) -> Result<Node, StartupError> {
    let name = &settings.nodename;
    let want = addr.map(|a| a.to_string());
    let ip6 = resolve_address6(&settings.ip6)?;
    if let Some(a) = &want {
        for other in client.list::<Node>().await? {
            if other.metadata.name.as_deref() != Some(name.as_str())
                && other
                    .spec
                    .bgp
                    .as_ref()
                    .and_then(|b| b.ipv4_address.as_deref())
                    .is_some_and(|o| o.split('/').next() == a.split('/').next())
            {
                return Err(StartupError::AddressInUse {
                    addr: a.clone(),
                    other: other.metadata.name.clone().unwrap_or_default(),
                    me: name.clone(),
                });
            }
        }
    }
    for _ in 0..20 {
        match client.get::<Node>(name).await? {
            None => {
                let node: Node = serde_json::from_value(json!({
                    "apiVersion": "projectcalico.org/v3",
                    "kind": "Node",
                    "metadata": {"name": name},
                    "spec": {"bgp": {}},
                }))
                .map_err(|source| DsError::Encode {
                    key: name.to_string(),
                    kind: "Node",
                    source,
                })?;
                let mut node = node;
                set_bgp(&mut node, want.clone(), settings.asn);
                set_ip6(&mut node, ip6);
                match client.create(&node).await {
                    Ok(n) => {
                        tracing::info!(node = %name, address = ?want, "registered node");
                        return Ok(n);
                    }
                    Err(DsError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(mut node) => {
                let before = node.spec.clone();
                set_bgp(&mut node, want.clone(), settings.asn);
                set_ip6(&mut node, ip6);
                if node.spec == before {
                    return Ok(node);
                }
                match client.update(&node).await {
                    Ok(n) => {
                        tracing::info!(node = %name, address = ?want, "updated node");
                        return Ok(n);
                    }
                    Err(DsError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(StartupError::Contention(name.clone()))
}

/// The node's IPv6 address from `IP6`: `None` to leave the Node's as it
/// is (`IP6` unset), `Some(None)` to clear it, `Some(Some(a))` to set it
/// (`IP6=autodetect` finds it with `IP6_AUTODETECTION_METHOD`).
pub fn resolve_address6(
    setting: &crate::settings::Ip6Setting,
) -> Result<Option<Option<Ipv6Network>>, StartupError> {
    use crate::settings::Ip6Setting;
    Ok(match setting {
        Ip6Setting::Unset => None,
        Ip6Setting::None => Some(None),
        Ip6Setting::Explicit(n) => Some(Some(*n)),
        Ip6Setting::Autodetect(m) => {
            let ifs = autodetect::interfaces()?;
            match autodetect::select(m, Family::V6, &ifs, autodetect::route_source)?.addr {
                IpNetwork::V6(n) => Some(Some(n)),
                IpNetwork::V4(_) => None,
            }
        }
    })
}

/// `IP6` onto `spec.bgp.ipv6Address` (unset: left as it is).
fn set_ip6(node: &mut Node, ip6: Option<Option<Ipv6Network>>) {
    let Some(ip6) = ip6 else {
        return;
    };
    let bgp = node.spec.bgp.get_or_insert_with(NodeBgpSpec::default);
    bgp.ipv6_address = ip6.map(|n| n.to_string());
}

fn set_bgp(node: &mut Node, addr: Option<String>, asn: Option<u32>) {
    let bgp = node.spec.bgp.get_or_insert_with(NodeBgpSpec::default);
    bgp.ipv4_address = addr;
    if asn.is_some() {
        bgp.as_number = asn;
    }
}

/// Creates a default pool if the datastore has none of its family (any
/// pool of that family, whatever its name, counts: the operator's pools
/// are never touched).
pub async fn ensure_default_pool(
    client: &Client,
    pool: &DefaultPool,
) -> Result<bool, StartupError> {
    let v4 = pool.cidr.is_ipv4();
    let pools = client.list::<IPPool>().await?;
    if pools.iter().any(|p| {
        p.spec
            .cidr
            .parse::<ipnetwork::IpNetwork>()
            .is_ok_and(|c| c.is_ipv4() == v4)
    }) {
        return Ok(false);
    }
    let (name, family) = if v4 {
        (DEFAULT_POOL_NAME, "IPv4")
    } else {
        (DEFAULT_POOL_NAME_V6, "IPv6")
    };
    let mode = |m: EncapMode| match m {
        EncapMode::Never => "Never",
        EncapMode::Always => "Always",
        EncapMode::CrossSubnet => "CrossSubnet",
    };
    let obj: IPPool = serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {
            "cidr": pool.cidr.to_string(),
            "ipipMode": mode(pool.ipip),
            "vxlanMode": mode(pool.vxlan),
            "natOutgoing": pool.nat_outgoing,
            "blockSize": pool.block_size,
            "nodeSelector": pool.node_selector,
        },
    }))
    .map_err(|source| DsError::Encode {
        key: name.to_string(),
        kind: "IPPool",
        source,
    })?;
    if let Err(e) = obj.config() {
        return Err(DsError::Config(format!(
            "the default pool from the environment is invalid: {e}"
        ))
        .into());
    }
    match client.create(&obj).await {
        Ok(_) => {
            tracing::info!(cidr = %pool.cidr, "created the default {family} pool");
            Ok(true)
        }
        // Another node created it at the same moment.
        Err(DsError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The node's tunnel addresses, as [`sync_tunnel_address`] leaves them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelAddresses {
    pub ipip: Option<std::net::Ipv4Addr>,
    /// The VXLAN tunnel endpoint: its address and MAC.
    pub vxlan: Option<(std::net::Ipv4Addr, [u8; 6])>,
    /// The IPv6 VXLAN tunnel endpoint: its address and (separate) MAC.
    pub vxlan_v6: Option<(std::net::Ipv6Addr, [u8; 6])>,
}

/// The MAC `have` holds if it parses, else a new random one.
fn keep_or_new_mac(have: Option<&str>, what: &str) -> Result<[u8; 6], StartupError> {
    have.and_then(parse_mac)
        .map_or_else(random_mac, Ok)
        .map_err(|e| {
            StartupError::Datastore(DsError::Backend {
                key: what.into(),
                reason: e.to_string(),
            })
        })
}

/// Keeps the node's tunnel addresses in step with the pools (Calico's
/// allocate-tunnel-addrs): the IPIP address (IPAM handle
/// `ipip-tunnel-addr-<node>`, on the Node as `spec.bgp.ipv4IPIPTunnelAddr`)
/// while any pool uses IP-in-IP, the VXLAN tunnel endpoint (handle
/// `vxlan-tunnel-addr-<node>`, `spec.ipv4VXLANTunnelAddr`, with a MAC of
/// its own in `spec.vxlanTunnelMACAddr`) while any IPv4 pool uses VXLAN,
/// and the IPv6 one (handle `vxlan-v6-tunnel-addr-<node>`,
/// `spec.ipv6VXLANTunnelAddr`, MAC `spec.vxlanTunnelMACAddrV6`) while any
/// IPv6 pool uses VXLAN. Each is released and cleared when no pool uses
/// it any more; a MAC, once chosen, is kept (a VTEP whose MAC changed
/// would need every other node's FDB and neighbour entries rewritten).
pub async fn sync_tunnel_address(
    client: &Client,
    node: &str,
) -> Result<TunnelAddresses, StartupError> {
    use datastore::ipam::TunnelKind;
    let ipam = datastore::ipam::Ipam::new(client.clone());
    let pools = ipam.pools().await.map_err(ipam_err)?;
    let uses = |v4: bool, mode: fn(&ippool_crd::PoolConfig) -> EncapMode| {
        pools
            .iter()
            .any(|p| p.cidr.is_ipv4() == v4 && mode(p) != EncapMode::Never && !p.disabled)
    };
    let mut addrs = [None, None, None];
    for (slot, (kind, wanted)) in addrs.iter_mut().zip([
        (TunnelKind::Ipip, uses(true, |p| p.ipip_mode)),
        (TunnelKind::Vxlan, uses(true, |p| p.vxlan_mode)),
        (TunnelKind::VxlanV6, uses(false, |p| p.vxlan_mode)),
    ]) {
        *slot = if wanted {
            match ipam.ensure_tunnel_address_of(node, kind).await {
                Ok(a) if a.is_ipv4() == kind.is_v4() => Some(a),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, ?kind, "cannot allocate the tunnel address");
                    return Err(ipam_err(e));
                }
            }
        } else {
            ipam.release_by_handle(&kind.handle(node))
                .await
                .map_err(ipam_err)?;
            None
        };
    }
    let v4 = |a: Option<std::net::IpAddr>| match a {
        Some(std::net::IpAddr::V4(a)) => Some(a),
        _ => None,
    };
    let (ipip, vxlan) = (v4(addrs[0]), v4(addrs[1]));
    let vxlan_v6 = match addrs[2] {
        Some(std::net::IpAddr::V6(a)) => Some(a),
        _ => None,
    };
    for _ in 0..20 {
        let Some(mut n) = client.get::<Node>(node).await? else {
            return Ok(TunnelAddresses {
                ipip,
                vxlan: None,
                vxlan_v6: None,
            });
        };
        let before = n.clone();
        let mac = match vxlan {
            Some(_) => Some(keep_or_new_mac(
                n.spec.vxlan_tunnel_mac_addr.as_deref(),
                "VXLAN tunnel MAC",
            )?),
            None => None,
        };
        let mac_v6 = match vxlan_v6 {
            Some(_) => Some(keep_or_new_mac(
                n.spec.vxlan_tunnel_mac_addr_v6.as_deref(),
                "IPv6 VXLAN tunnel MAC",
            )?),
            None => None,
        };
        let bgp = n.spec.bgp.get_or_insert_with(NodeBgpSpec::default);
        bgp.ipv4_ipip_tunnel_addr = ipip.map(|a| a.to_string());
        n.spec.ipv4_vxlan_tunnel_addr = vxlan.map(|a| a.to_string());
        n.spec.ipv6_vxlan_tunnel_addr = vxlan_v6.map(|a| a.to_string());
        if let Some(mac) = mac {
            n.spec.vxlan_tunnel_mac_addr = Some(format_mac(mac));
        }
        if let Some(mac) = mac_v6 {
            n.spec.vxlan_tunnel_mac_addr_v6 = Some(format_mac(mac));
        }
        let now = TunnelAddresses {
            ipip,
            vxlan: vxlan.zip(mac),
            vxlan_v6: vxlan_v6.zip(mac_v6),
        };
        if n == before {
            return Ok(now);
        }
        match client.update(&n).await {
            Ok(_) => {
                tracing::info!(ipip = ?ipip, vxlan = ?vxlan, mac = ?n.spec.vxlan_tunnel_mac_addr,
                    vxlan_v6 = ?vxlan_v6, mac_v6 = ?n.spec.vxlan_tunnel_mac_addr_v6,
                    "tunnel addresses recorded");
                return Ok(now);
            }
            Err(DsError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StartupError::Contention(node.to_string()))
}

pub use ippool_crd::{format_mac, parse_mac};

/// A random unicast, locally administered MAC (what Calico gives a VTEP).
fn random_mac() -> std::io::Result<[u8; 6]> {
    use std::io::Read;
    let mut m = [0u8; 6];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut m)?;
    m[0] = (m[0] & 0xfe) | 0x02;
    Ok(m)
}

fn ipam_err(e: datastore::ipam::IpamError) -> StartupError {
    match e {
        datastore::ipam::IpamError::Datastore(d) => StartupError::Datastore(d),
        other => StartupError::Datastore(DsError::Backend {
            key: "tunnel address".into(),
            reason: other.to_string(),
        }),
    }
}

/// Retries `f` while the datastore is unreachable, so a node that boots
/// before etcd waits for it instead of crash-looping. Bounded by `limit`.
pub async fn with_datastore_retry<T, F, Fut>(
    what: &str,
    limit: Duration,
    mut f: F,
) -> Result<T, StartupError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StartupError>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut wait = Duration::from_millis(200);
    loop {
        match f().await {
            Err(StartupError::Datastore(e))
                if e.is_transient() && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(step = what, error = %e, "datastore not ready; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}
