//! One RTP stream's reception statistics, as a receiver would keep them (RFC 3550
//! appendix A), from the clear header fields of each packet and its arrival time.
//!
//! - **Sequence numbers** (A.1): a 16-bit number extended by counting wraps; a jump of
//!   more than [`MAX_DROPOUT`] ahead or [`MAX_MISORDER`] behind is taken as a restart of
//!   the sender once a second packet confirms it. A window of the last
//!   [`HISTORY`] numbers tells a reordered packet (late, first time seen) from a
//!   duplicate, so loss is counted on distinct packets and duplicates cannot hide it.
//! - **Loss** (A.3): expected (highest − first + 1) minus distinct packets received,
//!   in total and per report interval.
//! - **Jitter** (A.8): the smoothed difference between arrival spacing and RTP
//!   timestamp spacing, `J += (|D| − J) / 16`, kept in microseconds. That needs the
//!   stream's clock rate, which the relay cannot read from SDP: it is inferred by
//!   comparing timestamp advance with arrival time over [`PROBE_WINDOW`] and snapping to
//!   the rates calls use ([`CLOCK_RATES`]: 48 kHz Opus, 90 kHz video, 8/16 kHz G.711 and
//!   G.722, …). A stream whose rate matches none after [`PROBE_ATTEMPTS`] windows is
//!   measured by arrival-time variation instead (`D` = the change between successive
//!   inter-arrival gaps), which [`Jitter::method`] reports.
//! - A timestamp step of more than [`TIMESTAMP_JUMP`] against arrival time (a sender
//!   switching sources) restarts the spacing without feeding the jump into the jitter.

use std::time::{Duration, Instant};

/// A jump ahead larger than this many sequence numbers is a restart, not loss (A.1).
pub const MAX_DROPOUT: u16 = 3000;
/// A packet at most this far behind the highest is late, not a restart (A.1).
pub const MAX_MISORDER: u16 = 100;
/// How many sequence numbers behind the highest are remembered, to tell duplicates
/// from reordered packets (at least [`MAX_MISORDER`]).
pub const HISTORY: u16 = 128;
/// The clock rates a call's RTP uses, in Hz.
pub const CLOCK_RATES: [u32; 7] = [8_000, 16_000, 24_000, 32_000, 44_100, 48_000, 90_000];
/// Over how long timestamp advance is compared with arrival time to infer the clock.
pub const PROBE_WINDOW: Duration = Duration::from_secs(1);
/// Inference windows tried before falling back to arrival-time variation.
pub const PROBE_ATTEMPTS: u8 = 3;
/// How far from a known rate an inferred one may be (relative) and still snap to it.
pub const RATE_TOLERANCE: f64 = 0.04;
/// A difference `D` beyond this is a timestamp jump, not jitter.
pub const TIMESTAMP_JUMP: Duration = Duration::from_secs(2);

/// What one packet was to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next one, or ahead of the next (the gap is counted as lost until it comes).
    InOrder,
    /// Behind the highest, seen for the first time.
    Reordered,
    /// Seen before.
    Duplicate,
    /// A far jump, held until a second packet confirms that the sender restarted.
    Jump,
    /// The confirmation of a jump: the stream's counters restarted from this packet.
    Restarted,
}

/// How jitter is measured for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Not yet: the clock rate is still being inferred.
    Probing,
    /// RFC 3550 A.8 interarrival jitter with the inferred clock rate (Hz).
    Rtp(u32),
    /// Variation of the time between arrivals (no known clock rate).
    Arrival,
}

impl Jitter {
    /// How it is measured, as reported (`rtp`, `arrival`, or `probing`).
    pub fn method(self) -> &'static str {
        match self {
            Jitter::Probing => "probing",
            Jitter::Rtp(_) => "rtp",
            Jitter::Arrival => "arrival",
        }
    }
}

