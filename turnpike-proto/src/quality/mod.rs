//! Call quality seen from the relay, without keys: what each relayed payload is
//! ([`classify`]), and for RTP, each stream's loss, reordering, duplicates and jitter
//! from the 12-byte header SRTP leaves in the clear (RFC 3711 §3.1) and the arrival
//! time ([`stream`]). Opt-in (`ServerConfig::rtp_quality`); off, the core reads no
//! byte past the TURN framing.
//!
//! Each allocation that has it on owns an [`AllocationQuality`]: a fixed table of
//! [`MAX_STREAMS`] streams keyed by direction and SSRC, made with the allocation, so
//! the packet path allocates nothing. A stream closes a report interval at its first
//! packet at least [`REPORT_INTERVAL`] after the last one; the interval's loss ratio
//! and the jitter go into the histograms of [`QualityStats`], by direction and by
//! media kind (audio or video, told by the inferred clock rate). SSRCs stay inside
//! the table: no label, log line or report carries one.

pub mod classify;
pub mod stream;

use std::time::{Duration, Instant};

pub use classify::{classify, PayloadKind, RtpHeader};
pub use stream::{Arrival, Interval, Jitter, RtpStream};

use crate::stats::Direction;

/// Streams tracked per allocation (both directions together): a call has an audio and a
/// video stream each way, plus retransmission or simulcast streams. Packets of streams
/// beyond this are counted as untracked.
pub const MAX_STREAMS: usize = 8;
/// How often each active stream reports its loss ratio and jitter to the histograms.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// A stream silent this long gives its slot to a new one when the table is full.
pub const STREAM_IDLE: Duration = Duration::from_secs(10);

/// What a stream carries, told by its inferred clock rate: the `kind` label of the
/// quality histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// A 90 kHz clock.
    Video = 0,
    /// Any other known rate (8–48 kHz).
    Audio,
    /// No clock rate known (yet).
    Unknown,
}

impl MediaKind {
    /// Every kind, in index order.
    pub const ALL: [MediaKind; 3] = [MediaKind::Video, MediaKind::Audio, MediaKind::Unknown];

    /// The media kind of a stream whose jitter is measured so.
    pub fn of(jitter: Jitter) -> MediaKind {
        match jitter {
            Jitter::Rtp(90_000) => MediaKind::Video,
            Jitter::Rtp(_) => MediaKind::Audio,
            _ => MediaKind::Unknown,
        }
    }

    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Unknown => "unknown",
        }
    }
}

/// Upper bounds of the loss-ratio histogram's buckets (`le`); the last bucket is +Inf.
pub const LOSS_BUCKETS: [f64; 10] = [0.0, 0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5];
/// Upper bounds of the jitter histogram's buckets, seconds.
pub const JITTER_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5];

/// A histogram of fixed buckets as plain integers (the shell publishes deltas).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is above every bound.
    pub buckets: [u64; 11],
    /// Sum of the observations, in millionths (ppm of loss, microseconds of jitter).
    pub sum_micros: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Record `value` against `bounds`.
    pub fn observe(&mut self, bounds: &[f64; 10], value: f64) {
        let slot = bounds.iter().position(|&b| value <= b).unwrap_or(10);
        if let Some(n) = self.buckets.get_mut(slot) {
            *n += 1;
        }
        self.sum_micros += (value.max(0.0) * 1e6).round() as u64;
        self.count += 1;
    }
}

/// The quality counters of one core, part of [`Stats`](crate::stats::Stats). Indexed by
/// [`Direction`] (and [`PayloadKind`] or [`MediaKind`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QualityStats {
    /// Relayed payloads by direction and kind.
    pub payloads: [[u64; 5]; 2],
    /// RTP packets lost for good (counted at each report interval, see
    /// [`REPORT_INTERVAL`], once more than [`stream::MAX_MISORDER`] packets behind the
    /// stream's highest: [`RtpStream::settled_lost`]).
    pub lost: [u64; 2],
    /// RTP packets that arrived after a later one.
    pub reordered: [u64; 2],
    /// RTP packets that arrived more than once.
    pub duplicates: [u64; 2],
    /// RTP packets of streams beyond an allocation's [`MAX_STREAMS`].
    pub untracked: [u64; 2],
    /// Loss ratio per report interval, by direction and media kind.
    pub loss: [[Histogram; 3]; 2],
    /// Jitter (seconds) per report interval, by direction and media kind.
    pub jitter: [[Histogram; 3]; 2],
}

/// One stream's slot in an allocation's table.
#[derive(Debug, Clone)]
pub struct TrackedStream {
    /// Which way it flows.
    pub direction: Direction,
    ssrc: u32,
    /// When its first packet arrived.
    pub since: Instant,
    /// When it next closes a report interval.
    next_report: Instant,
    /// The last closed interval.
    pub last_interval: Option<Interval>,
    /// Its counters.
    pub stream: RtpStream,
}

