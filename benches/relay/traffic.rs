//! The packet engine: paces pre-encrypted SRTP over many streams at an offered rate,
//! receives what the relay forwards, and measures loss, one-way latency and (through
//! a probe) the relay's CPU per packet.
//!
//! One thread on its own core does everything. Sends are batched per sending socket
//! with `sendmmsg` (a batch = consecutive streams of one socket); receives with
//! `recvmmsg`. Latency = the kernel's receive timestamp of the forwarded datagram
//! (`SO_TIMESTAMPNS`, taken when the relay's send reached our socket) minus the send
//! time (CLOCK_REALTIME around our `sendmmsg`, interpolated across the batch). The
//! generator's own wake-up and loop delay are thus left out; the relay's are not.
//!
//! The video mix is cheaper per packet so that one core can offer and absorb more
//! than the relays forward (see `gso.rs`): each frame goes out as one `UDP_SEGMENT`
//! message (still batched with `sendmmsg`), and the receive sockets have `UDP_GRO`
//! on, so a relay's GSO burst arrives as one buffer that is split here by its segment
//! size. The kernel stamps a coalesced buffer once, so all its segments get that one
//! receive time: latency spread *within* one coalesced burst is slightly under-reported
//! (the burst's segments left the relay in one send call anyway). The audio mix keeps
//! one datagram per `sendmmsg` entry and `UDP_GRO` off.

use std::net::SocketAddrV4;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use turnpike::proto::channel_data;
use turnpike::proto::stun::{self, attr, method, Class, Message, MessageBuilder, TransactionId};

use crate::gso::{self, GsoSender};
use crate::srtp_pool::{self, Pool, POOL_LEN};
use crate::sys::{self, Epoll, MmsgReceiver, MmsgSender, BATCH, GRO_BUF};

/// The two traffic shapes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// ~170 B packets, 50 pps per stream (20 ms audio frames), many streams.
    Audio,
    /// ~1200 B packets in frames of 5–10 back-to-back packets, 30 frames/s per stream.
    Video,
}

impl Mix {
    pub fn packet_size(self) -> usize {
        match self {
            Mix::Audio => 170,
            Mix::Video => 1200,
        }
    }

    /// Packets per second one stream sends: the rate decides how many streams are on.
    fn stream_pps(self) -> f64 {
        match self {
            Mix::Audio => 50.0,
            Mix::Video => 30.0 * 7.5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mix::Audio => "audio",
            Mix::Video => "video",
        }
    }
}

/// One stream: which socket sends it, where to, and its framing around the SRTP bytes.
pub struct Stream {
    pub tx: usize,
    pub dest: libc::sockaddr_in,
    /// ChannelData header, Send indication up to the DATA value, or nothing (bare).
    pub prefix: Vec<u8>,
    /// Zero bytes after the packet (a STUN attribute is padded to 4 bytes).
    pub pad: usize,
}

/// A direction's sockets and streams. `streams` is ordered by `tx` so that
/// consecutive streams share a socket and batch into one `sendmmsg`.
pub struct Flows {
    pub tx: Vec<RawFd>,
    pub rx: Vec<RawFd>,
    pub streams: Vec<Stream>,
    /// Send video frames as UDP GSO messages. Only for a relay whose receiving sockets
    /// have `UDP_GRO` on (Turnpike): on loopback they get the frame as one coalesced
    /// buffer, as stack GRO would hand it over on a real interface. A relay without
    /// `UDP_GRO` (coturn, bare) would get the GSO skb segmented by the kernel, which
    /// measurably hurts it (coturn's Send/peer→client video: 93k pps against 204k with
    /// one datagram per send, in one run) and is not how datagrams reach it on a real
    /// network, so it gets one datagram per `sendmmsg` entry. The rows where every
    /// server gets the same datagrams have this off for all.
    pub gso: bool,
}

/// ChannelData framing (RFC 8656 §12.4) for `size`-byte packets on `channel`.
pub fn channel_prefix(channel: u16, size: usize) -> Vec<u8> {
    let mut h = vec![0u8; channel_data::HEADER_LEN];
    // Channel numbers here are 0x4000.. and sizes ≤ 1200, which write_header accepts.
    let _ = channel_data::write_header(&mut h, channel, size);
    h
}

