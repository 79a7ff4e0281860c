//! One signaling node: a single task that owns the call [`Switchboard`], the sessions of
//! the devices connected here, presence watch lists and the bus. Connection tasks talk to
//! it through [`Cmd`]s; it writes to connections through their channels. Everything that
//! changes session or call state happens here, one command at a time.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

mod fleet;
mod session;

use session::Session;

use crate::bus::{Bus, Incoming};
use crate::call::{DeviceId, EventKind, Input, Millis, Output, Request, Switchboard};
use crate::config::SignalingConfig;
use crate::credentials::Credentials;
use crate::fleet::FleetNews;
use crate::metrics::NodeMetrics;
use crate::presence::{Change, Watchers};
use crate::protocol::{close, valid_name, ClientBody, ClientMessage, ErrorCode, ServerBody};
use crate::push::{IncomingCall, Pusher};
use crate::token::Claims;

/// What a connection task's writer receives.
#[derive(Debug)]
pub(crate) enum ConnOut {
    Text(String),
    Close(u16, String),
}

pub(crate) type ConnTx = mpsc::Sender<ConnOut>;

/// A `hello` that passed token verification.
pub(crate) struct Hello {
    pub conn: u64,
    pub tx: ConnTx,
    pub claims: Claims,
    pub resume_token: Option<String>,
    pub last_seq: Option<u64>,
    pub region: Option<String>,
    pub watch: Vec<String>,
}

pub(crate) enum Cmd {
    /// Reply: the session id, or `None` (the connection was told why and closed).
    Hello(Box<Hello>, oneshot::Sender<Option<u64>>),
    Client {
        session: u64,
        conn: u64,
        msg: ClientMessage,
    },
    /// Queue an error found by the connection task (bad frame, rate limit).
    Error {
        session: u64,
        conn: u64,
        body: ServerBody,
    },
    Closed {
        session: u64,
        conn: u64,
    },
    Shutdown(oneshot::Sender<()>),
}

/// A presence key lives this long unless refreshed; refreshed every third of it.
const PRESENCE_TTL: Duration = Duration::from_secs(30);
/// Missed calls wait this long for their user.
const MISSED_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Client message ids remembered per session for de-duplication.
const RECENT_CLIENT_IDS: usize = 256;

pub(crate) fn now_ms() -> Millis {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) struct Node<B: Bus> {
    bus: B,
    machine: Switchboard,
    config: Arc<SignalingConfig>,
    creds: Credentials,
    pusher: Option<Pusher>,
    next_session: u64,
    sessions: HashMap<u64, Session>,
    by_device: HashMap<DeviceId, u64>,
    by_token: HashMap<String, u64>,
    watchers: Watchers,
    last_refresh: Instant,
    metrics: NodeMetrics,
    /// When each local party of a call last got a `call_quality` (see `node::fleet`).
    quality_sent: HashMap<(String, DeviceId), Millis>,
}

impl<B: Bus> Node<B> {
    pub(crate) fn new(
        bus: B,
        machine: Switchboard,
        config: Arc<SignalingConfig>,
        creds: Credentials,
    ) -> Self {
        let pusher = config.push_webhook.clone().map(Pusher::new);
        Node {
            bus,
            machine,
            config,
            creds,
            pusher,
            next_session: 0,
            sessions: HashMap::new(),
            by_device: HashMap::new(),
            by_token: HashMap::new(),
            watchers: Watchers::default(),
            last_refresh: Instant::now(),
            metrics: NodeMetrics::new(),
            quality_sent: HashMap::new(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut incoming: mpsc::UnboundedReceiver<Incoming>,
        mut fleet: mpsc::Receiver<FleetNews>,
    ) {
        let mut housekeeping = tokio::time::interval(Duration::from_millis(500));
        loop {
            let wait = self
                .machine
                .poll_timeout()
                .map_or(Duration::from_secs(3600), |t| {
                    Duration::from_millis(t.saturating_sub(now_ms()))
                });
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Shutdown(done)) => {
                        self.shutdown();
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.command(cmd).await,
                    None => return,
                },
                Some(msg) = incoming.recv() => self.incoming(msg).await,
                Some(news) = fleet.recv() => match news {
                    FleetNews::Drained(relay) => self.relay_draining(&relay),
                    FleetNews::Quality(relay) => self.relay_quality(&relay),
                },
                _ = housekeeping.tick() => self.housekeeping().await,
                _ = tokio::time::sleep(wait) => self.feed(Input::Tick).await,
            }
        }
    }

