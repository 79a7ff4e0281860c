//! Shared harness for integration tests that run the real `turnpike` binary: free-port
//! picking, a [`TurnpikeProcess`] that writes its own config and TLS certificate, waits for
//! readiness and is killed on drop, a `/metrics` scraper, and bounded runs of external
//! tools (every wait here has a deadline, so a hung child fails a test instead of hanging
//! CI).
//!
//! Use it from a test file with `mod support;`.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

pub mod redis;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long `turnpike serve` may take to log `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Relay port slots handed to server instances, each `RELAY_SLOT_SIZE` ports wide, inside
/// 20000–29999: below Linux's ephemeral range (32768–60999) so relay ports never collide
/// with the client sockets the tests and tools open.
const RELAY_SLOTS: usize = 14;
const RELAY_SLOT_SIZE: u16 = 700;
const RELAY_BASE: u16 = 20_000;

/// Ports handed out by [`free_port`] in this process. A port is refused while it, or a
/// neighbour, is listed: coturn's uclient also talks to `peer port + 1` (its RTCP peer), and
/// Turnpike refuses peers that are its own listeners, so no two picks may be adjacent.
static PICKED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
/// Next relay port slot; see [`relay_range`].
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// A port free on `ip` for UDP (and for TCP too when `tcp`), never handed out before in
/// this process. Binding port 0 lets the kernel choose; the sockets are dropped before
/// returning, so a racing process could take the port in between — [`TurnpikeProcess`]
/// retries with new ports if its bind fails.
pub fn free_port(ip: IpAddr, tcp: bool) -> u16 {
    // A poisoned lock only means another test panicked while holding it; the set is intact.
    let mut picked = PICKED.lock().unwrap_or_else(|e| e.into_inner());
    let picked = picked.get_or_insert_with(HashSet::new);
    for _ in 0..200 {
        let Ok(udp) = UdpSocket::bind(SocketAddr::new(ip, 0)) else {
            continue;
        };
        let Ok(port) = udp.local_addr().map(|a| a.port()) else {
            continue;
        };
        let adjacent = [port.wrapping_sub(1), port, port.wrapping_add(1)];
        if adjacent.iter().any(|p| picked.contains(p)) {
            continue;
        }
        if tcp && TcpListener::bind(SocketAddr::new(ip, port)).is_err() {
            continue;
        }
        picked.insert(port);
        return port;
    }
    panic!("no free port on {ip} after 200 tries");
}

/// A relay port range of its own for each server instance. The slot sequence starts at a
/// point derived from the process id so two test binaries running side by side are
/// unlikely to share slots; within a process, slots are reused only after `RELAY_SLOTS`
/// instances, far more than run at once.
fn relay_range() -> (u16, u16) {
    let n = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) + std::process::id() as usize;
    // `n % RELAY_SLOTS` < 14, so the product stays below 9800 and fits in u16.
    let start = RELAY_BASE + (n % RELAY_SLOTS) as u16 * RELAY_SLOT_SIZE;
    (start, start + RELAY_SLOT_SIZE - 1)
}

/// What a test may vary in the server's configuration; everything else is fixed by
/// [`TurnpikeProcess::start`].
#[derive(Debug, Clone)]
pub struct TurnpikeConfig {
    /// `[auth] users`, each "name:password".
    pub users: Vec<String>,
    /// `[auth] secrets` (TURN REST shared secrets).
    pub secrets: Vec<String>,
    /// `[peers] allow`: loopback is refused as a peer unless listed here.
    pub allow_peers: Vec<String>,
    /// `[limits] user_quota`, 0 = unlimited.
    pub user_quota: u32,
    /// `[server] workers`.
    pub workers: usize,
    /// `[relay] rfc5766_channel_numbers`: accept uclient's RFC 5766 channel numbers.
    pub rfc5766_channels: bool,
    /// `[server] drain_timeout_secs`.
    pub drain_timeout_secs: u64,
    /// `[server] alternate_servers`.
    pub alternate_servers: Vec<String>,
    /// `[log] format`: "text" or "json".
    pub log_format: String,
    /// `[log] level`.
    pub log_level: String,
    /// Environment variables for the child (e.g. `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
    /// Extra `turnpike serve` arguments (e.g. `--pid-file`).
    pub args: Vec<String>,
    /// Run the signaling service on a port of its own, with tokens signed by
    /// [`SIGNALING_TOKEN_KEY`]; off, `[signaling] listen` is empty.
    pub signaling: bool,
    /// `[signaling] relays`: one relay, region "test", with these URLs; empty: none
    /// (signaling advertises this relay itself).
    pub signaling_relay_urls: Vec<String>,
    /// More `[limits]` lines, as TOML (`key = value`, one a line).
    pub limits: String,
    /// More sections appended to the file as they are (e.g. `[fleet]`).
    pub extra_toml: String,
    /// `[server] realm`; empty: the default.
    pub realm: String,
    /// `[relay] bind_ipv4` and `bind_ipv6`.
    pub relay_bind: (String, String),
    /// Also listen for UDP on `[::1]`, on the same port as on 127.0.0.1.
    pub udp_ipv6: bool,
    /// Relay ports: the first this many of the instance's slot; `None`: the whole slot.
    pub relay_port_count: Option<u16>,
    /// More `[relay]` lines, as TOML.
    pub relay_extra: String,
    /// More `[server]` lines, as TOML.
    pub server_extra: String,
}

