//! The pod's side of the veth pair, configured from a thread inside the
//! pod's network namespace (see `netns`): its own rtnetlink socket and
//! sysctls belong to the pod.

use std::io;
use std::net::IpAddr;

use super::naming::{HOST_LINK_LOCAL, IPV4_GATEWAY};
use super::{WorkloadError, link, sysctl};

/// Failures inside the pod's namespace, named by step.
pub(super) enum PodSideError {
    Netlink(&'static str, rtnetlink::Error),
    Io(&'static str, io::Error),
    Sysctl(String, io::Error),
}

impl PodSideError {
    pub(super) fn into_error(self, pod: &str) -> WorkloadError {
        let pod = pod.to_string();
        match self {
            PodSideError::Netlink(step, source) => WorkloadError::Netlink { pod, step, source },
            PodSideError::Io(step, source) => WorkloadError::Io { pod, step, source },
            PodSideError::Sysctl(key, source) => WorkloadError::Sysctl { pod, key, source },
        }
    }
}

/// Configures the pod side; runs on a thread inside the pod's namespace.
pub(super) fn pod_side(iface: &str, ips: &[IpAddr]) -> Result<[u8; 6], PodSideError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PodSideError::Io("start pod-side runtime", e))?;
    rt.block_on(async {
        let (h, conn) =
            link::connect().map_err(|e| PodSideError::Io("open rtnetlink socket in pod", e))?;
        let result = pod_side_async(&h, iface, ips).await;
        conn.abort();
        result
    })
}

async fn pod_side_async(
    h: &rtnetlink::Handle,
    iface: &str,
    ips: &[IpAddr],
) -> Result<[u8; 6], PodSideError> {
    let nl = |step: &'static str| move |e| PodSideError::Netlink(step, e);
    let index = link::index_of(h, iface)
        .await
        .map_err(nl("look up pod interface"))?
        .ok_or(PodSideError::Io(
            "look up pod interface",
            io::Error::from_raw_os_error(libc::ENODEV),
        ))?;
    let v4 = ips.iter().any(IpAddr::is_ipv4);
    let v6 = ips.iter().any(IpAddr::is_ipv6);
    if v6 {
        sysctl::pod_side_v6(iface).map_err(|(k, e)| PodSideError::Sysctl(k, e))?;
    }
    link::set_up(h, index)
        .await
        .map_err(nl("set pod interface up"))?;
    for ip in ips {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        link::add_address(h, index, *ip, len, ip.is_ipv6())
            .await
            .map_err(nl("add pod address"))?;
    }
    if v4 {
        link::add_link_route_v4(h, index, IPV4_GATEWAY)
            .await
            .map_err(nl("add pod route to 169.254.1.1"))?;
        link::add_default_route(h, index, IPV4_GATEWAY.into())
            .await
            .map_err(nl("add pod IPv4 default route"))?;
    }
    if v6 {
        link::add_default_route(h, index, HOST_LINK_LOCAL.into())
            .await
            .map_err(nl("add pod IPv6 default route"))?;
    }
    link::mac_of(h, index)
        .await
        .map_err(nl("read pod interface MAC"))?
        .ok_or(PodSideError::Io(
            "read pod interface MAC",
            io::Error::from_raw_os_error(libc::ENODATA),
        ))
}
