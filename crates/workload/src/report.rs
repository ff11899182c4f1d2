//! The `--report` file: one self-contained HTML page (no scripts, no external files)
//! with the summary, a latency histogram, completions over time, and every failure and
//! wrong answer. The charts are SVG drawn with plotters and inlined, so the page can be
//! mailed or attached to an issue as is.
//!
//! The page is a maud template: compiled with the crate, and every value spliced into it
//! (the URL, file names, labels, failure details, all of which come from users or
//! servers) is HTML-escaped unless wrapped in `PreEscaped`, which only the SVG charts
//! drawn here are.

use std::path::Path;

use maud::{DOCTYPE, Markup, PreEscaped, html as page};
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
    Ok(render(summary, &histogram, &timeline).into_string())
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:960px}\
    table{border-collapse:collapse;margin:1em 0}\
    td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
    td.n{text-align:right}";

fn render(s: &Summary, histogram: &str, timeline: &str) -> Markup {
    let mut rows: Vec<(String, String)> = vec![
        ("planned".into(), s.planned.to_string()),
        ("sent".into(), s.sent.to_string()),
        ("answered".into(), s.answered.to_string()),
        ("failed".into(), s.failed.to_string()),
    ];
    for (kind, count) in &s.errors {
        // Indented under "failed" (two no-break spaces).
        rows.push((format!("\u{a0}\u{a0}{kind}"), count.to_string()));
    }
    rows.push(("retries".into(), s.retries.to_string()));
    rows.push(("elapsed".into(), format!("{:.2} s", s.elapsed_secs)));
    rows.push((
        "throughput".into(),
        format!("{:.2} answers/s", s.throughput_per_sec),
    ));
    if let Some(l) = &s.latency_ms {
        for (name, v) in [
            ("latency min", l.min),
            ("latency mean", l.mean),
            ("latency p50", l.p50),
            ("latency p90", l.p90),
            ("latency p99", l.p99),
            ("latency max", l.max),
        ] {
            rows.push((name.into(), format!("{v:.1} ms")));
        }
    }
    if let Some(a) = &s.accuracy {
        rows.push((
            "accuracy".into(),
            format!("{}/{} ({:.1} %)", a.correct, a.scored, a.fraction * 100.0),
        ));
        rows.push(("without expected label".into(), a.unscored.to_string()));
    }
    let wrong = s.accuracy.as_ref().map_or(&[][..], |a| &a.wrong[..]);
    page! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "iras workload report" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Workload against " (s.url) }
                h2 { "Summary" }
                table {
                    @for (name, value) in &rows {
                        tr { th { (name) } td.n { (value) } }
                    }
                }
                h2 { "Latency of answered requests" }
                // Drawn here by plotters, not user text.
                (PreEscaped(histogram))
                h2 { "Completions over time" }
                (PreEscaped(timeline))
                @if !s.failures.is_empty() {
                    h2 { "Failures (" (s.failures.len()) ")" }
                    table {
                        tr {
                            th { "#" } th { "image" } th { "kind" } th { "attempts" }
                            th { "after" } th { "detail" }
                        }
                        @for f in &s.failures {
                            tr {
                                td.n { (f.seq) }
                                td { (f.name) }
                                td { (f.kind) }
                                td.n { (f.attempts) }
                                td.n { (format!("{:.1} ms", f.latency_ms)) }
                                td { (f.detail) }
                            }
                        }
                    }
                }
                @if !wrong.is_empty() {
                    h2 { "Wrong answers (" (wrong.len()) ")" }
                    table {
                        tr { th { "#" } th { "image" } th { "expected" } th { "answered" } }
                        @for w in wrong {
                            tr {
                                td.n { (w.seq) }
                                td { (w.name) }
                                td { (w.expected) }
                                td { (w.got) }
                            }
                        }
                    }
                }
            }
        }
    }
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
    fn file_names_labels_and_details_are_escaped() {
        let records = vec![Record {
            seq: 0,
            name: "<script>alert(1)</script>.png".to_owned(),
            issued: Duration::ZERO,
            latency: Duration::from_millis(3),
            attempts: 1,
            outcome: Err(RequestFailure {
                kind: FailureClass::Status(500),
                detail: "\"quoted\" <img src=x onerror=alert(2)>".to_owned(),
            }),
        }];
        let s = Summary::new("http://h/<script>", 1, records, Duration::ZERO, None);
        let page = html(&s).unwrap();
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;.png"));
        assert!(page.contains("&quot;quoted&quot; &lt;img src=x onerror=alert(2)&gt;"));
        assert!(page.contains("Workload against http://h/&lt;script&gt;"));
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
