//! Turnpike as the TURN service of a real XMPP server: Prosody (Debian's `prosody` 0.12)
//! mints TURN REST credentials with `mod_turn_external` from the shared secret Turnpike
//! holds, and hands them to clients through XEP-0215 External Service Discovery. The
//! XMPP client is slixmpp (PyPI), which nobody here wrote; it has no XEP-0215 plugin, so
//! `tests/xmpp/xmpp_client.py` sends the `<services xmlns='urn:xmpp:extdisco:2'/>` IQ
//! through its generic IQ API.
//!
//! Each test starts its own `turnpike serve` and its own Prosody: a config file, data
//! directory, pid file and log in a temporary directory, c2s on a free loopback port,
//! s2s off, users registered with `prosodyctl --config`, killed on drop. One Prosody
//! serves several virtual hosts, each with its own `mod_turn_external` options, so every
//! credential below — the expired one and the foreign one too — is minted by Prosody
//! itself:
//!
//! | host | `turn_external_*` | what Turnpike must do |
//! | --- | --- | --- |
//! | `good.localhost` | `secret` = Turnpike's, `ttl` left at Prosody's default 86400 | relay |
//! | `named.localhost` | as `good`; `user = "xmpp"`, `tcp = true`, `tls_port` | relay: UDP, TCP, TLS |
//! | `expired.localhost` | `ttl = -3600`: the expiry is an hour in the past | 401 |
//! | `foreign.localhost` | a secret Turnpike does not hold | 401 |
//! | `long.localhost` | `ttl = 172800`, beyond `auth.max_credential_lifetime_secs` | 401 |
//!
//! TTL: Prosody's `turn_external_ttl` defaults to 86400 s, exactly Turnpike's default
//! `auth.max_credential_lifetime_secs` (86400; Turnpike accepts an expiry up to that + 60 s
//! ahead of its clock), so the two defaults agree; the `long` host shows what happens when
//! a server's TTL is raised above the relay's limit.
//!
//! Prosody, prosodyctl, slixmpp and coturn's tools must be installed (`scripts/test` does
//! it): without them the tests fail with the install command instead of skipping.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    free_port, require_tool, run_bounded, Background, Metrics, ToolOutput, TurnpikeConfig,
    TurnpikeProcess,
};
use turnpike::proto::auth::rest_password;

const HELPERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/xmpp");
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The TURN REST secret Turnpike holds and the `good`/`named`/`expired`/`long` hosts use.
const SECRET: &str = "xmpp-turn-secret";
/// Prosody's `turn_external_ttl` default, and Turnpike's `max_credential_lifetime_secs`.
const DEFAULT_TTL: i64 = 86_400;
/// Bound on Prosody's start-up (it takes about 0.1 s here).
const PROSODY_READY: Duration = Duration::from_secs(15);
/// Bound on one Python helper run (a sign-in and one IQ take about 0.4 s).
const HELPER_LIMIT: Duration = Duration::from_secs(30);
/// Bound on one uclient run.
const UCLIENT_LIMIT: Duration = Duration::from_secs(25);
const COTURN: &str = "apt-get install coturn";

/// One Prosody virtual host and its `mod_turn_external` options.
struct XmppHost {
    name: &'static str,
    secret: &'static str,
    /// `turn_external_ttl`; None leaves Prosody's default (86400).
    ttl: Option<i64>,
    /// `turn_external_user`; None: the username is the bare expiry.
    user: Option<&'static str>,
    /// `turn_external_tcp = true` and `turn_external_tls_port` = Turnpike's TLS port:
    /// TURN over TCP and TLS announced too.
    tcp_and_tls: bool,
}

/// A Prosody process of the test's own. Killed on drop; its files go with the directory.
struct Prosody {
    // Kept for its Drop.
    _process: Background,
    dir: tempfile::TempDir,
    c2s: SocketAddr,
}

