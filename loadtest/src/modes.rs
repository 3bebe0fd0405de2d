//! The engine measurements: burn-down, open loop, the `find-max` search and the long
//! sequential execution. Each sets up a fresh deployment, drives it, and reads back what
//! happened.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use hdrhistogram::Histogram;
use tokio::time::Instant;
use uuid::Uuid;

use crate::bench::{Bench, Deployment, Usage};
use crate::cli::{Load, Search, SequentialShape};
use crate::drive::{self, Schedule};
use crate::error::{HarnessError, Result};
use crate::measure::{self, LatencySummary, Outcomes, Window};
use crate::report::{
    DbWork, EngineRun, Mode, SearchResult, SearchStep, SequentialResult, TimelinePoint,
};
use crate::scenario::{self, Scenario};

/// How long executions still running when the load stops may take to finish.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Statements listed per run in the report.
const TOP_STATEMENTS: i64 = 10;

/// How often the burn-down checks progress.
const POLL: Duration = Duration::from_secs(1);

/// Every how many progress lines the queued jobs are counted.
const JOBS_EVERY: u64 = 5;

/// Worker count and concurrency of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Worker processes.
    pub(crate) workers: usize,
    /// Node runs each executes at once.
    pub(crate) concurrency: usize,
}

/// Queues `executions` webhooks with no worker running, then starts the workers and times
/// the drain.
pub(crate) async fn burn_down(
    bench: &mut Bench,
    scenario: Scenario,
    executions: u64,
    shape: Shape,
    senders: usize,
    timeout: Duration,
    repeat: usize,
) -> Result<EngineRun> {
    let label = format!("{}-burn-down-{}w", scenario.name(), shape.workers);
    let document = scenario.document(&bench.receiver.base_url());
    let mut deployment = bench.deploy(&label, &[document]).await?;
    let workflow = deployment.workflows[0];
    let receiver_before = bench.receiver.counts();

    crate::note(format_args!(
        "{label}: queueing {executions} executions with no worker running"
    ));
    let send = drive::webhook_sender(&bench.client, &deployment.base_url(), scenario);
    let queued = drive::burst(&send, executions, senders).await;
    crate::note(format_args!(
        "{label}: {} accepted in {:.1} s ({:.0}/s), {} failed",
        queued.ok,
        queued.seconds,
        queued.ok as f64 / queued.seconds,
        queued.errors.values().sum::<u64>()
    ));

    let backlog_start = measure::backlog(&deployment.pool).await?;
    let phase = bench.begin(&deployment).await?;
    let workers_started = Utc::now();
    deployment.add_workers(shape.workers, shape.concurrency)?;
    let finished = drain(&mut deployment, &label, queued.ok, timeout).await?;
    if finished < queued.ok {
        crate::note(format_args!(
            "{label}: gave up after {timeout:?} with {finished} of {} executions finished",
            queued.ok
        ));
    }
    let backlog_end = measure::backlog(&deployment.pool).await?;
    let usage = bench.end(&mut deployment, &phase).await?;

    let outcomes = measure::outcomes(&deployment.pool, Window::all(workflow)).await?;
    let from_spawn = outcomes
        .last_completed
        .map(|last| (last - workers_started).as_seconds_f64());
    // The clock starts at the first claim, as the baselines' does when their consumers are
    // let go; the workers' own start-up is reported beside it.
    let seconds = outcomes
        .busy_seconds
        .or(from_spawn)
        .unwrap_or(usage.wall_seconds);
    let hop = hops(&deployment, scenario, Window::all(workflow)).await?;
    let counters = measure::check_counters(&deployment.pool, workflow, queued.ok).await?;
    let top_statements = measure::top_statements(&deployment.pool, TOP_STATEMENTS).await?;
    let completed = outcomes.succeeded + outcomes.failed;
    let run = EngineRun {
        scenario: scenario.name(),
        mode: Mode::BurnDown,
        repeat,
        workers: shape.workers,
        concurrency: shape.concurrency,
        executions_sent: executions,
        offered_rate: None,
        accept: LatencySummary::from_histogram(&queued.latency),
        accept_service: None,
        generator_lag: None,
        accept_rate: queued.ok as f64 / queued.seconds,
        errors: queued.errors,
        seconds,
        seconds_from_worker_start: from_spawn,
        executions_per_sec: completed as f64 / seconds,
        node_runs_per_sec: outcomes.node_runs as f64 / seconds,
        db: db_work(&usage, outcomes.node_runs, completed),
        hop,
        outcomes,
        cpu: usage.cpu,
        backlog_start,
        backlog_end,
        counters,
        timeline: Vec::new(),
        receiver: receiver_delta(bench, scenario, receiver_before),
        top_statements,
    };
    deployment.close().await;
    crate::note(format_args!(
        "{label}: {completed} executions in {seconds:.2} s: {:.0} executions/s, {:.0} node runs/s",
        run.executions_per_sec, run.node_runs_per_sec
    ));
    Ok(run)
}

