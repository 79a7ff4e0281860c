//! The call-quality metrics (`telemetry.rtp_quality`, see `turnpike_proto::quality`):
//! payloads by kind, RTP loss, reordering and duplicates as counters, and per-stream
//! loss ratio and jitter as Prometheus histograms.
//!
//! The counters go through the `metrics` registry like every other core counter. The
//! histograms do not: each core already sorts its observations into fixed buckets
//! (plain integers, `proto::quality::Histogram`), and the registry's histograms only
//! take single values. So each worker adds its bucket deltas once a second to the
//! atomics of [`RTP_HISTOGRAMS`], and `/metrics` writes them out as text at each scrape,
//! as it does for the `process_*` metrics. Labels: `direction` and `kind` (audio,
//! video, unknown), both from fixed sets.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ::metrics::Counter;

use crate::metrics::add;
use crate::proto::quality::{
    Histogram, MediaKind, PayloadKind, QualityStats, JITTER_BUCKETS, LOSS_BUCKETS,
};
use crate::proto::stats::Direction;

/// Slots per histogram: 11 buckets (the last above every bound), the sum in
/// millionths, the count.
const SLOTS: usize = 13;

/// The relay's quality histograms, summed over workers: `[direction][media kind]`.
pub struct RtpHistograms {
    /// Set once at start-up when `telemetry.rtp_quality` is on; off, nothing is rendered.
    enabled: AtomicBool,
    loss: [[[AtomicU64; SLOTS]; 3]; 2],
    jitter: [[[AtomicU64; SLOTS]; 3]; 2],
}

#[allow(clippy::declare_interior_mutable_const)] // a template for the static's arrays
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ROW: [AtomicU64; SLOTS] = [ZERO; SLOTS];
#[allow(clippy::declare_interior_mutable_const)]
const KINDS: [[AtomicU64; SLOTS]; 3] = [ROW; 3];

/// The relay's [`RtpHistograms`].
pub static RTP_HISTOGRAMS: RtpHistograms = RtpHistograms {
    enabled: AtomicBool::new(false),
    loss: [KINDS; 2],
    jitter: [KINDS; 2],
};

impl RtpHistograms {
    /// Render the histograms from now on (`telemetry.rtp_quality` is on).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    fn add(slots: &[AtomicU64; SLOTS], now: &Histogram, last: &Histogram) {
        let values = now.buckets.iter().zip(&last.buckets);
        let extra = [
            (&now.sum_micros, &last.sum_micros),
            (&now.count, &last.count),
        ];
        for (slot, (n, l)) in slots.iter().zip(values.chain(extra)) {
            let delta = n.saturating_sub(*l);
            if delta > 0 {
                slot.fetch_add(delta, Ordering::Relaxed);
            }
        }
    }

    /// Appends both histogram families in Prometheus's text format, if enabled.
    pub fn render(&self, out: &mut String) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        render_family(
            out,
            "turnpike_rtp_loss_ratio",
            "Share of an RTP stream's packets lost in each 5-second report interval, \
             by direction and media kind.",
            &LOSS_BUCKETS,
            &self.loss,
        );
        render_family(
            out,
            "turnpike_rtp_jitter_seconds",
            "An RTP stream's interarrival jitter (RFC 3550 A.8) at the end of each \
             5-second report interval, by direction and media kind.",
            &JITTER_BUCKETS,
            &self.jitter,
        );
    }
}

fn render_family(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64; 10],
    rows: &[[[AtomicU64; SLOTS]; 3]; 2],
) {
    // Writing to a String cannot fail.
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
    for dir in Direction::ALL {
        for kind in MediaKind::ALL {
            let slots = &rows[dir as usize][kind as usize];
            let labels = format!("direction=\"{}\",kind=\"{}\"", dir.as_str(), kind.as_str());
            let mut cumulative = 0u64;
            for (i, slot) in slots.iter().take(11).enumerate() {
                cumulative += slot.load(Ordering::Relaxed);
                let le = bounds.get(i).map_or("+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
            }
            let sum = slots[11].load(Ordering::Relaxed) as f64 / 1e6;
            let count = slots[12].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
        }
    }
    out.push('\n');
}

/// Publishes one worker's quality counters as deltas, like `StatsPublisher`.
pub struct QualityPublisher {
    payloads: [[Counter; 5]; 2],
    lost: [Counter; 2],
    reordered: [Counter; 2],
    duplicates: [Counter; 2],
    untracked: [Counter; 2],
}

impl QualityPublisher {
    /// Registers every series (all label combinations, at 0).
    pub fn new() -> QualityPublisher {
        use ::metrics::counter;
        let per_direction = |name: &'static str| {
            Direction::ALL.map(|dir| counter!(name, "direction" => dir.as_str()))
        };
        RTP_HISTOGRAMS.enable();
        QualityPublisher {
            payloads: Direction::ALL.map(|dir| {
                PayloadKind::ALL.map(|kind| {
                    counter!("turnpike_relayed_payloads_total",
                        "direction" => dir.as_str(), "kind" => kind.as_str())
                })
            }),
            lost: per_direction("turnpike_rtp_lost_packets_total"),
            reordered: per_direction("turnpike_rtp_reordered_packets_total"),
            duplicates: per_direction("turnpike_rtp_duplicate_packets_total"),
            untracked: per_direction("turnpike_rtp_untracked_packets_total"),
        }
    }

    /// Adds what `now` counted since `last`.
    pub fn publish(&self, now: &QualityStats, last: &QualityStats) {
        for d in 0..2 {
            for k in 0..5 {
                add(
                    &self.payloads[d][k],
                    now.payloads[d][k],
                    last.payloads[d][k],
                );
            }
            add(&self.lost[d], now.lost[d], last.lost[d]);
            add(&self.reordered[d], now.reordered[d], last.reordered[d]);
            add(&self.duplicates[d], now.duplicates[d], last.duplicates[d]);
            add(&self.untracked[d], now.untracked[d], last.untracked[d]);
            for m in 0..3 {
                RtpHistograms::add(
                    &RTP_HISTOGRAMS.loss[d][m],
                    &now.loss[d][m],
                    &last.loss[d][m],
                );
                RtpHistograms::add(
                    &RTP_HISTOGRAMS.jitter[d][m],
                    &now.jitter[d][m],
                    &last.jitter[d][m],
                );
            }
        }
    }
}

impl Default for QualityPublisher {
    fn default() -> Self {
        Self::new()
    }
}

/// Metric descriptions, registered with the others at start-up.
pub fn describe() {
    use ::metrics::describe_counter;
    describe_counter!(
        "turnpike_relayed_payloads_total",
        "Relayed payloads by direction and kind (rtp, rtcp, dtls, stun, other: RFC 7983 \
         first-byte ranges), with telemetry.rtp_quality on."
    );
    describe_counter!(
        "turnpike_rtp_lost_packets_total",
        "RTP packets never received (sequence-number gaps), counted per 5-second report \
         interval of each stream once more than 100 packets behind its newest, so a \
         packet that only arrived late is not counted."
    );
    describe_counter!(
        "turnpike_rtp_reordered_packets_total",
        "RTP packets that arrived after a packet with a later sequence number."
    );
    describe_counter!(
        "turnpike_rtp_duplicate_packets_total",
        "RTP packets that arrived more than once."
    );
    describe_counter!(
        "turnpike_rtp_untracked_packets_total",
        "RTP packets of streams not measured because their allocation already tracks \
         its maximum number of streams."
    );
}
