#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use ippool_crd::Selector;
use ippool_crd::policy::{Action, PortMatch, Protocol};

use super::super::script::{self, TableOptions};
use super::*;
use crate::policy::{
    EndpointMatch, EntityMatch, IcmpMatch, NamedPort, NamespaceMatch, Policy, PolicySet,
    PolicySnapshot, Profile, Rule,
};

fn pod(ns: &str, name: &str, labels: &[(&str, &str)], ips: &[&str]) -> Endpoint {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let addrs: Vec<IpAddr> = ips.iter().map(|s| s.parse().unwrap()).collect();
    Endpoint::pod(ns, name, labels, BTreeMap::new(), addrs)
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn policy(name: &str, selector: &str, ingress: Vec<Rule>) -> Policy {
    Policy {
        name: name.into(),
        order: Some(10.0),
        namespace: None,
        selector: sel(selector),
        namespace_selector: None,
        applies_ingress: true,
        applies_egress: false,
        ingress,
        egress: vec![],
    }
}

fn from_app(app: &str, action: Action) -> Rule {
    Rule {
        source: EntityMatch {
            endpoints: Some(EndpointMatch {
                namespace: NamespaceMatch::Any,
                selector: Some(sel(&format!("app == '{app}'"))),
            }),
            ..EntityMatch::default()
        },
        ..Rule::any(action)
    }
}

/// prod/web and prod/db local, dev/client remote.
fn snapshot(policies: Vec<Policy>) -> PolicySnapshot {
    let eps = [
        pod("prod", "web", &[("app", "web")], &["10.65.0.1", "fd00::1"]),
        pod("prod", "db", &[("app", "db")], &["10.65.0.2"]),
        pod("dev", "client", &[("app", "client")], &["10.65.1.4"]),
    ];
    PolicySnapshot {
        policies: PolicySet::new(
            policies,
            vec![Profile::namespace("prod"), Profile::namespace("dev")],
        ),
        endpoints: eps.into_iter().map(|e| (e.id(), e)).collect(),
        local: [
            ("prod/web".to_string(), "caliweb".to_string()),
            ("prod/db".to_string(), "calidb".to_string()),
        ]
        .into_iter()
        .collect(),
        errors: vec![],
        synced: true,
    }
}

fn opts() -> RenderOptions {
    RenderOptions::default()
}

#[test]
fn a_selected_endpoint_gets_its_policies_then_the_end_of_tier_drop() {
    let p = policy(
        "allow-client",
        "app == 'web'",
        vec![from_app("client", Action::Allow)],
    );
    let d = render(&snapshot(vec![p]), &opts());
    let web = &d.chains["to-caliweb"].rules;
    assert_eq!(
        web,
        &vec![
            format!("jump {}", policy_chain("allow-client", Direction::Ingress)),
            "drop comment \"no policy allowed it\"".to_string()
        ]
    );
    // db is selected by nothing: its profiles decide.
    let db = &d.chains["to-calidb"].rules;
    assert_eq!(db.len(), 1, "{db:?}");
    assert!(db[0].starts_with("goto pl-"), "{db:?}");
    let pl = &d.chains[db[0].trim_start_matches("goto ")].rules;
    assert_eq!(pl.last().unwrap(), "drop comment \"no profile allowed it\"");
    assert!(pl.contains(&format!(
        "jump {}",
        profile_chain("kns.prod", Direction::Ingress)
    )));
    assert_eq!(
        d.chains[&profile_chain("kns.prod", Direction::Ingress)].rules,
        vec!["accept"]
    );
    // The policy's rule: one per family, each against the selector's set.
    let rules = &d.chains[&policy_chain("allow-client", Direction::Ingress)].rules;
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(
        rules[0].starts_with("meta nfproto ipv4 ip saddr @s4-"),
        "{rules:?}"
    );
    assert!(
        rules[1].starts_with("meta nfproto ipv6 ip6 saddr @s6-"),
        "{rules:?}"
    );
    assert!(rules.iter().all(|r| r.ends_with(" accept")));
    let set4 = rules[0]
        .split('@')
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert_eq!(
        d.sets[set4].elements.iter().collect::<Vec<_>>(),
        ["10.65.1.4"]
    );
    assert_eq!(d.from_wl["caliweb"], "from-caliweb");
    assert_eq!(d.to_wl["calidb"], "to-calidb");
    // Egress: no policy applies in that direction, the profile decides.
    assert!(d.chains["from-caliweb"].rules[0].starts_with("goto pl-"));
}

#[test]
fn a_remote_pod_coming_is_a_set_element_and_nothing_else() {
    let p = policy(
        "allow-client",
        "app == 'web'",
        vec![from_app("client", Action::Allow)],
    );
    let before = snapshot(vec![p]);
    let mut after = before.clone();
    let new = pod(
        "dev",
        "client2",
        &[("app", "client")],
        &["10.65.1.9", "fd00::9"],
    );
    after.endpoints.insert(new.id(), new);
    let o = TableOptions::default();
    let (a, b) = (render(&before, &opts()), render(&after, &opts()));
    let s = script::delta(&o, &a, &b).unwrap();
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 2, "{s}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("add element inet calico-rs-filter s")),
        "{s}"
    );
    assert!(
        s.contains("{ 10.65.1.9 }") && s.contains("{ fd00::9 }"),
        "{s}"
    );
    // And going again removes exactly those.
    let back = script::delta(&o, &b, &a).unwrap();
    assert_eq!(back.lines().count(), 2, "{back}");
    assert!(
        back.lines().all(|l| l.starts_with("delete element")),
        "{back}"
    );
    assert_eq!(script::delta(&o, &a, &a), None);
}

