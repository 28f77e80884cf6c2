//! PNG plots of stage results (plotters, bitmap backend). Text uses the font
//! bundled in `stages/assets/` so plots look the same on every machine and no
//! system font library is needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::api::{Result, StageError};

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSansMono.ttf");
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .unwrap_or_else(|_| panic!("the bundled font is a valid TTF"));
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> StageError {
    StageError::Data(format!("cannot draw {}: {e}", path.display()))
}

/// One named line of a line plot.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
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
    let all = || series.iter().flat_map(|s| s.points.iter());
    let finite = |v: f64| if v.is_finite() { Some(v) } else { None };
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all() {
        if let (Some(x), Some(y)) = (finite(x), finite(y)) {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = |lo: f64, hi: f64| if hi > lo { (hi - lo) * 0.02 } else { 0.5 };
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    let root = BitMapBackend::new(path, (900, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0 - px..x1 + px, y0 - py..y1 + py)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| err(&e))?;
    if diagonal {
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                BLACK.mix(0.3).stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
    }
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(&e))?;
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
        for p in [roc, cm] {
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{}", p.display());
            assert!(bytes.len() > 2000);
        }
    }
}
