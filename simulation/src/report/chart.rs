//! The propagation picture, drawn with plotters' SVG backend. On the left,
//! the CDF of propagation delay per verifier region on a logarithmic delay
//! axis, with each region's p50 and p99 marked. On the right, over the
//! run's simulated time: the p99 delay of the revocations first applied in
//! each second, per region, above the scenario's fault timeline, so a
//! region that lagged lines up with the fault that made it lag.
//!
//! Text is written as SVG `<text>` for the viewer to render: plotters is
//! built without a font backend, so it only estimates text extents.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::DelayHistogram;
use crate::harness::RunOutcome;
use crate::scenario::FaultSpan;

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 560;
/// Width of the CDF panel when the timeline is drawn beside it.
const CDF_WIDTH: u32 = 560;
/// Height of the legend row under the title.
const LEGEND_HEIGHT: u32 = 28;
/// Height of the delay-over-time panel above the fault lanes.
const OVER_TIME_HEIGHT: u32 = 300;
/// Log step between the points of a CDF line (5%).
const CDF_STEP: f64 = 1.05;
const FONT: &str = "sans-serif";
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];
const FAULT_COLOR: RGBColor = RGBColor(192, 57, 43);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// The delays of one verifier region.
struct RegionDelays {
    name: String,
    histogram: DelayHistogram,
    /// (second of the first apply, delay ms), when known.
    timed: Vec<(u64, f64)>,
}

/// The fault timeline drawn beside the CDF.
struct Timeline {
    caption: String,
    spans: Vec<FaultSpan>,
    end_s: f64,
}

/// The picture for `runs` of one scenario: per-region CDFs and p99 over
/// time beside the fault timeline. The timeline is the scenario's; when
/// the runs' scenarios differ (swarm), it is the first run's.
pub fn propagation_chart(title: &str, runs: &[RunOutcome]) -> String {
    let mut regions: BTreeMap<&str, RegionDelays> = BTreeMap::new();
    for sample in runs.iter().flat_map(|r| &r.propagation) {
        let region = regions
            .entry(&sample.region)
            .or_insert_with(|| RegionDelays {
                name: sample.region.clone(),
                histogram: DelayHistogram::new(),
                timed: Vec::new(),
            });
        region.histogram.record(sample.delay_ms);
        let second = (sample.committed_ms / 1000.0).max(0.0).floor() as u64;
        region.timed.push((second, sample.delay_ms));
    }
    let timeline = runs.first().map(|first| {
        let same = runs.iter().all(|r| r.fault_spans == first.fault_spans);
        Timeline {
            caption: match (first.fault_spans.is_empty(), same) {
                (true, true) => "faults: none scheduled".into(),
                (_, true) => "faults".into(),
                (_, false) => format!("faults of seed {} (they differ by seed)", first.seed),
            },
            spans: first.fault_spans.clone(),
            end_s: runs.iter().map(|r| r.simulated_s).fold(1.0, f64::max),
        }
    });
    let samples = regions.values().map(|r| r.histogram.len()).sum::<u64>();
    let title = format!(
        "{title}: revocation propagation ({samples} samples, {} runs)",
        runs.len()
    );
    render(&title, &regions.into_values().collect::<Vec<_>>(), timeline)
}

/// The picture for bare delays (no regions, no times): one CDF line for
/// every region together, without the timeline.
pub fn propagation_svg(title: &str, delays: &[f64]) -> String {
    let all = RegionDelays {
        name: "all regions".into(),
        histogram: DelayHistogram::of(delays.iter().copied()),
        timed: Vec::new(),
    };
    let title = format!("{title}: revocation propagation ({} samples)", delays.len());
    render(&title, &[all], None)
}

fn render(title: &str, regions: &[RegionDelays], timeline: Option<Timeline>) -> String {
    let mut svg = String::new();
    let drawn = draw(&mut svg, title, regions, timeline);
    match drawn {
        Ok(()) => svg,
        // Drawing into a string has no IO to fail; keep any error visible.
        Err(e) => format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"40\"><text x=\"10\" y=\"25\">{}</text></svg>\n",
            escape(&e.to_string())
        ),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn draw(
    svg: &mut String,
    title: &str,
    regions: &[RegionDelays],
    timeline: Option<Timeline>,
) -> Drawn {
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 18))?;
    let (legend, body) = root.split_vertically(LEGEND_HEIGHT);
    draw_legend(&legend, regions)?;
    let axis = delay_axis(regions);
    match timeline {
        Some(timeline) => {
            let (left, right) = body.split_horizontally(CDF_WIDTH);
            draw_cdf(&left, regions, axis)?;
            let (top, bottom) = right.split_vertically(OVER_TIME_HEIGHT);
            draw_over_time(&top, regions, axis, &timeline)?;
            draw_faults(&bottom, &timeline)?;
        }
        None => draw_cdf(&body, regions, axis)?,
    }
    root.present()?;
    Ok(())
}