/// Send indication (RFC 8656 §11.1) carrying `size` bytes to `peer`, split into the
/// bytes before the DATA value and the padding after it. Indications need no
/// integrity; the transaction id is fixed per stream (nothing matches indications).
pub fn send_indication_prefix(peer: SocketAddrV4, size: usize, tid: [u8; 12]) -> (Vec<u8>, usize) {
    let mut msg = Vec::new();
    let mut b = MessageBuilder::new(
        &mut msg,
        Class::Indication,
        method::SEND,
        TransactionId(tid),
    );
    b.add_xor_address(attr::XOR_PEER_ADDRESS, std::net::SocketAddr::V4(peer));
    b.add(attr::DATA, &vec![0u8; size]);
    let padded = (size + 3) & !3;
    msg.truncate(msg.len() - padded);
    (msg, padded - size)
}

/// The outcome of one paced step.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StepResult {
    pub offered_pps: f64,
    pub secs: f64,
    pub streams: usize,
    pub sent: u64,
    pub received: u64,
    pub sent_pps: f64,
    pub received_pps: f64,
    pub loss: f64,
    /// The generator could not send at the offered rate (< 97%): a lower bound only.
    pub generator_limited: bool,
    /// Video frames went out as `UDP_SEGMENT` messages (false: GSO refused, or audio).
    pub gso: bool,
    /// Relay CPU per forwarded packet, when a probe was given.
    pub cpu_us_per_packet: Option<f64>,
    pub relay_cpu_share: Option<f64>,
    pub latency: Option<Latency>,
}

/// One-way latency percentiles in µs.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Some(Latency {
            samples: h.len(),
            p50: us(0.5),
            p90: us(0.9),
            p99: us(0.99),
            p999: us(0.999),
            max: h.max() as f64 / 1000.0,
        })
    }
}

/// Where the relay's CPU time is read: a process (`/proc/<pid>`, all threads), one
/// thread (`/proc/self/task/<tid>`, the bare forwarder), or — for work done in the
/// kernel's softirq rather than by any task (the eBPF fast path) — the busy time of
/// the relay's cores from `/proc/stat`.
pub struct CpuProbe {
    pub dir: String,
    pub threads: bool,
    /// When not empty: count these cores' busy time instead of the task's.
    pub cores: Vec<usize>,
}

impl CpuProbe {
    /// A process's or thread's own CPU time.
    pub fn task(dir: String, threads: bool) -> CpuProbe {
        CpuProbe {
            dir,
            threads,
            cores: Vec::new(),
        }
    }

    /// The CPU time counted so far, in nanoseconds.
    pub fn ns(&self) -> std::io::Result<u64> {
        match (&self.cores[..], STEERED_CORES.get()) {
            ([], None) => sys::cpu_ns(&self.dir, self.threads),
            ([], Some(all)) => sys::cores_busy_ns(all),
            (cores, _) => sys::cores_busy_ns(cores),
        }
    }
}

/// Set (once, by `TURNPIKE_BENCH_STEER=1`) when loopback's receive processing is
/// steered to the relay's cores for every server: then every server's CPU is those
/// cores' busy time, softirq included, the accounting the fast path always gets.
pub static STEERED_CORES: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();

/// Reusable engine state for one [`Flows`].
pub struct Engine {
    epoll: Epoll,
    sender: MmsgSender,
    /// Video frames as one GSO message each, while `gso` holds.
    gso_sender: GsoSender,
    /// Cleared for good when the kernel refuses GSO; `sender` takes over.
    gso: bool,
    receiver: MmsgReceiver,
    /// CLOCK_REALTIME send time of each pool index (see srtp_pool's module docs).
    send_ns: Vec<i64>,
    ready: Vec<u64>,
    next_k: usize,
    cursor: usize,
    frame: usize,
    /// The latency histogram of the last step (ns), for the charts.
    pub histogram: Histogram<u64>,
}

