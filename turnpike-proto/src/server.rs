//! The TURN server core: one per worker, driven by the shell.
//!
//! # Driving it
//!
//! The shell calls a `handle_*` method for every input (a client datagram or framed
//! stream message, a peer datagram on a relay socket, the outcome of opening a relay
//! socket, a closed stream, a timeout), then drains the outputs: `poll_event` until
//! `None` (answering each [`Event::OpenRelay`] with [`Server::handle_relay_opened`]),
//! then `poll_transmit` until `None`, then sleeps until `poll_timeout`. Every method
//! takes `now`; nothing here reads a clock, a socket or the environment, so every
//! behaviour is testable with virtual time (see `tests/core_*.rs`).
//!
//! The two hot paths return their forwarding decision directly instead of queueing it,
//! both as a range of the buffer the shell passed in: [`Forward`] names the payload
//! within the client's packet, and [`ToClient`] the message in the shell's receive
//! buffer, where the ChannelData header or Data indication has been written in front of
//! the peer's payload. Neither allocates, and neither borrows the shell's buffer, so the
//! shell is free to use it (and the core) again before acting on the decision.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::addr::{ClientId, Family, RelayKey, Transport};
use super::allocation::Allocation;
use super::auth::{Authenticator, Credential, Integrity, OFFERED_ALGORITHMS};
use super::bandwidth::Bandwidth;
use super::peer_policy::PeerPolicy;
use super::reject::Reject;
use super::shared::Shared;
use super::stats::{DropReason, MethodLabel, Stats};
use super::stun::{attr, method, Class, Message, MessageBuilder, TransactionId};
use super::throttle::AuthGate;

pub(crate) use super::requests::Pending;

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
    /// (cloud VMs). `None`: `bind` if specified, else the local address the client
    /// reached, else `host`.
    pub advertise: Option<IpAddr>,
    /// An address of this family on the host's interfaces, for a wildcard `bind`: what a
    /// client that reached us over the other family is told (RFC 6156: an IPv4 client
    /// asking for an IPv6 relayed address, and the reverse). `None`: no such address,
    /// so such a client gets 440 unless `advertise` is set.
    pub host: Option<IpAddr>,
}

/// Everything the core needs, as plain values (config flows one way: TOML → settings →
/// this). Build one with [`ServerConfig::new`] and change the fields that differ from
/// its defaults, so a new field is one change in one place.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// REALM of the long-term credential mechanism (RFC 8489 §9.2), part of every
    /// user's key.
    pub realm: String,
    /// SOFTWARE attribute on authenticated responses; `None` to omit.
    pub software: Option<String>,
    /// Static long-term users: name → password.
    pub users: Vec<(String, String)>,
    /// TURN REST shared secrets; any of them may verify (rotation).
    pub secrets: Vec<Vec<u8>>,
    /// A REST credential claiming to expire further ahead than this (plus a 60 s
    /// clock-skew allowance) is refused.
    pub max_credential_lifetime: Duration,
    /// How long a nonce stays valid before 438 Stale Nonce.
    pub nonce_lifetime: Duration,
    /// Key of the stateless nonce HMAC; the same for all workers so any of them can
    /// verify a nonce another issued.
    pub nonce_key: [u8; 32],
    /// Lifetime granted when the client asks for none or less (RFC 8656: 600 s).
    pub default_lifetime: Duration,
    /// Cap on the lifetime a client may ask for.
    pub max_lifetime: Duration,
    /// Where IPv4 relay sockets bind and what they advertise; `None`: no IPv4 relaying.
    pub relay_v4: Option<RelayIp>,
    /// Where IPv6 relay sockets bind and what they advertise; `None`: no IPv6 relaying.
    pub relay_v6: Option<RelayIp>,
    /// Longest USERNAME accepted (bytes); longer ones get 400.
    pub max_username_len: usize,
    /// Also accept ChannelBind numbers 0x5000..=0x7FFF, as RFC 5766 did (RFC 8656
    /// allows 0x4000..=0x4FFF only), for clients of that era such as coturn's uclient.
    pub rfc5766_channel_numbers: bool,
    /// Which peers allocations may reach (403 otherwise).
    pub peer_policy: PeerPolicy,
    /// Wall clock at a known `Instant`, to check REST expiry times without reading a clock.
    pub unix_anchor: (Instant, u64),
    /// Report channel routes for an in-kernel fast path ([`Server::poll_fast_path`]).
    /// Ignored when the shared state sets bandwidth caps: the kernel would not count
    /// what it forwards against them, so capped traffic stays on the sockets.
    pub fast_path: bool,
    /// Classify relayed payloads and measure each RTP stream's loss and jitter (see
    /// [`crate::quality`]). Fixed for a core's life. On, the core reports no fast-path
    /// routes, so that every packet is measured.
    pub rtp_quality: bool,
    /// Other relays a draining core sends new Allocates to (300 Try Alternate with
    /// ALTERNATE-SERVER); empty: they get 403 instead (see [`crate::drain`]).
    pub alternate_servers: Vec<SocketAddr>,
}

