//! The IP-in-IP tunnel device, with two backends behind one interface.
//!
//! - **kernel**: the kernel's own `ipip` device `tunl0`, created (or
//!   adopted: loading the `ipip` module makes a `tunl0` in every
//!   namespace) over rtnetlink. The kernel encapsulates and decapsulates.
//! - **userspace**: where the kernel has no `ipip` link type, a TUN device
//!   of the same name and a raw `IPPROTO_IPIP` socket, joined by two
//!   threads in felix ([`userspace`]). The TUN device is persistent: a
//!   felix restart adopts it with its address and the routes through it.
//!
//! Either way routes read `<block> via <node> dev tunl0 onlink`, and felix
//! keeps the device up, with the node's tunnel address as its only
//! address and the pod MTU as its MTU ([`Tunnel::configure`]).
//!
//! [`BackendChoice::Auto`] (the default, `FELIX_IPIPBACKEND=auto`) tries
//! the kernel device first and falls back to userspace only when the
//! kernel says it does not know the link type (`EOPNOTSUPP`, "Unknown
//! device type"); any other failure is an error, not a silent fallback.

pub mod filter;
mod kernel;
pub(crate) mod link;
pub mod peers;
pub(crate) mod rawsock;
pub mod userspace;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use rtnetlink::Handle;

pub use kernel::KernelTunnel;
pub use peers::PeerTable;
pub use userspace::UserspaceTunnel;

/// The nice value of the userspace tunnels' packet threads (IP-in-IP and
/// VXLAN). The kernel's own tunnel devices do their work in softirq
/// context, ahead of every task; a userspace tunnel's threads would
/// otherwise get only a fair share of the CPU beside the pods whose
/// traffic they carry, and every pod's packets wait when they fall behind.
/// They use CPU only while packets flow.
pub(crate) const DATAPATH_NICE: libc::c_int = -10;

/// Starts a userspace tunnel's packet thread `<name>-<role>` running
/// `f(&shared)`, at [`DATAPATH_NICE`].
pub(crate) fn spawn_packet_thread<S: Send + Sync + 'static>(
    name: &str,
    role: &str,
    shared: std::sync::Arc<S>,
    f: fn(&S),
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("{name}-{role}"))
        .spawn(move || {
            raise_datapath_priority();
            f(&shared)
        })
}

/// Gives the calling thread [`DATAPATH_NICE`]. Without `CAP_SYS_NICE` the
/// thread keeps its priority (logged once per thread, not an error).
fn raise_datapath_priority() {
    // SAFETY: gettid(2) has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority(2) on this thread's own id; the result is checked.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, DATAPATH_NICE) };
    if rc != 0 {
        tracing::info!(
            nice = DATAPATH_NICE,
            error = %std::io::Error::last_os_error(),
            "the tunnel thread keeps its scheduling priority"
        );
    }
}

/// Calico's tunnel device name.
pub const DEFAULT_NAME: &str = "tunl0";

/// The userspace backend's device name when `tunl0` is taken by the
/// kernel's own (unused) ipip device.
pub const USERSPACE_FALLBACK_NAME: &str = "tunl0u";

/// `FELIX_IPIPBACKEND`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendChoice {
    #[default]
    Auto,
    Kernel,
    Userspace,
}

/// A `FELIX_IPIPBACKEND` value that names no backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown IPIP backend {0:?}; use auto, kernel or userspace")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendChoice {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "kernel" => Ok(BackendChoice::Kernel),
            "userspace" => Ok(BackendChoice::Userspace),
            _ => Err(UnknownBackend(s.to_string())),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Kernel => "kernel",
            BackendChoice::Userspace => "userspace",
        })
    }
}

/// The backend in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Kernel,
    Userspace,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Kernel => "kernel",
            BackendKind::Userspace => "userspace",
        })
    }
}

/// Packet counters of the userspace backend (all zero for the kernel's,
/// whose counters are the device's own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelStats {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Inner packets whose destination is in no remote block.
    pub tx_no_route: u64,
    /// Inner packets too big for the path to their node (answered with
    /// ICMP fragmentation-needed).
    pub tx_too_big: u64,
    pub tx_errors: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// IP-in-IP packets from addresses that are not known nodes (dropped).
    pub rx_unknown_source: u64,
    pub rx_malformed: u64,
    pub rx_errors: u64,
}