/// An allocation's streams: a fixed table, so the packet path never allocates.
#[derive(Debug, Clone, Default)]
pub struct AllocationQuality {
    streams: Vec<TrackedStream>,
    /// RTP packets not tracked because the table was full, by direction.
    pub untracked: [u64; 2],
}

impl AllocationQuality {
    /// An empty table with room for [`MAX_STREAMS`].
    pub fn new() -> AllocationQuality {
        AllocationQuality {
            streams: Vec::with_capacity(MAX_STREAMS),
            untracked: [0; 2],
        }
    }

    /// The streams being tracked.
    pub fn streams(&self) -> &[TrackedStream] {
        &self.streams
    }

    /// Account for one relayed payload going `dir` at `now`.
    #[inline]
    pub fn observe(
        &mut self,
        stats: &mut QualityStats,
        dir: Direction,
        payload: &[u8],
        now: Instant,
    ) {
        let d = dir as usize;
        let kind = classify(payload);
        stats.payloads[d][kind as usize] += 1;
        if kind != PayloadKind::Rtp {
            return;
        }
        let Some(rtp) = RtpHeader::parse(payload) else {
            return;
        };
        let found = self
            .streams
            .iter()
            .position(|s| s.ssrc == rtp.ssrc && s.direction == dir);
        let Some(i) = found else {
            self.add(stats, dir, rtp, now);
            return;
        };
        let tracked = &mut self.streams[i];
        match tracked.stream.on_packet(rtp.seq, rtp.timestamp, now) {
            Arrival::Reordered => stats.reordered[d] += 1,
            Arrival::Duplicate => stats.duplicates[d] += 1,
            _ => {}
        }
        if now >= tracked.next_report {
            tracked.next_report = now + REPORT_INTERVAL;
            let interval = tracked.stream.interval();
            tracked.last_interval = Some(interval);
            stats.lost[d] += interval.settled_lost;
            let media = MediaKind::of(tracked.stream.jitter_method()) as usize;
            if interval.expected > 0 {
                stats.loss[d][media].observe(&LOSS_BUCKETS, interval.loss_ratio());
            }
            if let Some(j) = interval.jitter {
                stats.jitter[d][media].observe(&JITTER_BUCKETS, j);
            }
        }
    }

