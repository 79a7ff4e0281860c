//! Two signaling nodes sharing a real `redis-server` (spawned here on a free loopback
//! port; the test fails, never skips, when the binary is missing).

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn two_nodes(redis: &Redis) -> (Node, Node) {
    let mut cfg = config();
    cfg.redis_url = Some(redis.url.clone());
    cfg.resume_grace = Duration::from_millis(300);
    (start(cfg.clone()).await, start(cfg).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_presence_and_answer_claims_cross_nodes() {
    let redis = redis_server().await;
    let (n1, n2) = two_nodes(&redis).await;
    // Presence crosses nodes: bob on node 2 watches alice, who logs in on node 1.
    let mut b1 = Client::connect(n2.addr, "bob", "phone").await;
    b1.send(json!({"type": "watch", "users": ["alice"]})).await;
    assert_eq!(b1.expect("presence").await["online"], false);
    let mut a = Client::connect(n1.addr, "alice", "phone").await;
    let p = b1.expect("presence").await;
    assert_eq!(
        (p["user"].as_str(), p["online"].as_bool()),
        (Some("alice"), Some(true))
    );

    // A call between users on different nodes connects; bob's second device is on node 1.
    let mut b2 = Client::connect(n1.addr, "bob", "laptop").await;
    call(&mut a, &mut [&mut b1, &mut b2], "x-1", "bob", 0).await;
    b2.expect("answered_elsewhere").await;
    a.send(json!({"type": "ice", "call_id": "x-1", "candidate": {"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host"}})).await;
    assert_eq!(b1.expect("ice").await["from"], "alice");
    b1.send(json!({"type": "ice", "call_id": "x-1", "end_of_candidates": true}))
        .await;
    assert_eq!(a.expect("ice").await["end_of_candidates"], true);
    b1.send(json!({"type": "hangup", "call_id": "x-1", "reason": "done"}))
        .await;
    assert_eq!(a.expect("call_ended").await["reason"], "hangup");

    // Concurrent accepts from devices on both nodes: exactly one winner, every round.
    for round in 0..5 {
        let id = format!("race-{round}");
        a.send(json!({"type": "invite", "call_id": id, "to": "bob", "sdp": "o"}))
            .await;
        b1.expect("invite").await;
        b2.expect("invite").await;
        let accept = json!({"type": "accept", "call_id": id, "sdp": "a"});
        tokio::join!(b1.send(accept.clone()), b2.send(accept.clone()));
        let w1 = b1.next().await;
        let w2 = b2.next().await;
        let outcomes = [w1["type"].as_str().unwrap(), w2["type"].as_str().unwrap()];
        let winners = outcomes.iter().filter(|t| **t == "accepted").count();
        assert_eq!(winners, 1, "round {round}: {outcomes:?}");
        assert!(outcomes.contains(&"answered_elsewhere"), "{outcomes:?}");
        assert_eq!(a.expect("accept").await["call_id"], id.as_str());
        // The loser may also be told its accept came too late; drain that.
        a.send(json!({"type": "hangup", "call_id": id})).await;
        let winner = if outcomes[0] == "accepted" {
            &mut b1
        } else {
            &mut b2
        };
        winner.expect("call_ended").await;
        let loser = if outcomes[0] == "accepted" {
            &mut b2
        } else {
            &mut b1
        };
        loser.send(json!({"type": "ping"})).await;
        loop {
            let m = loser.next().await;
            if m["type"] == "pong" {
                break;
            }
            assert_eq!(m["type"], "error", "{m}");
        }
    }

    // Offline crosses nodes too: alice leaves node 1; after her resume grace period,
    // bob on node 2 sees her offline with a last-seen time.
    a.ws.close(None).await.unwrap();
    let p = b1.expect("presence").await;
    assert_eq!(
        (p["user"].as_str(), p["online"].as_bool()),
        (Some("alice"), Some(false))
    );
    assert!(p["last_seen"].as_u64().unwrap() > 0);
}

/// ICE from `from` reaches `to` in `call_id`.
async fn ice_flows(from: &mut Client, to: &mut Client, call_id: &str, n: u32) {
    let candidate = json!({"candidate": format!("candidate:{n} 1 udp 1 192.0.2.{n} 9 typ host")});
    from.send(json!({"type": "ice", "call_id": call_id, "candidate": candidate}))
        .await;
    let ice = to.expect("ice").await;
    assert_eq!(ice["candidate"], candidate, "{call_id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopping_and_restarting_keeps_running_calls_and_fails_new_ones_with_internal() {
    let redis = redis_server().await;
    let port = redis.port;
    let (n1, n2) = two_nodes(&redis).await;
    // A call on each node, both parties on that node.
    let mut alice = Client::connect(n1.addr, "alice", "phone").await;
    let mut bob = Client::connect(n1.addr, "bob", "phone").await;
    let mut carol = Client::connect(n2.addr, "carol", "phone").await;
    let mut dave = Client::connect(n2.addr, "dave", "phone").await;
    // Idle through the outage (a callee already in a call would be busy).
    let mut erin = Client::connect(n2.addr, "erin", "phone").await;
    call(&mut alice, &mut [&mut bob], "on-n1", "bob", 0).await;
    call(&mut carol, &mut [&mut dave], "on-n2", "dave", 0).await;

    drop(redis); // killed and reaped
    for n in 1..=3 {
        // Running calls keep their signaling, both ways, on each node.
        ice_flows(&mut alice, &mut bob, "on-n1", n).await;
        ice_flows(&mut bob, &mut alice, "on-n1", n).await;
        ice_flows(&mut carol, &mut dave, "on-n2", n).await;
        ice_flows(&mut dave, &mut carol, "on-n2", n).await;
        // A new call fails at once with `internal`, answering the invite's id, and
        // rings nobody.
        for (caller, callee, to, id) in [
            (&mut alice, &mut bob, "bob", format!("n1-down-{n}")),
            (&mut carol, &mut dave, "dave", format!("n2-down-{n}")),
        ] {
            caller
                .send(json!({"type": "invite", "call_id": id, "to": to, "sdp": "o", "id": id}))
                .await;
            let e = caller.expect("error").await;
            assert_eq!(
                (e["code"].as_str(), e["re"].as_str()),
                (Some("internal"), Some(id.as_str()))
            );
            callee.send(json!({"type": "ping"})).await;
            assert_eq!(callee.next().await["type"], "pong", "no invite rang");
        }
    }

    let _redis = redis_server_on(port).await;
    // New calls work again, across nodes too: node 2 listens again to the channel of
    // erin, who stayed connected through the outage. Each attempt is a new call; early
    // ones may still find the bus down (`internal`) or node 2 not yet subscribed again
    // (erin never rings).
    let mut rang = None;
    for attempt in 0..12 {
        let id = format!("after-{attempt}");
        alice
            .send(json!({"type": "invite", "call_id": id, "to": "erin", "sdp": "o"}))
            .await;
        if let Some(invite) = erin.wait_for("invite", Duration::from_millis(700)).await {
            rang = Some(invite);
            break;
        }
        alice.send(json!({"type": "cancel", "call_id": id})).await;
    }
    let invite = rang.expect("a new cross-node call rings within 12 attempts");
    let id = invite["call_id"].as_str().unwrap().to_string();
    erin.send(json!({"type": "accept", "call_id": id, "sdp": "a"}))
        .await;
    let accept = alice
        .wait_for("accept", WAIT)
        .await
        .expect("alice gets erin's answer");
    assert_eq!(accept["call_id"], id.as_str());
    erin.expect("accepted").await;
    ice_flows(&mut alice, &mut erin, &id, 7).await;
    // And the calls that ran through the outage still do.
    ice_flows(&mut alice, &mut bob, "on-n1", 8).await;
    ice_flows(&mut dave, &mut carol, "on-n2", 8).await;
}
