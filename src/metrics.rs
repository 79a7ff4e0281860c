//! Prometheus metrics and the health endpoints.
//!
//! The core and the shell count in plain integers; once a second each worker hands its
//! counters to a [`StatsPublisher`], which adds the delta to the `metrics` registry. So no
//! packet ever touches the registry, and every label comes from a bounded set (method,
//! result code, direction, reason, worker) — never a user or an allocation.
//!
//! Besides the relay's counters, `/metrics` carries the signaling service's metrics
//! ([`turnpike_signaling::metrics`]), `turnpike_build_info`, the operations metrics of
//! drain and reload ([`init_operations_metrics`]) and the standard `process_*` metrics
//! ([`render_process_metrics`]).

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ::metrics::{Counter, Gauge};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use turnpike_signaling::metrics as signaling_metrics;

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
    /// TCP/TLS connections closed at accept: `limits.max_connections` reached.
    pub connections_refused_total: u64,
    /// TCP/TLS connections closed at accept: `limits.max_connections_per_source` reached.
    pub connections_refused_per_source: u64,
    /// TCP/TLS connections closed for want of an authenticated request in time.
    pub connections_unauthenticated: u64,
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
            // Histograms are rendered as Prometheus histograms (buckets, so that
            // `histogram_quantile` can aggregate them over instances) rather than the
            // exporter's default summaries.
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets_for_metric(
                Matcher::Full(signaling_metrics::CALL_SETUP_SECONDS.to_string()),
                &signaling_metrics::CALL_SETUP_BUCKETS,
            ) {
                Ok(builder) => builder,
                // Only an empty bucket list is refused, and the list is a fixed non-empty one.
                Err(e) => {
                    tracing::warn!("call-setup histogram buckets refused: {e}");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = ::metrics::set_global_recorder(recorder) {
                // Someone else installed a recorder first: our handle then renders an
                // empty registry, which is visible on /metrics rather than fatal.
                tracing::warn!("metrics recorder already installed: {e}");
            }
            describe();
            signaling_metrics::describe();
            ::metrics::gauge!("turnpike_build_info", "version" => env!("CARGO_PKG_VERSION"))
                .set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    use ::metrics::{describe_counter, describe_gauge};
    crate::rtp_metrics::describe();
    describe_counter!(
        "turnpike_requests_total",
        "STUN/TURN requests by method and result"
    );
    describe_counter!(
        "turnpike_relayed_packets_total",
        "Relayed packets by direction (to_peer, to_client) and the client's transport (udp, tcp, tls, quic)"
    );
    describe_counter!(
        "turnpike_relayed_bytes_total",
        "Relayed payload bytes by direction and the client's transport"
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
        "turnpike_auth_failures_total",
        "Requests with credentials refused with 401 (unknown user, wrong password, expired REST credential); the challenge to a request without credentials is not counted"
    );
    describe_counter!(
        "turnpike_auth_throttled_total",
        "Requests with credentials dropped unanswered because their source failed to sign in too often (limits.auth_failures_per_minute)"
    );
    describe_counter!(
        "turnpike_stream_connections_rejected_total",
        "TCP/TLS connections closed by a limit: at accept (max_connections, max_connections_per_source) or for want of an authenticated request in time (unauthenticated_timeout)"
    );
    describe_counter!(
        "turnpike_send_errors_total",
        "Packets the shell failed to send"
    );
    describe_counter!("turnpike_recv_errors_total", "Socket receive errors");
    describe_counter!(
        "turnpike_stream_connections_total",
        "TCP/TLS connections accepted"
    );
    describe_counter!(
        "turnpike_gso_sends_total",
        "UDP GSO sends: sendmsg calls that carried several datagrams at once"
    );
    describe_counter!(
        "turnpike_gso_segments_total",
        "Datagrams sent inside UDP GSO sends (segments / sends is the mean run length)"
    );
    describe_gauge!(
        "turnpike_build_info",
        "Always 1; the version label says which Turnpike build is running"
    );
    describe_operations_metrics();
}

// ---------------------------------------------------------------------------------------
// Operations metrics: drain, configuration reload and the TLS certificate.
//
// Registered and set to their idle values at start-up by `init_operations_metrics`; the
// code that drains and reloads updates them through the setters below.

/// Gauge: 1 while the relay drains (refuses new allocations and waits for the existing
/// ones to end), 0 otherwise.
pub const DRAINING: &str = "turnpike_draining";
/// Counter: configuration reloads, by `result` (`success` or `failure`).
pub const CONFIG_RELOADS: &str = "turnpike_config_reloads_total";
/// Gauge: Unix time of the last configuration load in force (start-up, or the last
/// successful reload).
pub const CONFIG_LAST_RELOAD: &str = "turnpike_config_last_reload_timestamp_seconds";
/// Gauge: Unix time at which the TLS certificate in use expires (its notAfter); absent
/// when no certificate is configured.
pub const TLS_CERTIFICATE_EXPIRY: &str = "turnpike_tls_certificate_expiry_timestamp_seconds";
/// Every value of the `result` label of [`CONFIG_RELOADS`].
pub const RELOAD_RESULTS: [&str; 2] = ["success", "failure"];

fn describe_operations_metrics() {
    use ::metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        DRAINING,
        "1 while the relay drains (new allocations refused, existing ones kept), else 0"
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Configuration reloads, by result (success, failure)"
    );
    describe_gauge!(
        CONFIG_LAST_RELOAD,
        "Unix time of the configuration load in force (start-up or last successful reload)"
    );
    describe_gauge!(
        TLS_CERTIFICATE_EXPIRY,
        "Unix time at which the TLS certificate in use expires (notAfter)"
    );
}

