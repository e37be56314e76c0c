//! The SVG chart of a run (`--chart FILE`), drawn with plotters' SVG backend (no system font
//! libraries needed): responses per second by class on top, p50 and p99 latency per second
//! (log scale) below, phase boundaries and the kill/restart marked on both; when the run
//! compared the surge without the shops' limit, a third row puts both surges side by side.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use super::phases::PHASES;
use super::report::Tally;

/// One second of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SecondPoint {
    /// Seconds from the start of the load (the middle of the second).
    pub(crate) t: f64,
    pub(crate) ok: u64,
    pub(crate) degraded: u64,
    pub(crate) apology: u64,
    pub(crate) errors: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

impl SecondPoint {
    /// One second's tally, drawn at `t`.
    pub(crate) fn of(t: f64, tally: &Tally) -> Self {
        Self {
            t,
            ok: tally.ok,
            degraded: tally.degraded,
            apology: tally.apology,
            errors: tally.errors,
            p50_ms: tally.percentile_ms(0.5),
            p99_ms: tally.percentile_ms(0.99),
        }
    }
}

/// What the chart shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChartData {
    pub(crate) seconds: Vec<SecondPoint>,
    /// Phase start (seconds) and name.
    pub(crate) phases: Vec<(f64, String)>,
    /// Events (seconds) and label: the kill, the restart.
    pub(crate) events: Vec<(f64, String)>,
    /// End of the load, seconds.
    pub(crate) end: f64,
    /// Arrival rate, for the caption.
    pub(crate) rate: f64,
    /// The surge with and without the shops' limit, drawn as a third row.
    pub(crate) surge: Option<SurgeOverlay>,
}

impl ChartData {
    /// The chart of a run: `seconds` (per-second tallies from the start of the load), the
    /// phases' starts, `events`, the load's `end`, the arrival `rate`, and the surge row.
    pub(crate) fn new(
        seconds: &[Tally],
        phase_len: Duration,
        events: Vec<(f64, String)>,
        end: Duration,
        rate: f64,
        surge: Option<SurgeOverlay>,
    ) -> ChartData {
        ChartData {
            seconds: seconds
                .iter()
                .enumerate()
                .map(|(i, t)| SecondPoint::of(i as f64 + 0.5, t))
                .collect(),
            phases: PHASES
                .iter()
                .enumerate()
                .map(|(k, p)| (phase_len.as_secs_f64() * k as f64, p.name.to_owned()))
                .collect(),
            events,
            end: end.as_secs_f64(),
            rate,
            surge,
        }
    }
}

/// The surge twice: with the shops' concurrency limit (the timeline's last phase) and
/// without it (the comparison run), second by second from the start of the surge.
#[derive(Debug, Clone, Default)]
pub(crate) struct SurgeOverlay {
    /// The surge's arrival rate.
    pub(crate) rate: f64,
    pub(crate) limited: Vec<SecondPoint>,
    pub(crate) unlimited: Vec<SecondPoint>,
}

/// A line of the surge row: label, points, colour, the value it plots, and its width.
type SurgeLine<'a> = (
    &'static str,
    &'a [SecondPoint],
    RGBColor,
    fn(&SecondPoint) -> f64,
    u32,
);

/// A line of the chart: label, colour, and the value it plots.
type Line<T> = (&'static str, RGBColor, fn(&SecondPoint) -> T);

const ORANGE: RGBColor = RGBColor(230, 140, 0);
const OK_GREEN: RGBColor = RGBColor(30, 150, 60);
const GREY: RGBColor = RGBColor(120, 120, 120);

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("chart: {e}")
}

