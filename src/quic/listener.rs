//! A worker's QUIC listener: its UDP socket, its `quinn-proto` endpoint and the
//! connections on it.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::net::UdpSocket;
use quinn_proto::{ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig, StreamId};

use super::config::QuicConfig;
use super::conn::{Ctx, QuicConn};
use super::steer::WorkerCids;
use crate::proto::ClientId;

/// Connections one worker's listener holds at once; more are refused at the handshake
/// (CONNECTION_REFUSED), so a flood of handshakes cannot grow memory without bound.
const MAX_CONNECTIONS: usize = 4096;
/// Datagrams read per readiness event before other sockets get a turn.
const READ_BUDGET: usize = 256;
/// Largest UDP datagram read (QUIC packets are at most 1500-ish; a jumbo path fits).
const MAX_DATAGRAM: usize = 65_535;

/// What a listener hands the worker's core.
#[derive(Debug)]
pub(crate) enum TunnelInput {
    /// One STUN or ChannelData message from a tunnel's client.
    Message {
        client: ClientId,
        bytes: Vec<u8>,
        /// The address the tunnel's QUIC connection comes from now.
        source: std::net::IpAddr,
    },
    /// The tunnel ended (its stream or its connection closed): free its allocation.
    Closed(ClientId),
}

pub(crate) struct QuicListener {
    pub(crate) sock: UdpSocket,
    /// The bound address; every tunnel's `ClientId::local`.
    pub(crate) local: SocketAddr,
    endpoint: Endpoint,
    config: QuicConfig,
    conns: HashMap<ConnectionHandle, QuicConn>,
    tunnels: HashMap<ClientId, (ConnectionHandle, StreamId)>,
    next_tunnel: u64,
    inputs: VecDeque<TunnelInput>,
    /// Connections with output to send since the last flush.
    dirty: Vec<ConnectionHandle>,
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
}

impl QuicListener {
    /// A listener on `sock` (bound, non-blocking). `worker` makes its tunnel numbers
    /// unique across the relay's workers (for logs).
    pub(crate) fn new(sock: UdpSocket, config: QuicConfig, worker: usize) -> io::Result<Self> {
        let local = sock.local_addr()?;
        let worker_byte = u8::try_from(worker)
            .map_err(|_| io::Error::other("QUIC supports at most 256 workers"))?;
        let mut endpoint_config = EndpointConfig::default();
        // Connection IDs name this worker, so migrated packets find their way back
        // to it (see `steer`).
        endpoint_config.cid_generator(move || Box::new(WorkerCids::new(worker_byte)));
        // Path MTU discovery on: the socket never fragments (see `dont_fragment`).
        super::dont_fragment(&sock, local)?;
        let endpoint = Endpoint::new(
            Arc::new(endpoint_config),
            Some(config.server.clone()),
            true,
            None,
        );
        Ok(QuicListener {
            sock,
            local,
            endpoint,
            config,
            conns: HashMap::new(),
            tunnels: HashMap::new(),
            next_tunnel: (worker as u64) << 48,
            inputs: VecDeque::new(),
            dirty: Vec::new(),
            recv_buf: vec![0; MAX_DATAGRAM],
            send_buf: Vec::with_capacity(MAX_DATAGRAM),
        })
    }

    /// A reloaded certificate: handshakes from now on use it; connections already
    /// made keep theirs.
    pub(crate) fn set_server_config(&mut self, server: Arc<quinn_proto::ServerConfig>) {
        self.endpoint.set_server_config(Some(server.clone()));
        self.config.server = server;
    }

