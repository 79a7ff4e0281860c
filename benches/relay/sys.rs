//! Thin, bounded wrappers over the Linux calls the benchmark needs and std lacks:
//! CPU pinning, the fd limit, `/proc` readings, level-triggered epoll, and
//! `sendmmsg`/`recvmmsg` with kernel receive timestamps (`SO_TIMESTAMPNS`).
//!
//! Everything here is IPv4: the benchmark runs on loopback (its own namespace's or the
//! host's), so one address family keeps the `sockaddr` handling small.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

/// Largest datagram the generator receives (video packets are 1200 B plus framing).
pub const RX_BUF: usize = 2048;
/// Slot size for sockets with `UDP_GRO` on: the largest UDP payload, since one
/// coalesced buffer may carry up to 64 segments.
pub const GRO_BUF: usize = 65_536;

/// Pins the calling thread (`pid` 0) or process `pid` to the given CPUs.
pub fn pin(pid: libc::pid_t, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets the calling thread's nice value; threads and processes started from it
/// afterwards inherit it (on Linux nice is per thread).
pub fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority has no memory preconditions.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's id of the calling thread, for `/proc/self/task/<tid>/stat`.
pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Raises the open-file limit to the hard limit: thousands of allocations need
/// thousands of client sockets, and the servers started from here inherit it.
pub fn raise_fd_limit() -> io::Result<u64> {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(lim.rlim_cur)
    }
}

/// CLOCK_REALTIME in nanoseconds: the clock `SO_TIMESTAMPNS` stamps packets with, so
/// send times taken with it compare directly to kernel receive times.
pub fn realtime_ns() -> i64 {
    // SAFETY: clock_gettime writes the timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// `sysconf(_SC_CLK_TCK)`: the unit of utime/stime in `/proc/*/stat`.
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Online CPUs of the machine (not of our affinity mask, which `taskset` narrowed).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// CPU time (user + system) in ns of the task at `dir` (`/proc/<pid>` or
/// `/proc/<pid>/task/<tid>`); with `threads`, summed over all its threads.
///
/// The first field of `schedstat` is the time on CPU in ns, which is what
/// utime+stime of `stat` measures in 10 ms ticks: too coarse for a short step. When
/// schedstat is missing (kernel without schedstats), `stat` ticks are used.
pub fn cpu_ns(dir: &str, threads: bool) -> io::Result<u64> {
    let tasks: Vec<String> = if threads {
        std::fs::read_dir(format!("{dir}/task"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path().display().to_string())
            .collect()
    } else {
        vec![dir.to_string()]
    };
    let mut total = 0;
    for task in &tasks {
        // A thread may exit between listing and reading: skip it.
        let Ok(text) = std::fs::read_to_string(format!("{task}/schedstat")) else {
            return cpu_ticks(&format!("{dir}/stat"))
                .map(|t| (t as f64 * 1e9 / clock_ticks_per_sec()) as u64);
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// A counter of the busy time of `cores`, in ns: everything that ran there, the relay,
/// its softirq work and any stray kernel work. Where the kernel keeps idle time per
/// core in µs (cpuidle's per-state `time`), it is wall time minus idle time; else the
/// busy ticks of `/proc/stat` (10 ms each: a 2 s step at 10 kpps of a 1 µs/packet
/// relay is two ticks, so that fallback is only good for long or busy steps).
pub fn cores_busy_ns(cores: &[usize]) -> io::Result<u64> {
    match cores_idle_us(cores) {
        Some(idle_us) => Ok(monotonic_ns()
            .saturating_mul(cores.len() as u64)
            .saturating_sub(idle_us.saturating_mul(1000))),
        None => cores_busy_ticks_ns(cores),
    }
}

/// Total time `cores` spent in cpuidle states, in µs, if the kernel reports it.
fn cores_idle_us(cores: &[usize]) -> Option<u64> {
    let mut total = 0u64;
    for core in cores {
        let dir = format!("/sys/devices/system/cpu/cpu{core}/cpuidle");
        let states = std::fs::read_dir(&dir).ok()?;
        let mut any = false;
        for state in states.flatten() {
            let time = std::fs::read_to_string(state.path().join("time")).ok()?;
            total += time.trim().parse::<u64>().ok()?;
            any = true;
        }
        if !any {
            return None;
        }
    }
    Some(total)
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Busy ticks of `cores` from `/proc/stat` (user, nice, system, irq, softirq), in ns.
fn cores_busy_ticks_ns(cores: &[usize]) -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let mut ticks = 0u64;
    for core in cores {
        let name = format!("cpu{core}");
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .ok_or_else(|| io::Error::other(format!("/proc/stat has no {name}")))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal …
        ticks += [0, 1, 2, 5, 6]
            .iter()
            .map(|&i| fields.get(i).copied().unwrap_or(0))
            .sum::<u64>();
    }
    Ok((ticks as f64 * 1e9 / clock_ticks_per_sec()) as u64)
}

/// utime + stime (clock ticks) from a `/proc/.../stat` file: the whole process for
/// `/proc/<pid>/stat` (all threads), one thread for `/proc/<pid>/task/<tid>/stat`.
fn cpu_ticks(stat_path: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(stat_path)?;
    // The command name (field 2) may contain spaces; fields after its ')' are fixed.
    let after = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) sit at 11 and 12.
    let num = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("malformed stat field"))
    };
    Ok(num(11)? + num(12)?)
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS"))
}

/// Hands out local ports from 40000 up for the generator's sockets: outside both
/// servers' relay ranges (20000–29999, 30000–39999), so a relay never finds its
/// allocation port taken by one of our own sockets (where the ranges meet, Allocates
/// fail with "508 Cannot create socket").
pub struct PortAllocator {
    next: u16,
}

impl PortAllocator {
    pub fn new() -> PortAllocator {
        PortAllocator { next: 40_000 }
    }

    /// A nonblocking UDP socket on 127.0.0.1 with large buffers and kernel receive
    /// timestamps. Skips ports in use; gives up after 1000 tries.
    pub fn bind(&mut self) -> io::Result<UdpSocket> {
        for _ in 0..1000 {
            let port = self.next;
            self.next = if self.next >= 60_999 {
                40_000
            } else {
                self.next + 1
            };
            match UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
                Ok(sock) => {
                    prepare_socket(&sock)?;
                    return Ok(sock);
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("no free local port in 40000-60999"))
    }
}

/// Nonblocking, 4 MiB buffers (forced past rmem_max as root, plain otherwise), and
/// `SO_TIMESTAMPNS` so each datagram carries the time the kernel queued it.
pub fn prepare_socket(sock: &UdpSocket) -> io::Result<()> {
    sock.set_nonblocking(true)?;
    let fd = sock.as_raw_fd();
    let size: libc::c_int = 4 << 20;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, size).is_err() {
            // Not privileged: the plain option, capped by the sysctl, is still better
            // than the default.
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, size);
        }
    }
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: we pass a pointer to a c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    sa
}

