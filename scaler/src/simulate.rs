//! A discrete-event simulation of the app tier under a policy, driving the same decision
//! functions as the control loop ([`crate::policy`]).
//!
//! The model: requests arrive (a burst, Poisson, a linear ramp or a trace), wait in one FIFO
//! queue, and each instance serves one at a time for a fixed or exponential service time.
//! Launched instances serve after a boot delay; the scaler polls every interval and sees the
//! depth as the seed did (waiting + in service). Scale-in removes booting instances first,
//! then idle ones, then busy ones, which finish the request in hand before they go (the app
//! tier drains on SIGTERM), so a simulated scale-in loses nothing either.
//!
//! Why events and not ticks: the simulator must run 10,000 requests/s for minutes against
//! a 1,000-instance cap in seconds. Time jumps from event to event (next arrival, next
//! service end or boot, next poll), so the cost is a few heap operations per request and
//! nothing per idle second or per idle instance. Time is kept in integer microseconds, so
//! event order is exact, and one seed gives one run (with the same build: the generator is
//! rand's fast `SmallRng`, which rand does not promise to keep across versions).
//!
//! Waits go into an HDR histogram ([`hdrhistogram`]) in microseconds as requests start
//! service, not into a list sorted at the end: constant memory and no sort of millions of
//! waits. It keeps three significant figures, so a reported percentile is the nearest-rank
//! wait rounded up to its bucket, at most 0.1 % above the exact figure (never above the
//! longest wait).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::policy::{Action, Observation, Policy, PolicyState};

const MICROS: f64 = 1_000_000.0;

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A `--arrivals` or `--service` value did not parse.
    #[error("invalid {what} {value:?}: {reason}")]
    Parse {
        /// Which option.
        what: &'static str,
        /// The text given.
        value: String,
        /// What was wrong.
        reason: String,
    },
    /// A trace file could not be read.
    #[error("reading trace {path}: {source}")]
    Trace {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The CSV could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The plot could not be drawn.
    #[error("drawing {path}: {message}")]
    Plot {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

fn parse_err(what: &'static str, value: &str, reason: impl Into<String>) -> SimError {
    SimError::Parse {
        what,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// How requests arrive.
#[derive(Debug, Clone, PartialEq)]
pub enum Arrivals {
    /// `burst:N`: N requests at t = 0 (the course workload generator sends 100).
    Burst(u64),
    /// `poisson:RATE_PER_S:SECS`: a Poisson process at a fixed rate for a duration.
    Poisson {
        /// Mean arrivals per second.
        rate_per_s: f64,
        /// How long arrivals go on.
        secs: f64,
    },
    /// `ramp:FROM_PER_S:TO_PER_S:SECS`: Poisson whose rate moves linearly from one rate to
    /// another over the duration.
    Ramp {
        /// Rate at t = 0.
        from_per_s: f64,
        /// Rate at the end.
        to_per_s: f64,
        /// How long arrivals go on.
        secs: f64,
    },
    /// `trace:PATH`: one arrival time in seconds per line (`#` comments allowed).
    Trace(String),
}

impl FromStr for Arrivals {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, SimError> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |i: usize| -> Result<f64, SimError> {
            let v: f64 = parts
                .get(i)
                .ok_or_else(|| parse_err("arrivals", s, "missing a number"))?
                .parse()
                .map_err(|_| parse_err("arrivals", s, "not a number"))?;
            if !v.is_finite() || v < 0.0 {
                return Err(parse_err("arrivals", s, "numbers must be finite and >= 0"));
            }
            Ok(v)
        };
        match parts.first().copied() {
            Some("burst") if parts.len() == 2 => parts[1]
                .parse()
                .map(Arrivals::Burst)
                .map_err(|_| parse_err("arrivals", s, "burst:N takes a whole number")),
            Some("poisson") if parts.len() == 3 => Ok(Arrivals::Poisson {
                rate_per_s: num(1)?,
                secs: num(2)?,
            }),
            Some("ramp") if parts.len() == 4 => Ok(Arrivals::Ramp {
                from_per_s: num(1)?,
                to_per_s: num(2)?,
                secs: num(3)?,
            }),
            Some("trace") if parts.len() >= 2 => Ok(Arrivals::Trace(parts[1..].join(":"))),
            _ => Err(parse_err(
                "arrivals",
                s,
                "use burst:N, poisson:RATE:SECS, ramp:FROM:TO:SECS or trace:PATH",
            )),
        }
    }
}

impl Arrivals {
    /// The arrival times in microseconds, sorted.
    pub fn times_us(&self, rng: &mut SmallRng) -> Result<Vec<u64>, SimError> {
        let mut times = match self {
            Arrivals::Burst(n) => vec![0; usize::try_from(*n).unwrap_or(usize::MAX)],
            Arrivals::Poisson { rate_per_s, secs } => poisson(rng, None, *rate_per_s, *secs),
            Arrivals::Ramp {
                from_per_s,
                to_per_s,
                secs,
            } => {
                let peak = from_per_s.max(*to_per_s);
                let rate = |t: f64| from_per_s + (to_per_s - from_per_s) * (t / secs.max(1e-9));
                poisson(rng, Some(&rate), peak, *secs)
            }
            Arrivals::Trace(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SimError::Trace {
                    path: path.clone(),
                    source,
                })?;
                let mut times = Vec::new();
                for line in text.lines() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if line.is_empty() {
                        continue;
                    }
                    let t: f64 = line
                        .parse()
                        .map_err(|_| parse_err("trace line", line, "not a number of seconds"))?;
                    if !t.is_finite() || t < 0.0 {
                        return Err(parse_err("trace line", line, "must be >= 0"));
                    }
                    times.push((t * MICROS) as u64);
                }
                times
            }
        };
        times.sort_unstable();
        Ok(times)
    }
}

/// Poisson arrivals at rate `peak`, or at `rate(t)` ≤ `peak` by thinning.
fn poisson(
    rng: &mut SmallRng,
    rate: Option<&dyn Fn(f64) -> f64>,
    peak: f64,
    secs: f64,
) -> Vec<u64> {
    let mut times = Vec::with_capacity((peak * secs) as usize + 16);
    if peak <= 0.0 {
        return times;
    }
    let mut t = 0.0;
    loop {
        t += exp_sample(rng, 1.0 / peak);
        if t >= secs {
            return times;
        }
        if rate.is_none_or(|rate| rng.random::<f64>() * peak <= rate(t)) {
            times.push((t * MICROS) as u64);
        }
    }
}

fn exp_sample(rng: &mut SmallRng, mean: f64) -> f64 {
    // 1 - u is in (0, 1], so the log is finite.
    -mean * (1.0 - rng.random::<f64>()).ln()
}

/// Time to classify one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Service {
    /// `fixed:SECS`.
    Fixed(f64),
    /// `exp:MEAN_SECS`: exponentially distributed.
    Exponential(f64),
}

