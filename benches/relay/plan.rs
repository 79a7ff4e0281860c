//! What is measured on each server, in which order, for how long.

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use indicatif::ProgressBar;
use rand::RngCore;

use crate::bare::Bare;
use crate::results::{self, Direction, Kind, Ramp, ServerResult, SetupRun};
use crate::servers::{self, Buffers, ServerProcess, LISTEN};
use crate::srtp_pool::Pool;
use crate::sys::{self, PortAllocator};
use crate::traffic::{self, CpuProbe, Engine, Flows, Mix, StepResult, Stream};
use crate::turn::{self, Allocation, Creds};

/// Durations and sizes of one run; `--smoke` shrinks everything to seconds.
#[derive(Clone)]
pub struct Plan {
    pub smoke: bool,
    /// Audio ChannelData only, one worker (`--quick`).
    pub quick: bool,
    pub step_secs: f64,
    pub ramp_start: f64,
    pub ramp_factor: f64,
    pub ramp_max_steps: usize,
    /// Steps bisect (geometrically) between the last good rate and the first lossy
    /// one until they are at most this fraction apart (0.02: the capacity is known to
    /// within 2%), so a capacity is not rounded down by a whole ×1.3 step...
    pub resolution: f64,
    /// ...or until this many bisection steps were run.
    pub refine_max: usize,
    /// Fresh audio ChannelData capacity ramps per server, in rounds that interleave
    /// the servers (each started afresh per round), for the spread of each capacity
    /// and ratio.
    pub repetitions: usize,
    /// The socket buffers of every server (`--buffers`).
    pub buffers: Buffers,
    /// (requests in flight, allocations) for the setup-rate runs.
    pub setup_runs: Vec<(usize, usize)>,
    /// Allocations carrying traffic, and peer sockets (= channels per allocation).
    pub traffic_allocations: usize,
    pub peers: usize,
    pub cpu_rates: Vec<f64>,
    pub cpu_secs: f64,
    pub latency_secs: f64,
    /// "Idle": one packet every 5 ms, so every packet meets a sleeping relay.
    pub idle_rate: f64,
    /// Idle is measured longer, for enough samples that p99 is not one packet's luck.
    pub idle_secs: f64,
    /// Latency is measured in this many rounds over all servers (see latency.rs).
    pub latency_rounds: usize,
    pub relay_cpus: Vec<usize>,
    pub both_cpus: Vec<usize>,
}

impl Plan {
    pub fn new(smoke: bool, relay_cpu: usize, generator_cpu: usize) -> Plan {
        let mut both = vec![relay_cpu, generator_cpu];
        both.dedup();
        if smoke {
            Plan {
                smoke,
                quick: false,
                step_secs: 0.3,
                ramp_start: 2_000.0,
                ramp_factor: 2.5,
                ramp_max_steps: 2,
                resolution: 1.0,
                refine_max: 0,
                repetitions: 1,
                buffers: Buffers::Equal(servers::EQUAL_BUFFER),
                setup_runs: vec![(1, 5), (16, 20), (64, 40)],
                traffic_allocations: 4,
                peers: 4,
                cpu_rates: vec![10_000.0],
                cpu_secs: 0.5,
                latency_secs: 0.3,
                idle_rate: 200.0,
                idle_secs: 0.3,
                latency_rounds: 1,
                relay_cpus: vec![relay_cpu],
                both_cpus: both,
            }
        } else {
            Plan {
                smoke,
                quick: false,
                step_secs: 1.0,
                ramp_start: 25_000.0,
                ramp_factor: 1.3,
                ramp_max_steps: 15,
                resolution: 0.02,
                refine_max: 6,
                repetitions: 3,
                buffers: Buffers::Equal(servers::EQUAL_BUFFER),
                setup_runs: vec![(1, 250), (16, 1000), (64, 2000)],
                traffic_allocations: 128,
                peers: 32,
                cpu_rates: vec![10_000.0, 50_000.0, 100_000.0],
                cpu_secs: 3.0,
                latency_secs: 2.0,
                idle_rate: 200.0,
                idle_secs: 5.0,
                latency_rounds: 3,
                relay_cpus: vec![relay_cpu],
                both_cpus: both,
            }
        }
    }

