//! Call quality as the relay measures it (`[telemetry] rtp_quality`), against impairments
//! the test makes and counts itself.
//!
//! Each test runs a real call (webrtc-rs, PCMU audio at 50 packets/s each way) through a
//! relay in this process, both clients reaching it through the shim (support/shim.rs),
//! which impairs only alice's RTP on its way to the relay. What the relay reports, in
//! `GET /v1/allocations` (the workers' reports) and in its metrics, must match what the
//! shim did: loss on alice's uplink and on what bob's allocation received from it,
//! nothing on bob's uplink or on alice's downlink; jitter equal to the RFC 3550 jitter
//! the test computes from the shim's own record of what it forwarded, and when.
//!
//! Direction names are the relay's: on an allocation, `to_peer` is what its client sends
//! (the client's uplink) and `to_client` what the peer sends it. Both clients allocate on
//! this relay, so alice's audio crosses alice's allocation `to_peer`, then bob's
//! `to_client`.
//!
//! The metrics registry and the quality histograms are process-wide, so the tests take
//! turns ([`SERIAL`]) and compare the metrics before and after their call.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::shim::{self, Counts, Impairment, Shim};
use support::{options, Relay, Signal};
use turnpike::net::WorkerReport;
use turnpike::proto::quality::{Jitter, MediaKind};
use turnpike::proto::report::{AllocationReport, StreamReport};
use turnpike::proto::stats::Direction;
use turnpike_callclient::media::PCMU_CLOCK_RATE;
use turnpike_callclient::{Payload, Report, Role};

/// One test's call at a time: they share the metrics registry.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Media long enough for two closed 5-second report intervals per stream.
const MEDIA_TIME: Duration = Duration::from_secs(11);
/// Whole call, sign-in to hangup.
const CALL_BUDGET: Duration = Duration::from_secs(60);
/// How often the test asks the relay for its allocations during the call.
const POLL: Duration = Duration::from_millis(250);
/// How long a worker may take to answer.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// The workers publish their counters once a second.
const PUBLISH_WAIT: Duration = Duration::from_millis(2500);

/// The shim's random generator: the loss test's seed.
const LOSS_SEED: u64 = 623;
const LOSS_PROBABILITY: f64 = 0.05;

/// What one call left behind.
struct Outcome {
    alice: Report,
    bob: Report,
    /// The relay's last report during the call that had both users' streams.
    reports: Vec<WorkerReport>,
    /// When the relay was asked for that report.
    asked: Instant,
    /// The shim's counts right after that report.
    counts: Counts,
    /// The shim's counts once the call ended.
    final_counts: Counts,
    /// Metric values: after the call minus before it.
    metrics: Metrics,
    /// Every RTP datagram the clients sent through the shim.
    sent: Vec<shim::Sent>,
}

/// Run alice calling bob through a measuring relay, alice's uplink impaired.
async fn call_through_shim(impairment: Impairment, seed: u64) -> Outcome {
    let prometheus = turnpike::metrics::install_recorder();
    let relay = Relay::start_measuring(rand::random::<u16>() % 10);
    let shim = Shim::start(relay.addr, "alice", impairment, seed);
    let signal = Signal::start(vec![format!("turn:{}?transport=udp", shim.addr)]).await;
    let before = Metrics::parse(&turnpike::metrics::render_with_process_metrics(&prometheus));

    let mut alice = options(
        &signal.url,
        "alice",
        Role::Call { to: "bob".into() },
        Payload::Tone(440.0),
    );
    alice.media_time = MEDIA_TIME;
    let mut bob = options(&signal.url, "bob", Role::Answer, Payload::Tone(660.0));
    bob.media_time = MEDIA_TIME;
    let bob_call = tokio::spawn(turnpike_callclient::run(bob));
    let alice_call = tokio::spawn(turnpike_callclient::run(alice));

    // The clients may delete their allocations as they hang up: keep the last report
    // taken while both had an uplink stream.
    let reporter = relay.reporter();
    let started = Instant::now();
    let mut last = None;
    let polls = CALL_BUDGET.as_millis() / POLL.as_millis();
    for _ in 0..polls {
        if alice_call.is_finished() && bob_call.is_finished() {
            break;
        }
        assert!(
            started.elapsed() < CALL_BUDGET,
            "the call did not finish within {CALL_BUDGET:?}"
        );
        tokio::time::sleep(POLL).await;
        let asked = Instant::now();
        let reports = reporter.allocations(REPORT_TIMEOUT).await;
        let counts = shim.counts();
        let both = ["alice", "bob"].iter().all(|user| {
            allocations(&reports)
                .filter(|a| a.user == *user)
                .any(|a| a.streams.iter().any(|s| s.direction == Direction::ToPeer))
        });
        if both {
            last = Some((reports, asked, counts));
        }
    }
    assert!(
        alice_call.is_finished() && bob_call.is_finished(),
        "the call did not finish within {CALL_BUDGET:?}"
    );
    let alice = alice_call
        .await
        .expect("alice's task")
        .expect("alice's call");
    let bob = bob_call.await.expect("bob's task").expect("bob's call");
    eprintln!(
        "alice: {}",
        serde_json::to_string(&alice).expect("report encodes")
    );
    eprintln!(
        "bob: {}",
        serde_json::to_string(&bob).expect("report encodes")
    );
    let (reports, asked, counts) =
        last.expect("the relay reported both users' streams during the call");
    let final_counts = shim.counts();

    tokio::time::sleep(PUBLISH_WAIT).await;
    let after = Metrics::parse(&turnpike::metrics::render_with_process_metrics(&prometheus));
    Outcome {
        alice,
        bob,
        reports,
        asked,
        counts,
        final_counts,
        metrics: after.minus(&before),
        sent: shim.sent(),
    }
}