pub fn from_sockaddr(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    )
}

/// A level-triggered epoll set: a socket with data left after a bounded drain is
/// reported again on the next wait, so no readiness is ever lost.
pub struct Epoll {
    fd: RawFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
        })
    }

    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` lives across the call; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (0 = just look) and returns the ready tokens.
    pub fn wait(&mut self, timeout_ms: i32, ready: &mut Vec<u64>) -> io::Result<()> {
        ready.clear();
        // SAFETY: the buffer holds `events.len()` entries and outlives the call.
        let n = unsafe {
            libc::epoll_wait(
                self.fd,
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        ready.extend(self.events.iter().take(n as usize).map(|e| e.u64));
        Ok(())
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.fd) };
    }
}

/// Up to this many datagrams per `sendmmsg`/`recvmmsg` call.
pub const BATCH: usize = 64;

/// Reusable `sendmmsg` state: one destination and up to three byte slices (framing
/// prefix, SRTP packet, padding) per datagram, gathered by the kernel without a copy.
pub struct MmsgSender {
    msgs: Vec<libc::mmsghdr>,
    iov: Vec<[libc::iovec; 3]>,
    names: Vec<libc::sockaddr_in>,
}

impl MmsgSender {
    pub fn new() -> MmsgSender {
        let iov0 = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        MmsgSender {
            // SAFETY: mmsghdr and sockaddr_in are plain data; zero is valid for both.
            msgs: vec![unsafe { std::mem::zeroed() }; BATCH],
            iov: vec![[iov0; 3]; BATCH],
            names: vec![unsafe { std::mem::zeroed() }; BATCH],
        }
    }

    /// Sends `n` (≤ [`BATCH`]) datagrams on `fd`; `item(i)` gives the destination and
    /// the parts of datagram i. Returns how many the kernel took (a full send buffer
    /// takes fewer; the rest are simply not sent, and not counted as sent).
    pub fn send<'a>(
        &mut self,
        fd: RawFd,
        n: usize,
        mut item: impl FnMut(usize) -> (libc::sockaddr_in, [&'a [u8]; 3]),
    ) -> io::Result<usize> {
        let n = n.min(BATCH);
        for i in 0..n {
            let (dest, parts) = item(i);
            self.names[i] = dest;
            for (slot, part) in self.iov[i].iter_mut().zip(parts) {
                // The kernel only reads through iov_base for a send.
                slot.iov_base = part.as_ptr() as *mut libc::c_void;
                slot.iov_len = part.len();
            }
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = self.iov[i].as_mut_ptr();
            hdr.msg_iovlen = 3;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
        }
        // SAFETY: entries 0..n point at live names, iovecs and caller slices (lifetime
        // 'a outlives this call).
        unsafe { send_all(fd, &mut self.msgs[..n]) }
    }
}

/// `sendmmsg` of every message in `msgs`, retrying the rest a few times when the socket
/// buffer fills (a partial send). Returns how many messages went; an error only if none.
///
/// # Safety
/// Every header in `msgs` must point at memory that stays valid for the call.
pub unsafe fn send_all(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let n = msgs.len();
    let mut done = 0;
    for _ in 0..4 {
        if done == n {
            break;
        }
        // SAFETY: the caller guarantees the headers; `done < n` keeps the pointer in bounds.
        let rc = unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr().add(done),
                (n - done) as u32,
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                continue;
            }
            return if done > 0 { Ok(done) } else { Err(e) };
        }
        done += rc as usize;
    }
    Ok(done)
}

/// Reusable `recvmmsg` state with per-datagram control buffers for the kernel's
/// receive timestamp and (`UDP_GRO` on) the segment size of a coalesced buffer:
/// `SO_TIMESTAMPNS` (CMSG_SPACE(16) = 32 B) plus `UDP_GRO` (CMSG_SPACE(4) = 24 B) fit
/// the 64-byte control buffer.
pub struct MmsgReceiver {
    /// Bytes per datagram slot: [`RX_BUF`], or [`GRO_BUF`] where a coalesced buffer of
    /// many datagrams may arrive (a shorter slot would truncate it and lose segments).
    slot: usize,
    bufs: Vec<u8>,
    msgs: Vec<libc::mmsghdr>,
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    ctrl: Vec<[u64; 8]>,
}

impl MmsgReceiver {
    pub fn new() -> MmsgReceiver {
        MmsgReceiver::with_slot(RX_BUF)
    }

    /// A receiver whose slots hold `slot` bytes each ([`GRO_BUF`] for `UDP_GRO`).
    pub fn with_slot(slot: usize) -> MmsgReceiver {
        MmsgReceiver {
            slot,
            bufs: vec![0; slot * BATCH],
            // SAFETY: plain data; zero is valid.
            msgs: vec![unsafe { std::mem::zeroed() }; BATCH],
            iov: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            names: vec![unsafe { std::mem::zeroed() }; BATCH],
            ctrl: vec![[0; 8]; BATCH],
        }
    }

    /// One nonblocking `recvmmsg`; returns how many datagrams arrived (0 = none ready).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            // SAFETY: i * slot + slot <= bufs.len(), so the pointer stays inside.
            self.iov[i].iov_base = unsafe { base.add(i * self.slot) }.cast();
            self.iov[i].iov_len = self.slot;
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iov[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.ctrl[i].as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of::<[u64; 8]>();
            hdr.msg_flags = 0;
        }
        // SAFETY: every header points into buffers owned by self for the call's duration.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(rc as usize)
    }

    /// Datagram `i` of the last `recv`: its bytes, its source, and the kernel's receive
    /// time (CLOCK_REALTIME ns) when the socket had `SO_TIMESTAMPNS` on.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddrV4, Option<i64>) {
        let Some(m) = self.msgs.get(i) else {
            return (&[], SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), None);
        };
        let len = (m.msg_len as usize).min(self.slot);
        let data = self
            .bufs
            .get(i * self.slot..i * self.slot + len)
            .unwrap_or(&[]);
        let from = from_sockaddr(&self.names[i]);
        (data, from, kernel_timestamp(&m.msg_hdr))
    }

    /// The segment size of datagram `i` of the last `recv` when the kernel delivered a
    /// coalesced buffer (`UDP_GRO` on): every segment is this long but the last.
    /// `None` for a single datagram.
    pub fn gro_size(&self, i: usize) -> Option<usize> {
        let m = self.msgs.get(i)?;
        // SAFETY: as in kernel_timestamp: the header was filled by recvmmsg and the
        // CMSG_* macros stay inside our ctrl buffer.
        unsafe {
            let hdr = &m.msg_hdr;
            let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                    // udp_cmsg_recv puts the skb's gso_size as an int.
                    let size: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    return usize::try_from(size).ok().filter(|&s| s > 0);
                }
                cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
            }
        }
        None
    }
}

fn kernel_timestamp(hdr: &libc::msghdr) -> Option<i64> {
    // SAFETY: `hdr` was filled by recvmmsg; the CMSG_* macros stay within
    // msg_control..msg_control+msg_controllen, which points at our ctrl buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

/// `getsockopt` of an int option.
pub fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: we pass a pointer to a c_int and its exact size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets a socket's receive and send buffer to `bytes` past `rmem_max`/`wmem_max`
/// (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`, root only). The kernel stores twice the value
/// asked for (its bookkeeping overhead), as for the plain options.
pub fn force_buffers(fd: RawFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value)?;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, value)
}

