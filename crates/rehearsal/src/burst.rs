//! A rehearsal burst and what it shows: the course's 100-image burst sent to the
//! rehearsed deployment with the workload generator, while the fleet is watched through
//! EC2 and the emulator, then the wait until the scaler is back at its minimum.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::rehearse::Rehearsal;

pub use iras_testkit::photos::{Upload, golden_uploads};

/// What a rehearsal burst showed.
#[derive(Debug, Clone)]
pub struct BurstReport {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered with a label.
    pub answered: u64,
    /// Answers with the expected label.
    pub correct: u64,
    /// App-tier instances launched during the burst and its tail.
    pub launched: usize,
    /// Most app-tier instances pending or running at once.
    pub peak_active: usize,
    /// From the first request to the first answer.
    pub first_answer: Option<Duration>,
    /// From the first request to the last answer.
    pub burst: Duration,
    /// The emulator's boot delay.
    pub boot_delay: Duration,
    /// From the last answer until the fleet was back at its minimum (`None`: it was not
    /// within the wait).
    pub back_to_min: Option<Duration>,
    /// The minimum the fleet went back to.
    pub min_instances: usize,
    /// Messages left in each of the stack's queues once the fleet was back at its minimum.
    pub queues: Vec<(String, u64)>,
    /// Terminated app-tier instances that drained (every unit exited 0 on SIGTERM in time),
    /// and those that did not.
    pub drained: (usize, usize),
}

impl BurstReport {
    /// The report as a Markdown table.
    pub fn table(&self) -> String {
        let secs = |d: Option<Duration>| {
            d.map_or("—".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
        };
        let left: u64 = self.queues.iter().map(|(_, n)| n).sum();
        let mut out = String::from("| figure | value |\n|---|---|\n");
        let rows = [
            (
                "requests answered / sent",
                format!("{} / {}", self.answered, self.sent),
            ),
            (
                "answers with the expected label",
                format!("{}", self.correct),
            ),
            ("app-tier instances launched", format!("{}", self.launched)),
            (
                "peak instances pending or running",
                format!("{}", self.peak_active),
            ),
            ("first request → first answer", secs(self.first_answer)),
            (
                "burst wall time (boot delay)",
                format!(
                    "{:.1} s ({:.0} s boot)",
                    self.burst.as_secs_f64(),
                    self.boot_delay.as_secs_f64()
                ),
            ),
            (
                "last answer → fleet back at its minimum",
                format!("{} (min {})", secs(self.back_to_min), self.min_instances),
            ),
            (
                "terminated instances drained / not",
                format!("{} / {}", self.drained.0, self.drained.1),
            ),
            (
                "messages left in any queue or DLQ",
                format!(
                    "{left} ({})",
                    self.queues
                        .iter()
                        .map(|(q, n)| format!("{q}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(out, "| {k} | {v} |");
        }
        out
    }
}

/// Sends `uploads` at once to the rehearsal (100 in flight, like the course's generator),
/// watching the fleet; then waits up to `settle` for the fleet to return to
/// `min_instances`.
pub async fn run_burst(
    rehearsal: &Rehearsal,
    uploads: &[Upload],
    boot_delay: Duration,
    min_instances: usize,
    settle: Duration,
) -> anyhow::Result<BurstReport> {
    let before: std::collections::HashSet<String> = rehearsal
        .app_instances()
        .into_iter()
        .map(|i| i.id)
        .collect();
    let images: Vec<iras_workload::Image> = uploads
        .iter()
        .map(|u| iras_workload::Image::new(u.name.clone(), u.bytes.clone()))
        .collect();
    let csv: String = uploads
        .iter()
        .map(|u| format!("{},{}\n", u.name, u.label))
        .collect();
    let mut config = iras_workload::Config::new(
        &rehearsal.url,
        iras_workload::Load::Count(uploads.len() as u64),
    )?;
    config.expected = Some(
        iras_workload::Expected::parse(&csv)
            .map_err(|(line, e)| anyhow::anyhow!("expected labels, line {line}: {e}"))?,
    );
    config.timeout = Some(Duration::from_secs(600));
    let started = Instant::now();
    let task = tokio::spawn(async move { iras_workload::drive(&config, &images).await });
    let mut peak = 0;
    while !task.is_finished() {
        peak = peak.max(rehearsal.active_app_instances().await?.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let summary = task.await.context("burst task")??;
    let burst_done = Instant::now();
    let burst = burst_done - started;
    let first_answer = summary
        .records
        .iter()
        .filter(|r| r.outcome.is_ok())
        .map(iras_workload::Record::completed)
        .min();

    let deadline = burst_done + settle;
    let back_to_min = loop {
        let active: std::collections::HashSet<String> = rehearsal
            .active_app_instances()
            .await?
            .into_iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        peak = peak.max(active.len());
        // Back at the minimum once EC2 counts no more than it, and every instance EC2 no
        // longer counts has stopped in the emulator (its worker drained and exited).
        let settled = active.len() <= min_instances
            && rehearsal
                .app_instances()
                .iter()
                .filter(|i| !active.contains(&i.id))
                .all(|i| i.phase == crate::emulator::Phase::Stopped);
        if settled {
            break Some(burst_done.elapsed());
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let instances = rehearsal.app_instances();
    let launched = instances.iter().filter(|i| !before.contains(&i.id)).count();
    let stopped: Vec<_> = instances
        .iter()
        .filter(|i| i.phase == crate::emulator::Phase::Stopped && i.up_at_ms.is_some())
        .collect();
    let drained = stopped.iter().filter(|i| i.drained()).count();
    Ok(BurstReport {
        sent: summary.sent,
        answered: summary.answered,
        correct: summary.accuracy.as_ref().map_or(0, |a| a.correct),
        launched,
        peak_active: peak,
        first_answer,
        burst,
        boot_delay,
        back_to_min,
        min_instances,
        queues: rehearsal.queue_depths().await?,
        drained: (drained, stopped.len() - drained),
    })
}
