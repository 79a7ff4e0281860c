//! STUN/TURN attribute types and decoders for their values.
//!
//! Decoders take the attribute value exactly as [`super::Message::get`] returns it
//! (without padding) and never panic: a malformed value is an [`AttrError`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{TransactionId, MAGIC_COOKIE};

// Comprehension-required range 0x0000..=0x7FFF (RFC 8489 §14, §18.3).
/// RFC 8489 §14.1 MAPPED-ADDRESS: the client's reflexive address, unobfuscated (RFC 3489 clients).
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// RFC 8489 §14.3 USERNAME: the long-term credential's user name, UTF-8, under 509 bytes.
pub const USERNAME: u16 = 0x0006;
/// RFC 8489 §14.5 MESSAGE-INTEGRITY: HMAC-SHA1 over the message up to it (20 bytes).
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// RFC 8489 §14.8 ERROR-CODE: class, number and reason phrase of an error response.
pub const ERROR_CODE: u16 = 0x0009;
/// RFC 8489 §14.13 UNKNOWN-ATTRIBUTES: the comprehension-required types a 420 refuses.
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// RFC 8656 §18.1 CHANNEL-NUMBER: the channel a ChannelBind binds (16 bits + 2 reserved bytes).
pub const CHANNEL_NUMBER: u16 = 0x000C;
/// RFC 8656 §18.2 LIFETIME: seconds the allocation lives unless refreshed.
pub const LIFETIME: u16 = 0x000D;
/// RFC 8656 §18.3 XOR-PEER-ADDRESS: a peer's transport address, XOR-obfuscated.
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
/// RFC 8656 §18.4 DATA: the application payload of a Send or Data indication.
pub const DATA: u16 = 0x0013;
/// RFC 8489 §14.9 REALM: the realm of the long-term credentials (part of the key).
pub const REALM: u16 = 0x0014;
/// RFC 8489 §14.10 NONCE: the server's nonce, echoed by authenticated requests.
pub const NONCE: u16 = 0x0015;
/// RFC 8656 §18.5 XOR-RELAYED-ADDRESS: the relayed transport address an Allocate got.
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// RFC 8656 §18.6 REQUESTED-ADDRESS-FAMILY: the family of relayed address asked for.
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
/// RFC 8656 §18.7 EVEN-PORT: ask for an even relay port, with the R bit also reserving the next one.
pub const EVEN_PORT: u16 = 0x0018;
/// RFC 8656 §18.8 REQUESTED-TRANSPORT: the protocol to relay (an IANA protocol number; 17 = UDP).
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
/// RFC 8656 §18.9 DONT-FRAGMENT: send to peers with the DF bit set (no value).
pub const DONT_FRAGMENT: u16 = 0x001A;
/// RFC 8489 §14.6 MESSAGE-INTEGRITY-SHA256: HMAC-SHA256 over the message up to it (16–32 bytes).
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// RFC 8489 §14.12 PASSWORD-ALGORITHM: the algorithm the client chose for the long-term key.
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
/// RFC 8489 §14.4 USERHASH: a hashed user name (username anonymity; not offered by this relay).
pub const USERHASH: u16 = 0x001E;
/// RFC 8489 §14.2 XOR-MAPPED-ADDRESS: the client's reflexive address, XOR-obfuscated.
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// RFC 8656 §18.10 RESERVATION-TOKEN: 8 bytes naming a port reserved by EVEN-PORT's R bit.
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// RFC 8445 §16.1 PRIORITY: an ICE connectivity check's candidate priority.
pub const PRIORITY: u16 = 0x0024;
/// RFC 8445 §16.1 USE-CANDIDATE: ICE nomination flag (no value).
pub const USE_CANDIDATE: u16 = 0x0025;
/// RFC 5780 PADDING: bytes that pad a NAT-behaviour-discovery response.
pub const PADDING: u16 = 0x0026;
/// RFC 5780 RESPONSE-PORT: the port a NAT-behaviour-discovery response should go to.
pub const RESPONSE_PORT: u16 = 0x0027;
/// RFC 6062 CONNECTION-ID: a TCP relay connection (TCP allocations; not offered).
pub const CONNECTION_ID: u16 = 0x002A;

