//! A view of a core's allocations for an operator (the shell serves it as
//! `GET /v1/allocations`): what each carries and, with `rtp_quality` on, how its
//! streams fare. Built on request, never on the packet path. It names no client or
//! peer address and no SSRC; the user is the REST user part (or the static username).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::addr::Transport;
use crate::quality::{Jitter, MediaKind, TrackedStream};
use crate::server::Server;
use crate::stats::Direction;

/// One allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationReport {
    /// The client's transport to the relay.
    pub transport: Transport,
    /// Whom it belongs to: the user part of a REST username, else the username.
    pub user: String,
    /// How long ago it was created.
    pub age: Duration,
    /// How long it lives unless refreshed.
    pub expires_in: Duration,
    /// Its relayed transport addresses, as advertised.
    pub relayed: Vec<SocketAddr>,
    /// Live permissions.
    pub permissions: usize,
    /// Live channel bindings.
    pub channels: usize,
    /// Relayed traffic by [`Direction`].
    pub traffic: [TrafficReport; 2],
    /// Its RTP streams (empty unless `rtp_quality` is on).
    pub streams: Vec<StreamReport>,
    /// RTP packets of streams beyond the table's capacity, by direction.
    pub untracked: [u64; 2],
}

/// One direction of an allocation's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficReport {
    /// Packets relayed.
    pub packets: u64,
    /// Payload bytes relayed.
    pub bytes: u64,
    /// Packets per second over the last second.
    pub pps: u64,
    /// Payload bits per second over the last second.
    pub bps: u64,
}

/// One RTP stream of an allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamReport {
    /// Which way it flows.
    pub direction: Direction,
    /// Audio or video, by the inferred clock.
    pub media: MediaKind,
    /// How its jitter is measured (and the clock rate, when inferred).
    pub jitter_method: Jitter,
    /// How long ago its first packet arrived.
    pub age: Duration,
    /// How long since its last packet.
    pub idle: Duration,
    /// Packets expected from the sequence numbers.
    pub expected: u64,
    /// Distinct packets received.
    pub received: u64,
    /// Expected but not received.
    pub lost: u64,
    /// Packets that arrived after a later one.
    pub reordered: u64,
    /// Extra copies of packets.
    pub duplicates: u64,
    /// The loss ratio of the last report interval, once one closed.
    pub interval_loss: Option<f64>,
    /// Smoothed jitter, seconds.
    pub jitter: Option<f64>,
}

impl StreamReport {
    fn of(s: &TrackedStream, now: Instant) -> StreamReport {
        let st = &s.stream;
        StreamReport {
            direction: s.direction,
            media: MediaKind::of(st.jitter_method()),
            jitter_method: st.jitter_method(),
            age: now.saturating_duration_since(s.since),
            idle: now.saturating_duration_since(st.last_seen),
            expected: st.expected(),
            received: st.received(),
            lost: st.lost(),
            reordered: st.reordered(),
            duplicates: st.duplicates(),
            interval_loss: s.last_interval.map(|i| i.loss_ratio()),
            jitter: st.jitter_seconds(),
        }
    }

    /// Lost over expected since the stream began.
    pub fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 / self.expected as f64
        }
    }
}

impl Server {
    /// Whether this core measures call quality (`ServerConfig::rtp_quality`).
    pub fn rtp_quality(&self) -> bool {
        self.config.rtp_quality
    }

    /// Every live allocation of this core, as of `now`.
    pub fn allocation_reports(&self, now: Instant) -> Vec<AllocationReport> {
        self.allocations
            .iter()
            .filter(|(_, a)| a.expires > now)
            .map(|(client, a)| {
                let traffic = a.traffic.map(|t| {
                    let (pps, bytes_per_sec) = t.rate(now);
                    TrafficReport {
                        packets: t.packets,
                        bytes: t.bytes,
                        pps,
                        bps: bytes_per_sec * 8,
                    }
                });
                AllocationReport {
                    transport: client.transport,
                    user: a.credential.quota_user.clone(),
                    age: now.saturating_duration_since(a.created),
                    expires_in: a.expires.saturating_duration_since(now),
                    relayed: a.relays.iter().map(|r| r.advertised).collect(),
                    permissions: a.permissions.iter().filter(|p| p.expires > now).count(),
                    channels: a.channels.iter().filter(|c| c.expires > now).count(),
                    traffic,
                    streams: a
                        .quality
                        .iter()
                        .flat_map(|q| q.streams())
                        .map(|s| StreamReport::of(s, now))
                        .collect(),
                    untracked: a.quality.as_ref().map_or([0; 2], |q| q.untracked),
                }
            })
            .collect()
    }
}
