//! The `calico` binary invoked the way a container runtime invokes it:
//! CNI_* environment, configuration on stdin, JSON on stdout.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

struct Out {
    code: i32,
    json: serde_json::Value,
}

fn run(env: &[(&str, &str)], stdin: &str) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_calico"));
    cmd.env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The plugin may exit before reading stdin (bad environment).
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let json = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text:?}"))
    };
    Out {
        code: out.status.code().unwrap_or(-1),
        json,
    }
}

fn conf(socket: &std::path::Path) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calico",
            "ipam":{{"type":"calico-ipam"}},"felix_socket":"{}"}}"#,
        socket.display()
    )
}

fn add_env(netns: &str) -> Vec<(&str, &str)> {
    vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

#[test]
fn version_reports_supported_versions() {
    let o = run(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(o.code, 0);
    let versions = o.json["supportedVersions"].as_array().unwrap();
    assert!(versions.contains(&serde_json::json!("1.0.0")));
    assert!(versions.contains(&serde_json::json!("0.3.1")));
}

#[test]
fn add_without_felix_is_a_clear_error_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("felix.sock");
    let o = run(&add_env("/var/run/netns/x"), &conf(&sock));
    assert_ne!(o.code, 0);
    assert_eq!(o.json["code"], 104);
    assert_eq!(o.json["cniVersion"], "1.0.0");
    let msg = o.json["msg"].as_str().unwrap();
    assert!(msg.contains("felix.sock"), "{msg}");
    assert!(
        o.json["details"].as_str().unwrap().contains("calico-node"),
        "{}",
        o.json
    );
}

#[test]
fn status_without_felix_says_not_available() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &[("CNI_COMMAND", "STATUS")],
        &conf(&dir.path().join("felix.sock")),
    );
    assert_eq!(o.json["code"], 50);
    assert_ne!(o.code, 0);
}

#[test]
fn malformed_stdin_is_a_decode_error() {
    let o = run(&add_env("/var/run/netns/x"), "{\"cniVersion\": ");
    assert_eq!(o.json["code"], 6);
    assert_ne!(o.code, 0);
}

#[test]
fn missing_netns_and_unknown_command_are_env_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = conf(&dir.path().join("felix.sock"));
    let mut env = add_env("x");
    env.retain(|(k, _)| *k != "CNI_NETNS");
    let o = run(&env, &c);
    assert_eq!(o.json["code"], 4);
    assert!(o.json["msg"].as_str().unwrap().contains("CNI_NETNS"));

    let o = run(&[("CNI_COMMAND", "EXPLODE")], &c);
    assert_eq!(o.json["code"], 4);
    assert!(o.json["msg"].as_str().unwrap().contains("EXPLODE"));
}

#[test]
fn unsupported_cni_version_is_reported() {
    let o = run(
        &add_env("/var/run/netns/x"),
        r#"{"cniVersion":"0.1.0","name":"n","type":"calico"}"#,
    );
    assert_eq!(o.json["code"], 1);
}
