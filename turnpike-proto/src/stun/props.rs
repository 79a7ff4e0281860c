//! Property tests for the STUN codec: build/parse round trips and parser robustness.

use std::net::SocketAddr;

use proptest::prelude::*;

use super::attr::{self, *};
use super::*;

/// Attribute types the builder's plain `add` may carry without special meaning.
fn plain_type() -> impl Strategy<Value = u16> {
    any::<u16>().prop_filter("integrity/fingerprint have structure", |t| {
        ![
            attr::MESSAGE_INTEGRITY,
            attr::MESSAGE_INTEGRITY_SHA256,
            attr::FINGERPRINT,
        ]
        .contains(t)
    })
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

proptest! {
    #[test]
    fn build_then_parse_preserves_attributes(
        attrs in proptest::collection::vec((plain_type(), proptest::collection::vec(any::<u8>(), 0..64)), 0..=MAX_ATTRIBUTES - 3),
        tid in any::<[u8; 12]>(),
        method in 0u16..=0x0FFF,
        class in 0u16..4,
        with_trailer in any::<bool>(),
    ) {
        let tid = TransactionId(tid);
        let class = Class::from_bits(class);
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, class, method, tid);
        for (typ, value) in &attrs {
            b.add(*typ, value);
        }
        if with_trailer {
            b.add_message_integrity(b"k1");
            b.add_message_integrity_sha256(b"k2");
            b.add_fingerprint();
        }
        let msg = Message::parse(&buf).unwrap();
        prop_assert_eq!(msg.class(), class);
        prop_assert_eq!(msg.method(), method);
        prop_assert_eq!(msg.transaction_id(), tid);
        let got: Vec<(u16, Vec<u8>)> = msg.attributes().take(attrs.len()).map(|a| (a.typ, a.value.to_vec())).collect();
        prop_assert_eq!(got, attrs.clone());
        prop_assert_eq!(msg.attribute_count(), attrs.len() + if with_trailer { 3 } else { 0 });
        if with_trailer {
            prop_assert_eq!(msg.check_integrity_sha1(b"k1"), Some(true));
            prop_assert_eq!(msg.check_integrity_sha256(b"k2"), Some(true));
        }
    }

    #[test]
    fn xor_address_round_trips(addr in socket_addr(), tid in any::<[u8; 12]>()) {
        let tid = TransactionId(tid);
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, Class::Success, method::ALLOCATE, tid);
        b.add_xor_address(attr::XOR_RELAYED_ADDRESS, addr);
        b.add_address(attr::MAPPED_ADDRESS, addr);
        let msg = Message::parse(&buf).unwrap();
        prop_assert_eq!(decode_xor_address(msg.get(attr::XOR_RELAYED_ADDRESS).unwrap(), &tid), Ok(addr));
        prop_assert_eq!(decode_address(msg.get(attr::MAPPED_ADDRESS).unwrap()), Ok(addr));
    }

    #[test]
    fn parse_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(msg) = Message::parse(&bytes) {
            let _ = msg.check_integrity_sha1(b"k");
            let _ = msg.check_integrity_sha256(b"k");
            let _ = msg.attributes().count();
        }
    }

    #[test]
    fn parse_of_arbitrary_bodies_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..50).prop_map(|mut v| { v.truncate(v.len() & !3); v }),
        typ in 0u16..0x4000,
    ) {
        // A valid header in front of random attribute bytes reaches the attribute walk.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&typ.to_be_bytes());
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        bytes.extend_from_slice(&[0; 12]);
        bytes.extend_from_slice(&body);
        if let Ok(msg) = Message::parse(&bytes) {
            let _ = msg.check_integrity_sha1(b"k");
            let _ = msg.check_integrity_sha256(b"k");
            let _ = msg.unknown_required(&[]);
            for a in msg.attributes() {
                let _ = decode_xor_address(a.value, &msg.transaction_id());
                let _ = decode_error_code(a.value);
                let _ = decode_password_algorithms(a.value);
            }
        }
    }
}
