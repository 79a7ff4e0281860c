//! One allocation's state: relayed addresses, permissions, channels and lifetimes
//! (RFC 8656 §3.2, §9, §12). Plain data with expiry times; the server decides.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::addr::{ChannelNumber, Family, RelayKey};
use super::auth::Credential;
use super::bandwidth::AllocationBandwidth;
use super::quality::AllocationQuality;
use super::stats::Direction;
use super::stun::TransactionId;

/// RFC 8656 §9: a permission lasts 300 s unless refreshed.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: a channel binding lasts 600 s unless refreshed.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Permissions one allocation may hold. The RFC sets no limit, but every packet scans
/// them, so a client must not be able to make its own forwarding arbitrarily slow (or
/// our memory arbitrarily large): beyond this, CreatePermission gets 508.
pub const MAX_PERMISSIONS: usize = 64;
/// RFC 8656 §12: after a binding expires, neither its number nor its peer may be
/// rebound to something else for another 5 minutes, so stale packets cannot be
/// mistaken for the new binding's.
pub const CHANNEL_QUARANTINE: Duration = Duration::from_secs(300);

/// A permission (RFC 8656 §9): datagrams from this peer IP reach the client, and the
/// client may send to it, until `expires`.
#[derive(Debug, Clone, Copy)]
pub struct Permission {
    /// The peer's IP address; RFC 8656 §9 keys permissions by IP only, any port.
    pub ip: IpAddr,
    /// When the permission lapses: [`PERMISSION_LIFETIME`] after its last
    /// CreatePermission or ChannelBind.
    pub expires: Instant,
}

/// A channel binding (RFC 8656 §12): ChannelData with `number` goes to `peer`, and
/// `peer`'s datagrams come back as ChannelData with `number`.
#[derive(Debug, Clone, Copy)]
pub struct Channel {
    /// The number the client chose in ChannelBind (CHANNEL-NUMBER, RFC 8656 §18.1).
    pub number: ChannelNumber,
    /// The peer's full transport address: unlike a permission, a channel names a port.
    pub peer: SocketAddr,
    /// When the binding lapses: [`CHANNEL_LIFETIME`] after its last ChannelBind. The
    /// entry stays in the list for [`CHANNEL_QUARANTINE`] more, to refuse rebinding.
    pub expires: Instant,
    /// `Some` when the peer was allowed only as the relayed address of another live
    /// allocation of this relay: once that allocation is gone its port may belong to
    /// any process on the host, so the channel must die with it. Holds the
    /// [`Shared::retired`](crate::shared::Shared::retired) count at the last
    /// check; the packet path re-checks only when that count has moved.
    pub own_relay: Option<u64>,
}

/// A relayed transport address of the allocation (one per family: RFC 6156 dual allocation).
#[derive(Debug, Clone, Copy)]
pub struct Relay {
    /// The relay socket the shell opened for it (family and port).
    pub key: RelayKey,
    /// What we told the client in XOR-RELAYED-ADDRESS.
    pub advertised: SocketAddr,
}

/// A TURN allocation (RFC 8656 §3.2), owned by one client 5-tuple on one worker.
#[derive(Debug)]
pub struct Allocation {
    /// Its relayed transport addresses: one, or one per family for a dual allocation
    /// (RFC 8656 §7.2 ADDITIONAL-ADDRESS-FAMILY).
    pub relays: Vec<Relay>,
    /// The credential that made it: later requests must use the same username
    /// (RFC 8656 §5, 441 otherwise), and its quota user is charged for it.
    pub credential: Credential,
    /// When it dies unless refreshed: now + the granted LIFETIME (RFC 8656 §7.2, §8.2).
    pub expires: Instant,
    /// When the one expiry timer this allocation keeps queued fires. A Refresh that
    /// extends the lifetime queues nothing: that timer re-arms itself at `expires`, so
    /// a client refreshing in a loop cannot grow the timer heap.
    pub timer_at: Instant,
    /// The Allocate that created this allocation and our answer, so a retransmission
    /// gets the same answer instead of 437 (RFC 8656 §7.2).
    pub created_by: TransactionId,
    /// The encoded success response to that Allocate, resent as is.
    pub created_response: Vec<u8>,
    /// Few peers per allocation in practice (one for a call), so a vector scan beats a map.
    pub permissions: Vec<Permission>,
    /// Channel bindings, live and quarantined (see [`Channel::expires`]).
    pub channels: Vec<Channel>,
    /// The client asked for DONT-FRAGMENT (RFC 8656 §18.9).
    pub dont_fragment: bool,
    /// The last peer a Send indication was allowed to reach, and the
    /// [`Shared::retired`](crate::shared::Shared::retired) count when that was
    /// decided: while neither changes the verdict stands, so a stream of Sends to one
    /// peer (a call before its ChannelBind, or a client that never binds) is not
    /// re-checked against the policy and the shared port table per packet.
    pub send_route: Option<(SocketAddr, u64)>,
    /// Its bandwidth buckets, and its user's (see [`crate::bandwidth`]); unused when
    /// no cap is set.
    pub bandwidth: AllocationBandwidth,
    /// When it was created.
    pub created: Instant,
    /// What it relayed, by [`Direction`].
    pub traffic: [Traffic; 2],
    /// Its RTP streams, when `ServerConfig::rtp_quality` is on (see [`crate::quality`]).
    pub quality: Option<AllocationQuality>,
}

