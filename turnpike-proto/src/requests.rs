//! The TURN requests: Allocate, Refresh, CreatePermission, ChannelBind (RFC 8656 §7–§12,
//! RFC 6156). Each handler runs after authentication and returns the `Reject` the
//! client is told on failure; successes queue their own response.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

use super::addr::{ChannelNumber, ClientId, Family, RelayKey, RelayPort};
use super::allocation::{Allocation, Relay, Traffic};
use super::auth::Credential;
use super::channel_data;
use super::peer_policy::Denied;
use super::ports::Reservation;
use super::quality::AllocationQuality;
use super::reject::Reject;
use super::server::{Event, RequestInfo, Server, Timer, Transmit};
use super::stats::MethodLabel;
use super::stun::{attr, Class, Message, MessageBuilder};

/// RFC 8656 §7.2: a reservation made by EVEN-PORT with the R bit lasts about 30 s.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// How many ports we try when the kernel refuses a bind (another process holds it).
const MAX_BIND_ATTEMPTS: u32 = 8;
/// REQUESTED-TRANSPORT value for UDP (RFC 8656 §18.8): the only one we relay.
const PROTOCOL_UDP: u8 = 17;
const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

/// An Allocate that passed every check and waits for its relay socket(s).
#[derive(Debug)]
pub(crate) struct Pending {
    info: RequestInfo,
    cred: Credential,
    lifetime: Duration,
    dont_fragment: bool,
    /// Families still to open, first one next.
    families: Vec<Family>,
    opened: Vec<Relay>,
    /// EVEN-PORT asked for (Some), with the R bit (Some(true)).
    even_port: Option<bool>,
    /// A port reserved earlier (RESERVATION-TOKEN), taken already.
    reserved_port: Option<u16>,
    /// Token of the reservation this Allocate makes (R bit), to return to the client.
    reservation_token: Option<u64>,
    /// ADDITIONAL-ADDRESS-FAMILY asked for a family we do not serve: still allocate
    /// the other and say so in ADDRESS-ERROR-CODE (RFC 8656 §7.2).
    address_error: Option<Family>,
    attempts: u32,
}

