//! The sockets one worker owns, their poll tokens, and where an outgoing packet goes.
//! Owned by exactly one thread: no locks.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mio::net::{TcpListener, UdpSocket};
use mio::{Interest, Registry, Token};

use super::batch::set_int_option;
use super::bind;
use super::conn_limits::ConnLimits;
use super::stream::{Close, ReadStatus, SendStatus, StreamConn};
use crate::metrics::ShellStats;
use crate::proto::{ClientId, Family, RelayKey, Transport};
use crate::quic::QuicListener;

/// A token is `kind << KIND_SHIFT | id`, so the kind of a ready socket is known without a
/// lookup, and a relay token carries its `RelayKey` itself.
const KIND_SHIFT: u32 = 24;
const ID_MASK: usize = (1 << KIND_SHIFT) - 1;

/// What a poll token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Waker,
    UdpListener(usize),
    StreamListener(usize),
    Relay(RelayKey),
    Conn(usize),
    QuicListener(usize),
}

impl Source {
    pub(crate) fn token(self) -> Token {
        let (kind, id) = match self {
            Source::Waker => (0, 0),
            Source::UdpListener(i) => (1, i),
            Source::StreamListener(i) => (2, i),
            Source::Relay(key) => {
                let family = match key.family {
                    Family::V4 => 0,
                    Family::V6 => 1,
                };
                (3, family << 16 | usize::from(key.port.0))
            }
            Source::Conn(slot) => (4, slot),
            Source::QuicListener(i) => (5, i),
        };
        Token(kind << KIND_SHIFT | (id & ID_MASK))
    }

    pub(crate) fn of(token: Token) -> Option<Source> {
        let id = token.0 & ID_MASK;
        Some(match token.0 >> KIND_SHIFT {
            0 => Source::Waker,
            1 => Source::UdpListener(id),
            2 => Source::StreamListener(id),
            3 => Source::Relay(RelayKey {
                family: if id >> 16 == 0 {
                    Family::V4
                } else {
                    Family::V6
                },
                port: crate::proto::RelayPort((id & 0xFFFF) as u16),
            }),
            4 => Source::Conn(id),
            5 => Source::QuicListener(id),
            _ => return None,
        })
    }
}

pub(crate) struct UdpListener {
    pub(crate) sock: UdpSocket,
    /// quinn-udp's receive state: GRO and packet-info are enabled on this socket.
    pub(crate) state: quinn_udp::UdpSocketState,
    /// The bound address; the core sees it as `ClientId::local` and replies go out here.
    pub(crate) local: SocketAddr,
}

pub(crate) struct StreamListener {
    pub(crate) sock: TcpListener,
    /// `Tcp` or `Tls`.
    pub(crate) transport: Transport,
}

/// A worker's sockets. Methods never panic on socket errors: they count and move on.
pub(crate) struct Sockets {
    pub(crate) registry: Registry,
    pub(crate) udp: Vec<UdpListener>,
    pub(crate) listeners: Vec<StreamListener>,
    /// QUIC listeners: each carries CONNECT-UDP tunnels, one client each.
    pub(crate) quic: Vec<QuicListener>,
    pub(crate) relays: HashMap<RelayKey, UdpSocket>,
    /// Stream connections by slot (the slot is in the poll token); `free` lists empty slots.
    conns: Vec<Option<StreamConn>>,
    free: Vec<usize>,
    by_client: HashMap<ClientId, usize>,
    /// Relay bind address per family (`None`: the family is not offered).
    relay_v4: Option<IpAddr>,
    relay_v6: Option<IpAddr>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Receive state for relay sockets, made once per worker by `batch::plain_state`
    /// from a throwaway socket. Relay sockets are never configured through quinn-udp,
    /// so GRO stays off on them: each peer datagram needs its own headroom for in-place
    /// framing.
    pub(crate) relay_state: quinn_udp::UdpSocketState,
    /// Whether the kernel takes UDP GSO sends; cleared if a GSO send ever fails.
    pub(crate) gso: bool,
    /// Stream clients whose connection closed; the worker tells the core.
    pub(crate) closed: Vec<ClientId>,
    pub(crate) stats: ShellStats,
    /// The connection caps and timeout, shared by every worker.
    pub(crate) conn_limits: Arc<ConnLimits>,
}

