//! The drill's chart: goodput and p99 latency per traffic class over time,
//! with the drill's phases shaded and attack-mode changes marked, as PNG and SVG.

use std::fmt::Display;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::ranged1d::Ranged;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One traffic class's line on the chart.
pub struct Series {
    pub class: String,
    /// (seconds since the drill's start, successful requests per second in that bucket, p99 latency of successes in ms or None when no success in the bucket)
    pub points: Vec<(f64, f64, Option<f64>)>,
}

/// A shaded span of time, e.g. the attack phase.
pub struct Span {
    pub label: String,
    pub start_s: f64,
    pub end_s: f64,
    /// Shaded red (an attack, or any phase the scenario marks as one).
    pub attack: bool,
}

pub struct ChartInput {
    pub title: String,
    pub series: Vec<Series>,
    /// Phases drawn as light bands with their label; those marked `attack` are shaded red.
    pub phases: Vec<Span>,
    /// Extra markers: times when the gateway entered/left attack mode (vertical dashed lines with a small label).
    pub markers: Vec<(f64, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error(
        "no TrueType font for the chart's text (looked for {}); install the Debian package fonts-dejavu-core",
        FONT_PATHS.join(", ")
    )]
    NoFont,
    #[error("cannot draw the chart to {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
}

/// Writes `png` (1200×800) and `svg` with two stacked panels sharing the time axis:
/// top "goodput (successful req/s)" per class, bottom "p99 latency (ms)" per class on a log scale
/// (points with None are gaps, not zero). Legend with class names. Axis labels. Deterministic colours per series index.
///
/// Latencies of zero or below cannot sit on a log axis and are drawn at its floor;
/// non-finite values are gaps like `None`.
pub fn render(input: &ChartInput, png: &Path, svg: &Path) -> Result<(), ChartError> {
    ensure_font()?;
    let axes = Axes::of(input);

    let root = BitMapBackend::new(png, SIZE).into_drawing_area();
    draw(&root, input, &axes).and_then(|()| root.present()).map_err(|e| draw_error(png, e))?;

    let root = SVGBackend::new(svg, SIZE).into_drawing_area();
    draw(&root, input, &axes).and_then(|()| root.present()).map_err(|e| draw_error(svg, e))
}

const SIZE: (u32, u32) = (1200, 800);

/// Tried in order; the first is what `fonts-dejavu-core` installs on Debian.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Every piece of text asks for this family, so the one registered font serves all.
const FONT: &str = "sans-serif";

/// Okabe–Ito colours, which stay distinct for colour-blind readers; yellow is left
/// out because it vanishes on white.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

const ATTACK_RED: RGBColor = RGBColor(200, 30, 30);
const MARKER_GREY: RGBColor = RGBColor(70, 70, 70);

fn colour(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

fn ensure_font() -> Result<(), ChartError> {
    // plotters keeps registered fonts in a process-wide table, so one load is enough.
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| register_first_font(FONT_PATHS)) { Ok(()) } else { Err(ChartError::NoFont) }
}

fn register_first_font(paths: &[&str]) -> bool {
    paths.iter().any(|path| {
        let Ok(bytes) = std::fs::read(path) else {
            return false;
        };
        // plotters wants `'static` font bytes; this runs once per process, so the leak is bounded.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font(FONT, FontStyle::Normal, bytes).is_ok()
    })
}

fn draw_error(path: &Path, error: impl Display) -> ChartError {
    ChartError::Draw { path: path.to_path_buf(), message: error.to_string() }
}

/// The value ranges of the three axes, fitted to everything that will be drawn.
struct Axes {
    time: Range<f64>,
    goodput: Range<f64>,
    latency: Range<f64>,
}

