//! The load generator's client links for the encrypted-transport comparison: one
//! allocation per link, over plain UDP, TURN over TLS (RFC 8656 §3.1: TCP with TLS,
//! TURN messages framed on the byte stream) or TURN over QUIC (Turnpike's CONNECT-UDP
//! tunnel, `turnpike::quic::client`), each set up with the same TURN handshake
//! (`turn::Handshake`) and driven from one thread through nonblocking sockets.
//!
//! Every link is its own 5-tuple (its own socket or TCP connection), as a call client
//! is: no two allocations share a connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnpike::quic::client::{TunnelClient, TunnelState};

use crate::servers::{LISTEN, QUIC_LISTEN, TLS_LISTEN};
use crate::sys::Epoll;
use crate::turn::{build_request, handle_response, Creds, Handshake, Verdict};

/// How a link reaches the relay.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tls,
    Quic,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tls => "TLS",
            Transport::Quic => "QUIC",
        }
    }

    /// The relay's listener for this transport.
    pub fn server(self) -> SocketAddr {
        SocketAddr::V4(match self {
            Transport::Udp => LISTEN,
            Transport::Tls => TLS_LISTEN,
            Transport::Quic => QUIC_LISTEN,
        })
    }
}

enum Io {
    Udp {
        sock: UdpSocket,
        server: SocketAddr,
    },
    Tls {
        sock: TcpStream,
        tls: Box<rustls::ClientConnection>,
        /// Decrypted stream bytes not yet framed into whole TURN messages.
        plain: Vec<u8>,
    },
    Quic {
        sock: UdpSocket,
        tunnel: Box<TunnelClient>,
        out: Vec<u8>,
    },
}

/// One client connection to the relay, carrying one allocation.
pub struct Link {
    io: Io,
    /// The relayed address the server gave this link's allocation.
    pub relayed: Option<SocketAddrV4>,
}

/// ChannelData's padding to a multiple of four on stream transports (RFC 8656 §12.5).
const ZEROS: [u8; 3] = [0; 3];

impl Link {
    /// Opens the connection (the TLS or QUIC handshake then runs as the link is driven).
    pub fn open(
        transport: Transport,
        crypto: &rustls::ClientConfig,
        now: Instant,
    ) -> Result<Link, String> {
        let server = transport.server();
        let udp = || -> Result<UdpSocket, String> {
            let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
            sock.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(sock)
        };
        let io = match transport {
            Transport::Udp => Io::Udp {
                sock: udp()?,
                server,
            },
            Transport::Tls => {
                let sock = connect_tcp(server)?;
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .map_err(|e| e.to_string())?;
                let tls = rustls::ClientConnection::new(Arc::new(crypto.clone()), name)
                    .map_err(|e| format!("TLS: {e}"))?;
                Io::Tls {
                    sock,
                    tls: Box::new(tls),
                    plain: Vec::with_capacity(4096),
                }
            }
            Transport::Quic => Io::Quic {
                sock: {
                    let sock = udp()?;
                    turnpike::quic::dont_fragment(&sock, server).map_err(|e| e.to_string())?;
                    sock
                },
                tunnel: Box::new(TunnelClient::connect_with(
                    now,
                    server,
                    "localhost",
                    crypto.clone(),
                )?),
                out: Vec::with_capacity(1500),
            },
        };
        let mut link = Link { io, relayed: None };
        link.flush(now);
        Ok(link)
    }

    pub fn fd(&self) -> RawFd {
        match &self.io {
            Io::Udp { sock, .. } | Io::Quic { sock, .. } => sock.as_raw_fd(),
            Io::Tls { sock, .. } => sock.as_raw_fd(),
        }
    }

    /// Handshake done (TLS) or tunnel open (QUIC); an error if the relay refused.
    fn ready(&self) -> Result<bool, String> {
        match &self.io {
            Io::Udp { .. } => Ok(true),
            Io::Tls { tls, .. } => Ok(!tls.is_handshaking()),
            Io::Quic { tunnel, .. } => match tunnel.state() {
                TunnelState::Open => Ok(true),
                TunnelState::Opening => Ok(false),
                s => Err(format!("tunnel {s:?}")),
            },
        }
    }

