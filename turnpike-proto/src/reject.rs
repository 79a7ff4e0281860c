//! What a client is told when a request fails: one enum, mapped to STUN error codes.

/// A request's failure as the client sees it (RFC 8489 §14.8, RFC 8656 §19, RFC 6156).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// 300: this relay is draining; the client should allocate on the alternate server
    /// given in ALTERNATE-SERVER (RFC 8489 §10, RFC 8656 §7.2).
    TryAlternate(std::net::SocketAddr),
    /// 400: malformed or contradictory attributes.
    BadRequest,
    /// 401: no or wrong credentials; answered with REALM and NONCE.
    Unauthorized,
    /// 403: the peer address is refused by policy.
    Forbidden,
    /// 403: the relay is draining and names no alternate server.
    Draining,
    /// 420: comprehension-required attributes we do not understand.
    UnknownAttributes(Vec<u16>),
    /// 437: no allocation for this 5-tuple, or one already exists.
    AllocationMismatch,
    /// 438: the nonce expired or belongs to another 5-tuple; answered with a fresh one.
    StaleNonce,
    /// 440: the relay does not serve the requested address family.
    AddressFamilyNotSupported,
    /// 441: the request's username is not the allocation's.
    WrongCredentials,
    /// 442: only UDP relaying is offered.
    UnsupportedTransportProtocol,
    /// 443: the peer's family is not the allocation's.
    PeerAddressFamilyMismatch,
    /// 486: the user has as many allocations as allowed.
    AllocationQuotaReached,
    /// 508: out of relay ports (or the kernel refused every port tried), over the
    /// relay-wide allocation quota, a RESERVATION-TOKEN nobody holds, or more
    /// permissions than one allocation may have.
    InsufficientCapacity,
}

impl Reject {
    /// The STUN error code (RFC 8489 §14.8 ERROR-CODE: class × 100 + number).
    pub fn code(&self) -> u16 {
        match self {
            Reject::TryAlternate(_) => 300,
            Reject::BadRequest => 400,
            Reject::Unauthorized => 401,
            Reject::Forbidden | Reject::Draining => 403,
            Reject::UnknownAttributes(_) => 420,
            Reject::AllocationMismatch => 437,
            Reject::StaleNonce => 438,
            Reject::AddressFamilyNotSupported => 440,
            Reject::WrongCredentials => 441,
            Reject::UnsupportedTransportProtocol => 442,
            Reject::PeerAddressFamilyMismatch => 443,
            Reject::AllocationQuotaReached => 486,
            Reject::InsufficientCapacity => 508,
        }
    }

    /// The reason phrases of the RFCs' registries.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::TryAlternate(_) => "Try Alternate",
            Reject::BadRequest => "Bad Request",
            Reject::Unauthorized => "Unauthorized",
            Reject::Forbidden => "Forbidden",
            Reject::Draining => "Server draining",
            Reject::UnknownAttributes(_) => "Unknown Attribute",
            Reject::AllocationMismatch => "Allocation Mismatch",
            Reject::StaleNonce => "Stale Nonce",
            Reject::AddressFamilyNotSupported => "Address Family not Supported",
            Reject::WrongCredentials => "Wrong Credentials",
            Reject::UnsupportedTransportProtocol => "Unsupported Transport Protocol",
            Reject::PeerAddressFamilyMismatch => "Peer Address Family Mismatch",
            Reject::AllocationQuotaReached => "Allocation Quota Reached",
            Reject::InsufficientCapacity => "Insufficient Capacity",
        }
    }
}