/// The delay axis: whole decades (ms) around every sample, from 0.1 ms.
fn delay_axis(regions: &[RegionDelays]) -> (f64, f64) {
    let quantile = |q: f64| {
        regions
            .iter()
            .filter_map(|r| r.histogram.quantile_ms(q))
            .collect::<Vec<_>>()
    };
    let low = quantile(0.0).into_iter().fold(f64::INFINITY, f64::min);
    let high = quantile(1.0).into_iter().fold(0.0, f64::max);
    let decade_below = |ms: f64| 10f64.powf(ms.max(0.1).log10().floor());
    let decade_above = |ms: f64| 10f64.powf(ms.max(1.0).log10().ceil());
    let low = if low.is_finite() {
        decade_below(low)
    } else {
        1.0
    };
    let high = decade_above(high).max(low * 10.0);
    (low, high)
}

/// An axis tick: "0.1 ms", "10 ms", "1 s".
fn format_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", ms / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// A measured delay: "3.5 ms", "268 ms", "4.10 s".
fn format_delay(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn color(n: usize) -> RGBColor {
    PALETTE[n % PALETTE.len()]
}

/// A row under the title: each region's colour, p50, p99 and samples.
fn draw_legend(area: &Area<'_>, regions: &[RegionDelays]) -> Drawn {
    let (width, _) = area.dim_in_pixel();
    let step = (width as i32 - 40) / regions.len().max(1) as i32;
    for (n, region) in regions.iter().enumerate() {
        let x = 20 + step * n as i32;
        let y = LEGEND_HEIGHT as i32 / 2;
        let quantile = |q| {
            region
                .histogram
                .quantile_ms(q)
                .map_or("-".into(), format_delay)
        };
        let label = format!(
            "{}: p50 {}, p99 {} ({} samples)",
            region.name,
            quantile(0.5),
            quantile(0.99),
            region.histogram.len()
        );
        area.draw(&PathElement::new(
            [(x, y), (x + 22, y)],
            color(n).stroke_width(3),
        ))?;
        let style = TextStyle::from((FONT, 13)).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(label, (x + 28, y), style))?;
    }
    Ok(())
}

fn draw_cdf(area: &Area<'_>, regions: &[RegionDelays], (low, high): (f64, f64)) -> Drawn {
    let mut chart = ChartBuilder::on(area)
        .caption("CDF of propagation delay", (FONT, 15))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((low..high).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("first apply on a broker to apply on a verifier (log scale)")
        .y_desc("share of samples at or below")
        .x_label_formatter(&|ms| format_ms(*ms))
        .y_label_formatter(&|share| format!("{:.0}%", share * 100.0))
        .label_style((FONT, 12))
        .draw()?;
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        let guide = ShapeStyle::from(&BLACK.mix(0.35)).stroke_width(1);
        chart.draw_series(LineSeries::new([(low, q), (high, q)], guide))?;
        chart.draw_series([Text::new(name, (low * 1.08, q - 0.035), (FONT, 11))])?;
    }
    for (n, region) in regions.iter().enumerate() {
        let stroke = color(n).stroke_width(2);
        let points = region
            .histogram
            .cdf(CDF_STEP)
            .into_iter()
            .map(|(ms, share)| (ms.clamp(low, high), share));
        let p50 = region.histogram.quantile_ms(0.5);
        let p99 = region.histogram.quantile_ms(0.99);
        chart.draw_series(LineSeries::new(points, stroke))?;
        // p50 as a dot, p99 as a cross, on the region's line.
        let marks = [(p50, 0.5, false), (p99, 0.99, true)];
        for (ms, q, cross) in marks {
            let Some(ms) = ms else { continue };
            let at = (ms.clamp(low, high), q);
            if cross {
                chart.draw_series([Cross::new(at, 5, color(n).stroke_width(2))])?;
            } else {
                chart.draw_series([Circle::new(at, 4, color(n).filled())])?;
            }
        }
    }
    Ok(())
}

/// The p99 delay of the revocations first applied in each second, per
/// region, with the faults shaded behind.
fn draw_over_time(
    area: &Area<'_>,
    regions: &[RegionDelays],
    (low, high): (f64, f64),
    timeline: &Timeline,
) -> Drawn {
    let mut chart = ChartBuilder::on(area)
        .caption("p99 delay by second of first apply", (FONT, 15))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..timeline.end_s, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("simulated time (s)")
        .x_label_formatter(&|s| format!("{s:.0}"))
        .y_label_formatter(&|ms| format_ms(*ms))
        .label_style((FONT, 12))
        .draw()?;
    chart.draw_series(timeline.spans.iter().map(|span| {
        let end = span.end_s.max(span.start_s + timeline.end_s / 300.0);
        Rectangle::new(
            [(span.start_s, low), (end, high)],
            FAULT_COLOR.mix(0.12).filled(),
        )
    }))?;
    for (n, region) in regions.iter().enumerate() {
        let points = p99_per_second(&region.timed)
            .into_iter()
            .map(|(second, ms)| (second as f64 + 0.5, ms.clamp(low, high)));
        chart.draw_series(LineSeries::new(points, color(n).stroke_width(2)))?;
    }
    Ok(())
}

