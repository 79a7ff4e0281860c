//! A virtual network around one sans-IO [`Server`]: virtual time, a seeded RNG, no
//! sockets. Each `tests/core_*.rs` file pulls it in with `mod core_harness;`.
//!
//! A relay runs one core per worker, sharing one [`SharedPool`] (relay ports, their
//! reservations and live relayed addresses, quotas). [`Net::cores`] builds several
//! simulated cores of one relay — one pool, one clock origin — so tests can check what
//! crosses workers.
//!
//! [`Net`] owns the server and plays the shell: it feeds inputs, drains `poll_event`
//! (acknowledging every `OpenRelay`, optionally with a simulated bind failure) and
//! `poll_transmit` (into a per-client inbox), and tracks which relay sockets are open,
//! so a test can assert that none is opened twice or leaked. [`Client`] plays a TURN
//! client: it does the 401 → nonce → signed request dance and builds each request
//! with the crate's own `MessageBuilder`.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnpike::proto::auth::{long_term_key, OFFERED_ALGORITHMS};
use turnpike::proto::channel_data;
use turnpike::proto::quota::Quotas;
use turnpike::proto::server::{PEER_HEADROOM, PEER_TAILROOM};
use turnpike::proto::stun::attr::{self, PASSWORD_ALGORITHM_MD5, PASSWORD_ALGORITHM_SHA256};
use turnpike::proto::stun::{method, Class, Message, MessageBuilder, TransactionId};
use turnpike::proto::{
    ClientId, Event, Family, RelayIp, RelayKey, RelayPort, Server, ServerConfig, SharedPool,
    Transport,
};

pub const REALM: &str = "example.org";
/// The wall clock (Unix seconds) at virtual time zero.
pub const UNIX_T0: u64 = 1_800_000_000;
pub const SECRET: &[u8] = b"rest-secret-current";
/// The relay advertises this IPv4 address (the NAT case: it binds 192.0.2.10).
pub const ADVERTISED_V4: &str = "203.0.113.5";
pub const ADVERTISED_V6: &str = "2001:db8:1::5";
/// The server's listening address clients reach.
pub const LISTEN: &str = "192.0.2.10:3478";
pub const LISTEN_V6: &str = "[2001:db8::10]:3478";
/// Globally routable peers the default policy lets through.
pub const PEER_A: &str = "8.8.8.8:5000";
pub const PEER_B: &str = "1.1.1.1:6000";
pub const PEER_V6: &str = "[2606:4700::1111]:7000";
pub const SEED: u64 = 0x7E57;
/// The relay port range of [`Net::new`].
pub const RELAY_PORTS: RangeInclusive<u16> = 50000..=50099;

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test addresses are literals")
}

/// The configuration every test starts from; tests change fields through [`Net::with`].
pub fn base_config(t0: Instant) -> ServerConfig {
    ServerConfig {
        realm: REALM.to_owned(),
        software: Some("turnpike-test".to_owned()),
        users: vec![
            ("alice".to_owned(), "alice-pw".to_owned()),
            ("bob".to_owned(), "bob-pw".to_owned()),
            ("carol".to_owned(), "carol-pw".to_owned()),
        ],
        secrets: vec![SECRET.to_vec()],
        nonce_lifetime: Duration::from_secs(3600),
        relay_v4: Some(RelayIp {
            bind: "192.0.2.10".parse().expect("literal"),
            advertise: Some(ADVERTISED_V4.parse().expect("literal")),
            host: None,
        }),
        relay_v6: Some(RelayIp {
            bind: "2001:db8::10".parse().expect("literal"),
            advertise: Some(ADVERTISED_V6.parse().expect("literal")),
            host: None,
        }),
        max_username_len: 64,
        ..ServerConfig::new([7; 32], (t0, UNIX_T0))
    }
}

/// What the cores of one simulated relay share: the port range and quotas (0 = none).
pub fn shared_pool(ports: RangeInclusive<u16>, quotas: Quotas) -> Arc<SharedPool> {
    Arc::new(SharedPool::new(ports, quotas))
}

/// A client → peer datagram the core asked the shell to send, owned: `payload` is the
/// client's packet in the forward's range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub relay: RelayKey,
    pub peer: SocketAddr,
    pub payload: Vec<u8>,
}

/// A peer → client message framed in the shell's buffer: `bytes` is `buf[range]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub client: ClientId,
    pub bytes: Vec<u8>,
    pub range: Range<usize>,
}

