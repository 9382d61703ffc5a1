//! The real-kernel tier: Debian's own kernel (the one nodes run) under qemu
//! (`scripts/kernel-test.sh`), for what this machine's kernel lacks (the
//! ipip link type) and to prove the kernel tunnels on a distribution kernel.
//!
//! Each test runs twice over: on the host it boots the VM and runs itself
//! (`--exact`) in there, and passes only if that run passed; inside the
//! VM (`CALICO_KERNEL_VM` set) it does the work. One VM at a time: the
//! emulator is CPU-bound.
//!
//! - felix's IP-in-IP suite (`felix_ipip`) with the kernel's `tunl0`;
//! - felix's VXLAN suite (`felix_vxlan`) with the kernel's `vxlan.calico`;
//! - 3-node labs (etcd, calico-node) with kernel tunnels: IP-in-IP Always
//!   and CrossSubnet, VXLAN CrossSubnet with BGP and VXLAN Always without
//!   BGP (`CALICO_NETWORKING_BACKEND=vxlan`), each with the ping matrix and
//!   the path seen on the wire;
//! - a mixed lab, kernel and userspace tunnels on alternate nodes: the two
//!   backends are the same on the wire;
//! - a userspace `tunl0` in one namespace keeps the ipip module from
//!   loading on the whole kernel: felix says so, and `auto` falls back.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

use tests::agent::{build_node_binaries, calico_lab, calico_lab_command};

static ONE_VM: Mutex<()> = Mutex::new(());

fn in_vm() -> bool {
    std::env::var_os("CALICO_KERNEL_VM").is_some()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `program args` inside the VM and asserts it exited 0.
fn run_in_vm(program: &Path, args: &[&str]) {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(repo().join("scripts/kernel-test.sh"))
        .arg("--")
        .arg(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "in the VM: {} {args:?} failed",
        program.display()
    );
    assert!(text.contains("kernel-test: 6."), "no guest kernel banner");
}

/// On the host: this test binary, run with `--exact name` in the VM.
fn this_test_in_vm(name: &str) {
    build_node_binaries(true).unwrap();
    let me = std::env::current_exe().unwrap();
    run_in_vm(&me, &["--exact", name, "--nocapture", "--test-threads=1"]);
}

/// The newest built test executable named `name-<hash>` next to this one.
fn sibling_test(name: &str) -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let prefix = format!("{name}-");
    std::fs::read_dir(&deps)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&prefix) && !n.contains('.')
        })
        .max_by_key(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        })
        .map(|e| e.path())
        .unwrap_or_else(|| {
            panic!(
                "no {name} test binary in {}: build the tests first",
                deps.display()
            )
        })
}

#[test]
fn vm_felix_ipip_suite_passes_with_the_kernels_tunl0() {
    // felix_ipip's cluster asserts that `auto` found the kernel backend
    // when CALICO_KERNEL_VM is set.
    let suite = sibling_test("felix_ipip");
    run_in_vm(&suite, &["--test-threads=1"]);
}

#[test]
fn vm_felix_vxlan_suite_passes_with_the_kernels_vxlan() {
    // felix_vxlan asserts the kernel has vxlan when CALICO_KERNEL_VM is
    // set, so its tests cannot take the no-vxlan path in here.
    let suite = sibling_test("felix_vxlan");
    run_in_vm(&suite, &["--test-threads=1"]);
}

/// Removes the lab even when an assertion fails half-way.
struct Down(String);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = calico_lab_command(&self.0, &["down"]).output();
    }
}