fn allocations(reports: &[WorkerReport]) -> impl Iterator<Item = &AllocationReport> {
    reports.iter().flat_map(|w| w.allocations.iter())
}

impl Outcome {
    /// The one RTP stream going `direction` on `user`'s one allocation.
    fn stream(&self, user: &str, direction: Direction) -> &StreamReport {
        let mine: Vec<_> = allocations(&self.reports)
            .filter(|a| a.user == user)
            .collect();
        assert_eq!(mine.len(), 1, "{user} has one allocation: {mine:#?}");
        let streams: Vec<_> = mine[0]
            .streams
            .iter()
            .filter(|s| s.direction == direction)
            .collect();
        assert_eq!(
            streams.len(),
            1,
            "{user}'s allocation has one {} stream: {streams:#?}",
            direction.as_str()
        );
        streams[0]
    }

    /// RFC 3550 A.8 jitter (ms) of the impaired user's RTP (`impaired`) or the other's,
    /// as it entered the shim (`departed` false) or left it, in the order it left, up to
    /// the relay's report: the jitter the relay should report for that stream.
    fn shim_jitter_ms(&self, impaired: bool, departed: bool) -> f64 {
        let mut points: Vec<(u32, Instant)> = self
            .sent
            .iter()
            .filter(|s| s.impaired == impaired)
            .filter_map(|s| {
                let at = if departed { s.departs? } else { s.arrived };
                Some((s.timestamp, at))
            })
            .filter(|&(_, at)| at < self.asked)
            .collect();
        points.sort_by_key(|&(_, at)| at);
        a8_jitter_ms(&points)
    }

    /// How many of the impaired user's RTP packets left the shim after one with a later
    /// sequence number, up to the relay's report.
    fn shim_reordered(&self) -> u64 {
        let mut left: Vec<(Instant, u16)> = self
            .sent
            .iter()
            .filter(|s| s.impaired)
            .filter_map(|s| Some((s.departs?, s.seq)))
            .filter(|&(at, _)| at < self.asked)
            .collect();
        left.sort();
        let mut highest: Option<u16> = None;
        let mut late = 0;
        for (_, seq) in left {
            match highest {
                // Sequence numbers compared modulo 2^16 (RFC 3550 A.1).
                Some(h) if seq.wrapping_sub(h) > u16::MAX / 2 => late += 1,
                _ => highest = Some(seq),
            }
        }
        late
    }

