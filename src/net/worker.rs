//! One worker thread: a `mio::Poll` loop that owns its sockets and its own core (the
//! relay's `Server`, behind [`Core`]; see "Threads and what they share" in
//! ARCHITECTURE.md). Everything here is `&mut self`; the only things shared with other
//! threads are the stop flag and the waker.
//!
//! The core decides all protocol behaviour. The worker only moves bytes: after each
//! `handle_*` call it drains `poll_event` (open/close relay sockets) and `poll_transmit`
//! (send), then sleeps until the earlier of `poll_timeout()` and the next metrics publish.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::batch::{for_each_run, send_segments, Pending, RecvBatch, BATCH};
use super::conn_limits::Refused;
use super::core::Core;
use super::sockets::{count_send, send_on_relay, Sockets, Source};
use super::stream::{Close, ReadStatus, StreamConn};
use super::{Command, DrainProgress, WorkerReport};
use crate::fastpath::{FastPath, Routes};
use crate::metrics::{FastPathPublisher, StatsPublisher};
use crate::proto::{ClientId, Event, RelayKey, Transport};
use crate::quic::TunnelInput;

/// Reads per socket per wake-up before moving on to other sockets (fairness: one busy
/// client must not starve the rest of the worker).
const READ_BUDGET: usize = 256;
/// The kernel's cap on datagrams coalesced into one GRO receive (`UDP_GRO`).
const MAX_GRO_SEGMENTS: usize = 64;
/// Ready sockets handled per wake-up without growing the worker's lists.
const READY_CAPACITY: usize = 1024;
/// How often the worker's counters are published to the metrics registry.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// A UDP socket the worker reads in batches. The two kinds differ only in the socket,
/// in how a received datagram is handed to the core, and in where the forwards go.
#[derive(Debug, Clone, Copy)]
enum UdpSource {
    /// Client-facing listener `i`, with GRO: one receive may hold several datagrams
    /// of one client. Forwards go to peers, out of relay sockets.
    Listener(usize),
    /// A relay socket, without GRO: one receive is one peer datagram, with headroom in
    /// its slot for the core to frame it. Forwards go to the allocations' clients.
    Relay(RelayKey),
}

pub(crate) struct Worker<C> {
    pub(crate) index: usize,
    pub(crate) poll: Poll,
    pub(crate) core: C,
    pub(crate) io: Sockets,
    /// The worker's receive slots, allocated once. A field of their own, borrowed apart
    /// from `core` and `io`: a datagram goes to the core straight from its slot, and
    /// forwards are sent from the slots through `io`. The core's decisions are ranges
    /// of its input, not borrows of it, so `drain` (all of `self`) may run between two
    /// datagrams of a batch.
    batch: Box<RecvBatch>,
    /// Forwards decided during one batch, sent as GSO runs after it. Allocated once;
    /// they only grow during warm-up.
    to_peer: Vec<Pending<RelayKey>>,
    to_client: Vec<Pending<ClientId>>,
    /// Sockets that still had data when their read budget ran out: with edge-triggered
    /// readiness no new event would come for them, so they are revisited next round.
    again: Vec<Token>,
    stop: Arc<AtomicBool>,
    publisher: StatsPublisher,
    /// Opt-in busy-poll: keep polling without sleeping this long after the last traffic.
    busy_poll: Duration,
    /// Opt-in interrupt coalescing: under steady traffic, wait this long after a batch
    /// before looking again, so one wake-up handles what arrived meanwhile.
    coalesce: Duration,
    /// Datagrams handled since the last wake-up (the rate estimate for coalescing).
    wake_datagrams: u64,
    /// The in-kernel fast path's entries for this worker's allocations (removed when
    /// the worker ends, panics included).
    fast_routes: Option<Routes>,
    /// Worker 0 publishes the kernel's counters (they are global, not per worker) when
    /// the fast path is on.
    fast_publisher: Option<FastPathPublisher>,
    /// Commands from the control plane (drain, reloaded configuration and
    /// certificates), read when the waker rings.
    commands: Option<mpsc::Receiver<Command>>,
    /// Where this worker reports that its drain is over.
    progress: Option<Arc<DrainProgress>>,
    /// Draining and not yet reported drained: the loop asks the core after each round.
    drain_pending: bool,
}

