//! Call messages from local devices: check the device may send it now, then publish an
//! event or claim the end of ringing. Views change only when events come back.

use super::{DeviceId, EventKind, IceItem, Millis, Outcome, Output, Role, State, Switchboard};
use crate::protocol::{valid_name, EndReason, ErrorCode, IceCandidate};

/// A call message from a device (the call-related `ClientBody` variants).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
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
        reason: Option<String>,
    },
    Ice {
        call_id: String,
        candidate: Option<IceCandidate>,
        end_of_candidates: bool,
    },
    Renegotiate {
        call_id: String,
        sdp: String,
        answer: bool,
    },
    Connected {
        call_id: String,
    },
    /// The relay this device's selected candidate pair runs through (a TURN URI,
    /// `host:port` or a fleet relay id), so a drain of that relay moves the call.
    RelayUsed {
        call_id: String,
        relay: String,
    },
}

impl Request {
    pub fn call_id(&self) -> &str {
        match self {
            Request::Invite { call_id, .. }
            | Request::Ringing { call_id }
            | Request::Accept { call_id, .. }
            | Request::Reject { call_id }
            | Request::Cancel { call_id }
            | Request::Busy { call_id }
            | Request::Hangup { call_id, .. }
            | Request::Ice { call_id, .. }
            | Request::Renegotiate { call_id, .. }
            | Request::Connected { call_id }
            | Request::RelayUsed { call_id, .. } => call_id,
        }
    }
}

/// Longest hangup reason kept (it is shown to the other party).
const MAX_DETAIL: usize = 128;
/// Longest relay name a device may report in `relay_used`.
const MAX_RELAY: usize = 256;

