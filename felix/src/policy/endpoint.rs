//! What policy is evaluated against: endpoints (pods, with the labels
//! selectors see) and flows.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ippool_crd::policy::Protocol;

use super::labels;

/// A container port with a name (`containerPorts[].name`), which rules
/// may name instead of a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NamedPort {
    pub protocol: Protocol,
    pub port: u16,
}

/// A workload endpoint: one pod's network identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    pub namespace: String,
    pub name: String,
    /// The pod's own labels.
    pub labels: BTreeMap<String, String>,
    /// The labels of the pod's namespace.
    pub namespace_labels: BTreeMap<String, String>,
    pub addresses: Vec<IpAddr>,
    pub named_ports: BTreeMap<String, NamedPort>,
    /// Profiles applied when no policy selects the endpoint, in order.
    /// Calico gives a pod its namespace's profile, `kns.<namespace>`.
    pub profiles: Vec<String>,
}

impl Endpoint {
    /// A pod, with its namespace's profile.
    pub fn pod(
        namespace: &str,
        name: &str,
        labels: BTreeMap<String, String>,
        namespace_labels: BTreeMap<String, String>,
        addresses: Vec<IpAddr>,
    ) -> Endpoint {
        Endpoint {
            namespace: namespace.to_string(),
            name: name.to_string(),
            labels,
            namespace_labels,
            addresses,
            named_ports: BTreeMap::new(),
            profiles: vec![super::Profile::namespace_profile_name(namespace)],
        }
    }

    /// The labels endpoint selectors match: the pod's, plus the namespace
    /// and orchestrator labels Calico adds (so `projectcalico.org/namespace
    /// == 'x'` works in a selector).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert(labels::NAMESPACE.into(), self.namespace.clone());
        l.insert(labels::ORCHESTRATOR.into(), "k8s".into());
        l
    }

    /// The labels namespace selectors match: the namespace's, plus
    /// `projectcalico.org/name`.
    pub fn namespace_selector_labels(&self) -> BTreeMap<String, String> {
        let mut l = self.namespace_labels.clone();
        l.insert(labels::NAMESPACE_NAME.into(), self.namespace.clone());
        l
    }

    /// `namespace/name`, for messages.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One end of a flow: a workload endpoint (whose policy applies, and
/// whose labels selectors see) or a bare address (outside the cluster, or
/// a host: no labels, no policy of its own).
#[derive(Debug, Clone, Copy)]
pub enum Peer<'a> {
    Endpoint(&'a Endpoint),
    Address(IpAddr),
}

impl<'a> Peer<'a> {
    pub fn endpoint(&self) -> Option<&'a Endpoint> {
        match self {
            Peer::Endpoint(e) => Some(e),
            Peer::Address(_) => None,
        }
    }

    /// The peer's address in `family` (4 or 6), or in any family.
    pub(crate) fn address(&self, family: Option<u8>) -> Option<IpAddr> {
        let fits = |a: &IpAddr| match family {
            Some(4) => a.is_ipv4(),
            Some(6) => a.is_ipv6(),
            _ => true,
        };
        match self {
            Peer::Address(a) => Some(*a).filter(fits),
            Peer::Endpoint(e) => e.addresses.iter().copied().find(fits),
        }
    }
}

/// What is sent: the protocol and its ports or ICMP type and code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub protocol: Protocol,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
}

impl Flow {
    /// The source port the truth tables' probes use (an ephemeral port).
    pub const EPHEMERAL_PORT: u16 = 40000;

    pub fn tcp(dst_port: u16) -> Flow {
        Flow {
            protocol: Protocol::TCP,
            src_port: Some(Self::EPHEMERAL_PORT),
            dst_port: Some(dst_port),
            icmp: None,
        }
    }

    pub fn udp(dst_port: u16) -> Flow {
        Flow {
            protocol: Protocol::UDP,
            ..Flow::tcp(dst_port)
        }
    }

    /// An ICMP (IPv4) echo request, what `ping` sends.
    pub fn icmp_echo() -> Flow {
        Flow::icmp(8, 0)
    }

    pub fn icmp(icmp_type: u8, code: u8) -> Flow {
        Flow {
            protocol: Protocol::ICMP,
            src_port: None,
            dst_port: None,
            icmp: Some((icmp_type, code)),
        }
    }
}