impl Prosody {
    /// Writes the config, registers `user`/`USER_PASSWORD` on every host with
    /// prosodyctl, starts Prosody in the foreground and waits until every host is active
    /// and c2s accepts connections.
    fn start(hosts: &[XmppHost], turn: &TurnpikeProcess, users: &[&str]) -> Prosody {
        let prosody = require_tool("prosody", "apt-get install prosody");
        let prosodyctl = require_tool("prosodyctl", "apt-get install prosody");
        require_slixmpp();
        let dir = tempfile::tempdir().unwrap();
        let c2s = SocketAddr::new(LOOPBACK, free_port(LOOPBACK, true));
        let path = |name: &str| dir.path().join(name);
        std::fs::create_dir(path("data")).unwrap();
        std::fs::create_dir(path("certs")).unwrap();
        let mut config = format!(
            r#"-- Prosody as root only because the tests run as root; loopback only.
run_as_root = true
pidfile = {pid:?}
data_path = {data:?}
certificates = {certs:?}
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = {log:?} }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
modules_disabled = {{ "s2s" }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "turn_external" }}
-- No certificate: the client signs in with SCRAM over the plain loopback stream.
c2s_require_encryption = false
authentication = "internal_hashed"
turn_external_host = "127.0.0.1"
turn_external_port = {turn_port}
"#,
            pid = path("prosody.pid"),
            data = path("data"),
            certs = path("certs"),
            log = path("prosody.log"),
            port = c2s.port(),
            turn_port = turn.port,
        );
        for host in hosts {
            config.push_str(&format!(
                "VirtualHost {:?}\n    turn_external_secret = {:?}\n",
                host.name, host.secret
            ));
            if let Some(ttl) = host.ttl {
                config.push_str(&format!("    turn_external_ttl = {ttl}\n"));
            }
            if let Some(user) = host.user {
                config.push_str(&format!("    turn_external_user = {user:?}\n"));
            }
            if host.tcp_and_tls {
                config.push_str(&format!(
                    "    turn_external_tcp = true\n    turn_external_tls_port = {}\n",
                    turn.tls_port
                ));
            }
        }
        let config_path = path("prosody.cfg.lua");
        std::fs::write(&config_path, config).unwrap();
        for host in hosts {
            for user in users {
                let out = run_bounded(
                    Command::new(&prosodyctl)
                        .arg("--config")
                        .arg(&config_path)
                        .args(["register", user, host.name, USER_PASSWORD]),
                    Duration::from_secs(20),
                );
                assert!(
                    out.success(),
                    "prosodyctl register {user} {}: {}",
                    host.name,
                    out.combined()
                );
            }
        }
        let mut process = Background::spawn(
            Command::new(prosody)
                .arg("--config")
                .arg(&config_path)
                .arg("-F"),
        );
        let log_path = path("prosody.log");
        let deadline = Instant::now() + PROSODY_READY;
        loop {
            process.assert_running();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let active = hosts
                .iter()
                .all(|h| log.contains(&format!("Activated host: {}", h.name)));
            if active && TcpStream::connect_timeout(&c2s, Duration::from_millis(200)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prosody not ready in {PROSODY_READY:?}; its log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Prosody {
            _process: process,
            dir,
            c2s,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default()
    }

    /// Signs in as `user@host` with slixmpp and asks for external services (XEP-0215).
    fn external_services(&self, user: &str, host: &str) -> ExternalServices {
        let out = run_bounded(
            python("extdisco.py")
                .arg("--server")
                .arg(self.c2s.to_string())
                .arg("--jid")
                .arg(format!("{user}@{host}"))
                .arg("--password")
                .arg(USER_PASSWORD),
            HELPER_LIMIT,
        );
        assert!(
            out.success(),
            "extdisco.py as {user}@{host}: {}\nProsody's log:\n{}",
            out.combined(),
            self.log()
        );
        let seen: Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("extdisco.py printed {:?}: {e}", out.stdout));
        ExternalServices { seen }
    }
}

/// Password of every registered user.
const USER_PASSWORD: &str = "user-pw";