    fn shutdown(&mut self) {
        for s in self.sessions.values() {
            if let Some((_, tx)) = &s.conn {
                let _ = tx.try_send(ConnOut::Close(
                    close::GOING_AWAY,
                    close::GOING_AWAY_REASON.into(),
                ));
            }
        }
    }

    async fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Hello(hello, reply) => self.hello(*hello, reply).await,
            Cmd::Client { session, conn, msg } => self.client(session, conn, msg).await,
            Cmd::Error {
                session,
                conn,
                body,
            } => {
                if self.attached(session, conn) {
                    self.deliver_session(session, body, now_ms());
                }
            }
            Cmd::Closed { session, conn } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    if s.conn.as_ref().is_some_and(|(c, _)| *c == conn) {
                        s.conn = None;
                        s.detached_at = Some(Instant::now());
                    }
                }
            }
            Cmd::Shutdown(_) => {}
        }
    }

    fn attached(&self, session: u64, conn: u64) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.conn.as_ref().is_some_and(|(c, _)| *c == conn))
    }

    fn deliver_session(&mut self, session: u64, body: ServerBody, origin: Millis) {
        let cap = self.config.max_queued;
        if let Some(s) = self.sessions.get_mut(&session) {
            s.push(body, origin, now_ms(), cap);
        }
    }

    fn deliver(&mut self, to: &DeviceId, body: ServerBody, origin: Millis) {
        if let Some(&sid) = self.by_device.get(to) {
            self.deliver_session(sid, body, origin);
        }
    }

    fn unsequenced(&mut self, session: u64, body: &ServerBody) {
        if let Some(s) = self.sessions.get_mut(&session) {
            let text = Session::encode(0, body);
            s.write(text);
        }
    }

    fn hello_ok(&mut self, session: u64, resumed: bool) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let now_unix = now_ms() / 1000;
        let body = ServerBody::HelloOk {
            session: format!("{session}"),
            resume_token: s.resume_token.clone(),
            resumed,
            user: s.device.user.clone(),
            device: s.device.device.clone(),
            last_client_seq: s.last_client_seq,
            ice_servers: self
                .creds
                .ice_servers(&s.device.user, s.region.as_deref(), now_unix),
            ice_ttl: self.creds.ttl_secs(),
            idle_timeout_secs: self.config.idle_timeout.as_secs(),
        };
        self.unsequenced(session, &body);
    }

    async fn hello(&mut self, h: Hello, reply: oneshot::Sender<Option<u64>>) {
        let device = DeviceId::new(h.claims.sub.clone(), h.claims.dev.clone());
        let resumable = h
            .resume_token
            .as_ref()
            .and_then(|t| self.by_token.get(t).copied())
            .filter(|sid| self.sessions.get(sid).is_some_and(|s| s.device == device));
        if let Some(sid) = resumable {
            let now = now_ms();
            if let Some(s) = self.sessions.get_mut(&sid) {
                if let Some((_, old)) = s.conn.take() {
                    let _ =
                        old.try_send(ConnOut::Close(close::REPLACED, "resumed elsewhere".into()));
                }
                s.conn = Some((h.conn, h.tx));
                s.detached_at = None;
                if h.region.is_some() {
                    s.region = h.region;
                }
                let have = h.last_seq.unwrap_or(0);
                while s.queue.front().is_some_and(|q| q.seq <= have) {
                    s.queue.pop_front();
                }
            }
            self.hello_ok(sid, true);
            if let Some(s) = self.sessions.get_mut(&sid) {
                for i in 0..s.queue.len() {
                    s.transmit(i, now);
                }
            }
            let _ = reply.send(Some(sid));
            self.watch(sid, &h.watch).await;
            return;
        }
        if let Some(&old) = self.by_device.get(&device) {
            self.remove_session(old, Some((close::REPLACED, "replaced by a new connection")))
                .await;
        }
        let user = device.user.clone();
        if !self.machine.is_local_user(&user) {
            if let Err(e) = self.bus.subscribe(&user).await {
                tracing::error!("cannot subscribe {user}: {e}");
                let body = ServerBody::error(ErrorCode::Internal, "bus unavailable", None);
                let _ = h.tx.try_send(ConnOut::Text(Session::encode(0, &body)));
                let _ =
                    h.tx.try_send(ConnOut::Close(close::GOING_AWAY, "bus unavailable".into()));
                let _ = reply.send(None);
                return;
            }
        }
        self.next_session += 1;
        let sid = self.next_session;
        let resume_token = random_token();
        self.sessions.insert(
            sid,
            Session {
                device: device.clone(),
                resume_token: resume_token.clone(),
                conn: Some((h.conn, h.tx)),
                next_seq: 0,
                queue: VecDeque::new(),
                last_client_seq: 0,
                recent_ids: VecDeque::new(),
                detached_at: None,
                region: h.region,
            },
        );
        self.metrics.session_opened();
        self.by_device.insert(device.clone(), sid);
        self.by_token.insert(resume_token, sid);
        self.log_bus(
            self.bus
                .set_online(&user, &device.device, PRESENCE_TTL)
                .await,
        );
        self.hello_ok(sid, false);
        let _ = reply.send(Some(sid));
        self.feed(Input::DeviceUp(device)).await;
        match self.bus.take_missed(&user).await {
            Ok(list) => {
                for json in list {
                    if let Ok(m) = serde_json::from_str::<crate::call::MissedCall>(&json) {
                        let body = ServerBody::MissedCall {
                            call_id: m.call_id,
                            from: m.from,
                            at: m.at,
                        };
                        self.deliver_session(sid, body, m.at);
                    }
                }
            }
            Err(e) => tracing::warn!("missed calls of {user}: {e}"),
        }
        // Published on every new device (not only the first) so that nodes holding an
        // invite for this user re-send it to the new device's node.
        self.publish_presence(&user, true, Some(now_ms())).await;
        self.watch(sid, &h.watch).await;
    }

    async fn publish_presence(&self, user: &str, online: bool, last_seen: Option<u64>) {
        let change = Change {
            user: user.to_string(),
            online,
            last_seen,
        };
        // A struct of strings, a bool and a number always serializes.
        let json = serde_json::to_string(&change).expect("presence serializes");
        self.log_bus(self.bus.publish_presence(json).await);
    }

    fn log_bus<T>(&self, r: Result<T, crate::bus::BusError>) {
        if let Err(e) = r {
            tracing::warn!("{e}");
        }
    }

    async fn remove_session(&mut self, sid: u64, close_with: Option<(u16, &str)>) {
        let Some(s) = self.sessions.remove(&sid) else {
            return;
        };
        self.metrics.session_closed();
        self.by_device.remove(&s.device);
        self.by_token.remove(&s.resume_token);
        if let (Some((_, tx)), Some((code, why))) = (&s.conn, close_with) {
            let _ = tx.try_send(ConnOut::Close(code, why.to_string()));
        }
        self.watchers.forget_session(sid);
        self.feed(Input::DeviceDown(s.device.clone())).await;
        let user = &s.device.user;
        let now = now_ms();
        self.log_bus(self.bus.set_offline(user, &s.device.device, now).await);
        if !self.machine.is_local_user(user) {
            self.log_bus(self.bus.unsubscribe(user).await);
        }
        if let Ok(state) = self.bus.presence(user).await {
            if !state.online {
                self.publish_presence(user, false, Some(now)).await;
            }
        }
    }

    async fn watch(&mut self, sid: u64, users: &[String]) {
        let valid: Vec<String> = users.iter().filter(|u| valid_name(u)).cloned().collect();
        if valid.len() != users.len() {
            let body = ServerBody::error(
                ErrorCode::BadMessage,
                "watch: invalid user names ignored",
                None,
            );
            self.deliver_session(sid, body, now_ms());
        }
        for user in self.watchers.watch(sid, &valid) {
            match self.bus.presence(&user).await {
                Ok(state) => {
                    let body = ServerBody::Presence {
                        user,
                        online: state.online,
                        last_seen: state.last_seen,
                    };
                    self.deliver_session(sid, body, now_ms());
                }
                Err(e) => tracing::warn!("presence of {user}: {e}"),
            }
        }
    }

    async fn client(&mut self, sid: u64, conn: u64, msg: ClientMessage) {
        if !self.attached(sid, conn) {
            return;
        }
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if let Some(seq) = msg.seq {
            if seq <= s.last_client_seq {
                return; // a re-send of something already processed
            }
            s.last_client_seq = seq;
        }
        if let Some(id) = &msg.id {
            if s.recent_ids.contains(id) {
                return;
            }
            if s.recent_ids.len() >= RECENT_CLIENT_IDS {
                s.recent_ids.pop_front();
            }
            s.recent_ids.push_back(id.clone());
        }
        let device = s.device.clone();
        let region = s.region.clone();
        let re = msg.id;
        let request = match msg.body {
            ClientBody::Hello { .. } => {
                let body = ServerBody::error(
                    ErrorCode::AlreadyAuthenticated,
                    "hello was already accepted",
                    re,
                );
                return self.deliver_session(sid, body, now_ms());
            }
            ClientBody::Ping => return self.unsequenced(sid, &ServerBody::Pong),
            ClientBody::Ack { last_seq } => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    while s.queue.front().is_some_and(|q| q.seq <= last_seq) {
                        s.queue.pop_front();
                    }
                }
                return;
            }
            ClientBody::Watch { users } => return self.watch(sid, &users).await,
            ClientBody::TurnRefresh { region: hint } => {
                let region = hint.or(region);
                let body = ServerBody::IceServers {
                    ice_servers: self.creds.ice_servers(
                        &device.user,
                        region.as_deref(),
                        now_ms() / 1000,
                    ),
                    ttl: self.creds.ttl_secs(),
                };
                return self.deliver_session(sid, body, now_ms());
            }
            ClientBody::Invite { call_id, to, sdp } => Request::Invite { call_id, to, sdp },
            ClientBody::Ringing { call_id } => Request::Ringing { call_id },
            ClientBody::Accept { call_id, sdp } => Request::Accept { call_id, sdp },
            ClientBody::Reject { call_id } => Request::Reject { call_id },
            ClientBody::Cancel { call_id } => Request::Cancel { call_id },
            ClientBody::Busy { call_id } => Request::Busy { call_id },
            ClientBody::Hangup { call_id, reason } => Request::Hangup { call_id, reason },
            ClientBody::Ice {
                call_id,
                candidate,
                end_of_candidates,
            } => Request::Ice {
                call_id,
                candidate,
                end_of_candidates,
            },
            ClientBody::Renegotiate {
                call_id,
                sdp,
                answer,
            } => Request::Renegotiate {
                call_id,
                sdp,
                answer,
            },
            ClientBody::Connected { call_id } => Request::Connected { call_id },
            ClientBody::RelayUsed { call_id, relay } => Request::RelayUsed { call_id, relay },
        };
        self.feed(Input::Request {
            device,
            re,
            request,
        })
        .await;
    }

    async fn incoming(&mut self, msg: Incoming) {
        match msg {
            Incoming::User { payload, .. } => match serde_json::from_str(&payload) {
                Ok(event) => self.feed(Input::Event(event)).await,
                Err(e) => tracing::warn!("bad event on the bus: {e}"),
            },
            Incoming::Presence(payload) => {
                let Ok(change) = serde_json::from_str::<Change>(&payload) else {
                    tracing::warn!("bad presence notice on the bus");
                    return;
                };
                for sid in self.watchers.watching(&change.user) {
                    let body = ServerBody::Presence {
                        user: change.user.clone(),
                        online: change.online,
                        last_seen: change.last_seen,
                    };
                    self.deliver_session(sid, body, now_ms());
                }
                if change.online {
                    self.feed(Input::UserOnline(change.user)).await;
                }
            }
        }
    }

    async fn housekeeping(&mut self) {
        self.feed(Input::Tick).await;
        let grace = self.config.resume_grace;
        let expired: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.conn.is_none() && s.detached_at.is_some_and(|t| t.elapsed() >= grace)
            })
            .map(|(id, _)| *id)
            .collect();
        for sid in expired {
            self.remove_session(sid, None).await;
        }
        if self.last_refresh.elapsed() >= PRESENCE_TTL / 3 {
            self.last_refresh = Instant::now();
            let devices: Vec<DeviceId> = self.sessions.values().map(|s| s.device.clone()).collect();
            for d in devices {
                self.log_bus(self.bus.set_online(&d.user, &d.device, PRESENCE_TTL).await);
            }
        }
    }

    /// Run `input` through the switchboard and perform its outputs (claims feed back).
    async fn feed(&mut self, input: Input) {
        // A device's invite: if the bus cannot carry it, the call is not made and the
        // device is told `internal` (it retries), rather than ringing only here.
        let inviter = match &input {
            Input::Request {
                device,
                re,
                request: Request::Invite { .. },
            } => Some((device.clone(), re.clone())),
            _ => None,
        };
        let mut invite_failed = false;
        let mut work = VecDeque::from([input]);
        while let Some(input) = work.pop_front() {
            let outputs = self.machine.handle(now_ms(), input);
            for output in outputs {
                match output {
                    Output::Send { to, body, origin } => self.deliver(&to, body, origin),
                    Output::Publish { users, event } => {
                        // A struct of strings and numbers always serializes.
                        let json = serde_json::to_string(&event).expect("events serialize");
                        let mut published = true;
                        for user in users {
                            let sent = self.bus.publish_user(&user, json.clone()).await;
                            published &= sent.is_ok();
                            self.log_bus(sent);
                        }
                        let new_call = matches!(event.kind, EventKind::Invite { .. });
                        if let (false, true, Some((device, re))) = (published, new_call, &inviter) {
                            let body = ServerBody::error(
                                ErrorCode::Internal,
                                "the signaling bus is unavailable; try again",
                                re.clone(),
                            );
                            self.deliver(device, body, now_ms());
                            invite_failed = true;
                            continue;
                        }
                        // Apply our own event, so this device's next message (ICE right
                        // after an invite) finds the call; the copy that comes back from
                        // the bus is dropped as already seen. Events of running calls
                        // are applied even when the bus failed: the parties on this node
                        // keep their signaling.
                        work.push_back(Input::Event(event));
                    }
                    Output::Claim {
                        call_id,
                        outcome,
                        parties,
                        ttl_ms,
                    } => {
                        let value = serde_json::to_string(&outcome).unwrap_or_default();
                        let won = match self
                            .bus
                            .claim(&call_id, &value, Duration::from_millis(ttl_ms))
                            .await
                        {
                            Ok(won) => won,
                            Err(e) => {
                                tracing::warn!("claim of {call_id} failed: {e}");
                                false
                            }
                        };
                        if won {
                            let setup_ms = now_ms().saturating_sub(parties.created);
                            self.metrics.ringing_ended(&outcome, setup_ms);
                        }
                        work.push_back(Input::Claimed {
                            call_id,
                            outcome,
                            parties,
                            won,
                        });
                    }
                    Output::Invited { .. } if invite_failed => {}
                    Output::Invited {
                        call_id,
                        caller,
                        callee,
                    } => self.maybe_push(call_id, caller, callee).await,
                    Output::Missed { user, call } => {
                        // Strings and a number: always serializes.
                        let json = serde_json::to_string(&call).expect("missed calls serialize");
                        self.log_bus(self.bus.store_missed(&user, json, MISSED_TTL).await);
                    }
                }
            }
        }
    }

    async fn maybe_push(&self, call_id: String, caller: DeviceId, callee: String) {
        let Some(pusher) = &self.pusher else {
            return;
        };
        match self.bus.presence(&callee).await {
            Ok(state) if !state.online => pusher.notify(IncomingCall {
                kind: "incoming_call",
                call_id,
                user: callee,
                from: caller.user,
                expires_at: now_ms()
                    + u64::try_from(self.config.invite_lifetime.as_millis()).unwrap_or(u64::MAX),
            }),
            Ok(_) => {}
            Err(e) => tracing::warn!("presence of {callee}: {e}"),
        }
    }
}

/// 128 random bits, hex: resume tokens and node ids.
pub(crate) fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
