//! Limits and edge rules of the core: DONT-FRAGMENT, the per-allocation permission
//! cap, expiry that is due but whose timer has not fired, relayed addresses we cannot
//! name, Send indications aimed at the relay itself, and one timer per allocation.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod core_harness;

use std::time::Duration;

use core_harness::*;
use turnpike::proto::allocation::MAX_PERMISSIONS;
use turnpike::proto::peer_policy::PeerPolicy;
use turnpike::proto::stun::attr;
use turnpike::proto::RelayIp;

#[test]
fn dont_fragment_is_applied_to_the_relay_socket_only_when_asked() {
    let mut net = Net::new();
    let mut plain = net.client("alice");
    let relayed = plain.allocate(&mut net);
    assert!(net.dont_fragment.is_empty());

    let mut df = net.client("bob");
    let reply = df.allocate_with(&mut net, &|b| {
        udp_transport(b);
        b.add(attr::DONT_FRAGMENT, &[]);
    });
    reply.assert_ok();
    let df_relay = relay_key(reply.xor(attr::XOR_RELAYED_ADDRESS).expect("relayed"));
    assert_eq!(net.dont_fragment, vec![df_relay]);
    assert_ne!(relay_key(relayed), df_relay);
}

#[test]
fn permissions_per_allocation_are_capped() {
    let mut net = Net::new();
    let mut c = net.client("alice");
    c.allocate(&mut net);
    let peers: Vec<_> = (0..MAX_PERMISSIONS as u32)
        .map(|i| std::net::SocketAddr::new(std::net::Ipv4Addr::from(0x0808_0000 + i).into(), 9))
        .collect();
    for chunk in peers.chunks(16) {
        c.create_permission(&mut net, chunk).assert_ok();
    }
    // Refreshing existing ones is always fine; one more IP is not.
    c.create_permission(&mut net, &peers[..4]).assert_ok();
    c.create_permission(&mut net, &[addr("9.9.9.9:1")])
        .assert_error(508);
    c.channel_bind(&mut net, 0x4001, addr("9.9.9.9:1"))
        .assert_error(508);
    // Once permissions lapse there is room again.
    net.advance(Duration::from_secs(301));
    c.refresh(&mut net, None).assert_ok();
    c.create_permission(&mut net, &[addr("9.9.9.9:1")])
        .assert_ok();
}

#[test]
fn an_allocation_past_its_lifetime_forwards_nothing_even_before_its_timer_fires() {
    let mut net = Net::new();
    let mut c = net.client("alice");
    let relayed = c.allocate(&mut net);
    let peer = addr(PEER_A);
    c.channel_bind(&mut net, 0x4000, peer).assert_ok();
    assert!(c.channel_data(&mut net, 0x4000, b"hi").is_some());
    // Jump past the lifetime without running timers (a shell that is late to wake).
    net.now += Duration::from_secs(601);
    assert_eq!(c.channel_data(&mut net, 0x4000, b"late"), None);
    assert_eq!(c.send_indication(&mut net, peer, b"late"), None);
    assert_eq!(net.peer_send(relay_key(relayed), peer, b"late"), None);
    // A Refresh cannot revive it...
    c.refresh(&mut net, Some(600)).assert_error(437);
    // ...and its relay socket is already closed.
    assert_eq!(net.closed.len(), 1);
    assert_eq!(net.server.allocation_count(), 0);
}

#[test]
fn a_family_we_cannot_name_an_address_for_is_440_not_a_wildcard() {
    // IPv6 relay sockets bound to `::` with no advertised address, and a client that
    // reached us over IPv4: we know no IPv6 address of ours to hand out.
    let mut net = Net::with(|c| {
        c.relay_v6 = Some(RelayIp {
            bind: "::".parse().expect("literal"),
            advertise: None,
            host: None,
        });
    });
    let mut c = net.client("alice");
    let reply = c.allocate_with(&mut net, &|b| {
        udp_transport(b);
        b.add(attr::REQUESTED_ADDRESS_FAMILY, &[0x02, 0, 0, 0]);
    });
    reply.assert_error(440);
    // Asked as the additional family, IPv4 is still granted, with ADDRESS-ERROR-CODE.
    let mut d = net.client("bob");
    let reply = d.allocate_with(&mut net, &|b| {
        udp_transport(b);
        b.add(attr::ADDITIONAL_ADDRESS_FAMILY, &[0x02, 0, 0, 0]);
    });
    reply.assert_ok();
    assert_eq!(reply.xors(attr::XOR_RELAYED_ADDRESS).len(), 1);
    assert!(reply.has(attr::ADDRESS_ERROR_CODE));
}

#[test]
fn send_indications_cannot_target_the_relay_itself() {
    // Permissions are per IP, so a client permitted to 127.0.0.1 could otherwise Send
    // to our own listener port on it and loop traffic through the relay.
    let mut net = Net::with(|c| {
        c.peer_policy = PeerPolicy::new(vec!["127.0.0.1/32".parse().expect("cidr")], vec![])
            .with_own_addresses(vec!["127.0.0.1".parse().expect("ip")], vec![3478..=3478]);
    });
    let mut c = net.client("alice");
    c.allocate(&mut net);
    c.create_permission(&mut net, &[addr("127.0.0.1:5000")])
        .assert_ok();
    assert!(c
        .send_indication(&mut net, addr("127.0.0.1:5000"), b"ok")
        .is_some());
    assert_eq!(
        c.send_indication(&mut net, addr("127.0.0.1:3478"), b"loop"),
        None
    );
}

