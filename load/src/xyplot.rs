//! Line plot (PNG) of (x, y) series described in a JSON file: what
//! `shardgate-load plot-xy` draws, e.g. the DNS bench's latency against
//! offered rate (`scripts/bench-dns.sh --sweep`). Fonts and colours are
//! those of the percentile plot ([`super::plot`]).

use std::path::Path;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

use super::plot::{chart_builder, draw_legend, value_label, write_png, Labels, COLOURS};

/// What to draw: a JSON object of this shape.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct XyPlot {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub x_label: String,
    #[serde(default)]
    pub y_label: String,
    /// Logarithmic x axis (every x must then be > 0).
    #[serde(default)]
    pub log_x: bool,
    pub series: Vec<XySeries>,
}

/// One line.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct XySeries {
    pub label: String,
    /// (x, y) points, drawn in x order.
    pub points: Vec<(f64, f64)>,
    /// Index into [`COLOURS`] (default: the series' own position), so that
    /// related series (one server's average and p99) share a colour.
    #[serde(default)]
    pub colour: Option<usize>,
    /// Dashed instead of solid.
    #[serde(default)]
    pub dashed: bool,
}

impl XyPlot {
    /// Parse and check a description.
    pub fn from_json(text: &str) -> Result<XyPlot, String> {
        let mut p: XyPlot = serde_json::from_str(text).map_err(|e| {
            format!("not a plot description ({e}); see `shardgate-load plot-xy --help`")
        })?;
        p.check()?;
        for s in &mut p.series {
            s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Ok(p)
    }

    fn check(&self) -> Result<(), String> {
        if self.series.iter().all(|s| s.points.is_empty()) {
            return Err("nothing to plot: no series has a point".into());
        }
        for s in &self.series {
            if let Some(p) = s
                .points
                .iter()
                .find(|p| !p.0.is_finite() || !p.1.is_finite())
            {
                return Err(format!("series {:?}: point {p:?} is not finite", s.label));
            }
            if self.log_x {
                if let Some(p) = s.points.iter().find(|p| p.0 <= 0.0) {
                    return Err(format!(
                        "series {:?}: x = {} on a logarithmic axis (log_x needs x > 0)",
                        s.label, p.0
                    ));
                }
            }
        }
        Ok(())
    }

    /// (x range, y max) over every point; y starts at 0.
    fn bounds(&self) -> ((f64, f64), f64) {
        let pts = || self.series.iter().flat_map(|s| s.points.iter());
        let lo = pts().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let hi = pts().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if hi > lo {
            (lo, hi)
        } else if self.log_x {
            (lo / 2.0, hi * 2.0)
        } else {
            (lo - 1.0, hi + 1.0)
        };
        let ymax = pts().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
        ((lo, hi), ymax)
    }
}

/// Draw the plot onto any drawing area; `with_text` false draws no text.
pub fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    plot: &XyPlot,
    with_text: bool,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("cannot draw the plot: {e}");
    area.fill(&WHITE).map_err(err)?;
    let ((lo, hi), ymax) = plot.bounds();
    let mut builder = chart_builder(area, &plot.title, with_text);
    // The two axis kinds are different types: draw through one generic body.
    if plot.log_x {
        let chart = builder
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..ymax)
            .map_err(err)?;
        draw_series(chart, plot, with_text).map_err(err)?;
    } else {
        let chart = builder.build_cartesian_2d(lo..hi, 0.0..ymax).map_err(err)?;
        draw_series(chart, plot, with_text).map_err(err)?;
    }
    area.present().map_err(err)?;
    Ok(())
}

