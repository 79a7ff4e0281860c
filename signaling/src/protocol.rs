//! The wire protocol: every JSON message a device and the server exchange.
//!
//! Each message is one WebSocket text frame holding one JSON object with a `type` tag and
//! the protocol version `v`. Client messages carry an `id` (echoed in errors as `re`, and
//! used to drop duplicates a client re-sends after a resume) and may carry `seq`, their
//! position in the session; server messages carry `seq`, so a client that lost its
//! connection can say what it already has (`hello.last_seq`) and get the rest replayed.
//! `docs/signaling.md` describes every message for client developers.

use serde::{Deserialize, Serialize};

/// The protocol version this server speaks; any other `v` is refused.
pub const VERSION: u32 = 1;

/// One message from a device: the envelope plus the typed body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClientMessage {
    pub v: u32,
    /// Client-chosen message id (at most 64 bytes); echoed as `re` in errors.
    #[serde(default)]
    pub id: Option<String>,
    /// The client's running count of messages in this session (1, 2, ...). Optional;
    /// when present, messages at or below the last one seen are dropped as duplicates.
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub body: ClientBody,
}

/// What a device asks for, by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientBody {
    /// First message on a connection: authenticate, optionally resume a session.
    Hello {
        /// Bearer token (HS256 JWT naming user and device). Also accepted in the
        /// `Authorization: Bearer` header of the upgrade request.
        #[serde(default)]
        token: Option<String>,
        /// From an earlier `hello_ok`: resume that session if still in its grace period.
        #[serde(default)]
        resume_token: Option<String>,
        /// Highest server `seq` the client processed; later messages are replayed.
        #[serde(default)]
        last_seq: Option<u64>,
        /// Region hint ("eu-west") used to rank relays.
        #[serde(default)]
        region: Option<String>,
        /// Users whose presence this device wants pushed.
        #[serde(default)]
        watch: Vec<String>,
    },
    Invite {
        call_id: String,
        to: String,
        sdp: String,
    },
    Ringing {
        call_id: String,
    },
    Accept {
        call_id: String,
        sdp: String,
    },
    Reject {
        call_id: String,
    },
    Cancel {
        call_id: String,
    },
    Busy {
        call_id: String,
    },
    Hangup {
        call_id: String,
        #[serde(default)]
        reason: Option<String>,
    },
    Ice {
        call_id: String,
        #[serde(default)]
        candidate: Option<IceCandidate>,
        #[serde(default)]
        end_of_candidates: bool,
    },
    Renegotiate {
        call_id: String,
        sdp: String,
        /// false: this SDP is a new offer (e.g. ICE restart); true: the answer to one.
        #[serde(default)]
        answer: bool,
    },
    /// Media is flowing: stops the connect timeout.
    Connected {
        call_id: String,
    },
    /// The relay this device's selected candidate pair runs through, sent after
    /// `connected` and again after each ICE restart: a TURN URI from `ice_servers`
    /// (`turn:host:port?transport=udp`), `host:port`, or a relay id.
    RelayUsed {
        call_id: String,
        relay: String,
    },
    /// Add users to this device's presence subscriptions.
    Watch {
        users: Vec<String>,
    },
    /// Ask for fresh relay credentials before the current ones expire.
    TurnRefresh {
        #[serde(default)]
        region: Option<String>,
    },
    Ping,
    /// The client processed every server message up to `last_seq`; the server may forget
    /// them (a resume does not replay acknowledged messages).
    Ack {
        last_seq: u64,
    },
}

/// Every `type` a client may send; anything else is `unknown_type`.
pub const CLIENT_TYPES: &[&str] = &[
    "hello",
    "invite",
    "ringing",
    "accept",
    "reject",
    "cancel",
    "busy",
    "hangup",
    "ice",
    "renegotiate",
    "connected",
    "relay_used",
    "watch",
    "turn_refresh",
    "ping",
    "ack",
];

/// An ICE candidate in the shape of WebRTC's `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
    #[serde(
        rename = "usernameFragment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub username_fragment: Option<String>,
}

