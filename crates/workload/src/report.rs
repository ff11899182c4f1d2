//! The `--report` file: one self-contained HTML page (no scripts, no external files)
//! with the summary, a latency histogram, completions over time, and every failure and
//! wrong answer. The charts are SVG drawn with plotters and inlined, so the page can be
//! mailed or attached to an issue as is.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::{Summary, WorkloadError};

/// Chart size in pixels.
const CHART_SIZE: (u32, u32) = (900, 360);
/// Most bins in the latency histogram.
const MAX_BINS: usize = 40;

/// Writes the HTML report of `summary` to `path`.
pub fn write_html(path: &Path, summary: &Summary) -> Result<(), WorkloadError> {
    let html = html(summary)?;
    std::fs::write(path, html).map_err(|source| WorkloadError::WriteReport {
        path: path.to_owned(),
        source,
    })
}

/// The HTML report of `summary`.
pub fn html(summary: &Summary) -> Result<String, WorkloadError> {
    let histogram = latency_histogram_svg(summary)?;
    let timeline = completions_svg(summary)?;
    let mut h = String::new();
    // Writing to a String cannot fail.
    let _ = write_page(&mut h, summary, &histogram, &timeline);
    Ok(h)
}

fn write_page(h: &mut String, s: &Summary, histogram: &str, timeline: &str) -> std::fmt::Result {
    writeln!(h, "<!DOCTYPE html>")?;
    writeln!(h, "<html lang=\"en\">")?;
    writeln!(h, "<head>")?;
    writeln!(h, "<meta charset=\"utf-8\">")?;
    writeln!(h, "<title>iras workload report</title>")?;
    writeln!(
        h,
        "<style>body{{font-family:sans-serif;margin:2em;max-width:960px}}\
         table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}\
         td.n{{text-align:right}}</style>"
    )?;
    writeln!(h, "</head>")?;
    writeln!(h, "<body>")?;
    writeln!(h, "<h1>Workload against {}</h1>", escape(&s.url))?;

    writeln!(h, "<h2>Summary</h2>")?;
    writeln!(h, "<table>")?;
    let mut row = |name: &str, value: String| {
        writeln!(
            h,
            "<tr><th>{name}</th><td class=\"n\">{}</td></tr>",
            escape(&value)
        )
    };
    row("planned", s.planned.to_string())?;
    row("sent", s.sent.to_string())?;
    row("answered", s.answered.to_string())?;
    row("failed", s.failed.to_string())?;
    for (kind, count) in &s.errors {
        row(&format!("&nbsp;&nbsp;{}", escape(kind)), count.to_string())?;
    }
    row("retries", s.retries.to_string())?;
    row("elapsed", format!("{:.2} s", s.elapsed_secs))?;
    row(
        "throughput",
        format!("{:.2} answers/s", s.throughput_per_sec),
    )?;
    if let Some(l) = &s.latency_ms {
        for (name, v) in [
            ("latency min", l.min),
            ("latency mean", l.mean),
            ("latency p50", l.p50),
            ("latency p90", l.p90),
            ("latency p99", l.p99),
            ("latency max", l.max),
        ] {
            row(name, format!("{v:.1} ms"))?;
        }
    }
    if let Some(a) = &s.accuracy {
        row(
            "accuracy",
            format!("{}/{} ({:.1} %)", a.correct, a.scored, a.fraction * 100.0),
        )?;
        row("without expected label", a.unscored.to_string())?;
    }
    writeln!(h, "</table>")?;

    writeln!(h, "<h2>Latency of answered requests</h2>")?;
    writeln!(h, "{histogram}")?;
    writeln!(h, "<h2>Completions over time</h2>")?;
    writeln!(h, "{timeline}")?;

    if !s.failures.is_empty() {
        writeln!(h, "<h2>Failures ({})</h2>", s.failures.len())?;
        writeln!(
            h,
            "<table>\n<tr><th>#</th><th>image</th><th>kind</th><th>attempts</th><th>after</th><th>detail</th></tr>"
        )?;
        for f in &s.failures {
            writeln!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1} ms</td><td>{}</td></tr>",
                f.seq,
                escape(&f.name),
                escape(&f.kind.to_string()),
                f.attempts,
                f.latency_ms,
                escape(&f.detail)
            )?;
        }
        writeln!(h, "</table>")?;
    }
    if let Some(a) = s.accuracy.as_ref().filter(|a| !a.wrong.is_empty()) {
        writeln!(h, "<h2>Wrong answers ({})</h2>", a.wrong.len())?;
        writeln!(
            h,
            "<table>\n<tr><th>#</th><th>image</th><th>expected</th><th>answered</th></tr>"
        )?;
        for w in &a.wrong {
            writeln!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                w.seq,
                escape(&w.name),
                escape(&w.expected),
                escape(&w.got)
            )?;
        }
        writeln!(h, "</table>")?;
    }
    writeln!(h, "</body>")?;
    writeln!(h, "</html>")
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bins `values` (non-negative) into at most `max_bins` equal bins from 0 to the largest
/// value: returns the bin width and the counts.
pub fn histogram(values: &[f64], max_bins: usize) -> (f64, Vec<u64>) {
    let max = values.iter().copied().fold(0.0, f64::max);
    let bins = values.len().clamp(1, max_bins.max(1));
    let width = if max > 0.0 { max / bins as f64 } else { 1.0 };
    let mut counts = vec![0; bins];
    for &v in values {
        // The largest value lands in the last bin, not one past it.
        let i = ((v / width) as usize).min(bins - 1);
        counts[i] += 1;
    }
    (width, counts)
}