/// The shell's side of the core, plus bookkeeping for assertions.
pub struct Net {
    pub server: Server,
    pub t0: Instant,
    pub now: Instant,
    /// The pool this core shares with the relay's other cores (ports, quotas).
    pub shared: Arc<SharedPool>,
    /// Relay sockets currently open (OpenRelay acknowledged Ok, not yet closed).
    pub open: BTreeSet<RelayKey>,
    /// Every OpenRelay the core emitted, in order.
    pub open_requests: Vec<RelayKey>,
    /// Every CloseRelay, with the virtual time it was emitted at.
    pub closed: Vec<(Instant, RelayKey)>,
    /// Relay sockets the core asked to set DONT-FRAGMENT on.
    pub dont_fragment: Vec<RelayKey>,
    /// Answer this many upcoming OpenRelay events with `Err(())` (port taken elsewhere).
    pub fail_next_binds: usize,
    /// When false, OpenRelay events are parked in `unanswered` for the test to answer.
    pub auto_ack: bool,
    pub unanswered: Vec<RelayKey>,
    /// Every `Event::Authenticated`, in order.
    pub authenticated: Vec<ClientId>,
    inbox: HashMap<ClientId, VecDeque<Vec<u8>>>,
    next_port: u16,
}

impl Net {
    pub fn new() -> Net {
        Net::with(|_| {})
    }

    /// A server built from [`base_config`] changed by `edit`, alone in its relay, with
    /// [`RELAY_PORTS`] and no quotas.
    pub fn with(edit: impl FnOnce(&mut ServerConfig)) -> Net {
        let shared = shared_pool(RELAY_PORTS, Quotas::new(0, 0));
        Net::core(0, shared, Instant::now(), edit)
    }

    /// [`Net::new`] with the relay port range `ports`.
    pub fn with_ports(ports: RangeInclusive<u16>) -> Net {
        Net::core(
            0,
            shared_pool(ports, Quotas::new(0, 0)),
            Instant::now(),
            |_| {},
        )
    }

    /// [`Net::new`] with `quotas`.
    pub fn with_quotas(quotas: Quotas) -> Net {
        Net::core(0, shared_pool(RELAY_PORTS, quotas), Instant::now(), |_| {})
    }

    /// `n` cores of one relay, as its workers are: the same configuration, one shared
    /// pool, one clock origin, each its own RNG seed. Each keeps its own virtual time:
    /// advance them together.
    pub fn cores(n: usize, shared: Arc<SharedPool>, edit: impl Fn(&mut ServerConfig)) -> Vec<Net> {
        let t0 = Instant::now();
        (0..n)
            .map(|i| Net::core(i as u64, shared.clone(), t0, &edit))
            .collect()
    }

    fn core(
        index: u64,
        shared: Arc<SharedPool>,
        t0: Instant,
        edit: impl FnOnce(&mut ServerConfig),
    ) -> Net {
        let mut config = base_config(t0);
        edit(&mut config);
        Net {
            server: Server::new(config, shared.clone(), SEED + index),
            t0,
            now: t0,
            shared,
            open: BTreeSet::new(),
            open_requests: Vec::new(),
            closed: Vec::new(),
            dont_fragment: Vec::new(),
            fail_next_binds: 0,
            auto_ack: true,
            unanswered: Vec::new(),
            authenticated: Vec::new(),
            inbox: HashMap::new(),
            next_port: 40000 + 1000 * index as u16,
        }
    }

    /// A fresh UDP 5-tuple (a new client port each time).
    pub fn udp_id(&mut self) -> ClientId {
        self.id_on(Transport::Udp, "198.51.100.7", LISTEN)
    }

    pub fn id_on(&mut self, transport: Transport, ip: &str, local: &str) -> ClientId {
        self.next_port += 1;
        ClientId {
            transport,
            remote: SocketAddr::new(ip.parse().expect("literal"), self.next_port),
            local: addr(local),
        }
    }

    /// A client on a fresh UDP 5-tuple with a static user's credentials.
    pub fn client(&mut self, user: &str) -> Client {
        let id = self.udp_id();
        Client::new(id, user, &format!("{user}-pw"))
    }

