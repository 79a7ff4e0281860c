//! Output: the comparison table (Markdown, with Turnpike/coturn and Turnpike/bare
//! ratios), the JSON results, and two SVG charts.

use std::path::Path;

use plotters::prelude::*;

use crate::plan::Plan;
use crate::results::{Direction, ServerResult};
use crate::traffic::Mix;

/// One table cell.
enum Cell {
    Value(f64, bool),
    /// The server was not run or is not installed: never a zero.
    Missing(String),
    /// The metric does not apply (e.g. RSS of the in-process bare forwarder).
    NotApplicable,
}

struct Row {
    metric: String,
    /// How to print a value.
    unit: Unit,
    cells: Vec<Cell>,
}

#[derive(Clone, Copy)]
enum Unit {
    Pps,
    Micros,
    Kib,
    PerSec,
}

fn fmt_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Pps if v >= 1000.0 => format!("{:.1}k", v / 1000.0),
        Unit::Pps => format!("{v:.0}"),
        Unit::Micros if v < 100.0 => format!("{v:.2}"),
        Unit::Micros => format!("{v:.0}"),
        Unit::Kib | Unit::PerSec => format!("{v:.0}"),
    }
}

fn cell_text(c: &Cell, unit: Unit) -> String {
    match c {
        Cell::Value(v, lower_bound) => {
            let s = fmt_value(*v, unit);
            if *lower_bound {
                format!("≥{s}")
            } else {
                s
            }
        }
        Cell::Missing(why) => why.clone(),
        Cell::NotApplicable => "—".into(),
    }
}

/// Builds the rows: `get` extracts a metric from one server's result.
fn rows(results: &[ServerResult]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut add =
        |metric: String, unit: Unit, get: &dyn Fn(&ServerResult) -> Option<(f64, bool)>| {
            let cells = results
                .iter()
                .map(|r| {
                    if r.status != "ok" {
                        Cell::Missing(if r.status == "missing" {
                            "missing".into()
                        } else {
                            "error".into()
                        })
                    } else {
                        get(r).map_or(Cell::NotApplicable, |(v, lb)| Cell::Value(v, lb))
                    }
                })
                .collect();
            rows.push(Row {
                metric,
                unit,
                cells,
            });
        };
    for mix in [Mix::Audio, Mix::Video] {
        for dir in [
            Direction::ChannelData,
            Direction::SendIndication,
            Direction::PeerToClient,
        ] {
            let label = format!("{} {} B, {}", mix.name(), mix.packet_size(), dir.label());
            add(format!("{label}: pps at 0 loss"), Unit::Pps, &|r| {
                r.ramp(mix, dir)
                    .and_then(|x| x.pps_zero_loss.map(|v| (v, x.lower_bound)))
            });
            add(format!("{label}: pps at ≤0.1% loss"), Unit::Pps, &|r| {
                r.ramp(mix, dir)
                    .and_then(|x| x.pps_le_0_1pct.map(|v| (v, x.lower_bound)))
            });
        }
    }
    let label = format!(
        "video {} B, {}, same datagrams to every server (no GSO, no GRO)",
        Mix::Video.packet_size(),
        Direction::ChannelData.label()
    );
    if results.iter().any(|r| {
        r.ramp_same_datagrams(Mix::Video, Direction::ChannelData)
            .is_some()
    }) {
        add(format!("{label}: pps at 0 loss"), Unit::Pps, &|r| {
            r.ramp_same_datagrams(Mix::Video, Direction::ChannelData)
                .and_then(|x| x.pps_zero_loss.map(|v| (v, x.lower_bound)))
        });
        add(format!("{label}: pps at ≤0.1% loss"), Unit::Pps, &|r| {
            r.ramp_same_datagrams(Mix::Video, Direction::ChannelData)
                .and_then(|x| x.pps_le_0_1pct.map(|v| (v, x.lower_bound)))
        });
    }
    let cpu_points = results.iter().map(|r| r.cpu.len()).max().unwrap_or(0);
    for i in 0..cpu_points {
        add(cpu_label(results, i), Unit::Micros, &|r| {
            r.cpu
                .get(i)
                .and_then(|s| s.cpu_us_per_packet.map(|v| (v, false)))
        });
    }
    let loads: Vec<String> = results
        .iter()
        .find(|r| !r.latency.is_empty())
        .map(|r| r.latency.iter().map(|p| p.load.clone()).collect())
        .unwrap_or_default();
    for load in &loads {
        for (q, name) in [(0, "p50"), (1, "p90"), (2, "p99"), (3, "p99.9")] {
            add(
                format!("latency {name} µs, {load} (lower is better)"),
                Unit::Micros,
                &|r| {
                    let p = r.latency.iter().find(|p| &p.load == load)?;
                    let l = p.latency.as_ref()?;
                    Some(([l.p50, l.p90, l.p99, l.p999][q], false))
                },
            );
        }
    }
    add(
        "RSS KiB per 1000 allocations (lower is better)".into(),
        Unit::Kib,
        &|r| r.rss_kib_per_1000_allocations.map(|v| (v, false)),
    );
    for i in 0..3 {
        let window = results
            .iter()
            .find_map(|r| r.setup.get(i).map(|s| s.in_flight))
            .unwrap_or([1, 16, 64][i]);
        add(
            format!("allocation setup /s, {window} in flight"),
            Unit::PerSec,
            &|r| r.setup.get(i).map(|s| (s.per_sec, false)),
        );
    }
    for workers in [1, 2] {
        add(
            format!("audio ChannelData pps at ≤0.1% loss, {workers} worker(s)"),
            Unit::Pps,
            &|r| {
                r.workers
                    .iter()
                    .find(|(w, _)| *w == workers)
                    .and_then(|(_, v)| v.map(|v| (v, false)))
            },
        );
    }
    rows
}

