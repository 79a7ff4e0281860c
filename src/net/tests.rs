//! Routing through real loopback sockets, driven by a scripted core: proves that the
//! shell delivers what a core asks for (relay sockets, forwards, in-place peer framing,
//! transmits, close notifications) on UDP and TCP, independent of protocol logic.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::Core;
use super::{start_with, NetConfig};
use crate::proto::quota::Quotas;
use crate::proto::server::{RelayIp, PEER_HEADROOM};
use crate::proto::stats::Stats;
use crate::proto::{
    ClientId, Event, Family, Forward, RelayKey, RelayPort, ServerConfig, Shared, SharedPool,
    ToClient, Transmit,
};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Understands three client messages (after an optional 4-byte ChannelData header):
/// `open` → opens a relay socket, answers `opened` + port; `fwd` + peer port + data →
/// forwards data to the peer; and it prefixes peer data with `>` in place for the client.
struct Scripted {
    ports: RangeInclusive<u16>,
    next_port: u16,
    client: Option<ClientId>,
    relay: Option<RelayKey>,
    events: VecDeque<Event>,
    transmits: VecDeque<Transmit>,
    stats: Stats,
}

/// The scripted cores' relay port range, unless a test picks its own.
const PORTS: RangeInclusive<u16> = 47_000..=47_999;

/// Makes a scripted core per worker that opens relay ports from `ports` in order (it
/// ignores the shared pool, so a test controls exactly which port comes next).
fn scripted(
    ports: RangeInclusive<u16>,
) -> impl Fn(ServerConfig, Arc<dyn Shared>, u64) -> Scripted + Clone + Send + 'static {
    move |_config, _shared, _seed| Scripted::new(ports.clone())
}

impl Scripted {
    fn new(ports: RangeInclusive<u16>) -> Scripted {
        Scripted {
            next_port: *ports.start(),
            ports,
            client: None,
            relay: None,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    fn open_next(&mut self) {
        if self.ports.contains(&self.next_port) {
            let key = RelayKey {
                family: Family::V4,
                port: RelayPort(self.next_port),
            };
            self.next_port += 1;
            self.events.push_back(Event::OpenRelay(key));
        }
    }
}

impl Core for Scripted {
    fn handle_client_input(
        &mut self,
        _now: Instant,
        client: ClientId,
        packet: &[u8],
    ) -> Option<Forward> {
        // ChannelData: the length field excludes padding (RFC 8656 §12.4).
        let (at, msg) = match packet {
            [0x40, _, hi, lo, ..] => {
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                (4, packet.get(4..4 + len)?)
            }
            _ => (0, packet),
        };
        if msg == b"open" {
            self.client = Some(client);
            self.open_next();
            return None;
        }
        let rest = msg.strip_prefix(b"fwd")?;
        let port = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
        // The data follows "fwd" and the port.
        Some(Forward {
            relay: self.relay?,
            peer: SocketAddr::new(LOOPBACK, port),
            range: at + 5..at + msg.len(),
        })
    }

    fn handle_peer_input(
        &mut self,
        _now: Instant,
        _relay: RelayKey,
        _peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Option<ToClient> {
        *buf.get_mut(PEER_HEADROOM - 1)? = b'>';
        Some(ToClient {
            client: self.client?,
            range: PEER_HEADROOM - 1..PEER_HEADROOM + len,
        })
    }

    fn handle_relay_opened(&mut self, _now: Instant, relay: RelayKey, ok: Result<(), ()>) {
        if ok.is_err() {
            // Port taken by someone else on this machine: try the next one.
            return self.open_next();
        }
        self.relay = Some(relay);
        if let Some(client) = self.client {
            let mut payload = b"opened".to_vec();
            payload.extend_from_slice(&relay.port.0.to_be_bytes());
            self.transmits.push_back(Transmit {
                dst: client,
                payload,
            });
        }
    }

    fn handle_client_closed(&mut self, _now: Instant, client: ClientId) {
        if self.client == Some(client) {
            if let Some(relay) = self.relay.take() {
                self.events.push_back(Event::CloseRelay(relay));
            }
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }
}

fn config() -> NetConfig {
    let any = SocketAddr::new(LOOPBACK, 0);
    let server = ServerConfig {
        relay_v4: Some(RelayIp {
            bind: LOOPBACK,
            advertise: None,
            host: None,
        }),
        ..ServerConfig::new([0; 32], (Instant::now(), 0))
    };
    NetConfig {
        workers: 2,
        udp: vec![any],
        tcp: vec![any],
        ..NetConfig::new(server, Arc::new(SharedPool::new(PORTS, Quotas::new(0, 0))))
    }
}

/// A ChannelData frame (channel 0x4000) padded to four bytes, as on a stream.
fn channel_data(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x40, 0x00];
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(payload);
    frame.resize((frame.len() + 3) & !3, 0);
    frame
}

fn fwd(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut msg = b"fwd".to_vec();
    msg.extend_from_slice(&peer.port().to_be_bytes());
    msg.extend_from_slice(data);
    channel_data(&msg)
}

fn udp(timeout: Duration) -> UdpSocket {
    let sock = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    sock.set_read_timeout(Some(timeout)).unwrap();
    sock
}

fn relay_addr(opened: &[u8]) -> SocketAddr {
    assert_eq!(opened.get(..6), Some(&b"opened"[..]), "{opened:?}");
    SocketAddr::new(LOOPBACK, u16::from_be_bytes([opened[6], opened[7]]))
}

#[test]
fn udp_client_and_peer_are_relayed_both_ways() {
    let relay = start_with(config(), scripted(PORTS)).unwrap();
    let listen = relay.local_addrs()[0].1;
    let client = udp(Duration::from_secs(5));
    let peer = udp(Duration::from_secs(5));
    let mut buf = [0u8; 1500];

    client.send_to(&channel_data(b"open"), listen).unwrap();
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(
        from, listen,
        "transmits leave from the listener the client reached"
    );
    let relay_at = relay_addr(&buf[..n]);

    client
        .send_to(&fwd(peer.local_addr().unwrap(), b"hello"), listen)
        .unwrap();
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"hello"[..], relay_at));

    peer.send_to(b"pong", relay_at).unwrap();
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b">pong"[..], listen));
    relay.shutdown();
}

