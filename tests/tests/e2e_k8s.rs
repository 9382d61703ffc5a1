//! Issue 16, stages 1-3: the shipped manifests on real kubelets.
//! `scripts/e2e-k8s.sh run` builds the calico-rs image from the binaries
//! of this test's profile (scripts/oci-image.sh), starts a control plane, a
//! BIRD 2 ToR in the router between two subnets, and three nodes (two on
//! one subnet, one on the other; each its own containerd and kubelet in a
//! node network namespace), applies deploy/crds.yaml and
//! deploy/calico-node.yaml with only the image name substituted, and checks:
//! install-cni, the probes, a pod's address from the pool and its release,
//! the API server reached through the kubernetes-services-endpoint
//! ConfigMap, a liveness restart (stage 1); pod-to-pod paths (direct within
//! a subnet, IPIP across), the ToR's sessions, pings through a rollout
//! restart and an image change, a drain with IPAM checked (stage 2);
//! kube-proxy, a ClusterIP Service from the third node's pod, a NodePort
//! from the router (stage 3). Then it tears everything down. This test
//! asserts every check's success line, and afterwards that nothing is left
//! and kubelet's host-global sysctls are what they were.
//!
//! Needs root and Debian's containerd, runc, containernetworking-plugins
//! and busybox-static (`CALICO_E2E_DEPS=1 scripts/install-deps.sh`, which
//! the script runs). The Kubernetes binaries come from `CALICO_K8S_BIN`, or
//! the script builds them with scripts/k8s-build.sh.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole run (image build, up, the checks, the liveness restart that
/// takes two and a half minutes by itself, two rollouts over three nodes,
/// down) must finish within this. The build of the binaries comes before,
/// not timed.
const LIMIT: Duration = Duration::from_secs(20 * 60);

/// The names of everything the run creates start with this
/// (`CALICO_E2E_PREFIX`, passed on to the script; default `calico-e2e`).
fn prefix() -> String {
    std::env::var("CALICO_E2E_PREFIX").unwrap_or_else(|_| "calico-e2e".to_string())
}
const SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn script() -> PathBuf {
    repo().join("scripts/e2e-k8s.sh")
}

fn sysctls() -> Vec<(String, String)> {
    SYSCTLS
        .iter()
        .map(|s| {
            let v = std::fs::read_to_string(Path::new("/proc/sys").join(s))
                .unwrap_or_default()
                .trim()
                .to_string();
            (s.to_string(), v)
        })
        .collect()
}

fn netns_left() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{}-", prefix())))
                .collect()
        })
        .unwrap_or_default()
}

/// Live processes whose command line names the e2e's state or run
/// directory (etcd, the API server, containerd, kubelet, shims).
fn processes_left() -> Vec<String> {
    let needles = [
        format!("/var/lib/{}", prefix()),
        format!("/run/{}", prefix()),
    ];
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            if status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
            {
                return None; // a zombie waiting for its reaper
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            needles
                .iter()
                .any(|n| cmdline.contains(n.as_str()))
                .then_some(cmdline)
        })
        .collect()
}

fn mounts_left() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&prefix()))
        .map(str::to_string)
        .collect()
}

fn cgroups_left() -> Vec<String> {
    let mut left = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        if let Ok(d) = std::fs::read_dir(h.path()) {
            for e in d.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{}-", prefix()))
                {
                    left.push(e.path().display().to_string());
                }
            }
        }
    }
    left
}

/// What the test needs from the machine, as one message if it is missing.
fn preconditions() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("e2e_k8s needs root (network namespaces, mounts, cgroups, containerd)".into());
    }
    for (file, pkg) in [
        ("/usr/bin/containerd", "containerd"),
        ("/usr/sbin/runc", "runc"),
        ("/usr/lib/cni/portmap", "containernetworking-plugins"),
        ("/bin/busybox", "busybox-static"),
        ("/usr/sbin/bird", "bird2"),
        ("/usr/sbin/iptables", "iptables"),
    ] {
        if !Path::new(file).exists() {
            return Err(format!(
                "e2e_k8s needs {file}: run CALICO_E2E_DEPS=1 scripts/install-deps.sh (installs {pkg})"
            ));
        }
    }
    Ok(())
}

