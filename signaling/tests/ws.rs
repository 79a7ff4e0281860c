//! The running service over real WebSockets (tokio-tungstenite) on loopback.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::json;
use turnpike_signaling::RelayConfig;

#[tokio::test]
async fn full_call_between_two_users_with_two_devices_each() {
    let node = start(config()).await;
    let mut a1 = Client::connect(node.addr, "alice", "phone").await;
    let mut a2 = Client::connect(node.addr, "alice", "laptop").await;
    let mut b1 = Client::connect(node.addr, "bob", "phone").await;
    let mut b2 = Client::connect(node.addr, "bob", "laptop").await;
    a1.send(json!({"type": "invite", "call_id": "call-1", "to": "bob", "sdp": "OFFER"}))
        .await;
    for b in [&mut b1, &mut b2] {
        let inv = b.expect("invite").await;
        assert_eq!(
            (inv["from"].as_str(), inv["from_device"].as_str()),
            (Some("alice"), Some("phone"))
        );
        assert!(inv["age_ms"].as_u64().unwrap() < 5000);
        assert!(inv["expires_in_ms"].as_u64().unwrap() <= 90_000);
        b.send(json!({"type": "ringing", "call_id": "call-1"}))
            .await;
        assert_eq!(a1.expect("ringing").await["from"], "bob");
    }
    b2.send(json!({"type": "accept", "call_id": "call-1", "sdp": "ANSWER"}))
        .await;
    assert_eq!(a1.expect("accept").await["sdp"], "ANSWER");
    b2.expect("accepted").await;
    b1.expect("answered_elsewhere").await;
    // SDP/ICE both ways.
    let cand = |n: u32| json!({"candidate": format!("candidate:{n} 1 udp 2122260223 192.0.2.{n} 5000 typ host"), "sdpMid": "0", "sdpMLineIndex": 0});
    for n in 1..=3 {
        a1.send(json!({"type": "ice", "call_id": "call-1", "candidate": cand(n)}))
            .await;
    }
    a1.send(json!({"type": "ice", "call_id": "call-1", "end_of_candidates": true}))
        .await;
    for n in 1..=3 {
        let ice = b2.expect("ice").await;
        assert_eq!(ice["candidate"], cand(n));
        assert_eq!(ice["from"], "alice");
    }
    assert_eq!(b2.expect("ice").await["end_of_candidates"], true);
    b2.send(json!({"type": "ice", "call_id": "call-1", "candidate": cand(9)}))
        .await;
    assert_eq!(a1.expect("ice").await["candidate"], cand(9));
    b2.send(json!({"type": "connected", "call_id": "call-1"}))
        .await;
    a1.expect("connected").await;
    a1.send(json!({"type": "renegotiate", "call_id": "call-1", "sdp": "RESTART"}))
        .await;
    assert_eq!(b2.expect("renegotiate").await["sdp"], "RESTART");
    // Hangup ends it on every device in the call.
    a1.send(json!({"type": "hangup", "call_id": "call-1", "reason": "bye"}))
        .await;
    let end = b2.expect("call_ended").await;
    assert_eq!(
        (
            end["reason"].as_str(),
            end["detail"].as_str(),
            end["by"].as_str()
        ),
        (Some("hangup"), Some("bye"), Some("alice"))
    );
    // Devices outside the call were never involved: the next thing a2 and b1 see is a ping answer.
    for c in [&mut a2, &mut b1] {
        c.send(json!({"type": "ping"})).await;
        c.expect("pong").await;
    }
}

