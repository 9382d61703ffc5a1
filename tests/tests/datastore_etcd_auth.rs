//! etcd username/password authentication from Calico's variables
//! (`ETCD_USERNAME`, `ETCD_PASSWORD`), against a real etcd with
//! authentication enabled (by `etcdctl`, as an operator does) and short-lived
//! simple tokens (`--auth-token-ttl=2`).
//!
//! What must hold: the client is set up while etcd is down and works once
//! etcd is up (a node agent starts before its datastore); it keeps working
//! after its token expires and after an etcd restart forgets every token
//! (requests and watches); a wrong password, a role without the permission
//! and missing credentials each say so, naming the user.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datastore::{Client, DatastoreConfig, Error, ResourceEvent, ResourceWatch};
use futures::StreamExt;
use ippool_crd::{IPPool, IPPoolSpec};

/// An etcd child process with authentication-friendly flags, killed when
/// dropped; restartable on the same ports and data.
struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client: u16,
    peer: u16,
}

impl Etcd {
    fn new(dir: &Path) -> Etcd {
        Etcd {
            child: None,
            dir: dir.to_path_buf(),
            client: free_port(),
            peer: free_port(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    fn start(&mut self) {
        let url = self.url();
        let peer_url = format!("http://127.0.0.1:{}", self.peer);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let child = Command::new("etcd")
            .args([
                "--name=auth",
                &format!("--data-dir={}", self.dir.join("data").display()),
                &format!("--listen-client-urls={url}"),
                &format!("--advertise-client-urls={url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=auth={peer_url}"),
                "--initial-cluster-state=new",
                // Simple tokens (etcd's default) that expire after 2 s
                // without use (the default is 300 s).
                "--auth-token=simple",
                "--auth-token-ttl=2",
                "--log-level=error",
                "--logger=zap",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lab::etcd::is_healthy(([127, 0, 0, 1], self.client).into()) {
            assert!(
                Instant::now() < deadline,
                "etcd not healthy: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// Runs `etcdctl` (v3 API) against this etcd, as `user` when given.
    fn ctl(&self, user: Option<&str>, args: &[&str]) {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url()));
        if let Some(u) = user {
            cmd.arg(format!("--user={u}"));
        }
        let out = cmd.args(args).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(vars: &[(&str, &str)]) -> Result<DatastoreConfig, Error> {
    DatastoreConfig::from_lookup(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
}

fn as_user(url: &str, user: &str, password: &str) -> DatastoreConfig {
    config(&[
        ("DATASTORE_TYPE", "etcdv3"),
        ("ETCD_ENDPOINTS", url),
        ("ETCD_USERNAME", user),
        ("ETCD_PASSWORD", password),
    ])
    .unwrap()
}

fn pool(name: &str, cidr: &str) -> IPPool {
    IPPool::new(name, IPPoolSpec::new(cidr))
}

/// Retries `f` while it fails with a transient error (bounded).
async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// The next `Created` pool's name, skipping the watch's recoverable errors.
async fn next_created(w: &mut ResourceWatch<IPPool>, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut errors = Vec::new();
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, w.next()).await {
            Ok(Some(Ok(ResourceEvent::Created(p)))) => return p.metadata.name.unwrap(),
            Ok(Some(Ok(ev))) => seen.push(format!("{ev:?}").chars().take(80).collect::<String>()),
            Ok(Some(Err(e))) => errors.push(e.to_string()),
            Ok(None) => panic!("watch ended"),
            Err(_) => {
                panic!("no Created event within {within:?}; saw {seen:?}, errors: {errors:#?}")
            }
        }
    }
}

/// Waits for the watch's first snapshot (so later writes come as events).
async fn first_snapshot(w: &mut ResourceWatch<IPPool>) {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(ResourceEvent::Snapshot { .. }))) => {}
        other => panic!("expected the watch's snapshot, got {other:?}"),
    }
}

/// Sets up etcd's users as an operator would: root, `calico` (readwrite on
/// /calico/), `reader` (read only on /calico/); then turns
/// authentication on.
fn enable_auth(etcd: &Etcd) {
    etcd.ctl(None, &["user", "add", "root:rootpw"]);
    etcd.ctl(None, &["user", "grant-role", "root", "root"]);
    for (user, role, perm) in [
        ("calico", "calico", "readwrite"),
        ("reader", "reader", "read"),
    ] {
        etcd.ctl(None, &["user", "add", &format!("{user}:{user}-pw")]);
        etcd.ctl(None, &["role", "add", role]);
        etcd.ctl(
            None,
            &[
                "role",
                "grant-permission",
                role,
                "--prefix=true",
                perm,
                "/calico/",
            ],
        );
        etcd.ctl(None, &["user", "grant-role", user, role]);
    }
    etcd.ctl(None, &["auth", "enable"]);
}

#[tokio::test]
async fn etcd_login_from_calicos_variables_survives_etcd_down_token_expiry_and_restart() {
    tests::init_tracing();
    let tmp = tempfile::tempdir_in("/dev/shm").unwrap();
    let mut etcd = Etcd::new(tmp.path());
    let url = etcd.url();
    let calico = as_user(&url, "calico", "calico-pw");

    // etcd is not running: the client is still set up (a node agent must
    // start), and a request reports etcd unavailable, not a login failure.
    let c: Client = calico.connect().await.unwrap();
    let e = c.get::<IPPool>("p").await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");

    // etcd comes up with authentication on: the same client logs in and
    // works.
    etcd.start();
    enable_auth(&etcd);
    let first = pool("first", "10.81.0.0/16");
    retry("first write", || c.create(&first)).await;
    let got: IPPool = c.get("first").await.unwrap().unwrap();
    assert_eq!(got.spec.cidr, "10.81.0.0/16");
    // etcd really requires the login: a client without one is refused,
    // with what to set.
    let anon = config(&[("DATASTORE_TYPE", "etcdv3"), ("ETCD_ENDPOINTS", &url)])
        .unwrap()
        .connect()
        .await
        .unwrap();
    let e = anon.get::<IPPool>("first").await.unwrap_err();
    assert!(matches!(e, Error::EtcdAuth { .. }), "{e}");
    assert!(e.to_string().contains("ETCD_USERNAME"), "{e}");

    let mut w = c.watch::<IPPool>(None).await.unwrap();
    first_snapshot(&mut w).await;
    c.create(&pool("watched", "10.82.0.0/16")).await.unwrap();
    assert_eq!(
        next_created(&mut w, Duration::from_secs(10)).await,
        "watched"
    );

    // The token expires (2 s TTL): the next request renews it on its own,
    // with no error seen by the caller.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got: Option<IPPool> = c.get("first").await.unwrap();
    assert!(got.is_some());
    c.create(&pool("after-expiry", "10.83.0.0/16"))
        .await
        .unwrap();
    assert_eq!(
        next_created(&mut w, Duration::from_secs(10)).await,
        "after-expiry"
    );

    // etcd restarts and forgets every simple token. The watch must open a
    // new etcd watch, and log in again on its own: the write it should see
    // comes from another client, so nothing else renews `c`'s token.
    etcd.stop();
    etcd.start();
    let other = calico.connect().await.unwrap();
    let p = pool("after-restart", "10.84.0.0/16");
    retry("write after restart", || other.create(&p)).await;
    assert_eq!(
        next_created(&mut w, Duration::from_secs(20)).await,
        "after-restart"
    );
    // And requests through `c` log in again too.
    assert!(c.get::<IPPool>("after-restart").await.unwrap().is_some());
    // A watch opened after the restart, with the token expired again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut w2 = c.watch::<IPPool>(None).await.unwrap();
    first_snapshot(&mut w2).await;
    c.create(&pool("late", "10.85.0.0/16")).await.unwrap();
    assert_eq!(next_created(&mut w2, Duration::from_secs(20)).await, "late");

    // A wrong password: a clear error naming the user, at every attempt.
    let wrong = as_user(&url, "calico", "not-the-password")
        .connect()
        .await
        .unwrap();
    for _ in 0..2 {
        let e = wrong.get::<IPPool>("first").await.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::EtcdAuth { .. }), "{e}");
        assert!(
            msg.contains("\"calico\"") && msg.contains("password"),
            "{msg}"
        );
        assert!(!msg.contains("not-the-password"), "{msg}");
    }
    // Each login costs etcd a bcrypt check: a refused password is not
    // tried again for a while; the requests meanwhile fail at once.
    let t = Instant::now();
    for _ in 0..20 {
        let e = wrong.get::<IPPool>("first").await.unwrap_err();
        assert!(matches!(e, Error::EtcdAuth { .. }), "{e}");
    }
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    // A user whose role may only read: reads work, writes are refused
    // saying so, and nothing is written.
    let reader = as_user(&url, "reader", "reader-pw")
        .connect()
        .await
        .unwrap();
    assert!(reader.get::<IPPool>("first").await.unwrap().is_some());
    let e = reader
        .create(&pool("refused", "10.86.0.0/16"))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::EtcdAuth { .. }), "{e}");
    assert!(
        msg.contains("\"reader\"") && msg.contains("permission denied"),
        "{msg}"
    );
    assert!(c.get::<IPPool>("refused").await.unwrap().is_none());
}

