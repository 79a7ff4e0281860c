//! Abuse limits against the real `turnpike serve` on loopback, tried as an attacker
//! would: a flood of wrong passwords (the failed sign-in throttle), a flood of payload
//! over a bandwidth cap, connections that never sign in, too many connections from one
//! source or in all, and a TCP client that never reads while its peer floods. In every
//! one a bystander — another user's UDP allocation on another source address — relays
//! a steady stream and must lose nothing.
//!
//! Sources are told apart by loopback address (127.0.0.2, .3, ...): the relay listens on
//! 127.0.0.1, and every address of 127/8 reaches it.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{TurnpikeConfig, TurnpikeProcess};
use turnpike::proto::auth::long_term_key;
use turnpike::proto::channel_data;
use turnpike::proto::stun::attr::{self, PASSWORD_ALGORITHM_MD5};
use turnpike::proto::stun::{method, Class, Message, MessageBuilder, TransactionId};

const REALM: &str = "turnpike";
const CHANNEL: u16 = 0x4001;

fn config(limits: &str) -> TurnpikeConfig {
    TurnpikeConfig {
        users: vec![
            "alice:alice-pw".into(),
            "bob:bob-pw".into(),
            "carol:carol-pw".into(),
        ],
        limits: limits.into(),
        ..TurnpikeConfig::default()
    }
}

fn loopback(n: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, n], port))
}

/// A STUN message from one read, or one whole frame of a stream.
trait Link {
    fn send(&mut self, msg: &[u8]);
    /// The next message; `None` after the read timeout.
    fn recv(&mut self) -> Option<Vec<u8>>;
}