/// `python3 tests/xmpp/<script>`, leaving no `__pycache__` in the source tree.
fn python(script: &str) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(PathBuf::from(HELPERS).join(script))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

fn require_slixmpp() {
    let out = Command::new("python3")
        .args(["-c", "import slixmpp"])
        .output();
    assert!(
        matches!(&out, Ok(o) if o.status.success()),
        "slixmpp is missing ({out:?}); install it: pip install slixmpp"
    );
}

/// What `extdisco.py` printed: the client's clock and the `<service/>` entries.
struct ExternalServices {
    seen: Value,
}

/// One `turn` entry, as a client would use it.
#[derive(Debug, Clone)]
struct TurnEntry {
    host: String,
    port: u16,
    username: String,
    password: String,
    /// `expires` (XEP-0082 date-time) in Unix seconds.
    expires: i64,
    /// The client's clock when it asked.
    asked_at: i64,
}

impl ExternalServices {
    /// The single `turn` entry over `transport`; panics showing everything otherwise.
    fn turn(&self, transport: &str) -> TurnEntry {
        let s = &self.entry("turn", transport);
        assert_eq!(
            s["restricted"], "1",
            "credentials are marked restricted: {s}"
        );
        TurnEntry {
            host: s["host"].as_str().unwrap().to_string(),
            port: u16::try_from(s["port"].as_u64().unwrap()).unwrap(),
            username: s["username"].as_str().unwrap().to_string(),
            password: s["password"].as_str().unwrap().to_string(),
            expires: s["expires_unix"].as_i64().unwrap(),
            asked_at: self.seen["now"].as_i64().unwrap(),
        }
    }

    /// Every entry as "type/transport", sorted.
    fn types(&self) -> Vec<String> {
        let mut types: Vec<String> = self.seen["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("{}/{}", s["type"], s["transport"]).replace('"', ""))
            .collect();
        types.sort();
        types
    }

    /// The single entry of `kind` over `transport`.
    fn entry(&self, kind: &str, transport: &str) -> Value {
        let services = self.seen["services"].as_array().unwrap();
        let matching: Vec<&Value> = services
            .iter()
            .filter(|s| s["type"] == kind && s["transport"] == transport)
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{kind}/{transport} entries in {}",
            self.seen
        );
        matching[0].clone()
    }
}

/// `turnutils_peer`: echoes every UDP datagram back to its sender. Waits (at most 5 s)
/// until it echoes.
fn echo_peer() -> (Background, SocketAddr) {
    let addr = SocketAddr::new(LOOPBACK, free_port(LOOPBACK, false));
    let mut process =
        Background::spawn(Command::new(require_tool("turnutils_peer", COTURN)).args([
            "-L",
            "127.0.0.1",
            "-p",
            &addr.port().to_string(),
        ]));
    let probe = UdpSocket::bind(SocketAddr::new(LOOPBACK, 0)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        process.assert_running();
        let _ = probe.send_to(b"ping", addr);
        if let Ok((n, from)) = probe.recv_from(&mut buf) {
            if from == addr && buf.get(..n) == Some(b"ping".as_slice()) {
                return (process, addr);
            }
        }
    }
    panic!("turnutils_peer on {addr} never echoed");
}

/// How uclient reaches the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// coturn's `turnutils_uclient` with exactly the entry's host, port, username and
/// password (`-u`/`-w`: the long-term mechanism, as any TURN client given XEP-0215
/// credentials uses them), `sessions` × `messages` 170-byte packets over channels.
fn uclient(
    entry: &TurnEntry,
    transport: Transport,
    peer: SocketAddr,
    sessions: u32,
    messages: u32,
) -> ToolOutput {
    let mut cmd = Command::new(require_tool("turnutils_uclient", COTURN));
    match transport {
        Transport::Udp => {}
        Transport::Tcp => {
            cmd.arg("-t");
        }
        Transport::Tls => {
            cmd.args(["-t", "-S"]);
        }
    }
    run_bounded(
        cmd.args(["-v", "-c", "-l", "170", "-z", "5"])
            .args(["-n", &messages.to_string(), "-m", &sessions.to_string()])
            .args(["-e", &peer.ip().to_string(), "-r", &peer.port().to_string()])
            .args(["-p", &entry.port.to_string()])
            .args(["-u", &entry.username, "-w", &entry.password])
            .arg(&entry.host),
        UCLIENT_LIMIT,
    )
}

