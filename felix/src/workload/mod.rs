//! Pod interfaces ("workload endpoints"): the veth pair between a pod's
//! network namespace and the host, made the way Calico's CNI plugin makes
//! it.
//!
//! Host side: `cali` + 11 hex digits of SHA-1(`"<namespace>.<pod>"`), MAC
//! `ee:ee:ee:ee:ee:ee`, proxy ARP (and proxy NDP) on, forwarding on, and a
//! `/32` (`/128`) route to each pod IP through the route reconciler
//! (`dev caliXXX scope link proto 80`). Pod side: `eth0` holding the pod's
//! `/32` (`/128`); IPv4 reaches the host through `169.254.1.1` (a link
//! route to it, then the default route via it, answered by proxy ARP);
//! IPv6 through the host side's link-local address.
//!
//! An add either completes or leaves nothing behind: every failure after
//! the pair exists deletes it again and withdraws the routes.

pub mod antispoof;
pub(crate) mod link;
pub mod naming;
mod netns;
mod pod;
pub(crate) mod sysctl;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ipnetwork::IpNetwork;
use tracing::Instrument;

use crate::routes::{Route, RouteError, RouteHandle, RouteUpdate};

pub use naming::{HOST_LINK_LOCAL, HOST_MAC, IPV4_GATEWAY, host_iface_name};

/// Decides whether a pod may use an address (felix only routes addresses
/// from its pools, or from this node's blocks).
pub trait IpPolicy: Send + Sync {
    /// `Err(why)` rejects `ip`.
    fn check(&self, ip: IpAddr) -> Result<(), IpRejected>;
}

/// Why a pod may not use an address: it lies outside every prefix felix
/// routes pod addresses from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("it is in none of the {what} [{}]", list(.allowed))]
pub struct IpRejected {
    /// What the prefixes are ("IP pools", "IP pools or blocks").
    pub what: &'static str,
    pub allowed: Vec<IpNetwork>,
}

fn list(nets: &[IpNetwork]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Allows addresses inside any of these prefixes (pools or blocks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedCidrs(pub Vec<IpNetwork>);

impl IpPolicy for AllowedCidrs {
    fn check(&self, ip: IpAddr) -> Result<(), IpRejected> {
        if self.0.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        Err(IpRejected {
            what: "IP pools",
            allowed: self.0.clone(),
        })
    }
}

impl<F: Fn(IpAddr) -> Result<(), IpRejected> + Send + Sync> IpPolicy for F {
    fn check(&self, ip: IpAddr) -> Result<(), IpRejected> {
        self(ip)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// Host-side name prefix; must match the reconciler's pod interface
    /// prefixes.
    pub iface_prefix: String,
    /// The pod-side name (CNI_IFNAME).
    pub container_iface: String,
    pub mtu: u32,
    /// Turn on the host's global forwarding switches (`net.ipv4.ip_forward`,
    /// `net.ipv6.conf.all.forwarding`), like Calico's `ipForwarding:
    /// Enabled`. IPv6 forwards nothing between pods without the latter.
    pub ip_forwarding: bool,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            iface_prefix: "cali".into(),
            container_iface: "eth0".into(),
            mtu: 1500,
            ip_forwarding: true,
        }
    }
}

/// What a pod asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSpec {
    pub namespace: String,
    pub pod: String,
    /// The pod's network namespace file, as CNI_NETNS gives it:
    /// `/run/netns/NAME` or `/proc/PID/ns/net`.
    pub netns: PathBuf,
    pub ips: Vec<IpAddr>,
}

