//! Packet-throughput benchmark: Turnpike against coturn and a bare UDP forwarder of the
//! same shape, with a TURN load generator built on Turnpike's own codec.
//!
//! ```sh
//! cargo bench --bench relay -- [--smoke] [--quick] [--transports] [--rounds N] [--repetitions N]
//!     [--buffers equal|native|BYTES] [--out DIR]
//!     [--servers turnpike,turnpike-coalesce,turnpike-fastpath,turnpike-rtpq,coturn,bare]
//! ```
//!
//! The run happens in a private network namespace made for it (`ip netns add`), on
//! that namespace's loopback: counters stay clean and nothing leaves the machine. The
//! bench re-executes itself inside the namespace under `taskset -c 1` (the generator's
//! core); each relay runs under `taskset -c 0`. Without namespaces (not root) it runs
//! on the host loopback and says so. `--smoke` runs a few seconds per server and fails
//! (exit 1) if Turnpike forwarded nothing in some direction. `--quick` measures only the
//! audio ChannelData path (its ramp, CPU per packet and latency) on one worker: the
//! rows a change to the packet path moves, in a third of the time. `--transports`
//! compares TURN over UDP, TLS (Turnpike and coturn) and QUIC instead: capacity, CPU
//! per packet and round-trip time with and without loss on the client's link (see
//! `relay/transports.rs`; with `--smoke`, a few seconds per row). `--rounds N` sets
//! how many interleaved latency rounds are run (default 3). `--repetitions N` (default
//! 3) sets how many times the audio ChannelData capacity is measured again on a fresh
//! server, in rounds that interleave the servers: the table gives each capacity and
//! ratio as the median and the min–max of those. `--buffers` sets every server's
//! socket buffers: `equal` (default: the bench forces 2 MiB, which the kernel reports
//! as 4 MiB, on every UDP socket of every server), `BYTES` (the same with that size),
//! or `native` (each server's own).
//!
//! Results: a Markdown table on stdout, `results.json`, `throughput.svg` and
//! `latency.svg` in `--out` (default `target/bench-results/`).

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up stops with the reason

#[path = "relay/bare.rs"]
mod bare;
#[path = "relay/gso.rs"]
mod gso;
#[path = "relay/latency.rs"]
mod latency;
#[path = "relay/links.rs"]
mod links;
#[path = "relay/plan.rs"]
mod plan;
#[path = "relay/report.rs"]
mod report;
#[path = "relay/results.rs"]
mod results;
#[path = "relay/servers.rs"]
mod servers;
#[path = "relay/srtp_pool.rs"]
mod srtp_pool;
#[path = "relay/sys.rs"]
mod sys;
#[path = "relay/traffic.rs"]
mod traffic;
#[path = "relay/transports.rs"]
mod transports;
#[path = "relay/transports_report.rs"]
mod transports_report;
#[path = "relay/turn.rs"]
mod turn;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use plan::Plan;
use results::{Kind, ServerResult};
use servers::Buffers;
use traffic::Mix;

/// Set (to the namespace's name) in the re-executed child that runs inside it.
const NETNS_ENV: &str = "TURNPIKE_BENCH_NETNS";

