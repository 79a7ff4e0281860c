//! `--transports`: TURN over the transports a client can pick, side by side in one run
//! — plain UDP, TLS (Turnpike's and coturn's: the encrypted transport operators run
//! today) and Turnpike's QUIC (CONNECT-UDP over HTTP/3) — with the same clients, the
//! same packets and the same accounting for every row.
//!
//! The rows are measured in [`Plan::rounds`] rounds (`--repetitions N`; 3 by default)
//! that interleave them, so each samples the same stretches of a shared machine's
//! noise; the table gives medians. Each row starts its server afresh on the relay's core and opens [`Plan::links`]
//! client links (one connection and one allocation each, channel 0x4000 bound to one
//! echo peer). Every packet is pre-encrypted SRTP carrying, over 16 bytes of its
//! ciphertext, the step, the link and its send time; the peer echoes it back to the
//! relayed address, so one round trip is two relayed packets and crosses the client's
//! link twice. Measured per row:
//! - **capacity**: a ramp of offered round trips per second (audio 170 B and video
//!   1200 B packets, spread evenly over the links); the highest rate whose packets all
//!   came back but ≤ 0.1% within 200 ms of the step's end, as relayed packets per
//!   second. "≥" marks a lower bound: at the next rate the generator fell behind, or
//!   the relay's core was still over 20% idle when loss began (so something else —
//!   the generator's core — ran out first);
//! - **relay CPU per relayed packet** (the server process's CPU time, all threads) at
//!   capacity — and one core's second divided by it, the rate the relay's own core
//!   allows where the generator ran out first — and at a call-like load of [`LATENCY_RATE`] round trips per second
//!   (100 audio streams at 50 packets per second);
//! - **round-trip time** (client → relay → peer → relay → client, p50 and p99) at that
//!   load with no loss and with 2% random loss on the client's link.
//!
//! The client's link is the traffic to and from the relay's client ports (UDP 3478, TLS
//! 5349, QUIC 4433). Loss is made by an nftables rule in the bench's namespace that
//! drops that traffic at random on receipt (`numgen random`), both ways: the sender's
//! stack does not learn of it, as on a real link. (`tc netem` would also add delay,
//! but this kernel is built without `sch_netem`; on loopback the round trip without
//! loss is tens of microseconds, so a TCP retransmission shows at its full cost.) The
//! namespace's loopback MTU is set to 1500, an Ethernet path's, so TCP segments and
//! QUIC packets are the sizes a real client link carries.
//!
//! Every TLS and QUIC client offers TLS 1.3 with TLS_AES_128_GCM_SHA256 only, so every
//! encrypted row pays for the same cipher.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::links::{self, Links, Transport};
use crate::servers::{self, Buffers, ServerProcess, Tls, EQUAL_BUFFER, PASSWORD, USER};
use crate::srtp_pool::Pool;
use crate::sys::{MmsgReceiver, MmsgSender};
use crate::traffic::{CpuProbe, Engine, Latency, Mix};
use crate::transports_report as report;
use crate::turn::Creds;

/// Round trips per second of the latency points: 100 audio streams at 50 pps.
pub const LATENCY_RATE: f64 = 5000.0;
/// The random loss on the client's link at the lossy latency point, per mille.
const LOSS_PERMILLE: u32 = 20;
/// The epoll token of the echo peer's socket.
const PEER: u64 = u64::MAX;
/// Where the step, link and send time sit in each packet (after the RTP header).
const STAMP_AT: usize = 12;

/// What each row runs, and for how long.
pub struct Plan {
    pub links: usize,
    /// Rounds over all rows (each round starts every server afresh).
    pub rounds: usize,
    pub step: Duration,
    pub ramp_start: f64,
    pub ramp_factor: f64,
    pub ramp_max: f64,
    pub bisections: usize,
    pub latency: Duration,
}

impl Plan {
    pub fn new(smoke: bool) -> Plan {
        if smoke {
            Plan {
                links: 20,
                rounds: 1,
                step: Duration::from_millis(500),
                ramp_start: 2000.0,
                ramp_factor: 2.0,
                ramp_max: 4000.0,
                bisections: 0,
                latency: Duration::from_secs(1),
            }
        } else {
            Plan {
                links: 100,
                rounds: 3,
                step: Duration::from_secs(2),
                ramp_start: 5000.0,
                ramp_factor: 1.3,
                ramp_max: 400_000.0,
                bisections: 2,
                latency: Duration::from_secs(6),
            }
        }
    }
}

