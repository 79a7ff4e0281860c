//! Lifetimes on virtual time: Refresh (RFC 8656 §8.2), allocation expiry, permission
//! (300 s, §9) and channel (600 s, §12) expiry, and their refresh by CreatePermission
//! and ChannelBind. Every deadline is checked on both sides: alive one second before,
//! gone exactly at it.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod core_harness;

use std::time::Duration;

use core_harness::*;
use turnpike::proto::stats::DropReason;
use turnpike::proto::stun::attr;
use turnpike::proto::RelayKey;

const S: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn with_lifetime(l: u32) -> impl Fn(&mut turnpike::proto::stun::MessageBuilder<'_>) {
    move |b| b.add_u32(attr::LIFETIME, l)
}

/// An allocation that outlives every permission/channel test below.
fn long_allocation(net: &mut Net) -> (Client, RelayKey) {
    let mut alice = net.client("alice");
    let reply = alice.allocate_with(net, &with_lifetime(3600));
    reply.assert_ok();
    let relayed = reply.xor(attr::XOR_RELAYED_ADDRESS).expect("relayed");
    (alice, relay_key(relayed))
}

#[test]
fn allocation_expires_exactly_at_its_lifetime() {
    let mut net = Net::with_ports(50000..=50000);
    let mut alice = net.client("alice");
    let relayed = alice.allocate(&mut net);
    assert_eq!(net.server.poll_timeout(), Some(net.t0 + secs(600)));
    net.advance(secs(599));
    assert!(net.closed.is_empty());
    assert_eq!(net.server.allocation_count(), 1);
    net.advance(S);
    assert_eq!(net.closed, vec![(net.t0 + secs(600), relay_key(relayed))]);
    assert_eq!(net.server.allocation_count(), 0);
    assert_eq!(net.shared.quotas().held_by("alice"), 0);
    assert_eq!(net.server.stats().allocations_deleted, 1);
    // The only relay port is free for the next client; the old one's Refresh gets 437.
    let mut bob = net.client("bob");
    assert_eq!(bob.allocate(&mut net), relayed);
    alice.refresh(&mut net, None).assert_error(437);
}

#[test]
fn refresh_extends_the_allocation_past_its_old_expiry() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    let relayed = alice.allocate(&mut net);
    net.advance(secs(500));
    let reply = alice.refresh(&mut net, Some(1200));
    reply.assert_ok();
    assert_eq!(reply.u32(attr::LIFETIME), Some(1200));
    assert_eq!(reply.msg().check_integrity_sha1(&alice.key()), Some(true));
    // The first deadline (600 s) passes without effect.
    net.advance(secs(1199));
    assert!(net.closed.is_empty());
    alice
        .create_permission(&mut net, &[addr(PEER_A)])
        .assert_ok();
    net.advance(S);
    assert_eq!(net.closed, vec![(net.t0 + secs(1700), relay_key(relayed))]);
}

#[test]
fn refresh_lifetime_follows_the_allocate_rules() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice.allocate(&mut net);
    // RFC 8656 §8.2: no LIFETIME → default; min(requested, max), but never below
    // the default, exactly as for Allocate.
    for (asked, granted) in [(None, 600), (Some(100_000), 3600), (Some(30), 600)] {
        let reply = alice.refresh(&mut net, asked);
        reply.assert_ok();
        assert_eq!(reply.u32(attr::LIFETIME), Some(granted), "asked {asked:?}");
    }
    // A refresh to 30 s must not expire the allocation after 30 s.
    net.advance(secs(599));
    assert_eq!(net.server.allocation_count(), 1);
    net.advance(S);
    assert_eq!(net.server.allocation_count(), 0);
}

#[test]
fn refresh_with_lifetime_zero_deletes_the_allocation() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    let relayed = alice.allocate(&mut net);
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_A))
        .assert_ok();
    assert!(alice.channel_data(&mut net, 0x4000, b"x").is_some());
    net.advance(secs(10));
    let reply = alice.refresh(&mut net, Some(0));
    reply.assert_ok();
    assert_eq!(reply.u32(attr::LIFETIME), Some(0));
    assert_eq!(net.closed, vec![(net.t0 + secs(10), relay_key(relayed))]);
    assert_eq!(net.shared.quotas().held_by("alice"), 0);
    // Everything that depended on it is gone.
    alice.refresh(&mut net, None).assert_error(437);
    assert_eq!(alice.channel_data(&mut net, 0x4000, b"x"), None);
    assert_eq!(net.peer_send(relay_key(relayed), addr(PEER_A), b"x"), None);
    assert_eq!(
        net.server.stats().drops[DropReason::NoAllocation as usize],
        2
    );
    // Its old timer firing later is harmless.
    net.advance(secs(1000));
    assert_eq!(net.closed.len(), 1);
}