struct Args {
    smoke: bool,
    quick: bool,
    /// TURN over UDP, TLS and QUIC side by side instead (see transports.rs).
    transports: bool,
    /// Latency rounds (default: the plan's).
    rounds: Option<usize>,
    out: PathBuf,
    servers: Vec<Kind>,
    /// Capacity repetitions (default: the plan's).
    repetitions: Option<usize>,
    buffers: Option<Buffers>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        smoke: false,
        quick: false,
        transports: false,
        rounds: None,
        // Cargo's target directory (CARGO_TARGET_DIR when set), like its own output.
        out: std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
            .join("bench-results"),
        servers: vec![
            Kind::Turnpike,
            Kind::TurnpikeCoalesce,
            Kind::TurnpikeFastPath,
            Kind::Coturn,
            Kind::BarePlain,
            Kind::BareBatched,
        ],
        repetitions: None,
        buffers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => args.smoke = true,
            "--quick" => args.quick = true,
            "--transports" => args.transports = true,
            "--rounds" => {
                let n = it.next().ok_or("--rounds needs a number")?;
                let n: usize = n
                    .parse()
                    .map_err(|_| format!("--rounds {n:?}: not a number"))?;
                args.rounds = Some(n.max(1));
            }
            "--repetitions" => {
                let n = it.next().ok_or("--repetitions needs a number")?;
                let n: usize = n
                    .parse()
                    .map_err(|_| format!("--repetitions {n:?}: not a number"))?;
                args.repetitions = Some(n);
            }
            "--buffers" => {
                let b = it.next().ok_or("--buffers needs equal, native or a size")?;
                args.buffers = Some(match b.as_str() {
                    "equal" => Buffers::Equal(servers::EQUAL_BUFFER),
                    "native" => Buffers::Native,
                    n => Buffers::Equal(
                        n.parse()
                            .map_err(|_| format!("--buffers {n:?}: equal, native or bytes"))?,
                    ),
                });
            }
            "--out" => args.out = it.next().ok_or("--out needs a directory")?.into(),
            "--servers" => {
                let list = it.next().ok_or("--servers needs a list")?;
                args.servers.clear();
                for name in list.split(',') {
                    match name.trim() {
                        "turnpike" => args.servers.push(Kind::Turnpike),
                        "turnpike-coalesce" => args.servers.push(Kind::TurnpikeCoalesce),
                        "turnpike-fastpath" => args.servers.push(Kind::TurnpikeFastPath),
                        "turnpike-rtpq" => args.servers.push(Kind::TurnpikeQuality),
                        "coturn" => args.servers.push(Kind::Coturn),
                        "bare" => args.servers.extend([Kind::BarePlain, Kind::BareBatched]),
                        "bare-plain" => args.servers.push(Kind::BarePlain),
                        "bare-batched" => args.servers.push(Kind::BareBatched),
                        other => return Err(format!("unknown server {other:?}")),
                    }
                }
            }
            // `cargo bench` passes --bench to harness = false targets.
            "--bench" => {}
            "-h" | "--help" => {
                return Err(
                    "usage: cargo bench --bench relay -- [--smoke] [--quick] [--transports] [--rounds N] \
                     [--repetitions N] [--buffers equal|native|BYTES] [--out DIR] \
                     [--servers turnpike,turnpike-coalesce,turnpike-fastpath,turnpike-rtpq,coturn,bare]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let cpus = sys::online_cpus();
    let (relay_cpu, generator_cpu) = if cpus >= 2 { (0, 1) } else { (0, 0) };
    let network = match std::env::var(NETNS_ENV) {
        Ok(ns) => format!("private network namespace {ns} (loopback)"),
        Err(_) => match run_in_namespace(generator_cpu) {
            Ok(code) => return code,
            Err(why) => {
                eprintln!("no private network namespace ({why}); using the host loopback");
                format!("host loopback (no private namespace: {why})")
            }
        },
    };
    if let Err(e) = sys::pin(0, &[generator_cpu]) {
        eprintln!("cannot pin the generator to cpu {generator_cpu}: {e}");
    }
    // The machine is shared: at nice -20 the relay (which inherits it) and the
    // generator win their cores from ordinary jobs almost every time, so a compile
    // elsewhere does not pose as relay loss. Unprivileged runs keep nice 0.
    let network = match sys::set_nice(-20) {
        Ok(()) => format!("{network}; relay and generator at nice -20"),
        Err(e) => format!("{network}; nice 0 ({e})"),
    };
    if args.transports {
        let result = std::fs::create_dir_all(&args.out)
            .map_err(|e| format!("{}: {e}", args.out.display()))
            .and_then(|()| sys::raise_fd_limit().map_err(|e| format!("fd limit: {e}")))
            .and_then(|_| {
                transports::run(&args.out, args.smoke, args.repetitions, relay_cpu, &network)
            });
        return result.unwrap_or_else(|e| {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        });
    }
    match run(&args, &network, relay_cpu, generator_cpu) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Makes a namespace, runs this binary again inside it on the generator's core, and
/// removes the namespace. Err = namespaces unavailable (the caller falls back).
fn run_in_namespace(generator_cpu: usize) -> Result<ExitCode, String> {
    let ns = format!("turnpike-bench-{}", std::process::id());
    let ip = sys::ip;
    ip(&["netns", "add", &ns])?;
    let result = (|| {
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let status = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "taskset",
                "-c",
                &generator_cpu.to_string(),
            ])
            .arg(exe)
            .args(std::env::args().skip(1))
            .env(NETNS_ENV, &ns)
            .status()
            .map_err(|e| format!("cannot re-run inside {ns}: {e}"))?;
        Ok(match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
            None => ExitCode::FAILURE,
        })
    })();
    if let Err(e) = ip(&["netns", "del", &ns]) {
        eprintln!("warning: {e}");
    }
    // Once the namespace existed, a failure inside it is a real failure, not a reason
    // to rerun everything on the host.
    Ok(result.unwrap_or_else(|e: String| {
        eprintln!("bench failed in namespace: {e}");
        ExitCode::FAILURE
    }))
}