    /// The directions to measure: all of `all`, or ChannelData alone when quick.
    pub fn directions(&self, all: &[Direction]) -> Vec<Direction> {
        let mut dirs = all.to_vec();
        if self.quick {
            dirs.retain(|d| *d == Direction::ChannelData);
        }
        dirs
    }

    /// Steps the progress bar is sized for (an upper bound on ramps, plus points).
    pub fn estimated_steps(&self, servers: usize) -> u64 {
        let ramp = self.ramp_max_steps + self.refine_max;
        let per = 8 * ramp + self.repetitions * ramp + self.cpu_rates.len() + self.latency_rounds;
        (servers * per) as u64
    }
}

/// Runs every measurement on one server; errors end up in `status`, never a panic.
pub fn measure(
    kind: Kind,
    plan: &Plan,
    pools: &[(Mix, Pool)],
    dir: &Path,
    bar: &ProgressBar,
) -> ServerResult {
    let mut result = ServerResult {
        server: kind.name().into(),
        status: "ok".into(),
        ..Default::default()
    };
    if kind == Kind::Coturn && !servers::coturn_available() {
        result.status = "missing".into();
        return result;
    }
    bar.set_message(kind.name());
    let outcome = match kind {
        Kind::TurnpikeCoalesce => {
            let quick = Plan {
                quick: true,
                ..plan.clone()
            };
            result.notes.push(format!(
                "server.coalesce_us = {}; audio ChannelData only",
                results::COALESCE_US
            ));
            measure_turn(kind, &quick, pools, dir, bar, &mut result)
        }
        Kind::TurnpikeFastPath => {
            let quick = Plan {
                quick: true,
                ..plan.clone()
            };
            result.notes.push(
                "server.fast_path_interfaces = [\"lo\"]: bound channels forwarded in the \
                 kernel; loopback's receive processing steered (RPS) to the relay's core, \
                 and relay CPU read as that core's busy time from /proc/stat, softirq \
                 included; audio ChannelData only"
                    .into(),
            );
            measure_turn(kind, &quick, pools, dir, bar, &mut result)
        }
        Kind::TurnpikeQuality => {
            result.notes.push(
                "telemetry.rtp_quality = true: every payload classified, every RTP stream's \
                 loss and jitter measured"
                    .into(),
            );
            measure_turn(kind, plan, pools, dir, bar, &mut result)
        }
        Kind::Turnpike | Kind::Coturn => measure_turn(kind, plan, pools, dir, bar, &mut result),
        Kind::BarePlain | Kind::BareBatched => measure_bare(kind, plan, pools, bar, &mut result),
    };
    if let Err(e) = outcome {
        result.status = format!("error: {e}");
    }
    result
}

fn start_turn(
    kind: Kind,
    workers: usize,
    cpus: &[usize],
    dir: &Path,
) -> Result<ServerProcess, String> {
    match kind {
        Kind::Coturn => servers::start_coturn(workers, cpus, dir, None),
        Kind::TurnpikeCoalesce => servers::start_turnpike(
            workers,
            cpus,
            dir,
            Some(results::COALESCE_US),
            false,
            None,
            false,
        ),
        Kind::TurnpikeFastPath => {
            servers::start_turnpike(workers, cpus, dir, None, true, None, false)
        }
        Kind::TurnpikeQuality => {
            servers::start_turnpike(workers, cpus, dir, None, false, None, true)
        }
        _ => servers::start_turnpike(workers, cpus, dir, None, false, None, false),
    }
}

fn creds() -> Creds {
    Creds {
        user: servers::USER.into(),
        password: servers::PASSWORD.into(),
    }
}