    /// Sends one TURN message; `false` if the link could not take it now (a full
    /// socket or TLS buffer: the relay is behind), which the caller counts as lost.
    pub fn send(&mut self, msg: &[u8], now: Instant) -> bool {
        match &mut self.io {
            Io::Udp { sock, server } => sock.send_to(msg, *server).is_ok(),
            Io::Tls { tls, .. } => {
                let pad = if msg.first().is_some_and(|b| b & 0xC0 == 0x40) {
                    (4 - msg.len() % 4) % 4
                } else {
                    0
                };
                let mut w = tls.writer();
                let ok = matches!(w.write(msg), Ok(n) if n == msg.len())
                    && matches!(w.write(&ZEROS[..pad]), Ok(n) if n == pad);
                self.flush(now);
                ok
            }
            Io::Quic { tunnel, .. } => {
                let ok = tunnel.send(msg);
                self.flush(now);
                ok
            }
        }
    }

    /// Writes out whatever the TLS or QUIC state has for the relay.
    pub fn flush(&mut self, now: Instant) {
        match &mut self.io {
            Io::Udp { .. } => {}
            Io::Tls { sock, tls, .. } => {
                while tls.wants_write() {
                    if tls.write_tls(sock).is_err() {
                        break; // WouldBlock: the rest goes on a later flush
                    }
                }
            }
            Io::Quic { sock, tunnel, out } => {
                while let Some(to) = tunnel.poll_transmit(now, out) {
                    if sock.send_to(out, to).is_err() {
                        break;
                    }
                }
            }
        }
    }