impl Switchboard {
    pub(super) fn request(
        &mut self,
        now: Millis,
        device: DeviceId,
        re: Option<String>,
        request: Request,
        out: &mut Vec<Output>,
    ) {
        let call_id = request.call_id().to_string();
        if let Request::Invite { call_id, to, sdp } = request {
            return self.invite(now, device, re, call_id, to, sdp, out);
        }
        let Some(call) = self.calls.get(&call_id) else {
            let ended = self
                .ended
                .get(&call_id)
                .is_some_and(|t| t.users.contains(&device.user));
            let (code, why) = if ended {
                (ErrorCode::CallEnded, "the call has ended")
            } else {
                (ErrorCode::NotInCall, "no such call involving this device")
            };
            return Self::error(&device, code, why, re, now, out);
        };
        let role = self.role(call, &device);
        let ringing = matches!(call.state, State::Ringing { .. });
        let other_user = if device.user == call.caller.user {
            call.callee.clone()
        } else {
            call.caller.user.clone()
        };
        let both = vec![call.caller.user.clone(), call.callee.clone()];
        let end = |reason, detail| Outcome::End {
            reason,
            by: Some(device.clone()),
            detail,
        };
        let not_ringing = |out: &mut Vec<Output>, re| {
            let why = "the call is no longer ringing (answered elsewhere or answered)";
            Self::error(&device, ErrorCode::NotRinging, why, re, now, out)
        };
        if role == Role::None {
            // A callee device that lost the answer, or someone else entirely.
            let (code, why) = if device.user == call.callee && !ringing {
                (
                    ErrorCode::NotRinging,
                    "the call was answered by another device",
                )
            } else {
                (ErrorCode::NotInCall, "no such call involving this device")
            };
            return Self::error(&device, code, why, re, now, out);
        }
        let publish = |sb: &mut Switchboard, users: Vec<String>, kind, out: &mut Vec<Output>| {
            let event = sb.event(now, &call_id, kind);
            out.push(Output::Publish { users, event });
        };
        match (request, role) {
            (Request::Ringing { .. }, Role::Rung) => {
                let users = vec![call.caller.user.clone()];
                publish(self, users, EventKind::Ringing { device }, out);
            }
            (Request::Accept { sdp, .. }, Role::Rung) => {
                self.claim(&call_id, call, Outcome::Accept { device, sdp }, out)
            }
            (Request::Reject { .. }, Role::Rung) => {
                self.claim(&call_id, call, end(EndReason::Rejected, None), out)
            }
            (Request::Busy { .. }, Role::Rung) => {
                self.claim(&call_id, call, end(EndReason::Busy, None), out)
            }
            (Request::Cancel { .. }, Role::Caller) if ringing => {
                self.claim(&call_id, call, end(EndReason::Cancelled, None), out)
            }
            (Request::Hangup { reason, .. }, role) => {
                let detail = reason.map(|r| r.chars().take(MAX_DETAIL).collect::<String>());
                match role {
                    // Hanging up a ringing call is cancelling or rejecting it.
                    Role::Caller if ringing => {
                        self.claim(&call_id, call, end(EndReason::Cancelled, detail), out)
                    }
                    Role::Rung => self.claim(&call_id, call, end(EndReason::Rejected, detail), out),
                    _ => {
                        let kind = EventKind::Ended {
                            reason: EndReason::Hangup,
                            by: Some(device),
                            detail,
                        };
                        publish(self, both, kind, out);
                    }
                }
            }
            (
                Request::Ice {
                    candidate,
                    end_of_candidates,
                    ..
                },
                Role::Caller | Role::Answerer,
            ) => {
                if candidate.is_none() && !end_of_candidates {
                    let why = "ice needs a candidate or end_of_candidates: true";
                    return Self::error(&device, ErrorCode::BadMessage, why, re, now, out);
                }
                let item = IceItem {
                    candidate,
                    end_of_candidates,
                    at: now,
                };
                let kind = EventKind::Ice { from: device, item };
                publish(self, vec![other_user], kind, out);
            }
            (Request::Renegotiate { sdp, answer, .. }, Role::Caller | Role::Answerer)
                if !ringing =>
            {
                let kind = EventKind::Renegotiate {
                    from: device,
                    sdp,
                    answer,
                };
                publish(self, vec![other_user], kind, out);
            }
            (Request::Connected { .. }, Role::Caller | Role::Answerer) if !ringing => {
                publish(self, both, EventKind::Connected { from: device }, out);
            }
            (Request::RelayUsed { relay, .. }, Role::Caller | Role::Answerer) if !ringing => {
                if relay.is_empty() || relay.len() > MAX_RELAY {
                    let why = "relay_used needs a relay of 1 to 256 bytes";
                    return Self::error(&device, ErrorCode::BadMessage, why, re, now, out);
                }
                publish(
                    self,
                    both,
                    EventKind::RelayUsed {
                        from: device,
                        relay,
                    },
                    out,
                );
            }
            (Request::Ice { .. }, Role::Rung) => {
                let why = "send candidates after your accept has won";
                Self::error(&device, ErrorCode::NotAccepted, why, re, now, out)
            }
            (
                Request::Renegotiate { .. } | Request::Connected { .. } | Request::RelayUsed { .. },
                _,
            ) => {
                let why = "the call has not been answered";
                Self::error(&device, ErrorCode::NotAccepted, why, re, now, out)
            }
            (
                Request::Accept { .. } | Request::Reject { .. } | Request::Busy { .. },
                Role::Caller,
            ) => {
                let why = "only the callee can do that; the caller cancels or hangs up";
                Self::error(&device, ErrorCode::NotInCall, why, re, now, out)
            }
            (_, _) => not_ringing(out, re),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn invite(
        &mut self,
        now: Millis,
        device: DeviceId,
        re: Option<String>,
        call_id: String,
        to: String,
        sdp: String,
        out: &mut Vec<Output>,
    ) {
        let bad = |why: &str, out: &mut Vec<Output>| {
            Self::error(&device, ErrorCode::BadMessage, why, re.clone(), now, out)
        };
        if !valid_name(&call_id) {
            return bad(
                "call_id must be 1-64 characters of A-Z a-z 0-9 . _ @ + -",
                out,
            );
        }
        if !valid_name(&to) {
            return bad("\"to\" is not a valid user name", out);
        }
        if to == device.user {
            return bad("cannot call yourself", out);
        }
        if self.calls.contains_key(&call_id) || self.ended.contains_key(&call_id) {
            let why = "a call with this call_id exists; use a fresh random id";
            return Self::error(&device, ErrorCode::DuplicateCall, why, re, now, out);
        }
        let kind = EventKind::Invite {
            caller: device.clone(),
            callee: to.clone(),
            sdp,
            created: now,
            expires_at: now + self.cfg.invite_lifetime_ms,
            early_ice: Vec::new(),
        };
        let event = self.event(now, &call_id, kind);
        out.push(Output::Publish {
            users: vec![to.clone(), device.user.clone()],
            event,
        });
        out.push(Output::Invited {
            call_id,
            caller: device,
            callee: to,
        });
    }
}