#[tokio::test]
async fn resume_after_a_dropped_connection_replays_queued_messages() {
    let node = start(config()).await;
    let a = Client::connect(node.addr, "alice", "phone").await;
    let mut b = Client::connect(node.addr, "bob", "phone").await;
    b.send(json!({"type": "watch", "users": ["alice"]})).await;
    assert_eq!(b.expect("presence").await["online"], true);
    let resume = a.hello["resume_token"].as_str().unwrap().to_string();
    let seen = a.last_seq;
    drop(a); // TCP gone without a close frame
    b.send(json!({"type": "invite", "call_id": "c-resume", "to": "alice", "sdp": "OFFER"}))
        .await;
    b.send(json!({"type": "ice", "call_id": "c-resume", "candidate": {"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host"}})).await;
    // Give the node time to queue both (a bounded poll on an observable effect: b's ping
    // answer comes after the node processed b's earlier messages, in order).
    b.send(json!({"type": "ping"})).await;
    b.expect("pong").await;
    let mut a = Client::hello(
        node.addr,
        json!({"token": token("alice", "phone"), "resume_token": resume, "last_seq": seen}),
    )
    .await;
    assert_eq!(a.hello["resumed"], true);
    let inv = a.expect("invite").await;
    assert_eq!(inv["call_id"], "c-resume");
    assert!(inv["seq"].as_u64().unwrap() > seen);
    a.expect("ice").await;
    a.send(json!({"type": "accept", "call_id": "c-resume", "sdp": "ANSWER"}))
        .await;
    assert_eq!(b.expect("accept").await["sdp"], "ANSWER");
    // Alice never looked offline while in her grace period.
    a.send(json!({"type": "ack", "last_seq": a.last_seq})).await;
}

#[tokio::test]
async fn turn_credentials_are_hmac_sha1_of_the_username() {
    let mut cfg = config();
    cfg.relays = vec![RelayConfig {
        region: "eu".into(),
        urls: vec![
            "turn:192.0.2.1:3478?transport=udp".into(),
            "turns:relay.example.com:5349?transport=tcp".into(),
        ],
    }];
    cfg.credential_ttl = Duration::from_secs(600);
    let node = start(cfg).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/turn-credentials", node.addr);
    let r = http
        .get(&url)
        .bearer_auth(token("alice", "phone"))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let username = body["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        expiry >= now + 590 && expiry <= now + 610,
        "{expiry} vs {now}"
    );
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"turn-secret").unwrap();
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(body["password"], expected);
    assert_eq!(body["ttl"], 600);
    assert_eq!(
        body["uris"][1],
        "turns:relay.example.com:5349?transport=tcp"
    );
    // Without or with a bad token: 401 with an error body.
    let r = http.get(&url).timeout(WAIT).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(&url)
        .bearer_auth("x.y.z")
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "unauthorized"
    );
}

#[tokio::test]
async fn hello_ok_ranks_relays_by_region_and_turn_refresh_renews() {
    let mut cfg = config();
    let relay = |region: &str| RelayConfig {
        region: region.into(),
        urls: vec![format!("turn:{region}.example.com:3478?transport=udp")],
    };
    cfg.relays = vec![relay("us"), relay("eu"), relay("ap")];
    let node = start(cfg).await;
    let mut c = Client::hello(
        node.addr,
        json!({"token": token("alice", "p"), "region": "ap"}),
    )
    .await;
    let regions: Vec<&str> = c.hello["ice_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, ["ap", "us", "eu"]);
    assert!(c.hello["ice_servers"][0]["username"]
        .as_str()
        .unwrap()
        .ends_with(":alice"));
    node.signaling.report_load(0, 80);
    c.send(json!({"type": "turn_refresh", "region": "eu"}))
        .await;
    let fresh = c.expect("ice_servers").await;
    let regions: Vec<&str> = fresh["ice_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["region"].as_str().unwrap())
        .collect();
    assert_eq!(
        regions,
        ["eu", "ap", "us"],
        "eu first, then the less loaded"
    );
}

#[tokio::test]
async fn push_webhook_gets_a_post_when_the_callee_is_offline() {
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<serde_json::Value>(4);
    let hook = axum::Router::new().route(
        "/push",
        post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, hook).await });
    let mut cfg = config();
    cfg.push_webhook = Some(format!("http://{hook_addr}/push"));
    let node = start(cfg).await;
    let mut a = Client::connect(node.addr, "alice", "phone").await;
    a.send(json!({"type": "invite", "call_id": "c-push", "to": "bob", "sdp": "OFFER"}))
        .await;
    let body = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no push in time")
        .unwrap();
    assert_eq!(body["type"], "incoming_call");
    assert_eq!(body["user"], "bob");
    assert_eq!(body["from"], "alice");
    assert_eq!(body["call_id"], "c-push");
    // The woken device connects in time and still gets the invite.
    let mut b = Client::connect(node.addr, "bob", "phone").await;
    assert_eq!(b.expect("invite").await["call_id"], "c-push");
    b.send(json!({"type": "reject", "call_id": "c-push"})).await;
    assert_eq!(a.expect("call_ended").await["reason"], "rejected");
    // Online callee: no push.
    let mut c = Client::connect(node.addr, "carol", "x").await;
    c.send(json!({"type": "invite", "call_id": "c-nopush", "to": "alice", "sdp": "OFFER"}))
        .await;
    a.expect("invite").await;
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn missed_call_is_delivered_when_the_callee_comes_online() {
    let mut cfg = config();
    cfg.invite_lifetime = Duration::from_millis(300);
    let node = start(cfg).await;
    let mut a = Client::connect(node.addr, "alice", "phone").await;
    a.send(json!({"type": "invite", "call_id": "c-missed", "to": "bob", "sdp": "OFFER"}))
        .await;
    assert_eq!(a.expect("call_ended").await["reason"], "timeout");
    let mut b = Client::connect(node.addr, "bob", "phone").await;
    let missed = b.expect("missed_call").await;
    assert_eq!(
        (missed["call_id"].as_str(), missed["from"].as_str()),
        (Some("c-missed"), Some("alice"))
    );
}

#[tokio::test]
async fn dev_login_issues_tokens_only_when_on() {
    let node = start(config()).await;
    let (status, body) = dev_login(node.addr, "dave").await;
    assert_eq!(status, 200);
    let mut c = Client::hello(node.addr, json!({"token": body["token"]})).await;
    assert_eq!(c.hello["user"], "dave");
    c.send(json!({"type": "ping"})).await;
    c.expect("pong").await;
    let mut off = config();
    off.dev_login = false;
    let node = start(off).await;
    let (status, body) = dev_login(node.addr, "dave").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "dev_login_disabled");
}

