//! The STUN layer of the core: Binding (RFC 8489 §6.3), silent discard of malformed
//! input and of messages that need no answer, 420 for unknown comprehension-required
//! attributes, FINGERPRINT mirroring, and robustness against arbitrary bytes.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod core_harness;

use core_harness::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use turnpike::proto::stats::DropReason;
use turnpike::proto::stun::{attr, method, Class, MessageBuilder, TransactionId};
use turnpike::proto::Transport;

const TID: TransactionId = TransactionId([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

fn binding(extra: &dyn Fn(&mut MessageBuilder<'_>), fingerprint: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, Class::Request, method::BINDING, TID);
    extra(&mut b);
    if fingerprint {
        b.add_fingerprint();
    }
    buf
}

fn drops(net: &Net, reason: DropReason) -> u64 {
    net.server.stats().drops[reason as usize]
}

#[test]
fn binding_reports_the_clients_reflexive_address() {
    let mut net = Net::new();
    for (transport, remote_ip, local) in [
        (Transport::Udp, "198.51.100.7", LISTEN),
        (Transport::Tcp, "198.51.100.8", LISTEN),
        (Transport::Udp, "2001:db8:99::7", LISTEN_V6),
    ] {
        let id = net.id_on(transport, remote_ip, local);
        let reply = net.exchange(id, &binding(&no_attrs, false));
        reply.assert_ok();
        assert_eq!(reply.method(), method::BINDING);
        assert_eq!(reply.tid(), TID);
        assert_eq!(reply.xor(attr::XOR_MAPPED_ADDRESS), Some(id.remote));
        // Unauthenticated: nothing but the address (no SOFTWARE, no integrity).
        assert_eq!(reply.types(), vec![attr::XOR_MAPPED_ADDRESS]);
    }
}

#[test]
fn fingerprint_in_the_response_iff_the_request_had_one() {
    let mut net = Net::new();
    let id = net.udp_id();
    let with = net.exchange(id, &binding(&no_attrs, true));
    with.assert_ok();
    // `Message::parse` already verified the CRC; it must also be the last attribute.
    assert_eq!(with.types().last(), Some(&attr::FINGERPRINT));
    let without = net.exchange(id, &binding(&no_attrs, false));
    assert!(!without.has(attr::FINGERPRINT));

    // Error responses mirror it too.
    let unknown = net.exchange(id, &binding(&|b| b.add(0x7777, &[0; 4]), true));
    unknown.assert_error(420);
    assert_eq!(unknown.types().last(), Some(&attr::FINGERPRINT));
}

#[test]
fn unknown_comprehension_required_attribute_gets_420_optional_is_ignored() {
    let mut net = Net::new();
    let id = net.udp_id();
    // RFC 8489 §6.3.1: 0x0000–0x7FFF must be understood; 0x8000–0xFFFF may be ignored.
    let reply = net.exchange(
        id,
        &binding(
            &|b| {
                b.add(0xC001, b"optional");
                b.add(0x7777, &[1, 2, 3, 4]);
            },
            false,
        ),
    );
    reply.assert_error(420);
    assert_eq!(reply.get(attr::UNKNOWN_ATTRIBUTES), Some(vec![0x77, 0x77]));

    let reply = net.exchange(id, &binding(&|b| b.add(0xC001, b"optional"), false));
    reply.assert_ok();
    assert_eq!(reply.xor(attr::XOR_MAPPED_ADDRESS), Some(id.remote));
}

#[test]
fn authenticated_request_with_unknown_attribute_gets_signed_420() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    let reply = alice.allocate_with(&mut net, &|b| b.add(0x7777, &[0; 4]));
    reply.assert_error(420);
    assert_eq!(reply.get(attr::UNKNOWN_ATTRIBUTES), Some(vec![0x77, 0x77]));
    assert_eq!(reply.msg().check_integrity_sha1(&alice.key()), Some(true));
    // Nothing was allocated.
    assert_eq!(net.server.allocation_count(), 0);
    assert!(net.open_requests.is_empty());
}

#[test]
fn no_answer_to_indications_and_responses() {
    let mut net = Net::new();
    let id = net.udp_id();
    let client = Client::new(id, "alice", "alice-pw");
    for class in [Class::Indication, Class::Success, Class::Error] {
        let bytes = client.unsigned(class, method::BINDING, TID, &no_attrs);
        assert_eq!(net.input(id, &bytes), None);
        assert!(net.drain(id).is_empty(), "{class:?} must not be answered");
    }
    // A Data indication from a client is meaningless and equally ignored.
    let bytes = client.unsigned(Class::Indication, method::DATA, TID, &no_attrs);
    assert_eq!(net.input(id, &bytes), None);
    assert!(net.drain(id).is_empty());
    assert_eq!(drops(&net, DropReason::Ignored), 4);
}

#[test]
fn malformed_messages_are_silently_discarded() {
    let mut net = Net::new();
    let id = net.udp_id();
    let good = binding(&|b| b.add(attr::SOFTWARE, b"client"), false);
    // Sanity: the unmodified message is answered.
    net.exchange(id, &good).assert_ok();

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    cases.push(("empty", Vec::new()));
    cases.push(("header only, cut", good[..19].to_vec()));
    cases.push(("truncated body", good[..good.len() - 4].to_vec()));
    let mut bad_len = good.clone();
    bad_len[3] += 2; // not a multiple of 4
    cases.push(("length not aligned", bad_len));
    let mut long_len = good.clone();
    long_len[3] += 4; // claims more than is there
    cases.push(("length beyond the datagram", long_len));
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0, 0, 0, 0]);
    cases.push(("trailing bytes", trailing));
    let mut cookie = good.clone();
    cookie[4] ^= 0xFF;
    cases.push(("bad magic cookie", cookie));
    let mut attr_overrun = good.clone();
    attr_overrun[22..24].copy_from_slice(&200u16.to_be_bytes());
    cases.push(("attribute runs past the end", attr_overrun));
    cases.push((
        "attribute after FINGERPRINT",
        binding(
            &|b| {
                b.add_fingerprint();
                b.add(attr::SOFTWARE, b"late");
            },
            false,
        ),
    ));
    cases.push((
        "attribute after MESSAGE-INTEGRITY",
        binding(
            &|b| {
                b.add_message_integrity(b"key");
                b.add(attr::SOFTWARE, b"late");
            },
            false,
        ),
    ));
    let mut bad_crc = binding(&no_attrs, true);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    cases.push(("wrong FINGERPRINT", bad_crc));
    cases.push(("not STUN, not ChannelData", vec![0xFF; 24]));

    let n = cases.len() as u64;
    for (what, bytes) in cases {
        assert_eq!(net.input(id, &bytes), None, "{what}");
        assert!(net.drain(id).is_empty(), "{what}: must not be answered");
    }
    assert_eq!(drops(&net, DropReason::Malformed), n);
}

