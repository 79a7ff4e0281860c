//! Interop: Turnpike relays for clients nobody here wrote — coturn's `turnutils_uclient`
//! (TURN client), `turnutils_stunclient` (STUN Binding) and `turnutils_peer` (UDP echo
//! peer), all on loopback. Each test runs its own `turnpike serve` and echo peer, checks
//! what the client reports (messages sent, received, lost) and then checks on `/metrics`
//! that the relay itself did the work in the mode under test.
//!
//! The tools come from Debian's `coturn` package; a missing tool fails the test with the
//! install command instead of skipping it.
//!
//! How uclient behaves, which shapes these tests (coturn 4.6.1, checked by hand):
//! - Each session first makes a "probe" allocation it never frees, then the real one, so
//!   the servers here run without a per-user quota.
//! - Even with `-c` (no RTCP sessions) it binds a channel to `peer port + 1` before the
//!   peer itself, and creates permissions for both.
//! - It draws each channel number at random from RFC 5766's range 0x4000–0x7FFF.
//!   RFC 8656 §12 narrowed the range to 0x4000–0x4FFF (0x5000–0xFFFF are reserved to
//!   keep ChannelData apart from DTLS-SRTP, RFC 7983), so by default Turnpike answers
//!   400 to the rest — and uclient then gives up: it prints `channel bind: error 400
//!   (Bad Request)` and exits with status 255 (tested below). The channel-mode tests run
//!   Turnpike with `relay.rfc5766_channel_numbers = true`, made for such clients.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use turnpike::proto::auth::{long_term_key, mint_rest_credential};
use turnpike::proto::stun::attr::{self, PASSWORD_ALGORITHM_MD5};
use turnpike::proto::stun::{method, Class, Message, MessageBuilder, TransactionId};

use support::{
    free_port, require_tool, run_bounded, turnpike_cli, Background, Metrics, ToolOutput,
    TurnpikeConfig, TurnpikeProcess,
};

const INSTALL: &str = "apt-get install coturn";
const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
/// Bound on one uclient run; a healthy one takes about 6 s at the rates used here.
const UCLIENT_LIMIT: Duration = Duration::from_secs(25);
/// Messages per session and sessions for runs that need no retries.
const MESSAGES: u32 = 50;
const SESSIONS: u32 = 4;

fn tool(name: &str) -> String {
    require_tool(name, INSTALL).display().to_string()
}

/// `turnutils_peer`: echoes every UDP datagram back to its sender.
struct EchoPeer {
    // Kept for its Drop: the peer dies with the test.
    _process: Background,
    addr: SocketAddr,
}

impl EchoPeer {
    /// Starts a peer on `ip` and waits (at most 5 s) until it echoes.
    fn start(ip: IpAddr) -> EchoPeer {
        let addr = SocketAddr::new(ip, free_port(ip, false));
        let mut process = Background::spawn(Command::new(tool("turnutils_peer")).args([
            "-L",
            &ip.to_string(),
            "-p",
            &addr.port().to_string(),
        ]));
        // Probing with an echo (rather than binding the port to see if it is taken)
        // cannot steal the port from the peer while it starts.
        let probe = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("probe socket");
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            process.assert_running();
            let _ = probe.send_to(b"ping", addr);
            if let Ok((n, from)) = probe.recv_from(&mut buf) {
                if from == addr && buf.get(..n) == Some(b"ping".as_slice()) {
                    return EchoPeer {
                        _process: process,
                        addr,
                    };
                }
            }
        }
        panic!("turnutils_peer on {addr} never echoed");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone)]
enum Auth {
    /// `-u USER -w PASSWORD`: the long-term credential mechanism (RFC 8489 §9.2).
    LongTerm { user: String, password: String },
    /// `-W SECRET -u USER`: uclient mints a TURN REST credential itself, with the expiry
    /// `now + 86400` — exactly Turnpike's default `max_credential_lifetime_secs`.
    Rest { secret: String, user: String },
}

fn alice() -> Auth {
    Auth::LongTerm {
        user: "alice".into(),
        password: "secret-pw".into(),
    }
}

