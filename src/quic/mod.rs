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
