//! The `calicoctl` binary against a real etcd and a real kube-apiserver
//! (with `deploy/crds.yaml`): the same script on both, with the exact
//! tables it prints (golden output), the v3 and the v1 manifest forms, a
//! file with one invalid resource that writes nothing, patch, replace,
//! delete, the config file, and `ipam show / check / release` with a
//! leaked address.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use datastore::Client;
use datastore::ipam::{AssignRequest, Ipam};
use tests::EtcdServer;
use tests::kube::KubeServer;

fn calicoctl_bin() -> PathBuf {
    tests::agent::build_many(&[("calicoctl", "calicoctl")])
        .unwrap()
        .remove(0)
}

/// Runs calicoctl with the datastore `env`, optional standard input.
struct Ctl {
    bin: PathBuf,
    env: Vec<(String, String)>,
}

impl Ctl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env_remove("DATASTORE_TYPE")
            .env_remove("ETCD_ENDPOINTS")
            .env_remove("KUBECONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // No /etc/calico/calicoctl.cfg of the machine's: a named,
            // absent one would be an error, so point at an empty dir's.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            pipe.write_all(s.as_bytes()).unwrap();
        }
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    /// Must succeed; returns stdout.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "calicoctl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Must fail; returns stderr.
    fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            !out.status.success(),
            "calicoctl {args:?} succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

const MANIFEST: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 10.10.0.0/16
  ipipMode: Always
  natOutgoing: true
  nodeSelector: all()
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-b
spec:
  cidr: 10.20.0.0/16
  vxlanMode: CrossSubnet
  nodeSelector: all()
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: tor
spec:
  peerIP: 192.0.2.254
  asNumber: 65001
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: deny-db
spec:
  order: 10
  selector: app == 'db'
  types: [Ingress]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: default
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Allow
"#;

