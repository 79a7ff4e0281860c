//! RFC 5769 test vectors (§2.1–§2.4) and RFC 8489 Appendix B.1 as corrected by
//! verified erratum 6268, as printed in those documents.

use super::attr::{self, decode_str, decode_xor_address};
use super::integrity::{long_term_key_md5, long_term_key_sha256, userhash};
use super::{method, Class, Message, MessageBuilder, ParseError};

/// Hex with whitespace, as printed in the RFCs.
pub(super) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

pub(super) const SAMPLE_REQUEST: &str = "
0001 0058 2112a442 b7e7a701bc34d686fa87dfae
8022 0010 5354554e20746573742063 6c69656e74
0024 0004 6e0001ff
8029 0008 932ff9b151263b36
0006 0009 6576746a3a68367659202020
0008 0014 9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2
8028 0004 e57a3bcf";

pub(super) const SAMPLE_IPV4_RESPONSE: &str = "
0101 003c 2112a442 b7e7a701bc34d686fa87dfae
8022 000b 7465737420766563746f7220
0020 0008 0001a147e112a643
0008 0014 2b91f599fd9e90c38c7489f92af9ba53f06be7d7
8028 0004 c07d4c96";

const SAMPLE_IPV6_RESPONSE: &str = "
0101 0048 2112a442 b7e7a701bc34d686fa87dfae
8022 000b 7465737420766563746f7220
0020 0014 0002a1470113a9faa5d3f179bc25f4b5bed2b9d9
0008 0014 a382954e4be67bf11784c97c8292c275bfe3ed41
8028 0004 c8fb0b4c";

const SAMPLE_REQUEST_LONG_TERM: &str = "
0001 0060 2112a442 78ad3433c6ad72c029da412e
0006 0012 e3839ee38388e383aae38383e382afe382b90000
0015 001c 662f2f3439396b393534643 64f4c33346f4c394653547679363473 41
0014 000b 6578616d706c652e6f726700
0008 0014 f67024656dd64a3e02b8e0712e85c9a28ca89666";

const RFC8489_B1_CORRECTED: &str = "
0001 0090 2112a442 78ad3433c6ad72c029da412e
001e 0020 4a3cf38fef6992bda952c6780417da0f248194 15569e60b205c46e41407f1704
0015 0029 6f624d61744a6f733241414143662f2f3439396b393534643 64f4c33346f4c394653547679363473 41000000
0014 000b 6578616d706c652e6f726700
001d 0004 00020000
001c 0020 b5c7bf005b6c52a21c51c5e892f81924136296cb927c43149309278cc6518e65";

pub(super) const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const LT_USER: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
const LT_REALM: &str = "example.org";
/// "The\u{00AD}M\u{00AA}tr\u{2168}" after SASLprep (OpaqueString).
const LT_PASSWORD: &str = "TheMatrIX";

/// Flipping any single bit of the attribute area breaks either parsing (FINGERPRINT,
/// framing) or integrity; this helper flips one bit inside the integrity-covered body.
fn flip_bit(msg: &[u8], at: usize) -> Vec<u8> {
    let mut out = msg.to_vec();
    out[at] ^= 0x01;
    out
}

#[test]
fn rfc5769_sample_request() {
    let bytes = hex(SAMPLE_REQUEST);
    assert_eq!(bytes.len(), 108);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.method(), method::BINDING);
    assert_eq!(msg.get(attr::USERNAME), Some(&b"evtj:h6vY"[..]));
    assert_eq!(
        decode_str(msg.get(attr::SOFTWARE).unwrap()),
        Ok("STUN test client")
    );
    assert_eq!(msg.get(attr::PRIORITY), Some(&[0x6e, 0x00, 0x01, 0xff][..]));
    assert!(msg.has(attr::FINGERPRINT));
    assert_eq!(msg.check_integrity_sha1(SHORT_TERM_PASSWORD), Some(true));
    assert_eq!(msg.check_integrity_sha1(b"wrong"), Some(false));
    assert_eq!(msg.check_integrity_sha256(SHORT_TERM_PASSWORD), None);
    let types: Vec<u16> = msg.attributes().map(|a| a.typ).collect();
    assert_eq!(types, [0x8022, 0x0024, 0x8029, 0x0006, 0x0008, 0x8028]);
}

