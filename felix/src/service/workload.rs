//! WorkloadService: what the CNI plugin asks of felix. ADD allocates the
//! pod's addresses (IPAM handle `k8s-pod-network.<container id>`) and
//! builds its interface; DEL undoes both; CHECK verifies.
//!
//! Nothing is left half-made: if the interface cannot be built, the
//! addresses are released before the error returns; an ADD for a container
//! that already has state (a crash half-way, a retry) first removes it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use datastore::ipam::select::{self, IP_ADDRS_ANNOTATION, PodSelection};
use datastore::ipam::{AssignRequest, Ipam, IpamError, pod_handle};
use datastore::kubernetes::objects::{Namespace, Pod};
use ipnetwork::IpNetwork;
use ippool_crd::AllowedUse;
use proto::common::{IpAddress, IpPrefix};
use proto::felix::workload_service_server::WorkloadService;
use proto::felix::{
    AddWorkloadReply, AddWorkloadRequest, CheckWorkloadReply, CheckWorkloadRequest,
    DelWorkloadReply, DelWorkloadRequest, GcWorkloadsReply, GcWorkloadsRequest,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::Shared;
use crate::metrics::result_label;
use crate::policy::nft::Programmed;
use crate::policy::source::wep::{self, PodEndpoint};
use crate::store::{WorkloadRecord, mac_string};
use crate::workload::{WorkloadError, WorkloadSpec};

/// The WorkloadService on felix's socket (what the CNI plugin calls).
pub struct CniService(pub Shared);

fn ipam_status(e: IpamError) -> Status {
    match e {
        IpamError::Datastore(d) if d.is_transient() => Status::unavailable(d.to_string()),
        IpamError::Contention { .. } => Status::aborted(e.to_string()),
        other => Status::resource_exhausted(other.to_string()),
    }
}

fn endpoint_status(e: datastore::Error) -> Status {
    let text = format!("workload endpoint: {e}");
    if e.is_transient() {
        Status::unavailable(text)
    } else {
        Status::internal(text)
    }
}

fn workload_status(e: WorkloadError) -> Status {
    match e {
        WorkloadError::NetnsNotFound { .. }
        | WorkloadError::NetnsEnter { .. }
        | WorkloadError::NetnsIsHost { .. } => Status::invalid_argument(e.to_string()),
        WorkloadError::Busy { .. } => Status::aborted(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// The pod identity: Kubernetes namespace/name, or (another runtime) the
/// container ID as the name.
fn identity(namespace: &str, pod: &str, container_id: &str) -> (String, String) {
    if pod.is_empty() {
        ("default".into(), container_id.to_string())
    } else if namespace.is_empty() {
        ("default".into(), pod.to_string())
    } else {
        (namespace.to_string(), pod.to_string())
    }
}

fn check_container(id: &str) -> Result<(), Status> {
    datastore::check_name("container id", id).map_err(|e| Status::invalid_argument(e.to_string()))
}

impl CniService {
    /// Removes whatever felix holds for this container and pod.
    async fn tear_down(
        &self,
        container_id: &str,
        namespace: &str,
        pod: &str,
    ) -> Result<(), Status> {
        let s = &self.0;
        if let Some(rec) = s.store.load(container_id) {
            s.workloads
                .remove(&rec.namespace, &rec.pod)
                .await
                .map_err(workload_status)?;
        }
        s.workloads
            .remove(namespace, pod)
            .await
            .map_err(workload_status)?;
        Ok(())
    }
}

impl CniService {
    /// A new sandbox of a pod replaces any earlier one (its interface, named
    /// after the pod, was just taken down): the earlier sandboxes'
    /// addresses are released and their records forgotten, so that nothing
    /// leaks when their DEL never comes, and a restarted felix does not
    /// find two records for one pod. A late DEL of such a sandbox is then a
    /// no-op success.
    async fn retire_older_sandboxes(
        &self,
        ipam: &Ipam,
        container_id: &str,
        namespace: &str,
        pod: &str,
    ) -> Result<(), Status> {
        let s = &self.0;
        for old in s.store.other_sandboxes(container_id, namespace, pod) {
            let released = ipam
                .release_by_handle(&pod_handle(&old.container_id))
                .await
                .map_err(ipam_status)?;
            if let Err(e) = s.store.remove(&old.container_id) {
                tracing::warn!(error = %e, container = %old.container_id,
                    "cannot forget the earlier sandbox's record");
            }
            tracing::info!(earlier = %old.container_id, released = ?released,
                "a new sandbox replaces the pod's earlier one: its addresses are released");
        }
        Ok(())
    }
}

/// Marks a sandbox's ADD as under way for as long as it lives.
struct Adding<'a> {
    state: &'a super::State,
    container_id: String,
}

impl<'a> Adding<'a> {
    fn new(state: &'a super::State, container_id: &str) -> Self {
        if let Ok(mut a) = state.adding.lock() {
            a.insert(container_id.to_string());
        }
        Adding {
            state,
            container_id: container_id.to_string(),
        }
    }
}

impl Drop for Adding<'_> {
    fn drop(&mut self) {
        if let Ok(mut a) = self.state.adding.lock() {
            a.remove(&self.container_id);
        }
    }
}

#[tonic::async_trait]
impl WorkloadService for CniService {
    async fn add(
        &self,
        req: Request<AddWorkloadRequest>,
    ) -> Result<Response<AddWorkloadReply>, Status> {
        let started = Instant::now();
        let r = self.add_inner(req).await;
        self.0
            .cni_metrics
            .observe("ADD", &result_label(&r), started.elapsed());
        r
    }

    async fn del(
        &self,
        req: Request<DelWorkloadRequest>,
    ) -> Result<Response<DelWorkloadReply>, Status> {
        let started = Instant::now();
        let r = self.del_inner(req).await;
        self.0
            .cni_metrics
            .observe("DEL", &result_label(&r), started.elapsed());
        r
    }

    async fn check(
        &self,
        req: Request<CheckWorkloadRequest>,
    ) -> Result<Response<CheckWorkloadReply>, Status> {
        self.check_inner(req).await
    }

    async fn gc(
        &self,
        req: Request<GcWorkloadsRequest>,
    ) -> Result<Response<GcWorkloadsReply>, Status> {
        let started = Instant::now();
        let r = self.gc_inner(req.into_inner()).await;
        self.0
            .cni_metrics
            .observe("GC", &result_label(&r), started.elapsed());
        r
    }
}

impl CniService {
    /// CNI GC: every sandbox felix set up, and every pod handle this node
    /// holds addresses for, that the runtime no longer has (and whose ADD
    /// is not under way) is deleted as a DEL would.
    async fn gc_inner(&self, r: GcWorkloadsRequest) -> Result<Response<GcWorkloadsReply>, Status> {
        let s = &self.0;
        let valid: std::collections::HashSet<String> = r.valid_container_ids.into_iter().collect();
        let busy = |cid: &str| s.adding.lock().map(|a| a.contains(cid)).unwrap_or(true);
        let mut stale: BTreeMap<String, (String, String)> = BTreeMap::new();
        for rec in s.store.list() {
            if !valid.contains(&rec.container_id) {
                stale.insert(rec.container_id.clone(), (rec.namespace, rec.pod));
            }
        }
        // Addresses of sandboxes felix has no record of: an ADD that died
        // half-way (its record is written last).
        if let Some(ipam) = &s.ipam {
            let prefix = pod_handle("");
            for b in ipam.all_blocks().await.map_err(ipam_status)? {
                if b.host() != Some(s.node.as_str()) {
                    continue;
                }
                for a in datastore::ipam::leaks::held_addresses(&b) {
                    let Some(cid) = a.handle.as_deref().and_then(|h| h.strip_prefix(&prefix))
                    else {
                        continue;
                    };
                    if a.attributes.get("node").is_some_and(|n| *n != s.node) {
                        continue;
                    }
                    if !valid.contains(cid) && !stale.contains_key(cid) {
                        let ns = a.attributes.get("namespace").cloned().unwrap_or_default();
                        let pod = a.attributes.get("pod").cloned().unwrap_or_default();
                        stale.insert(cid.to_string(), (ns, pod));
                    }
                }
            }
        }
        let mut reply = GcWorkloadsReply::default();
        for (cid, (namespace, pod)) in stale {
            if busy(&cid) || check_container(&cid).is_err() {
                continue;
            }
            let (namespace, pod) = identity(&namespace, &pod, &cid);
            let del = DelWorkloadRequest {
                container_id: cid.clone(),
                netns: String::new(),
                ifname: String::new(),
                pod_namespace: namespace.clone(),
                pod_name: pod.clone(),
            };
            let span = tracing::info_span!("cni_gc", pod = %format!("{namespace}/{pod}"), container = %cid);
            let done = self
                .del_pod(&del, &namespace, &pod)
                .instrument(span)
                .await?
                .into_inner();
            tracing::info!(container = %cid, pod = %format!("{namespace}/{pod}"),
                released = done.released.len(), "CNI GC: collected a sandbox the runtime no longer has");
            reply.collected.push(cid);
            reply.released.extend(done.released);
        }
        Ok(Response::new(reply))
    }
}

impl CniService {
    async fn add_inner(
        &self,
        req: Request<AddWorkloadRequest>,
    ) -> Result<Response<AddWorkloadReply>, Status> {
        let r = req.into_inner();
        let s = &self.0;
        check_container(&r.container_id)?;
        if r.netns.is_empty() {
            return Err(Status::invalid_argument(
                "no network namespace (CNI_NETNS) given",
            ));
        }
        if !r.ifname.is_empty() && r.ifname != s.container_iface {
            return Err(Status::invalid_argument(format!(
                "interface name {:?} is not supported; pods get {:?}",
                r.ifname, s.container_iface
            )));
        }
        if !*s.configured.borrow() {
            return Err(Status::unavailable(
                "felix has not received its configuration from confd yet",
            ));
        }
        if !r.want_ipv4 && !r.want_ipv6 {
            return Err(Status::invalid_argument(
                "neither assign_ipv4 nor assign_ipv6 is on in the CNI configuration",
            ));
        }
        let Some(ipam) = &s.ipam else {
            return Err(Status::failed_precondition(
                "felix runs without a datastore: no IPAM",
            ));
        };
        let (namespace, pod) = identity(&r.pod_namespace, &r.pod_name, &r.container_id);
        // A span per pod, entered only while this request's future runs:
        // concurrent ADDs each log under their own pod.
        let span = tracing::info_span!("cni_add", pod = %format!("{namespace}/{pod}"), container = %r.container_id);
        let _adding = Adding::new(s, &r.container_id);
        self.add_pod(&r, ipam, namespace, pod)
            .instrument(span)
            .await
    }

    /// ADD once validated: addresses from IPAM, then the interface.
    async fn add_pod(
        &self,
        r: &AddWorkloadRequest,
        ipam: &Ipam,
        namespace: String,
        pod: String,
    ) -> Result<Response<AddWorkloadReply>, Status> {
        let s = &self.0;
        let handle = pod_handle(&r.container_id);
        // A retried or crashed-half-way ADD: start from nothing.
        self.tear_down(&r.container_id, &namespace, &pod).await?;
        ipam.release_by_handle(&handle).await.map_err(ipam_status)?;
        self.retire_older_sandboxes(ipam, &r.container_id, &namespace, &pod)
            .await?;

        let attrs = BTreeMap::from([
            ("namespace".to_string(), namespace.clone()),
            ("pod".to_string(), pod.clone()),
            ("node".to_string(), s.node.clone()),
        ]);
        let (selection, namespace_labels) = self.pod_selection(r, &namespace, &pod).await?;
        let ips: Vec<IpAddr> = if selection.addrs.is_empty() {
            let assigned = ipam
                .auto_assign(&AssignRequest {
                    handle: handle.clone(),
                    host: s.node.clone(),
                    num_v4: usize::from(r.want_ipv4),
                    num_v6: usize::from(r.want_ipv6),
                    attrs,
                    pools_v4: selection.pools_v4,
                    pools_v6: selection.pools_v6,
                    used_for: Some(AllowedUse::Workload),
                    namespace_labels,
                })
                .await
                .map_err(ipam_status)?;
            assigned.v4.iter().chain(&assigned.v6).copied().collect()
        } else {
            self.assign_requested(ipam, &handle, &selection.addrs, &attrs)
                .await?;
            selection.addrs
        };
        let spec = WorkloadSpec {
            namespace: namespace.clone(),
            pod: pod.clone(),
            netns: PathBuf::from(&r.netns),
            ips: ips.clone(),
        };
        let w = match s.workloads.add(&spec).await {
            Ok(w) => w,
            Err(e) => {
                if let Err(re) = ipam.release_by_handle(&handle).await {
                    tracing::error!(error = %re, "could not release the addresses of a failed add");
                }
                return Err(workload_status(e));
            }
        };
        let mac = mac_string(w.container_mac);
        let ep = PodEndpoint {
            node: &s.node,
            namespace: &namespace,
            pod: &pod,
            container_id: &r.container_id,
            container_iface: &s.container_iface,
            host_iface: &w.host_iface,
            mac: &mac,
            ips: &ips,
        };
        // Without its endpoint (etcd) or its addresses on the Pod
        // (Kubernetes) the pod is invisible to policy: the ADD fails whole,
        // as Calico's does.
        if let Some(client) = &s.endpoints
            && let Err(e) = wep::write(client, &ep).await
        {
            tracing::warn!(error = %e, "cannot write the workload endpoint; undoing the add");
            self.undo_add(ipam, &handle, &ep, false).await;
            return Err(endpoint_status(e));
        }
        // (Only a Kubernetes pod has a Pod to annotate.)
        if let (Some(client), false) = (&s.pods, r.pod_name.is_empty())
            && let Err(e) = wep::annotate_pod(client, &ep).await
        {
            tracing::warn!(error = %e, "cannot annotate the pod with its addresses; undoing the add");
            self.undo_add(ipam, &handle, &ep, false).await;
            return Err(endpoint_status(e));
        }
        // Without its record a restarted felix would not re-adopt the pod
        // (its routes would go after the grace period): the ADD fails
        // whole instead, and kubelet retries it.
        if let Err(e) = s.store.save(&WorkloadRecord::new(&r.container_id, &w)) {
            tracing::warn!(error = %e, "cannot record the pod; undoing the add");
            self.undo_add(ipam, &handle, &ep, true).await;
            return Err(Status::internal(format!(
                "cannot record the pod in felix's state directory ({e}); nothing was kept, \
                 try again once the directory is writable"
            )));
        }
        // Unknown workload interfaces are dropped (as in Calico): return
        // once the policy dataplane has the pod, so that its first packet
        // is not lost.
        if let Some(programmed) = &s.policy_programmed {
            let waited = Instant::now();
            let ready = wait_programmed(programmed.clone(), &w.host_iface, &ips).await;
            if !ready {
                tracing::warn!(waited = ?waited.elapsed(),
                    "the policy dataplane has not programmed the pod yet; returning anyway \
                     (its traffic is dropped until it has)");
            }
        }
        tracing::info!(ips = ?ips, iface = %w.host_iface, "pod added");
        Ok(Response::new(AddWorkloadReply {
            host_ifname: w.host_iface.clone(),
            host_mac: mac_string(crate::workload::HOST_MAC),
            pod_mac: mac_string(w.container_mac),
            addresses: ips
                .iter()
                .map(|ip| {
                    let len = if ip.is_ipv4() { 32 } else { 128 };
                    IpPrefix::from(
                        IpNetwork::new(*ip, len).unwrap_or_else(|_| IpNetwork::from(*ip)),
                    )
                })
                .collect(),
        }))
    }

    /// Which pools (or exact addresses) the pod asks for, and its
    /// namespace's labels (for pools' namespaceSelector). In Kubernetes
    /// mode they come from the Pod's and Namespace's Calico annotations,
    /// over the CNI config's pools; in etcd mode there are no Pods, so the
    /// CNI config's pools apply and the namespace's labels are unknown.
    async fn pod_selection(
        &self,
        r: &AddWorkloadRequest,
        namespace: &str,
        pod: &str,
    ) -> Result<(PodSelection, Option<BTreeMap<String, String>>), Status> {
        let none = BTreeMap::new();
        let (Some(client), false) = (&self.0.pods, r.pod_name.is_empty()) else {
            let sel = select::pod_selection(&none, &none, &r.ipv4_pools, &r.ipv6_pools)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            return Ok((sel, None));
        };
        let read = |e: datastore::Error| {
            let text = format!("reading the pod's IPAM annotations: {e}");
            if e.is_transient() {
                Status::unavailable(text)
            } else {
                Status::internal(text)
            }
        };
        let pod_obj = client.get_in::<Pod>(namespace, pod).await.map_err(read)?;
        if pod_obj.is_none() {
            tracing::warn!("the pod is not in the API server; its IPAM annotations are not read");
        }
        let ns_obj = client.get::<Namespace>(namespace).await.map_err(read)?;
        let pod_ann = pod_obj
            .and_then(|p| p.metadata.annotations)
            .unwrap_or_default();
        let (ns_ann, ns_labels) = match ns_obj {
            Some(n) => (
                n.metadata.annotations.unwrap_or_default(),
                Some(n.metadata.labels.unwrap_or_default()),
            ),
            None => (BTreeMap::new(), None),
        };
        let sel = select::pod_selection(&pod_ann, &ns_ann, &r.ipv4_pools, &r.ipv6_pools)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !sel.addrs.is_empty() || !sel.pools_v4.is_empty() || !sel.pools_v6.is_empty() {
            tracing::info!(addrs = ?sel.addrs, pools_v4 = ?sel.pools_v4, pools_v6 = ?sel.pools_v6,
                "the pod asks for specific addresses or pools");
        }
        Ok((sel, ns_labels))
    }

    /// Assigns exactly the addresses the pod asked for (`ipAddrs`); all or
    /// nothing.
    async fn assign_requested(
        &self,
        ipam: &Ipam,
        handle: &str,
        addrs: &[IpAddr],
        attrs: &BTreeMap<String, String>,
    ) -> Result<(), Status> {
        for ip in addrs {
            if let Err(e) = ipam.assign_ip(*ip, handle, &self.0.node, attrs).await {
                if let Err(re) = ipam.release_by_handle(handle).await {
                    tracing::error!(error = %re, "could not release the addresses of a failed add");
                }
                let text = format!(
                    "cannot give the pod the address it asks for ({IP_ADDRS_ANNOTATION}): {e}"
                );
                return Err(match e {
                    IpamError::InUse(_) | IpamError::NotInPool(_) => {
                        Status::failed_precondition(text)
                    }
                    other => {
                        let st = ipam_status(other);
                        Status::new(st.code(), text)
                    }
                });
            }
        }
        Ok(())
    }

    /// Undoes an ADD that could not be completed: the interface, the
    /// endpoint (when it was written) and the addresses.
    async fn undo_add(&self, ipam: &Ipam, handle: &str, ep: &PodEndpoint<'_>, endpoint: bool) {
        let s = &self.0;
        if let Err(we) = s.workloads.remove(ep.namespace, ep.pod).await {
            tracing::error!(error = %we, "could not remove the interface of a failed add");
        }
        if endpoint
            && let Some(client) = &s.endpoints
            && let Err(we) = wep::remove(client, ep).await
        {
            tracing::error!(error = %we, "could not remove the endpoint of a failed add");
        }
        if let Err(re) = ipam.release_by_handle(handle).await {
            tracing::error!(error = %re, "could not release the addresses of a failed add");
        }
    }

    async fn del_inner(
        &self,
        req: Request<DelWorkloadRequest>,
    ) -> Result<Response<DelWorkloadReply>, Status> {
        let r = req.into_inner();
        check_container(&r.container_id)?;
        let (namespace, pod) = identity(&r.pod_namespace, &r.pod_name, &r.container_id);
        let span = tracing::info_span!("cni_del", pod = %format!("{namespace}/{pod}"), container = %r.container_id);
        self.del_pod(&r, &namespace, &pod).instrument(span).await
    }

    /// DEL once validated: the interface, then the addresses.
    async fn del_pod(
        &self,
        r: &DelWorkloadRequest,
        namespace: &str,
        pod: &str,
    ) -> Result<Response<DelWorkloadReply>, Status> {
        let s = &self.0;
        // The pod's interface is named after the pod, not the sandbox. A
        // late DEL of an earlier sandbox (kubelet and the runtime repeat
        // DEL until it succeeds, also once the pod has been made again
        // under the same name, as after a drain) must leave the interface
        // of the sandbox that has the pod now alone.
        let newer = s
            .store
            .other_sandboxes(&r.container_id, namespace, pod)
            .into_iter()
            .next();
        match newer {
            Some(rec) => tracing::info!(
                holder = %rec.container_id,
                iface = %rec.host_iface,
                "another sandbox has this pod now: its interface stays"
            ),
            None => self.tear_down(&r.container_id, namespace, pod).await?,
        }
        if let Some(client) = &s.endpoints {
            let ep = PodEndpoint {
                node: &s.node,
                namespace,
                pod,
                container_id: &r.container_id,
                container_iface: &s.container_iface,
                host_iface: "",
                mac: "",
                ips: &[],
            };
            wep::remove(client, &ep).await.map_err(endpoint_status)?;
        }
        let released = match &s.ipam {
            Some(ipam) => ipam
                .release_by_handle(&pod_handle(&r.container_id))
                .await
                .map_err(ipam_status)?,
            None => Vec::new(),
        };
        // Only forget the pod once its addresses are released: a DEL that
        // failed on the datastore is retried by kubelet and must still work.
        if let Err(e) = s.store.remove(&r.container_id) {
            tracing::warn!(error = %e, "cannot remove the pod's record");
        }
        tracing::info!(released = ?released, "pod deleted");
        Ok(Response::new(DelWorkloadReply {
            released: released.into_iter().map(IpAddress::from).collect(),
        }))
    }

    async fn check_inner(
        &self,
        req: Request<CheckWorkloadRequest>,
    ) -> Result<Response<CheckWorkloadReply>, Status> {
        let r = req.into_inner();
        let s = &self.0;
        check_container(&r.container_id)?;
        let Some(rec) = s.store.load(&r.container_id) else {
            return Err(Status::not_found(format!(
                "felix has no pod for container {}",
                r.container_id
            )));
        };
        let mut problems = Vec::new();
        if !rec.netns.exists() {
            problems.push(format!("network namespace {} is gone", rec.netns.display()));
        }
        match s.workloads.get(&rec.namespace, &rec.pod) {
            None => problems.push(format!(
                "felix does not hold pod {}/{}",
                rec.namespace, rec.pod
            )),
            Some(_) => {
                if !s.workloads.interface_exists(&rec.host_iface).await {
                    problems.push(format!("host interface {} is missing", rec.host_iface));
                }
            }
        }
        if let Some(ipam) = &s.ipam {
            match ipam.ips_by_handle(&pod_handle(&r.container_id)).await {
                Ok(held) => {
                    for ip in &rec.ips {
                        if !held.contains(ip) {
                            problems
                                .push(format!("{ip} is no longer allocated to the pod in IPAM"));
                        }
                    }
                }
                Err(e) => problems.push(format!("cannot check IPAM: {e}")),
            }
        }
        Ok(Response::new(CheckWorkloadReply { problems }))
    }
}

/// How long an ADD waits for the policy dataplane to program the new pod.
/// Normally one watch round trip and one nft transaction (milliseconds);
/// the bound only matters when the datastore or the kernel is slow.
const PROGRAMMED_WAIT: Duration = Duration::from_secs(2);

/// Waits until the policy table in the kernel dispatches `iface` with all
/// of `ips` as its addresses; `false` if that did not happen within
/// [`PROGRAMMED_WAIT`] or the dataplane is failing (nobody waits then).
async fn wait_programmed(
    mut programmed: watch::Receiver<Programmed>,
    iface: &str,
    ips: &[IpAddr],
) -> bool {
    let done = |p: &Programmed| match p {
        Programmed::Failing => Some(false),
        Programmed::Starting => None,
        Programmed::Written(snap) => snap
            .local
            .iter()
            .filter(|(_, i)| i.as_str() == iface)
            .any(|(id, _)| {
                snap.endpoints
                    .get(id)
                    .is_some_and(|ep| ips.iter().all(|ip| ep.addresses.contains(ip)))
            })
            .then_some(true),
    };
    let wait = async {
        loop {
            if let Some(r) = done(&programmed.borrow_and_update()) {
                return r;
            }
            if programmed.changed().await.is_err() {
                return false;
            }
        }
    };
    tokio::time::timeout(PROGRAMMED_WAIT, wait)
        .await
        .unwrap_or(false)
}
