//! Parser and builder tests for the STUN codec (vectors: `vectors.rs`, properties: `props.rs`).

use std::net::SocketAddr;

use super::attr::{self, *};
use super::integrity::fingerprint;
use super::*;

const TID: TransactionId = TransactionId([0xA5; 12]);

/// A message assembled by hand, so tests can write what the builder never would.
fn raw(attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (typ, value) in attrs {
        body.extend_from_slice(&typ.to_be_bytes());
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value);
        body.resize((body.len() + 3) & !3, 0);
    }
    let mut msg = Vec::new();
    msg.extend_from_slice(&message_type(Class::Request, method::ALLOCATE).to_be_bytes());
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    msg.extend_from_slice(&TID.0);
    msg.extend_from_slice(&body);
    msg
}

fn err(bytes: &[u8]) -> ParseError {
    Message::parse(bytes).expect_err("message must be refused")
}

#[test]
fn message_type_bit_layout() {
    // RFC 8489 §5 / RFC 8656 §17 well-known values.
    assert_eq!(message_type(Class::Request, method::BINDING), 0x0001);
    assert_eq!(message_type(Class::Success, method::BINDING), 0x0101);
    assert_eq!(message_type(Class::Error, method::BINDING), 0x0111);
    assert_eq!(message_type(Class::Indication, method::BINDING), 0x0011);
    assert_eq!(message_type(Class::Request, method::ALLOCATE), 0x0003);
    assert_eq!(message_type(Class::Error, method::ALLOCATE), 0x0113);
    assert_eq!(message_type(Class::Success, method::REFRESH), 0x0104);
    assert_eq!(message_type(Class::Indication, method::SEND), 0x0016);
    assert_eq!(message_type(Class::Indication, method::DATA), 0x0017);
    assert_eq!(message_type(Class::Success, method::CHANNEL_BIND), 0x0109);
    // Highest method: every method bit set, class bits clear.
    assert_eq!(message_type(Class::Request, 0x0FFF), 0x3EEF);
    for method in 0..=0x0FFF {
        for class in [
            Class::Request,
            Class::Indication,
            Class::Success,
            Class::Error,
        ] {
            let typ = message_type(class, method);
            assert_eq!(typ & 0xC000, 0);
            assert_eq!(split_message_type(typ), (class, method));
        }
    }
}

#[test]
fn parsed_header_fields() {
    let msg_bytes = raw(&[]);
    let msg = Message::parse(&msg_bytes).unwrap();
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.method(), method::ALLOCATE);
    assert_eq!(msg.transaction_id(), TID);
    assert_eq!(msg.as_bytes(), &msg_bytes[..]);
    assert_eq!(msg.attributes().count(), 0);
}

#[test]
fn is_stun_demux() {
    let msg = raw(&[]);
    assert!(is_stun(&msg));
    assert!(!is_stun(&msg[..19]));
    let mut bad = msg.clone();
    bad[0] |= 0x40;
    assert!(!is_stun(&bad));
    let mut bad = msg.clone();
    bad[7] ^= 1;
    assert!(!is_stun(&bad));
}

// --- Every malformed case is refused, each with its own error. ---

#[test]
fn rejects_shorter_than_header() {
    assert_eq!(err(&raw(&[])[..19]), ParseError::TooShort);
    assert_eq!(err(&[]), ParseError::TooShort);
}

#[test]
fn rejects_first_two_bits_set() {
    for bits in [0x40, 0x80, 0xC0] {
        let mut msg = raw(&[]);
        msg[0] |= bits;
        assert_eq!(err(&msg), ParseError::NotStun);
    }
}

#[test]
fn rejects_wrong_magic_cookie() {
    let mut msg = raw(&[]);
    msg[5] ^= 0xFF;
    assert_eq!(err(&msg), ParseError::BadMagicCookie);
}

#[test]
fn rejects_unaligned_length() {
    let mut msg = raw(&[]);
    msg[3] = 2;
    msg.extend_from_slice(&[0, 0]);
    assert_eq!(err(&msg), ParseError::LengthNotAligned(2));
}

#[test]
fn rejects_trailing_bytes() {
    let mut msg = raw(&[(attr::SOFTWARE, b"abcd")]);
    msg.extend_from_slice(&[0; 4]);
    assert_eq!(
        err(&msg),
        ParseError::LengthMismatch {
            declared: 8,
            actual: 12
        }
    );
}

#[test]
fn rejects_truncated_message() {
    let msg = raw(&[(attr::SOFTWARE, b"abcdefgh")]);
    assert_eq!(
        err(&msg[..msg.len() - 4]),
        ParseError::LengthMismatch {
            declared: 12,
            actual: 8
        }
    );
}

