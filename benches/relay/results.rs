//! What a run found, per server: the types behind the table, the JSON and the charts.

use crate::traffic::{Latency, Mix, StepResult};

/// How the generator's packets reach the relay, and which way they go.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
pub enum Direction {
    /// Client → peer in ChannelData.
    ChannelData,
    /// Client → peer in Send indications.
    SendIndication,
    /// Peer → client (the relay frames it as ChannelData: channels are bound).
    PeerToClient,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Direction::ChannelData => "client→peer ChannelData",
            Direction::SendIndication => "client→peer Send",
            Direction::PeerToClient => "peer→client",
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct SetupRun {
    pub in_flight: usize,
    pub allocations: usize,
    pub failures: usize,
    pub retransmits: usize,
    pub secs: f64,
    pub per_sec: f64,
    pub errors: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct Ramp {
    pub mix: Mix,
    pub direction: Direction,
    pub packet_bytes: usize,
    pub steps: Vec<StepResult>,
    /// Highest forwarded rate of a step without any loss.
    pub pps_zero_loss: Option<f64>,
    /// Highest forwarded rate of a step with at most 0.1% loss.
    pub pps_le_0_1pct: Option<f64>,
    /// No step lost more than 0.1% (the ramp ended on the generator's limit or the
    /// step budget): the relay's capacity is at least `pps_le_0_1pct`.
    pub lower_bound: bool,
    /// How far apart (as a fraction) the highest good and the lowest lossy offered
    /// rate ended: the capacity's resolution. None when the ramp found no lossy rate.
    pub resolution: Option<f64>,
    /// Every server got the same datagrams: one per packet, no GSO from the generator
    /// and `UDP_GRO` off on the server's sockets.
    pub same_datagrams: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct LatencyPoint {
    pub load: String,
    pub offered_pps: f64,
    pub loss: f64,
    pub latency: Option<Latency>,
    /// Latency histogram (ns) as (percentile, µs) pairs for the chart.
    pub curve: Vec<(f64, f64)>,
    /// p99 (µs) of each round alone, in the order run (the figures above pool them).
    pub p99_of_rounds: Vec<f64>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct ServerResult {
    pub server: String,
    /// "ok", "missing" (not installed) or "error: …".
    pub status: String,
    pub command: Option<String>,
    pub setup: Vec<SetupRun>,
    pub rss_kib_per_1000_allocations: Option<f64>,
    pub ramps: Vec<Ramp>,
    pub cpu: Vec<StepResult>,
    pub latency: Vec<LatencyPoint>,
    /// (worker threads, pps at ≤0.1% loss, audio ChannelData).
    pub workers: Vec<(usize, Option<f64>)>,
    /// The server's UDP sockets once its traffic allocations existed.
    pub sockets: Option<crate::servers::SocketSummary>,
    /// Audio ChannelData client→peer ramps on a fresh server, one per repetition
    /// (the rounds interleave the servers).
    pub repetitions: Vec<Ramp>,
    pub notes: Vec<String>,
}

impl ServerResult {
    /// The ramp of `mix` and `dir` with each server's own best delivery (GSO/GRO
    /// where the server takes it).
    pub fn ramp(&self, mix: Mix, dir: Direction) -> Option<&Ramp> {
        self.ramps
            .iter()
            .find(|r| r.mix == mix && r.direction == dir && !r.same_datagrams)
    }

    /// The ramp where every server got the same datagrams.
    pub fn ramp_same_datagrams(&self, mix: Mix, dir: Direction) -> Option<&Ramp> {
        self.ramps
            .iter()
            .find(|r| r.mix == mix && r.direction == dir && r.same_datagrams)
    }

    /// Audio ChannelData capacity (pps at ≤0.1% loss) of each repetition.
    pub fn capacities(&self) -> Vec<f64> {
        self.repetitions
            .iter()
            .filter_map(|r| r.pps_le_0_1pct)
            .collect()
    }
}

/// The servers a run can compare.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Turnpike,
    /// Turnpike with `server.coalesce_us` = [`COALESCE_US`], measured on the audio
    /// ChannelData path only (what the setting is for).
    TurnpikeCoalesce,
    /// Turnpike with its in-kernel ChannelData fast path on loopback
    /// (`server.fast_path_interfaces = ["lo"]`), audio ChannelData only. Its CPU is the
    /// relay core's busy time, softirq included (see `servers::start_turnpike`).
    TurnpikeFastPath,
    /// Turnpike with `telemetry.rtp_quality` on: what call-quality telemetry costs.
    TurnpikeQuality,
    Coturn,
    BarePlain,
    BareBatched,
}

/// The coalescing window of [`Kind::TurnpikeCoalesce`], in µs.
pub const COALESCE_US: u64 = 200;

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Turnpike => "turnpike",
            Kind::TurnpikeCoalesce => "turnpike-coalesce",
            Kind::TurnpikeFastPath => "turnpike-fastpath",
            Kind::TurnpikeQuality => "turnpike-rtpq",
            Kind::Coturn => "coturn",
            Kind::BarePlain => "bare-plain",
            Kind::BareBatched => "bare-batched",
        }
    }
}