fn cpu_label(results: &[ServerResult], i: usize) -> String {
    let rate = results
        .iter()
        .find_map(|r| r.cpu.get(i).map(|s| s.offered_pps))
        .unwrap_or(0.0);
    format!(
        "relay CPU µs per packet at {} pps (lower is better)",
        fmt_value(rate, Unit::Pps)
    )
}

/// The Markdown table with ratio columns Turnpike/coturn, Turnpike with coalescing /
/// coturn, and Turnpike/bare-plain.
pub fn table(results: &[ServerResult]) -> String {
    let idx = |name: &str| results.iter().position(|r| r.server == name);
    let ratio_cols: Vec<(String, usize, usize)> = [
        ("turnpike", "coturn"),
        ("turnpike-coalesce", "coturn"),
        ("turnpike-fastpath", "coturn"),
        ("turnpike", "bare-plain"),
    ]
    .iter()
    .filter_map(|(a, b)| Some((format!("{a}/{b}"), idx(a)?, idx(b)?)))
    .collect();
    let mut out = String::new();
    let mut header = vec!["metric".to_string()];
    header.extend(results.iter().map(|r| r.server.clone()));
    header.extend(ratio_cols.iter().map(|(n, _, _)| n.clone()));
    out.push_str(&format!("| {} |\n", header.join(" | ")));
    out.push_str(&format!("|{}\n", " --- |".repeat(header.len())));
    for row in rows(results) {
        let mut line = vec![row.metric.clone()];
        line.extend(row.cells.iter().map(|c| cell_text(c, row.unit)));
        for &(_, a, b) in &ratio_cols {
            let ratio = match (row.cells.get(a), row.cells.get(b)) {
                (Some(Cell::Value(a, _)), Some(Cell::Value(b, _))) if *b > 0.0 => {
                    format!("{:.2}", a / b)
                }
                (_, Some(Cell::Missing(m))) => m.clone(),
                _ => "—".into(),
            };
            line.push(ratio);
        }
        out.push_str(&format!("| {} |\n", line.join(" | ")));
    }
    out
}

