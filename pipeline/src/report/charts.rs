//! Charts of the run report: lines (with dashed reference lines), grids of line panels, and
//! stacked domain weights, as PNG (plotters' bitmap backend, the DejaVu Sans font embedded so
//! that no system font is needed).

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::ReportError;

const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
const SIZE: (u32, u32) = (900, 520);

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The embedded font is valid TrueType, so this cannot fail.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// A named series of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// A dashed horizontal line in the series' colour (a reference or target).
    pub reference: Option<f64>,
}

fn bounds(series: &[Series]) -> ((f64, f64), (f64, f64)) {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1).chain(s.reference));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |a, x| {
        (a.0.min(x), a.1.max(x))
    });
    let (y0, y1) = ys
        .filter(|y| y.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |a, y| {
            (a.0.min(y), a.1.max(y))
        });
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    ((x0, x1), (y0 - pad, y1 + pad))
}

fn chart_err(path: &Path) -> impl Fn(String) -> ReportError + '_ {
    move |msg| ReportError::Chart {
        path: path.to_path_buf(),
        msg,
    }
}

/// Draws `series` as lines (with their dashed reference lines) on one chart.
fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), String> {
    let ((x0, x1), (y0, y1)) = bounds(series);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_label)
        .label_style(("sans-serif", 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        if let Some(r) = s.reference {
            let dashes = (0..40).map(|k| {
                let a = x0 + (x1 - x0) * k as f64 / 40.0;
                let b = x0 + (x1 - x0) * (k as f64 + 0.5) / 40.0;
                PathElement::new(vec![(a, r), (b, r)], color.mix(0.8).stroke_width(1))
            });
            chart.draw_series(dashes).map_err(|e| e.to_string())?;
        }
    }
    if series.len() > 1 {
        legend(&mut chart)?;
    }
    Ok(())
}

/// The series legend, upper right, on a light box (every chart draws it the same way).
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())
}

/// One chart of lines, saved as PNG.
pub fn line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), ReportError> {
    register_font();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| chart_err(path)(e.to_string()))?;
    draw_lines(&root, title, y_label, series).map_err(chart_err(path))?;
    root.present().map_err(|e| chart_err(path)(e.to_string()))
}

/// Panels of line charts in a grid (`cols` wide), one PNG.
pub fn grid_chart(
    path: &Path,
    title: &str,
    panels: &[(String, String, Vec<Series>)],
    cols: usize,
) -> Result<(), ReportError> {
    register_font();
    let rows = panels.len().div_ceil(cols);
    let root = BitMapBackend::new(path, (SIZE.0, 300 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| chart_err(path)(e.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| chart_err(path)(e.to_string()))?;
    for (area, (t, y, s)) in root.split_evenly((rows, cols)).iter().zip(panels) {
        draw_lines(area, t, y, s).map_err(chart_err(path))?;
    }
    root.present().map_err(|e| chart_err(path)(e.to_string()))
}

/// Domain weights over steps, stacked (each band is a domain's share).
pub fn stacked_chart(
    path: &Path,
    title: &str,
    domains: &[String],
    steps: &[f64],
    weights: &[Vec<f64>],
) -> Result<(), ReportError> {
    register_font();
    let err = chart_err(path);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (x0, x1) = (
        steps.first().copied().unwrap_or(0.0),
        steps.last().copied().unwrap_or(1.0),
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), 0.0..1.0)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("share of sequences")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    // Draw the cumulative bands from the top down so each domain's band stays visible.
    for d in (0..domains.len()).rev() {
        let color = Palette99::pick(d).to_rgba();
        let top: Vec<(f64, f64)> = steps
            .iter()
            .zip(weights)
            .map(|(s, w)| (*s, w[..=d].iter().sum::<f64>().min(1.0)))
            .collect();
        chart
            .draw_series(AreaSeries::new(top, 0.0, color.mix(0.85)).border_style(color))
            .map_err(|e| err(e.to_string()))?
            .label(domains[d].clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    legend(&mut chart).map_err(&err)?;
    root.present().map_err(|e| err(e.to_string()))
}

/// A series with its spread over seeds: (x, mean, min, max) per point.
pub struct Band {
    pub name: String,
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// Mean lines with their min–max bands shaded in the series' colour, saved as PNG.
pub fn band_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    bands: &[Band],
) -> Result<(), ReportError> {
    register_font();
    let err = chart_err(path);
    let lines: Vec<Series> = bands
        .iter()
        .flat_map(|b| {
            [
                Series {
                    name: b.name.clone(),
                    points: b.points.iter().map(|p| (p.0, p.2)).collect(),
                    reference: None,
                },
                Series {
                    name: b.name.clone(),
                    points: b.points.iter().map(|p| (p.0, p.3)).collect(),
                    reference: None,
                },
            ]
        })
        .collect();
    let ((x0, x1), (y0, y1)) = bounds(&lines);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_label)
        .label_style(("sans-serif", 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, b) in bands.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // The band: the upper edge forward, the lower edge back.
        let outline: Vec<(f64, f64)> = b
            .points
            .iter()
            .map(|p| (p.0, p.3))
            .chain(b.points.iter().rev().map(|p| (p.0, p.2)))
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(
                outline,
                color.mix(0.2).filled(),
            )))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(
                b.points.iter().map(|p| (p.0, p.1)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?
            .label(b.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart).map_err(&err)?;
    root.present().map_err(|e| err(e.to_string()))
}

/// One group of error bars: (mean, min, max) per category.
pub struct Bars {
    pub name: String,
    pub values: Vec<(f64, f64, f64)>,
}

/// Per category (x axis) one marker per group at its mean with a min–max whisker, the groups
/// side by side, saved as PNG.
pub fn error_bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    categories: &[String],
    groups: &[Bars],
) -> Result<(), ReportError> {
    register_font();
    let err = chart_err(path);
    let ys = groups
        .iter()
        .flat_map(|g| g.values.iter().flat_map(|v| [v.1, v.2]))
        .filter(|y| y.is_finite());
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |a, y| {
        (a.0.min(y), a.1.max(y))
    });
    let pad = ((y1 - y0) * 0.1).max(1e-3);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let n = categories.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, (y0 - pad)..(y1 + pad))
        .map_err(|e| err(e.to_string()))?;
    let label = |x: &f64| {
        let i = x.round();
        match (i - x).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            true => categories[i as usize].clone(),
            false => String::new(),
        }
    };
    chart
        .configure_mesh()
        .x_labels(n.max(1))
        .x_label_formatter(&label)
        .y_desc(y_label)
        .label_style(("sans-serif", 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let k = groups.len().max(1) as f64;
    for (g, group) in groups.iter().enumerate() {
        let color = Palette99::pick(g).to_rgba();
        let offset = (g as f64 - (k - 1.0) / 2.0) * 0.6 / k;
        let bars = group.values.iter().enumerate().map(move |(i, v)| {
            ErrorBar::new_vertical(i as f64 + offset, v.1, v.0, v.2, color.stroke_width(2), 10)
        });
        chart
            .draw_series(bars)
            .map_err(|e| err(e.to_string()))?
            .label(group.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    legend(&mut chart).map_err(&err)?;
    root.present().map_err(|e| err(e.to_string()))
}
