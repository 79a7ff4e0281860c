//! Soak test: the relay under steady audio traffic with churn for a long time, watching
//! its memory, file descriptors and error counters.
//!
//! ```sh
//! cargo bench --bench soak -- [--seconds N] [--allocations N]
//! ```
//!
//! `turnpike serve` (this build, release profile) runs on loopback with two workers.
//! `--allocations` (default 100) clients each hold an allocation with one channel to
//! one of four echo peers and send 160-byte ChannelData every 20 ms (audio); the peers
//! send every datagram back. Every allocation is refreshed every 20 s (its lifetime is
//! 60 s, so a failed refresh shows as a lost allocation) and its channel every 4
//! minutes. Churn: each second two allocations stop sending, and 300 ms later are
//! deleted and made again from new client sockets, each new one also given a
//! permission for a peer it never uses, which expires after 5 minutes (RFC 8656 §9).
//! Every 5 s the relay's resident memory (VmRSS, with its anonymous part RssAnon
//! beside it), open file descriptors, live allocations and packet counters are sampled.
//!
//! It fails (exit 1) if, after the warm-up (a quarter of the run, at most 60 s),
//! resident memory grows more than 5%, the open file descriptors grow (by more than
//! the sockets of one churn round), any TURN request fails, or any packet-path error
//! counter moves (send or receive errors, datagrams dropped as malformed or
//! unsendable). `--seconds` defaults to 600; CI runs 60.

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up stops with the reason

#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/turn_udp/mod.rs"]
mod turn_udp;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use support::{Metrics, TurnpikeConfig, TurnpikeProcess};
use turn_udp::{Client, Turn};
use turnpike::proto::channel_data;
use turnpike::proto::stun::{attr, method};

const CHANNEL: u16 = 0x4000;
const PEERS: usize = 4;
const PACKET_INTERVAL: Duration = Duration::from_millis(20);
const PAYLOAD: usize = 160;
const LIFETIME_SECS: u32 = 60;
const REFRESH_EVERY: Duration = Duration::from_secs(20);
const CHANNEL_REFRESH_EVERY: Duration = Duration::from_secs(240);
const CHURN_PER_SECOND: usize = 2;
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// A peer address the churned allocations get a permission for and never use.
const UNUSED_PEER: &str = "127.0.0.1:9";

struct Options {
    seconds: u64,
    allocations: usize,
}

fn options() -> Options {
    let mut o = Options {
        seconds: 600,
        allocations: 100,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--seconds" => o.seconds = value("--seconds").max(10),
            "--allocations" => o.allocations = value("--allocations").clamp(1, 600) as usize,
            // `cargo bench` passes --bench to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other:?}"),
        }
    }
    o
}

/// One client's allocation with its channel.
struct Call {
    client: Client,
    relayed: SocketAddr,
    peer: usize,
    refreshed: Instant,
    channel_refreshed: Instant,
    /// When it stopped sending before being deleted (a hang-up): what it sent before
    /// has come back by the time it is deleted, so no datagram meets a closed socket.
    quiet_since: Option<Instant>,
}

fn new_call(server: &TurnpikeProcess, peer: usize, peer_addr: SocketAddr) -> Result<Call, String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut client = Client::new(sock, server.udp_addr());
    let relayed = client
        .try_allocate(|b| b.add_u32(attr::LIFETIME, LIFETIME_SECS))
        .map_err(|code| format!("allocate: {code}"))?;
    client.channel_bind(CHANNEL, peer_addr);
    Ok(Call {
        client,
        relayed,
        peer,
        refreshed: Instant::now(),
        channel_refreshed: Instant::now(),
        quiet_since: None,
    })
}

/// One datagram waiting on `sock`, without blocking.
fn try_recv(sock: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: recvfrom writes at most `buf.len()` bytes into `buf` and at most `len`
    // bytes into `addr`, both ours.
    let n = unsafe {
        libc::recvfrom(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&raw mut addr).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return None;
    }
    let from = if i32::from(addr.ss_family) == libc::AF_INET {
        // SAFETY: the family says the storage holds a sockaddr_in.
        let v4: libc::sockaddr_in = unsafe { std::ptr::read((&raw const addr).cast()) };
        SocketAddr::from((
            u32::from_be(v4.sin_addr.s_addr).to_be_bytes(),
            u16::from_be(v4.sin_port),
        ))
    } else {
        return None;
    };
    Some((n as usize, from))
}

