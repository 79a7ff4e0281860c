//! One TCP or TLS client connection: its socket, the bytes received but not yet framed,
//! and the bytes waiting for the socket to accept them.
//!
//! On stream transports STUN messages and ChannelData messages travel back to back
//! (RFC 8656 §12.5); this module only cuts the byte stream into messages. What a message
//! means is the core's business.

use std::io::{self, Read, Write};
use std::ops::Range;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::conn_limits::Counted;
use crate::proto::framing::{next_frame, Frame};
use crate::proto::ClientId;

/// Pending output above which a new message for this connection is dropped instead of
/// queued: media is loss-tolerant, and a slow reader must never grow our memory or stall
/// the worker.
pub(crate) const MAX_PENDING_OUTPUT: usize = 1 << 20;
/// Upper bound of the input buffer. The largest frame is a STUN message of 20 + 65535
/// bytes, so a full buffer always starts with a complete frame and never deadlocks.
const MAX_INPUT: usize = 128 * 1024;
/// Initial input buffer; most connections carry small STUN and ChannelData messages.
const INITIAL_INPUT: usize = 4096;
/// When the output buffer empties and has grown past this, give the memory back.
const KEEP_OUTPUT_CAPACITY: usize = 64 * 1024;

/// Why a connection is being closed (for logs only).
#[derive(Debug)]
pub(crate) enum Close {
    Eof,
    Io(io::Error),
    Tls(rustls::Error),
    InvalidFrame,
    /// No request passed authentication within `limits.unauthenticated_timeout_secs`.
    Unauthenticated,
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::Eof => f.write_str("closed by the client"),
            Close::Io(e) => write!(f, "socket error: {e}"),
            Close::Tls(e) => write!(f, "TLS error: {e}"),
            Close::InvalidFrame => f.write_str("neither STUN nor ChannelData"),
            Close::Unauthenticated => f.write_str("no authenticated request in time"),
        }
    }
}

/// What one read attempt achieved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadStatus {
    /// Bytes may have arrived; try again after framing them.
    More,
    /// The socket is drained until the next readiness event.
    Drained,
}

/// What happened to a message handed to [`StreamConn::send`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendStatus {
    Queued,
    /// Dropped because too much output is pending.
    Backlog,
}

pub(crate) struct StreamConn {
    sock: TcpStream,
    /// The 5-tuple the core knows this connection by.
    pub(crate) client: ClientId,
    /// `Some` for TLS: plaintext goes through rustls before reaching `sock`.
    tls: Option<Box<rustls::ServerConnection>>,
    /// Received plaintext: `input[start..filled]` is not yet consumed by framing.
    input: Vec<u8>,
    start: usize,
    filled: usize,
    /// Wire bytes (ciphertext for TLS): `output[sent..]` is waiting for the socket.
    output: Vec<u8>,
    sent: usize,
    /// Whether WRITABLE interest is registered (only while output is pending).
    wants_writable: bool,
    /// When it was accepted: without an authenticated request by
    /// `accepted + limits.unauthenticated_timeout_secs`, it is closed.
    pub(crate) accepted: Instant,
    /// A request on it has passed authentication (the core said so).
    pub(crate) authenticated: bool,
    /// Its place in the shared connection counts, given back when it closes.
    pub(crate) counted: Option<Counted>,
}

