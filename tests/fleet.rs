//! The fleet with real processes: two `turnpike serve` relays announcing themselves into a
//! real `redis-server` (started here on a free loopback port; the test fails when it is
//! missing), and a signaling-only `turnpike serve` ranking them. Relays appear within
//! 2 s carrying their load, a `kill -9`ed relay disappears within 5 s, a SIGTERMed one
//! is marked draining at once, is never offered again, and withdraws its entry when it
//! exits.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use support::redis::Redis;
use support::redis_server;
use support::{http_with, TurnpikeConfig, TurnpikeProcess, SIGNALING_TOKEN_KEY};
use turnpike::proto::auth::long_term_key;
use turnpike::proto::stun::attr::{self, PASSWORD_ALGORITHM_MD5};
use turnpike::proto::stun::{method, Class, Message, MessageBuilder, TransactionId};
use turnpike_signaling::fleet::{self, Heartbeat, Snapshot};
use turnpike_signaling::token::{Claims, TokenKey};

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Reads the registry every 20 ms until `done` holds; the snapshot and the time it took.
/// Panics after `limit`.
async fn wait_registry(
    conn: &mut redis::aio::MultiplexedConnection,
    limit: Duration,
    what: &str,
    done: impl Fn(&Snapshot) -> bool,
) -> (Snapshot, Duration) {
    let start = Instant::now();
    loop {
        let snapshot = fleet::read(conn, unix_ms()).await.unwrap();
        if done(&snapshot) {
            return (snapshot, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}; registry: {snapshot:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn entry<'a>(s: &'a Snapshot, id: &str) -> Option<&'a Heartbeat> {
    s.relays.iter().find(|r| r.id == id)
}

fn relay(redis: &Redis, id: &str, region: &str) -> TurnpikeProcess {
    TurnpikeProcess::start(TurnpikeConfig {
        workers: 1,
        drain_timeout_secs: 30,
        extra_toml: format!(
            "[fleet]\nredis_url = \"{}\"\nid = \"{id}\"\nregion = \"{region}\"\n",
            redis.url
        ),
        ..TurnpikeConfig::default()
    })
}

/// A TURN client with one UDP allocation, as the support configuration's static user
/// (alice, realm "turnpike").
struct Allocation {
    sock: UdpSocket,
    server: SocketAddr,
    nonce: Vec<u8>,
}

impl Allocation {
    /// Sends a request (signed once a nonce is known); the answer.
    fn request(&mut self, m: u16, tid: u8, attrs: impl Fn(&mut MessageBuilder<'_>)) -> Class {
        let key = long_term_key(PASSWORD_ALGORITHM_MD5, "alice", "turnpike", "secret-pw");
        for round in 0u8..2 {
            let mut buf = Vec::new();
            let id = TransactionId([tid.wrapping_mul(2).wrapping_add(round); 12]);
            let mut b = MessageBuilder::new(&mut buf, Class::Request, m, id);
            attrs(&mut b);
            if !self.nonce.is_empty() {
                b.add(attr::USERNAME, b"alice");
                b.add(attr::REALM, b"turnpike");
                b.add(attr::NONCE, &self.nonce);
                b.add_message_integrity(&key);
            }
            self.sock.send_to(&buf, self.server).unwrap();
            let mut answer = vec![0u8; 2048];
            let n = self.sock.recv(&mut answer).expect("an answer within 2 s");
            let msg = Message::parse(&answer[..n]).unwrap();
            if msg.class() == Class::Success || !self.nonce.is_empty() {
                return msg.class();
            }
            self.nonce = msg.get(attr::NONCE).expect("a nonce with the 401").to_vec();
        }
        Class::Error
    }

    fn new(server: SocketAddr) -> Allocation {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut a = Allocation {
            sock,
            server,
            nonce: Vec::new(),
        };
        let class = a.request(method::ALLOCATE, 1, |b| {
            b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        });
        assert_eq!(class, Class::Success, "allocate on {server}");
        a
    }

    /// Refresh with lifetime 0: the allocation ends.
    fn release(mut self) {
        let class = self.request(method::REFRESH, 2, |b| b.add_u32(attr::LIFETIME, 0));
        assert_eq!(class, Class::Success, "refresh 0");
    }
}

/// `GET /v1/turn-credentials?region=R` on a signaling node: the URIs, best first.
fn offered(signaling: SocketAddr, region: &str) -> Vec<String> {
    let exp = unix_ms() / 1000 + 600;
    let token = TokenKey::new(SIGNALING_TOKEN_KEY.as_bytes()).sign(&Claims {
        sub: "carol".into(),
        dev: "web".into(),
        exp,
    });
    let auth = format!("Authorization: Bearer {token}");
    let path = format!("/v1/turn-credentials?region={region}");
    let (status, body) = http_with(signaling, "GET", &path, &[&auth], "").unwrap();
    assert_eq!(status, 200, "{body}");
    // {"username":..,"password":..,"ttl":..,"uris":["turn:...", ...]}
    let list = body
        .split("\"uris\":[")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches('"').to_string())
        .collect()
}

fn udp_url(p: &TurnpikeProcess) -> String {
    format!("turn:127.0.0.1:{}?transport=udp", p.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_announce_their_load_vanish_after_kill_9_and_drain_at_once() {
    let (redis, mut conn) = redis_server().await;

    // Two relays, eu and us: each in the registry within 2 s of being ready.
    let spawned = Instant::now();
    let mut eu = relay(&redis, "relay-eu", "eu");
    let (_, eu_after) = wait_registry(&mut conn, Duration::from_secs(2), "eu appears", |s| {
        entry(s, "relay-eu").is_some()
    })
    .await;
    eprintln!(
        "relay-eu in the registry {eu_after:?} after ready ({:?} after spawn)",
        spawned.elapsed()
    );
    let us = relay(&redis, "relay-us", "us");
    let (snapshot, us_after) =
        wait_registry(&mut conn, Duration::from_secs(2), "us appears", |s| {
            entry(s, "relay-us").is_some()
        })
        .await;
    eprintln!("relay-us in the registry {us_after:?} after ready");
    let beat = entry(&snapshot, "relay-us").unwrap();
    assert_eq!(beat.region, "us");
    assert_eq!(beat.version, env!("CARGO_PKG_VERSION"));
    assert!(!beat.draining);
    // An idle relay's first beat does not report its start-up work as load.
    assert!(
        beat.cpu_percent < 50,
        "idle relay at {}% CPU",
        beat.cpu_percent
    );
    // Public URLs default to the listen addresses, per transport.
    assert!(beat.urls.contains(&udp_url(&us)), "{:?}", beat.urls);
    assert!(beat
        .urls
        .contains(&format!("turn:127.0.0.1:{}?transport=tcp", us.port)));
    assert!(beat
        .urls
        .contains(&format!("turns:127.0.0.1:{}?transport=tcp", us.tls_port)));
    assert!(beat
        .urls
        .contains(&format!("masque://127.0.0.1:{}", us.quic_port)));

    // Load: three allocations on the eu relay show up in its heartbeat.
    let allocations: Vec<Allocation> = (0..3).map(|_| Allocation::new(eu.udp_addr())).collect();
    let (snapshot, took) = wait_registry(&mut conn, Duration::from_secs(3), "eu load", |s| {
        entry(s, "relay-eu").is_some_and(|r| r.allocations == 3)
    })
    .await;
    eprintln!("3 allocations in relay-eu's heartbeat after {took:?}");
    assert_eq!(entry(&snapshot, "relay-us").unwrap().allocations, 0);
    let loaded = entry(&snapshot, "relay-eu").unwrap();
    let idle = entry(&snapshot, "relay-us").unwrap();
    eprintln!(
        "scores: relay-eu {} (cpu {}%), relay-us {} (cpu {}%)",
        loaded.score(),
        loaded.cpu_percent,
        idle.score(),
        idle.cpu_percent
    );

    // A signaling-only node ranks them: a client in us gets the us relay first, one in eu
    // the eu relay first, and one without a region the idle relay before the loaded one.
    let node = TurnpikeProcess::start(TurnpikeConfig {
        signaling: true,
        extra_toml: format!("[fleet]\nredis_url = \"{}\"\nannounce = false\n", redis.url),
        ..TurnpikeConfig::default()
    });
    let sig = node.signaling_addr.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while offered(sig, "us").len() < 2 {
        assert!(Instant::now() < deadline, "signaling sees no fleet");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let relays = |m: &support::Metrics, region: &str, state: &str| {
        m.sum(
            "turnpike_signaling_relays",
            &[("region", region), ("state", state)],
        )
    };
    node.wait_for_metrics("both relays live", |m| {
        relays(m, "eu", "live") == 1.0
            && relays(m, "us", "live") == 1.0
            && m.sum("turnpike_signaling_fleet_registry_up", &[]) == 1.0
    });
    let first = |region| offered(sig, region).first().cloned().unwrap();
    assert_eq!(first("us"), udp_url(&us));
    assert_eq!(first("eu"), udp_url(&eu));
    assert_eq!(first("ap"), udp_url(&us));

    // kill -9: no goodbye; the entry expires within 5 s and the relay is no longer offered.
    us.signal(libc::SIGKILL);
    let (_, gone) = wait_registry(&mut conn, Duration::from_secs(5), "us expires", |s| {
        entry(s, "relay-us").is_none()
    })
    .await;
    eprintln!("relay-us gone from the registry {gone:?} after kill -9");
    assert!(gone <= Duration::from_secs(5));

    // SIGTERM: marked draining at once, and never offered again (while it still serves
    // its allocations).
    eu.signal(libc::SIGTERM);
    let (_, marked) = wait_registry(&mut conn, Duration::from_secs(1), "eu draining", |s| {
        entry(s, "relay-eu").is_some_and(|r| r.draining && r.allocations == 3)
    })
    .await;
    eprintln!("relay-eu marked draining {marked:?} after SIGTERM");
    assert!(marked < Duration::from_millis(500), "{marked:?}");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !offered(sig, "eu").is_empty() {
        assert!(
            Instant::now() < deadline,
            "a draining relay is still offered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.wait_for_metrics("eu draining, us gone", |m| {
        relays(m, "eu", "draining") == 1.0
            && relays(m, "eu", "live") == 0.0
            && relays(m, "us", "live") == 0.0
    });

    // Its allocations end: it exits 0 and takes its entry out of the registry.
    for a in allocations {
        a.release();
    }
    let status = eu
        .wait_exit(Duration::from_secs(5))
        .expect("relay-eu exits");
    assert!(status.success(), "{status:?}");
    wait_registry(&mut conn, Duration::from_millis(200), "eu withdrawn", |s| {
        entry(s, "relay-eu").is_none() && !s.stale.contains(&"relay-eu".to_string())
    })
    .await;

    // Redis goes away: the signaling node says so in its log and its metrics, and keeps
    // running on what it last read.
    drop(conn);
    drop(redis);
    node.wait_for_metrics("the registry down", |m| {
        m.sum("turnpike_signaling_fleet_registry_up", &[]) == 0.0
    });
    node.wait_for_log("fleet registry unreachable");
    assert!(offered(sig, "eu").is_empty());
}