fn node_exec(lab: &str, node: usize, cmd: &[&str]) -> String {
    let mut args = vec!["exec".to_string(), format!("node-{node}"), "--".to_string()];
    args.extend(cmd.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = calico_lab(lab, &args).unwrap();
    assert!(out.status.success(), "{cmd:?} on node-{node}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Brings up a 3-node lab (node-0 and node-2 on subnet 0, node-1 alone on
/// subnet 1) with `ipip` and per-node `backends`, checks each node's
/// tunnel device is of the kind asked for, and runs the ping matrix.
/// Returns the matrix's pair lines.
fn lab_matrix(tag: &str, ipip: &str, backends: &[&str]) -> Vec<String> {
    let backend_arg = backends.join(",");
    lab_matrix_with(
        tag,
        &["--ipip", ipip, "--ipip-backend", &backend_arg],
        |name| {
            for node in 0..3 {
                let links = node_exec(name, node, &["ip", "-d", "link", "show"]);
                assert_tunnel_device(node, backends[node % backends.len()], &links);
            }
        },
    )
}

/// `calico-lab up ARGS` (3 nodes, node-1 alone on subnet 1), `check` on
/// the running lab, then the ping matrix; returns its pair lines.
fn lab_matrix_with(tag: &str, args: &[&str], check: impl Fn(&str)) -> Vec<String> {
    let name = format!("calico-lab-kt{tag}{}", std::process::id() % 10_000);
    let _down = Down(name.clone());
    let mut up = vec!["up"];
    up.extend_from_slice(args);
    let out = calico_lab(&name, &up).unwrap();
    assert!(out.status.success(), "calico-lab up failed");
    check(&name);
    matrix_pairs(&name)
}

fn assert_tunnel_device(node: usize, backend: &str, links: &str) {
    match backend {
        // The kernel's own device: `link/ipip`, named tunl0, up.
        "kernel" => assert!(
            links
                .lines()
                .any(|l| l.contains(": tunl0@NONE:") && l.contains(",UP,")),
            "node-{node}:\n{links}"
        ),
        // Loading ipip made a kernel tunl0 in every namespace, so the
        // userspace TUN device takes the fallback name.
        "userspace" => {
            assert!(links.contains(": tunl0u:"), "node-{node}:\n{links}");
            assert!(links.contains("tun type tun"), "node-{node}:\n{links}");
        }
        other => panic!("backend {other}"),
    }
}

fn matrix_pairs(name: &str) -> Vec<String> {
    let out = calico_lab(name, &["check", "--pairs"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "ping matrix failed:\n{text}");
    let pairs: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("pair "))
        .map(str::to_string)
        .collect();
    // 3 nodes, 2 pods each: 30 ordered pairs, each reached.
    assert_eq!(pairs.len(), 30, "{text}");
    assert!(pairs.iter().all(|p| p.contains(": reached ")), "{text}");
    pairs
}

/// "pair pod-0-0 -> pod-1-0: reached path=ipip expected=ipip": the two
/// nodes and the path seen.
fn pair_path(line: &str) -> (usize, usize, String) {
    let w: Vec<&str> = line.split_whitespace().collect();
    let node = |pod: &str| pod.split('-').nth(1).unwrap().parse::<usize>().unwrap();
    (
        node(w[1]),
        node(w[3].trim_end_matches(':')),
        w[5].trim_start_matches("path=").to_string(),
    )
}

#[test]
fn vm_kernel_ipip_crosssubnet_lab_tunnels_only_across_subnets() {
    if !in_vm() {
        return this_test_in_vm("vm_kernel_ipip_crosssubnet_lab_tunnels_only_across_subnets");
    }
    for line in lab_matrix("xs", "crosssubnet", &["kernel"]) {
        let (a, b, path) = pair_path(&line);
        let want = if a == b {
            "local"
        } else if a == 1 || b == 1 {
            "ipip"
        } else {
            "direct"
        };
        assert_eq!(path, want, "{line}");
    }
}

#[test]
fn vm_kernel_ipip_always_lab_tunnels_between_every_two_nodes() {
    if !in_vm() {
        return this_test_in_vm("vm_kernel_ipip_always_lab_tunnels_between_every_two_nodes");
    }
    for line in lab_matrix("al", "always", &["kernel"]) {
        let (a, b, path) = pair_path(&line);
        assert_eq!(path, if a == b { "local" } else { "ipip" }, "{line}");
    }
}

#[test]
fn vm_kernel_and_userspace_tunnels_talk_to_each_other() {
    if !in_vm() {
        return this_test_in_vm("vm_kernel_and_userspace_tunnels_talk_to_each_other");
    }
    // node-0 and node-2 kernel, node-1 userspace; Always, so node-0 and
    // node-2 (kernel to kernel) tunnel too.
    let pairs = lab_matrix("mx", "always", &["kernel", "userspace"]);
    let mut mixed = 0;
    for line in &pairs {
        let (a, b, path) = pair_path(line);
        assert_eq!(path, if a == b { "local" } else { "ipip" }, "{line}");
        if a != b && (a == 1 || b == 1) {
            mixed += 1;
        }
    }
    // 2 pods on node-1 times 4 pods elsewhere, both directions.
    assert_eq!(mixed, 16, "{pairs:?}");
}

#[test]
fn vm_a_userspace_tunl0_elsewhere_blocks_the_ipip_module_and_felix_says_so() {
    use common::felix_cluster::FelixNode;
    use felix::tunnel::{BackendChoice, BackendKind};
    if !in_vm() {
        return this_test_in_vm(
            "vm_a_userspace_tunl0_elsewhere_blocks_the_ipip_module_and_felix_says_so",
        );
    }
    // A fresh kernel: ipip is installed but not loaded yet.
    assert!(!Path::new("/sys/module/ipip").exists());
    let lab = {
        let mut l = lab::Topology::new("kblk").unwrap();
        l.add_subnet().unwrap();
        l.add_node(0).unwrap();
        l.add_node(0).unwrap();
        l
    };
    let (node, other) = (lab.node(0).unwrap(), lab.node(1).unwrap());
    // What a userspace felix on another node of this kernel makes
    // (`ip tuntap` needs /dev/net/tun, which appears with the module).
    assert!(
        Command::new("modprobe")
            .arg("tun")
            .status()
            .unwrap()
            .success()
    );
    other
        .ns
        .ip(&["tuntap", "add", "tunl0", "mode", "tun"])
        .unwrap();
    let Err(e) = FelixNode::start(node, BackendChoice::Kernel) else {
        panic!("the kernel backend started while the module could not load");
    };
    assert!(
        e.contains("ipip module is installed but did not load"),
        "{e}"
    );
    assert!(e.contains("modprobe ipip"), "{e}");
    // auto: the userspace tunnel, on the same kernel.
    {
        let f = FelixNode::start(node, BackendChoice::Auto).unwrap();
        assert_eq!(f.status().tunnel.unwrap().backend, BackendKind::Userspace);
    }
    node.ns.ip(&["link", "del", "tunl0"]).unwrap();
    // With the other namespace's device gone the module loads.
    other.ns.ip(&["link", "del", "tunl0"]).unwrap();
    let f = FelixNode::start(node, BackendChoice::Kernel).unwrap();
    assert_eq!(f.status().tunnel.unwrap().backend, BackendKind::Kernel);
    assert!(Path::new("/sys/module/ipip").exists());
}

/// The kernel's `vxlan.calico` on every node: VNI 4096, port 4789, no
/// learning, with permanent neighbour and FDB entries for the 2 others.
fn assert_vteps(name: &str) {
    for node in 0..3 {
        let links = node_exec(name, node, &["ip", "-d", "link", "show", "vxlan.calico"]);
        for want in ["vxlan id 4096", "dstport 4789", "nolearning", "mtu 1450"] {
            assert!(links.contains(want), "node-{node}: {want}:\n{links}");
        }
        let neigh = node_exec(name, node, &["ip", "neigh", "show", "dev", "vxlan.calico"]);
        assert_eq!(
            neigh.matches("PERMANENT").count(),
            2,
            "node-{node}:\n{neigh}"
        );
        let fdb = node_exec(
            name,
            node,
            &["bridge", "fdb", "show", "dev", "vxlan.calico"],
        );
        assert_eq!(
            fdb.matches("self permanent").count(),
            2,
            "node-{node}:\n{fdb}"
        );
    }
}

#[test]
fn vm_kernel_vxlan_crosssubnet_lab_with_bgp_encapsulates_only_across_subnets() {
    if !in_vm() {
        return this_test_in_vm(
            "vm_kernel_vxlan_crosssubnet_lab_with_bgp_encapsulates_only_across_subnets",
        );
    }
    let pairs = lab_matrix_with(
        "vxs",
        &["--ipip", "never", "--vxlan", "crosssubnet"],
        assert_vteps,
    );
    for line in pairs {
        let (a, b, path) = pair_path(&line);
        let want = if a == b {
            "local"
        } else if a == 1 || b == 1 {
            "vxlan"
        } else {
            "direct"
        };
        assert_eq!(path, want, "{line}");
    }
}

#[test]
fn vm_kernel_vxlan_always_lab_without_bgp_routes_from_the_datastore() {
    if !in_vm() {
        return this_test_in_vm("vm_kernel_vxlan_always_lab_without_bgp_routes_from_the_datastore");
    }
    let pairs = lab_matrix_with(
        "vxa",
        &["--ipip", "never", "--vxlan", "always", "--backend", "vxlan"],
        |name| {
            assert_vteps(name);
            // CALICO_NETWORKING_BACKEND=vxlan: no bird, no BGP anywhere.
            for node in 0..3 {
                let ss = node_exec(name, node, &["ss", "-tln"]);
                assert!(!ss.contains(":179 "), "node-{node} listens for BGP:\n{ss}");
            }
        },
    );
    for line in pairs {
        let (a, b, path) = pair_path(&line);
        assert_eq!(path, if a == b { "local" } else { "vxlan" }, "{line}");
    }
}

#[test]
fn vm_kernel_and_userspace_vxlan_talk_to_each_other() {
    if !in_vm() {
        return this_test_in_vm("vm_kernel_and_userspace_vxlan_talk_to_each_other");
    }
    // node-0 and node-2 the kernel's vxlan.calico, node-1 felix's
    // userspace VTEP (a TUN device of the same name); Always, so every
    // pair of nodes encapsulates, and the kernel nodes must take node-1's
    // frames (and node-1 theirs) byte for byte.
    let pairs = lab_matrix_with(
        "vxm",
        &[
            "--ipip",
            "never",
            "--vxlan",
            "always",
            "--vxlan-backend",
            "kernel,userspace",
        ],
        |name| {
            for node in 0..3 {
                let links = node_exec(name, node, &["ip", "-d", "link", "show", "vxlan.calico"]);
                if node == 1 {
                    assert!(links.contains("tun type tun"), "node-1:\n{links}");
                } else {
                    assert!(links.contains("vxlan id 4096"), "node-{node}:\n{links}");
                }
            }
        },
    );
    let mut mixed = 0;
    for line in &pairs {
        let (a, b, path) = pair_path(line);
        assert_eq!(path, if a == b { "local" } else { "vxlan" }, "{line}");
        if a != b && (a == 1 || b == 1) {
            mixed += 1;
        }
    }
    // 2 pods on node-1 times 4 pods elsewhere, both directions.
    assert_eq!(mixed, 16, "{pairs:?}");
}
