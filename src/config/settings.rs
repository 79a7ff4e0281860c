//! The validated, typed configuration the rest of Turnpike is built from.
//!
//! Everything here is a plain value: addresses are parsed, durations are `Duration`,
//! "0 = unlimited" is `None`, `workers = 0` is resolved to the core count. Components take
//! what they need from here into their own config structs (e.g. the core's `ServerConfig`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// Everything `turnpike serve` needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// REALM attribute (RFC 8489 §14.9); part of every long-term credential key.
    pub realm: String,
    /// SOFTWARE attribute (RFC 8489 §14.14); `None` omits it.
    pub software: Option<String>,
    /// Worker threads, at least 1 (`workers = 0` in the file resolves to the core count).
    pub workers: usize,
    /// How long a worker keeps polling without sleeping after traffic (zero: off).
    pub busy_poll: Duration,
    /// Under steady traffic, how long a worker waits after a batch before looking
    /// again (zero: off).
    pub coalesce: Duration,
    /// Interfaces whose ingress gets the in-kernel ChannelData fast path (empty: off).
    pub fast_path_interfaces: Vec<String>,
    /// How long a drain (SIGTERM) waits for the last allocation before the process
    /// exits anyway.
    pub drain_timeout: Duration,
    /// Relays a draining one redirects new Allocates to (300 + ALTERNATE-SERVER);
    /// empty: they get 403.
    pub alternate_servers: Vec<SocketAddr>,
    /// TURN listeners per transport.
    pub listen: Listen,
    /// Certificate for the TLS listeners; `Some` exactly when `listen.tls` is not empty.
    pub tls: Option<Tls>,
    /// Relay sockets and allocation lifetimes.
    pub relay: Relay,
    /// Long-term credentials.
    pub auth: Auth,
    /// Allocation quotas and request limits.
    pub limits: Limits,
    /// Adjustments to the built-in peer address policy.
    pub peers: Peers,
    /// Address of the Prometheus `/metrics` endpoint; `None` turns it off.
    pub metrics: Option<SocketAddr>,
    /// `telemetry.rtp_quality`: measure RTP streams (see `turnpike_proto::quality`).
    pub rtp_quality: bool,
    /// Logging.
    pub log: Log,
    /// The signaling service; `None` when `signaling.listen = ""`.
    pub signaling: Option<Signaling>,
    /// The fleet registry; `None` when `fleet.redis_url = ""`.
    pub fleet: Option<Fleet>,
}

/// `[fleet]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// The registry's Redis; may hold a password, hence a `Secret`.
    pub redis_url: Secret,
    /// This relay writes heartbeats (false: a signaling-only node that just reads).
    pub announce: bool,
    /// This relay's id in the registry; `None`: the first public URL's `host:port`.
    pub id: Option<String>,
    pub region: String,
    /// What devices are told; empty: this relay's listen addresses.
    pub public_urls: Vec<String>,
}

/// `[signaling]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signaling {
    /// Where `GET /v1/signal` and friends listen.
    pub listen: SocketAddr,
    /// HS256 key for bearer tokens; empty: a random key per process (dev login only).
    pub token_key: Secret,
    /// `POST /v1/dev/login` issues tokens for any name.
    pub dev_login: bool,
    pub invite_lifetime: Duration,
    pub connect_timeout: Duration,
    pub resume_grace: Duration,
    /// Lifetime of the TURN REST credentials handed to devices.
    pub credential_ttl: Duration,
    pub max_frame_bytes: usize,
    pub invites_per_minute: u32,
    pub push_webhook: Option<String>,
    /// May hold a password, hence a `Secret`.
    pub redis_url: Option<Secret>,
    /// Relays to advertise; empty: this relay, from its listen addresses.
    pub relays: Vec<SignalingRelay>,
}

/// One advertised relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalingRelay {
    pub region: String,
    pub urls: Vec<String>,
}

/// TURN listener addresses, one list per transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    /// TURN over QUIC (CONNECT-UDP tunnels over HTTP/3).
    pub quic: Vec<SocketAddr>,
}

/// PEM files for the TLS listeners, as given (relative paths are relative to the working
/// directory); read by the shell at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// Relay sockets of one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAddr {
    /// Where relay sockets bind (may be unspecified: `0.0.0.0`, `::`).
    pub bind: IpAddr,
    /// What XOR-RELAYED-ADDRESS advertises, for a relay behind 1:1 NAT (cloud VMs).
    /// `None`: `bind` if it is specified, else the local address the client reached, else
    /// (a client of the other family) the host's own address (`crate::host_addrs`).
    pub external: Option<IpAddr>,
}

