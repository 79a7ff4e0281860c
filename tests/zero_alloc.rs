//! The packet path allocates nothing in steady state (ARCHITECTURE.md, "Design rules"):
//! after warm-up, a real worker relays ChannelData and Send/Data indications both ways
//! for a client on UDP, on TCP and on TLS (one test each; on UDP also with bandwidth
//! caps and with call-quality telemetry on), with the production metrics
//! recorder installed and publishing, and the relay's threads make zero heap
//! allocations meanwhile — over TLS, none but rustls's one buffer per TLS record.
//!
//! A counting global allocator sees every allocation of every thread except the test's
//! own, which drives the client (rustls allocates per record on the client side too) and
//! is marked uncounted. The tests run one at a time; the other threads are then the
//! relay's worker and the idle test harness, so the count is the worker's: its sockets,
//! framing, TLS, core and metrics publishing. When it is not zero, the failure shows the
//! first counted allocation's backtrace.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod turn_stream;
mod turn_udp;

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use turn_stream::{connect_tcp, connect_tls, self_signed_tls, send_indication, StreamClient};
use turn_udp::{relay_config, Client, Turn};
use turnpike::net::start;
use turnpike::proto::bandwidth::{Bandwidth, BandwidthCaps};
use turnpike::proto::channel_data;
use turnpike::proto::quota::Quotas;
use turnpike::proto::stun::attr;
use turnpike::proto::{SharedPool, Transport};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Set while measuring: the first counted allocation then records its backtrace.
static TRACING: AtomicBool = AtomicBool::new(false);
static FIRST_BACKTRACE: Mutex<Option<String>> = Mutex::new(None);

