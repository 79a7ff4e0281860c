//! One QUIC connection's HTTP/3 side: its control streams, its CONNECT-UDP request
//! streams (one tunnel each), and the HTTP datagrams and capsules that carry TURN.
//!
//! Driven by [`QuicListener`](super::QuicListener) after every input to the QUIC
//! connection: [`QuicConn::handle_events`] drains `quinn-proto`'s application events
//! and turns them into [`TunnelInput`]s for the core.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{
    Connection, ConnectionHandle, Dir, Event, ReadError, Side, StreamEvent, StreamId, VarInt,
};

use super::config::Targets;
use super::listener::TunnelInput;
use crate::proto::h3::connect_udp::{self, PROXY_STATUS_PROHIBITED};
use crate::proto::h3::datagram::{self, CAPSULE_DATAGRAM, CONTEXT_UDP};
use crate::proto::h3::frame::{self, kind, stream_kind, ErrorCode, H3Error, Settings};
use crate::proto::h3::{qpack, varint};
use crate::proto::ClientId;

/// Largest HEADERS (or other non-DATA) frame, and largest field section, accepted: a
/// CONNECT-UDP request is a few hundred bytes.
const MAX_FRAME: usize = 16 * 1024;
/// Largest capsule accepted on a request stream: one UDP payload and its prefix.
const MAX_CAPSULE: usize = 65_535 + 16;
/// Bytes buffered per stream before the connection is closed as abusive.
const MAX_BUFFERED: usize = 128 * 1024;

/// What one connection shares with the listener while it handles events.
pub(super) struct Ctx<'a> {
    pub now: Instant,
    pub handle: ConnectionHandle,
    /// The listener's address: every tunnel's `ClientId::local`.
    pub local: SocketAddr,
    pub targets: &'a Targets,
    /// The listener's tunnel counter (unique per worker).
    pub next_tunnel: &'a mut u64,
    /// Every open tunnel of the listener: which connection and stream it is.
    pub tunnels: &'a mut HashMap<ClientId, (ConnectionHandle, StreamId)>,
    pub inputs: &'a mut VecDeque<TunnelInput>,
}

enum Uni {
    /// The stream type has not arrived yet.
    Untyped(Vec<u8>),
    /// The peer's control stream: SETTINGS first, then control frames.
    Control { buf: Vec<u8>, settings_seen: bool },
    /// A stream whose bytes the relay does not need (QPACK streams: with no dynamic
    /// table they carry nothing of use; unknown types, RFC 9114 §6.2).
    Discard,
}

enum Request {
    /// Waiting for the request's HEADERS frame.
    Headers(Vec<u8>),
    /// An open tunnel: `frames` holds undecoded frame bytes, `capsules` the DATA frames'
    /// payload not yet cut into capsules.
    Tunnel {
        client: ClientId,
        frames: Vec<u8>,
        capsules: Vec<u8>,
    },
    /// Answered with an error status and finished; forgotten once handled.
    Refused,
}

pub(super) struct QuicConn {
    pub(super) conn: Connection,
    control: Option<StreamId>,
    peer_settings: Option<Settings>,
    uni: HashMap<StreamId, Uni>,
    requests: HashMap<StreamId, Request>,
    /// When the handshake began: without an authenticated request in any of its
    /// tunnels by `accepted + limits.unauthenticated_timeout_secs`, it is closed.
    pub(super) accepted: Instant,
    /// A request in one of its tunnels has passed authentication.
    pub(super) authenticated: bool,
}

impl QuicConn {
    pub(super) fn new(conn: Connection, accepted: Instant) -> QuicConn {
        QuicConn {
            conn,
            control: None,
            peer_settings: None,
            uni: HashMap::new(),
            requests: HashMap::new(),
            accepted,
            authenticated: false,
        }
    }

