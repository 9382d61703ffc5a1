//! Adj-RIB-In: the routes one peer sent us, after RFC 7606 handling.
//!
//! Prefixes map to a shared `Arc<PathAttrs>`: one UPDATE's prefixes share
//! one attribute set, and identical sets from different UPDATEs are
//! interned to one allocation, the shape the Loc-RIB and best-path
//! selection of the next step will take routes in.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ipnetwork::IpNetwork;

use crate::packet::Family;
use crate::packet::attributes::{DecodeCtx, PathAttrs};
use crate::packet::error::AttrIssue;
use crate::packet::update::Update;

#[derive(Debug, Default)]
pub struct AdjRibIn {
    routes: HashMap<IpNetwork, Arc<PathAttrs>>,
    interned: HashSet<Arc<PathAttrs>>,
    v4: usize,
}

/// What one UPDATE did to the table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub announced: usize,
    pub withdrawn: usize,
    pub end_of_rib: Option<Family>,
    pub issues: Vec<AttrIssue>,
    pub treat_as_withdraw: bool,
    /// Prefixes of families the session did not negotiate, ignored.
    pub ignored: usize,
}

impl AdjRibIn {
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn count(&self, family: Family) -> usize {
        match family {
            Family::Ipv4Unicast => self.v4,
            Family::Ipv6Unicast => self.routes.len() - self.v4,
        }
    }

    pub fn get(&self, net: &IpNetwork) -> Option<&Arc<PathAttrs>> {
        self.routes.get(net)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpNetwork, &Arc<PathAttrs>)> {
        self.routes.iter()
    }

    /// A copy of the table that holds no lock: cheap `Arc` clones.
    pub fn snapshot(&self) -> Vec<(IpNetwork, Arc<PathAttrs>)> {
        self.routes.iter().map(|(n, a)| (*n, a.clone())).collect()
    }

    pub fn clear(&mut self) {
        self.routes.clear();
        self.interned.clear();
        self.v4 = 0;
    }

    fn intern(&mut self, attrs: PathAttrs) -> Arc<PathAttrs> {
        if let Some(a) = self.interned.get(&attrs) {
            return a.clone();
        }
        let a = Arc::new(attrs);
        self.interned.insert(a.clone());
        a
    }

    pub fn insert(&mut self, net: IpNetwork, attrs: Arc<PathAttrs>) {
        if self.routes.insert(net, attrs).is_none() && net.is_ipv4() {
            self.v4 += 1;
        }
    }

    pub fn remove(&mut self, net: &IpNetwork) -> bool {
        let gone = self.routes.remove(net).is_some();
        if gone && net.is_ipv4() {
            self.v4 -= 1;
        }
        gone
    }

    /// Drops interned attribute sets no route uses any more.
    fn collect_garbage(&mut self) {
        if self.interned.len() > 64 && self.interned.len() > self.routes.len() {
            self.interned.retain(|a| Arc::strong_count(a) > 1);
        }
    }

