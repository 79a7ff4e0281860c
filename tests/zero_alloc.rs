//! The packet path allocates nothing in steady state (DESIGN.md §3): after warm-up,
//! 100 000 packets relayed through a real worker (client → peer by ChannelData and
//! peer → client) cause zero heap allocations anywhere in the process.
//!
//! A counting global allocator sees every allocation of every thread. The only threads
//! are the relay's worker and this test, whose measured loop is itself allocation-free
//! (std UDP sockets, preallocated buffers, no formatting), so the count is the worker's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnpike::net::{start, NetConfig};
use turnpike::proto::auth::long_term_key;
use turnpike::proto::channel_data;
use turnpike::proto::peer_policy::PeerPolicy;
use turnpike::proto::quota::Quotas;
use turnpike::proto::stun::attr::{self, PASSWORD_ALGORITHM_MD5};
use turnpike::proto::stun::{method, Class, Message, MessageBuilder, TransactionId};
use turnpike::proto::{RelayIp, ServerConfig};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const USER: &str = "alice";
const PASS: &str = "alice-pw";
const REALM: &str = "zero-alloc";
const CHANNEL: u16 = 0x4001;

fn config() -> NetConfig {
    let loopback: std::net::IpAddr = "127.0.0.1".parse().expect("literal");
    NetConfig {
        workers: 1,
        busy_poll: std::time::Duration::ZERO,
        coalesce: std::time::Duration::ZERO,
        fast_path: None,
        udp: vec![SocketAddr::new(loopback, 0)],
        tcp: vec![],
        tls: vec![],
        tls_config: None,
        server: ServerConfig {
            realm: REALM.into(),
            software: None,
            users: vec![(USER.into(), PASS.into())],
            secrets: vec![],
            max_credential_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(3600),
            nonce_key: [9; 32],
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            relay_v4: Some(RelayIp {
                bind: loopback,
                advertise: None,
            }),
            relay_v6: None,
            ports: (27_000..=27_099).into(),
            max_username_len: 256,
            rfc5766_channel_numbers: false,
            peer_policy: PeerPolicy::new(vec!["127.0.0.1/32".parse().expect("cidr")], vec![]),
            quotas: Arc::new(Quotas::new(0, 0)),
            unix_anchor: (Instant::now(), 1_800_000_000),
            fast_path: false,
        },
        rng_seed: 1,
    }
}

/// A minimal TURN client over a real socket, for setting up (not measured).
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    nonce: Vec<u8>,
    next_tid: u8,
}

impl Client {
    fn request(&mut self, method: u16, attrs: impl Fn(&mut MessageBuilder<'_>)) -> Vec<u8> {
        for _ in 0..3 {
            self.next_tid += 1;
            let tid = TransactionId([self.next_tid; 12]);
            let mut buf = Vec::new();
            let mut b = MessageBuilder::new(&mut buf, Class::Request, method, tid);
            attrs(&mut b);
            if !self.nonce.is_empty() {
                b.add(attr::USERNAME, USER.as_bytes());
                b.add(attr::REALM, REALM.as_bytes());
                b.add(attr::NONCE, &self.nonce);
                b.add_message_integrity(&long_term_key(PASSWORD_ALGORITHM_MD5, USER, REALM, PASS));
            }
            self.sock.send_to(&buf, self.server).expect("send request");
            let mut resp = vec![0u8; 2048];
            let n = self
                .sock
                .recv(&mut resp)
                .expect("response within the timeout");
            resp.truncate(n);
            let msg = Message::parse(&resp).expect("a STUN response");
            if msg.class() == Class::Error {
                // 401 with a nonce: retry authenticated.
                self.nonce = msg.get(attr::NONCE).expect("nonce in 401").to_vec();
                continue;
            }
            return resp;
        }
        panic!("request {method:#x} kept failing");
    }
}

#[test]
fn relaying_allocates_nothing_after_warm_up() {
    let relay = start(config()).expect("relay starts");
    let server = relay.local_addrs()[0].1;
    let sock = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer socket");
    peer.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let peer_addr = peer.local_addr().expect("peer addr");
    let mut client = Client {
        sock,
        server,
        nonce: Vec::new(),
        next_tid: 0,
    };

    let resp = client.request(method::ALLOCATE, |b| {
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
    });
    let msg = Message::parse(&resp).expect("allocate response");
    assert_eq!(msg.class(), Class::Success, "allocate succeeds");
    let relayed = attr::decode_xor_address(
        msg.get(attr::XOR_RELAYED_ADDRESS).expect("relayed address"),
        &msg.transaction_id(),
    )
    .expect("valid address");
    let resp = client.request(method::CHANNEL_BIND, |b| {
        b.add(
            attr::CHANNEL_NUMBER,
            &[(CHANNEL >> 8) as u8, CHANNEL as u8, 0, 0],
        );
        b.add_xor_address(attr::XOR_PEER_ADDRESS, peer_addr);
    });
    assert_eq!(
        Message::parse(&resp).expect("response").class(),
        Class::Success
    );

    // An SRTP-sized payload each way, framed once up front.
    let payload = [0xA5u8; 172];
    let mut to_peer = vec![0u8; 4 + payload.len()];
    channel_data::write_header(&mut to_peer, CHANNEL, payload.len()).expect("header");
    to_peer[4..].copy_from_slice(&payload);
    let mut buf = vec![0u8; 2048];

    // Lock-step bursts: BURST packets each way, then read them back.
    const BURST: usize = 16;
    let mut relay_round = |rounds: usize| -> usize {
        let mut received = 0;
        for _ in 0..rounds {
            for _ in 0..BURST {
                let _ = client.sock.send_to(&to_peer, server);
                let _ = peer.send_to(&payload, relayed);
            }
            for _ in 0..BURST {
                if let Ok(n) = peer.recv(&mut buf) {
                    received += usize::from(n == payload.len());
                }
                if let Ok(n) = client.sock.recv(&mut buf) {
                    received += usize::from(n == to_peer.len() && buf[..2] == to_peer[..2]);
                }
            }
        }
        received
    };

    // Warm-up: first packets may grow the worker's pending-send vectors to their
    // steady size, and the first metrics publish happens.
    let warm = relay_round(200);
    assert!(
        warm > 2 * 200 * BURST * 9 / 10,
        "warm-up relayed only {warm}"
    );

    let rounds = 100_000 / (2 * BURST);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let received = relay_round(rounds);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;

    let sent = 2 * rounds * BURST;
    assert!(
        received >= sent * 99 / 100,
        "relayed {received} of {sent} packets"
    );
    assert_eq!(
        allocations, 0,
        "{allocations} heap allocations while relaying {received} packets"
    );
    relay.shutdown();
}