/// A pod interface felix made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
    pub netns: PathBuf,
    pub host_iface: String,
    pub host_ifindex: u32,
    pub container_iface: String,
    pub container_mac: [u8; 6],
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("pod {pod}: no IP address given; the pod needs at least one")]
    NoIps { pod: String },
    #[error("pod {pod}: {ip} is not allowed: {reason}")]
    IpNotAllowed {
        pod: String,
        ip: IpAddr,
        reason: IpRejected,
    },
    #[error("pod {pod}: {ip} is listed twice")]
    RepeatedIp { pod: String, ip: IpAddr },
    #[error("pod {pod} already has interface {iface}; delete the pod before adding it again")]
    Duplicate { pod: String, iface: String },
    #[error("pod {pod}: {ip} already belongs to pod {other}")]
    IpInUse {
        pod: String,
        ip: IpAddr,
        other: String,
    },
    #[error("pod {pod} is being added right now; retry when that finishes")]
    Busy { pod: String },
    #[error("pod {pod}: network namespace {path} cannot be opened: {source} (is the pod sandbox still there?)", path = path.display())]
    NetnsNotFound {
        pod: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("pod {pod}: cannot enter network namespace {path}: {source} (is it a network namespace file?)", path = path.display())]
    NetnsEnter {
        pod: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("pod {pod}: {path} is felix's own network namespace, not the pod's", path = path.display())]
    NetnsIsHost { pod: String, path: PathBuf },
    #[error("pod {pod}: {step}: {source}")]
    Netlink {
        pod: String,
        step: &'static str,
        source: rtnetlink::Error,
    },
    #[error("pod {pod}: {step}: {source}")]
    Io {
        pod: String,
        step: &'static str,
        source: io::Error,
    },
    #[error("pod {pod}: sysctl {key}: {source}")]
    Sysctl {
        pod: String,
        key: String,
        source: io::Error,
    },
    /// The table that stops pods sending from addresses not theirs could
    /// not be written: an IPv6 pod is not made without it (IPv4 has the
    /// kernel's reverse-path filter as well).
    #[error(
        "pod {pod}: {source}; an IPv6 pod is not made without the check (is nftables installed?)"
    )]
    AntiSpoof {
        pod: String,
        source: antispoof::AntiSpoofError,
    },
    #[error("pod {pod}: host route not programmed: {failure}")]
    Route { pod: String, failure: String },
    #[error(transparent)]
    Routes(#[from] RouteError),
}

/// The registry entry of a pod: `None` while its add is in progress.
struct Entry {
    pod: String,
    ips: Vec<IpAddr>,
    workload: Option<Workload>,
}

/// Creates and removes pod interfaces in felix's network namespace (the
/// one [`PodInterfaces::new`] is called in).
pub struct PodInterfaces {
    cfg: WorkloadConfig,
    routes: RouteHandle,
    policy: Arc<dyn IpPolicy>,
    nl: rtnetlink::Handle,
    conn: tokio::task::JoinHandle<()>,
    registry: Mutex<HashMap<String, Entry>>,
    /// Host interfaces being deleted off the runtime, by name: an ADD of
    /// the same pod waits for its old interface to be gone.
    removing: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// The MTU of veths made from now on (the dataplane changes it when the
    /// underlay MTU or the use of IP-in-IP changes).
    mtu: AtomicU32,
    /// The source-address check on pod interfaces ([`antispoof`]).
    antispoof: antispoof::AntiSpoof,
}

