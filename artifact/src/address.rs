//! IP addresses in the one form they are compared in, and the IPv4 addresses an IPv6 one
//! carries inside it: an address is judged as what a packet sent to it could reach, so
//! `[::ffff:127.0.0.1]`, `[64:ff9b::7f00:1]` and `[2002:7f00:1::]` are all judged as the
//! IPv4 address they embed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The well-known NAT64 prefix (RFC 6052): `64:ff9b::a.b.c.d` is translated to a.b.c.d.
const NAT64_WELL_KNOWN: [u16; 6] = [0x64, 0xff9b, 0, 0, 0, 0];

/// An address in the family it is reached in: `::ffff:a.b.c.d` (IPv4-mapped), `::a.b.c.d`
/// (IPv4-compatible, but `::` and `::1`) and `64:ff9b::a.b.c.d` (the well-known NAT64
/// prefix, which a translator sends on to a.b.c.d) are the IPv4 address a.b.c.d. Every
/// comparison of hosts (policy scopes, allow lists, credentials, the cache's keys) sees this
/// form, so no spelling of an address escapes a rule written for another.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let compatible = s[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback();
    if compatible || s[..6] == NAT64_WELL_KNOWN {
        return IpAddr::V4(low_v4(v6));
    }
    ip
}

/// Every IPv4 address a packet sent to `v6` could be delivered to or through, for rules
/// that must fail closed (is it the node?): the one [`canonical_ip`] reads, and those of the
/// transition mechanisms whose reading depends on how a network is set up:
/// - NAT64 with the local-use prefix `64:ff9b:1::/48` (RFC 8215), which an operator
///   subdivides with a prefix of 48, 56, 64 or 96 bits: the address each length reads
///   (RFC 6052, section 2.2);
/// - 6to4 (`2002:V4::/48`, RFC 3056): the relay router a.b.c.d the packet is tunnelled to;
/// - Teredo (`2001:0::/32`, RFC 4380): the server, and the client (its address stored
///   inverted in the last 32 bits), to which the packet is sent over UDP.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    if let IpAddr::V4(v4) = canonical_ip(IpAddr::V6(v6)) {
        found.push(v4);
    }
    let s = v6.segments();
    let bits = u128::from(v6);
    if s[..3] == [0x64, 0xff9b, 1] {
        for prefix in [48, 56, 64, 96] {
            found.push(rfc6052(bits, prefix));
        }
    }
    if s[0] == 0x2002 {
        found.push(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    if s[..2] == [0x2001, 0] {
        found.push(Ipv4Addr::from(((bits >> 64) & 0xffff_ffff) as u32));
        found.push(Ipv4Addr::from(!low_v4(v6).to_bits()));
    }
    found.dedup();
    found
}

/// The last 32 bits of `v6`.
fn low_v4(v6: Ipv6Addr) -> Ipv4Addr {
    Ipv4Addr::from((u128::from(v6) & 0xffff_ffff) as u32)
}

/// The IPv4 address an IPv4-embedded IPv6 address of a `prefix`-bit NAT64 prefix carries
/// (RFC 6052, 2.2): after the prefix, skipping bits 64 to 71 (the "u" octet).
fn rfc6052(bits: u128, prefix: u32) -> Ipv4Addr {
    let octet = |at: u32| ((bits >> (120 - at)) & 0xff) as u8;
    let mut out = [0u8; 4];
    let mut at = prefix;
    for byte in &mut out {
        if at == 64 {
            at += 8;
        }
        *byte = octet(at);
        at += 8;
    }
    Ipv4Addr::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_in_ipv6_is_read_as_ipv4() {
        for (text, v4) in [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::ffff:7f00:1", "127.0.0.1"),
            ("::127.0.0.1", "127.0.0.1"),
            ("64:ff9b::7f00:1", "127.0.0.1"),
            ("64:ff9b::169.254.169.254", "169.254.169.254"),
        ] {
            assert_eq!(
                canonical_ip(IpAddr::V6(v6(text))),
                v4.parse::<IpAddr>().unwrap(),
                "{text}"
            );
        }
        for text in [
            "::",
            "::1",
            "2001:db8::1",
            "64:ff9b:1::7f00:1",
            "2002:7f00:1::",
        ] {
            assert_eq!(canonical_ip(IpAddr::V6(v6(text))), IpAddr::V6(v6(text)));
        }
    }

    #[test]
    fn transition_addresses_carry_the_ipv4_they_reach() {
        let has = |text: &str, v4: &str| embedded_ipv4(v6(text)).contains(&v4.parse().unwrap());
        // NAT64, local-use prefix, /96 and /48 (RFC 6052's own example layout).
        assert!(has("64:ff9b:1::7f00:1", "127.0.0.1"));
        assert!(has("64:ff9b:1:c000:2:2100::", "192.0.2.33"));
        assert!(has("64:ff9b:1:7f:0:1::", "127.0.0.1"));
        // 6to4: the router a.b.c.d.
        assert!(has("2002:7f00:1::1", "127.0.0.1"));
        assert!(has("2002:a9fe:a9fe::", "169.254.169.254"));
        // Teredo: server 65.54.227.120, client 192.0.2.45 (inverted: 3fff:fdd2).
        assert!(has("2001:0:4136:e378:8000:63bf:3fff:fdd2", "65.54.227.120"));
        assert!(has("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"));
        assert!(has("2001:0:7f00:1::", "127.0.0.1"));
        assert!(embedded_ipv4(v6("2001:db8::1")).is_empty());
        assert!(embedded_ipv4(v6("fd00::2")).is_empty());
    }
}