impl FromStr for Service {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, SimError> {
        let (kind, secs) = s
            .split_once(':')
            .ok_or_else(|| parse_err("service", s, "use fixed:SECS or exp:MEAN_SECS"))?;
        let secs: f64 = secs
            .parse()
            .map_err(|_| parse_err("service", s, "not a number"))?;
        if !secs.is_finite() || secs <= 0.0 {
            return Err(parse_err("service", s, "seconds must be > 0"));
        }
        match kind {
            "fixed" => Ok(Service::Fixed(secs)),
            "exp" => Ok(Service::Exponential(secs)),
            _ => Err(parse_err("service", s, "use fixed:SECS or exp:MEAN_SECS")),
        }
    }
}

impl Service {
    fn sample_us(self, rng: &mut SmallRng) -> u64 {
        let secs = match self {
            Service::Fixed(s) => s,
            Service::Exponential(mean) => exp_sample(rng, mean),
        };
        ((secs * MICROS) as u64).max(1)
    }
}

/// Everything but the policy.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// How requests arrive.
    pub arrivals: Arrivals,
    /// Service time per image.
    pub service: Service,
    /// From launch until an instance serves.
    pub boot: Duration,
    /// How often the scaler polls.
    pub interval: Duration,
    /// Instances at t = 0 (running).
    pub initial_instances: u32,
    /// Stop here even if the queue has not drained.
    pub max_time: Duration,
    /// Random seed (arrivals and service times).
    pub seed: u64,
}

