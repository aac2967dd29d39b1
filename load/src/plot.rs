//! Latency-percentile plot (PNG) of one or more results, overlaid: the
//! x axis is the percentile on HdrHistogram's "number of nines" scale
//! (log10 of 1/(1-q): 0 = 0%, 1 = 90%, 2 = 99%, 3 = 99.9% ...), the y axis
//! the latency in ms. Text needs a TrueType font found at run time (Debian's
//! fonts-dejavu-core, or `SHARDGATE_LOAD_FONT`); without one the plot is
//! drawn without any text and the caller says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

use super::stats::RunResult;

/// Series colours, in order (also listed on stdout when there is no legend).
pub const COLOURS: &[(&str, RGBColor)] = &[
    ("blue", RGBColor(31, 119, 180)),
    ("orange", RGBColor(255, 127, 14)),
    ("green", RGBColor(44, 160, 44)),
    ("red", RGBColor(214, 39, 40)),
    ("purple", RGBColor(148, 103, 189)),
    ("brown", RGBColor(140, 86, 75)),
    ("pink", RGBColor(227, 119, 194)),
    ("grey", RGBColor(127, 127, 127)),
];

/// Where fonts are looked for, after `$SHARDGATE_LOAD_FONT`.
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Highest "nines" shown: 99.9999%.
const MAX_NINES: f64 = 6.0;

static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Find a TrueType font and register it with plotters as "sans-serif"
/// (once per process). Returns its path, or `None` when there is none.
pub fn load_font() -> Option<PathBuf> {
    FONT.get_or_init(|| {
        let env = std::env::var_os("SHARDGATE_LOAD_FONT").map(PathBuf::from);
        let candidates = env.into_iter().chain(FONT_PATHS.iter().map(PathBuf::from));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            // plotters keeps fonts for the whole process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Some(path);
            }
        }
        None
    })
    .clone()
}

/// Percentile label of an x position on the nines scale.
pub fn nines_label(x: f64) -> String {
    let q = 1.0 - 10f64.powf(-x);
    let pct = q * 100.0;
    if x < 0.5 {
        "0%".to_string()
    } else {
        let decimals = (x - 2.0).max(0.0).round() as usize;
        format!("{pct:.decimals$}%")
    }
}

/// x position of a quantile (the maximum, q = 1, goes to the right edge).
pub fn nines(q: f64, right_edge: f64) -> f64 {
    if q >= 1.0 {
        right_edge
    } else {
        (-(1.0 - q).log10()).clamp(0.0, right_edge)
    }
}

/// The (x, latency ms) points of a result.
pub fn series_points(r: &RunResult, right_edge: f64) -> Vec<(f64, f64)> {
    r.distribution
        .iter()
        .map(|p| (nines(p.quantile, right_edge), p.value_us / 1000.0))
        .collect()
}

/// Draw the plot onto any drawing area; `with_text` false draws no text at
/// all (no font available).
pub fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    results: &[(String, RunResult)],
    title: &str,
    with_text: bool,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("cannot draw the plot: {e}");
    area.fill(&WHITE).map_err(err)?;
    // Right edge: one nine past the deepest finite quantile, at most 6.
    let deepest = results
        .iter()
        .flat_map(|(_, r)| r.distribution.iter())
        .filter(|p| p.quantile < 1.0)
        .map(|p| -(1.0 - p.quantile).log10())
        .fold(1.0f64, f64::max);
    let right = (deepest + 0.5).ceil().clamp(1.0, MAX_NINES);
    let ymax = results
        .iter()
        .flat_map(|(_, r)| r.distribution.iter())
        .map(|p| p.value_us / 1000.0)
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.1;
    let mut chart = chart_builder(area, title, with_text)
        .build_cartesian_2d(0.0..right, 0.0..ymax)
        .map_err(err)?;
    let y_label = value_label(ymax);
    {
        let mut mesh = chart.configure_mesh();
        mesh.x_labels(right as usize + 1)
            .y_labels(10)
            .light_line_style(RGBColor(235, 235, 235));
        if with_text {
            mesh.x_desc("percentile")
                .y_desc("latency (ms)")
                .x_label_formatter(&|x| nines_label(*x))
                .y_label_formatter(&y_label)
                .label_style(("sans-serif", 14));
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw().map_err(err)?;
    }
    for (i, (label, r)) in results.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()].1;
        let series = chart
            .draw_series(LineSeries::new(
                series_points(r, right),
                colour.stroke_width(2),
            ))
            .map_err(err)?;
        if with_text {
            series.label(label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        }
    }
    if with_text {
        draw_legend(&mut chart).map_err(err)?;
    }
    area.present().map_err(err)?;
    Ok(())
}

/// The chart layout every plot of this crate uses: margins, and with text
/// the title and room for the axis labels.
pub fn chart_builder<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    with_text: bool,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(area);
    builder.margin(20).margin_right(45);
    if with_text {
        builder
            .caption(title, ("sans-serif", 24))
            .x_label_area_size(45)
            .y_label_area_size(70);
    }
    builder
}

