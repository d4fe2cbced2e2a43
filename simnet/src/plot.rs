//! SVG plots of one run's distributions and time series, drawn with `plotters`.
//!
//! Only the SVG backend is built and no font crate: the SVG backend writes text as `<text>`
//! elements that the viewer renders, and plotters' built-in estimate of text size is enough for
//! layout, so plots render the same on a machine without any fonts installed.
//!
//! A plot whose data is empty is skipped, so the list [`write_all`] returns names exactly the files
//! that exist. Times on x axes are seconds since the run (or the publication) started.

use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::{Report, Series};

/// Width of every plot, pixels.
const WIDTH: u32 = 900;
/// Height of one panel, pixels.
const PANEL_HEIGHT: u32 = 460;
/// Most points drawn per line: more add bytes, not information, at this width.
const MAX_POINTS: usize = 1500;
/// Line and bar colour (matplotlib's default blue, familiar to readers).
const COLOUR: RGBColor = RGBColor(31, 119, 180);

/// Why plots could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The output directory could not be created.
    #[error("creating plot directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Drawing or writing one plot failed.
    #[error("drawing {file}: {message}")]
    Draw {
        /// The plot's file name.
        file: String,
        /// What plotters reported.
        message: String,
    },
}

/// What a panel shows.
enum Data {
    /// A line through `(x, y)` points.
    Line(Vec<(f64, f64)>),
    /// Bars `(x from, x to, height)`.
    Bars(Vec<(f64, f64, f64)>),
}

/// One chart: a title, labelled axes and its data.
struct Panel {
    title: String,
    x_desc: &'static str,
    y_desc: &'static str,
    data: Data,
    x: Range<f64>,
    y: Range<f64>,
}

impl Panel {
    /// A line chart; `y` fixes the y range (shares), otherwise it runs from 0 to above the data.
    fn line(
        title: impl Into<String>,
        x_desc: &'static str,
        y_desc: &'static str,
        points: Vec<(f64, f64)>,
        y: Option<Range<f64>>,
    ) -> Self {
        let points = thin(points.into_iter().filter(|(x, y)| x.is_finite() && y.is_finite()).collect());
        let x = span(points.iter().map(|p| p.0), false);
        let y = y.unwrap_or_else(|| span(points.iter().map(|p| p.1), true));
        let mut title = title.into();
        if points.is_empty() {
            title.push_str(" (no samples)");
        }
        Self { title, x_desc, y_desc, data: Data::Line(points), x, y }
    }

    /// A cumulative distribution of `samples` scaled by `scale`.
    fn cdf(title: impl Into<String>, x_desc: &'static str, samples: &[f64], scale: f64) -> Self {
        let mut s: Vec<f64> = samples.iter().map(|v| v * scale).filter(|v| v.is_finite()).collect();
        s.sort_by(f64::total_cmp);
        let n = s.len() as f64;
        let mut points: Vec<(f64, f64)> =
            s.iter().enumerate().map(|(i, &v)| (v, (i + 1) as f64 / n)).collect();
        if let Some(&first) = s.first() {
            points.insert(0, (first, 0.0));
        }
        Self::line(title, x_desc, "share of samples ≤ x", points, Some(0.0..1.0))
    }

    /// A histogram of `values` in `bins` equal bins over `lo..hi` (values outside go to the ends).
    fn histogram(title: &str, x_desc: &'static str, values: &[f64], lo: f64, hi: f64, bins: usize) -> Self {
        let bins = bins.max(1);
        let width = (hi - lo) / bins as f64;
        let mut counts = vec![0_usize; bins];
        for v in values.iter().filter(|v| v.is_finite()) {
            let i = ((v - lo) / width).floor().clamp(0.0, (bins - 1) as f64) as usize;
            if let Some(c) = counts.get_mut(i) {
                *c += 1;
            }
        }
        let bars: Vec<(f64, f64, f64)> = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| (lo + i as f64 * width, lo + (i + 1) as f64 * width, c as f64))
            .collect();
        let y = span(bars.iter().map(|b| b.2), true);
        Self { title: title.to_string(), x_desc, y_desc: "lookups", data: Data::Bars(bars), x: lo..hi, y }
    }
}

/// A range covering `values` with a little room, `0..1` when there are none; `from_zero` starts it
/// at 0 (counts, sizes).
fn span(values: impl Iterator<Item = f64>, from_zero: bool) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let lo = if from_zero { lo.min(0.0) } else { lo };
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        return (lo - 0.5 * lo.abs().max(1.0))..(hi + 0.5 * hi.abs().max(1.0));
    }
    let pad = if from_zero { (hi - lo) * 0.08 } else { 0.0 };
    lo..hi + pad
}

/// At most [`MAX_POINTS`] of `points`, evenly spaced, keeping the first and last.
fn thin(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points;
    }
    let last = points.len() - 1;
    (0..MAX_POINTS).filter_map(|k| points.get(k * last / (MAX_POINTS - 1)).copied()).collect()
}

