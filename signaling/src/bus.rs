//! The bus between signaling nodes: pub/sub per user, an atomic claim, presence keys and
//! stored missed calls. [`LocalBus`] keeps it all in this process (one node, or several
//! nodes in one process); [`RedisBus`] shares it between processes through Redis
//! (`PUBLISH`/`SUBSCRIBE` per user channel, `SET NX EX` for the claim, presence keys with
//! a TTL so a crashed node's devices go offline by themselves).

mod local;
mod redis;

use std::future::Future;
use std::time::Duration;

pub use self::local::LocalBus;
pub use self::redis::RedisBus;

/// Something that arrived on a channel this node subscribed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A call event on a user's channel (JSON `call::Event`).
    User { user: String, payload: String },
    /// A presence change on the shared presence channel (JSON `presence::Change`).
    Presence(String),
}

#[derive(Debug, thiserror::Error)]
#[error("bus: {0}")]
pub struct BusError(pub String);

/// Presence as the bus knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceState {
    pub online: bool,
    /// Unix ms of the last time a device of the user went offline (or refreshed).
    pub last_seen: Option<u64>,
}

/// What a node needs from the bus. Each node gets its incoming messages from the
/// receiver its constructor returned.
pub trait Bus: Clone + Send + Sync + 'static {
    /// Deliver `payload` to every node subscribed to `user`.
    fn publish_user(
        &self,
        user: &str,
        payload: String,
    ) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Deliver `payload` to every node (the presence channel).
    fn publish_presence(
        &self,
        payload: String,
    ) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Start receiving `user`'s channel; returns once the subscription is active.
    fn subscribe(&self, user: &str) -> impl Future<Output = Result<(), BusError>> + Send;
    fn unsubscribe(&self, user: &str) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Atomically set `key` to `value` unless it is set (`SET NX EX`): true if this call
    /// set it.
    fn claim(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, BusError>> + Send;
    /// Mark `device` of `user` online for `ttl` (refresh before it lapses).
    fn set_online(
        &self,
        user: &str,
        device: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Mark `device` offline and record `now_ms` as the user's last-seen time.
    fn set_offline(
        &self,
        user: &str,
        device: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), BusError>> + Send;
    fn presence(&self, user: &str) -> impl Future<Output = Result<PresenceState, BusError>> + Send;
    /// Append a missed call (JSON) for `user`, kept for `ttl`.
    fn store_missed(
        &self,
        user: &str,
        payload: String,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Take (and delete) every missed call stored for `user`, oldest first.
    fn take_missed(&self, user: &str)
        -> impl Future<Output = Result<Vec<String>, BusError>> + Send;
}

/// Missed calls kept per user; older ones are dropped.
pub const MAX_MISSED: usize = 100;
