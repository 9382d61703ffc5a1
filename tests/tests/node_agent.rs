//! One node agent end to end: real etcd, the real `confd` and `felix`
//! binaries, and the real CNI plugin (`calico`) invoked the way kubelet
//! invokes it, all inside a lab network namespace that plays the node.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use datastore::ipam::{Ipam, pod_handle};
use ippool_crd::IPPool;
use lab::Netns;
use lab::cni::{CniCall, CniOut};
use serde_json::json;
use tests::EtcdServer;
use tests::agent::{AgentDirs, build_many, spawn_confd, spawn_felix};

fn cni(bin: &Path, cmd: &str, container: &str, netns: &Path, pod: &str, conf: &str) -> CniOut {
    lab::cni::invoke(&CniCall {
        plugin: bin,
        command: cmd,
        container,
        netns,
        namespace: "default",
        pod,
        config: conf,
        node_ns: None,
    })
    .unwrap()
}

/// Whether `pod` gets an answer from `target` within 3 s (echoes every
/// 0.2 s until one is answered).
fn pings(pod: &Netns, target: &str) -> bool {
    pod.exec("ping", &["-c", "1", "-i", "0.2", "-w", "3", target])
        .is_ok()
}

/// Whether the very first echo `pod` sends to `target` is answered (within
/// 1 s): an ADD returns only once felix's policy dataplane has the new
/// interface (an unknown one's traffic is dropped, as in Calico), so a pod
/// is reachable from its first packet.
fn first_echo(pod: &Netns, target: &str) -> bool {
    pod.exec("ping", &["-c", "1", "-W", "1", target]).is_ok()
}

