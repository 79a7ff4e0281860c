//! Allocate (RFC 8656 §7.1–§7.2, RFC 6156 §4): relayed addresses and families,
//! lifetimes, retransmissions, EVEN-PORT and reservations, quotas, port exhaustion,
//! relay sockets that fail to bind, and closing the client's stream.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod core_harness;

use std::time::Duration;

use core_harness::*;
use turnpike::proto::quota::Quotas;
use turnpike::proto::stun::{attr, method, MessageBuilder};
use turnpike::proto::{Family, RelayKey, RelayPort, Transport};

fn new_client_allocate(net: &mut Net, user: &str, attrs: Attrs) -> (Client, Reply) {
    let mut c = net.client(user);
    let reply = c.allocate_with(net, attrs);
    (c, reply)
}

fn family(f: u8) -> impl Fn(&mut MessageBuilder<'_>) {
    move |b| b.add(attr::REQUESTED_ADDRESS_FAMILY, &[f, 0, 0, 0])
}

fn additional(f: u8) -> impl Fn(&mut MessageBuilder<'_>) {
    move |b| b.add(attr::ADDITIONAL_ADDRESS_FAMILY, &[f, 0, 0, 0])
}

#[test]
fn success_advertises_the_public_relay_address_and_mapped_address() {
    let mut net = Net::new();
    let (alice, reply) = new_client_allocate(&mut net, "alice", &no_attrs);
    reply.assert_ok();
    let relayed = reply.xor(attr::XOR_RELAYED_ADDRESS).expect("relayed");
    // Behind NAT: the advertised address, not the bound 192.0.2.10.
    assert_eq!(relayed.ip(), ip(ADVERTISED_V4));
    assert!((50000..=50099).contains(&relayed.port()));
    assert_eq!(reply.xors(attr::XOR_RELAYED_ADDRESS).len(), 1);
    assert_eq!(reply.u32(attr::LIFETIME), Some(600));
    assert_eq!(reply.xor(attr::XOR_MAPPED_ADDRESS), Some(alice.id.remote));
    assert_eq!(reply.msg().check_integrity_sha1(&alice.key()), Some(true));
    // Exactly one socket, on the advertised port.
    assert_eq!(net.open_requests, vec![relay_key(relayed)]);
    assert_eq!(
        net.open.iter().copied().collect::<Vec<_>>(),
        vec![relay_key(relayed)]
    );
    assert_eq!(net.server.allocation_count(), 1);
}

#[test]
fn lifetime_is_clamped_between_default_and_max() {
    let mut net = Net::new();
    for (asked, granted) in [(1200, 1200), (100_000, 3600), (60, 600), (0, 600)] {
        let (_, reply) =
            new_client_allocate(&mut net, "alice", &|b| b.add_u32(attr::LIFETIME, asked));
        reply.assert_ok();
        assert_eq!(reply.u32(attr::LIFETIME), Some(granted), "asked {asked}");
    }
}

#[test]
fn requested_transport_must_be_present_and_udp() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice
        .request(&mut net, method::ALLOCATE, &no_attrs)
        .assert_error(400);
    let tcp = alice.request(&mut net, method::ALLOCATE, &|b| {
        b.add(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0])
    });
    tcp.assert_error(442);
    assert_eq!(tcp.msg().check_integrity_sha1(&alice.key()), Some(true));
    alice
        .request(&mut net, method::ALLOCATE, &|b| {
            b.add(attr::REQUESTED_TRANSPORT, &[17, 0])
        })
        .assert_error(400);
    assert!(net.open_requests.is_empty());
}

#[test]
fn retransmitted_allocate_gets_the_identical_answer_and_no_second_socket() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice.fetch_nonce(&mut net);
    let tid = alice.tid();
    let request = alice.signed(method::ALLOCATE, tid, &udp_transport);
    let first = net.exchange(alice.id, &request);
    first.assert_ok();
    let second = net.exchange(alice.id, &request);
    assert_eq!(first, second);
    assert_eq!(net.open_requests.len(), 1);

    // A different Allocate on the same 5-tuple is a mismatch (RFC 8656 §7.2).
    alice.allocate_with(&mut net, &no_attrs).assert_error(437);
    assert_eq!(net.open_requests.len(), 1);
}

