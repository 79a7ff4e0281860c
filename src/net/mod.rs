//! The I/O shell: worker threads that own sockets and drive the sans-IO core.
//!
//! Each of `workers` OS threads runs its own poll loop with its own [`Server`] core, its
//! own `SO_REUSEPORT` listener on every configured address (the kernel keeps a client's
//! 5-tuple on one worker) and the relay sockets of the allocations its core created. So
//! both directions of an allocation are handled by one thread with no lock. What the
//! cores share — the relay port pool with its reservations and live relayed addresses,
//! and the allocation quotas — is one [`Shared`] handed to every core at start
//! ([`NetConfig::shared`]); a core touches it when an allocation is made or freed, never
//! per packet (ARCHITECTURE.md, "Threads and what they share").

pub(crate) mod batch;
mod bind;
pub mod conn_limits;
mod core;
#[cfg(debug_assertions)]
mod fault;
mod sockets;
mod stream;
#[cfg(test)]
mod tests;
pub mod tls;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use mio::{Poll, Waker};

use self::conn_limits::ConnLimits;
pub use self::conn_limits::ConnLimitsConfig;
use self::core::Core;
use crate::proto::report::AllocationReport;
use crate::proto::{Server, ServerConfig, Shared, Transport};
use sockets::{Sockets, Source};
use worker::Worker;

/// What the shell listens on and the core template every worker starts from.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Worker threads, at least 1 (typically one per core).
    pub workers: usize,
    /// Client-facing listen addresses per transport; port 0 picks a free port, shared by
    /// all workers.
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    /// Required iff `tls` is non-empty.
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    /// QUIC listen addresses (TURN in CONNECT-UDP tunnels over HTTP/3).
    pub quic: Vec<SocketAddr>,
    /// Required iff `quic` is non-empty.
    pub quic_config: Option<crate::quic::config::QuicConfig>,
    /// Core configuration, cloned for every worker.
    pub server: ServerConfig,
    /// What the workers' cores share: the relay port pool and the quotas (in the relay,
    /// a [`SharedPool`](crate::proto::SharedPool) over the configured port range).
    pub shared: Arc<dyn Shared>,
    /// Keep polling this long after traffic before blocking (zero: off).
    pub busy_poll: std::time::Duration,
    /// Under steady traffic, wait this long after a batch before looking again (zero:
    /// off); see `server.coalesce_us`.
    pub coalesce: std::time::Duration,
    /// The in-kernel ChannelData fast path, loaded and attached (`None`: off). Its
    /// presence turns on `server.fast_path`, so the cores report their routes.
    pub fast_path: Option<Arc<crate::fastpath::FastPath>>,
    /// Worker `i` seeds its core with `rng_seed + i`.
    pub rng_seed: u64,
    /// TCP/TLS connection caps and the unauthenticated timeout (default: none).
    pub conn_limits: ConnLimitsConfig,
}

impl NetConfig {
    /// One worker, no listeners, no busy-poll, no coalescing, no fast path, seed 0:
    /// callers set the fields that differ (`..NetConfig::new(server, shared)`).
    pub fn new(server: ServerConfig, shared: Arc<dyn Shared>) -> NetConfig {
        NetConfig {
            workers: 1,
            udp: Vec::new(),
            tcp: Vec::new(),
            tls: Vec::new(),
            tls_config: None,
            quic: Vec::new(),
            quic_config: None,
            server,
            shared,
            busy_poll: std::time::Duration::ZERO,
            coalesce: std::time::Duration::ZERO,
            fast_path: None,
            rng_seed: 0,
            conn_limits: ConnLimitsConfig::default(),
        }
    }
}

/// What the control plane asks of a running worker. Each worker owns the receiving end
/// of a channel and reads it when its waker rings, between two rounds of its poll loop:
/// nothing here takes a lock the packet path takes, and a command lands between two
/// packets, never during one.
#[derive(Debug, Clone)]
pub enum Command {
    /// Start draining (`Server::handle_drain`): refuse new allocations, keep the
    /// existing ones until they end or `deadline`.
    Drain { deadline: Instant },
    /// A reloaded core configuration (`Server::handle_config`).
    Config(Box<ServerConfig>),
    /// A reloaded certificate for TLS listeners: the next accepted connection uses it.
    Tls(Arc<rustls::ServerConfig>),
    /// A reloaded certificate for QUIC listeners: the next handshake uses it.
    Quic(Arc<quinn_proto::ServerConfig>),
    /// Send the core's [`AllocationReport`]s (`Server::allocation_reports`) here.
    Report(tokio::sync::mpsc::UnboundedSender<WorkerReport>),
}