impl Sockets {
    pub(crate) fn new(
        registry: Registry,
        relay_v4: Option<IpAddr>,
        relay_v6: Option<IpAddr>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<Sockets> {
        let relay_state = super::batch::plain_state()?;
        let gso = relay_state.max_gso_segments() > 1;
        Ok(Sockets {
            relay_state,
            gso,
            registry,
            udp: Vec::new(),
            listeners: Vec::new(),
            quic: Vec::new(),
            relays: HashMap::new(),
            conns: Vec::new(),
            free: Vec::new(),
            by_client: HashMap::new(),
            relay_v4,
            relay_v6,
            tls,
            closed: Vec::new(),
            conn_limits: Arc::new(ConnLimits::new(Default::default())),
            stats: ShellStats::default(),
        })
    }

    pub(crate) fn add_udp_listener(&mut self, mut sock: UdpSocket) -> io::Result<()> {
        let local = sock.local_addr()?;
        let state = quinn_udp::UdpSocketState::new(quinn_udp::UdpSockRef::from(&sock))?;
        super::batch::restore_pmtu_default(&sock, local.is_ipv6());
        let token = Source::UdpListener(self.udp.len()).token();
        self.registry
            .register(&mut sock, token, Interest::READABLE)?;
        self.udp.push(UdpListener { sock, state, local });
        Ok(())
    }

    pub(crate) fn add_stream_listener(
        &mut self,
        mut sock: TcpListener,
        transport: Transport,
    ) -> io::Result<()> {
        let token = Source::StreamListener(self.listeners.len()).token();
        self.registry
            .register(&mut sock, token, Interest::READABLE)?;
        self.listeners.push(StreamListener { sock, transport });
        Ok(())
    }

    pub(crate) fn add_quic_listener(&mut self, mut listener: QuicListener) -> io::Result<()> {
        let token = Source::QuicListener(self.quic.len()).token();
        self.registry
            .register(&mut listener.sock, token, Interest::READABLE)?;
        self.quic.push(listener);
        Ok(())
    }

    /// Binds and registers the relay socket the core asked for.
    pub(crate) fn open_relay(&mut self, key: RelayKey) -> io::Result<()> {
        let ip = match key.family {
            Family::V4 => self.relay_v4,
            Family::V6 => self.relay_v6,
        };
        let ip = ip.ok_or_else(|| {
            io::Error::new(io::ErrorKind::Unsupported, "relay family not configured")
        })?;
        let mut sock = bind::relay_socket(SocketAddr::new(ip, key.port.0))?;
        self.registry
            .register(&mut sock, Source::Relay(key).token(), Interest::READABLE)?;
        // A stale socket under the same key (the core reusing a port) is replaced.
        if let Some(mut old) = self.relays.insert(key, sock) {
            let _ = self.registry.deregister(&mut old);
        }
        Ok(())
    }

    pub(crate) fn close_relay(&mut self, key: RelayKey) {
        if let Some(mut sock) = self.relays.remove(&key) {
            // Dropping closes the socket, which also leaves epoll; nothing to recover.
            let _ = self.registry.deregister(&mut sock);
        }
    }

    /// Sets the DF bit on everything relay socket `key` sends (path MTU discovery "do":
    /// the kernel refuses oversize datagrams instead of fragmenting them).
    pub(crate) fn set_dont_fragment(&mut self, key: RelayKey) {
        let Some(sock) = self.relays.get(&key) else {
            return;
        };
        let result = match key.family {
            Family::V4 => set_int_option(
                sock,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_DO,
            ),
            Family::V6 => set_int_option(
                sock,
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_DO,
            ),
        };
        if let Err(e) = result {
            tracing::debug!(?key, "cannot set DONT-FRAGMENT: {e}");
        }
    }

    /// Sends one message to a client on the transport it reached us by.
    pub(crate) fn send_to_client(&mut self, client: ClientId, msg: &[u8]) {
        if client.transport == Transport::Quic {
            let sent = self
                .quic
                .iter_mut()
                .find(|l| l.local == client.local)
                .is_some_and(|l| l.send(client, msg));
            if !sent {
                tracing::trace!(%client, "message for a closed QUIC tunnel");
                self.stats.send_errors += 1;
            }
            return;
        }
        if client.transport == Transport::Udp {
            match self.udp.iter().find(|l| l.local == client.local) {
                Some(listener) => {
                    count_send(&mut self.stats, listener.sock.send_to(msg, client.remote))
                }
                None => {
                    tracing::trace!(%client, "no UDP listener for this client");
                    self.stats.send_errors += 1;
                }
            }
            return;
        }
        let Some(&slot) = self.by_client.get(&client) else {
            // The connection closed after the core queued this message.
            tracing::trace!(%client, "message for a closed stream connection");
            self.stats.send_errors += 1;
            return;
        };
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            self.stats.send_errors += 1;
            return;
        };
        match conn.send(&self.registry, Source::Conn(slot).token(), msg) {
            Ok(SendStatus::Queued) => {}
            Ok(SendStatus::Backlog) => self.stats.send_backlog += 1,
            Err(reason) => {
                self.stats.send_errors += 1;
                self.close_conn(slot, reason);
            }
        }
    }

