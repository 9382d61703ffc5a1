//! A routed underlay built out of namespaces: the shape of a small data
//! centre, on which felix, bird and the whole of calico-node run.
//!
//! ```text
//!               router namespace (ip_forward=1; a ToR BIRD can live here)
//!      ┌──────────────────────────────────────────────────────────┐
//!      │  br0 172.30.0.254/24        br1 172.30.1.254/24    lo: external
//!      │   │ n0      │ n1             │ n2                   addresses
//!      └───┼─────────┼────────────────┼─────────────────────────┘
//!          │ veth    │                │
//!      ┌───┴──┐  ┌───┴──┐         ┌───┴──┐
//!      │ eth0 │  │ eth0 │         │ eth0 │   node namespaces: one veth leg
//!      │node-0│  │node-1│         │node-2│   on their subnet's bridge, a
//!      └──────┘  └──────┘         └──────┘   default route via the router
//! ```
//!
//! Subnet `i` is a Linux bridge `br<i>` inside the router namespace; the
//! router's address on it (`.254` by default) is every node's default
//! gateway on that subnet. A node is a namespace whose `eth0` is a veth
//! leg (`n<k>` on the router side, enslaved to its subnet's bridge), with
//! forwarding on, as a Kubernetes node has. Pods are plain namespaces the
//! test (or felix, or the CNI plugin) wires up.
//!
//! Everything is owned by the [`Topology`]: dropping it deletes every
//! namespace, and with them every interface, bridge and route.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnetwork::Ipv4Network;

use crate::netns::{LabError, Netns};

/// Where the default underlay subnets come from: subnet `i` is
/// `172.30.i.0/24`.
pub const DEFAULT_UNDERLAY: [u8; 2] = [172, 30];

/// Where the IPv6 underlay comes from (dual-stack labs): subnet `i` is
/// `fd00:30:<i>::/64`, beside its IPv4 `172.30.<i>.0/24`.
pub const UNDERLAY6: [u16; 2] = [0xfd00, 0x30];

/// The prefix length of an IPv6 underlay subnet.
pub const UNDERLAY6_PREFIX: u8 = 64;

/// The IPv6 address matching IPv4 host `host` on subnet `subnet`:
/// `fd00:30:<subnet>::<host>` (the router is `::fe`, as it is `.254`).
pub fn underlay6(subnet: usize, host: u8) -> Ipv6Addr {
    let [a, b] = UNDERLAY6;
    let s = u16::try_from(subnet).unwrap_or(u16::MAX);
    Ipv6Addr::new(a, b, s, 0, 0, 0, 0, u16::from(host))
}

/// The host part of the router's address on every subnet.
pub const ROUTER_HOST: u8 = 254;

/// The underlay interface of a node.
pub const NODE_IFACE: &str = "eth0";

/// One underlay segment (a bridge in the router namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub index: usize,
    /// The subnet, with the router's address as `ip()`.
    pub cidr: Ipv4Network,
    /// The router's address on it: the nodes' default gateway.
    pub gateway: Ipv4Addr,
    /// The bridge's name in the router namespace (`br<index>`).
    pub bridge: String,
}

/// A node: a namespace with one leg on an underlay subnet.
#[derive(Debug, Clone)]
pub struct Node {
    /// `node-<index>`: the Kubernetes/Calico node name the lab gives it.
    pub name: String,
    pub index: usize,
    pub subnet: usize,
    pub ns: Arc<Netns>,
    /// The node's underlay address with its subnet's prefix.
    pub addr: Ipv4Network,
    /// The underlay interface inside the node (`eth0`).
    pub iface: String,
    /// The router-side leg's name (`n<index>`).
    pub router_leg: String,
}

impl Node {
    pub fn ip(&self) -> Ipv4Addr {
        self.addr.ip()
    }
}

