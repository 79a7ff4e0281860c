//! TURN over QUIC against a QUIC and HTTP/3 stack nobody here wrote: aioquic (PyPI)
//! drives a CONNECT-UDP tunnel (RFC 9298) to `turnpike serve` and speaks TURN inside it
//! (`tests/quic/turn_client.py`). The relay runs two workers, so a migrated
//! connection's packets only reach the worker that owns it if steering by connection
//! ID works.
//!
//! And `turnpike tunnel` gives coturn's `turnutils_uclient`, a TURN client that knows
//! nothing of QUIC, a local port through which it relays over a tunnel.
//!
//! aioquic must be installed (`pip install aioquic`; CI does it) and coturn's tools
//! (`apt-get install coturn`): without them the tests fail with the command instead of
//! skipping.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{free_port, require_tool, run_bounded, Background, TurnpikeConfig, TurnpikeProcess};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/quic/turn_client.py");
/// Bound on one client run; a healthy one takes a few seconds.
const CLIENT_LIMIT: Duration = Duration::from_secs(60);

fn require_aioquic() {
    let out = Command::new("python3")
        .args(["-c", "import aioquic"])
        .output();
    assert!(
        matches!(&out, Ok(o) if o.status.success()),
        "aioquic is missing ({out:?}); install it: pip install aioquic"
    );
}

/// The Python client in a mode that prints its observations as one JSON line, then
/// holds its connections until told to let go.
struct PythonClient {
    child: std::process::Child,
    seen: Value,
}

