//! Starting and stopping the servers under test: Turnpike (this crate's release
//! binary) and coturn as child processes pinned with `taskset`, each on
//! 127.0.0.1:3478 with the same long-term user and realm.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::traffic::CpuProbe;
use crate::turn;

pub const LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 3478);
/// TURN over TLS (both servers) when a [`Tls`] is given.
pub const TLS_LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5349);
/// Turnpike's TURN over QUIC when a [`Tls`] is given.
pub const QUIC_LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4433);

/// The certificate and key (PEM files) a server's TLS and QUIC listeners use.
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}
pub const USER: &str = "bench";
pub const PASSWORD: &str = "bench-password";
pub const REALM: &str = "turnpike.bench";

/// A relay process under test.
pub struct ServerProcess {
    child: Child,
    pub pid: u32,
    pub command: String,
    /// Cores whose whole busy time is the relay's (the fast path works in softirq,
    /// which no task is charged for); empty: the process's own CPU time.
    cores: Vec<usize>,
    /// Loopback's receive steering was pointed at `cores` for this server.
    steered: bool,
}

impl ServerProcess {
    pub fn proc_dir(&self) -> String {
        format!("/proc/{}", self.pid)
    }

    /// Where this server's CPU time is read.
    pub fn probe(&self) -> CpuProbe {
        CpuProbe {
            dir: self.proc_dir(),
            threads: true,
            cores: self.cores.clone(),
        }
    }
}

/// Loopback's receive packet steering (RPS) in the bench's namespace.
const LO_RPS: &str = "/sys/class/net/lo/queues/rx-0/rps_cpus";

/// Points loopback's receive processing at `cpus` (a hex CPU mask; empty: back to the
/// run's baseline — the sender's own core, as for every other server, unless
/// `TURNPIKE_BENCH_STEER` steers them all).
pub fn steer_loopback(cpus: &[usize]) -> Result<(), String> {
    let baseline = crate::traffic::STEERED_CORES
        .get()
        .map_or(&[][..], |c| &c[..]);
    let cpus = if cpus.is_empty() { baseline } else { cpus };
    let mask: u64 = cpus.iter().map(|c| 1u64 << c).sum();
    std::fs::write(LO_RPS, format!("{mask:x}\n")).map_err(|e| format!("{LO_RPS}: {e}"))
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.steered {
            if let Err(e) = steer_loopback(&[]) {
                eprintln!("warning: {e}");
            }
        }
        // SIGTERM first (both servers shut down cleanly on it), then SIGKILL.
        // SAFETY: kill on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Turnpike binary the bench was built with (Cargo builds the package's binaries
/// for benches, in the bench profile, which inherits `release`).
pub fn turnpike_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_turnpike"))
}

