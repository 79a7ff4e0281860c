//! Which peer addresses an allocation may send to (CreatePermission, ChannelBind, Send).
//!
//! This is a security boundary. A TURN relay sends datagrams wherever an authenticated
//! client asks, from inside the operator's network, so without a policy it is an SSRF
//! proxy into cloud metadata (169.254.169.254, fd00:ec2::254), loopback services and
//! private networks. RFC 8656 §21.2.3 lets a server refuse a peer with 403 (Forbidden);
//! we refuse every special-purpose address by default (IANA IPv4 and IPv6 Special-Purpose
//! Address Registries, RFC 6890) unless the operator allow-lists it.
//!
//! The same IPv4 address can be written in several IPv6 forms (mapped, compatible, NAT64,
//! 6to4, Teredo). A policy that looks only at the literal address is bypassed by them:
//! coturn 4.6.1 accepted `::ffff:127.0.0.1` with 127/8 denied. So every check runs over all
//! the *forms* of a peer address: the address itself (an IPv4-mapped address is the IPv4
//! address — a dual-stack socket sends it as IPv4) plus each IPv4 address embedded in it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

use ipnet::IpNet;

/// Why a peer address is refused. Bounded, so it can label metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The operator's deny list matches one of the address's forms.
    DenyList,
    /// One of the relay's own listening or relay addresses (a relay loop).
    OwnAddress,
    /// 0.0.0.0 or `::`.
    Unspecified,
    /// 127/8 or `::1`.
    Loopback,
    /// RFC 1918: 10/8, 172.16/12, 192.168/16.
    Private,
    /// RFC 6598 carrier-grade NAT space, 100.64/10.
    SharedAddressSpace,
    /// 169.254/16 (cloud metadata lives here) or fe80::/10.
    LinkLocal,
    /// 224/4 or ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// IETF-reserved or not globally reachable: 240/4, the rest of 0/8, 192.0.0/24,
    /// 198.18/15, 192.88.99/24, 2001::/23 (except Teredo), IPv4-compatible `::/96`,
    /// malformed local-use NAT64, and every IPv6 address outside 2000::/3 that has no more
    /// specific reason (100::/64 discard, 5f00::/16 SRv6, unassigned space).
    Reserved,
    /// RFC 5737 and RFC 3849 / RFC 9637: 192.0.2/24, 198.51.100/24, 203.0.113/24,
    /// 2001:db8::/32, 3fff::/20.
    Documentation,
    /// RFC 4193 fc00::/7 (covers fd00:ec2::254, the AWS metadata IPv6 address).
    UniqueLocal,
    /// RFC 3879 deprecated site-local fec0::/10.
    SiteLocal,
}

impl Denied {
    /// A snake_case label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::DenyList => "deny_list",
            Denied::OwnAddress => "own_address",
            Denied::Unspecified => "unspecified",
            Denied::Loopback => "loopback",
            Denied::Private => "private",
            Denied::SharedAddressSpace => "shared_address_space",
            Denied::LinkLocal => "link_local",
            Denied::Multicast => "multicast",
            Denied::Broadcast => "broadcast",
            Denied::Reserved => "reserved",
            Denied::Documentation => "documentation",
            Denied::UniqueLocal => "unique_local",
            Denied::SiteLocal => "site_local",
        }
    }
}

/// The operator's peer rules plus the relay's own addresses. Built once at start-up
/// from the configuration (`peers.allow`, `peers.deny`, the listeners and relay
/// addresses) and cloned into every worker's core.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Exceptions to the default classification (e.g. an internal media server in 10/8).
    /// An address is allowed only if *every* one of its forms is listed, so allowing
    /// `::ffff:0:0/96` or `2002::/16` never opens the IPv4 space hidden behind them.
    allow: Vec<IpNet>,
    /// Refused whatever else says: any form (or the literal address) matching is enough.
    deny: Vec<IpNet>,
    /// The relay's own IPs, canonical (mapped IPv6 stored as IPv4).
    own_ips: Vec<IpAddr>,
    /// Ports the relay listens or relays on; a peer on an own IP is refused only on these,
    /// so another service on the same host can still be allow-listed.
    own_ports: Vec<RangeInclusive<u16>>,
}

