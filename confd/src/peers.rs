//! Which BGP sessions a node has, computed the way Calico's confd does, so
//! calico-rs and Calico nodes agree on every peering in a mixed cluster.
//!
//! 1. **Explicit peers** (BGPPeer resources), in two passes: first the
//!    *global* ones (neither `node` nor `nodeSelector` set: they apply to
//!    every node), then the *node-specific* ones; a node-specific peering to
//!    an address that already has a global one is dropped.
//!    `peerSelector` peers with every selected node; `peerIP` with one
//!    address (`ip:port` allowed; without a port, a Calico node at that
//!    address and AS lends its listen port).
//! 2. **Reverse peerings**: if a BGPPeer makes node A peer with node B, B
//!    gets the peering back to A, so every session has both ends configured.
//! 3. **The node-to-node mesh** (when enabled and this node is not a route
//!    reflector): every other node that is not a route reflector. Explicit
//!    peerings win over mesh ones to the same address.
//!
//! Mesh sessions are one-directional to avoid connection collisions during
//! graceful restart: a node is passive towards every peer whose address is
//! greater. Calico compares the addresses *as strings* ("10.0.0.10" <
//! "10.0.0.9"); we do the same, because a mixed cluster only works if both
//! ends agree on who connects.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ippool_crd::bgpfilter::CheckedRule;
use ippool_crd::{BFDAuthType, BFDSpec, BGPPeer, NextHopMode, SourceAddress, defaults};

use crate::state::{ClusterState, NodeFacts};

/// Graceful-restart time Calico gives mesh sessions.
pub const MESH_RESTART_TIME: Duration = Duration::from_secs(120);

/// How a peering came about; shown by `calico-node status` the way
/// `calicoctl node status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKind {
    Mesh,
    Global,
    NodeSpecific,
}

impl PeerKind {
    pub fn describe(self) -> &'static str {
        match self {
            PeerKind::Mesh => "node-to-node mesh",
            PeerKind::Global => "global",
            PeerKind::NodeSpecific => "node specific",
        }
    }
}

/// One BGP session of the local node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub address: IpAddr,
    /// `None`: the standard port ([`defaults::LISTEN_PORT`]).
    pub port: Option<u16>,
    pub asn: u32,
    pub kind: PeerKind,
    /// Wait for the peer to connect.
    pub passive: bool,
    /// Source address for the TCP connection (the node's own address when
    /// `sourceAddress: UseNodeIP`, the default).
    pub source_address: Option<IpAddr>,
    /// TCP-MD5 key.
    pub password: Option<String>,
    /// The peering asks for a password that cannot be had, and why: the
    /// session is held down rather than run without it.
    pub password_unavailable: Option<String>,
    pub restart_time: Option<Duration>,
    pub keepalive_time: Option<Duration>,
    /// This node reflects routes to the peer (RFC 4456 client).
    pub rr_client: bool,
    /// With `rr_client`: this node's cluster ID.
    pub rr_cluster_id: Option<Ipv4Addr>,
    /// eBGP only: do not rewrite the next hop.
    pub keep_next_hop: bool,
    /// `nextHopMode: Self`: our address as the next hop of every route,
    /// reflected ones too.
    pub next_hop_self: bool,
    /// GTSM: the peer is at most this many hops away (RFC 5082).
    pub ttl_security: Option<u8>,
    pub num_allow_local_as: u32,
    /// `localASNumber`: the AS this node speaks as on this session.
    pub local_asn: Option<u32>,
    /// `reachableBy`: the gateway of a host route to the peer (felix
    /// installs it, over any route to the peer learned from BGP).
    pub reachable_by: Option<IpAddr>,
    /// The peer is itself a calico node.
    pub calico_node: bool,
    /// The resource the peering comes from (`BGPPeer` name), if any.
    pub source: Option<String>,
    /// BFD interval and multiplier, if the peering asks for BFD.
    pub bfd: Option<(Duration, u8)>,
    /// BFD authentication, key read from its Secret (with `bfd`). A key
    /// that cannot be had holds the session down instead
    /// (`password_unavailable` says why).
    pub bfd_auth: Option<BfdAuth>,
    /// The peer is not in this node's subnet (multihop BFD).
    pub remote_subnet: bool,
    /// Routes accepted from the peer before the session is cut.
    pub max_prefixes: Option<u32>,
    /// The rules of the BGPFilters the BGPPeer names, in order: import
    /// (importV4 and importV6 of each filter) and export.
    pub import_filter: Vec<FilterRule>,
    pub export_filter: Vec<FilterRule>,
}

/// One BGPFilter rule, checked, with the family of its list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRule {
    pub ipv4: bool,
    pub rule: CheckedRule,
}