/// One stream's counters: RFC 3550's receiver state for one SSRC.
#[derive(Debug, Clone)]
pub struct RtpStream {
    /// When its last packet arrived.
    pub last_seen: Instant,
    /// Extended sequence numbers start at 65536 rather than 0, so a packet a little
    /// behind the very first one still has a number.
    base: u64,
    /// The highest extended sequence number seen.
    max: u64,
    /// A far jump waiting for confirmation (A.1's `bad_seq`).
    bad_seq: Option<u16>,
    /// Distinct packets received since the base.
    received: u64,
    /// Duplicates and reordered packets, since the stream began.
    duplicates: u64,
    reordered: u64,
    /// Bit i: sequence number `max - i` was received.
    seen: u128,
    /// The counts at the end of the last report interval (A.3).
    expected_prior: u64,
    received_prior: u64,
    /// [`RtpStream::settled_lost`] at the end of the last report interval.
    settled_prior: u64,
    /// Clock-rate inference, or the measure in use.
    clock: Clock,
    /// Timestamp and arrival time of the last distinct packet.
    last: (u32, Instant),
    /// The gap between the last two arrivals (for [`Jitter::Arrival`]).
    last_gap: Option<Duration>,
    /// Smoothed jitter, microseconds; `None` until the first measurement.
    jitter_us: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
enum Clock {
    Probing { ts: u32, at: Instant, failed: u8 },
    Known(Jitter),
}

/// One report interval of a stream (A.3), for the histograms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Packets expected in the interval (from sequence numbers).
    pub expected: u64,
    /// Of them, not received (never negative: late duplicates do not make up for loss).
    pub lost: u64,
    /// Packets lost for good since the last interval ([`RtpStream::settled_lost`]): what
    /// a lost-packet counter adds, so that a packet which only arrived late, after the
    /// interval closed, is never counted.
    pub settled_lost: u64,
    /// The jitter at the end of the interval, seconds; `None` while probing.
    pub jitter: Option<f64>,
}

impl Interval {
    /// `lost / expected`, 0 when nothing was expected.
    pub fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 / self.expected as f64
        }
    }
}

impl RtpStream {
    /// A stream starting with a packet of sequence number `seq` and timestamp `ts`.
    pub fn new(seq: u16, ts: u32, now: Instant) -> RtpStream {
        let max = (1 << 16) + u64::from(seq);
        RtpStream {
            last_seen: now,
            base: max,
            max,
            bad_seq: None,
            received: 1,
            duplicates: 0,
            reordered: 0,
            seen: 1,
            expected_prior: 0,
            received_prior: 0,
            settled_prior: 0,
            clock: Clock::Probing {
                ts,
                at: now,
                failed: 0,
            },
            last: (ts, now),
            last_gap: None,
            jitter_us: None,
        }
    }

    /// Account for one packet.
    pub fn on_packet(&mut self, seq: u16, ts: u32, now: Instant) -> Arrival {
        self.last_seen = now;
        let max_seq = self.max as u16;
        let ahead = seq.wrapping_sub(max_seq);
        let arrival = if ahead == 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        } else if ahead < MAX_DROPOUT {
            self.max += u64::from(ahead);
            self.seen = if u32::from(ahead) >= 128 {
                1
            } else {
                (self.seen << ahead) | 1
            };
            self.received += 1;
            self.bad_seq = None;
            Arrival::InOrder
        } else if ahead <= u16::MAX - MAX_MISORDER {
            // Far ahead, or far behind: a restarted sender, or a stray packet.
            if self.bad_seq == Some(seq) {
                *self = RtpStream::new(seq, ts, now);
                return Arrival::Restarted;
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return Arrival::Jump;
        } else {
            let behind = max_seq.wrapping_sub(seq);
            let bit = 1u128 << behind;
            if self.seen & bit != 0 {
                self.duplicates += 1;
                return Arrival::Duplicate;
            }
            self.seen |= bit;
            self.received += 1;
            self.reordered += 1;
            // Late but before the first packet: the stream began earlier than we thought.
            self.base = self.base.min(self.max - u64::from(behind));
            Arrival::Reordered
        };
        self.time(ts, now);
        arrival
    }