/// Registers the operations metrics at their idle values: not draining, no reloads yet,
/// the configuration loaded now, and the expiry of `certificate` (a PEM file, leaf
/// first) when one is configured. A certificate whose expiry cannot be read leaves that
/// gauge unset, with a warning: the relay still runs with it.
pub fn init_operations_metrics(certificate: Option<&Path>) {
    set_draining(false);
    for result in RELOAD_RESULTS {
        ::metrics::counter!(CONFIG_RELOADS, "result" => result).absolute(0);
    }
    ::metrics::gauge!(CONFIG_LAST_RELOAD).set(unix_now());
    if let Some(path) = certificate {
        set_tls_certificate_expiry(path);
    }
}

/// Sets [`DRAINING`].
pub fn set_draining(draining: bool) {
    ::metrics::gauge!(DRAINING).set(if draining { 1.0 } else { 0.0 });
}

/// Counts one configuration reload; a successful one also sets [`CONFIG_LAST_RELOAD`]
/// to now.
pub fn record_config_reload(success: bool) {
    let result = if success { "success" } else { "failure" };
    ::metrics::counter!(CONFIG_RELOADS, "result" => result).increment(1);
    if success {
        ::metrics::gauge!(CONFIG_LAST_RELOAD).set(unix_now());
    }
}

/// Sets [`TLS_CERTIFICATE_EXPIRY`] from the leaf certificate of the PEM file at `path`.
pub fn set_tls_certificate_expiry(path: &Path) {
    match crate::net::tls::leaf_not_after(path) {
        Ok(expiry) => ::metrics::gauge!(TLS_CERTIFICATE_EXPIRY).set(expiry as f64),
        Err(e) => tracing::warn!("{e}: {TLS_CERTIFICATE_EXPIRY} not exported"),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------

/// What the fleet heartbeat (`crate::fleet`) reports as load: totals over every worker,
/// kept up to date by the workers' publishers once a second, read once a second by the
/// heartbeat. Atomics off the packet path: publishing touches them, forwarding does not.
#[derive(Debug, Default)]
pub struct RelayLoad {
    /// Allocations alive.
    pub allocations: AtomicI64,
    /// Packets relayed through the sockets so far, both directions.
    pub packets: AtomicU64,
    /// Their payload bytes.
    pub bytes: AtomicU64,
}

/// The relay's [`RelayLoad`].
pub static RELAY_LOAD: RelayLoad = RelayLoad {
    allocations: AtomicI64::new(0),
    packets: AtomicU64::new(0),
    bytes: AtomicU64::new(0),
};

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
pub fn process_cpu_seconds() -> Option<f64> {
    ProcStat::read().map(|s| s.cpu_seconds)
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
    /// `[direction][transport]`, as `Stats::packets_by_transport`.
    packets: [[Counter; 4]; 2],
    bytes: [[Counter; 4]; 2],
    drops: Vec<Counter>,
    /// Allocations created, per transport (`Transport::index` order).
    created: [Counter; 4],
    deleted: Counter,
    auth_failures: Counter,
    auth_throttled: Counter,
    allocations: Gauge,
    send_errors: Counter,
    send_backlog: Counter,
    recv_errors: Counter,
    connections: Counter,
    /// `turnpike_stream_connections_rejected_total` by reason: max_connections,
    /// max_connections_per_source, unauthenticated_timeout.
    rejected: [Counter; 3],
    gso_sends: Counter,
    gso_segments: Counter,
    /// The call-quality counters, when the core measures them.
    quality: Option<crate::rtp_metrics::QualityPublisher>,
}

impl std::fmt::Debug for StatsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsPublisher").finish_non_exhaustive()
    }
}

