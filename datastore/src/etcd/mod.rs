//! The etcd v3 backend, with Calico's key layout (see [`crate::key`]).
//!
//! Compare-and-swap is an etcd transaction on the key's mod revision; a
//! create is a transaction on "create revision is 0". Every unary call has a
//! deadline, so a dead etcd gives a clear `Unavailable` error instead of a
//! hang. Lists are paginated but read at one revision, so a large list is
//! still a consistent snapshot.

mod codec;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, GetResponse, Txn, TxnOp, TxnOpResponse,
};

use crate::backend::{Backend, Kv, Revision, WatchStream};
use crate::leader::etcd::EtcdLock;
use crate::leader::{LeaseLock, LockSpec};
use crate::{Error, Key, ListKey};

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `http://host:port` URLs; Calico's `ETCD_ENDPOINTS` is a comma
    /// separated list of these.
    pub endpoints: Vec<String>,
    /// Deadline of one unary request (get, put, transaction).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// TLS to etcd (`https://` endpoints): Calico's `ETCD_CA_CERT_FILE`,
    /// `ETCD_CERT_FILE`, `ETCD_KEY_FILE`.
    pub tls: Option<EtcdTls>,
    /// etcd's username/password authentication: Calico's `ETCD_USERNAME`
    /// and `ETCD_PASSWORD`.
    pub auth: Option<EtcdAuth>,
}

/// An etcd user and its password (Calico's `ETCD_USERNAME`,
/// `ETCD_PASSWORD`). Its `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl EtcdAuth {
    /// From `ETCD_USERNAME` and `ETCD_PASSWORD` read through `get`: `None`
    /// when neither is set; an error naming the missing one otherwise.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<EtcdAuth>, Error> {
        // A user name never has surrounding blanks; a password may.
        let user = get("ETCD_USERNAME")
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let password = get("ETCD_PASSWORD").filter(|v| !v.is_empty());
        match (user, password) {
            (None, None) => Ok(None),
            (Some(user), Some(password)) => Ok(Some(EtcdAuth { user, password })),
            (Some(user), None) => Err(Error::Config(format!(
                "ETCD_USERNAME is set ({user:?}) but ETCD_PASSWORD is not: set the user's password"
            ))),
            (None, Some(_)) => Err(Error::Config(
                "ETCD_PASSWORD is set but ETCD_USERNAME is not: set the etcd user it belongs to"
                    .into(),
            )),
        }
    }
}

/// The files of etcd's TLS, as Calico names them. Read when connecting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// `ETCD_CA_CERT_FILE`: the CA that signed etcd's server certificate.
    pub ca_cert: PathBuf,
    /// `ETCD_CERT_FILE` and `ETCD_KEY_FILE`: this client's certificate and
    /// key, for an etcd that checks clients (`--client-cert-auth`).
    pub client: Option<(PathBuf, PathBuf)>,
}

impl EtcdTls {
    /// From Calico's three variables read through `get`: `None` when none
    /// is set; an error naming the variable when they do not fit together.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<EtcdTls>, Error> {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty()).map(PathBuf::from);
        let (ca, cert, key) = (
            var("ETCD_CA_CERT_FILE"),
            var("ETCD_CERT_FILE"),
            var("ETCD_KEY_FILE"),
        );
        let client = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Config(
                    "ETCD_CERT_FILE is set but ETCD_KEY_FILE is not: a client certificate needs its key".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "ETCD_KEY_FILE is set but ETCD_CERT_FILE is not: a client key needs its certificate".into(),
                ));
            }
        };
        match (ca, client) {
            (None, None) => Ok(None),
            (Some(ca_cert), client) => Ok(Some(EtcdTls { ca_cert, client })),
            (None, Some(_)) => Err(Error::Config(
                "ETCD_CERT_FILE and ETCD_KEY_FILE are set but ETCD_CA_CERT_FILE is not: \
                 set it to the CA that signed etcd's server certificate"
                    .into(),
            )),
        }
    }

    /// The files read into tonic's TLS settings; an error names the file.
    fn options(&self) -> Result<etcd_client::TlsOptions, Error> {
        let read = |var: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| {
                Error::Config(format!("{var} {}: cannot read it: {e}", path.display()))
            })
        };
        let ca = read("ETCD_CA_CERT_FILE", &self.ca_cert)?;
        let mut opts =
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca));
        if let Some((cert, key)) = &self.client {
            let identity = etcd_client::Identity::from_pem(
                read("ETCD_CERT_FILE", cert)?,
                read("ETCD_KEY_FILE", key)?,
            );
            opts = opts.identity(identity);
        }
        Ok(opts)
    }
}

