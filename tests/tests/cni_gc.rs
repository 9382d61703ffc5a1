//! CNI GC (spec 1.1) end to end: real etcd, the real `confd` and `felix`,
//! and the real CNI plugin invoked the way a runtime invokes GC (only
//! `CNI_COMMAND` and `CNI_PATH`, the attachments it still has in
//! `cni.dev/valid-attachments`). Every other sandbox on the node is torn
//! down and its addresses released — also one whose ADD died half-way
//! (addresses allocated, no interface) — and the valid one is untouched.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use datastore::ipam::{AssignRequest, Ipam, pod_handle};
use ippool_crd::IPPool;
use lab::Netns;
use lab::cni::{CniCall, CniOut};
use serde_json::{Value, json};
use tests::EtcdServer;
use tests::agent::{AgentDirs, build_many, spawn_confd, spawn_felix};

fn add(bin: &Path, container: &str, netns: &Path, pod: &str, conf: &str) -> CniOut {
    lab::cni::invoke(&CniCall {
        plugin: bin,
        command: "ADD",
        container,
        netns,
        namespace: "default",
        pod,
        config: conf,
        node_ns: None,
    })
    .unwrap()
}

/// GC as a runtime calls it: no container, netns or interface variables.
fn gc(bin: &Path, conf: &Value) -> (i32, String) {
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", "GC")
        .env("CNI_PATH", bin.parent().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn gc_collects_every_sandbox_the_runtime_no_longer_has_and_nothing_else() {
    tests::init_tracing();
    let built = build_many(&[("felix", "felix"), ("confd", "confd"), ("cni", "calico")]).unwrap();
    let [felix, confd, calico] = <[_; 3]>::try_from(built).unwrap();
    let (node, _gw) = tests::agent::node_with_uplink("gcnode", "gcgw").unwrap();
    let pods: Vec<Netns> = ["gca", "gcb", "gcc"]
        .iter()
        .map(|n| Netns::create(n).unwrap())
        .collect();
    let paths: Vec<_> = pods.iter().map(|p| p.path()).collect();

    node.run(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let _pods = pods;
            let tmp = tempfile::tempdir().unwrap();
            let d = AgentDirs {
                dir: tmp.path().to_path_buf(),
            };
            let etcd = EtcdServer::start().unwrap();
            let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
            tests::agent::register_uplink_node(&c).await.unwrap();
            c.create(&IPPool::new(
                "p",
                ippool_crd::IPPoolSpec::new("10.65.0.0/16"),
            ))
            .await
            .unwrap();
            let _felix = spawn_felix(&felix, &d, "node-1", &etcd.endpoint(), &[]).unwrap();
            let _confd = spawn_confd(&confd, &d, "node-1", &etcd.endpoint()).unwrap();
            let conf = lab::cni::network_config(&d.felix_socket());

            let deadline = Instant::now() + Duration::from_secs(20);
            let a = loop {
                let o = add(&calico, "ca", &paths[0], "pod-a", &conf);
                if o.code == 0 || Instant::now() > deadline {
                    break o;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert_eq!(a.code, 0, "{}", a.json);
            let b = add(&calico, "cb", &paths[1], "pod-b", &conf);
            assert_eq!(b.code, 0, "{}", b.json);
            let cc = add(&calico, "cc", &paths[2], "pod-c", &conf);
            assert_eq!(cc.code, 0, "{}", cc.json);
            let iface = |o: &CniOut| {
                o.json["interfaces"][0]["name"]
                    .as_str()
                    .unwrap()
                    .to_string()
            };
            let (ia, ib, ic) = (iface(&a), iface(&b), iface(&cc));
            // An ADD that died after IPAM, before its interface.
            let ipam = Ipam::new(c.clone());
            ipam.auto_assign(&AssignRequest {
                handle: pod_handle("cd"),
                host: "node-1".into(),
                num_v4: 1,
                attrs: BTreeMap::from([
                    ("namespace".to_string(), "default".to_string()),
                    ("pod".to_string(), "pod-d".to_string()),
                    ("node".to_string(), "node-1".to_string()),
                ]),
                ..Default::default()
            })
            .await
            .unwrap();

            let mut gc_conf: Value = serde_json::from_str(&conf).unwrap();
            gc_conf["cniVersion"] = json!("1.1.0");
            // Without the list nothing is collected.
            let (code, out) = gc(&calico, &gc_conf);
            assert_ne!(code, 0, "{out}");
            assert!(out.contains("valid-attachments"), "{out}");
            assert!(link_exists(&ib));

            gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": "ca", "ifname": "eth0"}]);
            let (code, out) = gc(&calico, &gc_conf);
            assert_eq!(code, 0, "{out}");
            assert!(link_exists(&ia), "the valid sandbox keeps its interface");
            assert!(
                !link_exists(&ib) && !link_exists(&ic),
                "stale interfaces stay"
            );
            for cid in ["cb", "cc", "cd"] {
                assert!(
                    ipam.ips_by_handle(&pod_handle(cid))
                        .await
                        .unwrap()
                        .is_empty(),
                    "{cid} still holds addresses"
                );
            }
            assert_eq!(
                ipam.ips_by_handle(&pod_handle("ca")).await.unwrap().len(),
                1
            );
            // pod-a still works.
            assert!(
                _pods[0]
                    .exec("ping", &["-c", "1", "-W", "2", "10.0.0.1"])
                    .is_ok()
            );
            // Once more: nothing left to collect, still fine.
            let (code, out) = gc(&calico, &gc_conf);
            assert_eq!(code, 0, "{out}");
            let log = std::fs::read_to_string(d.log("felix")).unwrap();
            assert_eq!(
                log.matches("CNI GC: collected a sandbox").count(),
                3,
                "{log}"
            );
        });
    })
    .unwrap();
}
