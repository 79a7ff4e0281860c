//! A call survives a relay drain: two relays announcing themselves into a real
//! `redis-server` (started here on a free loopback port; the test fails when it is
//! missing), two signaling nodes sharing it, alice on one node and bob on the other in a
//! relay-only call on relay A. Relay A starts draining as `turnpike serve` does on
//! SIGTERM (the relay's drain and the draining heartbeat): both clients get
//! `relay_moved`, ICE-restart onto relay B, media keeps flowing both ways, and relay A
//! drains to zero allocations.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod support;
#[path = "../../tests/support/redis.rs"]
mod test_redis;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{options, Relay, Signal};
use test_redis::Redis;
use turnpike::fleet::{Announcer, Identity};
use turnpike_callclient::report::PairInfo;
use turnpike_callclient::{Payload, Role};

fn announce(redis: &Redis, relay: &Relay, id: &str) -> Announcer {
    Announcer::start(Identity {
        redis_url: redis.url.clone(),
        id: id.into(),
        region: "eu".into(),
        urls: vec![format!("turn:{}?transport=udp", relay.addr)],
        quality: None,
    })
}

/// Both ends of the pair are relayed addresses on `relay` (ports of its range).
fn on_relay(pair: &PairInfo, relay: &Relay) -> bool {
    [&pair.local, &pair.remote].iter().all(|c| {
        c.candidate_type == "relay"
            && c.address
                .parse::<SocketAddr>()
                .is_ok_and(|a| relay.ports.contains(&a.port()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_moves_to_another_relay_when_its_relay_drains() {
    let redis = Redis::start();
    let relay_a = std::sync::Arc::new(Relay::start_in(false, 3));
    let relay_b = Relay::start_in(false, 6);
    // Only relay A is in the fleet when the call starts, so the call rides on it.
    let announcer_a = announce(&redis, &relay_a, "relay-a");
    let node1 = Signal::start_fleet(&redis.url).await;
    let node2 = Signal::start_fleet(&redis.url).await;
    // The nodes read the registry every 250 ms.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let media = Duration::from_secs(8);
    let mut alice = options(
        &node1.url,
        "alice",
        Role::Call { to: "bob".into() },
        Payload::Tone(440.0),
    );
    alice.media_time = media;
    let mut bob = options(&node2.url, "bob", Role::Answer, Payload::Tone(660.0));
    bob.media_time = media;
    let bob = tokio::spawn(turnpike_callclient::run(bob));
    let alice = tokio::spawn(turnpike_callclient::run(alice));

    // A few seconds into the call relay B joins, then relay A drains.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let announcer_b = announce(&redis, &relay_b, "relay-b");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let drain_started = Instant::now();
    relay_a.drain(Instant::now() + Duration::from_secs(30));
    announcer_a.drain();
    let drained = {
        let relay_a = relay_a.clone();
        tokio::spawn(async move {
            relay_a.drained().await;
            drain_started.elapsed()
        })
    };

    let (alice, bob) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(alice, bob) })
            .await
            .expect("the call finishes within 60 s");
    let alice = alice.unwrap().expect("alice's call");
    let bob = bob.unwrap().expect("bob's call");
    for report in [&alice, &bob] {
        eprintln!("{}", serde_json::to_string(report).unwrap());
    }
    let call_over = drain_started.elapsed();
    let drained = tokio::time::timeout(Duration::from_secs(10), drained).await;
    eprintln!(
        "relay A: drained (0 allocations) {:?} after the drain started; the call ended \
         {call_over:?} after it",
        drained.as_ref().ok().and_then(|d| d.as_ref().ok())
    );

    for report in [&alice, &bob] {
        let who = &report.user;
        assert_eq!(
            report.relay_moves, 1,
            "{who} restarted onto another relay once"
        );
        let pair = report.selected_pair.as_ref().expect("a selected pair");
        assert!(
            on_relay(pair, &relay_b),
            "{who}'s pair is not on relay B: {pair:?}"
        );
        let a_url = format!("turn:{}?transport=udp", relay_a.addr);
        let b_url = format!("turn:{}?transport=udp", relay_b.addr);
        assert_eq!(
            report.relays_used,
            [a_url, b_url],
            "{who}'s relay_used reports"
        );
        eprintln!(
            "{who}: largest gap in received RTP {} ms, {} packets received of ~{}",
            report.received.max_gap_ms,
            report.received.packets,
            media.as_millis() / 20
        );
        assert!(
            report.received.max_gap_ms <= 1000,
            "{who}'s audio stopped for {} ms",
            report.received.max_gap_ms
        );
        assert!(report.received.packets as u128 >= media.as_millis() / 20 * 8 / 10);
    }
    // The moved calls freed their allocations on A: it drained while the call went on.
    let drained_after = drained.expect("relay A drains").unwrap();
    assert!(
        drained_after < call_over,
        "relay A drained only when the call ended"
    );
    drop(announcer_b);
}