impl PeerPolicy {
    /// Lists are taken literally: an IPv4-mapped entry (`::ffff:a.b.c.d/n`) in `allow`
    /// does not allow the IPv4 address, because peers are compared in canonical form.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> PeerPolicy {
        PeerPolicy {
            allow,
            deny,
            own_ips: Vec::new(),
            own_ports: Vec::new(),
        }
    }

    /// The relay's own addresses: a peer whose (canonical) IP is in `ips` AND whose port is
    /// in one of `ports` is refused (no relay loops), even if the allow list matches it.
    /// Pass the concrete interface addresses, not a wildcard bind address; an empty
    /// `ports` disables the check.
    pub fn with_own_addresses(
        mut self,
        ips: Vec<IpAddr>,
        ports: Vec<RangeInclusive<u16>>,
    ) -> PeerPolicy {
        self.own_ips = ips.into_iter().map(|ip| ip.to_canonical()).collect();
        self.own_ports = ports;
        self
    }

    /// Decides whether an allocation may send to `peer`. The order matters: the deny list
    /// and the relay's own addresses beat the allow list, which beats the defaults.
    pub fn check(&self, peer: SocketAddr) -> Result<(), Denied> {
        let forms = Forms::of(peer.ip());
        let in_any = |nets: &[IpNet], ip: IpAddr| nets.iter().any(|net| net.contains(&ip));

        // The literal address too, so a deny entry written as `::ffff:a.b.c.d` still bites.
        if in_any(&self.deny, peer.ip()) || forms.iter().any(|f| in_any(&self.deny, f)) {
            return Err(Denied::DenyList);
        }
        let own_port = self.own_ports.iter().any(|r| r.contains(&peer.port()));
        if own_port && forms.iter().any(|f| self.own_ips.contains(&f)) {
            return Err(Denied::OwnAddress);
        }
        // `Forms` is never empty (it always holds the address itself), so `all` cannot
        // be vacuously true.
        if forms.iter().all(|f| in_any(&self.allow, f)) {
            return Ok(());
        }
        let default_verdict = forms.iter().find_map(classify);
        default_verdict.map_or(Ok(()), Err)
    }
}

/// The canonical address plus the IPv4 addresses embedded in it; fixed size, no heap.
struct Forms([Option<IpAddr>; 3]);

impl Forms {
    fn of(ip: IpAddr) -> Forms {
        match ip.to_canonical() {
            v4 @ IpAddr::V4(_) => Forms([Some(v4), None, None]),
            IpAddr::V6(v6) => {
                let [a, b] = embedded_ipv4(v6);
                Forms([Some(IpAddr::V6(v6)), a.map(IpAddr::V4), b.map(IpAddr::V4)])
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.0.iter().flatten().copied()
    }
}

/// The IPv4 addresses embedded in an IPv6 address, in the forms a host or translator on
/// the path might turn back into IPv4:
/// - IPv4-mapped `::ffff:a.b.c.d` and IPv4-compatible `::a.b.c.d` (not `::` and `::1`),
///   RFC 4291 §2.5.5;
/// - NAT64 well-known prefix `64:ff9b::/96`, RFC 6052 §2.1 (address in the last 32 bits);
/// - local-use NAT64 `64:ff9b:1::/48`, RFC 8215, in the RFC 6052 §2.2 layout for a /48
///   prefix: octets 1–2 in bits 48..63, the u-octet at 64..71, octets 3–4 in bits 72..87;
/// - 6to4 `2002:AABB:CCDD::/48`, RFC 3056 §2;
/// - Teredo `2001:0::/32`, RFC 4380 §4: server in bits 32..63, client in the last 32 bits
///   XOR 0xffffffff. Teredo yields both, server first.
pub fn embedded_ipv4(ip: Ipv6Addr) -> [Option<Ipv4Addr>; 2] {
    let [_, _, o2, o3, o4, o5, o6, o7, _, o9, o10, _, o12, o13, o14, o15] = ip.octets();
    let last32 = Ipv4Addr::new(o12, o13, o14, o15);
    match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, _, _] => [Some(last32), None],
        // `::` and `::1` are the unspecified and loopback addresses, not compatible ones.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => [None, None],
        [0, 0, 0, 0, 0, 0, _, _] => [Some(last32), None],
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => [Some(last32), None],
        [0x64, 0xff9b, 1, ..] => [Some(Ipv4Addr::new(o6, o7, o9, o10)), None],
        [0x2002, ..] => [Some(Ipv4Addr::new(o2, o3, o4, o5)), None],
        [0x2001, 0, ..] => {
            let server = Ipv4Addr::new(o4, o5, o6, o7);
            let client = Ipv4Addr::from(!u32::from(last32));
            [Some(server), Some(client)]
        }
        _ => [None, None],
    }
}

