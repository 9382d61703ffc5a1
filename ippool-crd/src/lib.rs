//! Calico's resources as Rust types, so calico-rs reads and writes the very
//! objects a Calico cluster has: the `crd.projectcalico.org/v1` IPPool,
//! BGPPeer, BGPConfiguration, BGPFilter ([`bgpfilter`]), IPAMBlock, BlockAffinity, IPAMHandle,
//! IPAMConfig, IPReservation, NetworkPolicy and GlobalNetworkPolicy ([`policy`]), plus
//! Calico's (non-CRD) Node, WorkloadEndpoint and Profile ([`workload`]). Stored specs keep Calico's
//! optional fields optional so objects round-trip unchanged; Calico's
//! defaults are applied by explicit functions (`with_defaults`, typed
//! accessors, [`IPPool::config`]); validation applies Calico's rules and
//! reports every problem with the field it concerns and how to fix it. The
//! crate also holds Calico's selector language ([`Selector`]), the object
//! names Calico derives ([`names`]), a manifest reader that accepts both
//! Calico API versions ([`manifest`]), and the generator for
//! `deploy/crds.yaml` ([`crdgen`], binary `crdgen`).

pub mod asn;
mod bgpconfig;
pub mod bgpfilter;
mod bgppeer;
pub mod crdgen;
pub mod defaults;
pub mod duration;
mod ipam;
mod ippool;
pub mod manifest;
pub mod names;
mod node;
pub mod policy;
mod pool_config;
pub mod selector;
mod serde_util;
mod validate;
pub mod workload;

pub use bgpconfig::{
    BGPConfiguration, BGPConfigurationSpec, BindMode, Community, PrefixAdvertisement,
    ProgramClusterRoutes, ResolvedPrefixAdvertisement, ServiceIPBlock,
    ServiceLoadBalancerAggregation, check_community_value,
};
pub use bgpfilter::{BGPFilter, BGPFilterRule, BGPFilterSpec};
pub use bgppeer::{
    BFDAuthType, BFDAuthentication, BFDSpec, BGPPassword, BGPPeer, BGPPeerSpec, NextHopMode,
    PeerAddress, PeerAddressError, ReversePeering, SourceAddress, parse_peer_address,
};
pub use ipam::{
    AffinityState, AllocationAttribute, BlockAffinity, BlockAffinitySpec, IPAMBlock, IPAMBlockSpec,
    IPAMConfiguration, IPAMConfigurationSpec, IPAMHandle, IPAMHandleSpec, IPReservation,
    IPReservationSpec, VMAddressPersistence, parse_reserved,
};
pub use ippool::{
    AllowedUse, AssignmentMode, EncapMode, IPIPConfiguration, IPPool, IPPoolSpec, IPPoolStatus,
};
pub use manifest::{CalicoResource, ManifestError, parse_manifests};
pub use node::{
    Node, NodeAddress, NodeBgpSpec, NodeInterface, NodeSpec, NodeStatus, NodeWireguardSpec,
    OrchRef, annotations as node_annotations, format_mac, parse_mac,
};
pub use policy::{GlobalNetworkPolicy, GlobalNetworkPolicySpec, NetworkPolicy, NetworkPolicySpec};
pub use pool_config::{PoolConfig, overlaps, validate_pool_set};
pub use selector::{Selector, SelectorError};
pub use validate::{ValidationError, ValidationErrors};
pub use workload::{Profile, ProfileSpec, WorkloadEndpoint, WorkloadEndpointSpec};