/// One message to a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerMessage {
    pub v: u32,
    /// Position in the session (1, 2, ...); 0 for `hello_ok` and `pong`, which are never
    /// replayed.
    pub seq: u64,
    #[serde(flatten)]
    pub body: ServerBody,
}

/// What the server tells a device, by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerBody {
    HelloOk {
        /// Opaque session id, for logs and support.
        session: String,
        /// Secret that lets this device resume the session after a dropped connection.
        resume_token: String,
        /// true when an earlier session was resumed (queued messages follow).
        resumed: bool,
        user: String,
        device: String,
        /// Highest client `seq` the server processed; re-send anything after it.
        last_client_seq: u64,
        ice_servers: Vec<IceServer>,
        /// Seconds the relay credentials stay valid; send `turn_refresh` before then.
        ice_ttl: u64,
        /// Seconds of silence after which the server drops the connection.
        idle_timeout_secs: u64,
    },
    /// An incoming call (the caller's SDP offer).
    Invite {
        call_id: String,
        from: String,
        from_device: String,
        sdp: String,
        age_ms: u64,
        /// Milliseconds left until the invite expires as a missed call.
        expires_in_ms: u64,
    },
    Ringing {
        call_id: String,
        from: String,
        age_ms: u64,
    },
    /// The callee answered (its SDP answer).
    Accept {
        call_id: String,
        from: String,
        sdp: String,
        age_ms: u64,
    },
    /// Your `accept` won: you are in the call.
    Accepted {
        call_id: String,
    },
    /// Another device of yours answered this call; stop ringing.
    AnsweredElsewhere {
        call_id: String,
    },
    Ice {
        call_id: String,
        from: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        candidate: Option<IceCandidate>,
        end_of_candidates: bool,
        age_ms: u64,
    },
    Renegotiate {
        call_id: String,
        from: String,
        sdp: String,
        answer: bool,
        age_ms: u64,
    },
    Connected {
        call_id: String,
        from: String,
        age_ms: u64,
    },
    CallEnded {
        call_id: String,
        reason: EndReason,
        /// The user whose action ended the call, when one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// The `reason` text of a `hangup`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        age_ms: u64,
    },
    Presence {
        user: String,
        online: bool,
        /// Unix milliseconds of the user's last activity, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen: Option<u64>,
    },
    MissedCall {
        call_id: String,
        from: String,
        /// Unix milliseconds when the call was placed.
        at: u64,
    },
    /// The relay this call runs through started draining: take these ICE servers
    /// (another relay) and ICE-restart. The party with `offer: true` (the caller) sends
    /// the new offer (`renegotiate`); the other answers it.
    RelayMoved {
        call_id: String,
        /// The draining relay's id.
        relay: String,
        ice_servers: Vec<IceServer>,
        ttl: u64,
        offer: bool,
    },
    /// How this device's media reaches the relay of this call, as the relay measures
    /// it from the clear RTP headers (relays with `telemetry.rtp_quality`): the share
    /// of packets lost on the way (0–1) and the jitter, over the last 5 seconds. Sent
    /// at most every 5 seconds while the call runs through such a relay.
    CallQuality {
        call_id: String,
        /// The relay's id.
        relay: String,
        uplink_loss: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uplink_jitter_ms: Option<f64>,
    },
    /// Fresh relay credentials (answer to `turn_refresh`).
    IceServers {
        ice_servers: Vec<IceServer>,
        ttl: u64,
    },
    Error {
        code: ErrorCode,
        reason: String,
        /// The `id` of the client message this answers, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        re: Option<String>,
    },
    Pong,
}

impl ServerBody {
    /// Forwarded messages say how long ago their sender sent them; set that at the moment
    /// of sending (a replayed message is older than when it was first queued).
    pub fn set_age(&mut self, age: u64) {
        match self {
            ServerBody::Invite { age_ms, .. }
            | ServerBody::Ringing { age_ms, .. }
            | ServerBody::Accept { age_ms, .. }
            | ServerBody::Ice { age_ms, .. }
            | ServerBody::Renegotiate { age_ms, .. }
            | ServerBody::Connected { age_ms, .. }
            | ServerBody::CallEnded { age_ms, .. } => *age_ms = age,
            _ => {}
        }
    }

