//! Relay to relay on the same relay: two clients of this relay calling each other with
//! relay-only ICE (the browser demo, any two users of one deployment). Each one's peer
//! is the other's relayed address, which the peer policy refuses as our own address
//! (and, on a loopback or private host address, as loopback or private). The core lets
//! exactly the relayed addresses of *live* allocations through, and nothing else of its
//! own: not other relay ports, not its listeners, not what the deny list names, and not
//! an address whose allocation has gone.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod core_harness;

use std::net::SocketAddr;
use std::time::Duration;

use core_harness::*;
use turnpike::proto::peer_policy::PeerPolicy;
use turnpike::proto::quota::Quotas;
use turnpike::proto::stats::DropReason;
use turnpike::proto::{RelayKey, ServerConfig};

/// The policy `turnpike serve` builds: defaults plus our own addresses on our own ports.
fn serve_like_policy(config: &mut ServerConfig) {
    config.peer_policy = PeerPolicy::new(Vec::new(), Vec::new()).with_own_addresses(
        vec![ip(ADVERTISED_V4), ip("192.0.2.10")],
        vec![3478..=3478, 50000..=50099],
    );
}

/// A client of `net` with an allocation: the client, its relayed address and socket.
fn allocated(net: &mut Net, user: &str) -> (Client, SocketAddr, RelayKey) {
    let mut c = net.client(user);
    let relayed = c.allocate(net);
    (c, relayed, relay_key(relayed))
}

#[test]
fn two_allocations_of_this_relay_reach_each_other() {
    let mut net = Net::with(serve_like_policy);
    let (mut alice, alice_addr, alice_relay) = allocated(&mut net, "alice");
    let (mut bob, bob_addr, bob_relay) = allocated(&mut net, "bob");
    assert_eq!(
        alice_addr.ip(),
        ip(ADVERTISED_V4),
        "both on our own address"
    );

    // Relay-only ICE: each side permits the other's relayed candidate.
    alice.create_permission(&mut net, &[bob_addr]).assert_ok();
    bob.create_permission(&mut net, &[alice_addr]).assert_ok();

    // alice → bob with a Send indication leaves alice's relay socket for bob's…
    let out = alice
        .send_indication(&mut net, bob_addr, b"srtp")
        .expect("forwarded to bob's relayed address");
    assert_eq!((out.relay, out.peer), (alice_relay, bob_addr));
    assert_eq!(out.payload, b"srtp");
    // …where it arrives from alice's relayed address and bob's permission lets it in.
    let got = net
        .peer_send(bob_relay, alice_addr, b"srtp")
        .expect("bob permits alice's relayed address");
    assert_eq!(got.client, bob.id);

    // The same over a channel, the path ICE settles on.
    bob.channel_bind(&mut net, 0x4001, alice_addr).assert_ok();
    let out = bob
        .channel_data(&mut net, 0x4001, b"rtp")
        .expect("forwarded over the channel");
    assert_eq!((out.relay, out.peer), (bob_relay, alice_addr));
    assert!(net.peer_send(alice_relay, bob_addr, b"rtp").is_some());
}

#[test]
fn only_live_relayed_addresses_pass_not_the_rest_of_our_own() {
    let mut net = Net::with(serve_like_policy);
    let (mut alice, alice_addr, _) = allocated(&mut net, "alice");
    let (mut bob, bob_addr, _) = allocated(&mut net, "bob");
    let own = alice_addr.ip();
    // A port of our relay range that no allocation holds.
    let idle_port = (50000..=50099)
        .find(|p| net.open.iter().all(|k| k.port.0 != *p))
        .expect("a hundred ports, two allocations");
    for peer in [
        SocketAddr::new(own, idle_port), // a relay port without an allocation
        SocketAddr::new(own, 3478),      // our listener: a relay loop
        // alice's socket under its bind address: only the advertised address counts.
        SocketAddr::new(ip("192.0.2.10"), alice_addr.port()),
    ] {
        bob.create_permission(&mut net, &[peer]).assert_error(403);
        bob.channel_bind(&mut net, 0x4002, peer).assert_error(403);
    }
    // An allocation's own relayed address is a loop, even though it is live.
    alice
        .create_permission(&mut net, &[alice_addr])
        .assert_error(403);
    alice
        .channel_bind(&mut net, 0x4002, alice_addr)
        .assert_error(403);
    // A Send to them is dropped even under a permission for the IP (alice's).
    bob.create_permission(&mut net, &[alice_addr]).assert_ok();
    let before = net.server.stats().drops[DropReason::NoPermission as usize];
    assert_eq!(
        bob.send_indication(&mut net, SocketAddr::new(own, idle_port), b"x"),
        None
    );
    assert_eq!(
        bob.send_indication(&mut net, SocketAddr::new(own, 3478), b"x"),
        None
    );
    // alice permits bob, which covers her own IP too (permissions are per IP): a Send
    // to herself is still dropped.
    alice.create_permission(&mut net, &[bob_addr]).assert_ok();
    assert_eq!(alice.send_indication(&mut net, alice_addr, b"x"), None);
    let after = net.server.stats().drops[DropReason::NoPermission as usize];
    assert_eq!(after - before, 3);
    // alice herself is still reachable.
    assert!(bob.send_indication(&mut net, alice_addr, b"x").is_some());
    alice.refresh(&mut net, None).assert_ok();
}