#[test]
fn rejects_truncated_attribute_header() {
    // Two bytes of attribute header after the header. Attributes are 4-aligned, so an
    // aligned length can never leave a partial header: the length check catches it first
    // and AttributeHeaderTruncated is a second line of defence.
    let mut msg = raw(&[]);
    msg[3] = 2;
    msg.extend_from_slice(&attr::SOFTWARE.to_be_bytes());
    assert!(Message::parse(&msg).is_err());
}

#[test]
fn rejects_value_running_past_end() {
    let mut msg = raw(&[(attr::SOFTWARE, b"abcd")]);
    // Claim 8 value bytes where 4 are present.
    msg[23] = 8;
    assert_eq!(
        err(&msg),
        ParseError::AttributeOverrun {
            typ: attr::SOFTWARE
        }
    );
    // Claim 5: the value would fit only without its 3 bytes of padding.
    let mut msg = raw(&[(attr::SOFTWARE, b"abcd")]);
    msg[23] = 5;
    assert_eq!(
        err(&msg),
        ParseError::AttributeOverrun {
            typ: attr::SOFTWARE
        }
    );
}

#[test]
fn rejects_attribute_after_fingerprint() {
    let msg = raw(&[(attr::FINGERPRINT, &[0; 4]), (attr::SOFTWARE, b"late")]);
    assert_eq!(
        err(&msg),
        ParseError::AttributeAfterFingerprint {
            typ: attr::SOFTWARE
        }
    );
}

#[test]
fn rejects_attribute_after_message_integrity() {
    let msg = raw(&[
        (attr::MESSAGE_INTEGRITY, &[0; 20]),
        (attr::USERNAME, b"late"),
    ]);
    assert_eq!(
        err(&msg),
        ParseError::AttributeAfterIntegrity {
            typ: attr::USERNAME
        }
    );
    let msg = raw(&[
        (attr::MESSAGE_INTEGRITY, &[0; 20]),
        (attr::MESSAGE_INTEGRITY, &[0; 20]),
    ]);
    assert_eq!(
        err(&msg),
        ParseError::AttributeAfterIntegrity {
            typ: attr::MESSAGE_INTEGRITY
        }
    );
}

#[test]
fn rejects_attribute_after_message_integrity_sha256() {
    let msg = raw(&[
        (attr::MESSAGE_INTEGRITY_SHA256, &[0; 32]),
        (attr::MESSAGE_INTEGRITY, &[0; 20]),
    ]);
    assert_eq!(
        err(&msg),
        ParseError::AttributeAfterIntegritySha256 {
            typ: attr::MESSAGE_INTEGRITY
        }
    );
    let msg = raw(&[
        (attr::MESSAGE_INTEGRITY_SHA256, &[0; 32]),
        (attr::REALM, b"late"),
    ]);
    assert_eq!(
        err(&msg),
        ParseError::AttributeAfterIntegritySha256 { typ: attr::REALM }
    );
}

#[test]
fn rejects_wrong_fingerprint_crc() {
    let mut msg = raw(&[(attr::SOFTWARE, b"abcd"), (attr::FINGERPRINT, &[0; 4])]);
    let at = msg.len() - 8;
    let crc = fingerprint(&msg[..at]);
    msg[at + 4..].copy_from_slice(&(crc ^ 1).to_be_bytes());
    assert_eq!(err(&msg), ParseError::BadFingerprint);
    msg[at + 4..].copy_from_slice(&crc.to_be_bytes());
    assert!(Message::parse(&msg).is_ok(), "the correct CRC is accepted");
}

#[test]
fn rejects_wrong_fingerprint_size() {
    let msg = raw(&[(attr::FINGERPRINT, &[0; 8])]);
    assert_eq!(err(&msg), ParseError::FingerprintLength(8));
}

#[test]
fn rejects_wrong_message_integrity_size() {
    let msg = raw(&[(attr::MESSAGE_INTEGRITY, &[0; 16])]);
    assert_eq!(err(&msg), ParseError::IntegrityLength(16));
}

#[test]
fn rejects_wrong_message_integrity_sha256_size() {
    for len in [0usize, 12, 18, 36] {
        let value = vec![0u8; len];
        let msg = raw(&[(attr::MESSAGE_INTEGRITY_SHA256, &value)]);
        assert_eq!(
            err(&msg),
            ParseError::IntegritySha256Length(len),
            "length {len}"
        );
    }
    for len in [16usize, 20, 24, 28, 32] {
        let value = vec![0u8; len];
        assert!(Message::parse(&raw(&[(attr::MESSAGE_INTEGRITY_SHA256, &value)])).is_ok());
    }
}