#[test]
fn stages_1_to_3_the_daemonset_on_real_kubelets() {
    if let Err(e) = preconditions() {
        panic!("{e}");
    }
    assert!(
        netns_left().is_empty(),
        "a previous e2e run is still up ({:?}): run scripts/e2e-k8s.sh down",
        netns_left()
    );
    // The binaries the image is made of, in the profile of this test run
    // (the suite builds them anyway; a debug calico-node behaves as a
    // release one, and the image builder strips them).
    let bins = tests::agent::build_many(&tests::agent::NODE_BINARIES).unwrap();
    let bin_dir = bins[0].parent().unwrap().to_path_buf();
    let before = sysctls();
    let mut out = tempfile::tempfile().unwrap();
    let mut cmd = Command::new(script());
    cmd.arg("run")
        .env("CALICO_E2E_BIN", &bin_dir)
        .env("CALICO_E2E_NODES", "3")
        .env("CALICO_E2E_PREFIX", prefix())
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out.try_clone().unwrap())
        // Its own process group, so a timeout kills all of it.
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > LIMIT {
            // SAFETY: kill(2) of the process group we created.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
            let _ = Command::new(script())
                .arg("down")
                .env("CALICO_E2E_PREFIX", prefix())
                .current_dir(repo())
                .stdin(Stdio::null())
                .output();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut text = String::new();
    use std::io::Seek;
    out.rewind().unwrap();
    out.read_to_string(&mut text).unwrap();
    eprintln!("{text}");
    let status = status.unwrap_or_else(|| {
        panic!(
            "scripts/e2e-k8s.sh run did not finish within {}s (killed, then down)",
            LIMIT.as_secs()
        )
    });
    assert!(status.success(), "scripts/e2e-k8s.sh run failed: {status}");

    // Every check of stages 1-3 said it passed.
    let p = prefix();
    let mut lines = Vec::new();
    for n in 1..=3 {
        lines.extend([
            format!("e2e: ok: {p}-node{n}: install-cni installed /opt/cni/bin/calico (the image's, sha256 "),
            format!("e2e: ok: {p}-node{n}: calico-node pod calico-node-"),
            format!("e2e: ok: {p}-node{n}: calico-node reached the API server at 10.251.0.1:6443 from the kubernetes-services-endpoint ConfigMap"),
            format!("e2e: ok: pod e2e-busybox Running on {p}-node{n} with 192.168."),
        ]);
    }
    lines.extend([
        "(readiness probe 127.0.0.1:9099/readiness says 'ok';".to_string(),
        "e2e: ok: kubectl delete pod released 192.168.".to_string(),
        format!("e2e: ok: {p}-node1: liveness: felix made unable to restart -> /liveness 'felix has been down for over 60s"),
        "-> kubelet restarted calico-node (restartCount 0 -> 1) -> Ready again".to_string(),
        "e2e: ok: host sysctls as before kubelet started".to_string(),
        "e2e: all stage 1 checks passed".to_string(),
    ]);
    // Stage 2: the paths (node 1 and 2 share a subnet, node 3 is across).
    for (a, b, path) in [
        (1, 2, "direct"),
        (2, 1, "direct"),
        (1, 3, "tunnelled"),
        (3, 1, "tunnelled"),
        (2, 3, "tunnelled"),
        (3, 2, "tunnelled"),
    ] {
        lines.push(format!("e2e: ok: e2e-p{a} -> e2e-p{b} (192.168."));
        let dev = if path == "direct" { "eth0" } else { "tunl0" };
        let needle = format!("e2e-p{a} -> e2e-p{b} (");
        let line = text
            .lines()
            .find(|l| l.starts_with("e2e: ok: ") && l.contains(&needle))
            .unwrap_or_else(|| panic!("no ok line for {needle}"));
        assert!(
            line.contains(&format!("): {path}: route on {p}-node{a} "))
                && line.contains(&format!(" dev {dev} "))
                && line.contains("2 of 2 pings answered"),
            "{line}"
        );
    }
    lines.extend([
        "e2e: ok: ToR (BIRD 2, AS 64513): 3 sessions Established".to_string(),
        "e2e: ok: kubectl rollout restart daemonset/calico-node: 0 direct pings lost".to_string(),
        "e2e: ok: kubectl set image daemonset/calico-node localhost/calico-rs:e2e-retag"
            .to_string(),
        "e2e: pings during restart: direct e2e-p1->e2e-p2 lost 0 of ".to_string(),
        "e2e: pings during image: direct e2e-p1->e2e-p2 lost 0 of ".to_string(),
        format!("e2e: ok: kubectl drain {p}-node3 evicted e2e-p3 and released 192.168."),
        "e2e: all stage 2 checks passed".to_string(),
        // Stage 3.
        "e2e: ok: kube-proxy on every node, healthy".to_string(),
        format!("(endpoints on {p}-node1 and {p}-node2) from e2e-p3 on {p}-node3: "),
        " requests answered by e2e-w1 x".to_string(),
        "e2e: ok: the kubernetes Service 10.96.0.1:443 answers from e2e-p3".to_string(),
        // Service advertisement to the ToR.
        "e2e: ok: service ranges 10.96.0.0/16 and 198.51.100.0/24 advertised to the ToR by every node (10.251.1.2 10.251.1.3 10.251.2.4 ); ClusterIP 10.96.".to_string(),
        format!("e2e: ok: LoadBalancer 198.51.100.80 (externalTrafficPolicy Local) advertised as /32 by {p}-node1 and {p}-node2 only (10.251.1.2 10.251.1.3 ); from the router namespace: answered by e2e-w"),
        format!("e2e: ok: the only endpoint of e2e-solo moved to {p}-node3: 198.51.100.81/32 at the ToR via {p}-node3 alone "),
        "e2e: all stage 3 checks passed".to_string(),
        "check: nothing of the e2e is left".to_string(),
        "e2e: run passed".to_string(),
    ]);
    for n in 1..=3 {
        lines.push("e2e: ok: NodePort 10.251.".to_string());
        lines.push(format!(
            "({p}-node{n}) from the router namespace: answered by e2e-w"
        ));
    }
    for line in &lines {
        assert!(text.contains(line.as_str()), "no {line:?} in the output");
    }
    // kube-proxy ran in iptables mode; the IPVS attempt was reported either way.
    assert!(
        text.contains(&format!(
            " {p}-node1:iptables {p}-node2:iptables {p}-node3:iptables"
        )),
        "kube-proxy's mode is not iptables everywhere"
    );
    assert!(
        text.contains("e2e: IPVS mode ran") || text.contains("e2e: IPVS mode unavailable: "),
        "no IPVS report"
    );
    assert!(!text.contains("e2e: FAIL"), "a check failed");
    // The README's output: calico-node status ran inside the pod.
    assert!(
        text.contains("calico-node status") && text.contains("default-ipv4-ippool"),
        "no README output"
    );

    // Nothing is left. Killed processes are reaped a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_left().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(processes_left().is_empty(), "{:?}", processes_left());
    assert!(netns_left().is_empty(), "{:?}", netns_left());
    assert!(mounts_left().is_empty(), "{:?}", mounts_left());
    assert!(cgroups_left().is_empty(), "{:?}", cgroups_left());
    for d in [format!("/var/lib/{p}"), format!("/run/{p}")] {
        assert!(!Path::new(&d).exists(), "{d} is left");
    }
    assert_eq!(sysctls(), before, "kubelet's host-global sysctls changed");
}