/// `[relay]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// IPv4 relay sockets; `None` when `relay.bind_ipv4 = ""` (no IPv4 relaying).
    pub ipv4: Option<RelayAddr>,
    /// IPv6 relay sockets (RFC 6156); `None` when `relay.bind_ipv6 = ""`.
    pub ipv6: Option<RelayAddr>,
    /// Relay ports, one pool shared by all workers.
    pub ports: RangeInclusive<u16>,
    /// Lifetime granted when a client asks for none (RFC 8656 §7.2: 600 s).
    pub default_lifetime: Duration,
    /// Cap on the lifetime a client may ask for.
    pub max_lifetime: Duration,
    /// Accept ChannelBind numbers 0x5000..=0x7FFF (RFC 5766) besides RFC 8656's range.
    pub rfc5766_channel_numbers: bool,
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Static users, unique by name, in file order.
    pub users: Vec<User>,
    /// TURN REST shared secrets; any of them verifies (rotation). The first one mints.
    pub secrets: Vec<Secret>,
    /// A REST credential whose expiry is further ahead than this, plus 60 s of allowed
    /// clock skew, is refused.
    pub max_credential_lifetime: Duration,
    /// How long a nonce stays valid before 438 Stale Nonce (RFC 8489 §9.2).
    pub nonce_lifetime: Duration,
}

/// One static long-term user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: Secret,
}

/// `[limits]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Allocations one user may hold at once (486 beyond it); `None` = unlimited.
    pub user_quota: Option<u32>,
    /// Allocations the whole relay holds at once (508 beyond it); `None` = unlimited.
    pub total_quota: Option<u32>,
    /// Longest USERNAME accepted, in bytes (400 beyond it).
    pub max_username_len: usize,
    /// Failed sign-ins from one source within a minute that throttle it; 0 = never.
    pub auth_failures_per_minute: u32,
    /// How long a throttled source's signed requests are dropped.
    pub auth_cooldown: Duration,
    /// Relayed payload caps in bits per second, each direction; 0 = none.
    pub max_bps_per_allocation: u64,
    pub max_bps_per_user: u64,
    pub max_bps_total: u64,
    /// TCP/TLS connections without an authenticated request are closed after this;
    /// `None` = never.
    pub unauthenticated_timeout: Option<Duration>,
    /// Open TCP/TLS connections from one source (IPv4 address, IPv6 /64); 0 = no cap.
    pub max_connections_per_source: u32,
    /// Open TCP/TLS connections in all; 0 = no cap.
    pub max_connections: u32,
}

/// `[peers]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers {
    /// Ranges permitted even though the built-in policy refuses them (loopback, private…).
    pub allow: Vec<IpNet>,
    /// Ranges always refused; wins over `allow`.
    pub deny: Vec<IpNet>,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive, checked at validation (`info`,
    /// `turnpike=debug,warn`, ...).
    pub level: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A password or shared secret. `Debug` never shows it, so logging `Settings` is safe.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is used (HMAC keys, password checks).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Settings {
    /// A few lines for `check-config` and the start-up log; no passwords or secrets.
    pub fn summary(&self) -> String {
        let list = |v: &[SocketAddr]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let relay_addr = |r: &Option<RelayAddr>| match r {
            None => "off".to_string(),
            Some(RelayAddr {
                bind,
                external: None,
            }) => bind.to_string(),
            Some(RelayAddr {
                bind,
                external: Some(ext),
            }) => format!("{bind} (advertised as {ext})"),
        };
        let quota = |q: Option<u32>| q.map_or("unlimited".to_string(), |n| n.to_string());
        format!(
            "realm: {}\nworkers: {}\nlisten udp: {}\nlisten tcp: {}\nlisten tls: {}\nlisten quic: {}\n\
             relay ipv4: {}\nrelay ipv6: {}\nrelay ports: {}-{}\n\
             users: {}, secrets: {}\nquota per user: {}, total: {}\n\
             peers allow: {}, deny: {}\nmetrics: {}\nrtp quality: {}\nsignaling: {}",
            self.realm,
            self.workers,
            list(&self.listen.udp),
            list(&self.listen.tcp),
            list(&self.listen.tls),
            list(&self.listen.quic),
            relay_addr(&self.relay.ipv4),
            relay_addr(&self.relay.ipv6),
            self.relay.ports.start(),
            self.relay.ports.end(),
            self.auth.users.len(),
            self.auth.secrets.len(),
            quota(self.limits.user_quota),
            quota(self.limits.total_quota),
            self.peers.allow.len(),
            self.peers.deny.len(),
            self.metrics.map_or("off".to_string(), |a| a.to_string()),
            if self.rtp_quality { "on" } else { "off" },
            self.signaling
                .as_ref()
                .map_or("off".to_string(), |s| format!(
                    "ws://{}/v1/signal",
                    s.listen
                )),
        )
    }
}
