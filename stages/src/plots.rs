//! PNG plots of stage results (plotters, bitmap backend). Text uses the font
//! bundled in `stages/assets/` so plots look the same on every machine and no
//! system font library is needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::error::{Result, StageError};

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSansMono.ttf");
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .unwrap_or_else(|_| panic!("the bundled font is a valid TTF"));
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> StageError {
    StageError::data(format!("cannot draw {}: {e}", path.display()))
}

/// A chart over f64 axes on a bitmap.
type Axes<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The frame every x-y plot here shares: a white canvas, a title, labelled
/// axes over `x` and `y` with a mesh.
fn axes<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Axes<'a, 'b>> {
    let err = |e: &dyn std::fmt::Display| plot_err(path, e);
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x, y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| err(&e))?;
    Ok(chart)
}

/// One named line of a line plot.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The padded x and y ranges of the finite points of `series` (and of `extra_y`).
fn series_ranges(
    series: &[Series],
    extra_y: Option<f64>,
) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in series.iter().flat_map(|s| s.points.iter()) {
        if x.is_finite() && y.is_finite() {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if let Some(y) = extra_y.filter(|y| y.is_finite()) {
        (y0, y1) = (y0.min(y), y1.max(y));
    }
    let pad = |lo: f64, hi: f64| if hi > lo { (hi - lo) * 0.02 } else { 0.5 };
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    (x0 - px..x1 + px, y0 - py..y1 + py)
}

/// The legend box every plot here uses: the series' labels on a light
/// background at `position`.
fn legend<'a, 'b: 'a>(
    chart: &mut Axes<'a, 'b>,
    path: &Path,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(|e| plot_err(path, e))
}

/// Draws each series in its palette colour, with a legend entry; series of
/// up to 50 points get a marker at each point.
fn draw_lines(chart: &mut Axes<'_, '_>, path: &Path, series: &[Series]) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| plot_err(path, e);
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        // Short series (scans, single operating points) get markers, so
        // a one-point series shows.
        let marker = if points.len() <= 50 { 3 } else { 0 };
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)).point_size(marker))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    Ok(())
}