impl PythonClient {
    fn start(args: &[&str], server: &TurnpikeProcess) -> PythonClient {
        let mut child = Command::new("python3")
            .arg(CLIENT)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (line_tx, line_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = line_tx.send(line);
        });
        let Ok(line) = line_rx.recv_timeout(CLIENT_LIMIT) else {
            let _ = child.kill();
            panic!(
                "the aioquic client printed nothing in time; relay log:\n{}",
                server.log()
            )
        };
        let seen = serde_json::from_str(&line).unwrap_or_else(|e| {
            let _ = child.kill();
            panic!(
                "client output {line:?} is not JSON ({e}); relay log:\n{}",
                server.log()
            )
        });
        PythonClient { child, seen }
    }

    /// Tells the client to close what it holds.
    fn release(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"close\n");
        }
    }

    /// Releases and waits (bounded) for a clean exit.
    fn finish(mut self) {
        self.release();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "client exit status {status}");
                return;
            }
            assert!(Instant::now() < deadline, "the client did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What the client's `relay` mode saw, before and after it migrated: the tunnel opened,
/// every TURN request succeeded (class 2, RFC 8489 §5), and every Send/Data and
/// ChannelData echo came back — including a 1400-byte one, too large for a QUIC
/// datagram, which travels in capsules.
fn assert_relayed_through_the_tunnel(seen: &Value) {
    assert_eq!(seen["status"], "200", "{seen}");
    for step in ["allocate", "permission", "channel_bind", "refresh_after"] {
        assert_eq!(seen[step], 2, "{step}: {seen}");
    }
    for key in ["send_data", "channel_before", "channel_after"] {
        assert!(
            seen[key]
                .as_array()
                .is_some_and(|a| !a.is_empty() && a.iter().all(|v| v == true)),
            "{key} echoes: {seen}"
        );
    }
    assert_eq!(seen["large_echo"], true, "1400-byte ChannelData: {seen}");
}

fn server() -> TurnpikeProcess {
    require_aioquic();
    TurnpikeProcess::start(TurnpikeConfig::default())
}

fn quic_addr(server: &TurnpikeProcess) -> String {
    format!("127.0.0.1:{}", server.quic_port)
}

fn allocations(server: &TurnpikeProcess) -> f64 {
    server.metrics().sum("turnpike_allocations", &[])
}

/// The whole life of a tunnel: allocate with REST credentials, permission, Send/Data,
/// ChannelBind, ChannelData both ways; then the client's packets leave from a new
/// socket on another address (QUIC path migration) and the same allocation keeps
/// relaying; closing the tunnel frees the allocation at once.
#[test]
fn aioquic_relays_through_a_tunnel_that_survives_migration() {
    let server = server();
    // Garbage on the QUIC port first: dropped, and nothing breaks for the next client.
    let garbage = UdpSocket::bind("127.0.0.1:0").unwrap();
    for len in [1usize, 7, 40, 1200, 1500] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
        garbage.send_to(&bytes, quic_addr(&server)).unwrap();
    }

    // The client prints its observations, then holds the tunnel open until told.
    let mut client = PythonClient::start(
        &[
            "relay",
            "--server",
            &quic_addr(&server),
            "--secret",
            "rest-secret",
        ],
        &server,
    );
    let seen = client.seen.clone();

    assert_relayed_through_the_tunnel(&seen);
    assert!(
        seen["client_address_after"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.2:")),
        "the client moved to 127.0.0.2: {seen}"
    );
    // The peer saw one relayed address, the allocated one, before and after.
    let relayed = format!(
        "{}:{}",
        seen["relayed"][0].as_str().unwrap(),
        seen["relayed"][1]
    );
    assert_eq!(seen["peer_sources_before"], serde_json::json!([relayed]));
    assert_eq!(seen["peer_sources_after"], serde_json::json!([relayed]));

    // One allocation, made once: the migration made no new one.
    let metrics = server.wait_for_metrics("the tunnel's allocation", |m| {
        m.sum("turnpike_allocations", &[]) == 1.0
    });
    assert_eq!(metrics.sum("turnpike_allocations_created_total", &[]), 1.0);
    assert_eq!(
        metrics.sum(
            "turnpike_allocations_created_total",
            &[("transport", "quic")]
        ),
        1.0
    );
    assert_eq!(metrics.requests("allocate", "success"), 1.0);

    // Closing the tunnel's stream frees the allocation at once: the gauge, published
    // once a second by each worker, shows it within that second and a little.
    let closed_at = Instant::now();
    client.release();
    while allocations(&server) != 0.0 {
        assert!(
            closed_at.elapsed() < Duration::from_millis(1500),
            "allocation not freed after the tunnel closed; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    client.finish();
}

/// A client without HTTP Datagrams (no QUIC DATAGRAM extension, no H3_DATAGRAM setting)
/// still relays: TURN travels in DATAGRAM capsules on the request stream both ways.
#[test]
fn a_client_without_datagrams_relays_in_capsules() {
    let server = server();
    let client = PythonClient::start(
        &[
            "relay",
            "--capsules",
            "--server",
            &quic_addr(&server),
            "--secret",
            "rest-secret",
        ],
        &server,
    );
    assert_relayed_through_the_tunnel(&client.seen);
    client.finish();
}

/// A thousand QUIC connections that complete the handshake and then never send a
/// request (a handshake flood): the relay holds them in bounded memory, and a tunnel
/// opened meanwhile relays as usual.
#[test]
fn idle_handshakes_cost_bounded_memory_and_block_no_tunnel() {
    let server = server();
    let before = server.rss_kib();
    let flood = PythonClient::start(
        &["flood", "--server", &quic_addr(&server), "--count", "1000"],
        &server,
    );
    assert_eq!(flood.seen["connected"], 1000, "{}", flood.seen);
    let during = server.rss_kib();
    let grown_per_connection = during.saturating_sub(before) as f64 / 1000.0;
    eprintln!("relay RSS {before} KiB before, {during} KiB with 1000 idle connections");
    assert!(
        grown_per_connection < 64.0,
        "{grown_per_connection:.1} KiB per idle connection"
    );
    let bystander = PythonClient::start(
        &[
            "relay",
            "--server",
            &quic_addr(&server),
            "--secret",
            "rest-secret",
        ],
        &server,
    );
    assert_eq!(bystander.seen["status"], "200", "{}", bystander.seen);
    assert_eq!(bystander.seen["allocate"], 2, "{}", bystander.seen);
    assert!(
        bystander.seen["channel_before"]
            .as_array()
            .is_some_and(|a| a.iter().all(|v| v == true)),
        "{}",
        bystander.seen
    );
    bystander.finish();
    flood.finish();
}

/// A relay is not a UDP proxy: CONNECT-UDP to anything but its own TURN listeners is
/// 403 with Proxy-Status; other paths, methods and protocols get their 4xx/5xx; a
/// datagram for a stream that is no tunnel is dropped; the connection survives it all.
#[test]
fn requests_that_are_not_a_tunnel_to_this_relay_are_refused() {
    let server = server();
    let out = run_bounded(
        Command::new("python3")
            .arg(CLIENT)
            .args(["refuse", "--server", &quic_addr(&server)]),
        CLIENT_LIMIT,
    );
    assert!(
        out.success(),
        "{}\nrelay log:\n{}",
        out.combined(),
        server.log()
    );
    let seen: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    for case in [
        "other_peer",
        "private_target",
        "loopback_other_port",
        "name_target",
    ] {
        assert_eq!(seen[case][":status"], "403", "{case}: {seen}");
        assert!(
            seen[case]["proxy-status"]
                .as_str()
                .is_some_and(|v| v.contains("error=destination_ip_prohibited")),
            "{case}: {seen}"
        );
    }
    assert_eq!(seen["bad_path"][":status"], "404", "{seen}");
    assert_eq!(seen["get"], "405", "{seen}");
    assert_eq!(seen["post"], "405", "{seen}");
    assert_eq!(seen["websocket"], "501", "{seen}");
    assert_eq!(seen["good_after"], "200", "{seen}");
    assert_eq!(seen["terminated"], false, "{seen}");
    // Nothing was allocated by any of it.
    assert_eq!(
        server
            .settled_metrics()
            .sum("turnpike_allocations_created_total", &[]),
        0.0
    );
}

/// How coturn's tools are installed.
const COTURN: &str = "apt-get install coturn";

/// coturn's echo peer on a free loopback port: the process and the port.
fn echo_peer() -> (Background, u16) {
    let port = free_port("127.0.0.1".parse().unwrap(), false);
    let peer = Background::spawn(Command::new(require_tool("turnutils_peer", COTURN)).args([
        "-L",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]));
    (peer, port)
}

/// `turnpike tunnel` to `server`'s QUIC listener, checking its certificate against the
/// test CA, serving TURN clients at 127.0.0.1:`local_port`.
fn tunnel_command(server: &TurnpikeProcess, local_port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnpike"));
    cmd.args([
        "tunnel",
        "--relay",
        &quic_addr(server),
        "--server-name",
        "localhost",
    ])
    .arg("--ca")
    .arg(server.certificate_path())
    .args(["--local", &format!("127.0.0.1:{local_port}")]);
    cmd
}

/// Any ordinary TURN client can use `turnpike tunnel` as its TURN server: coturn's
/// uclient, four sessions of 50 packets each (one tunnel per session: its own QUIC
/// connection and allocation), echoed by a peer with no loss. The tunnel checks the
/// relay's certificate against the CA file (the test certificate, for "localhost").
#[test]
fn turnutils_uclient_relays_through_turnpike_tunnel() {
    let server = server();
    let uclient = require_tool("turnutils_uclient", COTURN);
    let (_peer, peer_port) = echo_peer();
    let local_port = free_port("127.0.0.1".parse().unwrap(), false);
    let mut tunnel = Background::spawn(&mut tunnel_command(&server, local_port));
    std::thread::sleep(Duration::from_millis(500));
    tunnel.assert_running();
    let out = run_bounded(
        Command::new(uclient).args([
            "-W",
            "rest-secret",
            "-u",
            "uclient",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
            "-m",
            "4",
            "-n",
            "50",
            "-l",
            "170",
            "-p",
            &local_port.to_string(),
            "127.0.0.1",
        ]),
        CLIENT_LIMIT,
    );
    let text = out.combined();
    assert!(
        text.contains("tot_send_msgs=200, tot_recv_msgs=200"),
        "{text}\nrelay log:\n{}",
        server.log()
    );
    assert!(text.contains("Total lost packets 0 "), "{text}");
    // uclient only ever talked to the tunnel's port, so every allocation and packet the
    // relay counts came through a tunnel (uclient allocates twice per session).
    let metrics = server.settled_metrics();
    let created = |t| metrics.sum("turnpike_allocations_created_total", &[("transport", t)]);
    assert!(created("quic") >= 4.0, "{}", metrics.text);
    assert_eq!(created("udp"), 0.0, "{}", metrics.text);
    assert!(
        metrics.requests("allocate", "success") >= 4.0,
        "{}",
        metrics.text
    );
    assert!(
        metrics.relayed_packets("to_peer") >= 200.0,
        "{}",
        metrics.text
    );
    tunnel.assert_running();
}

/// QUIC starts at 1200-byte packets, too small for a 1200-byte video packet in
/// ChannelData plus the QUIC and HTTP datagram overhead; such a packet would fall back
/// to the tunnel's reliable request stream. Both ends run path MTU discovery on
/// sockets that never fragment, so within seconds the tunnel takes it as a datagram.
#[test]
fn path_mtu_discovery_lets_video_packets_ride_in_datagrams() {
    use turnpike::quic::client::{TunnelClient, TunnelState, Verify};
    let server = TurnpikeProcess::start(TurnpikeConfig::default());
    let relay: std::net::SocketAddr = quic_addr(&server).parse().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    turnpike::quic::dont_fragment(&sock, relay).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut client =
        TunnelClient::connect(Instant::now(), relay, "localhost", Verify::Insecure).unwrap();
    let need = 4 + 1200;
    let start = Instant::now();
    let (mut buf, mut out) = (vec![0u8; 65536], Vec::new());
    loop {
        let now = Instant::now();
        while let Some(to) = client.poll_transmit(now, &mut out) {
            sock.send_to(&out, to).unwrap();
        }
        if client.state() == TunnelState::Open
            && client.max_datagram().is_some_and(|max| max >= need)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "after 15 s the tunnel ({:?}) takes {:?}-byte messages as datagrams; \
             a 1200-byte packet in ChannelData needs {need}",
            client.state(),
            client.max_datagram()
        );
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            client.handle_datagram(Instant::now(), from, &buf[..n]);
        }
        if client.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            client.handle_timeout(Instant::now());
        }
    }
    eprintln!(
        "tunnel takes {:?}-byte messages after {:?}",
        client.max_datagram(),
        start.elapsed()
    );
}

