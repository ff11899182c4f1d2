//! What a run amounts to: counts, failures by kind, throughput, latency percentiles and
//! accuracy, as a value ([`Summary`]), a table for people ([`Summary::table`]) and JSON
//! for machines (its `Serialize`).
//!
//! Latency percentiles cover answered requests only: a refused connection fails in
//! microseconds and a timeout in exactly the timeout, and either would make the answered
//! requests' latency look better or worse than it was. Failures are counted, by kind,
//! and listed one by one instead.
//!
//! Percentiles come from an HDR histogram ([`hdrhistogram`]) of the latencies in whole
//! microseconds, kept to three significant figures: a reported percentile is the
//! nearest-rank value rounded up to its bucket, at most 0.1 % above the exact figure
//! (never below it, and never above the slowest request), which the table's 0.1 ms
//! rounding hardly shows. Min, max and mean are exact.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{Expected, FailureClass, Record};

/// At most this many failures and wrong answers are listed in the table (all are in the
/// JSON and the report).
pub const TABLE_LIST_LIMIT: usize = 20;

/// The summary of a run. Serializes to the `--json` output (without `records`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Where the requests went.
    pub url: String,
    /// Requests the load consisted of.
    pub planned: u64,
    /// Requests sent (fewer than planned only if the run was interrupted).
    pub sent: u64,
    /// Requests answered with a label.
    pub answered: u64,
    /// Requests that failed, after retries.
    pub failed: u64,
    /// Failed requests by kind (`HTTP 503`, `timeout`, `connect error`, …).
    pub errors: BTreeMap<String, u64>,
    /// Extra attempts made by retries, over all requests.
    pub retries: u64,
    /// From the first request to the last completion, seconds.
    pub elapsed_secs: f64,
    /// Answers per second over `elapsed_secs`.
    pub throughput_per_sec: f64,
    /// Latency of answered requests, milliseconds; absent when nothing was answered.
    pub latency_ms: Option<Latency>,
    /// Answers scored against the expected labels; absent without expected labels.
    pub accuracy: Option<Accuracy>,
    /// Every failed request, in order.
    pub failures: Vec<FailedRequest>,
    /// Every request, in order (not serialized: the report draws from it).
    #[serde(skip)]
    pub records: Vec<Record>,
}

/// Latency statistics, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Fastest.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median (nearest rank, to the histogram's precision: see the module docs).
    pub p50: f64,
    /// 90th percentile (nearest rank, to the histogram's precision).
    pub p90: f64,
    /// 99th percentile (nearest rank, to the histogram's precision).
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// How many answers matched the expected labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accuracy {
    /// Answers with an expected label.
    pub scored: u64,
    /// Of those, how many matched exactly (after trimming).
    pub correct: u64,
    /// `correct / scored` (0 when nothing was scored).
    pub fraction: f64,
    /// Answers for images the CSV does not name.
    pub unscored: u64,
    /// Every wrong answer, in order.
    pub wrong: Vec<WrongAnswer>,
}

/// One answer that differs from the expected label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WrongAnswer {
    /// The request's position in the run.
    pub seq: u64,
    /// The image.
    pub name: String,
    /// What the CSV says.
    pub expected: String,
    /// What the server answered.
    pub got: String,
}

/// One failed request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedRequest {
    /// The request's position in the run.
    pub seq: u64,
    /// The image.
    pub name: String,
    /// The class of failure.
    pub kind: FailureClass,
    /// One line of detail.
    pub detail: String,
    /// Attempts made.
    pub attempts: u32,
    /// Until the failure, milliseconds.
    pub latency_ms: f64,
}

impl Summary {
    /// Summarises the records of a run that took `elapsed`, scoring answers against
    /// `expected` when given.
    pub fn new(
        url: &str,
        planned: u64,
        records: Vec<Record>,
        elapsed: Duration,
        expected: Option<&Expected>,
    ) -> Self {
        let mut errors = BTreeMap::new();
        let mut failures = Vec::new();
        let mut latencies = Vec::new();
        let mut retries = 0;
        for r in &records {
            retries += u64::from(r.attempts.saturating_sub(1));
            match &r.outcome {
                Ok(_) => latencies.push(r.latency),
                Err(f) => {
                    *errors.entry(f.kind.to_string()).or_insert(0) += 1;
                    failures.push(FailedRequest {
                        seq: r.seq,
                        name: r.name.clone(),
                        kind: f.kind,
                        detail: f.detail.clone(),
                        attempts: r.attempts,
                        latency_ms: ms(r.latency),
                    });
                }
            }
        }
        let answered = latencies.len() as u64;
        let elapsed_secs = elapsed.as_secs_f64();
        Self {
            url: url.to_owned(),
            planned,
            sent: records.len() as u64,
            answered,
            failed: failures.len() as u64,
            errors,
            retries,
            elapsed_secs,
            throughput_per_sec: if elapsed_secs > 0.0 {
                answered as f64 / elapsed_secs
            } else {
                0.0
            },
            latency_ms: Latency::of(&latencies),
            accuracy: expected.map(|e| Accuracy::score(&records, e)),
            failures,
            records,
        }
    }