#[test]
fn retransmission_while_the_socket_is_being_opened_is_answered_once() {
    let mut net = Net::new();
    net.auto_ack = false;
    let mut alice = net.client("alice");
    alice.fetch_nonce(&mut net);
    let tid = alice.tid();
    let request = alice.signed(method::ALLOCATE, tid, &udp_transport);
    net.input(alice.id, &request);
    net.input(alice.id, &request);
    assert!(net.drain(alice.id).is_empty());
    assert_eq!(net.unanswered.len(), 1);
    // Another Allocate meanwhile is refused.
    alice.allocate_with(&mut net, &no_attrs).assert_error(437);
    let key = net.unanswered[0];
    net.answer_open(key, true);
    let replies = net.drain(alice.id);
    assert_eq!(replies.len(), 1);
    replies[0].assert_ok();
    assert_eq!(replies[0].tid(), tid);
}

#[test]
fn requested_address_family_ipv6_gets_an_ipv6_relay() {
    let mut net = Net::new();
    let (alice, reply) = new_client_allocate(&mut net, "alice", &family(0x02));
    reply.assert_ok();
    let relayed = reply.xor(attr::XOR_RELAYED_ADDRESS).expect("relayed");
    assert_eq!(relayed.ip(), ip(ADVERTISED_V6));
    assert_eq!(relay_key(relayed).family, Family::V6);
    assert_eq!(net.open_requests, vec![relay_key(relayed)]);
    assert_eq!(reply.xor(attr::XOR_MAPPED_ADDRESS), Some(alice.id.remote));
}

#[test]
fn unsupported_address_families_get_440() {
    let mut net = Net::new();
    new_client_allocate(&mut net, "alice", &family(0x03))
        .1
        .assert_error(440);
    let mut v4_only = Net::with(|c| c.relay_v6 = None);
    new_client_allocate(&mut v4_only, "alice", &family(0x02))
        .1
        .assert_error(440);
    let mut v6_only = Net::with(|c| c.relay_v4 = None);
    new_client_allocate(&mut v6_only, "alice", &no_attrs)
        .1
        .assert_error(440);
    let (_, reply) = new_client_allocate(&mut v6_only, "alice", &family(0x02));
    reply.assert_ok();
    for n in [&net, &v4_only, &v6_only] {
        // Nothing leaked by the refusals.
        assert_eq!(
            n.shared.quotas().held_by("alice"),
            n.server.allocation_count() as u32
        );
    }
}

#[test]
fn additional_address_family_makes_a_dual_stack_allocation() {
    let mut net = Net::new();
    let (mut alice, reply) = new_client_allocate(&mut net, "alice", &additional(0x02));
    reply.assert_ok();
    let relayed = reply.xors(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(relayed.len(), 2);
    assert_eq!(relayed[0].ip(), ip(ADVERTISED_V4));
    assert_eq!(relayed[1].ip(), ip(ADVERTISED_V6));
    assert!(!reply.has(attr::ADDRESS_ERROR_CODE));
    assert_eq!(net.open.len(), 2);
    // Deleting it closes both sockets and frees one quota unit.
    alice.refresh(&mut net, Some(0)).assert_ok();
    assert!(net.open.is_empty());
    assert_eq!(net.closed.len(), 2);
    assert_eq!(net.shared.quotas().held_by("alice"), 0);
}

#[test]
fn additional_family_unavailable_still_allocates_ipv4_with_address_error_code() {
    let mut net = Net::with(|c| c.relay_v6 = None);
    let (_, reply) = new_client_allocate(&mut net, "alice", &additional(0x02));
    reply.assert_ok();
    let relayed = reply.xors(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].ip(), ip(ADVERTISED_V4));
    // RFC 8656 §18.12: family, reserved, class 4, number 40, reason.
    let mut expected = vec![0x02, 0, 4, 40];
    expected.extend_from_slice(b"Address Family not Supported");
    assert_eq!(reply.get(attr::ADDRESS_ERROR_CODE), Some(expected));
}