impl Drop for PodInterfaces {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

fn host_prefix(ip: IpAddr) -> IpNetwork {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    // A full-length prefix is always valid.
    IpNetwork::new(ip, len).unwrap_or_else(|_| IpNetwork::from(ip))
}

impl PodInterfaces {
    /// Must be called inside a tokio runtime, in felix's namespace.
    pub fn new(
        cfg: WorkloadConfig,
        routes: RouteHandle,
        policy: Arc<dyn IpPolicy>,
    ) -> Result<PodInterfaces, WorkloadError> {
        if cfg.ip_forwarding {
            sysctl::global_forwarding().map_err(|(key, source)| WorkloadError::Sysctl {
                pod: String::new(),
                key,
                source,
            })?;
        }
        let (nl, conn) = link::connect().map_err(|source| WorkloadError::Io {
            pod: String::new(),
            step: "open rtnetlink socket",
            source,
        })?;
        Ok(PodInterfaces {
            mtu: AtomicU32::new(cfg.mtu),
            antispoof: antispoof::AntiSpoof::new(&cfg.iface_prefix),
            cfg,
            routes,
            policy,
            nl,
            conn,
            registry: Mutex::new(HashMap::new()),
            removing: Mutex::new(HashMap::new()),
        })
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // The map stays consistent even if a holder panicked: every update
        // is a single insert or remove.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn removing(&self) -> MutexGuard<'_, HashMap<String, tokio::task::JoinHandle<()>>> {
        self.removing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the host interface `iface` that [`PodInterfaces::remove`]
    /// handed off is gone (at once if none is pending).
    async fn removed(&self, iface: &str) {
        let pending = self.removing().remove(iface);
        if let Some(task) = pending {
            let _ = task.await;
        }
    }

    /// Waits until every host interface [`PodInterfaces::remove`] handed
    /// off is gone.
    pub async fn settle(&self) {
        let pending: Vec<_> = self.removing().drain().map(|(_, t)| t).collect();
        for task in pending {
            let _ = task.await;
        }
    }

    /// The MTU new pod interfaces get.
    pub fn mtu(&self) -> u32 {
        self.mtu.load(Ordering::Relaxed)
    }

    /// Changes the MTU of pod interfaces made from now on (existing ones
    /// keep theirs, as with Calico: a pod's MTU changes when it restarts).
    pub fn set_mtu(&self, mtu: u32) {
        self.mtu.store(mtu, Ordering::Relaxed);
    }

    pub fn iface_name(&self, namespace: &str, pod: &str) -> String {
        host_iface_name(&self.cfg.iface_prefix, namespace, pod)
    }

    pub fn get(&self, namespace: &str, pod: &str) -> Option<Workload> {
        let iface = self.iface_name(namespace, pod);
        self.registry().get(&iface).and_then(|e| e.workload.clone())
    }

    pub fn list(&self) -> Vec<Workload> {
        self.registry()
            .values()
            .filter_map(|e| e.workload.clone())
            .collect()
    }

    /// Creates the pod's interface pair, configures both sides and
    /// programs its host routes. Returns when traffic can flow.
    pub async fn add(&self, spec: &WorkloadSpec) -> Result<Workload, WorkloadError> {
        let pod = format!("{}/{}", spec.namespace, spec.pod);
        let iface = self.iface_name(&spec.namespace, &spec.pod);
        let span = tracing::info_span!("workload_add", pod = %pod, iface = %iface);
        async {
            self.validate(&pod, spec)?;
            self.reserve(&pod, &iface, &spec.ips)?;
            // If this future is dropped half-way (the CNI call was
            // cancelled: the plugin timed out or was killed), the
            // reservation goes with it; the next ADD or DEL of the pod
            // removes whatever interface was already made.
            let mut reservation = Reservation {
                interfaces: self,
                iface: &iface,
                kept: false,
            };
            match self.create(&pod, &iface, spec).await {
                Ok(w) => {
                    if let Some(e) = self.registry().get_mut(&iface) {
                        e.workload = Some(w.clone());
                    }
                    reservation.kept = true;
                    tracing::info!(ifindex = w.host_ifindex, "pod interface ready");
                    Ok(w)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pod add failed; undoing");
                    self.undo(&iface, &spec.ips).await;
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The periodic check of the pods' source-address table
    /// ([`antispoof`]): written again if it was changed or removed since
    /// felix wrote it. Returns whether it was.
    pub async fn recheck_antispoof(&self) -> Result<bool, antispoof::AntiSpoofError> {
        self.antispoof.recheck().await
    }

    /// Whether an interface of that name exists in felix's namespace.
    pub async fn interface_exists(&self, name: &str) -> bool {
        matches!(link::index_of(&self.nl, name).await, Ok(Some(_)))
    }

    /// Re-adopts a pod made by an earlier felix (after a restart): if its
    /// host interface still exists, the pod is registered again and its
    /// host routes are desired again, without touching the pod's namespace.
    /// Returns false (and changes nothing) when the interface is gone.
    pub async fn restore(&self, w: &Workload) -> Result<bool, WorkloadError> {
        let pod = format!("{}/{}", w.namespace, w.pod);
        let iface = self.iface_name(&w.namespace, &w.pod);
        let Some(host_ifindex) =
            link::index_of(&self.nl, &iface)
                .await
                .map_err(|source| WorkloadError::Netlink {
                    pod: pod.clone(),
                    step: "look up host interface",
                    source,
                })?
        else {
            return Ok(false);
        };
        self.reserve(&pod, &iface, &w.ips)?;
        // A new felix writes its table again (the old one's is normally
        // still there; this covers a node where it is not).
        if let Err(e) = self.antispoof.ensure().await {
            tracing::error!(pod = %pod, error = %e, "pods' source addresses are not checked");
        }
        let restored = Workload {
            host_iface: iface.clone(),
            host_ifindex,
            ..w.clone()
        };
        let updates = w
            .ips
            .iter()
            .map(|ip| RouteUpdate::Set(Route::dev(host_prefix(*ip), host_ifindex)))
            .collect();
        self.routes.update(updates)?;
        if let Some(e) = self.registry().get_mut(&iface) {
            e.workload = Some(restored);
        }
        Ok(true)
    }

    fn validate(&self, pod: &str, spec: &WorkloadSpec) -> Result<(), WorkloadError> {
        if spec.ips.is_empty() {
            return Err(WorkloadError::NoIps { pod: pod.into() });
        }
        for (i, ip) in spec.ips.iter().enumerate() {
            if spec.ips[..i].contains(ip) {
                return Err(WorkloadError::RepeatedIp {
                    pod: pod.into(),
                    ip: *ip,
                });
            }
            self.policy
                .check(*ip)
                .map_err(|reason| WorkloadError::IpNotAllowed {
                    pod: pod.into(),
                    ip: *ip,
                    reason,
                })?;
        }
        Ok(())
    }

    fn reserve(&self, pod: &str, iface: &str, ips: &[IpAddr]) -> Result<(), WorkloadError> {
        let mut reg = self.registry();
        if reg.contains_key(iface) {
            return Err(WorkloadError::Duplicate {
                pod: pod.into(),
                iface: iface.into(),
            });
        }
        for e in reg.values() {
            if let Some(ip) = ips.iter().find(|ip| e.ips.contains(ip)) {
                return Err(WorkloadError::IpInUse {
                    pod: pod.into(),
                    ip: *ip,
                    other: e.pod.clone(),
                });
            }
        }
        reg.insert(
            iface.to_string(),
            Entry {
                pod: pod.to_string(),
                ips: ips.to_vec(),
                workload: None,
            },
        );
        Ok(())
    }

    async fn create(
        &self,
        pod: &str,
        iface: &str,
        spec: &WorkloadSpec,
    ) -> Result<Workload, WorkloadError> {
        let nl_err = |step: &'static str| {
            move |source| WorkloadError::Netlink {
                pod: pod.to_string(),
                step,
                source,
            }
        };
        let ns = File::open(&spec.netns).map_err(|source| WorkloadError::NetnsNotFound {
            pod: pod.into(),
            path: spec.netns.clone(),
            source,
        })?;
        netns::check_is_netns(&ns).map_err(|source| WorkloadError::NetnsEnter {
            pod: pod.into(),
            path: spec.netns.clone(),
            source,
        })?;
        if same_namespace_as_caller(&ns) {
            return Err(WorkloadError::NetnsIsHost {
                pod: pod.into(),
                path: spec.netns.clone(),
            });
        }
        let v4 = spec.ips.iter().any(IpAddr::is_ipv4);
        let v6 = spec.ips.iter().any(IpAddr::is_ipv6);

        // The same pod's previous interface, if its deletion is still
        // under way: the name must be free.
        self.removed(iface).await;
        // A leftover from a felix that died mid-add (the registry does not
        // know it): Calico's plugin removes it too.
        if link::delete_by_name(&self.nl, iface)
            .await
            .map_err(nl_err("remove leftover host interface"))?
        {
            tracing::info!("removed a leftover host interface of the same name");
        }
        link::create_veth(
            &self.nl,
            iface,
            HOST_MAC,
            &self.cfg.container_iface,
            ns.as_raw_fd(),
            self.mtu(),
        )
        .await
        .map_err(|source| WorkloadError::Netlink {
            pod: pod.into(),
            step: "create veth pair (does the pod namespace already have that interface?)",
            source,
        })?;
        let host_ifindex = link::index_of(&self.nl, iface)
            .await
            .map_err(nl_err("look up host interface"))?
            .ok_or_else(|| WorkloadError::Io {
                pod: pod.into(),
                step: "look up host interface",
                source: io::Error::from_raw_os_error(libc::ENODEV),
            })?;
        sysctl::host_side(iface, v4, v6).map_err(|(key, source)| WorkloadError::Sysctl {
            pod: pod.into(),
            key,
            source,
        })?;
        // Before the interface comes up: no packet from the pod goes
        // unchecked.
        if let Err(source) = self.antispoof.ensure().await {
            if v6 {
                return Err(WorkloadError::AntiSpoof {
                    pod: pod.into(),
                    source,
                });
            }
            tracing::error!(error = %source,
                "IPv4 pod made with the kernel's reverse-path filter only");
        }
        if v6 {
            // The pod's IPv6 gateway; explicit, so it exists whatever the
            // host's address generation mode.
            link::add_address(&self.nl, host_ifindex, HOST_LINK_LOCAL.into(), 64, true)
                .await
                .map_err(nl_err("add host link-local address"))?;
        }
        link::set_up(&self.nl, host_ifindex)
            .await
            .map_err(nl_err("set host interface up"))?;

        let container_iface = self.cfg.container_iface.clone();
        let ips = spec.ips.clone();
        let mac = netns::run_in(ns, move || pod::pod_side(&container_iface, &ips))
            .await
            .map_err(|source| WorkloadError::NetnsEnter {
                pod: pod.into(),
                path: spec.netns.clone(),
                source,
            })?
            .map_err(|e| e.into_error(pod))?;

        let updates = spec
            .ips
            .iter()
            .map(|ip| RouteUpdate::Set(Route::dev(host_prefix(*ip), host_ifindex)))
            .collect();
        self.routes.update(updates)?;
        let report = self.routes.flush().await?;
        for ip in &spec.ips {
            if let Some(f) = report.failure_for(&host_prefix(*ip)) {
                return Err(WorkloadError::Route {
                    pod: pod.into(),
                    failure: f.to_string(),
                });
            }
            if report.conflicts.contains(&host_prefix(*ip)) {
                return Err(WorkloadError::Route {
                    pod: pod.into(),
                    failure: format!("another route to {ip} exists on this host"),
                });
            }
        }
        Ok(Workload {
            namespace: spec.namespace.clone(),
            pod: spec.pod.clone(),
            netns: spec.netns.clone(),
            host_iface: iface.to_string(),
            host_ifindex,
            container_iface: self.cfg.container_iface.clone(),
            container_mac: mac,
            ips: spec.ips.clone(),
        })
    }

    /// Best-effort removal of whatever an add made.
    async fn undo(&self, iface: &str, ips: &[IpAddr]) {
        let updates = ips
            .iter()
            .map(|ip| RouteUpdate::Remove(host_prefix(*ip)))
            .collect();
        if self.routes.update(updates).is_ok() {
            let _ = self.routes.flush().await;
        }
        if let Err(e) = link::delete_by_name(&self.nl, iface).await {
            tracing::warn!(error = %e, iface, "could not delete host interface while undoing");
        }
    }

    /// Removes the pod's routes and interface pair. Returns whether there
    /// was anything to remove (removing an unknown pod is not an error, as
    /// CNI DEL requires).
    ///
    /// The routes are withdrawn before this returns; the interface of a pod
    /// felix holds is deleted by its index on a thread of its own and may
    /// outlive the call by the 25–40 ms the kernel takes to unregister a
    /// veth pair: nothing routes to it any more, its addresses may be given
    /// to another pod at once (that pod's `/32` goes through its own
    /// interface), an ADD of the same pod waits for it, and
    /// [`PodInterfaces::settle`] waits for all. If that deletion fails, the
    /// next ADD of the pod removes the interface by name.
    pub async fn remove(&self, namespace: &str, pod: &str) -> Result<bool, WorkloadError> {
        let pod_id = format!("{namespace}/{pod}");
        let iface = self.iface_name(namespace, pod);
        let span = tracing::info_span!("workload_remove", pod = %pod_id, iface = %iface);
        async {
            let (ips, ifindex) = {
                let mut reg = self.registry();
                match reg.get(&iface) {
                    Some(e) if e.workload.is_none() => {
                        return Err(WorkloadError::Busy {
                            pod: pod_id.clone(),
                        });
                    }
                    Some(_) => reg
                        .remove(&iface)
                        .map(|e| (e.ips, e.workload.map(|w| w.host_ifindex)))
                        .unwrap_or_default(),
                    None => (Vec::new(), None),
                }
            };
            if !ips.is_empty() {
                let updates = ips
                    .iter()
                    .map(|ip| RouteUpdate::Remove(host_prefix(*ip)))
                    .collect();
                self.routes.update(updates)?;
                let report = self.routes.flush().await?;
                if let Some(f) = report.failures.first() {
                    // The reconciler retries; the interface goes regardless
                    // (and the kernel drops routes through it with it).
                    tracing::warn!(failure = %f, "withdrawing pod route failed");
                }
            }
            if let Some(index) = ifindex {
                self.delete_detached(&iface, index);
                tracing::info!(
                    "pod interface removed; the kernel unregisters it in the background"
                );
                return Ok(true);
            }
            let deleted = link::delete_by_name(&self.nl, &iface)
                .await
                .map_err(|source| WorkloadError::Netlink {
                    pod: pod_id.clone(),
                    step: "delete host interface",
                    source,
                })?;
            tracing::info!(deleted, "pod interface removed");
            Ok(deleted || !ips.is_empty())
        }
        .instrument(span)
        .await
    }
}

impl PodInterfaces {
    /// Deletes host interface `index` (named `iface`) on a blocking thread;
    /// see [`PodInterfaces::remove`].
    fn delete_detached(&self, iface: &str, index: u32) {
        let name = iface.to_string();
        let span = tracing::Span::current();
        // A blocking-pool thread is started from the runtime's, in felix's
        // namespace (felix enters pod namespaces on threads of their own).
        let task = tokio::task::spawn_blocking(move || {
            if let Err(e) = link::delete_blocking(index) {
                span.in_scope(|| {
                    tracing::warn!(error = %e, iface = %name, index, "could not delete host interface; the pod's next ADD removes it");
                });
            }
        });
        let mut removing = self.removing();
        // Only deletions under way are kept, so churn does not grow it. (An
        // earlier one of the same name has ended: the ADD in between
        // waited for it.)
        removing.retain(|_, t| !t.is_finished());
        removing.insert(iface.to_string(), task);
    }
}

/// A pod's place in the registry while its interface is being made:
/// released on drop unless the add completed (`kept`).
struct Reservation<'a> {
    interfaces: &'a PodInterfaces,
    iface: &'a str,
    kept: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.interfaces.registry().remove(self.iface);
        }
    }
}

/// Whether `ns` is the namespace this thread is in: a pod path that names
/// felix's own namespace would put the pod's `eth0` on the host.
fn same_namespace_as_caller(ns: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(pod), Ok(own)) = (ns.metadata(), std::fs::metadata("/proc/thread-self/ns/net")) else {
        return false;
    };
    pod.dev() == own.dev() && pod.ino() == own.ino()
}
