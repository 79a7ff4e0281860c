//! The ceiling: a UDP forwarder with no TURN logic at all, on its own thread pinned
//! to the relay's core. Datagrams from the client go out to the peer unchanged and
//! vice versa, either one `recvfrom`/`sendto` pair per packet ("plain") or 64 at a
//! time with `recvmmsg`/`sendmmsg` ("batched"). Its sockets have 4 MiB buffers: with
//! the kernel's default (208 KiB) it lost 8% at 25 kpps on this shared machine,
//! every time another job held its core for a scheduler tick.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sys::{self, MmsgReceiver, MmsgSender, BATCH};

pub struct Bare {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// The forwarding thread's kernel id, for its CPU time.
    pub tid: i32,
    /// Where the client sends (and hears from).
    pub client_facing: SocketAddrV4,
    /// Where the peer sends (and hears from).
    pub peer_facing: SocketAddrV4,
}

impl Bare {
    /// Starts forwarding between `client` and `peer`, pinned to `cpus`.
    pub fn start(
        batched: bool,
        client: SocketAddrV4,
        peer: SocketAddrV4,
        cpus: Vec<usize>,
    ) -> io::Result<Bare> {
        let a = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 3478))?;
        let b = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 3479))?;
        for s in [&a, &b] {
            // Nonblocking, 4 MiB buffers (as the generator's), timestamps unused.
            sys::prepare_socket(s)?;
        }
        let (client_facing, peer_facing) = (local(&a)?, local(&b)?);
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
                    run_batched(&a, &b, client, peer, &stop2)
                } else {
                    run_plain(&a, &b, client, peer, &stop2)
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
            client_facing,
            peer_facing,
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

/// Blocks until a or b is readable, or 100 ms pass (so `stop` is seen); spins
/// instead of blocking when [`spinning`].
fn wait_readable(a: &UdpSocket, b: &UdpSocket) -> io::Result<(bool, bool)> {
    if spinning() {
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(100) {
            let ready = poll_readable(a, b, 0)?;
            if ready != (false, false) {
                return Ok(ready);
            }
        }
        return Ok((false, false));
    }
    poll_readable(a, b, 100)
}

fn poll_readable(a: &UdpSocket, b: &UdpSocket, timeout_ms: i32) -> io::Result<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd: a.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfd entries that outlive the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok((false, false))
        } else {
            Err(e)
        };
    }
    Ok((fds[0].revents != 0, fds[1].revents != 0))
}

fn run_plain(
    a: &UdpSocket,
    b: &UdpSocket,
    client: SocketAddrV4,
    peer: SocketAddrV4,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Acquire) {
        let (ra, rb) = wait_readable(a, b)?;
        for (on, from, to, dest) in [(ra, a, b, peer), (rb, b, a, client)] {
            if !on {
                continue;
            }
            // Bounded, so the other direction gets its turn.
            for _ in 0..256 {
                match from.recv_from(&mut buf) {
                    Ok((len, _)) => {
                        // A full send buffer drops the packet, as a relay would.
                        let _ = to.send_to(buf.get(..len).unwrap_or(&[]), dest);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

fn run_batched(
    a: &UdpSocket,
    b: &UdpSocket,
    client: SocketAddrV4,
    peer: SocketAddrV4,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut rx = MmsgReceiver::new();
    let mut tx = MmsgSender::new();
    while !stop.load(Ordering::Acquire) {
        let (ra, rb) = wait_readable(a, b)?;
        for (on, from, to, dest) in [(ra, a, b, peer), (rb, b, a, client)] {
            if !on {
                continue;
            }
            for _ in 0..8 {
                let n = rx.recv(from.as_raw_fd())?;
                if n == 0 {
                    break;
                }
                let dest = sys::sockaddr(dest);
                let _ = tx.send(to.as_raw_fd(), n, |i| (dest, [rx.get(i).0, &[], &[]]));
                if n < BATCH {
                    break;
                }
            }
        }
    }
    Ok(())
}