/// Waits for `expected` executions to finish, printing progress every second.
///
/// Executions of a chain finish only near the end of a drain (the queue is first in, first
/// out, so every execution's first node runs before any second node), so the queued node jobs
/// are shown too, every few seconds: even the cheapest ways to count them cost the database
/// tens of milliseconds once the tables are large, and the harness must not load the server it
/// measures. The drain's end is read from the database afterwards, so polling once a second
/// costs no precision.
async fn drain(
    deployment: &mut Deployment,
    label: &str,
    expected: u64,
    timeout: Duration,
) -> Result<u64> {
    let started = Instant::now();
    let mut last = (Instant::now(), 0);
    let mut pending = None;
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(POLL).await;
        let done = measure::finished_executions(&deployment.pool).await?;
        if done >= expected || started.elapsed() > timeout {
            return Ok(done);
        }
        deployment.check_alive()?;
        if tick.is_multiple_of(JOBS_EVERY) {
            pending = Some(measure::pending_jobs(&deployment.pool).await?);
        }
        let rate = done.saturating_sub(last.1) as f64 / last.0.elapsed().as_secs_f64();
        crate::note(format_args!(
            "{label}: {done}/{expected} executions done ({rate:.0}/s), backlog {} executions, \
             {} node jobs queued",
            expected.saturating_sub(done),
            pending.map_or_else(|| "?".to_owned(), |p| p.to_string())
        ));
        last = (Instant::now(), done);
        tick += 1;
    }
}

/// Sends webhooks on a fixed schedule with the workers running.
pub(crate) async fn open_loop(
    bench: &mut Bench,
    scenario: Scenario,
    load: &Load,
    shape: Shape,
    repeat: usize,
) -> Result<EngineRun> {
    let label = format!(
        "{}-open-loop-{:.0}rps-{}w",
        scenario.name(),
        load.rate,
        shape.workers
    );
    let document = scenario.document(&bench.receiver.base_url());
    let mut deployment = bench.deploy(&label, &[document]).await?;
    let workflow = deployment.workflows[0];
    let receiver_before = bench.receiver.counts();
    deployment
        .start_workers(shape.workers, shape.concurrency)
        .await?;

    let schedule = Schedule {
        rate: load.rate,
        warmup: load.warmup,
        duration: load.duration,
    };
    crate::note(format_args!(
        "{label}: {} webhooks at {:.0}/s ({:?} warm-up, {:?} measured)",
        schedule.total(),
        load.rate,
        load.warmup,
        load.duration
    ));
    let backlog_start = measure::backlog(&deployment.pool).await?;
    let phase = bench.begin(&deployment).await?;
    let send = drive::webhook_sender(&bench.client, &deployment.base_url(), scenario);
    let sent = drive::open_loop(&send, schedule, load.max_in_flight).await;
    let backlog_end = measure::backlog(&deployment.pool).await?;
    deployment
        .wait_finished(sent.ok_total, SETTLE_TIMEOUT)
        .await?;
    let usage = bench.end(&mut deployment, &phase).await?;

    let ids: Vec<Uuid> = sent.started.iter().map(|(id, _)| *id).collect();
    let window = Window {
        workflow_id: workflow,
        ids: Some(&ids),
    };
    let measured = measure::outcomes(&deployment.pool, window).await?;
    let all = measure::outcomes(&deployment.pool, Window::all(workflow)).await?;
    let completions = measure::completion_micros(&deployment.pool, window).await?;
    let timeline = timeline(&sent.per_second, &sent.started, &completions);
    let hop = hops(&deployment, scenario, window).await?;
    let counters = measure::check_counters(&deployment.pool, workflow, sent.ok_total).await?;
    let top_statements = measure::top_statements(&deployment.pool, TOP_STATEMENTS).await?;
    let seconds = load.duration.as_secs_f64();
    let completed = measured.succeeded + measured.failed;
    let run = EngineRun {
        scenario: scenario.name(),
        mode: Mode::OpenLoop,
        repeat,
        workers: shape.workers,
        concurrency: shape.concurrency,
        executions_sent: sent.measured,
        offered_rate: Some(load.rate),
        accept: LatencySummary::from_histogram(&sent.latency),
        accept_service: Some(LatencySummary::from_histogram(&sent.service)),
        generator_lag: Some(LatencySummary::from_histogram(&sent.lag)),
        accept_rate: sent.achieved_rate(),
        errors: sent.errors.clone(),
        seconds,
        seconds_from_worker_start: None,
        executions_per_sec: completed as f64 / seconds,
        node_runs_per_sec: measured.node_runs as f64 / seconds,
        db: db_work(&usage, all.node_runs, all.succeeded + all.failed),
        outcomes: measured,
        hop,
        cpu: usage.cpu,
        backlog_start,
        backlog_end,
        counters,
        timeline,
        receiver: receiver_delta(bench, scenario, receiver_before),
        top_statements,
    };
    deployment.close().await;
    crate::note(format_args!(
        "{label}: accept p50 {:.2} ms p99 {:.2} ms, \
         completion p50 {:.1} ms p99 {:.1} ms, {} errors",
        run.accept.p50_ms,
        run.accept.p99_ms,
        run.outcomes.completion.p50_ms,
        run.outcomes.completion.p99_ms,
        run.errors.values().sum::<u64>()
    ));
    Ok(run)
}

