//! A stateful fake Kubernetes API server, in process, speaking the API's
//! real request and response shapes, to test the Kubernetes datastore
//! without a cluster (none can be installed here).
//!
//! It is a `tower` service handed to `kube::Client::new`, so requests go
//! through kube's real client stack (URL building, error bodies, the
//! line-delimited watch decoder) and only the network hop is skipped.
//!
//! What it implements, as the API server does for cluster-scoped objects:
//!
//! - `GET <collection>?limit=N[&continue=T]`: a `<Kind>List` with
//!   `metadata.resourceVersion` and `metadata.continue`; an expired
//!   continue token is `410 Expired`.
//! - `GET <collection>/<name>`; `POST <collection>` (`409 AlreadyExists`);
//!   `PUT <collection>/<name>` and `PUT .../<name>/status`
//!   (`metadata.resourceVersion` must match: else `409 Conflict`; the
//!   main resource keeps the stored status, `/status` keeps the spec);
//!   `PATCH` (JSON merge patch, `metadata.resourceVersion` in the patch
//!   is a precondition); `DELETE` with `preconditions.resourceVersion`.
//! - `GET <collection>?watch=true&resourceVersion=R[&allowWatchBookmarks=true]`:
//!   replays every event after `R`, then streams new ones as JSON lines
//!   `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":...}`. A
//!   version older than the kept history ([`FakeApiServer::compact`])
//!   gets the `ERROR` event with a `410 Expired` Status, as the real
//!   server sends it.
//! - A collection whose CRD is not installed answers every request with
//!   the bare `404 NotFound` the server gives for an unknown resource type.
//!
//! One global resourceVersion counter, bumped by every write, like etcd's
//! revision behind a real API server.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// The group every Calico CRD is in.
pub const CALICO_GROUP_PATH: &str = "/apis/crd.projectcalico.org/v1/";
pub const NODES: &str = "/api/v1/nodes";

/// Every Calico CRD collection the backend uses, by plural.
pub const CALICO_PLURALS: [&str; 7] = [
    "ippools",
    "bgppeers",
    "bgpconfigurations",
    "ipamblocks",
    "blockaffinities",
    "ipamhandles",
    "ipamconfigs",
];

type Body = BoxBody<Bytes, Infallible>;

/// Handle on the fake; clones share one server.
#[derive(Clone, Default)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Collection paths that are served (CRDs installed, plus nodes).
    served: BTreeSet<String>,
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    /// (resourceVersion, collection, event type, object).
    history: Vec<(u64, String, &'static str, Value)>,
    /// Watches and list continues from before this version get 410.
    oldest: u64,
    watchers: Vec<(String, mpsc::UnboundedSender<Bytes>)>,
    /// "GET /apis/...?...", in order.
    requests: Vec<String>,
    /// Collections (or object paths) whose next write loses a race: a
    /// concurrent writer bumps the object just before it is applied.
    interfere: Vec<String>,
    /// Watch requests get 503 (the API server unreachable for watches).
    refuse_watches: bool,
}

fn kind_of(collection: &str) -> String {
    let plural = collection.rsplit('/').next().unwrap_or_default();
    match plural {
        "ippools" => "IPPool",
        "bgppeers" => "BGPPeer",
        "bgpconfigurations" => "BGPConfiguration",
        "ipamblocks" => "IPAMBlock",
        "blockaffinities" => "BlockAffinity",
        "ipamhandles" => "IPAMHandle",
        "ipamconfigs" => "IPAMConfig",
        "nodes" => "Node",
        other => other,
    }
    .to_string()
}

fn resource_name(collection: &str) -> String {
    let plural = collection.rsplit('/').next().unwrap_or_default();
    if collection.starts_with(CALICO_GROUP_PATH) {
        format!("{plural}.crd.projectcalico.org")
    } else {
        plural.to_string()
    }
}

fn status(code: u16, reason: &str, message: String, details: Value) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": details, "code": code,
    })
}

fn not_found(collection: &str, name: &str) -> Value {
    let res = resource_name(collection);
    let group = if collection.starts_with(CALICO_GROUP_PATH) {
        "crd.projectcalico.org"
    } else {
        ""
    };
    status(
        404,
        "NotFound",
        format!("{res} \"{name}\" not found"),
        json!({"name": name, "group": group, "kind": res.split('.').next().unwrap_or_default()}),
    )
}

fn conflict(collection: &str, name: &str) -> Value {
    let res = resource_name(collection);
    status(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {res} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again"
        ),
        json!({"name": name, "group": "crd.projectcalico.org", "kind": collection.rsplit('/').next().unwrap_or_default()}),
    )
}

fn expired(message: String) -> Value {
    status(410, "Expired", message, json!({}))
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(v).unwrap())).boxed())
        .unwrap()
}

