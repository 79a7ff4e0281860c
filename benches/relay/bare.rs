//! The ceiling: a UDP forwarder for the TURN servers' traffic shape with no TURN logic
//! beyond a table lookup, on its own thread pinned to the relay's core.
//!
//! Like a relay, it has one client-facing socket (127.0.0.1:3478, where the TURN servers
//! listen) and one socket per
//! "allocation". A ChannelData message from a client is looked up by (client address,
//! channel number) in a table that gives the allocation and the peer; its payload goes
//! out from that allocation's socket to the peer. A datagram from a peer on allocation
//! i is looked up by (i, peer address), framed as ChannelData for that client's
//! channel and sent from the client-facing socket. There is no authentication, no
//! permission or lifetime check and no STUN: what is left is the work every relay does
//! per packet, so it is a ceiling for the same 128 allocations × 32 peers.
//!
//! Either one `recvfrom`/`sendto` per packet ("plain") or 64 at a time with
//! `recvmmsg`/`sendmmsg` ("batched", one `sendmmsg` per run of packets leaving by the
//! same socket).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use turnpike::proto::channel_data;

use crate::sys::{self, Epoll, MmsgReceiver, MmsgSender, SocketState, BATCH};

/// One stream the forwarder knows: ChannelData from `client` on `channel` goes to
/// `peer` by allocation `alloc`'s socket, and back.
#[derive(Clone, Copy)]
pub struct Route {
    pub client: SocketAddrV4,
    pub channel: u16,
    pub alloc: usize,
    pub peer: SocketAddrV4,
}

/// Both directions' lookup tables.
struct Table {
    to_peer: HashMap<(SocketAddrV4, u16), (usize, SocketAddrV4)>,
    to_client: HashMap<(usize, SocketAddrV4), (SocketAddrV4, u16)>,
}

impl Table {
    fn new(routes: &[Route]) -> Table {
        let mut t = Table {
            to_peer: HashMap::with_capacity(routes.len()),
            to_client: HashMap::with_capacity(routes.len()),
        };
        for r in routes {
            t.to_peer.insert((r.client, r.channel), (r.alloc, r.peer));
            t.to_client.insert((r.alloc, r.peer), (r.client, r.channel));
        }
        t
    }
}

pub struct Bare {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// The forwarding thread's kernel id, for its CPU time.
    pub tid: i32,
    /// Each allocation's socket: where its peers send (and hear from).
    pub relayed: Vec<SocketAddrV4>,
    /// What the client-facing socket, then each allocation's, held at the start.
    pub sockets: Vec<SocketState>,
}

impl Bare {
    /// Binds the client-facing socket and `allocations` relay sockets (ports from
    /// 20000 up), forces `buffer` bytes on each, and starts forwarding `routes`,
    /// pinned to `cpus`.
    pub fn start(
        batched: bool,
        allocations: usize,
        routes: &[Route],
        buffer: usize,
        cpus: Vec<usize>,
    ) -> io::Result<Bare> {
        let listener = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 3478))?;
        let mut relays = Vec::with_capacity(allocations);
        let mut port = 20_000u16;
        while relays.len() < allocations {
            match UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
                Ok(s) => relays.push(s),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && port < 29_999 => {}
                Err(e) => return Err(e),
            }
            port += 1;
        }
        let mut sockets = Vec::new();
        for s in std::iter::once(&listener).chain(&relays) {
            s.set_nonblocking(true)?;
            sys::force_buffers(s.as_raw_fd(), buffer)?;
            sockets.push(SocketState::of(s.as_raw_fd())?);
        }
        let relayed = relays.iter().map(local).collect::<io::Result<Vec<_>>>()?;
        let table = Table::new(routes);
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(AtomicI32::new(0));
        let (stop2, tid2) = (stop.clone(), tid.clone());
        let handle = std::thread::Builder::new()
            .name("bare-forwarder".into())
            .spawn(move || {
                tid2.store(sys::gettid(), Ordering::Release);
                if let Err(e) = sys::pin(0, &cpus) {
                    eprintln!("bare forwarder: cannot pin to {cpus:?}: {e}");
                }
                let result = if batched {
                    run_batched(&listener, &relays, &table, &stop2)
                } else {
                    run_plain(&listener, &relays, &table, &stop2)
                };
                if let Err(e) = result {
                    eprintln!("bare forwarder stopped: {e}");
                }
            })?;
        // The thread stores its id first thing; wait for it (bounded).
        for _ in 0..1000 {
            if tid.load(Ordering::Acquire) != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Bare {
            stop,
            handle: Some(handle),
            tid: tid.load(Ordering::Acquire),
            relayed,
            sockets,
        })
    }

    pub fn proc_dir(&self) -> String {
        format!("/proc/self/task/{}", self.tid)
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn local(s: &UdpSocket) -> io::Result<SocketAddrV4> {
    match s.local_addr()? {
        std::net::SocketAddr::V4(a) => Ok(a),
        std::net::SocketAddr::V6(_) => Err(io::Error::other("expected IPv4")),
    }
}

/// `TURNPIKE_BENCH_BARE_SPIN=1`: the forwarder never sleeps, it polls with a zero
/// timeout in a loop — the busy-poll ceiling, to set Turnpike's `busy_poll_us` against.
fn spinning() -> bool {
    static SPIN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| std::env::var("TURNPIKE_BENCH_BARE_SPIN").is_ok_and(|v| v == "1"))
}

