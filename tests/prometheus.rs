//! The shipped Grafana dashboard (`packaging/grafana/turnpike.json`) and alert rules
//! (`packaging/prometheus/turnpike-alerts.yml`) against a real Prometheus scraping a real
//! `turnpike serve` under TURN traffic and a signaling call.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool`) and coturn's
//! `turnutils_uclient`/`turnutils_peer`; fails, naming the package, without them.
//! `scripts/test` installs them.
//!
//! What it asserts:
//! - `promtool check metrics` on a real scrape of `/metrics` reports nothing (every
//!   metric has HELP and TYPE, names and units follow the conventions);
//! - `promtool check rules` accepts the alert rules and `promtool test rules` passes
//!   their unit tests;
//! - Prometheus loads the rule file (as many rules as the file has `- alert:` entries,
//!   each evaluated with health "ok");
//! - after at least two scrapes, every expression of every panel of the dashboard
//!   (template variables substituted) and the query of every template variable parse
//!   and return at least one series;
//! - every alert rule's expression parses, and its query without the threshold (each
//!   rule is written `QUERY OP NUMBER`) returns at least one series: the rule watches
//!   series that really exist.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::{
    free_port, require_tool, run_bounded, Background, TurnpikeConfig, TurnpikeProcess,
    SIGNALING_TOKEN_KEY,
};
use turnpike_signaling::token::{Claims, TokenKey};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PROMETHEUS_HINT: &str = "apt-get install -y prometheus";
const COTURN_HINT: &str = "apt-get install -y coturn";
/// The scrape job's name: the alert rules select `job="turnpike"`.
const JOB: &str = "turnpike";
/// What `$__rate_interval` stands for: Grafana makes it at least four scrape intervals;
/// with 1 s scrapes a minute covers every sample this test's Prometheus has.
const RATE_INTERVAL: &str = "1m";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A Prometheus server on a free loopback port with its own storage in a temp dir,
/// killed and reaped on drop. Its output goes to a file, shown when something fails.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second as job [`JOB`], with the alert
    /// rules loaded, and waits (at most 20 s) until its HTTP API answers.
    fn start(binary: &Path, target: SocketAddr, rules: &Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr = SocketAddr::new(LOOPBACK, free_port(LOOPBACK, true));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut prometheus = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", prometheus.log());
            }
            if http_get(addr, "/-/ready").is_ok_and(|(status, _)| status == 200) {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 20 s:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` on the HTTP API, as JSON; panics with Prometheus's log on failure.
    fn api(&self, path: &str) -> Value {
        let (status, body) = http_get(self.addr, path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nprometheus:\n{}", self.log()));
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: HTTP {status}, not JSON ({e}): {body}"))
    }

    /// An instant query: Prometheus's whole answer (`status`, `data` or `error`).
    fn query(&self, expr: &str) -> Value {
        self.api(&format!("/api/v1/query?query={}", url_encode(expr)))
    }

    /// Runs `expr`, asserting it parses and evaluates; returns its result vector.
    fn query_ok(&self, what: &str, expr: &str) -> Vec<Value> {
        let answer = self.query(expr);
        assert_eq!(
            answer["status"], "success",
            "{what}: `{expr}` failed: {answer}"
        );
        match &answer["data"]["result"] {
            Value::Array(series) => series.clone(),
            other => panic!("{what}: `{expr}` gave no vector: {other}"),
        }
    }

    /// Runs `expr` and asserts it returns at least one series.
    fn assert_series(&self, what: &str, expr: &str) {
        let series = self.query_ok(what, expr);
        assert!(
            !series.is_empty(),
            "{what}: `{expr}` returned no series (a metric it uses does not exist?)"
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Already exited is fine; the point is that nothing outlives the test.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET (the server closes when done), bounded to 5 s.
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `program args` with `input` on stdin, bounded to 20 s.
fn run_with_stdin(program: &Path, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} {args:?} did not finish in 20 s", program.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    (status.success(), output)
}

/// `turnutils_peer` echoing on a free loopback port; waits (at most 5 s) until it echoes.
fn echo_peer() -> (Background, SocketAddr) {
    let peer = require_tool("turnutils_peer", COTURN_HINT);
    let addr = SocketAddr::new(LOOPBACK, free_port(LOOPBACK, false));
    let mut process = Background::spawn(Command::new(peer).args([
        "-L",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
    ]));
    let probe = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 16];
    while Instant::now() < deadline {
        process.assert_running();
        let _ = probe.send_to(b"ping", addr);
        if matches!(probe.recv_from(&mut buf), Ok((4, from)) if from == addr) {
            return (process, addr);
        }
    }
    panic!("turnutils_peer on {addr} never echoed");
}

/// One uclient run through the relay: `sessions` allocations over UDP with channels (or
/// TCP with `-t`), 30 messages each, echoed by `peer`. Returns its output.
fn uclient(server: &TurnpikeProcess, peer: SocketAddr, extra: &[&str], password: &str) -> String {
    let uclient = require_tool("turnutils_uclient", COTURN_HINT);
    let mut cmd = Command::new(uclient);
    cmd.args(["-c", "-l", "170", "-z", "5", "-n", "30", "-m", "2"])
        .args(["-e", "127.0.0.1", "-r", &peer.port().to_string()])
        .args(["-p", &server.port.to_string()])
        .args(["-u", "alice", "-w", password])
        .args(extra)
        .arg("127.0.0.1");
    run_bounded(&mut cmd, Duration::from_secs(25)).combined()
}

/// A signaling client over a blocking WebSocket.
struct SignalingClient {
    ws: tungstenite::WebSocket<TcpStream>,
}

impl SignalingClient {
    /// Connects and signs in as `user` on device "d1" with a token signed by the
    /// server's key.
    fn connect(addr: SocketAddr, user: &str) -> SignalingClient {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (ws, _) = tungstenite::client(format!("ws://{addr}/v1/signal"), stream).unwrap();
        let mut client = SignalingClient { ws };
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let token = TokenKey::new(SIGNALING_TOKEN_KEY.as_bytes()).sign(&Claims {
            sub: user.into(),
            dev: "d1".into(),
            exp,
        });
        client.send(json!({"type": "hello", "token": token}));
        client.expect("hello_ok");
        client
    }

    fn send(&mut self, mut msg: Value) {
        msg["v"] = json!(1);
        self.ws
            .send(tungstenite::Message::Text(msg.to_string().into()))
            .unwrap();
    }

    /// The next message of type `kind`, skipping presence notices and pings; a read
    /// times out after 5 s.
    fn expect(&mut self, kind: &str) -> Value {
        for _ in 0..50 {
            match self.ws.read().unwrap() {
                tungstenite::Message::Text(text) => {
                    let msg: Value = serde_json::from_str(&text).unwrap();
                    if msg["type"] == kind {
                        return msg;
                    }
                    assert_eq!(msg["type"], "presence", "wanted {kind}, got {msg}");
                }
                tungstenite::Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => {}
            }
        }
        panic!("no {kind} message");
    }
}

/// Every panel of the dashboard, those inside rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        out.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// A dashboard expression with Grafana's variables replaced by what they stand for here.
fn substitute(expr: &str, instance: &str) -> String {
    let out = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", "5s")
        .replace("$__range", RATE_INTERVAL)
        .replace("$job", JOB)
        .replace("$instance", instance);
    assert!(!out.contains('$'), "unknown variable left in `{out}`");
    out
}

/// Splits `QUERY OP NUMBER` into QUERY, or None when the expression does not end in a
/// comparison with a number.
fn without_threshold(expr: &str) -> Option<&str> {
    // Prometheus prints the comparison spaced and the number in Go's notation
    // (`< 1.2096e+06`).
    let (rest, number) = expr.trim_end().rsplit_once(char::is_whitespace)?;
    number.parse::<f64>().ok()?;
    let rest = rest.trim_end();
    ["==", "!=", ">=", "<=", ">", "<"]
        .iter()
        .find_map(|op| rest.strip_suffix(op))
        .map(str::trim_end)
}

#[test]
fn dashboard_and_alerts_work_against_a_real_prometheus() {
    let prometheus_bin = require_tool("prometheus", PROMETHEUS_HINT);
    let promtool = require_tool("promtool", PROMETHEUS_HINT);
    let rules = repo_file("packaging/prometheus/turnpike-alerts.yml");
    let rules_test = repo_file("packaging/prometheus/turnpike-alerts.test.yml");

    // The rule files on their own.
    let check = run_bounded(
        Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .arg(&rules),
        Duration::from_secs(20),
    );
    assert!(
        check.success(),
        "promtool check rules:\n{}",
        check.combined()
    );
    let test = run_bounded(
        Command::new(&promtool)
            .arg("test")
            .arg("rules")
            .arg(&rules_test),
        Duration::from_secs(20),
    );
    assert!(test.success(), "promtool test rules:\n{}", test.combined());

    let server = TurnpikeProcess::start(TurnpikeConfig {
        signaling: true,
        // The call-quality metrics too, so the dashboard's panels for them are checked.
        extra_toml: "[telemetry]\nrtp_quality = true\n".into(),
        ..TurnpikeConfig::default()
    });
    let instance = server.metrics_addr.to_string();
    let prometheus = Prometheus::start(&prometheus_bin, server.metrics_addr, &rules);

    // Traffic while Prometheus scrapes: channels over UDP and TCP, and a wrong password
    // (a failed sign-in).
    let (_peer, peer) = echo_peer();
    let out = uclient(&server, peer, &[], "secret-pw");
    assert!(out.contains("tot_recv_msgs="), "uclient over UDP:\n{out}");
    let out = uclient(&server, peer, &["-t"], "secret-pw");
    assert!(out.contains("tot_recv_msgs="), "uclient over TCP:\n{out}");
    let _ = uclient(&server, peer, &["-n", "1", "-m", "1"], "wrong-password");

    // A signaling call, invite to accept.
    let signaling = server.signaling_addr.unwrap();
    let mut alice = SignalingClient::connect(signaling, "alice");
    let mut bob = SignalingClient::connect(signaling, "bob");
    alice.send(json!({"type": "invite", "call_id": "c1", "to": "bob", "sdp": "OFFER"}));
    bob.expect("invite");
    bob.send(json!({"type": "accept", "call_id": "c1", "sdp": "ANSWER"}));
    assert_eq!(alice.expect("accept")["sdp"], "ANSWER");

    // What the relay exports, and that a real scrape passes promtool's lint.
    let metrics = server.wait_for_metrics("the traffic, the failed sign-in and the call", |m| {
        m.relayed_packets("to_peer") > 0.0
            && m.sum("turnpike_relayed_packets_total", &[("transport", "tcp")]) > 0.0
            && m.sum("turnpike_auth_failures_total", &[]) >= 1.0
            && m.sum("turnpike_signaling_calls_total", &[("outcome", "accepted")]) == 1.0
            && m.sum("turnpike_signaling_call_setup_seconds_count", &[]) == 1.0
            && m.sum("turnpike_signaling_sessions", &[]) == 2.0
    });
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "turnpike_draining",
        "turnpike_config_last_reload_timestamp_seconds",
        "turnpike_tls_certificate_expiry_timestamp_seconds",
    ] {
        assert!(metrics.has(name, &[]), "{name} missing:\n{}", metrics.text);
    }
    assert!(
        metrics.has(
            "turnpike_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        "{}",
        metrics.text
    );
    let (clean, lint) = run_with_stdin(&promtool, &["check", "metrics"], &metrics.text);
    assert!(
        clean && lint.trim().is_empty(),
        "promtool check metrics on a real scrape:\n{lint}"
    );

    // At least two scrapes since the call, so every counter has a rate: the accepted
    // calls counter is 0 before the call and 1 after, so the sum of its samples is the
    // number of scrapes that saw the call.
    let deadline = Instant::now() + Duration::from_secs(30);
    let scraped = format!(
        "sum_over_time(turnpike_signaling_calls_total{{job=\"{JOB}\", outcome=\"accepted\"}}[1m])"
    );
    loop {
        let series = prometheus.query_ok("scrape count", &scraped);
        let count = series
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if count >= 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 2 scrapes showed the call after 30 s; targets: {}\nprometheus:\n{}",
            prometheus.api("/api/v1/targets"),
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The dashboard: its shape, then every expression.
    let text = std::fs::read_to_string(repo_file("packaging/grafana/turnpike.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    for name in ["job", "instance"] {
        // Grafana's label_values(SELECTOR, LABEL): the selector must find series.
        let query = variable(name)["definition"].as_str().unwrap();
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _)| selector)
            .unwrap_or_else(|| panic!("${name}: not label_values(...): {query}"));
        prometheus.assert_series(&format!("${name}"), &substitute(selector, &instance));
    }
    let mut expressions = 0;
    for panel in panels(&dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title:?} must use the $datasource variable"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = substitute(target["expr"].as_str().unwrap(), &instance);
            prometheus.assert_series(&format!("panel {title:?}"), &expr);
            expressions += 1;
        }
    }
    assert!(expressions >= 30, "only {expressions} panel expressions");

    // The alert rules as Prometheus loaded them.
    let file = std::fs::read_to_string(&rules).unwrap();
    let in_file = file
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let deadline = Instant::now() + Duration::from_secs(10);
    let loaded = loop {
        let answer = prometheus.api("/api/v1/rules?type=alert");
        let rules: Vec<Value> = answer["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        // A rule not yet evaluated has health "unknown"; wait for one evaluation.
        if rules.len() == in_file && rules.iter().all(|r| r["health"] != "unknown") {
            break rules;
        }
        assert!(
            Instant::now() < deadline,
            "{in_file} rules in the file; Prometheus has: {answer}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    for rule in &loaded {
        let name = rule["name"].as_str().unwrap();
        let expr = rule["query"].as_str().unwrap();
        assert_eq!(rule["health"], "ok", "alert {name}: {rule}");
        prometheus.query_ok(&format!("alert {name}"), expr);
        let query = without_threshold(expr)
            .unwrap_or_else(|| panic!("alert {name}: `{expr}` is not QUERY OP NUMBER"));
        prometheus.assert_series(&format!("alert {name} without its threshold"), query);
    }
    // On a healthy relay under light traffic nothing fires.
    let firing = prometheus.api("/api/v1/alerts");
    let firing: Vec<&Value> = firing["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .collect();
    assert!(firing.is_empty(), "alerts firing: {firing:?}");
}

#[test]
fn without_threshold_splits_query_and_comparison() {
    assert_eq!(without_threshold("up == 0"), Some("up"));
    assert_eq!(without_threshold("a / b > 0.01"), Some("a / b"));
    assert_eq!(
        without_threshold("x - time() < 1.2096e+06"),
        Some("x - time()")
    );
    assert_eq!(
        without_threshold("x - time() < 1209600\n"),
        Some("x - time()")
    );
    assert_eq!(without_threshold("sum(rate(x[5m]))"), None);
    assert_eq!(without_threshold("a > b"), None);
}