fn failure(v: Value) -> Response<Body> {
    let code = v["code"].as_u64().unwrap_or(500) as u16;
    json_response(StatusCode::from_u16(code).unwrap(), &v)
}

fn event_line(ty: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn query(uri: &http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FakeApiServer {
    /// A server with every Calico CRD installed and no objects.
    pub fn new() -> Self {
        let s = FakeApiServer::default();
        {
            let mut st = s.state.lock().unwrap();
            st.served.insert(NODES.to_string());
            for p in CALICO_PLURALS {
                st.served.insert(format!("{CALICO_GROUP_PATH}{p}"));
            }
            st.rv = 100;
        }
        s
    }

    /// A server where Calico's CRDs were never applied (only core types).
    pub fn without_crds() -> Self {
        let s = FakeApiServer::default();
        {
            let mut st = s.state.lock().unwrap();
            st.served.insert(NODES.to_string());
            st.rv = 100;
        }
        s
    }

    /// A kube client whose requests this server answers.
    pub fn client(&self) -> kube::Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
            let me = me.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                Ok::<_, Infallible>(me.handle(&parts.method, &parts.uri, &bytes))
            }
        });
        kube::Client::new(svc, "default")
    }

    /// Every request so far, as "METHOD path?query".
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.lock().unwrap().rv
    }

    /// Forgets the event history: watches from an older version get
    /// `410 Expired` (as after etcd compaction behind the API server).
    pub fn compact(&self) {
        let mut st = self.state.lock().unwrap();
        st.oldest = st.rv + 1;
        st.history.clear();
    }

    /// Sends a BOOKMARK at the current version to every open watch, and
    /// returns that version.
    pub fn bookmark(&self) -> u64 {
        let mut st = self.state.lock().unwrap();
        let rv = st.rv;
        st.watchers.retain(|(coll, tx)| {
            let obj = json!({
                "kind": kind_of(coll),
                "apiVersion": if coll.starts_with(CALICO_GROUP_PATH) { "crd.projectcalico.org/v1" } else { "v1" },
                "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null},
            });
            tx.send(event_line("BOOKMARK", &obj)).is_ok()
        });
        rv
    }

    /// Ends every open watch, as the server does at `timeoutSeconds`.
    pub fn close_watches(&self) {
        self.state.lock().unwrap().watchers.clear();
    }

    /// While set, watch requests fail with `503 ServiceUnavailable`.
    pub fn refuse_watches(&self, refuse: bool) {
        self.state.lock().unwrap().refuse_watches = refuse;
    }

    /// How many watches are open.
    pub fn open_watches(&self) -> usize {
        let mut st = self.state.lock().unwrap();
        st.watchers.retain(|(_, tx)| !tx.is_closed());
        st.watchers.len()
    }

    /// The next write to an object under `path_prefix` (a collection or
    /// `<collection>/<name>`) races a concurrent writer and loses.
    pub fn interfere_with_next_write(&self, path_prefix: &str) {
        self.state
            .lock()
            .unwrap()
            .interfere
            .push(path_prefix.to_string());
    }

    /// The stored object.
    pub fn object(&self, collection: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.objects.get(collection)?.get(name).cloned()
    }

    /// Registers a Kubernetes Node as kubelet would.
    pub fn add_node(&self, name: &str, labels: Value, annotations: Value) -> Value {
        let obj = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        });
        let mut st = self.state.lock().unwrap();
        st.create(NODES, obj).unwrap()
    }

    /// A kubelet heartbeat: the Node's status changes, nothing of Calico's.
    pub fn heartbeat_node(&self, name: &str) {
        let mut st = self.state.lock().unwrap();
        let mut obj = st.objects[NODES][name].clone();
        let n = obj["status"]["heartbeats"].as_u64().unwrap_or(0) + 1;
        obj["status"]["heartbeats"] = n.into();
        st.store(NODES, name, obj, "MODIFIED");
    }

    fn handle(&self, method: &Method, uri: &http::Uri, body: &[u8]) -> Response<Body> {
        let mut st = self.state.lock().unwrap();
        st.requests.push(format!(
            "{method} {}",
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("")
        ));
        let path = uri.path().trim_end_matches('/');
        let Some(collection) = st
            .served
            .iter()
            .find(|c| path == c.as_str() || path.starts_with(&format!("{c}/")))
            .cloned()
        else {
            // The type is not served: the bare 404 of an unknown resource.
            return failure(status(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
                json!({}),
            ));
        };
        let rest: Vec<&str> = path[collection.len()..]
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let q = query(uri);
        let body: Option<Value> = serde_json::from_slice(body).ok();
        match (method.as_str(), rest.as_slice()) {
            ("GET", []) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                st.watch(&collection, &q)
            }
            ("GET", []) => st.list(&collection, &q),
            ("GET", [name]) => match st.objects.get(&collection).and_then(|m| m.get(*name)) {
                Some(o) => json_response(StatusCode::OK, o),
                None => failure(not_found(&collection, name)),
            },
            ("POST", []) => match body {
                Some(obj) => match st.create(&collection, obj) {
                    Ok(o) => json_response(StatusCode::CREATED, &o),
                    Err(e) => failure(e),
                },
                None => failure(status(400, "BadRequest", "no body".into(), json!({}))),
            },
            ("PUT", [name]) | ("PUT", [name, "status"]) => {
                let sub = rest.len() == 2;
                match body {
                    Some(obj) => match st.replace(&collection, name, obj, sub) {
                        Ok(o) => json_response(StatusCode::OK, &o),
                        Err(e) => failure(e),
                    },
                    None => failure(status(400, "BadRequest", "no body".into(), json!({}))),
                }
            }
            ("PATCH", [name]) => match body {
                Some(patch) => match st.patch(&collection, name, &patch) {
                    Ok(o) => json_response(StatusCode::OK, &o),
                    Err(e) => failure(e),
                },
                None => failure(status(400, "BadRequest", "no body".into(), json!({}))),
            },
            ("DELETE", [name]) => match st.delete(&collection, name, body.as_ref()) {
                Ok(o) => json_response(StatusCode::OK, &o),
                Err(e) => failure(e),
            },
            _ => failure(status(
                405,
                "MethodNotAllowed",
                format!("{method} {path} is not supported"),
                json!({}),
            )),
        }
    }
}

