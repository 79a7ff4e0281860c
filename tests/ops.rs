//! Operating a running `turnpike serve`, as an operator and systemd do: drain on SIGTERM
//! under load, hot reload (SIGHUP, `turnpike reload --pid-file`, `POST /admin/reload`)
//! under load, systemd's notify protocol, the shipped unit file, and log output.
//!
//! Traffic is real UDP on loopback through the relay: each session is a TURN client
//! with a channel to an echo peer, sending a numbered ChannelData message and waiting
//! for its echo before the next one, so a lost packet is one that never came back
//! within a second. Every wait has a bound in time and in count.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod support;
mod turn_stream;
mod turn_udp;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{
    http_with, require_tool, run_bounded, turnpike_cli, TurnpikeConfig, TurnpikeProcess,
    SIGNALING_TOKEN_KEY,
};
use turnpike::proto::auth::{long_term_key, mint_rest_credential};
use turnpike::proto::stun::attr::{self, PASSWORD_ALGORITHM_MD5};
use turnpike::proto::stun::{method, Class, Message, MessageBuilder, TransactionId};
use turnpike_signaling::token::{Claims, TokenKey};

const REALM: &str = "turnpike";
const CHANNEL: u16 = 0x4000;
/// How long a session waits for one echo before counting the packet lost.
const ECHO_TIMEOUT: Duration = Duration::from_secs(1);

/// A TURN client over UDP with TURN REST credentials (or a static user).
struct TurnClient {
    sock: UdpSocket,
    server: SocketAddr,
    user: String,
    key: Vec<u8>,
    nonce: Vec<u8>,
    next_tid: u32,
}

/// What a response said: its class, error code and the attributes a test looks at.
#[derive(Debug)]
struct Answer {
    class: Class,
    code: Option<u16>,
    reason: String,
    lifetime: Option<u32>,
    alternate: Option<SocketAddr>,
}

impl TurnClient {
    /// A client with a REST credential minted from `secret`, valid for an hour.
    fn rest(server: SocketAddr, secret: &str, name: &str) -> TurnClient {
        let expiry = unix_now() + 3600;
        let (user, password) = mint_rest_credential(secret.as_bytes(), name, expiry);
        TurnClient::with_credential(server, &user, &password)
    }

