//! Issue 16, stage 1: the shipped manifests on a real kubelet.
//! `scripts/e2e-k8s.sh run` builds the calico-rs image from the binaries
//! of this test's profile (scripts/oci-image.sh), starts a control plane and one node
//! (its own containerd and kubelet in a node network namespace), applies
//! deploy/crds.yaml and deploy/calico-node.yaml with only the image name
//! substituted, checks install-cni, the probes, a pod's address from the
//! pool and its release, the API server reached through the
//! kubernetes-services-endpoint ConfigMap, a liveness restart, and tears
//! everything down. This test asserts every check's success line, and
//! afterwards that nothing is left and kubelet's host-global sysctls are
//! what they were.
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
/// takes two and a half minutes by itself, down; 3.5 minutes on a quiet
/// machine) must finish within this. The build of the binaries comes
/// before, not timed.
const LIMIT: Duration = Duration::from_secs(10 * 60);
const PREFIX: &str = "calico-e2e";
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
                .filter(|n| n.starts_with(PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

/// Live processes whose command line names the e2e's state or run
/// directory (etcd, the API server, containerd, kubelet, shims).
fn processes_left() -> Vec<String> {
    let needles = [format!("/var/lib/{PREFIX}"), format!("/run/{PREFIX}")];
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
        .filter(|l| l.contains(PREFIX))
        .map(str::to_string)
        .collect()
}

fn cgroups_left() -> Vec<String> {
    let mut left = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        if let Ok(d) = std::fs::read_dir(h.path()) {
            for e in d.flatten() {
                if e.file_name().to_string_lossy().starts_with(PREFIX) {
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
fn stage1_the_daemonset_on_a_real_kubelet() {
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

    // Every stage-1 check said it passed.
    for line in [
        "e2e: ok: calico-e2e-node1: install-cni installed /opt/cni/bin/calico (the image's, sha256 ",
        "e2e: ok: calico-e2e-node1: calico-node pod calico-node-",
        "(readiness probe 127.0.0.1:9099/readiness says 'ok';",
        "e2e: ok: calico-e2e-node1: calico-node reached the API server at 10.251.0.1:6443 from the kubernetes-services-endpoint ConfigMap",
        "e2e: ok: pod e2e-busybox Running on calico-e2e-node1 with 192.168.",
        "e2e: ok: kubectl delete pod released 192.168.",
        "e2e: ok: calico-e2e-node1: liveness: felix made unable to restart -> /liveness 'felix has been down for over 60s",
        "-> kubelet restarted calico-node (restartCount 0 -> 1) -> Ready again",
        "e2e: ok: host sysctls as before kubelet started",
        "e2e: all stage 1 checks passed",
        "check: nothing of the e2e is left",
        "e2e: run passed",
    ] {
        assert!(text.contains(line), "no {line:?} in the output");
    }
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
    for d in [format!("/var/lib/{PREFIX}"), format!("/run/{PREFIX}")] {
        assert!(!Path::new(&d).exists(), "{d} is left");
    }
    assert_eq!(sysctls(), before, "kubelet's host-global sysctls changed");
}
