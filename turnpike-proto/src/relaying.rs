//! The two forwarding paths of the core, client → peer (ChannelData, Send) and
//! peer → client (ChannelData, Data indication): per packet, so a lookup and a range of
//! the shell's buffer, no allocation. The peer → client path frames the datagram in
//! place, in the headroom the shell left in front of it.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Instant;

use rand::RngCore;

use super::addr::{ClientId, Family, RelayKey, Transport};
use super::allocation::Allocation;
use super::bandwidth::Bandwidth;
use super::channel_data;
use super::server::{Forward, Server, ToClient, KNOWN_REQUIRED, PEER_HEADROOM};
use super::stats::{Direction, DropReason, Stats};
use super::stun::{attr, Message, TransactionId, MAGIC_COOKIE};

impl Server {
    /// The client → peer hot path for channels: a lookup and a range, no allocation.
    #[inline]
    pub(crate) fn handle_channel_data(
        &mut self,
        now: Instant,
        client: ClientId,
        packet: &[u8],
    ) -> Option<Forward> {
        let Ok((number, data)) = channel_data::parse(packet) else {
            self.stats.count_drop(DropReason::Malformed);
            return None;
        };
        // The data follows the header (RFC 8656 §12.4); padding after it is not forwarded.
        let payload = channel_data::HEADER_LEN..channel_data::HEADER_LEN + data.len();
        let retired = self.shared.retired();
        // An allocation past its lifetime is gone even if the timer has not fired yet.
        let Some(alloc) = self
            .allocations
            .get_mut(&client)
            .filter(|a| a.expires > now)
        else {
            self.stats.count_drop(DropReason::NoAllocation);
            return None;
        };
        let Some(channel) = alloc.channel_mut(number, now) else {
            self.stats.count_drop(DropReason::NoChannel);
            return None;
        };
        let peer = channel.peer;
        // A channel to another allocation of ours lasts only as long as that one. The
        // lock-free counter says whether any relayed address was retired since the
        // last look; only then is the shared table consulted.
        let mut target_lives = true;
        if let Some(seen) = channel.own_relay {
            if seen != retired {
                target_lives = self.shared.is_live_relayed(peer);
                if target_lives {
                    channel.own_relay = Some(retired);
                }
            }
        }
        // RFC 8656 §12.6: a channel does not outlive the permission for its peer.
        let permitted = target_lives && alloc.permits(peer.ip(), now);
        forward(
            &mut self.stats,
            self.bandwidth.as_deref(),
            now,
            client.transport,
            alloc,
            permitted,
            peer,
            (payload, data),
        )
    }

    /// Send indication (RFC 8656 §11.2): client → peer without a channel.
    pub(crate) fn handle_send(
        &mut self,
        now: Instant,
        client: ClientId,
        msg: &Message<'_>,
    ) -> Option<Forward> {
        let retired = self.shared.retired();
        let Some(alloc) = self
            .allocations
            .get_mut(&client)
            .filter(|a| a.expires > now)
        else {
            self.stats.count_drop(DropReason::NoAllocation);
            return None;
        };
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|v| attr::decode_xor_address(v, &msg.transaction_id()).ok());
        let (Some(peer), Some(data), Some(bytes)) =
            (peer, msg.value_range(attr::DATA), msg.get(attr::DATA))
        else {
            self.stats.count_drop(DropReason::Malformed);
            return None;
        };
        // Indications with unknown comprehension-required attributes are dropped
        // (RFC 8489 §6.3.2).
        if !msg.unknown_required(KNOWN_REQUIRED).is_empty() {
            self.stats.count_drop(DropReason::Malformed);
            return None;
        }
        // Permissions are per IP (RFC 8656 §9), so the port of a Send is unchecked so
        // far: policy still refuses our own listeners and relay ports (no loops), except
        // the relayed address of a live allocation (relay to relay, `peer_route`).
        // The route verdict depends only on the peer, on the policy (fixed for the
        // server's life) and on which relayed addresses are live, so the last one is
        // reused until the peer or the retired count changes (`send_route`).
        let mut permitted = alloc.permits(peer.ip(), now);
        if permitted && alloc.send_route != Some((peer, retired)) {
            let policy = &self.config.peer_policy;
            permitted = super::requests::peer_route(policy, &*self.shared, alloc, peer).is_some();
            if permitted {
                alloc.send_route = Some((peer, retired));
            }
        }
        forward(
            &mut self.stats,
            self.bandwidth.as_deref(),
            now,
            client.transport,
            alloc,
            permitted,
            peer,
            (data, bytes),
        )
    }

    /// One datagram from `peer` on relay socket `relay`. It sits at
    /// `buf[PEER_HEADROOM..PEER_HEADROOM + len]`; `buf` has PEER_TAILROOM more bytes.
    /// On success the framed message to send is `buf[range]`.
    pub fn handle_peer_input(
        &mut self,
        now: Instant,
        relay: RelayKey,
        peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Option<ToClient> {
        let Some(client) = self.relays.get(&relay).copied() else {
            self.stats.count_drop(DropReason::NoAllocation);
            return None;
        };
        let Some(alloc) = self
            .allocations
            .get_mut(&client)
            .filter(|a| a.expires > now)
        else {
            self.stats.count_drop(DropReason::NoAllocation);
            return None;
        };
        // RFC 8656 §11.3: only permitted peers reach the client.
        if !alloc.permits(peer.ip(), now) {
            self.stats.count_drop(DropReason::NoPermission);
            return None;
        }
        if let Some(bandwidth) = &self.bandwidth {
            if !bandwidth.admit(&mut alloc.bandwidth, Direction::ToClient, len, now) {
                self.stats.count_drop(DropReason::Bandwidth);
                return None;
            }
        }
        let start = PEER_HEADROOM;
        let end = start + len;
        let padding = (4 - len % 4) % 4;
        if len > usize::from(u16::MAX) - 64 || buf.len() < end + padding {
            self.stats.count_drop(DropReason::Malformed);
            return None;
        }
        alloc.count_relayed(
            &mut self.stats.quality,
            Direction::ToClient,
            &buf[start..end],
            now,
        );
        let range = if let Some(channel) = alloc.channel_to(peer, now) {
            // ChannelData (RFC 8656 §12.4): 4-byte header in front, padded over streams.
            let header = start - 4;
            // `len` was checked to fit a u16 and `buf` to hold the header.
            let _ = channel_data::write_header(&mut buf[header..], channel.number.0, len);
            let padding = if client.transport.is_stream() {
                padding
            } else {
                0
            };
            buf[end..end + padding].fill(0);
            header..end + padding
        } else {
            let mut tid = [0u8; 12];
            self.rng.fill_bytes(&mut tid);
            let begin = write_data_indication(buf, peer, len, TransactionId(tid));
            begin..end + padding
        };
        self.stats
            .count_relayed(Direction::ToClient, client.transport, len);
        Some(ToClient { client, range })
    }
}