    /// Print every stream the relay reported, with the shim's counts.
    fn print(&self) {
        for (who, impaired) in [("alice", true), ("bob", false)] {
            let gaps: Vec<f64> = self
                .sent
                .iter()
                .filter(|s| s.impaired == impaired)
                .map(|s| s.arrived)
                .collect::<Vec<_>>()
                .windows(2)
                .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1e3)
                .collect();
            let short = gaps.iter().filter(|&&g| g < 5.0).count();
            let long = gaps.iter().filter(|&&g| g > 35.0).count();
            eprintln!(
                "shim: {who}'s RTP: {} packets, jitter {:.2} ms in, {:.2} ms out; \
                 gaps < 5 ms: {short}, > 35 ms: {long}",
                gaps.len() + 1,
                self.shim_jitter_ms(impaired, false),
                self.shim_jitter_ms(impaired, true),
            );
        }
        eprintln!(
            "shim: {:?}, drop ratio {:.4}",
            self.counts,
            self.counts.drop_ratio()
        );
        for a in allocations(&self.reports) {
            for s in &a.streams {
                eprintln!(
                    "relay: {} {} {:?}: expected {} lost {} (ratio {:.4}, last interval {:?}) \
                     reordered {} duplicates {} jitter {:?} ms",
                    a.user,
                    s.direction.as_str(),
                    s.jitter_method,
                    s.expected,
                    s.lost,
                    s.loss_ratio(),
                    s.interval_loss,
                    s.reordered,
                    s.duplicates,
                    s.jitter.map(|j| j * 1e3),
                );
            }
        }
    }
}

/// The relay's jitter on `stream` is the A.8 jitter of what the shim forwarded
/// (`truth_ms`), to within 1.5 ms or 20%: the relay timestamps arrivals once per worker
/// wake-up, and the shim's delayed sends leave up to a timer tick late.
fn assert_jitter_matches(stream: &StreamReport, truth_ms: f64, who: &str) {
    let reported = stream.jitter.expect("jitter measured") * 1e3;
    let tolerance = (0.2 * truth_ms).max(1.5);
    assert!(
        (reported - truth_ms).abs() <= tolerance,
        "{who}: the relay reports {reported:.2} ms jitter, the shim forwarded {truth_ms:.2} ms"
    );
}

/// Every stream is the clients' PCMU audio: measured as audio on its 8 kHz clock.
fn assert_audio(stream: &StreamReport, who: &str) {
    assert_eq!(
        stream.jitter_method,
        Jitter::Rtp(PCMU_CLOCK_RATE),
        "{who}: the clock rate is inferred"
    );
    assert_eq!(stream.media, MediaKind::Audio, "{who}");
    // 11 s of 20 ms packets; the relay sees all but the first few hundred ms.
    assert!(
        stream.expected >= 400,
        "{who}: {} packets expected",
        stream.expected
    );
}

/// The admin endpoint's JSON shows the same streams: for `user`'s `direction` stream,
/// its kind, clock rate and loss ratio.
fn assert_document(outcome: &Outcome, user: &str, direction: Direction) {
    let doc = turnpike::admin::document(&outcome.reports, true);
    assert_eq!(doc["rtp_quality"], true);
    let allocations = doc["allocations"].as_array().expect("an array");
    let mine: Vec<_> = allocations.iter().filter(|a| a["user"] == user).collect();
    assert_eq!(mine.len(), 1, "{doc:#}");
    let streams = mine[0]["streams"].as_array().expect("streams");
    let stream = streams
        .iter()
        .find(|s| s["direction"] == direction.as_str())
        .unwrap_or_else(|| panic!("{user}'s {} stream in {doc:#}", direction.as_str()));
    let reported = outcome.stream(user, direction);
    assert_eq!(stream["kind"], "audio");
    assert_eq!(stream["clock_rate"], PCMU_CLOCK_RATE);
    assert_eq!(stream["jitter_method"], "rtp");
    assert_eq!(stream["expected"], reported.expected);
    assert_eq!(stream["lost"], reported.lost);
    assert_eq!(stream["loss_ratio"].as_f64(), Some(reported.loss_ratio()));
    let jitter_ms = stream["jitter_ms"].as_f64().expect("jitter_ms");
    assert!((jitter_ms - reported.jitter.unwrap() * 1e3).abs() < 1e-9);
    assert!(
        stream["interval_loss_ratio"].is_number(),
        "a report interval closed: {stream:#}"
    );
}

/// Payloads of each kind the call carries were counted, both ways.
fn assert_classified(metrics: &Metrics) {
    for direction in ["to_peer", "to_client"] {
        for kind in ["rtp", "rtcp", "dtls"] {
            let n = metrics.get(
                "turnpike_relayed_payloads_total",
                &[("direction", direction), ("kind", kind)],
            );
            assert!(n > 0.0, "no {kind} payloads counted {direction}");
        }
    }
}