struct Udp {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Udp {
    fn new(source: u8, server: SocketAddr) -> Udp {
        let sock = UdpSocket::bind(loopback(source, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Udp { sock, server }
    }
}

impl Link for Udp {
    fn send(&mut self, msg: &[u8]) {
        self.sock.send_to(msg, self.server).unwrap();
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        let mut buf = vec![0; 2048];
        let n = self.sock.recv(&mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }
}

struct Tcp {
    stream: TcpStream,
}

impl Tcp {
    fn connect(source: u8, server: SocketAddr) -> Tcp {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&loopback(source, 0).into()).unwrap();
        sock.connect(&server.into()).unwrap();
        let stream: TcpStream = sock.into();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Tcp { stream }
    }

    /// Whether the relay closed the connection, waiting at most `within`.
    fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

impl Link for Tcp {
    fn send(&mut self, msg: &[u8]) {
        self.stream.write_all(msg).unwrap();
    }
    /// STUN messages only (the tests read nothing else on streams).
    fn recv(&mut self) -> Option<Vec<u8>> {
        let mut header = [0u8; 20];
        self.stream.read_exact(&mut header).ok()?;
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let mut msg = header.to_vec();
        msg.resize(20 + len, 0);
        self.stream.read_exact(&mut msg[20..]).ok()?;
        Some(msg)
    }
}

/// Long-term credentials and the nonce and transaction ids that go with them.
struct Creds {
    user: String,
    pass: String,
    nonce: Vec<u8>,
    next: u32,
}

impl Creds {
    fn new(user: &str, pass: &str) -> Creds {
        Creds {
            user: user.into(),
            pass: pass.into(),
            nonce: Vec::new(),
            next: 0,
        }
    }

    fn tid(&mut self) -> TransactionId {
        self.next += 1;
        let mut tid = [0x33; 12];
        tid[8..].copy_from_slice(&self.next.to_be_bytes());
        TransactionId(tid)
    }

    /// A request signed with these credentials (unsigned until a nonce is known).
    fn request(
        &mut self,
        method: u16,
        attrs: &dyn Fn(&mut MessageBuilder<'_>),
    ) -> (Vec<u8>, TransactionId) {
        let tid = self.tid();
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, Class::Request, method, tid);
        attrs(&mut b);
        if !self.nonce.is_empty() {
            b.add(attr::USERNAME, self.user.as_bytes());
            b.add(attr::REALM, REALM.as_bytes());
            b.add(attr::NONCE, &self.nonce);
            let key = long_term_key(PASSWORD_ALGORITHM_MD5, &self.user, REALM, &self.pass);
            b.add_message_integrity(&key);
        }
        (buf, tid)
    }

    /// Learns a nonce from the challenge to an unsigned Allocate.
    fn fetch_nonce(&mut self, link: &mut dyn Link) {
        self.nonce.clear();
        let (request, tid) = self.request(method::ALLOCATE, &udp_transport);
        let reply = exchange(link, &request, tid).expect("the challenge is answered");
        let msg = Message::parse(&reply).unwrap();
        assert_eq!(msg.class(), Class::Error);
        self.nonce = msg.get(attr::NONCE).expect("401 carries NONCE").to_vec();
    }

    /// A signed request and its answer, fetching a nonce first if need be.
    fn call(
        &mut self,
        link: &mut dyn Link,
        method: u16,
        attrs: &dyn Fn(&mut MessageBuilder<'_>),
    ) -> Option<Vec<u8>> {
        if self.nonce.is_empty() {
            self.fetch_nonce(link);
        }
        let (request, tid) = self.request(method, attrs);
        exchange(link, &request, tid)
    }

    fn expect_success(
        &mut self,
        link: &mut dyn Link,
        method: u16,
        attrs: &dyn Fn(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        let reply = self.call(link, method, attrs).expect("an answer");
        let class = Message::parse(&reply).unwrap().class();
        assert_eq!(
            class,
            Class::Success,
            "request {method:#x} of {}",
            self.user
        );
        reply
    }

    /// Allocate, permission and channel to `peer`; the relayed address.
    fn allocate_channel(&mut self, link: &mut dyn Link, peer: SocketAddr) -> SocketAddr {
        let reply = self.expect_success(link, method::ALLOCATE, &udp_transport);
        let msg = Message::parse(&reply).unwrap();
        let relayed = attr::decode_xor_address(
            msg.get(attr::XOR_RELAYED_ADDRESS).unwrap(),
            &msg.transaction_id(),
        )
        .unwrap();
        self.expect_success(link, method::CHANNEL_BIND, &|b| {
            b.add(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0]);
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
        relayed
    }
}

fn udp_transport(b: &mut MessageBuilder<'_>) {
    b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
}

/// Sends `request` and waits (bounded) for the answer with its transaction id.
fn exchange(link: &mut dyn Link, request: &[u8], tid: TransactionId) -> Option<Vec<u8>> {
    link.send(request);
    for _ in 0..16 {
        let reply = link.recv()?;
        if Message::parse(&reply).is_ok_and(|m| m.transaction_id() == tid) {
            return Some(reply);
        }
    }
    None
}

fn channel_data(payload: &[u8]) -> Vec<u8> {
    let mut msg = vec![0u8; 4 + payload.len()];
    channel_data::write_header(&mut msg, CHANNEL, payload.len()).unwrap();
    msg[4..].copy_from_slice(payload);
    msg
}

/// Another user ("carol", from 127.0.0.2) relaying 100-byte packets to a peer of her
/// own, 200 a second, for as long as the abuse goes on.
struct Bystander {
    stop: Arc<AtomicBool>,
    /// Packets sent so far.
    progress: Arc<AtomicU64>,
    sender: JoinHandle<u64>,
    receiver: JoinHandle<u64>,
}

impl Bystander {
    fn start(server: &TurnpikeProcess) -> Bystander {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut link = Udp::new(2, server.udp_addr());
        let mut carol = Creds::new("carol", "carol-pw");
        carol.allocate_channel(&mut link, peer.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let sender = {
            let stop = stop.clone();
            let progress = progress.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut sent = 0u64;
                // Bounded by the stop flag and, in any case, a minute.
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                    let mut payload = [0u8; 100];
                    payload[..8].copy_from_slice(&sent.to_be_bytes());
                    link.send(&channel_data(&payload));
                    sent += 1;
                    progress.store(sent, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
                sent
            })
        };
        let receiver = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut received = 0u64;
                let mut buf = [0u8; 2048];
                let mut quiet_since = None;
                // After the stop flag, until 1 s passes without a packet.
                loop {
                    match peer.recv(&mut buf) {
                        Ok(100) => {
                            received += 1;
                            quiet_since = None;
                        }
                        Ok(_) => {}
                        Err(_) if stop.load(Ordering::Relaxed) => {
                            let since = *quiet_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_secs(1) {
                                break;
                            }
                        }
                        Err(_) => {}
                    }
                }
                received
            })
        };
        Bystander {
            stop,
            progress,
            sender,
            receiver,
        }
    }

    /// Stops it and asserts that every packet arrived.
    /// (It runs for at least 100 packets, however quick the abuse was.)
    fn assert_no_loss(self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.progress.load(Ordering::Relaxed) < 100 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.join().unwrap();
        let received = self.receiver.join().unwrap();
        eprintln!("bystander: {received} of {sent} packets relayed");
        assert!(sent >= 100, "the bystander ran ({sent} packets)");
        assert_eq!(received, sent, "the bystander lost packets");
    }
}

/// Wrong-password Allocates from 4 sockets of 127.0.0.1 (so several workers), open loop
/// at 2000 a second for `secs`; the 401s answered in each second.
fn guess_flood(server: &TurnpikeProcess, secs: u64) -> Vec<u64> {
    let mut links: Vec<Udp> = (0..4).map(|_| Udp::new(1, server.udp_addr())).collect();
    let mut creds: Vec<Creds> = (0..4).map(|_| Creds::new("alice", "guess")).collect();
    for (link, c) in links.iter_mut().zip(&mut creds) {
        c.fetch_nonce(link);
        link.sock.set_nonblocking(true).unwrap();
    }
    let mut answered = vec![0u64; secs as usize];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut buf = [0u8; 2048];
    while start.elapsed() < Duration::from_secs(secs) {
        let due = (start.elapsed().as_micros() / 500) as u64;
        while sent < due {
            let i = (sent % 4) as usize;
            let (request, _) = creds[i].request(method::ALLOCATE, &udp_transport);
            let _ = links[i].sock.send_to(&request, links[i].server);
            sent += 1;
        }
        for link in &links {
            while let Ok(n) = link.sock.recv(&mut buf) {
                let is_401 = Message::parse(&buf[..n])
                    .is_ok_and(|m| m.class() == Class::Error && m.get(attr::ERROR_CODE).is_some());
                let second = (start.elapsed().as_secs() as usize).min(answered.len() - 1);
                if is_401 {
                    answered[second] += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    eprintln!("{sent} wrong passwords sent in {secs} s; answered per second: {answered:?}");
    answered
}

#[test]
fn a_flood_of_wrong_passwords_is_throttled_and_a_neighbour_still_signs_in() {
    // Without the throttle, every guess is answered.
    let open = TurnpikeProcess::start(config("auth_failures_per_minute = 0"));
    let answered = guess_flood(&open, 2);
    assert!(
        answered.iter().all(|&n| n > 1500),
        "unthrottled, ~2000 guesses a second are answered: {answered:?}"
    );
    drop(open);

    let server = TurnpikeProcess::start(config(
        "auth_failures_per_minute = 10\nauth_cooldown_secs = 60",
    ));
    let bystander = Bystander::start(&server);
    let answered = guess_flood(&server, 3);
    // The limit's worth of guesses is answered, across workers, and nothing after.
    assert_eq!(answered.iter().sum::<u64>(), 10, "{answered:?}");
    assert_eq!(answered[1..], [0, 0]);

    // A neighbour on the same address with its own username and the right password
    // signs in at once.
    let started = Instant::now();
    let mut link = Udp::new(1, server.udp_addr());
    let mut bob = Creds::new("bob", "bob-pw");
    bob.expect_success(&mut link, method::ALLOCATE, &udp_transport);
    let took = started.elapsed();
    eprintln!("neighbour signed in {took:?} after the flood");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The guessed username goes unanswered from there, even with its right password.
    let mut link = Udp::new(1, server.udp_addr());
    let mut alice = Creds::new("alice", "alice-pw");
    assert!(alice
        .call(&mut link, method::ALLOCATE, &udp_transport)
        .is_none());
    // ... but not from another source.
    let mut link = Udp::new(3, server.udp_addr());
    let mut alice = Creds::new("alice", "alice-pw");
    alice.expect_success(&mut link, method::ALLOCATE, &udp_transport);

    bystander.assert_no_loss();
    let m = server.wait_for_metrics("throttled guesses", |m| {
        m.sum("turnpike_auth_throttled_total", &[]) >= 5000.0
    });
    assert_eq!(m.sum("turnpike_auth_failures_total", &[]), 10.0);
}

/// Sends ChannelData of `size`-byte payloads at `rate` packets a second from each of
/// `links` for `secs`; the peer's receive times and sizes.
fn payload_flood(
    links: &mut [Udp],
    peer: &UdpSocket,
    size: usize,
    rate: u64,
    secs: u64,
) -> Vec<(Duration, usize)> {
    peer.set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let msg = channel_data(&vec![0x5A; size]);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < Duration::from_secs(secs) {
        let due = start.elapsed().as_micros() as u64 * rate / 1_000_000;
        while sent < due {
            for link in links.iter_mut() {
                link.send(&msg);
            }
            sent += 1;
        }
        while let Ok(n) = peer.recv(&mut buf) {
            got.push((start.elapsed(), n));
        }
    }
    // What is still in flight.
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while let Ok(n) = peer.recv(&mut buf) {
        got.push((start.elapsed(), n));
    }
    got
}

#[test]
fn a_flood_over_the_allocation_cap_is_delivered_at_the_cap() {
    // 4 Mbit/s per allocation (500 kB/s); the user and total caps are set higher, so
    // their shared buckets are on the path too without being the limit.
    let server = TurnpikeProcess::start(config(
        "max_bps_per_allocation = 4000000\nmax_bps_per_user = 6000000\nmax_bps_total = 100000000",
    ));
    let bystander = Bystander::start(&server);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut link = Udp::new(1, server.udp_addr());
    let mut alice = Creds::new("alice", "alice-pw");
    alice.allocate_channel(&mut link, peer.local_addr().unwrap());
    // 1000-byte payloads, 1000 a second: 8 Mbit/s offered, twice the cap, for 4 s.
    let got = payload_flood(std::slice::from_mut(&mut link), &peer, 1000, 1000, 4);
    let rate = steady_rate(&got);
    let total: usize = got.iter().map(|(_, n)| n).sum();
    eprintln!(
        "cap 4 Mbit/s: delivered {:.3} Mbit/s from 1 s to 4 s ({:+.1} %), {total} bytes in all",
        rate / 1e6,
        (rate / 4e6 - 1.0) * 100.0
    );
    assert!((rate / 4e6 - 1.0).abs() <= 0.10, "{rate} bit/s");
    bystander.assert_no_loss();
    let m = server.wait_for_metrics("bandwidth drops", |m| {
        m.sum("turnpike_dropped_packets_total", &[("reason", "bandwidth")]) >= 1500.0
    });
    eprintln!(
        "bandwidth drops: {}",
        m.sum("turnpike_dropped_packets_total", &[("reason", "bandwidth")])
    );
}

/// The delivered rate in bit/s once the burst allowance (a quarter second) is spent:
/// from 1 s to 4 s.
fn steady_rate(got: &[(Duration, usize)]) -> f64 {
    let steady: usize = got
        .iter()
        .filter(|(t, _)| *t >= Duration::from_secs(1) && *t < Duration::from_secs(4))
        .map(|(_, n)| n)
        .sum();
    steady as f64 * 8.0 / 3.0
}

#[test]
fn a_users_allocations_share_its_cap_across_workers() {
    // 4 Mbit/s for the user, whatever workers its allocations are on.
    let server = TurnpikeProcess::start(config("max_bps_per_user = 4000000"));
    let bystander = Bystander::start(&server);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Two allocations of alice from two sources (so the kernel may well put them on
    // different workers), each offering 8 Mbit/s for 4 s.
    let mut links = [
        Udp::new(1, server.udp_addr()),
        Udp::new(3, server.udp_addr()),
    ];
    for link in &mut links {
        let mut alice = Creds::new("alice", "alice-pw");
        alice.allocate_channel(link, peer.local_addr().unwrap());
    }
    let got = payload_flood(&mut links, &peer, 1000, 1000, 4);
    let rate = steady_rate(&got);
    let m = server.metrics();
    let per_worker = ["0", "1"].map(|w| m.sum("turnpike_allocations", &[("worker", w)]));
    eprintln!("allocations per worker (alice's two and the bystander's): {per_worker:?}");
    eprintln!(
        "user cap 4 Mbit/s over two allocations: delivered {:.3} Mbit/s ({:+.1} %)",
        rate / 1e6,
        (rate / 4e6 - 1.0) * 100.0
    );
    assert!((rate / 4e6 - 1.0).abs() <= 0.10, "{rate} bit/s");
    bystander.assert_no_loss();
}

#[test]
fn connections_that_never_sign_in_are_closed_and_signed_in_ones_stay() {
    let server = TurnpikeProcess::start(config("unauthenticated_timeout_secs = 1"));
    let bystander = Bystander::start(&server);
    let tcp_addr = loopback(1, server.port);
    let started = Instant::now();
    let mut idle = Tcp::connect(3, tcp_addr);
    // Challenged but never signed in: the challenge is no sign-in.
    let mut challenged = Tcp::connect(3, tcp_addr);
    let mut nobody = Creds::new("alice", "wrong");
    nobody.fetch_nonce(&mut challenged);
    let mut signed_in = Tcp::connect(3, tcp_addr);
    let mut alice = Creds::new("alice", "alice-pw");
    alice.expect_success(&mut signed_in, method::ALLOCATE, &udp_transport);

    assert!(
        idle.closed_within(Duration::from_secs(4)),
        "idle connection closed"
    );
    let took = started.elapsed();
    eprintln!("an idle connection was closed {took:?} after it opened (timeout 1 s)");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(challenged.closed_within(Duration::from_secs(2)));
    // The signed-in one outlives the timeout by more than one check (once a second)
    // and keeps working all along.
    let mut refreshes = 0;
    while started.elapsed() < Duration::from_millis(3500) && refreshes < 100 {
        alice.expect_success(&mut signed_in, method::REFRESH, &|_| {});
        refreshes += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(started.elapsed() >= Duration::from_millis(3500));
    bystander.assert_no_loss();
    server.wait_for_metrics("connections closed unauthenticated", |m| {
        m.sum(
            "turnpike_stream_connections_rejected_total",
            &[("reason", "unauthenticated_timeout")],
        ) == 2.0
    });
}

/// Whether the relay answers a Binding on this connection (it is open and served).
fn answers(tcp: &mut Tcp) -> bool {
    let tid = TransactionId([0x77; 12]);
    let mut request = Vec::new();
    MessageBuilder::new(&mut request, Class::Request, method::BINDING, tid);
    if tcp.stream.write_all(&request).is_err() {
        return false;
    }
    // Bounded: each read waits at most the read timeout.
    for _ in 0..4 {
        match tcp.recv() {
            Some(reply) if Message::parse(&reply).is_ok_and(|m| m.transaction_id() == tid) => {
                return true
            }
            Some(_) => {}
            None => return false,
        }
    }
    false
}

#[test]
fn connections_are_capped_per_source_and_in_total() {
    let server = TurnpikeProcess::start(config(
        "unauthenticated_timeout_secs = 0\nmax_connections_per_source = 5\nmax_connections = 8",
    ));
    let bystander = Bystander::start(&server);
    let tcp_addr = loopback(1, server.port);
    let mut from_3: Vec<Tcp> = (0..5).map(|_| Tcp::connect(3, tcp_addr)).collect();
    for c in &mut from_3 {
        assert!(answers(c));
    }
    let mut sixth = Tcp::connect(3, tcp_addr);
    assert!(
        sixth.closed_within(Duration::from_secs(2)),
        "per-source cap"
    );
    let mut from_4: Vec<Tcp> = (0..3).map(|_| Tcp::connect(4, tcp_addr)).collect();
    for c in &mut from_4 {
        assert!(answers(c));
    }
    let mut ninth = Tcp::connect(5, tcp_addr);
    assert!(ninth.closed_within(Duration::from_secs(2)), "total cap");
    // A closed connection gives its place back.
    drop(from_3.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut accepted = None;
    while accepted.is_none() && Instant::now() < deadline {
        let mut c = Tcp::connect(5, tcp_addr);
        if answers(&mut c) {
            accepted = Some(c);
        }
    }
    assert!(accepted.is_some(), "a freed place is taken again");
    for c in from_3.iter_mut().chain(&mut from_4) {
        assert!(answers(c), "the connections within the caps stay served");
    }
    bystander.assert_no_loss();
    let m = server.wait_for_metrics("refused connections", |m| {
        m.sum(
            "turnpike_stream_connections_rejected_total",
            &[("reason", "max_connections_per_source")],
        ) >= 1.0
            && m.sum(
                "turnpike_stream_connections_rejected_total",
                &[("reason", "max_connections")],
            ) >= 1.0
    });
    let _ = m;
}

#[test]
fn a_client_that_never_reads_cannot_make_the_relay_buffer_without_bound() {
    let server = TurnpikeProcess::start(config(""));
    let bystander = Bystander::start(&server);
    // A TCP client with a channel to a peer, which then stops reading.
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut tcp = Tcp::connect(3, loopback(1, server.port));
    let mut alice = Creds::new("alice", "alice-pw");
    let relayed = alice.allocate_channel(&mut tcp, peer.local_addr().unwrap());
    let rss_before = server.rss_kib();
    // The peer floods it: 1000-byte datagrams, 20 000 a second for 3 s (60 MB), far
    // more than the socket buffers and the relay's output bound hold.
    let payload = [0xC3u8; 1000];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut rss_max = rss_before;
    let mut last_sample = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let due = start.elapsed().as_micros() as u64 * 20_000 / 1_000_000;
        while sent < due {
            let _ = peer.send_to(&payload, relayed);
            sent += 1;
        }
        if last_sample.elapsed() >= Duration::from_millis(100) {
            rss_max = rss_max.max(server.rss_kib());
            last_sample = Instant::now();
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    rss_max = rss_max.max(server.rss_kib());
    let growth = rss_max.saturating_sub(rss_before);
    eprintln!(
        "never-reading TCP client, peer sent {} MB: relay RSS {rss_before} KiB → at most {rss_max} KiB (+{growth} KiB)",
        sent / 1000
    );
    // The output bound is 1 MiB per connection; allow for allocator slack.
    assert!(growth < 8 * 1024, "RSS grew by {growth} KiB");
    bystander.assert_no_loss();
    let m = server.wait_for_metrics("backlog drops", |m| {
        m.sum("turnpike_send_errors_total", &[("reason", "backlog")]) > 0.0
    });
    eprintln!(
        "dropped for the backlog: {}",
        m.sum("turnpike_send_errors_total", &[("reason", "backlog")])
    );
    // The connection still works once its client reads again: it was never stalled.
    drop(tcp);
}