#[test]
fn additional_family_combined_with_requested_or_asking_for_ipv4_gets_400() {
    let mut net = Net::new();
    let both = |b: &mut MessageBuilder<'_>| {
        family(0x01)(b);
        additional(0x02)(b);
    };
    new_client_allocate(&mut net, "alice", &both)
        .1
        .assert_error(400);
    new_client_allocate(&mut net, "alice", &additional(0x01))
        .1
        .assert_error(400);
    assert!(net.open_requests.is_empty());
    assert_eq!(net.shared.quotas().held_by("alice"), 0);
}

#[test]
fn even_port_gets_an_even_port() {
    let mut net = Net::new();
    for _ in 0..10 {
        let (_, reply) =
            new_client_allocate(&mut net, "alice", &|b| b.add(attr::EVEN_PORT, &[0x00]));
        reply.assert_ok();
        let port = reply
            .xor(attr::XOR_RELAYED_ADDRESS)
            .expect("relayed")
            .port();
        assert_eq!(port % 2, 0, "{port}");
        assert!(!reply.has(attr::RESERVATION_TOKEN));
    }
}

#[test]
fn even_port_with_r_bit_reserves_the_next_port_for_a_token() {
    let mut net = Net::new();
    let (_, first) = new_client_allocate(&mut net, "alice", &|b| b.add(attr::EVEN_PORT, &[0x80]));
    first.assert_ok();
    let port = first
        .xor(attr::XOR_RELAYED_ADDRESS)
        .expect("relayed")
        .port();
    assert_eq!(port % 2, 0);
    let token = first.get(attr::RESERVATION_TOKEN).expect("token");
    assert_eq!(token.len(), 8);

    let with_token = |b: &mut MessageBuilder<'_>| b.add(attr::RESERVATION_TOKEN, &token);
    let (_, second) = new_client_allocate(&mut net, "bob", &with_token);
    second.assert_ok();
    let relayed = second.xor(attr::XOR_RELAYED_ADDRESS).expect("relayed");
    assert_eq!(
        relayed,
        std::net::SocketAddr::new(ip(ADVERTISED_V4), port + 1)
    );
    // A token is good for one Allocate.
    new_client_allocate(&mut net, "bob", &with_token)
        .1
        .assert_error(508);
}

#[test]
fn reservation_token_misuse_and_expiry() {
    // Four ports: the pair, and two more, so reuse is observable.
    let mut net = Net::with_ports(50000..=50003);
    let even_r = |b: &mut MessageBuilder<'_>| b.add(attr::EVEN_PORT, &[0x80]);
    let (_, first) = new_client_allocate(&mut net, "alice", &even_r);
    let token = first.get(attr::RESERVATION_TOKEN).expect("token");
    let port = first
        .xor(attr::XOR_RELAYED_ADDRESS)
        .expect("relayed")
        .port();

    // RFC 8656 §7.2: RESERVATION-TOKEN with EVEN-PORT is contradictory.
    let both = |b: &mut MessageBuilder<'_>| {
        b.add(attr::RESERVATION_TOKEN, &token);
        b.add(attr::EVEN_PORT, &[0x00]);
    };
    new_client_allocate(&mut net, "bob", &both)
        .1
        .assert_error(400);
    let unknown = |b: &mut MessageBuilder<'_>| b.add(attr::RESERVATION_TOKEN, &[9; 8]);
    new_client_allocate(&mut net, "bob", &unknown)
        .1
        .assert_error(508);

    // The reserved port is held: the remaining two ports go to others, then 508.
    for _ in 0..2 {
        let (_, other) = new_client_allocate(&mut net, "bob", &no_attrs);
        let other = other
            .xor(attr::XOR_RELAYED_ADDRESS)
            .expect("relayed")
            .port();
        assert_ne!(other, port + 1, "the reserved port was handed out");
    }
    new_client_allocate(&mut net, "bob", &no_attrs)
        .1
        .assert_error(508);

    // About 30 s later the reservation lapses: the token is refused and the port is free.
    net.advance(Duration::from_secs(30));
    let with_token = |b: &mut MessageBuilder<'_>| b.add(attr::RESERVATION_TOKEN, &token);
    new_client_allocate(&mut net, "carol", &with_token)
        .1
        .assert_error(508);
    let (_, c) = new_client_allocate(&mut net, "carol", &no_attrs);
    assert_eq!(
        c.xor(attr::XOR_RELAYED_ADDRESS).expect("relayed").port(),
        port + 1
    );
}