#[test]
fn refresh_without_allocation_or_by_another_user_is_refused() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice.refresh(&mut net, None).assert_error(437);
    alice.allocate(&mut net);
    let mut bob = Client::new(alice.id, "bob", "bob-pw");
    bob.nonce = alice.nonce.clone();
    let reply = bob.refresh(&mut net, Some(0));
    reply.assert_error(441);
    assert_eq!(reply.msg().check_integrity_sha1(&bob.key()), Some(true));
    assert_eq!(net.server.allocation_count(), 1);
    assert!(net.closed.is_empty());
}

#[test]
fn refresh_of_a_family_the_allocation_lacks_gets_443() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice.allocate(&mut net);
    let v6 = |b: &mut turnpike::proto::stun::MessageBuilder<'_>| {
        b.add(attr::REQUESTED_ADDRESS_FAMILY, &[0x02, 0, 0, 0]);
        b.add_u32(attr::LIFETIME, 0);
    };
    alice
        .request(&mut net, turnpike::proto::stun::method::REFRESH, &v6)
        .assert_error(443);
    assert_eq!(net.server.allocation_count(), 1);
}

#[test]
fn lifetime_zero_for_one_family_of_a_dual_allocation_drops_only_that_family() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    let reply = alice.allocate_with(&mut net, &|b| {
        b.add(attr::ADDITIONAL_ADDRESS_FAMILY, &[0x02, 0, 0, 0])
    });
    let relayed = reply.xors(attr::XOR_RELAYED_ADDRESS);
    let (v4, v6) = (relay_key(relayed[0]), relay_key(relayed[1]));
    let drop_v6 = |b: &mut turnpike::proto::stun::MessageBuilder<'_>| {
        b.add(attr::REQUESTED_ADDRESS_FAMILY, &[0x02, 0, 0, 0]);
        b.add_u32(attr::LIFETIME, 0);
    };
    alice
        .request(&mut net, turnpike::proto::stun::method::REFRESH, &drop_v6)
        .assert_ok();
    assert_eq!(net.closed, vec![(net.now, v6)]);
    assert_eq!(net.server.allocation_count(), 1);
    alice
        .create_permission(&mut net, &[addr(PEER_V6)])
        .assert_error(443);
    alice
        .create_permission(&mut net, &[addr(PEER_A)])
        .assert_ok();
    assert!(net.peer_send(v4, addr(PEER_A), b"x").is_some());
}

#[test]
fn permission_expires_after_300_seconds_unless_refreshed() {
    let mut net = Net::new();
    let (mut alice, relay) = long_allocation(&mut net);
    alice
        .create_permission(&mut net, &[addr(PEER_A), addr(PEER_B)])
        .assert_ok();
    net.advance(secs(200));
    // Refresh only PEER_A.
    alice
        .create_permission(&mut net, &[addr(PEER_A)])
        .assert_ok();
    net.advance(secs(99));
    assert!(net.peer_send(relay, addr(PEER_B), b"x").is_some());
    assert!(alice
        .send_indication(&mut net, addr(PEER_B), b"x")
        .is_some());
    net.advance(S); // 300 s after PEER_B's permission
    assert_eq!(net.peer_send(relay, addr(PEER_B), b"x"), None);
    assert_eq!(alice.send_indication(&mut net, addr(PEER_B), b"x"), None);
    assert!(net.peer_send(relay, addr(PEER_A), b"x").is_some());
    net.advance(secs(199)); // 499 s: PEER_A's refreshed permission still holds
    assert!(alice
        .send_indication(&mut net, addr(PEER_A), b"x")
        .is_some());
    net.advance(S);
    assert_eq!(net.peer_send(relay, addr(PEER_A), b"x"), None);
    assert_eq!(alice.send_indication(&mut net, addr(PEER_A), b"x"), None);
    assert_eq!(
        net.server.stats().drops[DropReason::NoPermission as usize],
        4
    );
}

