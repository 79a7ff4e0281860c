//! A relay started in-process on one IPv4 address, and a minimal TURN client over a real
//! UDP socket to set allocations up with, for tests that then send packets through
//! the relay themselves (`tests/zero_alloc.rs`, `tests/fast_path.rs`).
//!
//! Use it from a test file with `mod turn_udp;`.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnpike::net::NetConfig;
use turnpike::proto::auth::long_term_key;
use turnpike::proto::peer_policy::PeerPolicy;
use turnpike::proto::quota::Quotas;
use turnpike::proto::stun::attr::{self, PASSWORD_ALGORITHM_MD5};
use turnpike::proto::stun::{method, Class, Message, MessageBuilder, TransactionId};
use turnpike::proto::{RelayIp, ServerConfig, SharedPool};

pub const USER: &str = "alice";
pub const PASS: &str = "alice-pw";
pub const REALM: &str = "turn-udp-test";

/// `workers` workers listening for UDP on `ip` (any port), relaying from `ip`, with
/// peers allowed in `peers` (a CIDR) and one static user.
pub fn relay_config(ip: IpAddr, peers: &str, workers: usize) -> NetConfig {
    let server = ServerConfig {
        realm: REALM.into(),
        software: None,
        users: vec![(USER.into(), PASS.into())],
        max_credential_lifetime: Duration::from_secs(3600),
        nonce_lifetime: Duration::from_secs(3600),
        relay_v4: Some(RelayIp {
            bind: ip,
            advertise: None,
            host: None,
        }),
        peer_policy: PeerPolicy::new(vec![peers.parse().expect("cidr")], vec![]),
        ..ServerConfig::new([9; 32], (Instant::now(), 1_800_000_000))
    };
    let shared = Arc::new(SharedPool::new(27_000..=27_099, Quotas::new(0, 0)));
    NetConfig {
        workers,
        udp: vec![SocketAddr::new(ip, 0)],
        rng_seed: 1,
        ..NetConfig::new(server, shared)
    }
}

/// A TURN client with [`USER`]'s long-term credentials; retries the first 401 with
/// the nonce it brings. The socket needs a read timeout: every wait is bounded.
/// The requests a test's TURN client makes, signed with [`USER`]'s long-term
/// credentials after the first 401 teaches the nonce, over whatever transport the
/// client implements [`Turn::exchange`] for (UDP here, TCP and TLS in `turn_stream`).
pub trait Turn {
    /// Sends one request and returns the answer to it (skipping anything else).
    fn exchange(&mut self, request: &[u8], tid: TransactionId) -> Vec<u8>;
    /// The nonce and the transaction counter.
    fn session(&mut self) -> &mut Session;