/// One `turnutils_uclient` invocation.
#[derive(Debug, Clone)]
struct Uclient {
    transport: Transport,
    /// `-s`: Send/Data indications instead of channels.
    indications: bool,
    auth: Auth,
    peer: SocketAddr,
    sessions: u32,
    messages: u32,
}

impl Uclient {
    fn new(transport: Transport, indications: bool, peer: &EchoPeer) -> Uclient {
        Uclient {
            transport,
            indications,
            auth: alice(),
            peer: peer.addr,
            sessions: SESSIONS,
            messages: MESSAGES,
        }
    }

    fn run(&self, server: &TurnpikeProcess) -> ToolOutput {
        let mut cmd = Command::new(tool("turnutils_uclient"));
        // -v prints the relayed addresses; -c: no RTCP sessions; 170-byte messages every
        // 5 ms per session (a modest rate for a shared 2-core machine).
        cmd.args(["-v", "-c", "-l", "170", "-z", "5"]);
        cmd.args(["-n", &self.messages.to_string()]);
        cmd.args(["-m", &self.sessions.to_string()]);
        cmd.args(["-e", &self.peer.ip().to_string()]);
        cmd.args(["-r", &self.peer.port().to_string()]);
        let port = match self.transport {
            Transport::Udp => server.port,
            Transport::Tcp => {
                cmd.arg("-t");
                server.port
            }
            Transport::Tls => {
                cmd.args(["-t", "-S"]);
                server.tls_port
            }
        };
        cmd.args(["-p", &port.to_string()]);
        if self.indications {
            cmd.arg("-s");
        }
        if self.peer.is_ipv6() {
            // RFC 6156: ask for an IPv6 relayed address to reach an IPv6 peer.
            cmd.arg("-x");
        }
        match &self.auth {
            Auth::LongTerm { user, password } => cmd.args(["-u", user, "-w", password]),
            Auth::Rest { secret, user } => cmd.args(["-W", secret, "-u", user]),
        };
        cmd.arg("127.0.0.1");
        run_bounded(&mut cmd, UCLIENT_LIMIT)
    }
}

/// What uclient reports at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Summary {
    sent: u64,
    received: u64,
    lost: u64,
    send_dropped: u64,
}

/// Parses the totals uclient prints last:
/// `start_mclient: tot_send_msgs=200, tot_recv_msgs=200` and
/// `Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)`.
/// (Progress lines carry `msz=` and are skipped.)
fn parse_summary(output: &str) -> Option<Summary> {
    let totals = output
        .lines()
        .rfind(|l| l.contains("start_mclient: tot_send_msgs=") && !l.contains("msz="))?;
    let sent = number_after(totals, "tot_send_msgs=")?;
    let received = number_after(totals, "tot_recv_msgs=")?;
    let losses = output
        .lines()
        .rfind(|l| l.contains("Total lost packets "))?;
    Some(Summary {
        sent,
        received,
        lost: number_after(losses, "Total lost packets ")?,
        send_dropped: number_after(losses, "total send dropped ")?,
    })
}

fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Relayed addresses uclient reports (`IPv4. Received relay addr: 127.0.0.1:21635`).
fn relay_addrs(output: &str) -> Vec<SocketAddr> {
    output
        .lines()
        .filter_map(|l| l.split_once("Received relay addr: ").map(|(_, a)| a.trim()))
        // uclient prints IPv6 as "::1:21192", without brackets: the port is after the
        // last colon.
        .filter_map(|a| {
            let (ip, port) = a.rsplit_once(':')?;
            Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
        })
        .collect()
}

/// Asserts uclient exited cleanly and every message came back; returns the totals.
/// Failures show the client's output and the server's log.
fn assert_all_echoed(out: &ToolOutput, expected_sent: u64, server: &TurnpikeProcess) -> Summary {
    let text = out.combined();
    let context = || {
        format!(
            "uclient ({:?}):\n{text}\nturnpike:\n{}",
            out.status,
            server.log()
        )
    };
    assert!(out.success(), "uclient failed; {}", context());
    let summary = parse_summary(&text).unwrap_or_else(|| panic!("no summary; {}", context()));
    let expected = Summary {
        sent: expected_sent,
        received: expected_sent,
        lost: 0,
        send_dropped: 0,
    };
    assert_eq!(summary, expected, "{}", context());
    summary
}