    /// Whether every planned request was sent and answered (the exit status).
    pub fn all_answered(&self) -> bool {
        self.failed == 0 && self.sent == self.planned
    }

    /// The summary as a plain-text table for a terminal.
    pub fn table(&self) -> String {
        let mut t = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_table(&mut t);
        t
    }

    fn write_table(&self, t: &mut String) -> std::fmt::Result {
        writeln!(t, "workload against {}", self.url)?;
        let row = |t: &mut String, name: &str, value: String| writeln!(t, "  {name:<18}{value}");
        row(t, "planned", self.planned.to_string())?;
        row(t, "sent", self.sent.to_string())?;
        row(t, "answered", self.answered.to_string())?;
        row(t, "failed", self.failed.to_string())?;
        for (kind, count) in &self.errors {
            writeln!(t, "    {kind:<16}{count}")?;
        }
        row(t, "retries", self.retries.to_string())?;
        row(t, "elapsed", format!("{:.2} s", self.elapsed_secs))?;
        row(
            t,
            "throughput",
            format!("{:.2} answers/s", self.throughput_per_sec),
        )?;
        match &self.latency_ms {
            Some(l) => row(
                t,
                "latency",
                format!(
                    "p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                    l.p50, l.p90, l.p99, l.max
                ),
            )?,
            None => row(t, "latency", "no answers".to_owned())?,
        }
        if let Some(a) = &self.accuracy {
            row(
                t,
                "accuracy",
                format!(
                    "{}/{} correct ({:.1} %), {} answers without an expected label",
                    a.correct,
                    a.scored,
                    a.fraction * 100.0,
                    a.unscored
                ),
            )?;
        }
        if !self.failures.is_empty() {
            writeln!(t, "failures ({}):", self.failures.len())?;
            for f in self.failures.iter().take(TABLE_LIST_LIMIT) {
                writeln!(t, "  #{} {}  {}  {}", f.seq, f.name, f.kind, f.detail)?;
            }
            more(t, self.failures.len())?;
        }
        if let Some(a) = self.accuracy.as_ref().filter(|a| !a.wrong.is_empty()) {
            writeln!(t, "wrong answers ({}):", a.wrong.len())?;
            for w in a.wrong.iter().take(TABLE_LIST_LIMIT) {
                writeln!(
                    t,
                    "  #{} {}  expected {:?}, got {:?}",
                    w.seq, w.name, w.expected, w.got
                )?;
            }
            more(t, a.wrong.len())?;
        }
        Ok(())
    }
}

fn more(t: &mut String, total: usize) -> std::fmt::Result {
    if total > TABLE_LIST_LIMIT {
        writeln!(
            t,
            "  … and {} more (--json and --report list them all)",
            total - TABLE_LIST_LIMIT
        )?;
    }
    Ok(())
}

/// Significant figures the latency histogram keeps (hdrhistogram allows 0 to 5).
const LATENCY_SIGFIG: u8 = 3;