/// The import and export rules of the filters `names`, in order, or why
/// they cannot be had (a filter that does not exist or is invalid): the
/// session is then held down, never run without the filters it names.
fn filters_of(
    state: &ClusterState,
    names: &[String],
) -> Result<(Vec<FilterRule>, Vec<FilterRule>), String> {
    let (mut import, mut export) = (Vec::new(), Vec::new());
    for name in names {
        let Some(f) = state.bgp_filters.get(name) else {
            return Err(format!(
                "BGPFilter {name:?} does not exist: session held down (create it or remove it from spec.filters)"
            ));
        };
        let c = f.checked().map_err(|e| format!("{e}: session held down"))?;
        let tag = |ipv4: bool, rules: Vec<CheckedRule>| {
            rules.into_iter().map(move |rule| FilterRule { ipv4, rule })
        };
        import.extend(tag(true, c.import_v4).chain(tag(false, c.import_v6)));
        export.extend(tag(true, c.export_v4).chain(tag(false, c.export_v6)));
    }
    Ok((import, export))
}

impl Peer {
    /// Calico's BIRD protocol name for this peering (`Mesh_10_0_0_2`,
    /// `Node_10_0_0_9_port_1179`, ...), used as the peer's name in status.
    pub fn name(&self) -> String {
        let id = self.address.to_string().replace(['.', ':'], "_");
        let prefix = match self.kind {
            PeerKind::Mesh => "Mesh",
            PeerKind::Global => "Global",
            PeerKind::NodeSpecific => "Node",
        };
        match (self.kind, self.port) {
            (PeerKind::Mesh, _) | (_, None) => format!("{prefix}_{id}"),
            (_, Some(p)) => format!("{prefix}_{id}_port_{p}"),
        }
    }
}

/// A BFD session's authentication, its key read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdAuth {
    pub kind: BFDAuthType,
    pub key_id: u8,
    pub key: String,
}

/// A peering's BFD timing, and its authentication or why it cannot be had.
type PeerBfd = (Option<(Duration, u8)>, Result<Option<BfdAuth>, String>);

/// The BFD timing and authentication `spec` asks for: `Err(why)` when it
/// asks for authentication that cannot be had (a missing Secret or key,
/// or an invalid `authentication`, which validation reports): the
/// session is then held down, never run with unauthenticated BFD.
fn bfd_of(state: &ClusterState, spec: Option<&BFDSpec>) -> PeerBfd {
    let Some(b) = spec else {
        return (None, Ok(None));
    };
    let timing = b.timing();
    if timing.is_none() || b.authentication.is_none() {
        return (timing, Ok(None));
    }
    let auth = match b.authentication() {
        None => Err(
            "bfd.authentication needs a type, a keyID of 0 to 255 and a secretKeyRef: session held down"
                .to_string(),
        ),
        Some((kind, key_id, sel)) => state
            .secrets
            .bfd_key(&sel.name, &sel.key)
            .map(|key| Some(BfdAuth { kind, key_id, key })),
    };
    (timing, auth)
}

/// Sets a peer's BFD from `bfd_of`: a key that cannot be had joins the
/// reasons the session is held down.
fn set_bfd(peer: &mut Peer, bfd: PeerBfd) {
    peer.bfd = bfd.0;
    match bfd.1 {
        Ok(a) => peer.bfd_auth = a,
        Err(why) => {
            peer.bfd_auth = None;
            peer.password_unavailable = Some(match peer.password_unavailable.take() {
                Some(pw) => format!("{pw}; {why}"),
                None => why,
            });
        }
    }
}

type PeerKey = (IpAddr, Option<u16>);

/// A peer target before the BGPPeer's settings are applied.
struct Target {
    address: IpAddr,
    port: Option<u16>,
    asn: u32,
    rr_cluster_id: Option<Ipv4Addr>,
    calico_node: bool,
}

fn node_targets(n: &NodeFacts, v4: bool, v6: bool) -> Vec<Target> {
    let mut out = Vec::new();
    if v4 && let Some(a) = n.ipv4 {
        out.push(IpAddr::V4(a.ip()));
    }
    if v6 && let Some(a) = n.ipv6 {
        out.push(IpAddr::V6(a.ip()));
    }
    out.into_iter()
        .map(|address| Target {
            address,
            port: n.listen_port,
            asn: n.asn,
            rr_cluster_id: n.rr_cluster_id,
            calico_node: true,
        })
        .collect()
}

fn node_addresses(n: &NodeFacts) -> Vec<IpAddr> {
    n.ipv4
        .map(|a| IpAddr::V4(a.ip()))
        .into_iter()
        .chain(n.ipv6.map(|a| IpAddr::V6(a.ip())))
        .collect()
}