#[test]
fn a_changed_policy_rewrites_only_its_own_chain() {
    let keep = policy("b-keep", "app == 'db'", vec![Rule::any(Action::Allow)]);
    let p1 = policy(
        "a-change",
        "app == 'web'",
        vec![from_app("client", Action::Allow)],
    );
    let mut p2 = p1.clone();
    p2.ingress = vec![Rule {
        protocol: Some(Protocol::TCP),
        ..from_app("client", Action::Allow)
    }];
    let o = TableOptions::default();
    let a = render(&snapshot(vec![p1, keep.clone()]), &opts());
    let b = render(&snapshot(vec![p2, keep]), &opts());
    let s = script::delta(&o, &a, &b).unwrap();
    let chain = policy_chain("a-change", Direction::Ingress);
    let mut lines = s.lines();
    assert_eq!(
        lines.next(),
        Some(format!("flush chain inet calico-rs-filter {chain}").as_str())
    );
    for l in lines {
        assert!(
            l.starts_with(&format!("add rule inet calico-rs-filter {chain} ")),
            "{s}"
        );
        assert!(l.contains("meta l4proto 6"), "{s}");
    }
}

#[test]
fn a_new_local_endpoint_adds_its_chains_and_map_elements() {
    let p = policy(
        "allow-client",
        "app == 'web'",
        vec![from_app("client", Action::Allow)],
    );
    let a = snapshot(vec![p]);
    let mut b = a.clone();
    b.local.insert("dev/client".into(), "caliclient".into());
    let o = TableOptions::default();
    let s = script::delta(&o, &render(&a, &opts()), &render(&b, &opts())).unwrap();
    assert!(
        s.contains("add chain inet calico-rs-filter to-caliclient"),
        "{s}"
    );
    assert!(
        s.contains(
            "add element inet calico-rs-filter to-wl { \"caliclient\" : goto to-caliclient }"
        ),
        "{s}"
    );
    assert!(
        s.contains(
            "add element inet calico-rs-filter from-wl { \"caliclient\" : goto from-caliclient }"
        ),
        "{s}"
    );
    // Removing it removes the elements before the chains.
    let r = script::delta(&o, &render(&b, &opts()), &render(&a, &opts())).unwrap();
    let del_elem = r
        .find("delete element inet calico-rs-filter to-wl")
        .unwrap();
    let del_chain = r
        .find("delete chain inet calico-rs-filter to-caliclient")
        .unwrap();
    assert!(del_elem < del_chain, "{r}");
}

#[test]
fn pass_sets_the_mark_and_the_endpoint_chain_hands_over_to_the_profiles() {
    let p = policy(
        "pass-client",
        "all()",
        vec![from_app("client", Action::Pass)],
    );
    let later = policy("z-deny", "all()", vec![Rule::any(Action::Deny)]);
    let d = render(&snapshot(vec![p, later]), &opts());
    let rules = &d.chains[&policy_chain("pass-client", Direction::Ingress)].rules;
    assert!(
        rules[0].ends_with("meta mark set meta mark | 0x00020000 return"),
        "{rules:?}"
    );
    let web = &d.chains["to-caliweb"].rules;
    assert_eq!(web[0], "meta mark set meta mark & 0xfffdffff");
    assert_eq!(
        web[1],
        format!("jump {}", policy_chain("pass-client", Direction::Ingress))
    );
    assert!(
        web[2].starts_with("meta mark & 0x00020000 == 0x00020000 goto pl-"),
        "{web:?}"
    );
    assert_eq!(
        web[3],
        format!("jump {}", policy_chain("z-deny", Direction::Ingress))
    );
    assert_eq!(web[4], "drop comment \"no policy allowed it\"");
}

