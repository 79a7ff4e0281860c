//! TURN over QUIC: each client's TURN traffic rides in a CONNECT-UDP tunnel (RFC 9298)
//! over HTTP/3 (RFC 9114) on QUIC with datagrams (RFC 9000, RFC 9221).
//!
//! A worker owns one [`QuicListener`] per configured QUIC address, next to its UDP and
//! TCP listeners. The listener drives `quinn-proto` (sans-IO QUIC) and the HTTP/3
//! subset in `turnpike_proto::h3` from the worker's own poll loop: no runtime, no extra
//! thread. What comes out is, per tunnel, a stream of whole STUN or ChannelData
//! messages for the worker's core ([`TunnelInput`]); what the core sends back goes in
//! HTTP datagrams ([`QuicListener::send`]). The core sees a tunnel as one client,
//! [`ClientId::quic_tunnel`](crate::proto::ClientId::quic_tunnel): when the client's
//! address changes (QUIC path migration), the allocation and its relayed address stay.

pub mod client;
pub mod config;
mod conn;
mod listener;
pub mod steer;
pub mod tunnel;

pub(crate) use listener::{QuicListener, TunnelInput};

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bytes::Bytes;
use quinn_proto::{Connection, StreamId};

use crate::proto::h3::datagram;
use crate::proto::h3::frame::{self, kind};

/// Sets "don't fragment" on a QUIC socket (`IP_PMTUDISC_PROBE`: the DF bit on every
/// datagram, and sends up to the interface MTU allowed whatever the kernel's cached
/// path MTU says). QUIC's path MTU discovery (RFC 9000 §14.3, DPLPMTUD) needs it: a
/// probe that the network cannot carry whole must be lost, not fragmented, or the
/// endpoints would settle on a size that only works in fragments. Both ends of a
/// tunnel call it on every socket they send from, then let quinn probe upwards from
/// the 1200-byte minimum — which matters here, because a 1200-byte video packet in
/// ChannelData does not fit a datagram of a 1200-byte QUIC packet.
pub fn dont_fragment(sock: &impl AsRawFd, local: SocketAddr) -> io::Result<()> {
    let (level, name, value) = match local {
        SocketAddr::V4(_) => (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        ),
        SocketAddr::V6(_) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        ),
    };
    crate::net::batch::set_int_option(sock, level, name, value)
}

/// How one TURN message went into a tunnel.
pub(crate) enum Carried {
    /// In a QUIC datagram (RFC 9297 §2.1); `false` if quinn would not queue it.
    Datagram(bool),
    /// Too large for a datagram, or the peer takes none: these bytes (a DATA frame
    /// holding a DATAGRAM capsule, RFC 9297 §3.5) go on the tunnel's request stream.
    Stream(Vec<u8>),
}

/// Puts one TURN message for the tunnel on request stream `stream` into a QUIC
/// datagram when `datagrams_ok` (the peer announced H3_DATAGRAM) and it fits, else
/// frames it as a capsule for the stream. Both ends of a tunnel use it.
pub(crate) fn carry(
    conn: &mut Connection,
    stream: StreamId,
    datagrams_ok: bool,
    msg: &[u8],
) -> Carried {
    let mut out = Vec::with_capacity(msg.len() + 9);
    datagram::quic_datagram_header(u64::from(stream), &mut out);
    let fits = conn
        .datagrams()
        .max_size()
        .is_some_and(|max| out.len() + msg.len() <= max);
    if datagrams_ok && fits {
        out.extend_from_slice(msg);
        return Carried::Datagram(conn.datagrams().send(Bytes::from(out), true).is_ok());
    }
    let mut capsule = Vec::with_capacity(msg.len() + 9);
    datagram::write_datagram_capsule(msg, &mut capsule);
    out.clear();
    frame::write_frame(kind::DATA, &capsule, &mut out);
    Carried::Stream(out)
}