impl Axes {
    fn of(input: &ChartInput) -> Self {
        let points = input.series.iter().flat_map(|s| &s.points);
        let times = points
            .clone()
            .map(|p| p.0)
            .chain(input.phases.iter().flat_map(|p| [p.start_s, p.end_s]))
            .chain(input.markers.iter().map(|m| m.0))
            .filter(|t| t.is_finite());
        let (start, end) = times.fold((0.0_f64, 0.0_f64), |(lo, hi), t| (lo.min(t), hi.max(t)));
        // A zero-length drill still needs a non-empty axis.
        let end = if end > start { end } else { start + 1.0 };

        let top_goodput = points.clone().map(|p| p.1).filter(|v| v.is_finite()).fold(0.0_f64, f64::max);
        // Headroom above the highest line keeps the phase and marker labels off the data.
        let goodput = 0.0..(top_goodput * 1.35).max(1.0);

        let (low_ms, high_ms) = points
            .filter_map(|p| p.2)
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let latency = if high_ms > 0.0 { low_ms / 2.0..high_ms * 4.0 } else { 1.0..1000.0 };

        Axes { time: start..end, goodput, latency }
    }
}

type AreaResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, input: &ChartInput, axes: &Axes) -> AreaResult<DB> {
    root.fill(&WHITE)?;
    let legend_rows = legend_layout(root, &input.series)?;
    let header_px = 44 + 24 * legend_rows.len().max(1) as u32;
    let (header, body) = root.split_vertically(header_px);
    draw_header(&header, &input.title, &input.series, &legend_rows)?;

    let (top, bottom) = body.split_vertically(body.dim_in_pixel().1 / 2);
    let time_decimals = if axes.time.end - axes.time.start < 10.0 { 1 } else { 0 };
    let time_label = |t: &f64| format!("{t:.time_decimals$}");
    let rate_decimals = if axes.goodput.end < 10.0 { 1 } else { 0 };
    let rate_label = |r: &f64| format!("{r:.rate_decimals$}");

    let mut goodput = ChartBuilder::on(&top)
        .margin_left(10)
        .margin_right(25)
        .margin_top(5)
        .x_label_area_size(28)
        .y_label_area_size(80)
        .build_cartesian_2d(axes.time.clone(), axes.goodput.clone())?;
    draw_phases(&mut goodput, &input.phases, &axes.goodput, true)?;
    goodput
        .configure_mesh()
        .x_labels(12)
        .y_labels(8)
        .x_label_formatter(&time_label)
        .y_label_formatter(&rate_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .y_desc("goodput (successful req/s)")
        .draw()?;
    draw_markers(&top, &mut goodput, &input.markers, &axes.goodput, true)?;
    for (index, series) in input.series.iter().enumerate() {
        let runs = split_at_gaps(series.points.iter().map(|p| Some((p.0, p.1))));
        draw_runs(&mut goodput, runs, colour(index))?;
    }

    let mut latency = ChartBuilder::on(&bottom)
        .margin_left(10)
        .margin_right(25)
        .margin_bottom(10)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(axes.time.clone(), axes.latency.clone().log_scale())?;
    draw_phases(&mut latency, &input.phases, &axes.latency, false)?;
    latency
        .configure_mesh()
        .x_labels(12)
        .x_label_formatter(&time_label)
        .y_label_formatter(&|ms| format_ms(*ms))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .x_desc("seconds since the drill's start")
        .y_desc("p99 latency (ms, log scale)")
        .draw()?;
    draw_markers(&bottom, &mut latency, &input.markers, &axes.latency, false)?;
    let floor = axes.latency.start;
    for (index, series) in input.series.iter().enumerate() {
        let runs =
            split_at_gaps(series.points.iter().map(|p| p.2.filter(|ms| ms.is_finite()).map(|ms| (p.0, ms.max(floor)))));
        draw_runs(&mut latency, runs, colour(index))?;
    }
    Ok(())
}

type Chart<'a, DB, Y> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>;

fn draw_phases<DB: DrawingBackend, Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'_, DB, Y>,
    phases: &[Span],
    y: &Range<f64>,
    with_labels: bool,
) -> AreaResult<DB> {
    for phase in phases.iter().filter(|p| p.start_s.is_finite() && p.end_s.is_finite()) {
        let attack = phase.attack;
        let (fill, text) = if attack {
            (ATTACK_RED.mix(0.13), ATTACK_RED.to_rgba())
        } else {
            (BLACK.mix(0.035), MARKER_GREY.to_rgba())
        };
        let (start, end) = (phase.start_s.min(phase.end_s), phase.start_s.max(phase.end_s));
        chart.draw_series([Rectangle::new([(start, y.start), (end, y.end)], fill.filled())])?;
        if with_labels {
            let style = (FONT, 15).into_font().color(&text).pos(Pos::new(HPos::Center, VPos::Top));
            let label = EmptyElement::at(((start + end) / 2.0, y.end)) + Text::new(phase.label.clone(), (0, 5), style);
            chart.draw_series([label])?;
        }
    }
    Ok(())
}

