//! The browser end-to-end test: headless Chromium (Debian `chromium`, driven by
//! playwright-core) opens the demo page that `turnpike serve` serves at `/` as two users,
//! calls from one to the other relay-only through Turnpike, and checks the selected
//! candidate pair, decoded video, received audio and hangup on both pages, and what the
//! relay measured of the call (`telemetry.rtp_quality`: streams classified, no loss).
//! The tests themselves are `tests/browser/call.test.mjs` and `fleet.test.mjs` (a call
//! moved off a draining relay); this file runs them under `cargo test` with the binary
//! cargo just built.
//!
//! It fails (never skips) when Node.js 20 or newer (playwright-core's minimum), Chromium
//! or `tests/browser/node_modules` is missing: `scripts/test` installs all three.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longer than the script's own 150 s limit, so the script normally reports (and
/// cleans up its server and browsers) itself; this only catches a hung Node.js.
const TIMEOUT: Duration = Duration::from_secs(240);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Panics with what to install when a prerequisite is missing.
fn check_prerequisites(dir: &Path) {
    let node = Command::new("node").arg("--version").output();
    assert!(
        matches!(&node, Ok(out) if out.status.success()),
        "Node.js is missing (`node --version` failed: {node:?}); scripts/test installs it"
    );
    // "v20.20.2\n"
    let version = node
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "Node.js {version} is too old: playwright-core needs 20 or newer; scripts/test installs it"
    );
    assert!(
        chromium().exists(),
        "Chromium is missing at {}; install it: apt-get install -y chromium (or set CHROMIUM), or run scripts/test",
        chromium().display()
    );
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is not installed in {}; run: npm ci --prefix tests/browser (scripts/test does)",
        dir.display()
    );
}

#[test]
fn two_chromium_pages_call_each_other_through_turnpike() {
    run_script("call.test.mjs");
}

/// `fleet.test.mjs`: a call between two pages moves from a draining relay to another
/// (redis-server, two relays and a signaling node as `turnpike serve` processes).
#[test]
fn a_browser_call_moves_off_a_draining_relay() {
    run_script("fleet.test.mjs");
}

/// Runs one script of `tests/browser` under Node.js with the binary cargo built.
fn run_script(script: &str) {
    let dir = browser_dir();
    check_prerequisites(&dir);
    let out_dir = tempfile::tempdir().expect("a temporary directory");
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let stdout = std::fs::File::create(&stdout_path).expect("create stdout file");
    let stderr = std::fs::File::create(&stderr_path).expect("create stderr file");
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(dir.join(script))
        .env("TURNPIKE_BIN", env!("CARGO_BIN_EXE_turnpike"))
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start node on a tests/browser script");
    let status = loop {
        match child.try_wait().expect("wait for node") {
            Some(status) => break Some(status),
            None if started.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let out = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    println!("{out}");
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("the browser test failed ({s}):\n{out}\n{err}"),
        None => panic!("the browser test hung for {TIMEOUT:?} and was killed:\n{out}\n{err}"),
    }
}