/// Default special-purpose classification of one address (no lists): `None` if it is an
/// ordinary public unicast address. An IPv6 address is judged by the IPv4 addresses
/// embedded in it first (so `::ffff:127.0.0.1` is `Loopback`), then by its own prefix.
pub fn classify(ip: IpAddr) -> Option<Denied> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => embedded_ipv4(v6)
            .into_iter()
            .flatten()
            .find_map(classify_v4)
            .or_else(|| classify_v6_prefix(v6)),
    }
}

/// IANA IPv4 Special-Purpose Address Registry (RFC 6890) entries that are not globally
/// reachable, plus multicast and 240/4. First match wins, so specific entries come first.
const V4_RULES: &[(Ipv4Addr, u8, Denied)] = &[
    (Ipv4Addr::new(255, 255, 255, 255), 32, Denied::Broadcast), // RFC 919 limited broadcast
    (Ipv4Addr::new(0, 0, 0, 0), 32, Denied::Unspecified),
    (Ipv4Addr::new(0, 0, 0, 0), 8, Denied::Reserved), // RFC 1122 "this network"
    (Ipv4Addr::new(10, 0, 0, 0), 8, Denied::Private),
    (Ipv4Addr::new(100, 64, 0, 0), 10, Denied::SharedAddressSpace), // RFC 6598
    (Ipv4Addr::new(127, 0, 0, 0), 8, Denied::Loopback),
    (Ipv4Addr::new(169, 254, 0, 0), 16, Denied::LinkLocal), // RFC 3927
    (Ipv4Addr::new(172, 16, 0, 0), 12, Denied::Private),
    (Ipv4Addr::new(192, 0, 0, 0), 24, Denied::Reserved), // RFC 6890 IETF assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24, Denied::Documentation),
    (Ipv4Addr::new(192, 88, 99, 0), 24, Denied::Reserved), // RFC 7526 deprecated 6to4 relays
    (Ipv4Addr::new(192, 168, 0, 0), 16, Denied::Private),
    (Ipv4Addr::new(198, 18, 0, 0), 15, Denied::Reserved), // RFC 2544 benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24, Denied::Documentation),
    (Ipv4Addr::new(203, 0, 113, 0), 24, Denied::Documentation),
    (Ipv4Addr::new(224, 0, 0, 0), 4, Denied::Multicast),
    (Ipv4Addr::new(240, 0, 0, 0), 4, Denied::Reserved), // RFC 1112 §4 future use
];

fn classify_v4(ip: Ipv4Addr) -> Option<Denied> {
    let ip = u32::from(ip);
    V4_RULES.iter().find_map(|&(net, len, reason)| {
        // `checked_shr` yields None only for len 0 (shift by 32): that prefix holds all.
        let same = (ip ^ u32::from(net))
            .checked_shr(32 - u32::from(len))
            .unwrap_or(0)
            == 0;
        same.then_some(reason)
    })
}