#[test]
fn ports_not_ports_and_named_ports() {
    let mut snap = snapshot(vec![policy(
        "ports",
        "app == 'web'",
        vec![
            Rule {
                protocol: Some(Protocol::TCP),
                destination: EntityMatch {
                    ports: vec![
                        PortMatch::Named("http".into()),
                        PortMatch::Range(8000, 9000),
                    ],
                    ..EntityMatch::default()
                },
                ..Rule::any(Action::Allow)
            },
            Rule {
                destination: EntityMatch {
                    not_ports: vec![PortMatch::Range(1, 1023)],
                    ..EntityMatch::default()
                },
                ..Rule::any(Action::Deny)
            },
        ],
    )]);
    let web = snap.endpoints.get_mut("prod/web").unwrap();
    web.named_ports.insert(
        "http".into(),
        NamedPort {
            protocol: Protocol::TCP,
            port: 80,
        },
    );
    let d = render(&snap, &opts());
    let rules = &d.chains[&policy_chain("ports", Direction::Ingress)].rules;
    // Rule 0: per family, numbers or the named-port set.
    assert!(
        rules.contains(
            &"meta nfproto ipv4 meta l4proto 6 th dport { 8000-9000 } accept".to_string()
        ),
        "{rules:#?}"
    );
    let named: Vec<&String> = rules
        .iter()
        .filter(|r| r.contains(". meta l4proto . th dport @p"))
        .collect();
    assert_eq!(named.len(), 2, "{rules:#?}");
    let set = named[0]
        .split('@')
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert_eq!(
        d.sets[set].elements.iter().collect::<Vec<_>>(),
        ["10.65.0.1 . 6 . 80"]
    );
    // Rule 1: no protocol: a packet without ports has no port to exclude.
    assert!(
        rules.contains(&"meta l4proto != { 6, 17, 132, 136 } drop".to_string()),
        "{rules:#?}"
    );
    assert!(
        rules.contains(&"meta l4proto { 6, 17, 132, 136 } th dport != { 1-1023 } drop".to_string()),
        "{rules:#?}"
    );
}

#[test]
fn nets_split_by_family_and_icmp_matches() {
    let rule = Rule {
        protocol: Some(Protocol::ICMP),
        not_icmp: Some(IcmpMatch {
            icmp_type: 8,
            code: Some(0),
        }),
        source: EntityMatch {
            nets: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            not_nets: vec!["10.1.0.0/16".parse().unwrap()],
            ..EntityMatch::default()
        },
        ..Rule::any(Action::Allow)
    };
    let d = render(
        &snapshot(vec![policy("nets", "all()", vec![rule])]),
        &opts(),
    );
    let rules = &d.chains[&policy_chain("nets", Direction::Ingress)].rules;
    // ICMP is IPv4: no IPv6 rendering; not (type 8 code 0) is two alternatives.
    assert_eq!(rules.len(), 2, "{rules:#?}");
    assert!(
        rules
            .iter()
            .all(|r| r.starts_with("meta nfproto ipv4 meta l4proto 1 ")),
        "{rules:#?}"
    );
    assert!(
        rules[0].contains("icmp type != 8 ip saddr @n4-"),
        "{rules:#?}"
    );
    assert!(
        rules[1].contains("icmp type 8 icmp code != 0 ip saddr @n4-"),
        "{rules:#?}"
    );
    let nets: Vec<&SetDef> = d
        .sets
        .values()
        .map(|s| &**s)
        .filter(|s| s.kind == SetKind::Net(Family::V4))
        .collect();
    assert_eq!(nets.len(), 2);
    assert!(nets.iter().any(|s| s.elements.contains("10.0.0.0/8")));
    assert!(nets.iter().any(|s| s.elements.contains("10.1.0.0/16")));
    // Only IPv6 nets: no IPv4 rendering at all.
    let only6 = Rule {
        source: EntityMatch {
            nets: vec!["fd00::/8".parse().unwrap()],
            ..EntityMatch::default()
        },
        ..Rule::any(Action::Allow)
    };
    let d = render(&snapshot(vec![policy("v6", "all()", vec![only6])]), &opts());
    let rules = &d.chains[&policy_chain("v6", Direction::Ingress)].rules;
    assert_eq!(rules.len(), 1);
    assert!(
        rules[0].starts_with("meta nfproto ipv6 ip6 saddr @n6-"),
        "{rules:?}"
    );
}