/// Axis label of a value on an axis up to `max`: fewer decimals for
/// larger ranges.
pub fn value_label(max: f64) -> impl Fn(&f64) -> String {
    let decimals = if max >= 100.0 {
        0
    } else if max >= 1.0 {
        1
    } else {
        3
    };
    move |v: &f64| format!("{v:.decimals$}")
}

/// The series legend, upper left.
pub fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
}

/// Write a PNG of `size` to `out` with `draw` (given whether a font was
/// found, i.e. whether to draw text).
pub fn write_png(
    out: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>, bool) -> Result<(), String>,
) -> Result<Labels, String> {
    let font = load_font();
    let area = BitMapBackend::new(out, size).into_drawing_area();
    draw(&area, font.is_some()).map_err(|e| format!("{e} (writing {})", out.display()))?;
    Ok(match font {
        Some(p) => Labels::Font(p),
        None => Labels::None,
    })
}

/// What `plot_png` did about text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Labels {
    /// Drawn with the font at this path.
    Font(PathBuf),
    /// No font found: no text drawn.
    None,
}

impl Labels {
    /// The line telling the user where the plot `out` went (and, without
    /// a font, how to get text).
    pub fn note(&self, out: &Path) -> String {
        match self {
            Labels::Font(_) => format!("plot: {}", out.display()),
            Labels::None => format!(
                "plot: {} (drawn without text: no TrueType font found; install \
                 fonts-dejavu-core or set SHARDGATE_LOAD_FONT=/path/to/font.ttf)",
                out.display()
            ),
        }
    }
}

/// Write the plot of `results` to a PNG file.
pub fn plot_png(
    results: &[(String, RunResult)],
    out: &Path,
    title: &str,
    size: (u32, u32),
) -> Result<Labels, String> {
    if results.is_empty() {
        return Err("nothing to plot: give at least one result file".into());
    }
    write_png(out, size, |area, with_text| {
        draw(area, results, title, with_text)
    })
}

/// Read a result file written by `--json`.
pub fn read_result(path: &Path) -> Result<RunResult, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not a shardgate-load result file ({e}); write one with `--json FILE`",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{RunInfo, Stats};

    fn result(scale: u64) -> RunResult {
        let mut s = Stats::default();
        for i in 1..=10_000u64 {
            s.sent += 1;
            s.record_ok(i * scale);
        }
        let info = RunInfo {
            label: format!("x{scale}"),
            mode: "dns".into(),
            target: "127.0.0.1:1".into(),
            load: "closed".into(),
            rate_per_s: None,
            outstanding: Some(1),
            threads: 1,
            sources: vec![],
            duration_s: 1.0,
            warmup_s: 0.0,
            timeout_ms: 100,
        };
        RunResult::build(info, &s, 1.0)
    }

    fn count_colour(buf: &[u8], c: RGBColor) -> usize {
        buf.chunks(3).filter(|p| p == &[c.0, c.1, c.2]).count()
    }

    fn render(with_text: bool) -> Vec<u8> {
        let (w, h) = (640u32, 400u32);
        let mut buf = vec![0u8; (w * h * 3) as usize];
        {
            let area = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            let results = vec![
                ("a".to_string(), result(1000)),
                ("b".to_string(), result(3000)),
            ];
            draw(&area, &results, "t", with_text).unwrap();
        }
        buf
    }

    #[test]
    fn draws_every_series_without_a_font() {
        let buf = render(false);
        assert!(count_colour(&buf, COLOURS[0].1) > 100);
        assert!(count_colour(&buf, COLOURS[1].1) > 100);
        assert_eq!(count_colour(&buf, COLOURS[2].1), 0);
    }

    #[test]
    fn draws_labels_with_the_system_font() {
        // Needs Debian's fonts-dejavu-core (scripts/test.sh installs it).
        let font = load_font().expect("no TTF font found: apt-get install fonts-dejavu-core");
        assert!(font.exists());
        let with = render(true);
        let without = render(false);
        let dark = |b: &[u8]| b.chunks(3).filter(|p| p.iter().all(|&c| c < 80)).count();
        assert!(
            dark(&with) > dark(&without) + 500,
            "text should add dark pixels"
        );
        assert!(count_colour(&with, COLOURS[1].1) > 100);
    }

    #[test]
    fn nines_scale() {
        assert_eq!(nines(0.0, 5.0), 0.0);
        assert!((nines(0.99, 5.0) - 2.0).abs() < 1e-9);
        assert_eq!(nines(1.0, 5.0), 5.0);
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(5.0), "99.999%");
    }

    #[test]
    fn png_file_is_written_and_results_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("r.json");
        std::fs::write(&json, serde_json::to_string(&result(1000)).unwrap()).unwrap();
        let r = read_result(&json).unwrap();
        let out = dir.path().join("p.png");
        plot_png(&[("r".into(), r)], &out, "title", (800, 500)).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::write(dir.path().join("bad.json"), "{}").unwrap();
        let e = read_result(&dir.path().join("bad.json")).unwrap_err();
        assert!(e.contains("--json"), "{e}");
        assert!(plot_png(&[], &out, "t", (10, 10)).is_err());
    }
}
