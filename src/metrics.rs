//! Prometheus metrics and the health endpoints.
//!
//! The core and the shell count in plain integers; once a second each worker hands its
//! counters to a [`StatsPublisher`], which adds the delta to the `metrics` registry. So no
//! packet ever touches the registry, and every label comes from a bounded set (method,
//! result code, direction, reason, worker) — never a user or an allocation.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use ::metrics::{Counter, Gauge};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::fastpath::FastPathCounters;
use crate::proto::stats::{Direction, DropReason, MethodLabel, Stats};
use crate::proto::Transport;

/// Counters of the shell itself (socket trouble the core never sees).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellStats {
    /// A send failed in the kernel (other than a full socket buffer).
    pub send_errors: u64,
    /// A packet was dropped because a socket buffer or a stream's output backlog was full.
    pub send_backlog: u64,
    /// A receive failed with something other than "no more data".
    pub recv_errors: u64,
    /// TCP/TLS connections accepted.
    pub connections_accepted: u64,
    /// UDP GSO sends (one syscall for several datagrams) and the datagrams they carried.
    pub gso_sends: u64,
    pub gso_segments: u64,
}

/// Installs the Prometheus recorder as the global `metrics` recorder, once per process;
/// later calls (tests, restarts of the relay in one process) get the same handle.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if let Err(e) = ::metrics::set_global_recorder(recorder) {
                // Someone else installed a recorder first: our handle then renders an
                // empty registry, which is visible on /metrics rather than fatal.
                tracing::warn!("metrics recorder already installed: {e}");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use ::metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "turnpike_requests_total",
        "STUN/TURN requests by method and result"
    );
    describe_counter!(
        "turnpike_relayed_packets_total",
        "Relayed packets by direction"
    );
    describe_counter!(
        "turnpike_relayed_bytes_total",
        "Relayed payload bytes by direction"
    );
    describe_counter!(
        "turnpike_fastpath_packets_total",
        "ChannelData packets the in-kernel fast path forwarded, by direction (not in turnpike_relayed_packets_total)"
    );
    describe_counter!(
        "turnpike_fastpath_bytes_total",
        "Payload bytes the in-kernel fast path forwarded, by direction"
    );
    describe_counter!(
        "turnpike_fastpath_expired_total",
        "Packets that matched an expired fast-path route and went to the sockets"
    );
    describe_counter!(
        "turnpike_dropped_packets_total",
        "Dropped packets by reason"
    );
    describe_counter!(
        "turnpike_allocations_created_total",
        "Allocations created, by the client's transport (udp, tcp, tls, quic)"
    );
    describe_counter!(
        "turnpike_allocations_deleted_total",
        "Allocations expired or deleted"
    );
    describe_gauge!("turnpike_allocations", "Allocations alive, per worker");
    describe_counter!(
        "turnpike_send_errors_total",
        "Packets the shell failed to send"
    );
    describe_counter!("turnpike_recv_errors_total", "Socket receive errors");
    describe_counter!(
        "turnpike_stream_connections_total",
        "TCP/TLS connections accepted"
    );
}

/// Publishes one worker's counters as deltas since its previous call.
///
/// Every series is registered once, up front: publishing then only adds to handles it
/// already holds, so the worker thread allocates nothing after start-up (label sets and
/// keys are built here, not once a second), and every known label combination is
/// exported from the start at 0, as Prometheus recommends, instead of appearing later.
pub struct StatsPublisher {
    last: Stats,
    last_shell: ShellStats,
    /// `[method][result column]`, as `Stats::requests`.
    requests: Vec<Vec<Counter>>,
    packets: [Counter; 2],
    bytes: [Counter; 2],
    drops: Vec<Counter>,
    /// Allocations created, per transport (`Transport::index` order).
    created: [Counter; 4],
    deleted: Counter,
    allocations: Gauge,
    send_errors: Counter,
    send_backlog: Counter,
    recv_errors: Counter,
    connections: Counter,
    gso_sends: Counter,
    gso_segments: Counter,
}

impl std::fmt::Debug for StatsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsPublisher").finish_non_exhaustive()
    }
}

/// Adds `now - last` to a counter.
fn add(counter: &Counter, now: u64, last: u64) {
    // Counters are monotonic; saturate in case a core was replaced by a fresh one.
    let delta = now.saturating_sub(last);
    if delta > 0 {
        counter.increment(delta);
    }
}