#[test]
fn per_user_and_total_quotas() {
    let mut net = Net::with_quotas(Quotas::new(2, 3));
    let (mut a1, r) = new_client_allocate(&mut net, "alice", &no_attrs);
    r.assert_ok();
    new_client_allocate(&mut net, "alice", &no_attrs)
        .1
        .assert_ok();
    let (_, over) = new_client_allocate(&mut net, "alice", &no_attrs);
    over.assert_error(486);
    // The refusal is signed: the user proved their key.
    assert_eq!(over.msg().check_integrity_sha1(&a1.key()), Some(true));
    new_client_allocate(&mut net, "bob", &no_attrs)
        .1
        .assert_ok();
    // The relay is full: 508 even for a user under quota.
    new_client_allocate(&mut net, "carol", &no_attrs)
        .1
        .assert_error(508);
    assert_eq!(net.server.allocation_count(), 3);

    // Deleting an allocation gives its quota back.
    a1.refresh(&mut net, Some(0)).assert_ok();
    assert_eq!(net.shared.quotas().held_by("alice"), 1);
    new_client_allocate(&mut net, "alice", &no_attrs)
        .1
        .assert_ok();
    // And so does expiry.
    net.advance(Duration::from_secs(600));
    assert_eq!(net.server.allocation_count(), 0);
    assert_eq!(net.shared.quotas().held_by("alice"), 0);
    assert_eq!(net.shared.quotas().held_by("bob"), 0);
    new_client_allocate(&mut net, "carol", &no_attrs)
        .1
        .assert_ok();
}

#[test]
fn port_exhaustion_gets_508_until_a_port_is_freed() {
    let mut net = Net::with_ports(50000..=50001);
    let (mut a, _) = new_client_allocate(&mut net, "alice", &no_attrs);
    new_client_allocate(&mut net, "bob", &no_attrs)
        .1
        .assert_ok();
    new_client_allocate(&mut net, "carol", &no_attrs)
        .1
        .assert_error(508);
    assert_eq!(net.shared.quotas().held_by("carol"), 0);
    a.refresh(&mut net, Some(0)).assert_ok();
    new_client_allocate(&mut net, "carol", &no_attrs)
        .1
        .assert_ok();
}

#[test]
fn failed_bind_retries_another_port() {
    let mut net = Net::new();
    net.fail_next_binds = 2;
    let (_, reply) = new_client_allocate(&mut net, "alice", &no_attrs);
    reply.assert_ok();
    assert_eq!(net.open_requests.len(), 3);
    let relayed = reply.xor(attr::XOR_RELAYED_ADDRESS).expect("relayed");
    assert_eq!(relay_key(relayed), net.open_requests[2]);
    assert_eq!(net.open.len(), 1);
}

#[test]
fn repeated_bind_failures_give_508_and_leak_nothing() {
    let mut net = Net::with_ports(50000..=50003);
    net.fail_next_binds = 100;
    let (_, reply) = new_client_allocate(&mut net, "alice", &no_attrs);
    reply.assert_error(508);
    assert_eq!(net.open_requests.len(), 8, "gives up after 8 attempts");
    assert!(net.open.is_empty());
    assert_eq!(net.shared.quotas().held_by("alice"), 0);
    // Every port is usable again.
    net.fail_next_binds = 0;
    let mut ports: Vec<u16> = (0..4)
        .map(|_| {
            let (_, r) = new_client_allocate(&mut net, "bob", &no_attrs);
            r.xor(attr::XOR_RELAYED_ADDRESS).expect("relayed").port()
        })
        .collect();
    ports.sort();
    assert_eq!(ports, vec![50000, 50001, 50002, 50003]);
}