impl Server {
    pub(crate) fn handle_allocate(
        &mut self,
        now: Instant,
        client: ClientId,
        msg: &Message<'_>,
        info: RequestInfo,
        cred: Credential,
    ) -> Result<(), Reject> {
        // RFC 8656 §7.2: one allocation per 5-tuple; a retransmission of the Allocate
        // that made it gets the same answer, anything else 437.
        if let Some(alloc) = self.allocations.get(&client) {
            if alloc.created_by == info.tid {
                let payload = alloc.created_response.clone();
                self.stats.count_request(MethodLabel::Allocate, 0);
                self.transmits.push_back(Transmit {
                    dst: client,
                    payload,
                });
                return Ok(());
            }
            return Err(Reject::AllocationMismatch);
        }
        if let Some(pending) = self.pending.get(&client) {
            // Still opening sockets: the answer to the first copy is on its way.
            return if pending.info.tid == info.tid {
                Ok(())
            } else {
                Err(Reject::AllocationMismatch)
            };
        }
        // Draining (see `drain`): existing allocations and their retransmitted
        // Allocates are answered above; a new one goes elsewhere.
        if let Some(refusal) = self.drain_refusal(&client) {
            return Err(refusal);
        }

        let transport = msg
            .get(attr::REQUESTED_TRANSPORT)
            .ok_or(Reject::BadRequest)?;
        let transport =
            attr::decode_requested_transport(transport).map_err(|_| Reject::BadRequest)?;
        if transport != PROTOCOL_UDP {
            return Err(Reject::UnsupportedTransportProtocol);
        }
        let even_port = optional(msg, attr::EVEN_PORT, attr::decode_even_port)?;
        let requested = optional(msg, attr::REQUESTED_ADDRESS_FAMILY, attr::decode_family)?;
        let additional = optional(msg, attr::ADDITIONAL_ADDRESS_FAMILY, attr::decode_family)?;
        let token = match msg.get(attr::RESERVATION_TOKEN) {
            Some(v) => Some(u64::from_be_bytes(
                v.try_into().map_err(|_| Reject::BadRequest)?,
            )),
            None => None,
        };
        // RFC 8656 §7.2 and RFC 6156 §4.2: attribute combinations that contradict.
        if token.is_some() && (even_port.is_some() || requested.is_some() || additional.is_some()) {
            return Err(Reject::BadRequest);
        }
        if additional.is_some() && (requested.is_some() || even_port.is_some()) {
            return Err(Reject::BadRequest);
        }
        let primary = match requested {
            None | Some(FAMILY_V4) => Family::V4,
            Some(FAMILY_V6) => Family::V6,
            Some(_) => return Err(Reject::AddressFamilyNotSupported),
        };
        let mut families = vec![primary];
        let mut address_error = None;
        match additional {
            None => {}
            Some(FAMILY_V6) if self.relay_ip(Family::V6, &client).is_some() => {
                families.push(Family::V6)
            }
            Some(FAMILY_V6) => address_error = Some(Family::V6),
            // ADDITIONAL-ADDRESS-FAMILY may only ask for IPv6 (RFC 8656 §18.11).
            Some(_) => return Err(Reject::BadRequest),
        }
        let lifetime = self.granted_lifetime(msg)?;

        let mut reserved_port = None;
        if let Some(token) = token {
            // A token nobody holds (expired, or never issued) is a capacity failure,
            // RFC 8656 §7.2.
            let reservation = self
                .shared
                .claim(token)
                .ok_or(Reject::InsufficientCapacity)?;
            if reservation.expires <= now {
                self.shared.release_port(reservation.port);
                return Err(Reject::InsufficientCapacity);
            }
            families = vec![reservation.family];
            reserved_port = Some(reservation.port);
        }
        if self.relay_ip(families[0], &client).is_none() {
            if let Some(port) = reserved_port {
                self.shared.release_port(port);
            }
            return Err(Reject::AddressFamilyNotSupported);
        }
        if let Err(reject) = self.shared.acquire_quota(&cred.quota_user) {
            if let Some(port) = reserved_port {
                self.shared.release_port(port);
            }
            return Err(reject);
        }
        self.pending.insert(
            client,
            Pending {
                info,
                cred,
                lifetime,
                dont_fragment: msg.has(attr::DONT_FRAGMENT),
                families,
                opened: Vec::new(),
                even_port,
                reserved_port,
                reservation_token: None,
                address_error,
                attempts: 0,
            },
        );
        self.open_next_relay(now, client);
        Ok(())
    }

    /// RFC 8656 §7.2: min(requested, max), but never below the default.
    fn granted_lifetime(&self, msg: &Message<'_>) -> Result<Duration, Reject> {
        let Some(requested) = optional(msg, attr::LIFETIME, attr::decode_u32)? else {
            return Ok(self.config.default_lifetime);
        };
        let lifetime = Duration::from_secs(u64::from(requested)).min(self.config.max_lifetime);
        Ok(lifetime.max(self.config.default_lifetime))
    }

