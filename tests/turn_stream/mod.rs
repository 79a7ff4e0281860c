//! A minimal TURN client over a byte stream — plain TCP or TLS (RFC 8656 §3.1) — for tests
//! that send packets through an in-process relay themselves (`tests/zero_alloc.rs`), and
//! a self-signed certificate for the relay's TLS listener.
//!
//! It authenticates as [`turn_udp`](super::turn_udp)'s user, so a test file uses it with
//! `mod turn_udp; mod turn_stream;`.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use turnpike::proto::framing::{next_frame, Frame};
use turnpike::proto::stun::attr;
use turnpike::proto::stun::{method, Class, Message, MessageBuilder, TransactionId};

use super::turn_udp::{Session, Turn};

/// A TLS server configuration for the relay from a fresh self-signed certificate for
/// `localhost` (files in `dir`), and the certificate (DER) for clients to trust.
pub fn self_signed_tls(dir: &Path) -> (Arc<rustls::ServerConfig>, Vec<u8>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    let config = turnpike::net::tls::load_server_config(&cert, &key).expect("TLS config");
    (config, certified.cert.der().to_vec())
}

/// A TLS connection to `server` trusting only `cert_der`, handshake completed.
pub fn connect_tls(
    server: SocketAddr,
    cert_der: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert_der.to_vec().into())
        .expect("trust the certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "localhost".try_into().expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(client_config), name).expect("client");
    let mut tcp = connect_tcp(server);
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("TLS handshake");
    }
    rustls::StreamOwned::new(conn, tcp)
}

/// A TCP connection to `server` with Nagle off (each message leaves at once) and a read
/// timeout, so every wait is bounded.
pub fn connect_tcp(server: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(server).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    tcp
}

/// A TURN client with [`USER`]'s long-term credentials on a stream; retries the first
/// 401 with the nonce it brings.
pub struct StreamClient<S> {
    pub stream: S,
    session: Session,
    /// Received bytes: `rx[start..filled]` is not yet returned as a frame.
    rx: Vec<u8>,
    start: usize,
    filled: usize,
}

impl<S: Read + Write> StreamClient<S> {
    pub fn new(stream: S) -> StreamClient<S> {
        StreamClient {
            stream,
            session: Session::default(),
            rx: vec![0; 64 * 1024],
            start: 0,
            filled: 0,
        }
    }

    /// Writes one whole message (ChannelData already padded to a multiple of 4).
    pub fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.stream.write_all(msg)?;
        self.stream.flush()
    }

    /// The next STUN or ChannelData message from the relay, without the stream padding;
    /// `None` if none arrived within the stream's read timeout.
    pub fn recv_frame(&mut self) -> Option<&[u8]> {
        loop {
            match next_frame(&self.rx[self.start..self.filled]) {
                Frame::Complete {
                    consume,
                    message_len,
                } => {
                    let frame = self.start..self.start + message_len;
                    self.start += consume;
                    return Some(&self.rx[frame]);
                }
                Frame::Invalid => panic!("the relay sent neither STUN nor ChannelData"),
                Frame::Incomplete => {}
            }
            if self.start > 0 {
                self.rx.copy_within(self.start..self.filled, 0);
                self.filled -= self.start;
                self.start = 0;
            }
            match self.stream.read(&mut self.rx[self.filled..]) {
                Ok(0) => panic!("the relay closed the connection"),
                Ok(n) => self.filled += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading from the relay: {e}"),
            }
        }
    }
}

impl<S: Read + Write> Turn for StreamClient<S> {
    /// Indications and data arriving before the answer are skipped.
    fn exchange(&mut self, request: &[u8], tid: TransactionId) -> Vec<u8> {
        self.send(request).expect("send request");
        loop {
            let frame = self.recv_frame().expect("response within the timeout");
            let is_answer = Message::parse(frame).is_ok_and(|m| {
                m.transaction_id() == tid && matches!(m.class(), Class::Success | Class::Error)
            });
            if is_answer {
                return frame.to_vec();
            }
        }
    }

    fn session(&mut self) -> &mut Session {
        &mut self.session
    }
}

/// A Send indication (RFC 8656 §11.1) carrying `payload` to `peer`.
pub fn send_indication(peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(
        &mut buf,
        Class::Indication,
        method::SEND,
        TransactionId([0x5E; 12]),
    );
    b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
    b.add(attr::DATA, payload);
    b.as_bytes().to_vec()
}