/// One poll's view, for the time series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Poll time in seconds.
    pub time_s: f64,
    /// Queue depth (waiting + in service).
    pub depth: u64,
    /// Active instances (booting + serving + idle) after the decision.
    pub instances: u32,
    /// Requests completed so far.
    pub completed: u64,
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct SimulatedRun {
    /// The policy's label.
    pub policy: String,
    /// One sample per poll.
    pub samples: Vec<Sample>,
    /// Requests that arrived.
    pub requests: u64,
    /// Requests completed.
    pub completed: u64,
    /// Time of the last completion, if every request completed.
    pub drain_s: Option<f64>,
    /// Median wait in the queue (arrival to service start), seconds (nearest rank, to
    /// the histogram's precision: see the module docs).
    pub p50_wait_s: f64,
    /// 99th-percentile wait, seconds.
    pub p99_wait_s: f64,
    /// Sum over instances of their lifetimes (launch to gone, or to the end).
    pub instance_secs: f64,
    /// Most instances active at once.
    pub peak_instances: u32,
    /// Launch and terminate decisions taken.
    pub scaling_actions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Booting,
    Idle,
    Busy,
    /// Terminated while busy: finishes the request in hand, then goes.
    Draining,
    Gone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Booted(usize),
    Done(usize),
}

struct Sim<'a> {
    scenario: &'a Scenario,
    rng: SmallRng,
    now: u64,
    queue: VecDeque<u64>,
    state: Vec<State>,
    launched_at: Vec<u64>,
    idle: Vec<usize>,
    events: BinaryHeap<Reverse<(u64, Event)>>,
    booting: u32,
    idle_count: u32,
    busy: u32,
    draining: u32,
    waits_us: Histogram<u64>,
    completed: u64,
    last_done: u64,
    instance_us: u128,
}

impl Sim<'_> {
    fn active(&self) -> u32 {
        self.booting + self.idle_count + self.busy
    }

    fn launch(&mut self, n: u32, boot: u64) {
        for _ in 0..n {
            let i = self.state.len();
            self.launched_at.push(self.now);
            if boot == 0 {
                self.state.push(State::Idle);
                self.idle.push(i);
                self.idle_count += 1;
            } else {
                self.state.push(State::Booting);
                self.booting += 1;
                self.events
                    .push(Reverse((self.now + boot, Event::Booted(i))));
            }
        }
    }

    fn gone(&mut self, i: usize) {
        self.state[i] = State::Gone;
        self.instance_us += u128::from(self.now - self.launched_at[i]);
    }

    /// Booting first (they hold nothing), then idle, then busy (they drain).
    fn terminate(&mut self, mut n: u32) {
        for i in (0..self.state.len()).rev() {
            if n == 0 {
                return;
            }
            if self.state[i] == State::Booting {
                self.booting -= 1;
                self.gone(i);
                n -= 1;
            }
        }
        while n > 0 {
            let Some(i) = self.idle.pop() else { break };
            if self.state[i] == State::Idle {
                self.idle_count -= 1;
                self.gone(i);
                n -= 1;
            }
        }
        for i in (0..self.state.len()).rev() {
            if n == 0 {
                return;
            }
            if self.state[i] == State::Busy {
                self.state[i] = State::Draining;
                self.busy -= 1;
                self.draining += 1;
                n -= 1;
            }
        }
    }

    fn dispatch(&mut self) {
        while !self.queue.is_empty() {
            let Some(i) = self.idle.pop() else { return };
            if self.state[i] != State::Idle {
                continue;
            }
            let Some(arrived) = self.queue.pop_front() else {
                return;
            };
            // Auto-resizing: `record` grows it to any wait (`saturating_record` would clamp
            // to its first, tiny range); growing fails only where usize is under 64 bits.
            self.waits_us
                .record(self.now - arrived)
                .expect("a 64-bit usize indexes any bucket");
            self.state[i] = State::Busy;
            self.idle_count -= 1;
            self.busy += 1;
            let service = self.scenario.service.sample_us(&mut self.rng);
            self.events
                .push(Reverse((self.now + service, Event::Done(i))));
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Booted(i) => {
                if self.state[i] == State::Booting {
                    self.state[i] = State::Idle;
                    self.booting -= 1;
                    self.idle_count += 1;
                    self.idle.push(i);
                }
            }
            Event::Done(i) => {
                self.completed += 1;
                self.last_done = self.now;
                match self.state[i] {
                    State::Draining => {
                        self.draining -= 1;
                        self.gone(i);
                    }
                    _ => {
                        self.state[i] = State::Idle;
                        self.busy -= 1;
                        self.idle_count += 1;
                        self.idle.push(i);
                    }
                }
            }
        }
    }
}