fn is_global(p: &BGPPeer) -> bool {
    p.spec.node.as_deref().unwrap_or("").is_empty()
        && p.spec.node_selector.as_deref().unwrap_or("").is_empty()
}

/// Nodes a BGPPeer's local side (`node` / `nodeSelector`) selects;
/// every node for a global peer. A malformed selector selects none.
fn local_side<'a>(p: &BGPPeer, facts: &'a BTreeMap<String, NodeFacts>) -> Vec<&'a NodeFacts> {
    facts
        .values()
        .filter(|f| p.spec.applies_to_node(&f.name, &f.labels))
        .collect()
}

/// The peer side of a BGPPeer, and whether it was selected by label
/// (reverse peerings then cover both families) or by address.
fn peer_side(
    p: &BGPPeer,
    state: &ClusterState,
    facts: &BTreeMap<String, NodeFacts>,
) -> (Vec<Target>, Vec<String>) {
    if let Some(sel) = p.spec.peer_selector() {
        let nodes: Vec<&NodeFacts> = facts.values().filter(|f| sel.matches(&f.labels)).collect();
        let targets = nodes
            .iter()
            .flat_map(|n| node_targets(n, true, true))
            .collect();
        return (targets, nodes.iter().map(|n| n.name.clone()).collect());
    }
    let Some(addr) = p.spec.peer_address() else {
        return (Vec::new(), Vec::new());
    };
    let asn = p.spec.as_number.unwrap_or_else(|| state.global_asn());
    // Calico nodes at that address and AS (and port, when one is given).
    let matching: Vec<&NodeFacts> = facts
        .values()
        .filter(|f| node_addresses(f).contains(&addr.ip) && f.asn == asn)
        .filter(|f| {
            addr.port.is_none() || addr.port == Some(f.listen_port.unwrap_or(defaults::LISTEN_PORT))
        })
        .collect();
    let port = addr
        .port
        .or_else(|| matching.first().and_then(|n| n.listen_port));
    let target = Target {
        address: addr.ip,
        port,
        asn,
        rr_cluster_id: matching.first().and_then(|n| n.rr_cluster_id),
        calico_node: !matching.is_empty(),
    };
    (
        vec![target],
        matching.iter().map(|n| n.name.clone()).collect(),
    )
}

/// A password lookup as the peer's two fields: the key, or why the
/// session is held down.
fn split(r: Result<Option<String>, String>) -> (Option<String>, Option<String>) {
    match r {
        Ok(pw) => (pw, None),
        Err(why) => (None, Some(why)),
    }
}

struct Emitter<'a> {
    me: &'a NodeFacts,
    out: BTreeMap<PeerKey, Peer>,
}

impl Emitter<'_> {
    fn my_addresses(&self) -> Vec<IpAddr> {
        node_addresses(self.me)
    }

    /// Adds a peering unless one to the same address and port exists (the
    /// first wins) or it points at this node itself.
    fn emit(&mut self, state: &ClusterState, t: Target, kind: PeerKind, from: Option<&BGPPeer>) {
        if self.my_addresses().contains(&t.address) {
            return;
        }
        // Only families this node speaks.
        let own_source = match t.address {
            IpAddr::V4(_) => self.me.ipv4.map(|a| IpAddr::V4(a.ip())),
            IpAddr::V6(_) => self.me.ipv6.map(|a| IpAddr::V6(a.ip())),
        };
        let Some(own) = own_source else { return };
        let key = (t.address, t.port);
        if self.out.contains_key(&key) {
            return;
        }
        let me = self.me;
        let rr_client =
            t.asn == me.asn && me.rr_cluster_id.is_some() && t.rr_cluster_id != me.rr_cluster_id;
        let mut peer = Peer {
            address: t.address,
            port: t.port,
            asn: t.asn,
            kind,
            passive: false,
            source_address: Some(own),
            password: None,
            password_unavailable: None,
            restart_time: None,
            keepalive_time: None,
            rr_client,
            rr_cluster_id: if rr_client { me.rr_cluster_id } else { None },
            keep_next_hop: false,
            next_hop_self: false,
            ttl_security: None,
            num_allow_local_as: 0,
            local_asn: None,
            reachable_by: None,
            calico_node: t.calico_node,
            source: None,
            bfd: None,
            bfd_auth: None,
            max_prefixes: None,
            import_filter: Vec::new(),
            export_filter: Vec::new(),
            remote_subnet: match t.address {
                IpAddr::V4(a) => !me.ipv4.is_some_and(|n| n.contains(a)),
                IpAddr::V6(a) => !me.ipv6.is_some_and(|n| n.contains(a)),
            },
        };
        if let Some(p) = from {
            if p.spec.source_address() == SourceAddress::None {
                peer.source_address = None;
            }
            (peer.password, peer.password_unavailable) =
                split(state.secrets.password(p.spec.password.as_ref()));
            peer.restart_time = p.spec.max_restart_time();
            peer.keepalive_time = p.spec.keepalive_time();
            peer.local_asn = p.spec.local_as_number.filter(|a| *a > 0);
            peer.reachable_by = p
                .spec
                .reachable_by
                .as_deref()
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
                .filter(|v| v.is_ipv4() == t.address.is_ipv4());
            let local_as = peer.local_asn.unwrap_or(me.asn);
            peer.keep_next_hop = t.asn != local_as && p.spec.next_hop_mode() == NextHopMode::Keep;
            peer.next_hop_self = p.spec.next_hop_mode() == NextHopMode::SelfAddr;
            peer.ttl_security = p.spec.ttl_security.filter(|t| *t > 0);
            peer.num_allow_local_as = p
                .spec
                .num_allowed_local_as_numbers
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0);
            peer.source = p.metadata.name.clone();
            set_bfd(&mut peer, bfd_of(state, p.spec.bfd.as_ref()));
            peer.max_prefixes = p.spec.max_prefixes.filter(|n| *n > 0);
            match filters_of(state, p.spec.filters.as_deref().unwrap_or_default()) {
                Ok((import, export)) => (peer.import_filter, peer.export_filter) = (import, export),
                Err(why) => {
                    peer.password_unavailable = Some(match peer.password_unavailable.take() {
                        Some(pw) => format!("{pw}; {why}"),
                        None => why,
                    });
                }
            }
        }
        self.out.insert(key, peer);
    }
}

