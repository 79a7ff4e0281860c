//! Turnpike: a STUN/TURN media relay for end-to-end encrypted calls.
//!
//! - [`proto`]: the sans-IO relay core (STUN/TURN state machine, codecs, policy), the
//!   `turnpike-proto` crate re-exported under this name.
//! - [`net`]: the I/O shell — shared-nothing worker threads that own the sockets.
//! - [`config`], [`serve`], [`metrics`], [`reload`], [`logging`], [`sd_notify`]:
//!   operations.

pub mod admin;
pub mod config;
pub mod fastpath;
pub mod fleet;
pub mod host_addrs;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod quic;
pub mod reload;
pub mod rtp_metrics;
pub mod sd_notify;
pub mod serve;

pub use turnpike_proto as proto;