    /// Closes the connection for want of an authenticated request, reporting its
    /// tunnels closed (a local close raises no `ConnectionLost`).
    pub(super) fn close_unauthenticated(&mut self, ctx: &mut Ctx<'_>) {
        // H3_REQUEST_REJECTED (RFC 9114 §8.1): nothing of it was processed.
        self.conn.close(
            ctx.now,
            quinn_proto::VarInt::from_u32(0x010b),
            Bytes::from_static(b"no authenticated request in time"),
        );
        self.close_tunnels(ctx);
    }

    /// The tunnels this connection carries, to report closed when it ends.
    pub(super) fn tunnel_clients(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.requests.values().filter_map(|r| match r {
            Request::Tunnel { client, .. } => Some(*client),
            _ => None,
        })
    }

    /// Drains the connection's application events. `false`: the connection is lost
    /// (its tunnels have been reported closed).
    pub(super) fn handle_events(&mut self, ctx: &mut Ctx<'_>) -> bool {
        while let Some(event) = self.conn.poll() {
            let result = match event {
                Event::Connected => self.open_control(),
                Event::ConnectionLost { reason } => {
                    tracing::debug!(%reason, "QUIC connection lost");
                    self.close_tunnels(ctx);
                    return false;
                }
                Event::Stream(StreamEvent::Opened { dir }) => {
                    while let Some(id) = self.conn.streams().accept(dir) {
                        match dir {
                            Dir::Bi => {
                                self.requests.insert(id, Request::Headers(Vec::new()));
                            }
                            Dir::Uni => {
                                self.uni.insert(id, Uni::Untyped(Vec::new()));
                            }
                        }
                        // Bytes may have arrived with the stream.
                        if let Err(e) = self.read(id, ctx) {
                            self.fail(ctx.now, e);
                        }
                    }
                    Ok(())
                }
                Event::Stream(StreamEvent::Readable { id }) => self.read(id, ctx),
                Event::DatagramReceived => {
                    self.datagrams(ctx);
                    Ok(())
                }
                Event::HandshakeDataReady
                | Event::DatagramsUnblocked
                | Event::Stream(
                    StreamEvent::Writable { .. }
                    | StreamEvent::Finished { .. }
                    | StreamEvent::Stopped { .. }
                    | StreamEvent::Available { .. },
                ) => Ok(()),
            };
            if let Err(e) = result {
                self.fail(ctx.now, e);
            }
        }
        true
    }

    /// Closes the connection with an HTTP/3 error (RFC 9114 §8).
    fn fail(&mut self, now: Instant, e: H3Error) {
        tracing::debug!(
            code = e.code.0,
            reason = e.reason,
            "closing QUIC connection"
        );
        let code = VarInt::from_u64(e.code.0).unwrap_or(VarInt::from_u32(0x101));
        self.conn.close(now, code, Bytes::new());
    }

    /// RFC 9114 §6.2.1: our control stream, SETTINGS first.
    fn open_control(&mut self) -> Result<(), H3Error> {
        let id = self.conn.streams().open(Dir::Uni).ok_or(H3Error::new(
            ErrorCode::STREAM_CREATION_ERROR,
            "no unidirectional stream for control",
        ))?;
        let mut bytes = Vec::new();
        varint::write(stream_kind::CONTROL, &mut bytes);
        frame::write_frame(
            kind::SETTINGS,
            &frame::server_settings(MAX_FRAME as u64),
            &mut bytes,
        );
        self.write_all(id, &bytes)?;
        self.control = Some(id);
        Ok(())
    }

    fn write_all(&mut self, id: StreamId, bytes: &[u8]) -> Result<(), H3Error> {
        // Control frames and responses are far below any stream's initial credit.
        match self.conn.send_stream(id).write(bytes) {
            Ok(n) if n == bytes.len() => Ok(()),
            _ => Err(H3Error::new(
                ErrorCode::INTERNAL_ERROR,
                "stream write blocked",
            )),
        }
    }

