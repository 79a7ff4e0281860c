//! `turnpike tunnel`: a local UDP port that any ordinary TURN client can use as its TURN
//! server, carried to a Turnpike relay over QUIC.
//!
//! Each local client address (one TURN 5-tuple) gets its own tunnel — its own QUIC
//! connection from its own UDP socket — so the relay sees one TURN client per local
//! client, as it would without the tunnel. When the machine's route to the relay starts
//! leaving from another local address (a network change), each tunnel's socket is
//! replaced and QUIC migrates the connection: the TURN client notices nothing, and its
//! allocation keeps its relayed address.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::client::{TunnelClient, TunnelState, Verify};

/// Token of the local socket the TURN clients talk to; tunnels use 1, 2, ….
const LOCAL: Token = Token(0);
/// How often the route to the relay is checked for a new local address.
const ROUTE_CHECK: Duration = Duration::from_secs(1);
/// A tunnel whose local client has been silent this long is closed (TURN clients
/// refresh every few minutes; a gone client would otherwise hold an allocation).
const IDLE: Duration = Duration::from_secs(15 * 60);

/// What `turnpike tunnel` was asked to do.
#[derive(Debug, Clone)]
pub struct TunnelOptions {
    /// The relay's QUIC listener.
    pub relay: SocketAddr,
    /// TLS server name to ask for and verify.
    pub server_name: String,
    /// How to check the relay's certificate.
    pub verify: Verify,
    /// The local UDP address TURN clients use as their server.
    pub local: SocketAddr,
    /// Set to move every tunnel to a new socket now, as on a network change (for
    /// clients that know their network changed, and for tests); cleared when done.
    pub rebind: Arc<AtomicBool>,
    /// Counts tunnels moved to a new socket (network changes and `rebind`).
    pub moved: Arc<std::sync::atomic::AtomicU64>,
}

struct Tunnel {
    client: TunnelClient,
    sock: UdpSocket,
    token: Token,
    /// Messages from the local client waiting for the tunnel to open.
    queued: Vec<Vec<u8>>,
    last_heard: Instant,
}