#[test]
fn tcp_client_is_relayed_and_its_close_frees_the_relay_port() {
    let relay = start_with(config(), scripted(PORTS)).unwrap();
    let listen = relay.local_addrs()[1].1;
    let mut client = TcpStream::connect(listen).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let peer = udp(Duration::from_secs(5));
    let mut buf = [0u8; 1500];

    // Two frames in one write: the shell must split them.
    let mut both = channel_data(b"open");
    both.extend_from_slice(&fwd(peer.local_addr().unwrap(), b"early"));
    client.write_all(&both).unwrap();
    let mut opened = [0u8; 8];
    client.read_exact(&mut opened).unwrap();
    let relay_at = relay_addr(&opened);
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"early"[..], relay_at));

    peer.send_to(b"pong", relay_at).unwrap();
    let mut pong = [0u8; 5];
    client.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b">pong");

    drop(client);
    let deadline = Instant::now() + Duration::from_secs(5);
    while UdpSocket::bind(relay_at).is_err() {
        assert!(
            Instant::now() < deadline,
            "relay socket still open after close"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    relay.shutdown();
}

#[test]
fn relay_bind_failure_is_reported_to_the_core() {
    // Occupy the first port of the range: the core must hear Err and may try another.
    let mut cfg = config();
    let taken = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    cfg.workers = 1;
    let relay = start_with(cfg, scripted(port..=port.saturating_add(1))).unwrap();
    let listen = relay.local_addrs()[0].1;
    let client = udp(Duration::from_secs(5));
    client.send_to(&channel_data(b"open"), listen).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    // The taken port failed, the core retried with the next one within one drain.
    assert_eq!(relay_addr(&buf[..n]).port(), port + 1);
    relay.shutdown();
}

#[test]
fn tls_client_gets_its_transmits_encrypted() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let mut cfg = config();
    cfg.tls = vec![SocketAddr::new(LOOPBACK, 0)];
    cfg.tls_config = Some(super::tls::load_server_config(&cert, &key).unwrap());
    let relay = start_with(cfg, scripted(PORTS)).unwrap();
    let listen = relay.local_addrs()[2].1;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(client_config),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(listen).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(&channel_data(b"open")).unwrap();
    let mut opened = [0u8; 8];
    tls.read_exact(&mut opened).unwrap();
    let relay_at = relay_addr(&opened);

    let peer = udp(Duration::from_secs(5));
    peer.send_to(b"pong", relay_at).unwrap();
    let mut pong = [0u8; 5];
    tls.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b">pong");
    relay.shutdown();
}

#[test]
fn coalescing_forwards_steady_streams_whole_and_in_order() {
    // With coalescing on, the worker sleeps between batches while traffic is steady;
    // nothing may be lost or reordered by that, either way, and a packet after a pause
    // still gets through.
    let mut cfg = config();
    cfg.workers = 1;
    cfg.coalesce = Duration::from_micros(300);
    let relay = start_with(cfg, scripted(PORTS)).unwrap();
    let listen = relay.local_addrs()[0].1;
    let client = udp(Duration::from_secs(5));
    let peer = udp(Duration::from_secs(5));
    let mut buf = [0u8; 1500];
    client.send_to(&channel_data(b"open"), listen).unwrap();
    let (n, _) = client.recv_from(&mut buf).unwrap();
    let relay_at = relay_addr(&buf[..n]);
    let peer_addr = peer.local_addr().unwrap();

    const PACKETS: u32 = 2_000;
    std::thread::scope(|s| {
        // Readers run alongside, so the test's own sockets never overflow.
        let at_peer = s.spawn(|| {
            let mut buf = [0u8; 64];
            (0..PACKETS)
                .map(|_| {
                    let (n, from) = peer.recv_from(&mut buf).unwrap();
                    assert_eq!(from, relay_at);
                    buf[..n].to_vec()
                })
                .collect::<Vec<_>>()
        });
        let at_client = s.spawn(|| {
            let mut buf = [0u8; 64];
            (0..PACKETS)
                .map(|_| {
                    let (n, _) = client.recv_from(&mut buf).unwrap();
                    buf[..n].to_vec()
                })
                .collect::<Vec<_>>()
        });
        // Bursts of 20 each way every 200 µs: steady traffic that keeps the worker
        // coalescing.
        for burst in 0..PACKETS / 20 {
            for i in 0..20 {
                let seq: u32 = burst * 20 + i;
                client
                    .send_to(&fwd(peer_addr, &seq.to_be_bytes()), listen)
                    .unwrap();
                peer.send_to(&seq.to_be_bytes(), relay_at).unwrap();
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let to_peer = at_peer.join().unwrap();
        let to_client = at_client.join().unwrap();
        for (seq, (p, c)) in to_peer.iter().zip(&to_client).enumerate() {
            let seq = (seq as u32).to_be_bytes();
            assert_eq!(p[..], seq[..], "client → peer, in order");
            assert_eq!(c[..], [&b">"[..], &seq[..]].concat()[..], "peer → client");
        }
    });
    // After a pause (the worker is blocked, not coalescing), one more each way.
    std::thread::sleep(Duration::from_millis(20));
    client.send_to(&fwd(peer_addr, b"late"), listen).unwrap();
    let (n, _) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"late");
    relay.shutdown();
}