/// Dashed vertical lines; the labels go in the top panel only, in rows so that
/// markers close together in time do not print over each other.
fn draw_markers<DB: DrawingBackend, Y: Ranged<ValueType = f64>>(
    area: &DrawingArea<DB, Shift>,
    chart: &mut Chart<'_, DB, Y>,
    markers: &[(f64, String)],
    y: &Range<f64>,
    with_labels: bool,
) -> AreaResult<DB> {
    let line = MARKER_GREY.stroke_width(1);
    let mut markers: Vec<_> = markers.iter().filter(|m| m.0.is_finite()).collect();
    markers.sort_by(|a, b| a.0.total_cmp(&b.0));
    let right_edge = chart.plotting_area().get_pixel_range().0.end;
    let mut row_ends: Vec<i32> = Vec::new();
    for (time, label) in markers {
        chart.draw_series(DashedLineSeries::new([(*time, y.start), (*time, y.end)], 6, 4, line))?;
        if !with_labels {
            continue;
        }
        let style = (FONT, 13).into_font().color(&MARKER_GREY);
        let width = area.estimate_text_size(label, &style)?.0 as i32;
        let x = chart.backend_coord(&(*time, y.end)).0;
        // Near the right edge the label goes on the line's left so it stays inside the plot.
        let (left, h_pos, dx) =
            if x + 4 + width > right_edge { (x - 4 - width, HPos::Right, -4) } else { (x + 4, HPos::Left, 4) };
        let row = match row_ends.iter().position(|end| *end < left) {
            Some(row) => row,
            None => {
                row_ends.push(i32::MIN);
                row_ends.len() - 1
            }
        };
        row_ends[row] = left + width + 6;
        let dy = 26 + 17 * row as i32;
        let label = EmptyElement::at((*time, y.end))
            + Text::new(label.clone(), (dx, dy), style.pos(Pos::new(h_pos, VPos::Top)));
        chart.draw_series([label])?;
    }
    Ok(())
}