impl ServerConfig {
    /// The RFC defaults and those of `config/turnpike.toml`, with no users, no secrets,
    /// no relay address family and the default peer policy. The two values without a
    /// safe default are parameters: the nonce key (random in production; the same for
    /// every worker) and the wall clock at some `Instant`.
    pub fn new(nonce_key: [u8; 32], unix_anchor: (Instant, u64)) -> ServerConfig {
        ServerConfig {
            realm: "turnpike".to_owned(),
            software: Some("Turnpike".to_owned()),
            users: Vec::new(),
            secrets: Vec::new(),
            max_credential_lifetime: Duration::from_secs(86_400),
            nonce_lifetime: Duration::from_secs(600),
            nonce_key,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            relay_v4: None,
            relay_v6: None,
            max_username_len: 256,
            rfc5766_channel_numbers: false,
            peer_policy: PeerPolicy::new(Vec::new(), Vec::new()),
            unix_anchor,
            fast_path: false,
            rtp_quality: false,
            alternate_servers: Vec::new(),
        }
    }
}

/// A response or error the core wants sent to a client.
#[derive(Debug)]
pub struct Transmit {
    /// The client (and, for UDP, the listener it reached) to send to.
    pub dst: ClientId,
    /// One whole STUN message; on a stream transport the shell sends it as is (STUN
    /// messages are a multiple of four bytes long, so they need no padding).
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
    /// The client asked for DONT-FRAGMENT (RFC 8656 §18.9): set the DF bit on what
    /// this relay socket sends (no fragmentation; oversize sends fail instead).
    DontFragment(RelayKey),
    /// A request from this stream or QUIC client passed authentication: the shell
    /// may stop timing the connection out as unauthenticated. Never for UDP clients.
    Authenticated(ClientId),
}

/// Send `packet[range]` from relay socket `relay` to `peer` (client → peer hot path),
/// where `packet` is what was given to [`Server::handle_client_input`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The allocation's relay socket to send from.
    pub relay: RelayKey,
    /// The peer to send to.
    pub peer: SocketAddr,
    /// Where the bytes to send lie in the packet: the ChannelData payload or the Send
    /// indication's DATA.
    pub range: Range<usize>,
}

/// Send `buf[range]` to `client` (peer → client hot path, framed in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToClient {
    /// The client whose allocation the peer reached.
    pub client: ClientId,
    /// The framed message (ChannelData or Data indication) in the shell's buffer.
    pub range: Range<usize>,
}

/// Comprehension-required attributes we understand (RFC 8489 §14: anything else in
/// 0x0000–0x7FFF earns a 420 listing it).
pub(crate) const KNOWN_REQUIRED: &[u16] = &[
    attr::MAPPED_ADDRESS,
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::ERROR_CODE,
    attr::UNKNOWN_ATTRIBUTES,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REALM,
    attr::NONCE,
    attr::XOR_RELAYED_ADDRESS,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::EVEN_PORT,
    attr::REQUESTED_TRANSPORT,
    attr::DONT_FRAGMENT,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::PASSWORD_ALGORITHM,
    attr::XOR_MAPPED_ADDRESS,
    attr::RESERVATION_TOKEN,
    attr::PRIORITY,
    attr::USE_CANDIDATE,
];

/// What a response needs to know about the request it answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestInfo {
    pub method: u16,
    pub tid: TransactionId,
    /// Answer with FINGERPRINT when the request had one (RFC 8489 §7.3).
    pub fingerprint: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Check whether this client's allocation has expired.
    Allocation(ClientId),
    /// An EVEN-PORT reservation token lapses (RFC 8656 §7.2: about 30 s).
    Reservation(u64),
    /// The drain deadline: nothing to expire, but the shell wakes and asks
    /// [`Server::drained`].
    Drain,
}

