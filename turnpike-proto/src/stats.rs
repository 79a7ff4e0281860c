//! Counters kept as plain integers inside the core (one set per worker).
//! The shell publishes them to the `metrics` registry in batches; nothing on the
//! packet path touches the registry or builds a label.

/// STUN/TURN request methods we count (a bounded label set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodLabel {
    Binding = 0,
    Allocate,
    Refresh,
    CreatePermission,
    ChannelBind,
    Other,
}

impl MethodLabel {
    pub const ALL: [MethodLabel; 6] = [
        MethodLabel::Binding,
        MethodLabel::Allocate,
        MethodLabel::Refresh,
        MethodLabel::CreatePermission,
        MethodLabel::ChannelBind,
        MethodLabel::Other,
    ];
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
        // 500 and anything unexpected are folded into the last slot's neighbour: we keep
        // a dedicated "other" bucket at the end.
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
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::Malformed,
        DropReason::NoAllocation,
        DropReason::NoPermission,
        DropReason::NoChannel,
        DropReason::Ignored,
        DropReason::SendFailed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoAllocation => "no_allocation",
            DropReason::NoPermission => "no_permission",
            DropReason::NoChannel => "no_channel",
            DropReason::Ignored => "ignored",
            DropReason::SendFailed => "send_failed",
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
    pub const ALL: [Direction; 2] = [Direction::ToPeer, Direction::ToClient];
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
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub drops: [u64; 6],
    /// Gauge: allocations alive in this core right now.
    pub allocations: u64,
    /// Monotonic: allocations ever created / expired or deleted.
    pub allocations_created: u64,
    pub allocations_deleted: u64,
}

impl Stats {
    #[inline]
    pub fn count_request(&mut self, method: MethodLabel, code: u16) {
        self.requests[method as usize][result_index(code)] += 1;
    }

    #[inline]
    pub fn count_relayed(&mut self, dir: Direction, bytes: usize) {
        self.packets[dir as usize] += 1;
        self.bytes[dir as usize] += bytes as u64;
    }

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
