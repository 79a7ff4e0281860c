//! What the core lets an in-kernel fast path forward on its behalf.
//!
//! With `ServerConfig::fast_path` on, the shell installs each UDP allocation's channel
//! bindings in a kernel program that forwards ChannelData without waking the relay
//! (`crate::fastpath`). The core stays the authority: it tells the shell, per
//! allocation, the complete set of routes the kernel may take, each with the instant it
//! stops being valid, and says again whenever a request or a deletion changes that set.
//! Packets outside those routes, or past their expiry, still come here and are handled
//! (or dropped and counted) exactly as without a fast path.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::addr::{ChannelNumber, ClientId, Family, Transport};
use super::allocation::Allocation;
use super::server::Server;

/// One channel the kernel may forward in both directions until `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastRoute {
    /// The bound channel number: the ChannelData header the kernel strips (client →
    /// peer) or writes (peer → client).
    pub channel: ChannelNumber,
    /// The channel's peer: destination of the client's data, the only source accepted
    /// on `relay` for this route.
    pub peer: SocketAddr,
    /// The relay socket's local address: what the peer's packets arrive at, and the
    /// source the kernel writes on packets to the peer.
    pub relay: SocketAddr,
    /// The earliest of the allocation's, the channel's and the permission's expiry:
    /// past it, packets must reach the core again.
    pub expires: Instant,
}

/// The routes one allocation now allows; empty when it has none (or is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastPathUpdate {
    /// The allocation's owner (a UDP client 5-tuple).
    pub client: ClientId,
    /// Every route the kernel may now take for it, at most [`MAX_FAST_ROUTES`]; the
    /// shell replaces whatever it installed for `client` with exactly these.
    pub routes: Vec<FastRoute>,
}

/// Routes one allocation may have in the kernel; further channels stay on the socket
/// path. A call needs one or two, a conference client some dozens (the bench binds
/// 32); the cap — as many as the permissions one allocation may hold — keeps one client
/// from filling the shared maps (262 144 entries), or making every update of its
/// routes long, by binding thousands of channels.
pub const MAX_FAST_ROUTES: usize = super::allocation::MAX_PERMISSIONS;

impl Allocation {
    /// The channels whose traffic needs no decision per packet until an expiry: bound,
    /// permitted, and not to another allocation of this relay (that kind lives only as
    /// long as its target, which the kernel cannot see, so it stays on the socket path).
    /// `relay_ip` gives the local address of this allocation's relay socket of a family.
    pub fn fast_routes(
        &self,
        now: Instant,
        relay_ip: impl Fn(Family) -> Option<IpAddr>,
    ) -> Vec<FastRoute> {
        if self.expires <= now {
            return Vec::new();
        }
        self.channels
            .iter()
            .filter(|c| c.expires > now && c.own_relay.is_none())
            .filter_map(|c| {
                let permission = self
                    .permissions
                    .iter()
                    .find(|p| p.ip == c.peer.ip() && p.expires > now)?;
                let family = Family::of(&c.peer);
                let relay = self.relay_for(family)?;
                let relay = SocketAddr::new(relay_ip(family)?, relay.key.port.0);
                Some(FastRoute {
                    channel: c.number,
                    peer: c.peer,
                    relay,
                    expires: self.expires.min(c.expires).min(permission.expires),
                })
            })
            .take(MAX_FAST_ROUTES)
            .collect()
    }
}

impl Server {
    /// Notes that `client`'s routes may have changed (a no-op without a fast path, and
    /// for stream clients, whose bytes the kernel program never sees).
    pub(crate) fn fast_path_changed(&mut self, client: ClientId) {
        if self.config.fast_path
            && client.transport == Transport::Udp
            && !self.fast_dirty.contains(&client)
        {
            self.fast_dirty.push(client);
        }
    }

    /// The next allocation whose fast-path routes changed, with all its routes now.
    pub fn poll_fast_path(&mut self, now: Instant) -> Option<FastPathUpdate> {
        let client = self.fast_dirty.pop()?;
        let routes = self
            .allocations
            .get(&client)
            .map(|a| a.fast_routes(now, |family| self.local_relay_ip(family, &client)))
            .unwrap_or_default();
        Some(FastPathUpdate { client, routes })
    }

    /// The address a relay socket of `family` has on this host (not the advertised
    /// one, which may be a NAT's): its bind address, or with a wildcard bind the
    /// address the client reached (or the host's address of the family, for a client
    /// of the other family), as [`Server::relay_ip`] assumes.
    fn local_relay_ip(&self, family: Family, client: &ClientId) -> Option<IpAddr> {
        let relay = match family {
            Family::V4 => self.config.relay_v4.as_ref()?,
            Family::V6 => self.config.relay_v6.as_ref()?,
        };
        if !relay.bind.is_unspecified() {
            return Some(relay.bind);
        }
        let local = client.local.ip();
        if Family::of(&client.local) == family && !local.is_unspecified() {
            return Some(local);
        }
        relay.host
    }
}