impl EtcdConfig {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            tls: None,
            auth: None,
        }
    }

    /// Checks that the endpoints' scheme and the TLS settings agree.
    pub fn check_tls(&self) -> Result<(), Error> {
        let https = self
            .endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        match (&self.tls, https) {
            (None, 0) => Ok(()),
            (Some(_), n) if n == self.endpoints.len() => Ok(()),
            (None, _) => Err(Error::Config(
                "ETCD_ENDPOINTS uses https:// but ETCD_CA_CERT_FILE is not set: \
                 set it to the CA that signed etcd's server certificate"
                    .into(),
            )),
            (Some(_), _) => Err(Error::Config(
                "ETCD_CA_CERT_FILE is set but ETCD_ENDPOINTS has http:// entries: \
                 with TLS every endpoint is https://"
                    .into(),
            )),
        }
    }

    /// Parses Calico's `ETCD_ENDPOINTS` ("http://a:2379,http://b:2379").
    pub fn from_endpoints_var(value: &str) -> Result<Self, Error> {
        let endpoints: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if endpoints.is_empty() {
            return Err(Error::Config(
                "ETCD_ENDPOINTS is empty; set it to e.g. http://127.0.0.1:2379".into(),
            ));
        }
        for e in &endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(Error::Config(format!(
                    "ETCD_ENDPOINTS entry {e:?} must start with http:// or https://"
                )));
            }
        }
        Ok(EtcdConfig::new(endpoints))
    }
}

/// Page size for lists: keeps each response well under gRPC's 4 MiB cap.
const PAGE: i64 = 500;

#[derive(Clone)]
pub struct EtcdBackend {
    client: Client,
    cfg: EtcdConfig,
    /// Set when `cfg.auth` is: whether etcd has accepted the user on this
    /// connection.
    login: Option<Arc<Login>>,
}

/// The login of an [`EtcdBackend`] with credentials. etcd-client logs in
/// when it connects, which needs etcd up; a node agent must start while
/// etcd is down, so the backend connects without credentials and logs in
/// before its first request instead (and again whenever etcd forgets the
/// login, see [`EtcdBackend::timed`]). Once logged in, etcd-client itself
/// renews an expired token and retries the request (its
/// `with_auto_token_refresh`).
struct Login {
    done: AtomicBool,
    /// One login at a time: concurrent requests wait for it. Holds etcd's
    /// last refusal of the password, if recent.
    lock: tokio::sync::Mutex<Option<Refusal>>,
}

/// etcd refused the password: until `until`, requests fail with the same
/// error without asking again (each login costs etcd a bcrypt check, and
/// every watch and request of every node retries).
struct Refusal {
    until: std::time::Instant,
    reason: String,
    hint: &'static str,
}

/// How long a refused password is not tried again.
const REFUSAL_HOLD: Duration = Duration::from_secs(5);