/// The lab's namespaces and their wiring; see the module documentation.
#[derive(Debug)]
pub struct Topology {
    tag: String,
    /// Set for a named (persistent) lab: namespaces are `<prefix>router`,
    /// `<prefix>node-<k>`, `<prefix>pod-<j>` instead of test names.
    prefix: Option<String>,
    router: Arc<Netns>,
    subnets: Vec<Subnet>,
    nodes: Vec<Node>,
    pods: Vec<Arc<Netns>>,
}

/// A built-at-once topology: `nodes` nodes spread round-robin over
/// `subnets` subnets (node `k` on subnet `k % subnets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologySpec {
    /// 1-4 characters of `[a-z0-9]`; namespace names are
    /// `cl<tag>r-…` (router), `cl<tag>n<k>-…` (nodes), `cl<tag>p<j>-…`
    /// (pods).
    pub tag: String,
    pub subnets: usize,
    pub nodes: usize,
}

fn check_tag(tag: &str) -> Result<(), LabError> {
    if tag.is_empty()
        || tag.len() > 4
        || !tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(LabError::BadTag(format!(
            "{tag} (a topology tag is 1-4 characters, so namespace tags fit in 8)"
        )));
    }
    Ok(())
}

impl Topology {
    /// An underlay with no subnets yet: just the router namespace, with IP
    /// forwarding on.
    pub fn new(tag: &str) -> Result<Topology, LabError> {
        check_tag(tag)?;
        let router = Netns::create(&format!("{tag}r"))?;
        Topology::with_router(tag, None, router)
    }

    /// Like [`Topology::new`], but every namespace is named
    /// `<prefix><role>` (`<prefix>router`, `<prefix>node-0`, ...): the
    /// names an operator sees in `ip netns list` for a `calico-lab up`
    /// cluster. Combine with [`Topology::keep`] to outlive this process.
    pub fn new_named(prefix: &str) -> Result<Topology, LabError> {
        let router = Netns::create_named(&format!("{prefix}router"))?;
        Topology::with_router(prefix, Some(prefix.to_string()), router)
    }

    fn with_router(tag: &str, prefix: Option<String>, router: Netns) -> Result<Topology, LabError> {
        router.sysctl("net.ipv4.ip_forward", "1")?;
        // The bridges are the underlay's switches: when br_netfilter is
        // loaded (Docker and kube-proxy hosts load it) it would run every
        // bridged frame through the router's IP hooks and conntrack, which
        // no switch does. The keys exist only with the module loaded.
        for key in [
            "net.bridge.bridge-nf-call-iptables",
            "net.bridge.bridge-nf-call-ip6tables",
            "net.bridge.bridge-nf-call-arptables",
        ] {
            let _ = router.sysctl(key, "0");
        }
        Ok(Topology {
            tag: tag.to_string(),
            prefix,
            router: Arc::new(router),
            subnets: Vec::new(),
            nodes: Vec::new(),
            pods: Vec::new(),
        })
    }

    /// Builds `spec` in one go.
    pub fn build(spec: &TopologySpec) -> Result<Topology, LabError> {
        let t = Topology::new(&spec.tag)?;
        t.populate(spec.subnets, spec.nodes)
    }

    /// Builds a named topology ([`Topology::new_named`]) of `nodes` nodes
    /// over `subnets` subnets, node `k` on subnet `k % subnets`.
    pub fn build_named(prefix: &str, subnets: usize, nodes: usize) -> Result<Topology, LabError> {
        Topology::new_named(prefix)?.populate(subnets, nodes)
    }

    fn populate(mut self, subnets: usize, nodes: usize) -> Result<Topology, LabError> {
        for _ in 0..subnets.max(1) {
            self.add_subnet()?;
        }
        let s = self.subnets.len();
        for k in 0..nodes {
            self.add_node(k % s)?;
        }
        Ok(self)
    }

