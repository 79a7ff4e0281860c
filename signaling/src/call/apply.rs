//! Applying events from the bus to this node's views of calls, and telling local devices.

use std::collections::BTreeSet;

use super::{
    Call, DeviceId, Event, EventKind, IceItem, Millis, Outcome, Output, State, Switchboard,
    Tombstone,
};
use crate::protocol::{EndReason, ServerBody};

impl Switchboard {
    /// Apply an event from the bus to this node's view and tell local devices.
    pub(super) fn apply(&mut self, now: Millis, event: Event, out: &mut Vec<Output>) {
        let Event {
            call_id, at, kind, ..
        } = event;
        match kind {
            EventKind::Invite {
                caller,
                callee,
                sdp,
                created,
                expires_at,
                early_ice,
            } => {
                if self.calls.contains_key(&call_id) {
                    // A re-sent invite: ring local devices that came online since.
                    self.ring_local(now, &call_id, out);
                    return;
                }
                let involved = self.is_local_user(&caller.user) || self.is_local_user(&callee);
                if self.ended.contains_key(&call_id) || expires_at <= now || !involved {
                    return;
                }
                let call = Call {
                    caller,
                    callee,
                    sdp,
                    created,
                    expires_at,
                    state: State::Ringing {
                        rung: BTreeSet::new(),
                    },
                    early_ice,
                    timeout_claimed: false,
                    relays: [None, None],
                };
                let callee_here = self.is_local_user(&call.callee);
                self.calls.insert(call_id.clone(), call);
                if callee_here && !self.busy_or_glare(&call_id, out) {
                    self.ring_local(now, &call_id, out);
                }
            }
            EventKind::Ringing { device } => {
                let Some(call) = self.calls.get(&call_id) else {
                    return;
                };
                if matches!(call.state, State::Ringing { .. }) && self.is_local(&call.caller) {
                    let body = ServerBody::Ringing {
                        call_id: call_id.clone(),
                        from: device.user,
                        age_ms: 0,
                    };
                    Self::send(&call.caller, body, at, out);
                }
            }
            EventKind::Accepted { device, sdp } => {
                self.accepted(now, &call_id, at, device, sdp, out)
            }
            EventKind::Ice { from, item } => self.ice(&call_id, from, item, out),
            EventKind::Renegotiate { from, sdp, answer } => {
                let Some(call) = self.calls.get(&call_id) else {
                    return;
                };
                if let Some(to) = self.counterpart(call, &from) {
                    let body = ServerBody::Renegotiate {
                        call_id: call_id.clone(),
                        from: from.user,
                        sdp,
                        answer,
                        age_ms: 0,
                    };
                    Self::send(&to, body, at, out);
                }
            }
            EventKind::Connected { from } => {
                let Some(call) = self.calls.get_mut(&call_id) else {
                    return;
                };
                if let State::Accepted {
                    connect_deadline, ..
                } = &mut call.state
                {
                    *connect_deadline = None;
                }
                let call = call.clone();
                if let Some(to) = self.counterpart(&call, &from) {
                    let body = ServerBody::Connected {
                        call_id: call_id.clone(),
                        from: from.user,
                        age_ms: 0,
                    };
                    Self::send(&to, body, at, out);
                }
            }
            EventKind::RelayUsed { from, relay } => {
                if let Some(call) = self.calls.get_mut(&call_id) {
                    let slot = usize::from(from != call.caller);
                    if let Some(r) = call.relays.get_mut(slot) {
                        *r = Some(relay);
                    }
                }
            }
            EventKind::Ended { reason, by, detail } => {
                let Some(call) = self.calls.remove(&call_id) else {
                    return;
                };
                self.ended.insert(
                    call_id.clone(),
                    Tombstone {
                        users: [call.caller.user.clone(), call.callee.clone()],
                        forget_at: now + self.cfg.tombstone_ms,
                    },
                );
                let mut told: Vec<DeviceId> = vec![call.caller.clone()];
                match &call.state {
                    State::Ringing { rung } => told.extend(
                        rung.iter()
                            .map(|d| DeviceId::new(call.callee.clone(), d.clone())),
                    ),
                    State::Accepted { device, .. } => told.push(device.clone()),
                }
                for d in told {
                    if Some(&d) == by.as_ref() || !self.is_local(&d) {
                        continue;
                    }
                    let body = ServerBody::CallEnded {
                        call_id: call_id.clone(),
                        reason,
                        by: by.as_ref().map(|b| b.user.clone()),
                        detail: detail.clone(),
                        age_ms: 0,
                    };
                    Self::send(&d, body, at, out);
                }
            }
        }
    }