    /// Jitter and clock inference for a distinct packet.
    fn time(&mut self, ts: u32, now: Instant) {
        let (last_ts, last_at) = self.last;
        let gap = now.saturating_duration_since(last_at);
        self.last = (ts, now);
        match self.clock {
            Clock::Probing {
                ts: ts0,
                at,
                failed,
            } => {
                let elapsed = now.saturating_duration_since(at);
                if elapsed >= PROBE_WINDOW {
                    let advance = f64::from(ts.wrapping_sub(ts0) as i32);
                    let rate = advance / elapsed.as_secs_f64();
                    self.clock = match snap(rate) {
                        Some(hz) => Clock::Known(Jitter::Rtp(hz)),
                        None if failed + 1 >= PROBE_ATTEMPTS => Clock::Known(Jitter::Arrival),
                        None => Clock::Probing {
                            ts,
                            at: now,
                            failed: failed + 1,
                        },
                    };
                }
            }
            Clock::Known(Jitter::Rtp(hz)) => {
                let spacing = f64::from(ts.wrapping_sub(last_ts) as i32) * 1e6 / f64::from(hz);
                let d = gap.as_secs_f64() * 1e6 - spacing;
                if d.abs() < TIMESTAMP_JUMP.as_secs_f64() * 1e6 {
                    self.smooth(d);
                }
            }
            Clock::Known(_) => {
                if let Some(last_gap) = self.last_gap {
                    let d = gap.as_secs_f64() * 1e6 - last_gap.as_secs_f64() * 1e6;
                    if d.abs() < TIMESTAMP_JUMP.as_secs_f64() * 1e6 {
                        self.smooth(d);
                    }
                }
            }
        }
        self.last_gap = Some(gap);
    }

    fn smooth(&mut self, d: f64) {
        let j = self.jitter_us.unwrap_or(0.0);
        self.jitter_us = Some(j + (d.abs() - j) / 16.0);
    }

    /// Close a report interval: what was expected and lost since the last one.
    pub fn interval(&mut self) -> Interval {
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let settled = self.settled_lost();
        let settled_interval = settled.saturating_sub(self.settled_prior);
        self.settled_prior = self.settled_prior.max(settled);
        Interval {
            expected: expected_interval,
            lost: expected_interval.saturating_sub(received_interval),
            settled_lost: settled_interval,
            jitter: self.jitter_seconds(),
        }
    }

    /// Packets expected since the stream began: highest − first + 1.
    pub fn expected(&self) -> u64 {
        self.max - self.base + 1
    }

    /// Distinct packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets never received (expected − distinct received).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// Packets lost for good: the gaps more than [`MAX_MISORDER`] behind the highest
    /// sequence number, which no packet can fill any more (one that far behind is taken
    /// as a jump, not as late). The gaps nearer the highest may still arrive, reordered.
    pub fn settled_lost(&self) -> u64 {
        // Bit i of `seen` is `max - i`; a packet up to MAX_MISORDER behind is late, so
        // bits 0..=MAX_MISORDER (those at or after the base) may still change.
        let window = self.expected().min(u64::from(MAX_MISORDER) + 1);
        let mask = (1u128 << window) - 1;
        let pending = window - u64::from((self.seen & mask).count_ones());
        self.lost().saturating_sub(pending)
    }

    /// Packets received more than once (each extra copy counts).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Packets that arrived after a higher sequence number.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// How jitter is measured.
    pub fn jitter_method(&self) -> Jitter {
        match self.clock {
            Clock::Probing { .. } => Jitter::Probing,
            Clock::Known(j) => j,
        }
    }

    /// Smoothed jitter in seconds, once measured.
    pub fn jitter_seconds(&self) -> Option<f64> {
        self.jitter_us.map(|us| us / 1e6)
    }
}

