//! Bad input gets `error{code, reason}` or a close code, and never disturbs other users.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use turnpike_signaling::token::{Claims, TokenKey};

async fn error_code(c: &mut Client) -> String {
    let e = c.expect("error").await;
    assert!(!e["reason"].as_str().unwrap().is_empty());
    e["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn each_bad_message_gets_its_error_and_a_bystander_call_still_works() {
    let mut cfg = config();
    cfg.max_frame_bytes = 4096;
    cfg.invites_per_minute = 3;
    let node = start(cfg).await;
    // Bystanders: carol and dave, in a call throughout.
    let mut carol = Client::connect(node.addr, "carol", "c").await;
    let mut dave = Client::connect(node.addr, "dave", "d").await;
    call(&mut carol, &mut [&mut dave], "bystander", "dave", 0).await;

    let mut m = Client::connect(node.addr, "mallory", "m").await;
    m.send_text("{not json".into()).await;
    assert_eq!(error_code(&mut m).await, "bad_json");
    m.send_text(r#"{"v":1,"type":"teleport","id":"t1"}"#.into())
        .await;
    let e = m.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["re"].as_str()),
        (Some("unknown_type"), Some("t1"))
    );
    m.send_text(r#"{"v":7,"type":"ping"}"#.into()).await;
    assert_eq!(error_code(&mut m).await, "unsupported_version");
    m.send(json!({"type": "invite", "call_id": "x"})).await;
    assert_eq!(error_code(&mut m).await, "bad_message");
    // A call m is not part of.
    m.send(json!({"type": "hangup", "call_id": "bystander"}))
        .await;
    assert_eq!(error_code(&mut m).await, "not_in_call");
    m.send(json!({"type": "accept", "call_id": "bystander", "sdp": "x"}))
        .await;
    assert_eq!(error_code(&mut m).await, "not_in_call");
    // Accept after the call ended.
    let mut v = Client::connect(node.addr, "victor", "v").await;
    m.send(json!({"type": "invite", "call_id": "m1", "to": "victor", "sdp": "o"}))
        .await;
    v.expect("invite").await;
    m.send(json!({"type": "cancel", "call_id": "m1"})).await;
    assert_eq!(v.expect("call_ended").await["reason"], "cancelled");
    v.send(json!({"type": "accept", "call_id": "m1", "sdp": "a"}))
        .await;
    assert_eq!(error_code(&mut v).await, "call_ended");
    // Invite flood: past 3 a minute → rate_limited (m1 was the first).
    for i in 2..=3 {
        m.send(json!({"type": "invite", "call_id": format!("m{i}"), "to": format!("nobody{i}"), "sdp": "o"})).await;
    }
    m.send(json!({"type": "invite", "call_id": "m4", "to": "nobody4", "sdp": "o"}))
        .await;
    assert_eq!(error_code(&mut m).await, "rate_limited");
    // ... and keeping on closes the connection with 1008.
    for i in 5..=8 {
        m.send(json!({"type": "invite", "call_id": format!("m{i}"), "to": "nobody", "sdp": "o"}))
            .await;
    }
    assert_eq!(m.close_code().await, 1008);
    // Oversized frame: 1009.
    let mut big = Client::connect(node.addr, "oscar", "o").await;
    let _ = big.ws.send(Message::Text("x".repeat(10_000).into())).await;
    assert_eq!(big.close_code().await, 1009);

    // The bystander call is untouched.
    carol
        .send(json!({"type": "ice", "call_id": "bystander", "end_of_candidates": true}))
        .await;
    assert_eq!(dave.expect("ice").await["end_of_candidates"], true);
    dave.send(json!({"type": "hangup", "call_id": "bystander", "reason": "done"}))
        .await;
    assert_eq!(carol.expect("call_ended").await["detail"], "done");
}

#[tokio::test]
async fn expired_forged_and_missing_tokens_are_refused_with_4001() {
    let node = start(config()).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = TokenKey::new(KEY).sign(&Claims {
        sub: "a".into(),
        dev: "d".into(),
        exp: now - 10,
    });
    let forged = TokenKey::new("not-the-key").sign(&Claims {
        sub: "a".into(),
        dev: "d".into(),
        exp: now + 100,
    });
    for (token, code) in [
        (Some(expired), "token_expired"),
        (Some(forged), "unauthorized"),
        (None, "unauthorized"),
    ] {
        let ws = raw(node.addr).await;
        let mut c = client_from(ws);
        let mut hello = json!({"type": "hello"});
        if let Some(t) = token {
            hello["token"] = json!(t);
        }
        c.send(hello).await;
        let e = c.next().await;
        assert_eq!(e["code"], code);
        assert_eq!(c.close_code().await, 4001);
    }
    // Anything before hello is refused; no hello at all times out.
    let mut c = client_from(raw(node.addr).await);
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.next().await["code"], "hello_required");
    let mut cfg = config();
    cfg.hello_timeout = Duration::from_millis(200);
    let node = start(cfg).await;
    let mut c = client_from(raw(node.addr).await);
    assert_eq!(c.close_code().await, 4008);
}