#[test]
fn a_policy_that_cannot_be_rendered_is_skipped_and_the_rest_enforced() {
    let bad = policy(
        "bad",
        "app == 'web'",
        vec![Rule {
            protocol: Some(Protocol::TCP),
            destination: EntityMatch {
                ports: vec![PortMatch::Range(90, 80)],
                ..EntityMatch::default()
            },
            ..Rule::any(Action::Allow)
        }],
    );
    let good = policy("good", "app == 'web'", vec![Rule::any(Action::Deny)]);
    let d = render(&snapshot(vec![bad, good]), &opts());
    assert_eq!(d.skipped.len(), 1);
    assert_eq!(d.skipped[0].name, "bad");
    assert!(
        d.skipped[0].message.contains("backwards"),
        "{:?}",
        d.skipped
    );
    assert!(
        !d.chains
            .contains_key(&policy_chain("bad", Direction::Ingress))
    );
    assert_eq!(
        d.chains["to-caliweb"].rules,
        vec![
            format!("jump {}", policy_chain("good", Direction::Ingress)),
            "drop comment \"no policy allowed it\"".to_string()
        ]
    );
}

#[test]
fn the_full_script_replaces_the_table_in_one_go_and_names_every_part() {
    let p = policy(
        "allow-client",
        "app == 'web'",
        vec![from_app("client", Action::Allow)],
    );
    let d = render(&snapshot(vec![p]), &opts());
    let s = script::full(&TableOptions::default(), &d);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "table inet calico-rs-filter");
    assert_eq!(lines[1], "delete table inet calico-rs-filter");
    assert_eq!(lines[2], "table inet calico-rs-filter {");
    for name in d.sets.keys().chain(d.chains.keys()) {
        assert!(s.contains(&format!(" {name} {{")), "{name} missing:\n{s}");
    }
    assert!(s.contains("\"caliweb\" : goto to-caliweb"), "{s}");
    assert!(
        s.contains("type filter hook forward priority filter;"),
        "{s}"
    );
    assert!(s.contains("iifname \"cali*\" goto wl-to-host"), "{s}");
    // Not synced snapshots are the caller's business; an empty one renders
    // an empty (everything-unknown-is-dropped) table.
    let empty = render(&PolicySnapshot::default(), &opts());
    assert!(empty.chains.is_empty() && empty.sets.is_empty());
}

#[test]
fn comments_never_break_the_script() {
    assert_eq!(comment_text("ns/a \"b\"\\;{x}"), "ns/a _b____x_");
    assert!(comment_text(&"x".repeat(500)).len() <= 120);
}

#[test]
fn the_caching_renderer_renders_exactly_what_a_fresh_render_does() {
    let p1 = policy("a", "app == 'web'", vec![from_app("client", Action::Allow)]);
    let p2 = policy("b", "all()", vec![from_app("db", Action::Pass)]);
    let mut r = Renderer::new(opts());
    let mut snap = snapshot(vec![p1.clone(), p2.clone()]);
    let mut steps = vec![snap.clone()];
    // A changed policy, a new remote pod, a pod's labels changing, a
    // policy gone, a local pod gone.
    let mut changed = p1.clone();
    changed.ingress = vec![from_app("db", Action::Deny)];
    snap.policies = PolicySet::new(
        vec![changed.clone(), p2.clone()],
        vec![Profile::namespace("prod")],
    );
    steps.push(snap.clone());
    let new = pod("dev", "c2", &[("app", "db")], &["10.65.1.8"]);
    snap.endpoints.insert(new.id(), new);
    steps.push(snap.clone());
    // A remote pod's address changing, the pod going and coming back.
    let c2 = snap.endpoints["dev/c2"].clone();
    snap.endpoints.get_mut("dev/c2").unwrap().addresses = vec!["10.65.1.9".parse().unwrap()];
    steps.push(snap.clone());
    snap.endpoints.remove("dev/c2");
    steps.push(snap.clone());
    snap.endpoints.insert(c2.id(), c2);
    steps.push(snap.clone());
    snap.endpoints
        .get_mut("dev/c2")
        .unwrap()
        .labels
        .insert("app".into(), "client".into());
    steps.push(snap.clone());
    // A local pod's labels: policy a no longer selects it, sets change.
    snap.endpoints
        .get_mut("prod/web")
        .unwrap()
        .labels
        .insert("app".into(), "db".into());
    steps.push(snap.clone());
    snap.policies = PolicySet::new(vec![changed], vec![Profile::namespace("prod")]);
    steps.push(snap.clone());
    snap.local.remove("prod/db");
    steps.push(snap.clone());
    steps.push(snapshot(vec![p1]));
    let mut seen = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let d = r.render(s);
        assert_eq!(d, render(s, &opts()), "step {i}");
        seen.push(d);
    }
    // The steps did change the table (the comparison is not vacuous).
    for (i, w) in seen.windows(2).enumerate() {
        assert_ne!(w[0], w[1], "steps {i} and {} render the same table", i + 1);
    }
}

