//! A WebRTC call client for Turnpike, built on webrtc-rs (the `webrtc` crate): it signs in
//! to Turnpike's signaling service, places or answers a call, connects with relay-only ICE
//! through the TURN servers signaling hands out, runs DTLS-SRTP end to end, sends 20 ms
//! RTP packets of PCMU audio (a tone, or a plaintext marker for tests) and reports what
//! it received.
//!
//! - [`signal`]: the signaling client (dev login, WebSocket session).
//! - [`peer`]: the webrtc-rs peer connection.
//! - [`media`]: PCMU tone, marker payloads, and receive accounting.
//! - [`call`]: one call from sign-in to hangup; [`report`]: its outcome.

pub mod call;
pub mod media;
pub mod peer;
pub mod report;
pub mod signal;

pub use call::{run, CallError, CallOptions, RelayTransport, Role};
pub use media::Payload;
pub use report::Report;