/// Significant figures the wait histogram keeps (hdrhistogram allows 0 to 5).
const WAIT_SIGFIG: u8 = 3;

/// The `q` quantile (0 to 1) of the waits in seconds, 0 without any.
fn percentile_s(waits_us: &Histogram<u64>, q: f64) -> f64 {
    if waits_us.is_empty() {
        return 0.0;
    }
    waits_us.value_at_quantile(q).min(waits_us.max()) as f64 / MICROS
}

/// Runs one policy over the scenario. `arrivals_us` are sorted times (from
/// [`Arrivals::times_us`]), shared so every policy sees the same requests.
pub fn run_policy(scenario: &Scenario, policy: &Policy, arrivals_us: &[u64]) -> SimulatedRun {
    let mut sim = Sim {
        scenario,
        // Service times draw from their own stream, so every policy gets the same ones
        // in the same order of service.
        rng: SmallRng::seed_from_u64(scenario.seed ^ 0x5e4_71ce_u64),
        now: 0,
        queue: VecDeque::new(),
        state: Vec::new(),
        launched_at: Vec::new(),
        idle: Vec::new(),
        events: BinaryHeap::new(),
        booting: 0,
        idle_count: 0,
        busy: 0,
        draining: 0,
        // `new` fails only for more than five significant figures.
        waits_us: Histogram::new(WAIT_SIGFIG).expect("three significant figures are valid"),
        completed: 0,
        last_done: 0,
        instance_us: 0,
    };
    sim.launch(scenario.initial_instances, 0);
    let boot_us = scenario.boot.as_micros() as u64;
    let interval_us = (scenario.interval.as_micros() as u64).max(1);
    let max_us = scenario.max_time.as_micros() as u64;
    let min = policy.bounds().min;
    let mut policy_state = PolicyState::default();
    let mut samples = Vec::new();
    let mut next_arrival = 0usize;
    let mut next_poll = 0u64;
    let mut peak = sim.active();
    let mut scaling_actions = 0u64;
    loop {
        let next_event = sim.events.peek().map(|Reverse((t, _))| *t);
        let arrival = arrivals_us.get(next_arrival).copied();
        // Arrivals and completions at the same instant come before the poll.
        let t_work = match (arrival, next_event) {
            (Some(a), Some(e)) => Some(a.min(e)),
            (a, e) => a.or(e),
        };
        if t_work.is_some_and(|t| t <= next_poll) {
            let t = t_work.unwrap_or(next_poll);
            sim.now = t;
            if arrival == Some(t) {
                while arrivals_us.get(next_arrival) == Some(&t) {
                    sim.queue.push_back(t);
                    next_arrival += 1;
                }
            } else if let Some(Reverse((_, event))) = sim.events.pop() {
                sim.handle(event);
            }
            sim.dispatch();
            continue;
        }
        sim.now = next_poll;
        if sim.now > max_us {
            break;
        }
        let depth = sim.queue.len() as u64 + u64::from(sim.busy + sim.draining);
        let obs = Observation {
            depth,
            active: sim.active(),
            now: Duration::from_micros(sim.now),
        };
        let decision = policy.decide(&obs, &mut policy_state);
        match decision.action {
            Action::Launch(n) => {
                sim.launch(n, boot_us);
                scaling_actions += 1;
            }
            Action::Terminate(n) => {
                sim.terminate(n);
                scaling_actions += 1;
            }
            Action::Hold => {}
        }
        sim.dispatch();
        peak = peak.max(sim.active());
        samples.push(Sample {
            time_s: sim.now as f64 / MICROS,
            depth,
            instances: sim.active(),
            completed: sim.completed,
        });
        let all_done = next_arrival == arrivals_us.len() && depth == 0 && sim.queue.is_empty();
        if all_done && sim.active() <= min && sim.draining == 0 {
            break;
        }
        next_poll += interval_us;
    }
    let end = sim.now.min(max_us);
    for i in 0..sim.state.len() {
        if sim.state[i] != State::Gone {
            sim.instance_us += u128::from(end.saturating_sub(sim.launched_at[i]));
        }
    }
    let requests = arrivals_us.len() as u64;
    SimulatedRun {
        policy: policy.label(),
        samples,
        requests,
        completed: sim.completed,
        drain_s: (sim.completed == requests).then(|| sim.last_done as f64 / MICROS),
        p50_wait_s: percentile_s(&sim.waits_us, 0.50),
        p99_wait_s: percentile_s(&sim.waits_us, 0.99),
        instance_secs: sim.instance_us as f64 / MICROS,
        peak_instances: peak,
        scaling_actions,
    }
}

