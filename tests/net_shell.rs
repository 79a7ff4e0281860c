//! The I/O shell on real loopback sockets: listeners, framing, TLS, metrics endpoints and
//! shutdown. Protocol behaviour belongs to the core and is tested there.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use turnpike::metrics::{install_recorder, serve_http, StatsPublisher};
use turnpike::net::tls::load_server_config;
use turnpike::net::{start, NetConfig, RelayHandle};
use turnpike::proto::quota::Quotas;
use turnpike::proto::server::RelayIp;
use turnpike::proto::stats::{Direction, DropReason, Stats};
use turnpike::proto::{ServerConfig, SharedPool, Transport};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn any_port() -> SocketAddr {
    SocketAddr::new(LOOPBACK, 0)
}

fn server_config() -> ServerConfig {
    ServerConfig {
        realm: "turnpike.test".into(),
        software: None,
        users: vec![("alice".into(), "secret".into())],
        relay_v4: Some(RelayIp {
            bind: LOOPBACK,
            advertise: None,
            host: None,
        }),
        max_username_len: 513,
        ..ServerConfig::new([7; 32], (Instant::now(), 1_700_000_000))
    }
}

fn net_config(workers: usize) -> NetConfig {
    let shared = Arc::new(SharedPool::new(50_000..=50_999, Quotas::new(0, 0)));
    NetConfig {
        workers,
        udp: vec![any_port()],
        tcp: vec![any_port()],
        rng_seed: 1,
        ..NetConfig::new(server_config(), shared)
    }
}

/// Shuts the relay down on another thread and fails if that takes longer than 5 s.
fn shutdown_promptly(relay: RelayHandle) {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        relay.shutdown();
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(5))
        .expect("shutdown did not return within 5 s");
}

fn addr_of(relay: &RelayHandle, transport: Transport) -> SocketAddr {
    relay
        .local_addrs()
        .into_iter()
        .find(|(t, _)| *t == transport)
        .map(|(_, a)| a)
        .expect("listener for transport")
}

/// Sockets bound on 127.0.0.1:`port` in a /proc/net table, optionally in one TCP state.
#[cfg(target_os = "linux")]
fn count_bound(table: &str, port: u16, state: Option<&str>) -> usize {
    let text = std::fs::read_to_string(table).unwrap();
    let local = format!("0100007F:{port:04X}");
    text.lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.get(1) == Some(&local.as_str()) && state.is_none_or(|s| cols.get(3) == Some(&s))
        })
        .count()
}

#[test]
#[cfg(target_os = "linux")]
fn each_worker_binds_the_same_listen_port() {
    let relay = start(net_config(2)).unwrap();
    let addrs = relay.local_addrs();
    assert_eq!(
        addrs.len(),
        2,
        "one address per configured listener: {addrs:?}"
    );
    let udp = addr_of(&relay, Transport::Udp);
    let tcp = addr_of(&relay, Transport::Tcp);
    assert_eq!(udp.ip(), LOOPBACK);
    assert_ne!(udp.port(), 0);
    assert_ne!(tcp.port(), 0);
    // SO_REUSEPORT: both workers hold a socket on the one resolved port.
    assert_eq!(count_bound("/proc/net/udp", udp.port(), None), 2);
    assert_eq!(count_bound("/proc/net/tcp", tcp.port(), Some("0A")), 2);
    shutdown_promptly(relay);
    assert_eq!(count_bound("/proc/net/udp", udp.port(), None), 0);
}

#[test]
fn start_rejects_impossible_configs() {
    let mut tls_without_cert = net_config(1);
    tls_without_cert.tls = vec![any_port()];
    assert!(start(tls_without_cert).is_err());

    let mut no_workers = net_config(1);
    no_workers.workers = 0;
    assert!(start(no_workers).is_err());
}

/// Reads until EOF or reset; fails if the server keeps the connection open for 5 s.
fn assert_closed_by_server(mut stream: impl Read) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 1024];
    loop {
        assert!(
            Instant::now() < deadline,
            "server did not close the connection"
        );
        match stream.read(&mut buf) {
            Ok(0) => return,
            // A response queued before the garbage arrived may still come first.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) => panic!("unexpected read error: {e}"),
        }
    }
}

