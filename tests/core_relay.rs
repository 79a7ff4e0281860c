//! The relayed data path (RFC 8656 §9–§12, RFC 6156): CreatePermission and the peer
//! policy, ChannelBind, ChannelData and Send/Data indications in both directions, and
//! the counters that account for them.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod core_harness;

use std::net::SocketAddr;

use core_harness::*;
use turnpike::proto::channel_data;
use turnpike::proto::peer_policy::PeerPolicy;
use turnpike::proto::stats::{Direction, DropReason, MethodLabel, RESULT_CODES};
use turnpike::proto::stun::{attr, method, Class, Message, MessageBuilder};
use turnpike::proto::{RelayKey, Transport};

/// A client with an allocation; returns it and its relay socket.
fn allocated(net: &mut Net, attrs: Attrs) -> (Client, RelayKey) {
    let mut c = net.client("alice");
    let reply = c.allocate_with(net, attrs);
    reply.assert_ok();
    let relayed = reply.xor(attr::XOR_RELAYED_ADDRESS).expect("relayed");
    (c, relay_key(relayed))
}

fn dual_stack(b: &mut MessageBuilder<'_>) {
    b.add(attr::ADDITIONAL_ADDRESS_FAMILY, &[0x02, 0, 0, 0]);
}

/// Asserts `bytes` is a Data indication from `peer` carrying `payload` (RFC 8656 §11.3).
fn assert_data_indication(bytes: &[u8], peer: SocketAddr, payload: &[u8]) {
    let msg = Message::parse(bytes).expect("a well-formed Data indication");
    assert_eq!(
        (msg.class(), msg.method()),
        (Class::Indication, method::DATA)
    );
    let tid = msg.transaction_id();
    let from = msg.get(attr::XOR_PEER_ADDRESS).expect("XOR-PEER-ADDRESS");
    assert_eq!(attr::decode_xor_address(from, &tid), Ok(peer));
    assert_eq!(msg.get(attr::DATA), Some(payload));
    assert_eq!(msg.attribute_count(), 2);
}

fn drops(net: &Net, reason: DropReason) -> u64 {
    net.server.stats().drops[reason as usize]
}

#[test]
fn create_permission_installs_several_peers_at_once() {
    let mut net = Net::new();
    let (mut alice, relay) = allocated(&mut net, &no_attrs);
    let reply = alice.create_permission(&mut net, &[addr(PEER_A), addr(PEER_B)]);
    reply.assert_ok();
    assert_eq!(reply.msg().check_integrity_sha1(&alice.key()), Some(true));
    for peer in [addr(PEER_A), addr(PEER_B)] {
        let got = net.peer_send(relay, peer, b"hello").expect("permitted");
        assert_eq!(got.client, alice.id);
        assert_data_indication(&got.bytes, peer, b"hello");
    }
    // RFC 8656 §9: permissions are per IP address; the peer's port does not matter.
    let other_port = SocketAddr::new(addr(PEER_A).ip(), 9999);
    assert!(net.peer_send(relay, other_port, b"x").is_some());
    assert_eq!(net.peer_send(relay, addr("9.9.9.9:53"), b"x"), None);
    assert_eq!(drops(&net, DropReason::NoPermission), 1);
}

#[test]
fn create_permission_is_all_or_nothing() {
    let mut net = Net::new();
    let (mut alice, relay) = allocated(&mut net, &no_attrs);
    let reply = alice.create_permission(&mut net, &[addr(PEER_A), addr("127.0.0.1:9")]);
    reply.assert_error(403);
    assert_eq!(reply.msg().check_integrity_sha1(&alice.key()), Some(true));
    assert_eq!(net.peer_send(relay, addr(PEER_A), b"x"), None);
    assert_eq!(alice.send_indication(&mut net, addr(PEER_A), b"x"), None);
}

#[test]
fn create_permission_needs_a_peer_of_the_allocations_family() {
    let mut net = Net::new();
    let (mut alice, _) = allocated(&mut net, &no_attrs);
    alice
        .request(&mut net, method::CREATE_PERMISSION, &no_attrs)
        .assert_error(400);
    // RFC 6156 §5: an IPv6 peer on an IPv4-only allocation.
    alice
        .create_permission(&mut net, &[addr(PEER_V6)])
        .assert_error(443);
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_V6))
        .assert_error(443);
    let mut bob = net.client("bob");
    bob.create_permission(&mut net, &[addr(PEER_A)])
        .assert_error(437);
}

