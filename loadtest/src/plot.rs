//! SVG charts for the report.
//!
//! Drawn with plotters' SVG backend and no font feature: labels become `<text>` elements that
//! the viewer renders with its own sans-serif font, so nothing reads a system font here. Label
//! widths for the layout are plotters' estimates, hence the generous label areas.
//!
//! A chart is drawn into memory first and written in one go, so a failed drawing never leaves
//! a truncated file behind.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The font family named in the SVG.
const FONT: &str = "sans-serif";

/// Line charts: wide enough for a legend beside ~100 points.
const LINE_CHART_SIZE: (u32, u32) = (1024, 640);

/// Bar charts grow wider with their bars so that category labels never overlap.
const BAR_CHART_MIN_WIDTH: u32 = 640;
const BAR_CHART_HEIGHT: u32 = 640;

/// Room left of the plot for the y axis's tick labels and description.
const Y_LABEL_AREA: u32 = 80;

/// Estimated pixels per character of a 14-point label (11.3 px in the SVG), rounded up.
const LABEL_CHAR_WIDTH: u32 = 7;

/// Line and bar colours: dark enough to read on white, and told apart by hue; a chart with
/// more series than colours reuses them in order.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 90, 181),
    RGBColor(220, 50, 32),
    RGBColor(0, 140, 70),
    RGBColor(150, 60, 170),
    RGBColor(230, 130, 0),
    RGBColor(0, 150, 160),
    RGBColor(120, 80, 40),
    RGBColor(90, 90, 90),
];

/// Half a bar's width, in bar slots: the rest of the slot separates it from its neighbours.
const BAR_HALF_WIDTH: f64 = 0.42;

/// Headroom above the highest value, as a fraction of the range, for the legend and the bars'
/// value labels.
const HEADROOM: f64 = 0.12;

/// One line of a line chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Shown in the legend.
    pub(crate) name: String,
    /// `(x, y)` pairs, in any order; the line joins them in order of x.
    pub(crate) points: Vec<(f64, f64)>,
}

/// Why a chart was not drawn.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlotError {
    /// Every series is empty, or there are none.
    #[error("no series has a point to draw")]
    NoPoints,

    /// A bar chart without bars.
    #[error("there are no bars to draw")]
    NoBars,

    /// A NaN or infinite value, which has no place on an axis.
    #[error("{name:?} has a value that is not a finite number: ({x}, {y})")]
    NotFinite {
        /// The series or bar.
        name: String,
        /// The x value (the bar's index for a bar chart).
        x: f64,
        /// The y value.
        y: f64,
    },

    /// plotters failed to lay out or draw the chart.
    #[error("cannot lay out the chart")]
    Draw(#[source] DrawingAreaErrorKind<std::io::Error>),

    /// The drawn chart could not be saved.
    #[error("cannot write the chart file")]
    Write(#[source] std::io::Error),
}

/// Draws `series` as lines with point markers and a legend, on axes scaled to fit all points.
/// The y axis starts at zero unless a value is negative. Empty series are left out; if all
/// are empty there is nothing to draw and the chart is refused.
pub(crate) fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), PlotError> {
    let mut drawn = Vec::new();
    for one in series.iter().filter(|s| !s.points.is_empty()) {
        if let Some(&(x, y)) = one
            .points
            .iter()
            .find(|(x, y)| !x.is_finite() || !y.is_finite())
        {
            return Err(PlotError::NotFinite {
                name: one.name.clone(),
                x,
                y,
            });
        }
        let mut points = one.points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        drawn.push((one.name.as_str(), points));
    }
    if drawn.is_empty() {
        return Err(PlotError::NoPoints);
    }

    let xs = drawn.iter().flat_map(|(_, p)| p.iter().map(|&(x, _)| x));
    let ys = drawn.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y));
    let x_range = x_axis(xs);
    let y_range = y_axis(ys);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, LINE_CHART_SIZE).into_drawing_area();
        draw_lines(&root, title, (x_label, y_label), &drawn, x_range, y_range)
            .map_err(PlotError::Draw)?;
    }
    std::fs::write(path, svg).map_err(PlotError::Write)
}