/// A private network namespace the calling thread (and every process and thread it
/// starts) runs in until drop, which deletes it. Needs root, as CI runs.
struct Namespace {
    name: String,
    home: std::fs::File,
}

impl Namespace {
    fn enter(prefix: &str) -> Namespace {
        use std::os::fd::AsRawFd;
        let name = format!("{prefix}-{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {args:?} (root and iproute2 needed): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        let home = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        let target = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        // SAFETY: setns on valid namespace fds; it only changes this thread's namespace.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        Namespace { name, home }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: back to the namespace the thread started in.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `turnpike tunnel` notices a network change by itself: when the route to the relay
/// starts leaving from another local address (here the namespace's route to 127.0.0.1
/// gets the preferred source 127.0.0.2, as a laptop's default route moves from Wi-Fi
/// to cellular), it moves the tunnel to a new socket, QUIC migrates the connection,
/// and the TURN client behind it — coturn's uclient — relays on through the same
/// allocation.
#[test]
fn turnpike_tunnel_follows_a_route_change() {
    let ns = Namespace::enter("turnpike-route");
    let server = server();
    let uclient = require_tool("turnutils_uclient", COTURN);
    let (_peer, peer_port) = echo_peer();
    let local_port = free_port("127.0.0.1".parse().unwrap(), false);
    let log_path = std::env::temp_dir().join(format!("{}-tunnel.log", ns.name));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut tunnel = tunnel_command(&server, local_port)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let tunnel_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let wait_for = |what: &str| {
        let start = Instant::now();
        while !tunnel_log().contains(what) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "tunnel never logged {what:?}:\n{}",
                tunnel_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("tunnel ready");
    // One session of 300 packets, 20 ms apart (6 s), on each of uclient's two
    // allocations; uclient's own sockets are bound to 127.0.0.1, so only the tunnel's
    // side of the route changes.
    let client = std::thread::spawn({
        let args: Vec<String> = [
            "-W",
            "rest-secret",
            "-u",
            "uclient",
            "-e",
            "127.0.0.1",
            "-L",
            "127.0.0.1",
            "-m",
            "1",
            "-n",
            "300",
            "-z",
            "20",
            "-l",
            "170",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "-r".into(),
            peer_port.to_string(),
            "-p".into(),
            local_port.to_string(),
            "127.0.0.1".into(),
        ])
        .collect();
        move || run_bounded(Command::new(uclient).args(args), CLIENT_LIMIT)
    });
    let before = server.wait_for_metrics("relaying through the tunnel", |m| {
        m.relayed_packets("to_peer") >= 50.0
    });
    let out = Command::new("ip")
        .args(["route", "replace", "local", "127.0.0.1", "dev", "lo"])
        .args(["table", "local", "scope", "host", "src", "127.0.0.2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("local address changed");
    let text = client.join().unwrap().combined();
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    assert!(
        text.contains("tot_send_msgs=600, tot_recv_msgs="),
        "{text}\ntunnel log:\n{}",
        tunnel_log()
    );
    // Packets in flight to the old socket when it closed may be lost; nothing more.
    let received: u64 = text
        .rsplit("tot_send_msgs=600, tot_recv_msgs=")
        .next()
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    eprintln!("{received} of 600 echoed across the route change");
    assert!(received >= 594, "received {received} of 600: {text}");
    let after = server.settled_metrics();
    let created = |m: &support::Metrics| {
        m.sum(
            "turnpike_allocations_created_total",
            &[("transport", "quic")],
        )
    };
    assert_eq!(
        created(&after),
        created(&before),
        "the move made a new allocation:\n{}",
        after.text
    );
    assert!(
        after.relayed_packets("to_peer") >= before.relayed_packets("to_peer") + 200.0,
        "relaying stopped at the move:\n{}",
        after.text
    );
    let _ = std::fs::remove_file(&log_path);
}

/// QUIC connections on which no tunnel's request passes authentication within
/// `limits.unauthenticated_timeout_secs` are closed, like TCP/TLS ones; a tunnel that
/// signed in keeps its connection.
#[test]
fn connections_that_never_sign_in_are_closed() {
    require_aioquic();
    let server = TurnpikeProcess::start(TurnpikeConfig {
        limits: "unauthenticated_timeout_secs = 2".into(),
        ..TurnpikeConfig::default()
    });
    let flood = PythonClient::start(
        &["flood", "--server", &quic_addr(&server), "--count", "20"],
        &server,
    );
    assert_eq!(flood.seen["connected"], 20, "{}", flood.seen);
    let signed_in = PythonClient::start(
        &[
            "relay",
            "--server",
            &quic_addr(&server),
            "--secret",
            "rest-secret",
        ],
        &server,
    );
    assert_eq!(signed_in.seen["allocate"], 2, "{}", signed_in.seen);
    let closed = |m: &support::Metrics| {
        m.sum(
            "turnpike_stream_connections_rejected_total",
            &[("reason", "unauthenticated_timeout")],
        )
    };
    server.wait_for_metrics("20 idle QUIC connections closed", |m| closed(m) == 20.0);
    // The signed-in tunnel is still there: its allocation lives, its connection was
    // not closed.
    let later = server.settled_metrics();
    assert_eq!(closed(&later), 20.0);
    assert_eq!(later.sum("turnpike_allocations", &[]), 1.0);
    signed_in.finish();
    flood.finish();
}