#[test]
fn failed_bind_of_a_reserved_port_gives_508_and_frees_it() {
    let mut net = Net::with_ports(50000..=50001);
    let (_, first) = new_client_allocate(&mut net, "alice", &|b| b.add(attr::EVEN_PORT, &[0x80]));
    let token = first.get(attr::RESERVATION_TOKEN).expect("token");
    net.fail_next_binds = 1;
    let with_token = |b: &mut MessageBuilder<'_>| b.add(attr::RESERVATION_TOKEN, &token);
    new_client_allocate(&mut net, "bob", &with_token)
        .1
        .assert_error(508);
    assert_eq!(net.shared.quotas().held_by("bob"), 0);
    let (_, again) = new_client_allocate(&mut net, "bob", &no_attrs);
    assert_eq!(
        again
            .xor(attr::XOR_RELAYED_ADDRESS)
            .expect("relayed")
            .port(),
        50001
    );
}

#[test]
fn closing_a_stream_deletes_its_allocation() {
    let mut net = Net::new();
    let id = net.id_on(Transport::Tcp, "198.51.100.9", LISTEN);
    let mut alice = Client::new(id, "alice", "alice-pw");
    let relayed = alice.allocate(&mut net);
    assert_eq!(net.shared.quotas().held_by("alice"), 1);
    let now = net.now;
    net.server.handle_client_closed(now, id);
    net.step();
    assert_eq!(net.closed, vec![(now, relay_key(relayed))]);
    assert!(net.open.is_empty());
    assert_eq!(net.server.allocation_count(), 0);
    assert_eq!(net.shared.quotas().held_by("alice"), 0);
}

#[test]
fn stream_closed_while_its_socket_is_opening_leaks_nothing() {
    let mut net = Net::with_ports(50000..=50000);
    net.auto_ack = false;
    let id = net.id_on(Transport::Tcp, "198.51.100.9", LISTEN);
    let mut alice = Client::new(id, "alice", "alice-pw");
    alice.fetch_nonce(&mut net);
    let tid = alice.tid();
    net.input(id, &alice.signed(method::ALLOCATE, tid, &udp_transport));
    assert_eq!(net.shared.quotas().held_by("alice"), 1);
    let now = net.now;
    net.server.handle_client_closed(now, id);
    net.step();
    assert_eq!(net.shared.quotas().held_by("alice"), 0);
    // The shell's bind completes after the close: the socket is closed at once.
    let key = net.unanswered[0];
    assert_eq!(
        key,
        RelayKey {
            family: Family::V4,
            port: RelayPort(50000)
        }
    );
    net.answer_open(key, true);
    assert!(net.open.is_empty());
    assert!(net.drain(id).is_empty());
    // The only port is free again.
    net.auto_ack = true;
    new_client_allocate(&mut net, "bob", &no_attrs)
        .1
        .assert_ok();
}

#[test]
fn even_port_pair_is_retried_as_a_pair_when_the_bind_fails() {
    let mut net = Net::new();
    net.fail_next_binds = 1;
    let (_, first) = new_client_allocate(&mut net, "alice", &|b| b.add(attr::EVEN_PORT, &[0x80]));
    first.assert_ok();
    assert_eq!(net.open_requests.len(), 2);
    let port = first
        .xor(attr::XOR_RELAYED_ADDRESS)
        .expect("relayed")
        .port();
    assert_eq!(port % 2, 0);
    // The token names the successor of the port that was finally bound.
    let token = first.get(attr::RESERVATION_TOKEN).expect("token");
    let with_token = |b: &mut MessageBuilder<'_>| b.add(attr::RESERVATION_TOKEN, &token);
    let (_, second) = new_client_allocate(&mut net, "bob", &with_token);
    assert_eq!(
        second
            .xor(attr::XOR_RELAYED_ADDRESS)
            .expect("relayed")
            .port(),
        port + 1
    );
}