/// Asserts every relayed address uclient got is of `ip`'s family, on `ip`, and inside the
/// server's relay port range, and that there was at least one.
fn assert_relay_addrs(out: &ToolOutput, server: &TurnpikeProcess, ip: IpAddr) {
    let text = out.combined();
    let addrs = relay_addrs(&text);
    assert!(!addrs.is_empty(), "no relayed address reported:\n{text}");
    let (min, max) = server.relay_ports;
    for addr in addrs {
        assert_eq!(addr.ip(), ip, "relayed address {addr}");
        assert!(
            (min..=max).contains(&addr.port()),
            "relayed port {addr} outside {min}-{max}"
        );
    }
}

/// Waits until the relay has counted at least `summary`'s packets both ways; returns a
/// settled scrape.
fn assert_relayed(server: &TurnpikeProcess, summary: Summary) -> Metrics {
    let (sent, received) = (summary.sent as f64, summary.received as f64);
    server.wait_for_metrics("the relayed packets", |m| {
        m.relayed_packets("to_peer") >= sent && m.relayed_packets("to_client") >= received
    });
    server.settled_metrics()
}

/// Channel mode leaves Send/Data aside: the relay must have bound channels.
fn assert_channel_mode(m: &Metrics) {
    assert!(
        m.requests("channel_bind", "success") >= 4.0,
        "uclient binds two channels twice each; metrics:\n{}",
        m.text
    );
}

/// `-s` mode: permissions, and not one ChannelBind.
fn assert_indication_mode(m: &Metrics) {
    assert!(
        m.requests("create_permission", "success") >= 1.0,
        "{}",
        m.text
    );
    let binds = m.sum("turnpike_requests_total", &[("method", "channel_bind")]);
    assert_eq!(binds, 0.0, "a ChannelBind in Send/Data mode:\n{}", m.text);
}

/// The transport really was the one under test.
fn assert_transport(m: &Metrics, out: &ToolOutput, transport: Transport, sessions: u32) {
    let streams = m.sum("turnpike_stream_connections_total", &[]);
    match transport {
        Transport::Udp => assert_eq!(streams, 0.0, "TCP/TLS connections in a UDP test"),
        // A probe connection and the real one per session.
        Transport::Tcp | Transport::Tls => assert!(
            streams >= f64::from(2 * sessions),
            "{streams} stream connections for {sessions} sessions"
        ),
    }
    if transport == Transport::Tls {
        assert!(
            out.combined()
                .contains("tls_connect: client session connected"),
            "no TLS session in:\n{}",
            out.combined()
        );
    }
}

/// A channel-mode test: several sessions at once against a relay that accepts uclient's
/// RFC 5766 channel numbers, then the client's and the relay's accounts of the run.
fn channel_test(transport: Transport, auth: Auth) {
    let server = TurnpikeProcess::start(TurnpikeConfig::default());
    let peer = EchoPeer::start(V4);
    let mut uclient = Uclient::new(transport, false, &peer);
    uclient.auth = auth;
    let out = uclient.run(&server);
    let summary = assert_all_echoed(&out, u64::from(MESSAGES * SESSIONS), &server);
    assert_relay_addrs(&out, &server, V4);
    let m = assert_relayed(&server, summary);
    assert_channel_mode(&m);
    assert_eq!(m.requests("channel_bind", "400"), 0.0, "{}", m.text);
    assert_transport(&m, &out, transport, SESSIONS);
}

/// By default Turnpike follows RFC 8656 §12 (channels 0x4000–0x4FFF only): uclient's
/// draws from 0x5000–0x7FFF get 400 and it gives up. With 4 sessions, 8 draws all
/// landing in range has odds of 4^-8, so the refusal is certain in practice.
#[test]
fn strict_channel_numbers_refuse_rfc5766_only_numbers() {
    let server = TurnpikeProcess::start(TurnpikeConfig {
        rfc5766_channels: false,
        ..TurnpikeConfig::default()
    });
    let peer = EchoPeer::start(V4);
    let uclient = Uclient::new(Transport::Udp, false, &peer);
    let out = uclient.run(&server);
    let text = out.combined();
    assert!(
        !out.success(),
        "uclient completed against strict channel numbers:\n{text}"
    );
    assert!(text.contains("channel bind: error 400"), "{text}");
    let m = server.wait_for_metrics("a refused ChannelBind", |m| {
        m.requests("channel_bind", "400") >= 1.0
    });
    assert!(m.requests("channel_bind", "400") >= 1.0, "{}", m.text);
}

