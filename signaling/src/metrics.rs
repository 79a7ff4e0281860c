//! The signaling service's Prometheus metrics, recorded through the `metrics` facade: the
//! process that runs the service installs the exporter (`turnpike serve` does), and
//! without one recording costs next to nothing. Every label comes from a fixed set.
//!
//! Calls are counted where ringing ends: by the node that wins the claim (see
//! [`crate::call`]), so with several nodes on one bus each call is counted once, on one
//! node, and summing over nodes gives the total.

use metrics::{Counter, Gauge, Histogram};

use crate::call::Outcome;
use crate::protocol::EndReason;

/// Gauge: sessions held by this node (connected, or detached and waiting to resume).
pub const SESSIONS: &str = "turnpike_signaling_sessions";
/// Counter: calls whose ringing ended, by `outcome`.
pub const CALLS: &str = "turnpike_signaling_calls_total";
/// Histogram: seconds from an invite to the accept that answered it.
pub const CALL_SETUP_SECONDS: &str = "turnpike_signaling_call_setup_seconds";

/// Counter: `relay_moved` messages sent because a call's relay started draining.
pub const CALLS_MOVED: &str = "turnpike_signaling_calls_moved_total";

/// Bucket bounds of [`CALL_SETUP_SECONDS`]: a person picks up within seconds, and an
/// invite lives 90 s by default, so the buckets reach past that.
pub const CALL_SETUP_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// Every value of the `outcome` label of [`CALLS`]: `accepted`, or why ringing ended.
pub const OUTCOMES: [&str; 7] = [
    "accepted",
    "rejected",
    "cancelled",
    "busy",
    "timeout",
    "glare",
    "disconnected",
];

/// Gives every metric above its HELP text. Call once, after installing the recorder.
pub fn describe() {
    metrics::describe_gauge!(
        SESSIONS,
        "Signaling sessions held by this node (connected, or detached within the resume grace period)"
    );
    metrics::describe_counter!(
        CALLS,
        "Calls whose ringing ended, by outcome (accepted, rejected, cancelled, busy, timeout, glare, disconnected), counted once by the node that decided it"
    );
    metrics::describe_histogram!(
        CALL_SETUP_SECONDS,
        metrics::Unit::Seconds,
        "Seconds from a call's invite to the accept that answered it"
    );
    metrics::describe_counter!(
        CALLS_MOVED,
        "relay_moved messages sent to call parties because their relay started draining"
    );
    crate::fleet::describe();
}

/// The `outcome` label for how ringing ended.
fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Accept { .. } => "accepted",
        Outcome::End { reason, .. } => match reason {
            EndReason::Rejected => "rejected",
            EndReason::Cancelled => "cancelled",
            EndReason::Busy => "busy",
            EndReason::Timeout => "timeout",
            EndReason::Glare => "glare",
            EndReason::Disconnected => "disconnected",
            // Neither ends ringing (they end answered calls), so no claim carries them;
            // they still get a fixed label rather than none.
            EndReason::Hangup => "hangup",
            EndReason::ConnectTimeout => "connect_timeout",
        },
    }
}

/// One node's handles, registered once so that every outcome is exported from the start
/// at 0 and recording builds no keys.
pub(crate) struct NodeMetrics {
    sessions: Gauge,
    calls: Vec<(&'static str, Counter)>,
    setup: Histogram,
    moved: Counter,
}

impl NodeMetrics {
    pub(crate) fn new() -> NodeMetrics {
        NodeMetrics {
            sessions: metrics::gauge!(SESSIONS),
            calls: OUTCOMES
                .iter()
                .map(|&o| (o, metrics::counter!(CALLS, "outcome" => o)))
                .collect(),
            setup: metrics::histogram!(CALL_SETUP_SECONDS),
            moved: metrics::counter!(CALLS_MOVED),
        }
    }

    /// A session was created (+1) or removed (-1). Incremented rather than set, so
    /// several nodes in one process add up.
    pub(crate) fn session_opened(&self) {
        self.sessions.increment(1.0);
    }

    pub(crate) fn session_closed(&self) {
        self.sessions.decrement(1.0);
    }

    /// A call party was told to move off a draining relay.
    pub(crate) fn call_moved(&self) {
        self.moved.increment(1);
    }

    /// This node won the claim that ended ringing with `outcome`; the call was invited
    /// `setup_ms` ago.
    pub(crate) fn ringing_ended(&self, outcome: &Outcome, setup_ms: u64) {
        let label = outcome_label(outcome);
        match self.calls.iter().find(|(o, _)| *o == label) {
            Some((_, counter)) => counter.increment(1),
            None => metrics::counter!(CALLS, "outcome" => label).increment(1),
        }
        if matches!(outcome, Outcome::Accept { .. }) {
            // Millisecond counts of a call's life are far below f64's exact range.
            self.setup.record(setup_ms as f64 / 1000.0);
        }
    }
}
