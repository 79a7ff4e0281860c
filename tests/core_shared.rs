//! What crosses workers: two cores of one relay, each with its own allocations, sharing
//! one pool of relay ports (with EVEN-PORT reservations and the relayed addresses of live
//! allocations) and one set of quotas, as the relay's worker threads do. The kernel may
//! hand any 5-tuple to any worker, so a reservation made on one core is redeemed on the
//! other, two clients on different cores call each other relay to relay, and a user's
//! quota counts allocations on every core.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod core_harness;

use std::net::SocketAddr;

use core_harness::*;
use turnpike::proto::peer_policy::PeerPolicy;
use turnpike::proto::quota::Quotas;
use turnpike::proto::stun::{attr, method, Class, MessageBuilder};
use turnpike::proto::{RelayKey, ServerConfig};

/// Two cores of one relay over `ports`, with `quotas`.
fn two_cores(ports: std::ops::RangeInclusive<u16>, quotas: Quotas) -> (Net, Net) {
    let mut cores = Net::cores(2, shared_pool(ports, quotas), serve_like_policy);
    let second = cores.pop().unwrap();
    (cores.pop().unwrap(), second)
}

/// The policy `turnpike serve` builds: defaults plus our own addresses on our own ports,
/// so a peer that is one of our relayed addresses passes only while its allocation lives.
fn serve_like_policy(config: &mut ServerConfig) {
    config.peer_policy = PeerPolicy::new(Vec::new(), Vec::new()).with_own_addresses(
        vec![ip(ADVERTISED_V4), ip("192.0.2.10")],
        vec![3478..=3478, RELAY_PORTS],
    );
}

fn relayed(reply: &Reply) -> SocketAddr {
    reply
        .xor(attr::XOR_RELAYED_ADDRESS)
        .expect("relayed address")
}

fn allocate(net: &mut Net, user: &str, attrs: Attrs) -> (Client, Reply) {
    let mut client = net.client(user);
    let reply = client.allocate_with(net, attrs);
    (client, reply)
}

#[test]
fn a_reservation_made_on_one_core_is_redeemed_on_the_other() {
    // Four ports: the even/odd pair of the first allocation, and two more.
    let (mut core0, mut core1) = two_cores(50000..=50003, Quotas::new(0, 0));
    let even_r = |b: &mut MessageBuilder<'_>| b.add(attr::EVEN_PORT, &[0x80]);
    let (_alice, first) = allocate(&mut core0, "alice", &even_r);
    first.assert_ok();
    let even = relayed(&first).port();
    assert_eq!(even % 2, 0, "EVEN-PORT gives an even port");
    let token = first.get(attr::RESERVATION_TOKEN).expect("R bit: a token");

    // The other core hands out the two remaining ports, never the reserved one, then
    // has none left: it sees the reservation the first core made.
    let mut others = Vec::new();
    for _ in 0..2 {
        let (_, reply) = allocate(&mut core1, "bob", &no_attrs);
        others.push(relayed(&reply).port());
    }
    assert!(!others.contains(&even) && !others.contains(&(even + 1)));
    allocate(&mut core1, "bob", &no_attrs).1.assert_error(508);

    // A client whose 5-tuple landed on the other core redeems the token there and gets
    // the odd port.
    let with_token = |b: &mut MessageBuilder<'_>| b.add(attr::RESERVATION_TOKEN, &token);
    let (_carol, redeemed) = allocate(&mut core1, "carol", &with_token);
    redeemed.assert_ok();
    assert_eq!(relayed(&redeemed).port(), even + 1);
    // A token is redeemed once, on whichever core.
    allocate(&mut core0, "carol", &with_token)
        .1
        .assert_error(508);
}