/// Adds `now - last` to a counter.
pub(crate) fn add(counter: &Counter, now: u64, last: u64) {
    // Counters are monotonic; saturate in case a core was replaced by a fresh one.
    let delta = now.saturating_sub(last);
    if delta > 0 {
        counter.increment(delta);
    }
}

impl StatsPublisher {
    /// A worker's publisher; `rtp_quality`: its core measures call quality, so the
    /// quality metrics are published too.
    pub fn new(worker: usize, rtp_quality: bool) -> StatsPublisher {
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
        let per_direction_and_transport = |name: &'static str| {
            Direction::ALL.map(|dir| {
                Transport::ALL
                    .map(|t| counter!(name, "direction" => dir.as_str(), "transport" => t.as_str()))
            })
        };
        StatsPublisher {
            last: Stats::default(),
            last_shell: ShellStats::default(),
            requests,
            packets: per_direction_and_transport("turnpike_relayed_packets_total"),
            bytes: per_direction_and_transport("turnpike_relayed_bytes_total"),
            drops: DropReason::ALL
                .iter()
                .map(|r| counter!("turnpike_dropped_packets_total", "reason" => r.as_str()))
                .collect(),
            created: Transport::ALL
                .map(|t| counter!("turnpike_allocations_created_total", "transport" => t.as_str())),
            deleted: counter!("turnpike_allocations_deleted_total"),
            auth_failures: counter!("turnpike_auth_failures_total"),
            auth_throttled: counter!("turnpike_auth_throttled_total"),
            allocations: gauge!("turnpike_allocations", "worker" => worker.to_string()),
            send_errors: counter!("turnpike_send_errors_total", "reason" => "io_error"),
            send_backlog: counter!("turnpike_send_errors_total", "reason" => "backlog"),
            recv_errors: counter!("turnpike_recv_errors_total"),
            connections: counter!("turnpike_stream_connections_total"),
            rejected: [
                "max_connections",
                "max_connections_per_source",
                "unauthenticated_timeout",
            ]
            .map(
                |reason| counter!("turnpike_stream_connections_rejected_total", "reason" => reason),
            ),
            gso_sends: counter!("turnpike_gso_sends_total"),
            gso_segments: counter!("turnpike_gso_segments_total"),
            quality: rtp_quality.then(crate::rtp_metrics::QualityPublisher::new),
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
        for d in 0..2 {
            for t in 0..4 {
                add(
                    &self.packets[d][t],
                    now_stats.packets_by_transport[d][t],
                    last.packets_by_transport[d][t],
                );
                add(
                    &self.bytes[d][t],
                    now_stats.bytes_by_transport[d][t],
                    last.bytes_by_transport[d][t],
                );
            }
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
        add(
            &self.auth_failures,
            now_stats.auth_failures,
            last.auth_failures,
        );
        add(
            &self.auth_throttled,
            now_stats.auth_throttled,
            last.auth_throttled,
        );
        self.allocations.set(now_stats.allocations as f64);
        let total = |m: &[[u64; 4]; 2]| m.iter().flatten().fold(0u64, |a, &b| a.wrapping_add(b));
        RELAY_LOAD.packets.fetch_add(
            total(&now_stats.packets_by_transport)
                .saturating_sub(total(&last.packets_by_transport)),
            Ordering::Relaxed,
        );
        RELAY_LOAD.bytes.fetch_add(
            total(&now_stats.bytes_by_transport).saturating_sub(total(&last.bytes_by_transport)),
            Ordering::Relaxed,
        );
        // Allocation counts are far below i64::MAX.
        RELAY_LOAD.allocations.fetch_add(
            now_stats.allocations as i64 - last.allocations as i64,
            Ordering::Relaxed,
        );
        if let Some(quality) = &self.quality {
            quality.publish(&now_stats.quality, &last.quality);
        }
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
        let rejected = [
            (
                now.connections_refused_total,
                last.connections_refused_total,
            ),
            (
                now.connections_refused_per_source,
                last.connections_refused_per_source,
            ),
            (
                now.connections_unauthenticated,
                last.connections_unauthenticated,
            ),
        ];
        for (counter, (now, last)) in self.rejected.iter().zip(rejected) {
            add(counter, now, last);
        }
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
        render_with_process_metrics(&state.handle),
    )
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// The registry's rendering followed by the RTP quality histograms (when on) and the
/// `process_*` metrics.
pub fn render_with_process_metrics(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    crate::rtp_metrics::RTP_HISTOGRAMS.render(&mut text);
    render_process_metrics(&mut text);
    text
}

/// Appends the standard process metrics, with the names and meaning that Prometheus's
/// client libraries give them (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_start_time_seconds`), read from `/proc/self` at each
/// scrape. They are written here as text rather than through the `metrics` registry,
/// because the registry's counters hold whole numbers and CPU time is fractional
/// seconds; it takes a few lines of `/proc` parsing and no extra dependency. A value
/// that cannot be read (no `/proc`) is left out.
pub fn render_process_metrics(out: &mut String) {
    let mut metric = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
            );
        }
    };
    let stat = ProcStat::read();
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        stat.as_ref().map(|s| s.cpu_seconds),
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        stat.as_ref().map(|s| s.resident_bytes),
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        stat.as_ref().map(|s| s.virtual_bytes),
    );
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        stat.as_ref().and_then(|s| s.start_time),
    );
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as f64);
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        open_fds,
    );
    metric(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        max_fds(),
    );
}

