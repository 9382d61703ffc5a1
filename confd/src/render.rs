//! The human-readable rendering confd writes on every change, for an
//! operator to `cat` during an incident: what this node was told to do.

use std::fmt::Write;

use crate::config::NodeConfig;

fn secs(d: Option<std::time::Duration>) -> String {
    d.map(|d| format!("{}s", d.as_secs()))
        .unwrap_or_else(|| "-".into())
}

/// Renders the configuration as text. Passwords are never written out.
pub fn render(cfg: &NodeConfig) -> String {
    let b = &cfg.bgp;
    let f = &cfg.felix;
    let mut s = String::new();
    let _ = writeln!(s, "# calico-rs configuration for node {}", b.node);
    let _ = writeln!(s, "# (rendered by confd; pushed to bird and felix)");
    let _ = writeln!(s);
    let _ = writeln!(s, "[bgp]");
    let _ = writeln!(s, "router id      {}", b.router_id);
    let _ = writeln!(s, "as             {}", b.asn);
    let _ = writeln!(s, "listen port    {}", b.listen_port);
    let _ = writeln!(
        s,
        "node mesh      {}",
        if b.mesh_enabled {
            "enabled"
        } else {
            "disabled"
        }
    );
    match b.rr_cluster_id {
        Some(id) => {
            let _ = writeln!(s, "route reflector cluster id {id}");
        }
        None => {
            let _ = writeln!(s, "route reflector no");
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "[peers] ({})", b.peers.len());
    let _ = writeln!(
        s,
        "{:<28} {:<40} {:>10} {:<18} options",
        "name", "address", "as", "type"
    );
    for p in &b.peers {
        let addr = match p.port {
            Some(port) => format!("{} port {port}", p.address),
            None => p.address.to_string(),
        };
        let mut opts = Vec::new();
        if p.passive {
            opts.push("passive".to_string());
        }
        if p.rr_client {
            opts.push("rr-client".to_string());
        }
        if p.keep_next_hop {
            opts.push("next-hop-keep".to_string());
        }
        if p.password.is_some() {
            opts.push("md5".to_string());
        }
        if let Some(why) = &p.password_unavailable {
            opts.push(format!("HELD DOWN: {why}"));
        }
        if let Some(t) = p.ttl_security {
            opts.push(format!("ttl-security {t}"));
        }
        if let Some((interval, mult)) = p.bfd {
            opts.push(format!("bfd {}ms x{mult}", interval.as_millis()));
        }
        if let Some(a) = &p.bfd_auth {
            // The key itself is never written out.
            opts.push(format!("bfd-auth {:?} id {}", a.kind, a.key_id));
        }
        if let Some(src) = p.source_address {
            opts.push(format!("source {src}"));
        }
        if !p.import_filter.is_empty() || !p.export_filter.is_empty() {
            opts.push(format!(
                "filter rules import {} export {}",
                p.import_filter.len(),
                p.export_filter.len()
            ));
        }
        opts.push(format!("restart {}", secs(p.restart_time)));
        if let Some(from) = &p.source {
            opts.push(format!("from BGPPeer/{from}"));
        }
        let _ = writeln!(
            s,
            "{:<28} {:<40} {:>10} {:<18} {}",
            p.name(),
            addr,
            p.asn,
            p.kind.describe(),
            opts.join(", ")
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "[advertised blocks] ({})", b.advertise.len());
    for blk in &b.advertise {
        let _ = writeln!(s, "{blk}");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "[prefix communities] ({})", b.prefix_communities.len());
    for a in &b.prefix_communities {
        let cs: Vec<String> = a.communities.iter().map(|c| c.to_string()).collect();
        let _ = writeln!(s, "{:<40} {}", a.cidr.to_string(), cs.join(" "));
    }
    for why in &b.invalid_prefix_advertisements {
        let _ = writeln!(s, "IGNORED: {why}");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "[felix]");
    let _ = match f.node_ip {
        Some(ip) => writeln!(s, "node address   {ip}"),
        None => writeln!(s, "node address   none (IPv6 only)"),
    };
    let _ = writeln!(
        s,
        "ipip tunnel    {}",
        f.ipip_tunnel_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        s,
        "vxlan tunnel   {}",
        f.vxlan
            .map(|(a, mac)| format!("{a} {}", ippool_crd::format_mac(mac)))
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(s, "vxlan peers    {}", f.vteps.len());
    for v in &f.vteps {
        let _ = writeln!(
            s,
            "  {} via {} ({}, {} blocks)",
            v.tunnel_addr,
            v.node_ip,
            ippool_crd::format_mac(v.mac),
            v.blocks.len()
        );
    }
    if f.vxlan_v6.is_some() || !f.vteps_v6.is_empty() {
        let _ = writeln!(
            s,
            "vxlan-v6       {} on {}",
            f.vxlan_v6
                .map(|(a, mac)| format!("{a} {}", ippool_crd::format_mac(mac)))
                .unwrap_or_else(|| "-".into()),
            f.node_ipv6
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        );
        let _ = writeln!(s, "vxlan-v6 peers {}", f.vteps_v6.len());
        for v in &f.vteps_v6 {
            let _ = writeln!(
                s,
                "  {} via {} ({}, {} blocks)",
                v.tunnel_addr,
                v.node_ip,
                ippool_crd::format_mac(v.mac),
                v.blocks.len()
            );
        }
    }
    let _ = writeln!(s, "local blocks   {}", f.local_blocks.len());
    for blk in &f.local_blocks {
        let _ = writeln!(s, "  {blk}");
    }
    let _ = writeln!(s, "pools          {}", f.pools.len());
    for p in &f.pools {
        let _ = writeln!(
            s,
            "  {:<24} {:<20} block /{:<3} ipip {:<11} vxlan {:<11} nat {:<3} {}{}",
            p.name,
            p.cidr.to_string(),
            p.block_size,
            format!("{:?}", p.ipip_mode),
            format!("{:?}", p.vxlan_mode),
            if p.nat_outgoing { "on" } else { "off" },
            if p.disabled { "disabled " } else { "" },
            format_args!("selector {}", p.node_selector),
        );
    }
    for (name, why) in &f.invalid_pools {
        let _ = writeln!(s, "  {name:<24} IGNORED: {why}");
    }
    s
}