fn measure_turn(
    kind: Kind,
    plan: &Plan,
    pools: &[(Mix, Pool)],
    dir: &Path,
    bar: &ProgressBar,
    result: &mut ServerResult,
) -> Result<(), String> {
    let server = start_turn(kind, 1, &plan.relay_cpus, dir)?;
    result.command = Some(server.command.clone());
    let mut ports = PortAllocator::new();
    let e = |e: std::io::Error| e.to_string();

    // Allocation setup rate, and RSS growth over all the allocations it leaves behind.
    let rss_before = sys::rss_kib(server.pid).map_err(e)?;
    let mut made = 0;
    let mut setup_sockets = Vec::new();
    for &(window, n) in &plan.setup_runs {
        let out = turn::setup(
            LISTEN,
            &creds(),
            &mut ports,
            n,
            window,
            &[],
            Duration::from_secs(30),
        )
        .map_err(e)?;
        made += out.allocations.len();
        let secs = out.elapsed.as_secs_f64();
        result.setup.push(SetupRun {
            in_flight: window,
            allocations: out.allocations.len(),
            failures: out.failures,
            retransmits: out.retransmits,
            secs,
            per_sec: out.allocations.len() as f64 / secs.max(1e-9),
            errors: out.errors,
        });
        // Kept open: a closed client socket would not free the server's allocation,
        // but keeping them makes the bench's fd use explicit until the server stops.
        setup_sockets.extend(out.allocations);
    }
    std::thread::sleep(Duration::from_millis(200));
    let rss_after = sys::rss_kib(server.pid).map_err(e)?;
    if made > 0 {
        result.rss_kib_per_1000_allocations =
            Some((rss_after.saturating_sub(rss_before)) as f64 * 1000.0 / made as f64);
    }

    let (peers, peer_addrs) = bind_peers(&mut ports, plan.peers)?;
    let allocs = traffic_allocations(plan, &mut ports, &peer_addrs)?;
    let sockets = servers::apply_buffers(server.pid, plan.buffers)?;
    result.notes.push(format!(
        "buffers {}: {}",
        plan.buffers.describe(),
        sockets.describe()
    ));
    // Only a server whose client-facing socket asks for UDP_GRO is sent GSO video.
    let takes_gro = sockets.listener_gro > 0;
    result.sockets = Some(sockets);
    let probe = server.probe();
    let dirs = plan.directions(&[
        Direction::ChannelData,
        Direction::SendIndication,
        Direction::PeerToClient,
    ]);
    result.notes.push(if takes_gro {
        "video (best settings): sent as one UDP GSO message per frame, received whole \
         through UDP_GRO"
            .into()
    } else {
        "video (best settings): one datagram per packet (no UDP_GRO on its sockets)".into()
    });
    run_ramps_and_points(plan, pools, &dirs, &probe, bar, result, |mix, d| {
        let mut flows = turn_flows(mix, d, &allocs, &peers, &peer_addrs);
        flows.gso = takes_gro;
        flows
    })?;
    if !plan.quick && pool_of(pools, Mix::Video).is_ok() {
        // The same datagrams for every server: one per packet, UDP_GRO off.
        servers::gro_off(server.pid)?;
        let flows = turn_flows(
            Mix::Video,
            Direction::ChannelData,
            &allocs,
            &peers,
            &peer_addrs,
        );
        let mut ramp = run_ramp(
            plan,
            pools,
            Mix::Video,
            Direction::ChannelData,
            &flows,
            &probe,
            bar,
        )?;
        ramp.same_datagrams = true;
        result.ramps.push(ramp);
    }
    drop(server);
    drop(setup_sockets);
    if plan.quick {
        return Ok(());
    }

    // pps with 1 and 2 relay threads; with 2 the relay may use both cores, so it
    // shares the generator's.
    let one = result
        .ramp(Mix::Audio, Direction::ChannelData)
        .and_then(|r| r.pps_le_0_1pct);
    result.workers.push((1, one));
    let ramp = with_audio_flows(kind, 2, &plan.both_cpus, plan, dir, |flows, probe| {
        run_ramp(
            plan,
            pools,
            Mix::Audio,
            Direction::ChannelData,
            flows,
            probe,
            bar,
        )
    })?;
    result.workers.push((2, ramp.pps_le_0_1pct));
    result.notes.push(format!(
        "2 workers: relay allowed on cpus {:?}, sharing the generator's core",
        plan.both_cpus
    ));
    Ok(())
}

fn bind_peers(
    ports: &mut PortAllocator,
    n: usize,
) -> Result<(Vec<UdpSocket>, Vec<SocketAddrV4>), String> {
    let mut socks = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..n.max(1) {
        let s = ports.bind().map_err(|e| e.to_string())?;
        let Ok(std::net::SocketAddr::V4(a)) = s.local_addr() else {
            return Err("peer socket without an IPv4 address".into());
        };
        socks.push(s);
        addrs.push(a);
    }
    Ok((socks, addrs))
}