/// One direction of an allocation's relayed traffic: totals, and the rate over the
/// last whole second.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    /// Packets relayed.
    pub packets: u64,
    /// Payload bytes relayed (without TURN framing).
    pub bytes: u64,
    /// The current rate window: when it began, and the totals then.
    window: (Instant, u64, u64),
    /// When the current window is a whole [`RATE_WINDOW`] old (one comparison per
    /// packet instead of a subtraction).
    window_end: Instant,
    /// Packets and bytes per second over the last whole window.
    rate: (u64, u64),
}

/// The length of a [`Traffic`] rate window.
const RATE_WINDOW: Duration = Duration::from_secs(1);

impl Traffic {
    /// Nothing relayed yet, as of `now`.
    pub fn new(now: Instant) -> Traffic {
        Traffic {
            packets: 0,
            bytes: 0,
            window: (now, 0, 0),
            window_end: now + RATE_WINDOW,
            rate: (0, 0),
        }
    }

    /// Count one packet of `bytes` payload bytes.
    #[inline]
    pub fn count(&mut self, bytes: usize, now: Instant) {
        self.packets += 1;
        self.bytes += bytes as u64;
        if now >= self.window_end {
            self.rate = self.rate_since_window(now);
            self.window = (now, self.packets, self.bytes);
            self.window_end = now + RATE_WINDOW;
        }
    }

    fn rate_since_window(&self, now: Instant) -> (u64, u64) {
        let secs = now.saturating_duration_since(self.window.0).as_secs_f64();
        if secs <= 0.0 {
            return (0, 0);
        }
        let per_sec = |n: u64, then: u64| (n.saturating_sub(then) as f64 / secs).round() as u64;
        (
            per_sec(self.packets, self.window.1),
            per_sec(self.bytes, self.window.2),
        )
    }

    /// Packets and bytes per second at `now`: over the last whole window, or over the
    /// current one once it is a whole window old (so a stream that stopped reads 0).
    pub fn rate(&self, now: Instant) -> (u64, u64) {
        if now.saturating_duration_since(self.window.0) >= RATE_WINDOW {
            self.rate_since_window(now)
        } else {
            self.rate
        }
    }
}

impl Allocation {
    /// Count a relayed payload going `dir`, and look at it for call quality when on.
    #[inline]
    pub(crate) fn count_relayed(
        &mut self,
        quality: &mut crate::quality::QualityStats,
        dir: Direction,
        payload: &[u8],
        now: Instant,
    ) {
        if let Some(t) = self.traffic.get_mut(dir as usize) {
            t.count(payload.len(), now);
        }
        if let Some(q) = self.quality.as_mut() {
            q.observe(quality, dir, payload, now);
        }
    }
}

impl Allocation {
    /// Does it have a relayed address of `family`?
    pub fn has_family(&self, family: Family) -> bool {
        self.relays.iter().any(|r| r.key.family == family)
    }

    /// Its relayed address of `family`: the socket that sends to a peer of that family.
    pub fn relay_for(&self, family: Family) -> Option<&Relay> {
        self.relays.iter().find(|r| r.key.family == family)
    }

    /// Is `ip` permitted at `now`? The hot path asks this for every packet.
    #[inline]
    pub fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|p| p.ip == ip && p.expires > now)
    }

    /// Would permitting these IPs (some perhaps already permitted) stay within
    /// [`MAX_PERMISSIONS`]?
    pub fn has_room_for(&self, ips: impl Iterator<Item = IpAddr>, now: Instant) -> bool {
        let live = self.permissions.iter().filter(|p| p.expires > now).count();
        let new = ips
            .filter(|ip| {
                !self
                    .permissions
                    .iter()
                    .any(|p| p.ip == *ip && p.expires > now)
            })
            .count();
        live + new <= MAX_PERMISSIONS
    }

    /// Install or refresh a permission (RFC 8656 §9: keyed by IP only, port ignored).
    pub fn permit(&mut self, ip: IpAddr, now: Instant) {
        let expires = now + PERMISSION_LIFETIME;
        self.permissions.retain(|p| p.expires > now);
        match self.permissions.iter_mut().find(|p| p.ip == ip) {
            Some(p) => p.expires = expires,
            None => self.permissions.push(Permission { ip, expires }),
        }
    }

    /// The live channel with this number, if any.
    #[inline]
    pub fn channel(&self, number: u16, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.number.0 == number && c.expires > now)
    }

    /// [`Allocation::channel`], mutable.
    #[inline]
    pub fn channel_mut(&mut self, number: u16, now: Instant) -> Option<&mut Channel> {
        self.channels
            .iter_mut()
            .find(|c| c.number.0 == number && c.expires > now)
    }

    /// The live channel bound to this peer, if any.
    #[inline]
    pub fn channel_to(&self, peer: SocketAddr, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
    }

    /// Bind or refresh `number` ↔ `peer`; false (RFC 8656 §12.2: 400) when the number
    /// is bound to another peer or the peer to another number, including bindings
    /// that expired less than [`CHANNEL_QUARANTINE`] ago.
    pub fn bind_channel(
        &mut self,
        number: ChannelNumber,
        peer: SocketAddr,
        own_relay: Option<u64>,
        now: Instant,
    ) -> bool {
        self.channels
            .retain(|c| c.expires + CHANNEL_QUARANTINE > now);
        let conflict = self
            .channels
            .iter()
            .any(|c| (c.number == number) != (c.peer == peer));
        if conflict {
            return false;
        }
        let expires = now + CHANNEL_LIFETIME;
        match self.channels.iter_mut().find(|c| c.number == number) {
            Some(c) => {
                c.expires = expires;
                c.own_relay = own_relay;
            }
            None => self.channels.push(Channel {
                number,
                peer,
                expires,
                own_relay,
            }),
        }
        true
    }
}
