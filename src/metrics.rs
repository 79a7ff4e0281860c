//! Prometheus metrics and the health endpoints.
//!
//! The core and the shell count in plain integers; once a second each worker hands its
//! counters to a [`StatsPublisher`], which adds the delta to the `metrics` registry. So no
//! packet ever touches the registry, and every label comes from a bounded set (method,
//! result code, direction, reason, worker) — never a user or an allocation.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::proto::stats::{Direction, DropReason, MethodLabel, Stats};

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
        "turnpike_dropped_packets_total",
        "Dropped packets by reason"
    );
    describe_counter!("turnpike_allocations_created_total", "Allocations created");
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
#[derive(Debug)]
pub struct StatsPublisher {
    last: Stats,
    last_shell: ShellStats,
    worker: usize,
}

/// Adds `now - last` to a counter; skips zero so idle label combinations stay absent.
fn add(counter: impl FnOnce() -> ::metrics::Counter, now: u64, last: u64) {
    // Counters are monotonic; saturate in case a core was replaced by a fresh one.
    let delta = now.saturating_sub(last);
    if delta > 0 {
        counter().increment(delta);
    }
}

impl StatsPublisher {
    pub fn new(worker: usize) -> StatsPublisher {
        StatsPublisher {
            last: Stats::default(),
            last_shell: ShellStats::default(),
            worker,
        }
    }

    /// Increments the registry counters by what `now_stats` counted since the last call
    /// and sets this worker's allocation gauge.
    pub fn publish(&mut self, now_stats: &Stats) {
        use ::metrics::{counter, gauge};
        let last = &self.last;
        for method in MethodLabel::ALL {
            let (Some(row), Some(last_row)) = (
                now_stats.requests.get(method as usize),
                last.requests.get(method as usize),
            ) else {
                continue;
            };
            for (index, (&n, &l)) in row.iter().zip(last_row).enumerate() {
                add(
                    || {
                        counter!("turnpike_requests_total",
                            "method" => method.as_str(), "result" => Stats::result_label(index))
                    },
                    n,
                    l,
                );
            }
        }
        for dir in Direction::ALL {
            let i = dir as usize;
            let label = dir.as_str();
            let get = |a: &[u64; 2]| a.get(i).copied().unwrap_or(0);
            add(
                || counter!("turnpike_relayed_packets_total", "direction" => label),
                get(&now_stats.packets),
                get(&last.packets),
            );
            add(
                || counter!("turnpike_relayed_bytes_total", "direction" => label),
                get(&now_stats.bytes),
                get(&last.bytes),
            );
        }
        for reason in DropReason::ALL {
            let i = reason as usize;
            add(
                || counter!("turnpike_dropped_packets_total", "reason" => reason.as_str()),
                now_stats.drops.get(i).copied().unwrap_or(0),
                last.drops.get(i).copied().unwrap_or(0),
            );
        }
        add(
            || counter!("turnpike_allocations_created_total"),
            now_stats.allocations_created,
            last.allocations_created,
        );
        add(
            || counter!("turnpike_allocations_deleted_total"),
            now_stats.allocations_deleted,
            last.allocations_deleted,
        );
        gauge!("turnpike_allocations", "worker" => self.worker.to_string())
            .set(now_stats.allocations as f64);
        self.last.clone_from(now_stats);
    }

    /// Same as [`Self::publish`] for the shell's own counters.
    pub fn publish_shell(&mut self, now: &ShellStats) {
        use ::metrics::counter;
        let last = &self.last_shell;
        add(
            || counter!("turnpike_send_errors_total", "reason" => "io_error"),
            now.send_errors,
            last.send_errors,
        );
        add(
            || counter!("turnpike_send_errors_total", "reason" => "backlog"),
            now.send_backlog,
            last.send_backlog,
        );
        add(
            || counter!("turnpike_recv_errors_total"),
            now.recv_errors,
            last.recv_errors,
        );
        add(
            || counter!("turnpike_stream_connections_total"),
            now.connections_accepted,
            last.connections_accepted,
        );
        self.last_shell.clone_from(now);
    }
}

#[derive(Clone)]
struct HttpState {
    handle: PrometheusHandle,
    ready: Arc<AtomicBool>,
}

/// Serves `GET /metrics` (Prometheus text format), `/healthz` (the process is up) and
/// `/readyz` (503 until `ready` is set, and again while draining) until the listener fails.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    ready: Arc<AtomicBool>,
) -> io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(HttpState { handle, ready });
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