/// The hasher of the two maps every packet looks up (allocations by client, by relay
/// socket): foldhash, keyed from the core's seed, instead of the standard SipHash-1-3,
/// which took about a third of the core's instructions per packet. foldhash resists
/// collisions only as long as its seed is secret (the core's seed is random in
/// production), which is enough here: a key enters these maps only with an allocation,
/// so after authentication and within the quotas; packets from anyone else are
/// lookups that cannot aim at a bucket without the seed.
pub(crate) type PacketHasher = foldhash::fast::FixedState;

/// One worker's TURN server: its allocations, their permissions, channels and timers.
/// See the module docs for how the shell drives it.
pub struct Server {
    pub(crate) config: ServerConfig,
    pub(crate) auth: Authenticator,
    pub(crate) rng: StdRng,
    /// Allocations by the 5-tuple that owns them.
    pub(crate) allocations: HashMap<ClientId, Allocation, PacketHasher>,
    /// Which allocation each relay socket belongs to.
    pub(crate) relays: HashMap<RelayKey, ClientId, PacketHasher>,
    /// Allocations waiting for their relay sockets (two-phase: see `handle_relay_opened`).
    pub(crate) pending: HashMap<ClientId, Pending>,
    /// Relay sockets the shell is opening, and for whom.
    pub(crate) opening: HashMap<RelayKey, ClientId>,
    /// The port pool, relayed addresses and quotas this core shares with the relay's
    /// other cores (see [`crate::shared`]).
    pub(crate) shared: Arc<dyn Shared>,
    /// Deadlines, lazily invalidated: an entry whose object was refreshed or deleted
    /// is skipped when it fires.
    pub(crate) timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) stats: Stats,
    /// Allocations whose fast-path routes may have changed since the shell last asked.
    pub(crate) fast_dirty: Vec<ClientId>,
    /// Set by [`Server::handle_drain`]; see [`crate::drain`].
    pub(crate) drain: Option<crate::drain::Drain>,
    /// The bandwidth caps, taken from `shared` once (`None`: no cap, and the packet
    /// path does not look).
    pub(crate) bandwidth: Option<Arc<Bandwidth>>,
    /// Where each QUIC tunnel's client is now (the shell reports it: the tunnel's
    /// `ClientId` names the tunnel, not the client's address), so that the failed
    /// sign-in throttle counts a client's tunnels as one source.
    pub(crate) tunnel_sources: HashMap<ClientId, IpAddr>,
}

impl Server {
    /// A core with no allocations. `shared` is what it shares with the relay's other
    /// cores (one [`SharedPool`](crate::shared::SharedPool) for all of them); `rng_seed`
    /// seeds its RNG (relay ports, reservation tokens), so runs are reproducible.
    pub fn new(mut config: ServerConfig, shared: Arc<dyn Shared>, rng_seed: u64) -> Server {
        let bandwidth = shared.bandwidth();
        if bandwidth.is_some() || config.rtp_quality {
            config.fast_path = false;
        }
        let auth = Authenticator::new(
            config.realm.clone(),
            config.users.clone(),
            config.secrets.clone(),
            config.max_credential_lifetime.as_secs(),
            config.nonce_lifetime.as_secs(),
            config.nonce_key,
            config.max_username_len,
        );
        Server {
            shared,
            auth,
            config,
            rng: StdRng::seed_from_u64(rng_seed),
            // Derived from the seed rather than equal to it: the RNG's own state stays
            // unrelated to the hash key.
            allocations: HashMap::with_hasher(PacketHasher::with_seed(
                rng_seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
            )),
            relays: HashMap::with_hasher(PacketHasher::with_seed(
                rng_seed.rotate_left(41) ^ 0xc2b2_ae3d_27d4_eb4f,
            )),
            pending: HashMap::new(),
            opening: HashMap::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            fast_dirty: Vec::new(),
            drain: None,
            bandwidth,
            tunnel_sources: HashMap::new(),
        }
    }

    /// The address a QUIC tunnel's client sends from now (it changes when the QUIC
    /// connection migrates). The shell reports it before the tunnel's STUN messages.
    pub fn handle_tunnel_source(&mut self, client: ClientId, source: IpAddr) {
        if client.transport == Transport::Quic {
            self.tunnel_sources.insert(client, source);
        }
    }