/// Per-second accept latency beside per-second trigger-to-completion, by creation second.
fn timeline(
    accept: &[drive::SecondStats],
    started: &[(Uuid, u64)],
    completions: &[(Uuid, i64)],
) -> Vec<TimelinePoint> {
    let second_of: HashMap<Uuid, u64> = started.iter().copied().collect();
    let mut per_second: Vec<Histogram<u64>> =
        accept.iter().map(|_| measure::new_histogram()).collect();
    for (id, micros) in completions {
        let second = second_of.get(id).and_then(|s| usize::try_from(*s).ok());
        if let Some(h) = second.and_then(|s| per_second.get_mut(s)) {
            h.saturating_record(u64::try_from(*micros).unwrap_or(0));
        }
    }
    accept
        .iter()
        .zip(per_second)
        .map(|(a, h)| {
            let quantile = |q| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0);
            TimelinePoint {
                second: a.second,
                accept: a.clone(),
                completion_p50_ms: quantile(0.5),
                completion_p99_ms: quantile(0.99),
            }
        })
        .collect()
}

/// Raises the offered rate step by step until a step misses the SLO, leaves work behind,
/// or fails requests.
pub(crate) async fn find_max(
    bench: &mut Bench,
    scenario: Scenario,
    search: &Search,
    shape: Shape,
    repeat: usize,
) -> Result<SearchResult> {
    let label = format!("{}-find-max-{}w", scenario.name(), shape.workers);
    let document = scenario.document(&bench.receiver.base_url());
    let mut deployment = bench.deploy(&label, &[document]).await?;
    let workflow = deployment.workflows[0];
    deployment
        .start_workers(shape.workers, shape.concurrency)
        .await?;
    let send = drive::webhook_sender(&bench.client, &deployment.base_url(), scenario);
    let slo_ms = search.slo.as_secs_f64() * 1000.0;
    // Work still queued this long after a step's last send means the cluster fell behind.
    let grace = (search.slo * 2).max(Duration::from_secs(1));

    let mut steps = Vec::new();
    let mut accepted = 0;
    let mut best = None;
    let mut rate = search.start_rate;
    let stopped_because = loop {
        let schedule = Schedule {
            rate,
            warmup: Duration::ZERO,
            duration: search.step,
        };
        let sent = drive::open_loop(&send, schedule, usize::MAX).await;
        accepted += sent.ok_total;
        let jobs_pending_at_end = measure::backlog(&deployment.pool).await?.jobs_pending;
        deployment.wait_finished(accepted, grace).await?;
        let ids: Vec<Uuid> = sent.started.iter().map(|(id, _)| *id).collect();
        let window = Window {
            workflow_id: workflow,
            ids: Some(&ids),
        };
        let outcomes = measure::outcomes(&deployment.pool, window).await?;
        let step = judge_step(rate, &sent, &outcomes, jobs_pending_at_end, slo_ms, grace);
        crate::note(format_args!(
            "{label}: {rate:.0}/s: completion p99 {:.1} ms, {} unfinished, {}",
            step.completion.p99_ms,
            step.unfinished_after_grace,
            if step.kept_up {
                "kept up".to_owned()
            } else {
                step.problems.join("; ")
            }
        ));
        let kept_up = step.kept_up;
        let problems = step.problems.join("; ");
        steps.push(step);
        if !kept_up {
            break format!("at {rate:.0}/s: {problems}");
        }
        best = Some(rate);
        rate *= search.factor;
        if rate > search.max_rate {
            break format!(
                "the next step would exceed --max-rate {:.0}",
                search.max_rate
            );
        }
    };

    deployment.wait_finished(accepted, SETTLE_TIMEOUT).await?;
    let counters = measure::check_counters(&deployment.pool, workflow, accepted).await?;
    deployment.close().await;
    Ok(SearchResult {
        repeat,
        scenario: scenario.name(),
        workers: shape.workers,
        concurrency: shape.concurrency,
        slo_ms,
        steps,
        max_sustainable_rate: best,
        stopped_because,
        counters,
    })
}

