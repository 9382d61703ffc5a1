//! What calico-node does before starting its children: find the node's
//! address, register the node, make sure a default pool exists.

use std::time::Duration;

use datastore::{Client, Error as DsError};
use ipnetwork::Ipv4Network;
use ippool_crd::{EncapMode, IPPool, Node, NodeBgpSpec};
use serde_json::json;

use crate::autodetect::{self, DetectError};
use crate::settings::{DEFAULT_POOL_NAME, DefaultPool, IpSetting, Settings};

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
            Ok(Some(
                autodetect::select(m, &ifs, autodetect::route_source)?.addr,
            ))
        }
        IpSetting::Explicit(a, Some(p)) => Ok(Ipv4Network::new(*a, *p).ok()),
        IpSetting::Explicit(a, None) => {
            let ifs = autodetect::interfaces()?;
            match ifs.iter().find(|i| i.addr.ip() == *a) {
                Some(i) => Ok(Some(i.addr)),
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

fn set_bgp(node: &mut Node, addr: Option<String>, asn: Option<u32>) {
    let bgp = node.spec.bgp.get_or_insert_with(NodeBgpSpec::default);
    bgp.ipv4_address = addr;
    if asn.is_some() {
        bgp.as_number = asn;
    }
}

/// Creates the default IPv4 pool if the datastore has none (any IPv4 pool,
/// whatever its name, counts: the operator's pools are never touched).
pub async fn ensure_default_pool(
    client: &Client,
    pool: &DefaultPool,
) -> Result<bool, StartupError> {
    let pools = client.list::<IPPool>().await?;
    if pools.iter().any(|p| {
        p.spec
            .cidr
            .parse::<ipnetwork::IpNetwork>()
            .is_ok_and(|c| c.is_ipv4())
    }) {
        return Ok(false);
    }
    let mode = |m: EncapMode| match m {
        EncapMode::Never => "Never",
        EncapMode::Always => "Always",
        EncapMode::CrossSubnet => "CrossSubnet",
    };
    let obj: IPPool = serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPPool",
        "metadata": {"name": DEFAULT_POOL_NAME},
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
        key: DEFAULT_POOL_NAME.to_string(),
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
            tracing::info!(cidr = %pool.cidr, "created the default IPv4 pool");
            Ok(true)
        }
        // Another node created it at the same moment.
        Err(DsError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Keeps the node's IPIP tunnel address in step with the pools: allocated
/// (IPAM handle `ipip-tunnel-addr-<node>`) and recorded on the Node while
/// any pool uses IP-in-IP, released and cleared when none does. Returns
/// the address now in effect.
pub async fn sync_tunnel_address(
    client: &Client,
    node: &str,
) -> Result<Option<std::net::Ipv4Addr>, StartupError> {
    let ipam = datastore::ipam::Ipam::new(client.clone());
    let pools = ipam.pools().await.map_err(ipam_err)?;
    let wanted = pools
        .iter()
        .any(|p| p.cidr.is_ipv4() && p.ipip_mode != EncapMode::Never && !p.disabled);
    let addr = if wanted {
        match ipam.ensure_tunnel_address(node).await {
            Ok(std::net::IpAddr::V4(a)) => Some(a),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot allocate the IPIP tunnel address");
                return Err(ipam_err(e));
            }
        }
    } else {
        let handle = datastore::ipam::ipip_tunnel_handle(node);
        ipam.release_by_handle(&handle).await.map_err(ipam_err)?;
        None
    };
    let want = addr.map(|a| a.to_string());
    for _ in 0..20 {
        let Some(mut n) = client.get::<Node>(node).await? else {
            return Ok(addr);
        };
        let bgp = n.spec.bgp.get_or_insert_with(NodeBgpSpec::default);
        if bgp.ipv4_ipip_tunnel_addr == want {
            return Ok(addr);
        }
        bgp.ipv4_ipip_tunnel_addr = want.clone();
        match client.update(&n).await {
            Ok(_) => {
                tracing::info!(tunnel = ?addr, "IPIP tunnel address recorded");
                return Ok(addr);
            }
            Err(DsError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StartupError::Contention(node.to_string()))
}

fn ipam_err(e: datastore::ipam::IpamError) -> StartupError {
    match e {
        datastore::ipam::IpamError::Datastore(d) => StartupError::Datastore(d),
        other => StartupError::Datastore(DsError::Backend {
            key: "IPIP tunnel address".into(),
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
