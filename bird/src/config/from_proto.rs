//! What confd pushes over `BgpConfigService.Apply`, as a [`Config`]: the
//! same type the TOML file gives, so both go through one validation and
//! one apply path. Zeroes mean Calico's defaults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnetwork::IpNetwork;
use proto::bgpconfig as pb;

use super::{
    BfdAuthConfig, BfdAuthKind, BfdConfig, Community, Config, ConfigError, FamilyName, PeerConfig,
    PrefixCommunitiesConfig, SessionConfig,
};
use crate::policy::{FilterAction, FilterRule, MatchOp, PeerPolicy};

/// Graceful-restart time when confd says 0 (Calico's default).
const DEFAULT_RESTART_TIME: u16 = 120;
const DEFAULT_HOLD_TIME: u16 = 90;
const DEFAULT_PORT: u16 = 179;

fn bad(m: String) -> ConfigError {
    ConfigError::Invalid(m)
}

fn ip(a: &Option<proto::common::IpAddress>, what: &str) -> Result<Option<IpAddr>, ConfigError> {
    a.as_ref()
        .map(|a| IpAddr::try_from(a).map_err(|e| bad(format!("{what}: {e}"))))
        .transpose()
}

fn v4(a: &Option<proto::common::IpAddress>, what: &str) -> Result<Option<Ipv4Addr>, ConfigError> {
    match ip(a, what)? {
        None => Ok(None),
        Some(IpAddr::V4(v)) => Ok(Some(v)),
        Some(IpAddr::V6(v)) => Err(bad(format!("{what} must be an IPv4 address, got {v}"))),
    }
}

fn prefixes(v: &[proto::common::IpPrefix], what: &str) -> Result<Vec<IpNetwork>, ConfigError> {
    v.iter()
        .map(|p| IpNetwork::try_from(p).map_err(|e| bad(format!("{what}: {e}"))))
        .collect()
}

fn port(p: u32, what: &str) -> Result<u16, ConfigError> {
    match p {
        0 => Ok(DEFAULT_PORT),
        p => u16::try_from(p).map_err(|_| bad(format!("{what} {p} is not a TCP port"))),
    }
}

fn peer(p: &pb::BgpPeerConfig) -> Result<PeerConfig, ConfigError> {
    let address = ip(&p.address, "peer address")?
        .ok_or_else(|| bad(format!("peer {:?} has no address", p.name)))?;
    let who = || format!("peer {} ({})", address, p.name);
    let hold_time = match p.keepalive_time_secs {
        0 => DEFAULT_HOLD_TIME,
        k => u16::try_from(k.saturating_mul(3))
            .map_err(|_| bad(format!("{}: keepalive time {k} s is too long", who())))?
            .max(3),
    };
    let graceful_restart_time = match p.restart_time_secs {
        0 => DEFAULT_RESTART_TIME,
        // The capability has 12 bits for it.
        t => u16::try_from(t.min(0x0fff)).unwrap_or(0x0fff),
    };
    let ttl_hops = u8::try_from(p.ttl_security).map_err(|_| {
        bad(format!(
            "{}: ttl_security {} is more than 255 hops",
            who(),
            p.ttl_security
        ))
    })?;
    let session = SessionConfig {
        port: port(p.port, "peer port")?,
        passive: p.passive,
        hold_time,
        password: (!p.password.is_empty()).then(|| p.password.clone()),
        ttl_security: ttl_hops > 0,
        ttl_security_hops: ttl_hops.max(1),
        local_address: ip(&p.source_address, "peer source address")?,
        // A new node's first attempts hit peers whose confd has not
        // told them about it yet (they close the connection): retrying
        // after 1 s, never waiting more than 5 s (Calico's BIRD retries
        // every 5 s), lets nodes join quickly even when a whole cluster
        // starts at once and the closures count as session errors.
        connect_retry: 1,
        connect_retry_max: 5,
        error_wait_max: 5,
        graceful_restart_time,
        families: vec![if address.is_ipv4() {
            FamilyName::Ipv4
        } else {
            FamilyName::Ipv6
        }],
        held_down: (!p.password_unavailable.is_empty()).then(|| p.password_unavailable.clone()),
    };
    let bfd = match &p.bfd {
        None => None,
        Some(b) => Some(BfdConfig {
            interval_ms: if b.interval_ms == 0 {
                BfdConfig::default().interval_ms
            } else {
                b.interval_ms
            },
            multiplier: match b.multiplier {
                0 => BfdConfig::default().multiplier,
                m => u8::try_from(m)
                    .map_err(|_| bad(format!("{}: bfd multiplier {m} is over 255", who())))?,
            },
            multihop: b.multihop,
            auth: bfd_auth(b).map_err(|e| bad(format!("{}: {e}", who())))?,
        }),
    };
    Ok(PeerConfig {
        policy: PeerPolicy {
            rr_client: p.rr_client,
            calico_node: p.calico_node,
            keep_next_hop: p.keep_next_hop,
            next_hop_self: p.next_hop_self,
            export_learned: p.export_learned,
            max_prefixes: (p.max_prefixes > 0).then_some(p.max_prefixes),
            allow_local_as: p.num_allow_local_as,
            local_asn: (p.local_asn > 0).then_some(p.local_asn),
            import_filter: filter_rules(&p.import_filter)
                .map_err(|e| bad(format!("{}: import_filter: {e}", who())))?,
            export_filter: filter_rules(&p.export_filter)
                .map_err(|e| bad(format!("{}: export_filter: {e}", who())))?,
            ..PeerPolicy::new(address, p.asn)
        },
        session,
        prefixes: Vec::new(),
        name: (!p.name.is_empty()).then(|| p.name.clone()),
        bfd,
    })
}

