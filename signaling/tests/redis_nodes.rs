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