impl EtcdBackend {
    /// Sets up the connection. This does not wait for etcd to be up: a node
    /// agent must start (and keep its dataplane) while etcd is down. With
    /// `ETCD_USERNAME` the login happens at the first request.
    pub async fn connect(cfg: EtcdConfig) -> Result<Self, Error> {
        cfg.check_tls()?;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(cfg.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_auto_token_refresh(true);
        if let Some(tls) = &cfg.tls {
            opts = opts.with_tls(tls.options()?);
        }
        let client = Client::connect(&cfg.endpoints, Some(opts))
            .await
            .map_err(|e| unavailable(&cfg, &e.to_string()))?;
        let login = cfg.auth.as_ref().map(|_| {
            Arc::new(Login {
                done: AtomicBool::new(false),
                lock: tokio::sync::Mutex::new(None),
            })
        });
        Ok(EtcdBackend { client, cfg, login })
    }

    /// The etcd client, for the leader election's lock
    /// ([`crate::leader::etcd`]).
    pub(crate) fn etcd(&self) -> &Client {
        &self.client
    }

    fn endpoints(&self) -> String {
        self.cfg.endpoints.join(",")
    }

    /// Logs in with `ETCD_USERNAME`/`ETCD_PASSWORD` unless already logged
    /// in on this connection.
    async fn log_in(&self) -> Result<(), Error> {
        let (Some(login), Some(auth)) = (&self.login, &self.cfg.auth) else {
            return Ok(());
        };
        if login.done.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut refused = login.lock.lock().await;
        if login.done.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(r) = refused
            .as_ref()
            .filter(|r| std::time::Instant::now() < r.until)
        {
            return Err(Error::EtcdAuth {
                who: who(&self.cfg),
                reason: r.reason.clone(),
                hint: r.hint,
            });
        }
        let mut client = self.client.clone();
        match client
            .update_user(Some((auth.user.clone(), auth.password.clone())))
            .await
        {
            Ok(()) => tracing::debug!(user = %auth.user, "logged in to etcd"),
            // etcd without authentication: requests go without a token. If
            // authentication is turned on later, etcd's "user name is
            // empty" answer makes the next request log in.
            Err(etcd_client::Error::GRpcStatus(s))
                if s.message().contains("authentication is not enabled") =>
            {
                tracing::info!(
                    user = %auth.user,
                    "ETCD_USERNAME is set but etcd has authentication off; not logging in"
                );
            }
            Err(e) => {
                let e = map_err(&self.cfg, "the login", e);
                if let Error::EtcdAuth { reason, hint, .. } = &e {
                    *refused = Some(Refusal {
                        until: std::time::Instant::now() + REFUSAL_HOLD,
                        reason: reason.clone(),
                        hint,
                    });
                }
                return Err(e);
            }
        }
        *refused = None;
        login.done.store(true, Ordering::Release);
        Ok(())
    }

    /// Runs one request with the request deadline, logging in first when
    /// needed. When etcd no longer knows this client's login (a simple
    /// token lost in an etcd restart that etcd-client could not renew, or
    /// authentication turned on after the login), the next request logs in
    /// again; this one fails with a transient error.
    pub(crate) async fn timed<T, F>(&self, key: &str, f: F) -> Result<T, Error>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempt = async {
            self.log_in().await?;
            f.await.map_err(|e| {
                if is_login_lost(&e) {
                    self.forget_login();
                }
                map_err(&self.cfg, key, e)
            })
        };
        match tokio::time::timeout(self.cfg.request_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(unavailable(
                &self.cfg,
                &format!("no answer within {:?} for {key}", self.cfg.request_timeout),
            )),
        }
    }

    /// Makes the next request log in again.
    fn forget_login(&self) {
        if let Some(login) = &self.login {
            login.done.store(false, Ordering::Release);
        }
    }

    async fn txn(&self, key: &str, txn: Txn) -> Result<etcd_client::TxnResponse, Error> {
        let mut kv = self.client.kv_client();
        self.timed(key, kv.txn(txn)).await
    }

    /// After a failed conditional write: is the key gone, or did it change?
    fn conditional_failure(
        key: &Key,
        resp: &etcd_client::TxnResponse,
        expected: &Revision,
    ) -> Error {
        let exists = resp.op_responses().iter().any(|op| match op {
            TxnOpResponse::Get(g) => !g.kvs().is_empty(),
            _ => false,
        });
        if exists {
            Error::Conflict {
                key: key.to_string(),
                expected: expected.clone(),
            }
        } else {
            Error::NotFound {
                key: key.to_string(),
            }
        }
    }