/// Draws one vertical bar per `(label, value)`, in the order given, with the value written
/// above each bar. The y axis starts at zero unless a value is negative.
pub(crate) fn bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    bars: &[(String, f64)],
) -> Result<(), PlotError> {
    if bars.is_empty() {
        return Err(PlotError::NoBars);
    }
    if let Some((index, (name, value))) = bars.iter().enumerate().find(|(_, b)| !b.1.is_finite()) {
        return Err(PlotError::NotFinite {
            name: name.clone(),
            x: index as f64,
            y: *value,
        });
    }

    let widest = bars
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let per_bar = (u32::try_from(widest).unwrap_or(u32::MAX / 16) * LABEL_CHAR_WIDTH + 24).max(80);
    let count = u32::try_from(bars.len()).unwrap_or(u32::MAX / per_bar);
    let width = (count.saturating_mul(per_bar) + Y_LABEL_AREA + 48).max(BAR_CHART_MIN_WIDTH);
    let y_range = y_axis(bars.iter().map(|&(_, v)| v));

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, BAR_CHART_HEIGHT)).into_drawing_area();
        draw_bars(&root, title, y_label, bars, y_range).map_err(PlotError::Draw)?;
    }
    std::fs::write(path, svg).map_err(PlotError::Write)
}

type Drawing<T> = Result<T, DrawingAreaErrorKind<std::io::Error>>;

fn draw_lines(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[(&str, Vec<(f64, f64)>)],
    x_range: std::ops::Range<f64>,
    y_range: std::ops::Range<f64>,
) -> Drawing<()> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(BLACK.mix(0.05))
        .bold_line_style(BLACK.mix(0.15))
        .draw()?;

    for (index, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        chart
            .draw_series(
                LineSeries::new(points.iter().copied(), color.stroke_width(2)).point_size(3),
            )?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()
}