/// The median of `v` (the mean of the middle two for an even count).
fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// "1.05× (0.98–1.09)" or "232.5k (228.0k–240.1k)": median and min–max.
fn spread(v: &[f64], fmt: impl Fn(f64) -> String) -> String {
    let (Some(m), Some(lo), Some(hi)) = (
        median(v),
        v.iter().copied().min_by(f64::total_cmp),
        v.iter().copied().max_by(f64::total_cmp),
    ) else {
        return "—".into();
    };
    if v.len() == 1 {
        fmt(m)
    } else {
        format!("{} ({}–{})", fmt(m), fmt(lo), fmt(hi))
    }
}

/// Audio ChannelData client→peer capacity (pps at ≤0.1% loss) over the repetitions:
/// each server's per repetition, median and min–max, and the ratios between servers
/// taken repetition by repetition (the servers of one round ran minutes apart).
pub fn capacity_table(results: &[ServerResult], plan: &Plan) -> String {
    let mut out = format!(
        "Audio 170 B client→peer ChannelData capacity (pps at ≤0.1% loss), {} \
         repetition(s) interleaving the servers, each on a fresh server; ramp ×{} steps, \
         then bisection to ≤{:.0}% apart; buffers {}:\n\n",
        plan.repetitions,
        plan.ramp_factor,
        plan.resolution * 100.0,
        plan.buffers.describe()
    );
    out.push_str(
        "| server | per repetition | median (min–max) | resolution |\n| --- | --- | --- | --- |\n",
    );
    let kpps = |v: f64| fmt_value(v, Unit::Pps);
    for r in results {
        let caps = r.capacities();
        let ge = if r.repetitions.iter().any(|x| x.lower_bound) {
            "≥"
        } else {
            ""
        };
        let each: Vec<String> = r
            .repetitions
            .iter()
            .map(|x| {
                x.pps_le_0_1pct.map_or("—".into(), |v| {
                    format!("{}{}", if x.lower_bound { "≥" } else { "" }, kpps(v))
                })
            })
            .collect();
        let res: Vec<f64> = r.repetitions.iter().filter_map(|x| x.resolution).collect();
        let res = res
            .iter()
            .copied()
            .max_by(f64::total_cmp)
            .map_or("—".into(), |x| format!("≤{:.1}%", x * 100.0));
        out.push_str(&format!(
            "| {} | {} | {ge}{} | {res} |\n",
            r.server,
            if each.is_empty() {
                r.status.clone()
            } else {
                each.join(" / ")
            },
            spread(&caps, kpps)
        ));
    }
    let idx = |name: &str| results.iter().position(|r| r.server == name);
    let pairs = [
        ("turnpike", "coturn"),
        ("turnpike-coalesce", "coturn"),
        ("turnpike-fastpath", "coturn"),
        ("turnpike", "bare-plain"),
        ("turnpike", "bare-batched"),
        ("coturn", "bare-plain"),
    ];
    out.push_str("\n| ratio | per repetition | median (min–max) |\n| --- | --- | --- |\n");
    for (a, b) in pairs {
        let (Some(a_i), Some(b_i)) = (idx(a), idx(b)) else {
            continue;
        };
        let ratios: Vec<f64> = results[a_i]
            .repetitions
            .iter()
            .zip(&results[b_i].repetitions)
            .filter_map(|(x, y)| Some(x.pps_le_0_1pct? / y.pps_le_0_1pct.filter(|v| *v > 0.0)?))
            .collect();
        if ratios.is_empty() {
            continue;
        }
        let each: Vec<String> = ratios.iter().map(|v| format!("{v:.2}")).collect();
        out.push_str(&format!(
            "| {a}/{b} | {} | {} |\n",
            each.join(" / "),
            spread(&ratios, |v| format!("{v:.2}×"))
        ));
    }
    out
}