/// Draws `data` into an SVG file at `path`.
pub(crate) fn draw(path: &Path, data: &ChartData) -> Result<(), String> {
    let height = if data.surge.is_some() { 1160 } else { 760 };
    let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (main, extra) = root.split_vertically(760);
    let (upper, lower) = main.split_vertically(420);
    let t_max = data.end.max(1.0);
    let y_max = data
        .seconds
        .iter()
        .map(|s| s.ok.max(s.degraded).max(s.apology).max(s.errors))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.25;

    let mut top = ChartBuilder::on(&upper)
        .caption(
            format!(
                "storefront chaos: responses per second by class (open loop, {:.0} req/s)",
                data.rate
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(err)?;
    top.configure_mesh()
        .x_desc("seconds")
        .y_desc("responses / s")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let series: [Line<u64>; 4] = [
        ("ok", OK_GREEN, |s| s.ok),
        ("degraded", ORANGE, |s| s.degraded),
        ("apology", BLUE, |s| s.apology),
        ("errors", RED, |s| s.errors),
    ];
    for (label, color, value) in series {
        top.draw_series(LineSeries::new(
            data.seconds.iter().map(|s| (s.t, value(s) as f64)),
            color.stroke_width(2),
        ))
        .map_err(err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    marks(&mut top, data, 0.0, y_max, true)?;
    top.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    let lat_max = data.seconds.iter().map(|s| s.p99_ms).fold(1.0f64, f64::max) * 2.0;
    let lat_min = data
        .seconds
        .iter()
        .map(|s| s.p50_ms)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        .min(lat_max / 4.0)
        / 2.0;
    let lat_min = lat_min.max(0.01);
    let mut bottom = ChartBuilder::on(&lower)
        .caption(
            "latency from the intended send time, per second (ms, log scale)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..t_max, (lat_min..lat_max).log_scale())
        .map_err(err)?;
    bottom
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let lat: [Line<f64>; 2] = [("p50", GREY, |s| s.p50_ms), ("p99", BLACK, |s| s.p99_ms)];
    for (label, color, value) in lat {
        bottom
            .draw_series(LineSeries::new(
                data.seconds
                    .iter()
                    .filter(|s| s.ok + s.degraded + s.apology + s.errors > 0)
                    .map(|s| (s.t, value(s).max(lat_min))),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    marks(&mut bottom, data, lat_min, lat_max, false)?;
    bottom
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    if let Some(surge) = &data.surge {
        draw_surge(&extra, surge)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// The third row: answers in time per second (ok or degraded) and p99 per second, with the
/// limit and without, over the surge's seconds.
fn draw_surge<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    s: &SurgeOverlay,
) -> Result<(), String> {
    let (left, right) = area.split_horizontally(600);
    let all = || s.limited.iter().chain(&s.unlimited);
    let t_max = all().map(|p| p.t + 0.5).fold(1.0f64, f64::max);
    let served = |p: &SecondPoint| (p.ok + p.degraded) as f64;
    let y_max = all()
        .map(|p| served(p).max((p.apology + p.errors) as f64))
        .fold(1.0f64, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&left)
        .caption(
            format!(
                "surge at {:.0} req/s: served (ok or degraded) and refused per second",
                s.rate
            ),
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the surge")
        .y_desc("responses / s")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let refused = |p: &SecondPoint| (p.apology + p.errors) as f64;
    let lines: [SurgeLine<'_>; 4] = [
        ("served, limit on", &s.limited, OK_GREEN, served, 3),
        ("served, limit off", &s.unlimited, RED, served, 3),
        ("refused, limit on", &s.limited, BLUE, refused, 1),
        ("refused, limit off", &s.unlimited, ORANGE, refused, 1),
    ];
    for (label, points, color, value, width) in lines {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.t, value(p))),
                color.stroke_width(width),
            ))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(width))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    let lat_max = all().map(|p| p.p99_ms).fold(1.0f64, f64::max) * 2.0;
    let lat_min = all()
        .map(|p| p.p50_ms)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        .min(lat_max / 4.0)
        .max(0.02)
        / 2.0;
    let mut chart = ChartBuilder::on(&right)
        .caption(
            "surge: p99 latency per second (ms, log scale)",
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..t_max, (lat_min..lat_max).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the surge")
        .y_desc("ms")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let lat: [(&str, &[SecondPoint], RGBColor); 2] = [
        ("p99, limit on", &s.limited, OK_GREEN),
        ("p99, limit off", &s.unlimited, RED),
    ];
    for (label, points, color) in lat {
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .filter(|p| p.ok + p.degraded + p.apology + p.errors > 0)
                    .map(|p| (p.t, p.p99_ms.max(lat_min))),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Phase boundaries (with names when `names`) and events as vertical lines.
fn marks<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    data: &ChartData,
    y_bottom: f64,
    y_top: f64,
    names: bool,
) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64>,
{
    for (x, name) in &data.phases {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(*x, y_bottom), (*x, y_top)],
                GREY.mix(0.5),
            )))
            .map_err(err)?;
        if names {
            chart
                .draw_series(std::iter::once(Text::new(
                    name.clone(),
                    (*x + 0.15, y_top * 0.97),
                    ("sans-serif", 11).into_font().color(&GREY),
                )))
                .map_err(err)?;
        }
    }
    for (n, (x, label)) in data.events.iter().enumerate() {
        // Stagger the labels: the kill and the restart are close together.
        let at = if names { 0.88 } else { 0.5 } - 0.08 * n as f64;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(*x, y_bottom), (*x, y_top)],
                RED.mix(0.6).stroke_width(1),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                label.clone(),
                (
                    *x + 0.15,
                    if names {
                        y_top * at
                    } else {
                        // Log scale: place the label at a share of the decades shown.
                        y_bottom * (y_top / y_bottom).powf(at + 0.4)
                    },
                ),
                ("sans-serif", 11).into_font().color(&RED),
            )))
            .map_err(err)?;
    }
    Ok(())
}