/// `series` with its time in seconds.
fn secs(series: &Series) -> Vec<(f64, f64)> {
    series.iter().map(|&(t, v)| (t / 1000.0, v)).collect()
}

/// Draws `panel` into `area`.
fn draw(area: &DrawingArea<SVGBackend<'_>, Shift>, panel: &Panel) -> Result<(), String> {
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(panel.x.clone(), panel.y.clone())
        .map_err(|e| e.to_string())?;
    let whole = |v: &f64| format!("{v:.0}");
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(panel.x_desc).y_desc(panel.y_desc).axis_desc_style(("sans-serif", 16));
    if matches!(panel.data, Data::Bars(_)) {
        // Bar heights are counts.
        mesh.y_label_formatter(&whole);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    match &panel.data {
        Data::Line(points) => {
            chart
                .draw_series(LineSeries::new(points.iter().copied(), COLOUR.stroke_width(2)))
                .map_err(|e| e.to_string())?;
        }
        Data::Bars(bars) => {
            let fill = COLOUR.mix(0.75).filled();
            chart
                .draw_series(bars.iter().map(|&(x0, x1, h)| {
                    // A small gap keeps neighbouring bars apart.
                    let gap = (x1 - x0) * 0.06;
                    Rectangle::new([(x0 + gap, 0.0), (x1 - gap, h)], fill)
                }))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Writes `panels`, stacked, to `dir/file`.
fn write(dir: &Path, file: &str, panels: &[Panel]) -> Result<String, PlotError> {
    let fail = |message: String| PlotError::Draw { file: file.to_string(), message };
    let path = dir.join(file);
    let rows = u32::try_from(panels.len().max(1)).map_err(|e| fail(e.to_string()))?;
    let root = SVGBackend::new(&path, (WIDTH, PANEL_HEIGHT * rows)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    for (area, panel) in root.split_evenly((panels.len().max(1), 1)).iter().zip(panels) {
        draw(area, panel).map_err(fail)?;
    }
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(file.to_string())
}

/// Writes every plot `report` has data for into `dir` (created if missing) and returns their file
/// names, relative to `dir`, in a fixed order.
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<String>, PlotError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| PlotError::CreateDir { path: dir.to_path_buf(), source })?;
    let mut plots: Vec<(&str, Vec<Panel>)> = Vec::new();
    let share = Some(0.0..1.0);

    let join = &report.join;
    if !join.times_ms.is_empty() {
        let title = format!("Join time CDF ({} of {} nodes joined)", join.joined, join.started);
        plots.push(("join.svg", vec![Panel::cdf(title, "join time (s)", &join.times_ms, 1e-3)]));
    }
    if !report.routing.healthy_over_time.is_empty() {
        let points = secs(&report.routing.healthy_over_time);
        let panel = Panel::line(
            "Routing tables holding their 20 closest",
            "time (s)",
            "healthy share",
            points,
            share.clone(),
        );
        plots.push(("routing.svg", vec![panel]));
    }

    let lookups = &report.lookup.samples;
    if !lookups.is_empty() {
        // Hops are small integers: one bin per value.
        let hops: Vec<f64> = lookups.iter().filter_map(|s| s.hops).map(f64::from).collect();
        let hi = hops.iter().copied().fold(0.0, f64::max) + 1.0;
        let unreached = lookups.len() - hops.len();
        let title = format!(
            "Lookup hops to the key's closest peer ({} replayed, {unreached} never reached it)",
            lookups.len()
        );
        let panel = Panel::histogram(&title, "hops", &hops, -0.5, hi - 0.5, hi as usize);
        plots.push(("lookup_hops.svg", vec![panel]));
        // Recall is k/20: 21 bins centred on those values.
        let recall: Vec<f64> = lookups.iter().map(|s| s.recall).collect();
        let title = format!("Lookup recall of the true 20 closest ({} lookups)", lookups.len());
        let panel = Panel::histogram(&title, "recall", &recall, -0.025, 1.025, 21);
        plots.push(("lookup_recall.svg", vec![panel]));
    }

    let gossip = &report.gossip;
    if !gossip.coverage_over_time.is_empty() {
        let points = secs(&gossip.coverage_over_time);
        let title = "Attestation record coverage after publication";
        let panel =
            Panel::line(title, "time since publication (s)", "share delivered", points, share.clone());
        plots.push(("gossip_coverage.svg", vec![panel]));
    }
    if !gossip.latency_samples.is_empty() {
        let panel = Panel::cdf("Gossip delivery latency CDF", "latency (ms)", &gossip.latency_samples, 1.0);
        plots.push(("gossip_latency.svg", vec![panel]));
    }

    let requests = &report.requests;
    if !requests.ttft_samples.is_empty() {
        let panel = Panel::cdf("Time to first token CDF", "TTFT (ms)", &requests.ttft_samples, 1.0);
        plots.push(("requests.svg", vec![panel]));
    }
    if !requests.success_over_time.is_empty() {
        let points = secs(&requests.success_over_time);
        let title = "Request success rate per 10 s window";
        let panel = Panel::line(title, "window end (s)", "success rate", points, share.clone());
        plots.push(("success.svg", vec![panel]));
    }

    let res = &report.resources;
    if !res.rss_mib.is_empty() || !res.cpu_cores.is_empty() {
        let rss = Panel::line("Resident memory", "time (s)", "RSS (MiB)", secs(&res.rss_mib), None);
        let cpu = Panel::line("CPU use", "time (s)", "cores busy", secs(&res.cpu_cores), None);
        plots.push(("resources.svg", vec![rss, cpu]));
    }
    if let Some(churn) = report.churn.as_ref().filter(|c| !c.live_over_time.is_empty()) {
        let title = format!("Live nodes ({} departures, {} returns)", churn.departures, churn.returns);
        let panel = Panel::line(title, "time (s)", "live nodes", secs(&churn.live_over_time), None);
        plots.push(("churn.svg", vec![panel]));
    }

    if let Some(twin) = report.strangers.as_ref().and_then(|s| s.twin.as_ref()) {
        let attacked =
            Panel::cdf("Honest TTFT CDF, with the attackers", "TTFT (ms)", &requests.ttft_samples, 1.0);
        let calm = Panel::cdf("Honest TTFT CDF, attack-free twin", "TTFT (ms)", &twin.ttft_samples, 1.0);
        plots.push(("strangers_ttft.svg", vec![attacked, calm]));
    }

    plots.iter().map(|(file, panels)| write(dir, file, panels)).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::report::{ChurnStats, LookupSample};

    fn synthetic() -> Report {
        let mut r = Report::default();
        let ramp = |n: usize, f: fn(f64) -> f64| -> Series {
            (0..n).map(|i| (i as f64 * 1000.0, f(i as f64 / n as f64))).collect()
        };
        r.join.started = 50;
        r.join.joined = 49;
        r.join.times_ms = (0..49).map(|i| 200.0 + 37.0 * i as f64).collect();
        r.routing.healthy_over_time = ramp(30, |t| t.sqrt());
        r.lookup.samples = (0..40)
            .map(|i| LookupSample {
                recall: f64::from(20 - i % 3) / 20.0,
                requests: 30 + i,
                rounds: 2.0 + f64::from(i % 7) * 0.4,
                latency_ms: 100.0 + f64::from(i),
                hops: (i % 5 != 0).then_some(1 + i % 3),
                replay_rounds: 6 + i % 4,
            })
            .collect();
        r.gossip.coverage_over_time = ramp(20, |t| 1.0 - (-5.0 * t).exp());
        r.gossip.latency_samples = (0..5000).map(|i| f64::from(i % 997)).collect();
        r.requests.ttft_samples = vec![120.0, 80.0, 300.0, f64::NAN, 95.0];
        r.requests.success_over_time = ramp(6, |_| 0.97);
        r.resources.rss_mib = ramp(10, |t| 200.0 + 100.0 * t);
        r.resources.cpu_cores = Vec::new();
        r.churn =
            Some(ChurnStats { departures: 5, returns: 4, live_over_time: ramp(12, |t| 50.0 - 5.0 * t) });
        r
    }

    #[test]
    fn writes_every_plot_with_text() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plots");
        let files = write_all(&synthetic(), &out).unwrap();
        let expected = [
            "join.svg",
            "routing.svg",
            "lookup_hops.svg",
            "lookup_recall.svg",
            "gossip_coverage.svg",
            "gossip_latency.svg",
            "requests.svg",
            "success.svg",
            "resources.svg",
            "churn.svg",
        ];
        assert_eq!(files, expected);
        for file in &files {
            let text = std::fs::read_to_string(out.join(file)).unwrap();
            assert!(!text.is_empty(), "{file} is empty");
            assert!(text.contains("<svg"), "{file} is not SVG");
            // Titles and axis labels are real text, with no font installed.
            assert!(text.contains("<text"), "{file} has no text");
            assert!(
                text.contains("(s)")
                    || text.contains("(ms)")
                    || text.contains("hops")
                    || text.contains("recall")
            );
        }
        let join = std::fs::read_to_string(out.join("join.svg")).unwrap();
        assert!(join.contains("Join time CDF (49 of 50 nodes joined)"), "{join}");
        assert!(join.contains("join time (s)"));
        let resources = std::fs::read_to_string(out.join("resources.svg")).unwrap();
        assert!(resources.contains("CPU use (no samples)"));
    }

    #[test]
    fn empty_report_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_all(&Report::default(), dir.path()).unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn ranges_are_never_empty() {
        assert_eq!(span(std::iter::empty(), true), 0.0..1.0);
        let r = span([3.0, 3.0].into_iter(), false);
        assert!(r.start < 3.0 && r.end > 3.0);
        assert_eq!(thin((0..10_000).map(|i| (f64::from(i), 0.0)).collect()).len(), MAX_POINTS);
    }
}