/// uclient's last totals: `tot_send_msgs=N, tot_recv_msgs=M` and `Total lost packets L`.
fn uclient_totals(output: &str) -> Option<(u64, u64, u64)> {
    let totals = output
        .lines()
        .rfind(|l| l.contains("start_mclient: tot_send_msgs=") && !l.contains("msz="))?;
    let losses = output
        .lines()
        .rfind(|l| l.contains("Total lost packets "))?;
    Some((
        number_after(totals, "tot_send_msgs=")?,
        number_after(totals, "tot_recv_msgs=")?,
        number_after(losses, "Total lost packets ")?,
    ))
}

fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn turnpike() -> TurnpikeProcess {
    TurnpikeProcess::start(TurnpikeConfig {
        secrets: vec![SECRET.into()],
        // uclient retries a refused credential dozens of times, all from 127.0.0.1;
        // with the failed sign-in throttle on, the later retries go unanswered and it
        // gives up another way (tests/abuse.rs covers the throttle). Here: each 401.
        limits: "auth_failures_per_minute = 0".into(),
        ..TurnpikeConfig::default()
    })
}

const HOSTS: [XmppHost; 5] = [
    XmppHost {
        name: "good.localhost",
        secret: SECRET,
        ttl: None,
        user: None,
        tcp_and_tls: false,
    },
    XmppHost {
        name: "named.localhost",
        secret: SECRET,
        ttl: None,
        user: Some("xmpp"),
        tcp_and_tls: true,
    },
    XmppHost {
        name: "expired.localhost",
        secret: SECRET,
        ttl: Some(-3600),
        user: None,
        tcp_and_tls: false,
    },
    XmppHost {
        name: "foreign.localhost",
        secret: "a-secret-turnpike-does-not-hold",
        ttl: None,
        user: None,
        tcp_and_tls: false,
    },
    XmppHost {
        name: "long.localhost",
        secret: SECRET,
        ttl: Some(2 * DEFAULT_TTL),
        user: None,
        tcp_and_tls: false,
    },
];