    /// Reads everything the socket holds and hands each TURN message from the relay
    /// to `deliver`. An error means the connection is gone.
    pub fn receive(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        deliver: &mut dyn FnMut(&[u8]),
    ) -> io::Result<()> {
        match &mut self.io {
            Io::Udp { sock, .. } => loop {
                match sock.recv(buf) {
                    Ok(n) => deliver(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            },
            Io::Tls { sock, tls, plain } => {
                loop {
                    match tls.read_tls(sock) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(_) => {
                            tls.process_new_packets().map_err(io::Error::other)?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                    // Drained after every read: rustls holds only so much plaintext.
                    loop {
                        match tls.reader().read(buf) {
                            Ok(0) => break,
                            Ok(n) => plain.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                }
                let mut at = 0;
                while let Some(len) = frame_len(&plain[at..]) {
                    if plain.len() - at < len {
                        break;
                    }
                    deliver(&plain[at..at + len]);
                    at += len;
                }
                plain.drain(..at);
                self.flush(now);
                Ok(())
            }
            Io::Quic { sock, tunnel, .. } => {
                loop {
                    match sock.recv_from(buf) {
                        Ok((n, from)) => tunnel.handle_datagram(now, from, &buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                while let Some(msg) = tunnel.recv() {
                    deliver(&msg);
                }
                self.flush(now);
                Ok(())
            }
        }
    }

    /// Fires QUIC's due timers (acknowledgements, retransmissions of handshake data).
    pub fn handle_timers(&mut self, now: Instant) {
        if let Io::Quic { tunnel, .. } = &mut self.io {
            if tunnel.poll_timeout().is_some_and(|t| t <= now) {
                tunnel.handle_timeout(now);
                self.flush(now);
            }
        }
    }

    /// The largest TURN message this link carries as one datagram (QUIC), if limited.
    pub fn max_message(&mut self) -> Option<usize> {
        match &mut self.io {
            Io::Quic { tunnel, .. } => Some(tunnel.max_datagram().unwrap_or(0)),
            _ => None,
        }
    }

    /// Ends the connection politely (the relay frees the allocation at once).
    pub fn close(&mut self, now: Instant) {
        match &mut self.io {
            Io::Udp { .. } => {}
            Io::Tls { tls, .. } => tls.send_close_notify(),
            Io::Quic { tunnel, .. } => tunnel.close(now),
        }
        self.flush(now);
    }
}

/// The length of the TURN message at the front of a stream (RFC 8656 §12.5: a
/// ChannelData message padded to a multiple of four; a STUN message is one already),
/// once its header is there.
fn frame_len(b: &[u8]) -> Option<usize> {
    let len = usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
    Some(if b[0] & 0xC0 == 0x40 {
        (4 + len).next_multiple_of(4)
    } else {
        20 + len
    })
}

/// A nonblocking TCP connection (Nagle off, as TURN clients run it), retried for a
/// while: the TLS listener may come up a moment after the UDP one the start-up check
/// saw.
fn connect_tcp(server: SocketAddr) -> Result<TcpStream, String> {
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&server, Duration::from_secs(1)) {
            Ok(s) => {
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) if start.elapsed() > Duration::from_secs(3) => {
                return Err(format!("connect {server}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The links of one measurement and the poller that watches them.
pub struct Links {
    pub links: Vec<Link>,
    pub epoll: Epoll,
}

/// How long a TURN request over UDP or QUIC datagrams waits before it is sent again.
const RETRANSMIT_AFTER: Duration = Duration::from_millis(300);

/// Opens `n` links over `transport`, each with an allocation, a permission for `peer`
/// and channel 0x4000 bound to it; every step runs on all links at once. Fails with
/// the first reason when any link fails or `deadline` passes.
pub fn connect_all(
    transport: Transport,
    crypto: &rustls::ClientConfig,
    creds: &Creds,
    n: usize,
    peer: SocketAddrV4,
    deadline: Duration,
) -> Result<Links, String> {
    let start = Instant::now();
    let epoll = Epoll::new().map_err(|e| e.to_string())?;
    let mut links = Vec::with_capacity(n);
    for i in 0..n {
        let link = Link::open(transport, crypto, Instant::now())?;
        epoll
            .add(link.fd(), i as u64)
            .map_err(|e| format!("epoll: {e}"))?;
        links.push(link);
    }
    let mut set = Links { links, epoll };
    let mut buf = vec![0u8; 65536];
    let mut ready = Vec::new();
    // Transport handshakes first, all in flight together.
    loop {
        let mut open = 0;
        for link in &set.links {
            open += usize::from(link.ready()?);
        }
        if open == n {
            break;
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "{}: {open} of {n} handshakes done in {deadline:?}",
                transport.name()
            ));
        }
        set.pump(&mut buf, &mut ready, 5, &mut |_, _| {})?;
        set.fire_timers(Instant::now());
    }
    // Then the TURN handshake on every link.
    let peers = [peer];
    let mut rng = rand::thread_rng();
    let mut hs: Vec<(Handshake, Instant, bool)> = (0..n)
        .map(|_| (Handshake::new(), Instant::now(), false))
        .collect();
    let now = Instant::now();
    for (link, (h, sent, _)) in set.links.iter_mut().zip(hs.iter_mut()) {
        build_request(h, creds, &peers, &mut rng);
        link.send(&h.msg, now);
        *sent = now;
    }
    let mut failure: Option<String> = None;
    while hs.iter().any(|(_, _, done)| !done) {
        if start.elapsed() > deadline {
            let left = hs.iter().filter(|h| !h.2).count();
            return Err(format!(
                "{}: {left} of {n} TURN handshakes unfinished in {deadline:?}",
                transport.name()
            ));
        }
        let mut answers: Vec<(usize, Vec<u8>)> = Vec::new();
        set.pump(&mut buf, &mut ready, 5, &mut |i, msg| {
            answers.push((i, msg.to_vec()))
        })?;
        let now = Instant::now();
        set.fire_timers(now);
        for (i, msg) in answers {
            let (h, sent, done) = &mut hs[i];
            if *done {
                continue;
            }
            match handle_response(h, &msg, &peers) {
                Verdict::Ignore => {}
                Verdict::Next => {
                    build_request(h, creds, &peers, &mut rng);
                    set.links[i].send(&h.msg, now);
                    *sent = now;
                }
                Verdict::Done => {
                    *done = true;
                    set.links[i].relayed = h.relayed;
                }
                Verdict::Failed(why) => {
                    failure.get_or_insert(format!("{} link {i}: {why}", transport.name()));
                    *done = true;
                }
            }
        }
        if transport != Transport::Tls {
            for (link, (h, sent, done)) in set.links.iter_mut().zip(hs.iter_mut()) {
                if !*done && sent.elapsed() > RETRANSMIT_AFTER {
                    link.send(&h.msg, now);
                    *sent = now;
                }
            }
        }
    }
    match failure {
        Some(why) => Err(why),
        None => Ok(set),
    }
}

impl Links {
    /// Waits up to `timeout_ms` for readable links, reads them, and hands each message
    /// to `deliver(link, message)`. `ready` keeps the tokens that were ready (the
    /// caller's own sockets registered on `epoll` among them).
    pub fn pump(
        &mut self,
        buf: &mut [u8],
        ready: &mut Vec<u64>,
        timeout_ms: i32,
        deliver: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<(), String> {
        self.epoll
            .wait(timeout_ms, ready)
            .map_err(|e| format!("epoll: {e}"))?;
        let now = Instant::now();
        for &token in ready.iter() {
            let i = token as usize;
            if let Some(link) = self.links.get_mut(i) {
                link.receive(now, buf, &mut |msg| deliver(i, msg))
                    .map_err(|e| format!("link {i}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Fires every link's due QUIC timers.
    pub fn fire_timers(&mut self, now: Instant) {
        for link in &mut self.links {
            link.handle_timers(now);
        }
    }

    /// Closes every link (the relay frees their allocations).
    pub fn close(&mut self) {
        let now = Instant::now();
        for link in &mut self.links {
            link.close(now);
        }
    }
}