    /// Sends a request and returns the answer (success or error) other than the 401
    /// that teaches the nonce.
    fn request(&mut self, method: u16, attrs: impl Fn(&mut MessageBuilder<'_>)) -> Vec<u8> {
        for _ in 0..3 {
            let session = self.session();
            session.next_tid = session.next_tid.wrapping_add(1);
            let tid = TransactionId([session.next_tid; 12]);
            let mut buf = Vec::new();
            let mut b = MessageBuilder::new(&mut buf, Class::Request, method, tid);
            attrs(&mut b);
            if !session.nonce.is_empty() {
                b.add(attr::USERNAME, USER.as_bytes());
                b.add(attr::REALM, REALM.as_bytes());
                b.add(attr::NONCE, &session.nonce);
                b.add_message_integrity(&long_term_key(PASSWORD_ALGORITHM_MD5, USER, REALM, PASS));
            }
            let resp = self.exchange(&buf, tid);
            let msg = Message::parse(&resp).expect("a STUN response");
            let session = self.session();
            if msg.class() == Class::Error && session.nonce.is_empty() {
                session.nonce = msg.get(attr::NONCE).expect("nonce in 401").to_vec();
                continue;
            }
            return resp;
        }
        panic!("request {method:#x} kept failing");
    }

    /// [`Turn::request`], asserting a success answer.
    fn expect_success(&mut self, method: u16, attrs: impl Fn(&mut MessageBuilder<'_>)) {
        let resp = self.request(method, attrs);
        let class = Message::parse(&resp).expect("a STUN response").class();
        assert_eq!(class, Class::Success, "request {method:#x}");
    }

    /// Allocate (a UDP relay); the relayed address.
    fn allocate(&mut self) -> SocketAddr {
        let resp = self.request(method::ALLOCATE, |b| {
            b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        });
        let msg = Message::parse(&resp).expect("allocate response");
        assert_eq!(msg.class(), Class::Success, "allocate");
        attr::decode_xor_address(
            msg.get(attr::XOR_RELAYED_ADDRESS).expect("relayed address"),
            &msg.transaction_id(),
        )
        .expect("valid address")
    }

    /// Allocate (a UDP relay) with `attrs` besides REQUESTED-TRANSPORT: the relayed
    /// address, or the error code.
    fn try_allocate(&mut self, attrs: impl Fn(&mut MessageBuilder<'_>)) -> Result<SocketAddr, u16> {
        let resp = self.request(method::ALLOCATE, |b| {
            b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            attrs(b);
        });
        let msg = Message::parse(&resp).expect("allocate response");
        if msg.class() == Class::Error {
            let code = msg.get(attr::ERROR_CODE).expect("ERROR-CODE");
            return Err(attr::decode_error_code(code).expect("valid ERROR-CODE").0);
        }
        Ok(attr::decode_xor_address(
            msg.get(attr::XOR_RELAYED_ADDRESS).expect("relayed address"),
            &msg.transaction_id(),
        )
        .expect("valid address"))
    }

    /// Deletes the allocation (Refresh with LIFETIME 0), asserting success.
    fn delete_allocation(&mut self) {
        self.expect_success(method::REFRESH, |b| b.add_u32(attr::LIFETIME, 0));
    }

    /// Binds `channel` to `peer`, asserting success.
    fn channel_bind(&mut self, channel: u16, peer: SocketAddr) {
        self.expect_success(method::CHANNEL_BIND, |b| {
            b.add(
                attr::CHANNEL_NUMBER,
                &[(channel >> 8) as u8, channel as u8, 0, 0],
            );
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
    }

    /// Installs a permission for `peer`, asserting success.
    fn create_permission(&mut self, peer: SocketAddr) {
        self.expect_success(method::CREATE_PERMISSION, |b| {
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
    }
}

/// What a [`Turn`] client remembers between requests.
#[derive(Debug, Default)]
pub struct Session {
    nonce: Vec<u8>,
    next_tid: u8,
}

/// A TURN client over a UDP socket (which needs a read timeout: every wait is bounded).
pub struct Client {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    session: Session,
}

impl Client {
    pub fn new(sock: UdpSocket, server: SocketAddr) -> Client {
        Client {
            sock,
            server,
            session: Session::default(),
        }
    }
}

impl Turn for Client {
    fn exchange(&mut self, request: &[u8], tid: TransactionId) -> Vec<u8> {
        self.sock
            .send_to(request, self.server)
            .expect("send request");
        let mut resp = vec![0u8; 2048];
        // Relayed data may arrive meanwhile: skipped, like any message that is not the
        // answer. Bounded by the read timeout of each wait and by the count.
        for _ in 0..10_000 {
            let n = self
                .sock
                .recv(&mut resp)
                .expect("response within the timeout");
            let answer = Message::parse(&resp[..n])
                .is_ok_and(|m| m.class() != Class::Request && m.transaction_id() == tid);
            if answer {
                resp.truncate(n);
                return resp;
            }
        }
        panic!("no answer among 10000 datagrams");
    }

    fn session(&mut self) -> &mut Session {
        &mut self.session
    }
}