/// `[signaling] token_key` of a server started with [`TurnpikeConfig::signaling`].
pub const SIGNALING_TOKEN_KEY: &str = "support-token-key";

impl Default for TurnpikeConfig {
    fn default() -> Self {
        TurnpikeConfig {
            users: vec!["alice:secret-pw".into()],
            secrets: vec!["rest-secret".into()],
            allow_peers: vec!["127.0.0.1/32".into(), "::1/128".into()],
            // coturn's uclient never frees its "probe" allocation and a client that exits
            // early frees none, so a per-user quota would fill up across attempts.
            user_quota: 0,
            workers: 2,
            rfc5766_channels: true,
            drain_timeout_secs: 600,
            alternate_servers: Vec::new(),
            log_format: "text".into(),
            log_level: "info".into(),
            env: Vec::new(),
            args: Vec::new(),
            signaling: false,
            signaling_relay_urls: Vec::new(),
            limits: String::new(),
            extra_toml: String::new(),
            realm: String::new(),
            relay_bind: ("127.0.0.1".into(), "::1".into()),
            udp_ipv6: false,
            relay_port_count: None,
            relay_extra: String::new(),
            server_extra: String::new(),
        }
    }
}

/// The ports and files one server instance was given, to write its configuration
/// again (a reload test changes the file under a running server).
#[derive(Debug, Clone)]
struct Layout {
    port: u16,
    tls_port: u16,
    quic_port: u16,
    metrics_port: u16,
    signaling_addr: Option<SocketAddr>,
    relay_ports: (u16, u16),
    cert: PathBuf,
    key: PathBuf,
}

impl Layout {
    fn render(&self, config: &TurnpikeConfig) -> String {
        let Layout {
            port,
            tls_port,
            quic_port,
            metrics_port,
            signaling_addr,
            relay_ports,
            cert,
            key,
        } = self;
        let signaling = match signaling_addr {
            Some(addr) => {
                let relays = if config.signaling_relay_urls.is_empty() {
                    String::new()
                } else {
                    format!(
                        "relays = [{{ region = \"test\", urls = {} }}]\n",
                        toml_list(&config.signaling_relay_urls)
                    )
                };
                format!(
                    "listen = \"{addr}\"\ntoken_key = \"{SIGNALING_TOKEN_KEY}\"\n\
                     dev_login = false\n{relays}"
                )
            }
            None => "listen = \"\"\n".to_string(),
        };
        format!(
            r#"[server]
workers = {workers}
drain_timeout_secs = {drain}
alternate_servers = {alternates}
{realm}{server_extra}
[listen]
udp = {udp}
tcp = ["127.0.0.1:{port}"]
tls = ["127.0.0.1:{tls_port}"]
quic = ["127.0.0.1:{quic_port}"]
[tls]
certificate = {cert:?}
private_key = {key:?}
[relay]
bind_ipv4 = {bind_v4:?}
bind_ipv6 = {bind_v6:?}
port_min = {min}
port_max = {max}
rfc5766_channel_numbers = {rfc5766}
{relay_extra}
[auth]
users = {users}
secrets = {secrets}
[limits]
user_quota = {quota}
{limits}
[peers]
allow = {allow}
[metrics]
listen = "127.0.0.1:{metrics_port}"
[signaling]
{signaling}[log]
level = {level:?}
format = {format:?}
{extra}"#,
            workers = config.workers,
            drain = config.drain_timeout_secs,
            alternates = toml_list(&config.alternate_servers),
            realm = if config.realm.is_empty() {
                String::new()
            } else {
                format!("realm = {:?}\n", config.realm)
            },
            udp = if config.udp_ipv6 {
                format!("[\"127.0.0.1:{port}\", \"[::1]:{port}\"]")
            } else {
                format!("[\"127.0.0.1:{port}\"]")
            },
            bind_v4 = config.relay_bind.0,
            bind_v6 = config.relay_bind.1,
            server_extra = config.server_extra,
            relay_extra = config.relay_extra,
            min = relay_ports.0,
            max = relay_ports.1,
            rfc5766 = config.rfc5766_channels,
            users = toml_list(&config.users),
            secrets = toml_list(&config.secrets),
            quota = config.user_quota,
            limits = config.limits,
            allow = toml_list(&config.allow_peers),
            format = config.log_format,
            level = config.log_level,
            extra = config.extra_toml,
        )
    }
}

