//! What the core tells an in-kernel fast path (`Server::poll_fast_path`): for each
//! allocation whose routes changed, all the channels the kernel may forward and until
//! when — never more than the core itself would forward, never longer.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod core_harness;

use std::time::Duration;

use core_harness::*;
use turnpike::proto::{ChannelNumber, FastPathUpdate, FastRoute, Transport};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn fast_net() -> Net {
    Net::with(|c| c.fast_path = true)
}

/// Every update the core has queued, oldest last (the order does not matter to the
/// shell: each update is complete).
fn updates(net: &mut Net) -> Vec<FastPathUpdate> {
    let now = net.now;
    std::iter::from_fn(|| net.server.poll_fast_path(now)).collect()
}

/// The one route of the one update queued (panics otherwise).
fn only_route(net: &mut Net) -> FastRoute {
    match &updates(net)[..] {
        [update] if update.routes.len() == 1 => update.routes[0],
        other => panic!("one update with one route expected, got {other:?}"),
    }
}

#[test]
fn a_channel_bind_reports_its_route_with_the_relay_sockets_local_address() {
    let mut net = fast_net();
    let mut alice = net.client("alice");
    let relayed = alice.allocate(&mut net);
    assert_eq!(
        updates(&mut net),
        vec![],
        "no channel yet, nothing to report"
    );
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_A))
        .assert_ok();
    let route = FastRoute {
        channel: ChannelNumber(0x4000),
        peer: addr(PEER_A),
        // The bind address (192.0.2.10), not the advertised NAT address (203.0.113.5):
        // on this host, behind 1:1 NAT, peers' packets arrive addressed to the former.
        relay: std::net::SocketAddr::new(ip("192.0.2.10"), relayed.port()),
        // The permission (300 s) ends before the channel (600 s) and the allocation.
        expires: net.now + secs(300),
    };
    assert_eq!(
        updates(&mut net),
        vec![FastPathUpdate {
            client: alice.id,
            routes: vec![route],
        }]
    );
    // Refreshing the permission moves the route's end to the next earliest expiry.
    net.advance(secs(100));
    alice
        .create_permission(&mut net, &[addr(PEER_A)])
        .assert_ok();
    assert_eq!(only_route(&mut net).expires, net.t0 + secs(400));
    // A Refresh reports too (the allocation now ends at 700 s; the permission first).
    alice.refresh(&mut net, Some(600)).assert_ok();
    assert_eq!(only_route(&mut net).expires, net.t0 + secs(400));
    net.advance(secs(250));
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_A))
        .assert_ok();
    // Allocation: refreshed at 100 s for 600 s → 700 s; permission and channel: 650 s, 950 s.
    assert_eq!(only_route(&mut net).expires, net.t0 + secs(650));
}

#[test]
fn deleting_an_allocation_reports_no_routes_for_it() {
    let mut net = fast_net();
    let mut alice = net.client("alice");
    alice.allocate(&mut net);
    alice
        .channel_bind(&mut net, 0x4001, addr(PEER_A))
        .assert_ok();
    alice
        .channel_bind(&mut net, 0x4002, addr(PEER_B))
        .assert_ok();
    let routes = &updates(&mut net)[0].routes;
    assert_eq!(routes.len(), 2);
    alice.refresh(&mut net, Some(0)).assert_ok();
    assert_eq!(
        updates(&mut net),
        vec![FastPathUpdate {
            client: alice.id,
            routes: vec![],
        }]
    );
}

#[test]
fn an_allocation_that_times_out_reports_no_routes() {
    let mut net = fast_net();
    let mut alice = net.client("alice");
    alice.allocate(&mut net);
    alice
        .channel_bind(&mut net, 0x4001, addr(PEER_A))
        .assert_ok();
    updates(&mut net);
    net.advance(secs(600));
    assert_eq!(net.server.allocation_count(), 0);
    assert_eq!(
        updates(&mut net),
        vec![FastPathUpdate {
            client: alice.id,
            routes: vec![],
        }]
    );
}

#[test]
fn permissions_without_channels_and_expired_permissions_give_no_route() {
    let mut net = fast_net();
    let mut alice = net.client("alice");
    alice.allocate(&mut net);
    alice
        .create_permission(&mut net, &[addr(PEER_A)])
        .assert_ok();
    // A permission alone is for Send/Data indications, which stay in user space.
    assert_eq!(updates(&mut net)[0].routes, vec![]);
    alice
        .channel_bind(&mut net, 0x4001, addr(PEER_A))
        .assert_ok();
    updates(&mut net);
    // Past the permission's 300 s the channel (600 s) is still bound, but a fresh
    // report (triggered by a permission for another peer) leaves it out.
    net.advance(secs(300));
    alice
        .create_permission(&mut net, &[addr(PEER_B)])
        .assert_ok();
    assert_eq!(updates(&mut net)[0].routes, vec![]);
}

#[test]
fn without_a_fast_path_or_for_stream_clients_nothing_is_reported() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice.allocate(&mut net);
    alice
        .channel_bind(&mut net, 0x4001, addr(PEER_A))
        .assert_ok();
    assert_eq!(updates(&mut net), vec![]);

    let mut net = fast_net();
    let id = net.id_on(Transport::Tcp, "198.51.100.9", LISTEN);
    let mut tcp = Client::new(id, "bob", "bob-pw");
    tcp.allocate(&mut net);
    tcp.channel_bind(&mut net, 0x4001, addr(PEER_A)).assert_ok();
    assert_eq!(
        updates(&mut net),
        vec![],
        "the kernel never sees TCP's bytes"
    );
}

#[test]
fn one_allocation_gets_at_most_max_fast_routes_in_the_kernel() {
    use turnpike::proto::fast_path::MAX_FAST_ROUTES;
    let mut net = fast_net();
    let mut alice = net.client("alice");
    alice.allocate(&mut net);
    let n = MAX_FAST_ROUTES as u16 + 4;
    for i in 0..n {
        let peer = std::net::SocketAddr::new(ip("8.8.8.8"), 5000 + i);
        alice.channel_bind(&mut net, 0x4000 + i, peer).assert_ok();
    }
    let routes = &updates(&mut net)[0].routes;
    // The first bound keep their place; the rest stay on the socket path.
    assert_eq!(routes.len(), MAX_FAST_ROUTES);
    assert_eq!(routes[0].channel, ChannelNumber(0x4000));
    assert_eq!(
        routes[MAX_FAST_ROUTES - 1].channel,
        ChannelNumber(0x4000 + MAX_FAST_ROUTES as u16 - 1)
    );
}
