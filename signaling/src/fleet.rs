//! The relay fleet registry: relays announce themselves in Redis, signaling reads who is
//! alive and how busy.
//!
//! Each relay (`turnpike serve` with `[fleet]`) writes a [`Heartbeat`] every
//! [`HEARTBEAT_INTERVAL`]: the JSON at `turnpike:fleet:relay:<id>` with a
//! [`HEARTBEAT_TTL`] expiry (so an entry disappears by itself within that long after
//! its relay dies), and its id in the sorted set `turnpike:fleet:relays` scored by the
//! Unix millisecond of the beat (the index a reader lists; members whose entry expired
//! are *stale* and dropped from the index after a minute). A relay that starts
//! draining writes a beat with `draining: true` at once, and deletes its entry when it
//! exits.
//!
//! Signaling (with `fleet_redis_url`) polls the registry every [`POLL_INTERVAL`]
//! ([`watch`]) and hands the live relays to [`Credentials`], which ranks them for each
//! device: relays in the device's region first, then by [`Heartbeat::score`], then by
//! id; draining and stale relays are never offered, and at most [`OFFERED`] are. When
//! Redis cannot be reached the last registry read stays in use, and the node says so in
//! a log line and in `turnpike_signaling_fleet_registry_up` (0).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::credentials::Credentials;

/// How often a relay writes its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How long an entry outlives its last heartbeat: three beats, so one slow write does
/// not make a live relay vanish, and a dead one is gone within 3 s.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);
/// How often signaling reads the registry.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Relays offered per answer (`hello_ok.ice_servers`, `turn_refresh`, `relay_moved`):
/// enough for the browser to fall back, few enough to keep ICE gathering short.
pub const OFFERED: usize = 3;
/// Index members whose entry has been gone this long are dropped from the index.
const INDEX_FORGET_MS: u64 = 60_000;

const PREFIX: &str = "turnpike:fleet:";

/// The sorted set that lists relay ids, scored by their last heartbeat (Unix ms).
pub fn index_key() -> String {
    format!("{PREFIX}relays")
}

/// The key holding relay `id`'s last heartbeat.
pub fn entry_key(id: &str) -> String {
    format!("{PREFIX}relay:{id}")
}

/// What a relay says about itself once a second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Unique in the fleet (default: the first public URL's `host:port`).
    pub id: String,
    /// Where it is ("eu"); matched against the device's region.
    pub region: String,
    /// What devices are told: `turn:`/`turns:` URIs and `masque://` for TURN over QUIC.
    pub urls: Vec<String>,
    /// Allocations alive.
    pub allocations: u64,
    /// Packets relayed per second, both directions, over the last beat.
    pub pps: u64,
    /// Payload bits relayed per second, both directions, over the last beat.
    pub bps: u64,
    /// CPU the relay process used over the last beat, in percent of one core.
    pub cpu_percent: u32,
    /// Set from the moment the relay starts draining: it takes no new allocations.
    pub draining: bool,
    /// The relay's version (`turnpike --version`).
    pub version: String,
    /// Unix milliseconds of this beat.
    pub at_ms: u64,
    /// Each user's uplink as this relay measures it, when the relay runs with
    /// `telemetry.rtp_quality` (at most [`MAX_QUALITY_ENTRIES`], worst loss first);
    /// empty otherwise. Signaling passes it to the user's parties of calls on this
    /// relay as `call_quality`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<LinkQuality>,
}

/// How a user's media reaches a relay: the worst of its RTP streams toward its peers
/// over their last closed report interval (5 s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkQuality {
    /// The user part of the TURN REST username its allocations were made with.
    pub user: String,
    /// Share of its packets lost before reaching the relay (0–1).
    pub uplink_loss: f64,
    /// Interarrival jitter of its stream at the relay, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_jitter_ms: Option<f64>,
}

/// The most [`LinkQuality`] entries a heartbeat carries.
pub const MAX_QUALITY_ENTRIES: usize = 256;

impl Heartbeat {
    /// The load a relay is ranked by (lower first): 10 per allocation, 1 per 100
    /// relayed packets per second, 1 per percent of a core. An allocation weighs most
    /// because it is a call that stays; packets and CPU tell a busy relay from an idle
    /// one with the same number of calls.
    pub fn score(&self) -> u64 {
        self.allocations
            .saturating_mul(10)
            .saturating_add(self.pps / 100)
            .saturating_add(u64::from(self.cpu_percent))
    }

    /// Whether a device reporting `relay` (a TURN URI, `host:port`, or the relay's id)
    /// is on this relay.
    pub fn serves(&self, relay: &str) -> bool {
        let key = relay_key(relay);
        relay == self.id || self.urls.iter().any(|u| relay_key(u) == key)
    }
}