/// What differs between the backends once the device exists.
pub trait TunnelBackend: Send + Sync + fmt::Debug {
    fn kind(&self) -> BackendKind;
    fn name(&self) -> &str;
    /// The remote blocks reached through the tunnel, and so the nodes that
    /// may send IP-in-IP here. The kernel backend routes by the FIB and
    /// ignores this.
    fn set_peers(&self, peers: PeerTable);
    /// The tunnel address (source of ICMP errors the tunnel generates).
    fn set_source(&self, addr: Option<Ipv4Addr>);
    /// The MTU felix gave the device.
    fn set_mtu(&self, _mtu: u32) {}
    fn stats(&self) -> TunnelStats;
    /// Per-device IPv4 sysctls (`net.ipv4.conf.<dev>.<key>`) the backend
    /// needs.
    fn sysctls(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error(
        "the kernel has no ipip link type ({0}); use FELIX_IPIPBACKEND=userspace or auto, or load the ipip module"
    )]
    KernelUnsupported(rtnetlink::Error),
    #[error(
        "the kernel's ipip module is installed but did not load ({0}); a device named tunl0 in another network namespace (a userspace IPIP tunnel on this kernel?) keeps it from making its own tunl0 there: remove that device, or load the module (`modprobe ipip`) before userspace tunnels start"
    )]
    KernelModuleBlocked(rtnetlink::Error),
    #[error("{name} exists but is a {kind} device, not a tunnel; delete it or choose another name")]
    NameTaken { name: String, kind: String },
    #[error("tunnel device {name}: {step}: {source}")]
    Netlink {
        name: String,
        step: &'static str,
        source: rtnetlink::Error,
    },
    #[error(
        "userspace tunnel {name}: {step}: {source} (needs /dev/net/tun, CAP_NET_ADMIN and CAP_NET_RAW)"
    )]
    Userspace {
        name: String,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("tunnel device {0} vanished after it was created")]
    Vanished(String),
    #[error("tunnel device {name}: sysctl {key}: {source}")]
    Sysctl {
        name: String,
        key: String,
        source: std::io::Error,
    },
}

/// A kernel device's counters from `/proc/thread-self/net/dev` (the
/// calling thread's namespace); zero if it is not there.
pub(crate) fn device_stats(name: &str) -> TunnelStats {
    kernel::device_stats(name)
}

/// The tunnel device felix manages.
#[derive(Debug)]
pub struct Tunnel {
    backend: Box<dyn TunnelBackend>,
    index: u32,
    name: String,
}

impl Tunnel {
    /// Creates (or adopts) the device in the calling thread's namespace.
    pub async fn open(
        nl: &Handle,
        choice: BackendChoice,
        name: &str,
    ) -> Result<Tunnel, TunnelError> {
        let backend: Box<dyn TunnelBackend> = match choice {
            BackendChoice::Kernel => Box::new(KernelTunnel::open(nl, name).await?),
            BackendChoice::Userspace => Box::new(open_userspace(nl, name).await?),
            // The userspace device a previous felix left (persistent):
            // adopted as it is, with its address and routes.
            BackendChoice::Auto if is_tun(nl, name).await? => {
                Box::new(open_userspace(nl, name).await?)
            }
            BackendChoice::Auto => match KernelTunnel::open(nl, name).await {
                Ok(k) => Box::new(k),
                Err(TunnelError::KernelUnsupported(e)) => {
                    tracing::info!(reason = %e, "no kernel ipip support; using the userspace IPIP tunnel");
                    Box::new(open_userspace(nl, name).await?)
                }
                Err(e @ TunnelError::KernelModuleBlocked(_)) => {
                    tracing::warn!(reason = %e, "using the userspace IPIP tunnel");
                    Box::new(open_userspace(nl, name).await?)
                }
                Err(e) => return Err(e),
            },
        };
        let dev = backend.name().to_string();
        let state = link::by_name(nl, &dev)
            .await
            .map_err(|source| TunnelError::Netlink {
                name: dev.clone(),
                step: "look up the device",
                source,
            })?
            .ok_or_else(|| TunnelError::Vanished(dev.clone()))?;
        if backend.kind() == BackendKind::Userspace {
            // An adopted device still has the routes the previous felix
            // made: their nodes are the peers until the configuration
            // says otherwise, so tunnelled traffic flows again before it
            // arrives.
            match link::gateway_routes_via(nl, state.index).await {
                Ok(blocks) if !blocks.is_empty() => {
                    tracing::info!(device = %dev, blocks = blocks.len(), "tunnel peers taken from the routes through the adopted device");
                    backend.set_peers(PeerTable::new(&blocks));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(device = %dev, error = %e, "cannot read the routes through the tunnel device; peers wait for the configuration")
                }
            }
        }
        tracing::info!(backend = %backend.kind(), device = %dev, ifindex = state.index, "IPIP tunnel device ready");
        Ok(Tunnel {
            backend,
            index: state.index,
            name: dev,
        })
    }

