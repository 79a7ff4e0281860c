//! The `--transports` table: per server and transport, the median over the run's
//! rounds of each figure, and the QUIC targets as per-round ratios (median, min–max).

use crate::links::Transport;
use crate::transports::{Row, Step};

/// The median of `v` (the mean of the middle two for an even count); `None` if empty.
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn audio_best(r: &Row) -> Option<&Step> {
    r.audio.as_ref().and_then(|c| c.best.as_ref())
}

/// What one relay core could forward at the CPU per packet measured at audio
/// capacity: the capacity the relay itself allows when the generator runs out first.
fn core_bound(r: &Row) -> Option<f64> {
    Some(1e6 / audio_best(r).and_then(Step::cpu_us_per_packet)?)
}

/// The rows of one server and transport that measured fine, in round order.
fn group<'a>(rows: &'a [Row], server: &str, t: Transport) -> Vec<&'a Row> {
    rows.iter()
        .filter(|r| r.server == server && r.transport == t && r.status == "ok")
        .collect()
}

/// Median of `f` over `rows`, formatted by `show`; "–" when no round has it.
fn cell(rows: &[&Row], f: impl Fn(&Row) -> Option<f64>, show: impl Fn(f64) -> String) -> String {
    median(rows.iter().filter_map(|r| f(r)).collect()).map_or("–".into(), show)
}

/// A capacity cell: "≥" when some round's ramp ended because the generator, not the
/// relay, ran out (the median is then a lower bound).
fn capacity_of(r: &Row, video: bool) -> Option<&crate::transports::Capacity> {
    if video {
        r.video.as_ref()
    } else {
        r.audio.as_ref()
    }
}

fn step_of(r: &Row, lossy: bool) -> Option<&Step> {
    if lossy {
        r.lossy.as_ref()
    } else {
        r.no_loss.as_ref()
    }
}

fn capacity_cell(rows: &[&Row], video: bool) -> String {
    let limited = rows
        .iter()
        .any(|r| capacity_of(r, video).is_some_and(|c| c.generator_limited));
    cell(
        rows,
        |r| Some(capacity_of(r, video)?.best.as_ref()?.relayed_pps()),
        |p| format!("{}{:.1}k", if limited { "≥" } else { "" }, p / 1000.0),
    )
}

fn rtt_cell(rows: &[&Row], lossy: bool) -> String {
    let p50 = median(
        rows.iter()
            .filter_map(|r| Some(step_of(r, lossy)?.rtt.as_ref()?.p50))
            .collect(),
    );
    let p99 = median(
        rows.iter()
            .filter_map(|r| Some(step_of(r, lossy)?.rtt.as_ref()?.p99))
            .collect(),
    );
    let lost = median(
        rows.iter()
            .filter_map(|r| Some(step_of(r, lossy)?.loss()))
            .collect(),
    );
    match (p50, p99, lost) {
        (Some(a), Some(b), Some(l)) => format!("{a:.0} / {b:.0} µs, {:.2}% lost", 100.0 * l),
        _ => "–".into(),
    }
}

pub fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| server | transport | audio capacity (relayed pps) | CPU µs/pkt at it | one core ÷ that | video capacity | CPU µs/pkt at 10k pps | RTT p50 / p99, no loss | RTT p50 / p99, 2% loss |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (server, transport) in crate::transports::ROWS {
        let all = rows
            .iter()
            .filter(|r| r.server == server && r.transport == transport)
            .count();
        if all == 0 {
            continue;
        }
        let ok = group(rows, server, transport);
        if ok.is_empty() {
            let status = rows
                .iter()
                .find(|r| r.server == server && r.transport == transport)
                .map_or("", |r| r.status.as_str());
            t.push_str(&format!(
                "| {server} | {} | {status} | | | | | | |\n",
                transport.name()
            ));
            continue;
        }
        let us = |v: f64| format!("{v:.2}");
        t.push_str(&format!(
            "| {server} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            transport.name(),
            capacity_cell(&ok, false),
            cell(&ok, |r| audio_best(r).and_then(Step::cpu_us_per_packet), us),
            cell(&ok, core_bound, |p| format!("{:.0}k", p / 1000.0)),
            capacity_cell(&ok, true),
            cell(
                &ok,
                |r| r.no_loss.as_ref().and_then(Step::cpu_us_per_packet),
                us
            ),
            rtt_cell(&ok, false),
            rtt_cell(&ok, true),
        ));
    }
    t
}

/// `a(round) / b(round)` for every round both measured: "median× (min×–max×)".
fn ratio(
    rows: &[Row],
    a: (&str, Transport),
    b: (&str, Transport),
    f: impl Fn(&Row) -> Option<f64>,
) -> String {
    let of = |(server, t): (&str, Transport), round: usize| {
        rows.iter()
            .find(|r| {
                r.server == server && r.transport == t && r.round == round && r.status == "ok"
            })
            .and_then(&f)
    };
    let rounds = rows.iter().map(|r| r.round + 1).max().unwrap_or(0);
    let ratios: Vec<f64> = (0..rounds)
        .filter_map(|round| match (of(a, round), of(b, round)) {
            (Some(x), Some(y)) if y > 0.0 => Some(x / y),
            _ => None,
        })
        .collect();
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    match median(ratios.clone()) {
        Some(m) if ratios.len() > 1 => format!("{m:.2}× ({lo:.2}×–{hi:.2}×)"),
        Some(m) => format!("{m:.2}×"),
        None => "not measured".into(),
    }
}

/// The QUIC targets, as measured in this run.
pub fn targets(rows: &[Row]) -> String {
    let quic = ("turnpike", Transport::Quic);
    let udp = ("turnpike", Transport::Udp);
    let coturn_tls = ("coturn", Transport::Tls);
    let pps = |r: &Row| audio_best(r).map(Step::relayed_pps);
    let cpu = |r: &Row| r.no_loss.as_ref().and_then(Step::cpu_us_per_packet);
    let cpu_at_capacity = |r: &Row| audio_best(r).and_then(Step::cpu_us_per_packet);
    let p99 = |r: &Row| Some(r.lossy.as_ref()?.rtt.as_ref()?.p99);
    format!(
        "QUIC audio capacity / coturn TLS: {} measured, {} by one core ÷ CPU per packet (target ≥ 1.5×)\n\
         relay CPU per QUIC packet / Turnpike UDP ChannelData: {} at 10k pps, {} at capacity (target ≤ 2.5×)\n\
         QUIC RTT p99 / coturn TLS RTT p99, 2% loss: {} (target ≤ 0.2×)\n",
        ratio(rows, quic, coturn_tls, pps),
        ratio(rows, quic, coturn_tls, core_bound),
        ratio(rows, quic, udp, cpu),
        ratio(rows, quic, udp, cpu_at_capacity),
        ratio(rows, quic, coturn_tls, p99),
    )
}
