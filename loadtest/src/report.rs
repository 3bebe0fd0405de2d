//! The report: every figure of every run, their medians over repeats with ratios to the
//! baselines measured in the same process, the targets, and the files it is written to
//! (`report.json`, `report.md`, SVG charts).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::baseline::DrainResult;
use crate::bench::CpuUsage;
use crate::drive::{Errors, SecondStats};
use crate::error::{HarnessError, Result};
use crate::measure::{
    Backlog, ChainTiming, CounterCheck, LatencySummary, Outcomes, StatementCost, median,
};
use crate::receiver::ReceiverCounts;
use crate::targets::TargetResult;

/// Everything a harness invocation measured.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    /// Where and how it ran.
    pub(crate) machine: Machine,
    /// The raw queues, measured in the same process.
    pub(crate) baselines: Baselines,
    /// Engine runs, one per scenario, mode, worker count and repeat.
    pub(crate) runs: Vec<EngineRun>,
    /// `find-max` searches.
    pub(crate) searches: Vec<SearchResult>,
    /// Windmill-study-shaped single executions.
    pub(crate) sequential: Vec<SequentialResult>,
    /// Medians over repeats of the engine runs, with ratios to the baselines.
    pub(crate) summary: Vec<SummaryRow>,
    /// The targets, met or missed.
    pub(crate) targets: Vec<TargetResult>,
    /// Chart files, relative to the report's directory.
    pub(crate) charts: Vec<String>,
}

/// The machine, the server and the invocation.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Machine {
    /// The command line, as given.
    pub(crate) command_line: String,
    /// When the run started (UTC, RFC 3339).
    pub(crate) date: String,
    /// `git rev-parse HEAD` of the working directory, when it is a checkout.
    pub(crate) git_commit: Option<String>,
    /// Whether the checkout had uncommitted changes.
    pub(crate) git_dirty: Option<bool>,
    /// Processors available to the harness.
    pub(crate) nproc: usize,
    /// From `/proc/cpuinfo`.
    pub(crate) cpu_model: Option<String>,
    /// From `/proc/meminfo`, GiB.
    pub(crate) memory_gib: Option<f64>,
    /// The kernel release.
    pub(crate) kernel: Option<String>,
    /// PostgreSQL's version.
    pub(crate) postgres_version: String,
    /// `private` (started by the harness) or `external` (given by URL).
    pub(crate) postgres_server: String,
    /// Settings that shape the figures.
    pub(crate) postgres_settings: BTreeMap<String, String>,
    /// Whether statements could be counted.
    pub(crate) pg_stat_statements: bool,
    /// The QuantumFlow binary that ran.
    pub(crate) quantumflow_binary: String,
}

/// One baseline drain.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BaselineRun {
    /// Which repeat, from 1.
    pub(crate) repeat: usize,
    /// Worker processes (apalis) or client groups (SKIP LOCKED).
    pub(crate) workers: usize,
    /// Concurrency per worker.
    pub(crate) concurrency: usize,
    /// What it measured.
    pub(crate) result: DrainResult,
}

/// apalis `push()` on an open loop: what a webhook accept costs with the raw queue.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PushRun {
    /// Which repeat, from 1.
    pub(crate) repeat: usize,
    /// Offered pushes per second.
    pub(crate) rate: f64,
    /// Measured seconds.
    pub(crate) seconds: f64,
    /// Pushes that succeeded in the measured part.
    pub(crate) ok: u64,
    /// Failures by kind.
    pub(crate) errors: Errors,
    /// From intended send to the push's return.
    pub(crate) latency: LatencySummary,
    /// Successful pushes per second.
    pub(crate) achieved_rate: f64,
    /// Commits per push, warm-up included.
    pub(crate) commits_per_push: Option<f64>,
    /// Statements per push, warm-up included.
    pub(crate) statements_per_push: Option<f64>,
}

/// The baselines of a report.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Baselines {
    /// Raw apalis drains.
    pub(crate) apalis_drain: Vec<BaselineRun>,
    /// Raw SKIP LOCKED drains.
    pub(crate) skip_locked: Vec<BaselineRun>,
    /// apalis `push()` open loops.
    pub(crate) apalis_push: Vec<PushRun>,
}

/// How an engine run was driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    /// Queue, then drain.
    BurnDown,
    /// A fixed arrival rate.
    OpenLoop,
}

impl Mode {
    /// The name reports use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::BurnDown => "burn-down",
            Self::OpenLoop => "open-loop",
        }
    }
}