    /// A client with a given username and password.
    fn with_credential(server: SocketAddr, user: &str, password: &str) -> TurnClient {
        let user = user.to_string();
        let key = long_term_key(PASSWORD_ALGORITHM_MD5, &user, REALM, password);
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(ECHO_TIMEOUT)).unwrap();
        TurnClient {
            sock,
            server,
            user,
            key,
            nonce: Vec::new(),
            next_tid: 0,
        }
    }

    /// One request, signed once the nonce is known; a 401 or 438 that brings a
    /// (new) nonce is retried once with it. Anything that is not the answer (a late
    /// ChannelData echo) is skipped, at most 100 of them.
    fn request(&mut self, method: u16, attrs: impl Fn(&mut MessageBuilder<'_>)) -> Answer {
        for _attempt in 0..3 {
            self.next_tid += 1;
            let mut id = [0x7A; 12];
            id[..4].copy_from_slice(&self.next_tid.to_be_bytes());
            let tid = TransactionId(id);
            let mut buf = Vec::new();
            let mut b = MessageBuilder::new(&mut buf, Class::Request, method, tid);
            attrs(&mut b);
            if !self.nonce.is_empty() {
                b.add(attr::USERNAME, self.user.as_bytes());
                b.add(attr::REALM, REALM.as_bytes());
                b.add(attr::NONCE, &self.nonce);
                b.add_message_integrity(&self.key);
            }
            self.sock.send_to(&buf, self.server).unwrap();
            let resp = self.answer_to(tid);
            let msg = Message::parse(&resp).unwrap();
            let answer = answer(&msg);
            // The first 401 teaches the nonce (RFC 8489 §9.2); a 438 replaces it. A 401
            // to a signed request is the answer: the credential is refused.
            let learn =
                (answer.code == Some(401) && self.nonce.is_empty()) || answer.code == Some(438);
            if let (true, Some(nonce)) = (learn, msg.get(attr::NONCE)) {
                self.nonce = nonce.to_vec();
                continue;
            }
            return answer;
        }
        panic!("request {method:#x}: answered 438 three times");
    }

    fn answer_to(&mut self, tid: TransactionId) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        for _ in 0..100 {
            let n = self.sock.recv(&mut buf).expect("an answer within 1 s");
            if let Ok(msg) = Message::parse(&buf[..n]) {
                if msg.transaction_id() == tid {
                    return buf[..n].to_vec();
                }
            }
        }
        panic!("no answer among 100 datagrams");
    }

    fn allocate(&mut self) -> Answer {
        self.request(method::ALLOCATE, |b| {
            b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        })
    }

    fn channel_bind(&mut self, peer: SocketAddr) -> Answer {
        self.request(method::CHANNEL_BIND, |b| {
            b.add(
                attr::CHANNEL_NUMBER,
                &[(CHANNEL >> 8) as u8, CHANNEL as u8, 0, 0],
            );
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
    }

    fn refresh(&mut self, lifetime: u32) -> Answer {
        self.request(method::REFRESH, |b| b.add_u32(attr::LIFETIME, lifetime))
    }

    /// Sends ChannelData `seq` and waits for its echo; false if it did not come back
    /// within [`ECHO_TIMEOUT`].
    fn ping(&mut self, seq: u64) -> bool {
        let mut msg = Vec::with_capacity(4 + 160);
        msg.extend_from_slice(&CHANNEL.to_be_bytes());
        msg.extend_from_slice(&160u16.to_be_bytes());
        msg.extend_from_slice(&seq.to_be_bytes());
        msg.resize(4 + 160, 0xA5);
        self.sock.send_to(&msg, self.server).unwrap();
        let deadline = Instant::now() + ECHO_TIMEOUT;
        let mut buf = vec![0u8; 2048];
        while Instant::now() < deadline {
            let Ok(n) = self.sock.recv(&mut buf) else {
                return false;
            };
            // An echo of this packet, not a late one of an earlier packet.
            if n >= 12 && buf[..2] == CHANNEL.to_be_bytes() && buf[4..12] == seq.to_be_bytes() {
                return true;
            }
        }
        false
    }
}

fn answer(msg: &Message<'_>) -> Answer {
    let error = msg
        .get(attr::ERROR_CODE)
        .map(|v| attr::decode_error_code(v).unwrap());
    Answer {
        class: msg.class(),
        code: error.map(|(code, _)| code),
        reason: error.map(|(_, r)| r.to_string()).unwrap_or_default(),
        lifetime: msg
            .get(attr::LIFETIME)
            .map(|v| attr::decode_u32(v).unwrap()),
        alternate: msg
            .get(attr::ALTERNATE_SERVER)
            .map(|v| attr::decode_address(v).unwrap()),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A UDP echo peer on loopback, stopped on drop.
struct EchoPeer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoPeer {
    fn start() -> EchoPeer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // Bounded even if nobody stops it: no test here runs two minutes.
            let end = Instant::now() + Duration::from_secs(120);
            let mut buf = vec![0u8; 2048];
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        EchoPeer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A session's tally, and the answer to the Refresh(0) that ended it.
#[derive(Debug)]
struct Tally {
    sent: u64,
    echoed: u64,
    end: Answer,
}

/// An allocated client with a channel to `peer`, then `packets` pings `gap` apart on
/// a thread of its own, ending with Refresh(0) (deleting the allocation, if the
/// credential is still good). `progress` counts echoes across sessions.
fn session(
    server: SocketAddr,
    secret: &str,
    name: &str,
    peer: SocketAddr,
    packets: u64,
    gap: Duration,
    progress: Arc<AtomicU64>,
) -> JoinHandle<Tally> {
    let mut client = TurnClient::rest(server, secret, name);
    let a = client.allocate();
    assert_eq!(a.class, Class::Success, "allocate: {a:?}");
    let b = client.channel_bind(peer);
    assert_eq!(b.class, Class::Success, "channel bind: {b:?}");
    std::thread::spawn(move || {
        let (mut sent, mut echoed) = (0, 0);
        for seq in 0..packets {
            sent += 1;
            if client.ping(seq) {
                echoed += 1;
                progress.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(gap);
        }
        let end = client.refresh(0);
        Tally { sent, echoed, end }
    })
}

/// Waits (at most 10 s) until `counter` reaches `n`.
fn wait_for_count(counter: &AtomicU64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter.load(Ordering::Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "traffic did not start within 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `/readyz` until it answers 503; how long that took after `since`.
fn readyz_503_after(server: &TurnpikeProcess, since: Instant) -> Duration {
    for _ in 0..2000 {
        match server.http("GET", "/readyz") {
            Ok((503, _)) => return since.elapsed(),
            Ok((200, _)) => {}
            other => panic!("/readyz: {other:?}"),
        }
        assert!(
            since.elapsed() < Duration::from_secs(2),
            "/readyz still 200 after 2 s"
        );
    }
    panic!("/readyz still 200 after 2000 requests");
}

#[test]
fn drain_keeps_running_sessions_lossless_refuses_new_allocations_and_exits_when_they_end() {
    let mut server = TurnpikeProcess::start(TurnpikeConfig {
        drain_timeout_secs: 60,
        ..TurnpikeConfig::default()
    });
    assert_eq!(server.http("GET", "/readyz").unwrap().0, 200);
    let peer = EchoPeer::start();
    let relay = server.udp_addr();
    let progress = Arc::new(AtomicU64::new(0));
    const SESSIONS: usize = 4;
    const PACKETS: u64 = 2000;
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let name = format!("caller{i}");
            let p = progress.clone();
            session(
                relay,
                "rest-secret",
                &name,
                peer.addr,
                PACKETS,
                Duration::from_millis(2),
                p,
            )
        })
        .collect();
    // An allocation with no traffic, to refresh during the drain.
    let mut idle = TurnClient::rest(relay, "rest-secret", "idle");
    assert_eq!(idle.allocate().class, Class::Success);

    wait_for_count(&progress, 200);
    let sigterm = Instant::now();
    server.signal(libc::SIGTERM);
    let readyz = readyz_503_after(&server, sigterm);
    eprintln!("/readyz answered 503 {readyz:?} after SIGTERM");
    assert!(
        readyz < Duration::from_millis(100),
        "/readyz 503 took {readyz:?}"
    );

    // A new allocation is refused: no alternate configured, so 403.
    let mut late = TurnClient::rest(relay, "rest-secret", "late");
    let refused = late.allocate();
    assert_eq!(
        (refused.class, refused.code, refused.reason.as_str()),
        (Class::Error, Some(403), "Server draining")
    );
    assert_eq!(refused.alternate, None);

    // A Refresh is granted at most what is left of the 60 s drain.
    let refreshed = idle.refresh(600);
    assert_eq!(refreshed.class, Class::Success);
    let lifetime = refreshed.lifetime.unwrap();
    assert!(
        (55..=60).contains(&lifetime),
        "Refresh during drain granted {lifetime} s"
    );

    // Draining and the allocations left are on /metrics while it drains.
    server.wait_for_metrics("turnpike_draining 1 and 5 allocations", |m| {
        m.sum("turnpike_draining", &[]) == 1.0 && m.sum("turnpike_allocations", &[]) == 5.0
    });
    assert_eq!(idle.refresh(0).class, Class::Success);
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "exited with sessions running"
    );

    let tallies: Vec<Tally> = sessions.into_iter().map(|s| s.join().unwrap()).collect();
    let last_session_ended = Instant::now();
    for (i, t) in tallies.iter().enumerate() {
        assert_eq!(t.sent, PACKETS, "session {i}");
        assert_eq!(
            t.echoed,
            t.sent,
            "session {i} lost {} packets",
            t.sent - t.echoed
        );
        assert_eq!(
            t.end.class,
            Class::Success,
            "session {i} Refresh(0): {:?}",
            t.end
        );
    }
    let status = server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "still running 10 s after the last allocation:\n{}",
                server.log()
            )
        });
    let exit_after = last_session_ended.elapsed();
    eprintln!(
        "{} packets through {SESSIONS} sessions across SIGTERM and the drain, 0 lost; exit {exit_after:?} \
         after the last allocation ended, {:?} after SIGTERM",
        PACKETS * SESSIONS as u64,
        sigterm.elapsed()
    );
    assert!(status.success(), "exit status {status}");
    assert!(server.log().contains("drained"), "{}", server.log());
    // Text logs to a pipe carry no colour codes.
    assert!(!server.logged_ansi(), "ANSI escape codes in the log");
}

#[test]
fn drain_redirects_new_allocations_to_the_alternate_and_exits_at_the_deadline() {
    let alternate: SocketAddr = "127.0.0.1:3479".parse().unwrap();
    let mut server = TurnpikeProcess::start(TurnpikeConfig {
        drain_timeout_secs: 2,
        alternate_servers: vec![alternate.to_string()],
        ..TurnpikeConfig::default()
    });
    let relay = server.udp_addr();
    let mut holder = TurnClient::rest(relay, "rest-secret", "holder");
    assert_eq!(holder.allocate().class, Class::Success);
    let sigterm = Instant::now();
    server.signal(libc::SIGTERM);
    readyz_503_after(&server, sigterm);
    let mut late = TurnClient::rest(relay, "rest-secret", "late");
    let redirected = late.allocate();
    assert_eq!(
        (redirected.class, redirected.code, redirected.alternate),
        (Class::Error, Some(300), Some(alternate))
    );
    // The allocation never ends: the drain timeout does.
    let status = server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", server.log()));
    let took = sigterm.elapsed();
    eprintln!("drain_timeout_secs = 2: exited {took:?} after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "exited {took:?} after SIGTERM, expected at the 2 s deadline"
    );
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let mut server = TurnpikeProcess::start(TurnpikeConfig::default());
    let mut holder = TurnClient::rest(server.udp_addr(), "rest-secret", "holder");
    assert_eq!(holder.allocate().class, Class::Success);
    server.signal(libc::SIGTERM);
    server.wait_for_log("SIGTERM: draining");
    assert!(
        server.wait_exit(Duration::from_millis(300)).is_none(),
        "did not drain"
    );
    let second = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("exit after the second SIGTERM");
    eprintln!("second SIGTERM: exited after {:?}", second.elapsed());
    assert!(status.success(), "exit status {status}");
}

#[test]
fn reload_rotates_the_secret_under_load_without_loss_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("turnpike.pid");
    let mut config = TurnpikeConfig {
        secrets: vec!["old-secret".into()],
        args: vec!["--pid-file".into(), pid_file.display().to_string()],
        ..TurnpikeConfig::default()
    };
    let server = TurnpikeProcess::start(config.clone());
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        server.pid().to_string()
    );
    let relay = server.udp_addr();
    let peer = EchoPeer::start();
    let progress = Arc::new(AtomicU64::new(0));
    const PACKETS: u64 = 1500;
    let traffic = session(
        relay,
        "old-secret",
        "streaming",
        peer.addr,
        PACKETS,
        Duration::from_millis(2),
        progress.clone(),
    );
    wait_for_count(&progress, 200);

    // Rotate: the new secret only. The worker count changes too, which needs a restart:
    // the reload applies the rest and names that key.
    config.secrets = vec!["new-secret".into()];
    config.workers = 3;
    server.rewrite_config(&config);
    server.signal(libc::SIGHUP);
    let line = server.wait_for_log("SIGHUP: configuration reloaded");
    assert!(
        line.contains("need a restart") && line.contains("server.workers"),
        "the reload names the key it cannot apply: {line}"
    );
    let mut fresh = TurnClient::rest(relay, "new-secret", "fresh");
    assert_eq!(
        fresh.allocate().class,
        Class::Success,
        "a credential of the new secret"
    );
    let mut stale = TurnClient::rest(relay, "old-secret", "stale");
    let refused = stale.allocate();
    assert_eq!((refused.class, refused.code), (Class::Error, Some(401)));
    let m = server.wait_for_metrics("one good reload", |m| {
        m.sum("turnpike_config_reloads_total", &[("result", "success")]) == 1.0
    });
    let reloaded_at = m.sum("turnpike_config_last_reload_timestamp_seconds", &[]);
    assert!(
        (reloaded_at - unix_now() as f64).abs() < 60.0,
        "last reload at {reloaded_at}"
    );

    // A broken file, through `turnpike reload --pid-file`: refused, naming file, line
    // and key; the running configuration stays.
    let good = std::fs::read_to_string(server.config_path()).unwrap();
    let broken = good.replace("user_quota = 0", "user_quota = -1");
    assert_ne!(broken, good);
    std::fs::write(server.config_path(), &broken).unwrap();
    let out = turnpike_cli(["reload", "--pid-file", &pid_file.display().to_string()]);
    assert!(out.success(), "turnpike reload: {}", out.combined());
    let line = server.wait_for_log("configuration refused");
    let path = server.config_path().display().to_string();
    let quota_line = broken
        .lines()
        .position(|l| l.starts_with("user_quota"))
        .unwrap()
        + 1;
    assert!(
        line.contains(&format!("{path}:{quota_line}: limits.user_quota")),
        "the error names file, line and key: {line}"
    );
    server.wait_for_metrics("one refused reload", |m| {
        m.sum("turnpike_config_reloads_total", &[("result", "failure")]) == 1.0
    });
    let mut after = TurnClient::rest(relay, "new-secret", "after");
    assert_eq!(
        after.allocate().class,
        Class::Success,
        "the reloaded config still runs"
    );

    let tally = traffic.join().unwrap();
    eprintln!(
        "reload under load: {} packets, {} echoed across a secret rotation and a refused file",
        tally.sent, tally.echoed
    );
    assert_eq!(tally.sent, PACKETS);
    assert_eq!(
        tally.echoed,
        tally.sent,
        "lost {} packets",
        tally.sent - tally.echoed
    );
    // Its allocation relayed on, but its credential's secret is gone: its next request
    // is refused (it would have to fetch a new credential to refresh).
    assert_eq!((tally.end.class, tally.end.code), (Class::Error, Some(401)));
}

