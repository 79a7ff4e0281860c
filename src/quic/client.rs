//! The client side of a CONNECT-UDP tunnel to a Turnpike relay: one QUIC connection,
//! one HTTP/3 request, and TURN messages in HTTP datagrams. Used by `turnpike tunnel`
//! (a local UDP port any TURN client can use) and by the call client.
//!
//! Sans-IO like the rest: the caller owns the UDP socket (set with
//! [`dont_fragment`](super::dont_fragment), for path MTU discovery), feeds what it receives to
//! [`TunnelClient::handle_datagram`], sends what [`TunnelClient::poll_transmit`] gives,
//! and calls [`TunnelClient::handle_timeout`] at [`TunnelClient::poll_timeout`]. To move
//! to another network, the caller sends from a new socket and calls
//! [`TunnelClient::local_address_changed`]; QUIC migrates the connection (RFC 9000 §9)
//! and the tunnel — and the relay's allocation with it — stays.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::crypto::rustls::QuicClientConfig;
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig,
    Event, StreamEvent, StreamId,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::config::ALPN_H3;
use crate::proto::h3::connect_udp::PATH_PREFIX;
use crate::proto::h3::datagram::{self, CONTEXT_UDP};
use crate::proto::h3::frame::{self, kind, stream_kind};
use crate::proto::h3::{qpack, varint};

/// How the client checks the relay's certificate.
#[derive(Debug, Clone)]
pub enum Verify {
    /// Roots to verify the chain against (e.g. the system's, or a private CA).
    Roots(Arc<rustls::RootCertStore>),
    /// Accept exactly the certificate with this SHA-256 (the fingerprint the relay logs
    /// for its self-signed certificate).
    Pin([u8; 32]),
    /// Accept any certificate: for tests and development only.
    Insecure,
}

/// Where the tunnel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelState {
    /// Handshaking, or waiting for the relay's answer to the request.
    Opening,
    /// The relay answered 2xx: TURN messages flow.
    Open,
    /// The relay answered with this status (403: not a target it serves).
    Refused(u16),
    /// The connection is gone.
    Closed,
}

/// A tunnel to one relay's TURN listener.
pub struct TunnelClient {
    endpoint: Endpoint,
    handle: ConnectionHandle,
    conn: Connection,
    relay: SocketAddr,
    authority: String,
    state: TunnelState,
    request: Option<StreamId>,
    response: Vec<u8>,
    capsules: Vec<u8>,
    received: VecDeque<Vec<u8>>,
    /// Stream bytes for the relay that did not fit the flow-control window yet.
    pending_stream: Vec<(StreamId, Vec<u8>)>,
}

impl TunnelClient {
    /// Starts the QUIC handshake with `relay` (TLS server name `server_name`); the
    /// tunnel's target is the relay's TURN listener at the same address.
    pub fn connect(
        now: Instant,
        relay: SocketAddr,
        server_name: &str,
        verify: Verify,
    ) -> Result<TunnelClient, String> {
        let crypto = client_crypto(verify).map_err(|e| format!("TLS: {e}"))?;
        Self::connect_with(now, relay, server_name, crypto)
    }

