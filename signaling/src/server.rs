//! HTTP and WebSocket: `GET /v1/signal` (one WebSocket per device),
//! `GET /v1/turn-credentials`, `POST /v1/dev/login`, and the browser demo at `/`
//! (`web`). Each connection is a task that authenticates the `hello`, enforces frame and
//! rate limits, and passes messages to the node task; the node writes back through the
//! connection's channel.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::SignalingConfig;
use crate::credentials::Credentials;
use crate::node::{now_ms, random_token, Cmd, ConnOut, Hello};
use crate::protocol::{
    close, parse_client, valid_name, ClientBody, ErrorCode, ServerBody, ServerMessage, VERSION,
};
use crate::token::{Claims, TokenError, TokenKey};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub(crate) cmds: mpsc::Sender<Cmd>,
    pub(crate) config: Arc<SignalingConfig>,
    /// Replaced by [`crate::Signaling::reconfigure`]; read once per request or `hello`.
    pub(crate) key: Arc<std::sync::RwLock<TokenKey>>,
    pub(crate) creds: Credentials,
    pub(crate) next_conn: Arc<AtomicU64>,
}

impl AppState {
    /// The token key in force now.
    pub(crate) fn token_key(&self) -> TokenKey {
        // Writers replace the whole key, so a poisoned lock still holds a whole one.
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Messages a connection may send before `hello` that are refused, before it is closed.
const MAX_BAD_BEFORE_HELLO: u32 = 20;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/signal", get(upgrade))
        .route("/v1/turn-credentials", get(turn_credentials))
        .route("/v1/dev/login", post(dev_login))
        .merge(crate::web::routes())
        .with_state(state)
}

fn http_error(status: StatusCode, code: ErrorCode, reason: &str) -> Response {
    (status, Json(ServerBody::error(code, reason, None))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_string())
}

fn token_error(e: &TokenError) -> (ErrorCode, String) {
    match e {
        TokenError::Expired => (ErrorCode::TokenExpired, e.to_string()),
        _ => (ErrorCode::Unauthorized, e.to_string()),
    }
}

#[derive(Deserialize)]
struct RegionQuery {
    region: Option<String>,
}

async fn turn_credentials(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RegionQuery>,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return http_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing Authorization: Bearer token",
        );
    };
    let claims = match state.token_key().verify(&token, now_ms() / 1000) {
        Ok(c) => c,
        Err(e) => {
            let (code, reason) = token_error(&e);
            return http_error(StatusCode::UNAUTHORIZED, code, &reason);
        }
    };
    match state
        .creds
        .rest(&claims.sub, q.region.as_deref(), now_ms() / 1000)
    {
        Some(cred) => Json(cred).into_response(),
        None => http_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NoTurnSecret,
            "no TURN shared secret configured",
        ),
    }
}

#[derive(Deserialize)]
struct LoginRequest {
    user: String,
    #[serde(default)]
    device: Option<String>,
}

async fn dev_login(
    State(state): State<AppState>,
    body: Result<Json<LoginRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !state.config.dev_login {
        return http_error(
            StatusCode::NOT_FOUND,
            ErrorCode::DevLoginDisabled,
            "dev login is turned off on this server",
        );
    }
    let Ok(Json(req)) = body else {
        return http_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadMessage,
            "expected JSON {\"user\": ..., \"device\": ...}",
        );
    };
    let device = req
        .device
        // random_token() is 32 ASCII hex digits, so the first 8 bytes are a char boundary.
        .unwrap_or_else(|| format!("dev-{}", random_token().get(..8).unwrap_or("x")));
    if !valid_name(&req.user) || !valid_name(&device) {
        return http_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadMessage,
            "user and device: 1-64 characters of A-Z a-z 0-9 . _ @ + -",
        );
    }
    let exp = now_ms() / 1000 + state.config.dev_token_ttl.as_secs();
    let claims = Claims {
        sub: req.user.clone(),
        dev: device.clone(),
        exp,
    };
    let token = state.token_key().sign(&claims);
    Json(serde_json::json!({"token": token, "user": req.user, "device": device, "expires_at": exp}))
        .into_response()
}

async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let header_token = bearer(&headers);
    let max = state.config.max_frame_bytes;
    // Memory per connection. tungstenite's defaults are sized for bulk transfer: a
    // 128 KiB read buffer allocated and zeroed up front for every connection, and
    // 128 KiB of writes gathered before they go out — together about 140 KB of RSS per
    // idle signed-in session. Signaling sessions are mostly idle and their messages are
    // small JSON (a few KiB with an SDP), so the buffers are sized for that:
    // - Read buffer: READ_BUFFER_BYTES (or max_frame_bytes if smaller). A larger frame
    //   is still read whole, up to max_frame_bytes: tungstenite reserves room for the
    //   length its header declares, and that room is freed with the frame.
    // - Write buffer 0: each message goes to the socket as it is sent (every send here
    //   flushes anyway), so nothing is kept between messages.
    // - At most 2 × max_frame_bytes (+ frame headers) may wait for a peer that stops
    //   reading: one outgoing message (a relayed client message is ≤ max_frame_bytes
    //   plus our envelope) and the unwritten rest of the one before. Past that the send
    //   fails and the connection ends instead of growing without bound.
    ws.read_buffer_size(READ_BUFFER_BYTES.min(max))
        .write_buffer_size(0)
        .max_write_buffer_size(max.saturating_mul(2).saturating_add(WRITE_SLACK_BYTES))
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection(state, socket, header_token))
}

