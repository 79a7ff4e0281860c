//! One-way latency at idle and at 10/50/90% of each server's own audio capacity,
//! measured in rounds that interleave the servers and pooled per server.
//!
//! Why rounds: on this shared VM a p99 is decided by a few stalls of the host, which
//! come and go over tens of seconds. Measured one server after the other, a quiet
//! minute for one and a noisy one for the next decided the comparison (the same
//! server's p99 at 50% load ranged from 45 µs to 1.3 ms between 2 s runs). Round
//! after round (Turnpike, coturn, bare, Turnpike, coturn, bare, …), each server
//! samples the same stretches of noise; its histograms are merged over the rounds, so
//! the figures are the percentiles of all its packets, stalls included, as a call
//! would see them.

use std::path::Path;

use hdrhistogram::Histogram;

use crate::plan::{self, Plan};
use crate::results::{Kind, LatencyPoint};
use crate::srtp_pool::Pool;
use crate::traffic::{Engine, Latency, Mix};

/// The percentiles drawn in the latency chart.
const CURVE: [f64; 9] = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99];

/// One load point of one server, over the rounds so far.
struct Point {
    load: String,
    rate: f64,
    secs: f64,
    histogram: Histogram<u64>,
    sent: u64,
    received: u64,
    p99_of_rounds: Vec<f64>,
}

/// A server's load points, filled round by round.
pub struct Points {
    points: Vec<Point>,
}

impl Points {
    /// Idle, then 10/50/90% of `capacity` (pps at ≤0.1% loss); smoke: idle and 50%.
    pub fn new(plan: &Plan, capacity: f64) -> Result<Points, String> {
        let mut loads = vec![("idle".to_string(), plan.idle_rate, plan.idle_secs)];
        let fractions: &[f64] = if plan.smoke { &[0.5] } else { &[0.1, 0.5, 0.9] };
        for f in fractions {
            let load = format!("{}%", (f * 100.0).round());
            loads.push((load, capacity * f, plan.latency_secs));
        }
        let points = loads
            .into_iter()
            .map(|(load, rate, secs)| {
                Ok(Point {
                    load,
                    rate,
                    secs,
                    histogram: Engine::new_histogram()?,
                    sent: 0,
                    received: 0,
                    p99_of_rounds: Vec::new(),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Points { points })
    }

    /// One round on `kind`: start it afresh, measure every point once, merge.
    pub fn round(
        &mut self,
        kind: Kind,
        plan: &Plan,
        pool: &Pool,
        dir: &Path,
    ) -> Result<(), String> {
        plan::with_audio_flows(kind, 1, &plan.relay_cpus, plan, dir, |flows, _| {
            let mut engine = Engine::new(flows).map_err(|e| e.to_string())?;
            for p in &mut self.points {
                let r = engine
                    .run_step(flows, pool, Mix::Audio, p.rate, p.secs, None)
                    .map_err(|e| e.to_string())?;
                p.sent += r.sent;
                p.received += r.received;
                p.p99_of_rounds
                    .push(r.latency.as_ref().map_or(f64::NAN, |l| l.p99));
                p.histogram
                    .add(&engine.histogram)
                    .map_err(|e| format!("merging latency histograms: {e:?}"))?;
            }
            Ok(())
        })
    }

    /// The pooled figures of every point.
    pub fn finish(self) -> Vec<LatencyPoint> {
        self.points
            .into_iter()
            .map(|p| {
                let h = &p.histogram;
                let curve = if h.is_empty() {
                    Vec::new()
                } else {
                    CURVE
                        .iter()
                        .map(|&q| (q, h.value_at_percentile(q) as f64 / 1000.0))
                        .collect()
                };
                LatencyPoint {
                    load: p.load,
                    offered_pps: p.rate,
                    loss: if p.sent == 0 {
                        0.0
                    } else {
                        1.0 - p.received.min(p.sent) as f64 / p.sent as f64
                    },
                    latency: Latency::of(h),
                    curve,
                    p99_of_rounds: p.p99_of_rounds,
                }
            })
            .collect()
    }
}