/// A Send/Data-indication test with several sessions at once.
fn indication_test(transport: Transport, auth: Auth, peer_ip: IpAddr) {
    let server = TurnpikeProcess::start(TurnpikeConfig::default());
    let peer = EchoPeer::start(peer_ip);
    let mut uclient = Uclient::new(transport, true, &peer);
    uclient.auth = auth;
    let out = uclient.run(&server);
    let summary = assert_all_echoed(&out, u64::from(MESSAGES * SESSIONS), &server);
    assert_relay_addrs(&out, &server, peer_ip);
    let m = assert_relayed(&server, summary);
    assert_indication_mode(&m);
    assert_transport(&m, &out, transport, SESSIONS);
}

#[test]
fn stunclient_learns_its_loopback_mapped_address() {
    let server = TurnpikeProcess::start(TurnpikeConfig::default());
    let out = run_bounded(
        Command::new(tool("turnutils_stunclient")).args([
            "-p",
            &server.port.to_string(),
            "127.0.0.1",
        ]),
        Duration::from_secs(10),
    );
    let text = out.combined();
    assert!(out.success(), "stunclient failed:\n{text}");
    // "0: : IPv4. UDP reflexive addr: 127.0.0.1:53975"
    let mapped: SocketAddr = text
        .lines()
        .find_map(|l| l.split_once("UDP reflexive addr: ").map(|(_, a)| a.trim()))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no reflexive address in:\n{text}"));
    // RFC 8489 §14.2: XOR-MAPPED-ADDRESS is the request's source: loopback, and the
    // client's own ephemeral port (not ours, not zero).
    assert_eq!(mapped.ip(), V4);
    assert_ne!(mapped.port(), 0);
    assert_ne!(mapped.port(), server.port);
    let m = server.wait_for_metrics("a successful Binding", |m| {
        m.requests("binding", "success") >= 1.0
    });
    assert_eq!(m.requests("allocate", "success"), 0.0);
}

#[test]
fn udp_channels_static_user() {
    channel_test(Transport::Udp, alice());
}

#[test]
fn udp_send_indications_static_user() {
    indication_test(Transport::Udp, alice(), V4);
}

#[test]
fn tcp_channels_static_user() {
    channel_test(Transport::Tcp, alice());
}

#[test]
fn tcp_send_indications_static_user() {
    indication_test(Transport::Tcp, alice(), V4);
}

#[test]
fn tls_channels_static_user() {
    channel_test(Transport::Tls, alice());
}

#[test]
fn tls_send_indications_static_user() {
    indication_test(Transport::Tls, alice(), V4);
}

fn rest_alice() -> Auth {
    Auth::Rest {
        secret: "rest-secret".into(),
        user: "alice".into(),
    }
}

#[test]
fn udp_send_indications_rest_credentials() {
    indication_test(Transport::Udp, rest_alice(), V4);
}

#[test]
fn tcp_channels_rest_credentials() {
    channel_test(Transport::Tcp, rest_alice());
}

#[test]
fn ipv6_relay_to_ipv6_peer_over_ipv4_udp() {
    indication_test(Transport::Udp, alice(), V6);
}

