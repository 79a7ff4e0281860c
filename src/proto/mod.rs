//! The relay core: STUN/TURN as a sans-IO state machine.
//!
//! Nothing in this module reads a clock, a socket or the environment. The shell
//! (`crate::net`) feeds it bytes and `now`, then drains `poll_*` (see [`server::Server`]).

pub mod addr;
pub mod allocation;
pub mod auth;
pub mod channel_data;
pub mod fast_path;
pub mod framing;
pub mod peer_policy;
pub mod ports;
pub mod quota;
pub mod reject;
mod relaying;
mod requests;
pub mod server;
pub mod stats;
pub mod stun;

pub use addr::{ChannelNumber, ClientId, Family, RelayKey, RelayPort, Transport};
pub use fast_path::{FastPathUpdate, FastRoute};
pub use reject::Reject;
pub use server::{Event, Forward, RelayIp, Server, ServerConfig, ToClient, Transmit};