/// What each server got: socket buffers and UDP_GRO as the kernel reported them, and
/// how the generator sent it video.
pub fn setup_table(results: &[ServerResult], plan: &Plan) -> String {
    let mut out = format!(
        "Buffers: {}. Sizes are what the kernel reports (SO_RCVBUF/SO_SNDBUF, `ss -uamn` \
         rb/tb: twice what was asked for).\n\n\
         | server | socket buffers and UDP_GRO | video, best-settings rows | video, same-datagrams row |\n\
         | --- | --- | --- | --- |\n",
        plan.buffers.describe()
    );
    for r in results {
        let sockets = r
            .sockets
            .as_ref()
            .map_or_else(|| r.status.clone(), |s| s.describe());
        let video = r
            .ramps
            .iter()
            .filter(|x| x.mix == Mix::Video && !x.same_datagrams)
            .flat_map(|x| &x.steps)
            .collect::<Vec<_>>();
        let best = if video.is_empty() {
            "not measured".to_string()
        } else if video.iter().any(|s| s.gso) {
            "one UDP GSO message per frame from the generator (arrives whole via UDP_GRO)".into()
        } else {
            "one datagram per packet".into()
        };
        let same = if r
            .ramp_same_datagrams(Mix::Video, Direction::ChannelData)
            .is_some()
        {
            "one datagram per packet, UDP_GRO off"
        } else {
            "not measured"
        };
        out.push_str(&format!("| {} | {sockets} | {best} | {same} |\n", r.server));
    }
    out
}

const COLORS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];

type ChartResult = Result<(), Box<dyn std::error::Error>>;

/// Loss (log scale, 0 drawn at the floor) against offered rate, per server, for the
/// audio and video ChannelData ramps side by side.
pub fn throughput_chart(results: &[ServerResult], path: &Path) -> ChartResult {
    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    for (panel, mix) in panels.iter().zip([Mix::Audio, Mix::Video]) {
        let max_x = results
            .iter()
            .filter_map(|r| r.ramp(mix, Direction::ChannelData))
            .flat_map(|r| r.steps.iter().map(|s| s.offered_pps / 1000.0))
            .fold(10.0f64, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{} ChannelData: loss vs offered rate", mix.name()),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..max_x * 1.05, (0.001f64..100f64).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("offered kpps")
            .y_desc("loss % (0 drawn at 0.001)")
            .draw()?;
        for (i, r) in results.iter().enumerate() {
            let Some(ramp) = r.ramp(mix, Direction::ChannelData) else {
                continue;
            };
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = ramp
                .steps
                .iter()
                .map(|s| (s.offered_pps / 1000.0, (s.loss * 100.0).clamp(0.001, 100.0)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(r.server.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// One-way latency by percentile (x: "nines", log-like) at each load point.
pub fn latency_chart(results: &[ServerResult], path: &Path) -> ChartResult {
    let loads: Vec<String> = results
        .iter()
        .find(|r| !r.latency.is_empty())
        .map(|r| r.latency.iter().map(|p| p.load.clone()).collect())
        .unwrap_or_default();
    if loads.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (400 * loads.len() as u32, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, loads.len()));
    // Percentile p maps to x = -log10(1 - p/100): p50 → 0.3, p99 → 2, p99.99 → 4.
    let nines = |p: f64| -(1.0 - p / 100.0).log10();
    for (panel, load) in panels.iter().zip(&loads) {
        let max_y = results
            .iter()
            .flat_map(|r| r.latency.iter().filter(|p| &p.load == load))
            .flat_map(|p| p.curve.iter().map(|c| c.1))
            .fold(10.0f64, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("one-way latency, load {load}"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..4.2f64, (1f64..max_y * 1.5).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile (1=p90, 2=p99, 3=p99.9)")
            .y_desc("µs")
            .draw()?;
        for (i, r) in results.iter().enumerate() {
            let Some(point) = r.latency.iter().find(|p| &p.load == load) else {
                continue;
            };
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = point
                .curve
                .iter()
                .map(|&(p, us)| (nines(p), us.max(1.0)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                .label(r.server.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