fn traffic_allocations(
    plan: &Plan,
    ports: &mut PortAllocator,
    peers: &[SocketAddrV4],
) -> Result<Vec<Allocation>, String> {
    let out = turn::setup(
        LISTEN,
        &creds(),
        ports,
        plan.traffic_allocations,
        64,
        peers,
        Duration::from_secs(30),
    )
    .map_err(|e| e.to_string())?;
    if out.allocations.is_empty() {
        return Err(format!(
            "no traffic allocation could be set up: {:?}",
            out.errors
        ));
    }
    Ok(out.allocations)
}

fn turn_flows(
    mix: Mix,
    dir: Direction,
    allocs: &[Allocation],
    peers: &[UdpSocket],
    peer_addrs: &[SocketAddrV4],
) -> Flows {
    let size = mix.packet_size();
    let alloc_fds = allocs.iter().map(|a| a.sock.as_raw_fd()).collect();
    let peer_fds = peers.iter().map(|p| p.as_raw_fd()).collect();
    let mut streams = Vec::new();
    let mut rng = rand::thread_rng();
    match dir {
        Direction::ChannelData | Direction::SendIndication => {
            for a in 0..allocs.len() {
                for (j, peer) in peer_addrs.iter().enumerate() {
                    let (prefix, pad) = if dir == Direction::ChannelData {
                        (traffic::channel_prefix(0x4000 + j as u16, size), 0)
                    } else {
                        let mut tid = [0u8; 12];
                        rng.fill_bytes(&mut tid);
                        traffic::send_indication_prefix(*peer, size, tid)
                    };
                    streams.push(Stream {
                        tx: a,
                        dest: sys::sockaddr(LISTEN),
                        prefix,
                        pad,
                    });
                }
            }
            Flows {
                tx: alloc_fds,
                rx: peer_fds,
                streams,
                gso: false,
            }
        }
        Direction::PeerToClient => {
            for j in 0..peers.len() {
                for a in allocs {
                    streams.push(Stream {
                        tx: j,
                        dest: sys::sockaddr(a.relayed),
                        prefix: Vec::new(),
                        pad: 0,
                    });
                }
            }
            Flows {
                tx: peer_fds,
                rx: alloc_fds,
                streams,
                gso: false,
            }
        }
    }
}

/// A bare forwarder on the relay's core with the TURN servers' shape: the generator's
/// client sockets (one per allocation) and peer sockets, and the forwarder's routes
/// between them (see bare.rs).
struct BareSetup {
    bare: Bare,
    allocs: Vec<Allocation>,
    peers: Vec<UdpSocket>,
    peer_addrs: Vec<SocketAddrV4>,
}

impl BareSetup {
    fn start(kind: Kind, plan: &Plan) -> Result<BareSetup, String> {
        let e = |e: std::io::Error| e.to_string();
        let mut ports = PortAllocator::new();
        let (peers, peer_addrs) = bind_peers(&mut ports, plan.peers)?;
        let mut clients = Vec::new();
        let mut routes = Vec::new();
        for a in 0..plan.traffic_allocations {
            let sock = ports.bind().map_err(e)?;
            let Ok(std::net::SocketAddr::V4(client)) = sock.local_addr() else {
                return Err("client socket without an IPv4 address".into());
            };
            for (j, &peer) in peer_addrs.iter().enumerate() {
                routes.push(crate::bare::Route {
                    client,
                    channel: 0x4000 + j as u16,
                    alloc: a,
                    peer,
                });
            }
            clients.push(sock);
        }
        let buffer = match plan.buffers {
            Buffers::Equal(bytes) => bytes,
            // The forwarder's own choice: without it (the kernel's 208 KiB) it lost 8%
            // at 25 kpps on this shared machine whenever another job held its core.
            Buffers::Native => 4 << 20,
        };
        let bare = Bare::start(
            kind == Kind::BareBatched,
            plan.traffic_allocations,
            &routes,
            buffer,
            plan.relay_cpus.clone(),
        )
        .map_err(e)?;
        let allocs = clients
            .into_iter()
            .zip(&bare.relayed)
            .map(|(sock, &relayed)| Allocation { sock, relayed })
            .collect();
        Ok(BareSetup {
            bare,
            allocs,
            peers,
            peer_addrs,
        })
    }

    fn flows(&self, mix: Mix, d: Direction) -> Flows {
        turn_flows(mix, d, &self.allocs, &self.peers, &self.peer_addrs)
    }
}