/// A `turnpike serve` child process on loopback with UDP+TCP on one port, TLS on another,
/// QUIC on a third and the metrics endpoint on a fourth. Killed (and reaped) on drop.
pub struct TurnpikeProcess {
    child: Child,
    /// Holds the config file and the certificate; removed on drop.
    dir: tempfile::TempDir,
    /// UDP and TCP listener port.
    pub port: u16,
    /// TLS listener port.
    pub tls_port: u16,
    /// QUIC listener port (UDP; TURN in CONNECT-UDP tunnels, same certificate as TLS).
    pub quic_port: u16,
    pub metrics_addr: SocketAddr,
    /// The signaling service (WebSocket on `/v1/signal`), when configured.
    pub signaling_addr: Option<SocketAddr>,
    /// Relay port range (inclusive).
    pub relay_ports: (u16, u16),
    /// Everything the child wrote to stderr so far, one entry per line.
    log: Arc<Mutex<Vec<String>>>,
    /// Whether any stderr line held an escape character (ANSI colour codes).
    ansi: Arc<AtomicBool>,
    layout: Layout,
    drain: Option<JoinHandle<()>>,
}

impl TurnpikeProcess {
    /// Starts a server with `config` and waits until it logs `ready`. Panics, showing the
    /// child's output, if it exits or does not get ready within 10 s.
    pub fn start(config: TurnpikeConfig) -> TurnpikeProcess {
        let mut last_log = String::new();
        // Retried only when a picked port was taken between the pick and the bind.
        for _ in 0..3 {
            match Self::try_start(&config) {
                Ok(server) => return server,
                Err(log) if log.contains("in use") => last_log = log,
                Err(log) => panic!("turnpike did not start:\n{log}"),
            }
        }
        panic!("turnpike did not start (ports kept being taken):\n{last_log}");
    }

    fn try_start(config: &TurnpikeConfig) -> Result<TurnpikeProcess, String> {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = free_port(ip, true);
        let tls_port = free_port(ip, true);
        let quic_port = free_port(ip, false);
        let metrics_port = free_port(ip, true);
        let signaling_addr = config
            .signaling
            .then(|| SocketAddr::new(ip, free_port(ip, true)));
        let mut relay_ports = relay_range();
        if let Some(n) = config.relay_port_count {
            assert!(
                (1..=RELAY_SLOT_SIZE).contains(&n),
                "relay_port_count within a slot"
            );
            relay_ports.1 = relay_ports.0 + n - 1;
        }
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let (cert, key) = write_certificate(dir.path());
        let layout = Layout {
            port,
            tls_port,
            quic_port,
            metrics_port,
            signaling_addr,
            relay_ports,
            cert,
            key,
        };
        Self::spawn(config, layout, dir)
    }

    /// Starts a new server on this one's ports and files after this one ended (killed,
    /// crashed): a service manager's restart. Panics as [`TurnpikeProcess::start`] does.
    pub fn restart(mut self, config: &TurnpikeConfig) -> TurnpikeProcess {
        self.kill();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        let layout = self.layout.clone();
        drop(self);
        Self::spawn(config, layout, dir)
            .unwrap_or_else(|log| panic!("turnpike did not start again:\n{log}"))
    }

