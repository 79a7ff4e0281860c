//! The TURN server core (skeleton: API only).

use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::time::{Duration, Instant};

use super::addr::{ClientId, RelayKey};
use super::stats::Stats;

/// Bytes the shell reserves in front of a peer datagram in its receive buffer, so the
/// core can write a ChannelData header (4 bytes) or a whole Data indication prefix
/// (20 header + 24 XOR-PEER-ADDRESS + 4 DATA header) in place, without copying.
pub const PEER_HEADROOM: usize = 48;
/// Bytes the shell reserves after a peer datagram: padding to a multiple of four for
/// stream transports (RFC 8656 §12.5) and for the DATA attribute.
pub const PEER_TAILROOM: usize = 4;

/// Where the relay sockets of one family bind and which address they advertise.
#[derive(Debug, Clone)]
pub struct RelayIp {
    /// The address relay sockets bind to (may be unspecified).
    pub bind: IpAddr,
    /// The address put into XOR-RELAYED-ADDRESS; differs from `bind` behind NAT
    /// (cloud VMs). `None`: `bind` if specified, else the local address the client reached.
    pub advertise: Option<IpAddr>,
}

/// Everything the core needs, as plain values (config flows one way: TOML → settings → this).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub realm: String,
    /// SOFTWARE attribute on responses; `None` to omit.
    pub software: Option<String>,
    /// Static long-term users: name → password.
    pub users: Vec<(String, String)>,
    /// TURN REST shared secrets; any of them may verify (rotation).
    pub secrets: Vec<Vec<u8>>,
    /// A REST credential claiming to expire further ahead than this is refused.
    pub max_credential_lifetime: Duration,
    /// How long a nonce stays valid before 438 Stale Nonce.
    pub nonce_lifetime: Duration,
    /// Key of the stateless nonce HMAC; shared by all workers so any of them can verify.
    pub nonce_key: [u8; 32],
    /// Lifetime granted when the client asks for none (RFC 8656: 600 s).
    pub default_lifetime: Duration,
    /// Cap on the lifetime a client may ask for.
    pub max_lifetime: Duration,
    pub relay_v4: Option<RelayIp>,
    pub relay_v6: Option<RelayIp>,
    /// This worker's slice of the relay port range (workers own disjoint slices).
    pub ports: RangeInclusive<u16>,
    /// Longest USERNAME accepted (bytes); longer ones get 400.
    pub max_username_len: usize,
    /// Wall clock at a known `Instant`, to check REST expiry times without reading a clock.
    pub unix_anchor: (Instant, u64),
}

/// A response or error the core wants sent to a client.
#[derive(Debug)]
pub struct Transmit {
    pub dst: ClientId,
    pub payload: Vec<u8>,
}

/// What the shell must do with its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Bind a UDP socket on the relay address of `key.family` and `key.port`, then
    /// report the outcome with [`Server::handle_relay_opened`].
    OpenRelay(RelayKey),
    /// Close the relay socket; its allocation is gone.
    CloseRelay(RelayKey),
}

/// Forward `payload` from relay socket `relay` to `peer` (client → peer hot path).
#[derive(Debug, PartialEq, Eq)]
pub struct Forward<'a> {
    pub relay: RelayKey,
    pub peer: SocketAddr,
    pub payload: &'a [u8],
}

/// Send `buf[range]` to `client` (peer → client hot path, framed in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToClient {
    pub client: ClientId,
    pub range: Range<usize>,
}

pub struct Server {
    stats: Stats,
}

impl Server {
    pub fn new(_config: ServerConfig, _rng_seed: u64) -> Server {
        Server {
            stats: Stats::default(),
        }
    }

    /// One datagram (UDP) or one framed message (TCP/TLS) from a client.
    pub fn handle_client_input<'a>(
        &mut self,
        _now: Instant,
        _client: ClientId,
        _packet: &'a [u8],
    ) -> Option<Forward<'a>> {
        None
    }

    /// One datagram from `peer` on relay socket `relay`. It sits at
    /// `buf[PEER_HEADROOM..PEER_HEADROOM + len]`; `buf` has PEER_TAILROOM more bytes.
    pub fn handle_peer_input(
        &mut self,
        _now: Instant,
        _relay: RelayKey,
        _peer: SocketAddr,
        _buf: &mut [u8],
        _len: usize,
    ) -> Option<ToClient> {
        None
    }

    /// Outcome of an [`Event::OpenRelay`]: `Ok(())` once bound, `Err(())` if the port is taken.
    pub fn handle_relay_opened(&mut self, _now: Instant, _relay: RelayKey, _ok: Result<(), ()>) {}

    /// A stream client's connection closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn handle_client_closed(&mut self, _now: Instant, _client: ClientId) {}

    pub fn handle_timeout(&mut self, _now: Instant) {}

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        None
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        None
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}