/// The script both datastores run. `client` is the same datastore, for
/// what calicoctl does not do itself (allocating addresses, pods).
async fn script(ctl: &Ctl, client: &Client, make_pod: impl Fn(&str)) {
    let applied = ctl.ok(&["apply", "-f", "-"], Some(MANIFEST));
    assert_eq!(
        applied,
        "Successfully applied 5 'IPPool', 'BGPPeer', 'GlobalNetworkPolicy', 'NetworkPolicy' resource(s)\n"
    );
    assert_eq!(
        ctl.ok(&["get", "ippools"], None),
        "NAME     CIDR           SELECTOR\n\
         pool-a   10.10.0.0/16   all()\n\
         pool-b   10.20.0.0/16   all()\n"
    );
    assert_eq!(
        ctl.ok(&["get", "ippool", "-o", "wide"], None),
        "NAME     CIDR           NAT     IPIPMODE   VXLANMODE     DISABLED   DISABLEBGPEXPORT   SELECTOR\n\
         pool-a   10.10.0.0/16   true    Always     Never         false      false              all()\n\
         pool-b   10.20.0.0/16   false   Never      CrossSubnet   false      false              all()\n"
    );
    assert_eq!(
        ctl.ok(&["get", "bgppeers"], None),
        "NAME   PEERIP        NODE       ASN\n\
         tor    192.0.2.254   (global)   65001\n"
    );
    assert_eq!(
        ctl.ok(&["get", "gnp", "-o", "wide"], None),
        "NAME      ORDER   SELECTOR\n\
         deny-db   10      app == 'db'\n"
    );
    assert_eq!(
        ctl.ok(&["get", "networkpolicies", "-A"], None),
        "NAMESPACE   NAME\n\
         default     allow-web\n"
    );
    assert_eq!(
        ctl.ok(&["get", "networkpolicies", "-n", "kube-system"], None),
        "NAME\n"
    );

    // IPReservations: written, listed with their CIDRs, validated, deleted.
    let ipr = "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: gw}\nspec:\n  reservedCIDRs: [10.10.0.1, 10.10.1.0/28]\n";
    assert_eq!(
        ctl.ok(&["apply", "-f", "-"], Some(ipr)),
        "Successfully applied 1 'IPReservation' resource(s)\n"
    );
    assert_eq!(
        ctl.ok(&["get", "ipr"], None),
        "NAME   CIDRS\n\
         gw     10.10.0.1,10.10.1.0/28\n"
    );
    let bad_ipr = "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: bad}\nspec: {reservedCIDRs: [10.10.0.300]}\n";
    let e = ctl.fails(&["apply", "-f", "-"], Some(bad_ipr));
    assert!(
        e.contains("spec.reservedCIDRs[0]") && e.contains("neither an IP address nor a CIDR"),
        "{e}"
    );
    assert_eq!(
        ctl.ok(&["delete", "ipreservation", "gw"], None),
        "Successfully deleted 1 'IPReservation' resource(s)\n"
    );
    assert_eq!(ctl.ok(&["get", "iprs"], None), "NAME   CIDRS\n");

    // YAML and JSON show the v3 API; one name gives the object itself.
    let y: serde_json::Value =
        serde_yaml_ng::from_str(&ctl.ok(&["get", "ippool", "pool-a", "-o", "yaml"], None)).unwrap();
    assert_eq!(y["apiVersion"], "projectcalico.org/v3");
    assert_eq!(y["kind"], "IPPool");
    assert_eq!(y["spec"]["cidr"], "10.10.0.0/16");
    let j: serde_json::Value =
        serde_json::from_str(&ctl.ok(&["get", "ippools", "-o", "json"], None)).unwrap();
    assert_eq!(j["kind"], "IPPoolList");
    assert_eq!(j["items"].as_array().unwrap().len(), 2);
    let e = ctl.fails(&["get", "ippool", "nope"], None);
    assert!(e.contains("resource does not exist: IPPool(nope)"), "{e}");
    let e = ctl.fails(&["get", "pods"], None);
    assert!(e.contains("not supported"), "{e}");

    // create refuses what exists and writes nothing after it.
    let e = ctl.fails(&["create", "-f", "-"], Some(MANIFEST));
    assert!(e.contains("resource already exists: IPPool(pool-a)"), "{e}");

    // One invalid resource: the whole file is refused, nothing written,
    // with the validation's message.
    let bad = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool-c}\nspec: {cidr: 10.30.0.0/16}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool-d}\nspec: {cidr: 10.40.0.0/16, ipipMode: Always, vxlanMode: Always}\n";
    let e = ctl.fails(&["apply", "-f", "-"], Some(bad));
    assert!(
        e.contains("IPPool \"pool-d\" is invalid")
            && e.contains("cannot both be enabled")
            && e.contains("nothing was written"),
        "{e}"
    );
    assert!(!ctl.ok(&["get", "ippools"], None).contains("pool-c"));

    // The CRD form (what is stored) is read too.
    let v1 = "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata: {name: pool-c}\nspec: {cidr: 10.30.0.0/16, blockSize: 28}\n";
    assert_eq!(
        ctl.ok(&["create", "-f", "-"], Some(v1)),
        "Successfully created 1 'IPPool' resource(s)\n"
    );

    // patch: merge patch, checked whole, at the revision read.
    assert_eq!(
        ctl.ok(
            &[
                "patch",
                "ippool",
                "pool-c",
                "-p",
                r#"{"spec":{"disabled":true}}"#
            ],
            None
        ),
        "Successfully patched 1 'IPPool' resource\n"
    );
    assert!(
        ctl.ok(&["get", "ippool", "pool-c", "-o", "wide"], None)
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            == [
                "pool-c",
                "10.30.0.0/16",
                "false",
                "Never",
                "Never",
                "true",
                "false",
                "all()"
            ]
    );
    let e = ctl.fails(
        &[
            "patch",
            "ippool",
            "pool-c",
            "-p",
            r#"{"spec":{"blockSize":12}}"#,
        ],
        None,
    );
    assert!(
        e.contains("the patch would make it invalid: IPPool \"pool-c\" is invalid")
            && e.contains("blockSize"),
        "{e}"
    );
    let e = ctl.fails(
        &[
            "patch",
            "ippool",
            "pool-c",
            "-p",
            r#"{"metadata":{"name":"x"}}"#,
        ],
        None,
    );
    assert!(e.contains("may not change metadata.name"), "{e}");

    // replace: must exist.
    let b2 = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool-b}\nspec: {cidr: 10.20.0.0/16, natOutgoing: true, vxlanMode: CrossSubnet}\n";
    ctl.ok(&["replace", "-f", "-"], Some(b2));
    assert!(
        ctl.ok(&["get", "ippool", "pool-b", "-o", "wide"], None)
            .contains("pool-b   10.20.0.0/16   true ")
    );
    let e = ctl.fails(
        &["replace", "-f", "-"],
        Some(&b2.replace("pool-b", "pool-z")),
    );
    assert!(e.contains("resource does not exist: IPPool(pool-z)"), "{e}");

    // ipam: a pod's address, and a leaked one (its pod is gone).
    make_pod("web");
    let ipam = Ipam::new(client.clone());
    let attrs = |pod: &str| {
        BTreeMap::from([
            ("namespace".to_string(), "default".to_string()),
            ("pod".to_string(), pod.to_string()),
            ("node".to_string(), "node-1".to_string()),
        ])
    };
    let mut ips = Vec::new();
    for pod in ["web", "gone"] {
        let a = ipam
            .auto_assign(&AssignRequest {
                handle: format!("k8s-pod-network.{pod}"),
                host: "node-1".into(),
                num_v4: 1,
                attrs: attrs(pod),
                pools_v4: vec!["pool-a".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        ips.push(a.v4[0]);
    }
    let show = ctl.ok(&["ipam", "show", "--show-blocks"], None);
    println!("{show}");
    // The block's CIDR depends on the node's name hash: the table is
    // compared with that cell replaced, and its alignment checked apart.
    let block = show
        .lines()
        .find_map(|l| l.strip_prefix("Block"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(
        block.starts_with("10.10.") && block.ends_with("/26"),
        "{show}"
    );
    let w = block.len().max("10.10.0.0/16".len());
    let pad = |s: &str| format!("{s:<w$}");
    assert_eq!(
        show,
        format!(
            "GROUPING   {}   IPS TOTAL   IPS IN USE   IPS FREE\n\
             IP Pool    {}   65536       2 (0%)       65534 (99%)\n\
             Block      {}   64          2 (3%)       62 (96%)\n\
             IP Pool    {}   65536       0 (0%)       65536 (100%)\n\
             IP Pool    {}   65536       0 (0%)       65536 (100%)\n",
            pad("CIDR"),
            pad("10.10.0.0/16"),
            pad(&block),
            pad("10.20.0.0/16"),
            pad("10.30.0.0/16"),
        )
    );
    let one = ctl.ok(&["ipam", "show", "--ip", &ips[1].to_string()], None);
    assert!(
        one.starts_with(&format!("IP {} is in use\n", ips[1])) && one.contains("pod: gone"),
        "{one}"
    );
    assert_eq!(
        ctl.ok(&["ipam", "show", "--ip", "10.99.0.1"], None),
        "IP 10.99.0.1 is not assigned\n"
    );

    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let check = ctl.ok(&["ipam", "check", "-o", report.to_str().unwrap()], None);
    println!("{check}");
    assert!(check.contains("Found 1 leaked addresses\n"), "{check}");
    assert!(
        check.contains(&format!("  {} in ", ips[1])) && check.contains("pod=gone"),
        "{check}"
    );
    assert!(!check.contains("pod=web"), "{check}");
    assert!(check.contains("IPAM has problems"), "{check}");
    let released = ctl.ok(
        &["ipam", "release", "--from-report", report.to_str().unwrap()],
        None,
    );
    assert_eq!(
        released,
        "Released 1 leaked addresses; 0 in the report no longer leak (left alone)\n"
    );
    // Released again: nothing still leaks, nothing is touched.
    let again = ctl.ok(
        &["ipam", "release", "--from-report", report.to_str().unwrap()],
        None,
    );
    assert!(
        again.starts_with("Released 0 leaked addresses; 1 "),
        "{again}"
    );
    let check = ctl.ok(&["ipam", "check"], None);
    assert!(check.contains("Found 0 leaked addresses"), "{check}");
    assert!(check.contains("IPAM is consistent."), "{check}");
    // The live pod's address is still there.
    assert!(
        ctl.ok(&["ipam", "show", "--ip", &ips[0].to_string()], None)
            .contains("is in use")
    );
    let e = ctl.fails(&["ipam", "release", "--ip", &ips[1].to_string()], None);
    assert!(e.contains("is not assigned"), "{e}");
    assert_eq!(
        ctl.ok(&["ipam", "release", "--ip", &ips[0].to_string()], None),
        format!("Successfully released IP {}\n", ips[0])
    );

    // delete by name, by file; a missing one fails unless skipped.
    assert_eq!(
        ctl.ok(&["delete", "ippool", "pool-c"], None),
        "Successfully deleted 1 'IPPool' resource(s)\n"
    );
    let e = ctl.fails(&["delete", "ippool", "pool-c"], None);
    assert!(e.contains("resource does not exist: IPPool(pool-c)"), "{e}");
    ctl.ok(&["delete", "ippool", "pool-c", "--skip-not-exists"], None);
    assert_eq!(
        ctl.ok(&["delete", "-f", "-"], Some(MANIFEST)),
        "Successfully deleted 5 'IPPool', 'BGPPeer', 'GlobalNetworkPolicy', 'NetworkPolicy' resource(s)\n"
    );
    assert_eq!(
        ctl.ok(&["get", "ippools"], None),
        "NAME   CIDR   SELECTOR\n"
    );
    assert_eq!(
        ctl.ok(&["get", "bgppeers"], None),
        "NAME   PEERIP   NODE   ASN\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn calicoctl_on_etcd() {
    let bin = calicoctl_bin();
    let etcd = EtcdServer::start().unwrap();
    let client = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    // A node for the affinities, as calico-node registers it.
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = cfgdir.path().join("calicoctl.cfg");
    std::fs::write(
        &cfg,
        format!(
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata:\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: {}\n",
            etcd.endpoint()
        ),
    )
    .unwrap();
    // Through the config file, with nothing in the environment.
    let by_file = Ctl {
        bin: bin.clone(),
        env: vec![],
    };
    let cfg_arg = cfg.to_str().unwrap();
    assert_eq!(
        by_file.ok(
            &["apply", "--config", cfg_arg, "-f", "-"],
            Some("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node-1}\nspec: {bgp: {ipv4Address: 192.0.2.1/24}}\n")
        ),
        "Successfully applied 1 'Node' resource(s)\n"
    );
    assert_eq!(
        by_file.ok(&["get", "nodes", "-o", "wide", "-c", cfg_arg], None),
        "NAME     ASN       IPV4           IPV6\nnode-1   (64512)   192.0.2.1/24\n"
    );
    assert_eq!(
        by_file.ok(&["version", "-c", cfg_arg], None),
        format!(
            "Client Version:    v{}\nDatastore Type:    etcdv3\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    let e = by_file.fails(&["get", "nodes", "-c", "/nonexistent/calicoctl.cfg"], None);
    assert!(e.contains("/nonexistent/calicoctl.cfg"), "{e}");

    let ctl = Ctl {
        bin,
        env: vec![
            ("DATASTORE_TYPE".into(), "etcdv3".into()),
            ("ETCD_ENDPOINTS".into(), etcd.endpoint()),
        ],
    };
    // In etcd, a pod exists while felix's WorkloadEndpoint for it does.
    let c2 = client.clone();
    let make_pod = move |pod: &str| {
        let wep: ippool_crd::WorkloadEndpoint = serde_json::from_value(serde_json::json!({
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "WorkloadEndpoint",
            "metadata": {"name": format!("node--1-k8s-{pod}-eth0"), "namespace": "default"},
            "spec": {"orchestrator": "k8s", "node": "node-1", "pod": pod,
                     "endpoint": "eth0", "interfaceName": format!("cali{pod}"),
                     "ipNetworks": []}
        }))
        .unwrap();
        let c2 = c2.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async { c2.create(&wep).await.unwrap() })
        });
    };
    script(&ctl, &client, make_pod).await;
    assert_eq!(
        ctl.ok(&["get", "workloadendpoints"], None),
        "WORKLOAD   NODE     NETWORKS   INTERFACE\nweb        node-1              caliweb\n"
    );

    // Deleting a node takes its own BGPConfiguration and the BGPPeers of
    // that node alone with it, as Calico's calicoctl does; others stay.
    ctl.ok(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node-9}\nspec: {bgp: {ipv4Address: 192.0.2.9/24}}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: node.node-9}\nspec: {listenPort: 1179}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor-of-9}\nspec: {node: node-9, peerIP: 192.0.2.254, asNumber: 65001}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor-of-1}\nspec: {node: node-1, peerIP: 192.0.2.253, asNumber: 65001}\n",
        ),
    );
    assert_eq!(
        ctl.ok(&["delete", "node", "node-9"], None),
        "Successfully deleted 1 'Node' resource(s)\n"
    );
    let peers = ctl.ok(&["get", "bgppeers"], None);
    assert!(
        peers.contains("tor-of-1") && !peers.contains("tor-of-9"),
        "{peers}"
    );
    let configs = ctl.ok(&["get", "bgpconfigurations"], None);
    assert!(!configs.contains("node.node-9"), "{configs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn calicoctl_on_the_kubernetes_api() {
    let bin = calicoctl_bin();
    let server = KubeServer::start().unwrap();
    server.install_crds().unwrap();
    let client = server.datastore(Default::default()).await.unwrap();
    // The Kubernetes Node calico-node would annotate.
    server
        .apply("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n")
        .unwrap();
    let ctl = Ctl {
        bin,
        env: vec![
            ("DATASTORE_TYPE".into(), "kubernetes".into()),
            (
                "KUBECONFIG".into(),
                server.cp.admin_kubeconfig.to_string_lossy().into_owned(),
            ),
        ],
    };
    assert_eq!(ctl.ok(&["get", "nodes"], None), "NAME\nnode-1\n");
    let make_pod = |pod: &str| {
        let out = server
            .apply(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: default}}\nspec:\n  nodeName: node-1\n  containers: [{{name: c, image: none}}]\n"
            ))
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    script(&ctl, &client, make_pod).await;
}