    /// [`TunnelClient::connect`] with a TLS configuration of the caller's (its own
    /// roots, cipher suites, key log); the ALPN is set to `h3` here.
    pub fn connect_with(
        now: Instant,
        relay: SocketAddr,
        server_name: &str,
        mut crypto: rustls::ClientConfig,
    ) -> Result<TunnelClient, String> {
        crypto.alpn_protocols = vec![ALPN_H3.to_vec()];
        let mut config = ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(crypto).map_err(|e| format!("QUIC TLS: {e}"))?,
        ));
        let mut transport = quinn_proto::TransportConfig::default();
        transport.datagram_receive_buffer_size(Some(1 << 20));
        // Keep the path alive through NATs and notice a dead one.
        transport.keep_alive_interval(Some(std::time::Duration::from_secs(5)));
        config.transport_config(Arc::new(transport));
        // Path MTU discovery on: every socket the caller sends from must not fragment
        // (`super::dont_fragment`).
        let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), None, true, None);
        let (handle, conn) = endpoint
            .connect(now, config, relay, server_name)
            .map_err(|e| format!("cannot connect to {relay}: {e}"))?;
        let host = match relay.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        Ok(TunnelClient {
            endpoint,
            handle,
            conn,
            relay,
            authority: format!("{host}:{}", relay.port()),
            state: TunnelState::Opening,
            request: None,
            response: Vec::new(),
            capsules: Vec::new(),
            received: VecDeque::new(),
            pending_stream: Vec::new(),
        })
    }

    /// Where the tunnel is.
    pub fn state(&self) -> TunnelState {
        self.state
    }

    /// One UDP datagram from the relay.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let mut buf = Vec::new();
        let event = self
            .endpoint
            .handle(now, from, None, None, BytesMut::from(data), &mut buf);
        if let Some(DatagramEvent::ConnectionEvent(_, event)) = event {
            self.conn.handle_event(event);
        }
        self.drive();
    }

    /// The next UDP datagram to send (written into `buf`) and where to.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        buf.clear();
        let t = self.conn.poll_transmit(now, 1, buf)?;
        buf.truncate(t.size);
        Some(t.destination)
    }

    /// When [`TunnelClient::handle_timeout`] is due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    /// Fires due QUIC timers (retransmission, keep-alive, idle).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        self.drive();
    }

    /// The client now sends from another local address: QUIC validates the new path
    /// and moves the connection to it (and to a fresh connection ID).
    pub fn local_address_changed(&mut self) {
        self.conn.local_address_changed();
    }

    /// Queues one TURN message for the relay; `false` if the tunnel is not open or the
    /// message cannot be queued now.
    pub fn send(&mut self, msg: &[u8]) -> bool {
        let (TunnelState::Open, Some(stream)) = (self.state, self.request) else {
            return false;
        };
        // The relay always announces HTTP datagrams.
        match super::carry(&mut self.conn, stream, true, msg) {
            super::Carried::Datagram(queued) => queued,
            super::Carried::Stream(bytes) => {
                self.write_stream(stream, bytes);
                true
            }
        }
    }

    /// The largest TURN message that fits one HTTP datagram on the current path
    /// (`None` before the handshake). Path MTU discovery raises it over the first
    /// seconds; a larger message goes on the request stream as a capsule instead.
    pub fn max_datagram(&mut self) -> Option<usize> {
        // The quarter stream ID and the context ID take a byte each for the first
        // tunnels of a connection (varints below 64).
        self.conn
            .datagrams()
            .max_size()
            .map(|n| n.saturating_sub(2))
    }

    /// The next TURN message from the relay.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        self.received.pop_front()
    }

    /// Ends the tunnel (the relay frees its allocations at once) and the connection.
    pub fn close(&mut self, now: Instant) {
        if let Some(stream) = self.request {
            let _ = self.conn.send_stream(stream).finish();
        }
        self.conn.close(now, 0x100u32.into(), Bytes::new());
        self.state = TunnelState::Closed;
    }

    fn write_stream(&mut self, stream: StreamId, bytes: Vec<u8>) {
        self.pending_stream.push((stream, bytes));
        self.flush_streams();
    }

    fn flush_streams(&mut self) {
        let mut i = 0;
        while i < self.pending_stream.len() {
            let (stream, bytes) = &mut self.pending_stream[i];
            match self.conn.send_stream(*stream).write(bytes) {
                Ok(n) if n == bytes.len() => {
                    self.pending_stream.remove(i);
                }
                Ok(n) => {
                    bytes.drain(..n);
                    i += 1;
                }
                Err(_) => i += 1,
            }
        }
    }

    fn drive(&mut self) {
        while let Some(event) = self.conn.poll_endpoint_events() {
            if let Some(event) = self.endpoint.handle_event(self.handle, event) {
                self.conn.handle_event(event);
            }
        }
        while let Some(event) = self.conn.poll() {
            match event {
                Event::Connected => self.open_tunnel(),
                Event::ConnectionLost { reason } => {
                    tracing::debug!(%reason, "tunnel connection lost");
                    self.state = TunnelState::Closed;
                }
                Event::Stream(StreamEvent::Readable { id }) => self.read(id),
                Event::Stream(StreamEvent::Opened { dir }) => {
                    // The relay's control stream (and any other): read and ignored but
                    // for flow control; its SETTINGS need no answer.
                    while let Some(id) = self.conn.streams().accept(dir) {
                        self.read(id);
                    }
                }
                Event::Stream(StreamEvent::Writable { .. }) => self.flush_streams(),
                Event::DatagramReceived => {
                    while let Some(bytes) = self.conn.datagrams().recv() {
                        let Ok(d) = datagram::parse_quic_datagram(&bytes) else {
                            continue;
                        };
                        if Some(d.stream_id) == self.request.map(u64::from)
                            && d.context_id == CONTEXT_UDP
                        {
                            self.received.push_back(bytes[d.payload].to_vec());
                        }
                    }
                }
                _ => {}
            }
        }
        while let Some(event) = self.conn.poll_endpoint_events() {
            if let Some(event) = self.endpoint.handle_event(self.handle, event) {
                self.conn.handle_event(event);
            }
        }
    }

    /// After the handshake: our control stream with SETTINGS, then the CONNECT-UDP
    /// request for the relay's own TURN listener.
    fn open_tunnel(&mut self) {
        if let Some(control) = self.conn.streams().open(Dir::Uni) {
            let mut bytes = Vec::new();
            varint::write(stream_kind::CONTROL, &mut bytes);
            frame::write_frame(kind::SETTINGS, &frame::client_settings(), &mut bytes);
            self.write_stream(control, bytes);
        }
        let Some(stream) = self.conn.streams().open(Dir::Bi) else {
            self.state = TunnelState::Closed;
            return;
        };
        let host = self.relay.ip().to_string().replace(':', "%3A");
        let path = format!("{PATH_PREFIX}{host}/{}/", self.relay.port());
        let mut section = Vec::new();
        qpack::encode_request(
            &[
                (":method", "CONNECT"),
                (":protocol", "connect-udp"),
                (":scheme", "https"),
                (":authority", &self.authority),
                (":path", &path),
                ("capsule-protocol", "?1"),
            ],
            &mut section,
        );
        let mut bytes = Vec::new();
        frame::write_frame(kind::HEADERS, &section, &mut bytes);
        self.write_stream(stream, bytes);
        self.request = Some(stream);
    }

    fn read(&mut self, id: StreamId) {
        let mut incoming = Vec::new();
        {
            let mut stream = self.conn.recv_stream(id);
            let Ok(mut chunks) = stream.read(true) else {
                return;
            };
            while let Ok(Some(chunk)) = chunks.next(64 * 1024) {
                incoming.extend_from_slice(&chunk.bytes);
            }
            let _ = chunks.finalize();
        }
        if Some(id) != self.request {
            return;
        }
        self.response.extend_from_slice(&incoming);
        let mut used = 0;
        while let Ok(Some((header, payload))) = frame::parse_frame(&self.response[used..], 70_000) {
            used += header.header_len + payload.len();
            match header.kind {
                kind::HEADERS if self.state == TunnelState::Opening => {
                    let status = qpack::decode(payload, 16 * 1024)
                        .ok()
                        .and_then(|fields| {
                            fields
                                .into_iter()
                                .find(|f| f.name == b":status")
                                .and_then(|f| String::from_utf8(f.value).ok())
                                .and_then(|v| v.parse::<u16>().ok())
                        })
                        .unwrap_or(0);
                    self.state = if (200..300).contains(&status) {
                        TunnelState::Open
                    } else {
                        TunnelState::Refused(status)
                    };
                }
                kind::DATA => self.capsules.extend_from_slice(payload),
                _ => {}
            }
        }
        self.response.drain(..used);
        let mut at = 0;
        while let Ok(Some((capsule, n))) = datagram::parse_capsule(&self.capsules[at..], 70_000) {
            let value = &self.capsules[at..at + n][capsule.value.clone()];
            at += n;
            if capsule.kind == datagram::CAPSULE_DATAGRAM {
                if let Some((CONTEXT_UDP, payload)) = datagram::split_context(value) {
                    self.received.push_back(value[payload].to_vec());
                }
            }
        }
        self.capsules.drain(..at);
    }
}

fn client_crypto(verify: Verify) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut config = match verify {
        Verify::Roots(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        Verify::Pin(sha256) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                sha256: Some(sha256),
                provider,
            }))
            .with_no_client_auth(),
        Verify::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                sha256: None,
                provider,
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H3.to_vec()];
    Ok(config)
}

/// Accepts the certificate whose SHA-256 is `sha256` (any, when `None`), and checks
/// that the handshake is signed by its key.
#[derive(Debug)]
struct Pinned {
    sha256: Option<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.sha256 {
            Some(pin) if Sha256::digest(end_entity.as_ref()).as_slice() != pin => Err(
                rustls::Error::General("certificate does not match the pinned SHA-256".into()),
            ),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Parses a fingerprint as the relay logs it (hex, colons optional).
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