/// What `/proc/self/stat` (with `/proc/stat`'s boot time) says about this process.
struct ProcStat {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time: Option<f64>,
}

impl ProcStat {
    fn read() -> Option<ProcStat> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // proc(5): the command name (field 2) is in parentheses and may hold spaces, so
        // fields are counted from the last ')'. `fields[0]` is field 3 (state).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
        let ticks = sysconf(libc::_SC_CLK_TCK)?;
        let page = sysconf(libc::_SC_PAGESIZE)?;
        // Fields 14 and 15: utime and stime; 22: starttime, in clock ticks since boot;
        // 23: vsize in bytes; 24: rss in pages.
        let start_time = field(22)
            .zip(boot_time())
            .map(|(start, boot)| boot + start / ticks);
        Some(ProcStat {
            cpu_seconds: (field(14)? + field(15)?) / ticks,
            resident_bytes: field(24)? * page,
            virtual_bytes: field(23)?,
            start_time,
        })
    }
}

fn sysconf(name: libc::c_int) -> Option<f64> {
    // SAFETY: sysconf reads a system constant; it takes no pointers and has no
    // preconditions.
    let value = unsafe { libc::sysconf(name) };
    (value > 0).then_some(value as f64)
}

/// The `btime` line of `/proc/stat`: when the system booted, in Unix seconds.
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit on open files, from `/proc/self/limits`.
fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.strip_prefix("Max open files")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the unlabelled sample `name` in `text`.
    fn value(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    }

    #[test]
    fn process_metrics_describe_this_process() {
        let mut text = String::new();
        render_process_metrics(&mut text);
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(text.contains("# HELP process_resident_memory_bytes "));
        assert!(value(&text, "process_cpu_seconds_total") >= 0.0);
        assert!(value(&text, "process_resident_memory_bytes") > 1e6);
        assert!(value(&text, "process_virtual_memory_bytes") > 1e6);
        // stdin, stdout, stderr at least.
        let open = value(&text, "process_open_fds");
        assert!(open >= 3.0);
        assert!(value(&text, "process_max_fds") >= open);
        // This test process started a moment ago.
        let started = value(&text, "process_start_time_seconds");
        let now = unix_now();
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs now {now}"
        );
    }

    #[test]
    fn operations_metrics_start_idle_and_follow_their_setters() {
        let handle = install_recorder();
        let before = unix_now();
        init_operations_metrics(None);
        let text = handle.render();
        assert!(text.contains("turnpike_draining 0\n"), "{text}");
        for result in RELOAD_RESULTS {
            let series = format!("turnpike_config_reloads_total{{result=\"{result}\"}} 0\n");
            assert!(text.contains(&series), "{text}");
        }
        assert!(value(&text, CONFIG_LAST_RELOAD) >= before.floor());
        assert!(
            !text.contains(&format!("{TLS_CERTIFICATE_EXPIRY} ")),
            "{text}"
        );

        set_draining(true);
        record_config_reload(false);
        record_config_reload(true);
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, params.self_signed(&key).unwrap().pem()).unwrap();
        set_tls_certificate_expiry(&cert);

        let text = handle.render();
        assert!(text.contains("turnpike_draining 1\n"), "{text}");
        assert!(text.contains("turnpike_config_reloads_total{result=\"failure\"} 1\n"));
        assert!(text.contains("turnpike_config_reloads_total{result=\"success\"} 1\n"));
        // 2031-05-17T00:00:00Z.
        assert_eq!(value(&text, TLS_CERTIFICATE_EXPIRY), 1_936_742_400.0);
    }
}