    /// Drain the core's outputs the way the shell must (see `turnpike-proto/src/server.rs`).
    pub fn step(&mut self) {
        // Answering an OpenRelay re-enters `step` (via `answer_open`), which drains
        // whatever that answer caused before this loop continues.
        while let Some(event) = self.server.poll_event() {
            match event {
                Event::OpenRelay(key) => {
                    assert!(
                        !self.open.contains(&key) && !self.unanswered.contains(&key),
                        "core asked to open {key:?}, which is already open"
                    );
                    self.open_requests.push(key);
                    if self.auto_ack {
                        let ok = self.fail_next_binds == 0;
                        self.fail_next_binds = self.fail_next_binds.saturating_sub(1);
                        self.answer_open(key, ok);
                    } else {
                        self.unanswered.push(key);
                    }
                }
                Event::CloseRelay(key) => {
                    assert!(self.open.remove(&key), "core closed {key:?}, never opened");
                    self.closed.push((self.now, key));
                }
                Event::DontFragment(key) => {
                    assert!(self.open.contains(&key), "DF on {key:?}, never opened");
                    self.dont_fragment.push(key);
                }
                Event::Authenticated(client) => self.authenticated.push(client),
            }
        }
        while let Some(t) = self.server.poll_transmit() {
            self.inbox.entry(t.dst).or_default().push_back(t.payload);
        }
    }

    /// Answer one OpenRelay (used directly when `auto_ack` is off).
    pub fn answer_open(&mut self, key: RelayKey, ok: bool) {
        self.unanswered.retain(|k| *k != key);
        if ok {
            self.open.insert(key);
        }
        let now = self.now;
        self.server
            .handle_relay_opened(now, key, if ok { Ok(()) } else { Err(()) });
        self.step();
    }

    /// Feed one client datagram/frame; returns what the core forwards to a peer.
    pub fn input(&mut self, client: ClientId, bytes: &[u8]) -> Option<Forwarded> {
        let now = self.now;
        let forwarded = self
            .server
            .handle_client_input(now, client, bytes)
            .map(|f| Forwarded {
                relay: f.relay,
                peer: f.peer,
                payload: bytes[f.range].to_vec(),
            });
        self.step();
        forwarded
    }

    /// The next queued message for `client`.
    pub fn recv(&mut self, client: ClientId) -> Option<Reply> {
        self.inbox.get_mut(&client)?.pop_front().map(Reply)
    }

    /// Everything queued for `client`.
    pub fn drain(&mut self, client: ClientId) -> Vec<Reply> {
        self.inbox
            .remove(&client)
            .map(|q| q.into_iter().map(Reply).collect())
            .unwrap_or_default()
    }

    /// Send a request and return the one answer to it.
    pub fn exchange(&mut self, client: ClientId, bytes: &[u8]) -> Reply {
        let forwarded = self.input(client, bytes);
        assert_eq!(forwarded, None, "a request is never forwarded");
        let mut replies = self.drain(client);
        assert_eq!(replies.len(), 1, "expected exactly one answer");
        replies.remove(0)
    }

    /// A datagram from `peer` arriving on relay socket `relay`, placed in a buffer the
    /// way the shell receives it (headroom in front, tailroom behind).
    pub fn peer_send(
        &mut self,
        relay: RelayKey,
        peer: SocketAddr,
        payload: &[u8],
    ) -> Option<Delivered> {
        let mut buf = vec![0xEE; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
        let now = self.now;
        let out = self
            .server
            .handle_peer_input(now, relay, peer, &mut buf, payload.len())?;
        self.step();
        Some(Delivered {
            client: out.client,
            bytes: buf[out.range.clone()].to_vec(),
            range: out.range,
        })
    }

    /// Move virtual time forward by `d`, firing every timer on its exact deadline.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(deadline) = self.server.poll_timeout() {
            if deadline > target {
                break;
            }
            self.now = self.now.max(deadline);
            let now = self.now;
            self.server.handle_timeout(now);
            self.step();
        }
        self.now = target;
    }

    /// Virtual seconds since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Unix seconds at the current virtual time.
    pub fn unix_now(&self) -> u64 {
        UNIX_T0 + self.elapsed().as_secs()
    }
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

/// The relay socket behind an advertised relayed address.
pub fn relay_key(relayed: SocketAddr) -> RelayKey {
    RelayKey {
        family: Family::of(&relayed),
        port: RelayPort(relayed.port()),
    }
}

/// Which integrity a client signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RFC 5389 client: MESSAGE-INTEGRITY, no PASSWORD-ALGORITHM(S).
    LegacyMd5,
    /// RFC 8489 client: echoes PASSWORD-ALGORITHMS, picks SHA-256, signs with
    /// MESSAGE-INTEGRITY-SHA256.
    Sha256,
}

/// A TURN client on one 5-tuple.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: ClientId,
    pub user: String,
    pub pass: String,
    pub nonce: Option<String>,
    pub alg: Alg,
    /// Append FINGERPRINT to requests.
    pub fingerprint: bool,
    next_tid: u32,
}