#[test]
fn an_interface_name_nft_cannot_carry_is_skipped_not_written() {
    let mut snap = snapshot(vec![]);
    snap.local
        .insert("dev/client".into(), "cali\" accept".into());
    snap.local
        .insert("prod/web".into(), "cali-much-too-long-a-name".into());
    let d = render(&snap, &opts());
    assert_eq!(d.skipped.len(), 2, "{:?}", d.skipped);
    assert_eq!(d.to_wl.keys().collect::<Vec<_>>(), ["calidb"]);
    assert!(!script::full(&TableOptions::default(), &d).contains("accept\""));
}

#[test]
fn a_changed_port_keeps_the_rules_source_selector() {
    let rule = |port: u16| Rule {
        protocol: Some(Protocol::TCP),
        destination: EntityMatch {
            ports: vec![PortMatch::Range(port, port)],
            ..EntityMatch::default()
        },
        ..from_app("client", Action::Allow)
    };
    let mut r = Renderer::new(opts());
    for port in [20000, 20001, 20002] {
        let s = snapshot(vec![policy(
            "a",
            "all()",
            vec![rule(port), Rule::any(Action::Allow)],
        )]);
        let d = r.render(&s);
        assert_eq!(d, render(&s, &opts()), "port {port}");
        let text = script::full(&TableOptions::default(), &d);
        assert!(
            text.contains("saddr @s4-") && text.contains(&format!("dport {{ {port} }}")),
            "{text}"
        );
    }
}

#[test]
fn a_policy_whose_rules_alone_change_is_patched_into_the_last_table() {
    let tcp_to = |lo: u16, hi: u16, action: Action| Rule {
        protocol: Some(Protocol::TCP),
        destination: EntityMatch {
            ports: vec![PortMatch::Range(lo, hi)],
            ..EntityMatch::default()
        },
        ..from_app("client", action)
    };
    let other = policy("other", "all()", vec![from_app("db", Action::Allow)]);
    let steps: Vec<Vec<Rule>> = vec![
        vec![tcp_to(80, 80, Action::Allow)],
        // A port: the same sets, only this chain.
        vec![tcp_to(81, 81, Action::Allow)],
        // Allow to deny: still the same shape.
        vec![tcp_to(81, 81, Action::Deny)],
        // Pass: endpoint chains change (not a patch).
        vec![tcp_to(81, 81, Action::Pass)],
        // Cannot be rendered, then the same error again, then fine.
        vec![tcp_to(90, 80, Action::Allow)],
        vec![tcp_to(90, 80, Action::Allow), Rule::any(Action::Deny)],
        vec![tcp_to(80, 80, Action::Allow)],
        // Another set (not a patch).
        vec![Rule::any(Action::Allow)],
    ];
    let mut r = Renderer::new(opts());
    let mut prev: Option<Desired> = None;
    for (i, rules) in steps.into_iter().enumerate() {
        let snap = snapshot(vec![policy("web", "app == 'web'", rules), other.clone()]);
        let d = r.render(&snap);
        assert_eq!(d, render(&snap, &opts()), "step {i}");
        if let Some(p) = &prev
            && (i == 1 || i == 2)
        {
            // Only the changed policy's chain is a new one.
            let fresh: Vec<&String> = d
                .chains
                .iter()
                .filter(|(name, c)| !Arc::ptr_eq(c, &p.chains[*name]))
                .map(|(name, _)| name)
                .collect();
            assert_eq!(
                fresh,
                [&policy_chain("web", Direction::Ingress)],
                "step {i}"
            );
            assert!(d.sets.iter().all(|(n, s)| Arc::ptr_eq(s, &p.sets[n])));
        }
        prev = Some(d);
    }
    // A remote pod coming: set elements only, every chain kept.
    let mut snap = snapshot(vec![
        policy("web", "app == 'web'", vec![tcp_to(80, 80, Action::Allow)]),
        other,
    ]);
    let before = r.render(&snap);
    let c9 = pod("dev", "c9", &[("app", "client")], &["10.65.1.9"]);
    snap.endpoints.insert(c9.id(), c9);
    let after = r.render(&snap);
    assert_eq!(after, render(&snap, &opts()));
    assert!(
        after
            .chains
            .iter()
            .all(|(n, c)| Arc::ptr_eq(c, &before.chains[n]))
    );
    assert_ne!(after.sets, before.sets);
}