/// BGPFilter rules off the wire (their consistency is
/// [`Config::validate`]'s).
fn filter_rules(rules: &[pb::FilterRule]) -> Result<std::sync::Arc<[FilterRule]>, String> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = |e: String| format!("rule {i}: {e}");
            let action = match pb::FilterAction::try_from(r.action) {
                Ok(pb::FilterAction::Accept) => FilterAction::Accept,
                Ok(pb::FilterAction::Reject) => FilterAction::Reject,
                Err(_) => return Err(at(format!("action {} is unknown", r.action))),
            };
            let op = match pb::MatchOperator::try_from(r.match_operator) {
                Ok(pb::MatchOperator::Unspecified) => None,
                Ok(pb::MatchOperator::Equal) => Some(MatchOp::Equal),
                Ok(pb::MatchOperator::NotEqual) => Some(MatchOp::NotEqual),
                Ok(pb::MatchOperator::In) => Some(MatchOp::In),
                Ok(pb::MatchOperator::NotIn) => Some(MatchOp::NotIn),
                Err(_) => {
                    return Err(at(format!(
                        "match_operator {} is unknown",
                        r.match_operator
                    )));
                }
            };
            let cidr = r
                .cidr
                .as_ref()
                .map(IpNetwork::try_from)
                .transpose()
                .map_err(|e| at(format!("cidr: {e}")))?;
            let len = |v: Option<u32>, what: &str| {
                v.map(|l| u8::try_from(l).map_err(|_| at(format!("{what} {l} is too long"))))
                    .transpose()
            };
            Ok(FilterRule {
                action,
                ipv4: Some(r.ipv4),
                op,
                cidr,
                min_len: len(r.min_len, "min_len")?,
                max_len: len(r.max_len, "max_len")?,
                remote_peers_only: r.remote_peers_only,
                interface: (!r.interface.is_empty()).then(|| r.interface.clone()),
            })
        })
        .collect()
}

/// A BFD config's authentication, checked as far as the wire allows (the
/// key's length is [`Config::validate`]'s).
fn bfd_auth(b: &pb::BfdConfig) -> Result<Option<BfdAuthConfig>, String> {
    let kind = match pb::BfdAuthType::try_from(b.auth_type) {
        Ok(pb::BfdAuthType::Unspecified) => return Ok(None),
        Ok(pb::BfdAuthType::KeyedSha1) => BfdAuthKind::KeyedSha1,
        Ok(pb::BfdAuthType::MeticulousKeyedSha1) => BfdAuthKind::MeticulousKeyedSha1,
        Err(_) => {
            return Err(format!(
                "bfd auth_type {} is unknown (this bird knows keyed and meticulous keyed SHA1)",
                b.auth_type
            ));
        }
    };
    let key_id = u8::try_from(b.auth_key_id)
        .map_err(|_| format!("bfd auth_key_id {} is over 255", b.auth_key_id))?;
    Ok(Some(BfdAuthConfig {
        kind,
        key_id,
        key: b.auth_key.clone(),
    }))
}

