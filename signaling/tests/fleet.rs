//! Signaling on a fleet registry in a real `redis-server`: relays (heartbeats written
//! here, in the relay's format, by `turnpike_signaling::fleet::announce`) ranked by
//! region and load, draining and stale relays never offered, calls moved off a relay
//! that starts draining, and the last known registry kept when Redis goes away.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use turnpike_signaling::fleet::{self, Heartbeat, LinkQuality};

fn relay(id: &str, region: &str, port: u16) -> Heartbeat {
    Heartbeat {
        id: id.into(),
        region: region.into(),
        urls: vec![
            format!("turn:127.0.0.1:{port}?transport=udp"),
            format!("turn:127.0.0.1:{port}?transport=tcp"),
        ],
        allocations: 0,
        pps: 0,
        bps: 0,
        cpu_percent: 0,
        draining: false,
        version: "test".into(),
        at_ms: 0,
        quality: Vec::new(),
    }
}

/// Relays that beat every 200 ms while the test runs; change them through `set`.
#[derive(Clone)]
struct Relays(Arc<Mutex<Vec<Heartbeat>>>);

impl Relays {
    async fn start(url: &str, relays: Vec<Heartbeat>) -> Relays {
        let shared = Relays(Arc::new(Mutex::new(relays)));
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let beats = shared.clone();
        tokio::spawn(async move {
            loop {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                let list = beats.0.lock().unwrap().clone();
                for mut beat in list {
                    beat.at_ms = now;
                    if fleet::announce(&mut conn, &beat).await.is_err() {
                        return; // Redis is gone (the outage test)
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        shared
    }

    fn set(&self, id: &str, change: impl FnOnce(&mut Heartbeat)) {
        let mut list = self.0.lock().unwrap();
        change(list.iter_mut().find(|r| r.id == id).unwrap());
    }

    fn remove(&self, id: &str) {
        self.0.lock().unwrap().retain(|r| r.id != id);
    }
}

/// The first `urls` entry of each offered ICE server, in order.
fn offered(servers: &Value) -> Vec<String> {
    servers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["urls"][0].as_str().unwrap().to_string())
        .collect()
}

fn udp(port: u16) -> String {
    format!("turn:127.0.0.1:{port}?transport=udp")
}

/// `turn_refresh` until the answer's first URLs equal `want` (at most 3 s, 50 ms apart).
async fn wait_offer(c: &mut Client, want: &[String]) -> Value {
    let start = Instant::now();
    loop {
        c.send(json!({"type": "turn_refresh"})).await;
        let answer = c.expect("ice_servers").await;
        if offered(&answer["ice_servers"]) == want {
            return answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "offered {}, wanted {want:?}",
            answer["ice_servers"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fleet_config(redis: &Redis) -> turnpike_signaling::SignalingConfig {
    let mut cfg = config();
    cfg.redis_url = Some(redis.url.clone());
    cfg.fleet_redis_url = Some(redis.url.clone());
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranks_live_relays_by_region_then_load_and_never_offers_draining_or_stale() {
    let redis = redis_server().await;
    let relays = Relays::start(
        &redis.url,
        vec![
            relay("eu-a", "eu", 40001),
            relay("eu-b", "eu", 40002),
            relay("us-a", "us", 40003),
            relay("us-b", "us", 40004),
            relay("ap-a", "ap", 40005),
        ],
    )
    .await;
    relays.set("eu-a", |r| r.allocations = 30); // loaded
    relays.set("us-b", |r| r.draining = true);
    let node = start(fleet_config(&redis)).await;

    let mut us = Client::hello(
        node.addr,
        json!({"token": token("ann", "p"), "region": "us"}),
    )
    .await;
    let mut eu = Client::hello(
        node.addr,
        json!({"token": token("eve", "p"), "region": "eu"}),
    )
    .await;
    // The us client gets the us relay first (the draining one never), then the rest by
    // load and id (ap-a and eu-b are idle, eu-a is loaded): at most three, each with
    // REST credentials and its region.
    let answer = wait_offer(&mut us, &[udp(40003), udp(40005), udp(40002)]).await;
    let first = &answer["ice_servers"][0];
    assert_eq!(first["region"], "us");
    assert!(first["username"].as_str().unwrap().ends_with(":ann"));
    assert!(first["credential"].as_str().is_some());
    // The eu client: the idle eu relay before the loaded one, then the idlest other.
    wait_offer(&mut eu, &[udp(40002), udp(40001), udp(40005)]).await;

    // Load changes reorder within the region: eu-b gets busier than eu-a.
    relays.set("eu-b", |r| r.pps = 10_000); // score 100
    relays.set("eu-a", |r| r.allocations = 2); // score 20
    wait_offer(&mut eu, &[udp(40001), udp(40002), udp(40005)]).await;
    // hello_ok carries the same ranking as turn_refresh.
    let late = Client::hello(
        node.addr,
        json!({"token": token("eli", "p"), "region": "eu"}),
    )
    .await;
    assert_eq!(
        offered(&late.hello["ice_servers"]),
        [udp(40001), udp(40002), udp(40005)]
    );

    // A relay whose heartbeats stop is stale within 3 s and no longer offered; us-b,
    // done draining, ranks again.
    relays.remove("eu-a");
    relays.set("us-b", |r| r.draining = false);
    let gone = Instant::now();
    wait_offer(&mut eu, &[udp(40002), udp(40005), udp(40003)]).await;
    let took = gone.elapsed();
    wait_offer(&mut us, &[udp(40003), udp(40004), udp(40005)]).await;
    eprintln!("stale relay dropped from the offer after {took:?}");
    assert!(took <= Duration::from_secs(4), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_relay_moves_both_parties_of_each_call_on_it_across_nodes() {
    let redis = redis_server().await;
    let relays = Relays::start(
        &redis.url,
        vec![relay("relay-a", "eu", 41001), relay("relay-b", "eu", 41002)],
    )
    .await;
    let n1 = start(fleet_config(&redis)).await;
    let n2 = start(fleet_config(&redis)).await;
    let mut alice = Client::hello(
        n1.addr,
        json!({"token": token("alice", "p"), "region": "eu"}),
    )
    .await;
    let mut bob = Client::hello(n2.addr, json!({"token": token("bob", "p"), "region": "eu"})).await;
    let mut carol = Client::connect(n1.addr, "carol", "p").await;
    let mut dave = Client::connect(n2.addr, "dave", "p").await;
    wait_offer(&mut alice, &[udp(41001), udp(41002)]).await;

    // alice ↔ bob ride relay A; carol ↔ dave relay B. Each party reports its relay
    // after `connected`, in any of the accepted forms.
    call(&mut alice, &mut [&mut bob], "ab", "bob", 0).await;
    call(&mut carol, &mut [&mut dave], "cd", "dave", 0).await;
    alice
        .send(json!({"type": "connected", "call_id": "ab"}))
        .await;
    bob.expect("connected").await;
    alice
        .send(json!({"type": "relay_used", "call_id": "ab", "relay": udp(41001)}))
        .await;
    bob.send(json!({"type": "relay_used", "call_id": "ab", "relay": "127.0.0.1:41001"}))
        .await;
    carol
        .send(json!({"type": "relay_used", "call_id": "cd", "relay": "relay-b"}))
        .await;
    dave.send(json!({"type": "relay_used", "call_id": "cd", "relay": udp(41002)}))
        .await;
    // Nobody hears about relay reports: a ping's pong is the next message.
    for c in [&mut alice, &mut bob, &mut carol, &mut dave] {
        c.send(json!({"type": "ping"})).await;
        assert_eq!(c.next().await["type"], "pong");
    }

    // Relay A starts draining: both parties get relay_moved with relay B only; the
    // caller makes the new offer.
    let drained = Instant::now();
    relays.set("relay-a", |r| r.draining = true);
    let to_alice = alice.expect("relay_moved").await;
    let to_bob = bob.expect("relay_moved").await;
    let took = drained.elapsed();
    eprintln!("relay_moved reached both parties {took:?} after the draining heartbeat");
    assert!(took < Duration::from_secs(2), "{took:?}");
    for (m, offer) in [(&to_alice, true), (&to_bob, false)] {
        assert_eq!(m["call_id"], "ab");
        assert_eq!(m["relay"], "relay-a");
        assert_eq!(m["offer"], offer);
        assert_eq!(offered(&m["ice_servers"]), [udp(41002)]);
        assert!(m["ice_servers"][0]["credential"].as_str().is_some());
        assert!(m["ttl"].as_u64().unwrap() > 0);
    }
    // The ICE restart rides the existing renegotiate messages.
    alice
        .send(json!({"type": "renegotiate", "call_id": "ab", "sdp": "v=0 restart"}))
        .await;
    let offer = bob.expect("renegotiate").await;
    assert_eq!(
        (offer["sdp"].as_str(), offer["answer"].as_bool()),
        (Some("v=0 restart"), Some(false))
    );
    bob.send(json!({"type": "renegotiate", "call_id": "ab", "sdp": "v=0 ok", "answer": true}))
        .await;
    assert_eq!(alice.expect("renegotiate").await["answer"], true);
    // The call on relay B was not moved.
    for c in [&mut carol, &mut dave] {
        c.send(json!({"type": "ping"})).await;
        assert_eq!(c.next().await["type"], "pong");
    }
    // Newcomers are never offered the draining relay.
    let fresh = Client::connect(n2.addr, "erin", "p").await;
    assert_eq!(offered(&fresh.hello["ice_servers"]), [udp(41002)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_keeps_the_last_known_relays() {
    let redis = redis_server().await;
    let _relays = Relays::start(&redis.url, vec![relay("relay-a", "eu", 42001)]).await;
    // Calls and presence on this node's own bus: only the registry is in Redis here.
    let mut cfg = config();
    cfg.fleet_redis_url = Some(redis.url.clone());
    let node = start(cfg).await;
    let mut c = Client::connect(node.addr, "alice", "p").await;
    wait_offer(&mut c, &[udp(42001)]).await;
    drop(redis);
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.send(json!({"type": "turn_refresh"})).await;
    assert_eq!(
        offered(&c.expect("ice_servers").await["ice_servers"]),
        [udp(42001)]
    );
    let late = Client::connect(node.addr, "bob", "p").await;
    assert_eq!(offered(&late.hello["ice_servers"]), [udp(42001)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_at_start_offers_nothing_until_it_answers() {
    // Nothing listens on this port yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let mut cfg = config();
    cfg.fleet_redis_url = Some(url.clone());
    let node = start(cfg).await;
    let mut c = Client::connect(node.addr, "alice", "p").await;
    assert_eq!(c.hello["ice_servers"], json!([]));
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.send(json!({"type": "turn_refresh"})).await;
    assert_eq!(c.expect("ice_servers").await["ice_servers"], json!([]));
    // Redis comes up on that port with a relay in it: the node finds it by itself.
    let redis = redis_server_on(port).await;
    let _relays = Relays::start(&redis.url, vec![relay("relay-a", "eu", 43001)]).await;
    wait_offer(&mut c, &[udp(43001)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_other_relay_a_drain_leaves_calls_where_they_are() {
    let redis = redis_server().await;
    let relays = Relays::start(&redis.url, vec![relay("only", "eu", 44001)]).await;
    let node = start(fleet_config(&redis)).await;
    let mut alice = Client::connect(node.addr, "alice", "p").await;
    let mut bob = Client::connect(node.addr, "bob", "p").await;
    wait_offer(&mut alice, &[udp(44001)]).await;
    call(&mut alice, &mut [&mut bob], "ab", "bob", 0).await;
    alice
        .send(json!({"type": "relay_used", "call_id": "ab", "relay": udp(44001)}))
        .await;
    relays.set("only", |r| r.draining = true);
    wait_offer(&mut alice, &[]).await;
    // The drain has been seen (nothing is offered), and the node has had time to act on
    // it: still no relay_moved.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for c in [&mut alice, &mut bob] {
        c.send(json!({"type": "ping"})).await;
        assert_eq!(c.next().await["type"], "pong");
    }
}

/// A relay measuring alice's uplink at 8 % loss: alice, in a call on that relay, hears
/// it (`call_quality`), no more than every 5 s; bob, whose uplink the relay did not
/// report, hears nothing, and neither does anyone whose call is on another relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relays_link_quality_reaches_the_party_it_concerns() {
    let redis = redis_server().await;
    let relays = Relays::start(
        &redis.url,
        vec![relay("relay-a", "eu", 45001), relay("relay-b", "eu", 45002)],
    )
    .await;
    let node = start(fleet_config(&redis)).await;
    let mut alice = Client::connect(node.addr, "alice", "p").await;
    let mut bob = Client::connect(node.addr, "bob", "p").await;
    let mut carol = Client::connect(node.addr, "carol", "p").await;
    let mut dave = Client::connect(node.addr, "dave", "p").await;
    wait_offer(&mut alice, &[udp(45001), udp(45002)]).await;
    call(&mut alice, &mut [&mut bob], "ab", "bob", 0).await;
    call(&mut carol, &mut [&mut dave], "cd", "dave", 0).await;
    for (c, call_id, port) in [
        (&mut alice, "ab", 45001),
        (&mut bob, "ab", 45001),
        (&mut carol, "cd", 45002),
        (&mut dave, "cd", 45002),
    ] {
        c.send(json!({"type": "relay_used", "call_id": call_id, "relay": udp(port)}))
            .await;
    }
    let measured = |user: &str, loss: f64| LinkQuality {
        user: user.into(),
        uplink_loss: loss,
        uplink_jitter_ms: Some(12.5),
    };
    // carol's figure comes from relay A, but her call is on relay B: not hers to hear.
    relays.set("relay-a", |r| {
        r.quality = vec![measured("alice", 0.08), measured("carol", 0.2)]
    });
    let started = Instant::now();
    let told = alice.expect("call_quality").await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(told["call_id"], "ab");
    assert_eq!(told["relay"], "relay-a");
    assert_eq!(told["uplink_loss"], 0.08);
    assert_eq!(told["uplink_jitter_ms"], 12.5);
    // Beats keep coming every 200 ms with the same figures: nothing more within 5 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for c in [&mut alice, &mut bob, &mut carol, &mut dave] {
        c.send(json!({"type": "ping"})).await;
        assert_eq!(c.next().await["type"], "pong");
    }
    // After 5 s, the next figure.
    relays.set("relay-a", |r| r.quality = vec![measured("alice", 0.01)]);
    let again = alice.expect("call_quality").await;
    assert_eq!(again["uplink_loss"], 0.01);
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