#[test]
fn channel_bind_installs_and_refreshes_the_permission() {
    let mut net = Net::new();
    let (mut alice, relay) = long_allocation(&mut net);
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_A))
        .assert_ok();
    net.advance(secs(200));
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_A))
        .assert_ok();
    net.advance(secs(299));
    assert!(net.peer_send(relay, addr(PEER_A), b"x").is_some());
    assert!(alice.channel_data(&mut net, 0x4000, b"x").is_some());
    net.advance(S);
    // RFC 8656 §12: the channel (still bound) carries nothing without a permission.
    assert_eq!(net.peer_send(relay, addr(PEER_A), b"x"), None);
    assert_eq!(alice.channel_data(&mut net, 0x4000, b"x"), None);
}

#[test]
fn channel_expires_after_600_seconds_unless_rebound() {
    let mut net = Net::new();
    let (mut alice, relay) = long_allocation(&mut net);
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_A))
        .assert_ok();
    alice
        .channel_bind(&mut net, 0x4001, addr(PEER_B))
        .assert_ok();
    // Keep both permissions alive with CreatePermission only.
    for _ in 0..2 {
        net.advance(secs(250));
        alice
            .create_permission(&mut net, &[addr(PEER_A), addr(PEER_B)])
            .assert_ok();
    }
    // At 500 s, rebind 0x4001 (a refresh); 0x4000 is left to lapse.
    alice
        .channel_bind(&mut net, 0x4001, addr(PEER_B))
        .assert_ok();
    net.advance(secs(99));
    assert!(alice.channel_data(&mut net, 0x4000, b"x").is_some());
    let got = net.peer_send(relay, addr(PEER_A), b"x").expect("relayed");
    assert_eq!(got.bytes[..2], [0x40, 0x00]);
    net.advance(S); // 600 s
    assert_eq!(alice.channel_data(&mut net, 0x4000, b"x"), None);
    assert_eq!(net.server.stats().drops[DropReason::NoChannel as usize], 1);
    // The peer is still permitted, so its data arrives as a Data indication instead.
    let got = net.peer_send(relay, addr(PEER_A), b"x").expect("relayed");
    assert_eq!(got.bytes[..2], [0x00, 0x17]);
    // The rebound channel lives on until 1100 s (its permission refreshed meanwhile).
    alice
        .create_permission(&mut net, &[addr(PEER_B)])
        .assert_ok();
    net.advance(secs(250));
    alice
        .create_permission(&mut net, &[addr(PEER_B)])
        .assert_ok();
    net.advance(secs(249));
    assert!(alice.channel_data(&mut net, 0x4001, b"x").is_some());
    net.advance(S);
    assert_eq!(alice.channel_data(&mut net, 0x4001, b"x"), None);
}

#[test]
fn expired_channel_number_is_quarantined_before_reuse_for_another_peer() {
    let mut net = Net::new();
    let (mut alice, _) = long_allocation(&mut net);
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_A))
        .assert_ok();
    net.advance(secs(600));
    // RFC 8656 §12: for 5 minutes after expiry neither the number nor the peer may
    // be bound to something else, but the same pair may be bound again.
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_B))
        .assert_error(400);
    alice
        .channel_bind(&mut net, 0x4001, addr(PEER_A))
        .assert_error(400);
    net.advance(secs(300));
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_B))
        .assert_ok();
    alice
        .channel_bind(&mut net, 0x4001, addr(PEER_A))
        .assert_ok();
}

#[test]
fn timers_fire_in_order_across_many_allocations() {
    let mut net = Net::new();
    let mut clients = Vec::new();
    for i in 0..10u64 {
        let mut c = net.client(if i % 2 == 0 { "alice" } else { "bob" });
        let reply = c.allocate_with(&mut net, &with_lifetime((600 + 60 * i) as u32));
        reply.assert_ok();
        clients.push(relay_key(
            reply.xor(attr::XOR_RELAYED_ADDRESS).expect("relayed"),
        ));
    }
    net.advance(secs(10_000));
    let expected: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, key)| (net.t0 + secs(600 + 60 * i as u64), *key))
        .collect();
    assert_eq!(net.closed, expected);
    assert!(net.open.is_empty());
    assert_eq!(net.server.poll_timeout(), None);
}