#[test]
fn wrong_password_gets_no_allocation() {
    // uclient retries a wrong password dozens of times in a row; with the failed
    // sign-in throttle on, the later retries go unanswered and it gives up another way
    // (tests/abuse.rs covers the throttle). Here: its handling of each 401.
    let server = TurnpikeProcess::start(TurnpikeConfig {
        limits: "auth_failures_per_minute = 0".into(),
        ..TurnpikeConfig::default()
    });
    let peer = EchoPeer::start(V4);
    let mut uclient = Uclient::new(Transport::Udp, true, &peer);
    uclient.auth = Auth::LongTerm {
        user: "alice".into(),
        password: "not-the-password".into(),
    };
    uclient.sessions = 1;
    let out = uclient.run(&server);
    let text = out.combined();
    // uclient takes every 401 as a fresh challenge, retries, then gives up.
    assert!(
        !out.success(),
        "uclient succeeded with a wrong password:\n{text}"
    );
    assert!(text.contains("Cannot complete Allocation"), "{text}");
    assert!(
        parse_summary(&text).is_none_or(|s| s.received == 0),
        "{text}"
    );
    // RFC 8489 §9.2.4: the unauthenticated first try and every wrong-key retry get 401.
    server.wait_for_metrics("401s to Allocate", |m| m.requests("allocate", "401") >= 2.0);
    let m = server.settled_metrics();
    assert_eq!(m.requests("allocate", "success"), 0.0, "{}", m.text);
    assert_eq!(m.relayed_packets("to_peer"), 0.0, "{}", m.text);
    assert_eq!(m.sum("turnpike_allocations_created_total", &[]), 0.0);
}

#[test]
fn credentials_minted_by_turnpike_cli_work_as_long_term_credentials() {
    let minted = turnpike_cli([
        "credentials",
        "--secret",
        "rest-secret",
        "--user",
        "bob",
        "--ttl",
        "600",
    ]);
    assert!(minted.success(), "{}", minted.combined());
    let field = |name: &str| {
        minted
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name:?} line in {:?}", minted.stdout))
    };
    let (username, password) = (field("username:"), field("password:"));
    // RFC 8656's REST username shape, as coturn mints it: "<unix expiry>:<user>".
    let expiry: u64 = username
        .strip_suffix(":bob")
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("username {username:?}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    assert!(
        (now + 590..=now + 600).contains(&expiry),
        "{expiry} vs {now}"
    );
    indication_test(
        Transport::Udp,
        Auth::LongTerm {
            user: username,
            password,
        },
        V4,
    );
}

#[test]
fn peer_outside_the_allow_list_gets_403_and_no_packets() {
    let server = TurnpikeProcess::start(TurnpikeConfig {
        allow_peers: vec![],
        ..TurnpikeConfig::default()
    });
    let peer = EchoPeer::start(V4);
    // Send/Data mode: the CreatePermission for the loopback peer is refused.
    let mut uclient = Uclient::new(Transport::Udp, true, &peer);
    uclient.sessions = 1;
    let out = uclient.run(&server);
    let text = out.combined();
    assert!(!out.success(), "{text}");
    assert!(text.contains("create permission error 403"), "{text}");
    // Channel mode: the ChannelBind reaches the peer check and gets 403 too (the
    // server accepts uclient's RFC 5766 channel numbers, so no 400 comes first).
    uclient.indications = false;
    let out = uclient.run(&server);
    let text = out.combined();
    assert!(!out.success(), "{text}");
    assert!(text.contains("channel bind: error 403"), "{text}");
    server.wait_for_metrics("403s to CreatePermission and ChannelBind", |m| {
        m.requests("create_permission", "403") >= 1.0 && m.requests("channel_bind", "403") >= 1.0
    });
    let m = server.settled_metrics();
    assert_eq!(
        m.requests("create_permission", "success"),
        0.0,
        "{}",
        m.text
    );
    assert_eq!(m.requests("channel_bind", "success"), 0.0, "{}", m.text);
    assert_eq!(m.relayed_packets("to_peer"), 0.0, "{}", m.text);
    assert_eq!(m.relayed_packets("to_client"), 0.0, "{}", m.text);
}

