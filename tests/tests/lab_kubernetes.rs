//! `calico-lab --datastore kubernetes`, driven as a user drives it: the
//! demo on a real kube-apiserver; an `up` killed while the API server
//! starts, then `up`, `status`, `exec ... kubectl`; calico-node's identity
//! (its ServiceAccount's token, refused outside the shipped ClusterRole);
//! the API server stopped under traffic; `down` leaving nothing.
//!
//! The Kubernetes binaries come from `CALICO_K8S_BIN` (scripts/k8s-build.sh).
//! The tests share the machine's two cores with a dozen daemons each, so
//! they run one at a time.
#![allow(clippy::unwrap_used)]

use std::process::{Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lab::cluster::state::{self, lab_dir};
use tests::agent::{
    LabDown, build_node_binaries, calico_lab_command, lab_name, lab_namespaces as namespaces,
    run_lab as run,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// Builds the node binaries and calico-lab, and checks the Kubernetes
/// binaries are there (`calico-lab` reads `CALICO_K8S_BIN` itself).
fn build_all() {
    tests::kube::bin_dir().unwrap();
    build_node_binaries(true).unwrap();
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Live processes whose command line or environment names the lab's
/// directory (everything `up` starts: etcd, the API server and its
/// controller-manager by their certificate paths, calico-node by its run
/// directory).
fn lab_processes(name: &str) -> Vec<String> {
    let needle = lab_dir(name).display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<i32>().is_ok())
        .filter(|e| lab::process_alive(e.file_name().to_string_lossy().parse().unwrap()))
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
            let hit = [&cmdline, &environ]
                .iter()
                .any(|b| String::from_utf8_lossy(b).contains(&needle));
            hit.then(|| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        })
        .collect()
}

fn mounts_of(name: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("/{name}-")) || l.contains(&format!("/{name}/")))
        .map(str::to_string)
        .collect()
}

/// Nothing of lab `name` is left: no namespace, process, mount or
/// directory.
fn assert_gone(name: &str) {
    assert!(namespaces(name).is_empty(), "{:?}", namespaces(name));
    assert!(!lab_dir(name).exists());
    // Killed processes are reaped by init a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lab_processes(name).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lab_processes(name).is_empty(), "{:?}", lab_processes(name));
    assert!(mounts_of(name).is_empty(), "{:?}", mounts_of(name));
}

#[test]
fn demo_on_a_real_api_server_passes_and_leaves_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    build_all();
    let name = lab_name("kdemo");
    let _down = LabDown(name.clone());
    let out = run(&name, &["demo", "--datastore", "kubernetes", "--pairs"]);
    let text = stdout(&out);
    assert!(out.status.success(), "demo failed");
    assert!(text.contains("demo PASSED"));
    assert!(
        text.contains("kube-apiserver is ready at https://"),
        "{text}"
    );

    // The same pod network as on etcd: 30 ordered pairs, every one reached
    // over the path CrossSubnet asks for; the ToR and the mesh up.
    let pairs: Vec<&str> = text.lines().filter(|l| l.starts_with("pair ")).collect();
    assert_eq!(pairs.len(), 30, "{text}");
    assert!(pairs.iter().all(|l| l.contains(" reached ")), "{text}");
    assert_eq!(text.matches("| node specific     | up    |").count(), 3);
    assert_eq!(text.matches("| node-to-node mesh | up    |").count(), 6);
    assert_eq!(text.matches("(masqueraded to the node: ok)").count(), 3);
    // The demo's policy: the web pod reaches the db pod, the two others
    // are denied, and deleting the policy lets them through again.
    for line in [
        "pod-1-0 -> pod-0-0 (role=web, over IP-in-IP): reached (should be allowed: ok)",
        "pod-0-1 -> pod-0-0 (no role, same node): no answer (should be denied: ok)",
        "pod-2-0 -> pod-0-0 (no role, direct): no answer (should be denied: ok)",
        "policy deleted: pod-2-0 -> pod-0-0 reached again (ok)",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }

    // What the API server holds: the Nodes with their InternalIPs, the
    // Pods bound to them, the pool calico-node made, one affinity per node.
    for ip in ["172.30.0.1", "172.30.1.1", "172.30.0.2"] {
        assert!(text.contains(ip), "{text}");
    }
    let pods: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("pod-") && l.contains(" Running "))
        .collect();
    assert_eq!(pods.len(), 6, "{text}");
    for p in &pods {
        let node = format!("node-{}", &p[4..5]);
        assert!(p.contains(&node), "{p}");
    }
    // felix annotated each Pod with its address at the ADD (through the
    // status subresource, with calico-node's own ServiceAccount): the same
    // address kubelet's status reports.
    let annotated: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("pod-") && l.trim_end().ends_with("/32"))
        .collect();
    assert_eq!(annotated.len(), 6, "{text}");
    for a in &annotated {
        let mut cols = a.split_whitespace();
        let (pod, ips) = (cols.next().unwrap(), cols.next().unwrap());
        let ip = ips.trim_end_matches("/32");
        assert!(
            pods.iter()
                .any(|p| p.starts_with(&format!("{pod} ")) && p.contains(&format!(" {ip} "))),
            "{pod}'s annotation {ips} is not its status address:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("default-ipv4-ippool") && l.contains("10.65.0.0/16")),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("node-") && l.contains("-26 "))
            .count(),
        3,
        "{text}"
    );
    // calico-node's identity, from its own kubeconfig.
    assert!(
        text.contains(
            "system:serviceaccount:kube-system:calico-node (the DaemonSet's ServiceAccount, not the admin: ok)"
        ),
        "{text}"
    );
    assert!(text.contains("may it create Secrets? no"), "{text}");
    assert_gone(&name);
}

