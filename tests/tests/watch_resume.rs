//! Watches against a real etcd that is killed (SIGKILL) and restarted.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use datastore::{Client, ResourceEvent, ResourceWatch, Revision};
use futures::StreamExt;
use ippool_crd::{IPPool, IPPoolSpec};
use tests::EtcdServer;

fn pool(name: &str, cidr: &str) -> IPPool {
    IPPool::new(
        name,
        IPPoolSpec {
            cidr: cidr.into(),
            ..Default::default()
        },
    )
}

/// A short, comparable description of an event.
fn describe(ev: &ResourceEvent<IPPool>) -> String {
    match ev {
        ResourceEvent::Snapshot { items, .. } => {
            let mut names: Vec<_> = items
                .iter()
                .map(|p| p.metadata.name.clone().unwrap())
                .collect();
            names.sort();
            format!("snapshot[{}]", names.join(","))
        }
        ResourceEvent::Created(p) => format!(
            "created {} {}",
            p.metadata.name.as_ref().unwrap(),
            p.spec.cidr
        ),
        ResourceEvent::Updated(p) => format!(
            "updated {} nat={:?}",
            p.metadata.name.as_ref().unwrap(),
            p.spec.nat_outgoing
        ),
        ResourceEvent::Deleted { name, .. } => format!("deleted {name}"),
    }
}

fn revision_of(ev: &ResourceEvent<IPPool>) -> i64 {
    let r = match ev {
        ResourceEvent::Snapshot { revision, .. } | ResourceEvent::Deleted { revision, .. } => {
            revision.0.clone()
        }
        ResourceEvent::Created(p) | ResourceEvent::Updated(p) => {
            p.metadata.resource_version.clone().unwrap()
        }
    };
    r.parse().unwrap()
}

/// Collects `n` events (skipping the watch's recoverable errors), failing
/// after `timeout`.
async fn take(
    w: &mut ResourceWatch<IPPool>,
    n: usize,
    timeout: Duration,
) -> Vec<ResourceEvent<IPPool>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut errors = 0;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, w.next()).await {
            Ok(Some(Ok(ev))) => out.push(ev),
            Ok(Some(Err(_))) => errors += 1,
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!(
                "only {} of {n} events within {timeout:?} ({errors} errors): {:?}",
                out.len(),
                out.iter().map(describe).collect::<Vec<_>>()
            ),
        }
    }
    out
}

/// Asserts nothing but recoverable errors arrive for `quiet`.
async fn assert_quiet(w: &mut ResourceWatch<IPPool>, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, w.next()).await {
            Err(_) => return,
            Ok(Some(Err(_))) => continue,
            Ok(Some(Ok(ev))) => panic!("unexpected extra event: {}", describe(&ev)),
            Ok(None) => panic!("watch ended"),
        }
    }
}

/// Retries a write while a restarted etcd comes back (bounded).
async fn retry<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, datastore::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

async fn connect(etcd: &EtcdServer) -> Client {
    datastore::connect_etcd(&etcd.endpoint()).await.unwrap()
}

#[tokio::test]
async fn watch_sees_changes_in_order_and_resumes_after_etcd_is_killed() {
    tests::init_tracing();
    let mut etcd = EtcdServer::start().unwrap();
    let c = connect(&etcd).await;
    c.create(&pool("before", "10.1.0.0/16")).await.unwrap();

    let mut w = c.watch::<IPPool>(None).await.unwrap();
    let first = take(&mut w, 1, Duration::from_secs(10)).await;
    assert_eq!(describe(&first[0]), "snapshot[before]");

    let p1 = c.create(&pool("p1", "10.2.0.0/16")).await.unwrap();
    let mut p1u = p1.clone();
    p1u.spec.nat_outgoing = Some(true);
    c.update(&p1u).await.unwrap();
    c.delete::<IPPool>("p1", None).await.unwrap();

    let evs = take(&mut w, 3, Duration::from_secs(10)).await;
    assert_eq!(
        evs.iter().map(describe).collect::<Vec<_>>(),
        [
            "created p1 10.2.0.0/16",
            "updated p1 nat=Some(true)",
            "deleted p1"
        ]
    );

    // Crash etcd; the watch reports trouble but keeps going.
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.restart().unwrap();

    // Write straight away, very likely before the watch has reconnected:
    // these must come through the resumed watch exactly once, in order.
    let c2 = connect(&etcd).await;
    let p2_new = pool("p2", "10.3.0.0/16");
    let p2 = retry(|| c2.create(&p2_new)).await;
    let mut p2u = p2.clone();
    p2u.spec.nat_outgoing = Some(false);
    retry(|| c2.update(&p2u)).await;
    retry(|| c2.delete::<IPPool>("p2", None)).await;
    let p3_new = pool("p3", "10.4.0.0/16");
    retry(|| c2.create(&p3_new)).await;

    let evs = take(&mut w, 4, Duration::from_secs(30)).await;
    assert_eq!(
        evs.iter().map(describe).collect::<Vec<_>>(),
        [
            "created p2 10.3.0.0/16",
            "updated p2 nat=Some(false)",
            "deleted p2",
            "created p3 10.4.0.0/16"
        ]
    );
    let revs: Vec<i64> = evs.iter().map(revision_of).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    assert_quiet(&mut w, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn watch_from_a_revision_sees_only_later_changes() {
    let etcd = EtcdServer::start().unwrap();
    let c = connect(&etcd).await;
    let a = c.create(&pool("a", "10.1.0.0/16")).await.unwrap();
    c.create(&pool("b", "10.2.0.0/16")).await.unwrap();
    let after = Revision(a.metadata.resource_version.unwrap());
    let mut w = c.watch::<IPPool>(Some(after)).await.unwrap();
    let evs = take(&mut w, 1, Duration::from_secs(10)).await;
    assert_eq!(describe(&evs[0]), "created b 10.2.0.0/16");
    assert_quiet(&mut w, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn watch_from_a_compacted_revision_falls_back_to_a_snapshot() {
    let etcd = EtcdServer::start().unwrap();
    let c = connect(&etcd).await;
    let a = c.create(&pool("a", "10.1.0.0/16")).await.unwrap();
    c.create(&pool("b", "10.2.0.0/16")).await.unwrap();
    let b2 = c.create(&pool("c", "10.3.0.0/16")).await.unwrap();
    let st = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.endpoint(),
            "compaction",
            b2.metadata.resource_version.as_deref().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let old = Revision(a.metadata.resource_version.unwrap());
    let mut w = c.watch::<IPPool>(Some(old)).await.unwrap();
    let evs = take(&mut w, 1, Duration::from_secs(10)).await;
    assert_eq!(describe(&evs[0]), "snapshot[a,b,c]");
}
