//! Set elements, kept between renders: for every endpoint set (addresses,
//! named ports), which endpoint puts which elements in. A render compares
//! the snapshot's endpoints with the last ones and re-evaluates only the
//! endpoints that came, went or changed against each set; a set none of
//! them affects is handed on as the same allocation. A set asked for for
//! the first time is filled from every endpoint.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ipnetwork::IpNetwork;

use super::{
    Desired, EndpointMatch, Family, Labeled, SetDef, SetKind, SetRequests, comment_text,
    endpoint_match_key, selects,
};
use crate::policy::Endpoint;

/// An endpoint as last seen, with the labels selectors match.
#[derive(Debug)]
struct Seen {
    ep: Endpoint,
    labels: BTreeMap<String, String>,
    ns_labels: BTreeMap<String, String>,
}

impl Seen {
    fn new(ep: &Endpoint) -> Seen {
        Seen {
            labels: ep.selector_labels(),
            ns_labels: ep.namespace_selector_labels(),
            ep: ep.clone(),
        }
    }

    fn labeled(&self) -> Labeled<'_> {
        Labeled {
            ep: &self.ep,
            labels: &self.labels,
            ns_labels: &self.ns_labels,
        }
    }
}

/// A filled endpoint set.
#[derive(Debug)]
struct Filled {
    /// Endpoint id → its elements (only endpoints that have some).
    members: BTreeMap<String, Vec<String>>,
    def: Arc<SetDef>,
}

/// What an endpoint set holds.
enum Request<'a> {
    Addr(Family, &'a EndpointMatch),
    NamedPort(Family, &'a str),
}

impl Request<'_> {
    fn elements_of(&self, s: &Seen) -> Vec<String> {
        match *self {
            Request::Addr(f, m) => {
                if !selects(m, &s.labeled()) {
                    return Vec::new();
                }
                s.ep.addresses
                    .iter()
                    .filter(|a| f.holds(**a))
                    .map(ToString::to_string)
                    .collect()
            }
            Request::NamedPort(f, name) => {
                let Some(np) = s.ep.named_ports.get(name) else {
                    return Vec::new();
                };
                s.ep.addresses
                    .iter()
                    .filter(|a| f.holds(**a))
                    .map(|a| format!("{a} . {} . {}", np.protocol.number(), np.port))
                    .collect()
            }
        }
    }

    fn def(&self, members: &BTreeMap<String, Vec<String>>) -> Arc<SetDef> {
        let elements: BTreeSet<String> = members.values().flatten().cloned().collect();
        let (kind, comment) = match *self {
            Request::Addr(f, m) => (SetKind::Addr(f), comment_text(&endpoint_match_key(m))),
            Request::NamedPort(f, name) => (
                SetKind::NamedPort(f),
                comment_text(&format!("named port {name}")),
            ),
        };
        Arc::new(SetDef {
            kind,
            comment,
            elements,
        })
    }
}

#[derive(Debug, Default)]
pub(super) struct SetCache {
    /// Every endpoint of the last render.
    seen: BTreeMap<String, Seen>,
    /// Endpoint sets by name.
    filled: HashMap<String, Filled>,
    /// Net sets by name (the name is a hash of the nets).
    nets: HashMap<String, Arc<SetDef>>,
}

impl SetCache {
    /// Brings the endpoints up to `now`; the ids that came, went or
    /// changed (to hand to [`SetCache::fill`]).
    pub(super) fn update(&mut self, now: &BTreeMap<String, Endpoint>) -> Vec<String> {
        let mut changed = Vec::new();
        self.seen.retain(|id, _| {
            let keep = now.contains_key(id);
            if !keep {
                changed.push(id.clone());
            }
            keep
        });
        for (id, ep) in now {
            match self.seen.get(id) {
                Some(s) if s.ep == *ep => {}
                _ => {
                    changed.push(id.clone());
                    self.seen.insert(id.clone(), Seen::new(ep));
                }
            }
        }
        changed
    }

    /// Puts every requested set, with its elements, into `d`; `changed`:
    /// the endpoints [`SetCache::update`] found changed since the last
    /// fill.
    pub(super) fn fill(&mut self, d: &mut Desired, req: SetRequests, changed: &[String]) {
        let mut before = std::mem::take(&mut self.filled);
        let requests = req
            .addr
            .iter()
            .map(|(name, r)| (name, Request::Addr(r.0, &r.1)))
            .chain(
                req.port
                    .iter()
                    .map(|(name, r)| (name, Request::NamedPort(r.0, &r.1))),
            );
        for (name, r) in requests {
            let filled = match before.remove(name) {
                Some(mut f) => {
                    let mut dirty = false;
                    for id in changed {
                        let now = self
                            .seen
                            .get(id)
                            .map(|s| r.elements_of(s))
                            .unwrap_or_default();
                        let was = f.members.get(id).map_or(&[][..], Vec::as_slice);
                        if was != now.as_slice() {
                            dirty = true;
                            if now.is_empty() {
                                f.members.remove(id);
                            } else {
                                f.members.insert(id.clone(), now);
                            }
                        }
                    }
                    if dirty {
                        f.def = r.def(&f.members);
                    }
                    f
                }
                None => {
                    let members: BTreeMap<String, Vec<String>> = self
                        .seen
                        .iter()
                        .map(|(id, s)| (id.clone(), r.elements_of(s)))
                        .filter(|(_, e)| !e.is_empty())
                        .collect();
                    Filled {
                        def: r.def(&members),
                        members,
                    }
                }
            };
            d.sets.insert(name.clone(), filled.def.clone());
            self.filled.insert(name.clone(), filled);
        }
        let mut nets = HashMap::with_capacity(req.net.len());
        for (name, r) in &req.net {
            let def = self.nets.remove(name).unwrap_or_else(|| net_set(r.0, &r.1));
            d.sets.insert(name.clone(), def.clone());
            nets.insert(name.clone(), def);
        }
        self.nets = nets;
    }
}

fn net_set(f: Family, nets: &[IpNetwork]) -> Arc<SetDef> {
    let text: Vec<String> = nets.iter().map(ToString::to_string).collect();
    Arc::new(SetDef {
        kind: SetKind::Net(f),
        comment: comment_text(&format!("nets {}", text.join(","))),
        elements: text.iter().cloned().collect(),
    })
}