/// Draws line series on common axes.
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    diagonal: bool,
) -> Result<()> {
    register_font();
    let err = |e: &dyn std::fmt::Display| plot_err(path, e);
    let (x, y) = series_ranges(series, None);
    let root = BitMapBackend::new(path, (900, 650)).into_drawing_area();
    let mut chart = axes(&root, path, title, (x_label, y_label), x, y)?;
    if diagonal {
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                BLACK.mix(0.3).stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
    }
    draw_lines(&mut chart, path, series)?;
    legend(&mut chart, path, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// One panel of [`line_panels`].
pub struct LinePanel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// x intervals shaded red (e.g. the truly bad lumisections).
    pub shaded: Vec<(f64, f64)>,
    /// A dashed horizontal line (e.g. the threshold).
    pub hline: Option<f64>,
}

/// Line panels in a grid of `columns` (the poster's MSE-versus-LS and
/// input-versus-reconstruction figures, one panel per monitored element).
pub fn line_panels(path: &Path, title: &str, panels: &[LinePanel], columns: usize) -> Result<()> {
    register_font();
    let err = |e: &dyn std::fmt::Display| plot_err(path, e);
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let root = BitMapBackend::new(path, (560 * columns as u32, 400 * rows as u32 + 40))
        .into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    for (area, panel) in root.split_evenly((rows, columns)).iter().zip(panels) {
        let (x, y) = series_ranges(&panel.series, panel.hline);
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(x.clone(), y.clone())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(panel.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(panel.shaded.iter().map(|&(a, b)| {
                Rectangle::new(
                    [(a, y.start), (b, y.end)],
                    RGBColor(230, 60, 60).mix(0.25).filled(),
                )
            }))
            .map_err(|e| err(&e))?;
        if let Some(h) = panel.hline {
            chart
                .draw_series(DashedLineSeries::new(
                    [(x.start, h), (x.end, h)],
                    8,
                    5,
                    BLACK.stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
        }
        draw_lines(&mut chart, path, &panel.series)?;
        if panel.series.len() > 1 {
            legend(&mut chart, path, SeriesLabelPosition::UpperRight)?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Draws a confusion matrix: rows are true classes, columns predictions,
/// each cell shaded by its row fraction and labelled with its count.
pub fn confusion(path: &Path, title: &str, labels: &[String], counts: &[Vec<u64>]) -> Result<()> {
    use plotters::coord::ranged1d::SegmentValue;
    register_font();
    let err = |e: &dyn std::fmt::Display| plot_err(path, e);
    let n = labels.len() as i32;
    let root = BitMapBackend::new(path, (820, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(150)
        .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
        .map_err(|e| err(&e))?;
    let name = |v: &SegmentValue<i32>, flip: bool| match v {
        SegmentValue::CenterOf(i) => {
            let i = if flip { n - 1 - i } else { *i };
            labels.get(i.max(0) as usize).cloned().unwrap_or_default()
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("predicted")
        .y_desc("true")
        .x_labels(labels.len() + 1)
        .y_labels(labels.len() + 1)
        .x_label_formatter(&|v| name(v, false))
        .y_label_formatter(&|v| name(v, true))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    let mut cells = Vec::new();
    let mut texts = Vec::new();
    for (t, row) in counts.iter().enumerate() {
        let total: u64 = row.iter().sum::<u64>().max(1);
        for (p, &c) in row.iter().enumerate() {
            let frac = c as f64 / total as f64;
            let (x, y) = (p as i32, n - 1 - t as i32);
            let shade = (255.0 * (1.0 - 0.75 * frac)) as u8;
            cells.push(Rectangle::new(
                [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ],
                RGBColor(shade, shade, 255).filled(),
            ));
            texts.push(Text::new(
                format!("{c} ({:.0}%)", 100.0 * frac),
                (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                ("sans-serif", 18).into_font().color(&BLACK).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    ),
                ),
            ));
        }
    }
    chart.draw_series(cells).map_err(|e| err(&e))?;
    chart.draw_series(texts).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// One panel of [`heatmaps`]: `values` row-major over `rows` × `cols` cells,
/// cells with `outline` set drawn with a black frame.
pub struct Heatmap {
    pub title: String,
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f64>,
    pub outline: Vec<bool>,
}

/// Panels of colour maps side by side (the HCAL paper's Figure 10: input,
/// reconstruction and anomaly score, injected channels outlined). Each panel
/// has its own colour scale, white (its minimum) to dark red (its maximum);
/// x is the column (iφ), y the row (iη).
pub fn heatmaps(path: &Path, title: &str, panels: &[Heatmap]) -> Result<()> {
    register_font();
    let err = |e: &dyn std::fmt::Display| plot_err(path, e);
    let width = 520 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    for (area, panel) in root
        .split_evenly((1, panels.len().max(1)))
        .iter()
        .zip(panels)
    {
        let (lo, hi) = panel
            .values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let span = if hi > lo { hi - lo } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{} [{lo:.3e}, {hi:.3e}]", panel.title),
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(40)
            .build_cartesian_2d(0..panel.cols as i32, 0..panel.rows as i32)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("iφ")
            .y_desc("iη")
            .draw()
            .map_err(|e| err(&e))?;
        let cells = panel.values.iter().enumerate().map(|(i, &v)| {
            let (r, c) = ((i / panel.cols) as i32, (i % panel.cols) as i32);
            let f = if v.is_finite() {
                ((v - lo) / span).clamp(0.0, 1.0)
            } else {
                1.0
            };
            let shade = (255.0 * (1.0 - f)) as u8;
            Rectangle::new(
                [(c, r), (c + 1, r + 1)],
                RGBColor(255 - (f * 120.0) as u8, shade, shade).filled(),
            )
        });
        chart.draw_series(cells).map_err(|e| err(&e))?;
        let frames = panel
            .outline
            .iter()
            .enumerate()
            .filter(|(_, o)| **o)
            .map(|(i, _)| {
                let (r, c) = ((i / panel.cols) as i32, (i % panel.cols) as i32);
                Rectangle::new([(c, r), (c + 1, r + 1)], BLACK.stroke_width(1))
            });
        chart.draw_series(frames).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Overlaid histograms of several samples on common bins, each with a dashed
/// line at its median (the DINAMO paper's Figures 8-10).
pub fn histograms(
    path: &Path,
    title: &str,
    x_label: &str,
    samples: &[(String, Vec<f64>)],
    bins: usize,
) -> Result<()> {
    register_font();
    let err = |e: &dyn std::fmt::Display| plot_err(path, e);
    let values = || {
        samples
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .filter(|v| v.is_finite())
    };
    let (mut lo, mut hi) = values().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let bins = bins.max(1);
    let width = (hi - lo) / bins as f64;
    let counts: Vec<Vec<f64>> = samples
        .iter()
        .map(|(_, v)| {
            let mut c = vec![0.0; bins];
            for &x in v.iter().filter(|x| x.is_finite()) {
                c[(((x - lo) / width) as usize).min(bins - 1)] += 1.0;
            }
            c
        })
        .collect();
    let top = counts.iter().flatten().fold(1.0f64, |a, &b| a.max(b)) * 1.1;
    let root = BitMapBackend::new(path, (900, 650)).into_drawing_area();
    let mut chart = axes(
        &root,
        path,
        title,
        (x_label, "datasets"),
        lo - width..hi + width,
        0.0..top,
    )?;
    for (i, ((name, v), c)) in samples.iter().zip(&counts).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(c.iter().enumerate().map(|(k, &n)| {
                let x0 = lo + k as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, n)], color.mix(0.35).filled())
            }))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], color.filled()));
        let mut sorted: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        if let Some(m) = crate::stats::quantile(&sorted, 0.5) {
            chart
                .draw_series(DashedLineSeries::new(
                    [(m, 0.0), (m, top)],
                    8,
                    5,
                    color.stroke_width(2),
                ))
                .map_err(|e| err(&e))?;
        }
    }
    legend(&mut chart, path, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A score-versus-run plot (the DINAMO paper's Figure 4): good and bad runs
/// in two colours, the threshold as a horizontal line and the end of the
/// historical regime as a vertical one.
pub fn score_vs_run(
    path: &Path,
    title: &str,
    points: &[(f64, f64, bool)],
    threshold: f64,
    boundary: Option<f64>,
) -> Result<()> {
    register_font();
    let err = |e: &dyn std::fmt::Display| plot_err(path, e);
    let finite: Vec<&(f64, f64, bool)> = points
        .iter()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, threshold, threshold);
    for p in &finite {
        (x0, x1, y0, y1) = (x0.min(p.0), x1.max(p.0), y0.min(p.1), y1.max(p.1));
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if !(y1 > y0) {
        (y0, y1) = (y0 - 1.0, y0 + 1.0);
    }
    let (px, py) = ((x1 - x0).max(1.0) * 0.02, (y1 - y0) * 0.04);
    let root = BitMapBackend::new(path, (1100, 600)).into_drawing_area();
    let mut chart = axes(
        &root,
        path,
        title,
        ("run", "score ln(chi2)"),
        x0 - px..x1 + px,
        y0 - py..y1 + py,
    )?;
    let good_color = RGBColor(90, 90, 90);
    let bad_color = RGBColor(200, 30, 30);
    for (bad, name, color) in [(false, "good", good_color), (true, "bad", bad_color)] {
        chart
            .draw_series(
                finite
                    .iter()
                    .filter(|p| p.2 == bad)
                    .map(|p| Circle::new((p.0, p.1), 2, color.filled())),
            )
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            [(x0 - px, threshold), (x1 + px, threshold)],
            BLUE.stroke_width(2),
        ))
        .map_err(|e| err(&e))?
        .label(format!("threshold {threshold:.3}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    if let Some(b) = boundary {
        chart
            .draw_series(DashedLineSeries::new(
                [(b, y0 - py), (b, y1 + py)],
                8,
                5,
                BLACK.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label("end of historical regime")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    }
    legend(&mut chart, path, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// One example run for [`reference_panels`]: the normalized run, the
/// reference with its uncertainty and the pulls, per bin.
pub struct ReferencePanel {
    pub title: String,
    pub x: Vec<f64>,
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
    pub pulls: Vec<f64>,
}

/// A grid of example runs (the DINAMO paper's Figure 6): each cell shows the
/// run over the reference ± 1σ band, and below it the per-bin pulls.
pub fn reference_panels(path: &Path, title: &str, panels: &[ReferencePanel]) -> Result<()> {
    register_font();
    let err = |e: &dyn std::fmt::Display| plot_err(path, e);
    let cols = 2;
    let rows = panels.len().div_ceil(cols).max(1);
    let root = BitMapBackend::new(path, (1200, 520 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 24))
        .map_err(|e| err(&e))?;
    for (cell, panel) in root.split_evenly((rows, cols)).iter().zip(panels) {
        let (upper, lower) = cell.split_vertically(cell.dim_in_pixel().1 * 65 / 100);
        let n = panel.x.len() as f64;
        let top = panel
            .x
            .iter()
            .chain(
                panel
                    .mu
                    .iter()
                    .zip(&panel.sigma)
                    .map(|(m, s)| m + s)
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .copied()
            .filter(|v| v.is_finite())
            .fold(1e-9f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&upper)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(20)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5..n - 0.5, 0.0..top)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .y_desc("fraction")
            .draw()
            .map_err(|e| err(&e))?;
        let band = RGBColor(120, 60, 200);
        chart
            .draw_series(
                panel
                    .mu
                    .iter()
                    .zip(&panel.sigma)
                    .enumerate()
                    .map(|(j, (m, s))| {
                        let j = j as f64;
                        Rectangle::new(
                            [(j - 0.5, (m - s).max(0.0)), (j + 0.5, m + s)],
                            band.mix(0.3).filled(),
                        )
                    }),
            )
            .map_err(|e| err(&e))?
            .label("reference ± 1σ")
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], band.mix(0.3).filled())
            });
        chart
            .draw_series(LineSeries::new(
                panel.mu.iter().enumerate().map(|(j, &m)| (j as f64, m)),
                band.stroke_width(2),
            ))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(
                panel
                    .x
                    .iter()
                    .enumerate()
                    .map(|(j, &v)| Circle::new((j as f64, v), 2, BLACK.filled())),
            )
            .map_err(|e| err(&e))?
            .label("run")
            .legend(|(x, y)| Circle::new((x + 10, y), 3, BLACK.filled()));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(|e| err(&e))?;
        let p = panel
            .pulls
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(3.0f64, |a, b| a.max(b.abs()))
            * 1.1;
        let mut pulls = ChartBuilder::on(&lower)
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5..n - 0.5, -p..p)
            .map_err(|e| err(&e))?;
        pulls
            .configure_mesh()
            .x_desc("bin")
            .y_desc("pull")
            .draw()
            .map_err(|e| err(&e))?;
        pulls
            .draw_series(
                panel
                    .pulls
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(j, &v)| {
                        let j = j as f64;
                        let color = if v.abs() > 3.0 {
                            RED
                        } else {
                            RGBColor(90, 90, 90)
                        };
                        Rectangle::new([(j - 0.4, 0.0), (j + 0.4, v)], color.filled())
                    }),
            )
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_written_as_png() {
        let dir = tempfile::tempdir().unwrap();
        let roc = dir.path().join("roc.png");
        lines(
            &roc,
            "ROC",
            "false-positive rate",
            "true-positive rate",
            &[Series {
                name: "class 0".into(),
                points: vec![(0.0, 0.0), (0.2, 0.7), (1.0, 1.0)],
            }],
            true,
        )
        .unwrap();
        let cm = dir.path().join("cm.png");
        confusion(
            &cm,
            "confusion",
            &["normal".into(), "glitch".into()],
            &[vec![5, 1], vec![2, 8]],
        )
        .unwrap();
        let hist = dir.path().join("hist.png");
        histograms(
            &hist,
            "balanced accuracy",
            "balanced accuracy",
            &[
                ("S".into(), vec![0.9, 0.92, 0.95]),
                ("ML".into(), vec![0.93, 0.96, f64::NAN]),
            ],
            10,
        )
        .unwrap();
        let score = dir.path().join("score.png");
        score_vs_run(
            &score,
            "score",
            &[(0.0, 1.0, false), (1.0, 5.0, true), (2.0, 0.5, false)],
            2.0,
            Some(1.5),
        )
        .unwrap();
        let panels = dir.path().join("panels.png");
        let panel = |t: &str| ReferencePanel {
            title: t.into(),
            x: vec![0.2, 0.5, 0.3],
            mu: vec![0.25, 0.45, 0.3],
            sigma: vec![0.02, 0.03, 0.02],
            pulls: vec![-1.0, 4.0, f64::NAN],
        };
        reference_panels(&panels, "examples", &[panel("a"), panel("b"), panel("c")]).unwrap();
        for p in [roc, cm, hist, score, panels] {
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{}", p.display());
            assert!(bytes.len() > 2000);
        }
    }
}