    fn spawn(
        config: &TurnpikeConfig,
        layout: Layout,
        dir: tempfile::TempDir,
    ) -> Result<TurnpikeProcess, String> {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let Layout {
            port,
            tls_port,
            quic_port,
            metrics_port,
            signaling_addr,
            relay_ports,
            ..
        } = layout.clone();
        let toml = layout.render(config);
        let config_path = dir.path().join("turnpike.toml");
        std::fs::write(&config_path, toml).map_err(|e| format!("write config: {e}"))?;

        let mut child = Command::new(env!("CARGO_BIN_EXE_turnpike"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(&config.args)
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn turnpike: {e}"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let ansi = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        // `stderr` is Some: it was configured as piped just above.
        let stderr = child.stderr.take().expect("piped stderr");
        let drain = {
            let log = log.clone();
            let ansi = ansi.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains('\u{1b}') {
                        ansi.store(true, Ordering::Relaxed);
                    }
                    let line = strip_ansi(&line);
                    // "ready" is the last word of the readiness line; "already ..." is not.
                    // In JSON it is the whole message.
                    if line.trim_end().ends_with(" ready") || line.contains(r#""message":"ready""#)
                    {
                        let _ = ready_tx.send(());
                    }
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            })
        };
        let mut server = TurnpikeProcess {
            child,
            dir,
            port,
            tls_port,
            quic_port,
            metrics_addr: SocketAddr::new(ip, metrics_port),
            signaling_addr,
            relay_ports,
            log,
            ansi,
            layout,
            drain: Some(drain),
        };
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => Ok(server),
            Err(e) => {
                // Dropping `server` kills the child; take the output first.
                let status = server.child.try_wait().ok().flatten();
                server.kill();
                Err(format!(
                    "no `ready` line ({e:?}); exit status {status:?}; output:\n{}",
                    server.log()
                ))
            }
        }
    }

    /// The relay's resident memory now, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`libc::SIGTERM`, ...) to the child.
    pub fn signal(&self, signal: libc::c_int) {
        // The child is ours and not yet reaped (that happens in `wait_exit` or on drop),
        // so the pid still names it.
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) takes two integers and touches no memory of ours.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits up to `limit` for the child to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The configuration file the child reads (and re-reads on reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("turnpike.toml")
    }

    /// Writes the configuration file again from `config`, same ports and files.
    pub fn rewrite_config(&self, config: &TurnpikeConfig) {
        std::fs::write(self.config_path(), self.layout.render(config)).expect("write config");
    }

    /// Replaces the certificate and key files with a fresh self-signed pair; returns
    /// the new certificate (DER).
    pub fn renew_certificate(&self) -> Vec<u8> {
        write_certificate_der(self.dir.path())
    }

    /// Whether any line the child logged had ANSI escape codes.
    pub fn logged_ansi(&self) -> bool {
        self.ansi.load(Ordering::Relaxed)
    }

    /// Lines the child logged so far, as written (colour codes removed).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits up to 10 s for a log line containing `needle`, then panics with the log.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.log_lines().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within 10 s; output:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One HTTP/1.0 request to the metrics listener: the status code and the body.
    pub fn http(&self, method: &str, path: &str) -> Result<(u16, String), String> {
        http(self.metrics_addr, method, path)
    }