/// Whether a step kept up, and if not, why.
fn judge_step(
    rate: f64,
    sent: &drive::OpenLoopResult,
    outcomes: &Outcomes,
    jobs_pending_at_end: u64,
    slo_ms: f64,
    grace: Duration,
) -> SearchStep {
    let accept = LatencySummary::from_histogram(&sent.latency);
    let failed: u64 = sent.errors.values().sum();
    let problems = step_problems(failed, &accept, outcomes, slo_ms, grace);
    SearchStep {
        rate,
        achieved_rate: sent.achieved_rate(),
        accept,
        completion: outcomes.completion,
        unfinished_after_grace: outcomes.unfinished,
        jobs_pending_at_end,
        errors: sent.errors.clone(),
        kept_up: problems.is_empty(),
        problems,
    }
}

/// What kept a step from keeping up; nothing when it did. The accept latency counts as much as
/// the completion latency: a control plane that queues webhooks for seconds has not sustained
/// the rate, even if every execution it let in finished quickly.
fn step_problems(
    failed_webhooks: u64,
    accept: &LatencySummary,
    outcomes: &Outcomes,
    slo_ms: f64,
    grace: Duration,
) -> Vec<String> {
    let mut problems = Vec::new();
    if failed_webhooks > 0 {
        problems.push(format!("{failed_webhooks} webhooks failed"));
    }
    if outcomes.failed > 0 {
        problems.push(format!("{} executions failed", outcomes.failed));
    }
    if accept.p99_ms > slo_ms {
        problems.push(format!(
            "webhook accept p99 {:.1} ms > {slo_ms:.0} ms",
            accept.p99_ms
        ));
    }
    if outcomes.completion.p99_ms > slo_ms {
        problems.push(format!(
            "trigger→completion p99 {:.1} ms > {slo_ms:.0} ms",
            outcomes.completion.p99_ms
        ));
    }
    if outcomes.unfinished > 0 {
        problems.push(format!(
            "{} executions unfinished {:?} after the step (backlog grows)",
            outcomes.unfinished, grace
        ));
    }
    problems
}

