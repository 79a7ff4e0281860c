//! The relay's side of the fleet: a heartbeat into the registry in Redis every second
//! (`turnpike_signaling::fleet` defines the format and the keys), a draining beat the
//! moment the drain starts, and the entry withdrawn at exit.
//!
//! It runs as one task on the control-plane runtime, off the packet path: the load it
//! reports comes from [`RELAY_LOAD`], which the workers' stats publishers keep up to
//! date once a second, and from `/proc/self/stat` for CPU. Redis being unreachable
//! costs nothing but a log line: the task retries at the next beat. With
//! `telemetry.rtp_quality` on, each beat also carries every user's uplink loss and
//! jitter ([`link_quality`]), from the workers' allocation reports.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use turnpike_signaling::fleet::{self, Heartbeat, LinkQuality, MAX_QUALITY_ENTRIES};

use crate::metrics::{process_cpu_seconds, RELAY_LOAD};
use crate::net::{Reporter, WorkerReport};
use crate::proto::stats::Direction;

/// What the relay tells the registry about itself that does not change.
#[derive(Debug, Clone)]
pub struct Identity {
    pub redis_url: String,
    pub id: String,
    pub region: String,
    pub urls: Vec<String>,
    /// Asks the workers for their allocations, when `telemetry.rtp_quality` is on:
    /// each beat then carries the users' link quality.
    pub quality: Option<Reporter>,
}

/// Where the relay is in its life, as the heartbeat reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining,
    /// Exiting: withdraw the entry and stop.
    Stopping,
}

/// The running heartbeat task.
pub struct Announcer {
    phase: watch::Sender<Phase>,
    task: tokio::task::JoinHandle<()>,
}

/// Bound on one Redis round (connect, or one write): a beat never waits longer.
const REDIS_TIMEOUT: Duration = Duration::from_millis(800);
/// The shortest window a heartbeat measures packet, byte and CPU rates over.
const MIN_RATE_WINDOW: Duration = Duration::from_millis(500);

impl Announcer {
    /// Start beating (within a tokio runtime).
    pub fn start(identity: Identity) -> Announcer {
        let (phase, rx) = watch::channel(Phase::Serving);
        let task = tokio::spawn(run(identity, rx));
        Announcer { phase, task }
    }

    /// The drain started: the next beat, written at once, says `draining`.
    pub fn drain(&self) {
        self.phase.send_replace(Phase::Draining);
    }

    /// Withdraw the entry (bounded by a second) and stop.
    pub async fn stop(self) {
        self.phase.send_replace(Phase::Stopping);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }
}

/// How long a beat waits for the workers' allocation reports.
const REPORT_TIMEOUT: Duration = Duration::from_millis(300);
/// A stream silent longer than this is left out of the link quality.
const QUALITY_IDLE: Duration = Duration::from_secs(10);

