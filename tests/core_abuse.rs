//! Abuse limits of the core on virtual time: the failed sign-in throttle (shared by
//! cores), the bandwidth caps (per allocation, per user across cores, in total), and
//! the fast path staying off for capped traffic.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod core_harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use core_harness::*;
use turnpike::proto::bandwidth::{Bandwidth, BandwidthCaps};
use turnpike::proto::quota::Quotas;
use turnpike::proto::stats::DropReason;
use turnpike::proto::stun::method;
use turnpike::proto::throttle::AuthThrottle;
use turnpike::proto::{ClientId, SharedPool, Transport};

fn throttled_pool(failures: u32, cooldown: Duration) -> Arc<SharedPool> {
    Arc::new(
        SharedPool::new(RELAY_PORTS, Quotas::new(0, 0)).with_auth_throttle(AuthThrottle::new(
            failures,
            cooldown,
            [5; 32],
            Instant::now(),
        )),
    )
}

fn capped_pool(caps: BandwidthCaps) -> Arc<SharedPool> {
    Arc::new(
        SharedPool::new(RELAY_PORTS, Quotas::new(0, 0))
            .with_bandwidth(Bandwidth::new(caps, Instant::now())),
    )
}

/// Sends a signed Allocate; the answers it got (none when dropped).
fn try_allocate(net: &mut Net, c: &mut Client) -> Vec<Reply> {
    let tid = c.tid();
    let request = c.signed(method::ALLOCATE, tid, &udp_transport);
    assert_eq!(net.input(c.id, &request), None);
    net.drain(c.id)
}

#[test]
fn wrong_passwords_are_answered_until_the_limit_then_dropped_on_every_core() {
    let shared = throttled_pool(5, Duration::from_secs(60));
    let mut cores = Net::cores(2, shared, |_| {});
    // The guesser's 5-tuples land on both cores (the kernel hashes them).
    let mut answered = 0;
    for i in 0..20 {
        let net = &mut cores[i % 2];
        let mut guess = Client::new(net.udp_id(), "alice", "wrong");
        guess.fetch_nonce(net);
        let replies = try_allocate(net, &mut guess);
        if let Some(reply) = replies.first() {
            reply.assert_error(401);
            answered += 1;
        }
    }
    assert_eq!(
        answered, 5,
        "the limit's worth of guesses is answered, no more"
    );
    let failures: u64 = cores.iter().map(|n| n.server.stats().auth_failures).sum();
    let throttled: u64 = cores.iter().map(|n| n.server.stats().auth_throttled).sum();
    assert_eq!((failures, throttled), (5, 15));

    // The challenge stays answered, and a neighbour with its own username and the
    // right password signs in at once, on either core.
    for net in &mut cores {
        let mut bob = net.client("bob");
        bob.allocate(net);
    }
    // The guessed username is dropped even with the right password, until the
    // cool-down ends.
    let net = &mut cores[0];
    let mut alice = net.client("alice");
    alice.fetch_nonce(net);
    assert!(try_allocate(net, &mut alice).is_empty());
    for net in &mut cores {
        net.advance(Duration::from_secs(61));
    }
    let net = &mut cores[0];
    let mut alice = net.client("alice");
    alice.allocate(net);
}

#[test]
fn a_throttled_source_spraying_usernames_gets_no_answers() {
    let mut net = Net::cores(1, throttled_pool(3, Duration::from_secs(60)), |_| {}).remove(0);
    let mut answered = 0;
    for i in 0..50 {
        let mut guess = Client::new(net.udp_id(), &format!("user{i}"), "wrong");
        guess.fetch_nonce(&mut net);
        answered += try_allocate(&mut net, &mut guess).len();
    }
    assert_eq!(answered, 3);
    // 3 failures before the cool-down remember 3 usernames; each free slot lets one
    // more username be checked (and fail), then nothing is checked.
    assert_eq!(
        net.server.stats().auth_failures,
        turnpike::proto::throttle::BAD_USERNAMES as u64
    );
    // Other sources are not affected.
    let mut other = Client::new(
        net.id_on(Transport::Udp, "203.0.113.50", LISTEN),
        "user0",
        "wrong",
    );
    other.fetch_nonce(&mut net);
    try_allocate(&mut net, &mut other)[0].assert_error(401);
}

#[test]
fn quic_tunnels_count_under_their_clients_address() {
    let mut net = Net::cores(1, throttled_pool(5, Duration::from_secs(60)), |_| {}).remove(0);
    let attacker: std::net::IpAddr = "198.51.100.20".parse().unwrap();
    // A fresh tunnel (and so a fresh ClientId and nonce) for every guess gains nothing:
    // the shell reports each tunnel's source, and the throttle counts that.
    let mut answered = 0;
    for n in 0..20 {
        let id = ClientId::quic_tunnel(addr(LISTEN), n);
        net.server.handle_tunnel_source(id, attacker);
        let mut guess = Client::new(id, "alice", "wrong");
        guess.fetch_nonce(&mut net);
        answered += try_allocate(&mut net, &mut guess).len();
    }
    assert_eq!(answered, 5);
    // Another client's tunnel is not affected, and a UDP client from the attacker's
    // address is.
    let id = ClientId::quic_tunnel(addr(LISTEN), 100);
    net.server
        .handle_tunnel_source(id, "203.0.113.77".parse().unwrap());
    let mut other = Client::new(id, "alice", "wrong");
    other.fetch_nonce(&mut net);
    try_allocate(&mut net, &mut other)[0].assert_error(401);
    let mut udp = Client::new(
        net.id_on(Transport::Udp, "198.51.100.20", LISTEN),
        "alice",
        "wrong",
    );
    udp.fetch_nonce(&mut net);
    assert!(try_allocate(&mut net, &mut udp).is_empty());
}