    /// The topology of a named lab that is already built (by another
    /// process): its router, subnets (`br<i>`, router at the given
    /// address) and nodes (`(subnet, address)` of `node-<k>`), so more can
    /// be added to it. Nothing of it is deleted when this drops.
    pub fn reopen_named(
        prefix: &str,
        subnets: &[Ipv4Network],
        nodes: &[(usize, Ipv4Network)],
    ) -> Result<Topology, LabError> {
        let router = Arc::new(Netns::existing(&format!("{prefix}router"))?);
        let subnets = subnets
            .iter()
            .enumerate()
            .map(|(index, cidr)| Subnet {
                index,
                cidr: *cidr,
                gateway: cidr.ip(),
                bridge: format!("br{index}"),
            })
            .collect();
        let nodes = nodes
            .iter()
            .enumerate()
            .map(|(index, (subnet, addr))| {
                Ok(Node {
                    name: format!("node-{index}"),
                    index,
                    subnet: *subnet,
                    ns: Arc::new(Netns::existing(&format!("{prefix}node-{index}"))?),
                    addr: *addr,
                    iface: NODE_IFACE.to_string(),
                    router_leg: format!("n{index}"),
                })
            })
            .collect::<Result<Vec<Node>, LabError>>()?;
        Ok(Topology {
            tag: prefix.to_string(),
            prefix: Some(prefix.to_string()),
            router,
            subnets,
            nodes,
            pods: Vec::new(),
        })
    }

    /// Leaves every namespace of the topology in place when it drops.
    pub fn keep(&self) {
        self.router.keep();
        for n in &self.nodes {
            n.ns.keep();
        }
        for p in &self.pods {
            p.keep();
        }
    }

    fn namespace(&self, role: &str, test_tag: &str) -> Result<Netns, LabError> {
        match &self.prefix {
            Some(prefix) => Netns::create_named(&format!("{prefix}{role}")),
            None => Netns::create(test_tag),
        }
    }

    /// Adds subnet `172.30.<i>.0/24` (i = the next index).
    pub fn add_subnet(&mut self) -> Result<&Subnet, LabError> {
        let i = self.subnets.len();
        let third = u8::try_from(i)
            .map_err(|_| LabError::Topology(format!("at most 256 default subnets, not {i}")))?;
        let [a, b] = DEFAULT_UNDERLAY;
        let cidr = Ipv4Network::new(Ipv4Addr::new(a, b, third, ROUTER_HOST), 24)
            .map_err(|e| LabError::Topology(e.to_string()))?;
        self.add_subnet_cidr(cidr)
    }

