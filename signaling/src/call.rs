//! The call state machine: pure, on virtual time. No sockets, no clock, no tokio.
//!
//! One [`Switchboard`] per signaling node. It knows the devices connected to this node and
//! a *view* of every call that involves one of their users. Nodes share calls through the
//! bus: what a local device asks for becomes an [`Event`] published to the channels of the
//! users involved, and the switchboard changes a view only by applying events. So every node holding a view of a call
//! sees the same events in the same order and reaches the same state; events that arrive
//! twice (a node subscribed to both users' channels, or its own events, which the node
//! applies at once and then gets back from the bus) are dropped by id.
//!
//! Leaving the ringing state is decided by an atomic *claim* on the bus (`SET NX`): accept,
//! reject, cancel, busy, glare and timeout each try to claim the call, exactly one wins,
//! and only the winner publishes its event. That is how the first of two concurrent
//! accepts, on any nodes, wins and the other device is told `answered_elsewhere`.
//!
//! Calling order (sans-IO, as the relay core: inputs in, outputs out, time as a
//! parameter; see ARCHITECTURE.md, "Design rules"): feed each input to [`Switchboard::handle`] with the current
//! time, perform every returned [`Output`] (claims answer with an [`Input::Claimed`]), and
//! call `handle(now, Input::Tick)` at [`Switchboard::poll_timeout`].

mod apply;
mod event;
mod request;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

pub use event::{Event, EventKind, IceItem, MissedCall, Outcome, Parties};
pub use request::Request;

use crate::protocol::{EndReason, ErrorCode, ServerBody};

/// Unix milliseconds. Virtual in tests; the node passes the wall clock so that event
/// times agree across nodes.
pub type Millis = u64;

/// One device of one user: the unit that holds a WebSocket.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct DeviceId {
    pub user: String,
    pub device: String,
}

impl DeviceId {
    pub fn new(user: impl Into<String>, device: impl Into<String>) -> DeviceId {
        DeviceId {
            user: user.into(),
            device: device.into(),
        }
    }
}

/// Timing rules for calls.
#[derive(Debug, Clone, Copy)]
pub struct CallConfig {
    /// An unanswered invite becomes a missed call after this long (default 90 s).
    pub invite_lifetime_ms: Millis,
    /// An answered call must report `connected` within this long.
    pub connect_timeout_ms: Millis,
    /// Ended calls are remembered this long, to answer `call_ended` instead of
    /// `not_in_call`.
    pub tombstone_ms: Millis,
    /// Caller ICE candidates kept while ringing, for devices that come online late.
    pub max_early_ice: usize,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            invite_lifetime_ms: 90_000,
            connect_timeout_ms: 30_000,
            tombstone_ms: 600_000,
            max_early_ice: 64,
        }
    }
}

/// What happens to the switchboard.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A local device sent a call message; `re` is its message id.
    Request {
        device: DeviceId,
        re: Option<String>,
        request: Request,
    },
    /// An event arrived from the bus.
    Event(Event),
    /// The answer to an [`Output::Claim`], echoing it.
    Claimed {
        call_id: String,
        outcome: Outcome,
        parties: Parties,
        won: bool,
    },
    /// A device connected to this node (after its user's channel is subscribed).
    DeviceUp(DeviceId),
    /// A device is gone for good (its resume grace period passed, or it was replaced).
    DeviceDown(DeviceId),
    /// A user came online somewhere: re-send the invites this node owns for them.
    UserOnline(String),
    /// Time passed; due timers fire.
    Tick,
}

/// What the node must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Queue `body` for a local device; `origin` is when its event happened (for `age_ms`).
    Send {
        to: DeviceId,
        body: ServerBody,
        origin: Millis,
    },
    /// Publish `event` on the channel of each of `users`.
    Publish { users: Vec<String>, event: Event },
    /// Try to claim the end of ringing for `call_id`; answer with [`Input::Claimed`].
    Claim {
        call_id: String,
        outcome: Outcome,
        parties: Parties,
        ttl_ms: Millis,
    },
    /// A local device placed a call: if the callee has no device online, push to them.
    Invited {
        call_id: String,
        caller: DeviceId,
        callee: String,
    },
    /// Store a missed call for `user`, delivered at their next `hello`.
    Missed { user: String, call: MissedCall },
}