#[test]
fn rfc5769_ipv4_response() {
    let bytes = hex(SAMPLE_IPV4_RESPONSE);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.class(), Class::Success);
    assert_eq!(msg.method(), method::BINDING);
    let addr = decode_xor_address(
        msg.get(attr::XOR_MAPPED_ADDRESS).unwrap(),
        &msg.transaction_id(),
    );
    assert_eq!(addr, Ok("192.0.2.1:32853".parse().unwrap()));
    assert_eq!(msg.check_integrity_sha1(SHORT_TERM_PASSWORD), Some(true));
}

#[test]
fn rfc5769_ipv6_response() {
    let bytes = hex(SAMPLE_IPV6_RESPONSE);
    let msg = Message::parse(&bytes).unwrap();
    let addr = decode_xor_address(
        msg.get(attr::XOR_MAPPED_ADDRESS).unwrap(),
        &msg.transaction_id(),
    );
    assert_eq!(
        addr,
        Ok("[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap())
    );
    assert_eq!(msg.check_integrity_sha1(SHORT_TERM_PASSWORD), Some(true));
}

#[test]
fn rfc5769_long_term_request() {
    let bytes = hex(SAMPLE_REQUEST_LONG_TERM);
    assert_eq!(bytes.len(), 116);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(decode_str(msg.get(attr::USERNAME).unwrap()), Ok(LT_USER));
    assert_eq!(decode_str(msg.get(attr::REALM).unwrap()), Ok(LT_REALM));
    assert_eq!(
        decode_str(msg.get(attr::NONCE).unwrap()),
        Ok("f//499k954d6OL34oL9FSTvy64sA")
    );
    assert!(!msg.has(attr::FINGERPRINT));
    let key = long_term_key_md5(LT_USER, LT_REALM, LT_PASSWORD);
    assert_eq!(msg.check_integrity_sha1(&key), Some(true));
    // The unprepared password gives a different key.
    let raw = long_term_key_md5(LT_USER, LT_REALM, "The\u{00AD}M\u{00AA}tr\u{2168}");
    assert_eq!(msg.check_integrity_sha1(&raw), Some(false));
}

#[test]
fn rfc8489_b1_sha256_request() {
    let bytes = hex(RFC8489_B1_CORRECTED);
    assert_eq!(bytes.len(), 164);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(
        msg.get(attr::USERHASH),
        Some(&userhash(LT_USER, LT_REALM)[..])
    );
    assert_eq!(
        attr::decode_password_algorithm(msg.get(attr::PASSWORD_ALGORITHM).unwrap()),
        Ok((attr::PASSWORD_ALGORITHM_SHA256, &[][..]))
    );
    let key = long_term_key_sha256(LT_USER, LT_REALM, LT_PASSWORD);
    assert_eq!(msg.check_integrity_sha256(&key), Some(true));
    assert_eq!(msg.check_integrity_sha1(&key), None);
    let md5_key = long_term_key_md5(LT_USER, LT_REALM, LT_PASSWORD);
    assert_eq!(msg.check_integrity_sha256(&md5_key), Some(false));
}

#[test]
fn one_bit_flip_breaks_integrity() {
    // No FINGERPRINT here, so the flipped message still parses and only MI can catch it.
    let bytes = hex(SAMPLE_REQUEST_LONG_TERM);
    let key = long_term_key_md5(LT_USER, LT_REALM, LT_PASSWORD);
    for at in [0, 1, 8, 19, 24, 60, 90, 100, 115] {
        let flipped = flip_bit(&bytes, at);
        let msg = Message::parse(&flipped).unwrap();
        assert_eq!(
            msg.check_integrity_sha1(&key),
            Some(false),
            "bit flipped at {at}"
        );
    }
    let b1 = hex(RFC8489_B1_CORRECTED);
    let key = long_term_key_sha256(LT_USER, LT_REALM, LT_PASSWORD);
    let flipped = flip_bit(&b1, 30);
    assert_eq!(
        Message::parse(&flipped)
            .unwrap()
            .check_integrity_sha256(&key),
        Some(false)
    );
    // The MAC value itself.
    let flipped = flip_bit(&b1, b1.len() - 1);
    assert_eq!(
        Message::parse(&flipped)
            .unwrap()
            .check_integrity_sha256(&key),
        Some(false)
    );
}

#[test]
fn one_bit_flip_breaks_fingerprint() {
    for vector in [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE] {
        let bytes = hex(vector);
        // Byte 27 is inside SOFTWARE, the first attribute of each of these.
        let flipped = flip_bit(&bytes, 27);
        assert_eq!(
            Message::parse(&flipped).unwrap_err(),
            ParseError::BadFingerprint
        );
        let flipped = flip_bit(&bytes, bytes.len() - 1);
        assert_eq!(
            Message::parse(&flipped).unwrap_err(),
            ParseError::BadFingerprint
        );
    }
}

#[test]
fn builder_reproduces_rfc5769_ipv4_response() {
    let expected = hex(SAMPLE_IPV4_RESPONSE);
    let parsed = Message::parse(&expected).unwrap();
    let tid = parsed.transaction_id();
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, Class::Success, method::BINDING, tid);
    // RFC 5769 §2.2: SOFTWARE is "test vector" (11 bytes) padded with one space, which
    // MESSAGE-INTEGRITY and FINGERPRINT cover.
    b.add_with_padding(attr::SOFTWARE, b"test vector", b' ');
    b.add_xor_address(attr::XOR_MAPPED_ADDRESS, "192.0.2.1:32853".parse().unwrap());
    b.add_message_integrity(SHORT_TERM_PASSWORD);
    b.add_fingerprint();
    assert!(!b.overflowed());
    assert_eq!(buf, expected);
}