/// The known clock rate within [`RATE_TOLERANCE`] of `rate`, if any.
fn snap(rate: f64) -> Option<u32> {
    CLOCK_RATES
        .iter()
        .copied()
        .find(|&hz| (rate / f64::from(hz) - 1.0).abs() <= RATE_TOLERANCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender of 20 ms packets (Opus: 960 ticks at 48 kHz), on virtual time.
    struct Sender {
        seq: u16,
        ts: u32,
        at: Instant,
        step: u32,
        every: Duration,
    }

    impl Sender {
        fn opus(seq: u16) -> Sender {
            Sender {
                seq,
                ts: 1_000_000,
                at: Instant::now(),
                step: 960,
                every: Duration::from_millis(20),
            }
        }
        /// The next packet's (seq, ts, send time); the sender advances.
        fn next(&mut self) -> (u16, u32, Instant) {
            let p = (self.seq, self.ts, self.at);
            self.seq = self.seq.wrapping_add(1);
            self.ts = self.ts.wrapping_add(self.step);
            self.at += self.every;
            p
        }
    }

    fn run(s: &mut Sender, n: usize, mut deliver: impl FnMut(usize) -> bool) -> RtpStream {
        let (seq, ts, at) = s.next();
        let mut stream = RtpStream::new(seq, ts, at);
        for i in 1..n {
            let (seq, ts, at) = s.next();
            if deliver(i) {
                stream.on_packet(seq, ts, at);
            }
        }
        stream
    }

    #[test]
    fn counts_loss_of_every_tenth_packet() {
        let mut s = Sender::opus(100);
        let stream = run(&mut s, 1000, |i| i % 10 != 5);
        assert_eq!(stream.expected(), 1000);
        assert_eq!(stream.lost(), 100);
        assert_eq!(stream.reordered(), 0);
        assert_eq!(stream.duplicates(), 0);
    }

    #[test]
    fn sequence_wraps_at_65535_without_loss_or_restart() {
        let mut s = Sender::opus(65_000);
        let stream = run(&mut s, 2000, |_| true);
        assert_eq!(stream.expected(), 2000);
        assert_eq!(stream.received(), 2000);
        assert_eq!(stream.lost(), 0);
    }

    #[test]
    fn reordered_and_duplicate_packets_are_told_apart() {
        let mut s = Sender::opus(65_530);
        let now = Instant::now();
        let mut stream = RtpStream::new(65_530, 0, now);
        let _ = s.next();
        let packets: Vec<_> = (0..20).map(|_| s.next()).collect();
        // 65531, 65533, 65532 (late), 65533 (again), 65534, 65535, 0, 2, 1 (late across
        // the wrap), 1 (again), 3 …
        let order = [0, 2, 1, 2, 3, 4, 5, 7, 6, 6, 8, 9];
        let outcomes: Vec<_> = order
            .iter()
            .map(|&i| {
                let (seq, ts, at) = packets[i];
                stream.on_packet(seq, ts, at)
            })
            .collect();
        use Arrival::*;
        assert_eq!(
            outcomes,
            [
                InOrder, InOrder, Reordered, Duplicate, InOrder, InOrder, InOrder, InOrder,
                Reordered, Duplicate, InOrder, InOrder
            ]
        );
        assert_eq!(stream.reordered(), 2);
        assert_eq!(stream.duplicates(), 2);
        assert_eq!(stream.expected(), 11);
        assert_eq!(
            stream.lost(),
            0,
            "duplicates must not count as received twice"
        );
    }

    #[test]
    fn a_duplicate_does_not_hide_a_loss() {
        let now = Instant::now();
        let mut stream = RtpStream::new(10, 0, now);
        stream.on_packet(12, 0, now); // 11 lost
        stream.on_packet(12, 0, now); // a copy of 12
        assert_eq!(stream.expected(), 3);
        assert_eq!(stream.lost(), 1);
        assert_eq!(stream.duplicates(), 1);
    }

    #[test]
    fn a_packet_before_the_first_extends_the_stream() {
        let now = Instant::now();
        let mut stream = RtpStream::new(500, 0, now);
        assert_eq!(stream.on_packet(499, 0, now), Arrival::Reordered);
        stream.on_packet(501, 0, now);
        assert_eq!((stream.expected(), stream.lost()), (3, 0));
    }

    #[test]
    fn a_far_jump_restarts_the_stream_once_confirmed() {
        let mut s = Sender::opus(1000);
        let mut stream = run(&mut s, 50, |_| true);
        let at = Instant::now() + Duration::from_secs(2);
        // One stray packet far ahead is not taken as 20 000 losses.
        assert_eq!(stream.on_packet(21_000, 0, at), Arrival::Jump);
        assert_eq!(stream.lost(), 0);
        let (seq, ts, at) = s.next();
        assert_eq!(stream.on_packet(seq, ts, at), Arrival::InOrder);
        // Two in a row are a restarted sender.
        assert_eq!(stream.on_packet(40_000, 5, at), Arrival::Jump);
        assert_eq!(stream.on_packet(40_001, 965, at), Arrival::Restarted);
        assert_eq!(stream.on_packet(40_002, 1925, at), Arrival::InOrder);
        assert_eq!((stream.expected(), stream.lost()), (2, 0));
    }

    #[test]
    fn a_gap_is_settled_once_too_far_behind_to_arrive_late() {
        let now = Instant::now();
        let mut stream = RtpStream::new(0, 0, now);
        // 1 and 2 missing; up to 100 behind they may still come.
        for seq in 3..=102 {
            stream.on_packet(seq, 0, now);
        }
        assert_eq!((stream.lost(), stream.settled_lost()), (2, 1));
        assert_eq!(stream.on_packet(2, 0, now), Arrival::Reordered);
        assert_eq!((stream.lost(), stream.settled_lost()), (1, 1));
        // A jump ahead settles the gaps now more than 100 behind (1 and 103..=299);
        // 300..=399 may still come.
        stream.on_packet(400, 0, now);
        assert_eq!((stream.lost(), stream.settled_lost()), (298, 198));
        // A stream shorter than the window has nothing settled.
        let mut short = RtpStream::new(0, 0, now);
        short.on_packet(5, 0, now);
        assert_eq!((short.lost(), short.settled_lost()), (4, 0));
    }

    #[test]
    fn report_intervals_split_the_loss() {
        let mut s = Sender::opus(0);
        let mut stream = run(&mut s, 100, |i| i % 20 != 7);
        let first = stream.interval();
        assert_eq!((first.expected, first.lost), (100, 5));
        assert!((first.loss_ratio() - 0.05).abs() < 1e-9);
        for _ in 0..100 {
            let (seq, ts, at) = s.next();
            stream.on_packet(seq, ts, at);
        }
        let second = stream.interval();
        assert_eq!((second.expected, second.lost), (100, 0));
        assert_eq!(stream.interval().expected, 0);
    }

    #[test]
    fn infers_opus_and_video_clocks() {
        let mut s = Sender::opus(0);
        let stream = run(&mut s, 30, |_| true);
        assert_eq!(stream.jitter_method(), Jitter::Probing);
        let stream = run(&mut Sender::opus(0), 100, |_| true);
        assert_eq!(stream.jitter_method(), Jitter::Rtp(48_000));
        // 30 frames/s of video, three packets per frame sharing a timestamp.
        let start = Instant::now();
        let mut stream = RtpStream::new(0, 0, start);
        for i in 1..200u32 {
            let frame = i / 3;
            let at = start + Duration::from_millis(u64::from(frame) * 33 + u64::from(i % 3));
            stream.on_packet(i as u16, frame * 2970, at); // 90 kHz × 33 ms = 2970
        }
        assert_eq!(stream.jitter_method(), Jitter::Rtp(90_000));
    }

    #[test]
    fn jitter_is_zero_on_a_steady_stream_and_rises_with_delay_variation() {
        let steady = run(&mut Sender::opus(0), 500, |_| true);
        assert_eq!(steady.jitter_method(), Jitter::Rtp(48_000));
        assert!(steady.jitter_seconds().unwrap() < 1e-6);

        // Arrival delay alternating 0 and 10 ms: |D| = 10 ms every packet, so J → 10 ms.
        let mut s = Sender::opus(0);
        let (seq, ts, at) = s.next();
        let mut stream = RtpStream::new(seq, ts, at);
        for i in 1..1000 {
            let (seq, ts, at) = s.next();
            let delay = Duration::from_millis(if i % 2 == 0 { 0 } else { 10 });
            stream.on_packet(seq, ts, at + delay);
        }
        let j = stream.jitter_seconds().unwrap();
        assert!((j - 0.010).abs() < 0.0005, "jitter {j}");
    }

    #[test]
    fn a_timestamp_jump_is_not_jitter() {
        let mut s = Sender::opus(0);
        let mut stream = run(&mut s, 200, |_| true);
        s.ts = s.ts.wrapping_add(48_000 * 30); // the sender's clock leaps 30 s
        for _ in 0..50 {
            let (seq, ts, at) = s.next();
            stream.on_packet(seq, ts, at);
        }
        assert!(stream.jitter_seconds().unwrap() < 1e-6);
    }

    #[test]
    fn unknown_clock_falls_back_to_arrival_variation() {
        // 20 ms packets whose timestamps advance at 11 kHz: no known rate.
        let start = Instant::now();
        let mut stream = RtpStream::new(0, 0, start);
        for i in 1..400u16 {
            let delay = Duration::from_millis(if i % 2 == 0 { 0 } else { 4 });
            let at = start + Duration::from_millis(u64::from(i) * 20) + delay;
            stream.on_packet(i, u32::from(i) * 220, at);
        }
        assert_eq!(stream.jitter_method(), Jitter::Arrival);
        // Gaps alternate 24 and 16 ms: each differs from the last by 8 ms.
        let j = stream.jitter_seconds().unwrap();
        assert!((j - 0.008).abs() < 0.0005, "jitter {j}");
    }
}