thread_local! {
    /// This thread's allocations are not counted (the test's own thread, and the
    /// allocator itself while it records a backtrace).
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count_allocation() {
    // During thread teardown the flag may be gone: count then, to be safe.
    if UNCOUNTED.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    if TRACING.swap(false, Ordering::Relaxed) {
        UNCOUNTED.with(|u| u.set(true));
        let trace = Backtrace::force_capture().to_string();
        if let Ok(mut first) = FIRST_BACKTRACE.lock() {
            *first = Some(trace);
        }
        UNCOUNTED.with(|u| u.set(false));
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: as for `dealloc`; the caller's contract is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CHANNEL: u16 = 0x4001;
/// An SRTP-sized payload (a multiple of 4: ChannelData needs no padding on streams):
/// an RTP header (version 2, payload type 111), whose sequence number, timestamp and
/// SSRC each flow stamps per packet (see [`stamp`]), then "ciphertext".
const PAYLOAD: [u8; 172] = {
    let mut p = [0xA5; 172];
    p[0] = 0x80;
    p[1] = 111;
    p
};

/// Writes an RTP header's sequence number, timestamp (20 ms of 48 kHz per packet) and
/// SSRC into the payload at `msg[at..]`, so each flow is a stream of its own.
fn stamp(msg: &mut [u8], at: usize, seq: u16, ssrc: u8) {
    msg[at + 2..at + 4].copy_from_slice(&seq.to_be_bytes());
    msg[at + 4..at + 8].copy_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    msg[at + 8..at + 12].copy_from_slice(&[ssrc; 4]);
}

/// `packet` is [`PAYLOAD`], whatever its RTP header says.
fn is_payload(packet: &[u8]) -> bool {
    packet.len() == PAYLOAD.len() && packet[12..] == PAYLOAD[12..]
}
/// A Data indication carrying [`PAYLOAD`]: header, XOR-PEER-ADDRESS (IPv4), DATA.
const DATA_INDICATION_LEN: usize = 20 + (4 + 8) + (4 + PAYLOAD.len());
/// The STUN message type of a Data indication (method 0x007, class indication).
const DATA_INDICATION_TYPE: [u8; 2] = [0x00, 0x17];
/// Packets each flow sends per lock-step round.
const BURST: usize = 8;
/// The workers publish their counters once a second (src/net/worker.rs): the measured
/// phase lasts long enough to contain at least two publishes.
const MEASURED_AT_LEAST: Duration = Duration::from_millis(3200);

/// How a client reaches the relay.
enum Link {
    Udp(Client),
    Tcp(StreamClient<std::net::TcpStream>),
    Tls(Box<StreamClient<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>>),
}

/// What a client received.
enum Received {
    ChannelData,
    DataIndication,
    Other,
}

fn classify(frame: &[u8]) -> Received {
    if frame.len() == 4 + PAYLOAD.len() && frame[..2] == CHANNEL.to_be_bytes() {
        Received::ChannelData
    } else if frame.len() == DATA_INDICATION_LEN && frame[..2] == DATA_INDICATION_TYPE {
        Received::DataIndication
    } else {
        Received::Other
    }
}

impl Link {
    fn name(&self) -> &'static str {
        match self {
            Link::Udp(_) => "UDP",
            Link::Tcp(_) => "TCP",
            Link::Tls(_) => "TLS",
        }
    }

    fn send(&mut self, msg: &[u8]) {
        match self {
            Link::Udp(c) => {
                let _ = c.sock.send_to(msg, c.server);
            }
            Link::Tcp(c) => c.send(msg).expect("TCP send"),
            Link::Tls(c) => c.send(msg).expect("TLS send"),
        }
    }

    /// The next message from the relay; `None` after the read timeout.
    fn recv(&mut self, buf: &mut [u8]) -> Option<Received> {
        match self {
            Link::Udp(c) => c.sock.recv(buf).ok().map(|n| classify(&buf[..n])),
            Link::Tcp(c) => c.recv_frame().map(classify),
            Link::Tls(c) => c.recv_frame().map(classify),
        }
    }
}

/// One client with an allocation and two peers: one reached by ChannelData over a
/// channel, one by Send indications under a permission (it answers by Data indication).
struct Flows {
    link: Link,
    relayed: SocketAddr,
    channel_peer: UdpSocket,
    send_peer: UdpSocket,
    to_channel_peer: Vec<u8>,
    to_send_peer: Vec<u8>,
    /// What the peers send (stamped per packet).
    from_peer: Vec<u8>,
    /// The next RTP sequence number of every flow.
    seq: u16,
    /// Received per flow: client→channel peer, client→send peer, channel peer→client
    /// (ChannelData), send peer→client (Data indication).
    received: [usize; 4],
}

const FLOW_NAMES: [&str; 4] = [
    "ChannelData to the peer",
    "Send indication to the peer",
    "ChannelData from the peer",
    "Data indication from the peer",
];

fn peer_socket() -> UdpSocket {
    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer socket");
    peer.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    peer
}

impl Flows {
    fn new(
        link: Link,
        relayed: SocketAddr,
        channel_peer: UdpSocket,
        send_peer: UdpSocket,
    ) -> Flows {
        let mut to_channel_peer = vec![0u8; 4 + PAYLOAD.len()];
        channel_data::write_header(&mut to_channel_peer, CHANNEL, PAYLOAD.len()).expect("header");
        to_channel_peer[4..].copy_from_slice(&PAYLOAD);
        let to_send_peer = send_indication(send_peer.local_addr().expect("peer addr"), &PAYLOAD);
        Flows {
            link,
            relayed,
            channel_peer,
            send_peer,
            to_channel_peer,
            to_send_peer,
            from_peer: PAYLOAD.to_vec(),
            seq: 0,
            received: [0; 4],
        }
    }

    fn send_burst(&mut self) {
        for _ in 0..BURST {
            let seq = self.seq;
            self.seq = seq.wrapping_add(1);
            stamp(&mut self.to_channel_peer, 4, seq, 1);
            self.link.send(&self.to_channel_peer);
            let at = self.to_send_peer.len() - PAYLOAD.len();
            stamp(&mut self.to_send_peer, at, seq, 2);
            self.link.send(&self.to_send_peer);
            stamp(&mut self.from_peer, 0, seq, 3);
            let _ = self.channel_peer.send_to(&self.from_peer, self.relayed);
            stamp(&mut self.from_peer, 0, seq, 4);
            let _ = self.send_peer.send_to(&self.from_peer, self.relayed);
        }
    }

    fn receive_burst(&mut self, buf: &mut [u8]) {
        for _ in 0..BURST {
            if let Ok(n) = self.channel_peer.recv(buf) {
                self.received[0] += usize::from(is_payload(&buf[..n]));
            }
            if let Ok(n) = self.send_peer.recv(buf) {
                self.received[1] += usize::from(is_payload(&buf[..n]));
            }
        }
        for _ in 0..2 * BURST {
            match self.link.recv(buf) {
                Some(Received::ChannelData) => self.received[2] += 1,
                Some(Received::DataIndication) => self.received[3] += 1,
                Some(Received::Other) | None => {}
            }
        }
    }
}

/// Sets up a client's allocation, channel and permission with `request`-capable client
/// code; returns the relayed address.
fn set_up<S: Read + Write>(
    client: &mut StreamClient<S>,
    channel_peer: &UdpSocket,
    send_peer: &UdpSocket,
) -> SocketAddr {
    let relayed = client.allocate();
    client.channel_bind(CHANNEL, channel_peer.local_addr().expect("peer addr"));
    client.create_permission(send_peer.local_addr().expect("peer addr"));
    relayed
}

/// The sum of `turnpike_relayed_packets_total` over its labels in a Prometheus page.
fn relayed_packets(page: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with("turnpike_relayed_packets_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Serializes the tests: the count is process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

/// What the relay is asked to do besides relaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    /// Every bandwidth cap set, at 1 Gbit/s.
    Caps,
    /// `rtp_quality` on: every packet classified, every RTP stream measured.
    RtpQuality,
}

#[test]
fn udp_relaying_allocates_nothing_after_warm_up() {
    relaying_allocates_nothing(Transport::Udp, Extra::None);
}

#[test]
fn tcp_relaying_allocates_nothing_after_warm_up() {
    relaying_allocates_nothing(Transport::Tcp, Extra::None);
}

/// With call-quality telemetry on, each packet is classified and its RTP stream's
/// counters updated in the allocation's fixed table (four streams here, one per flow),
/// and each stream's report intervals feed the histograms: still no allocation.
#[test]
fn udp_relaying_with_rtp_quality_allocates_nothing_after_warm_up() {
    relaying_allocates_nothing(Transport::Udp, Extra::RtpQuality);
}

/// With every bandwidth cap set (high enough that nothing is dropped), the packet path
/// charges three buckets per packet, the user's and the total one shared, and still
/// allocates nothing.
#[test]
fn udp_relaying_with_bandwidth_caps_allocates_nothing_after_warm_up() {
    relaying_allocates_nothing(Transport::Udp, Extra::Caps);
}

/// Over TLS the relay's own code allocates nothing either, but rustls 0.23 allocates a
/// buffer per TLS record: one for the plaintext of each record it decrypts
/// (`CommonState::take_received_plaintext`) and one for each record it seals. Each
/// relayed packet crosses the client's TLS connection once, in at most one record, so
/// the relay may allocate at most once per relayed packet — and an allocation of ours
/// on that path would exceed it. Avoiding rustls's buffers needs another TLS record
/// layer (kernel TLS, or an unbuffered API that seals in place).
#[test]
fn tls_relaying_allocates_only_rustls_record_buffers() {
    relaying_allocates_nothing(Transport::Tls, Extra::None);
}

/// Relays ChannelData and Send/Data indications both ways for one client on
/// `transport` (after warm-up, for at least [`MEASURED_AT_LEAST`]) and asserts that
/// the relay's threads allocated nothing meanwhile (over TLS: nothing beyond rustls's
/// one buffer per record) and that the metrics were published, with `extra` on.
fn relaying_allocates_nothing(transport: Transport, extra: Extra) {
    // A test that failed (panicked holding the lock) leaves nothing behind to wait for.
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    UNCOUNTED.with(|u| u.set(true));
    // The recorder `turnpike serve` installs, so the workers' publishing really updates it.
    let metrics = turnpike::metrics::install_recorder();

    let loopback = "127.0.0.1".parse().expect("literal");
    let dir = tempfile::tempdir().expect("temp dir");
    let (tls_config, cert_der) = self_signed_tls(dir.path());
    let mut config = relay_config(loopback, "127.0.0.1/32", 1);
    config.server.rtp_quality = extra == Extra::RtpQuality;
    if extra == Extra::Caps {
        let caps = BandwidthCaps {
            per_allocation: 1_000_000_000,
            per_user: 1_000_000_000,
            total: 1_000_000_000,
        };
        config.shared = Arc::new(
            SharedPool::new(27_100..=27_199, Quotas::new(0, 0))
                .with_bandwidth(Bandwidth::new(caps, Instant::now())),
        );
    }
    match transport {
        Transport::Udp => {}
        Transport::Tcp => config.tcp = vec![SocketAddr::new(loopback, 0)],
        Transport::Tls => {
            config.tls = vec![SocketAddr::new(loopback, 0)];
            config.tls_config = Some(tls_config);
        }
        // QUIC copies each message (quinn owns its datagrams), so it is not measured.
        Transport::Quic => panic!("the QUIC path is not measured here"),
    }
    let relay = start(config).expect("relay starts");
    let server = relay
        .local_addrs()
        .into_iter()
        .find(|(t, _)| *t == transport)
        .map(|(_, a)| a)
        .expect("listener");

    let (channel_peer, send_peer) = (peer_socket(), peer_socket());
    let mut flows = match transport {
        Transport::Udp => {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("client socket");
            sock.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut client = Client::new(sock, server);
            let relayed = client.allocate();
            client.channel_bind(CHANNEL, channel_peer.local_addr().expect("peer addr"));
            client.expect_success(turnpike::proto::stun::method::CREATE_PERMISSION, |b| {
                b.add_xor_address(
                    attr::XOR_PEER_ADDRESS,
                    send_peer.local_addr().expect("peer addr"),
                )
            });
            Flows::new(Link::Udp(client), relayed, channel_peer, send_peer)
        }
        Transport::Tcp => {
            let mut client = StreamClient::new(connect_tcp(server));
            let relayed = set_up(&mut client, &channel_peer, &send_peer);
            Flows::new(Link::Tcp(client), relayed, channel_peer, send_peer)
        }
        Transport::Tls => {
            let mut client = StreamClient::new(connect_tls(server, &cert_der));
            let relayed = set_up(&mut client, &channel_peer, &send_peer);
            Flows::new(
                Link::Tls(Box::new(client)),
                relayed,
                channel_peer,
                send_peer,
            )
        }
        Transport::Quic => panic!("the QUIC path is not measured here"),
    };

    let mut buf = vec![0u8; 2048];
    let mut round = |flows: &mut Flows| {
        flows.send_burst();
        flows.receive_burst(&mut buf);
    };

    // Warm-up, a little over one publish interval: buffers grow to their steady size
    // (pending sends, stream input and output, TLS records) and the first publish happens.
    let warm_up = Instant::now();
    let mut warm_rounds = 0usize;
    while warm_up.elapsed() < Duration::from_millis(1500) {
        round(&mut flows);
        warm_rounds += 1;
    }
    for (flow, &n) in flows.received.iter().enumerate() {
        assert!(
            n >= warm_rounds * BURST * 9 / 10,
            "warm-up: {} {}: {n} of {}",
            flows.link.name(),
            FLOW_NAMES[flow],
            warm_rounds * BURST
        );
    }
    flows.received = [0; 4];

    let published_before = relayed_packets(&metrics.render());
    if let Ok(mut first) = FIRST_BACKTRACE.lock() {
        *first = None;
    }
    let started = Instant::now();
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    TRACING.store(true, Ordering::SeqCst);
    let mut rounds = 0usize;
    while started.elapsed() < MEASURED_AT_LEAST {
        round(&mut flows);
        rounds += 1;
    }
    TRACING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    let measured = started.elapsed();
    let page = metrics.render();
    let published = relayed_packets(&page) - published_before;
    relay.shutdown();
    if extra == Extra::RtpQuality {
        let rtp: f64 = page
            .lines()
            .filter(|l| l.starts_with("turnpike_relayed_payloads_total{"))
            .filter(|l| l.contains("kind=\"rtp\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        assert!(
            rtp >= published / 2.0,
            "payloads classified as RTP: {rtp}, packets relayed: {published}"
        );
    }

    let sent = rounds * BURST;
    for (flow, &n) in flows.received.iter().enumerate() {
        assert!(
            n >= sent * 99 / 100,
            "{} {}: relayed {n} of {sent}",
            flows.link.name(),
            FLOW_NAMES[flow]
        );
    }
    let relayed_total: usize = flows.received.iter().sum();
    // Publishing happened inside the measured phase: the registry shows the bulk of
    // what was relayed in it (all but the last publish interval's worth).
    assert!(
        published >= relayed_total as f64 / 3.0,
        "the metrics show {published} packets relayed in {measured:?}, the clients {relayed_total}"
    );
    let first = FIRST_BACKTRACE
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    // TLS: rustls's record buffers, at most one per relayed packet (see the TLS test).
    let allowed = if transport == Transport::Tls {
        relayed_total as u64
    } else {
        0
    };
    assert!(
        allocations <= allowed,
        "{allocations} heap allocations (at most {allowed} allowed) while relaying \
         {relayed_total} packets over {} in {measured:?}; the first one:\n{}",
        flows.link.name(),
        first.unwrap_or_default()
    );
    if transport == Transport::Tls {
        eprintln!("TLS: {allocations} allocations for {relayed_total} relayed packets");
    }
}