    /// The address the failed sign-in throttle counts `client` under: its own, or for
    /// a QUIC tunnel the one the shell reported (every tunnel the shell has not
    /// reported counts as one source, the tunnels' discard prefix).
    fn source_of(&self, client: &ClientId) -> IpAddr {
        match self.tunnel_sources.get(client) {
            Some(&source) => source,
            None => client.remote.ip(),
        }
    }

    /// One datagram (UDP) or one framed message (TCP/TLS) from a client.
    pub fn handle_client_input(
        &mut self,
        now: Instant,
        client: ClientId,
        packet: &[u8],
    ) -> Option<Forward> {
        // RFC 7983 demultiplexing on the first byte: 0–3 STUN, 64–79 ChannelData
        // (to 127 for RFC 5766 channel numbers; unbound numbers are dropped anyway).
        match packet.first() {
            Some(0x40..=0x7F) => self.handle_channel_data(now, client, packet),
            Some(0x00..=0x03) => self.handle_stun(now, client, packet),
            _ => {
                self.stats.count_drop(DropReason::Malformed);
                None
            }
        }
    }

    fn handle_stun(&mut self, now: Instant, client: ClientId, packet: &[u8]) -> Option<Forward> {
        let msg = match Message::parse(packet) {
            Ok(msg) => msg,
            Err(_) => {
                // RFC 8489 §6.3: malformed messages are silently discarded.
                self.stats.count_drop(DropReason::Malformed);
                return None;
            }
        };
        match (msg.class(), msg.method()) {
            (Class::Request, _) => {
                self.handle_request(now, client, &msg);
                None
            }
            (Class::Indication, method::SEND) => self.handle_send(now, client, &msg),
            // Responses and other indications need no answer (RFC 8489 §6.3.2-3).
            _ => {
                self.stats.count_drop(DropReason::Ignored);
                None
            }
        }
    }

    fn handle_request(&mut self, now: Instant, client: ClientId, msg: &Message<'_>) {
        let info = RequestInfo {
            method: msg.method(),
            tid: msg.transaction_id(),
            fingerprint: msg.has(attr::FINGERPRINT),
        };
        let label = method_label(info.method);
        if info.method == method::BINDING {
            // RFC 8489 §6.3.1: Binding needs no credentials.
            let unknown = msg.unknown_required(KNOWN_REQUIRED);
            if !unknown.is_empty() {
                return self.reply_error(
                    now,
                    client,
                    info,
                    &Reject::UnknownAttributes(unknown),
                    None,
                );
            }
            let mut payload = Vec::with_capacity(64);
            let mut b = MessageBuilder::new(&mut payload, Class::Success, info.method, info.tid);
            b.add_xor_address(attr::XOR_MAPPED_ADDRESS, client.remote);
            self.seal(&mut b, info, None);
            self.stats.count_request(label, 0);
            self.transmits.push_back(Transmit {
                dst: client,
                payload,
            });
            return;
        }
        if label == MethodLabel::Other {
            // RFC 8489 §6.3.1: a request with a method we do not know gets 400.
            return self.reply_error(now, client, info, &Reject::BadRequest, None);
        }
        // An allocation past its lifetime whose timer has not fired yet is gone for
        // every request too (a Refresh cannot revive it; an Allocate may replace it).
        if self
            .allocations
            .get(&client)
            .is_some_and(|a| a.expires <= now)
        {
            self.delete_allocation(now, client);
        }
        // A 401 to a request that carried MESSAGE-INTEGRITY is a failed sign-in
        // (unknown user, wrong password, expired REST credential, wrong realm); the 401
        // to a request without it is the usual challenge (RFC 8489 §9.2.4) that precedes
        // every first sign-in, and is not one. Only failed sign-ins feed the throttle,
        // and only signed requests are throttled: the challenge stays answered, so a
        // neighbour behind the same NAT can still learn a nonce and sign in.
        let signed = msg.has(attr::MESSAGE_INTEGRITY) || msg.has(attr::MESSAGE_INTEGRITY_SHA256);
        let username = msg.get(attr::USERNAME).unwrap_or_default();
        let source = self.source_of(&client);
        let gate = if signed {
            self.shared.auth_gate(source, username, now)
        } else {
            AuthGate::Open
        };
        if gate == AuthGate::Drop {
            // Dropped unanswered and unchecked: a guess costs us no HMAC and tells the
            // guesser nothing, not even that the source is throttled.
            self.stats.auth_throttled += 1;
            return;
        }
        let cred = match self.auth.authenticate(msg, self.unix_now(now), &client) {
            Ok(cred) => cred,
            Err(reject) => {
                if signed && matches!(reject, Reject::Unauthorized) {
                    self.stats.auth_failures += 1;
                    if self.shared.auth_failed(source, username, now) {
                        // A throttled source's wrong guess for a fresh username (or one
                        // that passed the gate just before another worker counted the
                        // failure that throttled the source) goes unanswered too. The
                        // failure that reaches the limit is still answered.
                        self.stats.auth_throttled += 1;
                        return;
                    }
                }
                return self.reply_error(now, client, info, &reject, None);
            }
        };
        if client.transport != Transport::Udp {
            self.events.push_back(Event::Authenticated(client));
        }
        let unknown = msg.unknown_required(KNOWN_REQUIRED);
        if !unknown.is_empty() {
            let reject = Reject::UnknownAttributes(unknown);
            return self.reply_error(now, client, info, &reject, Some(&cred));
        }
        let result = match info.method {
            method::ALLOCATE => self.handle_allocate(now, client, msg, info, cred.clone()),
            method::REFRESH => self.handle_refresh(now, client, msg, info, &cred),
            method::CREATE_PERMISSION => {
                self.handle_create_permission(now, client, msg, info, &cred)
            }
            method::CHANNEL_BIND => self.handle_channel_bind(now, client, msg, info, &cred),
            _ => Err(Reject::BadRequest),
        };
        if let Err(reject) = result {
            self.reply_error(now, client, info, &reject, Some(&cred));
        }
    }