    pub fn error(code: ErrorCode, reason: impl Into<String>, re: Option<String>) -> ServerBody {
        ServerBody::Error {
            code,
            reason: reason.into(),
            re,
        }
    }
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The callee's device refused it.
    Rejected,
    /// The caller gave up before an answer.
    Cancelled,
    /// The callee is in another call, or a device said `busy`.
    Busy,
    /// A party hung up an answered call (`detail` carries its reason).
    Hangup,
    /// Nobody answered within the invite lifetime: a missed call.
    Timeout,
    /// Answered, but no side reported `connected` in time.
    ConnectTimeout,
    /// Both users called each other; this call lost (the lesser call id survives).
    Glare,
    /// A party's device went away (connection lost past the resume grace period).
    Disconnected,
}

/// What went wrong, for `error` messages and HTTP error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a JSON object.
    BadJson,
    /// `type` is missing or not a known message.
    UnknownType,
    /// `v` is missing or not [`VERSION`].
    UnsupportedVersion,
    /// A field is missing, has the wrong type or an invalid value.
    BadMessage,
    /// Anything but `hello` before `hello_ok`.
    HelloRequired,
    /// A second `hello` on an authenticated connection.
    AlreadyAuthenticated,
    /// Missing, forged or malformed token.
    Unauthorized,
    /// The token's `exp` has passed.
    TokenExpired,
    /// No call with that id involving this device.
    NotInCall,
    /// The call has already ended.
    CallEnded,
    /// The message needs a ringing call (e.g. `accept` after another answer).
    NotRinging,
    /// The message needs an answered call (e.g. `renegotiate` while ringing).
    NotAccepted,
    /// A call with that id exists or existed.
    DuplicateCall,
    /// Too many invites; slow down.
    RateLimited,
    /// Dev login is turned off on this server.
    DevLoginDisabled,
    /// The server cannot mint relay credentials (no shared secret configured).
    NoTurnSecret,
    /// Something failed on the server side (e.g. the bus); retry later.
    Internal,
}

/// One ICE server for `RTCPeerConnection({iceServers})`, plus where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    pub region: String,
    /// The same relay's TURN-over-QUIC listeners, `masque://host:port` (a CONNECT-UDP
    /// tunnel to that address; the same credentials). Kept out of `urls`, where a
    /// browser would refuse the unknown scheme; a dictionary member it does not know
    /// is ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quic_urls: Vec<String>,
}

/// Close codes the server uses (RFC 6455 §7.4.1 for 1000-range, 4000-4999 private use).
pub mod close {
    /// RFC 6455 §7.4.1: the server is shutting down (or draining).
    pub const GOING_AWAY: u16 = 1001;
    /// The reason sent with [`GOING_AWAY`]: the client should reconnect (to this
    /// service's address, which a load balancer or DNS now sends to another node) and
    /// resume its session with its `resume_token`.
    pub const GOING_AWAY_REASON: &str = "server going away: reconnect and resume";
    /// RFC 6455 §7.4.1: policy violation (abuse, e.g. an invite flood).
    pub const POLICY: u16 = 1008;
    /// RFC 6455 §7.4.1: a frame larger than the configured limit.
    pub const TOO_BIG: u16 = 1009;
    /// Another connection took over this device's session.
    pub const REPLACED: u16 = 4000;
    /// Authentication failed (forged, expired or missing token).
    pub const UNAUTHORIZED: u16 = 4001;
    /// No `hello` within the hello timeout.
    pub const HELLO_TIMEOUT: u16 = 4008;
}

/// Why a text frame is not a usable client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub code: ErrorCode,
    pub reason: String,
    /// The message's `id`, if it could be read.
    pub re: Option<String>,
}