#[test]
fn dual_allocation_whose_ipv6_socket_never_binds_closes_the_ipv4_one() {
    let mut net = Net::new();
    net.auto_ack = false;
    let mut alice = net.client("alice");
    alice.fetch_nonce(&mut net);
    let tid = alice.tid();
    let request = alice.signed(method::ALLOCATE, tid, &|b| {
        udp_transport(b);
        additional(0x02)(b);
    });
    net.input(alice.id, &request);
    let v4 = net.unanswered[0];
    assert_eq!(v4.family, Family::V4);
    net.answer_open(v4, true);
    for _ in 0..8 {
        let v6 = net.unanswered[0];
        assert_eq!(v6.family, Family::V6);
        net.answer_open(v6, false);
    }
    let reply = net.recv(alice.id).expect("an answer");
    reply.assert_error(508);
    assert!(net.unanswered.is_empty());
    assert_eq!(net.closed.len(), 1);
    assert!(net.open.is_empty());
    assert_eq!(net.shared.quotas().held_by("alice"), 0);
    assert_eq!(net.server.allocation_count(), 0);
}

#[test]
fn without_an_advertised_address_the_bound_or_reached_address_is_used() {
    // Bound to a concrete address: that address.
    let mut net = Net::with(|c| {
        c.relay_v4 = Some(turnpike::proto::RelayIp {
            bind: ip("127.0.0.1"),
            advertise: None,
            host: None,
        })
    });
    let relayed = net.client("alice").allocate(&mut net);
    assert_eq!(relayed.ip(), ip("127.0.0.1"));
    // Bound to the wildcard: the address the client reached us on.
    let mut net = Net::with(|c| {
        c.relay_v4 = Some(turnpike::proto::RelayIp {
            bind: ip("0.0.0.0"),
            advertise: None,
            host: None,
        })
    });
    let relayed = net.client("alice").allocate(&mut net);
    assert_eq!(relayed.ip(), addr(LISTEN).ip());
}

#[test]
fn wildcard_relays_give_a_client_of_the_other_family_the_host_address_or_440() {
    // The client reached us over IPv4 (LISTEN); IPv6 relay sockets bind `[::]`.
    let wildcard_v6 = |host: Option<&str>| {
        let host = host.map(ip);
        Net::with(move |c| {
            c.relay_v6 = Some(turnpike::proto::RelayIp {
                bind: ip("::"),
                advertise: None,
                host,
            })
        })
    };
    let mut net = wildcard_v6(Some("2001:db8::1"));
    let (_, reply) = new_client_allocate(&mut net, "alice", &family(0x02));
    reply.assert_ok();
    let relayed = reply.xor(attr::XOR_RELAYED_ADDRESS).expect("relayed");
    assert_eq!(relayed.ip(), ip("2001:db8::1"));
    // Dual: the IPv4 relay is the configured one, the IPv6 one the host's.
    let (_, reply) = new_client_allocate(&mut net, "alice", &additional(0x02));
    reply.assert_ok();
    let relayed = reply.xors(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(relayed.len(), 2, "{relayed:?}");
    assert_eq!(relayed[1].ip(), ip("2001:db8::1"));

    // No IPv6 address on the host: 440, and a dual request gets its IPv4 half with
    // ADDRESS-ERROR-CODE.
    let mut net = wildcard_v6(None);
    new_client_allocate(&mut net, "alice", &family(0x02))
        .1
        .assert_error(440);
    let (_, reply) = new_client_allocate(&mut net, "alice", &additional(0x02));
    reply.assert_ok();
    assert_eq!(reply.xors(attr::XOR_RELAYED_ADDRESS).len(), 1);
    assert!(reply.has(attr::ADDRESS_ERROR_CODE));
    assert_eq!(net.shared.quotas().held_by("alice"), 1);
}