/// One execution of `tasks` sequential ~`sleep_ms` http tasks on one worker process.
pub(crate) async fn sequential(
    bench: &mut Bench,
    shape: &SequentialShape,
    repeat: usize,
) -> Result<SequentialResult> {
    let label = format!("sequential-{}", shape.tasks);
    let document =
        scenario::sequential_document(shape.tasks, shape.sleep_ms, &bench.receiver.base_url());
    let mut deployment = bench.deploy(&label, &[document]).await?;
    deployment.start_workers(1, shape.task_concurrency).await?;

    crate::note(format_args!(
        "{label}: one execution of {} × {} ms tasks on one worker",
        shape.tasks, shape.sleep_ms
    ));
    let phase = bench.begin(&deployment).await?;
    let execution = start_one(bench, &deployment, &scenario::sequential_path()).await?;
    let allowed =
        Duration::from_millis((shape.sleep_ms + 2_000) * shape.tasks as u64) + SETTLE_TIMEOUT;
    let finished = deployment.wait_finished(1, allowed).await?;
    if finished == 0 {
        return Err(HarnessError::Timeout(format!(
            "the sequential execution did not finish within {allowed:?}"
        )));
    }
    let usage = bench.end(&mut deployment, &phase).await?;
    let timing = measure::chain_timing(&deployment.pool, execution).await?;
    deployment.close().await;

    let tasks = shape.tasks as f64;
    let result = SequentialResult {
        repeat,
        tasks: shape.tasks,
        sleep_ms: shape.sleep_ms,
        overhead_per_task_ms: (timing.wall_seconds - timing.node_seconds) / tasks * 1000.0,
        overhead_vs_nominal_ms: timing.wall_seconds / tasks * 1000.0 - shape.sleep_ms as f64,
        db: db_work(&usage, timing.nodes, 1),
        cpu: usage.cpu,
        timing,
    };
    crate::note(format_args!(
        "{label}: {} in {:.2} s, {:.2} ms overhead per task \
         ({:.2} ms counted as the Windmill study does)",
        result.timing.status,
        result.timing.wall_seconds,
        result.overhead_per_task_ms,
        result.overhead_vs_nominal_ms
    ));
    Ok(result)
}

/// Posts one webhook and returns the execution it started.
async fn start_one(bench: &Bench, deployment: &Deployment, path: &str) -> Result<Uuid> {
    let request = format!("POST {path}");
    let response = bench
        .client
        .post(format!("{}{path}", deployment.base_url()))
        .json(&serde_json::json!({"source": "qf-load"}))
        .send()
        .await
        .map_err(|source| HarnessError::Http {
            request: request.clone(),
            source,
        })?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    match parsed["execution_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
    {
        Some(id) if status == 202 => Ok(id),
        _ => Err(HarnessError::Api {
            request,
            status,
            body: body.chars().take(2000).collect(),
        }),
    }
}

async fn hops(
    deployment: &Deployment,
    scenario: Scenario,
    window: Window<'_>,
) -> Result<Option<LatencySummary>> {
    if !scenario.is_chain() {
        return Ok(None);
    }
    let hops = measure::hop_micros(&deployment.pool, window).await?;
    Ok(Some(LatencySummary::from_micros(hops)))
}

fn db_work(usage: &Usage, node_runs: u64, executions: u64) -> DbWork {
    DbWork {
        commits: usage.db.commits,
        rollbacks: usage.db.rollbacks,
        statements: usage.db.statements,
        node_runs,
        commits_per_node_run: usage.db.commits_per(node_runs),
        statements_per_node_run: usage.db.statements_per(node_runs),
        commits_per_execution: usage.db.commits_per(executions),
    }
}

fn receiver_delta(
    bench: &Bench,
    scenario: Scenario,
    before: crate::receiver::ReceiverCounts,
) -> Option<crate::receiver::ReceiverCounts> {
    (scenario == Scenario::Flaky20).then(|| {
        let now = bench.receiver.counts();
        crate::receiver::ReceiverCounts {
            flaky_failed: now.flaky_failed - before.flaky_failed,
            flaky_succeeded: now.flaky_succeeded - before.flaky_succeeded,
            flaky_without_key: now.flaky_without_key - before.flaky_without_key,
            sleeps: now.sleeps - before.sleeps,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(p99_ms: f64) -> LatencySummary {
        LatencySummary {
            p99_ms,
            ..LatencySummary::default()
        }
    }

    #[test]
    fn a_step_keeps_up_only_with_both_latencies_under_the_slo() {
        let grace = Duration::from_secs(1);
        let fast = Outcomes {
            completion: latency(40.0),
            ..Outcomes::default()
        };
        let slow = Outcomes {
            completion: latency(300.0),
            ..Outcomes::default()
        };

        assert!(step_problems(0, &latency(20.0), &fast, 250.0, grace).is_empty());
        let queued = step_problems(0, &latency(8000.0), &fast, 250.0, grace);
        assert_eq!(queued, ["webhook accept p99 8000.0 ms > 250 ms"]);
        let late = step_problems(0, &latency(20.0), &slow, 250.0, grace);
        assert_eq!(late, ["trigger→completion p99 300.0 ms > 250 ms"]);
        assert_eq!(
            step_problems(3, &latency(20.0), &fast, 250.0, grace).len(),
            1
        );
    }
}