/// An epoll set over the client-facing socket (token 0) and the relay sockets (token
/// 1 + allocation).
fn epoll_of(listener: &UdpSocket, relays: &[UdpSocket]) -> io::Result<Epoll> {
    let epoll = Epoll::new()?;
    epoll.add(listener.as_raw_fd(), 0)?;
    for (i, s) in relays.iter().enumerate() {
        epoll.add(s.as_raw_fd(), 1 + i as u64)?;
    }
    Ok(epoll)
}

/// Waits until some socket is readable or 100 ms pass (so `stop` is seen); spins
/// instead of blocking when [`spinning`].
fn wait_ready(epoll: &mut Epoll, ready: &mut Vec<u64>) -> io::Result<()> {
    if spinning() {
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(100) {
            epoll.wait(0, ready)?;
            if !ready.is_empty() {
                return Ok(());
            }
        }
        return Ok(());
    }
    epoll.wait(100, ready)
}

/// The channel number and payload of a ChannelData message.
fn channel_payload(data: &[u8]) -> Option<(u16, &[u8])> {
    channel_data::parse(data).ok()
}

fn run_plain(
    listener: &UdpSocket,
    relays: &[UdpSocket],
    table: &Table,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut epoll = epoll_of(listener, relays)?;
    let mut ready = Vec::new();
    let hdr = channel_data::HEADER_LEN;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Acquire) {
        wait_ready(&mut epoll, &mut ready)?;
        for &token in &ready {
            // Bounded, so the other sockets get their turn.
            for _ in 0..256 {
                let got = if token == 0 {
                    listener.recv_from(&mut buf)
                } else {
                    let Some(s) = relays.get(token as usize - 1) else {
                        break;
                    };
                    s.recv_from(buf.get_mut(hdr..).unwrap_or(&mut []))
                };
                let (len, from) = match got {
                    Ok((len, std::net::SocketAddr::V4(from))) => (len, from),
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                };
                // A full send buffer drops the packet, as a relay would.
                if token == 0 {
                    let Some((channel, payload)) = buf.get(..len).and_then(channel_payload) else {
                        continue;
                    };
                    if let Some(&(alloc, peer)) = table.to_peer.get(&(from, channel)) {
                        if let Some(s) = relays.get(alloc) {
                            let _ = s.send_to(payload, peer);
                        }
                    }
                } else if let Some(&(client, channel)) =
                    table.to_client.get(&(token as usize - 1, from))
                {
                    let _ = channel_data::write_header(&mut buf, channel, len);
                    let _ = listener.send_to(buf.get(..hdr + len).unwrap_or(&[]), client);
                }
            }
        }
    }
    Ok(())
}

fn run_batched(
    listener: &UdpSocket,
    relays: &[UdpSocket],
    table: &Table,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut epoll = epoll_of(listener, relays)?;
    let mut ready = Vec::new();
    let mut rx = MmsgReceiver::new();
    let mut tx = MmsgSender::new();
    // Per received datagram: (datagram, allocation, destination).
    let mut out: Vec<(usize, usize, libc::sockaddr_in)> = Vec::with_capacity(BATCH);
    let mut headers = [[0u8; channel_data::HEADER_LEN]; BATCH];
    while !stop.load(Ordering::Acquire) {
        wait_ready(&mut epoll, &mut ready)?;
        for &token in &ready {
            let from_fd = if token == 0 {
                listener.as_raw_fd()
            } else {
                match relays.get(token as usize - 1) {
                    Some(s) => s.as_raw_fd(),
                    None => continue,
                }
            };
            for _ in 0..8 {
                let n = rx.recv(from_fd)?;
                if n == 0 {
                    break;
                }
                out.clear();
                if token == 0 {
                    for i in 0..n {
                        let (data, from, _) = rx.get(i);
                        let Some((channel, _)) = channel_payload(data) else {
                            continue;
                        };
                        if let Some(&(alloc, peer)) = table.to_peer.get(&(from, channel)) {
                            out.push((i, alloc, sys::sockaddr(peer)));
                        }
                    }
                    // One sendmmsg per run of datagrams leaving by the same socket.
                    let mut k = 0;
                    while let Some(&(_, alloc, _)) = out.get(k) {
                        let run = out[k..].iter().take_while(|o| o.1 == alloc).count();
                        if let Some(s) = relays.get(alloc) {
                            let _ = tx.send(s.as_raw_fd(), run, |j| {
                                let (i, _, dest) = out[k + j];
                                let payload = channel_payload(rx.get(i).0).map_or(&[][..], |p| p.1);
                                (dest, [payload, &[], &[]])
                            });
                        }
                        k += run;
                    }
                } else {
                    let alloc = token as usize - 1;
                    for i in 0..n {
                        let (data, from, _) = rx.get(i);
                        if let Some(&(client, channel)) = table.to_client.get(&(alloc, from)) {
                            let _ = channel_data::write_header(
                                &mut headers[out.len()],
                                channel,
                                data.len(),
                            );
                            out.push((i, alloc, sys::sockaddr(client)));
                        }
                    }
                    let _ = tx.send(listener.as_raw_fd(), out.len(), |j| {
                        let (i, _, dest) = out[j];
                        (dest, [&headers[j][..], rx.get(i).0, &[]])
                    });
                }
                if n < BATCH {
                    break;
                }
            }
        }
    }
    Ok(())
}