    /// Reads a whole prefix at one revision, page by page.
    pub(crate) async fn list_prefix(&self, list: &ListKey) -> Result<(Vec<Kv>, i64), Error> {
        check_list(list)?;
        let prefix = list.etcd_prefix();
        let range_end = prefix_end(prefix.as_bytes());
        let mut kv = self.client.kv_client();
        let mut out = Vec::new();
        let mut start = prefix.clone().into_bytes();
        let mut at_revision = 0i64;
        loop {
            let mut opts = GetOptions::new()
                .with_range(range_end.clone())
                .with_limit(PAGE);
            if at_revision > 0 {
                opts = opts.with_revision(at_revision);
            }
            let resp: GetResponse = self
                .timed(&list.to_string(), kv.get(start.clone(), Some(opts)))
                .await?;
            if at_revision == 0 {
                at_revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            for item in resp.kvs() {
                let Ok(path) = std::str::from_utf8(item.key()) else {
                    continue;
                };
                let Some(key) = Key::from_etcd_path(path).filter(|k| list.contains(k)) else {
                    tracing::debug!(path, "skipping a key that is not ours or not well formed");
                    continue;
                };
                match codec::decode(&key, item.value()) {
                    Ok(value) => out.push(Kv {
                        key,
                        value,
                        revision: item.mod_revision().into(),
                    }),
                    // One corrupt object must not hide all the others.
                    Err(e) => tracing::warn!(error = %e, "skipping unreadable object"),
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok((out, at_revision))
    }
}

fn not_in_etcd(kind: crate::ResourceKind) -> Error {
    Error::NotStored {
        kind: kind.kind(),
        store: "etcd",
        reason: "it is a Kubernetes object; use DATASTORE_TYPE=kubernetes to read it",
    }
}

/// Refuses the kinds Calico's etcd layout does not have.
fn check_key(key: &Key) -> Result<(), Error> {
    key.validate()?;
    match key {
        Key::Resource { kind, .. } if !kind.in_etcd() => Err(not_in_etcd(*kind)),
        _ => Ok(()),
    }
}

fn check_list(list: &ListKey) -> Result<(), Error> {
    list.validate()?;
    match list {
        ListKey::Resources(kind) if !kind.in_etcd() => Err(not_in_etcd(*kind)),
        _ => Ok(()),
    }
}

/// The smallest key greater than every key with this prefix.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn unavailable(cfg: &EtcdConfig, reason: &str) -> Error {
    Error::Unavailable {
        endpoints: format!("etcd at {}", cfg.endpoints.join(",")),
        reason: reason.to_string(),
        hint: "check ETCD_ENDPOINTS and that etcd is running",
    }
}

/// Who etcd refused, for an [`Error::EtcdAuth`].
fn who(cfg: &EtcdConfig) -> String {
    match &cfg.auth {
        Some(a) => format!("user {:?}", a.user),
        None => "this client (ETCD_USERNAME is not set)".to_string(),
    }
}

/// etcd's answers that mean it does not know this client's login: no
/// token ("user name is empty") or one it does not recognise.
fn is_login_lost(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unauthenticated
                || s.message().contains("user name is empty")
                || s.message().contains("invalid auth token")
        }
        _ => false,
    }
}

/// A refused login or request, said in terms of Calico's variables.
fn auth_error(cfg: &EtcdConfig, key: &str, status: &tonic::Status) -> Option<Error> {
    let msg = status.message();
    let (reason, hint) = if msg.contains("authentication failed") {
        (
            "etcd refused the password".to_string(),
            "check ETCD_USERNAME and ETCD_PASSWORD against etcd's users",
        )
    } else if status.code() == tonic::Code::PermissionDenied || msg.contains("permission denied") {
        (
            format!("permission denied for {key}"),
            "grant the user a role with readwrite on Calico's keys \
             (etcdctl role grant-permission <role> --prefix=true readwrite /calico/)",
        )
    } else if is_login_lost(&etcd_client::Error::GRpcStatus(status.clone())) {
        if cfg.auth.is_some() {
            // Logged in before, etcd has forgotten it: the next request
            // logs in again.
            return Some(Error::Unavailable {
                endpoints: format!("etcd at {}", cfg.endpoints.join(",")),
                reason: format!("etcd no longer knows this client's login ({msg})"),
                hint: "the next request logs in again",
            });
        }
        (
            "etcd has authentication enabled".to_string(),
            "set ETCD_USERNAME and ETCD_PASSWORD to an etcd user",
        )
    } else {
        return None;
    };
    Some(Error::EtcdAuth {
        who: who(cfg),
        reason,
        hint,
    })
}

fn map_err(cfg: &EtcdConfig, key: &str, e: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    match e {
        E::TransportError(t) => unavailable(cfg, &t.to_string()),
        E::IoError(io) => unavailable(cfg, &io.to_string()),
        E::GRpcStatus(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) =>
        {
            unavailable(cfg, s.message())
        }
        // A connection that broke under the request (etcd killed, say):
        // tonic reports it as an `Unknown` status carrying the transport
        // error, where an answer from etcd carries none.
        E::GRpcStatus(s)
            if s.code() == tonic::Code::Unknown && std::error::Error::source(&s).is_some() =>
        {
            unavailable(cfg, &E::GRpcStatus(s).to_string())
        }
        E::GRpcStatus(s) => auth_error(cfg, key, &s).unwrap_or_else(|| Error::Backend {
            key: key.to_string(),
            reason: E::GRpcStatus(s).to_string(),
        }),
        other => Error::Backend {
            key: key.to_string(),
            reason: other.to_string(),
        },
    }
}

fn header_rev(resp: &etcd_client::TxnResponse) -> Revision {
    resp.header().map(|h| h.revision()).unwrap_or(0).into()
}

fn parse_rev(key: &Key, r: &Revision) -> Result<i64, Error> {
    r.0.parse().map_err(|_| {
        Error::InvalidKey(format!(
            "revision {r:?} for {key} is not an etcd revision (a number)"
        ))
    })
}

#[async_trait]
impl Backend for EtcdBackend {
    fn describe(&self) -> String {
        format!("etcd at {}", self.endpoints())
    }