/// The seed makes the shim drop 5% (± 0.5 percentage points) of any number of packets
/// a call sends, so the loss test's expectation does not hang on how many packets that
/// call had.
#[test]
fn the_loss_seed_drops_five_percent_over_any_call_length() {
    let mut rng = StdRng::seed_from_u64(LOSS_SEED);
    let mut dropped = 0u32;
    for n in 1..=800u32 {
        dropped += u32::from(rng.gen_bool(LOSS_PROBABILITY));
        if n >= 300 {
            let ratio = f64::from(dropped) / f64::from(n);
            assert!(
                (ratio - LOSS_PROBABILITY).abs() <= 0.005,
                "after {n} packets the seed dropped {ratio}"
            );
        }
    }
}

/// Alice's uplink loses 5% of its RTP: the relay reports that loss on her uplink and on
/// what bob's allocation receives from it, to within half a percentage point of what
/// the shim really dropped, and no loss the other way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_measures_the_loss_on_a_lossy_uplink() {
    let _turn = SERIAL.lock().await;
    let outcome = call_through_shim(Impairment::Loss(LOSS_PROBABILITY), LOSS_SEED).await;
    outcome.print();
    let counts = outcome.counts;
    assert!(
        counts.dropped + counts.passed >= 400,
        "the shim saw alice's RTP: {counts:?}"
    );
    let truth = counts.drop_ratio();

    let alice_up = outcome.stream("alice", Direction::ToPeer);
    let bob_down = outcome.stream("bob", Direction::ToClient);
    let bob_up = outcome.stream("bob", Direction::ToPeer);
    let alice_down = outcome.stream("alice", Direction::ToClient);
    for (who, s) in [
        ("alice up", alice_up),
        ("bob down", bob_down),
        ("bob up", bob_up),
        ("alice down", alice_down),
    ] {
        assert_audio(s, who);
    }
    eprintln!(
        "loss: shim dropped {truth:.4}; relay reports {:.4} on alice's uplink, {:.4} on \
         bob's downlink, {:.4} on bob's uplink, {:.4} on alice's downlink",
        alice_up.loss_ratio(),
        bob_down.loss_ratio(),
        bob_up.loss_ratio(),
        alice_down.loss_ratio()
    );
    for (who, s) in [("alice's uplink", alice_up), ("bob's downlink", bob_down)] {
        let reported = s.loss_ratio();
        assert!(
            (reported - LOSS_PROBABILITY).abs() <= 0.015,
            "{who}: {reported} reported for 5% loss"
        );
        assert!(
            (reported - truth).abs() <= 0.005,
            "{who}: {reported} reported, the shim dropped {truth}"
        );
        assert_eq!(s.duplicates, 0, "{who}");
    }
    for (who, s) in [("bob's uplink", bob_up), ("alice's downlink", alice_down)] {
        assert!(s.loss_ratio() <= 0.005, "{who}: {}", s.loss_ratio());
    }
    // Loss does not disturb the jitter measure.
    assert_jitter_matches(
        alice_up,
        outcome.shim_jitter_ms(true, true),
        "alice's uplink",
    );
    assert_jitter_matches(bob_up, outcome.shim_jitter_ms(false, true), "bob's uplink");
    assert_document(&outcome, "alice", Direction::ToPeer);

    // The metrics: payloads classified, lost packets counted at the report intervals
    // (those settled by then, so at most the streams' total), each interval's loss
    // ratio in the histogram.
    let m = &outcome.metrics;
    assert_classified(m);
    let lost_up = m.get(
        "turnpike_rtp_lost_packets_total",
        &[("direction", "to_peer")],
    );
    eprintln!("turnpike_rtp_lost_packets_total{{direction=\"to_peer\"}} {lost_up}");
    assert!(lost_up > 0.0);
    assert!(
        lost_up <= (alice_up.lost + bob_up.lost) as f64 + 3.0,
        "{lost_up} lost counted at intervals, {} in total",
        alice_up.lost + bob_up.lost
    );
    for direction in ["to_peer", "to_client"] {
        let h = m.histogram("turnpike_rtp_loss_ratio", direction, "audio");
        eprintln!("turnpike_rtp_loss_ratio {direction} audio: {h:?}");
        // Two streams each way (one lossy, one clean), each closing an interval at 5 s
        // and at 10 s.
        assert!(h.count >= 2.0, "{direction}: {h:?}");
        assert!(h.sum > 0.0, "{direction}: {h:?}");
        assert!(h.sum <= 0.1 * h.count, "{direction}: {h:?}");
        assert!(h.le("0.005") >= 1.0, "{direction}: a clean interval: {h:?}");
        assert!(
            h.count - h.le("0.02") >= 1.0,
            "{direction}: a lossy interval: {h:?}"
        );
        assert_eq!(
            m.histogram("turnpike_rtp_loss_ratio", direction, "unknown")
                .count,
            0.0,
            "{direction}: every stream's clock was inferred"
        );
    }
    // What bob heard is what the shim let through, bar the last few packets before the
    // hangup.
    let passed = outcome.final_counts.passed;
    let heard = outcome.bob.received.packets;
    assert!(
        heard <= passed,
        "bob heard {heard}, the shim passed {passed}"
    );
    assert!(
        heard + 25 >= passed,
        "bob heard {heard}, the shim passed {passed}"
    );
    assert!(outcome.alice.received.packets * 100 >= outcome.bob.sent.packets * 95);
}