impl Config {
    /// What confd pushed, as a configuration. The listen address is
    /// confd's when it sends one (bindMode NodeIP), else keeps the IP of
    /// `current` (the TOML file's); with neither it is every address, IPv4
    /// and IPv6. The port is confd's.
    pub fn from_proto(pb: &pb::BgpConfig, current: Option<&Config>) -> Result<Config, ConfigError> {
        let router_id = v4(&pb.router_id, "router_id")?.ok_or_else(|| {
            bad("router_id is missing; confd must send this node's IPv4 address".into())
        })?;
        let pushed = ip(&pb.listen_address, "listen_address")?;
        let listen_ip = match pushed {
            Some(a) => a,
            None => current
                .map(|c| c.listen.ip())
                .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
        };
        let listen_also = match pushed {
            Some(_) => ip(&pb.listen_address_v6, "listen_address_v6")?,
            None => None,
        };
        let cfg = Config {
            router_id,
            asn: pb.asn,
            listen: SocketAddr::new(listen_ip, port(pb.listen_port, "listen_port")?),
            listen_also,
            advertise: prefixes(&pb.advertise, "advertise")?,
            pools: prefixes(&pb.pool_cidrs, "pool_cidrs")?,
            rr_cluster_id: v4(&pb.rr_cluster_id, "rr_cluster_id")?,
            prefix_communities: pb
                .prefix_communities
                .iter()
                .map(|pc| {
                    let cidr = pc
                        .cidr
                        .as_ref()
                        .ok_or_else(|| bad("prefix_communities entry without a cidr".into()))
                        .and_then(|c| {
                            IpNetwork::try_from(c)
                                .map_err(|e| bad(format!("prefix_communities: {e}")))
                        })?;
                    let communities = pc
                        .communities
                        .iter()
                        .map(|c| Community::Standard(*c).to_string())
                        .chain(pc.large_communities.iter().map(|l| {
                            Community::Large([l.global_admin, l.local_data1, l.local_data2])
                                .to_string()
                        }))
                        .collect();
                    Ok(PrefixCommunitiesConfig { cidr, communities })
                })
                .collect::<Result<_, ConfigError>>()?,
            ignored_interfaces: pb.ignored_interfaces.clone(),
            startup_deferral: current
                .map_or(Config::DEFAULT_STARTUP_DEFERRAL, |c| c.startup_deferral),
            // Not in the protocol yet: what the file set survives a push.
            node_networks: current.and_then(|c| c.node_networks.clone()),
            accept_default_route: current.is_some_and(|c| c.accept_default_route),
            accept_node_networks: current.is_some_and(|c| c.accept_node_networks),
            peers: pb.peers.iter().map(peer).collect::<Result<_, _>>()?,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::common::{IpAddress, IpPrefix};

    fn addr(s: &str) -> Option<IpAddress> {
        Some(s.parse::<IpAddr>().unwrap().into())
    }

    fn pfx(s: &str) -> IpPrefix {
        s.parse::<IpNetwork>().unwrap().into()
    }

    fn sample() -> pb::BgpConfig {
        pb::BgpConfig {
            node: "node-1".into(),
            router_id: addr("10.0.0.1"),
            asn: 64512,
            listen_port: 0,
            rr_cluster_id: None,
            peers: vec![
                pb::BgpPeerConfig {
                    name: "Mesh_10_0_0_2".into(),
                    address: addr("10.0.0.2"),
                    asn: 64512,
                    kind: pb::PeerKind::Mesh as i32,
                    passive: true,
                    restart_time_secs: 120,
                    calico_node: true,
                    ..Default::default()
                },
                pb::BgpPeerConfig {
                    name: "Global_10_0_0_254".into(),
                    address: addr("10.0.0.254"),
                    asn: 65000,
                    kind: pb::PeerKind::Global as i32,
                    password: "s3cret".into(),
                    keepalive_time_secs: 10,
                    ttl_security: 2,
                    max_prefixes: 100,
                    ..Default::default()
                },
            ],
            advertise: vec![pfx("10.65.1.0/26")],
            pool_cidrs: vec![pfx("10.65.0.0/16")],
            prefix_communities: vec![pb::PrefixCommunities {
                cidr: Some(pfx("10.65.0.0/16")),
                communities: vec![(65000 << 16) | 100],
                large_communities: vec![pb::LargeCommunity {
                    global_admin: 65000,
                    local_data1: 7,
                    local_data2: 8,
                }],
            }],
            listen_address: None,
            log_severity: String::new(),
            ignored_interfaces: Vec::new(),
            listen_address_v6: None,
        }
    }

    #[test]
    fn confd_config_becomes_the_same_config_toml_gives() {
        let c = Config::from_proto(&sample(), None).unwrap();
        assert_eq!(c.listen, "[::]:179".parse().unwrap());
        assert_eq!(c.originated(), vec!["10.65.1.0/26".parse().unwrap()]);
        let mesh = &c.peers[0];
        assert!(mesh.session.passive && mesh.policy.calico_node);
        assert_eq!(mesh.session.families, vec![FamilyName::Ipv4]);
        assert_eq!(
            (mesh.session.hold_time, mesh.session.graceful_restart_time),
            (90, 120)
        );
        let tor = &c.peers[1];
        assert_eq!(tor.session.password.as_deref(), Some("s3cret"));
        assert_eq!(tor.session.hold_time, 30);
        assert!(tor.session.ttl_security && tor.session.ttl_security_hops == 2);
        assert_eq!(tor.policy.max_prefixes, Some(100));
        let l = c.local_policy();
        assert_eq!(l.communities[0].communities, vec![(65000 << 16) | 100]);
        assert_eq!(l.communities[0].large, vec![[65000, 7, 8]]);
    }

    #[test]
    fn filter_rules_arrive_in_order_and_unknown_or_bad_ones_are_refused() {
        let mut pb = sample();
        pb.peers[1].export_filter = vec![
            pb::FilterRule {
                action: pb::FilterAction::Reject as i32,
                ipv4: true,
                match_operator: pb::MatchOperator::Equal as i32,
                cidr: Some(pfx("10.65.1.0/26")),
                ..Default::default()
            },
            pb::FilterRule {
                action: pb::FilterAction::Accept as i32,
                ipv4: true,
                remote_peers_only: true,
                ..Default::default()
            },
        ];
        pb.peers[1].import_filter = vec![pb::FilterRule {
            action: pb::FilterAction::Reject as i32,
            match_operator: pb::MatchOperator::NotIn as i32,
            cidr: Some(pfx("fd00::/8")),
            min_len: Some(16),
            ..Default::default()
        }];
        let c = Config::from_proto(&pb, None).unwrap();
        let tor = &c.peers[1].policy;
        assert_eq!(tor.export_filter.len(), 2);
        assert_eq!(tor.export_filter[0].op, Some(MatchOp::Equal));
        assert_eq!(
            tor.export_filter[0].cidr,
            Some("10.65.1.0/26".parse().unwrap())
        );
        assert!(tor.export_filter[1].remote_peers_only && tor.export_filter[1].cidr.is_none());
        assert_eq!(tor.import_filter[0].ipv4, Some(false));
        assert_eq!(tor.import_filter[0].min_len, Some(16));
        assert!(c.peers[0].policy.export_filter.is_empty());

        let mut unknown = pb.clone();
        unknown.peers[1].export_filter[0].action = 7;
        let e = Config::from_proto(&unknown, None).unwrap_err().to_string();
        assert!(
            e.contains("export_filter: rule 0: action 7 is unknown"),
            "{e}"
        );
        let mut wrong_family = pb.clone();
        wrong_family.peers[1].export_filter[0].ipv4 = false;
        let e = Config::from_proto(&wrong_family, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("export_filter[0]"), "{e}");
    }

    #[test]
    fn a_peer_whose_password_is_unavailable_is_held_down_with_the_reason() {
        let mut pb = sample();
        let why = "password secret kube-system/bgp-passwords has no key 'tor': session held down";
        pb.peers[1].password = String::new();
        pb.peers[1].password_unavailable = why.into();
        let c = Config::from_proto(&pb, None).unwrap();
        assert_eq!(c.peers[1].session.held_down.as_deref(), Some(why));
        assert_eq!(c.peers[1].session.password, None);
        assert_eq!(c.peers[0].session.held_down, None, "the other peer runs");
    }

    #[test]
    fn bfd_authentication_and_the_gtsm_hop_count_reach_the_session() {
        use crate::bfd::packet::AuthKind;
        let mut pb = sample();
        pb.peers[1].bfd = Some(pb::BfdConfig {
            multihop: true,
            auth_type: pb::BfdAuthType::MeticulousKeyedSha1 as i32,
            auth_key_id: 255,
            auth_key: "k3y".into(),
            ..Default::default()
        });
        let c = Config::from_proto(&pb, None).unwrap();
        let tor = &c.peers[1];
        let b = tor.bfd.as_ref().unwrap();
        let a = b.auth.as_ref().unwrap();
        assert_eq!((a.kind, a.key_id), (BfdAuthKind::MeticulousKeyedSha1, 255));
        assert_eq!(a.key, "k3y");
        assert!(!format!("{b:?}").contains("k3y"), "the key is not logged");
        let p = b.protection(&tor.session).unwrap();
        assert_eq!(
            p.key.map(|k| (k.kind, k.id)),
            Some((AuthKind::MeticulousKeyedSha1, 255))
        );
        // ttl_security 2: two hops away at most, so TTL 254 or more.
        assert_eq!(p.min_ttl, Some(254));
        // Without a hop count, multihop takes any TTL; single hop 255.
        pb.peers[1].ttl_security = 0;
        let c = Config::from_proto(&pb, None).unwrap();
        let p = c.peers[1]
            .bfd
            .as_ref()
            .unwrap()
            .protection(&c.peers[1].session);
        assert_eq!(p.unwrap().min_ttl, None);
        pb.peers[1].bfd.as_mut().unwrap().multihop = false;
        let c = Config::from_proto(&pb, None).unwrap();
        let p = c.peers[1]
            .bfd
            .as_ref()
            .unwrap()
            .protection(&c.peers[1].session);
        assert_eq!(p.unwrap().min_ttl, Some(255));
    }

    #[test]
    fn bad_bfd_authentication_is_refused_naming_the_field() {
        let err = |f: &dyn Fn(&mut pb::BfdConfig)| {
            let mut pb = sample();
            let mut b = pb::BfdConfig {
                auth_type: pb::BfdAuthType::KeyedSha1 as i32,
                auth_key_id: 1,
                auth_key: "k".into(),
                ..Default::default()
            };
            f(&mut b);
            pb.peers[1].bfd = Some(b);
            Config::from_proto(&pb, None)
                .and_then(|c| c.validate().map(|_| c))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&|b| b.auth_key_id = 256).contains("auth_key_id 256"));
        assert!(err(&|b| b.auth_type = 9).contains("auth_type 9"));
        assert!(err(&|b| b.auth_key = String::new()).contains("1 to 20 bytes"));
        assert!(err(&|b| b.auth_key = "x".repeat(21)).contains("1 to 20 bytes"));
    }

    #[test]
    fn listen_address_keeps_the_toml_ip() {
        let mut cur = Config::from_proto(&sample(), None).unwrap();
        cur.listen = "10.0.0.1:179".parse().unwrap();
        let mut pb = sample();
        pb.listen_port = 1179;
        let c = Config::from_proto(&pb, Some(&cur)).unwrap();
        assert_eq!(c.listen, "10.0.0.1:1179".parse().unwrap());
    }

    #[test]
    fn bind_mode_node_ip_listens_on_confds_address_only() {
        let mut cur = Config::from_proto(&sample(), None).unwrap();
        cur.listen = "10.0.0.1:179".parse().unwrap();
        let mut pb = sample();
        pb.listen_address = addr("10.0.0.7");
        let c = Config::from_proto(&pb, Some(&cur)).unwrap();
        assert_eq!(c.listen, "10.0.0.7:179".parse().unwrap());
        // A dual-stack node: its IPv6 address too, on the same port.
        pb.listen_address_v6 = addr("fd00::7");
        let c = Config::from_proto(&pb, Some(&cur)).unwrap();
        assert_eq!(
            c.listen_addrs(),
            [
                "10.0.0.7:179".parse().unwrap(),
                "[fd00::7]:179".parse().unwrap()
            ]
        );
        // Without an IPv4 one it means nothing.
        let mut no_v4 = pb.clone();
        no_v4.listen_address = None;
        let c = Config::from_proto(&no_v4, None).unwrap();
        assert_eq!(c.listen_addrs(), ["[::]:179".parse().unwrap()]);
        // Never the same address twice.
        let mut twice = pb.clone();
        twice.listen_address_v6 = addr("10.0.0.7");
        let e = Config::from_proto(&twice, None).unwrap_err().to_string();
        assert!(e.contains("listen_also"), "{e}");
        pb.listen_address_v6 = None;
        pb.listen_address = Some(IpAddress {
            addr: vec![1, 2, 3],
        });
        let e = Config::from_proto(&pb, None).unwrap_err().to_string();
        assert!(e.contains("listen_address"), "{e}");
    }

    #[test]
    fn bad_input_is_an_error_that_names_the_field() {
        let mut pb = sample();
        pb.router_id = addr("fd00::1");
        assert!(
            Config::from_proto(&pb, None)
                .unwrap_err()
                .to_string()
                .contains("router_id")
        );
        let mut pb = sample();
        pb.advertise.push(IpPrefix {
            addr: vec![10, 0, 0],
            prefix_len: 8,
        });
        assert!(
            Config::from_proto(&pb, None)
                .unwrap_err()
                .to_string()
                .contains("advertise")
        );
        let mut pb = sample();
        pb.peers[0].address = None;
        assert!(
            Config::from_proto(&pb, None)
                .unwrap_err()
                .to_string()
                .contains("no address")
        );
    }
}