    /// Registers an accepted connection and returns its slot.
    pub(crate) fn add_conn(&mut self, mut conn: StreamConn) -> io::Result<usize> {
        let slot = self.free.pop().unwrap_or(self.conns.len());
        if slot > ID_MASK {
            // The slot would not fit in a token; far beyond any file descriptor limit.
            if let Some(counted) = conn.counted.take() {
                self.conn_limits.release(counted);
            }
            return Err(io::Error::other("too many stream connections"));
        }
        if let Err(e) = conn.register(&self.registry, Source::Conn(slot).token()) {
            if slot < self.conns.len() {
                self.free.push(slot);
            }
            if let Some(counted) = conn.counted.take() {
                self.conn_limits.release(counted);
            }
            return Err(e);
        }
        self.by_client.insert(conn.client, slot);
        match self.conns.get_mut(slot) {
            Some(entry) => *entry = Some(conn),
            None => self.conns.push(Some(conn)),
        }
        self.stats.connections_accepted += 1;
        Ok(slot)
    }

    pub(crate) fn conn(&self, slot: usize) -> Option<&StreamConn> {
        self.conns.get(slot).and_then(Option::as_ref)
    }

    pub(crate) fn conn_mut(&mut self, slot: usize) -> Option<&mut StreamConn> {
        self.conns.get_mut(slot).and_then(Option::as_mut)
    }

    /// Writes a connection's pending output. `false`: the connection is gone (closed now
    /// or before).
    pub(crate) fn flush_conn(&mut self, slot: usize) -> bool {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        match conn.flush(&self.registry, Source::Conn(slot).token()) {
            Ok(()) => true,
            Err(reason) => {
                self.close_conn(slot, reason);
                false
            }
        }
    }

    /// One read on a connection (see [`StreamConn::read_some`]); `None` if it is gone.
    pub(crate) fn read_conn(&mut self, slot: usize) -> Option<Result<ReadStatus, Close>> {
        let conn = self.conns.get_mut(slot).and_then(Option::as_mut)?;
        Some(conn.read_some(&self.registry, Source::Conn(slot).token()))
    }

    pub(crate) fn tls_config(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.tls.as_ref()
    }

    /// A reloaded certificate: connections accepted from now on use it; those open
    /// keep the one they were accepted with.
    pub(crate) fn set_tls_config(&mut self, config: Arc<rustls::ServerConfig>) {
        self.tls = Some(config);
    }

    /// The core says a request from `client` passed authentication: its TCP/TLS
    /// connection or QUIC connection is no longer timed out as unauthenticated.
    pub(crate) fn mark_authenticated(&mut self, client: ClientId) {
        if client.transport == Transport::Quic {
            if let Some(l) = self.quic.iter_mut().find(|l| l.local == client.local) {
                l.mark_authenticated(client);
            }
            return;
        }
        let Some(&slot) = self.by_client.get(&client) else {
            return;
        };
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            conn.authenticated = true;
        }
    }

    /// Closes every connection that has had no authenticated request for `timeout`
    /// since it was accepted.
    pub(crate) fn close_unauthenticated(
        &mut self,
        now: std::time::Instant,
        timeout: std::time::Duration,
    ) {
        for slot in 0..self.conns.len() {
            let due = self.conn(slot).is_some_and(|c| {
                !c.authenticated && now.saturating_duration_since(c.accepted) >= timeout
            });
            if due {
                self.close_conn(slot, Close::Unauthenticated);
            }
        }
    }

    /// Drops a connection and remembers its client so the core can free its allocation.
    pub(crate) fn close_conn(&mut self, slot: usize, reason: Close) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        tracing::debug!(client = %conn.client, %reason, "stream connection closed");
        conn.deregister(&self.registry);
        if let Some(counted) = conn.counted.take() {
            self.conn_limits.release(counted);
        }
        if matches!(reason, Close::Unauthenticated) {
            self.stats.connections_unauthenticated += 1;
        }
        self.by_client.remove(&conn.client);
        self.free.push(slot);
        self.closed.push(conn.client);
    }
}

/// Sends `payload` to `peer` from the relay socket `relay`.
pub(crate) fn send_on_relay(
    relays: &HashMap<RelayKey, UdpSocket>,
    relay: RelayKey,
    peer: SocketAddr,
    payload: &[u8],
) -> io::Result<usize> {
    match relays.get(&relay) {
        Some(sock) => sock.send_to(payload, peer),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "forward on a relay socket that is not open",
        )),
    }
}

/// Counts the outcome of one datagram send.
pub(crate) fn count_send(stats: &mut ShellStats, result: io::Result<usize>) {
    match result {
        Ok(_) => {}
        // The socket buffer is full: drop the packet rather than wait (media is
        // loss-tolerant, and waiting would stall every other client of this worker).
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => stats.send_backlog += 1,
        Err(e) => {
            tracing::trace!("send failed: {e}");
            stats.send_errors += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::RelayPort;

    #[test]
    fn tokens_round_trip() {
        let sources = [
            Source::Waker,
            Source::UdpListener(3),
            Source::StreamListener(0),
            Source::Relay(RelayKey {
                family: Family::V6,
                port: RelayPort(65535),
            }),
            Source::Relay(RelayKey {
                family: Family::V4,
                port: RelayPort(0),
            }),
            Source::Conn(123_456),
            Source::QuicListener(2),
        ];
        for source in sources {
            assert_eq!(Source::of(source.token()), Some(source));
        }
    }
}