#[test]
fn refreshing_in_a_loop_keeps_one_timer_per_allocation() {
    let mut net = Net::new();
    let mut c = net.client("alice");
    c.allocate(&mut net);
    let first_deadline = net.server.poll_timeout().expect("expiry timer");
    for _ in 0..1000 {
        net.now += Duration::from_millis(10);
        c.refresh(&mut net, Some(3600)).assert_ok();
    }
    // Still the original deadline queued (it re-arms when it fires), not 1000 more.
    assert_eq!(net.server.poll_timeout(), Some(first_deadline));
    net.advance(Duration::from_secs(700));
    assert_eq!(
        net.server.allocation_count(),
        1,
        "refreshed to 3600 s, still alive"
    );
    net.advance(Duration::from_secs(3600));
    assert_eq!(net.server.allocation_count(), 0);
}

#[test]
fn rfc5766_channel_numbers_only_when_configured() {
    let peer = addr(PEER_A);
    let mut strict = Net::new();
    let mut c = strict.client("alice");
    c.allocate(&mut strict);
    c.channel_bind(&mut strict, 0x5000, peer).assert_error(400);
    c.channel_bind(&mut strict, 0x7FFF, peer).assert_error(400);
    // ChannelData on such a number is just an unbound channel.
    assert_eq!(c.channel_data(&mut strict, 0x5000, b"x"), None);

    let mut legacy = Net::with(|c| c.rfc5766_channel_numbers = true);
    let mut c = legacy.client("alice");
    let relayed = c.allocate(&mut legacy);
    c.channel_bind(&mut legacy, 0x73A4, peer).assert_ok();
    c.channel_bind(&mut legacy, 0x8000, addr(PEER_B))
        .assert_error(400);
    c.channel_bind(&mut legacy, 0x3FFF, addr(PEER_B))
        .assert_error(400);
    let out = c
        .channel_data(&mut legacy, 0x73A4, b"media")
        .expect("forwarded");
    assert_eq!((out.peer, out.payload.as_slice()), (peer, &b"media"[..]));
    let back = legacy
        .peer_send(relay_key(relayed), peer, b"reply")
        .expect("delivered");
    assert_eq!(back.bytes, [&[0x73, 0xA4, 0, 5][..], b"reply"].concat());
}

/// Both parties of a call relaying through this same server (the common case with
/// `iceTransportPolicy: "relay"`): each one's peer is the other's relayed address, one
/// of our own addresses. That is allowed while the target allocation lives; our
/// listeners, unallocated relay ports and deny-listed ranges stay refused.
#[test]
fn relay_to_relay_on_the_same_server_is_allowed_while_the_target_lives() {
    let own: std::net::IpAddr = ADVERTISED_V4.parse().expect("literal");
    let policy = |deny: Vec<ipnet::IpNet>| {
        PeerPolicy::new(vec![], deny)
            .with_own_addresses(vec![own], vec![3478..=3478, 50000..=50099])
    };
    let mut net = Net::with(|c| c.peer_policy = policy(vec![]));
    let mut alice = net.client("alice");
    let a = alice.allocate(&mut net);
    let mut bob = net.client("bob");
    let b = bob.allocate(&mut net);
    assert_eq!((a.ip(), b.ip()), (own, own));

    // Another live allocation of ours: allowed, though 203.0.113.0/24 is documentation
    // space the default policy refuses.
    alice.create_permission(&mut net, &[b]).assert_ok();
    alice.channel_bind(&mut net, 0x4000, b).assert_ok();
    bob.create_permission(&mut net, &[a]).assert_ok();
    // Our listener, and a relay port nobody holds: refused.
    let listener = std::net::SocketAddr::new(own, 3478);
    alice
        .create_permission(&mut net, &[listener])
        .assert_error(403);
    let free_port = (50000..=50099)
        .map(|p| std::net::SocketAddr::new(own, p))
        .find(|p| *p != a && *p != b)
        .expect("a free relay port");
    alice
        .create_permission(&mut net, &[free_port])
        .assert_error(403);

    // Media flows: Alice's channel to Bob's relayed address, then into Bob's allocation.
    let out = alice
        .channel_data(&mut net, 0x4000, b"frame")
        .expect("forwarded");
    assert_eq!(out.peer, b);
    let delivered = net
        .peer_send(relay_key(b), a, b"frame")
        .expect("delivered to bob");
    assert_eq!(delivered.client, bob.id);

    // Once Bob's allocation is gone, his old address is just an unheld port of ours.
    bob.refresh(&mut net, Some(0)).assert_ok();
    let mut carol = net.client("carol");
    carol.allocate(&mut net);
    carol.create_permission(&mut net, &[b]).assert_error(403);

    // The deny list always wins.
    let mut strict =
        Net::with(|c| c.peer_policy = policy(vec!["203.0.113.0/24".parse().expect("cidr")]));
    let mut x = strict.client("alice");
    x.allocate(&mut strict);
    let mut y = strict.client("bob");
    let y_addr = y.allocate(&mut strict);
    x.create_permission(&mut strict, &[y_addr])
        .assert_error(403);
}