    /// Ask the shell for the next relay socket of a pending Allocate, or answer it.
    fn open_next_relay(&mut self, now: Instant, client: ClientId) {
        let Some(pending) = self.pending.get_mut(&client) else {
            return;
        };
        let Some(&family) = pending.families.first() else {
            return self.finish_allocate(now, client);
        };
        let first = pending.opened.is_empty();
        let port = if let Some(port) = pending.reserved_port {
            Some(port)
        } else {
            let even = first && pending.even_port.is_some();
            let pair = first && pending.even_port == Some(true);
            let port = self.shared.take_port(&mut self.rng, even, pair);
            if let (Some(port), true) = (port, pair) {
                // The successor is held for a later Allocate with this token.
                let token = self.rng.gen::<u64>();
                let expires = now + RESERVATION_LIFETIME;
                self.shared.reserve(
                    token,
                    Reservation {
                        port: port + 1,
                        family,
                        expires,
                    },
                );
                self.timers
                    .push(std::cmp::Reverse((expires, Timer::Reservation(token))));
                if let Some(pending) = self.pending.get_mut(&client) {
                    pending.reservation_token = Some(token);
                }
            }
            port
        };
        let Some(port) = port else {
            return self.fail_pending(now, client, Reject::InsufficientCapacity);
        };
        let key = RelayKey {
            family,
            port: RelayPort(port),
        };
        self.opening.insert(key, client);
        self.events.push_back(Event::OpenRelay(key));
    }

    /// The shell's answer to [`Event::OpenRelay`].
    pub fn handle_relay_opened(&mut self, now: Instant, key: RelayKey, result: Result<(), ()>) {
        let client = self.opening.remove(&key);
        let Some(pending) = client.and_then(|c| self.pending.get_mut(&c)) else {
            // Nobody waits for it any more (the stream closed meanwhile).
            self.shared.release_port(key.port.0);
            if result.is_ok() {
                self.events.push_back(Event::CloseRelay(key));
            }
            return;
        };
        // `pending` exists, so `client` is Some.
        let client = client.expect("pending implies client");
        match result {
            Ok(()) => {
                pending.families.remove(0);
                pending.reserved_port = None;
                let advertised_key = key;
                let advertised = self.advertised(advertised_key, &client);
                if let Some(pending) = self.pending.get_mut(&client) {
                    pending.opened.push(Relay { key, advertised });
                }
            }
            Err(()) => {
                pending.attempts += 1;
                let was_reserved = pending.reserved_port.take().is_some();
                let token = if pending.opened.is_empty() {
                    pending.reservation_token.take()
                } else {
                    None
                };
                let give_up = was_reserved || pending.attempts >= MAX_BIND_ATTEMPTS;
                self.shared.release_port(key.port.0);
                if let Some(r) = token.and_then(|t| self.shared.claim(t)) {
                    self.shared.release_port(r.port);
                }
                if give_up {
                    return self.fail_pending(now, client, Reject::InsufficientCapacity);
                }
            }
        }
        self.open_next_relay(now, client);
    }

    fn finish_allocate(&mut self, now: Instant, client: ClientId) {
        let Some(p) = self.pending.remove(&client) else {
            return;
        };
        let mut payload = Vec::with_capacity(160);
        let mut b = MessageBuilder::new(&mut payload, Class::Success, p.info.method, p.info.tid);
        for relay in &p.opened {
            b.add_xor_address(attr::XOR_RELAYED_ADDRESS, relay.advertised);
        }
        if let Some(Family::V6) = p.address_error {
            // ADDRESS-ERROR-CODE (RFC 8656 §18.12): family, reserved, class, number, reason.
            let reason = Reject::AddressFamilyNotSupported.reason();
            let mut value = vec![FAMILY_V6, 0, 4, 40];
            value.extend_from_slice(reason.as_bytes());
            b.add(attr::ADDRESS_ERROR_CODE, &value);
        }
        b.add_u32(attr::LIFETIME, p.lifetime.as_secs() as u32);
        if let Some(token) = p.reservation_token {
            b.add(attr::RESERVATION_TOKEN, &token.to_be_bytes());
        }
        b.add_xor_address(attr::XOR_MAPPED_ADDRESS, client.remote);
        self.seal(&mut b, p.info, Some(&p.cred));

        for relay in &p.opened {
            self.relays.insert(relay.key, client);
            self.shared.publish_relayed(relay.advertised);
            if p.dont_fragment {
                self.events.push_back(Event::DontFragment(relay.key));
            }
        }
        let expires = now + p.lifetime;
        let bandwidth = self
            .bandwidth
            .as_ref()
            .map(|b| b.for_allocation(&p.cred.quota_user))
            .unwrap_or_default();
        self.allocations.insert(
            client,
            Allocation {
                relays: p.opened,
                credential: p.cred,
                expires,
                timer_at: expires,
                created_by: p.info.tid,
                created_response: payload.clone(),
                permissions: Vec::new(),
                channels: Vec::new(),
                dont_fragment: p.dont_fragment,
                send_route: None,
                bandwidth,
                created: now,
                traffic: [Traffic::new(now); 2],
                quality: self.config.rtp_quality.then(AllocationQuality::new),
            },
        );
        self.set_timer(expires, Timer::Allocation(client));
        self.stats.allocations_created += 1;
        if let Some(n) = self
            .stats
            .allocations_created_by_transport
            .get_mut(client.transport.index())
        {
            *n += 1;
        }
        self.stats.allocations = self.allocations.len() as u64;
        self.stats.count_request(MethodLabel::Allocate, 0);
        self.transmits.push_back(Transmit {
            dst: client,
            payload,
        });
    }

