//! Draining and reconfiguring a core on virtual time (`turnpike_proto::drain`): new
//! Allocates refused with 403 or redirected with 300 + ALTERNATE-SERVER, existing
//! allocations still relaying, binding channels and refreshing (capped to the deadline),
//! `drained` true once the last allocation is gone or at the deadline; a new
//! configuration swaps users and secrets for the next request.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod core_harness;

use std::time::Duration;

use core_harness::*;
use turnpike::proto::stun::attr;
use turnpike::proto::stun::Class;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn draining_refuses_new_allocations_with_403_and_keeps_existing_ones() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice.allocate(&mut net);
    let peer = addr(PEER_A);
    alice.channel_bind(&mut net, 0x4000, peer).assert_ok();
    assert!(!net.server.is_draining());
    assert!(!net.server.drained(net.now));

    let deadline = net.now + secs(120);
    net.server.handle_drain(net.now, deadline);
    assert!(net.server.is_draining());
    assert!(!net.server.drained(net.now), "one allocation is left");

    let mut bob = net.client("bob");
    let reply = bob.allocate_with(&mut net, &no_attrs);
    reply.assert_error(403);
    let reason = attr::decode_error_code(&reply.get(attr::ERROR_CODE).unwrap())
        .unwrap()
        .1
        .to_owned();
    assert_eq!(reason, "Server draining");
    assert!(!reply.has(attr::ALTERNATE_SERVER));
    assert_eq!(net.server.allocation_count(), 1);

    // The existing allocation keeps relaying, binding channels and adding permissions.
    let fwd = alice.channel_data(&mut net, 0x4000, b"media").unwrap();
    assert_eq!(fwd.peer, peer);
    alice
        .channel_bind(&mut net, 0x4001, addr(PEER_B))
        .assert_ok();
    alice.create_permission(&mut net, &[peer]).assert_ok();

    // A Refresh is granted no more than the drain has left, in whole seconds.
    net.advance(secs(20) + Duration::from_millis(300));
    let reply = alice.refresh(&mut net, Some(600));
    reply.assert_ok();
    assert_eq!(reply.u32(attr::LIFETIME), Some(99));

    // Deleting the last allocation ends the drain.
    alice.refresh(&mut net, Some(0)).assert_ok();
    assert!(net.server.drained(net.now));
}

#[test]
fn draining_redirects_to_an_alternate_server_of_the_clients_family() {
    let v6 = addr("[2001:db8:2::1]:3478");
    let v4 = addr("198.51.100.20:3478");
    let mut net = Net::with(|c| c.alternate_servers = vec![v6, v4]);
    let deadline = net.now + secs(60);
    net.server.handle_drain(net.now, deadline);
    assert!(net.server.drained(net.now), "nothing to wait for");
    let mut alice = net.client("alice");
    let reply = alice.allocate_with(&mut net, &no_attrs);
    reply.assert_error(300);
    let alternate = attr::decode_address(&reply.get(attr::ALTERNATE_SERVER).unwrap()).unwrap();
    assert_eq!(alternate, v4);
    // The redirection is signed like any authenticated answer (RFC 8489 §10).
    assert!(reply.has(attr::MESSAGE_INTEGRITY));
    assert_eq!(net.server.allocation_count(), 0);
}

#[test]
fn the_drain_ends_at_its_deadline_with_allocations_left() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice
        .allocate_with(&mut net, &|b| b.add_u32(attr::LIFETIME, 3600))
        .assert_ok();
    let deadline = net.now + secs(30);
    net.server.handle_drain(net.now, deadline);
    // A later, longer drain keeps the first deadline.
    net.server.handle_drain(net.now, net.now + secs(600));
    // The core asks to be woken at the deadline, so an idle shell still learns of it.
    assert!(net.server.poll_timeout().is_some_and(|t| t <= deadline));
    net.advance(secs(29));
    assert!(!net.server.drained(net.now));
    net.advance(secs(1));
    assert!(net.server.drained(net.now));
    assert_eq!(net.server.allocation_count(), 1);
}

#[test]
fn a_new_configuration_rotates_secrets_and_users_for_the_next_request() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice.allocate(&mut net);
    let mut config = base_config(net.t0);
    config.users = vec![("dave".to_owned(), "dave-pw".to_owned())];
    config.secrets = vec![b"rest-secret-next".to_vec()];
    let now = net.now;
    net.server.handle_config(now, config);

    // A user that was removed: its next request is refused (401), its allocation stays.
    let reply = alice.refresh(&mut net, Some(600));
    reply.assert_error(401);
    assert_eq!(net.server.allocation_count(), 1);
    let mut dave = net.client("dave");
    dave.allocate(&mut net);
    assert_eq!(net.server.allocation_count(), 2);
    let mut bob = net.client("bob");
    let reply = bob.allocate_with(&mut net, &no_attrs);
    assert_eq!((reply.class(), reply.code()), (Class::Error, Some(401)));
}