/// Alice's RTP reaches the relay 10-30 ms late (uniform), nothing lost. The relay's
/// jitter on her uplink, and on bob's allocation receiving it, is the RFC 3550 jitter of
/// what the shim forwarded: the delays' variation (their difference averages 20/3 ms) on
/// top of the client's own send timing. Bob's uplink keeps the client's own jitter.
///
/// The call client's own jitter is not small: webrtc-rs 0.21.1 queues a packet for a
/// TURN-relayed pair and sends it on the driver's next wake-up (the next packet to send
/// or to receive), so its RTP leaves in pairs, and its A.8 jitter is several ms before
/// any impairment. The test compares the relay with the shim's own computation over the
/// same packets, not with a constant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_measures_the_jitter_on_a_jittery_uplink() {
    let _turn = SERIAL.lock().await;
    let delay = Impairment::Delay {
        min: Duration::from_millis(10),
        max: Duration::from_millis(30),
    };
    let outcome = call_through_shim(delay, 11).await;
    outcome.print();
    assert_eq!(outcome.counts.dropped, 0);
    assert!(outcome.counts.passed >= 400, "{:?}", outcome.counts);

    let alice_up = outcome.stream("alice", Direction::ToPeer);
    let bob_down = outcome.stream("bob", Direction::ToClient);
    let bob_up = outcome.stream("bob", Direction::ToPeer);
    let alice_down = outcome.stream("alice", Direction::ToClient);
    let ms = |s: &StreamReport| s.jitter.expect("jitter measured") * 1e3;
    let alice_sent = outcome.shim_jitter_ms(true, false);
    let alice_forwarded = outcome.shim_jitter_ms(true, true);
    let bob_forwarded = outcome.shim_jitter_ms(false, true);
    eprintln!(
        "jitter: alice's RTP {alice_sent:.2} ms as sent, {alice_forwarded:.2} ms as the shim \
         forwarded it; relay: alice's uplink {:.2} ms, bob's downlink {:.2} ms; bob's RTP \
         {bob_forwarded:.2} ms as forwarded; relay: bob's uplink {:.2} ms, alice's downlink \
         {:.2} ms",
        ms(alice_up),
        ms(bob_down),
        ms(bob_up),
        ms(alice_down)
    );
    for (who, s) in [
        ("alice up", alice_up),
        ("bob down", bob_down),
        ("bob up", bob_up),
        ("alice down", alice_down),
    ] {
        assert_audio(s, who);
        assert!(s.loss_ratio() <= 0.005, "{who}: loss {}", s.loss_ratio());
        assert_eq!(s.duplicates, 0, "{who}");
    }
    // Delays that differ by more than the time between two packets reorder them: the
    // relay counts what the shim's schedule says, give or take the order of two sends
    // due within the same timer tick.
    let late = outcome.shim_reordered();
    eprintln!(
        "reordered: {late} by the shim's schedule; relay: {} on alice's uplink, {} on \
         bob's downlink",
        alice_up.reordered, bob_down.reordered
    );
    for (who, s) in [("alice's uplink", alice_up), ("bob's downlink", bob_down)] {
        assert!(
            s.reordered.abs_diff(late) <= 3 + late / 4,
            "{who}: {} reordered, {late} by the shim's schedule",
            s.reordered
        );
    }
    assert_eq!((bob_up.reordered, alice_down.reordered), (0, 0));
    assert_jitter_matches(alice_up, alice_forwarded, "alice's uplink");
    assert_jitter_matches(bob_down, alice_forwarded, "bob's downlink");
    assert_jitter_matches(bob_up, bob_forwarded, "bob's uplink");
    // Relayed on loopback, alice's stream arrives at bob's allocation as it left hers.
    assert!((ms(bob_down) - ms(alice_up)).abs() <= 1.0);
    assert!((ms(alice_down) - ms(bob_up)).abs() <= 1.0);
    assert_document(&outcome, "alice", Direction::ToPeer);

    let m = &outcome.metrics;
    assert_classified(m);
    for direction in ["to_peer", "to_client"] {
        let h = m.histogram("turnpike_rtp_jitter_seconds", direction, "audio");
        eprintln!("turnpike_rtp_jitter_seconds {direction} audio: {h:?}");
        // Two streams each way, each closing an interval at 5 s and at 10 s.
        assert!(h.count >= 2.0, "{direction}: {h:?}");
        let mean = h.sum / h.count;
        assert!((0.001..=0.05).contains(&mean), "{direction}: {h:?}");
        assert_eq!(
            m.histogram("turnpike_rtp_jitter_seconds", direction, "unknown")
                .count,
            0.0,
            "{direction}: every stream's clock was inferred"
        );
        // Reordered, not lost: the counter takes none, not even a packet that arrived
        // just after a report interval closed without it.
        assert_eq!(
            m.get(
                "turnpike_rtp_lost_packets_total",
                &[("direction", direction)]
            ),
            0.0,
            "{direction}"
        );
    }
}