    /// Undo a pending Allocate and tell the client why.
    fn fail_pending(&mut self, now: Instant, client: ClientId, reject: Reject) {
        let Some((info, cred)) = self.abandon_pending(client) else {
            return;
        };
        self.reply_error(now, client, info, &reject, Some(&cred));
    }

    /// Forget a pending Allocate: close what it opened, give back ports and quota.
    pub(crate) fn abandon_pending(
        &mut self,
        client: ClientId,
    ) -> Option<(RequestInfo, Credential)> {
        let p = self.pending.remove(&client)?;
        for relay in &p.opened {
            self.shared.release_port(relay.key.port.0);
            self.events.push_back(Event::CloseRelay(relay.key));
        }
        if let Some(port) = p.reserved_port {
            self.shared.release_port(port);
        }
        if let Some(r) = p.reservation_token.and_then(|t| self.shared.claim(t)) {
            self.shared.release_port(r.port);
        }
        // A socket still being opened is released when its answer arrives.
        self.opening.retain(|_, c| *c != client);
        self.shared.release_quota(&p.cred.quota_user);
        Some((p.info, p.cred))
    }

    pub(crate) fn handle_refresh(
        &mut self,
        now: Instant,
        client: ClientId,
        msg: &Message<'_>,
        info: RequestInfo,
        cred: &Credential,
    ) -> Result<(), Reject> {
        let max_lifetime = self.config.max_lifetime;
        let default_lifetime = self.config.default_lifetime;
        let family = match optional(msg, attr::REQUESTED_ADDRESS_FAMILY, attr::decode_family)? {
            None => None,
            Some(FAMILY_V4) => Some(Family::V4),
            Some(FAMILY_V6) => Some(Family::V6),
            Some(_) => return Err(Reject::AddressFamilyNotSupported),
        };
        let requested = optional(msg, attr::LIFETIME, attr::decode_u32)?;
        let alloc = owned(&mut self.allocations, client, cred)?;
        // RFC 8656 §8.2: refreshing a family the allocation lacks is 443.
        if let Some(family) = family {
            if !alloc.has_family(family) {
                return Err(Reject::PeerAddressFamilyMismatch);
            }
        }
        // RFC 8656 §8.2: the "desired lifetime" is 0 if asked for, else computed as for
        // Allocate: min(requested, max), but never below the default.
        let lifetime = match requested {
            Some(0) => Duration::ZERO,
            Some(secs) => Duration::from_secs(u64::from(secs))
                .min(max_lifetime)
                .max(default_lifetime),
            None => default_lifetime,
        };
        // Draining: never grant past the drain's deadline (the client learns how long it
        // has and can move before the relay goes).
        let lifetime = match self.drain {
            Some(drain) if !lifetime.is_zero() => drain.cap_lifetime(now, lifetime),
            _ => lifetime,
        };
        if lifetime.is_zero() {
            match family {
                // Lifetime 0 with a family on a dual allocation drops only that family.
                Some(family) if alloc.relays.len() > 1 => {
                    let relay = alloc.relay_for(family).map(|r| r.key);
                    alloc.relays.retain(|r| r.key.family != family);
                    if let Some(key) = relay {
                        self.relays.remove(&key);
                        self.shared.release_port(key.port.0);
                        self.events.push_back(Event::CloseRelay(key));
                    }
                }
                _ => self.delete_allocation(now, client),
            }
        } else {
            alloc.expires = now + lifetime;
            if alloc.expires < alloc.timer_at {
                // Shortened: the queued timer would fire too late.
                alloc.timer_at = alloc.expires;
                self.set_timer(now + lifetime, Timer::Allocation(client));
            }
        }
        self.fast_path_changed(client);
        self.reply_success(client, info, cred, |b| {
            b.add_u32(attr::LIFETIME, lifetime.as_secs() as u32)
        });
        Ok(())
    }