// Comprehension-optional range 0x8000..=0xFFFF.
/// RFC 8656 §18.11 ADDITIONAL-ADDRESS-FAMILY: ask for an IPv6 relayed address besides the IPv4 one.
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
/// RFC 8656 §18.12 ADDRESS-ERROR-CODE: why one family of a dual allocation was not granted.
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
/// RFC 8489 §14.11 PASSWORD-ALGORITHMS: the algorithms the server offers, echoed by the client.
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
/// RFC 8489 §14.16 ALTERNATE-DOMAIN: the TLS domain of an ALTERNATE-SERVER.
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
/// RFC 8656 §18.13 ICMP: an ICMP error about a peer, carried in a Data indication.
pub const ICMP: u16 = 0x8004;
/// RFC 8489 §14.14 SOFTWARE: a textual description of the sender's software.
pub const SOFTWARE: u16 = 0x8022;
/// RFC 8489 §14.15 ALTERNATE-SERVER: where a 300 (Try Alternate) redirects the client.
pub const ALTERNATE_SERVER: u16 = 0x8023;
/// RFC 7982 TRANSACTION-TRANSMIT-COUNTER: which retransmission a request or response is.
pub const TRANSACTION_TRANSMIT_COUNTER: u16 = 0x8025;
/// RFC 5780 CACHE-TIMEOUT: how long a NAT binding is expected to last.
pub const CACHE_TIMEOUT: u16 = 0x8027;
/// RFC 8489 §14.7 FINGERPRINT: CRC-32 of the message XOR 0x5354554E, always last.
pub const FINGERPRINT: u16 = 0x8028;
/// RFC 8445 §16.1 ICE-CONTROLLED: the sender is the controlled ICE agent (tie-breaker value).
pub const ICE_CONTROLLED: u16 = 0x8029;
/// RFC 8445 §16.1 ICE-CONTROLLING: the sender is the controlling ICE agent (tie-breaker value).
pub const ICE_CONTROLLING: u16 = 0x802A;
/// RFC 5780 RESPONSE-ORIGIN: the address a NAT-behaviour-discovery response was sent from.
pub const RESPONSE_ORIGIN: u16 = 0x802B;
/// RFC 5780 OTHER-ADDRESS: the server's alternate address for NAT-behaviour discovery.
pub const OTHER_ADDRESS: u16 = 0x802C;

/// RFC 8489 §18.5 PASSWORD-ALGORITHM 0x0001: key = MD5(username ":" realm ":" password),
/// the RFC 5389 key, used when the client names no algorithm.
pub const PASSWORD_ALGORITHM_MD5: u16 = 0x0001;
/// RFC 8489 §18.5 PASSWORD-ALGORITHM 0x0002: key = SHA-256(username ":" realm ":" password).
pub const PASSWORD_ALGORITHM_SHA256: u16 = 0x0002;

/// RFC 8489 §14.1: family code of an IPv4 address in (XOR-)MAPPED-ADDRESS style values
/// (a 4-byte address follows).
pub const FAMILY_IPV4: u8 = 0x01;
/// Family code of an IPv6 address (16-byte address follows).
pub const FAMILY_IPV6: u8 = 0x02;

/// RFC 8489 §14: types 0x0000..=0x7FFF must be understood by the receiver.
pub fn is_comprehension_required(typ: u16) -> bool {
    typ < 0x8000
}

/// Why an attribute value could not be decoded. The string names the attribute kind.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttrError {
    /// The value has the wrong length or layout for its kind (named here).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// An address value whose family byte is neither 0x01 nor 0x02.
    #[error("unknown address family {0:#04x}")]
    UnknownFamily(u8),
    /// A text attribute (USERNAME, REALM, NONCE, …) that is not UTF-8.
    #[error("attribute value is not valid UTF-8")]
    NotUtf8,
}