/// Every BGP session `node` should have, sorted by address.
pub fn compute(state: &ClusterState, node: &str) -> Vec<Peer> {
    let facts = state.all_facts();
    let Some(me) = facts.get(node) else {
        return Vec::new();
    };
    let mut em = Emitter {
        me,
        out: BTreeMap::new(),
    };

    // 1. Explicit peers: globals first, so node-specific duplicates lose.
    for global_pass in [true, false] {
        for p in state.bgp_peers.values() {
            if is_global(p) != global_pass {
                continue;
            }
            if !local_side(p, &facts).iter().any(|f| f.name == me.name) {
                continue;
            }
            let kind = if global_pass {
                PeerKind::Global
            } else {
                PeerKind::NodeSpecific
            };
            for t in peer_side(p, state, &facts).0 {
                em.emit(state, t, kind, Some(p));
            }
        }
    }

    // 2. Reverse peerings: we are on the peer side of some BGPPeer.
    for p in state.bgp_peers.values() {
        let (_, peer_nodes) = peer_side(p, state, &facts);
        if !peer_nodes.contains(&me.name) {
            continue;
        }
        let by_label = p.spec.peer_selector().is_some();
        let (v4, v6) = if by_label {
            (true, true)
        } else {
            let ip = p.spec.peer_address().map(|a| a.ip);
            (
                ip.is_some_and(|i| i.is_ipv4()),
                ip.is_some_and(|i| i.is_ipv6()),
            )
        };
        for other in local_side(p, &facts) {
            for t in node_targets(other, v4, v6) {
                em.emit(state, t, PeerKind::NodeSpecific, Some(p));
            }
        }
    }

    // 3. The mesh.
    if me.rr_cluster_id.is_none() && state.mesh_enabled() {
        let global = state.global_bgp();
        let mesh_password = split(
            state
                .secrets
                .password(global.and_then(|c| c.spec.node_mesh_password.as_ref())),
        );
        let restart = global
            .and_then(|c| c.spec.node_mesh_max_restart_time())
            .unwrap_or(MESH_RESTART_TIME);
        let mesh_bfd = bfd_of(state, global.and_then(|c| c.spec.node_mesh_bfd.as_ref()));
        for other in facts.values() {
            if other.name == me.name || other.rr_cluster_id.is_some() {
                continue;
            }
            for t in node_targets(other, true, true) {
                let key = (t.address, t.port);
                let mine = match t.address {
                    IpAddr::V4(_) => me.ipv4.map(|a| a.ip().to_string()),
                    IpAddr::V6(_) => me.ipv6.map(|a| a.ip().to_string()),
                };
                let passive = mine.is_some_and(|m| t.address.to_string() > m);
                let existed = em.out.contains_key(&key);
                em.emit(state, t, PeerKind::Mesh, None);
                if !existed && let Some(peer) = em.out.get_mut(&key) {
                    peer.passive = passive;
                    peer.restart_time = Some(restart);
                    (peer.password, peer.password_unavailable) = mesh_password.clone();
                    set_bfd(peer, mesh_bfd.clone());
                }
            }
        }
    }

    em.out.into_values().collect()
}