    pub(crate) fn handle_create_permission(
        &mut self,
        now: Instant,
        client: ClientId,
        msg: &Message<'_>,
        info: RequestInfo,
        cred: &Credential,
    ) -> Result<(), Reject> {
        let tid = msg.transaction_id();
        let mut peers: Vec<SocketAddr> = Vec::new();
        for a in msg.attributes().filter(|a| a.typ == attr::XOR_PEER_ADDRESS) {
            peers.push(attr::decode_xor_address(a.value, &tid).map_err(|_| Reject::BadRequest)?);
        }
        if peers.is_empty() {
            return Err(Reject::BadRequest);
        }
        // RFC 8656 §10.2: all or nothing — check every peer before installing any.
        let alloc = owned(&mut self.allocations, client, cred)?;
        for peer in &peers {
            check_peer(alloc, &self.config.peer_policy, &*self.shared, *peer)?;
        }
        if !alloc.has_room_for(peers.iter().map(|p| p.ip()), now) {
            return Err(Reject::InsufficientCapacity);
        }
        for peer in &peers {
            alloc.permit(peer.ip(), now);
        }
        self.fast_path_changed(client);
        self.reply_success(client, info, cred, |_| {});
        Ok(())
    }

    pub(crate) fn handle_channel_bind(
        &mut self,
        now: Instant,
        client: ClientId,
        msg: &Message<'_>,
        info: RequestInfo,
        cred: &Credential,
    ) -> Result<(), Reject> {
        let number = optional(msg, attr::CHANNEL_NUMBER, attr::decode_channel_number)?
            .and_then(|n| {
                // RFC 8656 §12: 0x4000..=0x4FFF; RFC 5766's 0x7FFF ceiling if configured.
                let legacy = self.config.rfc5766_channel_numbers
                    && (ChannelNumber::MAX..=channel_data::MAX_LEGACY_CHANNEL).contains(&n);
                ChannelNumber::new(n).or(legacy.then_some(ChannelNumber(n)))
            })
            .ok_or(Reject::BadRequest)?;
        let tid = msg.transaction_id();
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .ok_or(Reject::BadRequest)
            .and_then(|v| attr::decode_xor_address(v, &tid).map_err(|_| Reject::BadRequest))?;
        // Read before the check, so a retirement racing with it is seen by the packet path.
        let retired = self.shared.retired();
        let alloc = owned(&mut self.allocations, client, cred)?;
        let via = check_peer(alloc, &self.config.peer_policy, &*self.shared, peer)?;
        if !alloc.has_room_for(std::iter::once(peer.ip()), now) {
            return Err(Reject::InsufficientCapacity);
        }
        let own_relay = (via == PeerRoute::OwnRelay).then_some(retired);
        if !alloc.bind_channel(number, peer, own_relay, now) {
            return Err(Reject::BadRequest);
        }
        // RFC 8656 §12.2: binding a channel installs or refreshes the permission.
        alloc.permit(peer.ip(), now);
        self.fast_path_changed(client);
        self.reply_success(client, info, cred, |_| {});
        Ok(())
    }