#[test]
fn rejects_more_attributes_than_the_cap() {
    let attrs: Vec<(u16, &[u8])> = (0..MAX_ATTRIBUTES as u16)
        .map(|i| (0x8100 + i, &b"x"[..]))
        .collect();
    let msg = raw(&attrs);
    assert_eq!(
        Message::parse(&msg).unwrap().attribute_count(),
        MAX_ATTRIBUTES
    );
    let mut attrs = attrs;
    attrs.push((attr::SOFTWARE, b"one too many"));
    assert_eq!(err(&raw(&attrs)), ParseError::TooManyAttributes);
}

// --- Accessors ---

#[test]
fn get_returns_first_occurrence_and_has_reports_presence() {
    let msg_bytes = raw(&[
        (attr::REALM, b"first"),
        (attr::REALM, b"second"),
        (attr::LIFETIME, &[0, 0, 0, 1]),
    ]);
    let msg = Message::parse(&msg_bytes).unwrap();
    assert_eq!(msg.get(attr::REALM), Some(&b"first"[..]));
    assert!(msg.has(attr::LIFETIME));
    assert!(!msg.has(attr::NONCE));
    assert_eq!(msg.get(attr::NONCE), None);
}

#[test]
fn unknown_required_lists_each_unknown_comprehension_required_type_once() {
    let msg_bytes = raw(&[
        (attr::USERNAME, b"u"),
        (0x7777, b"?"),
        (0xC001, b"optional"),
        (0x7777, b"again"),
        (0x0031, b""),
    ]);
    let msg = Message::parse(&msg_bytes).unwrap();
    assert_eq!(
        msg.unknown_required(&[attr::USERNAME]),
        vec![0x7777, 0x0031]
    );
    assert_eq!(
        msg.unknown_required(&[attr::USERNAME, 0x7777, 0x0031]),
        Vec::<u16>::new()
    );
}

// --- Builder ---

#[test]
fn builder_round_trips_every_attribute_kind() {
    let v4: SocketAddr = "203.0.113.7:49152".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::42]:3478".parse().unwrap();
    let tid = TransactionId(*b"0123456789ab");
    let algs = encode_password_algorithms(&[PASSWORD_ALGORITHM_SHA256, PASSWORD_ALGORITHM_MD5]);
    let mut buf = vec![0xEE; 7]; // stale contents: the builder clears them
    let mut b = MessageBuilder::new(&mut buf, Class::Error, method::ALLOCATE, tid);
    b.add(attr::USERNAME, b"alice");
    b.add(attr::DATA, b"");
    b.add_u32(attr::LIFETIME, 600);
    b.add_address(attr::MAPPED_ADDRESS, v4);
    b.add_address(attr::ALTERNATE_SERVER, v6);
    b.add_xor_address(attr::XOR_RELAYED_ADDRESS, v4);
    b.add_xor_address(attr::XOR_PEER_ADDRESS, v6);
    b.add_error_code(420, "Unknown Attribute");
    b.add_unknown_attributes(&[0x7777, 0x0031, 0x0032]);
    b.add(attr::PASSWORD_ALGORITHMS, &algs);
    b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    b.add(attr::EVEN_PORT, &[0x80]);
    b.add_message_integrity(b"sha1 key");
    b.add_message_integrity_sha256(b"sha256 key");
    b.add_fingerprint();
    assert!(!b.overflowed());
    let len = b.len();
    assert_eq!(len, buf.len());
    assert_eq!(
        usize::from(u16::from_be_bytes([buf[2], buf[3]])),
        len - HEADER_LEN
    );

    let msg = Message::parse(&buf).unwrap();
    assert_eq!(
        (msg.class(), msg.method(), msg.transaction_id()),
        (Class::Error, method::ALLOCATE, tid)
    );
    assert_eq!(msg.get(attr::USERNAME), Some(&b"alice"[..]));
    assert_eq!(msg.get(attr::DATA), Some(&b""[..]));
    assert_eq!(decode_u32(msg.get(attr::LIFETIME).unwrap()), Ok(600));
    assert_eq!(
        decode_address(msg.get(attr::MAPPED_ADDRESS).unwrap()),
        Ok(v4)
    );
    assert_eq!(
        decode_address(msg.get(attr::ALTERNATE_SERVER).unwrap()),
        Ok(v6)
    );
    assert_eq!(
        decode_xor_address(msg.get(attr::XOR_RELAYED_ADDRESS).unwrap(), &tid),
        Ok(v4)
    );
    assert_eq!(
        decode_xor_address(msg.get(attr::XOR_PEER_ADDRESS).unwrap(), &tid),
        Ok(v6)
    );
    assert_eq!(
        decode_error_code(msg.get(attr::ERROR_CODE).unwrap()),
        Ok((420, "Unknown Attribute"))
    );
    let unknown: Vec<u16> = decode_unknown_attributes(msg.get(attr::UNKNOWN_ATTRIBUTES).unwrap())
        .unwrap()
        .collect();
    assert_eq!(unknown, vec![0x7777, 0x0031, 0x0032]);
    assert_eq!(
        decode_password_algorithms(msg.get(attr::PASSWORD_ALGORITHMS).unwrap()).unwrap(),
        vec![
            (PASSWORD_ALGORITHM_SHA256, &[][..]),
            (PASSWORD_ALGORITHM_MD5, &[][..])
        ]
    );
    assert_eq!(
        decode_requested_transport(msg.get(attr::REQUESTED_TRANSPORT).unwrap()),
        Ok(17)
    );
    assert_eq!(
        decode_even_port(msg.get(attr::EVEN_PORT).unwrap()),
        Ok(true)
    );
    assert_eq!(msg.check_integrity_sha1(b"sha1 key"), Some(true));
    assert_eq!(msg.check_integrity_sha1(b"sha256 key"), Some(false));
    assert_eq!(msg.check_integrity_sha256(b"sha256 key"), Some(true));
    assert_eq!(msg.check_integrity_sha256(b"sha1 key"), Some(false));
    let last: Vec<u16> = msg.attributes().map(|a| a.typ).skip(12).collect();
    assert_eq!(
        last,
        [
            attr::MESSAGE_INTEGRITY,
            attr::MESSAGE_INTEGRITY_SHA256,
            attr::FINGERPRINT
        ]
    );
}