/// A client of Prosody signs in, discovers Turnpike through XEP-0215 and relays through
/// it with exactly the credentials Prosody minted (uclient: 2 sessions × 50 packets to an
/// echo peer, 0 lost, and the relay counted them both ways); the credentials Prosody
/// mints with an expiry in the past, with a secret Turnpike does not hold, or with a TTL
/// beyond Turnpike's `max_credential_lifetime_secs` are refused with 401 and allocate
/// nothing.
#[test]
fn prosody_hands_out_credentials_turnpike_accepts() {
    let turnpike = turnpike();
    let prosody = Prosody::start(&HOSTS, &turnpike, &["alice"]);
    let (_peer, peer) = echo_peer();

    for host in ["good.localhost", "named.localhost"] {
        let services = prosody.external_services("alice", host);
        let tcp_and_tls = host == "named.localhost";
        // mod_turn_external announces STUN and TURN over UDP, and over TCP and TLS only
        // when turn_external_tcp / turn_external_tls_port are set.
        if tcp_and_tls {
            assert_eq!(
                services.types(),
                ["stun/tcp", "stun/udp", "turn/tcp", "turn/udp", "turns/tcp"],
                "{host}"
            );
        } else {
            assert_eq!(services.types(), ["stun/udp", "turn/udp"], "{host}");
        }
        let entry = services.turn("udp");
        assert_eq!(entry.host, "127.0.0.1", "{host}: {entry:?}");
        assert_eq!(entry.port, turnpike.port, "{host}: {entry:?}");
        // Prosody's TTL is its default, and Turnpike accepts it: expiry = now + 86400
        // (a second of slack each way for the clocks read in two processes).
        let lifetime = entry.expires - entry.asked_at;
        assert!(
            (DEFAULT_TTL - 2..=DEFAULT_TTL + 2).contains(&lifetime),
            "{host}: expires {lifetime} s after the request: {entry:?}"
        );
        // The TURN REST scheme (username "expiry[:user]", password
        // base64(HMAC-SHA1(secret, username))), the one Turnpike verifies.
        let expected_username = match host {
            "named.localhost" => format!("{}:xmpp", entry.expires),
            _ => entry.expires.to_string(),
        };
        assert_eq!(entry.username, expected_username, "{host}");
        assert_eq!(
            entry.password,
            rest_password(SECRET.as_bytes(), &entry.username),
            "{host}"
        );

        let mut runs = vec![(Transport::Udp, entry.clone())];
        if tcp_and_tls {
            let tcp = services.turn("tcp");
            assert_eq!(tcp.port, turnpike.port, "{host}: {tcp:?}");
            runs.push((Transport::Tcp, tcp));
            // Prosody 0.12 signs only `turn` entries: its `turns` entry names the TLS
            // port but carries no username or password, so a client uses the `turn`
            // entry's credentials there (same secret, same relay).
            let turns = services.entry("turns", "tcp");
            assert_eq!(turns["port"], turnpike.tls_port, "{host}: {turns}");
            assert!(
                turns.get("username").is_none() && turns.get("password").is_none(),
                "{host}: {turns}"
            );
            runs.push((
                Transport::Tls,
                TurnEntry {
                    host: turns["host"].as_str().unwrap().to_string(),
                    port: turnpike.tls_port,
                    ..entry.clone()
                },
            ));
        }
        for (transport, entry) in runs {
            let before = turnpike.settled_metrics();
            let out = uclient(&entry, transport, peer, 2, 50);
            let text = out.combined();
            assert!(
                out.success(),
                "{host} {transport:?}: uclient failed:\n{text}\nturnpike:\n{}",
                turnpike.log()
            );
            assert_eq!(
                uclient_totals(&text),
                Some((100, 100, 0)),
                "{host} {transport:?}: sent, received, lost:\n{text}"
            );
            if transport == Transport::Tls {
                assert!(
                    text.contains("tls_connect: client session connected"),
                    "{host}: no TLS session in:\n{text}"
                );
            }
            let (sent_before, back_before) = (
                before.relayed_packets("to_peer"),
                before.relayed_packets("to_client"),
            );
            let streams_before = before.sum("turnpike_stream_connections_total", &[]);
            let m = turnpike.wait_for_metrics("the relayed packets", |m| {
                m.relayed_packets("to_peer") >= sent_before + 100.0
                    && m.relayed_packets("to_client") >= back_before + 100.0
            });
            // TCP and TLS runs came in over streams, the UDP ones did not.
            let streams = m.sum("turnpike_stream_connections_total", &[]) - streams_before;
            match transport {
                Transport::Udp => assert_eq!(streams, 0.0, "{host}: {}", m.text),
                Transport::Tcp | Transport::Tls => {
                    assert!(streams >= 2.0, "{host} {transport:?}: {}", m.text)
                }
            }
        }
    }

    for host in ["expired.localhost", "foreign.localhost", "long.localhost"] {
        let entry = prosody.external_services("alice", host).turn("udp");
        let lifetime = entry.expires - entry.asked_at;
        match host {
            "expired.localhost" => assert!(
                (-3602..=-3598).contains(&lifetime),
                "an hour in the past: {entry:?}"
            ),
            "long.localhost" => assert!(
                (2 * DEFAULT_TTL - 2..=2 * DEFAULT_TTL + 2).contains(&lifetime),
                "two days ahead: {entry:?}"
            ),
            _ => assert!(
                (DEFAULT_TTL - 2..=DEFAULT_TTL + 2).contains(&lifetime),
                "{entry:?}"
            ),
        }
        let before = turnpike.settled_metrics();
        let out = uclient(&entry, Transport::Udp, peer, 1, 10);
        let text = out.combined();
        assert!(!out.success(), "{host}: uclient relayed:\n{text}");
        // uclient does not print the error code; it says it gave up, and Turnpike's
        // counters say what it answered.
        assert!(
            text.contains("Cannot complete Allocation"),
            "{host}: uclient did not give up on the Allocate:\n{text}"
        );
        let after = turnpike.settled_metrics();
        let allocates = |m: &Metrics| m.sum("turnpike_requests_total", &[("method", "allocate")]);
        let refused = after.requests("allocate", "401") - before.requests("allocate", "401");
        // uclient's first, unauthenticated Allocate draws a 401 challenge, then each
        // attempt with the credentials a 401 refusal: every Allocate got 401, none
        // anything else.
        assert!(
            refused >= 2.0,
            "{host}: challenge and refusal:\n{}",
            after.text
        );
        assert_eq!(
            allocates(&after) - allocates(&before),
            refused,
            "{host}: Allocate answers other than 401:\n{}",
            after.text
        );
        assert_eq!(
            after.relayed_packets("to_peer"),
            before.relayed_packets("to_peer"),
            "{host}"
        );
    }
}

