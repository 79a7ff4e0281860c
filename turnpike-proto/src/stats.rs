//! Counters kept as plain integers inside the core (one set per worker).
//! The shell publishes them to the `metrics` registry in batches; nothing on the
//! packet path touches the registry or builds a label.

use crate::Transport;

/// STUN/TURN request methods we count (a bounded label set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodLabel {
    /// Binding (RFC 8489 §3): answered without credentials.
    Binding = 0,
    /// Allocate (RFC 8656 §7).
    Allocate,
    /// Refresh (RFC 8656 §8).
    Refresh,
    /// CreatePermission (RFC 8656 §10).
    CreatePermission,
    /// ChannelBind (RFC 8656 §12).
    ChannelBind,
    /// Any other method; answered with 400.
    Other,
}

impl MethodLabel {
    /// Every label, in index order (the rows of [`Stats::requests`]).
    pub const ALL: [MethodLabel; 6] = [
        MethodLabel::Binding,
        MethodLabel::Allocate,
        MethodLabel::Refresh,
        MethodLabel::CreatePermission,
        MethodLabel::ChannelBind,
        MethodLabel::Other,
    ];
    /// The `method` label value on `turnpike_requests_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodLabel::Binding => "binding",
            MethodLabel::Allocate => "allocate",
            MethodLabel::Refresh => "refresh",
            MethodLabel::CreatePermission => "create_permission",
            MethodLabel::ChannelBind => "channel_bind",
            MethodLabel::Other => "other",
        }
    }
}

/// Result codes we count: 0 is success, the rest are the STUN error codes we send.
pub const RESULT_CODES: [u16; 14] = [
    0, 300, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 508,
];

fn result_index(code: u16) -> usize {
    RESULT_CODES
        .iter()
        .position(|&c| c == code)
        // Any other code goes to the extra "other" column after the listed ones.
        .unwrap_or(RESULT_CODES.len())
}

/// Why a packet was dropped (a bounded label set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not STUN, not ChannelData, or failed the STUN structural checks.
    Malformed = 0,
    /// ChannelData or Send for a client without an allocation.
    NoAllocation,
    /// Peer packet or Send indication without a permission for the peer.
    NoPermission,
    /// ChannelData on an unbound channel number.
    NoChannel,
    /// A response or indication we do not act on.
    Ignored,
    /// The shell could not send (buffer full, kernel error).
    SendFailed,
    /// Over a bandwidth cap (`limits.max_bps_*`).
    Bandwidth,
}

impl DropReason {
    /// Every reason, in index order (the slots of [`Stats::drops`]).
    pub const ALL: [DropReason; 7] = [
        DropReason::Malformed,
        DropReason::NoAllocation,
        DropReason::NoPermission,
        DropReason::NoChannel,
        DropReason::Ignored,
        DropReason::SendFailed,
        DropReason::Bandwidth,
    ];
    /// The `reason` label value on `turnpike_dropped_packets_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoAllocation => "no_allocation",
            DropReason::NoPermission => "no_permission",
            DropReason::NoChannel => "no_channel",
            DropReason::Ignored => "ignored",
            DropReason::SendFailed => "send_failed",
            DropReason::Bandwidth => "bandwidth",
        }
    }
}

/// Direction of relayed traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → peer (ChannelData or Send indication).
    ToPeer = 0,
    /// Peer → client (ChannelData or Data indication).
    ToClient,
}

impl Direction {
    /// Both directions, in index order (the slots of [`Stats::packets`] and [`Stats::bytes`]).
    pub const ALL: [Direction; 2] = [Direction::ToPeer, Direction::ToClient];
    /// The `direction` label value on the relayed-traffic metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToPeer => "to_peer",
            Direction::ToClient => "to_client",
        }
    }
}

/// Monotonic counters plus one gauge; cheap to copy so the shell can diff snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `requests[method][result]`; the extra last column counts unexpected codes.
    pub requests: [[u64; RESULT_CODES.len() + 1]; 6],
    /// Relayed packets by [`Direction`] (index `Direction as usize`).
    pub packets: [u64; 2],
    /// Relayed payload bytes (without ChannelData or STUN framing) by [`Direction`].
    pub bytes: [u64; 2],
    /// The same packets by direction and by the client's transport:
    /// `packets_by_transport[direction][transport]`
    /// ([`Transport::index`](crate::Transport::index)); each row sums to `packets`.
    pub packets_by_transport: [[u64; 4]; 2],
    /// The same bytes by direction and the client's transport, as `packets_by_transport`.
    pub bytes_by_transport: [[u64; 4]; 2],
    /// Dropped packets by [`DropReason`] (index `DropReason as usize`).
    pub drops: [u64; 7],
    /// Gauge: allocations alive in this core right now.
    pub allocations: u64,
    /// Monotonic: allocations ever created.
    pub allocations_created: u64,
    /// Monotonic: allocations ever created, by the client's transport
    /// ([`Transport::index`](crate::Transport::index)).
    pub allocations_created_by_transport: [u64; 4],
    /// Monotonic: allocations ever expired or deleted.
    pub allocations_deleted: u64,
    /// Monotonic: requests with credentials (MESSAGE-INTEGRITY) refused with 401, i.e.
    /// failed sign-ins; the 401 challenge to a request without credentials is not one.
    pub auth_failures: u64,
    /// Monotonic: requests dropped unanswered because their source is throttled after
    /// too many failed sign-ins (see [`crate::throttle`]).
    pub auth_throttled: u64,
    /// Payload kinds and RTP stream quality, when `ServerConfig::rtp_quality` is on.
    pub quality: crate::quality::QualityStats,
}

impl Stats {
    /// Counts one answered request; `code` 0 is success, else the STUN error code sent.
    #[inline]
    pub fn count_request(&mut self, method: MethodLabel, code: u16) {
        self.requests[method as usize][result_index(code)] += 1;
    }

    /// Counts one relayed packet of `bytes` payload bytes, for a client on `transport`.
    #[inline]
    pub fn count_relayed(&mut self, dir: Direction, transport: Transport, bytes: usize) {
        let (d, t) = (dir as usize, transport.index());
        self.packets[d] += 1;
        self.bytes[d] += bytes as u64;
        // `index()` < 4 and `dir` < 2: both arrays are that size.
        self.packets_by_transport[d][t] += 1;
        self.bytes_by_transport[d][t] += bytes as u64;
    }

    /// Counts one dropped packet.
    #[inline]
    pub fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// The label for a result column of `requests`.
    pub fn result_label(index: usize) -> String {
        match RESULT_CODES.get(index) {
            Some(0) => "success".to_string(),
            Some(code) => code.to_string(),
            None => "other".to_string(),
        }
    }
}