/// Read buffer per WebSocket connection: a typical signaling message fits in one read.
const READ_BUFFER_BYTES: usize = 4096;
/// Room for frame headers and a close or pong queued beside two full messages.
const WRITE_SLACK_BYTES: usize = 1024;

fn encode(body: ServerBody) -> Message {
    let msg = ServerMessage {
        v: VERSION,
        seq: 0,
        body,
    };
    // Our own enums of strings and numbers always serialize.
    Message::Text(
        serde_json::to_string(&msg)
            .expect("server messages serialize")
            .into(),
    )
}

fn close_msg(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_string().into(),
    }))
}

/// A read error: a too-large message gets 1009 (RFC 6455 §7.4.1), anything else ends.
fn read_error_close(e: &axum::Error) -> Message {
    let text = e.to_string();
    if text.contains("too long") || text.contains("Space limit") || text.contains("too big") {
        close_msg(close::TOO_BIG, "message too big")
    } else {
        close_msg(1002, "protocol error")
    }
}

async fn connection(state: AppState, socket: WebSocket, header_token: Option<String>) {
    let (mut sink, mut stream) = socket.split();
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<ConnOut>(state.config.max_queued + 64);
    let deadline = tokio::time::Instant::now() + state.config.hello_timeout;
    let mut bad = 0u32;
    // Phase 1: nothing but `hello` until it is accepted.
    let (session, expires) = loop {
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                let _ = sink
                    .send(close_msg(close::HELLO_TIMEOUT, "no hello in time"))
                    .await;
                return;
            }
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Err(e))) => {
                let _ = sink.send(read_error_close(&e)).await;
                return;
            }
            Ok(Some(Ok(m))) => m,
        };
        let text = match next {
            Message::Text(t) => t,
            Message::Binary(_) => {
                let _ = sink
                    .send(encode(ServerBody::error(
                        ErrorCode::BadMessage,
                        "text frames only",
                        None,
                    )))
                    .await;
                continue;
            }
            _ => continue,
        };
        let refuse = match parse_client(&text) {
            Err(e) => ServerBody::error(e.code, e.reason, e.re),
            Ok(m) => match m.body {
                ClientBody::Hello {
                    token,
                    resume_token,
                    last_seq,
                    region,
                    watch,
                } => {
                    let Some(token) = token.or_else(|| header_token.clone()) else {
                        let _ = sink
                            .send(encode(ServerBody::error(
                                ErrorCode::Unauthorized,
                                "hello needs a token",
                                m.id,
                            )))
                            .await;
                        let _ = sink
                            .send(close_msg(close::UNAUTHORIZED, "unauthorized"))
                            .await;
                        return;
                    };
                    let claims = match state.token_key().verify(&token, now_ms() / 1000) {
                        Ok(c) => c,
                        Err(e) => {
                            let (code, reason) = token_error(&e);
                            let _ = sink
                                .send(encode(ServerBody::error(code, reason, m.id)))
                                .await;
                            let _ = sink
                                .send(close_msg(close::UNAUTHORIZED, "unauthorized"))
                                .await;
                            return;
                        }
                    };
                    let expires = claims.exp;
                    let (reply_tx, reply_rx) = oneshot::channel();
                    let hello = Hello {
                        conn,
                        tx: tx.clone(),
                        claims,
                        resume_token,
                        last_seq,
                        region,
                        watch,
                    };
                    if state
                        .cmds
                        .send(Cmd::Hello(Box::new(hello), reply_tx))
                        .await
                        .is_err()
                    {
                        let _ = sink
                            .send(close_msg(close::GOING_AWAY, close::GOING_AWAY_REASON))
                            .await;
                        return;
                    }
                    match reply_rx.await {
                        Ok(Some(session)) => break (session, expires),
                        _ => {
                            drain(&mut sink, &mut rx).await;
                            return;
                        }
                    }
                }
                _ => ServerBody::error(ErrorCode::HelloRequired, "send hello first", m.id),
            },
        };
        bad += 1;
        let _ = sink.send(encode(refuse)).await;
        if bad >= MAX_BAD_BEFORE_HELLO {
            let _ = sink
                .send(close_msg(close::POLICY, "too many bad messages"))
                .await;
            return;
        }
    };
    let conn_ref = Conn {
        id: conn,
        session,
        expires,
    };
    run_session(&state, conn_ref, &mut sink, &mut stream, &mut rx).await;
    let _ = state.cmds.send(Cmd::Closed { session, conn }).await;
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;
type Stream = futures_util::stream::SplitStream<WebSocket>;

