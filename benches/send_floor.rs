//! What one forwarded datagram's send costs the kernel, whatever the syscall shape.
//!
//! ```sh
//! cargo bench --bench send_floor
//! ```
//!
//! A relay's send pattern is many source sockets (one per allocation) to many
//! destinations, one `sendmsg` each. The obvious ways to batch it — one socket with
//! `sendmmsg`, or a raw socket sending crafted UDP headers from any source port with
//! `sendmmsg` — save syscalls. This measures whether that buys anything: the sending
//! thread's CPU time per datagram (170 B, to 32 receivers on loopback drained by a
//! thread on the other core) for each shape, in alternating rounds. On the 2 vCPU VM
//! of README "Performance" every shape cost 2.8–2.9 µs: the cost is the kernel's
//! per-datagram IP output and loopback delivery, not the syscalls — which is why
//! io_uring sends did not help the relay either.

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up stops with the reason

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const DATAGRAMS: usize = 400_000;
const BATCH: usize = 32;
const RECEIVERS: usize = 32;
const SENDERS: usize = 128;
const ROUNDS: usize = 3;

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// Turnpike's: `sendto` from the sending allocation's own socket.
    PerAllocationSocket,
    /// One socket, one `sendto` per datagram.
    OneSocket,
    /// One socket, `sendmmsg` of 32 to 32 destinations.
    OneSocketBatched,
    /// A raw UDP socket, `sendmmsg` of 32 with our own UDP headers (any source port).
    RawBatched,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::PerAllocationSocket => "sendto, 128 sockets (the relay's shape)",
            Shape::OneSocket => "sendto, 1 socket",
            Shape::OneSocketBatched => "sendmmsg ×32, 1 socket",
            Shape::RawBatched => "sendmmsg ×32, raw socket, crafted UDP headers",
        }
    }
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity get valid
    // pointers to it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn loopback(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Sends DATAGRAMS in `shape`; returns the sender's CPU µs per datagram (sends only)