#[test]
fn unknown_method_request_gets_400() {
    let mut net = Net::new();
    let id = net.udp_id();
    let mut buf = Vec::new();
    MessageBuilder::new(&mut buf, Class::Request, 0x0FF, TID);
    let reply = net.exchange(id, &buf);
    reply.assert_error(400);
    assert_eq!(reply.method(), 0x0FF);
}

#[test]
fn arbitrary_and_mutated_input_never_panics_and_answers_are_well_formed() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice.allocate(&mut net);
    alice
        .create_permission(&mut net, &[addr(PEER_A)])
        .assert_ok();
    alice
        .channel_bind(&mut net, 0x4001, addr(PEER_A))
        .assert_ok();
    let tid = alice.tid();
    let valid = [
        alice.signed(method::REFRESH, tid, &|b| b.add_u32(attr::LIFETIME, 600)),
        alice.signed(method::CHANNEL_BIND, tid, &|b| {
            b.add(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0]);
            b.add_xor_address(attr::XOR_PEER_ADDRESS, addr(PEER_A));
        }),
        channel_data_bytes(0x4001, b"media"),
        binding(&|b| b.add(0xC001, b"x"), true),
    ];
    let mut rng = StdRng::seed_from_u64(99);
    for i in 0..4000 {
        let mut bytes = valid[i % valid.len()].clone();
        match rng.gen_range(0..4) {
            0 => {
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..bytes.len());
                    bytes[at] = rng.gen();
                }
            }
            1 => bytes.truncate(rng.gen_range(0..bytes.len())),
            2 => bytes.extend((0..rng.gen_range(1..8)).map(|_| rng.gen::<u8>())),
            _ => {
                bytes = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
            }
        }
        net.input(alice.id, &bytes);
        for reply in net.drain(alice.id) {
            // Every answer parses (and `msg()` would panic otherwise).
            assert!(matches!(reply.class(), Class::Success | Class::Error));
        }
    }
    // Garbage from peers too, of every length the buffer allows.
    let relay = *net.open.iter().next().expect("alice has a relay");
    for len in 0..300 {
        let payload: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let out = net.peer_send(relay, addr(PEER_A), &payload);
        let out = out.expect("permitted peer's data is relayed");
        assert_eq!(out.bytes[4..4 + len], payload[..]);
    }
}

#[test]
fn fingerprinted_client_gets_fingerprinted_signed_answers() {
    let mut net = Net::new();
    for alg in [Alg::LegacyMd5, Alg::Sha256] {
        let mut alice = net.client("alice");
        alice.fingerprint = true;
        alice.alg = alg;
        let challenge = alice.fetch_nonce(&mut net);
        assert_eq!(challenge.types().last(), Some(&attr::FINGERPRINT));
        let reply = alice.allocate_with(&mut net, &no_attrs);
        reply.assert_ok();
        assert_eq!(reply.types().last(), Some(&attr::FINGERPRINT));
        // Integrity covers everything before it, FINGERPRINT excluded (RFC 8489 §14.5).
        let verified = match alg {
            Alg::LegacyMd5 => reply.msg().check_integrity_sha1(&alice.key()),
            Alg::Sha256 => reply.msg().check_integrity_sha256(&alice.key()),
        };
        assert_eq!(verified, Some(true));
    }
}