    fn reply_success(
        &mut self,
        client: ClientId,
        info: RequestInfo,
        cred: &Credential,
        body: impl FnOnce(&mut MessageBuilder<'_>),
    ) {
        let mut payload = Vec::with_capacity(96);
        let mut b = MessageBuilder::new(&mut payload, Class::Success, info.method, info.tid);
        body(&mut b);
        self.seal(&mut b, info, Some(cred));
        self.stats
            .count_request(super::server::method_label(info.method), 0);
        self.transmits.push_back(Transmit {
            dst: client,
            payload,
        });
    }
}

/// The allocation of `client`, if the request's user owns it (RFC 8656 §5: 441
/// otherwise). A free function so callers can keep borrowing other fields of the server.
fn owned<'s>(
    allocations: &'s mut HashMap<ClientId, Allocation, crate::server::PacketHasher>,
    client: ClientId,
    cred: &Credential,
) -> Result<&'s mut Allocation, Reject> {
    let alloc = allocations
        .get_mut(&client)
        .ok_or(Reject::AllocationMismatch)?;
    if alloc.credential.username != cred.username {
        return Err(Reject::WrongCredentials);
    }
    Ok(alloc)
}

/// How an allowed peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerRoute {
    /// The peer policy allows the address itself.
    Policy,
    /// The policy refuses it, but it is the relayed address of one of our own live
    /// allocations: relay to relay, as when both parties of a call use this relay.
    OwnRelay,
}

/// May `alloc` send to `peer`? The policy decides, with one exception: a peer that is
/// exactly the relayed address of *another* live allocation of this relay. Both ends of
/// that path are our own allocations, each behind its own permissions, so it is not a
/// relay loop (the datagram makes one hop and ends at the other allocation's client)
/// nor a way into the host (nothing but our relay socket owns that address while the
/// allocation lives). An allocation's own relayed address stays refused (a loop), and
/// the operator's deny list still wins.
pub(crate) fn peer_route(
    policy: &super::peer_policy::PeerPolicy,
    shared: &dyn super::shared::Shared,
    alloc: &Allocation,
    peer: SocketAddr,
) -> Option<PeerRoute> {
    match policy.check(peer) {
        Ok(()) => Some(PeerRoute::Policy),
        Err(Denied::DenyList) => None,
        Err(_) => {
            let canonical = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            let own = alloc.relays.iter().any(|r| {
                SocketAddr::new(r.advertised.ip().to_canonical(), r.advertised.port()) == canonical
            });
            (!own && shared.is_live_relayed(peer)).then_some(PeerRoute::OwnRelay)
        }
    }
}

/// 443 if the allocation has no relay of the peer's family (RFC 6156 §5), 403 if
/// policy refuses the peer (RFC 8656 §10.2, §12.2).
fn check_peer(
    alloc: &Allocation,
    policy: &super::peer_policy::PeerPolicy,
    shared: &dyn super::shared::Shared,
    peer: SocketAddr,
) -> Result<PeerRoute, Reject> {
    if !alloc.has_family(Family::of(&peer)) {
        return Err(Reject::PeerAddressFamilyMismatch);
    }
    peer_route(policy, shared, alloc, peer).ok_or(Reject::Forbidden)
}

/// Decode an optional attribute; present but malformed is 400.
fn optional<'a, T, E>(
    msg: &Message<'a>,
    typ: u16,
    decode: impl FnOnce(&'a [u8]) -> Result<T, E>,
) -> Result<Option<T>, Reject> {
    msg.get(typ)
        .map(decode)
        .transpose()
        .map_err(|_| Reject::BadRequest)
}