#[test]
fn the_deny_list_beats_relay_to_relay() {
    let mut net = Net::with(|c| {
        serve_like_policy(c);
        c.peer_policy =
            PeerPolicy::new(Vec::new(), vec!["203.0.113.0/24".parse().expect("literal")])
                .with_own_addresses(vec![ip(ADVERTISED_V4)], vec![50000..=50099]);
    });
    let (_alice, alice_addr, _) = allocated(&mut net, "alice");
    let (mut bob, _, _) = allocated(&mut net, "bob");
    bob.create_permission(&mut net, &[alice_addr])
        .assert_error(403);
}

#[test]
fn relay_to_relay_ends_with_the_other_allocation() {
    let mut net = Net::with(serve_like_policy);
    let (mut alice, alice_addr, _) = allocated(&mut net, "alice");
    let (mut bob, _, _) = allocated(&mut net, "bob");
    bob.create_permission(&mut net, &[alice_addr]).assert_ok();
    bob.channel_bind(&mut net, 0x4001, alice_addr).assert_ok();
    assert!(bob.send_indication(&mut net, alice_addr, b"x").is_some());
    assert!(bob.channel_data(&mut net, 0x4001, b"x").is_some());

    // alice leaves (Refresh lifetime 0). Her port may now be bound by anything on
    // the host, so bob's permission and channel no longer carry traffic there…
    alice.refresh(&mut net, Some(0)).assert_ok();
    assert_eq!(bob.send_indication(&mut net, alice_addr, b"x"), None);
    assert_eq!(bob.channel_data(&mut net, 0x4001, b"x"), None);
    // …and cannot be renewed.
    bob.create_permission(&mut net, &[alice_addr])
        .assert_error(403);
    bob.channel_bind(&mut net, 0x4001, alice_addr)
        .assert_error(403);

    // Expiry ends it the same way as an explicit Refresh 0.
    let (_carol, carol_addr, _) = allocated(&mut net, "carol");
    bob.create_permission(&mut net, &[carol_addr]).assert_ok();
    assert!(bob.send_indication(&mut net, carol_addr, b"x").is_some());
    bob.refresh(&mut net, Some(3600)).assert_ok(); // bob stays, carol's 600 s run out
    net.advance(Duration::from_secs(500));
    bob.create_permission(&mut net, &[carol_addr]).assert_ok(); // lasts until 800 s
    net.advance(Duration::from_secs(101));
    assert_eq!(bob.send_indication(&mut net, carol_addr, b"x"), None);
    bob.create_permission(&mut net, &[carol_addr])
        .assert_error(403);
}

#[test]
fn allocations_on_other_workers_count_too() {
    // Each worker has its own core; the relay port pool is shared between them.
    let shared = shared_pool(RELAY_PORTS, Quotas::new(0, 0));
    let mut cores = Net::cores(2, shared, serve_like_policy);
    let mut worker2 = cores.pop().unwrap();
    let mut worker1 = cores.pop().unwrap();
    let (mut alice, alice_addr, _) = allocated(&mut worker1, "alice");
    let (mut bob, bob_addr, bob_relay) = allocated(&mut worker2, "bob");
    assert_ne!(alice_addr, bob_addr);
    bob.create_permission(&mut worker2, &[alice_addr])
        .assert_ok();
    let out = bob
        .send_indication(&mut worker2, alice_addr, b"x")
        .expect("alice's allocation lives on the other worker");
    assert_eq!(out.relay, bob_relay);
    alice.refresh(&mut worker1, Some(0)).assert_ok();
    assert_eq!(bob.send_indication(&mut worker2, alice_addr, b"x"), None);
}

#[test]
fn a_reused_send_verdict_covers_only_that_peer_while_it_lives() {
    // Sends to one peer reuse the last verdict (no look-up per packet); that must not
    // let a Send to any other address of ours through, nor outlive the target.
    let mut net = Net::with(serve_like_policy);
    let (mut alice, alice_addr, _) = allocated(&mut net, "alice");
    let (mut bob, bob_addr, _) = allocated(&mut net, "bob");
    bob.create_permission(&mut net, &[alice_addr]).assert_ok();
    let dropped = |net: &Net| net.server.stats().drops[DropReason::NoPermission as usize];
    let before = dropped(&net);
    for _ in 0..3 {
        assert!(bob.send_indication(&mut net, alice_addr, b"x").is_some());
    }
    // Other ports on the same (permitted) IP: an unheld relay port, then a listener.
    let unheld = (50000..=50099)
        .find(|&p| p != alice_addr.port() && p != bob_addr.port())
        .expect("a free relay port");
    let unheld = SocketAddr::new(alice_addr.ip(), unheld);
    assert_eq!(bob.send_indication(&mut net, unheld, b"x"), None);
    let listener = SocketAddr::new(alice_addr.ip(), 3478);
    assert_eq!(bob.send_indication(&mut net, listener, b"x"), None);
    // Back to alice: allowed again, then not once she has gone.
    assert!(bob.send_indication(&mut net, alice_addr, b"x").is_some());
    alice.refresh(&mut net, Some(0)).assert_ok();
    assert_eq!(bob.send_indication(&mut net, alice_addr, b"x"), None);
    assert_eq!(
        dropped(&net) - before,
        3,
        "unheld port, listener, and alice after she left"
    );
}
