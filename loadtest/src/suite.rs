//! What each subcommand runs, and the smoke test's checks. Every mode fills a [`Report`];
//! the caller writes it, also when the run was cut short.

use std::time::Duration;

use crate::anchors;
use crate::bench::Bench;
use crate::cli::{Command, Load, Search, SequentialShape, Workers};
use crate::error::{HarnessError, Result};
use crate::modes::{self, Shape};
use crate::report::Report;
use crate::scenario::Scenario;

/// Runs `command`, adding what it measures to `report`.
pub(crate) async fn run(command: &Command, bench: &mut Bench, report: &mut Report) -> Result<()> {
    match command {
        Command::BurnDown(a) => {
            for shape in shapes(&a.workers)? {
                let run = modes::burn_down(
                    bench,
                    a.scenario,
                    a.executions,
                    shape,
                    a.senders,
                    a.timeout,
                    1,
                );
                report.runs.push(run.await?);
            }
            Ok(())
        }
        Command::OpenLoop(a) => {
            check_load(&a.load)?;
            for shape in shapes(&a.workers)? {
                report
                    .runs
                    .push(modes::open_loop(bench, a.scenario, &a.load, shape, 1).await?);
            }
            Ok(())
        }
        Command::FindMax(a) => {
            check_search(&a.search)?;
            for shape in shapes(&a.workers)? {
                report
                    .searches
                    .push(modes::find_max(bench, a.scenario, &a.search, shape, 1).await?);
            }
            Ok(())
        }
        Command::Sequential(a) => {
            report
                .sequential
                .push(modes::sequential(bench, &a.shape, 1).await?);
            Ok(())
        }
        Command::Suite(a) => {
            check_load(&a.load)?;
            check_search(&a.search)?;
            let plan = Plan {
                repeat: a.repeat.max(1),
                shapes: shapes(&a.workers)?,
                executions: a.executions,
                load: a.load.clone(),
                search: (!a.skip_find_max).then(|| a.search.clone()),
                sequential: a.shape.clone(),
            };
            suite(bench, &plan, report).await
        }
        Command::Smoke(_) => suite(bench, &smoke_plan(), report).await,
        Command::Internal { .. } => Err(HarnessError::Invalid(
            "the internal subcommand is handled before the harness starts".to_owned(),
        )),
    }
}

/// What a suite measures.
#[derive(Debug, Clone)]
struct Plan {
    repeat: usize,
    /// Every worker count; the largest also runs the single-configuration measurements.
    shapes: Vec<Shape>,
    /// chain10 burn-down executions and baseline drain jobs.
    executions: u64,
    /// The open-loop schedule of the webhook tests and the push baseline.
    load: Load,
    search: Option<Search>,
    sequential: SequentialShape,
}

/// The smoke test: every part of the pipeline, with numbers small enough for CI.
fn smoke_plan() -> Plan {
    Plan {
        repeat: 1,
        // Two workers, as every real run has several: what only shows with more than one
        // process (ports, sharing the queue) fails here first.
        shapes: vec![Shape {
            workers: 2,
            concurrency: 2,
        }],
        executions: 50,
        load: Load {
            rate: 40.0,
            duration: Duration::from_secs(1),
            // The slowest schedules send one webhook a second; with a warm-up they would
            // measure nothing.
            warmup: Duration::ZERO,
            max_in_flight: 1_000,
        },
        search: Some(Search {
            start_rate: 20.0,
            factor: 2.0,
            step: Duration::from_secs(1),
            slo: Duration::from_millis(500),
            max_rate: 40.0,
        }),
        sequential: SequentialShape {
            tasks: 20,
            sleep_ms: 10,
            task_concurrency: 4,
        },
    }
}

/// `load` at `divisor` times lower a rate, at least one per second.
fn slower(load: &Load, divisor: f64) -> Load {
    Load {
        rate: (load.rate / divisor).max(1.0),
        ..load.clone()
    }
}

