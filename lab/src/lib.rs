//! calico-lab: real clusters built out of network namespaces on one Linux
//! machine. It is both the demo a new user runs first and the harness every
//! integration test and benchmark uses, so no test carries its own ad-hoc
//! namespace plumbing.
//!
//! - The plumbing ([`netns`](Netns)): [`Netns`] (a uniquely named
//!   namespace removed on drop, also while a panic unwinds), [`veth`] pairs
//!   between namespaces, [`NsProcess`] (a child process inside a namespace,
//!   killed on drop), and [`Netns::run`] to execute Rust code with its
//!   sockets inside a namespace.
//! - [`topology`]: a routed underlay — S subnets (a bridge each) joined by
//!   a router namespace, node namespaces on them with a default route via
//!   the router, and empty pod namespaces — all removed with the
//!   [`Topology`]:
//!
//!   ```no_run
//!   # fn main() -> Result<(), lab::LabError> {
//!   use lab::{Topology, TopologySpec};
//!   // node-0 and node-2 on 172.30.0.0/24, node-1 on 172.30.1.0/24.
//!   let mut lab = Topology::build(&TopologySpec { tag: "demo".into(), subnets: 2, nodes: 3 })?;
//!   let pod = lab.add_pod()?;              // an empty namespace to wire up
//!   let n1 = lab.node(1)?;                 // n1.ns, n1.addr (172.30.1.1/24), n1.iface
//!   # let _ = (pod, n1); Ok(()) }
//!   ```
//!
//!   `calico-lab up --nodes N --subnets S` builds on [`Topology::build`];
//!   a ToR BGP speaker runs in [`Topology::router`]. Helpers shape the
//!   underlay: [`Topology::add_external_address`] (an address outside the
//!   cluster, on the router), [`Topology::route_on_router`] (what a ToR
//!   would learn over BGP), [`Topology::set_underlay_mtu`] /
//!   [`Topology::set_subnet_mtu`] (jumbo or narrow links) and
//!   [`Topology::set_wire_offloads`] (veths that segment and merge like a
//!   physical link).
//! - [`capture`]: an `AF_PACKET` capture on one interface, returning the
//!   IPv4 headers seen (IP-in-IP inner headers too), for tests that must
//!   observe the wire.
//! - [`traffic`]: a TCP sink that verifies a deterministic byte stream and
//!   reports who connected (after NAT), and its sender.
//! - [`cni`]: the CNI plugin invoked the way kubelet invokes it (the lab,
//!   the integration tests and the CNI benchmark all call it so).
//! - [`etcd`]: etcd started one way, detached in the lab's etcd namespace
//!   or as a test's own [`etcd::EtcdServer`].
//! - [`probe`]: TCP, UDP and ICMP servers in a namespace and bounded
//!   probes between namespaces, for policy tests.
//! - [`truth`]: the network policy truth tables (scenarios as data and
//!   their expected allow/deny matrices).
//! - [`labels`]: pod labels in etcd mode, written on the pod's
//!   WorkloadEndpoint (the lab is the orchestrator there).
//! - [`kube`]: a real Kubernetes control plane's certificates, kubeconfigs
//!   and command lines; the lab's Kubernetes mode
//!   ([`cluster::apiserver`]) and the tests' API server both start it.
//!
//! Every namespace is named `cl<tag>-<pid>-<seq>`; [`sweep_stale`] removes
//! those whose creating process is gone, so a killed test run leaves nothing
//! behind for long.

pub mod capture;
pub mod cluster;
pub mod cni;
pub mod etcd;
pub mod kube;
pub mod labels;
mod netns;
pub mod probe;
pub mod topology;
pub mod traffic;
pub mod truth;

pub use capture::{Capture, Captured, Packet};
pub use netns::{
    LabError, Netns, NsProcess, delete_namespace, list_namespaces, process_alive, sweep_stale, veth,
};
pub use topology::{Node, Subnet, Topology, TopologySpec};
pub use traffic::{SinkReport, TcpSink, send_pattern, tcp_transfer};
