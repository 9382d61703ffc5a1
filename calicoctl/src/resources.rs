//! `get`, `create`, `apply`, `replace`, `patch` and `delete` on the
//! datastore's typed client, for every kind in [`Kind`].
//!
//! Manifests are read with `ippool_crd::manifest` (`projectcalico.org/v3`
//! or `crd.projectcalico.org/v1`) and checked with the same validation the
//! CRDs carry; one invalid resource in a file and nothing is written.

use anyhow::{Context, anyhow, bail};
use datastore::{Client, Error as DsError, Resource};
use ippool_crd::manifest::{CalicoResource, parse_manifests};
use serde_json::{Value, json};

use crate::kinds::{Column, Kind, table};

/// Runs `$body` with `$T` the Rust type of `$kind`.
macro_rules! with_type {
    ($kind:expr, $T:ident => $body:expr) => {
        match $kind {
            Kind::IPPool => {
                type $T = ippool_crd::IPPool;
                $body
            }
            Kind::BGPPeer => {
                type $T = ippool_crd::BGPPeer;
                $body
            }
            Kind::BGPConfiguration => {
                type $T = ippool_crd::BGPConfiguration;
                $body
            }
            Kind::BGPFilter => {
                type $T = ippool_crd::BGPFilter;
                $body
            }
            Kind::Node => {
                type $T = ippool_crd::Node;
                $body
            }
            Kind::NetworkPolicy => {
                type $T = ippool_crd::NetworkPolicy;
                $body
            }
            Kind::GlobalNetworkPolicy => {
                type $T = ippool_crd::GlobalNetworkPolicy;
                $body
            }
            Kind::WorkloadEndpoint => {
                type $T = ippool_crd::WorkloadEndpoint;
                $body
            }
            Kind::IPReservation => {
                type $T = ippool_crd::IPReservation;
                $body
            }
        }
    };
}

/// Which namespaces a namespaced kind is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    One(String),
    All,
}

impl Namespaces {
    /// The namespace an object without one goes into.
    pub fn default_ns(&self) -> &str {
        match self {
            Namespaces::One(n) => n,
            Namespaces::All => "default",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table (the default).
    Ps,
    /// A table with more columns.
    Wide,
    Yaml,
    Json,
}

fn not_found(kind: Kind, ns: Option<&str>, name: &str) -> anyhow::Error {
    match ns {
        Some(ns) => anyhow!("resource does not exist: {}({ns}/{name})", kind.name()),
        None => anyhow!("resource does not exist: {}({name})", kind.name()),
    }
}

async fn fetch<R: Resource>(
    c: &Client,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<Option<R>, DsError> {
    if kind.namespaced() {
        c.get_in::<R>(ns, name).await
    } else {
        c.get::<R>(name).await
    }
}

async fn read_values<R: Resource>(
    c: &Client,
    kind: Kind,
    names: &[String],
    ns: &Namespaces,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    if names.is_empty() {
        for r in c.list::<R>().await? {
            let v = serde_json::to_value(&r)?;
            let in_ns = match ns {
                Namespaces::All => true,
                Namespaces::One(n) => {
                    !kind.namespaced()
                        || v.pointer("/metadata/namespace").and_then(Value::as_str) == Some(n)
                }
            };
            if in_ns {
                out.push(v);
            }
        }
        out.sort_by(|a, b| {
            let key = |v: &Value| {
                (
                    v.pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    v.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                )
            };
            key(a).cmp(&key(b))
        });
    } else {
        for name in names {
            let r = fetch::<R>(c, kind, ns.default_ns(), name)
                .await?
                .ok_or_else(|| not_found(kind, kind.namespaced().then(|| ns.default_ns()), name))?;
            out.push(serde_json::to_value(&r)?);
        }
    }
    Ok(out)
}

/// An object as calicoctl shows it: the v3 API version, without the
/// bookkeeping the API server adds.
pub fn present(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), json!("projectcalico.org/v3"));
    }
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("generation");
    }
    v
}

/// The AS number nodes without their own use: the default
/// BGPConfiguration's, or Calico's 64512.
async fn global_asn(c: &Client) -> u32 {
    c.get::<ippool_crd::BGPConfiguration>("default")
        .await
        .ok()
        .flatten()
        .and_then(|b| serde_json::to_value(&b).ok())
        .and_then(|v| v.pointer("/spec/asNumber").and_then(Value::as_u64))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(64512)
}