/// IPv6 prefixes, first match wins. `None` marks ranges whose embedded IPv4 address decides
/// (checked by the caller) or ordinary global unicast.
const V6_RULES: &[(Ipv6Addr, u8, Option<Denied>)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, Some(Denied::Unspecified)),
    (Ipv6Addr::LOCALHOST, 128, Some(Denied::Loopback)),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96, None), // mapped
    // RFC 4291 §2.5.5.1: IPv4-compatible addresses are deprecated; nothing routes them.
    (Ipv6Addr::UNSPECIFIED, 96, Some(Denied::Reserved)),
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96, None), // RFC 6052 well-known NAT64
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, None),    // Teredo
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        Some(Denied::Documentation),
    ),
    // RFC 2928 IETF protocol assignments (benchmarking, ORCHID, AMT, anycast…).
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        Some(Denied::Reserved),
    ),
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, None), // 6to4
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        Some(Denied::Documentation),
    ), // RFC 9637
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        Some(Denied::UniqueLocal),
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        Some(Denied::LinkLocal),
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        Some(Denied::SiteLocal),
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        Some(Denied::Multicast),
    ),
    // RFC 4291 §2.4: IANA assigns global unicast only from 2000::/3.
    (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3, None),
    // Everything else is "Reserved by IETF" in the IANA IPv6 Address Space registry.
    (Ipv6Addr::UNSPECIFIED, 0, Some(Denied::Reserved)),
];

/// Classifies an IPv6 address by its own prefix, ignoring any embedded IPv4 address.
fn classify_v6_prefix(ip: Ipv6Addr) -> Option<Denied> {
    if let [0x64, 0xff9b, 1, ..] = ip.segments() {
        return local_use_nat64(ip);
    }
    let ip = u128::from(ip);
    let rule = V6_RULES.iter().find(|&&(net, len, _)| {
        // `checked_shr` yields None only for len 0 (shift by 128): that prefix holds all.
        (ip ^ u128::from(net))
            .checked_shr(128 - u32::from(len))
            .unwrap_or(0)
            == 0
    });
    // The catch-all `::/0` rule means a match always exists; `None` would still be safe.
    rule.and_then(|&(_, _, reason)| reason)
}