/// Packets each side of the call sends (RTP every 5 ms: one second of audio at 200 pps).
const CALL_PACKETS: u64 = 200;
/// Bytes per packet: an Opus frame in SRTP (12-byte RTP header, payload, 10-byte tag).
const CALL_PACKET_SIZE: u64 = 172;

/// A call negotiated over XMPP through Prosody, with its media through Turnpike on the
/// credentials Prosody handed out (`tests/xmpp/call.py`, two slixmpp clients).
///
/// The path chosen, and why it is the smallest honest one: what is under test is that
/// Turnpike relays a call an XMPP server set up, with that server's credentials — not a
/// WebRTC stack. So each client does what a Jingle client does with the relay and
/// nothing it does not need: it asks Prosody for external services (XEP-0215), allocates
/// on Turnpike with exactly the `turn` entry's username and password, and offers its
/// relayed address as its one ICE candidate (`type='relay'`). The negotiation is the one
/// Conversations and Dino use, every stanza routed by Prosody: a Jingle Message
/// Initiation `<propose/>` to bob's bare JID and `<proceed/>` from his device (XEP-0353),
/// then `session-initiate` / `session-accept` (XEP-0166) with an RTP description
/// (XEP-0167, Opus, each side's SSRC) and an ICE-UDP transport (XEP-0176), then
/// `session-terminate`. Each side binds a channel to the candidate it was sent and the
/// two exchange SRTP-sized RTP packets relay to relay; each checks the SSRC against the
/// one signalled over Jingle and the bytes against what the other sent. ICE connectivity
/// checks, DTLS-SRTP and codecs are left out: they run end to end between the clients,
/// Turnpike forwards them as opaque datagrams like these, and the Rust call client's own
/// tests (`callclient/tests`) already cover a full DTLS-SRTP call through Turnpike. Bob
/// starts sending when alice's first packet reaches him, which is when he knows her
/// permission for his relayed address is in place (what a connectivity check would tell
/// him).
///
/// Turnpike runs with no `peers.allow`: loopback peers are refused, so the media only
/// flows through the relay-to-relay exception (a peer that is the relayed address of a
/// live allocation on the same relay).
#[test]
fn a_call_negotiated_over_prosody_relays_through_turnpike() {
    let turnpike = TurnpikeProcess::start(TurnpikeConfig {
        secrets: vec![SECRET.into()],
        allow_peers: Vec::new(),
        ..TurnpikeConfig::default()
    });
    let prosody = Prosody::start(&HOSTS[..1], &turnpike, &["alice", "bob"]);
    let domain = HOSTS[0].name;
    let out = run_bounded(
        python("call.py")
            .arg("--server")
            .arg(prosody.c2s.to_string())
            .args(["--domain", domain, "--password", USER_PASSWORD])
            .args(["--packets", &CALL_PACKETS.to_string()])
            .args(["--size", &CALL_PACKET_SIZE.to_string()]),
        Duration::from_secs(90),
    );
    assert!(
        out.success(),
        "call.py: {}\nturnpike:\n{}\nProsody's log:\n{}",
        out.combined(),
        turnpike.log(),
        prosody.log()
    );
    let seen: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("call.py printed {:?}: {e}", out.stdout));

    // The negotiation went through Prosody between the two signed-in devices.
    let (alice_jid, bob_jid) = (
        format!("alice@{domain}/laptop"),
        format!("bob@{domain}/phone"),
    );
    assert_eq!(seen["alice"]["jid"], alice_jid.as_str(), "{seen}");
    assert_eq!(seen["bob"]["jid"], bob_jid.as_str(), "{seen}");
    assert_eq!(seen["bob"]["propose_from"], alice_jid.as_str(), "{seen}");
    assert_eq!(seen["alice"]["proceed_from"], bob_jid.as_str(), "{seen}");
    assert_eq!(seen["bob"]["initiate_from"], alice_jid.as_str(), "{seen}");
    assert_eq!(seen["bob"]["terminated"], true, "{seen}");

    let (min, max) = turnpike.relay_ports;
    let relay_server = format!("127.0.0.1:{}", turnpike.port);
    for (side, other) in [("alice", "bob"), ("bob", "alice")] {
        let me = &seen[side];
        // Each allocated on the relay Prosody announced, with Prosody's credentials.
        assert_eq!(me["turn_server"], relay_server.as_str(), "{side}: {seen}");
        let username = me["turn_username"].as_str().unwrap();
        let expiry: u64 = username.parse().unwrap();
        assert!(expiry > 0, "{side}: REST username {username}");
        let relayed: SocketAddr = me["relayed"].as_str().unwrap().parse().unwrap();
        assert_eq!(relayed.ip(), LOOPBACK, "{side}: {seen}");
        assert!(
            (min..=max).contains(&relayed.port()),
            "{side}'s relayed address {relayed} is not one of Turnpike's ({min}-{max})"
        );
        // The candidate each side was sent over Jingle is the other's relayed address,
        // and so is the SSRC it saw on the media.
        assert_eq!(me["candidate"], seen[other]["relayed"], "{side}: {seen}");
        let media = &me["media"];
        assert_eq!(media["sent"], CALL_PACKETS, "{side}: {seen}");
        assert_eq!(
            media["received"], CALL_PACKETS,
            "{side} lost packets: {seen}"
        );
        assert_eq!(
            media["intact"], CALL_PACKETS,
            "{side}: altered packets: {seen}"
        );
        assert_eq!(
            media["foreign"], 0,
            "{side}: packets not from the peer: {seen}"
        );
    }

    // Turnpike did it: two UDP allocations, a channel each, every packet of both
    // directions forwarded client → peer (into the other's relayed address) and peer →
    // client (out to the other client); both allocations freed at the end.
    let both_ways = (2 * CALL_PACKETS) as f64;
    turnpike.wait_for_metrics("the call's packets both ways", |m| {
        m.relayed_packets("to_peer") >= both_ways && m.relayed_packets("to_client") >= both_ways
    });
    let m = turnpike.settled_metrics();
    assert_eq!(
        m.sum(
            "turnpike_allocations_created_total",
            &[("transport", "udp")]
        ),
        2.0,
        "{}",
        m.text
    );
    assert_eq!(m.requests("channel_bind", "success"), 2.0, "{}", m.text);
    assert_eq!(m.relayed_packets("to_peer"), both_ways, "{}", m.text);
    assert_eq!(m.relayed_packets("to_client"), both_ways, "{}", m.text);
    assert_eq!(m.sum("turnpike_allocations", &[]), 0.0, "{}", m.text);
}