/// `host:port` of a relay URI (`turn:h:p?transport=udp`, `turns:h:p`, `masque://h:p`),
/// lower-cased; anything else as it is, lower-cased.
pub fn relay_key(url: &str) -> String {
    let rest = url
        .strip_prefix("masque://")
        .or_else(|| url.strip_prefix("turns:"))
        .or_else(|| url.strip_prefix("turn:"))
        .unwrap_or(url);
    let rest = rest.split('?').next().unwrap_or(rest);
    rest.to_ascii_lowercase()
}

/// Write `beat` (entry with its expiry, and the index).
pub async fn announce(
    conn: &mut MultiplexedConnection,
    beat: &Heartbeat,
) -> Result<(), redis::RedisError> {
    // Strings, numbers and a bool: always serializes.
    let json = serde_json::to_string(beat).unwrap_or_default();
    let ttl_ms = u64::try_from(HEARTBEAT_TTL.as_millis()).unwrap_or(3000);
    redis::pipe()
        .cmd("SET")
        .arg(entry_key(&beat.id))
        .arg(json)
        .arg("PX")
        .arg(ttl_ms)
        .ignore()
        .zadd(index_key(), &beat.id, beat.at_ms)
        .ignore()
        .query_async::<()>(conn)
        .await
}

/// Remove relay `id` from the registry (it is exiting).
pub async fn withdraw(conn: &mut MultiplexedConnection, id: &str) -> Result<(), redis::RedisError> {
    redis::pipe()
        .del(entry_key(id))
        .ignore()
        .zrem(index_key(), id)
        .ignore()
        .query_async::<()>(conn)
        .await
}

/// What the registry holds now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Relays whose entry is alive, draining or not, by id.
    pub relays: Vec<Heartbeat>,
    /// Ids in the index whose entry expired (heartbeats stopped).
    pub stale: Vec<String>,
}

/// Read the registry. Entries that do not parse are counted as stale.
pub async fn read(
    conn: &mut MultiplexedConnection,
    now_ms: u64,
) -> Result<Snapshot, redis::RedisError> {
    let forget_before = now_ms.saturating_sub(INDEX_FORGET_MS);
    let (ids,): (Vec<String>,) = redis::pipe()
        .cmd("ZREMRANGEBYSCORE")
        .arg(index_key())
        .arg("-inf")
        .arg(format!("({forget_before}"))
        .ignore()
        .zrange(index_key(), 0, -1)
        .query_async(conn)
        .await?;
    let mut snapshot = Snapshot::default();
    if ids.is_empty() {
        return Ok(snapshot);
    }
    let keys: Vec<String> = ids.iter().map(|id| entry_key(id)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    for (id, value) in ids.into_iter().zip(values) {
        match value.and_then(|v| serde_json::from_str::<Heartbeat>(&v).ok()) {
            Some(beat) => snapshot.relays.push(beat),
            None => snapshot.stale.push(id),
        }
    }
    snapshot.relays.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(snapshot)
}

/// Relays ranked for a device in `region`, best first: same region first (ASCII case
/// ignored), then lower [`Heartbeat::score`], then id. Draining relays are left out.
pub fn rank<'a>(relays: &'a [Heartbeat], region: Option<&str>) -> Vec<&'a Heartbeat> {
    let mut live: Vec<&Heartbeat> = relays.iter().filter(|r| !r.draining).collect();
    live.sort_by(|a, b| {
        let away = |r: &Heartbeat| region.is_none_or(|g| !r.region.eq_ignore_ascii_case(g));
        (away(a), a.score(), &a.id).cmp(&(away(b), b.score(), &b.id))
    });
    live
}

/// Gauge: relays in the registry, by `region` and `state` (`live`, `draining`).
pub const RELAYS: &str = "turnpike_signaling_relays";
/// Gauge: 1 while the last registry read succeeded, 0 while signaling runs on the last
/// known registry because Redis cannot be reached.
pub const REGISTRY_UP: &str = "turnpike_signaling_fleet_registry_up";

/// Gives the fleet metrics their HELP text.
pub fn describe() {
    metrics::describe_gauge!(
        RELAYS,
        "Relays in the fleet registry as this signaling node last read it, by region and state (live, draining)"
    );
    metrics::describe_gauge!(
        REGISTRY_UP,
        "1 while the fleet registry in Redis answers; 0 while signaling offers the last known relays"
    );
}

/// What the registry reader tells the node.
#[derive(Debug, Clone)]
pub(crate) enum FleetNews {
    /// A relay just started draining: move its calls.
    Drained(Heartbeat),
    /// A relay's beat carries new link-quality figures: tell the parties concerned.
    Quality(Heartbeat),
}

