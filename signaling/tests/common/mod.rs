//! Test harness: a signaling node on a loopback port, dev-login tokens, and a small
//! WebSocket client that speaks the protocol with bounded waits.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use turnpike_signaling::token::{Claims, TokenKey};
use turnpike_signaling::{Signaling, SignalingConfig};

pub const WAIT: Duration = Duration::from_secs(5);
pub const KEY: &[u8] = b"test-token-key";

pub fn config() -> SignalingConfig {
    SignalingConfig {
        token_key: KEY.to_vec(),
        dev_login: true,
        turn_secret: Some(b"turn-secret".to_vec()),
        ..SignalingConfig::default()
    }
}

pub struct Node {
    pub addr: SocketAddr,
    pub signaling: Signaling,
}

pub async fn start(config: SignalingConfig) -> Node {
    let signaling = Signaling::start(config).await.expect("start");
    serve(signaling).await
}

pub async fn serve(signaling: Signaling) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = signaling.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Node { addr, signaling }
}

pub fn token(user: &str, device: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    TokenKey::new(KEY).sign(&Claims {
        sub: user.into(),
        dev: device.into(),
        exp,
    })
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub ws: Ws,
    pub hello: Value,
    next_id: u64,
    pub last_seq: u64,
}

pub async fn raw(addr: SocketAddr) -> Ws {
    let url = format!("ws://{addr}/v1/signal");
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timeout")
        .expect("connect");
    ws
}

impl Client {
    pub async fn connect(addr: SocketAddr, user: &str, device: &str) -> Client {
        Client::hello(addr, json!({"token": token(user, device)})).await
    }

    pub async fn hello(addr: SocketAddr, fields: Value) -> Client {
        let ws = raw(addr).await;
        let mut c = Client {
            ws,
            hello: Value::Null,
            next_id: 0,
            last_seq: 0,
        };
        let mut hello = json!({"type": "hello"});
        for (k, v) in fields.as_object().unwrap() {
            hello[k] = v.clone();
        }
        c.send(hello).await;
        let ok = c.next().await;
        assert_eq!(ok["type"], "hello_ok", "{ok}");
        c.hello = ok;
        c
    }

    pub async fn send(&mut self, mut msg: Value) {
        self.next_id += 1;
        msg["v"] = json!(1);
        if msg.get("id").is_none() {
            msg["id"] = json!(format!("m{}", self.next_id));
        }
        self.send_text(msg.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        tokio::time::timeout(WAIT, self.ws.send(Message::Text(text.into())))
            .await
            .expect("send timeout")
            .expect("send");
    }

    /// The next JSON message (pings skipped); panics after [`WAIT`].
    pub async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no message in time")
                .expect("stream ended")
                .expect("ws error");
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if let Some(seq) = v["seq"].as_u64() {
                        self.last_seq = self.last_seq.max(seq);
                    }
                    return v;
                }
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => continue,
            }
        }
    }

    /// The next message of type `t`, skipping presence notices; other types fail.
    pub async fn expect(&mut self, t: &str) -> Value {
        for _ in 0..50 {
            let m = self.next().await;
            if m["type"] == t {
                return m;
            }
            assert_eq!(m["type"], "presence", "wanted {t}, got {m}");
        }
        panic!("no {t}");
    }

    /// The next message of type `t` within `within`, skipping any other; `None` if
    /// none came.
    pub async fn wait_for(&mut self, t: &str, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match msg.expect("stream ended").expect("ws error") {
                Message::Text(text) => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if v["type"] == t {
                        return Some(v);
                    }
                }
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        }
    }

    /// The close code the server sends next (skipping other messages).
    pub async fn close_code(&mut self) -> u16 {
        self.close_frame().await.0
    }

    /// The close code and reason the server sends next (skipping other messages).
    pub async fn close_frame(&mut self) -> (u16, String) {
        for _ in 0..50 {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no close in time")
            {
                Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
        panic!("no close");
    }
}

pub async fn dev_login(addr: SocketAddr, user: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/dev/login"))
        .json(&json!({"user": user, "device": "web"}))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// alice calls bob: invite, both of bob's devices ring, `answer_on` accepts. Returns once
/// alice has bob's answer.
pub async fn call(
    caller: &mut Client,
    callees: &mut [&mut Client],
    call_id: &str,
    to: &str,
    answer_on: usize,
) {
    caller
        .send(json!({"type": "invite", "call_id": call_id, "to": to, "sdp": "v=0 offer"}))
        .await;
    for c in callees.iter_mut() {
        let inv = c.expect("invite").await;
        assert_eq!(inv["call_id"], call_id);
        assert_eq!(inv["sdp"], "v=0 offer");
    }
    callees[answer_on]
        .send(json!({"type": "accept", "call_id": call_id, "sdp": "v=0 answer"}))
        .await;
    let acc = caller.expect("accept").await;
    assert_eq!(acc["sdp"], "v=0 answer");
    callees[answer_on].expect("accepted").await;
}

/// A client on a raw socket that has not said hello.
pub fn client_from(ws: Ws) -> Client {
    Client {
        ws,
        hello: Value::Null,
        next_id: 0,
        last_seq: 0,
    }
}

/// A `redis-server` on a free loopback port, killed on drop.
pub struct Redis {
    child: Child,
    pub url: String,
    pub port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `redis-server` (required: the test fails when it is missing) and waits until it
/// answers PING (at most 5 s).
pub async fn redis_server() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    redis_server_on(port).await
}

/// [`redis_server`] on a given port.
pub async fn redis_server_on(port: u16) -> Redis {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is required for this test (apt-get install -y redis-server)");
    let redis = Redis {
        child,
        url: format!("redis://127.0.0.1:{port}/"),
        port,
    };
    // Ready when it answers PING: at most 100 tries, 50 ms apart.
    for _ in 0..100 {
        if let Ok(client) = redis::Client::open(redis.url.as_str()) {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return redis;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not start on port {port}");
}