    pub fn kind(&self) -> BackendKind {
        self.backend.kind()
    }

    pub fn ifindex(&self) -> u32 {
        self.index
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn backend(&self) -> &dyn TunnelBackend {
        self.backend.as_ref()
    }

    /// Makes the device up, with `mtu` and `addr` as its only IPv4 address
    /// (Calico gives `tunl0` the node's tunnel address as a /32). Reads the
    /// device first and writes only what differs. Returns whether
    /// anything changed.
    pub async fn configure(
        &self,
        nl: &Handle,
        mtu: u32,
        addr: Option<Ipv4Addr>,
    ) -> Result<bool, TunnelError> {
        let err = |step| {
            let name = self.name.clone();
            move |source| TunnelError::Netlink { name, step, source }
        };
        let state = link::by_index(nl, self.index)
            .await
            .map_err(err("read the device"))?
            .ok_or_else(|| TunnelError::Vanished(self.name.clone()))?;
        let mut changed = false;
        if state.mtu != Some(mtu) || !state.up {
            // A userspace backend sizes its buffers by the MTU: it hears of
            // a larger one before the device sends packets of that size.
            self.backend.set_mtu(mtu.max(state.mtu.unwrap_or(0)));
            link::set_mtu_up(nl, self.index, mtu)
                .await
                .map_err(err("set MTU and up"))?;
            changed = true;
        }
        changed |= link::sync_single_address(nl, self.index, addr)
            .await
            .map_err(err("set the tunnel address"))?;
        for (key, value) in self.backend.sysctls() {
            crate::workload::sysctl::write(&format!("ipv4/conf/{}/{key}", self.name), value)
                .map_err(|(key, source)| TunnelError::Sysctl {
                    name: self.name.clone(),
                    key,
                    source,
                })?;
        }
        self.backend.set_source(addr);
        self.backend.set_mtu(mtu);
        Ok(changed)
    }
}

/// Whether `name` is a TUN device (the userspace backend's).
async fn is_tun(nl: &Handle, name: &str) -> Result<bool, TunnelError> {
    let l = link::by_name(nl, name)
        .await
        .map_err(|source| TunnelError::Netlink {
            name: name.to_string(),
            step: "look up the device",
            source,
        })?;
    Ok(l.is_some_and(|l| l.kind == Some(netlink_packet_route::link::InfoKind::Tun)))
}

async fn open_userspace(nl: &Handle, name: &str) -> Result<UserspaceTunnel, TunnelError> {
    let mut dev = name;
    if let Some(existing) =
        link::by_name(nl, name)
            .await
            .map_err(|source| TunnelError::Netlink {
                name: name.to_string(),
                step: "look up the device",
                source,
            })?
    {
        // The kernel's own ipip module made `tunl0`; leave it alone.
        if existing.kind == Some(netlink_packet_route::link::InfoKind::IpIp) {
            tracing::warn!(
                device = name,
                fallback = USERSPACE_FALLBACK_NAME,
                "the kernel's ipip device holds the name; the userspace tunnel uses another"
            );
            dev = USERSPACE_FALLBACK_NAME;
        } else if existing.kind == Some(netlink_packet_route::link::InfoKind::Tun) {
            tracing::info!(
                device = name,
                "adopting the userspace IPIP device left by a previous felix, with its address and routes"
            );
        }
    }
    UserspaceTunnel::create(dev).map_err(|source| TunnelError::Userspace {
        name: dev.to_string(),
        step: "create the TUN device and raw socket",
        source,
    })
}