    /// Adds a subnet with the router at `router` (e.g. `10.0.5.1/24`).
    pub fn add_subnet_cidr(&mut self, router: Ipv4Network) -> Result<&Subnet, LabError> {
        let index = self.subnets.len();
        let bridge = format!("br{index}");
        let r = &self.router;
        r.ip(&["link", "add", &bridge, "type", "bridge"])?;
        // The default forward delay would hold a new leg for 15 s.
        r.ip(&[
            "link",
            "set",
            &bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        r.ip(&["link", "set", &bridge, "up"])?;
        r.ip(&["addr", "add", &router.to_string(), "dev", &bridge])?;
        self.subnets.push(Subnet {
            index,
            cidr: router,
            gateway: router.ip(),
            bridge,
        });
        Ok(&self.subnets[index])
    }

    /// Adds a node on `subnet` with the next free address (`.1`, `.2`, …
    /// in order of creation, skipping the router's).
    pub fn add_node(&mut self, subnet: usize) -> Result<&Node, LabError> {
        let s = self.subnet(subnet)?.clone();
        let taken: Vec<Ipv4Addr> = self
            .nodes
            .iter()
            .filter(|n| n.subnet == subnet)
            .map(Node::ip)
            .collect();
        let base = u32::from(s.cidr.network());
        let ip = (1..s.cidr.size().saturating_sub(1))
            .map(|h| Ipv4Addr::from(base + h))
            .find(|ip| *ip != s.gateway && !taken.contains(ip))
            .ok_or_else(|| LabError::Topology(format!("subnet {} is full", s.cidr)))?;
        self.add_node_with_ip(subnet, ip)
    }

    /// Adds a node on `subnet` with address `ip`.
    pub fn add_node_with_ip(&mut self, subnet: usize, ip: Ipv4Addr) -> Result<&Node, LabError> {
        let s = self.subnet(subnet)?.clone();
        let index = self.nodes.len();
        let ns = self.namespace(&format!("node-{index}"), &format!("{}n{index}", self.tag))?;
        let leg = format!("n{index}");
        let addr =
            Ipv4Network::new(ip, s.cidr.prefix()).map_err(|e| LabError::Topology(e.to_string()))?;
        ns.ip(&[
            "link",
            "add",
            NODE_IFACE,
            "type",
            "veth",
            "peer",
            "name",
            &leg,
            "netns",
            self.router.name(),
        ])?;
        self.router
            .ip(&["link", "set", &leg, "master", &s.bridge])?;
        self.router.ip(&["link", "set", &leg, "up"])?;
        ns.ip(&["link", "set", NODE_IFACE, "up"])?;
        ns.ip(&["addr", "add", &addr.to_string(), "dev", NODE_IFACE])?;
        ns.ip(&["route", "add", "default", "via", &s.gateway.to_string()])?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        self.nodes.push(Node {
            name: format!("node-{index}"),
            index,
            subnet,
            ns: Arc::new(ns),
            addr,
            iface: NODE_IFACE.to_string(),
            router_leg: leg,
        });
        Ok(&self.nodes[index])
    }

    /// Dual stack: IPv6 forwarding on the router and an IPv6 address on
    /// every subnet's bridge ([`underlay6`], host `::fe`), without
    /// duplicate address detection (a lab's addresses are unique, and
    /// DAD would hold each one back for a second or two).
    pub fn enable_ipv6_router(&self) -> Result<(), LabError> {
        let r = &self.router;
        r.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        r.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        r.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        for s in &self.subnets {
            let gw = underlay6(s.index, s.gateway.octets()[3]);
            r.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{gw}/{UNDERLAY6_PREFIX}"),
                "dev",
                &s.bridge,
                "nodad",
            ])?;
        }
        Ok(())
    }

