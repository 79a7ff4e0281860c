//! `GET /v1/allocations` on the metrics listener (mounted only when that listener is on
//! loopback, like `POST /admin/reload`): the relay's live allocations as JSON, the
//! "why is this call bad" view.
//!
//! Each allocation shows its client transport, its user (the user part of a TURN REST
//! username, else the static username), age, relayed addresses, and per direction its
//! packets, bytes and rates over the last second. With `telemetry.rtp_quality` on, each
//! RTP stream adds its media kind, loss (in total and over the last 5-second interval),
//! reordered and duplicate packets and jitter. Client and peer addresses and SSRCs are
//! never shown. The workers build their part between two rounds of their loops
//! (`net::Command::Report`); the packet path never waits for it.

use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{json, Value};

use crate::net::{Reporter, WorkerReport};
use crate::proto::quality::Jitter;
use crate::proto::report::{AllocationReport, StreamReport, TrafficReport};
use crate::proto::stats::Direction;

/// How long the endpoint waits for each worker's part.
const WORKER_TIMEOUT: Duration = Duration::from_secs(2);

/// The route, for the metrics listener's router.
pub fn router(reporter: Reporter, rtp_quality: bool) -> axum::Router {
    axum::Router::new().route(
        "/v1/allocations",
        axum::routing::get(move || {
            let reporter = reporter.clone();
            async move {
                let reports = reporter.allocations(WORKER_TIMEOUT).await;
                let body = document(&reports, rtp_quality).to_string();
                ([(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
        }),
    )
}

/// The whole answer: `{"rtp_quality": bool, "allocations": [...]}`.
pub fn document(reports: &[WorkerReport], rtp_quality: bool) -> Value {
    let allocations: Vec<Value> = reports
        .iter()
        .flat_map(|w| w.allocations.iter().map(|a| allocation(w.worker, a)))
        .collect();
    json!({ "rtp_quality": rtp_quality, "allocations": allocations })
}

fn allocation(worker: usize, a: &AllocationReport) -> Value {
    let relayed: Vec<String> = a.relayed.iter().map(|r| r.to_string()).collect();
    let streams: Vec<Value> = a.streams.iter().map(stream).collect();
    json!({
        "worker": worker,
        "transport": a.transport.as_str(),
        "user": a.user,
        "age_secs": a.age.as_secs_f64(),
        "expires_in_secs": a.expires_in.as_secs(),
        "relayed": relayed,
        "permissions": a.permissions,
        "channels": a.channels,
        "to_peer": traffic(&a.traffic[Direction::ToPeer as usize]),
        "to_client": traffic(&a.traffic[Direction::ToClient as usize]),
        "streams": streams,
        "untracked_rtp_packets": {
            "to_peer": a.untracked[Direction::ToPeer as usize],
            "to_client": a.untracked[Direction::ToClient as usize],
        },
    })
}

fn traffic(t: &TrafficReport) -> Value {
    json!({ "packets": t.packets, "bytes": t.bytes, "pps": t.pps, "bps": t.bps })
}

fn stream(s: &StreamReport) -> Value {
    let clock_rate = match s.jitter_method {
        Jitter::Rtp(hz) => Some(hz),
        _ => None,
    };
    json!({
        "direction": s.direction.as_str(),
        "kind": s.media.as_str(),
        "clock_rate": clock_rate,
        "jitter_method": s.jitter_method.method(),
        "age_secs": s.age.as_secs_f64(),
        "idle_secs": s.idle.as_secs_f64(),
        "expected": s.expected,
        "received": s.received,
        "lost": s.lost,
        "loss_ratio": s.loss_ratio(),
        "interval_loss_ratio": s.interval_loss,
        "reordered": s.reordered,
        "duplicates": s.duplicates,
        "jitter_ms": s.jitter.map(|j| j * 1e3),
    })
}