#[test]
fn truncated_sha256_integrity_verifies() {
    // RFC 8489 §14.6: a sender may keep only the leftmost 16..=32 bytes (multiple of 4).
    let mut full = Vec::new();
    let mut b = MessageBuilder::new(&mut full, Class::Request, method::REFRESH, TID);
    b.add(attr::USERNAME, b"bob");
    b.add_message_integrity_sha256(b"key");
    let tag = full[full.len() - 32..].to_vec();
    for keep in [16usize, 20, 28] {
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, Class::Request, method::REFRESH, TID);
        b.add(attr::USERNAME, b"bob");
        // The length field must count the truncated attribute, so recompute the HMAC.
        let header_len = (buf.len() + 4 + keep - HEADER_LEN) as u16;
        buf[2..4].copy_from_slice(&header_len.to_be_bytes());
        let mac = integrity::hmac_sha256(b"key", &buf[..HEADER_LEN], &buf[HEADER_LEN..]);
        buf.extend_from_slice(&attr::MESSAGE_INTEGRITY_SHA256.to_be_bytes());
        buf.extend_from_slice(&(keep as u16).to_be_bytes());
        buf.extend_from_slice(&mac[..keep]);
        let msg = Message::parse(&buf).unwrap();
        assert_eq!(
            msg.check_integrity_sha256(b"key"),
            Some(true),
            "kept {keep}"
        );
        assert_eq!(msg.check_integrity_sha256(b"other"), Some(false));
    }
    assert_eq!(
        Message::parse(&full)
            .unwrap()
            .check_integrity_sha256(b"key"),
        Some(true)
    );
    assert_eq!(tag.len(), 32);
}

#[test]
fn error_code_reason_is_cut_at_a_character_boundary() {
    let long = "é".repeat(500); // 1000 bytes
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, Class::Error, method::BINDING, TID);
    b.add_error_code(400, &long);
    let msg = Message::parse(&buf).unwrap();
    let (code, reason) = decode_error_code(msg.get(attr::ERROR_CODE).unwrap()).unwrap();
    assert_eq!(code, 400);
    assert_eq!(reason.len(), 762);
    assert!(long.starts_with(reason));
}

#[test]
fn oversized_attribute_is_refused_without_panicking() {
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, Class::Indication, method::DATA, TID);
    b.add_xor_address(attr::XOR_PEER_ADDRESS, "192.0.2.9:9".parse().unwrap());
    let before = b.len();
    let huge = vec![0u8; 0xFFFC];
    assert_eq!(
        b.try_add(attr::DATA, &huge),
        Err(BuildError::TooLong(0xFFFC))
    );
    assert!(!b.overflowed());
    b.add(attr::DATA, &huge);
    assert!(b.overflowed());
    assert_eq!(b.len(), before);
    b.add(attr::DATA, &vec![0u8; 70_000]);
    assert_eq!(b.len(), before);
    // The message is still well-formed.
    assert!(Message::parse(&buf).is_ok());
}

#[test]
fn largest_message_builds_and_parses() {
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, Class::Indication, method::DATA, TID);
    b.add(attr::DATA, &vec![7u8; 0xFFFC - 4 - 8]);
    b.add_fingerprint();
    assert!(!b.overflowed());
    assert_eq!(b.len(), MAX_MESSAGE_LEN);
    assert_eq!(
        Message::parse(&buf)
            .unwrap()
            .get(attr::DATA)
            .map(<[u8]>::len),
        Some(0xFFFC - 12)
    );
}