struct Sample {
    at: Duration,
    rss_kib: u64,
    /// The anonymous part (heap and stacks), without the binary's pages, which are
    /// read in as code paths first run (a permission's expiry, a channel's refresh).
    anon_kib: u64,
    fds: usize,
    allocations: f64,
    errors: f64,
    sent: u64,
    received: u64,
}

/// RssAnon of `pid`, in KiB.
fn rss_anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Packet-path error counters: any of them moving fails the run.
fn packet_errors(m: &Metrics) -> f64 {
    m.sum("turnpike_send_errors_total", &[])
        + m.sum("turnpike_recv_errors_total", &[])
        + m.sum("turnpike_dropped_packets_total", &[("reason", "malformed")])
        + m.sum(
            "turnpike_dropped_packets_total",
            &[("reason", "send_failed")],
        )
}

fn main() -> ExitCode {
    let o = options();
    let server = TurnpikeProcess::start(TurnpikeConfig {
        users: vec![format!("{}:{}", turn_udp::USER, turn_udp::PASS)],
        realm: turn_udp::REALM.into(),
        ..TurnpikeConfig::default()
    });
    let peers: Vec<UdpSocket> = (0..PEERS)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let peer_addrs: Vec<SocketAddr> = peers.iter().map(|p| p.local_addr().unwrap()).collect();
    let unused_peer: SocketAddr = UNUSED_PEER.parse().unwrap();
    let mut calls: Vec<Call> = (0..o.allocations)
        .map(|i| new_call(&server, i % PEERS, peer_addrs[i % PEERS]).unwrap())
        .collect();
    println!(
        "soak: {} allocations, {} s, {} pps each way, churn {CHURN_PER_SECOND}/s",
        o.allocations,
        o.seconds,
        o.allocations as u64 * 1000 / PACKET_INTERVAL.as_millis() as u64
    );

    let start = Instant::now();
    let end = start + Duration::from_secs(o.seconds);
    let warm_up = Duration::from_secs((o.seconds / 4).min(60));
    let (mut sent, mut received, mut failures) = (0u64, 0u64, Vec::<String>::new());
    let mut churned = 0usize;
    let mut next_churn = 0usize;
    let mut next_tick = start;
    let mut next_churn_at = start + Duration::from_secs(1);
    let mut next_sample = start;
    let mut samples: Vec<Sample> = Vec::new();
    let mut frame = vec![0u8; 4 + PAYLOAD];
    channel_data::write_header(&mut frame, CHANNEL, PAYLOAD).unwrap();
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_tick {
            next_tick += PACKET_INTERVAL;
            for call in calls.iter().filter(|c| c.quiet_since.is_none()) {
                if call.client.sock.send_to(&frame, call.client.server).is_ok() {
                    sent += 1;
                }
            }
        }
        // The peers echo; the clients count what came back.
        for peer in &peers {
            for _ in 0..4 * o.allocations {
                let Some((n, from)) = try_recv(peer, &mut buf) else {
                    break;
                };
                let _ = peer.send_to(&buf[..n], from);
            }
        }
        for call in &calls {
            while let Some((n, _)) = try_recv(&call.client.sock, &mut buf) {
                if n == 4 + PAYLOAD && buf[..2] == CHANNEL.to_be_bytes() {
                    received += 1;
                }
            }
        }
        // Refreshes, spread: at most a few requests per round.
        let mut requests = 0;
        for call in calls.iter_mut() {
            if requests >= 4 {
                break;
            }
            if call.refreshed.elapsed() >= REFRESH_EVERY {
                requests += 1;
                call.refreshed = Instant::now();
                let resp = call.client.request(method::REFRESH, |b| {
                    b.add_u32(attr::LIFETIME, LIFETIME_SECS)
                });
                if turnpike::proto::stun::Message::parse(&resp)
                    .map(|m| m.class())
                    .ok()
                    != Some(turnpike::proto::stun::Class::Success)
                {
                    failures.push(format!("refresh of {} failed", call.relayed));
                }
            } else if call.channel_refreshed.elapsed() >= CHANNEL_REFRESH_EVERY {
                requests += 1;
                call.channel_refreshed = Instant::now();
                let peer = peer_addrs[call.peer];
                call.client.channel_bind(CHANNEL, peer);
            }
        }
        if now >= next_churn_at {
            next_churn_at += Duration::from_secs(1);
            let hung_up = |c: &&mut Call| {
                c.quiet_since
                    .is_some_and(|t| t.elapsed() >= Duration::from_millis(300))
            };
            for slot in calls.iter_mut().filter(hung_up) {
                slot.client.delete_allocation();
                match new_call(&server, slot.peer, peer_addrs[slot.peer]) {
                    Ok(mut call) => {
                        call.client.create_permission(unused_peer);
                        *slot = call;
                        churned += 1;
                    }
                    Err(e) => {
                        // Counted; the slot stays empty-handed (its refreshes fail too).
                        slot.quiet_since = None;
                        failures.push(e);
                    }
                }
            }
            for _ in 0..CHURN_PER_SECOND {
                let i = next_churn % calls.len();
                next_churn += 1;
                calls[i].quiet_since.get_or_insert_with(Instant::now);
            }
        }
        if now >= next_sample {
            next_sample += SAMPLE_EVERY;
            let m = server.metrics();
            let s = Sample {
                at: start.elapsed(),
                rss_kib: server.rss_kib(),
                anon_kib: rss_anon_kib(server.pid()),
                fds: open_fds(server.pid()),
                allocations: m.sum("turnpike_allocations", &[]),
                errors: packet_errors(&m),
                sent,
                received,
            };
            println!(
                "{:>5} s  rss {:>7} KiB (anon {:>6})  fds {:>4}  allocations {:>4}  errors {}  echoed {}/{}",
                s.at.as_secs(),
                s.rss_kib,
                s.anon_kib,
                s.fds,
                s.allocations,
                s.errors,
                s.received,
                s.sent
            );
            samples.push(s);
        }
        // Everything above runs once per packet interval: the peers' and clients'
        // queues hold one interval of traffic at most.
        std::thread::sleep(next_tick.saturating_duration_since(Instant::now()));
    }

    let baseline = samples
        .iter()
        .find(|s| s.at >= warm_up)
        .expect("a sample after the warm-up");
    let last = samples.last().expect("samples");
    let peak = samples
        .iter()
        .filter(|s| s.at >= warm_up)
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(0);
    let growth = last.rss_kib as f64 / baseline.rss_kib as f64 - 1.0;
    println!(
        "\nafter warm-up ({} s): rss {} KiB -> {} KiB at the end ({:+.1}%, peak {} KiB; \
         anon {} -> {} KiB); fds {} -> {}; {} allocations churned; echoed {:.2}% of {} packets",
        warm_up.as_secs(),
        baseline.rss_kib,
        last.rss_kib,
        growth * 100.0,
        peak,
        baseline.anon_kib,
        last.anon_kib,
        baseline.fds,
        last.fds,
        churned,
        received as f64 * 100.0 / sent.max(1) as f64,
        sent
    );
    let mut verdicts = Vec::new();
    if growth > 0.05 {
        verdicts.push(format!("resident memory grew {:.1}%", growth * 100.0));
    }
    // A socket or two may be on its way out at a sample (closed by a worker after its
    // allocation's answer); a leak grows with every churned allocation.
    if last.fds > baseline.fds + CHURN_PER_SECOND {
        verdicts.push(format!(
            "open fds grew from {} to {}",
            baseline.fds, last.fds
        ));
    }
    if last.errors > 0.0 {
        let m = server.metrics();
        let lines: Vec<&str> = m
            .text
            .lines()
            .filter(|l| {
                l.starts_with("turnpike_send_errors_total")
                    || l.starts_with("turnpike_recv_errors_total")
                    || l.starts_with("turnpike_dropped_packets_total")
            })
            .collect();
        verdicts.push(format!(
            "{} packet-path errors:\n{}",
            last.errors,
            lines.join("\n")
        ));
    }
    if !failures.is_empty() {
        verdicts.push(format!(
            "{} TURN requests failed, first: {}",
            failures.len(),
            failures[0]
        ));
    }
    if verdicts.is_empty() {
        println!("soak: passed");
        ExitCode::SUCCESS
    } else {
        for v in &verdicts {
            println!("soak: FAILED: {v}");
        }
        ExitCode::FAILURE
    }
}
