//! An eBGP ToR running FRR (bgpd 8, standalone: no zebra, no kernel
//! routes): what it sees of a node, attribute by attribute — the local AS
//! the BGPPeer names (`localASNumber`), the communities of
//! `prefixAdvertisements` (standard and large), the node as next hop — and
//! what the node takes from it.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Ours, next_hop, pair, path_asns, wait_for};
use serde_json::Value;

const UP: Duration = Duration::from_secs(40);
const BGPD: &str = "/usr/lib/frr/bgpd";

/// FRR's bgpd in a namespace, with its vty socket in a directory of ours.
struct Frr {
    _proc: lab::NsProcess,
    dir: tempfile::TempDir,
    ns: String,
}

impl Frr {
    fn start(ns: &lab::Netns, conf: &str) -> Frr {
        assert!(
            Path::new(BGPD).exists(),
            "{BGPD} is missing: scripts/install-deps.sh installs frr"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("bgpd.conf"), conf).unwrap();
        let arg = |f: &str| d.join(f).to_str().unwrap().to_string();
        let args = [
            "-Z".to_string(), // no zebra
            "-S".into(),      // stay root, no capability games
            "-n".into(),      // no kernel routes
            "-P".into(),
            "0".into(), // no TCP vty
            "-f".into(),
            arg("bgpd.conf"),
            "-i".into(),
            arg("bgpd.pid"),
            "--vty_socket".into(),
            d.to_str().unwrap().into(),
            "--log".into(),
            "stdout".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = ns.spawn(BGPD, &args, Some(&d.join("bgpd.log"))).unwrap();
        let frr = Frr {
            _proc: proc,
            dir,
            ns: ns.name().to_string(),
        };
        wait_for(
            "FRR's vty socket",
            Duration::from_secs(20),
            || frr.try_show("show bgp summary json"),
            || frr.log_text(),
        );
        frr
    }

    fn try_show(&self, cmd: &str) -> Option<Value> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "vtysh", "--vty_socket"])
            .arg(self.dir.path())
            .args(["-d", "bgpd", "-c", cmd])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn log_text(&self) -> String {
        format!(
            "--- FRR bgpd log ---\n{}",
            std::fs::read_to_string(self.dir.path().join("bgpd.log")).unwrap_or_default()
        )
    }

    /// The paths FRR holds for `prefix`.
    fn paths(&self, prefix: &str) -> Vec<Value> {
        self.try_show(&format!("show bgp ipv4 unicast {prefix} json"))
            .and_then(|v| v["paths"].as_array().cloned())
            .unwrap_or_default()
    }
}

#[test]
fn an_frr_tor_sees_the_local_as_communities_and_next_hop_and_sends_its_routes() {
    let (a, b) = pair("frra", "frrb");
    let frr = Frr::start(
        &b,
        r#"
frr defaults traditional
hostname tor
!
router bgp 65001
 bgp router-id 10.0.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 10.0.0.1 remote-as 65100
 neighbor 10.0.0.1 timers connect 1
 address-family ipv4 unicast
  network 10.11.0.0/16
  neighbor 10.0.0.1 activate
 exit-address-family
!
"#,
    );
    let ours = Ours::start(
        &a,
        r#"
router_id = "10.0.0.1"
asn = 64512
advertise = ["10.22.0.0/26", "10.23.0.0/26"]
[[prefix_communities]]
cidr = "10.22.0.0/16"
communities = ["65100:100", "65100:7:8"]
[[peers]]
address = "10.0.0.2"
asn = 65001
local_asn = 65100
connect_retry = 1
families = ["ipv4"]
"#,
    );
    let diag = || format!("{}\n{}", ours.log_text(), frr.log_text());
    let path = wait_for(
        "10.22.0.0/26 at FRR",
        UP,
        || frr.paths("10.22.0.0/26").into_iter().next(),
        diag,
    );
    assert_eq!(path["aspath"]["string"], "65100", "{path:#}");
    assert_eq!(path["community"]["string"], "65100:100", "{path:#}");
    assert_eq!(path["largeCommunity"]["string"], "65100:7:8", "{path:#}");
    assert_eq!(path["nexthops"][0]["ip"], "10.0.0.1", "{path:#}");
    assert_eq!(path["origin"], "IGP", "{path:#}");
    // A block outside the prefixAdvertisement carries no community.
    let other = wait_for(
        "10.23.0.0/26 at FRR",
        UP,
        || frr.paths("10.23.0.0/26").into_iter().next(),
        diag,
    );
    assert!(other.get("community").is_none(), "{other:#}");
    assert!(other.get("largeCommunity").is_none(), "{other:#}");
    // FRR's route, at the node: FRR's AS, FRR as next hop.
    let r = wait_for(
        "10.11.0.0/16 at ours",
        UP,
        || ours.route("10.11.0.0/16"),
        diag,
    );
    assert_eq!(path_asns(&r), vec![65001]);
    assert_eq!(next_hop(&r), "10.0.0.2");
}