impl<C: Core> Worker<C> {
    pub(crate) fn new(
        index: usize,
        poll: Poll,
        core: C,
        io: Sockets,
        stop: Arc<AtomicBool>,
    ) -> Worker<C> {
        let publisher = StatsPublisher::new(index, core.rtp_quality());
        Worker {
            index,
            poll,
            core,
            io,
            batch: Box::new(RecvBatch::new()),
            // Sized for the worst case up front, so no packet ever grows them: GRO may
            // coalesce up to 64 datagrams into each of a batch's slots; relay sockets
            // have no GRO.
            to_peer: Vec::with_capacity(BATCH * MAX_GRO_SEGMENTS),
            to_client: Vec::with_capacity(BATCH),
            again: Vec::with_capacity(READY_CAPACITY),
            stop,
            publisher,
            busy_poll: Duration::ZERO,
            coalesce: Duration::ZERO,
            wake_datagrams: 0,
            fast_routes: None,
            fast_publisher: None,
            commands: None,
            progress: None,
            drain_pending: false,
        }
    }

    pub(crate) fn with_control(
        mut self,
        commands: mpsc::Receiver<Command>,
        progress: Arc<DrainProgress>,
    ) -> Worker<C> {
        self.commands = Some(commands);
        self.progress = Some(progress);
        self
    }

    pub(crate) fn with_fast_path(mut self, fast_path: Option<Arc<FastPath>>) -> Worker<C> {
        // Worker 0 registers the fast path's counters even when it is off, so that they
        // read 0 (nothing went through the kernel) instead of being absent, and a
        // dashboard's fast-path share is 0 % rather than "no data".
        if self.index == 0 {
            self.fast_publisher = Some(FastPathPublisher::new());
        }
        self.fast_routes = fast_path.map(|f| f.routes());
        self
    }

    pub(crate) fn with_coalesce(mut self, coalesce: Duration) -> Worker<C> {
        self.coalesce = coalesce;
        self
    }

    pub(crate) fn with_busy_poll(mut self, busy_poll: Duration) -> Worker<C> {
        self.busy_poll = busy_poll;
        self
    }