fn draw_series<'a, DB, X>(
    mut chart: ChartContext<'a, DB, Cartesian2d<X, RangedCoordf64>>,
    plot: &XyPlot,
    with_text: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let x_label = |x: &f64| {
        if x.abs() >= 1000.0 {
            format!("{}k", (x / 1000.0).round())
        } else {
            format!("{x}")
        }
    };
    let y_label = value_label(chart.y_range().end);
    {
        let mut mesh = chart.configure_mesh();
        mesh.y_labels(10).light_line_style(RGBColor(235, 235, 235));
        if with_text {
            mesh.x_desc(plot.x_label.as_str())
                .y_desc(plot.y_label.as_str())
                .x_label_formatter(&x_label)
                .y_label_formatter(&y_label)
                .label_style(("sans-serif", 14));
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw()?;
    }
    for (i, s) in plot.series.iter().enumerate() {
        let colour = COLOURS[s.colour.unwrap_or(i) % COLOURS.len()].1;
        let style = colour.stroke_width(2);
        let points = s.points.clone();
        let drawn = if s.dashed {
            chart.draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(points.clone(), style))?
        };
        if with_text {
            let dashed = s.dashed;
            drawn.label(s.label.clone()).legend(move |(x, y)| {
                let end = if dashed { x + 9 } else { x + 20 };
                PathElement::new(vec![(x, y), (end, y)], style)
            });
        }
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, colour.filled())),
        )?;
    }
    if with_text {
        draw_legend(&mut chart)?;
    }
    Ok(())
}

/// Write `plot` to a PNG file.
pub fn plot_png(plot: &XyPlot, out: &Path, size: (u32, u32)) -> Result<Labels, String> {
    write_png(out, size, |area, with_text| draw(area, plot, with_text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWEEP: &str = r#"{
        "title": "t", "x_label": "rate", "y_label": "us", "log_x": true,
        "series": [
            {"label": "a avg", "points": [[50000, 90], [10000, 80], [20000, 85]], "colour": 0},
            {"label": "a p99", "points": [[10000, 200], [50000, 400]], "colour": 0, "dashed": true},
            {"label": "b avg", "points": [[10000, 95], [50000, 110]], "colour": 1}
        ]
    }"#;

    fn count_colour(buf: &[u8], c: RGBColor) -> usize {
        buf.chunks(3).filter(|p| p == &[c.0, c.1, c.2]).count()
    }

    fn render(plot: &XyPlot) -> Vec<u8> {
        let (w, h) = (640u32, 400u32);
        let mut buf = vec![0u8; (w * h * 3) as usize];
        {
            let area = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            draw(&area, plot, false).unwrap();
        }
        buf
    }

    #[test]
    fn parses_sorts_and_draws_each_colour_group() {
        let p = XyPlot::from_json(SWEEP).unwrap();
        assert_eq!(
            p.series[0].points,
            vec![(10000.0, 80.0), (20000.0, 85.0), (50000.0, 90.0)]
        );
        let buf = render(&p);
        assert!(count_colour(&buf, COLOURS[0].1) > 100);
        assert!(count_colour(&buf, COLOURS[1].1) > 100);
        assert_eq!(count_colour(&buf, COLOURS[2].1), 0);
        let linear = XyPlot {
            log_x: false,
            ..p.clone()
        };
        assert!(count_colour(&render(&linear), COLOURS[1].1) > 100);
    }

    #[test]
    fn a_dashed_series_draws_fewer_pixels_than_a_solid_one() {
        let mut p = XyPlot::from_json(SWEEP).unwrap();
        p.series.truncate(1);
        let solid = count_colour(&render(&p), COLOURS[0].1);
        p.series[0].dashed = true;
        let dashed = count_colour(&render(&p), COLOURS[0].1);
        assert!(dashed < solid, "dashed {dashed} vs solid {solid}");
        assert!(dashed > 0);
    }

    #[test]
    fn bad_descriptions_are_refused_with_the_reason() {
        let e = XyPlot::from_json("{}").unwrap_err();
        assert!(e.contains("plot-xy --help"), "{e}");
        let e = XyPlot::from_json(r#"{"series": [{"label": "a", "points": []}]}"#).unwrap_err();
        assert!(e.contains("no series has a point"), "{e}");
        let e =
            XyPlot::from_json(r#"{"log_x": true, "series": [{"label": "a", "points": [[0, 1]]}]}"#)
                .unwrap_err();
        assert!(e.contains("log_x needs x > 0"), "{e}");
        let e = XyPlot::from_json(r#"{"series": [], "colour": 1}"#).unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn one_point_still_plots() {
        let p = XyPlot::from_json(
            r#"{"log_x": true, "series": [{"label": "a", "points": [[1000, 5]]}]}"#,
        )
        .unwrap();
        assert!(count_colour(&render(&p), COLOURS[0].1) > 10);
    }

    #[test]
    fn png_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sweep.png");
        plot_png(&XyPlot::from_json(SWEEP).unwrap(), &out, (800, 500)).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}