#[test]
fn peer_policy_refuses_special_addresses_unless_allowed() {
    let mut net = Net::new();
    let (mut alice, _) = allocated(&mut net, &dual_stack);
    for forbidden in [
        "127.0.0.1:9",
        "169.254.169.254:80",
        "10.0.0.1:5000",
        "[::ffff:127.0.0.1]:9",
        "[::1]:9",
    ] {
        alice
            .create_permission(&mut net, &[addr(forbidden)])
            .assert_error(403);
        alice
            .channel_bind(&mut net, 0x4000, addr(forbidden))
            .assert_error(403);
    }

    let mut net = Net::with(|c| {
        c.peer_policy = PeerPolicy::new(vec!["127.0.0.1/32".parse().expect("net")], vec![]);
    });
    let (mut alice, relay) = allocated(&mut net, &no_attrs);
    alice
        .create_permission(&mut net, &[addr("127.0.0.1:9")])
        .assert_ok();
    assert!(net.peer_send(relay, addr("127.0.0.1:9"), b"x").is_some());
    // Allowing 127.0.0.1 does not open 127.0.0.2.
    alice
        .create_permission(&mut net, &[addr("127.0.0.2:9")])
        .assert_error(403);
}

#[test]
fn the_relays_own_addresses_are_refused() {
    let mut net = Net::with(|c| {
        // The documentation range is allowed here so only the loop guard can refuse.
        c.peer_policy = PeerPolicy::new(vec!["203.0.113.0/24".parse().expect("net")], vec![])
            .with_own_addresses(vec![ip(ADVERTISED_V4)], vec![3478..=3478, 50000..=50099]);
    });
    let (mut alice, relay) = allocated(&mut net, &no_attrs);
    let own = SocketAddr::new(ip(ADVERTISED_V4), relay.port.0);
    alice.create_permission(&mut net, &[own]).assert_error(403);
    alice
        .create_permission(&mut net, &[addr("203.0.113.5:3478")])
        .assert_error(403);
    // Another service on the same host, outside the relay's ports, may be allowed.
    alice
        .create_permission(&mut net, &[addr("203.0.113.5:443")])
        .assert_ok();
}

#[test]
fn channel_bind_validates_numbers_and_pairs() {
    let mut net = Net::new();
    let (mut alice, _) = allocated(&mut net, &no_attrs);
    for bad in [0x0000, 0x3FFF, 0x5000, 0xFFFF] {
        alice
            .channel_bind(&mut net, bad, addr(PEER_A))
            .assert_error(400);
    }
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_A))
        .assert_ok();
    alice
        .channel_bind(&mut net, 0x4FFF, addr(PEER_B))
        .assert_ok();
    // RFC 8656 §12.2: a number bound to another peer, or a peer to another number.
    let reply = alice.channel_bind(&mut net, 0x4000, addr(PEER_B));
    reply.assert_error(400);
    assert_eq!(reply.msg().check_integrity_sha1(&alice.key()), Some(true));
    alice
        .channel_bind(&mut net, 0x4001, addr(PEER_A))
        .assert_error(400);
    // The same peer on another port is another transport address: another channel.
    let a_other_port = SocketAddr::new(addr(PEER_A).ip(), 5001);
    alice
        .channel_bind(&mut net, 0x4001, a_other_port)
        .assert_ok();
    // Rebinding the same pair is a refresh.
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_A))
        .assert_ok();
    // Missing attributes.
    alice
        .request(&mut net, method::CHANNEL_BIND, &|b| {
            b.add_xor_address(attr::XOR_PEER_ADDRESS, addr(PEER_A))
        })
        .assert_error(400);
    alice
        .request(&mut net, method::CHANNEL_BIND, &|b| {
            b.add(attr::CHANNEL_NUMBER, &[0x40, 0x02, 0, 0])
        })
        .assert_error(400);
}

#[test]
fn channel_data_from_the_client_is_forwarded_verbatim() {
    let mut net = Net::new();
    let (mut alice, relay) = allocated(&mut net, &no_attrs);
    alice
        .channel_bind(&mut net, 0x4001, addr(PEER_A))
        .assert_ok();
    let payload: Vec<u8> = (0..=255).collect();
    let out = alice.channel_data(&mut net, 0x4001, &payload);
    assert_eq!(
        out,
        Some(Forwarded {
            relay,
            peer: addr(PEER_A),
            payload: payload.clone()
        })
    );
    // RFC 8656 §12.5: UDP ChannelData may carry padding beyond its length; ignored.
    let mut padded = channel_data_bytes(0x4001, b"abc");
    padded.extend_from_slice(&[0; 4]);
    let out = net.input(alice.id, &padded).expect("forwarded");
    assert_eq!(out.payload, b"abc");
    // An unbound number, and a client without allocation, are dropped.
    assert_eq!(alice.channel_data(&mut net, 0x4002, b"x"), None);
    assert_eq!(drops(&net, DropReason::NoChannel), 1);
    let stranger = net.udp_id();
    assert_eq!(net.input(stranger, &channel_data_bytes(0x4001, b"x")), None);
    assert_eq!(drops(&net, DropReason::NoAllocation), 1);
    // Truncated ChannelData.
    assert_eq!(net.input(alice.id, &padded[..5]), None);
    assert_eq!(drops(&net, DropReason::Malformed), 1);
}

