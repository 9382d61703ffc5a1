//! The namespace plumbing against the real kernel.
#![allow(clippy::unwrap_used)]

use lab::{Netns, veth};

fn exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

#[test]
fn two_namespaces_joined_by_a_veth_can_ping() {
    let a = Netns::create("pa").unwrap();
    let b = Netns::create("pb").unwrap();
    veth(&a, "va", &b, "vb").unwrap();
    a.ip(&["addr", "add", "192.0.2.1/24", "dev", "va"]).unwrap();
    b.ip(&["addr", "add", "192.0.2.2/24", "dev", "vb"]).unwrap();
    let out = a
        .exec("ping", &["-c", "1", "-W", "2", "192.0.2.2"])
        .unwrap();
    assert!(out.contains("1 received"), "{out}");
}

#[test]
fn namespace_and_its_processes_are_removed_on_drop() {
    let ns = Netns::create("drop").unwrap();
    let name = ns.name().to_string();
    let mut p = ns.spawn("sleep", &["30"], None).unwrap();
    assert!(p.try_wait().is_none());
    assert!(exists(&name));
    // `ip netns exec` enters the namespace a moment after it starts; only
    // then is the sleeper the namespace's to kill.
    let pid = i32::try_from(p.pid()).unwrap();
    let mut inside = false;
    for _ in 0..250 {
        inside = ns.pids().contains(&pid);
        if inside {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(inside, "the sleeper never entered the namespace");
    drop(ns);
    assert!(!exists(&name));
    // The sleeper was killed with the namespace (reaping may lag on a busy
    // machine).
    let mut gone = false;
    for _ in 0..250 {
        gone = p.try_wait().is_some();
        if gone {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(gone);
}

#[test]
fn namespace_is_removed_when_a_test_panics() {
    let name = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let n2 = name.clone();
    let r = std::panic::catch_unwind(move || {
        let ns = Netns::create("panic").unwrap();
        *n2.lock().unwrap() = ns.name().to_string();
        panic!("test body failed");
    });
    assert!(r.is_err());
    let name = name.lock().unwrap().clone();
    assert!(!name.is_empty());
    assert!(!exists(&name), "{name} must be gone after the panic");
}

#[test]
fn rust_code_runs_with_its_sockets_inside_the_namespace() {
    let ns = Netns::create("run").unwrap();
    ns.ip(&["addr", "add", "198.51.100.7/32", "dev", "lo"])
        .unwrap();
    // Binding to an address that only exists inside the namespace proves the
    // socket was created there.
    let bound = ns
        .run(|| std::net::TcpListener::bind("198.51.100.7:0").is_ok())
        .unwrap();
    assert!(bound);
    assert!(std::net::TcpListener::bind("198.51.100.7:0").is_err());
}

#[test]
fn bad_tags_are_rejected() {
    assert!(Netns::create("").is_err());
    assert!(Netns::create("UPPER").is_err());
    assert!(Netns::create("waytoolongtag").is_err());
}

#[test]
fn stale_namespaces_of_dead_processes_are_swept() {
    // A name whose pid cannot be alive (pid_max is below 2^22 by default).
    let name = format!("{}stale-{}-0", lab_prefix(), 4_194_999);
    std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(exists(&name));
    let n = lab::sweep_stale();
    assert!(n >= 1);
    assert!(!exists(&name));
}

fn lab_prefix() -> &'static str {
    "cl"
}