#[test]
fn reload_serves_a_new_certificate_to_the_next_tls_handshake() {
    let server = TurnpikeProcess::start(TurnpikeConfig::default());
    let tls: SocketAddr = format!("127.0.0.1:{}", server.tls_port).parse().unwrap();
    let old = std::fs::read(server.certificate_path()).unwrap();
    let old_der = rustls_pemfile::certs(&mut old.as_slice())
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    let before = turn_stream::connect_tls(tls, &old_der);
    let served = before.conn.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(served, old_der);
    let expiry = server
        .metrics()
        .sum("turnpike_tls_certificate_expiry_timestamp_seconds", &[]);
    assert!(expiry > unix_now() as f64, "certificate expiry {expiry}");

    let new_der = server.renew_certificate();
    let (code, body) = server.http("POST", "/admin/reload").unwrap();
    assert_eq!(code, 200, "POST /admin/reload: {body}");
    let after = turn_stream::connect_tls(tls, &new_der);
    let served = after.conn.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(
        served, new_der,
        "the next handshake gets the new certificate"
    );
    assert_ne!(new_der, old_der);
    // The endpoint takes POST only.
    assert_eq!(server.http("GET", "/admin/reload").unwrap().0, 405);
}

/// A bearer token for `user`, signed with the key the test servers' signaling uses.
fn signaling_token(user: &str) -> String {
    TokenKey::new(SIGNALING_TOKEN_KEY.as_bytes()).sign(&Claims {
        sub: user.into(),
        dev: "laptop".into(),
        exp: unix_now() + 3600,
    })
}

