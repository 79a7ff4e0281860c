//! Newtypes for the addresses and numbers the core juggles, so that a client's
//! address can never be passed where a peer's is expected.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// How a client reaches the relay. The relayed (peer) side is always UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP (RFC 8656 §3.1): one datagram per STUN or ChannelData message.
    Udp,
    /// TCP (RFC 8656 §3.1): messages back to back on one connection.
    Tcp,
    /// TLS over TCP (RFC 8656 §3.1, "turns:"): framed as TCP inside the TLS stream.
    Tls,
    /// A CONNECT-UDP tunnel over HTTP/3 (RFC 9298): one STUN or ChannelData message per
    /// HTTP datagram, so framed as UDP; the client is the tunnel, not a 4-tuple (see
    /// [`ClientId::quic_tunnel`]).
    Quic,
}

impl Transport {
    /// Every transport, in [`Transport::index`] order.
    pub const ALL: [Transport; 4] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Quic,
    ];

    /// Position in [`Transport::ALL`], for per-transport counters.
    pub fn index(self) -> usize {
        match self {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
            Transport::Quic => 3,
        }
    }

    /// Stream transports frame STUN and ChannelData back to back and pad
    /// ChannelData to a multiple of four bytes (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }

    /// Lower-case name for logs and metric labels (`"udp"`, `"tcp"`, `"tls"`, `"quic"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Quic => "quic",
        }
    }
}

/// The 5-tuple a client talks to us on: an allocation belongs to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId {
    /// The transport the client reached us by (part of the 5-tuple).
    pub transport: Transport,
    /// The client's address as we see it (its server-reflexive address).
    pub remote: SocketAddr,
    /// Our listening address the client reached.
    pub local: SocketAddr,
}

impl ClientId {
    /// The client behind CONNECT-UDP tunnel number `tunnel` of the QUIC listener at
    /// `local`. A tunnel is one request stream of one QUIC connection, whatever address
    /// the connection's packets come from: path migration (RFC 9000 §9) changes that
    /// address, and the allocation must not notice. So the identity is the tunnel, in
    /// `remote` as an address of the discard-only prefix 100::/64 (RFC 6666) that no
    /// real client has, with the tunnel number in its low 64 bits. It is also what the
    /// client is told as its XOR-MAPPED-ADDRESS: a tunnel has no reflexive address.
    pub fn quic_tunnel(local: SocketAddr, tunnel: u64) -> ClientId {
        let ip = Ipv6Addr::from((0x0100u128 << 112) | u128::from(tunnel));
        ClientId {
            transport: Transport::Quic,
            remote: SocketAddr::new(IpAddr::V6(ip), 0),
            local,
        }
    }
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
    /// IPv4 (REQUESTED-ADDRESS-FAMILY 0x01).
    V4,
    /// IPv6 (REQUESTED-ADDRESS-FAMILY 0x02).
    V6,
}

impl Family {
    /// The family of `addr` as written: an IPv4-mapped IPv6 address counts as IPv6.
    pub fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// A UDP port on the relayed side: the port of a relay socket, never a client's or
/// a peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayPort(pub u16);

/// Names one relay socket of a worker: the shell binds `(bind address of family, port)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayKey {
    /// Which relay bind address (IPv4 or IPv6) the socket uses.
    pub family: Family,
    /// The socket's local port, taken from the shared relay port pool.
    pub port: RelayPort,
}

/// A TURN channel number (RFC 8656 §12): 0x4000..=0x4FFF, as [`ChannelNumber::new`]
/// checks. With `ServerConfig::rfc5766_channel_numbers` the core also binds RFC 5766's
/// 0x5000..=0x7FFF, constructing the value directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelNumber(pub u16);

impl ChannelNumber {
    /// Lowest channel number RFC 8656 §12 allows.
    pub const MIN: u16 = 0x4000;
    /// Highest channel number RFC 8656 §12 allows (RFC 5766 allowed up to 0x7FFF).
    pub const MAX: u16 = 0x4FFF;

    /// `n` as a channel number if it is in RFC 8656's range `MIN..=MAX`, else `None`.
    pub fn new(n: u16) -> Option<ChannelNumber> {
        (Self::MIN..=Self::MAX)
            .contains(&n)
            .then_some(ChannelNumber(n))
    }
}