    /// Reads what the socket has (up to a budget); `true` if the budget ran out with
    /// data possibly left (the worker revisits the socket).
    pub(crate) fn read(&mut self, now: Instant) -> bool {
        for _ in 0..READ_BUDGET {
            let (n, remote) = match self.sock.recv_from(&mut self.recv_buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    tracing::trace!("quic recv: {e}");
                    continue;
                }
            };
            let data = BytesMut::from(&self.recv_buf[..n]);
            self.send_buf.clear();
            let event = self.endpoint.handle(
                now,
                remote,
                Some(self.local.ip()),
                None,
                data,
                &mut self.send_buf,
            );
            match event {
                Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                    if let Some(c) = self.conns.get_mut(&ch) {
                        c.conn.handle_event(event);
                        self.drive(now, ch);
                    }
                }
                Some(DatagramEvent::NewConnection(incoming)) => {
                    if self.conns.len() >= MAX_CONNECTIONS {
                        let t = self.endpoint.refuse(incoming, &mut self.send_buf);
                        self.send_raw(t.destination, t.size);
                        continue;
                    }
                    self.send_buf.clear();
                    match self
                        .endpoint
                        .accept(incoming, now, &mut self.send_buf, None)
                    {
                        Ok((ch, conn)) => {
                            self.conns.insert(ch, QuicConn::new(conn, now));
                            self.drive(now, ch);
                        }
                        Err(e) => {
                            tracing::debug!("QUIC handshake refused: {}", e.cause);
                            if let Some(t) = e.response {
                                self.send_raw(t.destination, t.size);
                            }
                        }
                    }
                }
                Some(DatagramEvent::Response(t)) => self.send_raw(t.destination, t.size),
                None => {}
            }
        }
        true
    }

    fn send_raw(&mut self, dst: SocketAddr, len: usize) {
        if let Some(bytes) = self.send_buf.get(..len) {
            if let Err(e) = self.sock.send_to(bytes, dst) {
                tracing::trace!("quic send: {e}");
            }
        }
    }

    /// After any input to connection `ch`: endpoint events, application events, and
    /// note that it may have output.
    fn drive(&mut self, now: Instant, ch: ConnectionHandle) {
        let Some(c) = self.conns.get_mut(&ch) else {
            return;
        };
        while let Some(event) = c.conn.poll_endpoint_events() {
            if let Some(event) = self.endpoint.handle_event(ch, event) {
                c.conn.handle_event(event);
            }
        }
        let mut ctx = Ctx {
            now,
            handle: ch,
            local: self.local,
            targets: &self.config.targets,
            next_tunnel: &mut self.next_tunnel,
            tunnels: &mut self.tunnels,
            inputs: &mut self.inputs,
        };
        c.handle_events(&mut ctx);
        // Events raised by handling (streams opened, closes) go to the endpoint too.
        while let Some(event) = c.conn.poll_endpoint_events() {
            if let Some(event) = self.endpoint.handle_event(ch, event) {
                c.conn.handle_event(event);
            }
        }
        if !self.dirty.contains(&ch) {
            self.dirty.push(ch);
        }
    }

    /// The next message or closed tunnel for the core.
    pub(crate) fn poll_input(&mut self) -> Option<TunnelInput> {
        self.inputs.pop_front()
    }

    /// Sends one TURN message to a tunnel's client; `false` if the tunnel is gone or
    /// the message could not be queued.
    pub(crate) fn send(&mut self, client: ClientId, msg: &[u8]) -> bool {
        let Some(&(ch, stream)) = self.tunnels.get(&client) else {
            return false;
        };
        let Some(c) = self.conns.get_mut(&ch) else {
            return false;
        };
        let queued = c.send(stream, msg);
        if !self.dirty.contains(&ch) {
            self.dirty.push(ch);
        }
        queued
    }

    /// Writes every packet the connections with news have to send.
    pub(crate) fn flush(&mut self, now: Instant) {
        while let Some(ch) = self.dirty.pop() {
            let Some(c) = self.conns.get_mut(&ch) else {
                continue;
            };
            loop {
                self.send_buf.clear();
                let Some(t) = c.conn.poll_transmit(now, 1, &mut self.send_buf) else {
                    break;
                };
                if let Some(bytes) = self.send_buf.get(..t.size) {
                    if let Err(e) = self.sock.send_to(bytes, t.destination) {
                        tracing::trace!("quic send: {e}");
                    }
                }
            }
            if c.conn.is_drained() {
                self.conns.remove(&ch);
            }
        }
    }

    /// A request in `client`'s tunnel passed authentication: its connection is no
    /// longer timed out as unauthenticated.
    pub(crate) fn mark_authenticated(&mut self, client: ClientId) {
        let Some(&(ch, _)) = self.tunnels.get(&client) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&ch) {
            c.authenticated = true;
        }
    }

    /// Closes every connection without an authenticated request `timeout` after its
    /// handshake began; returns how many. Their tunnels are reported closed.
    pub(crate) fn close_unauthenticated(&mut self, now: Instant, timeout: Duration) -> u64 {
        let due: Vec<ConnectionHandle> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                !c.authenticated
                    && !c.conn.is_closed()
                    && now.saturating_duration_since(c.accepted) >= timeout
            })
            .map(|(&ch, _)| ch)
            .collect();
        for &ch in &due {
            let Some(c) = self.conns.get_mut(&ch) else {
                continue;
            };
            let mut ctx = Ctx {
                now,
                handle: ch,
                local: self.local,
                targets: &self.config.targets,
                next_tunnel: &mut self.next_tunnel,
                tunnels: &mut self.tunnels,
                inputs: &mut self.inputs,
            };
            c.close_unauthenticated(&mut ctx);
            self.drive(now, ch);
        }
        due.len() as u64
    }

    /// The earliest timer of any connection.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.conns
            .values_mut()
            .filter_map(|c| c.conn.poll_timeout())
            .min()
    }

    /// Fires the connections' due timers (loss detection, idle timeout, …).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<ConnectionHandle> = self
            .conns
            .iter_mut()
            .filter_map(|(&ch, c)| c.conn.poll_timeout().filter(|&t| t <= now).map(|_| ch))
            .collect();
        for ch in due {
            if let Some(c) = self.conns.get_mut(&ch) {
                c.conn.handle_timeout(now);
            }
            self.drive(now, ch);
        }
    }
}