#[tokio::test]
async fn shutdown_closes_sessions_with_1001_and_a_reconnect_hint() {
    let node = start(config()).await;
    let mut a = Client::connect(node.addr, "alice", "phone").await;
    node.signaling.shutdown().await;
    let (code, reason) = a.close_frame().await;
    assert_eq!(code, 1001);
    assert!(reason.contains("reconnect"), "{reason:?}");
}

/// The node's WebSocket read buffer is small (4 KiB, to keep idle sessions cheap); a
/// message many times that size but within `max_frame_bytes` still arrives whole, and
/// is written whole to the callee.
#[tokio::test]
async fn message_larger_than_the_read_buffer_passes_whole() {
    let node = start(config()).await;
    let mut a = Client::connect(node.addr, "alice", "phone").await;
    let mut b = Client::connect(node.addr, "bob", "phone").await;
    let sdp = "a=candidate:x\r\n".repeat(3000); // 45 000 bytes, under the 64 KiB default
    a.send(json!({"type": "invite", "call_id": "big", "to": "bob", "sdp": sdp}))
        .await;
    assert_eq!(b.expect("invite").await["sdp"].as_str(), Some(sdp.as_str()));
}

#[tokio::test]
async fn a_session_is_closed_with_4001_when_its_token_expires() {
    let node = start(config()).await;
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
    };
    let exp = unix_now().as_secs() + 2;
    let short =
        turnpike_signaling::token::TokenKey::new(KEY).sign(&turnpike_signaling::token::Claims {
            sub: "alice".into(),
            dev: "phone".into(),
            exp,
        });
    let mut alice = Client::hello(node.addr, json!({"token": short})).await;
    let mut bob = Client::connect(node.addr, "bob", "phone").await;
    alice.send(json!({"type": "ping"})).await;
    alice.expect("pong").await;

    // Nothing but the expiry notice, then the close, and not before `exp`.
    let notice = alice.next().await;
    assert_eq!(
        (notice["type"].as_str(), notice["code"].as_str()),
        (Some("error"), Some("token_expired")),
        "{notice}"
    );
    assert_eq!(alice.close_code().await, 4001);
    let at = unix_now();
    assert!(at.as_secs() >= exp, "closed at {at:?}, before exp {exp}");
    assert!(
        at.as_millis() < u128::from(exp) * 1000 + 2000,
        "closed {at:?}, long after exp {exp}"
    );

    // A session whose token is still valid lives on.
    bob.send(json!({"type": "ping"})).await;
    bob.expect("pong").await;
}
