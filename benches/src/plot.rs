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

/// One series of a bar chart: per group, (min, median, max), or `None` for no bar.
pub struct Bars {
    /// Legend label.
    pub label: String,
    /// Per group: min, median and max.
    pub values: Vec<Option<(f64, f64, f64)>>,
}

/// Draws grouped bars (one group per name in `groups`, one bar per series) on a log10 y
/// axis, each bar at its median with a whisker from min to max, into a PNG at `path`.
pub fn bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[Bars],
) -> Result<(), String> {
    if !init_font() {
        return Err("no font".into());
    }
    let all = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .flat_map(|&(lo, mid, hi)| [lo, mid, hi])
        .filter(|v| *v > 0.0);
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return Err("nothing to draw".into());
    }
    let (y_lo, y_hi) = (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil()),
    );
    let root = BitMapBackend::new(path, (1200, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (plot_area, label_area) = root.split_vertically(580);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..groups.len() as f64, (y_lo..y_hi).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_label)
        .y_label_formatter(&|v| format!("{v}"))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    let colors = [
        BLUE,
        RED,
        GREEN,
        MAGENTA,
        CYAN,
        RGBColor(230, 140, 0),
        RGBColor(120, 80, 40),
        BLACK,
        RGBColor(128, 128, 128),
    ];
    let width = 0.8 / series.len().max(1) as f64;
    for (i, s) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let bars = s.values.iter().enumerate().filter_map(|(g, v)| {
            let (_, mid, _) = (*v)?;
            let x0 = g as f64 + 0.1 + i as f64 * width;
            Some(Rectangle::new(
                [(x0, y_lo), (x0 + width * 0.9, mid.max(y_lo))],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)
            .map_err(|e| e.to_string())?
            .label(s.label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        let whiskers = s.values.iter().enumerate().filter_map(|(g, v)| {
            let (min, _, max) = (*v)?;
            let x = g as f64 + 0.1 + (i as f64 + 0.45) * width;
            Some(PathElement::new(
                vec![(x, min.max(y_lo)), (x, max.max(y_lo))],
                BLACK.stroke_width(1),
            ))
        });
        chart.draw_series(whiskers).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    for (g, name) in groups.iter().enumerate() {
        let (x, _) = chart.backend_coord(&(g as f64 + 0.5, y_lo));
        label_area
            .draw(&Text::new(
                name.clone(),
                (x - 4 * name.len() as i32, 4),
                ("sans-serif", 15),
            ))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
