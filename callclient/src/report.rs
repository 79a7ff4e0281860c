//! The JSON line `turnpike-call` prints when a call ends.

use serde::Serialize;

use crate::media::Received;

/// Everything a call did, for people and for tests.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub user: String,
    /// "caller" or "callee".
    pub role: &'static str,
    /// The other party's user name.
    pub peer: String,
    pub call_id: String,
    /// From sending the invite (caller) or the accept (callee) to ICE + DTLS connected.
    pub connect_ms: u64,
    /// How long media was sent.
    pub media_ms: u64,
    pub sent: Sent,
    pub received: Received,
    /// The nominated ICE candidate pair (both `relay` when the call went through the relay).
    pub selected_pair: Option<PairInfo>,
    /// How the call ended: "hangup_sent", or the peer's `call_ended` reason.
    pub ended: String,
    /// With the relay over QUIC: how many times the tunnel moved to a new socket.
    pub tunnel_moves: u64,
    /// ICE restarts onto another relay completed after `relay_moved` (a relay drain).
    pub relay_moves: u64,
    /// The relays this side reported in `relay_used`, in order.
    pub relays_used: Vec<String>,
}

/// RTP this side handed to the SRTP layer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sent {
    pub packets: u64,
    pub payload_bytes: u64,
    pub ssrc: u32,
    pub payload_type: u8,
}

/// One candidate of the selected pair.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CandidateInfo {
    /// "host", "srflx", "prflx" or "relay".
    #[serde(rename = "type")]
    pub candidate_type: String,
    pub protocol: String,
    /// ip:port. For a relay candidate, the relayed transport address on the TURN server.
    pub address: String,
    /// For a relay candidate, the address the TURN server saw the client at.
    pub related_address: Option<String>,
    /// For a relay candidate, the TURN server URL it was gathered from, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PairInfo {
    pub local: CandidateInfo,
    pub remote: CandidateInfo,
}