/// Poll the registry at `url` forever: give each read to `creds`, publish the metrics,
/// and send relays that turned draining, and new link-quality figures, to `news`.
/// Connection failures keep the last read in use and are retried at the next poll.
pub(crate) async fn watch(url: String, creds: Credentials, news: mpsc::Sender<FleetNews>) {
    let client = match redis::Client::open(url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("fleet registry: bad Redis URL: {e}; offering no live relays");
            metrics::gauge!(REGISTRY_UP).set(0.0);
            return;
        }
    };
    let mut conn: Option<MultiplexedConnection> = None;
    let mut up: Option<bool> = None;
    let mut draining: BTreeSet<String> = BTreeSet::new();
    let mut regions: BTreeSet<String> = BTreeSet::new();
    // The beat (its `at_ms`) whose quality figures each relay's were last passed on in.
    let mut quality_seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if news.is_closed() {
            return; // the node has stopped
        }
        let result = async {
            if conn.is_none() {
                let c = tokio::time::timeout(
                    Duration::from_secs(2),
                    client.get_multiplexed_async_connection(),
                )
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())?;
                conn = Some(c);
            }
            let Some(c) = conn.as_mut() else {
                return Err("no connection".to_string());
            };
            tokio::time::timeout(Duration::from_secs(2), read(c, crate::node::now_ms()))
                .await
                .map_err(|_| "read timed out".to_string())?
                .map_err(|e| e.to_string())
        }
        .await;
        match result {
            Ok(snapshot) => {
                if up != Some(true) {
                    tracing::info!(
                        relays = snapshot.relays.len(),
                        "fleet registry: reading live relays from Redis"
                    );
                }
                up = Some(true);
                metrics::gauge!(REGISTRY_UP).set(1.0);
                let mut counts: BTreeMap<(String, &str), f64> = BTreeMap::new();
                for r in &snapshot.relays {
                    regions.insert(r.region.clone());
                    let state = if r.draining { "draining" } else { "live" };
                    *counts.entry((r.region.clone(), state)).or_default() += 1.0;
                }
                // Every region ever seen is exported in both states, 0 when empty, so a
                // region whose relays all left reads 0 rather than its last count.
                for region in &regions {
                    for state in ["live", "draining"] {
                        let n = counts.get(&(region.clone(), state)).copied().unwrap_or(0.0);
                        metrics::gauge!(RELAYS, "region" => region.clone(), "state" => state)
                            .set(n);
                    }
                }
                let now_draining: BTreeSet<String> = snapshot
                    .relays
                    .iter()
                    .filter(|r| r.draining)
                    .map(|r| r.id.clone())
                    .collect();
                creds.set_fleet(snapshot.relays.clone());
                for r in snapshot.relays.iter().filter(|r| r.draining) {
                    if !draining.contains(&r.id) {
                        tracing::info!(relay = %r.id, "fleet: relay started draining");
                        let _ = news.send(FleetNews::Drained(r.clone())).await;
                    }
                }
                draining = now_draining;
                quality_seen.retain(|id, _| snapshot.relays.iter().any(|r| &r.id == id));
                for r in snapshot.relays.iter().filter(|r| !r.quality.is_empty()) {
                    if quality_seen.insert(r.id.clone(), r.at_ms) != Some(r.at_ms) {
                        let _ = news.send(FleetNews::Quality(r.clone())).await;
                    }
                }
            }
            Err(e) => {
                conn = None;
                if up != Some(false) {
                    tracing::warn!(
                        "fleet registry unreachable ({e}): offering the last known relays"
                    );
                }
                up = Some(false);
                metrics::gauge!(REGISTRY_UP).set(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str, region: &str, allocations: u64, draining: bool) -> Heartbeat {
        Heartbeat {
            id: id.into(),
            region: region.into(),
            urls: vec![format!("turn:{id}?transport=udp")],
            allocations,
            pps: 0,
            bps: 0,
            cpu_percent: 0,
            draining,
            version: "test".into(),
            at_ms: 0,
            quality: Vec::new(),
        }
    }

    #[test]
    fn ranks_region_then_score_and_never_offers_draining() {
        let relays = [
            beat("eu1:1", "eu", 5, false),
            beat("eu2:1", "eu", 0, false),
            beat("us1:1", "us", 0, false),
            beat("us2:1", "us", 0, true),
        ];
        let ids = |region| -> Vec<&str> {
            rank(&relays, region)
                .iter()
                .map(|r| r.id.as_str())
                .collect()
        };
        assert_eq!(ids(Some("US")), ["us1:1", "eu2:1", "eu1:1"]);
        assert_eq!(ids(Some("eu")), ["eu2:1", "eu1:1", "us1:1"]);
        assert_eq!(ids(None), ["eu2:1", "us1:1", "eu1:1"]);
    }

    #[test]
    fn relay_keys_match_any_scheme_of_one_listener() {
        let r = Heartbeat {
            urls: vec![
                "turn:127.0.0.1:3478?transport=udp".into(),
                "masque://127.0.0.1:4433".into(),
            ],
            ..beat("a", "eu", 0, false)
        };
        assert!(r.serves("turn:127.0.0.1:3478?transport=tcp"));
        assert!(r.serves("127.0.0.1:4433"));
        assert!(r.serves("a"));
        assert!(!r.serves("127.0.0.1:3479"));
        assert!(!r.serves(""));
    }
}