/// The client → peer decision shared by ChannelData and Send: `payload` (a range of the
/// client's packet, and those bytes) out of the allocation's relay socket of the peer's family, if the
/// peer is permitted and the bandwidth caps let it pass.
#[inline]
#[allow(clippy::too_many_arguments)]
fn forward(
    stats: &mut Stats,
    bandwidth: Option<&Bandwidth>,
    now: Instant,
    transport: Transport,
    alloc: &mut Allocation,
    permitted: bool,
    peer: SocketAddr,
    (payload, bytes): (Range<usize>, &[u8]),
) -> Option<Forward> {
    let relay = alloc.relay_for(Family::of(&peer)).filter(|_| permitted);
    let Some(relay) = relay else {
        stats.count_drop(DropReason::NoPermission);
        return None;
    };
    let relay = relay.key;
    if let Some(bandwidth) = bandwidth {
        if !bandwidth.admit(&mut alloc.bandwidth, Direction::ToPeer, payload.len(), now) {
            stats.count_drop(DropReason::Bandwidth);
            return None;
        }
    }
    stats.count_relayed(Direction::ToPeer, transport, payload.len());
    alloc.count_relayed(&mut stats.quality, Direction::ToPeer, bytes, now);
    Some(Forward {
        relay,
        peer,
        range: payload,
    })
}

/// Write a Data indication (RFC 8656 §11.3) in front of the payload at
/// `buf[PEER_HEADROOM..PEER_HEADROOM + len]`, padding after it; returns where the
/// message starts. Hand-written rather than via `MessageBuilder` because it must
/// frame the payload in place, without copying it.
fn write_data_indication(
    buf: &mut [u8],
    peer: SocketAddr,
    len: usize,
    tid: TransactionId,
) -> usize {
    let addr_len = if peer.is_ipv4() { 8 } else { 20 };
    let prefix = 20 + 4 + addr_len + 4;
    let begin = PEER_HEADROOM - prefix;
    let padding = (4 - len % 4) % 4;
    let body_len = prefix - 20 + len + padding;
    let end = PEER_HEADROOM + len;
    buf[end..end + padding].fill(0);

    let out = &mut buf[begin..PEER_HEADROOM];
    // Header: Data indication (class 0b01 → 0x0010 | method 0x007).
    out[0..2].copy_from_slice(&0x0017u16.to_be_bytes());
    out[2..4].copy_from_slice(&(body_len as u16).to_be_bytes());
    out[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out[8..20].copy_from_slice(&tid.0);
    // XOR-PEER-ADDRESS (RFC 8489 §14.2).
    out[20..22].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    out[22..24].copy_from_slice(&(addr_len as u16).to_be_bytes());
    out[24] = 0;
    let xport = peer.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[26..28].copy_from_slice(&xport.to_be_bytes());
    match peer.ip() {
        IpAddr::V4(ip) => {
            out[25] = 0x01;
            let x = u32::from(ip) ^ MAGIC_COOKIE;
            out[28..32].copy_from_slice(&x.to_be_bytes());
        }
        IpAddr::V6(ip) => {
            out[25] = 0x02;
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(&tid.0);
            for (i, byte) in ip.octets().iter().enumerate() {
                out[28 + i] = byte ^ mask[i];
            }
        }
    }
    // DATA attribute header; the payload already follows it.
    let data_at = 24 + addr_len;
    out[data_at..data_at + 2].copy_from_slice(&attr::DATA.to_be_bytes());
    out[data_at + 2..data_at + 4].copy_from_slice(&(len as u16).to_be_bytes());
    begin
}