#[test]
fn peer_data_on_a_channel_becomes_channel_data() {
    let mut net = Net::new();
    let (mut alice, relay) = allocated(&mut net, &no_attrs);
    alice
        .channel_bind(&mut net, 0x4ABC, addr(PEER_A))
        .assert_ok();
    // UDP client: no padding.
    let got = net
        .peer_send(relay, addr(PEER_A), b"media")
        .expect("relayed");
    assert_eq!(got.client, alice.id);
    assert_eq!(got.bytes, b"\x4A\xBC\x00\x05media");
    assert_eq!(channel_data::parse(&got.bytes), Ok((0x4ABC, &b"media"[..])));

    // TCP client: padded to a multiple of 4 with zeros (RFC 8656 §12.5).
    let id = net.id_on(Transport::Tcp, "198.51.100.20", LISTEN);
    let mut tcp = Client::new(id, "bob", "bob-pw");
    let relayed = tcp.allocate(&mut net);
    tcp.channel_bind(&mut net, 0x4000, addr(PEER_B)).assert_ok();
    for len in 0..9 {
        let payload = vec![0xAB; len];
        let got = net
            .peer_send(relay_key(relayed), addr(PEER_B), &payload)
            .expect("relayed");
        assert_eq!(got.client, id);
        assert_eq!(got.bytes.len(), channel_data::stream_len(len));
        assert_eq!(channel_data::parse(&got.bytes), Ok((0x4000, &payload[..])));
        assert!(got.bytes[4 + len..].iter().all(|&b| b == 0), "zero padding");
    }
}

#[test]
fn peer_data_without_a_channel_becomes_a_data_indication() {
    let mut net = Net::new();
    let (mut alice, _) = allocated(&mut net, &dual_stack);
    let relays: Vec<RelayKey> = net.open.iter().copied().collect();
    alice
        .create_permission(&mut net, &[addr(PEER_A), addr(PEER_V6)])
        .assert_ok();
    let (v4, v6) = (relays[0], relays[1]);
    for (relay, peer) in [(v4, addr(PEER_A)), (v6, addr(PEER_V6))] {
        for len in [0, 1, 3, 4, 1000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let got = net.peer_send(relay, peer, &payload).expect("relayed");
            assert_eq!(got.client, alice.id);
            assert_eq!(got.bytes.len() % 4, 0);
            assert_data_indication(&got.bytes, peer, &payload);
        }
    }
    // Each indication has its own transaction id.
    let a = net.peer_send(v4, addr(PEER_A), b"1").expect("relayed");
    let b = net.peer_send(v4, addr(PEER_A), b"1").expect("relayed");
    assert_ne!(a.bytes[8..20], b.bytes[8..20]);
    // A peer without a permission gets nothing through.
    assert_eq!(net.peer_send(v4, addr("9.9.9.9:1"), b"x"), None);
}

#[test]
fn send_indication_is_forwarded_to_permitted_peers_only() {
    let mut net = Net::new();
    let (mut alice, _) = allocated(&mut net, &dual_stack);
    let relays: Vec<RelayKey> = net.open.iter().copied().collect();
    assert_eq!(
        alice.send_indication(&mut net, addr(PEER_A), b"early"),
        None
    );
    assert_eq!(drops(&net, DropReason::NoPermission), 1);
    alice
        .create_permission(&mut net, &[addr(PEER_A), addr(PEER_V6)])
        .assert_ok();
    assert_eq!(
        alice.send_indication(&mut net, addr(PEER_A), b"payload"),
        Some(Forwarded {
            relay: relays[0],
            peer: addr(PEER_A),
            payload: b"payload".to_vec()
        })
    );
    // The IPv6 peer leaves through the IPv6 relay socket.
    let out = alice.send_indication(&mut net, addr(PEER_V6), b"six");
    assert_eq!(out.map(|f| f.relay), Some(relays[1]));

    // Without DATA, or with an unknown comprehension-required attribute: dropped.
    let tid = alice.tid();
    let no_data = alice.unsigned(Class::Indication, method::SEND, tid, &|b| {
        b.add_xor_address(attr::XOR_PEER_ADDRESS, addr(PEER_A))
    });
    assert_eq!(net.input(alice.id, &no_data), None);
    let unknown = alice.unsigned(Class::Indication, method::SEND, tid, &|b| {
        b.add_xor_address(attr::XOR_PEER_ADDRESS, addr(PEER_A));
        b.add(attr::DATA, b"x");
        b.add(0x7777, &[0; 4]);
    });
    assert_eq!(net.input(alice.id, &unknown), None);
    assert!(net.drain(alice.id).is_empty());
    // No allocation.
    let mut bob = net.client("bob");
    assert_eq!(bob.send_indication(&mut net, addr(PEER_A), b"x"), None);
}

