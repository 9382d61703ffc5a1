//! Leader election (`datastore::leader`) against the real datastores:
//! three candidates on one lock, the way three calico-nodes campaign for
//! the cluster tasks. Exactly one leads; a leader that dies without a
//! word (its elector dropped: no more renewals, no release) is replaced
//! once its lease runs out; a leader that releases hands over at once.
//! On etcd a leader whose datastore goes away steps down by itself; on
//! Kubernetes the election works with the token of calico-node's
//! ServiceAccount under the RBAC rules deploy/calico-node.yaml ships, and
//! nothing beyond them.
//!
//! The lease is short enough to keep the tests quick and long enough that
//! a hand-over by release is told from a take-over after expiry on a
//! loaded machine: the bounds checked are the election's guarantees (no
//! take-over before the lease runs out, a release faster than it, a
//! leader without its datastore stepping down before another may lead),
//! not how fast a busy machine answers.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datastore::leader::kubernetes::{KubeLock, LEASE_NAMESPACE};
use datastore::leader::{CLUSTER_TASKS_LOCK, Elector, LeaseLock, LockSpec, Outcome, Timing};
use datastore::{Client, Error, KubeBackend, KubeOptions};
use tests::EtcdServer;
use tests::kube::KubeServer;

const TIMING: Timing = Timing {
    lease_duration: Duration::from_secs(8),
    renew_deadline: Duration::from_secs(5),
    retry_period: Duration::from_millis(500),
};

/// How long a leader is watched to keep leading (several renewals).
const STAY: Duration = Duration::from_secs(2);

fn spec(identity: &str) -> LockSpec {
    LockSpec {
        name: CLUSTER_TASKS_LOCK.into(),
        identity: identity.into(),
        timing: TIMING,
    }
}

/// Candidates, each with its own datastore connection (as on separate
/// nodes), and a sampler that checks, every 20 ms for the whole test,
/// that no two lead at once.
struct Race {
    electors: Vec<Option<Elector>>,
    overlap: Arc<Mutex<Vec<String>>>,
    sampler: tokio::task::JoinHandle<()>,
    started: Instant,
}