#[test]
fn clients_on_different_cores_relay_to_each_other_until_one_leaves() {
    let (mut core0, mut core1) = two_cores(RELAY_PORTS, Quotas::new(0, 0));
    let mut alice = core0.client("alice");
    let alice_addr = alice.allocate(&mut core0);
    let mut bob = core1.client("bob");
    let bob_addr = bob.allocate(&mut core1);
    let (alice_relay, bob_relay): (RelayKey, RelayKey) =
        (relay_key(alice_addr), relay_key(bob_addr));

    // Each permits the other's relayed address, which only the shared pool tells apart
    // from any other address of this relay.
    alice.create_permission(&mut core0, &[bob_addr]).assert_ok();
    bob.create_permission(&mut core1, &[alice_addr]).assert_ok();
    bob.channel_bind(&mut core1, 0x4000, alice_addr).assert_ok();

    // bob → alice: ChannelData on core 1 leaves bob's relay socket for alice's relayed
    // address; the shell delivers it to alice's relay socket on core 0, which frames it
    // for alice as a Data indication from bob's relayed address.
    let out = bob
        .channel_data(&mut core1, 0x4000, b"srtp-from-bob")
        .expect("bob's core forwards to alice's relayed address");
    assert_eq!((out.relay, out.peer), (bob_relay, alice_addr));
    let delivered = core0
        .peer_send(alice_relay, bob_addr, &out.payload)
        .expect("alice's core delivers it");
    assert_eq!(delivered.client, alice.id);
    let data = Reply(delivered.bytes);
    assert_eq!(
        (data.class(), data.method()),
        (Class::Indication, method::DATA)
    );
    assert_eq!(data.xor(attr::XOR_PEER_ADDRESS), Some(bob_addr));
    assert_eq!(data.get(attr::DATA).as_deref(), Some(&b"srtp-from-bob"[..]));

    // alice → bob: a Send indication on core 0, delivered on core 1 as ChannelData on
    // the channel bob bound to alice.
    let out = alice
        .send_indication(&mut core0, bob_addr, b"srtp-from-alice")
        .expect("alice's core forwards to bob's relayed address");
    assert_eq!((out.relay, out.peer), (alice_relay, bob_addr));
    let delivered = core1
        .peer_send(bob_relay, alice_addr, &out.payload)
        .expect("bob's core delivers it");
    assert_eq!(delivered.client, bob.id);
    assert_eq!(
        delivered.bytes,
        channel_data_bytes(0x4000, b"srtp-from-alice")[..4 + b"srtp-from-alice".len()]
    );

    // alice leaves on core 0: bob's core 1, which had let his channel through without
    // asking the pool again, stops forwarding to her old relayed address at once.
    alice.refresh(&mut core0, Some(0)).assert_ok();
    assert_eq!(bob.channel_data(&mut core1, 0x4000, b"late"), None);
    assert_eq!(bob.send_indication(&mut core1, alice_addr, b"late"), None);
}

#[test]
fn quotas_count_allocations_on_every_core() {
    // One allocation per user, three in all.
    let (mut core0, mut core1) = two_cores(RELAY_PORTS, Quotas::new(1, 3));
    let mut alice = core0.client("alice");
    alice.allocate(&mut core0);
    // The same user from a 5-tuple on the other core is at quota (RFC 8656 §7.2: 486).
    allocate(&mut core1, "alice", &no_attrs).1.assert_error(486);
    // Freed on core 0, the quota is free for core 1.
    alice.refresh(&mut core0, Some(0)).assert_ok();
    allocate(&mut core1, "alice", &no_attrs).1.assert_ok();
    // Total: alice (core 1), bob (core 0), carol (core 1); then the relay is full on
    // either core (508, which the core checks before the user's own quota).
    allocate(&mut core0, "bob", &no_attrs).1.assert_ok();
    allocate(&mut core1, "carol", &no_attrs).1.assert_ok();
    allocate(&mut core0, "alice", &no_attrs).1.assert_error(508);
    let shared = core0.shared.clone();
    assert_eq!(shared.quotas().held_by("alice"), 1);
    assert_eq!(shared.ports().in_use(), 3);
}