/// One measured step.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Step {
    /// Offered round trips per second.
    pub rate: f64,
    /// Packets the links were asked to send, and how many they took.
    pub attempted: u64,
    pub sent: u64,
    /// Packets the relay delivered to the peer, and back to the links.
    pub to_peer: u64,
    pub returned: u64,
    pub secs: f64,
    pub cpu_ns: u64,
    /// The generator offered less than 99% of the rate (its core ran out).
    pub behind: bool,
    pub rtt: Option<Latency>,
}

impl Step {
    pub fn relayed_pps(&self) -> f64 {
        (self.to_peer + self.returned) as f64 / self.secs
    }

    pub fn loss(&self) -> f64 {
        1.0 - self.returned as f64 / self.attempted.max(1) as f64
    }

    pub fn cpu_us_per_packet(&self) -> Option<f64> {
        let packets = self.to_peer + self.returned;
        (packets > 0).then(|| self.cpu_ns as f64 / 1000.0 / packets as f64)
    }

    pub fn fine(&self) -> bool {
        self.loss() <= 0.001 && !self.behind
    }
}

/// The highest rate a row sustained, and the ramp that found it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Capacity {
    pub best: Option<Step>,
    /// The step above `best` failed only because the generator fell behind.
    pub generator_limited: bool,
    pub steps: Vec<Step>,
}

/// One server and transport.
#[derive(Debug, serde::Serialize)]
pub struct Row {
    pub server: &'static str,
    pub transport: Transport,
    /// Which round of the run (rows are measured round after round, interleaved).
    pub round: usize,
    pub status: String,
    pub setup_secs: f64,
    pub audio: Option<Capacity>,
    pub video: Option<Capacity>,
    pub no_loss: Option<Step>,
    pub lossy: Option<Step>,
}

pub const ROWS: [(&str, Transport); 5] = [
    ("turnpike", Transport::Udp),
    ("turnpike", Transport::Quic),
    ("turnpike", Transport::Tls),
    ("coturn", Transport::Tls),
    ("coturn", Transport::Udp),
];