#[derive(Debug, Clone)]
struct Call {
    caller: DeviceId,
    callee: String,
    sdp: String,
    created: Millis,
    expires_at: Millis,
    state: State,
    /// Caller candidates sent while ringing, replayed to devices that come online late.
    early_ice: Vec<IceItem>,
    /// This node already tried to claim the timeout; don't try every tick.
    timeout_claimed: bool,
    /// The relay each party last reported (`relay_used`): caller's, then answerer's.
    relays: [Option<String>; 2],
}

#[derive(Debug, Clone)]
enum State {
    /// Ringing these local callee devices (other nodes ring theirs).
    Ringing { rung: BTreeSet<String> },
    /// Answered by `device`; `connect_deadline` until someone reports `connected`.
    Accepted {
        device: DeviceId,
        connect_deadline: Option<Millis>,
    },
}

#[derive(Debug, Clone)]
struct Tombstone {
    users: [String; 2],
    forget_at: Millis,
}

/// Where a device stands in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Caller,
    /// A callee device being rung.
    Rung,
    /// The callee device that answered.
    Answerer,
    /// Not a party (or a callee device that was not rung / lost the answer).
    None,
}

/// Ids of events already applied, so a node subscribed to both parties' channels applies
/// each event once. Bounded: old ids fall out (by then their calls have moved on).
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<String>,
    set: HashSet<String>,
}

const RECENT_IDS: usize = 8192;

impl RecentIds {
    /// false if `id` was seen.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= RECENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(id.to_string());
        self.set.insert(id.to_string());
        true
    }
}

/// The pure call state machine of one node.
#[derive(Debug)]
pub struct Switchboard {
    cfg: CallConfig,
    /// Prefix of event ids minted here; unique per node (random in production).
    node: String,
    next_event: u64,
    /// Devices connected to this node, by user.
    local: BTreeMap<String, BTreeSet<String>>,
    calls: BTreeMap<String, Call>,
    ended: BTreeMap<String, Tombstone>,
    seen: RecentIds,
}

/// Ringing views are dropped this long after expiry if the claim winner's event never
/// came (its node died).
const STALE_RINGING_MS: Millis = 60_000;

impl Switchboard {
    pub fn new(cfg: CallConfig, node: impl Into<String>) -> Switchboard {
        Switchboard {
            cfg,
            node: node.into(),
            next_event: 0,
            local: BTreeMap::new(),
            calls: BTreeMap::new(),
            ended: BTreeMap::new(),
            seen: RecentIds::default(),
        }
    }

    /// Users with at least one device on this node.
    pub fn is_local_user(&self, user: &str) -> bool {
        self.local.get(user).is_some_and(|d| !d.is_empty())
    }

    fn is_local(&self, d: &DeviceId) -> bool {
        self.local
            .get(&d.user)
            .is_some_and(|s| s.contains(&d.device))
    }

    /// The local parties of answered calls that run through a relay `on_relay` accepts
    /// (by what either party reported in `relay_used`): (call id, device, whether it is
    /// the caller). A drain of that relay moves these calls.
    pub fn parties_on_relay(
        &self,
        on_relay: impl Fn(&str) -> bool,
    ) -> Vec<(String, DeviceId, bool)> {
        let mut found = Vec::new();
        for (call_id, call) in &self.calls {
            let State::Accepted { device, .. } = &call.state else {
                continue;
            };
            if !call.relays.iter().flatten().any(|r| on_relay(r)) {
                continue;
            }
            if self.is_local(&call.caller) {
                found.push((call_id.clone(), call.caller.clone(), true));
            }
            if self.is_local(device) {
                found.push((call_id.clone(), device.clone(), false));
            }
        }
        found
    }