/// The signaling service's `GET /v1/turn-credentials` answer for alice.
fn signaling_credentials(server: &TurnpikeProcess) -> serde_json::Value {
    let addr = server.signaling_addr.unwrap();
    let bearer = format!("Authorization: Bearer {}", signaling_token("alice"));
    let (code, body) = http_with(addr, "GET", "/v1/turn-credentials", &[&bearer], "").unwrap();
    assert_eq!(code, 200, "turn-credentials: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn reload_gives_signaling_the_rotated_secret_and_new_relays() {
    let mut config = TurnpikeConfig {
        secrets: vec!["old-secret".into()],
        signaling: true,
        signaling_relay_urls: vec!["turn:relay-a.example.org:3478?transport=udp".into()],
        ..TurnpikeConfig::default()
    };
    let server = TurnpikeProcess::start(config.clone());
    let before = signaling_credentials(&server);
    assert_eq!(
        before["uris"][0],
        "turn:relay-a.example.org:3478?transport=udp"
    );

    config.secrets = vec!["new-secret".into()];
    config.signaling_relay_urls = vec!["turn:relay-b.example.org:3478?transport=udp".into()];
    server.rewrite_config(&config);
    server.signal(libc::SIGHUP);
    let line = server.wait_for_log("SIGHUP: configuration reloaded");
    assert!(
        !line.contains("restart"),
        "nothing here needs a restart: {line}"
    );

    let after = signaling_credentials(&server);
    assert_eq!(
        after["uris"][0],
        "turn:relay-b.example.org:3478?transport=udp"
    );
    // Minted with the new secret: the relay takes it; the earlier one is refused.
    let (user, password) = (
        after["username"].as_str().unwrap(),
        after["password"].as_str().unwrap(),
    );
    let mut fresh = TurnClient::with_credential(server.udp_addr(), user, password);
    assert_eq!(fresh.allocate().class, Class::Success);
    let (user, password) = (
        before["username"].as_str().unwrap(),
        before["password"].as_str().unwrap(),
    );
    let mut stale = TurnClient::with_credential(server.udp_addr(), user, password);
    assert_eq!(stale.allocate().code, Some(401));
}

/// A minimal WebSocket client (RFC 6455) over a blocking TCP stream: enough to sign
/// in to signaling and see how the server closes.
struct WebSocket {
    tcp: std::net::TcpStream,
}

impl WebSocket {
    fn connect(addr: SocketAddr, path: &str) -> WebSocket {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert!(head.len() < 4096, "no end of the upgrade response");
            tcp.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        WebSocket { tcp }
    }

    /// Sends one text frame, masked as a client must.
    fn send_text(&mut self, text: &str) {
        use std::io::Write;
        let payload = text.as_bytes();
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&frame).unwrap();
    }

    /// The next frame from the server: opcode and payload.
    fn next_frame(&mut self) -> (u8, Vec<u8>) {
        use std::io::Read;
        let mut head = [0u8; 2];
        self.tcp.read_exact(&mut head).unwrap();
        let len = match head[1] & 0x7F {
            126 => {
                let mut ext = [0u8; 2];
                self.tcp.read_exact(&mut ext).unwrap();
                usize::from(u16::from_be_bytes(ext))
            }
            127 => {
                let mut ext = [0u8; 8];
                self.tcp.read_exact(&mut ext).unwrap();
                usize::try_from(u64::from_be_bytes(ext)).unwrap()
            }
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        self.tcp.read_exact(&mut payload).unwrap();
        (head[0] & 0x0F, payload)
    }

    /// Skips frames (at most 50) until a text frame containing `needle`.
    fn expect_text(&mut self, needle: &str) -> String {
        for _ in 0..50 {
            let (op, payload) = self.next_frame();
            let text = String::from_utf8_lossy(&payload).into_owned();
            assert_ne!(op, 0x8, "closed while waiting for {needle:?}: {payload:?}");
            if op == 0x1 && text.contains(needle) {
                return text;
            }
        }
        panic!("no {needle:?} among 50 frames");
    }

    /// Skips frames (at most 50) until the close frame: its code and reason.
    fn close_frame(&mut self) -> (u16, String) {
        for _ in 0..50 {
            let (op, payload) = self.next_frame();
            if op == 0x8 {
                assert!(payload.len() >= 2, "close without a code");
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
            }
        }
        panic!("no close frame among 50 frames");
    }
}

#[test]
fn drain_closes_signaling_sessions_with_1001_and_a_reconnect_hint() {
    let mut server = TurnpikeProcess::start(TurnpikeConfig {
        signaling: true,
        ..TurnpikeConfig::default()
    });
    let mut ws = WebSocket::connect(server.signaling_addr.unwrap(), "/v1/signal");
    let hello = serde_json::json!({"v": 1, "type": "hello", "token": signaling_token("bob")});
    ws.send_text(&hello.to_string());
    ws.expect_text("hello_ok");
    server.signal(libc::SIGTERM);
    let (code, reason) = ws.close_frame();
    assert_eq!(code, 1001);
    assert!(reason.contains("reconnect"), "{reason:?}");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exit once drained");
    assert!(status.success(), "exit status {status}");
}

/// Reads notifications until one contains `want` (at most 200 datagrams or 10 s);
/// returns every datagram read, the last one matching.
fn notifications_until(sock: &UnixDatagram, want: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    for _ in 0..200 {
        assert!(
            Instant::now() < deadline,
            "no {want:?} within 10 s; got {seen:?}"
        );
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {want:?} ({e}); got {seen:?}"));
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = text.lines().any(|l| l == want);
        seen.push(text);
        if done {
            return seen;
        }
    }
    panic!("no {want:?} among 200 notifications: {seen:?}");
}

#[test]
fn systemd_notify_ready_reloading_stopping_and_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut server = TurnpikeProcess::start(TurnpikeConfig {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            // Keep-alives every 150 ms.
            ("WATCHDOG_USEC".into(), "300000".into()),
        ],
        ..TurnpikeConfig::default()
    });
    let ready = notifications_until(&sock, "READY=1");
    assert_eq!(ready.len(), 1, "READY=1 comes first: {ready:?}");
    assert!(ready[0].contains("STATUS="), "{ready:?}");
    let watchdog = notifications_until(&sock, "WATCHDOG=1");
    assert!(watchdog.iter().all(|n| n == "WATCHDOG=1"), "{watchdog:?}");

    server.signal(libc::SIGHUP);
    let reloading = notifications_until(&sock, "RELOADING=1");
    let last = reloading.last().unwrap();
    let usec = last
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {last:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0);
    let ready_again = notifications_until(&sock, "READY=1");
    assert!(
        ready_again[..ready_again.len() - 1]
            .iter()
            .all(|n| n == "WATCHDOG=1"),
        "only keep-alives between RELOADING=1 and READY=1: {ready_again:?}"
    );

    server.signal(libc::SIGTERM);
    let stopping = notifications_until(&sock, "STOPPING=1");
    assert!(
        stopping.last().unwrap().contains("STATUS=draining"),
        "{stopping:?}"
    );
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exit once drained");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn json_logs_are_one_object_per_line_and_the_level_reloads() {
    let mut config = TurnpikeConfig {
        log_format: "json".into(),
        ..TurnpikeConfig::default()
    };
    let mut server = TurnpikeProcess::start(config.clone());
    let debug = |lines: &[String]| lines.iter().any(|l| l.contains(r#""level":"DEBUG""#));
    config.log_level = "debug".into();
    server.rewrite_config(&config);
    server.signal(libc::SIGHUP);
    server.wait_for_log("configuration reloaded");
    assert!(!debug(&server.log_lines()), "debug lines before the reload");
    // Each worker logs at debug level when its drain is over.
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    let lines = server.log_lines();
    assert!(
        debug(&lines),
        "no debug line after reloading level = \"debug\": {lines:?}"
    );
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line:?}"));
        assert!(value.is_object(), "{line:?}");
    }
    assert!(!server.logged_ansi(), "ANSI escape codes in JSON logs");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let analyze = require_tool("systemd-analyze", "apt-get install -y systemd");
    let unit =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd/turnpike.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    // verify checks that ExecStart's program exists: point it at the binary just built
    // instead of the installed path, and change nothing else.
    assert!(text.contains("ExecStart=/usr/bin/turnpike "), "{text}");
    let text = text.replace("/usr/bin/turnpike", env!("CARGO_BIN_EXE_turnpike"));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("turnpike.service");
    std::fs::write(&copy, text).unwrap();
    let out = run_bounded(
        std::process::Command::new(analyze).arg("verify").arg(&copy),
        Duration::from_secs(60),
    );
    assert!(
        out.success(),
        "systemd-analyze verify failed:\n{}",
        out.combined()
    );
    // verify reports problems of the unit as "FILE:LINE: ..." lines, even with status 0.
    assert!(
        !out.combined().contains("turnpike.service:"),
        "systemd-analyze verify complained:\n{}",
        out.combined()
    );
}