/// The `taskset -c` CPU list.
fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes Turnpike's config for the bench and starts it with `workers` threads
/// (`coalesce_us`: server.coalesce_us, else from the environment), with TLS and QUIC
/// listeners at [`TLS_LISTEN`] and [`QUIC_LISTEN`] when `tls` is given, and with
/// `telemetry.rtp_quality` as `rtp_quality` says.
///
/// With `fast_path`, the in-kernel fast path is attached to loopback. Its work happens
/// in the softirq that receives each packet, which on loopback runs on the *sender's*
/// core (the generator's) unless steered: so receive packet steering sends loopback's
/// receive processing to the relay's cores, and the relay's CPU is read as those
/// cores' busy time. That charges the relay core for more than other servers pay
/// (also the IP/UDP receive of each packet, which for them runs on the generator's
/// core): a conservative comparison.
pub fn start_turnpike(
    workers: usize,
    cpus: &[usize],
    dir: &Path,
    coalesce_us: Option<u64>,
    fast_path: bool,
    tls: Option<&Tls>,
    rtp_quality: bool,
) -> Result<ServerProcess, String> {
    let encrypted = match tls {
        Some(t) => format!(
            "tls = [\"{TLS_LISTEN}\"]\nquic = [\"{QUIC_LISTEN}\"]\n\n[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            t.cert.display(),
            t.key.display()
        ),
        None => String::new(),
    };
    let fast_path_interfaces = if fast_path { r#"["lo"]"# } else { "[]" };
    let config = dir.join("turnpike-bench.toml");
    // Opt-in busy-poll (server.busy_poll_us) for measuring its latency and idle cost:
    // TURNPIKE_BENCH_BUSY_POLL_US=50 cargo bench --bench relay -- --servers turnpike
    let busy_poll_us: u64 = std::env::var("TURNPIKE_BENCH_BUSY_POLL_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Opt-in coalescing (server.coalesce_us), likewise:
    // TURNPIKE_BENCH_COALESCE_US=200 cargo bench --bench relay -- --servers turnpike
    let coalesce_us: u64 = coalesce_us.unwrap_or_else(|| {
        std::env::var("TURNPIKE_BENCH_COALESCE_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    // Opt-in bandwidth caps (limits.max_bps_per_allocation, _per_user and _total, all
    // set to this many bits per second), for measuring what the caps cost per packet;
    // set them above the offered load so that nothing is dropped:
    // TURNPIKE_BENCH_MAX_BPS=100000000000 cargo bench --bench relay -- --servers turnpike
    let max_bps: u64 = std::env::var("TURNPIKE_BENCH_MAX_BPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Every key the bench depends on is spelled out; the rest keep their defaults.
    let text = format!(
        r#"# Written by benches/relay.rs.
[server]
realm = "{REALM}"
workers = {workers}
busy_poll_us = {busy_poll_us}
coalesce_us = {coalesce_us}
fast_path_interfaces = {fast_path_interfaces}

[listen]
udp = ["{LISTEN}"]
tcp = []
{encrypted}
[relay]
bind_ipv4 = "127.0.0.1"
bind_ipv6 = ""
port_min = 20000
port_max = 29999

[auth]
users = ["{USER}:{PASSWORD}"]

[limits]
user_quota = 0
total_quota = 0
max_bps_per_allocation = {max_bps}
max_bps_per_user = {max_bps}
max_bps_total = {max_bps}

[metrics]
listen = ""

[telemetry]
rtp_quality = {rtp_quality}

[signaling]
listen = ""

[log]
level = "warn"
"#
    );
    std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    let bin = turnpike_binary();
    let args: Vec<String> = vec![
        "serve".into(),
        "--config".into(),
        config.display().to_string(),
        "--allow-peer".into(),
        "127.0.0.1".into(),
    ];
    if fast_path {
        steer_loopback(cpus)?;
    }
    let mut server = match spawn("turnpike", &bin.display().to_string(), &args, cpus, dir) {
        Ok(s) => s,
        Err(e) => {
            if fast_path {
                let _ = steer_loopback(&[]);
            }
            return Err(e);
        }
    };
    if fast_path {
        server.steered = true;
        server.cores = cpus.to_vec();
    }
    Ok(server)
}

/// True when coturn's `turnserver` is installed.
pub fn coturn_available() -> bool {
    Command::new("turnserver")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Starts coturn with the equivalent setup: `-n` (no config file),
/// `-m workers` relay threads, UDP only (and TLS at [`TLS_LISTEN`] when `tls` is
/// given), same user and realm, loopback peers allowed.
pub fn start_coturn(
    workers: usize,
    cpus: &[usize],
    dir: &Path,
    tls: Option<&Tls>,
) -> Result<ServerProcess, String> {
    let mut args: Vec<String> = [
        "-n",
        "-m",
        &workers.to_string(),
        "--no-tcp",
        "--no-dtls",
        "--no-cli",
        "--no-tcp-relay",
        "--allow-loopback-peers",
        "--listening-ip",
        "127.0.0.1",
        "--listening-port",
        "3478",
        "--relay-ip",
        "127.0.0.1",
        "--min-port",
        "30000",
        "--max-port",
        "39999",
        "--lt-cred-mech",
        "--user",
        &format!("{USER}:{PASSWORD}"),
        "--realm",
        REALM,
        "--pidfile",
        &dir.join("coturn.pid").display().to_string(),
        "--log-file",
        "stdout",
        "--simple-log",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match tls {
        Some(t) => args.extend([
            "--tls-listening-port".into(),
            TLS_LISTEN.port().to_string(),
            "--cert".into(),
            t.cert.display().to_string(),
            "--pkey".into(),
            t.key.display().to_string(),
        ]),
        None => args.push("--no-tls".into()),
    }
    spawn("coturn", "turnserver", &args, cpus, dir)
}

fn spawn(
    name: &str,
    program: &str,
    args: &[String],
    cpus: &[usize],
    dir: &Path,
) -> Result<ServerProcess, String> {
    // coturn binds with SO_REUSEPORT, so a leftover server from an earlier run would
    // silently share the port and the numbers. Refuse to start on a port that answers.
    if turn::binding_ok(LISTEN, Duration::from_millis(150)) {
        return Err(format!(
            "{LISTEN} already answers STUN: another server is running"
        ));
    }
    let log_path = dir.join(format!("{name}.log"));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let command = format!("taskset -c {} {program} {}", cpu_list(cpus), args.join(" "));
    let child = Command::new("taskset")
        .arg("-c")
        .arg(cpu_list(cpus))
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot start {command}: {e}"))?;
    // taskset execs the program, so the child's pid is the server's.
    let mut server = ServerProcess {
        pid: child.id(),
        child,
        command,
        cores: Vec::new(),
        steered: false,
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(status)) = server.child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(format!("{name} exited ({status}): {tail}"));
        }
        if turn::binding_ok(LISTEN, Duration::from_millis(200)) {
            return Ok(server);
        }
    }
    Err(format!(
        "{name} did not answer STUN on {LISTEN} within 10 s"
    ))
}

/// The socket buffers every server runs with (`--buffers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffers {
    /// The bench sets this many bytes (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`) on every UDP
    /// socket of every server, client-facing and relay, once its allocations exist;
    /// the kernel reports twice that (its bookkeeping share).
    Equal(usize),
    /// Each server keeps what it sets itself: Turnpike forces 2 MiB on its listener
    /// and 512 KiB on relay sockets, coturn asks with `SO_RCVBUF`/`SO_SNDBUF`, capped
    /// by `net.core.rmem_max`/`wmem_max`, the bare forwarder forces 4 MiB.
    Native,
}

/// The default of `--buffers`: Turnpike's own listener size, for every socket.
pub const EQUAL_BUFFER: usize = 2 << 20;

impl Buffers {
    pub fn describe(self) -> String {
        match self {
            Buffers::Equal(b) => format!(
                "equal: the bench forces {} KiB on every UDP socket of every server",
                b >> 10
            ),
            Buffers::Native => "native: each server's own socket buffers".into(),
        }
    }
}

/// What one server's UDP sockets held, as the kernel reports it (`SO_RCVBUF`,
/// `SO_SNDBUF` = `ss -uamn`'s `rb`/`tb`; `UDP_GRO`), read after its traffic
/// allocations were set up: the client-facing socket(s) on port 3478, and the rest
/// (relay sockets).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SocketSummary {
    pub listeners: usize,
    pub listener_rcvbuf: Vec<usize>,
    pub listener_sndbuf: Vec<usize>,
    pub listener_gro: usize,
    pub relay_sockets: usize,
    /// (min, max) over the relay sockets.
    pub relay_rcvbuf: Option<(usize, usize)>,
    pub relay_sndbuf: Option<(usize, usize)>,
    pub relay_gro: usize,
}

impl SocketSummary {
    pub fn of(states: &[crate::sys::SocketState]) -> SocketSummary {
        let mut s = SocketSummary::default();
        let span = |acc: &mut Option<(usize, usize)>, v: usize| {
            *acc = Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
        };
        for st in states {
            if st.local.port() == LISTEN.port() {
                s.listeners += 1;
                s.listener_rcvbuf.push(st.rcvbuf);
                s.listener_sndbuf.push(st.sndbuf);
                s.listener_gro += usize::from(st.gro);
            } else {
                s.relay_sockets += 1;
                span(&mut s.relay_rcvbuf, st.rcvbuf);
                span(&mut s.relay_sndbuf, st.sndbuf);
                s.relay_gro += usize::from(st.gro);
            }
        }
        s.listener_rcvbuf.dedup();
        s.listener_sndbuf.dedup();
        s
    }

    /// "listener rb/tb 4096/4096 KiB, GRO on; 3378 relay sockets rb/tb 4096/4096 KiB".
    pub fn describe(&self) -> String {
        let kib = |v: &[usize]| {
            v.iter()
                .map(|b| (b >> 10).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let span = |s: Option<(usize, usize)>| match s {
            Some((lo, hi)) if lo == hi => format!("{}", lo >> 10),
            Some((lo, hi)) => format!("{}–{}", lo >> 10, hi >> 10),
            None => "—".into(),
        };
        let gro = |on: usize, of: usize| match on {
            0 => "UDP_GRO off".to_string(),
            n if n == of => "UDP_GRO on".to_string(),
            n => format!("UDP_GRO on {n} of {of}"),
        };
        format!(
            "listener rcv/snd {}/{} KiB, {}; {} relay sockets rcv/snd {}/{} KiB, {}",
            kib(&self.listener_rcvbuf),
            kib(&self.listener_sndbuf),
            gro(self.listener_gro, self.listeners),
            self.relay_sockets,
            span(self.relay_rcvbuf),
            span(self.relay_sndbuf),
            gro(self.relay_gro, self.relay_sockets),
        )
    }
}

/// Applies `buffers` to every UDP socket of process `pid` and reads back what each holds.
pub fn apply_buffers(pid: u32, buffers: Buffers) -> Result<SocketSummary, String> {
    let mut states = Vec::new();
    crate::sys::for_each_udp_socket(pid, |fd| {
        if let Buffers::Equal(bytes) = buffers {
            crate::sys::force_buffers(fd, bytes)?;
        }
        states.push(crate::sys::SocketState::of(fd)?);
        Ok(())
    })
    .map_err(|e| format!("socket buffers of pid {pid}: {e}"))?;
    Ok(SocketSummary::of(&states))
}

/// Turns `UDP_GRO` off on every UDP socket of process `pid`, so that nothing it
/// receives is coalesced.
pub fn gro_off(pid: u32) -> Result<(), String> {
    crate::sys::for_each_udp_socket(pid, |fd| crate::gso::set_gro(fd, false))
        .map(|_| ())
        .map_err(|e| format!("UDP_GRO off in pid {pid}: {e}"))
}