    /// Runs until the stop flag is set (and the waker rung).
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(READY_CAPACITY);
        let mut next_publish = Instant::now() + PUBLISH_INTERVAL;
        let mut ready: Vec<Token> = Vec::with_capacity(2 * READY_CAPACITY);
        // When traffic was last seen; busy-poll spins until `busy_poll` after it.
        let mut last_traffic = Instant::now();
        // Time between the last two wake-ups that found traffic, and whether the last
        // one did: with the datagrams it handled, the rate that decides coalescing.
        let mut traffic_gap = Duration::MAX;
        let mut woke_to_traffic = false;
        if !self.coalesce.is_zero() {
            // Sleeps of tens of microseconds need a timer slack to match (the default,
            // 50 µs, would double them).
            // SAFETY: prctl with PR_SET_TIMERSLACK takes an integer; it affects only
            // this thread.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000u64) };
        }
        while !self.stop.load(Ordering::Acquire) {
            let spinning = !self.busy_poll.is_zero() && last_traffic.elapsed() < self.busy_poll;
            // Coalescing: right after a batch, if the rate it came at (datagrams over
            // the time since the batch before) would bring two or more within one
            // window, sleep one window so they are handled in one wake-up instead of
            // one each. Below that a sleep would only add a timer wake-up per packet.
            // A packet waits at most one window; one that arrives while the worker
            // blocks is handled at once, so sparse traffic (one call's audio, one video
            // frame every 33 ms) is never delayed.
            if !self.coalesce.is_zero()
                && woke_to_traffic
                && self.again.is_empty()
                && !spinning
                && u128::from(self.wake_datagrams) * self.coalesce.as_nanos()
                    >= 2 * traffic_gap.as_nanos()
            {
                std::thread::sleep(self.coalesce);
            }
            let timeout = if self.again.is_empty() && !spinning {
                let deadline = match self.core.poll_timeout() {
                    Some(t) => t.min(next_publish),
                    None => next_publish,
                };
                let deadline = self
                    .io
                    .quic
                    .iter_mut()
                    .filter_map(|l| l.poll_timeout())
                    .fold(deadline, Instant::min);
                Some(deadline.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(worker = self.index, "poll failed, worker stops: {e}");
                    break;
                }
            }
            // One clock read serves everything this wake-up handles: every datagram,
            // message and timer below sees this `now`, none reads the clock itself.
            // Before the next poll the clock is read again, since handling takes time:
            // for the poll timeout when the worker may block, and for the busy-poll
            // window when that is on.
            let now = Instant::now();
            woke_to_traffic = !events.is_empty();
            if woke_to_traffic {
                traffic_gap = now.saturating_duration_since(last_traffic);
                last_traffic = now;
            }
            self.wake_datagrams = 0;
            ready.clear();
            ready.append(&mut self.again);
            ready.extend(events.iter().map(|e| e.token()));
            // A token both requeued and freshly ready is dispatched twice; the second
            // visit costs one read that finds nothing, cheaper than de-duplicating.
            for &token in &ready {
                self.dispatch(now, token);
            }
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.core.handle_timeout(now);
                self.drain(now);
            }
            if !self.io.quic.is_empty() {
                self.service_quic(now);
            }
            if self.drain_pending && self.core.drained(now) {
                self.drain_pending = false;
                // The allocation gauge should read 0 on the last scrape before exit.
                self.publish();
                if let Some(progress) = &self.progress {
                    progress.worker_drained();
                }
                tracing::debug!(worker = self.index, "drained");
            }
            if now >= next_publish {
                if let Some(timeout) = self.io.conn_limits.unauthenticated_timeout() {
                    // Checked once a second: a connection lives at most a second past
                    // its deadline.
                    self.io.close_unauthenticated(now, timeout);
                    self.drain(now);
                    for i in 0..self.io.quic.len() {
                        let closed = self.io.quic[i].close_unauthenticated(now, timeout);
                        self.io.stats.connections_unauthenticated += closed;
                        self.handle_tunnel_inputs(now, i);
                    }
                }
                self.publish();
                next_publish = now + PUBLISH_INTERVAL;
            }
        }
        self.publish();
        // Dropping the worker removes its fast-path routes.
        tracing::debug!(worker = self.index, "worker stopped");
    }

    fn publish(&mut self) {
        self.publisher.publish(self.core.stats());
        self.publisher.publish_shell(&self.io.stats);
        if let (Some(publisher), Some(routes)) = (&mut self.fast_publisher, &self.fast_routes) {
            publisher.publish(&routes.fast_path().counters());
        }
    }

    fn dispatch(&mut self, now: Instant, token: Token) {
        match Source::of(token) {
            Some(Source::Waker) => self.handle_commands(now),
            None => {}
            Some(Source::UdpListener(i)) => self.read_udp(now, token, UdpSource::Listener(i)),
            Some(Source::StreamListener(i)) => self.accept(now, i),
            Some(Source::Relay(key)) => self.read_udp(now, token, UdpSource::Relay(key)),
            Some(Source::Conn(slot)) => self.conn_ready(now, token, slot),
            Some(Source::QuicListener(i)) => self.read_quic(now, token, i),
        }
    }

    /// Applies what the control plane sent; it rang the waker after each command.
    fn handle_commands(&mut self, now: Instant) {
        while let Some(command) = self.commands.as_ref().and_then(|rx| rx.try_recv().ok()) {
            match command {
                Command::Drain { deadline } => {
                    self.core.handle_drain(now, deadline);
                    self.drain_pending = true;
                }
                Command::Config(config) => self.core.handle_config(now, *config),
                Command::Tls(config) => self.io.set_tls_config(config),
                Command::Quic(config) => {
                    for listener in &mut self.io.quic {
                        listener.set_server_config(config.clone());
                    }
                }
                Command::Report(reply) => {
                    let _ = reply.send(WorkerReport {
                        worker: self.index,
                        allocations: self.core.allocation_reports(now),
                    });
                }
            }
            self.drain(now);
        }
    }

    /// QUIC packets on a QUIC listener: the listener runs QUIC and HTTP/3 and hands
    /// over whole TURN messages per tunnel, which go to the core like any client's.
    fn read_quic(&mut self, now: Instant, token: Token, i: usize) {
        let Some(listener) = self.io.quic.get_mut(i) else {
            return;
        };
        if listener.read(now) {
            self.again.push(token);
        }
        self.handle_tunnel_inputs(now, i);
    }

    /// Hands a QUIC listener's tunnel messages and closed tunnels to the core.
    fn handle_tunnel_inputs(&mut self, now: Instant, i: usize) {
        while let Some(input) = self.io.quic.get_mut(i).and_then(|l| l.poll_input()) {
            match input {
                TunnelInput::Message {
                    client,
                    bytes,
                    source,
                } => {
                    self.wake_datagrams += 1;
                    // Requests (STUN, RFC 7983) carry credentials; the core needs to
                    // know where they come from to throttle failed sign-ins.
                    if bytes.first().is_some_and(|&b| b <= 0x03) {
                        self.core.handle_tunnel_source(client, source);
                    }
                    if let Some(fwd) = self.core.handle_client_input(now, client, &bytes) {
                        let payload = bytes.get(fwd.range).unwrap_or_default();
                        let sent = send_on_relay(&self.io.relays, fwd.relay, fwd.peer, payload);
                        count_send(&mut self.io.stats, sent);
                    }
                }
                TunnelInput::Closed(client) => self.core.handle_client_closed(now, client),
            }
            self.drain(now);
        }
    }

    /// Fires due QUIC timers, then sends what every QUIC connection has to send.
    fn service_quic(&mut self, now: Instant) {
        for i in 0..self.io.quic.len() {
            let due = self.io.quic[i].poll_timeout().is_some_and(|t| t <= now);
            if due {
                self.io.quic[i].handle_timeout(now);
                self.handle_tunnel_inputs(now, i);
            }
            self.io.quic[i].flush(now);
        }
    }

    /// Datagrams on a UDP socket, a batch per syscall. Each is handed to the core as it
    /// comes, and what the core queued is carried out at once (STUN answers, relay
    /// sockets to open); the forwards of the whole batch are sent as GSO runs after it
    /// (one video frame to one peer or client: one send).
    fn read_udp(&mut self, now: Instant, token: Token, from: UdpSource) {
        for _ in 0..READ_BUDGET / BATCH {
            let batch = &mut self.batch;
            let received = match from {
                UdpSource::Listener(i) => {
                    let listener = self.io.udp.get(i);
                    listener.map(|l| batch.recv(&l.state, &l.sock))
                }
                UdpSource::Relay(key) => {
                    let sock = self.io.relays.get(&key);
                    sock.map(|sock| batch.recv(&self.io.relay_state, sock))
                }
            };
            let n = match received {
                // The socket is gone: a relay socket closed while its event was pending.
                None => return,
                Some(Ok(n)) => n,
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Some(Err(e)) => {
                    // E.g. an ICMP error surfacing; the next datagram is unaffected.
                    tracing::trace!(?from, "udp recv: {e}");
                    self.io.stats.recv_errors += 1;
                    continue;
                }
            };
            match from {
                UdpSource::Listener(i) => self.handle_client_batch(now, i, n),
                UdpSource::Relay(key) => self.handle_peer_batch(now, key, n),
            }
            if n < BATCH {
                // recvmmsg on a non-blocking socket stops at the first empty read, so a
                // short batch means the queue was empty. Under edge-triggered epoll each
                // later arrival raises a new event (the socket's wake-up runs per
                // datagram), so no read that ends in EAGAIN is needed: at low rates that
                // saves two of five syscalls per wake-up (that read, and a zero-timeout
                // poll for the requeued token).
                return;
            }
        }
        self.again.push(token);
    }

    /// The `n` receives of a batch from client-facing listener `listener`: each client
    /// datagram to the core, then its forwards to peers, out of the relay sockets.
    fn handle_client_batch(&mut self, now: Instant, listener: usize, n: usize) {
        let Some(local) = self.io.udp.get(listener).map(|l| l.local) else {
            return;
        };
        self.to_peer.clear();
        for d in 0..n {
            let client = ClientId {
                transport: Transport::Udp,
                remote: self.batch.meta[d].addr,
                local,
            };
            // GRO may have coalesced several datagrams of one client into the slot.
            for segment in self.batch.segments(d) {
                self.wake_datagrams += 1;
                let packet = self.batch.slot(d).get(segment.clone()).unwrap_or_default();
                if let Some(fwd) = self.core.handle_client_input(now, client, packet) {
                    // `fwd.range` is within the packet, which starts at `segment.start`.
                    let at = segment.start;
                    self.to_peer.push(Pending {
                        key: fwd.relay,
                        dst: fwd.peer,
                        slot: d,
                        range: at + fwd.range.start..at + fwd.range.end,
                    });
                }
                self.drain(now);
            }
        }
        let (relays, stats) = (&self.io.relays, &mut self.io.stats);
        // Set when the kernel refuses GSO: the worker stops trying (see send_run).
        let mut gso_failed = false;
        for_each_run(
            &self.to_peer,
            &self.batch,
            self.io.gso,
            |relay, peer, iovs, segment| {
                let sent = match relays.get(&relay) {
                    Some(sock) => send_run(sock, peer, iovs, segment, &mut gso_failed),
                    None => Err(io::Error::from(io::ErrorKind::NotFound)),
                };
                count_run(stats, segment, iovs.len(), sent);
            },
        );
        if gso_failed {
            self.io.gso = false;
        }
    }

    /// The `n` datagrams of a batch from relay socket `key`: each peer datagram to the
    /// core, which frames it for its client in place (in the slot's headroom), then the
    /// framed messages to their clients.
    fn handle_peer_batch(&mut self, now: Instant, key: RelayKey, n: usize) {
        self.to_client.clear();
        for d in 0..n {
            self.wake_datagrams += 1;
            let meta = self.batch.meta[d];
            let slot = self.batch.slot_mut(d);
            if let Some(out) = self
                .core
                .handle_peer_input(now, key, meta.addr, slot, meta.len)
            {
                self.to_client.push(Pending {
                    key: out.client,
                    dst: out.client.remote,
                    slot: d,
                    range: out.range,
                });
            }
            self.drain(now);
        }
        let io = &mut self.io;
        let mut gso_failed = false;
        for_each_run(
            &self.to_client,
            &self.batch,
            io.gso,
            |client, dst, iovs, segment| {
                if client.transport == Transport::Udp {
                    let sent = match io.udp.iter().find(|l| l.local == client.local) {
                        Some(l) => send_run(&l.sock, dst, iovs, segment, &mut gso_failed),
                        None => Err(io::Error::from(io::ErrorKind::NotFound)),
                    };
                    count_run(&mut io.stats, segment, iovs.len(), sent);
                } else {
                    // A stream has no datagrams: each segment of a run is one framed
                    // message, appended to the connection in order.
                    for iov in iovs {
                        io.send_to_client(client, iov);
                    }
                }
            },
        );
        if gso_failed {
            self.io.gso = false;
        }
    }

    /// Accepts every pending connection on a TCP or TLS listener.
    fn accept(&mut self, now: Instant, i: usize) {
        loop {
            let Some(listener) = self.io.listeners.get(i) else {
                return;
            };
            let transport = listener.transport;
            let (stream, remote) = match listener.sock.accept() {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_transient_accept_error(&e) => continue,
                Err(e) => {
                    // E.g. out of file descriptors: the next connection event retries.
                    tracing::warn!(worker = self.index, "accept failed: {e}");
                    self.io.stats.recv_errors += 1;
                    return;
                }
            };
            if let Err(e) = self.add_connection(now, stream, remote, transport) {
                tracing::debug!(%remote, "dropping new connection: {e}");
            }
        }
    }

    /// Registers a new connection. Bytes that arrived with it are reported by the
    /// registration itself (epoll reports the current state on add).
    fn add_connection(
        &mut self,
        now: Instant,
        stream: mio::net::TcpStream,
        remote: SocketAddr,
        transport: Transport,
    ) -> io::Result<()> {
        // Over a cap, the connection is closed at once (dropping `stream`), before any
        // TLS state or buffer is made for it.
        let counted = match self.io.conn_limits.acquire(remote.ip()) {
            Ok(counted) => counted,
            Err(refused) => {
                match refused {
                    Refused::Total => self.io.stats.connections_refused_total += 1,
                    Refused::PerSource => self.io.stats.connections_refused_per_source += 1,
                }
                return Err(io::Error::other(format!("connection limit: {refused:?}")));
            }
        };
        let mut conn = match self.new_connection(now, stream, remote, transport) {
            Ok(conn) => conn,
            Err(e) => {
                self.io.conn_limits.release(counted);
                return Err(e);
            }
        };
        conn.counted = Some(counted);
        let client = conn.client;
        // On failure `add_conn` gives the count back itself.
        self.io.add_conn(conn)?;
        tracing::debug!(%client, "stream connection accepted");
        Ok(())
    }

    fn new_connection(
        &self,
        now: Instant,
        stream: mio::net::TcpStream,
        remote: SocketAddr,
        transport: Transport,
    ) -> io::Result<StreamConn> {
        // Media and STUN transactions are small and latency-bound; never wait for Nagle.
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let tls = match transport {
            Transport::Tls => {
                let config = self.io.tls_config().cloned().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "TLS listener without config")
                })?;
                Some(rustls::ServerConnection::new(config).map_err(io::Error::other)?)
            }
            Transport::Tcp | Transport::Udp | Transport::Quic => None,
        };
        let client = ClientId {
            transport,
            remote,
            local,
        };
        Ok(StreamConn::new(stream, client, tls, now))
    }

    /// A stream connection is readable and/or writable: flush, then read and frame.
    fn conn_ready(&mut self, now: Instant, token: Token, slot: usize) {
        if !self.io.flush_conn(slot) {
            return self.drain(now);
        }
        for _ in 0..READ_BUDGET {
            let status = match self.io.read_conn(slot) {
                None => return,
                Some(Ok(status)) => status,
                Some(Err(reason)) => return self.close(now, slot, reason),
            };
            if let Err(reason) = self.handle_messages(now, slot) {
                return self.close(now, slot, reason);
            }
            if status == ReadStatus::Drained {
                return;
            }
        }
        self.again.push(token);
    }

    /// Hands every complete message in a connection's input to the core.
    fn handle_messages(&mut self, now: Instant, slot: usize) -> Result<(), Close> {
        loop {
            let Some(conn) = self.io.conn(slot) else {
                // Closed while draining (a send to it failed); already reported.
                return Ok(());
            };
            let Some((range, consume)) = conn.next_message()? else {
                return Ok(());
            };
            let client = conn.client;
            let message = conn.input(range);
            if let Some(fwd) = self.core.handle_client_input(now, client, message) {
                // Split borrows: the message lives in `conns`, the relay socket in `relays`.
                let payload = message.get(fwd.range).unwrap_or_default();
                let sent = send_on_relay(&self.io.relays, fwd.relay, fwd.peer, payload);
                count_send(&mut self.io.stats, sent);
            }
            if let Some(conn) = self.io.conn_mut(slot) {
                conn.consume(consume);
            }
            self.drain(now);
        }
    }

    fn close(&mut self, now: Instant, slot: usize, reason: Close) {
        self.io.close_conn(slot, reason);
        self.drain(now);
    }

    /// Carries out everything the core queued: relay sockets to open or close, messages
    /// to send, and closed stream connections to report (which may queue more).
    fn drain(&mut self, now: Instant) {
        loop {
            // Routes first: a deleted allocation leaves the kernel before its relay
            // socket closes, so no packet is forwarded for a port that may be reused.
            if let Some(routes) = &mut self.fast_routes {
                while let Some(update) = self.core.poll_fast_path(now) {
                    routes.apply(&update);
                }
            }
            while let Some(event) = self.core.poll_event() {
                match event {
                    Event::OpenRelay(key) => {
                        let outcome = self.io.open_relay(key).map_err(|e| {
                            tracing::debug!(?key, "cannot open relay socket: {e}");
                        });
                        self.core.handle_relay_opened(now, key, outcome);
                    }
                    Event::CloseRelay(key) => self.io.close_relay(key),
                    Event::DontFragment(key) => self.io.set_dont_fragment(key),
                    Event::Authenticated(client) => self.io.mark_authenticated(client),
                }
            }
            while let Some(t) = self.core.poll_transmit() {
                self.io.send_to_client(t.dst, &t.payload);
            }
            match self.io.closed.pop() {
                Some(client) => self.core.handle_client_closed(now, client),
                None => break,
            }
        }
    }
}

/// Errors about one connection that died in the accept queue; others may follow it.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Counts a run's outcome: one GSO syscall carrying `segments` datagrams, or one send.
fn count_run(
    stats: &mut crate::metrics::ShellStats,
    segment: Option<u16>,
    segments: usize,
    sent: io::Result<usize>,
) {
    if segment.is_some() && sent.is_ok() {
        stats.gso_sends += 1;
        stats.gso_segments += segments as u64;
    }
    count_send(stats, sent);
}

/// Send one GSO run (or a single datagram). If the kernel refuses GSO (some NICs and
/// virtual devices do), send the segments one by one and report it through
/// `gso_failed` so the worker stops trying.
fn send_run(
    sock: &mio::net::UdpSocket,
    dst: SocketAddr,
    iovs: &[std::io::IoSlice<'_>],
    segment: Option<u16>,
    gso_failed: &mut bool,
) -> io::Result<usize> {
    match send_segments(sock, dst, iovs, segment) {
        Err(e)
            if segment.is_some()
                && matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) =>
        {
            *gso_failed = true;
            let mut total = 0;
            for iov in iovs {
                total += send_segments(sock, dst, std::slice::from_ref(iov), None)?;
            }
            Ok(total)
        }
        other => other,
    }
}