/// Runs every policy over the same arrivals.
pub fn compare(scenario: &Scenario, policies: &[Policy]) -> Result<Vec<SimulatedRun>, SimError> {
    let mut rng = SmallRng::seed_from_u64(scenario.seed);
    let arrivals = scenario.arrivals.times_us(&mut rng)?;
    Ok(policies
        .iter()
        .map(|p| run_policy(scenario, p, &arrivals))
        .collect())
}

/// Writes the time series: `time_s` then `<policy>_depth,<policy>_instances,
/// <policy>_completed` per policy; a policy that finished early repeats its last row.
/// Numbers are written as `Display` writes them (`10`, not `10.0`), so the file reads the
/// same as it always has.
pub fn write_csv(out: &mut impl Write, outcomes: &[SimulatedRun]) -> std::io::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    let mut header = vec!["time_s".to_owned()];
    for o in outcomes {
        let name = csv_name(&o.policy);
        header.extend(["depth", "instances", "completed"].map(|m| format!("{name}_{m}")));
    }
    csv.write_record(&header)?;
    let rows = outcomes.iter().map(|o| o.samples.len()).max().unwrap_or(0);
    let mut record = Vec::with_capacity(header.len());
    for row in 0..rows {
        record.clear();
        let time = outcomes
            .iter()
            .find_map(|o| o.samples.get(row))
            .map_or(0.0, |s| s.time_s);
        record.push(time.to_string());
        for o in outcomes {
            match o.samples.get(row).or(o.samples.last()) {
                Some(s) => record.extend([
                    s.depth.to_string(),
                    s.instances.to_string(),
                    s.completed.to_string(),
                ]),
                None => record.extend(std::iter::repeat_n(String::new(), 3)),
            }
        }
        csv.write_record(&record)?;
    }
    csv.flush()
}

/// A policy label as a column-name prefix: ASCII letters and digits, `_` for the rest.
fn csv_name(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .trim_matches('_')
        .to_owned()
}

/// Writes the CSV to a file.
pub fn write_csv_file(path: &Path, outcomes: &[SimulatedRun]) -> Result<(), SimError> {
    let err = |source| SimError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    write_csv(&mut file, outcomes).map_err(err)?;
    file.flush().map_err(err)
}

/// The Markdown summary table, one row per policy.
pub fn summary_markdown(outcomes: &[SimulatedRun]) -> String {
    let mut s = String::from(
        "| policy | requests | time to drain (s) | p50 wait (s) | p99 wait (s) | instance-seconds | peak instances | scaling actions |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        let drain = o.drain_s.map_or_else(
            || format!("not drained ({} left)", o.requests - o.completed),
            |d| format!("{d:.1}"),
        );
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.0} | {} | {} |\n",
            o.policy,
            o.requests,
            drain,
            o.p50_wait_s,
            o.p99_wait_s,
            o.instance_secs,
            o.peak_instances,
            o.scaling_actions
        ));
    }
    s
}