#[test]
fn one_node_agent_wires_pods_through_the_real_cni_plugin() {
    tests::init_tracing();
    let built = build_many(&[("felix", "felix"), ("confd", "confd"), ("cni", "calico")]).unwrap();
    let [felix, confd, calico] = <[_; 3]>::try_from(built).unwrap();
    let (node, _gw) = tests::agent::node_with_uplink("agent", "gw").unwrap();
    let pod_a = Netns::create("poda").unwrap();
    let pod_b = Netns::create("podb").unwrap();
    let pod_a2 = Netns::create("poda2").unwrap();
    let (a_path, b_path, a2_path) = (pod_a.path(), pod_b.path(), pod_a2.path());
    let pods = (pod_a, pod_b, pod_a2);

    // Everything below runs with the node namespace as its network: the
    // thread entered it, and every child process it forks inherits it.
    node.run(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (pod_a, pod_b, pod_a2) = pods;
            let tmp = tempfile::tempdir().unwrap();
            let d = AgentDirs {
                dir: tmp.path().to_path_buf(),
            };
            let felix_args = ["--grace-period", "1"];
            let etcd = EtcdServer::start().unwrap();
            let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
            tests::agent::register_uplink_node(&c).await.unwrap();

            let mut felix_proc =
                spawn_felix(&felix, &d, "node-1", &etcd.endpoint(), &felix_args).unwrap();
            let _confd = spawn_confd(&confd, &d, "node-1", &etcd.endpoint()).unwrap();
            let conf = lab::cni::network_config(&d.felix_socket());

            // Before any pool exists, an ADD is a clear IPAM error and
            // leaves nothing behind.
            let deadline = Instant::now() + Duration::from_secs(20);
            let early = loop {
                let o = cni(&calico, "ADD", "c0", &a_path, "early", &conf);
                // 104 / 11: felix not up or not configured yet.
                if ![104, 11].contains(&o.json["code"].as_u64().unwrap_or(0))
                    || Instant::now() > deadline
                {
                    break o;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert_eq!(early.json["code"], 101, "{}", early.json);
            assert!(
                early.json["details"].as_str().unwrap().contains("pool"),
                "{}",
                early.json
            );

            // Creating an IPPool makes confd push it; then ADD works.
            let pool: IPPool = serde_json::from_value(json!({
                "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                "metadata": {"name": "p"}, "spec": {"cidr": "10.65.0.0/16"},
            }))
            .unwrap();
            c.create(&pool).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let a = loop {
                let o = cni(&calico, "ADD", "ca", &a_path, "pod-a", &conf);
                if o.code == 0 || Instant::now() > deadline {
                    break o;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert_eq!(a.code, 0, "{}", a.json);
            let ip_a = a.json["ips"][0]["address"].as_str().unwrap().to_string();
            assert!(ip_a.starts_with("10.65."), "{ip_a}");
            assert_eq!(a.json["interfaces"][1]["name"], "eth0");
            let b = cni(&calico, "ADD", "cb", &b_path, "pod-b", &conf);
            assert_eq!(b.code, 0, "{}", b.json);
            let ip_b = b.json["ips"][0]["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string();

            // The pods reach the node and each other.
            assert!(first_echo(&pod_a, "10.0.0.1"), "pod-a -> node");
            let ip_a_addr = ip_a.split('/').next().unwrap();
            assert!(first_echo(&pod_b, ip_a_addr), "pod-b -> pod-a");
            assert!(pings(&pod_a, &ip_b), "pod-a -> pod-b");

            // CHECK passes on a healthy pod and reports a broken one.
            assert_eq!(cni(&calico, "CHECK", "ca", &a_path, "pod-a", &conf).code, 0);

            // felix is killed (SIGKILL) and comes back: the pods keep
            // their routes, even past the 1 s grace period.
            felix_proc.0.kill().unwrap();
            let _ = felix_proc.0.wait();
            assert!(pings(&pod_a, &ip_b), "routes stay while felix is down");
            drop(felix_proc);
            let _felix2 = spawn_felix(&felix, &d, "node-1", &etcd.endpoint(), &felix_args).unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert!(pings(&pod_a, &ip_b), "pod-a -> pod-b after felix restarted");
            assert!(
                pings(&pod_b, "10.0.0.1"),
                "pod-b -> node after felix restarted"
            );
            let log = std::fs::read_to_string(d.log("felix")).unwrap();
            assert!(log.contains("restored=2"), "{log}");

            // Break pod-b: its host interface disappears.
            let iface = b.json["interfaces"][0]["name"]
                .as_str()
                .unwrap()
                .to_string();
            let st = Command::new("ip")
                .args(["link", "del", &iface])
                .status()
                .unwrap();
            assert!(st.success());
            let chk = cni(&calico, "CHECK", "cb", &b_path, "pod-b", &conf);
            assert_eq!(chk.json["code"], 103, "{}", chk.json);
            assert!(
                chk.json["details"].as_str().unwrap().contains(&iface),
                "{}",
                chk.json
            );

            // DEL removes pod-a's interface and frees its address; a second
            // DEL is fine.
            assert_eq!(cni(&calico, "DEL", "ca", &a_path, "pod-a", &conf).code, 0);
            assert_eq!(cni(&calico, "DEL", "ca", &a_path, "pod-a", &conf).code, 0);
            assert_eq!(cni(&calico, "DEL", "cb", &b_path, "pod-b", &conf).code, 0);
            assert!(!pings(&pod_a, "10.0.0.1"));

            // pod-a made again under the same name in a new sandbox (as
            // after a drain), then a late DEL of its first sandbox (the
            // runtime repeats DEL): the new sandbox keeps its interface,
            // which has the same name, and its address.
            let a2 = cni(&calico, "ADD", "ca2", &a2_path, "pod-a", &conf);
            assert_eq!(a2.code, 0, "{}", a2.json);
            assert!(first_echo(&pod_a2, "10.0.0.1"), "pod-a again -> node");
            assert_eq!(cni(&calico, "DEL", "ca", &a_path, "pod-a", &conf).code, 0);
            assert!(
                pings(&pod_a2, "10.0.0.1"),
                "a late DEL of pod-a's first sandbox took down its second"
            );
            let log = std::fs::read_to_string(d.log("felix")).unwrap();
            assert!(log.contains("another sandbox has this pod now"), "{log}");

            // A third sandbox for pod-a while the second still holds it (its
            // DEL has not come yet): the second's address is released at
            // once and its record forgotten; its late DEL changes nothing.
            let ipam = Ipam::new(c.clone());
            let held = |id: &str| {
                let (ipam, id) = (ipam.clone(), id.to_string());
                async move { ipam.ips_by_handle(&pod_handle(&id)).await.unwrap() }
            };
            assert_eq!(held("ca2").await.len(), 1);
            let a3 = cni(&calico, "ADD", "ca3", &a_path, "pod-a", &conf);
            assert_eq!(a3.code, 0, "{}", a3.json);
            assert!(
                held("ca2").await.is_empty(),
                "the replaced sandbox's address leaked"
            );
            assert_eq!(held("ca3").await.len(), 1);
            assert!(!d.state_dir().join("workloads").join("ca2.json").exists());
            assert!(
                first_echo(&pod_a, "10.0.0.1"),
                "pod-a's third sandbox -> node"
            );
            assert_eq!(cni(&calico, "DEL", "ca2", &a2_path, "pod-a", &conf).code, 0);
            assert!(
                pings(&pod_a, "10.0.0.1"),
                "a late DEL of a replaced sandbox took down the pod"
            );
            assert_eq!(held("ca3").await.len(), 1);
            assert_eq!(cni(&calico, "DEL", "ca3", &a_path, "pod-a", &conf).code, 0);
            assert!(!pings(&pod_a, "10.0.0.1"));
            let audit = ipam.audit().await.unwrap();
            assert!(audit.problems.is_empty(), "{:?}", audit.problems);
            assert!(audit.allocations.is_empty(), "{:?}", audit.allocations);
            let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
            assert!(
                !String::from_utf8_lossy(&links.stdout).contains("cali"),
                "no veth leaked"
            );

            // felix cannot record a pod (its state directory broke): the
            // ADD fails whole — no interface, no address — instead of
            // making a pod a restarted felix would not know; once the
            // directory is back, ADD works.
            let records = d.state_dir().join("workloads");
            std::fs::remove_dir(&records).unwrap();
            std::fs::write(&records, b"not a directory").unwrap();
            let o = cni(&calico, "ADD", "cr", &a_path, "pod-r", &conf);
            assert_ne!(o.code, 0, "{}", o.json);
            assert!(
                o.json["details"]
                    .as_str()
                    .unwrap()
                    .contains("cannot record the pod"),
                "{}",
                o.json
            );
            let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
            assert!(
                !String::from_utf8_lossy(&links.stdout).contains("cali"),
                "the unrecorded pod's veth stayed"
            );
            let audit = ipam.audit().await.unwrap();
            assert!(audit.allocations.is_empty(), "{:?}", audit.allocations);
            std::fs::remove_file(&records).unwrap();
            std::fs::create_dir(&records).unwrap();
            let o = cni(&calico, "ADD", "cr", &a_path, "pod-r", &conf);
            assert_eq!(o.code, 0, "{}", o.json);
            assert_eq!(cni(&calico, "DEL", "cr", &a_path, "pod-r", &conf).code, 0);

            // A netns that does not exist: a CNI error, nothing leaked.
            let gone = Path::new("/run/netns/does-not-exist-calico-rs");
            let o = cni(&calico, "ADD", "cx", gone, "pod-x", &conf);
            assert_ne!(o.code, 0);
            assert_eq!(o.json["code"], 4, "CNI_NETNS is unusable: {}", o.json);
            assert!(
                o.json["details"]
                    .as_str()
                    .unwrap()
                    .contains("does-not-exist"),
                "{}",
                o.json
            );
            let audit = ipam.audit().await.unwrap();
            assert!(
                audit.allocations.is_empty(),
                "no IP leaked: {:?}",
                audit.allocations
            );

            // The datastore goes down: ADD is a clear "try again later"
            // error naming the datastore, and leaves no interface behind.
            let mut etcd = etcd;
            etcd.kill();
            let o = cni(&calico, "ADD", "cd", &a_path, "pod-d", &conf);
            assert_ne!(o.code, 0);
            assert_eq!(o.json["code"], 11, "{}", o.json);
            let details = o.json["details"].as_str().unwrap();
            assert!(details.contains("datastore unavailable"), "{details}");
            assert!(details.contains("ETCD_ENDPOINTS"), "{details}");
            let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
            assert!(
                !String::from_utf8_lossy(&links.stdout).contains("cali"),
                "no veth leaked"
            );
            etcd.restart().unwrap();
            let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
            let audit = Ipam::new(c).audit().await.unwrap();
            assert!(
                audit.allocations.is_empty(),
                "no IP leaked: {:?}",
                audit.allocations
            );
        });
    })
    .unwrap();
}