fn draw_bars(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_label: &str,
    bars: &[(String, f64)],
    y_range: std::ops::Range<f64>,
) -> Drawing<()> {
    // Bar i is centred on x = i, so the axis's whole-number ticks fall on the bars; plotters'
    // segmented axes cannot hold a single category.
    let last = (bars.len() - 1) as f64;
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(-0.5..last + 0.5, y_range)?;
    let category = |x: &f64| {
        let index = x.round();
        let on_a_bar = (x - index).abs() < 1e-6 && (0.0..=last).contains(&index);
        if on_a_bar {
            bars[index as usize].0.clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&category)
        .y_desc(y_label)
        .y_label_formatter(&|v| tick_label(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(BLACK.mix(0.05))
        .bold_line_style(BLACK.mix(0.15))
        .draw()?;

    let fill = PALETTE[0].mix(0.85);
    let centres = bars.iter().enumerate().map(|(i, &(_, v))| (i as f64, v));
    chart.draw_series(centres.clone().map(|(x, value)| {
        Rectangle::new(
            [(x - BAR_HALF_WIDTH, 0.0), (x + BAR_HALF_WIDTH, value)],
            fill.filled(),
        )
    }))?;
    let above = TextStyle::from((FONT, 14)).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(
        centres.map(|(x, value)| Text::new(tick_label(value), (x, value), above.clone())),
    )?;
    root.present()
}

/// The smallest and largest value; callers pass at least one finite value.
fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// The x values' extent with a little room so edge markers are not cut in half; a single x
/// value gets a unit-wide axis around it.
fn x_axis(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = extent(values);
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        return (lo - 1.0)..(hi + 1.0);
    }
    let pad = (hi - lo) * 0.03;
    (lo - pad)..(hi + pad)
}

/// Zero to the largest value, or down to the smallest if it is negative, with headroom: a
/// throughput or latency axis that does not start at zero exaggerates differences.
fn y_axis(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = extent(values);
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    if hi - lo <= f64::EPSILON {
        return 0.0..1.0;
    }
    let pad = (hi - lo) * HEADROOM;
    let bottom = if lo < 0.0 { lo - pad } else { 0.0 };
    let top = if hi > 0.0 { hi + pad } else { 0.0 };
    bottom..top
}

/// Short tick and value labels: `2.5k`, `120`, `0.25`, `1.2M`.
fn tick_label(value: f64) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 1e6 {
        (value / 1e6, "M")
    } else if magnitude >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let decimals = if magnitude > 0.0 && magnitude < 1.0 {
        3
    } else {
        2
    };
    let text = format!("{scaled:.decimals$}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    match text {
        "-0" | "" => format!("0{suffix}"),
        _ => format!("{text}{suffix}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A directory under the system's temp dir, removed when the test ends.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("qf-load-plot-{}-{test}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn series(name: &str, points: &[(f64, f64)]) -> Series {
        Series {
            name: name.to_owned(),
            points: points.to_vec(),
        }
    }

    #[test]
    fn a_line_chart_names_its_title_axes_and_series() {
        let dir = TempDir::new("line");
        let path = dir.0.join("latency.svg");
        let all = [
            series(
                "trigger→completion p50",
                &[(1.0, 4.0), (0.0, 3.5), (2.0, 5.5)],
            ),
            series("accept p99 & more", &[(0.0, 1.0), (2.0, 1.5)]),
        ];

        line_chart(
            &path,
            "linear at 500/s, 4×16",
            "seconds",
            "latency (ms)",
            &all,
        )
        .unwrap();

        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.starts_with("<svg"),
            "not an SVG: {}",
            &svg[..svg.len().min(80)]
        );
        for text in [
            "linear at 500/s, 4×16",
            "seconds",
            "latency (ms)",
            "trigger→completion p50",
            "accept p99 &amp; more",
        ] {
            assert!(svg.contains(text), "{text:?} missing from the SVG");
        }
    }

    #[test]
    fn a_line_chart_leaves_out_empty_series_but_refuses_to_be_empty() {
        let dir = TempDir::new("empty");
        let path = dir.0.join("chart.svg");

        let all_empty = line_chart(&path, "t", "x", "y", &[series("nothing", &[])]);
        let none = line_chart(&path, "t", "x", "y", &[]);
        line_chart(
            &path,
            "t",
            "x",
            "y",
            &[series("nothing", &[]), series("one point", &[(3.0, 3.0)])],
        )
        .unwrap();

        assert!(matches!(all_empty, Err(PlotError::NoPoints)));
        assert!(matches!(none, Err(PlotError::NoPoints)));
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("one point"));
        assert!(!svg.contains("nothing"));
    }

    #[test]
    fn a_line_chart_refuses_a_nan() {
        let dir = TempDir::new("nan");
        let path = dir.0.join("chart.svg");

        let result = line_chart(&path, "t", "x", "y", &[series("bad", &[(1.0, f64::NAN)])]);

        assert!(matches!(result, Err(PlotError::NotFinite { ref name, .. }) if name == "bad"));
        assert!(!path.exists(), "a refused chart left a file behind");
    }

    #[test]
    fn a_bar_chart_labels_every_bar_with_its_name_and_value() {
        let dir = TempDir::new("bars");
        let path = dir.0.join("throughput.svg");
        let bars = [
            ("apalis 4x16 batch 10".to_owned(), 3_177.0),
            ("skip-locked 16 clients".to_owned(), 6_500.0),
            ("linear burn-down 4×16".to_owned(), 2_400.0),
        ];

        bar_chart(&path, "Jobs per second", "per second", &bars).unwrap();

        let svg = std::fs::read_to_string(&path).unwrap();
        for text in [
            "Jobs per second",
            "per second",
            "apalis 4x16 batch 10",
            "skip-locked 16 clients",
            "linear burn-down 4×16",
            "3.18k",
            "6.5k",
        ] {
            assert!(svg.contains(text), "{text:?} missing from the SVG");
        }
    }

    #[test]
    fn a_bar_chart_refuses_no_bars_and_non_finite_values() {
        let dir = TempDir::new("bad-bars");
        let path = dir.0.join("chart.svg");

        let empty = bar_chart(&path, "t", "y", &[]);
        let infinite = bar_chart(&path, "t", "y", &[("inf".to_owned(), f64::INFINITY)]);

        assert!(matches!(empty, Err(PlotError::NoBars)));
        assert!(matches!(infinite, Err(PlotError::NotFinite { .. })));
    }

    #[test]
    fn a_missing_directory_is_a_write_error() {
        let dir = TempDir::new("missing");
        let path = dir.0.join("no-such-dir").join("chart.svg");

        let result = bar_chart(&path, "t", "y", &[("a".to_owned(), 1.0)]);

        assert!(matches!(result, Err(PlotError::Write(_))));
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(120.0), "120");
        assert_eq!(tick_label(2_500.0), "2.5k");
        assert_eq!(tick_label(20_000.0), "20k");
        assert_eq!(tick_label(1_250_000.0), "1.25M");
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(-1_500.0), "-1.5k");
    }

    #[test]
    fn the_y_axis_starts_at_zero_and_leaves_headroom() {
        let range = y_axis([2.0, 10.0].into_iter());
        assert_eq!(range.start, 0.0);
        assert!(range.end > 10.0);

        let negative = y_axis([-5.0, 5.0].into_iter());
        assert!(negative.start < -5.0 && negative.end > 5.0);

        assert_eq!(y_axis([0.0].into_iter()), 0.0..1.0);
    }
}