/// The audio ChannelData capacity again, `plan.repetitions` times, in rounds over every
/// server that measured fine, each started afresh per round. A failed repetition is
/// noted and leaves that server out of the later rounds.
fn measure_repetitions(
    args: &Args,
    plan: &Plan,
    pools: &[(Mix, srtp_pool::Pool)],
    bar: &ProgressBar,
    results: &mut [ServerResult],
) {
    for round in 0..plan.repetitions {
        for (&kind, r) in args.servers.iter().zip(results.iter_mut()) {
            if r.status != "ok" || r.repetitions.len() < round {
                continue;
            }
            bar.set_message(format!(
                "{} capacity, repetition {}",
                kind.name(),
                round + 1
            ));
            match plan::capacity_repetition(kind, plan, pools, &args.out, bar) {
                Ok(ramp) => r.repetitions.push(ramp),
                Err(e) => r
                    .notes
                    .push(format!("capacity repetition {}: {e}", round + 1)),
            }
        }
    }
}

/// Latency in rounds over every server that measured fine (see latency.rs), at the
/// loads of its own audio ChannelData capacity.
fn measure_latency(
    args: &Args,
    plan: &Plan,
    pools: &[(Mix, srtp_pool::Pool)],
    bar: &ProgressBar,
    results: &mut [ServerResult],
) -> Result<(), String> {
    let pool = plan::pool_of(pools, Mix::Audio)?;
    let mut points = Vec::new();
    for (i, (&kind, r)) in args.servers.iter().zip(results.iter()).enumerate() {
        if r.status == "ok" {
            let capacity = r
                .ramp(Mix::Audio, results::Direction::ChannelData)
                .and_then(|r| r.pps_le_0_1pct)
                .unwrap_or(plan.ramp_start);
            points.push((i, kind, latency::Points::new(plan, capacity)?));
        }
    }
    for _ in 0..plan.latency_rounds {
        for (i, kind, p) in &mut points {
            bar.set_message(format!("{} latency", kind.name()));
            if let Err(e) = p.round(*kind, plan, pool, &args.out) {
                results[*i].status = format!("error: latency: {e}");
            }
            bar.inc(1);
        }
        points.retain(|(i, _, _)| results[*i].status == "ok");
    }
    for (i, _, p) in points {
        results[i].latency = p.finish();
    }
    Ok(())
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "nproc": sys::online_cpus(),
        "cpu_model": model,
        "kernel": kernel.trim(),
    })
}