/// One engine run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EngineRun {
    /// The scenario.
    pub(crate) scenario: &'static str,
    /// How it was driven.
    pub(crate) mode: Mode,
    /// Which repeat, from 1.
    pub(crate) repeat: usize,
    /// Worker processes.
    pub(crate) workers: usize,
    /// Concurrency per worker.
    pub(crate) concurrency: usize,
    /// Webhooks sent (burn-down: N; open loop: the measured part).
    pub(crate) executions_sent: u64,
    /// Offered webhooks per second (open loop).
    pub(crate) offered_rate: Option<f64>,
    /// Webhook accept latency. Open loop: from the intended send time; burn-down: closed
    /// loop, from the actual send.
    pub(crate) accept: LatencySummary,
    /// Open loop: accept latency from the actual send, without the generator's lag.
    pub(crate) accept_service: Option<LatencySummary>,
    /// Open loop: how late the generator sent.
    pub(crate) generator_lag: Option<LatencySummary>,
    /// Accepted webhooks per second while sending.
    pub(crate) accept_rate: f64,
    /// Failed webhooks by kind.
    pub(crate) errors: Errors,
    /// Burn-down: first node run started to last execution completed (database clock); open
    /// loop: the measured part.
    pub(crate) seconds: f64,
    /// Burn-down: worker processes spawned to last execution completed, start-up included.
    pub(crate) seconds_from_worker_start: Option<f64>,
    /// Executions completed per second over `seconds`.
    pub(crate) executions_per_sec: f64,
    /// Node runs completed per second over `seconds`.
    pub(crate) node_runs_per_sec: f64,
    /// The executions and their node runs, from the database.
    pub(crate) outcomes: Outcomes,
    /// Per-hop latency of chain scenarios.
    pub(crate) hop: Option<LatencySummary>,
    /// Database work over the phase.
    pub(crate) db: DbWork,
    /// Processor time and memory over the phase.
    pub(crate) cpu: CpuUsage,
    /// Backlog when the phase began (burn-down: after queueing).
    pub(crate) backlog_start: Backlog,
    /// Backlog when the phase ended.
    pub(crate) backlog_end: Backlog,
    /// The workflow's counters against what was sent.
    pub(crate) counters: CounterCheck,
    /// Per second of an open loop: accept and completion latency.
    pub(crate) timeline: Vec<TimelinePoint>,
    /// What the loopback receiver saw.
    pub(crate) receiver: Option<ReceiverCounts>,
    /// The statements that took the most database time, when they can be counted.
    pub(crate) top_statements: Vec<StatementCost>,
}

/// Database work of a phase.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct DbWork {
    /// Transactions committed in the run's database.
    pub(crate) commits: i64,
    /// Transactions rolled back.
    pub(crate) rollbacks: i64,
    /// Statements, when `pg_stat_statements` is loaded.
    pub(crate) statements: Option<i64>,
    /// Node runs the phase covered, the divisor of the two below.
    pub(crate) node_runs: u64,
    /// Commits per node run.
    pub(crate) commits_per_node_run: Option<f64>,
    /// Statements per node run.
    pub(crate) statements_per_node_run: Option<f64>,
    /// Commits per execution.
    pub(crate) commits_per_execution: Option<f64>,
}

/// One second of an open loop.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TimelinePoint {
    /// Seconds since the measured part began.
    pub(crate) second: u64,
    /// Accept latency of the webhooks due in this second.
    pub(crate) accept: SecondStats,
    /// Median trigger-to-completion of executions created in this second, ms.
    pub(crate) completion_p50_ms: Option<f64>,
    /// 99th percentile of the same, ms.
    pub(crate) completion_p99_ms: Option<f64>,
}

/// One `find-max` search.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SearchResult {
    /// Which repeat, from 1.
    pub(crate) repeat: usize,
    /// The scenario.
    pub(crate) scenario: &'static str,
    /// Worker processes.
    pub(crate) workers: usize,
    /// Concurrency per worker.
    pub(crate) concurrency: usize,
    /// The trigger-to-completion p99 limit, ms.
    pub(crate) slo_ms: f64,
    /// Every step taken.
    pub(crate) steps: Vec<SearchStep>,
    /// The highest offered rate that kept up, executions per second.
    pub(crate) max_sustainable_rate: Option<f64>,
    /// Why the search stopped.
    pub(crate) stopped_because: String,
    /// The workflow's counters after every step.
    pub(crate) counters: CounterCheck,
}

