//! The IPAM resources Calico keeps in the datastore: blocks of addresses
//! with their allocations, which node has which block, which allocations
//! belong to which pod, and the IPAM-wide settings.

mod affinity;
mod block;
mod config;
mod handle;
mod reservation;

pub use affinity::{AffinityState, BlockAffinity, BlockAffinitySpec};
pub use block::{AllocationAttribute, IPAMBlock, IPAMBlockSpec};
pub use config::{IPAMConfiguration, IPAMConfigurationSpec, VMAddressPersistence};
pub use handle::{IPAMHandle, IPAMHandleSpec};
pub use reservation::{IPReservation, IPReservationSpec, parse_reserved};