/// Local-use NAT64 (RFC 8215) is read in the /48 layout, but a site may run its translator
/// on a longer prefix inside 64:ff9b:1::/48 (/56, /64, /96) that puts the IPv4 address
/// elsewhere — where the /48 reading would not see it. RFC 6052 §2.2 requires the u-octet
/// (bits 64..71) to be zero and reserves the suffix (bits 88..127, "SHOULD be zero"), so
/// we accept only that well-formed shape; an address carrying anything in those bits is
/// exactly the kind another layout would translate, and is refused.
fn local_use_nat64(ip: Ipv6Addr) -> Option<Denied> {
    let [.., u, _, _, s11, s12, s13, s14, s15] = ip.octets();
    let well_formed = u == 0 && [s11, s12, s13, s14, s15] == [0; 5];
    (!well_formed).then_some(Denied::Reserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        // Test literals only; a typo should fail loudly.
        s.parse().expect("test socket address")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("test CIDR")).collect()
    }

    fn default_check(ip: &str) -> Result<(), Denied> {
        let ip: IpAddr = ip.parse().expect("test IP");
        PeerPolicy::default().check(SocketAddr::new(ip, 5000))
    }

    /// Asserts the default verdict for each `(address, expected)` row and names the row
    /// that fails.
    fn assert_defaults(rows: &[(&str, Result<(), Denied>)]) {
        for (ip, expected) in rows {
            assert_eq!(default_check(ip), *expected, "peer {ip}");
        }
    }

    #[test]
    fn plain_ipv4_special_ranges_are_refused_by_default() {
        use Denied::*;
        assert_defaults(&[
            ("0.0.0.0", Err(Unspecified)),
            ("0.1.2.3", Err(Reserved)),
            ("10.1.2.3", Err(Private)),
            ("172.16.0.1", Err(Private)),
            ("172.31.255.254", Err(Private)),
            ("192.168.1.1", Err(Private)),
            ("100.64.0.1", Err(SharedAddressSpace)),
            ("100.127.255.254", Err(SharedAddressSpace)),
            ("127.0.0.1", Err(Loopback)),
            ("127.255.0.9", Err(Loopback)),
            ("169.254.169.254", Err(LinkLocal)),
            ("224.0.0.251", Err(Multicast)),
            ("239.255.255.250", Err(Multicast)),
            ("240.0.0.1", Err(Reserved)),
            ("255.255.255.255", Err(Broadcast)),
            ("192.0.0.170", Err(Reserved)),
            ("198.18.0.1", Err(Reserved)),
            ("198.19.255.255", Err(Reserved)),
            ("192.88.99.1", Err(Reserved)),
            ("192.0.2.1", Err(Documentation)),
            ("198.51.100.7", Err(Documentation)),
            ("203.0.113.9", Err(Documentation)),
        ]);
    }

    #[test]
    fn public_addresses_pass_including_range_neighbours() {
        assert_defaults(&[
            ("8.8.8.8", Ok(())),
            ("1.1.1.1", Ok(())),
            ("172.32.0.1", Ok(())),      // just past 172.16/12
            ("100.128.0.1", Ok(())),     // just past 100.64/10
            ("198.20.0.1", Ok(())),      // just past 198.18/15
            ("223.255.255.255", Ok(())), // just below multicast
            ("::ffff:8.8.8.8", Ok(())),
            ("2606:4700::1111", Ok(())),
            ("2a00:1450:4001:80b::200e", Ok(())),
        ]);
    }

    #[test]
    fn plain_ipv6_special_ranges_are_refused_by_default() {
        use Denied::*;
        assert_defaults(&[
            ("::", Err(Unspecified)),
            ("::1", Err(Loopback)),
            ("fe80::1", Err(LinkLocal)),
            ("ff02::1", Err(Multicast)),
            ("fc00::1", Err(UniqueLocal)),
            ("fd00:ec2::254", Err(UniqueLocal)), // AWS instance metadata over IPv6
            ("fec0::1", Err(SiteLocal)),
            ("2001:db8::1", Err(Documentation)),
            ("3fff::1", Err(Documentation)),
            ("2001:2::1", Err(Reserved)), // benchmarking, inside 2001::/23
            ("100::1", Err(Reserved)),    // RFC 6666 discard-only
            ("5f00::1", Err(Reserved)),   // outside 2000::/3
            ("::ffff:0:808:808", Err(Reserved)), // SIIT-translated form, not global
        ]);
    }

    #[test]
    fn ipv4_mapped_and_compatible_forms_are_judged_by_their_ipv4() {
        use Denied::*;
        assert_defaults(&[
            ("::ffff:127.0.0.1", Err(Loopback)),
            ("::ffff:10.1.2.3", Err(Private)),
            ("::ffff:169.254.169.254", Err(LinkLocal)),
            ("::ffff:0.0.0.0", Err(Unspecified)),
            ("::127.0.0.1", Err(Loopback)),
            // Deprecated compatible form of a public address: still refused.
            ("::8.8.8.8", Err(Reserved)),
        ]);
    }

    #[test]
    fn nat64_well_known_prefix_is_judged_by_its_ipv4() {
        use Denied::*;
        assert_defaults(&[
            ("64:ff9b::7f00:1", Err(Loopback)),
            ("64:ff9b::a9fe:a9fe", Err(LinkLocal)), // metadata through a NAT64
            ("64:ff9b::a00:1", Err(Private)),
            ("64:ff9b::808:808", Ok(())),
        ]);
    }

    #[test]
    fn local_use_nat64_uses_the_rfc6052_slash48_layout() {
        // 127.0.0.1 at /48: 7f 00 in bytes 6–7, u-octet 0, 00 01 in bytes 9–10.
        let loopback: Ipv6Addr = "64:ff9b:1:7f00:0:100::".parse().expect("literal");
        assert_eq!(embedded_ipv4(loopback), [Some(Ipv4Addr::LOCALHOST), None]);
        use Denied::*;
        assert_defaults(&[
            ("64:ff9b:1:7f00:0:100::", Err(Loopback)),
            ("64:ff9b:1:a9fe:a9:fe00::", Err(LinkLocal)),
            ("64:ff9b:1:808:8:800::", Ok(())), // 8.8.8.8
            // A set u-octet or suffix is what a /64 or /96 translator would read: refused.
            ("64:ff9b:1:808:ff08:800::", Err(Reserved)),
            ("64:ff9b:1:808:8:800:a9fe:a9fe", Err(Reserved)),
            // The /96 reading of this is 169.254.169.254; the /48 reading is 0.0.0.0.
            ("64:ff9b:1::a9fe:a9fe", Err(Unspecified)),
        ]);
    }

    #[test]
    fn six_to_four_is_judged_by_its_ipv4() {
        let six_to_four: Ipv6Addr = "2002:7f00:0001::".parse().expect("literal");
        assert_eq!(
            embedded_ipv4(six_to_four),
            [Some(Ipv4Addr::LOCALHOST), None]
        );
        use Denied::*;
        assert_defaults(&[
            ("2002:7f00:0001::", Err(Loopback)),
            ("2002:a9fe:a9fe::1", Err(LinkLocal)),
            ("2002:c0a8:101::1", Err(Private)),
            ("2002:808:808::1", Ok(())),
        ]);
    }

    #[test]
    fn teredo_yields_server_and_client_and_both_are_judged() {
        // Server 8.8.8.8; client 127.0.0.1 stored inverted (RFC 4380 §4): 80ff:fffe.
        let loop_client: Ipv6Addr = "2001:0:808:808::80ff:fffe".parse().expect("literal");
        let expected = [Some(Ipv4Addr::new(8, 8, 8, 8)), Some(Ipv4Addr::LOCALHOST)];
        assert_eq!(embedded_ipv4(loop_client), expected);
        use Denied::*;
        assert_defaults(&[
            ("2001:0:808:808::80ff:fffe", Err(Loopback)),
            // Server 10.0.0.1, client 8.8.4.4 (inverted f7f7:fbfb).
            ("2001:0:a00:1::f7f7:fbfb", Err(Private)),
            ("2001:0:808:808::f7f7:fbfb", Ok(())),
        ]);
    }

    #[test]
    fn addresses_without_embedded_ipv4_yield_none() {
        for ip in ["::", "::1", "2606:4700::1111", "fe80::1", "64:ff9a::1"] {
            let ip: Ipv6Addr = ip.parse().expect("literal");
            assert_eq!(embedded_ipv4(ip), [None, None], "{ip}");
        }
    }

    #[test]
    fn allow_list_allows_every_form_of_the_listed_ipv4_only() {
        let policy = PeerPolicy::new(nets(&["127.0.0.1/32"]), vec![]);
        assert_eq!(policy.check(sa("127.0.0.1:5000")), Ok(()));
        assert_eq!(policy.check(sa("[::ffff:127.0.0.1]:5000")), Ok(()));
        assert_eq!(policy.check(sa("127.0.0.2:5000")), Err(Denied::Loopback));
        // The NAT64 form is a different IPv6 address: the allow list must name it too.
        assert_eq!(
            policy.check(sa("[64:ff9b::7f00:1]:5000")),
            Err(Denied::Loopback)
        );
    }

    #[test]
    fn allowing_an_ipv6_wrapper_does_not_open_the_ipv4_behind_it() {
        let policy = PeerPolicy::new(
            nets(&["::ffff:0:0/96", "2002::/16", "64:ff9b::/96"]),
            vec![],
        );
        assert_eq!(
            policy.check(sa("[::ffff:10.0.0.1]:5000")),
            Err(Denied::Private)
        );
        assert_eq!(
            policy.check(sa("[2002:a00:1::1]:5000")),
            Err(Denied::Private)
        );
        assert_eq!(
            policy.check(sa("[64:ff9b::a9fe:a9fe]:80")),
            Err(Denied::LinkLocal)
        );

        let both = PeerPolicy::new(nets(&["64:ff9b::/96", "10.0.0.1/32"]), vec![]);
        assert_eq!(both.check(sa("[64:ff9b::a00:1]:5000")), Ok(()));
        assert_eq!(both.check(sa("[::ffff:10.0.0.1]:5000")), Ok(()));
    }

    #[test]
    fn deny_list_refuses_every_form_and_beats_the_allow_list() {
        let policy = PeerPolicy::new(nets(&["8.8.8.0/24"]), nets(&["8.8.8.0/24"]));
        for peer in [
            "8.8.8.8:53",
            "[::ffff:8.8.8.8]:53",
            "[64:ff9b::808:808]:53",
            "[2002:808:808::1]:53",
        ] {
            assert_eq!(policy.check(sa(peer)), Err(Denied::DenyList), "{peer}");
        }
        assert_eq!(policy.check(sa("8.8.4.4:53")), Ok(()));

        // A deny entry written in mapped form matches the literal peer address.
        let mapped = PeerPolicy::new(vec![], nets(&["::ffff:1.1.1.1/128"]));
        assert_eq!(
            mapped.check(sa("[::ffff:1.1.1.1]:53")),
            Err(Denied::DenyList)
        );
    }

    #[test]
    fn own_address_is_refused_on_own_ports_even_if_allowed() {
        let policy = PeerPolicy::new(nets(&["127.0.0.1/32"]), vec![]).with_own_addresses(
            vec!["127.0.0.1".parse().expect("literal")],
            vec![3478..=3478],
        );
        assert_eq!(policy.check(sa("127.0.0.1:3478")), Err(Denied::OwnAddress));
        assert_eq!(
            policy.check(sa("[::ffff:127.0.0.1]:3478")),
            Err(Denied::OwnAddress)
        );
        assert_eq!(policy.check(sa("127.0.0.1:5000")), Ok(()));
    }

    #[test]
    fn own_relay_port_range_is_refused_in_every_form() {
        let own: IpAddr = "203.0.113.5".parse().expect("literal");
        let policy = PeerPolicy::new(nets(&["203.0.113.0/24", "64:ff9b::/96"]), vec![])
            .with_own_addresses(vec![own], vec![3478..=3478, 49152..=65535]);
        for peer in [
            "203.0.113.5:49152",
            "203.0.113.5:60000",
            "203.0.113.5:65535",
            "[64:ff9b::cb00:7105]:50000",
        ] {
            assert_eq!(policy.check(sa(peer)), Err(Denied::OwnAddress), "{peer}");
        }
        assert_eq!(policy.check(sa("203.0.113.5:49151")), Ok(()));
        assert_eq!(policy.check(sa("203.0.113.6:50000")), Ok(()));
        // Own IPs given in mapped form are canonicalised.
        let mapped_own = PeerPolicy::default().with_own_addresses(
            vec!["::ffff:8.8.8.8".parse().expect("literal")],
            vec![3478..=3478],
        );
        assert_eq!(
            mapped_own.check(sa("8.8.8.8:3478")),
            Err(Denied::OwnAddress)
        );
    }

    #[test]
    fn classify_looks_inside_ipv6_and_labels_are_snake_case() {
        assert_eq!(
            classify("::ffff:127.0.0.1".parse().expect("literal")),
            Some(Denied::Loopback)
        );
        assert_eq!(classify("8.8.8.8".parse().expect("literal")), None);
        assert_eq!(Denied::SharedAddressSpace.as_str(), "shared_address_space");
        assert_eq!(Denied::DenyList.as_str(), "deny_list");
        assert_eq!(Denied::UniqueLocal.as_str(), "unique_local");
    }
}
