//! STUN/TURN attribute types and decoders for their values.
//!
//! Decoders take the attribute value exactly as [`super::Message::get`] returns it
//! (without padding) and never panic: a malformed value is an [`AttrError`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{TransactionId, MAGIC_COOKIE};

// Comprehension-required range 0x0000..=0x7FFF (RFC 8489 §14, §18.3).
pub const MAPPED_ADDRESS: u16 = 0x0001;
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const DONT_FRAGMENT: u16 = 0x001A;
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
pub const USERHASH: u16 = 0x001E;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const RESERVATION_TOKEN: u16 = 0x0022;
pub const PRIORITY: u16 = 0x0024;
pub const USE_CANDIDATE: u16 = 0x0025;
pub const PADDING: u16 = 0x0026;
pub const RESPONSE_PORT: u16 = 0x0027;
pub const CONNECTION_ID: u16 = 0x002A;

// Comprehension-optional range 0x8000..=0xFFFF.
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
pub const ICMP: u16 = 0x8004;
pub const SOFTWARE: u16 = 0x8022;
pub const ALTERNATE_SERVER: u16 = 0x8023;
pub const TRANSACTION_TRANSMIT_COUNTER: u16 = 0x8025;
pub const CACHE_TIMEOUT: u16 = 0x8027;
pub const FINGERPRINT: u16 = 0x8028;
pub const ICE_CONTROLLED: u16 = 0x8029;
pub const ICE_CONTROLLING: u16 = 0x802A;
pub const RESPONSE_ORIGIN: u16 = 0x802B;
pub const OTHER_ADDRESS: u16 = 0x802C;

/// RFC 8489 §18.5: PASSWORD-ALGORITHM numbers.
pub const PASSWORD_ALGORITHM_MD5: u16 = 0x0001;
pub const PASSWORD_ALGORITHM_SHA256: u16 = 0x0002;

/// RFC 8489 §14.1: address family codes in (XOR-)MAPPED-ADDRESS style values.
pub const FAMILY_IPV4: u8 = 0x01;
pub const FAMILY_IPV6: u8 = 0x02;

/// RFC 8489 §14.2: types 0x0000..=0x7FFF must be understood by the receiver.
pub fn is_comprehension_required(typ: u16) -> bool {
    typ < 0x8000
}

/// Why an attribute value could not be decoded. The string names the attribute kind.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttrError {
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("unknown address family {0:#04x}")]
    UnknownFamily(u8),
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

/// REQUESTED-TRANSPORT (RFC 8656 §14.7): protocol number then 3 RFFU bytes.
pub fn decode_requested_transport(value: &[u8]) -> Result<u8, AttrError> {
    match value {
        [protocol, _, _, _] => Ok(*protocol),
        _ => Err(AttrError::Malformed("REQUESTED-TRANSPORT")),
    }
}

/// REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §14.1, §14.2): the
/// raw family byte (0x01 IPv4, 0x02 IPv6); the caller answers 440 to other values.
pub fn decode_family(value: &[u8]) -> Result<u8, AttrError> {
    match value {
        [family, _, _, _] => Ok(*family),
        _ => Err(AttrError::Malformed("ADDRESS-FAMILY")),
    }
}

/// EVEN-PORT (RFC 8656 §14.6): one byte whose top bit R asks to reserve the next port.
pub fn decode_even_port(value: &[u8]) -> Result<bool, AttrError> {
    match value {
        [flags] => Ok(flags & 0x80 != 0),
        _ => Err(AttrError::Malformed("EVEN-PORT")),
    }
}

/// CHANNEL-NUMBER (RFC 8656 §14.1): channel number then 2 RFFU bytes. The range is
/// the caller's to check (it answers 400 outside 0x4000..=0x4FFF).
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