impl State {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores `obj` at a new version and tells the watchers.
    fn store(&mut self, collection: &str, name: &str, mut obj: Value, ty: &'static str) -> Value {
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        if ty == "DELETED" {
            if let Some(m) = self.objects.get_mut(collection) {
                m.remove(name);
            }
        } else {
            self.objects
                .entry(collection.to_string())
                .or_default()
                .insert(name.to_string(), obj.clone());
        }
        self.history
            .push((rv, collection.to_string(), ty, obj.clone()));
        let line = event_line(ty, &obj);
        self.watchers
            .retain(|(c, tx)| c != collection || tx.send(line.clone()).is_ok());
        obj
    }

    /// A concurrent writer touches the object if a test asked for it.
    fn maybe_interfere(&mut self, collection: &str, name: &str) {
        let path = format!("{collection}/{name}");
        let Some(i) = self
            .interfere
            .iter()
            .position(|p| path.starts_with(p.as_str()))
        else {
            return;
        };
        self.interfere.remove(i);
        if let Some(mut obj) = self
            .objects
            .get(collection)
            .and_then(|m| m.get(name))
            .cloned()
        {
            let n = obj["metadata"]["annotations"]["test/touched"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            obj["metadata"]["annotations"]["test/touched"] = (n + 1).to_string().into();
            self.store(collection, name, obj, "MODIFIED");
        }
    }

    fn create(&mut self, collection: &str, mut obj: Value) -> Result<Value, Value> {
        let Some(name) = obj["metadata"]["name"].as_str().map(String::from) else {
            return Err(status(
                422,
                "Invalid",
                "metadata.name: Required value".into(),
                json!({}),
            ));
        };
        if self
            .objects
            .get(collection)
            .is_some_and(|m| m.contains_key(&name))
        {
            let res = resource_name(collection);
            return Err(status(
                409,
                "AlreadyExists",
                format!("{res} \"{name}\" already exists"),
                json!({"name": name, "group": "crd.projectcalico.org", "kind": collection.rsplit('/').next()}),
            ));
        }
        if obj["metadata"]
            .get("resourceVersion")
            .is_some_and(|v| !v.is_null())
        {
            return Err(status(
                500,
                "InternalError",
                "resourceVersion should not be set on objects to be created".into(),
                json!({}),
            ));
        }
        obj["metadata"]["uid"] = format!("uid-{}-{}", name, self.rv).into();
        obj["metadata"]["creationTimestamp"] = "2025-01-01T00:00:00Z".into();
        obj["metadata"]["generation"] = 1.into();
        Ok(self.store(collection, &name, obj, "ADDED"))
    }

    fn current(&self, collection: &str, name: &str) -> Result<Value, Value> {
        self.objects
            .get(collection)
            .and_then(|m| m.get(name))
            .cloned()
            .ok_or_else(|| not_found(collection, name))
    }

    fn replace(
        &mut self,
        collection: &str,
        name: &str,
        obj: Value,
        status_only: bool,
    ) -> Result<Value, Value> {
        self.maybe_interfere(collection, name);
        let cur = self.current(collection, name)?;
        match obj["metadata"]["resourceVersion"].as_str() {
            None => {
                return Err(status(
                    422,
                    "Invalid",
                    format!(
                        "{} \"{name}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                        kind_of(collection)
                    ),
                    json!({}),
                ));
            }
            Some(rv) if rv != cur["metadata"]["resourceVersion"] => {
                return Err(conflict(collection, name));
            }
            Some(_) => {}
        }
        let mut next = cur.clone();
        if status_only {
            next["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
        } else {
            next["spec"] = obj.get("spec").cloned().unwrap_or(Value::Null);
            for k in ["labels", "annotations"] {
                next["metadata"][k] = obj["metadata"].get(k).cloned().unwrap_or(Value::Null);
            }
            if next["spec"] != cur["spec"] {
                let g = cur["metadata"]["generation"].as_i64().unwrap_or(1);
                next["metadata"]["generation"] = (g + 1).into();
            }
        }
        Ok(self.store(collection, name, next, "MODIFIED"))
    }

    fn patch(&mut self, collection: &str, name: &str, patch: &Value) -> Result<Value, Value> {
        self.maybe_interfere(collection, name);
        let cur = self.current(collection, name)?;
        if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
            && rv != cur["metadata"]["resourceVersion"]
        {
            return Err(conflict(collection, name));
        }
        let mut next = cur;
        merge_patch(&mut next, patch);
        Ok(self.store(collection, name, next, "MODIFIED"))
    }

    fn delete(
        &mut self,
        collection: &str,
        name: &str,
        opts: Option<&Value>,
    ) -> Result<Value, Value> {
        let cur = self.current(collection, name)?;
        if let Some(rv) = opts.and_then(|o| o["preconditions"]["resourceVersion"].as_str())
            && rv != cur["metadata"]["resourceVersion"]
        {
            let res = resource_name(collection);
            return Err(status(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {res} \"{name}\": the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({}). The object might have been modified",
                    cur["metadata"]["resourceVersion"].as_str().unwrap_or("")
                ),
                json!({"name": name, "kind": collection.rsplit('/').next()}),
            ));
        }
        Ok(self.store(collection, name, cur, "DELETED"))
    }

    fn list(&mut self, collection: &str, q: &BTreeMap<String, String>) -> Response<Body> {
        let limit = q
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let (snapshot_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let Some((rv, last)) = token
                    .strip_prefix("c:")
                    .and_then(|t| t.split_once(':'))
                    .and_then(|(rv, last)| Some((rv.parse::<u64>().ok()?, last.to_string())))
                else {
                    return failure(status(
                        400,
                        "BadRequest",
                        format!("invalid continue token {token:?}"),
                        json!({}),
                    ));
                };
                if rv < self.oldest {
                    return failure(expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.".into(),
                    ));
                }
                (rv, Some(last))
            }
            None => (self.rv, None),
        };
        let all = self.objects.get(collection).cloned().unwrap_or_default();
        let mut items: Vec<Value> = all
            .iter()
            .filter(|(name, _)| after.as_ref().is_none_or(|a| name.as_str() > a.as_str()))
            .map(|(_, o)| o.clone())
            .collect();
        let more = items.len() > limit;
        items.truncate(limit);
        let mut meta = json!({"resourceVersion": snapshot_rv.to_string()});
        if more && let Some(last) = items.last().and_then(|o| o["metadata"]["name"].as_str()) {
            meta["continue"] = format!("c:{snapshot_rv}:{last}").into();
        }
        let api_version = if collection.starts_with(CALICO_GROUP_PATH) {
            "crd.projectcalico.org/v1"
        } else {
            "v1"
        };
        json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": api_version,
                "kind": format!("{}List", kind_of(collection)),
                "metadata": meta,
                "items": items,
            }),
        )
    }

    fn watch(&mut self, collection: &str, q: &BTreeMap<String, String>) -> Response<Body> {
        if self.refuse_watches {
            return failure(status(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request".into(),
                json!({}),
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let from = q
            .get("resourceVersion")
            .and_then(|r| r.parse::<u64>().ok())
            .unwrap_or(self.rv);
        if from + 1 < self.oldest {
            let st = expired(format!(
                "too old resource version: {from} ({})",
                self.oldest
            ));
            let _ = tx.send(event_line("ERROR", &st));
        } else {
            for (rv, c, ty, obj) in &self.history {
                if *rv > from && c == collection {
                    let _ = tx.send(event_line(ty, obj));
                }
            }
            self.watchers.push((collection.to_string(), tx));
        }
        let stream = UnboundedReceiverStream::new(rx)
            .map(|b| Ok::<_, Infallible>(http_body::Frame::data(b)));
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap()
    }
}