impl StreamConn {
    pub(crate) fn new(
        sock: TcpStream,
        client: ClientId,
        tls: Option<rustls::ServerConnection>,
        accepted: Instant,
    ) -> StreamConn {
        StreamConn {
            sock,
            client,
            tls: tls.map(Box::new),
            input: vec![0; INITIAL_INPUT],
            start: 0,
            filled: 0,
            output: Vec::new(),
            sent: 0,
            wants_writable: false,
            accepted,
            authenticated: false,
            counted: None,
        }
    }

    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.sock, token, Interest::READABLE)
    }

    pub(crate) fn deregister(&mut self, registry: &Registry) {
        // Dropping the socket removes it from epoll anyway; an error here changes nothing.
        let _ = registry.deregister(&mut self.sock);
    }

    /// One read from the socket into the input buffer (for TLS: one `read_tls`, then all
    /// plaintext that became available, plus any handshake bytes rustls wants to send).
    pub(crate) fn read_some(
        &mut self,
        registry: &Registry,
        token: Token,
    ) -> Result<ReadStatus, Close> {
        self.make_room()?;
        let Some(tls) = self.tls.as_mut() else {
            let Some(space) = self.input.get_mut(self.filled..) else {
                return Err(Close::InvalidFrame);
            };
            return match self.sock.read(space) {
                Ok(0) => Err(Close::Eof),
                Ok(n) => {
                    self.filled += n;
                    Ok(ReadStatus::More)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadStatus::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(ReadStatus::More),
                Err(e) => Err(Close::Io(e)),
            };
        };
        let status = match tls.read_tls(&mut self.sock) {
            Ok(0) => return Err(Close::Eof),
            Ok(_) => ReadStatus::More,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadStatus::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => ReadStatus::More,
            Err(e) => return Err(Close::Io(e)),
        };
        let processed = tls.process_new_packets();
        // Handshake messages and alerts (including the one describing an error) go out
        // before anything else; a failed flush is reported by the error path below.
        let flushed = self
            .pump_tls_output()
            .map_err(Close::Io)
            .and_then(|()| self.flush(registry, token));
        if let Err(e) = processed {
            return Err(Close::Tls(e));
        }
        flushed?;
        self.read_plaintext()?;
        Ok(status)
    }

    /// Moves decrypted bytes from rustls into the input buffer.
    fn read_plaintext(&mut self) -> Result<(), Close> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        loop {
            // rustls holds at most a few records of plaintext; the input buffer always has
            // room for them after framing, as the largest frame is smaller than MAX_INPUT.
            if self.filled == self.input.len() {
                if self.input.len() >= MAX_INPUT {
                    return Err(Close::InvalidFrame);
                }
                let grown = (self.input.len() * 2).min(MAX_INPUT);
                self.input.resize(grown, 0);
            }
            let Some(space) = self.input.get_mut(self.filled..) else {
                return Err(Close::InvalidFrame);
            };
            match tls.reader().read(space) {
                // close_notify: the client is done.
                Ok(0) => return Err(Close::Eof),
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(Close::Io(e)),
            }
        }
    }

    /// Compacts consumed bytes away and grows the buffer if it is full.
    fn make_room(&mut self) -> Result<(), Close> {
        if self.start > 0 {
            self.input.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        if self.filled == self.input.len() {
            // Unreachable with well-formed framing (see MAX_INPUT); refuse rather than grow.
            if self.input.len() >= MAX_INPUT {
                return Err(Close::InvalidFrame);
            }
            let grown = (self.input.len() * 2).min(MAX_INPUT);
            self.input.resize(grown, 0);
        }
        Ok(())
    }

    /// The next complete message in the input, as a range of [`Self::input`].
    /// `Ok(None)`: wait for more bytes. `Err`: the stream is not TURN; close it.
    pub(crate) fn next_message(&self) -> Result<Option<(Range<usize>, usize)>, Close> {
        let pending = self.input.get(self.start..self.filled).unwrap_or_default();
        match next_frame(pending) {
            Frame::Incomplete => Ok(None),
            Frame::Invalid => Err(Close::InvalidFrame),
            Frame::Complete {
                consume,
                message_len,
            } => Ok(Some((self.start..self.start + message_len, consume))),
        }
    }

    /// The bytes of a message returned by [`Self::next_message`].
    pub(crate) fn input(&self, range: Range<usize>) -> &[u8] {
        self.input.get(range).unwrap_or_default()
    }

    /// Marks `n` bytes at the front of the input as handled.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.filled);
    }

    /// Queues one whole message (never a part of one: that would corrupt the framing)
    /// and writes as much as the socket takes.
    pub(crate) fn send(
        &mut self,
        registry: &Registry,
        token: Token,
        msg: &[u8],
    ) -> Result<SendStatus, Close> {
        let pending = self.output.len() - self.sent;
        // TLS adds a 5-byte header and a 16-byte tag (plus a content-type byte) per record.
        let overhead = if self.tls.is_some() { 64 } else { 0 };
        if pending + msg.len() + overhead > MAX_PENDING_OUTPUT {
            return Ok(SendStatus::Backlog);
        }
        match self.tls.as_mut() {
            Some(tls) => {
                tls.writer().write_all(msg).map_err(Close::Io)?;
                self.pump_tls_output().map_err(Close::Io)?;
            }
            None => self.output.extend_from_slice(msg),
        }
        self.flush(registry, token)?;
        Ok(SendStatus::Queued)
    }

    /// Moves everything rustls wants to send into `output` (writing into a `Vec` cannot
    /// block), so that pending output is measured in one place.
    fn pump_tls_output(&mut self) -> io::Result<()> {
        if let Some(tls) = self.tls.as_mut() {
            while tls.wants_write() {
                tls.write_tls(&mut self.output)?;
            }
        }
        Ok(())
    }

    /// Writes pending output until done or the socket is full, keeping WRITABLE interest
    /// registered exactly while bytes are pending.
    pub(crate) fn flush(&mut self, registry: &Registry, token: Token) -> Result<(), Close> {
        while self.sent < self.output.len() {
            let Some(rest) = self.output.get(self.sent..) else {
                break;
            };
            match self.sock.write(rest) {
                Ok(0) => return Err(Close::Eof),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Close::Io(e)),
            }
        }
        let pending = self.sent < self.output.len();
        if !pending {
            self.output.clear();
            self.sent = 0;
            if self.output.capacity() > KEEP_OUTPUT_CAPACITY {
                self.output.shrink_to(KEEP_OUTPUT_CAPACITY);
            }
        }
        if pending != self.wants_writable {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry
                .reregister(&mut self.sock, token, interest)
                .map_err(Close::Io)?;
            self.wants_writable = pending;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that stops reading: whole messages are queued up to the cap, then new ones
    /// are dropped whole, and what was queued still arrives intact and in order.
    #[test]
    fn slow_reader_gets_whole_messages_and_backlog_is_capped() {
        use crate::proto::Transport;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut reader = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, remote) = listener.accept().unwrap();
        server_side.set_nonblocking(true).unwrap();
        let local = server_side.local_addr().unwrap();
        let poll = mio::Poll::new().unwrap();
        let client = ClientId {
            transport: Transport::Tcp,
            remote,
            local,
        };
        let mut conn = StreamConn::new(
            TcpStream::from_std(server_side),
            client,
            None,
            std::time::Instant::now(),
        );
        conn.register(poll.registry(), Token(1)).unwrap();

        // ChannelData with 64 KiB - 4 of payload: each message is exactly 64 KiB.
        let mut queued = 0u32;
        loop {
            let mut msg = vec![0x40, 0x00, 0xFF, 0xFC];
            msg.resize(65536, queued as u8);
            match conn.send(poll.registry(), Token(1), &msg).unwrap() {
                SendStatus::Queued => queued += 1,
                SendStatus::Backlog => break,
            }
            assert!(queued < 1000, "backlog never reported");
        }
        assert!(conn.output.len() - conn.sent <= MAX_PENDING_OUTPUT);
        assert!(
            conn.wants_writable,
            "WRITABLE interest while output is pending"
        );

        reader
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let check = std::thread::spawn(move || {
            let mut msg = vec![0u8; 65536];
            for i in 0..queued {
                reader.read_exact(&mut msg).unwrap();
                assert_eq!(msg[..4], [0x40, 0x00, 0xFF, 0xFC]);
                assert!(
                    msg[4..].iter().all(|&b| b == i as u8),
                    "message {i} corrupted"
                );
            }
        });
        while conn.sent < conn.output.len() {
            conn.flush(poll.registry(), Token(1)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        check.join().unwrap();
        assert!(!conn.wants_writable, "no WRITABLE interest once drained");
    }

    #[test]
    fn other_first_bytes_are_invalid() {
        assert_eq!(next_frame(&[0xFF, 0, 0, 0]), Frame::Invalid);
        assert_eq!(next_frame(&[0x80, 0, 0, 4]), Frame::Invalid);
        assert_eq!(next_frame(&[0x00, 0x01, 0x00, 0x03]), Frame::Invalid);
    }
}