/// A STUN Binding request (RFC 8489 §6): type 0x0001, no attributes, magic cookie.
fn binding_request() -> Vec<u8> {
    let mut msg = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    msg.extend_from_slice(&[9; 12]);
    msg
}

#[test]
fn tcp_connection_with_invalid_framing_is_closed() {
    let relay = start(net_config(2)).unwrap();
    let mut stream = TcpStream::connect(addr_of(&relay, Transport::Tcp)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    // Well-framed STUN keeps the connection open (whatever the core answers).
    stream.write_all(&binding_request()).unwrap();
    let mut buf = [0u8; 512];
    match stream.read(&mut buf) {
        Ok(n) => assert!(n > 0, "connection closed after a well-framed message"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "unexpected error: {e}"
        ),
    }

    // 0xFF starts neither STUN nor ChannelData: the stream cannot be resynchronised.
    stream.write_all(&[0xFF, 0, 0, 4, 1, 2, 3, 4]).unwrap();
    assert_closed_by_server(&stream);
    shutdown_promptly(relay);
}

fn write_self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().to_vec())
}

#[test]
fn tls_listener_completes_a_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = write_self_signed(dir.path());
    let mut cfg = net_config(2);
    cfg.tls = vec![any_port()];
    cfg.tls_config = Some(load_server_config(&cert, &key).unwrap());
    let relay = start(cfg).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.into()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
    let mut tcp = TcpStream::connect(addr_of(&relay, Transport::Tls)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("TLS handshake");
    }
    assert!(!conn.is_handshaking());

    // Framing applies to the plaintext: garbage inside TLS closes the connection.
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(&[0xFF; 8]).unwrap();
    tls.flush().unwrap();
    assert_closed_by_server(&mut tls);
    shutdown_promptly(relay);
}

#[test]
fn tls_config_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-cert.pem");
    let key = dir.path().join("no-key.pem");
    std::fs::write(&key, "not a key").unwrap();
    let err = load_server_config(&missing, &key).err().unwrap();
    assert!(err.to_string().contains("missing-cert.pem"), "{err}");

    let garbage = dir.path().join("garbage-cert.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let err = load_server_config(&garbage, &key).err().unwrap();
    assert!(err.to_string().contains("garbage-cert.pem"), "{err}");

    // A good certificate with a key file that holds no key.
    let (cert, _, _) = write_self_signed(dir.path());
    let err = load_server_config(&cert, &key).err().unwrap();
    assert!(err.to_string().contains("no-key.pem"), "{err}");
}

/// A minimal HTTP/1.1 GET on a blocking thread (the test runtime has no io-util).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn http_endpoints_report_health_readiness_and_metrics() {
    let handle = install_recorder();
    // Idempotent: a second call must not fail or replace the registry.
    let _ = install_recorder();

    let mut publisher = StatsPublisher::new(9, false);
    let mut stats = Stats::default();
    stats.drops[DropReason::NoChannel as usize] = 5;
    stats.bytes_by_transport[Direction::ToClient as usize][Transport::Tcp.index()] = 1000;
    stats.allocations = 4;
    publisher.publish(&stats);
    stats.drops[DropReason::NoChannel as usize] = 12;
    stats.bytes_by_transport[Direction::ToClient as usize][Transport::Tcp.index()] = 1500;
    stats.allocations = 3;
    publisher.publish(&stats);

    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_http(
        listener,
        handle,
        ready.clone(),
        axum::Router::new(),
    ));

    assert_eq!(http_get(addr, "/healthz").await, (200, "ok".to_string()));
    assert_eq!(http_get(addr, "/readyz").await.0, 503);
    ready.store(true, Ordering::Release);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);

    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    // Deltas add up to the latest snapshot; the gauge shows the latest value.
    assert!(
        body.contains("turnpike_dropped_packets_total{reason=\"no_channel\"} 12"),
        "{body}"
    );
    assert!(
        body.contains(
            "turnpike_relayed_bytes_total{direction=\"to_client\",transport=\"tcp\"} 1500"
        ),
        "{body}"
    );
    assert!(
        body.contains("turnpike_allocations{worker=\"9\"} 3"),
        "{body}"
    );
    server.abort();
}
