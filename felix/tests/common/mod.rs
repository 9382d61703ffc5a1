//! Shared fixtures of felix's namespace tests: a "node" namespace with an
//! uplink (and a default route through it, as a real node has), and bounded
//! polling.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lab::Netns;

/// The node's uplink address; its next hop is `.2`.
pub const NODE_IP: &str = "192.168.255.1";
pub const NEXT_HOP: &str = "192.168.255.2";
pub const NODE_IP6: &str = "fd00:ff::1";
pub const NEXT_HOP6: &str = "fd00:ff::2";

/// A node namespace: `up0` (192.168.255.1/24, fd00:ff::1/64) is the
/// uplink, its veth peer `up1` stays in the same namespace so the link is
/// up; default routes point at the next hop.
pub fn node(tag: &str) -> Arc<Netns> {
    let ns = Netns::create(tag).unwrap();
    ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"])
        .unwrap();
    ns.ip(&["link", "set", "up0", "up"]).unwrap();
    ns.ip(&["link", "set", "up1", "up"]).unwrap();
    ns.ip(&["addr", "add", "192.168.255.1/24", "dev", "up0"])
        .unwrap();
    ns.ip(&["-6", "addr", "add", "fd00:ff::1/64", "dev", "up0", "nodad"])
        .unwrap();
    ns.ip(&["route", "add", "default", "via", NEXT_HOP])
        .unwrap();
    ns.ip(&["-6", "route", "add", "default", "via", NEXT_HOP6])
        .unwrap();
    Arc::new(ns)
}

/// Runs `f` inside `ns` on a fresh multi-threaded tokio runtime.
pub fn run_in<F, Fut>(ns: &Netns, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f());
    })
    .unwrap();
}

/// Polls `cond` every 20 ms for at most `limit`; true once it holds.
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `ip [-6] route show <args>` in `ns`, one route per line.
pub fn routes(ns: &Netns, args: &[&str]) -> String {
    let mut full = vec!["route", "show"];
    full.extend_from_slice(args);
    ns.ip(&full).unwrap()
}

pub fn routes6(ns: &Netns, args: &[&str]) -> String {
    let mut full = vec!["-6", "route", "show"];
    full.extend_from_slice(args);
    ns.ip(&full).unwrap()
}

pub fn has_route(ns: &Netns, dst: &str) -> bool {
    let family = if dst.contains(':') { "-6" } else { "-4" };
    !ns.ip(&[family, "route", "show", "exact", dst])
        .unwrap()
        .trim()
        .is_empty()
}

pub fn link_exists(ns: &Netns, name: &str) -> bool {
    ns.ip(&["link", "show", "dev", name]).is_ok()
}

/// Like [`wait_for`] with an async condition.
pub async fn wait_for_async(limit: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
pub mod truth;
