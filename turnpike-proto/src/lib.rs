//! Turnpike's relay core: STUN/TURN as a sans-IO state machine.
//!
//! Nothing in this crate reads a clock, a socket or the environment, and the compiler
//! keeps it so: the crate depends on no I/O library (no tokio, mio, libc, socket2) and
//! forbids `unsafe`. The shell (the `turnpike` crate's `net` module) feeds it bytes and
//! `now`, then drains `poll_*` (see [`server::Server`]). What the cores of several worker
//! threads share — the relay port pool and the allocation quotas — reaches a core only
//! through the [`shared::Shared`] trait it is given at construction.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod allocation;
pub mod auth;
pub mod bandwidth;
pub mod channel_data;
pub mod drain;
pub mod fast_path;
pub mod framing;
pub mod h3;
pub mod peer_policy;
pub mod ports;
pub mod quality;
pub mod quota;
pub mod reject;
mod relaying;
pub mod report;
mod requests;
pub mod server;
pub mod shared;
pub mod stats;
pub mod stun;
pub mod throttle;

pub use addr::{ChannelNumber, ClientId, Family, RelayKey, RelayPort, Transport};
pub use fast_path::{FastPathUpdate, FastRoute};
pub use reject::Reject;
pub use server::{Event, Forward, RelayIp, Server, ServerConfig, ToClient, Transmit};
pub use shared::{Shared, SharedPool};