    /// The local device on the other side of `from` in an answered call (or the caller,
    /// for a callee device), if it is on this node.
    fn counterpart(&self, call: &Call, from: &DeviceId) -> Option<DeviceId> {
        let State::Accepted { device, .. } = &call.state else {
            return None;
        };
        let to = if from == &call.caller {
            device.clone()
        } else if from == device {
            call.caller.clone()
        } else {
            return None;
        };
        self.is_local(&to).then_some(to)
    }

    /// An invite to a local callee arrived. Glare: the callee is ringing the caller with
    /// another call; the greater call id of the two (byte order) loses, a rule every node
    /// applies alike without asking another (`docs/signaling.md`, "Glare"). Busy: the callee
    /// is in any other call. Either way the loser is claimed for ending; returns true if
    /// this invite must not ring.
    fn busy_or_glare(&self, call_id: &str, out: &mut Vec<Output>) -> bool {
        let Some(call) = self.calls.get(call_id) else {
            return true;
        };
        let others: Vec<(&String, &Call)> = self
            .calls
            .iter()
            .filter(|(id, c)| {
                id.as_str() != call_id && (c.callee == call.callee || c.caller.user == call.callee)
            })
            .collect();
        let glare = others.iter().find(|(_, g)| {
            g.caller.user == call.callee
                && g.callee == call.caller.user
                && matches!(g.state, State::Ringing { .. })
        });
        if let Some((gid, g)) = glare {
            let glare_end = Outcome::End {
                reason: EndReason::Glare,
                by: None,
                detail: None,
            };
            if gid.as_str() < call_id {
                self.claim(call_id, call, glare_end, out);
                return true;
            }
            self.claim(gid, g, glare_end, out);
            // Busy only if the callee has yet another call.
            if others.len() == 1 {
                return false;
            }
        }
        if others.is_empty() {
            return false;
        }
        let busy = Outcome::End {
            reason: EndReason::Busy,
            by: None,
            detail: None,
        };
        self.claim(call_id, call, busy, out);
        true
    }

    fn accepted(
        &mut self,
        now: Millis,
        call_id: &str,
        at: Millis,
        winner: DeviceId,
        sdp: String,
        out: &mut Vec<Output>,
    ) {
        let deadline = now + self.cfg.connect_timeout_ms;
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let State::Ringing { rung } = &call.state else {
            return;
        };
        let rung = rung.clone();
        call.state = State::Accepted {
            device: winner.clone(),
            connect_deadline: Some(deadline),
        };
        call.early_ice.clear();
        let call = call.clone();
        if self.is_local(&call.caller) {
            let body = ServerBody::Accept {
                call_id: call_id.to_string(),
                from: winner.user.clone(),
                sdp,
                age_ms: 0,
            };
            Self::send(&call.caller, body, at, out);
        }
        if self.is_local(&winner) {
            let body = ServerBody::Accepted {
                call_id: call_id.to_string(),
            };
            Self::send(&winner, body, at, out);
        }
        for device in rung.into_iter().filter(|d| *d != winner.device) {
            let to = DeviceId::new(call.callee.clone(), device);
            if self.is_local(&to) {
                let body = ServerBody::AnsweredElsewhere {
                    call_id: call_id.to_string(),
                };
                Self::send(&to, body, at, out);
            }
        }
    }

    fn ice(&mut self, call_id: &str, from: DeviceId, item: IceItem, out: &mut Vec<Output>) {
        let max = self.cfg.max_early_ice;
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let mut to: Vec<DeviceId> = Vec::new();
        match &call.state {
            State::Ringing { rung } if from == call.caller => {
                if call.early_ice.len() < max {
                    call.early_ice.push(item.clone());
                }
                to.extend(
                    rung.iter()
                        .map(|d| DeviceId::new(call.callee.clone(), d.clone())),
                );
            }
            State::Accepted { device, .. } if from == call.caller => to.push(device.clone()),
            State::Accepted { device, .. } if &from == device => to.push(call.caller.clone()),
            _ => return,
        }
        for d in to {
            if self.is_local(&d) {
                Self::send(&d, item.to_body(call_id, &from.user), item.at, out);
            }
        }
    }
}