/// Parse one text frame, telling apart bad JSON, a wrong version, an unknown type and a
/// bad field, so that each gets its own error code.
pub fn parse_client(text: &str) -> Result<ClientMessage, ParseError> {
    let err = |code, reason: String, re| ParseError { code, reason, re };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| err(ErrorCode::BadJson, format!("not JSON: {e}"), None))?;
    let Some(object) = value.as_object() else {
        return Err(err(ErrorCode::BadJson, "not a JSON object".into(), None));
    };
    let re = object
        .get("id")
        .and_then(|id| id.as_str())
        .filter(|id| id.len() <= MAX_ID_BYTES)
        .map(str::to_string);
    match object.get("v").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(VERSION) => {}
        other => {
            let got = other.map_or("missing".to_string(), |v| v.to_string());
            return Err(err(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {got}; this server speaks v={VERSION}"),
                re,
            ));
        }
    }
    match object.get("type").and_then(|t| t.as_str()) {
        Some(t) if CLIENT_TYPES.contains(&t) => {}
        Some(t) => {
            let shown: String = t.chars().take(32).collect();
            return Err(err(
                ErrorCode::UnknownType,
                format!("unknown type {shown:?}"),
                re,
            ));
        }
        None => return Err(err(ErrorCode::UnknownType, "missing \"type\"".into(), re)),
    }
    if object
        .get("id")
        .is_some_and(|id| id.as_str().is_none_or(|s| s.len() > MAX_ID_BYTES))
    {
        return Err(err(
            ErrorCode::BadMessage,
            format!("\"id\" must be a string of at most {MAX_ID_BYTES} bytes"),
            None,
        ));
    }
    serde_json::from_value(value).map_err(|e| err(ErrorCode::BadMessage, e.to_string(), re))
}

/// Longest accepted message `id`, call id and user or device name.
pub const MAX_ID_BYTES: usize = 64;

/// User names, device names and call ids: 1-64 bytes of `[A-Za-z0-9._@+-]`. Narrow on
/// purpose: they appear in Redis keys, TURN usernames (`<expiry>:<user>`) and logs.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_error_kind() {
        let code = |t: &str| parse_client(t).unwrap_err().code;
        assert_eq!(code("{"), ErrorCode::BadJson);
        assert_eq!(code("[1]"), ErrorCode::BadJson);
        assert_eq!(
            code(r#"{"v":2,"type":"ping","id":"a"}"#),
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(code(r#"{"type":"ping"}"#), ErrorCode::UnsupportedVersion);
        assert_eq!(code(r#"{"v":1,"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"v":1}"#), ErrorCode::UnknownType);
        assert_eq!(
            code(r#"{"v":1,"type":"invite","call_id":"c"}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code(r#"{"v":1,"type":"ping","id":5}"#),
            ErrorCode::BadMessage
        );
        let e = parse_client(r#"{"v":1,"type":"accept","id":"m7"}"#).unwrap_err();
        assert_eq!(e.re.as_deref(), Some("m7"));
    }

    #[test]
    fn parses_messages_with_envelope() {
        let m = parse_client(r#"{"v":1,"id":"x","seq":3,"type":"ack","last_seq":9}"#).unwrap();
        assert_eq!(m.seq, Some(3));
        assert_eq!(m.body, ClientBody::Ack { last_seq: 9 });
        let m = parse_client(
            r#"{"v":1,"type":"ice","call_id":"c","candidate":{"candidate":"candidate:1 1 udp 1 192.0.2.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        )
        .unwrap();
        let ClientBody::Ice { candidate, .. } = m.body else {
            panic!("not ice")
        };
        assert_eq!(candidate.unwrap().sdp_mline_index, Some(0));
        let m = parse_client(r#"{"v":1,"type":"ping"}"#).unwrap();
        assert_eq!(m.body, ClientBody::Ping);
    }

    #[test]
    fn names() {
        assert!(valid_name("alice@example.org"));
        assert!(!valid_name(""));
        assert!(!valid_name("a:b"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