/// What the kernel holds for one UDP socket: its buffers as `SO_RCVBUF`/`SO_SNDBUF`
/// report them (`ss`'s `rb`/`tb`), and whether `UDP_GRO` is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketState {
    pub local: SocketAddrV4,
    pub rcvbuf: usize,
    pub sndbuf: usize,
    pub gro: bool,
}

impl SocketState {
    pub fn of(fd: RawFd) -> io::Result<SocketState> {
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: getsockname writes at most `len` bytes into the sockaddr_in we own.
        let rc =
            unsafe { libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_in).cast(), &mut len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let size = |name| {
            getsockopt_int(fd, libc::SOL_SOCKET, name).map(|v| usize::try_from(v).unwrap_or(0))
        };
        Ok(SocketState {
            local: from_sockaddr(&sa),
            rcvbuf: size(libc::SO_RCVBUF)?,
            sndbuf: size(libc::SO_SNDBUF)?,
            gro: getsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO).is_ok_and(|v| v != 0),
        })
    }
}

/// Runs `f` on every IPv4 UDP socket of process `pid`, through a duplicate of its fd
/// (`pidfd_getfd`, which needs ptrace rights over it: root, or our own child): an
/// option set on the duplicate is set on the process's own socket. Returns how many
/// sockets `f` saw.
pub fn for_each_udp_socket(
    pid: u32,
    mut f: impl FnMut(RawFd) -> io::Result<()>,
) -> io::Result<usize> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    let pidfd = pidfd as RawFd;
    let result = (|| {
        let mut seen = 0;
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            if !target.to_string_lossy().starts_with("socket:") {
                continue;
            }
            let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            // SAFETY: pidfd_getfd takes a pidfd, an fd number and flags; returns a new fd.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, n, 0) };
            if fd < 0 {
                continue; // closed since the listing
            }
            let fd = fd as RawFd;
            let udp4 = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)
                .is_ok_and(|t| t == libc::SOCK_DGRAM)
                && getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)
                    .is_ok_and(|d| d == libc::AF_INET)
                && getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)
                    .is_ok_and(|p| p == libc::IPPROTO_UDP);
            let r = if udp4 {
                seen += 1;
                f(fd)
            } else {
                Ok(())
            };
            // SAFETY: `fd` is our duplicate; closing it leaves the process's own fd open.
            unsafe { libc::close(fd) };
            r?;
        }
        Ok(seen)
    })();
    // SAFETY: we own the pidfd.
    unsafe { libc::close(pidfd) };
    result
}

/// Runs `ip ARGS`; the error names the command and what `ip` said.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