    /// A stream client's connection closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn handle_client_closed(&mut self, now: Instant, client: ClientId) {
        self.tunnel_sources.remove(&client);
        if self.pending.contains_key(&client) {
            self.abandon_pending(client);
        }
        if self.allocations.contains_key(&client) {
            self.delete_allocation(now, client);
        }
    }

    /// Expire what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((deadline, timer))) = self.timers.peek().copied() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Allocation(client) => {
                    let Some(alloc) = self.allocations.get_mut(&client) else {
                        continue;
                    };
                    if alloc.expires <= now {
                        self.delete_allocation(now, client);
                    } else if alloc.timer_at == deadline {
                        // Refreshed since this timer was queued: re-arm at the new expiry.
                        alloc.timer_at = alloc.expires;
                        let at = alloc.expires;
                        self.set_timer(at, Timer::Allocation(client));
                    }
                }
                Timer::Reservation(token) => self.shared.expire_reservation(token, now),
                Timer::Drain => {}
            }
        }
    }

    /// The next STUN message to send to a client (answers and errors), in order.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing the shell must do with its sockets; drain before transmits, since
    /// an answer may wait for a relay socket ([`Event::OpenRelay`]).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Server::handle_timeout`] is next due (`None`: nothing to time out).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((deadline, _))| *deadline)
    }

    /// This core's counters, for the shell to publish.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Live allocations in this core.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    pub(crate) fn unix_now(&self, now: Instant) -> u64 {
        let (at, unix) = self.config.unix_anchor;
        match now.checked_duration_since(at) {
            Some(ahead) => unix + ahead.as_secs(),
            None => unix.saturating_sub(at.duration_since(now).as_secs()),
        }
    }

    pub(crate) fn delete_allocation(&mut self, _now: Instant, client: ClientId) {
        let Some(alloc) = self.allocations.remove(&client) else {
            return;
        };
        for relay in &alloc.relays {
            self.relays.remove(&relay.key);
            self.shared.release_port(relay.key.port.0);
            self.events.push_back(Event::CloseRelay(relay.key));
        }
        self.shared.release_quota(&alloc.credential.quota_user);
        if let Some(bandwidth) = &self.bandwidth {
            bandwidth.release(&alloc.credential.quota_user, alloc.bandwidth);
        }
        self.fast_path_changed(client);
        self.stats.allocations_deleted += 1;
        self.stats.allocations = self.allocations.len() as u64;
    }

    /// Add SOFTWARE, the integrity attribute the client used, and FINGERPRINT.
    /// SOFTWARE goes only on authenticated answers, so an unauthenticated request
    /// never gets more bytes back than it must (amplification).
    pub(crate) fn seal(
        &self,
        b: &mut MessageBuilder<'_>,
        info: RequestInfo,
        cred: Option<&Credential>,
    ) {
        if let Some(cred) = cred {
            if let Some(software) = &self.config.software {
                b.add(attr::SOFTWARE, software.as_bytes());
            }
            match cred.integrity {
                Integrity::Sha1 => b.add_message_integrity(&cred.key),
                Integrity::Sha256 => b.add_message_integrity_sha256(&cred.key),
            }
        }
        if info.fingerprint {
            b.add_fingerprint();
        }
    }

    pub(crate) fn reply_error(
        &mut self,
        now: Instant,
        client: ClientId,
        info: RequestInfo,
        reject: &Reject,
        cred: Option<&Credential>,
    ) {
        self.stats
            .count_request(method_label(info.method), reject.code());
        tracing::debug!(
            %client,
            method = method_label(info.method).as_str(),
            code = reject.code(),
            "request refused: {}",
            reject.reason()
        );
        let mut payload = Vec::with_capacity(128);
        let mut b = MessageBuilder::new(&mut payload, Class::Error, info.method, info.tid);
        b.add_error_code(reject.code(), reject.reason());
        match reject {
            Reject::UnknownAttributes(types) => b.add_unknown_attributes(types),
            // RFC 8489 §14.15: where to try instead (signed below when the request was).
            Reject::TryAlternate(alternate) => b.add_address(attr::ALTERNATE_SERVER, *alternate),
            Reject::Unauthorized | Reject::StaleNonce => {
                // RFC 8489 §9.2.4: a fresh nonce and the realm, and the algorithms we
                // accept. Never MESSAGE-INTEGRITY: the client did not prove a key.
                let nonce = self.auth.nonce(self.unix_now(now), &client);
                b.add(attr::REALM, self.auth.realm().as_bytes());
                b.add(attr::NONCE, nonce.as_bytes());
                b.add(
                    attr::PASSWORD_ALGORITHMS,
                    &attr::encode_password_algorithms(&OFFERED_ALGORITHMS),
                );
                self.seal(&mut b, info, None);
                self.transmits.push_back(Transmit {
                    dst: client,
                    payload,
                });
                return;
            }
            _ => {}
        }
        self.seal(&mut b, info, cred);
        self.transmits.push_back(Transmit {
            dst: client,
            payload,
        });
    }

    /// The address we would advertise in XOR-RELAYED-ADDRESS for a relay socket of
    /// `family` (RFC 8656 §7.2), or `None` if we serve no such family or know no
    /// usable address of it: we never hand out a relayed address like `[::]:port`.
    pub(crate) fn relay_ip(&self, family: Family, client: &ClientId) -> Option<IpAddr> {
        let relay = match family {
            Family::V4 => self.config.relay_v4.as_ref()?,
            Family::V6 => self.config.relay_v6.as_ref()?,
        };
        if let Some(ip) = relay.advertise {
            return Some(ip);
        }
        if !relay.bind.is_unspecified() {
            return Some(relay.bind);
        }
        // Bound to the wildcard with nothing configured: the address the client
        // reached us on is the best guess of a reachable address of ours; over the
        // other family, the host's own address of this family.
        let local = client.local.ip();
        if Family::of(&client.local) == family && !local.is_unspecified() {
            return Some(local);
        }
        relay.host
    }

    pub(crate) fn advertised(&self, key: RelayKey, client: &ClientId) -> SocketAddr {
        let ip = self
            .relay_ip(key.family, client)
            .unwrap_or_else(|| client.local.ip());
        SocketAddr::new(ip, key.port.0)
    }

    pub(crate) fn set_timer(&mut self, at: Instant, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
    }
}

pub(crate) fn method_label(method: u16) -> MethodLabel {
    match method {
        method::BINDING => MethodLabel::Binding,
        method::ALLOCATE => MethodLabel::Allocate,
        method::REFRESH => MethodLabel::Refresh,
        method::CREATE_PERMISSION => MethodLabel::CreatePermission,
        method::CHANNEL_BIND => MethodLabel::ChannelBind,
        _ => MethodLabel::Other,
    }
}