#[tokio::test]
async fn credentials_for_an_etcd_without_authentication_still_work() {
    tests::init_tracing();
    let tmp = tempfile::tempdir_in("/dev/shm").unwrap();
    let mut etcd = Etcd::new(tmp.path());
    etcd.start();
    let url = etcd.url();
    let c = as_user(&url, "calico", "calico-pw")
        .connect()
        .await
        .unwrap();
    c.create(&pool("open", "10.87.0.0/16")).await.unwrap();
    assert!(c.get::<IPPool>("open").await.unwrap().is_some());

    // Authentication turned on later: the client logs in (one request may
    // fail with a transient error meanwhile).
    enable_auth(&etcd);
    let p = pool("closed", "10.88.0.0/16");
    retry("write after auth enable", || c.create(&p)).await;
    assert!(c.get::<IPPool>("closed").await.unwrap().is_some());
}

#[test]
fn etcd_username_and_password_go_together_and_the_password_is_not_printed() {
    let ep = ("ETCD_ENDPOINTS", "http://127.0.0.1:2379");
    let e = config(&[ep, ("ETCD_USERNAME", "calico")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("ETCD_PASSWORD is not"), "{e}");
    let e = config(&[ep, ("ETCD_PASSWORD", "pw")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("ETCD_USERNAME is not"), "{e}");
    let cfg = config(&[ep, ("ETCD_USERNAME", "calico"), ("ETCD_PASSWORD", "s3cret")]).unwrap();
    let DatastoreConfig::Etcdv3(etcd) = &cfg else {
        panic!("not etcd: {cfg:?}")
    };
    let auth = etcd.auth.as_ref().unwrap();
    assert_eq!(
        (auth.user.as_str(), auth.password.as_str()),
        ("calico", "s3cret")
    );
    let shown = format!("{cfg:?}");
    assert!(
        shown.contains("calico") && !shown.contains("s3cret"),
        "{shown}"
    );
    // Neither set: no login.
    let DatastoreConfig::Etcdv3(etcd) = config(&[ep]).unwrap() else {
        panic!()
    };
    assert!(etcd.auth.is_none());
}

/// A daemon binary reads the variables itself: confd's one-shot `render`
/// with `ETCD_USERNAME`/`ETCD_PASSWORD` in its environment reads the
/// node's configuration from an etcd with authentication on; with a wrong
/// password it fails naming the user (not the password), without a panic.
#[tokio::test]
async fn confd_logs_in_with_the_variables_from_its_environment() {
    tests::init_tracing();
    let confd = tests::agent::build("confd", "confd").unwrap();
    let tmp = tempfile::tempdir_in("/dev/shm").unwrap();
    let mut etcd = Etcd::new(tmp.path());
    etcd.start();
    enable_auth(&etcd);
    let url = etcd.url();
    let c = as_user(&url, "calico", "calico-pw")
        .connect()
        .await
        .unwrap();
    let node: ippool_crd::Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "projectcalico.org/v3", "kind": "Node",
        "metadata": {"name": "node-1"}, "spec": {"bgp": {"ipv4Address": "10.0.0.1/24"}},
    }))
    .unwrap();
    c.create(&node).await.unwrap();
    c.create(&pool("p", "10.65.0.0/16")).await.unwrap();

    let render = |password: &str, timeout: &str| {
        Command::new(&confd)
            .args([
                "render",
                "--node",
                "node-1",
                "--etcd-endpoints",
                &url,
                "--timeout",
                timeout,
            ])
            .env("ETCD_USERNAME", "calico")
            .env("ETCD_PASSWORD", password)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = render("calico-pw", "10");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("router id      10.0.0.1"), "{text}");

    // confd logs to stdout, its final error goes to stderr.
    let out = render("wrong-pw", "3");
    let stderr = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("etcd refused user \"calico\": etcd refused the password"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong-pw") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// calico-node's cluster-wide lock (an etcd lease, a key under /calico/, a
/// lease keepalive stream) as the `calico` user: held across the expiry of
/// the login's token and renewed, then handed to another node.
#[tokio::test]
async fn the_leader_lock_works_as_an_etcd_user_across_token_expiry() {
    use datastore::leader::{CLUSTER_TASKS_LOCK, LockSpec, Outcome, Timing};
    tests::init_tracing();
    let tmp = tempfile::tempdir_in("/dev/shm").unwrap();
    let mut etcd = Etcd::new(tmp.path());
    etcd.start();
    enable_auth(&etcd);
    let url = etcd.url();
    let spec = |identity: &str| LockSpec {
        name: CLUSTER_TASKS_LOCK.into(),
        identity: identity.into(),
        timing: Timing {
            lease_duration: Duration::from_secs(8),
            renew_deadline: Duration::from_secs(5),
            retry_period: Duration::from_millis(500),
        },
    };
    let a = as_user(&url, "calico", "calico-pw")
        .connect()
        .await
        .unwrap();
    let b = as_user(&url, "calico", "calico-pw")
        .connect()
        .await
        .unwrap();
    let mut la = a.lease_lock(&spec("node-a")).unwrap();
    let mut lb = b.lease_lock(&spec("node-b")).unwrap();
    assert!(matches!(
        la.try_acquire_or_renew().await.unwrap(),
        Outcome::Held { .. }
    ));
    // Both tokens expire (2 s TTL); the renewals and the other node's
    // attempt still work.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(matches!(
            la.try_acquire_or_renew().await.unwrap(),
            Outcome::Held { .. }
        ));
        match lb.try_acquire_or_renew().await.unwrap() {
            Outcome::NotHeld { holder } => assert_eq!(holder.as_deref(), Some("node-a")),
            other => panic!("node-b: {other:?}"),
        }
    }
    la.release().await.unwrap();
    assert!(matches!(
        lb.try_acquire_or_renew().await.unwrap(),
        Outcome::Held { .. }
    ));
}