/// An SVG string from a drawing closure, with any XML prolog removed so it can be inlined.
fn svg(
    chart: &'static str,
    draw: impl FnOnce(
        &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    ) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<String, WorkloadError> {
    let plot = |e: &dyn std::fmt::Display| WorkloadError::Plot {
        chart,
        message: e.to_string(),
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot(&e))?;
        draw(&root).map_err(|e| plot(&e))?;
        root.present().map_err(|e| plot(&e))?;
    }
    let start = out.find("<svg").unwrap_or(0);
    Ok(out[start..].to_owned())
}

fn latency_histogram_svg(s: &Summary) -> Result<String, WorkloadError> {
    let latencies: Vec<f64> = s
        .records
        .iter()
        .filter(|r| r.outcome.is_ok())
        .map(|r| r.latency.as_secs_f64() * 1000.0)
        .collect();
    let (width, counts) = histogram(&latencies, MAX_BINS);
    let x_max = width * counts.len() as f64;
    let y_max = counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    svg("latency histogram", |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{} answered requests", latencies.len()),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms)")
            .y_desc("requests")
            .axis_desc_style(("sans-serif", 14))
            .label_style(("sans-serif", 12))
            .draw()?;
        chart.draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, &c)| {
                    let x0 = i as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], BLUE.mix(0.6).filled())
                }),
        )?;
        Ok(())
    })
}

fn completions_svg(s: &Summary) -> Result<String, WorkloadError> {
    let mut done: Vec<(f64, bool)> = s
        .records
        .iter()
        .map(|r| (r.completed().as_secs_f64(), r.outcome.is_ok()))
        .collect();
    done.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Cumulative counts as steps, starting from zero at time zero.
    let (mut answered, mut failed) = (vec![(0.0, 0.0)], vec![(0.0, 0.0)]);
    let (mut a, mut f) = (0.0_f64, 0.0_f64);
    for &(t, ok) in &done {
        let (series, count) = if ok {
            (&mut answered, &mut a)
        } else {
            (&mut failed, &mut f)
        };
        series.push((t, *count));
        *count += 1.0;
        series.push((t, *count));
    }
    let t_max = done
        .last()
        .map_or(0.0, |d| d.0)
        .max(s.elapsed_secs)
        .max(0.001);
    answered.push((t_max, a));
    failed.push((t_max, f));
    let y_max = a.max(f).max(1.0) * 1.1;
    svg("completions", |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("completed requests (cumulative)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("time since start (s)")
            .y_desc("requests")
            .axis_desc_style(("sans-serif", 14))
            .label_style(("sans-serif", 12))
            .draw()?;
        chart
            .draw_series(LineSeries::new(answered, GREEN.stroke_width(2)))?
            .label("answered")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(failed, RED.stroke_width(2)))?
            .label("failed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FailureClass, Record, RequestFailure};
    use std::time::Duration;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn histogram_bins_cover_the_range() {
        let (w, c) = histogram(&[0.0, 1.0, 2.0, 4.0], 2);
        assert_eq!((w, c), (2.0, vec![2, 2]));
        let (w, c) = histogram(&[], 40);
        assert_eq!((w, c.len(), c.iter().sum::<u64>()), (1.0, 1, 0));
        let (_, c) = histogram(&[5.0; 3], 40);
        assert_eq!(c, vec![0, 0, 3]);
    }

    #[test]
    fn report_of_an_empty_and_a_mixed_run_renders() {
        let empty = Summary::new("http://h/", 1, Vec::new(), Duration::ZERO, None);
        let page = html(&empty).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches("<svg").count(), 2);

        let records = vec![
            Record {
                seq: 0,
                name: "<b>.png".to_owned(),
                issued: Duration::ZERO,
                latency: Duration::from_millis(120),
                attempts: 1,
                outcome: Ok("cat".to_owned()),
            },
            Record {
                seq: 1,
                name: "b.png".to_owned(),
                issued: Duration::from_millis(10),
                latency: Duration::from_millis(5),
                attempts: 2,
                outcome: Err(RequestFailure {
                    kind: FailureClass::Status(503),
                    detail: "busy & <full>".to_owned(),
                }),
            },
        ];
        let expected: crate::Expected =
            [("<b>".to_owned(), "dog".to_owned())].into_iter().collect();
        let s = Summary::new(
            "http://h/?a&b",
            2,
            records,
            Duration::from_millis(130),
            Some(&expected),
        );
        let page = html(&s).unwrap();
        assert!(page.contains("&lt;b&gt;.png"));
        assert!(page.contains("busy &amp; &lt;full&gt;"));
        assert!(!page.contains("<b>"));
        assert!(page.trim_end().ends_with("</html>"));
    }
}