impl Race {
    fn start(clients: Vec<Client>) -> Race {
        let electors: Vec<Option<Elector>> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| Some(c.elector(&spec(&format!("node-{i}"))).unwrap()))
            .collect();
        let receivers: Vec<_> = electors
            .iter()
            .map(|e| e.as_ref().unwrap().subscribe())
            .collect();
        let overlap = Arc::new(Mutex::new(Vec::new()));
        let seen = overlap.clone();
        let sampler = tokio::spawn(async move {
            loop {
                // A dropped elector's last word stays in its channel:
                // only live ones count.
                let leading: Vec<String> = receivers
                    .iter()
                    .filter(|r| r.has_changed().is_ok() && r.borrow().leading)
                    .filter_map(|r| r.borrow().holder.clone())
                    .collect();
                if leading.len() > 1 {
                    seen.lock().unwrap().push(leading.join(" and "));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Race {
            electors,
            overlap,
            sampler,
            started: Instant::now(),
        }
    }

    /// The index of the one that leads (live electors only).
    fn leaders(&self) -> Vec<usize> {
        self.electors
            .iter()
            .enumerate()
            .filter(|(_, e)| e.as_ref().is_some_and(|e| e.leadership().leading))
            .map(|(i, _)| i)
            .collect()
    }

    /// Waits (at most `limit`) until exactly one leads; returns it and how
    /// long that took.
    async fn one_leader(&self, limit: Duration) -> (usize, Duration) {
        let start = Instant::now();
        loop {
            if let [one] = self.leaders()[..] {
                return (one, start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "no single leader within {limit:?}: {:?}",
                self.leaders()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Exactly `leader` leads, and every other candidate names it as the
    /// holder, for all of `span`.
    async fn stays(&self, leader: usize, span: Duration) {
        let start = Instant::now();
        while start.elapsed() < span {
            assert_eq!(self.leaders(), [leader]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let name = format!("node-{leader}");
        for e in self.electors.iter().flatten() {
            assert_eq!(e.leadership().holder.as_deref(), Some(name.as_str()));
        }
    }

    fn take(&mut self, i: usize) -> Elector {
        self.electors[i].take().unwrap()
    }

    fn check_no_overlap(&self) {
        let o = self.overlap.lock().unwrap();
        assert!(o.is_empty(), "two leaders at once: {o:?}");
    }
}

impl Drop for Race {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

/// The scenario both datastores go through; returns the measured
/// (first election, crash fail-over, release hand-over) times.
async fn crash_then_release(race: &mut Race, what: &str) -> (Duration, Duration, Duration) {
    let (first, _) = race.one_leader(Duration::from_secs(10)).await;
    let elected = race.started.elapsed();
    race.stays(first, STAY).await;

    // The leader dies without a word.
    let crashed = race.take(first);
    let died = Instant::now();
    drop(crashed);
    let (second, failover) = race.one_leader(Duration::from_secs(10)).await;
    assert_ne!(second, first);
    assert!(
        failover >= TIMING.lease_duration - TIMING.retry_period,
        "{what}: took over after {failover:?}, before the dead leader's lease ran out"
    );
    assert!(
        failover <= TIMING.lease_duration * 2,
        "{what}: fail-over took {failover:?}"
    );
    assert!(died.elapsed() >= failover);
    race.stays(second, STAY).await;

    // The new leader shuts down cleanly: the last one takes over at once.
    let leaving = race.take(second);
    let t = Instant::now();
    leaving.release().await.unwrap();
    let (third, _) = race.one_leader(TIMING.lease_duration * 2).await;
    let handover = t.elapsed();
    // Sooner than the released lease could have run out: the release
    // handed over, the successor did not wait for expiry.
    assert!(
        handover < TIMING.lease_duration,
        "{what}: hand-over took {handover:?}, as long as waiting out the lease"
    );
    assert!(![first, second].contains(&third));
    race.stays(third, STAY).await;
    race.check_no_overlap();
    println!(
        "{what}: first leader after {elected:?}, crash fail-over {failover:?}, release hand-over {handover:?}"
    );
    (elected, failover, handover)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_one_leader_crash_failover_and_release_handover() {
    tests::init_tracing();
    let etcd = EtcdServer::start().unwrap();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(datastore::connect_etcd(&etcd.endpoint()).await.unwrap());
    }
    let mut race = Race::start(clients);
    // Followers watch the key: a revoked lease deletes it and wakes them
    // (the time is printed; crash_then_release checks it beat the lease).
    crash_then_release(&mut race, "etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_leader_steps_down_when_etcd_goes_away_and_one_leads_when_it_returns() {
    tests::init_tracing();
    let mut etcd = EtcdServer::start().unwrap();
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(datastore::connect_etcd(&etcd.endpoint()).await.unwrap());
    }
    let race = Race::start(clients);
    let (leader, _) = race.one_leader(Duration::from_secs(10)).await;
    let mut rx = race.electors[leader].as_ref().unwrap().subscribe();
    etcd.kill();
    let down = Instant::now();
    tokio::time::timeout(TIMING.lease_duration, rx.wait_for(|l| !l.leading))
        .await
        .expect("the leader kept leading without etcd")
        .unwrap();
    let stepped_down = down.elapsed();
    // Before anyone else could take the lease over.
    assert!(stepped_down < TIMING.lease_duration, "{stepped_down:?}");
    etcd.restart().unwrap();
    let (_, back) = race.one_leader(Duration::from_secs(15)).await;
    race.check_no_overlap();
    println!(
        "etcd down: leader stepped down after {stepped_down:?}; a leader again {back:?} after etcd returned"
    );
}

/// One field of the cluster tasks' Lease's spec, as kubectl prints it.
fn lease_field(server: &KubeServer, field: &str) -> String {
    server
        .kubectl(&[
            "-n",
            LEASE_NAMESPACE,
            "get",
            "lease",
            CLUSTER_TASKS_LOCK,
            "-o",
            &format!("jsonpath={{.spec.{field}}}"),
        ])
        .unwrap()
}

fn kube_client(client: kube::Client, url: &str) -> Client {
    Client::new(KubeBackend::new(client, url, KubeOptions::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_one_leader_crash_failover_and_release_handover() {
    tests::init_tracing();
    let server = KubeServer::start().unwrap();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(server.datastore(KubeOptions::default()).await.unwrap());
    }
    let mut race = Race::start(clients);
    let (first, _) = race.one_leader(Duration::from_secs(10)).await;
    let lease = |field: &str| lease_field(&server, field);
    assert_eq!(lease("holderIdentity"), format!("node-{first}"));
    assert_eq!(
        lease("leaseDurationSeconds"),
        TIMING.lease_duration.as_secs().to_string()
    );
    // Followers poll every retry period (with up to a fifth of jitter).
    crash_then_release(&mut race, "kubernetes").await;
    assert_eq!(
        lease("leaseTransitions"),
        "1",
        "a take-over after expiry is a transition; taking a released Lease is not"
    );
}

/// deploy/calico-node.yaml applied; calico-node's ServiceAccount token.
async fn service_account_client(server: &KubeServer) -> kube::Client {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/calico-node.yaml"
    ))
    .unwrap();
    let out = server.apply(&manifest).unwrap();
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = server
        .service_account_token("kube-system", "calico-node")
        .unwrap();
    server
        .client_from(&server.cp.kubeconfig_for("calico-node", &token))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_election_works_with_exactly_the_shipped_rbac() {
    tests::init_tracing();
    let server = KubeServer::start().unwrap();
    let sa = service_account_client(&server).await;
    let race = Race::start(vec![
        kube_client(sa.clone(), &server.cp.url),
        kube_client(sa.clone(), &server.cp.url),
    ]);
    let (leader, _) = race.one_leader(Duration::from_secs(10)).await;
    race.stays(leader, STAY).await;
    drop(race);

    // The Role covers that one Lease in that one namespace.
    for (namespace, name) in [
        ("default", CLUSTER_TASKS_LOCK),
        (LEASE_NAMESPACE, "another-lock"),
    ] {
        let spec = LockSpec {
            name: name.into(),
            identity: "node-0".into(),
            timing: TIMING,
        };
        let mut lock = KubeLock::new(
            sa.clone(),
            &server.cp.url,
            namespace,
            &spec,
            Duration::from_secs(10),
        );
        match lock.try_acquire_or_renew().await {
            Err(Error::Forbidden { reason, .. }) => {
                assert!(reason.contains("forbidden"), "{reason}");
            }
            other => panic!("Lease {namespace}/{name} with calico-node's token: {other:?}"),
        }
    }
    // The admin, by contrast, may.
    let admin = server.admin_client().await.unwrap();
    let mut lock = KubeLock::new(
        admin,
        &server.cp.url,
        "default",
        &spec("node-0"),
        Duration::from_secs(10),
    );
    assert!(matches!(
        lock.try_acquire_or_renew().await,
        Ok(Outcome::Held { .. })
    ));
    lock.release().await.unwrap();
}

/// A campaign stopped while a renewal is in flight drops that attempt:
/// the lock is left with no record of the Lease (or with a version the
/// dropped renewal moved past). Its release must still give the Lease up,
/// not leave the next leader to wait out the lease (a hand-over that took
/// exactly the lease duration in a loaded run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_release_after_an_attempt_cut_short_still_gives_the_lease_up() {
    tests::init_tracing();
    let server = KubeServer::start().unwrap();
    let admin = server.admin_client().await.unwrap();
    let lock = |c: kube::Client| {
        KubeLock::new(
            c,
            &server.cp.url,
            LEASE_NAMESPACE,
            &spec("node-0"),
            Duration::from_secs(10),
        )
    };
    let holder = || lease_field(&server, "holderIdentity");

    // Held, then renewed behind the lock's back (the renewal whose answer
    // the stopped campaign never read): what the lock remembers is stale.
    let mut stale = lock(admin.clone());
    assert!(matches!(
        stale.try_acquire_or_renew().await,
        Ok(Outcome::Held { .. })
    ));
    let mut renewer = lock(admin.clone());
    assert!(matches!(
        renewer.try_acquire_or_renew().await,
        Ok(Outcome::Held { .. })
    ));
    assert_eq!(holder(), "node-0");
    stale.release().await.unwrap();
    assert_eq!(holder(), "", "a stale version still releases");

    // Held, and the lock remembers nothing at all.
    assert!(matches!(
        renewer.try_acquire_or_renew().await,
        Ok(Outcome::Held { .. })
    ));
    assert_eq!(holder(), "node-0");
    let mut forgetful = lock(admin.clone());
    forgetful.release().await.unwrap();
    assert_eq!(holder(), "", "no record of the Lease still releases");

    // Someone else's Lease is never released by us.
    let mut other = KubeLock::new(
        admin.clone(),
        &server.cp.url,
        LEASE_NAMESPACE,
        &spec("node-1"),
        Duration::from_secs(10),
    );
    assert!(matches!(
        other.try_acquire_or_renew().await,
        Ok(Outcome::Held { .. })
    ));
    lock(admin).release().await.unwrap();
    assert_eq!(holder(), "node-1");
}