async fn suite(bench: &mut Bench, plan: &Plan, report: &mut Report) -> Result<()> {
    let main = *plan
        .shapes
        .iter()
        .max_by_key(|s| s.workers)
        .ok_or_else(|| HarnessError::Invalid("no worker count given".to_owned()))?;
    let burn_timeout = Duration::from_secs(3600);
    for repeat in 1..=plan.repeat {
        crate::note(format_args!("repeat {repeat} of {}", plan.repeat));
        for &shape in &plan.shapes {
            let b = &mut report.baselines;
            b.apalis_drain
                .push(anchors::apalis_drain(bench, shape, plan.executions, repeat).await?);
            b.skip_locked
                .push(anchors::skip_locked(bench, shape, plan.executions, repeat).await?);
        }
        report
            .baselines
            .apalis_push
            .push(anchors::apalis_push(bench, &plan.load, repeat).await?);

        let open_loops = [
            (Scenario::Ingest, 1.0),
            (Scenario::OneNode, 1.0),
            // Payloads of 7–28 kB: a fifth of the rate keeps the bytes per second comparable
            // to a busy small-payload webhook.
            (Scenario::Github, 5.0),
            // Ten node runs per execution: node runs per second match the one-node test.
            (Scenario::Chain10, 10.0),
            (Scenario::Fanout100, 100.0),
        ];
        for (scenario, divisor) in open_loops {
            let load = slower(&plan.load, divisor);
            report
                .runs
                .push(modes::open_loop(bench, scenario, &load, main, repeat).await?);
        }

        for &shape in &plan.shapes {
            let run = modes::burn_down(
                bench,
                Scenario::Chain10,
                plan.executions,
                shape,
                32,
                burn_timeout,
                repeat,
            );
            report.runs.push(run.await?);
        }
        let flaky = (plan.executions / 20).max(5);
        let run = modes::burn_down(
            bench,
            Scenario::Flaky20,
            flaky,
            main,
            32,
            burn_timeout,
            repeat,
        );
        report.runs.push(run.await?);

        report
            .sequential
            .push(modes::sequential(bench, &plan.sequential, repeat).await?);
        if let Some(search) = &plan.search {
            let found = modes::find_max(bench, Scenario::OneNode, search, main, repeat).await?;
            report.searches.push(found);
        }
    }
    Ok(())
}

fn shapes(workers: &Workers) -> Result<Vec<Shape>> {
    if workers.workers.is_empty() || workers.workers.contains(&0) || workers.concurrency == 0 {
        return Err(HarnessError::Invalid(
            "--workers and --concurrency must be at least 1".to_owned(),
        ));
    }
    Ok(workers
        .workers
        .iter()
        .map(|&w| Shape {
            workers: w,
            concurrency: workers.concurrency,
        })
        .collect())
}

fn check_load(load: &Load) -> Result<()> {
    if !(load.rate.is_finite() && load.rate > 0.0)
        || load.duration.is_zero()
        || load.max_in_flight == 0
    {
        return Err(HarnessError::Invalid(
            "--rate, --duration and --max-in-flight must be positive".to_owned(),
        ));
    }
    Ok(())
}

fn check_search(search: &Search) -> Result<()> {
    if !(search.factor > 1.0 && search.start_rate > 0.0 && search.max_rate >= search.start_rate) {
        return Err(HarnessError::Invalid(
            "find-max needs --factor > 1 and 0 < --start-rate ≤ --max-rate".to_owned(),
        ));
    }
    Ok(())
}

/// The smoke test passes when every part ran and nothing was lost or failed; speed is not
/// judged. Called once the report, charts included, is written.
pub(crate) fn check_smoke(report: &Report) -> Result<()> {
    let mut problems = Vec::new();
    for run in &report.runs {
        let what = format!("{} {}", run.scenario, run.mode.name());
        let o = &run.outcomes;
        if !run.errors.is_empty() {
            problems.push(format!("{what}: webhook errors {:?}", run.errors));
        }
        if o.failed > 0 || o.unfinished > 0 || o.succeeded == 0 {
            problems.push(format!(
                "{what}: {} succeeded, {} failed, {} unfinished",
                o.succeeded, o.failed, o.unfinished
            ));
        }
        let per_execution = Scenario::ALL
            .iter()
            .find(|s| s.name() == run.scenario)
            .map_or(0, |s| s.node_runs_per_execution());
        if o.node_runs != o.succeeded * per_execution {
            problems.push(format!(
                "{what}: {} node runs for {} executions of {per_execution} nodes",
                o.node_runs, o.succeeded
            ));
        }
        if !run.counters.exact {
            problems.push(format!(
                "{what}: workflow counters do not match: {:?}",
                run.counters
            ));
        }
    }
    for s in &report.sequential {
        if s.timing.status != "success" || s.timing.nodes != s.tasks as u64 {
            problems.push(format!(
                "sequential: {} with {} of {} tasks",
                s.timing.status, s.timing.nodes, s.tasks
            ));
        }
    }
    for s in &report.searches {
        if s.steps.is_empty() || !s.counters.exact {
            problems.push(format!(
                "find-max: {} steps, counters {:?}",
                s.steps.len(),
                s.counters
            ));
        }
    }
    let b = &report.baselines;
    if b.apalis_drain.is_empty()
        || b.skip_locked.is_empty()
        || b.apalis_push.iter().all(|p| p.ok == 0)
    {
        problems.push("a baseline did not run".to_owned());
    }
    if report.charts.is_empty() {
        problems.push("no chart was drawn".to_owned());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(HarnessError::Invalid(format!(
            "smoke test failed: {}",
            problems.join("; ")
        )))
    }
}