/// Extra attributes for a request; gets the builder (whose tid XOR addresses need).
pub type Attrs<'a> = &'a dyn Fn(&mut MessageBuilder<'_>);

pub fn no_attrs(_: &mut MessageBuilder<'_>) {}

impl Client {
    pub fn new(id: ClientId, user: &str, pass: &str) -> Client {
        Client {
            id,
            user: user.to_owned(),
            pass: pass.to_owned(),
            nonce: None,
            alg: Alg::LegacyMd5,
            fingerprint: false,
            next_tid: 0,
        }
    }

    /// The same credentials on another 5-tuple (no nonce yet).
    pub fn moved_to(&self, id: ClientId) -> Client {
        Client {
            id,
            nonce: None,
            ..self.clone()
        }
    }

    /// Deterministic, distinct transaction ids.
    pub fn tid(&mut self) -> TransactionId {
        self.next_tid += 1;
        let mut tid = [0x5A; 12];
        tid[..2].copy_from_slice(&self.id.remote.port().to_be_bytes());
        tid[8..].copy_from_slice(&self.next_tid.to_be_bytes());
        TransactionId(tid)
    }

    /// The long-term key for this client's algorithm (RFC 8489 §9.2.2).
    pub fn key(&self) -> Vec<u8> {
        let alg = match self.alg {
            Alg::LegacyMd5 => PASSWORD_ALGORITHM_MD5,
            Alg::Sha256 => PASSWORD_ALGORITHM_SHA256,
        };
        long_term_key(alg, &self.user, REALM, &self.pass)
    }

    /// A message with `attrs` and no credentials.
    pub fn unsigned(&self, class: Class, method: u16, tid: TransactionId, attrs: Attrs) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, class, method, tid);
        attrs(&mut b);
        if self.fingerprint {
            b.add_fingerprint();
        }
        buf
    }

    /// A request with `attrs`, USERNAME, REALM, NONCE and integrity.
    pub fn signed(&self, method: u16, tid: TransactionId, attrs: Attrs) -> Vec<u8> {
        let nonce = self.nonce.clone().unwrap_or_default();
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, Class::Request, method, tid);
        attrs(&mut b);
        b.add(attr::USERNAME, self.user.as_bytes());
        b.add(attr::REALM, REALM.as_bytes());
        b.add(attr::NONCE, nonce.as_bytes());
        match self.alg {
            Alg::LegacyMd5 => b.add_message_integrity(&self.key()),
            Alg::Sha256 => {
                b.add(
                    attr::PASSWORD_ALGORITHMS,
                    &attr::encode_password_algorithms(&OFFERED_ALGORITHMS),
                );
                b.add(attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0]);
                b.add_message_integrity_sha256(&self.key());
            }
        }
        if self.fingerprint {
            b.add_fingerprint();
        }
        buf
    }

    /// Send an unauthenticated request and keep the nonce of the 401 (RFC 8489 §9.2.3).
    pub fn fetch_nonce(&mut self, net: &mut Net) -> Reply {
        let tid = self.tid();
        let request = self.unsigned(Class::Request, method::ALLOCATE, tid, &udp_transport);
        let reply = net.exchange(self.id, &request);
        reply.assert_error(401);
        self.nonce = Some(reply.string(attr::NONCE).expect("401 carries NONCE"));
        reply
    }

    /// A signed request, fetching a nonce first if we have none.
    pub fn request(&mut self, net: &mut Net, method: u16, attrs: Attrs) -> Reply {
        if self.nonce.is_none() {
            self.fetch_nonce(net);
        }
        let tid = self.tid();
        let request = self.signed(method, tid, attrs);
        let reply = net.exchange(self.id, &request);
        assert_eq!(reply.tid(), tid, "answer pairs with the request");
        reply
    }

    /// Allocate with REQUESTED-TRANSPORT UDP plus `attrs`.
    pub fn allocate_with(&mut self, net: &mut Net, attrs: Attrs) -> Reply {
        self.request(net, method::ALLOCATE, &|b| {
            udp_transport(b);
            attrs(b);
        })
    }

    /// A successful default Allocate; returns the (single) relayed address.
    pub fn allocate(&mut self, net: &mut Net) -> SocketAddr {
        let reply = self.allocate_with(net, &no_attrs);
        reply.assert_ok();
        reply
            .xor(attr::XOR_RELAYED_ADDRESS)
            .expect("Allocate success carries XOR-RELAYED-ADDRESS")
    }

    pub fn create_permission(&mut self, net: &mut Net, peers: &[SocketAddr]) -> Reply {
        let peers = peers.to_vec();
        self.request(net, method::CREATE_PERMISSION, &move |b| {
            for p in &peers {
                b.add_xor_address(attr::XOR_PEER_ADDRESS, *p);
            }
        })
    }

    pub fn channel_bind(&mut self, net: &mut Net, number: u16, peer: SocketAddr) -> Reply {
        self.request(net, method::CHANNEL_BIND, &move |b| {
            let [hi, lo] = number.to_be_bytes();
            b.add(attr::CHANNEL_NUMBER, &[hi, lo, 0, 0]);
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
    }

    /// Refresh with LIFETIME `lifetime`, or without LIFETIME when `None`.
    pub fn refresh(&mut self, net: &mut Net, lifetime: Option<u32>) -> Reply {
        self.request(net, method::REFRESH, &move |b| {
            if let Some(l) = lifetime {
                b.add_u32(attr::LIFETIME, l);
            }
        })
    }

    /// A Send indication (RFC 8656 §11.1); no credentials, no answer.
    pub fn send_indication(
        &mut self,
        net: &mut Net,
        peer: SocketAddr,
        data: &[u8],
    ) -> Option<Forwarded> {
        let tid = self.tid();
        let bytes = self.unsigned(Class::Indication, method::SEND, tid, &|b| {
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
            b.add(attr::DATA, data);
        });
        let out = net.input(self.id, &bytes);
        assert!(net.drain(self.id).is_empty(), "indications get no answer");
        out
    }

    /// A ChannelData message (RFC 8656 §12.4), padded like a stream client would.
    pub fn channel_data(&mut self, net: &mut Net, number: u16, data: &[u8]) -> Option<Forwarded> {
        let bytes = channel_data_bytes(number, data);
        net.input(self.id, &bytes)
    }
}

pub fn channel_data_bytes(number: u16, data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; channel_data::stream_len(data.len())];
    channel_data::write_header(&mut bytes, number, data.len()).expect("valid channel header");
    bytes[4..4 + data.len()].copy_from_slice(data);
    bytes
}