    /// Applies one decoded UPDATE. Families outside `families` (not
    /// negotiated) are ignored.
    pub fn apply(&mut self, u: &Update<'_>, ctx: &DecodeCtx, families: &[Family]) -> Applied {
        let mut out = Applied {
            issues: u.attrs.issues.clone(),
            treat_as_withdraw: u.treat_as_withdraw(),
            end_of_rib: u.end_of_rib(),
            ..Applied::default()
        };
        let v4 = families.contains(&Family::Ipv4Unicast);
        let mut withdraw = |rib: &mut Self, nets: &mut dyn Iterator<Item = IpNetwork>, ok: bool| {
            for n in nets {
                if !ok {
                    out.ignored += 1;
                } else if rib.remove(&n) {
                    out.withdrawn += 1;
                }
            }
        };
        withdraw(self, &mut u.withdrawn.clone(), v4);
        if let Some(w) = &u.mp_unreach {
            withdraw(self, &mut w.withdrawn.clone(), families.contains(&w.family));
        }
        if out.treat_as_withdraw {
            // RFC 7606 section 2: "the UPDATE message [...] is processed as
            // though all contained routes had been withdrawn".
            withdraw(self, &mut u.nlri.clone(), v4);
            if let Some(r) = &u.mp_reach {
                withdraw(self, &mut r.nlri.clone(), families.contains(&r.family));
            }
            return out;
        }
        if !u.nlri.is_empty() {
            if v4 {
                let attrs = self.intern(u.ipv4_attrs(ctx));
                for n in u.nlri.clone() {
                    self.insert(n, attrs.clone());
                    out.announced += 1;
                }
            } else {
                out.ignored += u.nlri.clone().count();
            }
        }
        if let (Some(r), Some(attrs)) = (&u.mp_reach, u.mp_attrs(ctx)) {
            if families.contains(&r.family) {
                let attrs = self.intern(attrs);
                for n in r.nlri.clone() {
                    self.insert(n, attrs.clone());
                    out.announced += 1;
                }
            } else {
                out.ignored += r.nlri.clone().count();
            }
        }
        self.collect_garbage();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::aspath::AsPath;
    use crate::packet::update::{decode, encode_announce, encode_withdraw};

    const CTX: DecodeCtx = DecodeCtx {
        four_octet_as: true,
        external: true,
        peer_as: 65001,
        local_v4: None,
    };
    const BOTH: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

    fn attrs(nh: &str) -> PathAttrs {
        PathAttrs {
            as_path: AsPath::sequence([65001]),
            next_hop: Some(nh.parse().unwrap()),
            ..Default::default()
        }
    }

    fn nets(v: &[&str]) -> Vec<IpNetwork> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn apply(rib: &mut AdjRibIn, msg: &[u8], families: &[Family]) -> Applied {
        let u = decode(&msg[19..], &CTX).unwrap();
        rib.apply(&u, &CTX, families)
    }

    #[test]
    fn prefixes_of_one_update_share_one_attribute_set() {
        let mut rib = AdjRibIn::default();
        let m = encode_announce(
            &attrs("10.0.0.1"),
            &nets(&["10.1.0.0/16", "10.2.0.0/16"]),
            Family::Ipv4Unicast,
            true,
        )
        .unwrap();
        let a = apply(&mut rib, &m[0], &BOTH);
        assert_eq!(a.announced, 2);
        let x = rib.get(&"10.1.0.0/16".parse().unwrap()).unwrap().clone();
        let y = rib.get(&"10.2.0.0/16".parse().unwrap()).unwrap();
        assert!(Arc::ptr_eq(&x, y));
        // The same attributes in another UPDATE are interned too.
        let m = encode_announce(
            &attrs("10.0.0.1"),
            &nets(&["10.3.0.0/16"]),
            Family::Ipv4Unicast,
            true,
        )
        .unwrap();
        apply(&mut rib, &m[0], &BOTH);
        assert!(Arc::ptr_eq(
            &x,
            rib.get(&"10.3.0.0/16".parse().unwrap()).unwrap()
        ));
    }

    #[test]
    fn withdrawals_remove_and_counts_follow_both_families() {
        let mut rib = AdjRibIn::default();
        let m4 = encode_announce(
            &attrs("10.0.0.1"),
            &nets(&["10.1.0.0/16"]),
            Family::Ipv4Unicast,
            true,
        )
        .unwrap();
        let m6 = encode_announce(
            &attrs("fd00::1"),
            &nets(&["fd00:1::/64", "fd00:2::/64"]),
            Family::Ipv6Unicast,
            true,
        )
        .unwrap();
        apply(&mut rib, &m4[0], &BOTH);
        apply(&mut rib, &m6[0], &BOTH);
        assert_eq!(
            (
                rib.count(Family::Ipv4Unicast),
                rib.count(Family::Ipv6Unicast)
            ),
            (1, 2)
        );
        let w = encode_withdraw(&nets(&["fd00:1::/64"]), Family::Ipv6Unicast);
        assert_eq!(apply(&mut rib, &w[0], &BOTH).withdrawn, 1);
        let w = encode_withdraw(&nets(&["10.1.0.0/16"]), Family::Ipv4Unicast);
        apply(&mut rib, &w[0], &BOTH);
        assert_eq!(
            (
                rib.count(Family::Ipv4Unicast),
                rib.count(Family::Ipv6Unicast)
            ),
            (0, 1)
        );
    }

    #[test]
    fn treat_as_withdraw_removes_the_announced_prefixes() {
        let mut rib = AdjRibIn::default();
        let m = encode_announce(
            &attrs("10.0.0.1"),
            &nets(&["10.1.0.0/16"]),
            Family::Ipv4Unicast,
            true,
        )
        .unwrap();
        apply(&mut rib, &m[0], &BOTH);
        // Same prefix, now with a 3-byte COMMUNITIES attribute.
        let mut bad = m[0].to_vec();
        let attr_len = u16::from_be_bytes([bad[21], bad[22]]);
        let at = 23 + usize::from(attr_len);
        bad.splice(at..at, [0xc0, 8, 3, 0, 0, 1]);
        let attr_len = (attr_len + 6).to_be_bytes();
        bad[21] = attr_len[0];
        bad[22] = attr_len[1];
        let a = apply(&mut rib, &bad, &BOTH);
        assert!(a.treat_as_withdraw);
        assert_eq!(a.withdrawn, 1);
        assert!(rib.is_empty());
    }

    #[test]
    fn families_not_negotiated_are_ignored() {
        let mut rib = AdjRibIn::default();
        let m6 = encode_announce(
            &attrs("fd00::1"),
            &nets(&["fd00:1::/64"]),
            Family::Ipv6Unicast,
            true,
        )
        .unwrap();
        let a = apply(&mut rib, &m6[0], &[Family::Ipv4Unicast]);
        assert_eq!((a.announced, a.ignored), (0, 1));
        assert!(rib.is_empty());
    }
}