#[test]
fn kubernetes_lab_up_after_a_killed_up_exec_kubectl_identity_outage_and_down() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    build_all();
    let name = lab_name("kube");
    let _down = LabDown(name.clone());
    let args = [
        "up",
        "--datastore",
        "kubernetes",
        "--nodes",
        "3",
        "--pods-per-node",
        "1",
    ];

    // An `up` killed while its API server starts (the moment the state
    // file records the server's pid, it cannot be ready yet).
    let mut first = calico_lab_command(&name, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let apiserver_started = || {
        matches!(state::load(&name), Ok(Some(s))
            if s.kube.as_ref().is_some_and(|k| k.apiserver_pid.is_some()))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !apiserver_started() {
        assert!(
            Instant::now() < deadline,
            "the first up never started the API server"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first up ended before the API server started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let killed = state::load(&name).unwrap().unwrap();
    assert!(!killed.complete);
    assert!(
        namespaces(&name).iter().any(|n| n.ends_with("-apiserver")),
        "{:?}",
        namespaces(&name)
    );
    assert!(
        lab_processes(&name)
            .iter()
            .any(|p| p.contains("kube-apiserver")),
        "the killed up left no API server to clean up: {:?}",
        lab_processes(&name)
    );

    // A second up removes all of it and builds the lab.
    let started = Instant::now();
    let out = run(&name, &args);
    assert!(out.status.success());
    assert!(stdout(&out).contains("removing what an interrupted"));
    println!("Kubernetes-mode lab up in {:?}", started.elapsed());
    let st = state::load(&name).unwrap().unwrap();
    let kube = st
        .kube
        .clone()
        .expect("a Kubernetes-mode lab records its API server");

    let status = stdout(&run(&name, &["status"]));
    assert!(
        status.contains("datastore kubernetes (https://"),
        "{status}"
    );
    assert!(
        status.contains("calico-node runs as system:serviceaccount:kube-system:calico-node"),
        "{status}"
    );
    assert_eq!(status.matches("running (pid").count(), 5, "{status}");

    // kubectl from a node, as the admin that `exec` sets up.
    let pools = run(
        &name,
        &[
            "exec", "node-0", "--", "kubectl", "get", "ippools", "-o", "wide",
        ],
    );
    assert!(pools.status.success());
    let pools = stdout(&pools);
    let row = pools
        .lines()
        .find(|l| l.starts_with("default-ipv4-ippool"))
        .unwrap_or_else(|| panic!("{pools}"));
    assert!(
        row.contains("10.65.0.0/16") && row.contains("CrossSubnet"),
        "{row}"
    );
    let pods = stdout(&run(
        &name,
        &[
            "exec", "node-1", "--", "kubectl", "get", "pods", "-o", "wide",
        ],
    ));
    for k in 0..3 {
        assert!(
            pods.lines()
                .any(|l| l.starts_with(&format!("pod-{k}-0 ")) && l.contains(&format!("node-{k}"))),
            "{pods}"
        );
    }

    // calico-node runs with its ServiceAccount's token, not the admin's.
    let node = &st.nodes[0];
    let kubeconfig = std::fs::read_to_string(node.kubeconfig()).unwrap();
    let admin_tokens = std::fs::read_to_string(kube.control_plane.dir.join("tokens.csv")).unwrap();
    let admin_token = admin_tokens.split(',').next().unwrap();
    assert!(!kubeconfig.contains(admin_token));
    let environ = std::fs::read(format!("/proc/{}/environ", node.pid.unwrap())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains(&format!("KUBECONFIG={}", node.kubeconfig().display())),
        "{environ}"
    );
    let kc = node.kubeconfig().display().to_string();
    let as_node = |args: &[&str]| {
        let mut full = vec![
            "exec",
            "node-0",
            "--",
            "kubectl",
            "--kubeconfig",
            kc.as_str(),
        ];
        full.extend_from_slice(args);
        run(&name, &full)
    };
    let who = as_node(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        stdout(&who).trim(),
        "system:serviceaccount:kube-system:calico-node"
    );
    // Writes outside the ClusterRole are refused by the server (403):
    // creating a Secret, deleting a Node.
    for refused in [
        &[
            "-v=6",
            "create",
            "secret",
            "generic",
            "lab-probe",
            "-n",
            "kube-system",
            "--from-literal=a=b",
        ][..],
        &["-v=6", "delete", "node", "node-1"][..],
    ] {
        let out = as_node(refused);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{refused:?} was allowed");
        assert!(err.contains("status=\"403 Forbidden\""), "{err}");
        assert!(
            err.contains("User \"system:serviceaccount:kube-system:calico-node\" cannot"),
            "{err}"
        );
    }
    let node1 = run(
        &name,
        &["exec", "node-0", "--", "kubectl", "get", "node", "node-1"],
    );
    assert!(node1.status.success(), "node-1 was deleted");
    // ... and nothing calico-node does needs more than the ClusterRole.
    for n in &st.nodes {
        let log =
            std::fs::read_to_string(lab_dir(&name).join(format!("logs/{}.log", n.name))).unwrap();
        assert!(!log.contains("refused to"), "{}: {log}", n.name);
    }

    // The API server stopped under traffic (short: tests/tests/chaos.rs's
    // etcd case is the model; scripts/chaos.sh runs 60 s).
    let out = run(&name, &["chaos", "apiserver", "--seconds", "8"]);
    let t = stdout(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("CNI error code 11 (try again later)"), "{t}");
    assert!(t.contains("interfaces left in the pod namespace: 0"), "{t}");
    assert!(t.contains("(k8s-pod-network.lab-pod-0-99): 0"), "{t}");
    assert!(t.contains("pod adds work again on every node"), "{t}");
    assert!(t.contains(" 0 of ") && t.contains("pings lost"), "{t}");
    assert!(t.contains("apiserver outage: PASS"), "{t}");
    assert!(run(&name, &["check"]).status.success());

    // The API server started again is the one recorded, and down ends it.
    let st = state::load(&name).unwrap().unwrap();
    let kube = st.kube.clone().unwrap();
    let recorded: Vec<i32> = [kube.apiserver_pid, kube.controller_manager_pid, st.etcd_pid]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(recorded.len(), 3);
    assert!(
        recorded.iter().all(|p| lab::process_alive(*p)),
        "{recorded:?}"
    );
    assert!(run(&name, &["down"]).status.success());
    assert_gone(&name);
    for pid in recorded {
        assert!(!lab::process_alive(pid), "process {pid} survived down");
    }
}
