//! The signaling service's plain config struct. `turnpike serve` builds it from the
//! validated `[signaling]` section; tests build it in code. Nothing here reads files.

use std::time::Duration;

use crate::credentials::RelayConfig;

/// Everything one signaling node needs.
#[derive(Clone)]
pub struct SignalingConfig {
    /// HS256 key that verifies bearer tokens (and signs dev-login tokens). Empty: a
    /// random key per process, usable only with dev login.
    pub token_key: Vec<u8>,
    /// Serve `POST /v1/dev/login`, which issues a token for any name. For demos only.
    pub dev_login: bool,
    /// Lifetime of tokens issued by dev login.
    pub dev_token_ttl: Duration,
    /// How long an invite rings before it becomes a missed call.
    pub invite_lifetime: Duration,
    /// How long an answered call may take to report `connected`.
    pub connect_timeout: Duration,
    /// How long a dropped connection's session (and its queued messages) is kept.
    pub resume_grace: Duration,
    /// Silence after which a connection is dropped; pings go out at a third of it.
    pub idle_timeout: Duration,
    /// How long a new connection may take to send `hello`.
    pub hello_timeout: Duration,
    /// Relays advertised in `hello_ok`, ranked per client.
    pub relays: Vec<RelayConfig>,
    /// TURN REST shared secret; `None`: ICE servers are advertised without credentials.
    pub turn_secret: Option<Vec<u8>>,
    /// Lifetime of minted relay credentials.
    pub credential_ttl: Duration,
    /// Largest WebSocket message accepted; larger ones close the connection (1009).
    pub max_frame_bytes: usize,
    /// Invites one device may send per minute; more get `rate_limited`, and twice as
    /// many close the connection (1008).
    pub invites_per_minute: u32,
    /// URL that receives an HTTP POST when a callee has no device online.
    pub push_webhook: Option<String>,
    /// `redis://...` to share calls and presence with other nodes; `None`: in-process.
    pub redis_url: Option<String>,
    /// `redis://...` of the fleet registry (see [`crate::fleet`]): relays are offered
    /// from it, live and ranked by load, instead of `relays`, and calls on a relay that
    /// starts draining are moved. `None`: the static `relays`.
    pub fleet_redis_url: Option<String>,
    /// Server messages kept per session for replay on resume (oldest dropped first).
    pub max_queued: usize,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        SignalingConfig {
            token_key: Vec::new(),
            dev_login: false,
            dev_token_ttl: Duration::from_secs(12 * 3600),
            invite_lifetime: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(30),
            resume_grace: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            hello_timeout: Duration::from_secs(10),
            relays: Vec::new(),
            turn_secret: None,
            credential_ttl: Duration::from_secs(3600),
            max_frame_bytes: 65536,
            invites_per_minute: 20,
            push_webhook: None,
            redis_url: None,
            fleet_redis_url: None,
            max_queued: 1024,
        }
    }
}

impl std::fmt::Debug for SignalingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys, secrets and the Redis URL (it may hold a password) are not shown.
        f.debug_struct("SignalingConfig")
            .field("dev_login", &self.dev_login)
            .field("invite_lifetime", &self.invite_lifetime)
            .field("connect_timeout", &self.connect_timeout)
            .field("resume_grace", &self.resume_grace)
            .field("relays", &self.relays)
            .field("credential_ttl", &self.credential_ttl)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("invites_per_minute", &self.invites_per_minute)
            .field("push_webhook", &self.push_webhook)
            .field("redis", &self.redis_url.is_some())
            .field("fleet", &self.fleet_redis_url.is_some())
            .finish_non_exhaustive()
    }
}
