//! Calico's defaults, in one place, for every field that has one.

/// The cluster-wide AS number when neither BGPConfiguration nor the node sets one.
pub const AS_NUMBER: u32 = 64512;
/// IPv4 pool block size (a /26: 64 addresses per node block).
pub const BLOCK_SIZE_V4: u8 = 26;
/// IPv6 pool block size (a /122: 64 addresses per node block).
pub const BLOCK_SIZE_V6: u8 = 122;
/// The BGP port.
pub const LISTEN_PORT: u16 = 179;
/// Every node peers with every other node unless this is turned off.
pub const NODE_TO_NODE_MESH_ENABLED: bool = true;
/// The pool node selector that selects every node.
pub const NODE_SELECTOR: &str = "all()";
/// BGPConfiguration's log level.
pub const LOG_SEVERITY_SCREEN: &str = "Info";
/// IPAMConfig: addresses may be borrowed from other nodes' blocks.
pub const STRICT_AFFINITY: bool = false;
/// IPAMConfig: nodes claim new blocks on demand.
pub const AUTO_ALLOCATE_BLOCKS: bool = true;
/// IPAMConfig: 0 means no per-node limit on affine blocks.
pub const MAX_BLOCKS_PER_HOST: u32 = 0;
/// The name of the singleton BGPConfiguration / IPAMConfig objects.
pub const DEFAULT_NAME: &str = "default";

/// Valid IPv4 block sizes.
pub const BLOCK_SIZE_RANGE_V4: std::ops::RangeInclusive<u8> = 20..=32;
/// Valid IPv6 block sizes.
pub const BLOCK_SIZE_RANGE_V6: std::ops::RangeInclusive<u8> = 116..=128;