#[test]
fn without_a_throttle_every_guess_is_answered() {
    let mut net = Net::new();
    for _ in 0..30 {
        let mut guess = Client::new(net.udp_id(), "alice", "wrong");
        guess.fetch_nonce(&mut net);
        try_allocate(&mut net, &mut guess)[0].assert_error(401);
    }
    assert_eq!(net.server.stats().auth_throttled, 0);
}

#[test]
fn stream_clients_are_reported_authenticated_udp_clients_are_not() {
    let mut net = Net::new();
    let mut udp = net.client("alice");
    udp.allocate(&mut net);
    let id = net.id_on(Transport::Tcp, "198.51.100.9", LISTEN);
    let mut tcp = Client::new(id, "bob", "bob-pw");
    tcp.fetch_nonce(&mut net);
    assert!(net.authenticated.is_empty(), "the challenge is no sign-in");
    tcp.allocate(&mut net);
    assert_eq!(net.authenticated, vec![id]);
}

/// One allocation of `user` with a channel to a peer; the peer's relay key.
fn channel_to_peer(net: &mut Net, user: &str) -> (Client, turnpike::proto::RelayKey) {
    let mut c = net.client(user);
    let relayed = c.allocate(net);
    c.channel_bind(net, 0x4001, addr(PEER_A)).assert_ok();
    (c, relay_key(relayed))
}

/// Payload bytes of `size`-byte packets sent every `gap` for `total`, that passed.
fn flood(net: &mut Net, c: &mut Client, size: usize, gap: Duration, total: Duration) -> (u64, u64) {
    let data = vec![0xAB; size];
    let (mut passed, mut sent) = (0, 0);
    let end = net.now + total;
    while net.now < end {
        sent += size as u64;
        if c.channel_data(net, 0x4001, &data).is_some() {
            passed += size as u64;
        }
        net.advance(gap);
    }
    (passed, sent)
}

#[test]
fn per_allocation_cap_holds_each_direction_and_spares_other_allocations() {
    let caps = BandwidthCaps {
        per_allocation: 800_000,
        ..Default::default()
    };
    let mut net = Net::cores(1, capped_pool(caps), |c| c.fast_path = true).remove(0);
    let (mut a, relay_a) = channel_to_peer(&mut net, "alice");
    let (mut b, _) = channel_to_peer(&mut net, "bob");
    // 1000-byte packets every 1 ms: 8 Mbit/s offered for 10 s.
    let (passed, sent) = flood(&mut net, &mut a, 1000, Duration::from_millis(1), secs(10));
    let expected = 10 * 100_000 + 100_000 / 4;
    assert!(passed.abs_diff(expected) <= 2000, "{passed} of {sent}");
    assert_eq!(
        net.server.stats().drops[DropReason::Bandwidth as usize],
        (sent - passed) / 1000
    );
    // Another allocation is under its own cap, and the other direction has its own.
    assert!(b.channel_data(&mut net, 0x4001, &[1; 1000]).is_some());
    assert!(net.peer_send(relay_a, addr(PEER_A), &[2; 1000]).is_some());
    // Capped traffic never goes to the fast path.
    assert!(net.server.poll_fast_path(net.now).is_none());
}

#[test]
fn per_user_cap_spans_cores_and_total_cap_spans_users() {
    let caps = BandwidthCaps {
        per_user: 800_000,
        total: 1_600_000,
        ..Default::default()
    };
    let mut cores = Net::cores(2, capped_pool(caps), |_| {});
    let (mut a0, _) = channel_to_peer(&mut cores[0], "alice");
    let (mut a1, _) = channel_to_peer(&mut cores[1], "alice");
    let (mut b1, _) = channel_to_peer(&mut cores[1], "bob");
    let (mut c0, _) = channel_to_peer(&mut cores[0], "carol");
    let data = [0u8; 500];
    let mut passed = [0u64; 4];
    // 4 Mbit/s offered by each allocation for 5 s, cores in step.
    for _ in 0..5000 {
        let [x, y] = &mut cores[..] else {
            unreachable!()
        };
        passed[0] += x.input(a0.id, &channel_data_bytes(0x4001, &data)).is_some() as u64;
        passed[1] += y.input(a1.id, &channel_data_bytes(0x4001, &data)).is_some() as u64;
        passed[2] += y.input(b1.id, &channel_data_bytes(0x4001, &data)).is_some() as u64;
        passed[3] += x.input(c0.id, &channel_data_bytes(0x4001, &data)).is_some() as u64;
        x.advance(Duration::from_millis(1));
        y.advance(Duration::from_millis(1));
    }
    let bytes = passed.map(|p| p * 500);
    // 1.6 Mbit/s in all (200 kB/s for 5 s, one burst), alice's two allocations no more
    // than her 100 kB/s; the other users share the rest.
    let total: u64 = bytes.iter().sum();
    let expected_total = 5 * 200_000 + 200_000 / 4;
    assert!(total.abs_diff(expected_total) <= 2000, "{bytes:?}");
    let alice = bytes[0] + bytes[1];
    assert!(alice <= 5 * 100_000 + 100_000 / 4 + 1000, "{bytes:?}");
    let _ = (&mut a0, &mut a1, &mut b1, &mut c0);
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