impl StatsPublisher {
    pub fn new(worker: usize) -> StatsPublisher {
        use ::metrics::{counter, gauge};
        let columns = Stats::default().requests.first().map_or(0, |row| row.len());
        let requests = MethodLabel::ALL
            .iter()
            .map(|method| {
                (0..columns)
                    .map(|index| {
                        counter!("turnpike_requests_total",
                            "method" => method.as_str(), "result" => Stats::result_label(index))
                    })
                    .collect()
            })
            .collect();
        let per_direction = |name: &'static str| {
            Direction::ALL.map(|dir| counter!(name, "direction" => dir.as_str()))
        };
        StatsPublisher {
            last: Stats::default(),
            last_shell: ShellStats::default(),
            requests,
            packets: per_direction("turnpike_relayed_packets_total"),
            bytes: per_direction("turnpike_relayed_bytes_total"),
            drops: DropReason::ALL
                .iter()
                .map(|r| counter!("turnpike_dropped_packets_total", "reason" => r.as_str()))
                .collect(),
            created: Transport::ALL
                .map(|t| counter!("turnpike_allocations_created_total", "transport" => t.as_str())),
            deleted: counter!("turnpike_allocations_deleted_total"),
            allocations: gauge!("turnpike_allocations", "worker" => worker.to_string()),
            send_errors: counter!("turnpike_send_errors_total", "reason" => "io_error"),
            send_backlog: counter!("turnpike_send_errors_total", "reason" => "backlog"),
            recv_errors: counter!("turnpike_recv_errors_total"),
            connections: counter!("turnpike_stream_connections_total"),
            gso_sends: counter!("turnpike_gso_sends_total"),
            gso_segments: counter!("turnpike_gso_segments_total"),
        }
    }

    /// Increments the registry counters by what `now_stats` counted since the last call
    /// and sets this worker's allocation gauge.
    pub fn publish(&mut self, now_stats: &Stats) {
        let last = &self.last;
        for (m, counters) in self.requests.iter().enumerate() {
            let (Some(row), Some(last_row)) = (now_stats.requests.get(m), last.requests.get(m))
            else {
                continue;
            };
            for ((counter, &n), &l) in counters.iter().zip(row).zip(last_row) {
                add(counter, n, l);
            }
        }
        for i in 0..2 {
            add(&self.packets[i], now_stats.packets[i], last.packets[i]);
            add(&self.bytes[i], now_stats.bytes[i], last.bytes[i]);
        }
        for (i, counter) in self.drops.iter().enumerate() {
            let get = |s: &Stats| s.drops.get(i).copied().unwrap_or(0);
            add(counter, get(now_stats), get(last));
        }
        for (i, counter) in self.created.iter().enumerate() {
            let get = |s: &Stats| {
                s.allocations_created_by_transport
                    .get(i)
                    .copied()
                    .unwrap_or(0)
            };
            add(counter, get(now_stats), get(last));
        }
        add(
            &self.deleted,
            now_stats.allocations_deleted,
            last.allocations_deleted,
        );
        self.allocations.set(now_stats.allocations as f64);
        self.last.clone_from(now_stats);
    }

    /// Same as [`Self::publish`] for the shell's own counters.
    pub fn publish_shell(&mut self, now: &ShellStats) {
        let last = &self.last_shell;
        add(&self.send_errors, now.send_errors, last.send_errors);
        add(&self.send_backlog, now.send_backlog, last.send_backlog);
        add(&self.recv_errors, now.recv_errors, last.recv_errors);
        add(
            &self.connections,
            now.connections_accepted,
            last.connections_accepted,
        );
        add(&self.gso_sends, now.gso_sends, last.gso_sends);
        add(&self.gso_segments, now.gso_segments, last.gso_segments);
        self.last_shell.clone_from(now);
    }
}

/// Publishes the in-kernel fast path's counters (one publisher per relay: they are
/// global, summed over CPUs by [`FastPath::counters`](crate::fastpath::FastPath::counters)).
pub struct FastPathPublisher {
    last: FastPathCounters,
    packets: [Counter; 2],
    bytes: [Counter; 2],
    expired: Counter,
}

impl FastPathPublisher {
    pub fn new() -> FastPathPublisher {
        use ::metrics::counter;
        let per_direction = |name: &'static str| {
            Direction::ALL.map(|dir| counter!(name, "direction" => dir.as_str()))
        };
        FastPathPublisher {
            last: FastPathCounters::default(),
            packets: per_direction("turnpike_fastpath_packets_total"),
            bytes: per_direction("turnpike_fastpath_bytes_total"),
            expired: counter!("turnpike_fastpath_expired_total"),
        }
    }

    pub fn publish(&mut self, now: &FastPathCounters) {
        let last = &self.last;
        let c2p = Direction::ToPeer as usize;
        let p2c = Direction::ToClient as usize;
        add(
            &self.packets[c2p],
            now.client_to_peer_packets,
            last.client_to_peer_packets,
        );
        add(
            &self.bytes[c2p],
            now.client_to_peer_bytes,
            last.client_to_peer_bytes,
        );
        add(
            &self.packets[p2c],
            now.peer_to_client_packets,
            last.peer_to_client_packets,
        );
        add(
            &self.bytes[p2c],
            now.peer_to_client_bytes,
            last.peer_to_client_bytes,
        );
        add(&self.expired, now.expired, last.expired);
        self.last = *now;
    }
}

impl Default for FastPathPublisher {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
struct HttpState {
    handle: PrometheusHandle,
    ready: Arc<AtomicBool>,
}

/// Serves `GET /metrics` (Prometheus text format), `/healthz` (the process is up),
/// `/readyz` (200 while `ready` is set, else 503) and the routes of `admin`, until the
/// listener fails. `serve::run` sets `ready` once the relay workers and signaling have
/// started, and clears it the moment a drain (SIGTERM) begins.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    ready: Arc<AtomicBool>,
    admin: Router,
) -> io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(HttpState { handle, ready })
        .merge(admin);
    axum::serve(listener, app).await
}

async fn metrics_page(State(state): State<HttpState>) -> impl IntoResponse {
    // Upkeep drains histogram buckets; cheap, and a scrape is the natural moment.
    state.handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.handle.render(),
    )
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