/// Splits a line at its gaps, so a bucket with no success breaks the line instead of
/// pulling it to zero.
fn split_at_gaps(points: impl Iterator<Item = Option<(f64, f64)>>) -> Vec<Vec<(f64, f64)>> {
    let mut runs = vec![Vec::new()];
    for point in points {
        match point {
            Some(p) if p.0.is_finite() && p.1.is_finite() => runs.last_mut().map_or((), |r| r.push(p)),
            _ => runs.push(Vec::new()),
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

fn draw_runs<DB: DrawingBackend, Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'_, DB, Y>,
    runs: Vec<Vec<(f64, f64)>>,
    colour: RGBColor,
) -> AreaResult<DB> {
    for run in runs {
        // A lone point makes no line, so it gets a dot to stay visible.
        if let [point] = run[..] {
            chart.draw_series([Circle::new(point, 3, colour.filled())])?;
        } else {
            chart.draw_series(LineSeries::new(run, colour.stroke_width(2)))?;
        }
    }
    Ok(())
}

/// One line of the legend: the series indexes it holds with each swatch's x offset,
/// and the line's width for centring.
#[derive(Default)]
struct LegendRow {
    entries: Vec<(usize, i32)>,
    width: i32,
}

const LEGEND_SWATCH: i32 = 28;
const LEGEND_GAP: i32 = 28;

/// Lays the legend's entries out in as many rows as the width needs.
fn legend_layout<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[Series],
) -> Result<Vec<LegendRow>, DrawingAreaErrorKind<DB::ErrorType>> {
    let max_width = root.dim_in_pixel().0 as i32 - 40;
    let mut rows: Vec<LegendRow> = Vec::new();
    for (index, s) in series.iter().enumerate() {
        let entry = LEGEND_SWATCH + 8 + root.estimate_text_size(&s.class, &text_style(16))?.0 as i32;
        let row = match rows.last_mut() {
            Some(row) if row.width + LEGEND_GAP + entry <= max_width => row,
            _ => {
                rows.push(LegendRow::default());
                rows.last_mut().expect("a row was just pushed")
            }
        };
        let x = if row.entries.is_empty() { 0 } else { row.width + LEGEND_GAP };
        row.entries.push((index, x));
        row.width = x + entry;
    }
    Ok(rows)
}

fn draw_header<DB: DrawingBackend>(
    header: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[Series],
    rows: &[LegendRow],
) -> AreaResult<DB> {
    let width = header.dim_in_pixel().0 as i32;
    let centred = Pos::new(HPos::Center, VPos::Top);
    header.draw(&Text::new(title, (width / 2, 10), text_style(22).pos(centred)))?;
    for (row_index, row) in rows.iter().enumerate() {
        let left = (width - row.width) / 2;
        let y = 46 + 24 * row_index as i32;
        for &(index, x) in &row.entries {
            let x = left + x;
            header.draw(&PathElement::new([(x, y + 9), (x + LEGEND_SWATCH, y + 9)], colour(index).stroke_width(3)))?;
            let style = text_style(16).pos(Pos::new(HPos::Left, VPos::Top));
            header.draw(&Text::new(series[index].class.as_str(), (x + LEGEND_SWATCH + 8, y), style))?;
        }
    }
    Ok(())
}

fn text_style(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font())
}