    /// The child's stderr so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// PEM file of the server's self-signed certificate (for "localhost" and 127.0.0.1).
    pub fn certificate_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn udp_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }

    /// Scrapes `/metrics` once.
    pub fn metrics(&self) -> Metrics {
        match scrape(self.metrics_addr) {
            Ok(m) => m,
            Err(e) => panic!("GET /metrics failed: {e}\nserver output:\n{}", self.log()),
        }
    }

    /// Scrapes until `done` holds, for at most 10 s (workers publish their counters once a
    /// second), then panics showing the last scrape and the server output.
    pub fn wait_for_metrics(&self, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.metrics();
            if done(&m) {
                return m;
            }
            if Instant::now() >= deadline {
                panic!(
                    "metrics never showed {what}; last scrape:\n{}\nserver output:\n{}",
                    m.text,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A scrape taken after every worker has published at least once more, for asserting
    /// that something did *not* happen.
    pub fn settled_metrics(&self) -> Metrics {
        // Each worker publishes once a second; wait a bit longer than one period.
        std::thread::sleep(Duration::from_millis(1_500));
        self.metrics()
    }

    fn kill(&mut self) {
        // Already exited is fine; the point is that nothing outlives the test.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }
}

impl Drop for TurnpikeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn toml_list(items: &[String]) -> String {
    // Debug formatting of a str is a valid TOML basic string for the plain ASCII used here.
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Writes a fresh self-signed certificate for "localhost" and 127.0.0.1 into `dir`;
/// returns the certificate and key paths.
fn write_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    write_certificate_der(dir);
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// [`write_certificate`], returning the certificate (DER).
fn write_certificate_der(dir: &Path) -> Vec<u8> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    // Fixed, valid names: generation cannot fail on them.
    let certified = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    // A fresh temp dir is writable; failing here is an environment problem worth a panic.
    // The key first: a reload reading between the two writes finds a pair that does
    // not match and is refused, never a half-written certificate served.
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert.pem");
    certified.cert.der().to_vec()
}

/// Removes ANSI colour sequences (ESC '[' ... letter) that the text log format emits.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One Prometheus text-format scrape.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    samples: Vec<Sample>,
}

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// Sum of the samples of `name` whose labels include all of `labels` (so per-worker
    /// series add up); 0 when there are none, as the relay leaves idle series out.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Whether any sample of `name` has all of `labels`.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    /// `turnpike_requests_total` for one method and result ("success", "401", ...).
    pub fn requests(&self, method: &str, result: &str) -> f64 {
        self.sum(
            "turnpike_requests_total",
            &[("method", method), ("result", result)],
        )
    }

    /// `turnpike_relayed_packets_total` in one direction ("to_peer" or "to_client").
    pub fn relayed_packets(&self, direction: &str) -> f64 {
        self.sum(
            "turnpike_relayed_packets_total",
            &[("direction", direction)],
        )
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
    }
}

/// `a="x",b="y"`: label values here never hold commas or quotes.
fn parse_labels(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// One HTTP/1.0 request without a body (the server closes when done): the status
/// code and the body. Bounded by 3 s timeouts.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    http_with(addr, method, path, &[], "")
}

/// [`http`] with extra header lines (`"Name: value"`) and a body.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {response:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((code, body.to_string()))
}

/// `GET /metrics` over a plain TCP stream (HTTP/1.0, so the server closes when done).
fn scrape(addr: SocketAddr) -> Result<Metrics, String> {
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {response:?}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected response head {head:?}"));
    }
    Ok(Metrics::parse(body))
}

/// What a bounded run of an external program produced.
#[derive(Debug)]
pub struct ToolOutput {
    /// None when the run hit its deadline and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// stdout then stderr, for parsing tools that mix the two and for failure messages.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion or until `limit`, killing it then. Output is read on threads
/// so a chatty child never blocks on a full pipe.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> ToolOutput {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Both are Some: configured as piped just above.
    let out = read_all(child.stdout.take().expect("piped stdout"));
    let err = read_all(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    ToolOutput {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A long-running helper process (an echo peer, say), killed and reaped on drop.
pub struct Background {
    child: Child,
    name: String,
}

impl Background {
    pub fn spawn(cmd: &mut Command) -> Background {
        let name = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Background { child, name }
    }

    /// Panics if the process has already exited (it was expected to keep running).
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early with {status}", self.name);
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Full path of `program` on PATH, or a panic telling how to install it. Tests that depend
/// on third-party tools fail loudly when they are missing rather than skipping silently.
pub fn require_tool(program: &str, install_hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH; install it with `{install_hint}`"))
}

/// Runs the `turnpike` binary with `args` (not `serve`), bounded to 10 s.
pub fn turnpike_cli<I, S>(args: I) -> ToolOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_bounded(
        Command::new(env!("CARGO_BIN_EXE_turnpike")).args(args),
        Duration::from_secs(10),
    )
}

/// A [`redis::Redis`] and a connection to it, for tests on a tokio runtime.
pub async fn redis_server() -> (redis::Redis, ::redis::aio::MultiplexedConnection) {
    let server = tokio::task::spawn_blocking(redis::Redis::start)
        .await
        .expect("redis-server start");
    let client = ::redis::Client::open(server.url.as_str()).expect("a Redis URL");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to the test's redis-server");
    (server, conn)
}