/// One rate step of a search.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SearchStep {
    /// Offered webhooks per second.
    pub(crate) rate: f64,
    /// Accepted webhooks per second.
    pub(crate) achieved_rate: f64,
    /// Accept latency from the intended send.
    pub(crate) accept: LatencySummary,
    /// Trigger to completion of the step's executions.
    pub(crate) completion: LatencySummary,
    /// Executions of the step still unfinished after the grace period.
    pub(crate) unfinished_after_grace: u64,
    /// Node jobs queued when the step's sending ended.
    pub(crate) jobs_pending_at_end: u64,
    /// Failures by kind.
    pub(crate) errors: Errors,
    /// Whether the cluster kept up.
    pub(crate) kept_up: bool,
    /// What made it fail, if it did.
    pub(crate) problems: Vec<String>,
}

/// One long sequential execution on one worker.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SequentialResult {
    /// Which repeat, from 1.
    pub(crate) repeat: usize,
    /// Tasks in the chain.
    pub(crate) tasks: usize,
    /// What each task waits for at the receiver, ms.
    pub(crate) sleep_ms: u64,
    /// How the execution ran.
    pub(crate) timing: ChainTiming,
    /// (wall − Σ node durations) / tasks, ms: time spent between tasks.
    pub(crate) overhead_per_task_ms: f64,
    /// wall / tasks − sleep, ms: the Windmill study's way of counting.
    pub(crate) overhead_vs_nominal_ms: f64,
    /// Processor time and memory.
    pub(crate) cpu: CpuUsage,
    /// Database work.
    pub(crate) db: DbWork,
}

/// The spread of one figure over repeats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Stat {
    /// Median.
    pub(crate) median: f64,
    /// Smallest.
    pub(crate) min: f64,
    /// Largest.
    pub(crate) max: f64,
}