fn format_ms(ms: f64) -> String {
    if ms >= 10.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drill_input() -> ChartInput {
        let classes = ["logged-in", "api-key", "anonymous"];
        let series = classes
            .iter()
            .enumerate()
            .map(|(index, class)| Series {
                class: class.to_string(),
                points: (0..60)
                    .map(|second| {
                        let t = second as f64 + 0.5;
                        let under_attack = (20..40).contains(&second);
                        let base = 120.0 - 30.0 * index as f64;
                        match (index, under_attack) {
                            // Anonymous traffic is shed during the attack: no successes, so no latency.
                            (2, true) if second % 3 != 0 => (t, 0.0, None),
                            (2, true) => (t, 4.0, Some(900.0)),
                            (_, true) => (t, base * 0.8, Some(250.0 + 10.0 * index as f64)),
                            _ => (t, base, Some(40.0 + 5.0 * index as f64)),
                        }
                    })
                    .collect(),
            })
            .collect();
        ChartInput {
            title: "Attack drill: goodput and latency by class".into(),
            series,
            phases: vec![
                Span { label: "warm-up".into(), start_s: 0.0, end_s: 20.0, attack: false },
                Span { label: "attack".into(), start_s: 20.0, end_s: 40.0, attack: true },
                Span { label: "recovery".into(), start_s: 40.0, end_s: 60.0, attack: false },
            ],
            markers: vec![(21.5, "attack mode on".into()), (44.0, "attack mode off".into())],
        }
    }

    fn render_to(dir: &Path, input: &ChartInput) -> (Vec<u8>, String) {
        let (png, svg) = (dir.join("drill.png"), dir.join("drill.svg"));
        render(input, &png, &svg).expect("chart renders");
        let png = std::fs::read(png).expect("png written");
        let svg = std::fs::read_to_string(svg).expect("svg is text");
        (png, svg)
    }

    fn png_size(png: &[u8]) -> (u32, u32) {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        // The first chunk is IHDR: 4 length bytes, the tag, then width and height big-endian.
        assert_eq!(&png[12..16], b"IHDR");
        let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("four bytes"));
        (be(16), be(20))
    }

    #[test]
    fn drill_chart_has_requested_size_classes_and_attack_band() {
        let dir = tempfile::tempdir().expect("temp dir");
        let input = drill_input();
        let (png, svg) = render_to(dir.path(), &input);

        assert_eq!(png_size(&png), SIZE);
        for class in ["logged-in", "api-key", "anonymous"] {
            assert!(svg.contains(class), "legend names {class}");
        }
        // The SVG backend puts each text's content on its own line.
        assert!(svg.lines().any(|line| line.trim() == "attack"), "attack phase is labelled");
        assert!(svg.contains("attack mode on") && svg.contains("attack mode off"));
        assert!(svg.contains("goodput (successful req/s)"));
        assert!(svg.contains("p99 latency (ms, log scale)"));
        // Each class is drawn in its own palette colour.
        for index in 0..3 {
            let RGBColor(r, g, b) = colour(index);
            let hex = format!("#{r:02X}{g:02X}{b:02X}");
            assert!(svg.contains(&hex), "series {index} drawn in {hex}");
        }
    }

    #[test]
    fn edge_cases_render() {
        let dir = tempfile::tempdir().expect("temp dir");
        let point = |t: f64, ms: Option<f64>| (t, 5.0, ms);
        let cases = [
            ChartInput { title: "empty".into(), series: vec![], phases: vec![], markers: vec![] },
            ChartInput {
                title: "no points, no latency, one point, zero duration".into(),
                series: vec![
                    Series { class: "silent".into(), points: vec![] },
                    Series { class: "shed".into(), points: vec![point(0.0, None), point(0.0, None)] },
                    Series { class: "lone".into(), points: vec![point(0.0, Some(12.0))] },
                    Series {
                        class: "odd".into(),
                        points: vec![point(f64::NAN, Some(0.0)), (0.0, f64::INFINITY, Some(-1.0))],
                    },
                ],
                phases: vec![Span { label: "attack".into(), start_s: 0.0, end_s: 0.0, attack: true }],
                markers: vec![(0.0, "attack mode on".into())],
            },
        ];
        for input in &cases {
            let (png, svg) = render_to(dir.path(), input);
            assert_eq!(png_size(&png), SIZE, "{}", input.title);
            assert!(svg.contains(&input.title));
        }
    }

    #[test]
    fn missing_latency_breaks_the_line() {
        let runs = split_at_gaps([Some((0.0, 1.0)), None, Some((2.0, 3.0)), Some((3.0, 4.0)), None].into_iter());
        assert_eq!(runs, vec![vec![(0.0, 1.0)], vec![(2.0, 3.0), (3.0, 4.0)]]);
    }

    #[test]
    fn axes_are_never_empty() {
        let input = ChartInput {
            title: String::new(),
            series: vec![Series { class: "a".into(), points: vec![(3.0, 0.0, None)] }],
            phases: vec![],
            markers: vec![],
        };
        let axes = Axes::of(&input);
        assert_eq!(axes.time, 0.0..3.0);
        assert_eq!(axes.goodput, 0.0..1.0);
        assert_eq!(axes.latency, 1.0..1000.0);
    }

    #[test]
    fn missing_font_is_an_error_naming_the_package() {
        assert!(!register_first_font(&["/nonexistent/font.ttf"]));
        assert!(ChartError::NoFont.to_string().contains("fonts-dejavu-core"));
    }
}