#[test]
fn stats_count_relayed_traffic_and_drops_by_reason() {
    let mut net = Net::new();
    let (mut alice, relay) = allocated(&mut net, &no_attrs);
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_A))
        .assert_ok();
    alice
        .create_permission(&mut net, &[addr(PEER_B)])
        .assert_ok();
    let before = net.server.stats().clone();

    alice
        .channel_data(&mut net, 0x4000, &[1; 100])
        .expect("fwd");
    alice
        .send_indication(&mut net, addr(PEER_B), &[2; 50])
        .expect("fwd");
    net.peer_send(relay, addr(PEER_A), &[3; 10])
        .expect("to client");
    net.peer_send(relay, addr(PEER_B), &[4; 7])
        .expect("to client");
    assert_eq!(net.peer_send(relay, addr("9.9.9.9:1"), &[5; 9]), None);
    assert_eq!(alice.channel_data(&mut net, 0x4001, &[6; 3]), None);
    assert_eq!(net.input(alice.id, &[0xFF, 0, 0, 0]), None);

    let after = net.server.stats();
    let to_peer = Direction::ToPeer as usize;
    let to_client = Direction::ToClient as usize;
    assert_eq!(after.packets[to_peer] - before.packets[to_peer], 2);
    assert_eq!(after.bytes[to_peer] - before.bytes[to_peer], 150);
    assert_eq!(after.packets[to_client] - before.packets[to_client], 2);
    assert_eq!(after.bytes[to_client] - before.bytes[to_client], 17);
    // The same traffic by the client's transport: all of it on alice's.
    let t = alice.id.transport.index();
    let by_transport = |s: &turnpike::proto::stats::Stats| {
        (
            s.packets_by_transport[to_peer][t],
            s.bytes_by_transport[to_peer][t],
            s.packets_by_transport[to_client][t],
            s.bytes_by_transport[to_client][t],
        )
    };
    let (b, a) = (by_transport(&before), by_transport(after));
    assert_eq!(
        (a.0 - b.0, a.1 - b.1, a.2 - b.2, a.3 - b.3),
        (2, 150, 2, 17)
    );
    let dropped = |r: DropReason| after.drops[r as usize] - before.drops[r as usize];
    assert_eq!(dropped(DropReason::NoPermission), 1);
    assert_eq!(dropped(DropReason::NoChannel), 1);
    assert_eq!(dropped(DropReason::Malformed), 1);
    assert_eq!(dropped(DropReason::NoAllocation), 0);
    assert_eq!(after.allocations, 1);
    assert_eq!(after.allocations_created, 1);

    // Requests are counted by method and result code.
    let col = |code: u16| RESULT_CODES.iter().position(|&c| c == code).expect("code");
    let cp = MethodLabel::CreatePermission as usize;
    let before = net.server.stats().requests[cp];
    alice
        .create_permission(&mut net, &[addr(PEER_A)])
        .assert_ok();
    alice
        .create_permission(&mut net, &[addr("127.0.0.1:1")])
        .assert_error(403);
    let after = net.server.stats().requests[cp];
    assert_eq!(after[col(0)] - before[col(0)], 1);
    assert_eq!(after[col(403)] - before[col(403)], 1);
}

#[test]
fn data_for_an_unknown_relay_socket_is_dropped() {
    let mut net = Net::new();
    let (_, relay) = allocated(&mut net, &no_attrs);
    let other = RelayKey {
        port: turnpike::proto::RelayPort(relay.port.0 ^ 1),
        ..relay
    };
    assert_eq!(net.peer_send(other, addr(PEER_A), b"x"), None);
    assert_eq!(drops(&net, DropReason::NoAllocation), 1);
}