fn run(
    args: &Args,
    network: &str,
    relay_cpu: usize,
    generator_cpu: usize,
) -> Result<ExitCode, String> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let fd_limit = sys::raise_fd_limit().map_err(|e| format!("fd limit: {e}"))?;
    // TURNPIKE_BENCH_STEER=1: loopback's receive processing runs on the relay's core
    // for every server (as the fast path's always does), and every server's CPU is
    // that core's busy time — the same accounting for all.
    let network = if std::env::var("TURNPIKE_BENCH_STEER").is_ok_and(|v| v == "1") {
        let _ = traffic::STEERED_CORES.set(vec![relay_cpu]);
        servers::steer_loopback(&[])?;
        format!(
            "{network}; loopback receive steered (RPS) to cpu {relay_cpu} for every server, \
             relay CPU = that core's busy time"
        )
    } else {
        network.to_string()
    };
    let network = network.as_str();
    let mut plan = Plan::new(args.smoke, relay_cpu, generator_cpu);
    plan.quick = args.quick;
    if let Some(n) = args.rounds {
        plan.latency_rounds = n;
    }
    if let Some(n) = args.repetitions {
        plan.repetitions = n;
    }
    if let Some(b) = args.buffers {
        plan.buffers = b;
    }
    eprintln!(
        "relay bench ({}): {network}; relay on cpu {relay_cpu}, generator on cpu {generator_cpu}; fd limit {fd_limit}; buffers {}",
        match (args.smoke, args.quick) {
            (true, _) => "smoke",
            (false, true) => "quick: audio ChannelData only",
            (false, false) => "full",
        },
        plan.buffers.describe(),
    );
    eprintln!(
        "encrypting SRTP pools ({} packets per mix)...",
        srtp_pool::POOL_LEN
    );
    let mut pools = vec![(
        Mix::Audio,
        srtp_pool::Pool::encrypt(Mix::Audio.packet_size(), 111, 0x7470_0a0d)?,
    )];
    if !plan.quick {
        pools.push((
            Mix::Video,
            srtp_pool::Pool::encrypt(Mix::Video.packet_size(), 96, 0x7470_0f1d)?,
        ));
    }
    let bar = ProgressBar::new(plan.estimated_steps(args.servers.len()));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} steps, {msg}",
        )
        .map_err(|e| e.to_string())?,
    );
    let mut results: Vec<ServerResult> = Vec::new();
    for &kind in &args.servers {
        let r = plan::measure(kind, &plan, &pools, &args.out, &bar);
        if r.status != "ok" {
            bar.println(format!("{}: {}", r.server, r.status));
        }
        results.push(r);
    }
    measure_repetitions(args, &plan, &pools, &bar, &mut results);
    measure_latency(args, &plan, &pools, &bar, &mut results)?;
    bar.finish_and_clear();

    let table = report::table(&results);
    let capacity = report::capacity_table(&results, &plan);
    let setup = report::setup_table(&results, &plan);
    println!("\n{capacity}\n{setup}\n{table}");
    println!(
        "network: {network}; relay pinned to cpu {relay_cpu}, generator to cpu {generator_cpu}; \
         audio = 170 B SRTP at 50 pps/stream, video = 1200 B in 5–10 packet frames at 30 fps/stream; \
         ≥ = the generator ran out before the relay did; latency = all packets of {} rounds \
         that interleave the servers ({} s idle at {} pps, {} s per \
         loaded point, per round). Took {:.0} s.",
        plan.latency_rounds,
        plan.idle_secs,
        plan.idle_rate,
        plan.latency_secs,
        started.elapsed().as_secs_f64()
    );
    let json = serde_json::json!({
        "mode": match (args.smoke, args.quick) {
            (true, _) => "smoke",
            (false, true) => "quick",
            (false, false) => "full",
        },
        "network": network,
        "relay_cpu": relay_cpu,
        "generator_cpu": generator_cpu,
        "machine": machine(),
        "command": format!(
            "cargo bench --bench relay --{}",
            std::env::args()
                .skip(1)
                .filter(|a| a != "--bench")
                .map(|a| format!(" {a}"))
                .collect::<String>()
        ),
        "buffers": plan.buffers.describe(),
        "repetitions": plan.repetitions,
        "ramp_resolution": plan.resolution,
        "seconds": started.elapsed().as_secs_f64(),
        "servers": results,
        "table_markdown": table,
        "capacity_markdown": capacity,
        "setup_markdown": setup,
    });
    let json_path = args.out.join("results.json");
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text).map_err(|e| format!("{}: {e}", json_path.display()))?;
    for (name, chart) in [
        (
            "throughput.svg",
            report::throughput_chart as fn(&[ServerResult], &std::path::Path) -> _,
        ),
        ("latency.svg", report::latency_chart),
    ] {
        if let Err(e) = chart(&results, &args.out.join(name)) {
            eprintln!("chart {name}: {e}");
        }
    }
    println!(
        "results: {} (and throughput.svg, latency.svg)",
        json_path.display()
    );
    Ok(smoke_verdict(&results))
}

/// Turnpike must have forwarded packets in every direction it was driven in; a
/// failed or silent Turnpike fails the run (coturn or bare trouble only warns).
fn smoke_verdict(results: &[ServerResult]) -> ExitCode {
    let Some(tp) = results.iter().find(|r| r.server == "turnpike") else {
        return ExitCode::SUCCESS;
    };
    let mut ok = tp.status == "ok" && !tp.ramps.is_empty();
    for ramp in &tp.ramps {
        let forwarded: u64 = ramp.steps.iter().map(|s| s.received).sum();
        if forwarded == 0 {
            eprintln!(
                "turnpike forwarded nothing: {} {}",
                ramp.mix.name(),
                ramp.direction.label()
            );
            ok = false;
        }
    }
    if tp.setup.iter().any(|s| s.allocations == 0) {
        eprintln!("turnpike: an allocation setup run made no allocation");
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("turnpike: {}", tp.status);
        ExitCode::FAILURE
    }
}