    /// Reads what arrived on stream `id` and handles it.
    fn read(&mut self, id: StreamId, ctx: &mut Ctx<'_>) -> Result<(), H3Error> {
        let mut incoming = Vec::new();
        let mut finished = false;
        let mut reset = false;
        {
            let mut stream = self.conn.recv_stream(id);
            let Ok(mut chunks) = stream.read(true) else {
                return Ok(());
            };
            loop {
                match chunks.next(MAX_BUFFERED) {
                    Ok(Some(chunk)) => {
                        incoming.extend_from_slice(&chunk.bytes);
                        if incoming.len() > MAX_BUFFERED {
                            break;
                        }
                    }
                    Ok(None) => {
                        finished = true;
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                    Err(ReadError::Reset(_)) => {
                        reset = true;
                        break;
                    }
                }
            }
            let _ = chunks.finalize();
        }
        if incoming.len() > MAX_BUFFERED {
            return Err(H3Error::new(ErrorCode::EXCESSIVE_LOAD, "too much buffered"));
        }
        if id.dir() == Dir::Uni {
            return self.read_uni(id, &incoming, finished || reset);
        }
        if id.initiator() != Side::Client {
            return Ok(());
        }
        self.read_request(id, &incoming, ctx)?;
        if finished || reset {
            // The client closed its side of the tunnel: the tunnel ends (and with it,
            // at once, its allocation).
            if let Some(Request::Tunnel { client, .. }) = self.requests.remove(&id) {
                ctx.tunnels.remove(&client);
                ctx.inputs.push_back(TunnelInput::Closed(client));
                let _ = self.conn.send_stream(id).finish();
            } else {
                self.requests.remove(&id);
            }
        }
        Ok(())
    }

    fn read_uni(&mut self, id: StreamId, incoming: &[u8], ended: bool) -> Result<(), H3Error> {
        let Some(state) = self.uni.get_mut(&id) else {
            return Ok(());
        };
        if let Uni::Untyped(buf) = state {
            buf.extend_from_slice(incoming);
            let Some((stream_type, n)) = varint::read(buf) else {
                return Ok(());
            };
            let rest = buf.split_off(n);
            *state = match stream_type {
                stream_kind::CONTROL => Uni::Control {
                    buf: rest,
                    settings_seen: false,
                },
                // RFC 9114 §6.2.2: a client must not open a push stream.
                stream_kind::PUSH => {
                    return Err(H3Error::new(
                        ErrorCode::STREAM_CREATION_ERROR,
                        "client push stream",
                    ))
                }
                _ => Uni::Discard,
            };
        } else if let Uni::Control { buf, .. } = state {
            buf.extend_from_slice(incoming);
        }
        if let Uni::Control { buf, settings_seen } = state {
            // RFC 9114 §6.2.1: closing the control stream is a connection error.
            if ended {
                return Err(H3Error::new(
                    ErrorCode::CLOSED_CRITICAL_STREAM,
                    "control stream closed",
                ));
            }
            let mut used = 0;
            while let Some((header, payload)) = frame::parse_frame(&buf[used..], MAX_FRAME)? {
                used += header.header_len + payload.len();
                match (header.kind, *settings_seen) {
                    (kind::SETTINGS, false) => {
                        self.peer_settings = Some(Settings::parse(payload)?);
                        *settings_seen = true;
                    }
                    (kind::SETTINGS, true) => {
                        return Err(H3Error::new(ErrorCode::FRAME_UNEXPECTED, "second SETTINGS"))
                    }
                    (_, false) => {
                        return Err(H3Error::new(
                            ErrorCode::MISSING_SETTINGS,
                            "control stream without SETTINGS first",
                        ))
                    }
                    (kind::DATA | kind::HEADERS | kind::PUSH_PROMISE, true) => {
                        return Err(H3Error::new(
                            ErrorCode::FRAME_UNEXPECTED,
                            "request frame on the control stream",
                        ))
                    }
                    (k, true) if kind::is_http2_only(k) => {
                        return Err(H3Error::new(ErrorCode::FRAME_UNEXPECTED, "HTTP/2 frame"))
                    }
                    // GOAWAY, MAX_PUSH_ID, CANCEL_PUSH, unknown: nothing to do for a
                    // relay that pushes nothing and serves each tunnel to its end.
                    _ => {}
                }
            }
            buf.drain(..used);
        }
        Ok(())
    }

    fn read_request(
        &mut self,
        id: StreamId,
        incoming: &[u8],
        ctx: &mut Ctx<'_>,
    ) -> Result<(), H3Error> {
        // Taken out while it is handled, so that answering can borrow the connection.
        let Some(mut state) = self.requests.remove(&id) else {
            return Ok(());
        };
        let result = self.advance_request(id, &mut state, incoming, ctx);
        // A refused request is answered and done: forget it (its stream is closed).
        if !matches!(state, Request::Refused) {
            self.requests.insert(id, state);
        }
        result
    }

    fn advance_request(
        &mut self,
        id: StreamId,
        state: &mut Request,
        incoming: &[u8],
        ctx: &mut Ctx<'_>,
    ) -> Result<(), H3Error> {
        match state {
            Request::Refused => return Ok(()),
            Request::Headers(buf) => buf.extend_from_slice(incoming),
            Request::Tunnel { frames, .. } => frames.extend_from_slice(incoming),
        }
        while let Request::Headers(buf) = state {
            let Some((header, payload)) = frame::parse_frame(buf, MAX_FRAME)? else {
                return Ok(());
            };
            let used = header.header_len + payload.len();
            // RFC 9114 §4.1: a request starts with HEADERS; unknown frame types may
            // come first and are skipped (§9).
            if header.kind != kind::HEADERS {
                if header.kind == kind::DATA || kind::is_http2_only(header.kind) {
                    return Err(H3Error::new(
                        ErrorCode::FRAME_UNEXPECTED,
                        "DATA before HEADERS",
                    ));
                }
                buf.drain(..used);
                continue;
            }
            let fields = qpack::decode(payload, MAX_FRAME).map_err(|_| {
                H3Error::new(ErrorCode::QPACK_DECOMPRESSION_FAILED, "bad field section")
            })?;
            let rest = buf.split_off(used);
            match connect_udp::parse_request(&fields) {
                Ok(target) if ctx.targets.allows(&target) => {
                    let client = ClientId::quic_tunnel(ctx.local, *ctx.next_tunnel);
                    *ctx.next_tunnel += 1;
                    self.respond(id, 200, &[("capsule-protocol", "?1")], false)?;
                    ctx.tunnels.insert(client, (ctx.handle, id));
                    tracing::debug!(%client, ?target, "CONNECT-UDP tunnel open");
                    *state = Request::Tunnel {
                        client,
                        frames: rest,
                        capsules: Vec::new(),
                    };
                }
                Ok(target) => {
                    tracing::debug!(?target, "CONNECT-UDP to a target that is not this relay");
                    *state = Request::Refused;
                    self.respond(id, 403, &[("proxy-status", PROXY_STATUS_PROHIBITED)], true)?;
                    return Ok(());
                }
                Err(refusal) => {
                    tracing::debug!(
                        status = refusal.status,
                        reason = refusal.reason,
                        "request refused"
                    );
                    *state = Request::Refused;
                    self.respond(id, refusal.status, &[], true)?;
                    return Ok(());
                }
            }
        }
        let Request::Tunnel {
            client,
            frames,
            capsules,
        } = state
        else {
            return Ok(());
        };
        // After the 2xx, the stream carries DATA frames whose payloads form a capsule
        // sequence (RFC 9297 §3.1); DATAGRAM capsules carry TURN when QUIC datagrams
        // are not used.
        let mut used = 0;
        while let Some((header, payload)) = frame::parse_frame(&frames[used..], MAX_CAPSULE)? {
            used += header.header_len + payload.len();
            match header.kind {
                kind::DATA => capsules.extend_from_slice(payload),
                kind::HEADERS | kind::PUSH_PROMISE => {
                    return Err(H3Error::new(
                        ErrorCode::FRAME_UNEXPECTED,
                        "HEADERS in a tunnel",
                    ))
                }
                k if kind::is_http2_only(k) => {
                    return Err(H3Error::new(ErrorCode::FRAME_UNEXPECTED, "HTTP/2 frame"))
                }
                _ => {}
            }
        }
        frames.drain(..used);
        let mut at = 0;
        while let Some((capsule, n)) = datagram::parse_capsule(&capsules[at..], MAX_CAPSULE)? {
            let value = &capsules[at..at + n][capsule.value.clone()];
            at += n;
            if capsule.kind != CAPSULE_DATAGRAM {
                continue;
            }
            if let Some((CONTEXT_UDP, payload)) = datagram::split_context(value) {
                ctx.inputs.push_back(TunnelInput::Message {
                    client: *client,
                    bytes: value[payload].to_vec(),
                    source: self.conn.remote_address().ip(),
                });
            }
        }
        capsules.drain(..at);
        Ok(())
    }

    /// Sends a response HEADERS frame; `finish` ends the stream (a refusal).
    fn respond(
        &mut self,
        id: StreamId,
        status: u16,
        headers: &[(&str, &str)],
        finish: bool,
    ) -> Result<(), H3Error> {
        let mut section = Vec::new();
        qpack::encode_response(status, headers, &mut section);
        let mut bytes = Vec::new();
        frame::write_frame(kind::HEADERS, &section, &mut bytes);
        self.write_all(id, &bytes)?;
        if finish {
            let _ = self.conn.send_stream(id).finish();
            // RFC 9114 §4.1.1: the rest of a refused request is not needed; asking the
            // client to stop (H3_NO_ERROR) closes the stream and returns its credit.
            let no_error =
                VarInt::from_u64(ErrorCode::NO_ERROR.0).unwrap_or(VarInt::from_u32(0x100));
            let _ = self.conn.recv_stream(id).stop(no_error);
        }
        Ok(())
    }

    /// HTTP datagrams (RFC 9297 §2.1): each names its tunnel by quarter stream ID.
    fn datagrams(&mut self, ctx: &mut Ctx<'_>) {
        while let Some(bytes) = self.conn.datagrams().recv() {
            let Ok(d) = datagram::parse_quic_datagram(&bytes) else {
                // Malformed: dropped (a connection error would let one bad datagram
                // kill every tunnel of the connection).
                continue;
            };
            let Some(id) = VarInt::from_u64(d.stream_id).ok().map(StreamId::from) else {
                continue;
            };
            // Unknown or closed streams and other contexts: dropped (RFC 9297 §2.1,
            // RFC 9298 §4).
            if let (Some(Request::Tunnel { client, .. }), CONTEXT_UDP) =
                (self.requests.get(&id), d.context_id)
            {
                ctx.inputs.push_back(TunnelInput::Message {
                    client: *client,
                    bytes: bytes[d.payload].to_vec(),
                    source: self.conn.remote_address().ip(),
                });
            }
        }
    }

    /// Sends one TURN message to the tunnel on stream `id`: as a QUIC datagram when the
    /// client takes HTTP datagrams and it fits, else as a DATAGRAM capsule on the stream.
    pub(super) fn send(&mut self, id: StreamId, msg: &[u8]) -> bool {
        let datagrams_ok = self.peer_settings.is_some_and(|s| s.h3_datagram);
        match super::carry(&mut self.conn, id, datagrams_ok, msg) {
            super::Carried::Datagram(queued) => queued,
            super::Carried::Stream(bytes) => {
                matches!(self.conn.send_stream(id).write(&bytes), Ok(n) if n == bytes.len())
            }
        }
    }

    fn close_tunnels(&mut self, ctx: &mut Ctx<'_>) {
        for client in self.tunnel_clients().collect::<Vec<_>>() {
            ctx.tunnels.remove(&client);
            ctx.inputs.push_back(TunnelInput::Closed(client));
        }
        self.requests.clear();
    }
}