/// RFC 3550 A.8 interarrival jitter, in ms, of packets with these RTP timestamps
/// (PCMU's 8 kHz clock) arriving at these times, in arrival order.
fn a8_jitter_ms(points: &[(u32, Instant)]) -> f64 {
    let mut jitter = 0.0;
    for pair in points.windows(2) {
        let ((ts0, at0), (ts1, at1)) = (pair[0], pair[1]);
        let spacing = f64::from(ts1.wrapping_sub(ts0) as i32) * 1e3 / f64::from(PCMU_CLOCK_RATE);
        let d = at1.duration_since(at0).as_secs_f64() * 1e3 - spacing;
        jitter += (d.abs() - jitter) / 16.0;
    }
    jitter
}

/// The metric samples of a Prometheus text exposition: name → (labels, value).
struct Metrics(BTreeMap<String, Vec<Sample>>);

/// A sample's labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// One histogram series' cumulative buckets, sum and count.
#[derive(Debug)]
struct Histogram {
    buckets: BTreeMap<String, f64>,
    sum: f64,
    count: f64,
}

impl Histogram {
    /// Observations at most `le`.
    fn le(&self, le: &str) -> f64 {
        *self
            .buckets
            .get(le)
            .unwrap_or_else(|| panic!("no bucket le={le}: {self:?}"))
    }
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut samples: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().expect("a sample value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').expect("label=value");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            samples
                .entry(name.to_owned())
                .or_default()
                .push((labels, value));
        }
        Metrics(samples)
    }

    /// Every sample of `self` less the same sample of `before` (absent: 0).
    fn minus(&self, before: &Metrics) -> Metrics {
        let mut out = BTreeMap::new();
        for (name, samples) in &self.0 {
            let old = before.0.get(name);
            let diff = samples
                .iter()
                .map(|(labels, value)| {
                    let prior = old
                        .and_then(|o| o.iter().find(|(l, _)| l == labels))
                        .map_or(0.0, |(_, v)| *v);
                    (labels.clone(), value - prior)
                })
                .collect();
            out.insert(name.clone(), diff);
        }
        Metrics(out)
    }

    /// The sum of `name`'s samples carrying all of `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let samples = self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no metric {name}"));
        samples
            .iter()
            .filter(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The histogram `name` for `direction` and `kind`.
    fn histogram(&self, name: &str, direction: &str, kind: &str) -> Histogram {
        let labels = [("direction", direction), ("kind", kind)];
        let buckets = self
            .0
            .get(&format!("{name}_bucket"))
            .unwrap_or_else(|| panic!("no histogram {name}"))
            .iter()
            .filter(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(l, v)| (l["le"].clone(), *v))
            .collect();
        Histogram {
            buckets,
            sum: self.get(&format!("{name}_sum"), &labels),
            count: self.get(&format!("{name}_count"), &labels),
        }
    }
}