/// (second, p99 delay ms) for each second with samples.
fn p99_per_second(timed: &[(u64, f64)]) -> Vec<(u64, f64)> {
    let mut seconds: BTreeMap<u64, DelayHistogram> = BTreeMap::new();
    for &(second, ms) in timed {
        seconds.entry(second).or_default().record(ms);
    }
    seconds
        .into_iter()
        .filter_map(|(second, h)| h.quantile_ms(0.99).map(|ms| (second, ms)))
        .collect()
}

/// One lane per fault, over the same time axis.
fn draw_faults(area: &Area<'_>, timeline: &Timeline) -> Drawn {
    // At least four lanes, so one fault is a bar, not a block.
    let lanes = timeline.spans.len().max(4) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(&timeline.caption, (FONT, 15))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..timeline.end_s, 0f64..lanes)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("simulated time (s)")
        .x_label_formatter(&|s| format!("{s:.0}"))
        .label_style((FONT, 12))
        .draw()?;
    let min_width = timeline.end_s / 300.0;
    for (n, span) in timeline.spans.iter().enumerate() {
        // First fault on top.
        let y = lanes - n as f64 - 0.5;
        let end = span.end_s.max(span.start_s + min_width);
        chart.draw_series([Rectangle::new(
            [(span.start_s, y - 0.3), (end, y + 0.3)],
            FAULT_COLOR.mix(0.7).filled(),
        )])?;
        let label = if span.end_s > span.start_s {
            format!("{} ({}–{} s)", span.label, span.start_s, span.end_s)
        } else {
            format!("{} (at {} s)", span.label, span.start_s)
        };
        let x = (end + min_width).min(timeline.end_s * 0.7);
        chart.draw_series([Text::new(label, (x, y + 0.25), (FONT, 11))])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{Counts, PropagationSample};

    fn run(seed: u64, spans: Vec<FaultSpan>) -> RunOutcome {
        let sample = |region: &str, committed_ms: f64, delay_ms: f64| PropagationSample {
            region: region.into(),
            committed_ms,
            delay_ms,
        };
        let propagation = vec![
            sample("eu", 1_000.0, 4.0),
            sample("eu", 2_000.0, 6.0),
            sample("ap", 1_500.0, 90.0),
            sample("ap", 12_500.0, 4_000.0),
        ];
        RunOutcome {
            scenario: "x".into(),
            seed,
            trace: Vec::new(),
            violations: Vec::new(),
            propagation_ms: propagation.iter().map(|s| s.delay_ms).collect(),
            propagation,
            fault_spans: spans,
            simulated_s: 30.0,
            wall_s: 1.0,
            counts: Counts::default(),
            error: None,
        }
    }

    fn cut() -> Vec<FaultSpan> {
        vec![FaultSpan {
            label: "cut region ap".into(),
            start_s: 10.0,
            end_s: 20.0,
        }]
    }

    #[test]
    fn the_chart_has_a_line_per_region_marked_percentiles_and_the_faults() {
        let runs = [run(1, cut()), run(2, cut())];
        let svg = propagation_chart("x", &runs);
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("ap: p50"), "no legend for ap");
        assert!(svg.contains("eu: p50"), "no legend for eu");
        assert!(svg.contains("cut region ap (10–20 s)"));
        // Decade ticks of the log axis.
        assert!(svg.contains("\n1 ms\n") && svg.contains("\n1 s\n"), "{svg}");
        // Two CDF lines, two lines over time and two guides.
        assert!(svg.matches("<polyline").count() >= 6);
        assert_eq!(
            svg,
            propagation_chart("x", &runs),
            "the same runs, the same picture"
        );
        let swarm = propagation_chart("x", &[run(1, cut()), run(2, Vec::new())]);
        assert!(swarm.contains("faults of seed 1"));
    }

    #[test]
    fn bare_delays_draw_one_line_without_a_timeline() {
        let svg = propagation_svg("x", &[1.0, 2.0, 30.0, 400.0]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("all regions: p50"));
        assert!(!svg.contains("simulated time"));
        let empty = propagation_svg("x", &[]);
        assert!(empty.starts_with("<svg") && empty.contains("0 samples"));
    }
}