fn measure_bare(
    kind: Kind,
    plan: &Plan,
    pools: &[(Mix, Pool)],
    bar: &ProgressBar,
    result: &mut ServerResult,
) -> Result<(), String> {
    let setup = BareSetup::start(kind, plan)?;
    result.command = Some(format!(
        "in-process forwarder thread pinned to cpus {:?} ({}), {} allocation sockets × {} peers",
        plan.relay_cpus,
        if kind == Kind::BareBatched {
            "recvmmsg/sendmmsg ×64"
        } else {
            "recvfrom/sendto"
        },
        plan.traffic_allocations,
        plan.peers,
    ));
    let sockets = servers::SocketSummary::of(&setup.bare.sockets);
    result.notes.push(format!(
        "buffers {}: {}",
        plan.buffers.describe(),
        sockets.describe()
    ));
    result.sockets = Some(sockets);
    result.notes.push(
        "ChannelData in and out like the TURN servers, one table lookup per packet, no \
         other TURN logic; video: one datagram per packet"
            .into(),
    );
    let probe = CpuProbe::task(setup.bare.proc_dir(), false);
    let dirs = plan.directions(&[Direction::ChannelData, Direction::PeerToClient]);
    run_ramps_and_points(plan, pools, &dirs, &probe, bar, result, |mix, d| {
        setup.flows(mix, d)
    })?;
    if pool_of(pools, Mix::Video).is_ok() {
        let flows = setup.flows(Mix::Video, Direction::ChannelData);
        let mut ramp = run_ramp(
            plan,
            pools,
            Mix::Video,
            Direction::ChannelData,
            &flows,
            &probe,
            bar,
        )?;
        ramp.same_datagrams = true;
        result.ramps.push(ramp);
    }
    Ok(())
}

/// Starts `kind` afresh (`workers` threads on `cpus`; the bare forwarder always has
/// one, on the relay's core) with the plan's buffers, sets up the audio ChannelData
/// flows, and runs `f` on them
/// with the probe of the server's CPU time; the server stops when `f` returns.
pub fn with_audio_flows<T>(
    kind: Kind,
    workers: usize,
    cpus: &[usize],
    plan: &Plan,
    dir: &Path,
    f: impl FnOnce(&Flows, &CpuProbe) -> Result<T, String>,
) -> Result<T, String> {
    match kind {
        Kind::Turnpike
        | Kind::TurnpikeCoalesce
        | Kind::TurnpikeFastPath
        | Kind::TurnpikeQuality
        | Kind::Coturn => {
            let server = start_turn(kind, workers, cpus, dir)?;
            let mut ports = PortAllocator::new();
            let (peers, peer_addrs) = bind_peers(&mut ports, plan.peers)?;
            let allocs = traffic_allocations(plan, &mut ports, &peer_addrs)?;
            servers::apply_buffers(server.pid, plan.buffers)?;
            let flows = turn_flows(
                Mix::Audio,
                Direction::ChannelData,
                &allocs,
                &peers,
                &peer_addrs,
            );
            let probe = server.probe();
            let out = f(&flows, &probe);
            drop(server);
            out
        }
        Kind::BarePlain | Kind::BareBatched => {
            let setup = BareSetup::start(kind, plan)?;
            let probe = CpuProbe::task(setup.bare.proc_dir(), false);
            f(&setup.flows(Mix::Audio, Direction::ChannelData), &probe)
        }
    }
}

/// The ramps of every mix × direction, then CPU per packet on the audio ChannelData
/// path (the common case of a call relay). Latency comes later, in rounds over all
/// servers (latency.rs).
fn run_ramps_and_points(
    plan: &Plan,
    pools: &[(Mix, Pool)],
    dirs: &[Direction],
    probe: &CpuProbe,
    bar: &ProgressBar,
    result: &mut ServerResult,
    flows_for: impl Fn(Mix, Direction) -> Flows,
) -> Result<(), String> {
    for (mix, _) in pools {
        for &d in dirs {
            let flows = flows_for(*mix, d);
            result
                .ramps
                .push(run_ramp(plan, pools, *mix, d, &flows, probe, bar)?);
        }
    }
    let flows = flows_for(Mix::Audio, Direction::ChannelData);
    let pool = pool_of(pools, Mix::Audio)?;
    let mut engine = Engine::new(&flows).map_err(|e| e.to_string())?;
    for &rate in &plan.cpu_rates {
        let r = engine
            .run_step(&flows, pool, Mix::Audio, rate, plan.cpu_secs, Some(probe))
            .map_err(|e| e.to_string())?;
        bar.inc(1);
        result.cpu.push(r);
    }
    Ok(())
}