    /// Dual stack: node `index`'s IPv6 underlay address (the same host
    /// part as its IPv4 one, on its subnet's `/64`), a default IPv6 route
    /// via the router, and IPv6 forwarding; returns (address, gateway).
    pub fn enable_ipv6_node(&self, index: usize) -> Result<(Ipv6Addr, Ipv6Addr), LabError> {
        let n = self.node(index)?;
        let s = self.subnet(n.subnet)?;
        let ip = underlay6(n.subnet, n.ip().octets()[3]);
        let gw = underlay6(n.subnet, s.gateway.octets()[3]);
        n.ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        n.ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        n.ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        n.ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{ip}/{UNDERLAY6_PREFIX}"),
            "dev",
            &n.iface,
            "nodad",
        ])?;
        n.ns.ip(&["-6", "route", "add", "default", "via", &gw.to_string()])?;
        Ok((ip, gw))
    }

    /// IPv6 only: removes every IPv4 address from the router's bridges
    /// (call [`Topology::enable_ipv6_router`] first). The router keeps
    /// forwarding IPv6 between the subnets.
    pub fn remove_ipv4_router(&self) -> Result<(), LabError> {
        for s in &self.subnets {
            self.router.ip(&["-4", "addr", "flush", "dev", &s.bridge])?;
        }
        Ok(())
    }

    /// IPv6 only: removes node `index`'s IPv4 address from its uplink and
    /// every IPv4 route through it (its default route included), leaving
    /// the IPv6 ones [`Topology::enable_ipv6_node`] made.
    pub fn remove_ipv4_node(&self, index: usize) -> Result<(), LabError> {
        let n = self.node(index)?;
        n.ns.ip(&["-4", "addr", "flush", "dev", &n.iface])?;
        n.ns.ip(&["-4", "route", "flush", "dev", &n.iface])?;
        Ok(())
    }

    /// Sets the MTU of the whole underlay: every bridge, every router leg
    /// and every node's `eth0` (jumbo frames, or a narrow link).
    pub fn set_underlay_mtu(&self, mtu: u32) -> Result<(), LabError> {
        let m = mtu.to_string();
        for n in &self.nodes {
            self.router.ip(&["link", "set", &n.router_leg, "mtu", &m])?;
            n.ns.ip(&["link", "set", &n.iface, "mtu", &m])?;
        }
        for s in &self.subnets {
            self.router.ip(&["link", "set", &s.bridge, "mtu", &m])?;
        }
        Ok(())
    }

    /// Sets the MTU of one subnet only (its bridge and the legs on it,
    /// router and node side): a narrower segment somewhere in the path.
    pub fn set_subnet_mtu(&self, subnet: usize, mtu: u32) -> Result<(), LabError> {
        let s = self.subnet(subnet)?;
        let m = mtu.to_string();
        for n in self.nodes.iter().filter(|n| n.subnet == subnet) {
            self.router.ip(&["link", "set", &n.router_leg, "mtu", &m])?;
            n.ns.ip(&["link", "set", &n.iface, "mtu", &m])?;
        }
        self.router.ip(&["link", "set", &s.bridge, "mtu", &m])?;
        Ok(())
    }

    /// Makes every underlay veth (node and router side) behave like a
    /// physical link: no segmentation offload on transmit (a wire carries
    /// MTU-sized frames, so whatever a sender hands down is cut to size
    /// before it leaves) and generic receive offload on receive (a NIC
    /// merges the segments of a TCP flow, also inside IP-in-IP, before the
    /// IP stack sees them). A plain veth instead passes 64 KiB TSO packets
    /// straight across. `false` restores the veth defaults. Needs
    /// `ethtool`.
    pub fn set_wire_offloads(&self, wire: bool) -> Result<(), LabError> {
        let (tx, rx) = if wire { ("off", "on") } else { ("on", "off") };
        let set = |ns: &Netns, dev: &str| {
            ns.exec("ethtool", &["-K", dev, "tso", tx, "gso", tx, "gro", rx])
                .map(|_| ())
        };
        for n in &self.nodes {
            set(&self.router, &n.router_leg)?;
            set(&n.ns, &n.iface)?;
        }
        Ok(())
    }

    /// A fresh, empty pod namespace (only `lo`), owned by the topology.
    pub fn add_pod(&mut self) -> Result<Arc<Netns>, LabError> {
        let j = self.pods.len();
        let ns = Arc::new(self.namespace(&format!("pod-{j}"), &format!("{}p{j}", self.tag))?);
        self.pods.push(ns.clone());
        Ok(ns)
    }

    /// Puts `ip/32` on the router's loopback: an "outside" address (the
    /// internet, a service outside the cluster) every node reaches through
    /// its default route.
    pub fn add_external_address(&self, ip: Ipv4Addr) -> Result<(), LabError> {
        self.router
            .ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .map(|_| ())
    }

    /// A static route on the router, `dst via <node's address>`: what a
    /// ToR learns over BGP, for tests without a BGP speaker.
    pub fn route_on_router(&self, dst: Ipv4Network, node: usize) -> Result<(), LabError> {
        let via = self.node(node)?.ip();
        self.router
            .ip(&[
                "route",
                "replace",
                &dst.to_string(),
                "via",
                &via.to_string(),
            ])
            .map(|_| ())
    }

    pub fn router(&self) -> &Arc<Netns> {
        &self.router
    }

    pub fn subnets(&self) -> &[Subnet] {
        &self.subnets
    }

    pub fn subnet(&self, index: usize) -> Result<&Subnet, LabError> {
        self.subnets
            .get(index)
            .ok_or_else(|| LabError::Topology(format!("no subnet {index}; add it first")))
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, index: usize) -> Result<&Node, LabError> {
        self.nodes
            .get(index)
            .ok_or_else(|| LabError::Topology(format!("no node {index}; add it first")))
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
}