/// One worker's answer to [`Command::Report`].
#[derive(Debug, Clone)]
pub struct WorkerReport {
    /// The worker's index.
    pub worker: usize,
    /// Its core's live allocations.
    pub allocations: Vec<AllocationReport>,
}

/// Asks the workers for their allocations, from any task: what `GET /v1/allocations`
/// uses. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reporter {
    workers: Vec<(mpsc::Sender<Command>, Arc<Waker>)>,
}

impl Reporter {
    /// Every worker's report, in worker order; a worker that does not answer within
    /// `timeout` (stopped, or stuck) is left out.
    pub async fn allocations(&self, timeout: std::time::Duration) -> Vec<WorkerReport> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut asked = 0;
        for (commands, waker) in &self.workers {
            if commands.send(Command::Report(tx.clone())).is_ok() && waker.wake().is_ok() {
                asked += 1;
            }
        }
        drop(tx);
        let mut reports = Vec::with_capacity(asked);
        let deadline = tokio::time::Instant::now() + timeout;
        while reports.len() < asked {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(report)) => reports.push(report),
                _ => break,
            }
        }
        reports.sort_by_key(|r: &WorkerReport| r.worker);
        reports
    }
}

/// How many workers have finished draining (their core says `drained`); the control
/// plane waits on it.
#[derive(Debug, Default)]
pub(crate) struct DrainProgress {
    drained: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl DrainProgress {
    /// Called once by each worker whose drain is over.
    pub(crate) fn worker_drained(&self) {
        self.drained.fetch_add(1, Ordering::AcqRel);
        // `notify_one` keeps a permit when nobody waits yet, so no report is missed.
        self.notify.notify_one();
    }
}

/// Worker threads that have ended, by index; the control plane waits on it, since a
/// worker ending before it was told to stop (a panic, a failed poll) leaves its
/// clients unserved.
#[derive(Debug, Default)]
struct Ended {
    workers: std::sync::Mutex<Vec<(usize, bool)>>,
    notify: tokio::sync::Notify,
}

/// Dropped when a worker thread ends, by returning or by unwinding from a panic.
struct EndReport {
    index: usize,
    ended: Arc<Ended>,
}

impl Drop for EndReport {
    fn drop(&mut self) {
        let panicked = std::thread::panicking();
        self.ended
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.index, panicked));
        self.ended.notify.notify_one();
    }
}

/// The running workers. Dropping it stops them too.
pub struct RelayHandle {
    addrs: Vec<(Transport, SocketAddr)>,
    workers: Vec<WorkerHandle>,
    progress: Arc<DrainProgress>,
    ended: Arc<Ended>,
}

