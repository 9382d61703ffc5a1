//! Talking to the local felix: one gRPC call per CNI command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::felix::workload_service_client::WorkloadServiceClient;
use proto::felix::{
    AddWorkloadRequest, CheckWorkloadRequest, DelWorkloadRequest, GcWorkloadsRequest,
};
use proto::health::CheckRequest;
use proto::health::health_client::HealthClient;
use tonic::Code;

use crate::error::{CniError, code};
use crate::result::{AddResult, Interface, IpConfig};
use crate::spec::{Invocation, NetConf};

/// Where felix listens unless the configuration says otherwise.
pub const DEFAULT_FELIX_SOCKET: &str = "/run/calico/felix.sock";

/// How long an ADD may take (IPAM may claim a block; felix builds a veth).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn socket_of(conf: &NetConf) -> PathBuf {
    conf.felix_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FELIX_SOCKET))
}

async fn channel(socket: &Path) -> Result<tonic::transport::Channel, CniError> {
    let unreachable = |e: String| {
        CniError::new(
            code::FELIX_UNREACHABLE,
            format!("cannot reach felix at {}", socket.display()),
            format!("{e}; is calico-node running on this node?"),
        )
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, proto::uds::connect(socket)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
}

/// Maps felix's gRPC status to the CNI error a runtime shows.
fn from_status(what: &str, s: tonic::Status) -> CniError {
    let c = match s.code() {
        // IPAM: no pool, pool full, block limit.
        Code::ResourceExhausted => code::IPAM_FAILURE,
        // The pod's namespace (CNI_NETNS) or interface name is unusable.
        Code::InvalidArgument => code::INVALID_ENV,
        // felix runs without what it needs (no datastore for IPAM).
        Code::FailedPrecondition => code::INVALID_CONFIG,
        Code::NotFound => code::UNKNOWN_CONTAINER,
        // Datastore down, felix not configured yet, a concurrent add.
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted => code::TRY_AGAIN_LATER,
        _ => code::INTERFACE_FAILURE,
    };
    CniError::new(c, format!("{what} failed"), s.message().to_string())
}

fn pod(inv: &Invocation) -> (String, String) {
    (
        inv.args.pod_namespace.clone().unwrap_or_default(),
        inv.args.pod_name.clone().unwrap_or_default(),
    )
}

fn netns(inv: &Invocation) -> String {
    inv.netns
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

pub async fn add(inv: &Invocation, conf: &NetConf) -> Result<AddResult, CniError> {
    let (pod_namespace, pod_name) = pod(inv);
    let (v4, v6) = conf.families();
    let ipam = conf.ipam.clone().unwrap_or_default();
    let req = AddWorkloadRequest {
        container_id: inv.container_id.clone(),
        netns: netns(inv),
        ifname: inv.ifname.clone(),
        pod_namespace,
        pod_name,
        want_ipv4: v4,
        want_ipv6: v6,
        ipv4_pools: ipam.ipv4_pools,
        ipv6_pools: ipam.ipv6_pools,
        // 0: felix's computed pod MTU.
        mtu: conf.mtu.unwrap_or(0),
    };
    let mut client = WorkloadServiceClient::new(channel(&socket_of(conf)).await?);
    let mut request = tonic::Request::new(req);
    request.set_timeout(CALL_TIMEOUT);
    let reply = client
        .add(request)
        .await
        .map_err(|s| from_status("adding the pod network", s))?
        .into_inner();
    let mut result = AddResult {
        interfaces: vec![
            Interface {
                name: reply.host_ifname,
                mac: Some(reply.host_mac).filter(|m| !m.is_empty()),
                sandbox: None,
            },
            Interface {
                name: inv.ifname.clone(),
                mac: Some(reply.pod_mac).filter(|m| !m.is_empty()),
                sandbox: Some(netns(inv)),
            },
        ],
        ..Default::default()
    };
    for a in &reply.addresses {
        let address = ipnetwork::IpNetwork::try_from(a).map_err(|e| {
            CniError::new(
                code::INTERFACE_FAILURE,
                "felix returned a malformed address",
                e.to_string(),
            )
        })?;
        result.ips.push(IpConfig {
            address,
            gateway: None,
            interface: Some(1),
        });
    }
    Ok(result)
}

pub async fn del(inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
    let (pod_namespace, pod_name) = pod(inv);
    let mut client = WorkloadServiceClient::new(channel(&socket_of(conf)).await?);
    let mut request = tonic::Request::new(DelWorkloadRequest {
        container_id: inv.container_id.clone(),
        netns: netns(inv),
        ifname: inv.ifname.clone(),
        pod_namespace,
        pod_name,
    });
    request.set_timeout(CALL_TIMEOUT);
    client
        .del(request)
        .await
        .map_err(|s| from_status("removing the pod network", s))?;
    Ok(())
}

pub async fn check(inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
    let (pod_namespace, pod_name) = pod(inv);
    let mut client = WorkloadServiceClient::new(channel(&socket_of(conf)).await?);
    let mut request = tonic::Request::new(CheckWorkloadRequest {
        container_id: inv.container_id.clone(),
        netns: netns(inv),
        ifname: inv.ifname.clone(),
        pod_namespace,
        pod_name,
    });
    request.set_timeout(CALL_TIMEOUT);
    let reply = client
        .check(request)
        .await
        .map_err(|s| from_status("checking the pod network", s))?
        .into_inner();
    if reply.problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::CHECK_FAILED,
            "the pod's network is broken",
            reply.problems.join("; "),
        ))
    }
}

/// GC (spec 1.1): felix collects every sandbox it holds that is not in
/// the runtime's `cni.dev/valid-attachments`. Without that list nothing is
/// collected: an absent list is not an empty one.
pub async fn gc(conf: &NetConf) -> Result<(), CniError> {
    let Some(valid) = conf
        .valid_attachments
        .as_ref()
        .or(conf.attachments.as_ref())
    else {
        return Err(CniError::new(
            code::DECODE_FAILURE,
            "GC without cni.dev/valid-attachments",
            "the runtime passes the attachments it still has; nothing was collected",
        ));
    };
    let mut client = WorkloadServiceClient::new(channel(&socket_of(conf)).await?);
    let mut request = tonic::Request::new(GcWorkloadsRequest {
        valid_container_ids: valid.iter().map(|a| a.container_id.clone()).collect(),
    });
    request.set_timeout(GC_TIMEOUT);
    client
        .gc(request)
        .await
        .map_err(|s| from_status("collecting stale pod networks", s))?;
    Ok(())
}

/// GC may tear down many pods at once.
const GC_TIMEOUT: Duration = Duration::from_secs(120);

/// STATUS: can this node take pod ADDs right now?
pub async fn status(conf: &NetConf) -> Result<(), CniError> {
    let socket = socket_of(conf);
    let ch = channel(&socket)
        .await
        .map_err(|e| CniError::new(code::NOT_AVAILABLE, "calico-rs is not ready", e.details))?;
    let r = HealthClient::new(ch)
        .check(CheckRequest {})
        .await
        .map_err(|s| CniError::new(code::NOT_AVAILABLE, "calico-rs is not ready", s.message()))?
        .into_inner();
    if r.ready {
        Ok(())
    } else {
        Err(CniError::new(
            code::NOT_AVAILABLE,
            "calico-rs is not ready",
            format!("felix: {}", r.detail),
        ))
    }
}
