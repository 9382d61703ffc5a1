//! Interface names and addresses of a pod's veth pair, as Calico makes them.

use std::net::Ipv6Addr;

use sha1::{Digest, Sha1};

/// The MAC of every host-side veth. Calico fixes it so the kernel does not
/// have to generate (and sometimes fail to generate) a persistent one, and
/// because proxy ARP answers with it anyway.
pub const HOST_MAC: [u8; 6] = [0xee; 6];

/// The host side's IPv6 link-local address: the EUI-64 of [`HOST_MAC`]
/// (`fe80::ecee:eeff:feee:eeee`), the pod's IPv6 default gateway.
pub const HOST_LINK_LOCAL: Ipv6Addr =
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// The pod's IPv4 default gateway: a link-local address nobody owns; the
/// host veth answers ARP for it by proxy ARP.
pub const IPV4_GATEWAY: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 1, 1);

/// The host-side interface name: `prefix` followed by the first 11 hex
/// digits of SHA-1(`"<namespace>.<pod>"`), Calico's scheme, so the name is
/// stable across restarts and the same as Calico's for the same pod
/// (`cali` + 11 = 15 characters, the kernel's limit).
pub fn host_iface_name(prefix: &str, namespace: &str, pod: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}.{pod}").as_bytes());
    let mut name = String::with_capacity(prefix.len() + 11);
    name.push_str(prefix);
    for b in digest.iter() {
        name.push_str(&format!("{b:02x}"));
        if name.len() >= prefix.len() + 11 {
            break;
        }
    }
    name.truncate(prefix.len() + 11);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values from Python's hashlib, an independent SHA-1.
    #[test]
    fn names_match_calicos_sha1_scheme() {
        assert_eq!(
            host_iface_name("cali", "default", "nginx"),
            "calic440f455693"
        );
        assert_eq!(
            host_iface_name("cali", "kube-system", "coredns-5d78c9869d-abcde"),
            "cali4d5f75c480c"
        );
        assert_eq!(host_iface_name("cali", "ns", "pod"), "calie34aba5891b");
    }

    #[test]
    fn names_fit_the_kernel_limit() {
        assert_eq!(host_iface_name("cali", "a", "b").len(), 15);
    }

    #[test]
    fn link_local_is_eui64_of_the_host_mac() {
        let mut eui = [0u8; 8];
        eui[..3].copy_from_slice(&HOST_MAC[..3]);
        eui[3] = 0xff;
        eui[4] = 0xfe;
        eui[5..].copy_from_slice(&HOST_MAC[3..]);
        eui[0] ^= 0x02;
        let mut octets = [0u8; 16];
        octets[0] = 0xfe;
        octets[1] = 0x80;
        octets[8..].copy_from_slice(&eui);
        assert_eq!(Ipv6Addr::from(octets), HOST_LINK_LOCAL);
    }
}