/// and how many arrived.
fn run(shape: Shape, raw: Option<i32>) -> std::io::Result<(f64, u64)> {
    let receivers: Vec<UdpSocket> = (0..RECEIVERS)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let mut ports = Vec::new();
    for r in &receivers {
        r.set_nonblocking(true)?;
        ports.push(r.local_addr()?.port());
    }
    let senders: Vec<UdpSocket> = (0..SENDERS)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let one = UdpSocket::bind("127.0.0.1:0")?;
    let dests: Vec<libc::sockaddr_in> = ports.iter().map(|&p| loopback(p)).collect();
    // A raw socket takes the port from our UDP header, not from the address.
    let raw_dest = loopback(0);
    let stop = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicU64::new(0));
    let fds: Vec<i32> = receivers.iter().map(|r| r.as_raw_fd()).collect();
    let (stop2, arrived2) = (stop.clone(), arrived.clone());
    let drain = std::thread::spawn(move || {
        pin(1);
        let mut buf = [0u8; 2048];
        while !stop2.load(Ordering::Relaxed) {
            for &fd in &fds {
                // SAFETY: a valid buffer of the given length.
                while unsafe {
                    libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
                } >= 0
                {
                    arrived2.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    pin(0);
    let payload = [0x80u8; 170];
    let mut headers = [[0u8; 8]; BATCH];
    let mut spent = 0u64;
    let mut k = 0usize;
    while k < DATAGRAMS {
        let t0 = thread_cpu_ns();
        match shape {
            Shape::PerAllocationSocket | Shape::OneSocket => {
                for j in k..k + BATCH {
                    let fd = if shape == Shape::OneSocket {
                        one.as_raw_fd()
                    } else {
                        senders[j % SENDERS].as_raw_fd()
                    };
                    let to = &dests[j % RECEIVERS];
                    // SAFETY: valid payload and address for the call.
                    unsafe {
                        libc::sendto(
                            fd,
                            payload.as_ptr().cast(),
                            payload.len(),
                            0,
                            (to as *const libc::sockaddr_in).cast(),
                            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                        )
                    };
                }
            }
            Shape::OneSocketBatched | Shape::RawBatched => {
                let is_raw = shape == Shape::RawBatched;
                let mut iovs = [[libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; 2]; BATCH];
                // SAFETY: all-zero is a valid mmsghdr.
                let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
                for (i, j) in (k..k + BATCH).enumerate() {
                    let len = (8 + payload.len()) as u16;
                    let h = &mut headers[i];
                    h[0..2].copy_from_slice(&(20_000 + (j % SENDERS) as u16).to_be_bytes());
                    h[2..4].copy_from_slice(&ports[j % RECEIVERS].to_be_bytes());
                    h[4..6].copy_from_slice(&len.to_be_bytes());
                    // Checksum 0: "none", allowed for UDP over IPv4.
                    iovs[i] = [
                        libc::iovec {
                            iov_base: h.as_mut_ptr().cast(),
                            iov_len: 8,
                        },
                        libc::iovec {
                            iov_base: payload.as_ptr() as *mut libc::c_void,
                            iov_len: payload.len(),
                        },
                    ];
                    let to = if is_raw {
                        &raw_dest
                    } else {
                        &dests[j % RECEIVERS]
                    };
                    let m = &mut msgs[i].msg_hdr;
                    m.msg_name = (to as *const libc::sockaddr_in as *mut libc::sockaddr_in).cast();
                    m.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                    // The raw socket sends our UDP header; the UDP socket only the payload.
                    m.msg_iov = if is_raw {
                        iovs[i].as_mut_ptr()
                    } else {
                        iovs[i][1..].as_mut_ptr()
                    };
                    m.msg_iovlen = if is_raw { 2 } else { 1 };
                }
                let fd = if is_raw {
                    raw.unwrap_or(-1)
                } else {
                    one.as_raw_fd()
                };
                // SAFETY: BATCH headers whose pointers outlive the call.
                let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
                if n < 0 {
                    stop.store(true, Ordering::Relaxed);
                    let _ = drain.join();
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        spent += thread_cpu_ns() - t0;
        k += BATCH;
        // Stay within what the drain thread takes, so nothing is dropped at a full
        // receive queue (a drop is cheaper than a delivery and would flatter a shape).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while (k as u64).saturating_sub(arrived.load(Ordering::Relaxed)) > 20_000
            && std::time::Instant::now() < deadline
        {
            std::hint::spin_loop();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    Ok((
        spent as f64 / DATAGRAMS as f64 / 1000.0,
        arrived.load(Ordering::Relaxed),
    ))
}

fn main() {
    // SAFETY: plain socket(2); -1 (no CAP_NET_RAW) is handled below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP) };
    let raw = (raw >= 0).then_some(raw);
    let mut shapes = vec![
        Shape::PerAllocationSocket,
        Shape::OneSocket,
        Shape::OneSocketBatched,
    ];
    if raw.is_some() {
        shapes.push(Shape::RawBatched);
    } else {
        println!("raw socket: not measured (needs CAP_NET_RAW)");
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); shapes.len()];
    for _ in 0..ROUNDS {
        for (i, &shape) in shapes.iter().enumerate() {
            match run(shape, raw) {
                Ok((us, arrived)) => {
                    if arrived < DATAGRAMS as u64 {
                        println!("{}: only {arrived} of {DATAGRAMS} arrived", shape.name());
                    }
                    results[i].push(us);
                }
                Err(e) => println!("{}: {e}", shape.name()),
            }
        }
    }
    println!("| send shape | sender CPU µs per datagram (each round) |");
    println!("| --- | --- |");
    for (shape, r) in shapes.iter().zip(&results) {
        let runs: Vec<String> = r.iter().map(|us| format!("{us:.2}")).collect();
        println!("| {} | {} |", shape.name(), runs.join(" / "));
    }
}