/// Write whatever the node queued (e.g. an error and a close) before giving up.
async fn drain(sink: &mut Sink, rx: &mut mpsc::Receiver<ConnOut>) {
    while let Ok(out) = rx.try_recv() {
        let msg = match out {
            ConnOut::Text(t) => Message::Text(t.into()),
            ConnOut::Close(code, why) => close_msg(code, &why),
        };
        if sink.send(msg).await.is_err() {
            return;
        }
    }
}

/// Invites in the last minute, and refusals: past the limit an invite is refused with
/// `rate_limited`; as many refusals again within the minute close the connection.
struct InviteLimit {
    per_minute: usize,
    sent: VecDeque<Instant>,
    refused: VecDeque<Instant>,
}

impl InviteLimit {
    /// Ok(true) allow, Ok(false) refuse, Err(()) close.
    fn check(&mut self, now: Instant) -> Result<bool, ()> {
        let minute = Duration::from_secs(60);
        for q in [&mut self.sent, &mut self.refused] {
            while q.front().is_some_and(|t| now.duration_since(*t) >= minute) {
                q.pop_front();
            }
        }
        if self.sent.len() < self.per_minute {
            self.sent.push_back(now);
            return Ok(true);
        }
        self.refused.push_back(now);
        if self.refused.len() >= self.per_minute {
            return Err(());
        }
        Ok(false)
    }
}

/// A signed-in connection: its number, its session, and when its token expires (unix
/// seconds, the token's `exp`).
struct Conn {
    id: u64,
    session: u64,
    expires: u64,
}

async fn run_session(
    state: &AppState,
    conn: Conn,
    sink: &mut Sink,
    stream: &mut Stream,
    rx: &mut mpsc::Receiver<ConnOut>,
) {
    let Conn {
        id: conn,
        session,
        expires,
    } = conn;
    // The token signed the connection in and vouches for it only until `exp`: then the
    // connection is closed with `token_expired` and 4001, and the client signs in again
    // with a fresh token (resuming its session, which outlives the connection).
    let token_left = Duration::from_millis(expires.saturating_mul(1000).saturating_sub(now_ms()));
    let token_expiry = tokio::time::sleep(token_left);
    tokio::pin!(token_expiry);
    let idle = state.config.idle_timeout;
    let mut ping = tokio::time::interval((idle / 3).max(Duration::from_millis(100)));
    let mut last_rx = Instant::now();
    let mut limit = InviteLimit {
        per_minute: usize::try_from(state.config.invites_per_minute)
            .unwrap_or(usize::MAX)
            .max(1),
        sent: VecDeque::new(),
        refused: VecDeque::new(),
    };
    let to_node = |body| Cmd::Error {
        session,
        conn,
        body,
    };
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(ConnOut::Text(t)) => {
                    if sink.send(Message::Text(t.into())).await.is_err() {
                        return;
                    }
                }
                Some(ConnOut::Close(code, why)) => {
                    let _ = sink.send(close_msg(code, &why)).await;
                    return;
                }
                None => return,
            },
            msg = stream.next() => {
                last_rx = Instant::now();
                let text = match msg {
                    None | Some(Ok(Message::Close(_))) => return,
                    Some(Err(e)) => {
                        let _ = sink.send(read_error_close(&e)).await;
                        return;
                    }
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        let _ = state.cmds.send(to_node(ServerBody::error(ErrorCode::BadMessage, "text frames only", None))).await;
                        continue;
                    }
                    Some(Ok(_)) => continue, // pings are answered by the WebSocket layer
                };
                let cmd = match parse_client(&text) {
                    Err(e) => to_node(ServerBody::error(e.code, e.reason, e.re)),
                    Ok(m) => {
                        if matches!(m.body, ClientBody::Invite { .. }) {
                            match limit.check(Instant::now()) {
                                Ok(true) => Cmd::Client { session, conn, msg: m },
                                Ok(false) => to_node(ServerBody::error(ErrorCode::RateLimited, "too many invites; slow down", m.id)),
                                Err(()) => {
                                    let _ = sink.send(close_msg(close::POLICY, "invite flood")).await;
                                    return;
                                }
                            }
                        } else {
                            Cmd::Client { session, conn, msg: m }
                        }
                    }
                };
                if state.cmds.send(cmd).await.is_err() {
                    return;
                }
            },
            () = &mut token_expiry => {
                let expired = ServerBody::error(ErrorCode::TokenExpired, "token expired", None);
                let _ = sink.send(encode(expired)).await;
                let _ = sink.send(close_msg(close::UNAUTHORIZED, "token expired")).await;
                return;
            }
            _ = ping.tick() => {
                if last_rx.elapsed() > idle {
                    return; // the session stays resumable for the grace period
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}