impl Latency {
    /// Statistics of the latencies, `None` when there are none.
    pub fn of(latencies: &[Duration]) -> Option<Self> {
        let micros = |d: &Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let min = latencies.iter().map(micros).min()?;
        let max = latencies.iter().map(micros).max()?;
        // Auto-resizing, so recording never saturates; `new` fails only for more than
        // five significant figures.
        let mut histogram =
            Histogram::<u64>::new(LATENCY_SIGFIG).expect("three significant figures are valid");
        let mut sum = 0u128;
        for d in latencies {
            histogram
                .record(micros(d))
                .expect("a 64-bit usize indexes any bucket");
            sum += d.as_micros();
        }
        // The bucket's upper bound may pass the slowest request; the slowest is exact.
        let pct = |q: f64| us_to_ms(histogram.value_at_quantile(q).min(max));
        Some(Self {
            min: us_to_ms(min),
            mean: (sum as f64 / latencies.len() as f64).round() / 1000.0,
            p50: pct(0.50),
            p90: pct(0.90),
            p99: pct(0.99),
            max: us_to_ms(max),
        })
    }
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Accuracy {
    /// Scores the answered records against the expected labels.
    pub fn score(records: &[Record], expected: &Expected) -> Self {
        let (mut scored, mut correct, mut unscored) = (0, 0, 0);
        let mut wrong = Vec::new();
        for r in records {
            let Ok(label) = &r.outcome else { continue };
            match expected.get(&r.name) {
                None => unscored += 1,
                Some(want) => {
                    scored += 1;
                    if want == label.trim() {
                        correct += 1;
                    } else {
                        wrong.push(WrongAnswer {
                            seq: r.seq,
                            name: r.name.clone(),
                            expected: want.to_owned(),
                            got: label.clone(),
                        });
                    }
                }
            }
        }
        Self {
            scored,
            correct,
            fraction: if scored == 0 {
                0.0
            } else {
                correct as f64 / scored as f64
            },
            unscored,
            wrong,
        }
    }
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// Whether a line of `table` is `row` (words separated by any run of spaces): table
/// tests should not depend on column widths.
#[cfg(test)]
pub(crate) fn has_row(table: &str, row: &str) -> bool {
    table
        .lines()
        .any(|l| l.split_whitespace().eq(row.split_whitespace()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestFailure;

    fn record(
        seq: u64,
        name: &str,
        latency_ms: u64,
        outcome: Result<&str, FailureClass>,
    ) -> Record {
        Record {
            seq,
            name: name.to_owned(),
            issued: Duration::ZERO,
            latency: Duration::from_millis(latency_ms),
            attempts: 1,
            outcome: outcome.map(str::to_owned).map_err(|kind| RequestFailure {
                kind,
                detail: "why".to_owned(),
            }),
        }
    }

    #[test]
    fn nearest_rank_percentiles_within_the_histogram_precision() {
        let millis = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        let l = Latency::of(&millis(&(1..=100).collect::<Vec<_>>())).unwrap();
        let close = |got: f64, want: f64| got >= want && got <= want * 1.001;
        assert!(close(l.p50, 50.0), "{l:?}");
        assert!(close(l.p90, 90.0), "{l:?}");
        assert!(close(l.p99, 99.0), "{l:?}");
        assert_eq!((l.min, l.mean, l.max), (1.0, 50.5, 100.0));
        // Below 2,048 µs every microsecond is its own bucket: exact.
        let l = Latency::of(&[Duration::from_micros(1500)]).unwrap();
        assert_eq!((l.min, l.p50, l.p99, l.max), (1.5, 1.5, 1.5, 1.5));
        // Never above the slowest request, though its bucket reaches further.
        let l = Latency::of(&[Duration::from_micros(50_001)]).unwrap();
        assert_eq!((l.p99, l.max), (50.001, 50.001));
        assert!(Latency::of(&[]).is_none());
        let l = Latency::of(&millis(&[3, 1, 2])).unwrap();
        assert_eq!((l.min, l.mean, l.p50, l.max), (1.0, 2.0, 2.0, 3.0));
    }

    #[test]
    fn counts_failures_by_kind_and_scores_answers() {
        let records = vec![
            record(0, "a.png", 10, Ok("cat")),
            record(1, "b.png", 20, Ok("dog")),
            record(2, "c.png", 30, Err(FailureClass::Status(503))),
            record(3, "d.png", 40, Err(FailureClass::Status(503))),
            record(4, "e.png", 1, Err(FailureClass::Connect)),
            record(5, "z.png", 50, Ok("zebra")),
        ];
        let expected: Expected = [("a", "cat"), ("b.png", "wolf"), ("c", "x")]
            .into_iter()
            .map(|(n, l)| (n.to_owned(), l.to_owned()))
            .collect();
        let s = Summary::new(
            "http://h/",
            7,
            records,
            Duration::from_secs(2),
            Some(&expected),
        );
        assert_eq!((s.planned, s.sent, s.answered, s.failed), (7, 6, 3, 3));
        assert!(!s.all_answered());
        assert_eq!(s.errors["HTTP 503"], 2);
        assert_eq!(s.errors["connect error"], 1);
        assert_eq!(s.throughput_per_sec, 1.5);
        assert_eq!(s.latency_ms.unwrap().max, 50.0);
        let a = s.accuracy.as_ref().unwrap();
        assert_eq!((a.scored, a.correct, a.unscored), (2, 1, 1));
        assert_eq!(a.fraction, 0.5);
        assert_eq!(a.wrong[0].name, "b.png");
        let table = s.table();
        assert!(has_row(&table, "HTTP 503 2"), "{table}");
        assert!(has_row(&table, "failed 3"), "{table}");
        assert!(table.contains("1/2 correct (50.0 %)"), "{table}");
        assert!(table.contains("#4 e.png  connect error  why"), "{table}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["failures"][0]["kind"], "HTTP 503");
        assert!(json.get("records").is_none());
    }
}