struct WorkerHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl RelayHandle {
    /// The bound listener addresses (port 0 resolved), one per configured address.
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.addrs.clone()
    }

    /// Gives `command` to every worker and wakes it.
    pub fn broadcast(&self, command: &Command) {
        for w in &self.workers {
            // A worker that has ended dropped its receiver; it has nothing to apply.
            if w.commands.send(command.clone()).is_ok() {
                if let Err(e) = w.waker.wake() {
                    tracing::warn!("cannot wake worker: {e}");
                }
            }
        }
    }

    /// A handle that asks the workers for their allocations (see [`Reporter`]).
    pub fn reporter(&self) -> Reporter {
        Reporter {
            workers: self
                .workers
                .iter()
                .map(|w| (w.commands.clone(), w.waker.clone()))
                .collect(),
        }
    }

    /// Whether every worker thread is still running (none has ended on an error or a
    /// panic): what the systemd watchdog vouches for.
    pub fn workers_alive(&self) -> bool {
        self.workers
            .iter()
            .all(|w| w.thread.as_ref().is_some_and(|t| !t.is_finished()))
    }

    /// Completes when a worker thread has ended, with its index and whether it
    /// panicked. Workers end only when told to stop (`shutdown`, drop), so while they run
    /// this reports a failure.
    pub async fn worker_ended(&self) -> (usize, bool) {
        loop {
            let first = self
                .ended
                .workers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .first()
                .copied();
            if let Some(ended) = first {
                return ended;
            }
            self.ended.notify.notified().await;
        }
    }

    /// Start draining every worker (see [`Command::Drain`]).
    pub fn drain(&self, deadline: Instant) {
        self.broadcast(&Command::Drain { deadline });
    }

    /// Completes once every worker's drain is over: its last allocation is gone or the
    /// deadline given to [`RelayHandle::drain`] has come.
    pub async fn drained(&self) {
        while self.progress.drained.load(Ordering::Acquire) < self.workers.len() {
            self.progress.notify.notified().await;
        }
    }

    /// Stops every worker and waits for its thread to end.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        // Workers already joined (by `shutdown`, before `drop`) are skipped.
        for w in self.workers.iter().filter(|w| w.thread.is_some()) {
            w.stop.store(true, Ordering::Release);
            if let Err(e) = w.waker.wake() {
                tracing::warn!("cannot wake worker: {e}");
            }
        }
        for w in &mut self.workers {
            if let Some(thread) = w.thread.take() {
                if thread.join().is_err() {
                    tracing::error!("a worker thread panicked");
                }
            }
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Everything one worker owns before its thread starts.
struct Prepared {
    poll: Poll,
    io: Sockets,
    waker: Arc<Waker>,
    config: ServerConfig,
}

/// Binds every socket (so that a bad address fails here, not in a thread), then starts the
/// workers.
pub fn start(cfg: NetConfig) -> io::Result<RelayHandle> {
    #[cfg(debug_assertions)]
    if let Some(trigger) = fault::trigger() {
        tracing::warn!("{}: a worker panics on its trigger datagram", fault::ENV);
        return start_with(cfg, move |config, shared, seed| fault::PanicOn {
            core: Server::new(config, shared, seed),
            trigger: trigger.clone(),
        });
    }
    start_with(cfg, Server::new)
}

/// [`start`] with any core; `make_core(config, shared, seed)` runs on each worker's
/// thread, so the core never crosses threads.
fn start_with<C, F>(mut cfg: NetConfig, make_core: F) -> io::Result<RelayHandle>
where
    C: Core,
    F: Fn(ServerConfig, Arc<dyn Shared>, u64) -> C + Clone + Send + 'static,
{
    if cfg.workers == 0 {
        return Err(invalid("at least one worker is required"));
    }
    if !cfg.tls.is_empty() && cfg.tls_config.is_none() {
        return Err(invalid(
            "TLS listen addresses need a TLS certificate and key",
        ));
    }
    if !cfg.quic.is_empty() && cfg.quic_config.is_none() {
        return Err(invalid("QUIC listen addresses need a QUIC configuration"));
    }
    cfg.server.fast_path = cfg.fast_path.is_some();
    let relay_v4 = cfg.server.relay_v4.as_ref().map(|r| r.bind);
    let relay_v6 = cfg.server.relay_v6.as_ref().map(|r| r.bind);

    let conn_limits = Arc::new(ConnLimits::new(cfg.conn_limits));
    let mut prepared = Vec::with_capacity(cfg.workers);
    for _ in 0..cfg.workers {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Arc::new(Waker::new(poll.registry(), Source::Waker.token())?);
        let mut io = Sockets::new(registry, relay_v4, relay_v6, cfg.tls_config.clone())?;
        io.conn_limits = conn_limits.clone();
        let config = cfg.server.clone();
        prepared.push(Prepared {
            poll,
            io,
            waker,
            config,
        });
    }

    let mut addrs = Vec::new();
    for &addr in &cfg.udp {
        let bound = bind_all(addr, &mut prepared, |p, a| {
            let sock = bind::udp_listener(a)?;
            let local = sock.local_addr()?;
            p.io.add_udp_listener(sock)?;
            Ok(local)
        })?;
        addrs.push((Transport::Udp, bound));
    }
    for (transport, list) in [(Transport::Tcp, &cfg.tcp), (Transport::Tls, &cfg.tls)] {
        for &addr in list {
            let bound = bind_all(addr, &mut prepared, |p, a| {
                let sock = bind::tcp_listener(a)?;
                let local = sock.local_addr()?;
                p.io.add_stream_listener(sock, transport)?;
                Ok(local)
            })?;
            addrs.push((transport, bound));
        }
    }
    if let Some(quic_config) = &cfg.quic_config {
        // Bind every QUIC socket first: a tunnel may target any of this relay's TURN
        // listeners, QUIC ones included, as bound (port 0 resolved).
        let mut sockets: Vec<(usize, mio::net::UdpSocket)> = Vec::new();
        for &addr in &cfg.quic {
            let mut index = 0;
            let bound = bind_all(addr, &mut prepared, |_, a| {
                let sock = bind::udp_listener(a)?;
                let local = sock.local_addr()?;
                sockets.push((index, sock));
                index += 1;
                Ok(local)
            })?;
            // Socket i of the reuseport group is worker i's: steer by connection ID.
            let first = index
                .checked_sub(1)
                .and_then(|n| sockets.iter().rev().nth(n));
            if let Some((_, first)) = first {
                crate::quic::steer::attach_steering(first)?;
            }
            addrs.push((Transport::Quic, bound));
        }
        let mut targets = (*quic_config.targets).clone();
        targets.addrs.extend(addrs.iter().map(|&(_, a)| a));
        targets.addrs.sort();
        targets.addrs.dedup();
        let quic_config = crate::quic::config::QuicConfig {
            targets: Arc::new(targets),
            ..quic_config.clone()
        };
        for (index, sock) in sockets {
            let listener = crate::quic::QuicListener::new(sock, quic_config.clone(), index)?;
            if let Some(p) = prepared.get_mut(index) {
                p.io.add_quic_listener(listener)?;
            }
        }
    }
    for (transport, addr) in &addrs {
        tracing::info!(transport = transport.as_str(), %addr, workers = cfg.workers, "listening");
    }

    let mut handle = RelayHandle {
        addrs,
        workers: Vec::with_capacity(cfg.workers),
        progress: Arc::new(DrainProgress::default()),
        ended: Arc::new(Ended::default()),
    };
    for (index, p) in prepared.into_iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let seed = cfg.rng_seed.wrapping_add(index as u64);
        let thread_stop = stop.clone();
        let make_core = make_core.clone();
        let busy_poll = cfg.busy_poll;
        let coalesce = cfg.coalesce;
        let fast_path = cfg.fast_path.clone();
        let shared = cfg.shared.clone();
        let (commands, command_rx) = mpsc::channel();
        let progress = handle.progress.clone();
        let end_report = EndReport {
            index,
            ended: handle.ended.clone(),
        };
        let Prepared {
            poll,
            io,
            waker,
            config,
        } = p;
        // On failure `handle` drops, stopping the workers already started.
        let thread = std::thread::Builder::new()
            .name(format!("turnpike-worker-{index}"))
            .spawn(move || {
                let _end_report = end_report;
                let core = make_core(config, shared, seed);
                Worker::new(index, poll, core, io, thread_stop)
                    .with_busy_poll(busy_poll)
                    .with_coalesce(coalesce)
                    .with_fast_path(fast_path)
                    .with_control(command_rx, progress)
                    .run();
            })?;
        handle.workers.push(WorkerHandle {
            stop,
            waker,
            commands,
            thread: Some(thread),
        });
    }
    Ok(handle)
}

/// Binds `addr` on every worker. With port 0 the first worker's socket picks the port
/// and the others bind that same port: SO_REUSEPORT shares one port, not "any" port.
fn bind_all(
    addr: SocketAddr,
    prepared: &mut [Prepared],
    mut bind_one: impl FnMut(&mut Prepared, SocketAddr) -> io::Result<SocketAddr>,
) -> io::Result<SocketAddr> {
    let mut target = addr;
    for p in prepared.iter_mut() {
        let local = bind_one(p, target)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {target}: {e}")))?;
        target.set_port(local.port());
    }
    Ok(target)
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}
