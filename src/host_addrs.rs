//! This host's own addresses, for relay sockets bound to the wildcard.
//!
//! A client is normally told the address it reached us on as its relayed address. A
//! client asking for the other family (RFC 6156: an IPv4-only client reaching an
//! IPv6-only peer, or the reverse) reached us on no address of that family, so the
//! relay advertises one found on its interfaces. Which one:
//!
//! - never loopback, unspecified, multicast or link-local (fe80::/10, 169.254/16): no
//!   peer elsewhere can reach them;
//! - IPv6: a global unicast address (2000::/3) before a unique-local one (fc00::/7,
//!   routable within a site); none that is tentative (duplicate address detection not
//!   finished), failed duplicate detection, deprecated (its lifetime is running out) or
//!   temporary (RFC 8981 privacy addresses change daily; a relayed address must last as
//!   long as its allocation). The flags come from `/proc/net/if_inet6`;
//! - IPv4: a public address before a private (RFC 1918) or shared (RFC 6598) one;
//! - among equals, the lowest address, so the choice does not depend on listing order.
//!
//! The kernel picks the source of what a wildcard-bound relay socket sends by its
//! routes; on a host with one global address per family that is the address chosen
//! here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `IFA_F_*` flags of `/proc/net/if_inet6` that disqualify an address.
const IFA_F_TEMPORARY: u32 = 0x01;
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_DEPRECATED: u32 = 0x20;
const IFA_F_TENTATIVE: u32 = 0x40;
const UNUSABLE: u32 = IFA_F_TEMPORARY | IFA_F_DADFAILED | IFA_F_DEPRECATED | IFA_F_TENTATIVE;

/// The IPv4 address to advertise to clients that reach us over IPv6, if the host has one.
pub fn ipv4() -> Option<IpAddr> {
    let list = match if_addrs::get_if_addrs() {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!("cannot list interface addresses: {e}");
            return None;
        }
    };
    let v4 = list.into_iter().filter_map(|i| match i.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    });
    pick_v4(v4).map(IpAddr::V4)
}

/// The IPv6 address to advertise to clients that reach us over IPv4, if the host has one.
pub fn ipv6() -> Option<IpAddr> {
    // No file: IPv6 is disabled in this kernel (`ipv6.disable=1`).
    let text = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
    pick_v6(parse_if_inet6(&text)).map(IpAddr::V6)
}

/// Each line of `/proc/net/if_inet6`: address (32 hex digits), interface index, prefix
/// length, scope, flags (hex), interface name. Lines that do not parse are skipped.
fn parse_if_inet6(text: &str) -> Vec<(Ipv6Addr, u32)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let hex = fields.next()?;
            let flags = fields.nth(3)?;
            let bits = u128::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.len() == 32)?;
            let flags = u32::from_str_radix(flags, 16).ok()?;
            Some((Ipv6Addr::from(bits), flags))
        })
        .collect()
}

fn pick_v6(addrs: impl IntoIterator<Item = (Ipv6Addr, u32)>) -> Option<Ipv6Addr> {
    addrs
        .into_iter()
        .filter(|(_, flags)| flags & UNUSABLE == 0)
        .filter_map(|(ip, _)| {
            let first = ip.segments()[0];
            let rank = if first & 0xe000 == 0x2000 {
                0 // global unicast
            } else if first & 0xfe00 == 0xfc00 {
                1 // unique local
            } else {
                // Loopback, link-local, multicast, mapped IPv4, site-local, reserved.
                return None;
            };
            Some((rank, ip))
        })
        .min()
        .map(|(_, ip)| ip)
}

fn pick_v4(addrs: impl IntoIterator<Item = Ipv4Addr>) -> Option<Ipv4Addr> {
    addrs
        .into_iter()
        .filter(|ip| {
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_link_local()
                || ip.is_multicast()
                || ip.is_broadcast()
                || ip.octets()[0] == 0)
        })
        .map(|ip| {
            let [a, b, ..] = ip.octets();
            let shared = a == 100 && (b & 0xc0) == 64;
            (u8::from(ip.is_private() || shared), ip)
        })
        .min()
        .map(|(_, ip)| ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn if_inet6_lines_parse_and_bad_ones_are_skipped() {
        let text = "\
20010db8000000000000000000000001 03 40 00 80     dummy0
fe80000000000000a8c1abfffe123456 03 40 20 80     dummy0
00000000000000000000000000000001 01 80 10 80       lo
not-an-address 01 80 10 80 lo
20010db8 01 80 10 80 lo
";
        assert_eq!(
            parse_if_inet6(text),
            vec![
                (v6("2001:db8::1"), 0x80),
                (v6("fe80::a8c1:abff:fe12:3456"), 0x80),
                (v6("::1"), 0x80),
            ]
        );
    }

    #[test]
    fn ipv6_prefers_a_stable_global_address_then_unique_local() {
        let permanent = 0x80;
        assert_eq!(
            pick_v6([
                (v6("::1"), permanent),
                (v6("fe80::1"), permanent),
                (v6("fd00::5"), permanent),
                (v6("2001:db8::9"), permanent),
                (v6("2001:db8::2"), IFA_F_TEMPORARY),
                (v6("2001:db8::3"), IFA_F_DEPRECATED),
                (v6("2001:db8::4"), IFA_F_TENTATIVE),
                (v6("2001:db8::5"), IFA_F_DADFAILED),
                (v6("2001:db8::7"), 0),
            ]),
            Some(v6("2001:db8::7"))
        );
        assert_eq!(
            pick_v6([(v6("fe80::1"), 0), (v6("fd00::5"), 0), (v6("fc00::9"), 0)]),
            Some(v6("fc00::9"))
        );
        assert_eq!(
            pick_v6([
                (v6("::1"), 0),
                (v6("fe80::1"), 0),
                (v6("::ffff:192.0.2.1"), 0),
                (v6("ff02::1"), 0),
                (v6("fec0::1"), 0),
            ]),
            None
        );
    }

    #[test]
    fn ipv4_prefers_a_public_address_and_skips_loopback_and_link_local() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            pick_v4([
                ip("127.0.0.1"),
                ip("10.0.0.5"),
                ip("203.0.113.9"),
                ip("169.254.1.1")
            ]),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            pick_v4([ip("127.0.0.1"), ip("192.168.1.7"), ip("100.64.0.3")]),
            Some(ip("100.64.0.3"))
        );
        assert_eq!(pick_v4([ip("127.0.0.1"), ip("169.254.169.254")]), None);
    }
}