    /// Calls this node currently holds a view of (for tests and metrics).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// The earliest time [`Input::Tick`] has work to do.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let calls = self.calls.values().filter_map(|c| match &c.state {
            State::Ringing { .. } if c.timeout_claimed => Some(c.expires_at + STALE_RINGING_MS),
            State::Ringing { .. } => Some(c.expires_at),
            State::Accepted {
                connect_deadline, ..
            } => *connect_deadline,
        });
        let tombs = self.ended.values().map(|t| t.forget_at);
        calls.chain(tombs).min()
    }

    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Request {
                device,
                re,
                request,
            } => self.request(now, device, re, request, &mut out),
            Input::Event(event) => {
                if self.seen.insert(&event.id) {
                    self.apply(now, event, &mut out);
                }
            }
            Input::Claimed {
                call_id,
                outcome,
                parties,
                won,
            } => {
                // A lost claim needs nothing: the winner's event is on its way.
                if won {
                    self.claimed(now, call_id, outcome, parties, &mut out);
                }
            }
            Input::DeviceUp(d) => self.device_up(now, d, &mut out),
            Input::DeviceDown(d) => self.device_down(now, d, &mut out),
            Input::UserOnline(user) => self.user_online(now, &user, &mut out),
            Input::Tick => self.tick(now, &mut out),
        }
        out
    }

    fn event(&mut self, now: Millis, call_id: &str, kind: EventKind) -> Event {
        self.next_event += 1;
        Event {
            id: format!("{}:{}", self.node, self.next_event),
            call_id: call_id.to_string(),
            at: now,
            kind,
        }
    }

    fn role(&self, call: &Call, d: &DeviceId) -> Role {
        if &call.caller == d {
            return Role::Caller;
        }
        if d.user != call.callee {
            return Role::None;
        }
        match &call.state {
            State::Ringing { rung } if rung.contains(&d.device) => Role::Rung,
            State::Accepted { device, .. } if device == d => Role::Answerer,
            _ => Role::None,
        }
    }

    fn parties(call: &Call) -> Parties {
        Parties {
            caller: call.caller.clone(),
            callee: call.callee.clone(),
            created: call.created,
        }
    }

    fn claim(&self, call_id: &str, call: &Call, outcome: Outcome, out: &mut Vec<Output>) {
        out.push(Output::Claim {
            call_id: call_id.to_string(),
            outcome,
            parties: Self::parties(call),
            // Outlives every competing claim, which can only come while ringing.
            ttl_ms: 2 * self.cfg.invite_lifetime_ms + STALE_RINGING_MS,
        });
    }

    /// A claim this node won: publish the outcome for everyone.
    fn claimed(
        &mut self,
        now: Millis,
        call_id: String,
        outcome: Outcome,
        p: Parties,
        out: &mut Vec<Output>,
    ) {
        let users = vec![p.caller.user.clone(), p.callee.clone()];
        let kind = match outcome {
            Outcome::Accept { device, sdp } => EventKind::Accepted { device, sdp },
            Outcome::End { reason, by, detail } => {
                if reason == EndReason::Timeout {
                    out.push(Output::Missed {
                        user: p.callee.clone(),
                        call: MissedCall {
                            call_id: call_id.clone(),
                            from: p.caller.user.clone(),
                            at: p.created,
                        },
                    });
                }
                EventKind::Ended { reason, by, detail }
            }
        };
        let event = self.event(now, &call_id, kind);
        out.push(Output::Publish { users, event });
    }

    fn send(to: &DeviceId, body: ServerBody, origin: Millis, out: &mut Vec<Output>) {
        out.push(Output::Send {
            to: to.clone(),
            body,
            origin,
        });
    }

    fn error(
        to: &DeviceId,
        code: ErrorCode,
        reason: impl Into<String>,
        re: Option<String>,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        Self::send(to, ServerBody::error(code, reason, re), now, out);
    }

    /// Ring local callee devices of `call_id` that are not ringing yet.
    fn ring_local(&mut self, now: Millis, call_id: &str, out: &mut Vec<Output>) {
        let Some(callee) = self.calls.get(call_id).map(|c| c.callee.clone()) else {
            return;
        };
        let Some(devices) = self.local.get(&callee) else {
            return;
        };
        let devices: Vec<String> = devices.iter().cloned().collect();
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let State::Ringing { rung } = &mut call.state else {
            return;
        };
        for device in devices {
            if !rung.insert(device.clone()) {
                continue;
            }
            let to = DeviceId::new(call.callee.clone(), device);
            let body = ServerBody::Invite {
                call_id: call_id.to_string(),
                from: call.caller.user.clone(),
                from_device: call.caller.device.clone(),
                sdp: call.sdp.clone(),
                age_ms: 0,
                expires_in_ms: call.expires_at.saturating_sub(now),
            };
            Self::send(&to, body, call.created, out);
            for item in &call.early_ice {
                Self::send(&to, item.to_body(call_id, &call.caller.user), item.at, out);
            }
        }
    }

    fn device_up(&mut self, now: Millis, d: DeviceId, out: &mut Vec<Output>) {
        self.local
            .entry(d.user.clone())
            .or_default()
            .insert(d.device.clone());
        let ringing: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.callee == d.user && matches!(c.state, State::Ringing { .. }))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ringing {
            self.ring_local(now, &id, out);
        }
    }

    fn device_down(&mut self, now: Millis, d: DeviceId, out: &mut Vec<Output>) {
        if let Some(set) = self.local.get_mut(&d.user) {
            set.remove(&d.device);
            if set.is_empty() {
                self.local.remove(&d.user);
            }
        }
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            let Some(call) = self.calls.get(&id) else {
                continue;
            };
            let end = EventKind::Ended {
                reason: EndReason::Disconnected,
                by: Some(d.clone()),
                detail: None,
            };
            match (self.role(call, &d), &call.state) {
                (Role::Caller, State::Ringing { .. }) => {
                    let outcome = Outcome::End {
                        reason: EndReason::Disconnected,
                        by: Some(d.clone()),
                        detail: None,
                    };
                    self.claim(&id, call, outcome, out);
                }
                (Role::Caller | Role::Answerer, State::Accepted { .. }) => {
                    let users = vec![call.caller.user.clone(), call.callee.clone()];
                    let event = self.event(now, &id, end);
                    out.push(Output::Publish { users, event });
                }
                (Role::Rung, _) => {
                    if let Some(Call {
                        state: State::Ringing { rung },
                        ..
                    }) = self.calls.get_mut(&id)
                    {
                        rung.remove(&d.device);
                    }
                }
                _ => {}
            }
        }
    }

    /// The callee came online (maybe on a node that has no view of our invite yet):
    /// publish the invite again for the invites whose caller is here.
    fn user_online(&mut self, now: Millis, user: &str, out: &mut Vec<Output>) {
        let owned: Vec<(String, Call)> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                c.callee == user
                    && matches!(c.state, State::Ringing { .. })
                    && self.is_local(&c.caller)
            })
            .map(|(id, c)| (id.clone(), c.clone()))
            .collect();
        for (id, call) in owned {
            let kind = EventKind::Invite {
                caller: call.caller.clone(),
                callee: call.callee.clone(),
                sdp: call.sdp.clone(),
                created: call.created,
                expires_at: call.expires_at,
                early_ice: call.early_ice.clone(),
            };
            let event = self.event(now, &id, kind);
            out.push(Output::Publish {
                users: vec![call.callee.clone()],
                event,
            });
        }
    }

    fn tick(&mut self, now: Millis, out: &mut Vec<Output>) {
        self.ended.retain(|_, t| t.forget_at > now);
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            let Some(call) = self.calls.get(&id) else {
                continue;
            };
            match &call.state {
                State::Ringing { .. }
                    if call.timeout_claimed && now >= call.expires_at + STALE_RINGING_MS =>
                {
                    self.calls.remove(&id);
                }
                State::Ringing { .. } if !call.timeout_claimed && now >= call.expires_at => {
                    let outcome = Outcome::End {
                        reason: EndReason::Timeout,
                        by: None,
                        detail: None,
                    };
                    self.claim(&id, call, outcome, out);
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.timeout_claimed = true;
                    }
                }
                State::Accepted {
                    connect_deadline: Some(t),
                    ..
                } if now >= *t => {
                    let users = vec![call.caller.user.clone(), call.callee.clone()];
                    let kind = EventKind::Ended {
                        reason: EndReason::ConnectTimeout,
                        by: None,
                        detail: None,
                    };
                    if let Some(Call {
                        state:
                            State::Accepted {
                                connect_deadline, ..
                            },
                        ..
                    }) = self.calls.get_mut(&id)
                    {
                        *connect_deadline = None;
                    }
                    let event = self.event(now, &id, kind);
                    out.push(Output::Publish { users, event });
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