/// Runs every row and prints the table. Needs the bench's private namespace (its
/// loopback MTU and nftables rules must not touch the host) and `nft`.
pub fn run(
    out: &Path,
    smoke: bool,
    rounds: Option<usize>,
    relay_cpu: usize,
    network: &str,
) -> Result<ExitCode, String> {
    // TURNPIKE_BENCH_ROWS=turnpike-quic,coturn-tls runs only those rows.
    let only: Option<Vec<String>> = std::env::var("TURNPIKE_BENCH_ROWS")
        .ok()
        .map(|v| v.split(',').map(|r| r.trim().to_lowercase()).collect());
    let started = Instant::now();
    if std::env::var(crate::NETNS_ENV).is_err() {
        return Err("--transports needs the private network namespace (run as root)".into());
    }
    crate::sys::ip(&["link", "set", "lo", "mtu", "1500"])?;
    set_loss(0)?; // and proves nft works before anything is measured
    let mut plan = Plan::new(smoke);
    if let Some(n) = rounds {
        plan.rounds = n.max(1);
    }
    let rounds = plan.rounds;
    let tls = certificate(out)?;
    let crypto = client_crypto(&tls.ca)?;
    let creds = Creds {
        user: USER.into(),
        password: PASSWORD.into(),
    };
    eprintln!("encrypting SRTP pools...");
    let audio = Pool::encrypt(Mix::Audio.packet_size(), 111, 0x7470_0a0d)?;
    let video = Pool::encrypt(Mix::Video.packet_size(), 96, 0x7470_0f1d)?;
    let mut peer = Echo::new()?;
    let peer_addr = match peer.sock.local_addr() {
        Ok(SocketAddr::V4(a)) => a,
        other => return Err(format!("peer address: {other:?}")),
    };
    let mut rows = Vec::new();
    for (round, (server, transport)) in (0..rounds).flat_map(|r| ROWS.map(|row| (r, row))) {
        let name = format!("{server}-{}", transport.name().to_lowercase());
        if only.as_ref().is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        if server == "coturn" && !servers::coturn_available() {
            return Err("coturn's turnserver is not installed (apt-get install coturn)".into());
        }
        eprintln!("round {}: {server} over {}...", round + 1, transport.name());
        let mut row = Row {
            server,
            transport,
            round,
            status: "ok".into(),
            setup_secs: 0.0,
            audio: None,
            video: None,
            no_loss: None,
            lossy: None,
        };
        if let Err(e) = measure_row(
            &mut row, &plan, &tls, &crypto, &creds, &mut peer, peer_addr, &audio, &video,
            relay_cpu, out,
        ) {
            eprintln!("{server} over {}: {e}", transport.name());
            row.status = format!("error: {e}");
        }
        let _ = set_loss(0);
        rows.push(row);
    }
    let table = report::table(&rows);
    let verdicts = report::targets(&rows);
    println!("\n{table}\n{verdicts}");
    println!(
        "network: {network}; MTU 1500; {} links (one connection and allocation each), \
         SRTP audio 170 B / video 1200 B, TLS 1.3 with TLS_AES_128_GCM_SHA256 for every \
         encrypted row; RTT at {LATENCY_RATE} round trips/s over {:?}; loss by nftables on \
         the client link; {rounds} round(s) interleaving the rows, medians. Took {:.0} s.",
        plan.links,
        plan.latency,
        started.elapsed().as_secs_f64()
    );
    let json = serde_json::json!({
        "mode": if smoke { "transports smoke" } else { "transports" },
        "network": network,
        "links": plan.links,
        "latency_rate": LATENCY_RATE,
        "loss_permille": LOSS_PERMILLE,
        "rows": rows,
        "table_markdown": table,
        "targets": verdicts,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let path = out.join("transports.json");
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("results: {}", path.display());
    // Smoke: every Turnpike row must have carried packets both ways.
    let silent = rows
        .iter()
        .filter(|r| r.server == "turnpike")
        .any(|r| r.status != "ok" || r.no_loss.as_ref().is_none_or(|s| s.returned == 0));
    Ok(if silent {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[allow(clippy::too_many_arguments)]
fn measure_row(
    row: &mut Row,
    plan: &Plan,
    tls: &Certificate,
    crypto: &rustls::ClientConfig,
    creds: &Creds,
    peer: &mut Echo,
    peer_addr: SocketAddrV4,
    audio: &Pool,
    video: &Pool,
    relay_cpu: usize,
    out: &Path,
) -> Result<(), String> {
    let files = Tls {
        cert: tls.cert.clone(),
        key: tls.key.clone(),
    };
    let server: ServerProcess = match row.server {
        "coturn" => servers::start_coturn(1, &[relay_cpu], out, Some(&files))?,
        _ => servers::start_turnpike(1, &[relay_cpu], out, None, false, Some(&files), false)?,
    };
    let probe = server.probe();
    let start = Instant::now();
    let mut set = links::connect_all(
        row.transport,
        crypto,
        creds,
        plan.links,
        peer_addr,
        Duration::from_secs(20),
    )?;
    row.setup_secs = start.elapsed().as_secs_f64();
    // The same socket buffers for every server's UDP sockets (relay and listeners);
    // TCP keeps the kernel's autotuning for both servers.
    servers::apply_buffers(server.pid, Buffers::Equal(EQUAL_BUFFER))?;
    set.epoll
        .add(peer.sock.as_raw_fd(), PEER)
        .map_err(|e| format!("epoll: {e}"))?;
    if row.transport == Transport::Quic {
        await_path_mtu(&mut set, peer, 4 + Mix::Video.packet_size())?;
    }
    let mut step_id = 0u32;
    let mut next_id = || {
        step_id += 1;
        step_id
    };
    // Warm-up (TLS session state, QUIC congestion windows), not counted.
    run_step(
        &mut set,
        peer,
        audio,
        LATENCY_RATE,
        plan.step,
        next_id(),
        &probe,
    )?;
    // The call-like load first, on a server that has not been overloaded yet: a ramp
    // ends past capacity, and a stream transport's queues (TCP's, a TLS library's)
    // can take seconds to drain after it.
    let mut lat =
        |set: &mut Links, id| run_step(set, peer, audio, LATENCY_RATE, plan.latency, id, &probe);
    row.no_loss = Some(lat(&mut set, next_id())?);
    set_loss(LOSS_PERMILLE)?;
    let lossy = lat(&mut set, next_id());
    set_loss(0)?;
    row.lossy = Some(lossy?);
    row.audio = Some(ramp(&mut set, peer, audio, plan, &probe, &mut next_id)?);
    row.video = Some(ramp(&mut set, peer, video, plan, &probe, &mut next_id)?);
    set.close();
    Ok(())
}

/// QUIC starts at a 1200-byte path MTU and probes upwards (RFC 9000 §14): waits until
/// every tunnel takes `need`-byte messages as datagrams, so no video packet falls
/// back to the request stream.
fn await_path_mtu(set: &mut Links, peer: &mut Echo, need: usize) -> Result<(), String> {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    let mut ready = Vec::new();
    loop {
        let smallest = set
            .links
            .iter_mut()
            .filter_map(|l| l.max_message())
            .min()
            .unwrap_or(usize::MAX);
        if smallest >= need {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(15) {
            return Err(format!(
                "QUIC path MTU discovery: a tunnel takes {smallest} B datagrams, video needs {need}"
            ));
        }
        set.pump(&mut buf, &mut ready, 5, &mut |_, _| {})?;
        set.fire_timers(Instant::now());
        peer.run();
    }
}

/// Raises the offered rate until a step loses more than 0.1% (or the generator falls
/// behind), then bisects between the last good and the first bad rate.
fn ramp(
    set: &mut Links,
    peer: &mut Echo,
    pool: &Pool,
    plan: &Plan,
    probe: &CpuProbe,
    next_id: &mut dyn FnMut() -> u32,
) -> Result<Capacity, String> {
    let mut steps = Vec::new();
    let mut best: Option<Step> = None;
    let mut bad: Option<Step> = None;
    let mut rate = plan.ramp_start;
    while rate <= plan.ramp_max {
        let step = run_step(set, peer, pool, rate, plan.step, next_id(), probe)?;
        steps.push(step.clone());
        if step.fine() {
            best = Some(step);
            rate *= plan.ramp_factor;
        } else {
            bad = Some(step);
            break;
        }
    }
    if let (Some(lo), Some(hi)) = (best.clone(), bad.clone()) {
        let (mut lo, mut hi) = (lo.rate, hi.rate);
        for _ in 0..plan.bisections {
            let mid = (lo * hi).sqrt();
            let step = run_step(set, peer, pool, mid, plan.step, next_id(), probe)?;
            steps.push(step.clone());
            if step.fine() {
                lo = mid;
                best = Some(step);
            } else {
                hi = mid;
                bad = Some(step);
            }
        }
    }
    // The relay was not what ran out when the generator fell behind, or when the
    // relay's core still had a fifth of its time idle as loss began: then the loss
    // came from the generator's side, and the capacity is a lower bound.
    let generator_limited =
        bad.is_some_and(|b| (b.behind && b.loss() <= 0.001) || (b.cpu_ns as f64) < 0.8e9 * b.secs);
    Ok(Capacity {
        best,
        generator_limited,
        steps,
    })
}

/// The echo peer: what its socket receives goes straight back to where it came from
/// (the relayed address), a batch per `recvmmsg` and `sendmmsg`, so the generator's
/// core spends its time on the clients' side.
pub struct Echo {
    sock: UdpSocket,
    rx: MmsgReceiver,
    tx: MmsgSender,
}

impl Echo {
    fn new() -> Result<Echo, String> {
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("peer: {e}"))?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        crate::sys::force_buffers(sock.as_raw_fd(), EQUAL_BUFFER).map_err(|e| e.to_string())?;
        Ok(Echo {
            sock,
            rx: MmsgReceiver::new(),
            tx: MmsgSender::new(),
        })
    }

    /// Echoes everything waiting; returns how many packets came in.
    fn run(&mut self) -> u64 {
        let fd = self.sock.as_raw_fd();
        let mut total = 0;
        while let Ok(n) = self.rx.recv(fd) {
            if n == 0 {
                break;
            }
            let rx = &self.rx;
            let _ = self.tx.send(fd, n, |i| {
                let (data, from, _) = rx.get(i);
                (crate::sys::sockaddr(from), [data, &[], &[]])
            });
            total += n as u64;
        }
        total
    }
}

/// Offers `rate` round trips per second for `secs`, spread evenly over the links,
/// and counts what comes back within 200 ms of the end.
fn run_step(
    set: &mut Links,
    peer: &mut Echo,
    pool: &Pool,
    rate: f64,
    secs: Duration,
    id: u32,
    probe: &CpuProbe,
) -> Result<Step, String> {
    let n = set.links.len();
    let mut frame = vec![0u8; 4 + pool.size];
    frame[..2].copy_from_slice(&0x4000u16.to_be_bytes());
    frame[2..4].copy_from_slice(&(pool.size as u16).to_be_bytes());
    let mut hist: Histogram<u64> = Engine::new_histogram()?;
    let mut buf = vec![0u8; 65536];
    let mut ready = Vec::new();
    let (mut attempted, mut sent, mut to_peer, mut returned) = (0u64, 0u64, 0u64, 0u64);
    let base = Instant::now();
    let end = base + secs;
    let grace_end = end + Duration::from_millis(200);
    let cpu_before = probe.ns().map_err(|e| format!("relay CPU: {e}"))?;
    let mut next_timers = base;
    let target = (rate * secs.as_secs_f64()) as u64;
    loop {
        let now = Instant::now();
        if now >= grace_end {
            break;
        }
        let mut due = 0;
        if now < end {
            due = ((rate * (now - base).as_secs_f64()) as u64).min(target);
            // A bounded burst, so receiving keeps up when the generator is behind.
            let mut burst = 0;
            while attempted < due && burst < 256 {
                let i = attempted as usize % n;
                let body = &mut frame[4..];
                body.copy_from_slice(pool.packet(attempted as usize / n));
                let ns = (Instant::now() - base).as_nanos() as u64;
                body[STAMP_AT..STAMP_AT + 4].copy_from_slice(&id.to_be_bytes());
                body[STAMP_AT + 4..STAMP_AT + 8].copy_from_slice(&(i as u32).to_be_bytes());
                body[STAMP_AT + 8..STAMP_AT + 16].copy_from_slice(&ns.to_be_bytes());
                sent += u64::from(set.links[i].send(&frame, now));
                attempted += 1;
                burst += 1;
            }
        }
        let timeout = if attempted < due { 0 } else { 1 };
        set.pump(&mut buf, &mut ready, timeout, &mut |_, msg| {
            let Some(body) = msg.get(4..) else { return };
            if msg[..2] != [0x40, 0x00] || body.len() < STAMP_AT + 16 {
                return;
            }
            let field = |at: usize, len: usize| &body[STAMP_AT + at..STAMP_AT + at + len];
            if field(0, 4) != id.to_be_bytes() {
                return; // a straggler from an earlier step
            }
            let stamp = u64::from_be_bytes(field(8, 8).try_into().unwrap_or([0; 8]));
            let now_ns = (Instant::now() - base).as_nanos() as u64;
            returned += 1;
            let _ = hist.record(now_ns.saturating_sub(stamp).max(1));
        })?;
        if ready.contains(&PEER) {
            to_peer += peer.run();
        }
        if now >= next_timers {
            set.fire_timers(now);
            next_timers = now + Duration::from_millis(2);
        }
    }
    let cpu_after = probe.ns().map_err(|e| format!("relay CPU: {e}"))?;
    Ok(Step {
        rate,
        attempted,
        sent,
        to_peer,
        returned,
        secs: secs.as_secs_f64(),
        cpu_ns: cpu_after.saturating_sub(cpu_before),
        behind: (attempted as f64) < 0.99 * target as f64,
        rtt: Latency::of(&hist),
    })
}

/// Turns random loss on the client link on (`permille` > 0) or off.
fn set_loss(permille: u32) -> Result<(), String> {
    // Deleting a table that is not there fails harmlessly.
    let _ = Command::new("nft")
        .args(["delete", "table", "inet", "turnpike_bench"])
        .stderr(Stdio::null())
        .status();
    let ports = format!(
        "{}, {}, {}",
        servers::LISTEN.port(),
        servers::TLS_LISTEN.port(),
        servers::QUIC_LISTEN.port()
    );
    let rules = if permille == 0 {
        String::new()
    } else {
        format!(
            "meta l4proto {{ tcp, udp }} th dport {{ {ports} }} numgen random mod 1000 < {permille} drop\n\
             meta l4proto {{ tcp, udp }} th sport {{ {ports} }} numgen random mod 1000 < {permille} drop\n"
        )
    };
    let text = format!(
        "table inet turnpike_bench {{\n chain input {{\n  type filter hook input priority 0;\n{rules} }}\n}}\n"
    );
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft (apt-get install nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The servers' certificate (signed by a CA made for the run) and the CA clients trust.
struct Certificate {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    ca: rustls::pki_types::CertificateDer<'static>,
}

fn certificate(out: &Path) -> Result<Certificate, String> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).map_err(e)?;
    let key = KeyPair::generate().map_err(e)?;
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(e)?;
    let leaf = params.signed_by(&key, &ca, &ca_key).map_err(e)?;
    let cert_path = out.join("transports-cert.pem");
    let key_path = out.join("transports-key.pem");
    std::fs::write(&cert_path, leaf.pem()).map_err(|e| format!("{}: {e}", cert_path.display()))?;
    std::fs::write(&key_path, key.serialize_pem())
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    Ok(Certificate {
        cert: cert_path,
        key: key_path,
        ca: ca.der().clone(),
    })
}

/// TLS 1.3 with TLS_AES_128_GCM_SHA256 only, trusting the run's CA.
fn client_crypto(
    ca: &rustls::pki_types::CertificateDer<'static>,
) -> Result<rustls::ClientConfig, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}