/// Reads the 4-byte family/port prefix shared by the address formats (RFC 8489 §14.1).
fn address_parts<'v>(
    value: &'v [u8],
    what: &'static str,
) -> Result<(u8, u16, &'v [u8]), AttrError> {
    match value {
        [_reserved, family, p0, p1, rest @ ..] => {
            Ok((*family, u16::from_be_bytes([*p0, *p1]), rest))
        }
        _ => Err(AttrError::Malformed(what)),
    }
}

fn ip_from(family: u8, raw: &[u8], what: &'static str) -> Result<IpAddr, AttrError> {
    match family {
        FAMILY_IPV4 => {
            let octets: [u8; 4] = raw.try_into().map_err(|_| AttrError::Malformed(what))?;
            Ok(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        FAMILY_IPV6 => {
            let octets: [u8; 16] = raw.try_into().map_err(|_| AttrError::Malformed(what))?;
            Ok(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        other => Err(AttrError::UnknownFamily(other)),
    }
}

/// MAPPED-ADDRESS / ALTERNATE-SERVER / RESPONSE-ORIGIN / OTHER-ADDRESS (RFC 8489 §14.1).
pub fn decode_address(value: &[u8]) -> Result<SocketAddr, AttrError> {
    let (family, port, raw) = address_parts(value, "address")?;
    Ok(SocketAddr::new(ip_from(family, raw, "address")?, port))
}

/// XOR-MAPPED-ADDRESS / XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS (RFC 8489 §14.2):
/// the port is XORed with the cookie's top 16 bits, an IPv4 address with the cookie,
/// an IPv6 address with the cookie followed by the transaction id.
pub fn decode_xor_address(value: &[u8], tid: &TransactionId) -> Result<SocketAddr, AttrError> {
    let (family, xport, raw) = address_parts(value, "XOR address")?;
    let port = xport ^ (MAGIC_COOKIE >> 16) as u16;
    let mut ip = ip_from(family, raw, "XOR address")?;
    xor_ip(&mut ip, tid);
    Ok(SocketAddr::new(ip, port))
}

/// XOR mask of RFC 8489 §14.2 applied in place; applying it twice is the identity.
pub(super) fn xor_ip(ip: &mut IpAddr, tid: &TransactionId) {
    match ip {
        IpAddr::V4(v4) => *v4 = Ipv4Addr::from(u32::from(*v4) ^ MAGIC_COOKIE),
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(&tid.0);
            for (o, m) in octets.iter_mut().zip(mask) {
                *o ^= m;
            }
            *v6 = Ipv6Addr::from(octets);
        }
    }
}

/// A 32-bit value such as LIFETIME or PRIORITY: exactly 4 bytes.
pub fn decode_u32(value: &[u8]) -> Result<u32, AttrError> {
    let bytes: [u8; 4] = value
        .try_into()
        .map_err(|_| AttrError::Malformed("32-bit value"))?;
    Ok(u32::from_be_bytes(bytes))
}

/// USERNAME, REALM, NONCE, SOFTWARE, …: UTF-8 text.
pub fn decode_str(value: &[u8]) -> Result<&str, AttrError> {
    std::str::from_utf8(value).map_err(|_| AttrError::NotUtf8)
}

/// ERROR-CODE (RFC 8489 §14.8): 21 reserved bits, 3-bit class (hundreds), 8-bit
/// number (0..=99), then a UTF-8 reason phrase. Returns (code, reason).
pub fn decode_error_code(value: &[u8]) -> Result<(u16, &str), AttrError> {
    let [_, _, class, number, reason @ ..] = value else {
        return Err(AttrError::Malformed("ERROR-CODE"));
    };
    let class = u16::from(class & 0x07);
    let number = u16::from(*number);
    // RFC 8489 §14.8: the class is 3..=6 and the number below 100.
    if !(3..=6).contains(&class) || number > 99 {
        return Err(AttrError::Malformed("ERROR-CODE"));
    }
    Ok((class * 100 + number, decode_str(reason)?))
}

/// REQUESTED-TRANSPORT (RFC 8656 §18.8): protocol number then 3 RFFU bytes.
pub fn decode_requested_transport(value: &[u8]) -> Result<u8, AttrError> {
    match value {
        [protocol, _, _, _] => Ok(*protocol),
        _ => Err(AttrError::Malformed("REQUESTED-TRANSPORT")),
    }
}

/// REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.6, §18.11): the
/// raw family byte (0x01 IPv4, 0x02 IPv6); the caller answers 440 to other values.
pub fn decode_family(value: &[u8]) -> Result<u8, AttrError> {
    match value {
        [family, _, _, _] => Ok(*family),
        _ => Err(AttrError::Malformed("ADDRESS-FAMILY")),
    }
}

/// EVEN-PORT (RFC 8656 §18.7): one byte whose top bit R asks to reserve the next port.
pub fn decode_even_port(value: &[u8]) -> Result<bool, AttrError> {
    match value {
        [flags] => Ok(flags & 0x80 != 0),
        _ => Err(AttrError::Malformed("EVEN-PORT")),
    }
}

/// CHANNEL-NUMBER (RFC 8656 §18.1): channel number then 2 RFFU bytes. The range is
/// the caller's to check (the core answers 400 outside 0x4000..=0x4FFF, or outside
/// 0x4000..=0x7FFF with `rfc5766_channel_numbers`).
pub fn decode_channel_number(value: &[u8]) -> Result<u16, AttrError> {
    match value {
        [hi, lo, _, _] => Ok(u16::from_be_bytes([*hi, *lo])),
        _ => Err(AttrError::Malformed("CHANNEL-NUMBER")),
    }
}

/// One (algorithm, parameters) entry at the start of `value`; returns it and the
/// number of bytes it occupies including the padding of its parameters.
fn password_algorithm_entry(value: &[u8]) -> Result<((u16, &[u8]), usize), AttrError> {
    let [a0, a1, l0, l1, rest @ ..] = value else {
        return Err(AttrError::Malformed("PASSWORD-ALGORITHM"));
    };
    let alg = u16::from_be_bytes([*a0, *a1]);
    let len = usize::from(u16::from_be_bytes([*l0, *l1]));
    let params = rest
        .get(..len)
        .ok_or(AttrError::Malformed("PASSWORD-ALGORITHM"))?;
    // RFC 8489 §14.11: parameters are padded to a 32-bit boundary; the final padding
    // may be absent when the attribute's own padding supplies it.
    let used = (4 + len + 3) & !3;
    Ok(((alg, params), used.min(value.len())))
}

/// PASSWORD-ALGORITHM (RFC 8489 §14.12): (algorithm, parameters).
pub fn decode_password_algorithm(value: &[u8]) -> Result<(u16, &[u8]), AttrError> {
    let (entry, used) = password_algorithm_entry(value)?;
    if used != value.len() {
        return Err(AttrError::Malformed("PASSWORD-ALGORITHM"));
    }
    Ok(entry)
}

/// PASSWORD-ALGORITHMS (RFC 8489 §14.11): a list of (algorithm, parameters).
pub fn decode_password_algorithms(value: &[u8]) -> Result<Vec<(u16, &[u8])>, AttrError> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let (entry, used) = password_algorithm_entry(rest)?;
        out.push(entry);
        rest = rest.get(used..).unwrap_or_default();
    }
    Ok(out)
}

/// PASSWORD-ALGORITHMS value listing `algs`, each with empty parameters.
pub fn encode_password_algorithms(algs: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(algs.len() * 4);
    for alg in algs {
        out.extend_from_slice(&alg.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
    }
    out
}

/// UNKNOWN-ATTRIBUTES (RFC 8489 §14.9): a list of 16-bit types. A trailing odd byte
/// is malformed.
pub fn decode_unknown_attributes(
    value: &[u8],
) -> Result<impl Iterator<Item = u16> + '_, AttrError> {
    if !value.len().is_multiple_of(2) {
        return Err(AttrError::Malformed("UNKNOWN-ATTRIBUTES"));
    }
    Ok(value
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_rejects_wrong_lengths_and_families() {
        assert_eq!(
            decode_address(&[0, 1, 0, 80]),
            Err(AttrError::Malformed("address"))
        );
        assert_eq!(
            decode_address(&[0, 1, 0, 80, 1, 2, 3, 4, 5]),
            Err(AttrError::Malformed("address"))
        );
        assert_eq!(
            decode_address(&[0, 2, 0, 80, 1, 2, 3, 4]),
            Err(AttrError::Malformed("address"))
        );
        assert_eq!(
            decode_address(&[0, 3, 0, 80, 1, 2, 3, 4]),
            Err(AttrError::UnknownFamily(3))
        );
        assert_eq!(
            decode_address(&[0, 1, 0x0D, 0x96, 192, 0, 2, 1]),
            Ok("192.0.2.1:3478".parse().unwrap())
        );
    }

    #[test]
    fn fixed_size_values() {
        assert_eq!(decode_u32(&[0, 0, 2, 0x58]), Ok(600));
        assert!(decode_u32(&[0, 0, 2]).is_err());
        assert_eq!(decode_requested_transport(&[17, 0, 0, 0]), Ok(17));
        assert!(decode_requested_transport(&[17]).is_err());
        assert_eq!(decode_family(&[2, 0, 0, 0]), Ok(2));
        assert_eq!(decode_family(&[9, 0, 0, 0]), Ok(9));
        assert!(decode_family(&[1, 0]).is_err());
        assert_eq!(decode_even_port(&[0x80]), Ok(true));
        assert_eq!(decode_even_port(&[0x7F]), Ok(false));
        assert!(decode_even_port(&[]).is_err());
        assert_eq!(decode_channel_number(&[0x40, 0x01, 0, 0]), Ok(0x4001));
        assert!(decode_channel_number(&[0x40, 0x01]).is_err());
        assert_eq!(decode_str(b"realm"), Ok("realm"));
        assert_eq!(decode_str(&[0xFF]), Err(AttrError::NotUtf8));
    }

    #[test]
    fn error_code_values() {
        assert_eq!(
            decode_error_code(&[0, 0, 4, 1, b'U', b'n']),
            Ok((401, "Un"))
        );
        assert_eq!(decode_error_code(&[0, 0, 5, 8]), Ok((508, "")));
        assert!(decode_error_code(&[0, 0, 4]).is_err());
        assert!(decode_error_code(&[0, 0, 4, 100]).is_err());
        assert!(decode_error_code(&[0, 0, 7, 0]).is_err());
        assert!(decode_error_code(&[0, 0, 4, 1, 0xFF]).is_err());
    }

    #[test]
    fn password_algorithms_round_trip_and_reject_truncation() {
        let encoded =
            encode_password_algorithms(&[PASSWORD_ALGORITHM_SHA256, PASSWORD_ALGORITHM_MD5]);
        let decoded = decode_password_algorithms(&encoded).unwrap();
        assert_eq!(
            decoded,
            vec![
                (PASSWORD_ALGORITHM_SHA256, &[][..]),
                (PASSWORD_ALGORITHM_MD5, &[][..])
            ]
        );
        // An entry with 2 bytes of parameters, padded, then an MD5 entry.
        let with_params = [0, 9, 0, 2, 0xAA, 0xBB, 0, 0, 0, 1, 0, 0];
        assert_eq!(
            decode_password_algorithms(&with_params).unwrap(),
            vec![(9, &[0xAA, 0xBB][..]), (1, &[][..])]
        );
        assert!(decode_password_algorithms(&[0, 1, 0, 4, 1]).is_err());
        assert!(decode_password_algorithms(&[0, 1, 0]).is_err());
        assert_eq!(decode_password_algorithm(&[0, 2, 0, 0]), Ok((2, &[][..])));
        assert_eq!(
            decode_password_algorithm(&[0, 2, 0, 1, 7]),
            Ok((2, &[7][..]))
        );
        assert!(decode_password_algorithm(&[0, 2, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_password_algorithm(&[0, 2]).is_err());
    }

    #[test]
    fn unknown_attributes_list() {
        let types: Vec<u16> = decode_unknown_attributes(&[0x77, 0x77, 0x00, 0x2F])
            .unwrap()
            .collect();
        assert_eq!(types, vec![0x7777, 0x002F]);
        assert!(decode_unknown_attributes(&[0x77]).is_err());
    }
}
