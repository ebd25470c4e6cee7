//! PNG line charts for benchmark results (plotters, with a font loaded at run time so the
//! build needs no system libraries).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// Where the chart font is read from (Debian's fonts-dejavu-core).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the chart font once; false if it cannot be read (then no chart is drawn).
pub fn init_font() -> bool {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOADED.get_or_init(|| match std::fs::read(FONT) {
        Ok(bytes) => register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .is_ok(),
        Err(e) => {
            eprintln!("no chart font at {FONT} ({e}); install fonts-dejavu-core for plots");
            false
        }
    })
}

/// One named series of (x, y) points.
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
    /// Draw points instead of a line.
    pub scatter: bool,
}

/// Axes and labels of a chart.
pub struct Chart<'a> {
    /// Title above the chart.
    pub title: &'a str,
    /// X axis label.
    pub x_label: &'a str,
    /// Y axis label.
    pub y_label: &'a str,
    /// Logarithmic y axis (from 1).
    pub log_y: bool,
}

/// Draws `series` into a PNG at `path`. With `log_y`, values are drawn on a log10 scale
/// (values below 1 are drawn at 1).
pub fn line_chart(path: &Path, c: &Chart<'_>, series: &[Series]) -> Result<(), String> {
    if !init_font() {
        return Err("no font".into());
    }
    let scale = |y: f64| if c.log_y { y.max(1.0).log10() } else { y };
    let series: Vec<Series> = series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            points: s.points.iter().map(|&(x, y)| (x, scale(y))).collect(),
            scatter: s.scatter,
        })
        .collect();
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (0f64, 0f64);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let (x_max, y_max) = (x_max.max(1e-9) * 1.02, y_max.max(1e-9) * 1.1);
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(c.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    let log_y = c.log_y;
    let y_label = move |v: &f64| {
        if log_y {
            format!("{:.0}", 10f64.powf(*v))
        } else {
            format!("{v:.0}")
        }
    };
    chart
        .configure_mesh()
        .x_desc(c.x_label)
        .y_desc(c.y_label)
        .y_label_formatter(&y_label)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, s) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let drawn = if s.scatter {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 2, color.filled())))
        } else {
            chart.draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
        };
        drawn
            .map_err(|e| e.to_string())?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