impl Engine {
    /// A latency histogram in ns: 1 ns to 60 s, 3 significant digits.
    pub fn new_histogram() -> Result<Histogram<u64>, String> {
        Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())
    }

    pub fn new(flows: &Flows) -> std::io::Result<Engine> {
        let epoll = Epoll::new()?;
        for (i, &fd) in flows.rx.iter().enumerate() {
            epoll.add(fd, i as u64)?;
        }
        let histogram = Engine::new_histogram().map_err(std::io::Error::other)?;
        Ok(Engine {
            epoll,
            sender: MmsgSender::new(),
            gso_sender: GsoSender::new(),
            // TURNPIKE_BENCH_NO_GSO=1 sends video one datagram per sendmmsg entry to
            // every server, in every row.
            gso: std::env::var_os("TURNPIKE_BENCH_NO_GSO").is_none(),
            receiver: MmsgReceiver::with_slot(GRO_BUF),
            send_ns: vec![0; POOL_LEN],
            ready: Vec::new(),
            next_k: 0,
            cursor: 0,
            frame: 0,
            histogram,
        })
    }

    /// Offers `rate` packets/s of `mix` for `secs`, then drains; returns counts,
    /// loss, latency and (with `probe`) relay CPU per forwarded packet.
    pub fn run_step(
        &mut self,
        flows: &Flows,
        pool: &Pool,
        mix: Mix,
        rate: f64,
        secs: f64,
        probe: Option<&CpuProbe>,
    ) -> std::io::Result<StepResult> {
        self.histogram.reset();
        self.drain(flows, pool, Duration::from_millis(20))?; // leftovers of a previous step
        self.histogram.reset();
        // Coalesced receives for video only (the sockets are shared by every mix's
        // engine). A kernel without UDP_GRO just delivers single datagrams.
        for &fd in &flows.rx {
            let _ = gso::set_gro(fd, mix == Mix::Video);
        }
        let use_gso = mix == Mix::Video && flows.gso;
        let streams = ((rate / mix.stream_pps()).round() as usize).clamp(1, flows.streams.len());
        self.cursor = 0;
        let cpu0 = probe.map(CpuProbe::ns).transpose()?;
        let start = Instant::now();
        let dur = Duration::from_secs_f64(secs);
        let (mut sent, mut received) = (0u64, 0u64);
        let mut batch: [(u32, u32); BATCH] = [(0, 0); BATCH];
        loop {
            let elapsed = start.elapsed();
            if elapsed >= dur {
                break;
            }
            let due = elapsed.as_secs_f64() * rate;
            // Send what is due, at most 8 batches before looking at receives again.
            let mut behind = false;
            for _ in 0..8 {
                let unit = self.unit_len(mix);
                if (sent + unit as u64) as f64 > due {
                    break;
                }
                let n = self.fill_batch(flows, mix, streams, due - sent as f64, &mut batch);
                let Some(&(first, _)) = batch.first() else {
                    break;
                };
                let tx = flows.streams.get(first as usize).map(|s| s.tx).unwrap_or(0);
                let fd = flows.tx.get(tx).copied().unwrap_or(-1);
                let item = |i: usize| {
                    let (s, k) = batch[i];
                    let st = &flows.streams[s as usize];
                    (
                        s,
                        st.dest,
                        [&st.prefix[..], pool.packet(k as usize), &PAD[..st.pad]],
                    )
                };
                let t0 = sys::realtime_ns();
                let gso_done = if use_gso && self.gso {
                    match self.gso_sender.send(fd, n, item) {
                        Ok(done) => Some(done),
                        Err(e) if gso::refused(&e) => {
                            self.gso = false;
                            None
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    None
                };
                let done = match gso_done {
                    Some(done) => done,
                    None => self.sender.send(fd, n, |i| {
                        let (_, dest, parts) = item(i);
                        (dest, parts)
                    })?,
                };
                let t1 = sys::realtime_ns();
                for (i, &(_, k)) in batch.iter().take(done).enumerate() {
                    let at = t0 + (t1 - t0) * i as i64 / n.max(1) as i64;
                    if let Some(slot) = self.send_ns.get_mut(k as usize) {
                        *slot = at;
                    }
                }
                sent += done as u64;
                behind = true;
            }
            // Sleep in epoll only when the next send is more than ~1.5 ms away;
            // otherwise just look (the generator owns its core).
            let next_due = (sent + self.unit_len(mix) as u64) as f64 / rate;
            let wait = next_due - start.elapsed().as_secs_f64();
            let timeout = if behind || wait < 0.0015 { 0 } else { 1 };
            received += self.receive(flows, pool, timeout)?;
        }
        let send_secs = start.elapsed().as_secs_f64();
        received += self.drain(flows, pool, Duration::from_millis(200))?;
        let cpu1 = probe.map(CpuProbe::ns).transpose()?;
        let loss = if sent == 0 {
            0.0
        } else {
            (1.0 - received as f64 / sent as f64).max(0.0)
        };
        let cpu_secs = match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
            _ => None,
        };
        Ok(StepResult {
            offered_pps: rate,
            secs: send_secs,
            streams,
            sent,
            received,
            sent_pps: sent as f64 / send_secs,
            received_pps: received as f64 / send_secs,
            loss,
            generator_limited: (sent as f64) < 0.97 * rate * secs,
            gso: use_gso && self.gso,
            cpu_us_per_packet: cpu_secs
                .filter(|_| received > 0)
                .map(|c| c * 1e6 / received as f64),
            relay_cpu_share: cpu_secs.map(|c| c / send_secs),
            latency: Latency::of(&self.histogram),
        })
    }

    /// Packets in the next send unit: one for audio, a whole frame for video.
    fn unit_len(&self, mix: Mix) -> usize {
        match mix {
            Mix::Audio => 1,
            Mix::Video => 5 + self.frame % 6,
        }
    }

    /// Fills `batch` with (stream, pool index) pairs: consecutive units of streams
    /// sharing the current stream's socket, up to `budget` packets (at least one
    /// unit) and [`BATCH`]. Returns the number of packets.
    fn fill_batch(
        &mut self,
        flows: &Flows,
        mix: Mix,
        active: usize,
        budget: f64,
        batch: &mut [(u32, u32); BATCH],
    ) -> usize {
        let mut n = 0;
        let tx = flows.streams.get(self.cursor).map(|s| s.tx);
        loop {
            let unit = self.unit_len(mix);
            if n > 0 && ((n + unit) as f64 > budget || n + unit > BATCH) {
                break;
            }
            if n + unit > BATCH {
                break;
            }
            for _ in 0..unit {
                batch[n] = (self.cursor as u32, self.next_k as u32);
                self.next_k = (self.next_k + 1) % POOL_LEN;
                n += 1;
            }
            if mix == Mix::Video {
                self.frame += 1;
            }
            self.cursor = (self.cursor + 1) % active;
            if flows.streams.get(self.cursor).map(|s| s.tx) != tx {
                break;
            }
        }
        n
    }

    /// One epoll look (up to `timeout_ms`) and bounded drains of the ready sockets.
    fn receive(&mut self, flows: &Flows, pool: &Pool, timeout_ms: i32) -> std::io::Result<u64> {
        let mut ready = std::mem::take(&mut self.ready);
        self.epoll.wait(timeout_ms, &mut ready)?;
        let mut got = 0;
        for &token in &ready {
            let Some(&fd) = flows.rx.get(token as usize) else {
                continue;
            };
            // Bounded per wake-up; level-triggered epoll reports the rest next time.
            for _ in 0..16 {
                let n = self.receiver.recv(fd)?;
                for i in 0..n {
                    let (data, _, ts) = self.receiver.get(i);
                    // A coalesced buffer is datagrams of `seg` bytes back to back (the
                    // last may be shorter). Each is a whole message as the relay sent
                    // it: ChannelData over UDP needs no padding (RFC 8656 §12.5) and a
                    // Data indication is padded to 4 inside its own datagram, so every
                    // segment parses on its own.
                    let seg = self.receiver.gro_size(i).unwrap_or(data.len()).max(1);
                    for datagram in data.chunks(seg) {
                        let Some(k) =
                            srtp_of(datagram).and_then(|p| srtp_pool::index_of(p, pool.ssrc))
                        else {
                            continue;
                        };
                        got += 1;
                        let sent_at = self.send_ns.get(k).copied().unwrap_or(0);
                        if let (Some(ts), true) = (ts, sent_at > 0) {
                            let _ = self.histogram.record((ts - sent_at).max(1) as u64);
                        }
                    }
                }
                if n < BATCH {
                    break;
                }
            }
        }
        self.ready = ready;
        Ok(got)
    }

    /// Receives until `quiet` passes without a packet (at most 2 s).
    fn drain(&mut self, flows: &Flows, pool: &Pool, quiet: Duration) -> std::io::Result<u64> {
        let start = Instant::now();
        let mut last = Instant::now();
        let mut got = 0;
        while last.elapsed() < quiet && start.elapsed() < Duration::from_secs(2) {
            let n = self.receive(flows, pool, 2)?;
            if n > 0 {
                last = Instant::now();
            }
            got += n;
        }
        Ok(got)
    }
}

const PAD: [u8; 4] = [0; 4];

/// The SRTP bytes inside whatever the relay delivered: ChannelData, a Data indication
/// (RFC 8656 §11.4), or the bare packet.
fn srtp_of(data: &[u8]) -> Option<&[u8]> {
    if channel_data::is_channel_data(data) {
        channel_data::parse(data).ok().map(|(_, d)| d)
    } else if stun::is_stun(data) {
        Message::parse(data).ok().and_then(|m| m.get(attr::DATA))
    } else {
        Some(data)
    }
}