/// Turnpike knows wall time as "unix second S began at instant I", taken at start-up. If
/// it dropped the fraction of a second at which it started, its clock would lag the wall
/// clock by up to a second, and a REST credential would stay valid after its expiry
/// second has begun (or, rounded the other way, stop being valid before). So the server
/// is started late in a second (its fraction ≥ 0.5), and early in a later second S
/// (fraction 0.25) two credentials are tried: one expiring at S (expired: refused with
/// 401) and one expiring at S + 1 (valid for another 0.75 s: accepted). A lagging clock
/// accepts the first, a leading one refuses the second.
///
/// uclient mints its own expiry (now + a day), so this test sends its own Allocate.
#[test]
fn rest_credential_expiry_is_exact_to_the_second_at_any_clock_phase() {
    let mut server = None;
    for _ in 0..3 {
        sleep_until_subsec(0.75);
        let started = TurnpikeProcess::start(TurnpikeConfig::default());
        // The clock anchor is taken just before the first log line is written.
        let phase = first_log_subsec(&started.log());
        if phase >= 0.5 {
            server = Some(started);
            break;
        }
    }
    let server = server.expect("could not start the server late in a second");
    std::thread::sleep(Duration::from_secs(1));
    // Both tries must fall in one wall-clock second; on a slow machine, try again.
    for _ in 0..3 {
        sleep_until_subsec(0.25);
        let second = unix_time().as_secs();
        let (expired_user, expired_pw) = mint_rest_credential(b"rest-secret", "alice", second);
        let expired = allocate_with(server.udp_addr(), &expired_user, &expired_pw);
        let (live_user, live_pw) = mint_rest_credential(b"rest-secret", "alice", second + 1);
        let live = allocate_with(server.udp_addr(), &live_user, &live_pw);
        if unix_time().as_secs() != second {
            continue;
        }
        assert_eq!(
            expired,
            Err(401),
            "a credential expiring at {second} was not refused during second {second}"
        );
        assert_eq!(
            live,
            Ok(()),
            "a credential expiring at {} was refused during second {second}",
            second + 1
        );
        return;
    }
    panic!("three tries each took longer than 0.75 s");
}

fn unix_time() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
}

/// One Allocate (UDP) with long-term credentials `username`/`password`, after the 401
/// that brings the realm and nonce: `Ok` on success, else the error code.
fn allocate_with(server: SocketAddr, username: &str, password: &str) -> Result<(), u16> {
    let sock = UdpSocket::bind((V4, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let exchange = |tid: u8, credentials: Option<(&[u8], &[u8])>| {
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(
            &mut buf,
            Class::Request,
            method::ALLOCATE,
            TransactionId([tid; 12]),
        );
        b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        if let Some((realm, nonce)) = credentials {
            let realm_str = std::str::from_utf8(realm).unwrap();
            b.add(attr::USERNAME, username.as_bytes());
            b.add(attr::REALM, realm);
            b.add(attr::NONCE, nonce);
            b.add_message_integrity(&long_term_key(
                PASSWORD_ALGORITHM_MD5,
                username,
                realm_str,
                password,
            ));
        }
        sock.send_to(&buf, server).unwrap();
        let mut resp = vec![0u8; 1500];
        let n = sock.recv(&mut resp).expect("an answer to Allocate");
        resp.truncate(n);
        resp
    };
    let challenge = exchange(1, None);
    let challenge = Message::parse(&challenge).unwrap();
    let realm = challenge
        .get(attr::REALM)
        .expect("REALM in the 401")
        .to_vec();
    let nonce = challenge
        .get(attr::NONCE)
        .expect("NONCE in the 401")
        .to_vec();
    let answer = exchange(2, Some((&realm, &nonce)));
    let answer = Message::parse(&answer).unwrap();
    match answer.class() {
        Class::Success => Ok(()),
        _ => Err(
            attr::decode_error_code(answer.get(attr::ERROR_CODE).expect("ERROR-CODE"))
                .unwrap()
                .0,
        ),
    }
}

/// Sleeps until the wall clock's fraction of a second is `target` (0.0–1.0).
fn sleep_until_subsec(target: f64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| f64::from(d.subsec_nanos()) / 1e9)
        .unwrap_or(0.0);
    let wait = (target - now).rem_euclid(1.0);
    std::thread::sleep(Duration::from_secs_f64(wait));
}

/// The fraction of a second in the timestamp of the first log line
/// (`2026-11-26T05:55:49.863895Z  INFO ...`).
fn first_log_subsec(log: &str) -> f64 {
    log.lines()
        .next()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|ts| ts.split_once('.'))
        .map(|(_, frac)| frac.trim_end_matches('Z'))
        .and_then(|frac| format!("0.{frac}").parse().ok())
        .unwrap_or_else(|| panic!("no timestamp in the first log line of:\n{log}"))
}
