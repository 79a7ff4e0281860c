//! The subset of HTTP/3 a CONNECT-UDP server needs (RFC 9114, RFC 9204, RFC 9220,
//! RFC 9297, RFC 9298), as codecs with no I/O: TURN over QUIC runs inside one
//! CONNECT-UDP tunnel per client, and this module reads and writes everything of
//! HTTP/3 such a tunnel involves — frames and SETTINGS on the control stream, one
//! request's QPACK field section and the response to it, HTTP Datagrams, and capsules.
//!
//! Why not the `h3` crate: it is async-only, built on an async QUIC endpoint and a
//! tokio runtime, while Turnpike's workers are synchronous poll loops that will drive
//! the sans-IO `quinn-proto` directly (one endpoint per worker, no runtime on the
//! packet path). A tunnel needs one request per stream, static-table QPACK (the relay
//! announces a dynamic table of 0), no server push, and a datagram prefix: a few
//! hundred lines, fuzzed, against a general HTTP/3 stack's thousands.

pub mod connect_udp;
pub mod datagram;
pub mod frame;
pub mod huffman;
pub mod qpack;
pub mod varint;
