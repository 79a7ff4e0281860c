//! Newtypes for the addresses and numbers the core juggles, so that a client's
//! address can never be passed where a peer's is expected.

use std::fmt;
use std::net::SocketAddr;

/// How a client reaches the relay. The relayed (peer) side is always UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Stream transports frame STUN and ChannelData back to back and pad
    /// ChannelData to a multiple of four bytes (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// The 5-tuple a client talks to us on: an allocation belongs to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId {
    pub transport: Transport,
    /// The client's address as we see it (its server-reflexive address).
    pub remote: SocketAddr,
    /// Our listening address the client reached.
    pub local: SocketAddr,
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}",
            self.transport.as_str(),
            self.remote,
            self.local
        )
    }
}

/// Address family of a relay socket (RFC 6156).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// A UDP port on the relayed side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayPort(pub u16);

/// Names one relay socket of a worker: the shell binds `(bind address of family, port)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayKey {
    pub family: Family,
    pub port: RelayPort,
}

/// A TURN channel number, 0x4000..=0x4FFF (RFC 8656 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelNumber(pub u16);

impl ChannelNumber {
    pub const MIN: u16 = 0x4000;
    pub const MAX: u16 = 0x4FFF;

    pub fn new(n: u16) -> Option<ChannelNumber> {
        (Self::MIN..=Self::MAX)
            .contains(&n)
            .then_some(ChannelNumber(n))
    }
}
