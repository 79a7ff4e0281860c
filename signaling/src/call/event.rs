//! What nodes tell each other about calls over the bus (JSON on a user's channel).

use serde::{Deserialize, Serialize};

use super::{DeviceId, Millis};
use crate::protocol::{EndReason, IceCandidate, ServerBody};

/// One change to a call, published to the channels of the users involved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `"<node>:<counter>"`: unique, so a node that gets it twice applies it once.
    pub id: String,
    pub call_id: String,
    /// When it happened (unix ms), for `age_ms`.
    pub at: Millis,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    Invite {
        caller: DeviceId,
        callee: String,
        sdp: String,
        created: Millis,
        expires_at: Millis,
        /// Caller candidates so far (non-empty when re-sent for a late device).
        early_ice: Vec<IceItem>,
    },
    Ringing {
        device: DeviceId,
    },
    Accepted {
        device: DeviceId,
        sdp: String,
    },
    Ice {
        from: DeviceId,
        item: IceItem,
    },
    Renegotiate {
        from: DeviceId,
        sdp: String,
        answer: bool,
    },
    Connected {
        from: DeviceId,
    },
    /// `from` reports the relay its media runs through.
    RelayUsed {
        from: DeviceId,
        relay: String,
    },
    Ended {
        reason: EndReason,
        by: Option<DeviceId>,
        detail: Option<String>,
    },
}

/// One trickled candidate, or the end of them (RFC 8838 §4.1: end-of-candidates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceItem {
    pub candidate: Option<IceCandidate>,
    pub end_of_candidates: bool,
    pub at: Millis,
}

impl IceItem {
    pub(crate) fn to_body(&self, call_id: &str, from: &str) -> ServerBody {
        ServerBody::Ice {
            call_id: call_id.to_string(),
            from: from.to_string(),
            candidate: self.candidate.clone(),
            end_of_candidates: self.end_of_candidates,
            age_ms: 0,
        }
    }
}

/// How ringing ends; the subject of a claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Accept {
        device: DeviceId,
        sdp: String,
    },
    End {
        reason: EndReason,
        by: Option<DeviceId>,
        detail: Option<String>,
    },
}

/// Who is in a call, carried with a claim so its result can be published even if the
/// view is gone by then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parties {
    pub caller: DeviceId,
    pub callee: String,
    pub created: Millis,
}

/// A call nobody answered, kept for the callee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissedCall {
    pub call_id: String,
    pub from: String,
    pub at: Millis,
}
