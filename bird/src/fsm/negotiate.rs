//! OPEN messages in both directions of the FSM: the OPEN we send, and
//! checking the peer's against our configuration (RFC 4271 section 6.2)
//! to find what the session will use.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::Config;
use crate::packet::Family;
use crate::packet::capability::{Capability, GrFamily};
use crate::packet::notification::{Notification, code, open_sub};
use crate::packet::open::Open;

impl Config {
    pub fn internal(&self) -> bool {
        self.local_as == self.peer_as
    }

    /// The OPEN we send.
    pub fn open(&self) -> Open {
        let mut caps: Vec<Capability> = self
            .families
            .iter()
            .map(|f| Capability::multiprotocol(*f))
            .collect();
        caps.push(Capability::RouteRefresh);
        caps.push(Capability::FourOctetAs(self.local_as));
        if let Some(gr) = self.graceful_restart {
            caps.push(Capability::GracefulRestart {
                restarting: gr.restarting,
                notification: true,
                restart_time: gr.restart_time.min(0x0fff),
                // felix keeps the kernel routes while bird restarts.
                families: self
                    .families
                    .iter()
                    .map(|f| GrFamily {
                        afi: f.afi(),
                        safi: f.safi(),
                        forwarding_preserved: true,
                    })
                    .collect(),
            });
        }
        Open::new(self.local_as, self.hold_time, self.local_id, caps)
    }
}

/// What both OPENs agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_id: Ipv4Addr,
    pub peer_as: u32,
    /// Seconds; 0 means no keepalives and no hold timer.
    pub hold_time: u16,
    pub four_octet_as: bool,
    pub families: Vec<Family>,
    pub route_refresh: bool,
    /// The peer's graceful-restart capability, if it sent one.
    pub peer_gr: Option<PeerGr>,
}

/// The graceful-restart capability a peer sent (RFC 4724 section 3,
/// RFC 8538 section 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGr {
    /// Restart State bit: the peer has just restarted.
    pub restarting: bool,
    /// The "N" bit.
    pub notification: bool,
    /// How long to keep its routes when the session drops, seconds.
    pub restart_time: u16,
    /// The families it can restart gracefully, and whether it kept its
    /// forwarding state for each across the restart that led to this
    /// session (the "F" bit).
    pub families: Vec<(Family, bool)>,
}

impl PeerGr {
    /// Whether the peer preserved forwarding for `family` (the family is
    /// listed with the F bit set).
    pub fn preserved(&self, family: Family) -> bool {
        self.families.iter().any(|&(f, fwd)| f == family && fwd)
    }

    pub fn lists(&self, family: Family) -> bool {
        self.families.iter().any(|&(f, _)| f == family)
    }
}

impl Negotiated {
    /// RFC 8538 section 4: graceful restart applies to NOTIFICATIONs only
    /// when both sides sent the "N" bit.
    pub fn notification_gr(&self, ours: &Config) -> bool {
        ours.graceful_restart.is_some() && self.peer_gr.as_ref().is_some_and(|g| g.notification)
    }

    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(u64::from(self.hold_time / 3))
    }
}

/// Checks the peer's OPEN against our configuration (RFC 4271 section
/// 6.2) and works out what the session will use.
pub fn negotiate(cfg: &Config, open: &Open) -> Result<Negotiated, Notification> {
    let peer_as = open.asn();
    if peer_as != cfg.peer_as {
        return Err(Notification::with_data(
            code::OPEN_MESSAGE,
            open_sub::BAD_PEER_AS,
            open.my_as.to_be_bytes(),
        ));
    }
    // "An implementation MUST reject Hold Time values of one or two
    // seconds."
    if matches!(open.hold_time, 1 | 2) {
        return Err(Notification::new(
            code::OPEN_MESSAGE,
            open_sub::UNACCEPTABLE_HOLD_TIME,
        ));
    }
    // RFC 6286 section 2.2: the identifier must be non-zero, and unique
    // within an AS (so an internal peer cannot share ours).
    if open.bgp_id.is_unspecified() || (cfg.internal() && open.bgp_id == cfg.local_id) {
        return Err(Notification::new(
            code::OPEN_MESSAGE,
            open_sub::BAD_BGP_IDENTIFIER,
        ));
    }
    let offered: Vec<Family> = open
        .capabilities
        .iter()
        .filter_map(|c| match c {
            Capability::Multiprotocol { afi, safi } => Family::from_afi_safi(*afi, *safi),
            _ => None,
        })
        .collect();
    let any_mp = open
        .capabilities
        .iter()
        .any(|c| matches!(c, Capability::Multiprotocol { .. }));
    // RFC 4760 section 8: a speaker that sends no multiprotocol capability
    // speaks IPv4 unicast only.
    let theirs = if any_mp {
        offered
    } else {
        vec![Family::Ipv4Unicast]
    };
    let families = cfg
        .families
        .iter()
        .copied()
        .filter(|f| theirs.contains(f))
        .collect();
    Ok(Negotiated {
        peer_id: open.bgp_id,
        peer_as,
        hold_time: cfg.hold_time.min(open.hold_time),
        four_octet_as: open.four_octet_as().is_some(),
        families,
        route_refresh: open.has(&Capability::RouteRefresh),
        peer_gr: open.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart {
                restarting,
                notification,
                restart_time,
                families,
            } => Some(PeerGr {
                restarting: *restarting,
                notification: *notification,
                restart_time: *restart_time,
                families: families
                    .iter()
                    .filter_map(|f| {
                        Family::from_afi_safi(f.afi, f.safi).map(|x| (x, f.forwarding_preserved))
                    })
                    .collect(),
            }),
            _ => None,
        }),
    })
}