impl Stat {
    /// The spread of the finite values, or `None` if there are none.
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        Some(Self {
            median: median(&values)?,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// Medians of one engine configuration over its repeats.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SummaryRow {
    /// The scenario.
    pub(crate) scenario: &'static str,
    /// How it was driven.
    pub(crate) mode: Mode,
    /// Worker processes.
    pub(crate) workers: usize,
    /// Concurrency per worker.
    pub(crate) concurrency: usize,
    /// Offered rate (open loop).
    pub(crate) offered_rate: Option<f64>,
    /// Repeats summarised.
    pub(crate) repeats: usize,
    /// Executions sent per repeat.
    pub(crate) executions_sent: u64,
    /// The figures, by name.
    pub(crate) figures: BTreeMap<&'static str, Stat>,
    /// Ratios to the baselines' medians, by name.
    pub(crate) ratios: BTreeMap<&'static str, f64>,
}

impl SummaryRow {
    /// The median of a figure.
    pub(crate) fn median(&self, name: &str) -> Option<f64> {
        self.figures.get(name).map(|s| s.median)
    }
}

/// Reads one figure from a run.
type Figure = fn(&EngineRun) -> Option<f64>;

/// The figures a summary row holds, and how each is read from a run.
const FIGURES: [(&str, Figure); 16] = [
    ("seconds", |r| Some(r.seconds)),
    ("seconds_from_worker_start", |r| r.seconds_from_worker_start),
    ("executions_per_sec", |r| Some(r.executions_per_sec)),
    ("node_runs_per_sec", |r| Some(r.node_runs_per_sec)),
    ("accept_rate", |r| Some(r.accept_rate)),
    ("accept_p50_ms", |r| Some(r.accept.p50_ms)),
    ("accept_p99_ms", |r| Some(r.accept.p99_ms)),
    ("accept_p999_ms", |r| Some(r.accept.p999_ms)),
    ("completion_p50_ms", |r| Some(r.outcomes.completion.p50_ms)),
    ("completion_p99_ms", |r| Some(r.outcomes.completion.p99_ms)),
    ("completion_max_ms", |r| Some(r.outcomes.completion.max_ms)),
    ("hop_p50_ms", |r| r.hop.map(|h| h.p50_ms)),
    ("hop_p99_ms", |r| r.hop.map(|h| h.p99_ms)),
    ("commits_per_node_run", |r| r.db.commits_per_node_run),
    ("statements_per_node_run", |r| r.db.statements_per_node_run),
    ("worker_cpu_ms_per_node_run", |r| {
        (r.db.node_runs > 0).then(|| r.cpu.workers_cpu_seconds * 1000.0 / r.db.node_runs as f64)
    }),
];

/// Groups engine runs by configuration and takes medians over repeats, then adds ratios to
/// the baselines.
pub(crate) fn summarise(runs: &[EngineRun], baselines: &Baselines) -> Vec<SummaryRow> {
    type Key = (usize, Mode, usize, usize, u64);
    let mut groups: BTreeMap<Key, Vec<&EngineRun>> = BTreeMap::new();
    for run in runs {
        let order = crate::scenario::Scenario::ALL
            .iter()
            .position(|s| s.name() == run.scenario)
            .unwrap_or(usize::MAX);
        let rate = run.offered_rate.map_or(0, |r| (r * 1000.0) as u64);
        groups
            .entry((order, run.mode, run.workers, run.concurrency, rate))
            .or_default()
            .push(run);
    }
    groups
        .into_values()
        .map(|group| {
            let first = group[0];
            let figures = FIGURES
                .iter()
                .filter_map(|(name, read)| {
                    Some((*name, Stat::of(group.iter().filter_map(|r| read(r)))?))
                })
                .collect();
            let mut row = SummaryRow {
                scenario: first.scenario,
                mode: first.mode,
                workers: first.workers,
                concurrency: first.concurrency,
                offered_rate: first.offered_rate,
                repeats: group.len(),
                executions_sent: first.executions_sent,
                figures,
                ratios: BTreeMap::new(),
            };
            add_ratios(&mut row, baselines);
            row
        })
        .collect()
}

/// Median jobs/s of the drains at `workers` processes, or of all drains if none match.
pub(crate) fn drain_median(runs: &[BaselineRun], workers: usize) -> Option<f64> {
    let matching: Vec<f64> = runs
        .iter()
        .filter(|r| r.workers == workers)
        .map(|r| r.result.jobs_per_sec)
        .collect();
    if matching.is_empty() {
        median(
            &runs
                .iter()
                .map(|r| r.result.jobs_per_sec)
                .collect::<Vec<_>>(),
        )
    } else {
        median(&matching)
    }
}

/// Median accept p99 of the apalis push runs, ms.
pub(crate) fn push_p99_median(runs: &[PushRun]) -> Option<f64> {
    median(&runs.iter().map(|r| r.latency.p99_ms).collect::<Vec<_>>())
}

fn add_ratios(row: &mut SummaryRow, baselines: &Baselines) {
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let node_runs = row.median("node_runs_per_sec");
    let ratios = match row.mode {
        Mode::BurnDown => vec![
            (
                "node_runs_per_sec / apalis_drain_jobs_per_sec",
                ratio(
                    node_runs,
                    drain_median(&baselines.apalis_drain, row.workers),
                ),
            ),
            (
                "node_runs_per_sec / skip_locked_jobs_per_sec",
                ratio(node_runs, drain_median(&baselines.skip_locked, row.workers)),
            ),
        ],
        Mode::OpenLoop => vec![(
            "accept_p99 / apalis_push_p99",
            ratio(
                row.median("accept_p99_ms"),
                push_p99_median(&baselines.apalis_push),
            ),
        )],
    };
    for (name, value) in ratios {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            row.ratios.insert(name, v);
        }
    }
}

/// Writes `report.json`, `report.md` and the charts into `dir`.
pub(crate) fn write(report: &mut Report, dir: &Path) -> Result<()> {
    report.summary = summarise(&report.runs, &report.baselines);
    report.targets = crate::targets::evaluate_all(report);
    report.charts = crate::charts::draw_all(report, dir)?;

    let json = serde_json::to_string_pretty(report)?;
    let json_path = dir.join("report.json");
    std::fs::write(&json_path, json).map_err(HarnessError::io("write", &json_path))?;
    let md_path = dir.join("report.md");
    std::fs::write(&md_path, crate::markdown::render(report))
        .map_err(HarnessError::io("write", &md_path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(workers: usize, jobs_per_sec: f64) -> BaselineRun {
        BaselineRun {
            repeat: 1,
            workers,
            concurrency: 16,
            result: DrainResult {
                name: "test".to_owned(),
                jobs: 1000,
                seconds: 1000.0 / jobs_per_sec,
                jobs_per_sec,
                commits_per_job: None,
                statements_per_job: None,
            },
        }
    }

    #[test]
    fn stats_keep_the_median_and_the_range() {
        let stat = Stat::of([3.0, 1.0, 2.0, f64::NAN]).unwrap();

        assert_eq!(
            stat,
            Stat {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(Stat::of([]), None);
    }

    #[test]
    fn drains_are_matched_by_worker_count_when_possible() {
        let runs = [
            drain(1, 1000.0),
            drain(4, 3000.0),
            drain(4, 3200.0),
            drain(4, 2900.0),
        ];

        assert_eq!(drain_median(&runs, 4), Some(3000.0));
        assert_eq!(drain_median(&runs, 1), Some(1000.0));
        assert_eq!(drain_median(&runs, 8), Some(2950.0));
        assert_eq!(drain_median(&[], 4), None);
    }
}
