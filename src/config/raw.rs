//! The configuration file exactly as written: serde structs that mirror the TOML sections.
//!
//! Every struct denies unknown fields, so a typo (`port_mni`) is an error that names the
//! key instead of a setting that silently does nothing. Every struct is `#[serde(default)]`,
//! so a file only needs the keys it changes; the `Default` impls below equal the values in
//! `config/turnpike.toml` (a test parses the embedded file and compares). Values stay as
//! written (strings for addresses and CIDRs) so that `validate` can say which key is wrong.

use serde::Deserialize;

/// The whole file: one field per `[section]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    pub listen: RawListen,
    pub tls: RawTls,
    pub relay: RawRelay,
    pub auth: RawAuth,
    pub limits: RawLimits,
    pub peers: RawPeers,
    pub metrics: RawMetrics,
    pub telemetry: RawTelemetry,
    pub log: RawLog,
    pub signaling: RawSignaling,
    pub fleet: RawFleet,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    pub realm: String,
    pub software: String,
    pub workers: usize,
    pub busy_poll_us: u64,
    pub coalesce_us: u64,
    pub fast_path_interfaces: Vec<String>,
    pub drain_timeout_secs: u64,
    pub alternate_servers: Vec<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            realm: "turnpike".into(),
            software: "Turnpike".into(),
            workers: 0,
            busy_poll_us: 0,
            coalesce_us: 0,
            fast_path_interfaces: Vec::new(),
            drain_timeout_secs: 600,
            alternate_servers: Vec::new(),
        }
    }
}

/// `[listen]`: TURN listener addresses per transport.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawListen {
    pub udp: Vec<String>,
    pub tcp: Vec<String>,
    pub tls: Vec<String>,
    pub quic: Vec<String>,
}

impl Default for RawListen {
    fn default() -> Self {
        let both = vec!["0.0.0.0:3478".to_string(), "[::]:3478".to_string()];
        RawListen {
            udp: both.clone(),
            tcp: both,
            tls: Vec::new(),
            quic: Vec::new(),
        }
    }
}

/// `[tls]`: certificate for the `listen.tls` and `listen.quic` listeners.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTls {
    pub certificate: String,
    pub private_key: String,
}

/// `[relay]`: relay sockets and allocation lifetimes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRelay {
    pub bind_ipv4: String,
    pub bind_ipv6: String,
    pub external_ipv4: String,
    pub external_ipv6: String,
    pub port_min: u16,
    pub port_max: u16,
    pub default_lifetime_secs: u64,
    pub max_lifetime_secs: u64,
    pub rfc5766_channel_numbers: bool,
}

impl Default for RawRelay {
    fn default() -> Self {
        RawRelay {
            bind_ipv4: "0.0.0.0".into(),
            bind_ipv6: "::".into(),
            external_ipv4: String::new(),
            external_ipv6: String::new(),
            port_min: 49152,
            port_max: 65535,
            default_lifetime_secs: 600,
            max_lifetime_secs: 3600,
            rfc5766_channel_numbers: false,
        }
    }
}

/// `[auth]`: long-term credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuth {
    /// `"name:password"` entries.
    pub users: Vec<String>,
    pub secrets: Vec<String>,
    pub max_credential_lifetime_secs: u64,
    pub nonce_lifetime_secs: u64,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            users: Vec::new(),
            secrets: Vec::new(),
            max_credential_lifetime_secs: 86400,
            nonce_lifetime_secs: 600,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLimits {
    pub user_quota: u32,
    pub total_quota: u32,
    pub max_username_len: usize,
    pub auth_failures_per_minute: u32,
    pub auth_cooldown_secs: u64,
    pub max_bps_per_allocation: u64,
    pub max_bps_per_user: u64,
    pub max_bps_total: u64,
    pub unauthenticated_timeout_secs: u64,
    pub max_connections_per_source: u32,
    pub max_connections: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            user_quota: 10,
            total_quota: 0,
            max_username_len: 256,
            auth_failures_per_minute: 20,
            auth_cooldown_secs: 60,
            max_bps_per_allocation: 0,
            max_bps_per_user: 0,
            max_bps_total: 0,
            unauthenticated_timeout_secs: 10,
            max_connections_per_source: 1000,
            max_connections: 0,
        }
    }
}

/// `[peers]`: CIDR lists that adjust the built-in peer address policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPeers {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: "127.0.0.1:9641".into(),
        }
    }
}

/// `[telemetry]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTelemetry {
    pub rtp_quality: bool,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    pub format: String,
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// `[signaling]`: the WebSocket signaling service (the `turnpike-signaling` crate).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSignaling {
    pub listen: String,
    pub token_key: String,
    pub dev_login: bool,
    pub invite_lifetime_secs: u64,
    pub connect_timeout_secs: u64,
    pub resume_grace_secs: u64,
    pub credential_ttl_secs: u64,
    pub max_frame_bytes: usize,
    pub invites_per_minute: u32,
    pub push_webhook: String,
    pub redis_url: String,
    pub relays: Vec<RawSignalingRelay>,
}

impl Default for RawSignaling {
    fn default() -> Self {
        RawSignaling {
            listen: "127.0.0.1:8080".into(),
            token_key: String::new(),
            dev_login: true,
            invite_lifetime_secs: 90,
            connect_timeout_secs: 30,
            resume_grace_secs: 30,
            credential_ttl_secs: 3600,
            max_frame_bytes: 65536,
            invites_per_minute: 20,
            push_webhook: String::new(),
            redis_url: String::new(),
            relays: Vec::new(),
        }
    }
}

/// One entry of `signaling.relays`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignalingRelay {
    pub region: String,
    pub urls: Vec<String>,
}

/// `[fleet]`: the relay registry in Redis that signaling ranks relays from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawFleet {
    pub redis_url: String,
    pub announce: bool,
    pub id: String,
    pub region: String,
    pub public_urls: Vec<String>,
}

impl Default for RawFleet {
    fn default() -> Self {
        RawFleet {
            redis_url: String::new(),
            announce: true,
            id: String::new(),
            region: "default".into(),
            public_urls: Vec::new(),
        }
    }
}