/// `calicoctl get KIND [NAME...]`: the text to print.
pub async fn get(
    c: &Client,
    kind: Kind,
    names: &[String],
    ns: &Namespaces,
    output: Output,
) -> anyhow::Result<String> {
    let values = with_type!(kind, T => read_values::<T>(c, kind, names, ns).await)?;
    match output {
        Output::Ps | Output::Wide => {
            let mut cols = kind.columns(output == Output::Wide);
            if kind.namespaced() && (*ns == Namespaces::All || output == Output::Wide) {
                cols.insert(0, Column::Namespace);
            }
            let asn = if cols.contains(&Column::NodeAsn) {
                global_asn(c).await
            } else {
                64512
            };
            let headings: Vec<&str> = cols.iter().map(|c| c.heading()).collect();
            let rows: Vec<Vec<String>> = values
                .iter()
                .map(|v| cols.iter().map(|c| c.cell(v, asn)).collect())
                .collect();
            Ok(table(&headings, &rows))
        }
        Output::Yaml | Output::Json => {
            let mut values: Vec<Value> = values.into_iter().map(present).collect();
            let doc = if names.len() == 1 {
                values.remove(0)
            } else {
                json!({
                    "apiVersion": "projectcalico.org/v3",
                    "kind": format!("{}List", kind.name()),
                    "items": values,
                })
            };
            Ok(if output == Output::Yaml {
                serde_yaml_ng::to_string(&doc)?
            } else {
                serde_json::to_string_pretty(&doc)? + "\n"
            })
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Apply,
    Replace,
    Delete,
}

impl Action {
    fn past(self) -> &'static str {
        match self {
            Action::Create => "created",
            Action::Apply => "applied",
            Action::Replace => "replaced",
            Action::Delete => "deleted",
        }
    }
    fn verb(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Apply => "apply",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }
}

fn kind_of(r: &CalicoResource) -> anyhow::Result<Kind> {
    Ok(match r {
        CalicoResource::IPPool(_) => Kind::IPPool,
        CalicoResource::BGPPeer(_) => Kind::BGPPeer,
        CalicoResource::BGPConfiguration(_) => Kind::BGPConfiguration,
        CalicoResource::BGPFilter(_) => Kind::BGPFilter,
        CalicoResource::Node(_) => Kind::Node,
        CalicoResource::NetworkPolicy(_) => Kind::NetworkPolicy,
        CalicoResource::GlobalNetworkPolicy(_) => Kind::GlobalNetworkPolicy,
        CalicoResource::IPReservation(_) => Kind::IPReservation,
        other => bail!(
            "{} {:?}: calicoctl does not write IPAM objects (see `calicoctl ipam`)",
            other.kind(),
            other.name()
        ),
    })
}

/// One object's write. Returns whether it was done (`false`: a delete of
/// something absent with `skip_missing`).
async fn write_one<R: Resource>(
    c: &Client,
    kind: Kind,
    mut obj: R,
    action: Action,
    default_ns: &str,
    skip_missing: bool,
) -> anyhow::Result<bool> {
    let name = obj.meta().name.clone().unwrap_or_default();
    if kind.namespaced() && obj.meta().namespace.is_none() {
        obj.meta_mut().namespace = Some(default_ns.to_string());
    }
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let shown = if kind.namespaced() {
        format!("{}({ns}/{name})", kind.name())
    } else {
        format!("{}({name})", kind.name())
    };
    let current = fetch::<R>(c, kind, &ns, &name).await?;
    match (action, current) {
        (Action::Create, Some(_)) => bail!("resource already exists: {shown}"),
        (Action::Create, None) | (Action::Apply, None) => {
            obj.meta_mut().resource_version = None;
            c.create(&obj).await?;
        }
        (Action::Replace, None) => bail!("resource does not exist: {shown}"),
        (Action::Apply | Action::Replace, Some(cur)) => {
            // A resourceVersion in the file is the user's compare-and-swap
            // (replace); otherwise the current object is replaced.
            if action == Action::Apply || obj.meta().resource_version.is_none() {
                obj.meta_mut().resource_version = cur.meta().resource_version.clone();
            }
            obj.meta_mut().uid = cur.meta().uid.clone();
            obj.meta_mut().creation_timestamp = cur.meta().creation_timestamp.clone();
            c.update(&obj).await.map_err(|e| match e {
                DsError::Conflict { .. } => anyhow!(
                    "{shown} was changed since resourceVersion {}; get it again and retry",
                    obj.meta().resource_version.clone().unwrap_or_default()
                ),
                e => e.into(),
            })?;
        }
        (Action::Delete, None) if skip_missing => return Ok(false),
        (Action::Delete, None) => bail!("resource does not exist: {shown}"),
        (Action::Delete, Some(cur)) => {
            let rev = cur.meta().resource_version.clone().map(datastore::Revision);
            if kind.namespaced() {
                c.delete_in::<R>(&ns, &name, rev.as_ref()).await?;
            } else {
                c.delete::<R>(&name, rev.as_ref()).await?;
            }
            if kind == Kind::Node {
                delete_node_config(c, &name).await?;
            }
        }
    }
    Ok(true)
}

/// What only a deleted node used, removed with it as Calico's calicoctl
/// does: its own BGPConfiguration (`node.<name>`) and the BGPPeers that
/// apply to it alone (`spec.node`). Its addresses, blocks and workload
/// endpoints are the IPAM clean-up's (calico-node, after a grace period).
async fn delete_node_config(c: &Client, node: &str) -> anyhow::Result<()> {
    let own = format!("node.{node}");
    if c.get::<ippool_crd::BGPConfiguration>(&own).await?.is_some() {
        match c.delete::<ippool_crd::BGPConfiguration>(&own, None).await {
            Ok(()) | Err(DsError::NotFound { .. }) => {}
            Err(e) => return Err(e).context(format!("deleting BGPConfiguration {own}")),
        }
    }
    for p in c.list::<ippool_crd::BGPPeer>().await? {
        if p.spec.node.as_deref() != Some(node) {
            continue;
        }
        let name = p.metadata.name.clone().unwrap_or_default();
        match c.delete::<ippool_crd::BGPPeer>(&name, None).await {
            Ok(()) | Err(DsError::NotFound { .. }) => {}
            Err(e) => return Err(e).context(format!("deleting BGPPeer {name}")),
        }
    }
    Ok(())
}

async fn write_resource(
    c: &Client,
    r: CalicoResource,
    action: Action,
    default_ns: &str,
    skip_missing: bool,
) -> anyhow::Result<bool> {
    let kind = kind_of(&r)?;
    match r {
        CalicoResource::IPPool(o) => write_one(c, kind, o, action, default_ns, skip_missing).await,
        CalicoResource::BGPPeer(o) => write_one(c, kind, o, action, default_ns, skip_missing).await,
        CalicoResource::BGPConfiguration(o) => {
            write_one(c, kind, o, action, default_ns, skip_missing).await
        }
        CalicoResource::BGPFilter(o) => {
            write_one(c, kind, o, action, default_ns, skip_missing).await
        }
        CalicoResource::Node(o) => write_one(c, kind, o, action, default_ns, skip_missing).await,
        CalicoResource::NetworkPolicy(o) => {
            write_one(c, kind, o, action, default_ns, skip_missing).await
        }
        CalicoResource::GlobalNetworkPolicy(o) => {
            write_one(c, kind, o, action, default_ns, skip_missing).await
        }
        CalicoResource::IPReservation(o) => {
            write_one(c, kind, o, action, default_ns, skip_missing).await
        }
        _ => unreachable!("kind_of refused it"),
    }
}

/// Reads and validates every resource in `text`; one bad resource and the
/// whole file is refused.
pub fn read_manifest(text: &str, source: &str) -> anyhow::Result<Vec<CalicoResource>> {
    let resources = parse_manifests(text).with_context(|| format!("reading {source}"))?;
    if resources.is_empty() {
        bail!("{source} holds no resources");
    }
    let mut problems = Vec::new();
    for r in &resources {
        kind_of(r)?;
        if let Err(e) = r.validate() {
            problems.push(e.to_string());
        }
    }
    if !problems.is_empty() {
        bail!("{}; nothing was written", problems.join("; "));
    }
    Ok(resources)
}

/// `create|apply|replace|delete -f`: writes each resource in order and
/// stops at the first failure (what was written before it stays, as with
/// calicoctl). Returns the summary line.
pub async fn write_all(
    c: &Client,
    resources: Vec<CalicoResource>,
    action: Action,
    default_ns: &str,
    skip_missing: bool,
) -> anyhow::Result<String> {
    let total = resources.len();
    let mut done = 0usize;
    let mut kinds: Vec<&'static str> = Vec::new();
    for r in resources {
        let kind = r.kind();
        let name = r.name().to_string();
        match write_resource(c, r, action, default_ns, skip_missing).await {
            Ok(true) => {
                done += 1;
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
            Ok(false) => {}
            Err(e) => {
                return Err(e.context(format!(
                    "failed to {} {kind} {name:?} ({done} of {total} resources {} before it)",
                    action.verb(),
                    action.past()
                )));
            }
        }
    }
    Ok(format!(
        "Successfully {} {done} '{}' resource(s)\n",
        action.past(),
        kinds.join("', '")
    ))
}

/// `delete KIND NAME...`.
pub async fn delete_named(
    c: &Client,
    kind: Kind,
    names: &[String],
    ns: &Namespaces,
    skip_missing: bool,
) -> anyhow::Result<String> {
    let mut done = 0;
    for name in names {
        let deleted = with_type!(kind, T => {
            match fetch::<T>(c, kind, ns.default_ns(), name).await? {
                None if skip_missing => false,
                None => return Err(not_found(kind, kind.namespaced().then(|| ns.default_ns()), name)),
                Some(cur) => {
                    write_one::<T>(c, kind, cur, Action::Delete, ns.default_ns(), skip_missing).await?
                }
            }
        });
        if deleted {
            done += 1;
        }
    }
    Ok(format!(
        "Successfully deleted {done} '{}' resource(s)\n",
        kind.name()
    ))
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// `patch KIND NAME -p PATCH`: merge-patches the stored object, checks the
/// result as a whole, and writes it back at the revision it was read at.
pub async fn patch(
    c: &Client,
    kind: Kind,
    name: &str,
    ns: &Namespaces,
    patch: &str,
) -> anyhow::Result<String> {
    let p: Value = serde_yaml_ng::from_str(patch).context("the patch is not JSON or YAML")?;
    if !p.is_object() {
        bail!("the patch must be an object, e.g. '{{\"spec\":{{\"disabled\":true}}}}'");
    }
    let current = with_type!(kind, T => {
        fetch::<T>(c, kind, ns.default_ns(), name)
            .await?
            .map(|r| serde_json::to_value(&r))
            .transpose()?
    })
    .ok_or_else(|| not_found(kind, kind.namespaced().then(|| ns.default_ns()), name))?;
    let mut v = current.clone();
    merge_patch(&mut v, &p);
    // The patch changes the object, not which object it is.
    for field in ["/metadata/name", "/metadata/namespace", "/kind"] {
        if v.pointer(field) != current.pointer(field) {
            bail!("the patch may not change {}", &field[1..].replace('/', "."));
        }
    }
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert(
            "resourceVersion".into(),
            current
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null),
        );
    }
    let r = CalicoResource::from_value(v).context("the patched object")?;
    if let Err(e) = r.validate() {
        bail!("the patch would make it invalid: {e}; nothing was written");
    }
    match r {
        CalicoResource::IPPool(o) => c.update(&o).await.map(drop),
        CalicoResource::BGPPeer(o) => c.update(&o).await.map(drop),
        CalicoResource::BGPConfiguration(o) => c.update(&o).await.map(drop),
        CalicoResource::BGPFilter(o) => c.update(&o).await.map(drop),
        CalicoResource::Node(o) => c.update(&o).await.map(drop),
        CalicoResource::NetworkPolicy(o) => c.update(&o).await.map(drop),
        CalicoResource::GlobalNetworkPolicy(o) => c.update(&o).await.map(drop),
        CalicoResource::IPReservation(o) => c.update(&o).await.map(drop),
        other => bail!("calicoctl does not patch {}", other.kind()),
    }?;
    Ok(format!(
        "Successfully patched 1 '{}' resource\n",
        kind.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge_patch(&mut t, &json!({"a": [3], "n": {"x": 1}}));
        assert_eq!(t, json!({"a": [3], "n": {"x": 1}}));
    }

    #[test]
    fn a_manifest_with_one_invalid_resource_is_refused_whole() {
        let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: good}\nspec: {cidr: 10.1.0.0/16}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bad}\nspec: {cidr: 10.2.0.0/16, ipipMode: Always, vxlanMode: Always}\n";
        let e = read_manifest(text, "f.yaml").unwrap_err().to_string();
        assert!(
            e.contains("\"bad\"") && e.contains("nothing was written"),
            "{e}"
        );
        assert!(read_manifest(&text[..text.find("---").unwrap()], "f").is_ok());
        let ipam = "apiVersion: crd.projectcalico.org/v1\nkind: IPAMHandle\nmetadata: {name: h}\nspec: {handleID: h, block: {}}\n";
        let e = read_manifest(ipam, "f").unwrap_err().to_string();
        assert!(e.contains("calicoctl ipam"), "{e}");
    }

    #[test]
    fn present_shows_the_v3_api() {
        let v = present(
            json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool", "metadata": {"name": "p", "managedFields": []}}),
        );
        assert_eq!(
            v,
            json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "p"}})
        );
    }
}