/// One repetition of the audio ChannelData capacity ramp on a fresh `kind`.
pub fn capacity_repetition(
    kind: Kind,
    plan: &Plan,
    pools: &[(Mix, Pool)],
    dir: &Path,
    bar: &ProgressBar,
) -> Result<Ramp, String> {
    with_audio_flows(kind, 1, &plan.relay_cpus, plan, dir, |flows, probe| {
        run_ramp(
            plan,
            pools,
            Mix::Audio,
            Direction::ChannelData,
            flows,
            probe,
            bar,
        )
    })
}

pub fn pool_of(pools: &[(Mix, Pool)], mix: Mix) -> Result<&Pool, String> {
    pools
        .iter()
        .find(|(m, _)| *m == mix)
        .map(|(_, p)| p)
        .ok_or_else(|| format!("no {} pool", mix.name()))
}

/// Steps the offered rate up geometrically until a step loses more than 0.1%, the
/// generator cannot keep up, or the step budget is spent; then bisects between the
/// last good and the first lossy rate down to `plan.resolution`.
///
/// The machine may be shared with other work: a step that loses packets or overran its time
/// (the generator itself was held up) is run once more and the better of the two kept,
/// so one burst of someone else's work does not end the ramp.
fn run_ramp(
    plan: &Plan,
    pools: &[(Mix, Pool)],
    mix: Mix,
    direction: Direction,
    flows: &Flows,
    probe: &CpuProbe,
    bar: &ProgressBar,
) -> Result<Ramp, String> {
    let pool = pool_of(pools, mix)?;
    let mut engine = Engine::new(flows).map_err(|e| e.to_string())?;
    let mut steps: Vec<StepResult> = Vec::new();
    let mut rate = plan.ramp_start;
    let suspicious = |r: &StepResult| r.loss > 0.001 || r.secs > plan.step_secs * 1.2;
    let mut step = |rate: f64| -> Result<StepResult, String> {
        let mut once = || {
            engine
                .run_step(flows, pool, mix, rate, plan.step_secs, Some(probe))
                .map_err(|e| e.to_string())
        };
        let mut r = once()?;
        if suspicious(&r) {
            let again = once()?;
            if again.loss < r.loss || (again.loss == r.loss && again.received_pps > r.received_pps)
            {
                r = again;
            }
        }
        bar.inc(1);
        Ok(r)
    };
    // The last rate that held, and the first that lost more than 0.1%.
    let (mut good, mut lossy) = (None, None);
    for _ in 0..plan.ramp_max_steps {
        let r = step(rate)?;
        let (limited, lost) = (r.generator_limited, r.loss > 0.001);
        steps.push(r);
        if lost {
            lossy = Some(rate);
            break;
        }
        if limited {
            break;
        }
        good = Some(rate);
        rate *= plan.ramp_factor;
    }
    let mut bracket = None;
    if let (Some(mut lo), Some(mut hi)) = (good, lossy) {
        for _ in 0..plan.refine_max {
            if hi / lo <= 1.0 + plan.resolution {
                break;
            }
            let mid = (lo * hi).sqrt();
            let r = step(mid)?;
            let lost = r.loss > 0.001;
            let limited = r.generator_limited;
            steps.push(r);
            if limited {
                break;
            }
            if lost {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        bracket = Some(hi / lo - 1.0);
    }
    // In rate order for the chart (refining steps come after the lossy one).
    steps.sort_by(|a, b| a.offered_pps.total_cmp(&b.offered_pps));
    let best = |max_loss: f64| {
        steps
            .iter()
            .filter(|s| s.loss <= max_loss && s.received > 0)
            .max_by(|a, b| a.received_pps.total_cmp(&b.received_pps))
    };
    let le = best(0.001);
    Ok(Ramp {
        mix,
        direction,
        packet_bytes: mix.packet_size(),
        pps_zero_loss: best(0.0).map(|s| s.received_pps),
        pps_le_0_1pct: le.map(|s| s.received_pps),
        lower_bound: le.is_some() && steps.iter().all(|s| s.loss <= 0.001),
        resolution: bracket,
        same_datagrams: false,
        steps,
    })
}