/// Draws depth, instances and completed requests over time (three panels, one line per
/// policy) as SVG.
pub fn write_svg(path: &Path, outcomes: &[SimulatedRun]) -> Result<(), SimError> {
    use plotters::prelude::*;
    let perr = |e: &dyn std::fmt::Display| SimError::Plot {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| perr(&e))?;
    let panels = root.split_evenly((3, 1));
    let t_max = outcomes
        .iter()
        .filter_map(|o| o.samples.last())
        .map(|s| s.time_s)
        .fold(1.0, f64::max);
    type Pick = fn(&Sample) -> f64;
    let metrics: [(&str, Pick); 3] = [
        ("queue depth", |s| s.depth as f64),
        ("instances (pending + running)", |s| f64::from(s.instances)),
        ("completed requests", |s| s.completed as f64),
    ];
    for (panel, (title, pick)) in panels.iter().zip(metrics) {
        let y_max = outcomes
            .iter()
            .flat_map(|o| o.samples.iter().map(pick))
            .fold(1.0, f64::max)
            * 1.05;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(|e| perr(&e))?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .draw()
            .map_err(|e| perr(&e))?;
        for (i, o) in outcomes.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    o.samples.iter().map(|s| (s.time_s, pick(s))),
                    color.stroke_width(2),
                ))
                .map_err(|e| perr(&e))?
                .label(o.policy.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| perr(&e))?;
    }
    root.present().map_err(|e| perr(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Bounds, SeedConfig, TargetConfig};
    use std::num::NonZeroU64;

    fn scenario(arrivals: Arrivals) -> Scenario {
        Scenario {
            arrivals,
            service: Service::Fixed(2.0),
            boot: Duration::from_secs(40),
            interval: Duration::from_secs(10),
            initial_instances: 0,
            max_time: Duration::from_secs(24 * 3600),
            seed: 7,
        }
    }

    fn seed_policy(max: u32) -> Policy {
        Policy::Seed(SeedConfig {
            bounds: Bounds { min: 0, max },
            ..SeedConfig::default()
        })
    }

    #[test]
    fn a_burst_of_100_scales_to_min_50_max_and_drains() {
        for (max, peak) in [(19, 19), (100, 50)] {
            let out = compare(&scenario(Arrivals::Burst(100)), &[seed_policy(max)]).unwrap();
            let o = &out[0];
            assert_eq!(o.peak_instances, peak);
            assert_eq!(o.completed, 100);
            assert!(o.drain_s.is_some());
            assert_eq!(o.samples.last().unwrap().instances, 0, "back to min");
            assert!(o.samples.iter().all(|s| s.instances <= max));
        }
    }

    #[test]
    fn same_seed_same_result() {
        let s = Scenario {
            arrivals: Arrivals::Poisson {
                rate_per_s: 20.0,
                secs: 120.0,
            },
            service: Service::Exponential(1.5),
            ..scenario(Arrivals::Burst(0))
        };
        let a = compare(&s, &[seed_policy(19)]).unwrap();
        let b = compare(&s, &[seed_policy(19)]).unwrap();
        assert_eq!(a[0].samples, b[0].samples);
        assert_eq!(a[0].p99_wait_s, b[0].p99_wait_s);
        let c = compare(&Scenario { seed: 8, ..s }, &[seed_policy(19)]).unwrap();
        assert_ne!(a[0].samples, c[0].samples);
    }

    #[test]
    fn csv_and_svg_are_well_formed() {
        let policies = [
            seed_policy(19),
            Policy::Target(TargetConfig {
                backlog_per_instance: NonZeroU64::new(5).unwrap(),
                scale_out_cooldown: Duration::from_secs(30),
                scale_in_cooldown: Duration::from_secs(60),
                bounds: Bounds { min: 0, max: 19 },
            }),
        ];
        let out = compare(&scenario(Arrivals::Burst(100)), &policies).unwrap();
        let mut csv = Vec::new();
        write_csv(&mut csv, &out).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        let mut lines = csv.lines();
        let header = lines.next().unwrap();
        assert_eq!(
            header,
            "time_s,seed_depth,seed_instances,seed_completed,\
             target_b_5_out_30s_in_60s_depth,target_b_5_out_30s_in_60s_instances,\
             target_b_5_out_30s_in_60s_completed"
        );
        let rows: Vec<&str> = lines.collect();
        assert!(rows.len() > 5);
        for row in &rows {
            let cells: Vec<&str> = row.split(',').collect();
            assert_eq!(cells.len(), 7, "{row}");
            for c in cells {
                c.parse::<f64>().unwrap();
            }
        }
        assert!(rows.last().unwrap().ends_with(",100"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.svg");
        write_svg(&path, &out).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("queue depth"));
        assert!(svg.matches("<polyline").count() >= 6);

        let md = summary_markdown(&out);
        assert_eq!(md.lines().count(), 4);
        assert!(md.lines().nth(2).unwrap().starts_with("| seed | 100 |"));
    }

    #[test]
    fn parses_arrivals_and_service() {
        assert_eq!(
            "burst:100".parse::<Arrivals>().unwrap(),
            Arrivals::Burst(100)
        );
        assert_eq!(
            "ramp:0:50:60".parse::<Arrivals>().unwrap(),
            Arrivals::Ramp {
                from_per_s: 0.0,
                to_per_s: 50.0,
                secs: 60.0
            }
        );
        assert!("poisson:-1:5".parse::<Arrivals>().is_err());
        assert!("nope".parse::<Arrivals>().is_err());
        assert_eq!(
            "exp:1.5".parse::<Service>().unwrap(),
            Service::Exponential(1.5)
        );
        assert!("fixed:0".parse::<Service>().is_err());
    }

    #[test]
    fn trace_and_ramp_arrivals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.txt");
        std::fs::write(&path, "# arrivals\n0.5\n0\n2.25 # late\n").unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let t = Arrivals::Trace(path.display().to_string())
            .times_us(&mut rng)
            .unwrap();
        assert_eq!(t, vec![0, 500_000, 2_250_000]);
        let ramp = Arrivals::Ramp {
            from_per_s: 0.0,
            to_per_s: 100.0,
            secs: 100.0,
        }
        .times_us(&mut rng)
        .unwrap();
        // Expected 5,000; the second half holds about three quarters of them.
        assert!((4500..5500).contains(&ramp.len()), "{}", ramp.len());
        let late = ramp.iter().filter(|&&t| t >= 50_000_000).count();
        assert!(late * 100 / ramp.len() > 70);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// Whatever the load and policy, the simulated fleet stays within its bounds and
        /// every request is served.
        #[test]
        fn simulated_fleets_stay_in_bounds_and_serve_everything(
            rate in 0.0f64..50.0,
            secs in 0.0f64..120.0,
            burst in 0u64..300,
            service in 0.1f64..5.0,
            boot in 0u64..60,
            max in 1u32..40,
            target_policy in proptest::bool::ANY,
            seed in 0u64..1000,
        ) {
            let bounds = Bounds { min: 0, max };
            let policy = if target_policy {
                Policy::Target(TargetConfig {
                    backlog_per_instance: NonZeroU64::new(3).unwrap(),
                    scale_out_cooldown: Duration::from_secs(20),
                    scale_in_cooldown: Duration::from_secs(60),
                    bounds,
                })
            } else {
                Policy::Seed(SeedConfig { bounds, ..SeedConfig::default() })
            };
            let s = Scenario {
                arrivals: Arrivals::Poisson { rate_per_s: rate, secs },
                service: Service::Exponential(service),
                boot: Duration::from_secs(boot),
                seed,
                ..scenario(Arrivals::Burst(0))
            };
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut arrivals = s.arrivals.times_us(&mut rng).unwrap();
            arrivals.extend(std::iter::repeat_n(0, burst as usize));
            arrivals.sort_unstable();
            let o = run_policy(&s, &policy, &arrivals);
            proptest::prop_assert!(o.peak_instances <= max);
            proptest::prop_assert!(o.samples.iter().all(|x| x.instances <= max));
            proptest::prop_assert_eq!(o.completed, o.requests);
            proptest::prop_assert_eq!(o.samples.last().map(|x| x.instances), Some(0));
        }
    }

    /// Internet scale: 10,000 requests/s for two minutes against a 1,000-instance cap.
    #[test]
    fn internet_scale_runs_quickly() {
        let s = Scenario {
            arrivals: Arrivals::Poisson {
                rate_per_s: 10_000.0,
                secs: 120.0,
            },
            service: Service::Exponential(0.1),
            max_time: Duration::from_secs(3600),
            ..scenario(Arrivals::Burst(0))
        };
        let started = std::time::Instant::now();
        let out = compare(&s, &[seed_policy(1000)]).unwrap();
        let o = &out[0];
        assert!(o.requests > 1_100_000);
        assert_eq!(o.completed, o.requests);
        assert!(o.peak_instances <= 1000);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
    }
}