    async fn get(&self, key: &Key) -> Result<Option<Kv>, Error> {
        check_key(key)?;
        let path = key.etcd_path();
        let mut kv = self.client.kv_client();
        let resp = self.timed(&key.to_string(), kv.get(path, None)).await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(item) => Ok(Some(Kv {
                key: key.clone(),
                value: codec::decode(key, item.value())?,
                revision: item.mod_revision().into(),
            })),
        }
    }

    async fn list(&self, list: &ListKey) -> Result<(Vec<Kv>, Revision), Error> {
        let (items, rev) = self.list_prefix(list).await?;
        Ok((items, rev.into()))
    }

    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<Revision, Error> {
        check_key(key)?;
        let path = key.etcd_path();
        let stored = codec::encode(key, &value)?;
        let txn = Txn::new()
            .when([Compare::create_revision(path.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(path, stored, None)]);
        let resp = self.txn(&key.to_string(), txn).await?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists {
                key: key.to_string(),
            });
        }
        Ok(header_rev(&resp))
    }

    async fn update(
        &self,
        key: &Key,
        value: Vec<u8>,
        expected: &Revision,
    ) -> Result<Revision, Error> {
        check_key(key)?;
        let rev = parse_rev(key, expected)?;
        let path = key.etcd_path();
        let stored = codec::encode(key, &value)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(path.clone(), CompareOp::Equal, rev)])
            .and_then([TxnOp::put(path.clone(), stored, None)])
            .or_else([TxnOp::get(path, None)]);
        let resp = self.txn(&key.to_string(), txn).await?;
        if !resp.succeeded() {
            return Err(Self::conditional_failure(key, &resp, expected));
        }
        Ok(header_rev(&resp))
    }

    async fn delete(&self, key: &Key, expected: Option<&Revision>) -> Result<(), Error> {
        check_key(key)?;
        let path = key.etcd_path();
        match expected {
            Some(expected) => {
                let rev = parse_rev(key, expected)?;
                let txn = Txn::new()
                    .when([Compare::mod_revision(path.clone(), CompareOp::Equal, rev)])
                    .and_then([TxnOp::delete(path.clone(), None)])
                    .or_else([TxnOp::get(path, None)]);
                let resp = self.txn(&key.to_string(), txn).await?;
                if !resp.succeeded() {
                    return Err(Self::conditional_failure(key, &resp, expected));
                }
                Ok(())
            }
            None => {
                let mut kv = self.client.kv_client();
                let resp = self.timed(&key.to_string(), kv.delete(path, None)).await?;
                if resp.deleted() == 0 {
                    return Err(Error::NotFound {
                        key: key.to_string(),
                    });
                }
                Ok(())
            }
        }
    }

    fn lease_lock(&self, spec: &LockSpec) -> Result<Box<dyn LeaseLock>, Error> {
        Ok(Box::new(EtcdLock::new(self.clone(), spec)))
    }

    async fn watch(&self, list: &ListKey, after: Option<Revision>) -> Result<WatchStream, Error> {
        check_list(list)?;
        let after = match after {
            Some(r) => Some(r.0.parse::<i64>().map_err(|_| {
                Error::InvalidKey(format!("watch revision {r} is not an etcd revision"))
            })?),
            None => None,
        };
        Ok(watch::spawn(self.clone(), list.clone(), after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/calico/a/"), b"/calico/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff, 0xff]), vec![0]);
    }

    #[test]
    fn etcd_endpoints_var_parses_like_calicos() {
        let c =
            EtcdConfig::from_endpoints_var("http://10.0.0.1:2379, http://10.0.0.2:2379,").unwrap();
        assert_eq!(
            c.endpoints,
            vec!["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        let err = EtcdConfig::from_endpoints_var("10.0.0.1:2379").unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
        assert!(EtcdConfig::from_endpoints_var(" , ").is_err());
    }
}