pub fn udp_transport(b: &mut MessageBuilder<'_>) {
    b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
}

/// A message the server sent, owned; accessors parse it on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(pub Vec<u8>);

impl Reply {
    pub fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).expect("the server sends well-formed STUN")
    }

    pub fn class(&self) -> Class {
        self.msg().class()
    }

    pub fn method(&self) -> u16 {
        self.msg().method()
    }

    pub fn tid(&self) -> TransactionId {
        self.msg().transaction_id()
    }

    /// ERROR-CODE's code, if present.
    pub fn code(&self) -> Option<u16> {
        let value = self.msg().get(attr::ERROR_CODE)?;
        Some(attr::decode_error_code(value).expect("valid ERROR-CODE").0)
    }

    pub fn assert_ok(&self) {
        assert_eq!(
            (self.class(), self.code()),
            (Class::Success, None),
            "expected a success response"
        );
    }

    pub fn assert_error(&self, code: u16) {
        assert_eq!(
            (self.class(), self.code()),
            (Class::Error, Some(code)),
            "expected error {code}"
        );
    }

    pub fn get(&self, typ: u16) -> Option<Vec<u8>> {
        self.msg().get(typ).map(<[u8]>::to_vec)
    }

    pub fn has(&self, typ: u16) -> bool {
        self.msg().has(typ)
    }

    /// Attribute types in wire order.
    pub fn types(&self) -> Vec<u16> {
        self.msg().attributes().map(|a| a.typ).collect()
    }

    pub fn xor(&self, typ: u16) -> Option<SocketAddr> {
        self.xors(typ).into_iter().next()
    }

    /// Every attribute of type `typ`, decoded as an XOR address.
    pub fn xors(&self, typ: u16) -> Vec<SocketAddr> {
        let msg = self.msg();
        let tid = msg.transaction_id();
        msg.attributes()
            .filter(|a| a.typ == typ)
            .map(|a| attr::decode_xor_address(a.value, &tid).expect("valid XOR address"))
            .collect()
    }

    pub fn u32(&self, typ: u16) -> Option<u32> {
        self.msg()
            .get(typ)
            .map(|v| attr::decode_u32(v).expect("32-bit value"))
    }

    pub fn string(&self, typ: u16) -> Option<String> {
        self.msg()
            .get(typ)
            .map(|v| attr::decode_str(v).expect("UTF-8").to_owned())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}