#[test]
fn builder_reproduces_rfc5769_ipv6_response() {
    let expected = hex(SAMPLE_IPV6_RESPONSE);
    let tid = Message::parse(&expected).unwrap().transaction_id();
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, Class::Success, method::BINDING, tid);
    b.add_with_padding(attr::SOFTWARE, b"test vector", b' ');
    b.add_xor_address(
        attr::XOR_MAPPED_ADDRESS,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap(),
    );
    b.add_message_integrity(SHORT_TERM_PASSWORD);
    b.add_fingerprint();
    assert_eq!(buf, expected);
}

#[test]
fn builder_with_zero_padding_differs_only_in_padding_and_verifies() {
    let vector = hex(SAMPLE_IPV4_RESPONSE);
    let tid = Message::parse(&vector).unwrap().transaction_id();
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, Class::Success, method::BINDING, tid);
    b.add(attr::SOFTWARE, b"test vector");
    b.add_xor_address(attr::XOR_MAPPED_ADDRESS, "192.0.2.1:32853".parse().unwrap());
    b.add_message_integrity(SHORT_TERM_PASSWORD);
    b.add_fingerprint();
    assert_eq!(buf.len(), vector.len());
    // Byte 35 is SOFTWARE's padding; everything before it is identical.
    assert_eq!(buf[..35], vector[..35]);
    assert_eq!(buf[35], 0);
    let msg = Message::parse(&buf).unwrap();
    assert_eq!(msg.get(attr::SOFTWARE), Some(&b"test vector"[..]));
    assert_eq!(msg.check_integrity_sha1(SHORT_TERM_PASSWORD), Some(true));
}