    /// A new SSRC: into a free slot, or the slot of a stream idle for
    /// [`STREAM_IDLE`], or counted as untracked.
    #[cold]
    fn add(&mut self, stats: &mut QualityStats, dir: Direction, rtp: RtpHeader, now: Instant) {
        let tracked = TrackedStream {
            direction: dir,
            ssrc: rtp.ssrc,
            since: now,
            next_report: now + REPORT_INTERVAL,
            last_interval: None,
            stream: RtpStream::new(rtp.seq, rtp.timestamp, now),
        };
        if self.streams.len() < MAX_STREAMS {
            self.streams.push(tracked);
            return;
        }
        let idle = self
            .streams
            .iter()
            .enumerate()
            .filter(|(_, s)| now.saturating_duration_since(s.stream.last_seen) >= STREAM_IDLE)
            .min_by_key(|(_, s)| s.stream.last_seen)
            .map(|(i, _)| i);
        match idle {
            Some(i) => self.streams[i] = tracked,
            None => {
                self.untracked[dir as usize] += 1;
                stats.untracked[dir as usize] += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, ts: u32, ssrc: u32) -> [u8; 20] {
        let mut p = [0u8; 20];
        p[0] = 0x80;
        p[1] = 111;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    #[test]
    fn rtcp_and_dtls_mixed_in_are_counted_not_tracked() {
        let mut stats = QualityStats::default();
        let mut q = AllocationQuality::new();
        let start = Instant::now();
        for i in 0..300u16 {
            let at = start + Duration::from_millis(u64::from(i) * 20);
            if i % 10 != 3 {
                q.observe(
                    &mut stats,
                    Direction::ToPeer,
                    &rtp(i, u32::from(i) * 960, 7),
                    at,
                );
            }
            if i % 50 == 0 {
                q.observe(&mut stats, Direction::ToPeer, &[0x80, 200, 0, 6], at);
                q.observe(&mut stats, Direction::ToPeer, &[23, 0xfe, 0xfd, 0], at);
                q.observe(&mut stats, Direction::ToPeer, &[0, 1, 0, 0], at);
            }
        }
        let to_peer = stats.payloads[Direction::ToPeer as usize];
        assert_eq!(to_peer[PayloadKind::Rtp as usize], 270);
        assert_eq!(to_peer[PayloadKind::Rtcp as usize], 6);
        assert_eq!(to_peer[PayloadKind::Dtls as usize], 6);
        assert_eq!(to_peer[PayloadKind::Stun as usize], 6);
        assert_eq!(q.streams().len(), 1);
        // 6 s of packets: one report closed at 5 s, with 10% loss, as audio.
        let audio = &stats.loss[0][MediaKind::Audio as usize];
        assert_eq!(audio.count, 1);
        let ratio = q.streams()[0].last_interval.unwrap().loss_ratio();
        assert!((ratio - 0.1).abs() < 0.01, "{ratio}");
        // The counter has the gaps more than MAX_MISORDER behind the newest packet (250):
        // 3, 13, …, 143. The 10 after them could still arrive late.
        assert_eq!(q.streams()[0].last_interval.unwrap().lost, 25);
        assert_eq!(stats.lost[0], 15);
        assert_eq!(stats.jitter[0][MediaKind::Audio as usize].count, 1);
        assert_eq!(stats.payloads[1], [0; 5]);
    }

    #[test]
    fn a_packet_late_across_a_report_is_not_counted_lost() {
        let mut stats = QualityStats::default();
        let mut q = AllocationQuality::new();
        let start = Instant::now();
        let at = |i: u16| start + Duration::from_millis(u64::from(i) * 20);
        let send = |q: &mut AllocationQuality, stats: &mut QualityStats, i: u16, t: Instant| {
            q.observe(stats, Direction::ToPeer, &rtp(i, u32::from(i) * 960, 7), t);
        };
        // 0..=249 in order; 250 is overtaken by 251, which closes the first report
        // interval (at 5 s); 250 arrives 1 ms after it. Then 252..=510 in order; 501
        // closes the second interval (at 10 s).
        for i in 0..250 {
            send(&mut q, &mut stats, i, at(i));
        }
        send(&mut q, &mut stats, 251, at(251));
        send(&mut q, &mut stats, 250, at(251) + Duration::from_millis(1));
        for i in 252..=510 {
            send(&mut q, &mut stats, i, at(i));
        }
        assert_eq!(q.streams()[0].stream.lost(), 0);
        assert_eq!(q.streams()[0].stream.reordered(), 1);
        assert_eq!(stats.loss[0][MediaKind::Audio as usize].count, 2);
        assert_eq!(stats.lost[0], 0, "250 arrived: it was late, not lost");
        // 600 never comes: counted at the third interval (751, at 15 s), once it is
        // too far behind to arrive late.
        for i in 511..=760 {
            if i != 600 {
                send(&mut q, &mut stats, i, at(i));
            }
        }
        assert_eq!(q.streams()[0].stream.lost(), 1);
        assert_eq!(stats.loss[0][MediaKind::Audio as usize].count, 3);
        assert_eq!(stats.lost[0], 1);
    }

    #[test]
    fn an_ssrc_change_mid_stream_starts_a_new_stream() {
        let mut stats = QualityStats::default();
        let mut q = AllocationQuality::new();
        let start = Instant::now();
        for i in 0..100u16 {
            let at = start + Duration::from_millis(u64::from(i) * 20);
            let ssrc = if i < 50 { 1 } else { 2 };
            q.observe(&mut stats, Direction::ToClient, &rtp(i * 7, 0, ssrc), at);
        }
        assert_eq!(q.streams().len(), 2);
        assert!(q.streams().iter().all(|s| s.stream.received() == 50));
        // The same SSRC the other way is another stream.
        q.observe(&mut stats, Direction::ToPeer, &rtp(0, 0, 1), start);
        assert_eq!(q.streams().len(), 3);
    }

    #[test]
    fn the_table_is_bounded_and_idle_streams_give_way() {
        let mut stats = QualityStats::default();
        let mut q = AllocationQuality::new();
        let start = Instant::now();
        for ssrc in 0..20u32 {
            q.observe(&mut stats, Direction::ToPeer, &rtp(0, 0, ssrc), start);
        }
        assert_eq!(q.streams().len(), MAX_STREAMS);
        assert_eq!(stats.untracked[0], 12);
        let later = start + STREAM_IDLE;
        q.observe(&mut stats, Direction::ToPeer, &rtp(0, 0, 99), later);
        assert_eq!(q.streams().len(), MAX_STREAMS);
        assert_eq!(stats.untracked[0], 12, "an idle stream's slot was reused");
    }

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let mut h = Histogram::default();
        h.observe(&LOSS_BUCKETS, 0.0);
        h.observe(&LOSS_BUCKETS, 0.05);
        h.observe(&LOSS_BUCKETS, 0.9);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[6], 1);
        assert_eq!(h.buckets[10], 1);
        assert_eq!((h.count, h.sum_micros), (3, 950_000));
    }
}