/// Each user's uplink from the workers' reports: over the user's allocations, the
/// worst loss ratio of a client → peer stream's last closed interval, and the worst
/// jitter; users without a closed interval are left out. At most
/// [`MAX_QUALITY_ENTRIES`], worst loss first.
pub fn link_quality(reports: &[WorkerReport]) -> Vec<LinkQuality> {
    let mut users: BTreeMap<&str, LinkQuality> = BTreeMap::new();
    let allocations = reports.iter().flat_map(|w| &w.allocations);
    for a in allocations {
        let uplinks = a
            .streams
            .iter()
            .filter(|s| s.direction == Direction::ToPeer && s.idle < QUALITY_IDLE);
        for s in uplinks {
            let Some(loss) = s.interval_loss else {
                continue;
            };
            let jitter_ms = s.jitter.map(|j| j * 1e3);
            let entry = users.entry(&a.user).or_insert_with(|| LinkQuality {
                user: a.user.clone(),
                uplink_loss: 0.0,
                uplink_jitter_ms: None,
            });
            entry.uplink_loss = entry.uplink_loss.max(loss);
            entry.uplink_jitter_ms = match (entry.uplink_jitter_ms, jitter_ms) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
    let mut list: Vec<LinkQuality> = users.into_values().collect();
    list.sort_by(|a, b| b.uplink_loss.total_cmp(&a.uplink_loss));
    list.truncate(MAX_QUALITY_ENTRIES);
    list
}

fn unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

async fn connect(client: &redis::Client) -> Result<MultiplexedConnection, String> {
    tokio::time::timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())
}

async fn run(me: Identity, mut phase: watch::Receiver<Phase>) {
    let client = match redis::Client::open(me.redis_url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("fleet: bad Redis URL ({e}); this relay is not announced");
            return;
        }
    };
    let mut conn: Option<MultiplexedConnection> = None;
    let mut reachable = None;
    // Rates are measured between two beats.
    let mut last = (
        Instant::now(),
        RELAY_LOAD.packets.load(Ordering::Relaxed),
        RELAY_LOAD.bytes.load(Ordering::Relaxed),
        process_cpu_seconds().unwrap_or(0.0),
    );
    // (packets/s, bits/s, CPU %) over the last window of at least MIN_RATE_WINDOW.
    let mut rates = (0u64, 0u64, 0u32);
    let mut tick = tokio::time::interval(fleet::HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = phase.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let now_phase = *phase.borrow_and_update();
        if conn.is_none() {
            match connect(&client).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    if reachable != Some(false) {
                        tracing::warn!(
                            "fleet: cannot reach the registry ({e}); retrying every second"
                        );
                    }
                    reachable = Some(false);
                    if now_phase == Phase::Stopping {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        if now_phase == Phase::Stopping {
            let _ = tokio::time::timeout(REDIS_TIMEOUT, fleet::withdraw(c, &me.id)).await;
            tracing::info!(id = %me.id, "fleet: withdrawn from the registry");
            return;
        }
        let now = Instant::now();
        let secs = now.duration_since(last.0).as_secs_f64();
        // A rate over a few milliseconds says nothing (the first beat goes out at once,
        // when start-up work dominates the CPU clock): such a beat carries the rates of
        // the last full window (zero at first) and the window keeps growing.
        if secs >= MIN_RATE_WINDOW.as_secs_f64() {
            let packets = RELAY_LOAD.packets.load(Ordering::Relaxed);
            let bytes = RELAY_LOAD.bytes.load(Ordering::Relaxed);
            let cpu = process_cpu_seconds().unwrap_or(last.3);
            let rate = |n: u64, before: u64| (n.saturating_sub(before) as f64 / secs) as u64;
            rates = (
                rate(packets, last.1),
                rate(bytes, last.2).saturating_mul(8),
                (((cpu - last.3).max(0.0) / secs) * 100.0).round() as u32,
            );
            last = (now, packets, bytes, cpu);
        }
        let quality = match &me.quality {
            Some(reporter) => link_quality(&reporter.allocations(REPORT_TIMEOUT).await),
            None => Vec::new(),
        };
        let beat = Heartbeat {
            id: me.id.clone(),
            region: me.region.clone(),
            urls: me.urls.clone(),
            allocations: u64::try_from(RELAY_LOAD.allocations.load(Ordering::Relaxed)).unwrap_or(0),
            pps: rates.0,
            bps: rates.1,
            cpu_percent: rates.2,
            draining: now_phase == Phase::Draining,
            version: env!("CARGO_PKG_VERSION").to_string(),
            at_ms: unix_ms(),
            quality,
        };
        match tokio::time::timeout(REDIS_TIMEOUT, fleet::announce(c, &beat)).await {
            Ok(Ok(())) => {
                if reachable != Some(true) {
                    tracing::info!(id = %me.id, region = %me.region, "fleet: announcing this relay");
                }
                reachable = Some(true);
            }
            Ok(Err(e)) => {
                if reachable != Some(false) {
                    tracing::warn!("fleet: heartbeat failed ({e}); retrying every second");
                }
                reachable = Some(false);
                conn = None;
            }
            Err(_) => {
                if reachable != Some(false) {
                    tracing::warn!("fleet: heartbeat timed out; retrying every second");
                }
                reachable = Some(false);
                conn = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::proto::quality::{Jitter, MediaKind};
    use crate::proto::report::{AllocationReport, StreamReport, TrafficReport};
    use crate::proto::Transport;

    fn stream(direction: Direction, loss: Option<f64>, jitter: f64, idle: u64) -> StreamReport {
        StreamReport {
            direction,
            media: MediaKind::Audio,
            jitter_method: Jitter::Rtp(48_000),
            age: Duration::from_secs(60),
            idle: Duration::from_secs(idle),
            expected: 1000,
            received: 990,
            lost: 10,
            reordered: 0,
            duplicates: 0,
            interval_loss: loss,
            jitter: Some(jitter),
        }
    }

    fn allocation(user: &str, streams: Vec<StreamReport>) -> AllocationReport {
        let traffic = TrafficReport {
            packets: 0,
            bytes: 0,
            pps: 0,
            bps: 0,
        };
        AllocationReport {
            transport: Transport::Udp,
            user: user.into(),
            age: Duration::from_secs(60),
            expires_in: Duration::from_secs(600),
            relayed: Vec::new(),
            permissions: 1,
            channels: 1,
            traffic: [traffic; 2],
            streams,
            untracked: [0; 2],
        }
    }

    #[test]
    fn link_quality_is_each_users_worst_recent_uplink() {
        let up = Direction::ToPeer;
        let reports = [
            WorkerReport {
                worker: 0,
                allocations: vec![
                    // alice: audio and video up; a loss-free stream from her peer.
                    allocation(
                        "alice",
                        vec![
                            stream(up, Some(0.02), 0.004, 0),
                            stream(up, Some(0.08), 0.002, 0),
                            stream(Direction::ToClient, Some(0.5), 0.1, 0),
                        ],
                    ),
                    // bob: no interval closed yet.
                    allocation("bob", vec![stream(up, None, 0.001, 0)]),
                ],
            },
            WorkerReport {
                worker: 1,
                allocations: vec![
                    // alice's second allocation, and a silent stream that no longer counts.
                    allocation("alice", vec![stream(up, Some(0.01), 0.009, 0)]),
                    allocation("carol", vec![stream(up, Some(0.9), 0.5, 30)]),
                    allocation("dave", vec![stream(up, Some(0.0), 0.001, 1)]),
                ],
            },
        ];
        let list = link_quality(&reports);
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(list[0].user, "alice");
        assert_eq!(list[0].uplink_loss, 0.08);
        let jitter = list[0].uplink_jitter_ms.unwrap();
        assert!((jitter - 9.0).abs() < 1e-9, "{jitter}");
        assert_eq!((list[1].user.as_str(), list[1].uplink_loss), ("dave", 0.0));
    }
}