/// Runs until `stop` is set. Returns the bound local address through `on_ready` first.
pub fn run(
    options: TunnelOptions,
    stop: Arc<AtomicBool>,
    on_ready: impl FnOnce(SocketAddr),
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut local = UdpSocket::bind(options.local)?;
    poll.registry()
        .register(&mut local, LOCAL, Interest::READABLE)?;
    on_ready(local.local_addr()?);
    let mut tunnels: HashMap<SocketAddr, Tunnel> = HashMap::new();
    let mut by_token: HashMap<Token, SocketAddr> = HashMap::new();
    let mut next_token = 1usize;
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(65_535);
    let mut route_ip = route_to(options.relay);
    let mut next_route_check = Instant::now() + ROUTE_CHECK;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let deadline = tunnels
            .values_mut()
            .filter_map(|t| t.client.poll_timeout())
            .fold(next_route_check, Instant::min);
        let timeout = deadline
            .saturating_duration_since(now)
            .min(Duration::from_millis(200));
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let now = Instant::now();
        for event in events.iter() {
            if event.token() == LOCAL {
                // From TURN clients: each one's messages go into its own tunnel.
                while let Ok((n, from)) = local.recv_from(&mut buf) {
                    let tunnel = match tunnels.get_mut(&from) {
                        Some(t) => t,
                        None => {
                            let token = Token(next_token);
                            next_token += 1;
                            let tunnel = open(&options, &poll, token, now)?;
                            by_token.insert(token, from);
                            tunnels.entry(from).or_insert(tunnel)
                        }
                    };
                    tunnel.last_heard = now;
                    let msg = &buf[..n];
                    if tunnel.client.state() == TunnelState::Open {
                        tunnel.client.send(msg);
                    } else if tunnel.queued.len() < 64 {
                        tunnel.queued.push(msg.to_vec());
                    }
                }
            } else if let Some(tunnel) = by_token
                .get(&event.token())
                .and_then(|from| tunnels.get_mut(from))
            {
                while let Ok((n, from)) = tunnel.sock.recv_from(&mut buf) {
                    tunnel.client.handle_datagram(now, from, &buf[..n]);
                }
            }
        }
        // A network change: the route to the relay leaves from another address now, or
        // the caller says so.
        let mut moved = options.rebind.swap(false, Ordering::AcqRel);
        if moved {
            tracing::info!("moving tunnels to new sockets");
        }
        if now >= next_route_check {
            next_route_check = now + ROUTE_CHECK;
            let ip = route_to(options.relay);
            if ip.is_some() && ip != route_ip {
                tracing::info!(from = ?route_ip, to = ?ip, "local address changed: migrating tunnels");
                route_ip = ip;
                moved = true;
            }
        }
        let mut gone = Vec::new();
        for (from, tunnel) in tunnels.iter_mut() {
            if moved {
                match rebind(tunnel, &poll, options.relay) {
                    Ok(()) => {
                        options.moved.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!("cannot move a tunnel to the new address: {e}"),
                }
            }
            if tunnel.client.poll_timeout().is_some_and(|t| t <= now) {
                tunnel.client.handle_timeout(now);
            }
            if tunnel.client.state() == TunnelState::Open {
                for msg in tunnel.queued.drain(..) {
                    tunnel.client.send(&msg);
                }
            }
            while let Some(msg) = tunnel.client.recv() {
                if let Err(e) = local.send_to(&msg, *from) {
                    tracing::trace!("to the local client: {e}");
                }
            }
            while let Some(dst) = tunnel.client.poll_transmit(now, &mut out) {
                if let Err(e) = tunnel.sock.send_to(&out, dst) {
                    tracing::trace!("to the relay: {e}");
                }
            }
            match tunnel.client.state() {
                TunnelState::Refused(status) => {
                    tracing::warn!(status, "the relay refused the tunnel");
                    gone.push(*from);
                }
                TunnelState::Closed => gone.push(*from),
                _ if now.duration_since(tunnel.last_heard) > IDLE => {
                    tunnel.client.close(now);
                    gone.push(*from);
                }
                _ => {}
            }
        }
        for from in gone {
            if let Some(mut tunnel) = tunnels.remove(&from) {
                by_token.remove(&tunnel.token);
                let _ = poll.registry().deregister(&mut tunnel.sock);
            }
        }
    }
    let now = Instant::now();
    for tunnel in tunnels.values_mut() {
        tunnel.client.close(now);
        while let Some(dst) = tunnel.client.poll_transmit(now, &mut out) {
            let _ = tunnel.sock.send_to(&out, dst);
        }
    }
    Ok(())
}

fn unspecified(relay: SocketAddr) -> SocketAddr {
    match relay {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

fn open(options: &TunnelOptions, poll: &Poll, token: Token, now: Instant) -> io::Result<Tunnel> {
    let mut sock = UdpSocket::bind(unspecified(options.relay))?;
    super::dont_fragment(&sock, sock.local_addr()?)?;
    poll.registry()
        .register(&mut sock, token, Interest::READABLE)?;
    let client = TunnelClient::connect(
        now,
        options.relay,
        &options.server_name,
        options.verify.clone(),
    )
    .map_err(io::Error::other)?;
    Ok(Tunnel {
        client,
        sock,
        token,
        queued: Vec::new(),
        last_heard: now,
    })
}

/// Moves a tunnel to a new socket (so a new local address and port).
fn rebind(tunnel: &mut Tunnel, poll: &Poll, relay: SocketAddr) -> io::Result<()> {
    let mut sock = UdpSocket::bind(unspecified(relay))?;
    super::dont_fragment(&sock, sock.local_addr()?)?;
    poll.registry()
        .register(&mut sock, tunnel.token, Interest::READABLE)?;
    let mut old = std::mem::replace(&mut tunnel.sock, sock);
    let _ = poll.registry().deregister(&mut old);
    tunnel.client.local_address_changed();
    Ok(())
}

/// The local address the kernel would send to `relay` from (no packet is sent).
fn route_to(relay: SocketAddr) -> Option<IpAddr> {
    let probe = std::net::UdpSocket::bind(unspecified(relay)).ok()?;
    probe.connect(relay).ok()?;
    probe.local_addr().ok().map(|a| a.ip())
}
