//! The report's SVG charts, drawn through `plot`: latency over time per open-loop run,
//! throughput per scenario beside the baselines, throughput per worker count, and the
//! `find-max` steps.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{HarnessError, Result};
use crate::plot::{self, Series};
use crate::report::{BaselineRun, Mode, Report, drain_median};

/// Draws every chart the report has data for; returns their file names.
pub(crate) fn draw_all(report: &Report, dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    latency_over_time(report, dir, &mut files)?;
    throughput_per_scenario(report, dir, &mut files)?;
    throughput_per_workers(report, dir, &mut files)?;
    search_steps(report, dir, &mut files)?;
    Ok(files)
}

fn line(
    dir: &Path,
    file: String,
    title: &str,
    x: &str,
    y: &str,
    series: &[Series],
    files: &mut Vec<String>,
) -> Result<()> {
    if series.iter().all(|s| s.points.is_empty()) {
        return Ok(());
    }
    let path = dir.join(&file);
    plot::line_chart(&path, title, x, y, series)
        .map_err(|source| HarnessError::Plot { path, source })?;
    files.push(file);
    Ok(())
}

fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.to_owned(),
        points,
    }
}

/// The first repeat of each open-loop configuration, second by second.
fn latency_over_time(report: &Report, dir: &Path, files: &mut Vec<String>) -> Result<()> {
    for run in report
        .runs
        .iter()
        .filter(|r| r.mode == Mode::OpenLoop && r.repeat == 1 && !r.timeline.is_empty())
    {
        let points = |read: &dyn Fn(&crate::report::TimelinePoint) -> Option<f64>| {
            run.timeline
                .iter()
                .filter_map(|p| Some((p.second as f64, read(p)?)))
                .collect::<Vec<_>>()
        };
        let all = [
            series(
                "accept p50",
                points(&|p| (p.accept.ok > 0).then_some(p.accept.p50_ms)),
            ),
            series(
                "accept p99",
                points(&|p| (p.accept.ok > 0).then_some(p.accept.p99_ms)),
            ),
            series("trigger→completion p50", points(&|p| p.completion_p50_ms)),
            series("trigger→completion p99", points(&|p| p.completion_p99_ms)),
        ];
        let rate = run.offered_rate.unwrap_or_default();
        let title = format!(
            "{} at {rate:.0}/s, {}×{}: latency over time",
            run.scenario, run.workers, run.concurrency
        );
        let file = format!(
            "latency-{}-{:.0}rps-{}w.svg",
            run.scenario, rate, run.workers
        );
        line(
            dir,
            file,
            &title,
            "seconds into the measured part",
            "latency (ms)",
            &all,
            files,
        )?;
    }
    Ok(())
}

/// Median node runs per second of every engine configuration, beside the baselines' jobs/s.
fn throughput_per_scenario(report: &Report, dir: &Path, files: &mut Vec<String>) -> Result<()> {
    let mut bars: Vec<(String, f64)> = report
        .summary
        .iter()
        .filter_map(|row| {
            let value = row.median("node_runs_per_sec").filter(|v| *v > 0.0)?;
            let label = format!(
                "{} {} {}×{}",
                row.scenario,
                row.mode.name(),
                row.workers,
                row.concurrency
            );
            Some((label, value))
        })
        .collect();
    for (name, runs) in [
        ("apalis drain", &report.baselines.apalis_drain),
        ("skip-locked", &report.baselines.skip_locked),
    ] {
        for (workers, concurrency) in shapes(runs) {
            if let Some(value) = drain_median(runs, workers) {
                bars.push((format!("{name} {workers}×{concurrency}"), value));
            }
        }
    }
    if bars.is_empty() {
        return Ok(());
    }
    let file = "throughput.svg".to_owned();
    let path = dir.join(&file);
    plot::bar_chart(
        &path,
        "Node runs (engine) and jobs (baselines) per second, medians",
        "per second",
        &bars,
    )
    .map_err(|source| HarnessError::Plot { path, source })?;
    files.push(file);
    Ok(())
}

fn shapes(runs: &[BaselineRun]) -> Vec<(usize, usize)> {
    let mut shapes: Vec<(usize, usize)> = runs.iter().map(|r| (r.workers, r.concurrency)).collect();
    shapes.sort_unstable();
    shapes.dedup();
    shapes
}

/// Burn-down throughput against the worker count, when more than one count was run.
fn throughput_per_workers(report: &Report, dir: &Path, files: &mut Vec<String>) -> Result<()> {
    let mut by_scenario: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for row in report.summary.iter().filter(|r| r.mode == Mode::BurnDown) {
        if let Some(v) = row.median("node_runs_per_sec") {
            by_scenario
                .entry(row.scenario)
                .or_default()
                .push((row.workers as f64, v));
        }
    }
    let counts: std::collections::BTreeSet<usize> = report
        .summary
        .iter()
        .filter(|r| r.mode == Mode::BurnDown)
        .map(|r| r.workers)
        .collect();
    if counts.len() < 2 {
        return Ok(());
    }
    let mut all: Vec<Series> = by_scenario
        .into_iter()
        .map(|(scenario, points)| series(&format!("{scenario} node runs/s"), points))
        .collect();
    for (name, runs) in [
        ("apalis drain jobs/s", &report.baselines.apalis_drain),
        ("skip-locked jobs/s", &report.baselines.skip_locked),
    ] {
        let points = counts
            .iter()
            .filter(|w| runs.iter().any(|r| r.workers == **w))
            .filter_map(|w| Some((*w as f64, drain_median(runs, *w)?)))
            .collect();
        all.push(series(name, points));
    }
    let title = "Burn-down throughput by worker processes (medians)";
    line(
        dir,
        "throughput-by-workers.svg".to_owned(),
        title,
        "worker processes",
        "per second",
        &all,
        files,
    )
}

/// Latency against offered rate, step by step: of each scenario and worker count, the search
/// that took the most steps.
fn search_steps(report: &Report, dir: &Path, files: &mut Vec<String>) -> Result<()> {
    let mut longest: BTreeMap<(&str, usize), &crate::report::SearchResult> = BTreeMap::new();
    for search in &report.searches {
        let entry = longest
            .entry((search.scenario, search.workers))
            .or_insert(search);
        if search.steps.len() > entry.steps.len() {
            *entry = search;
        }
    }
    for search in longest.into_values() {
        let points = |read: &dyn Fn(&crate::report::SearchStep) -> f64| {
            search
                .steps
                .iter()
                .map(|s| (s.rate, read(s)))
                .collect::<Vec<_>>()
        };
        let all = [
            series("trigger→completion p99", points(&|s| s.completion.p99_ms)),
            series("trigger→completion p50", points(&|s| s.completion.p50_ms)),
            series("accept p99", points(&|s| s.accept.p99_ms)),
            series("SLO", points(&|_| search.slo_ms)),
        ];
        let title = format!(
            "find-max {} {}×{} (repeat {}): latency by offered rate",
            search.scenario, search.workers, search.concurrency, search.repeat
        );
        let file = format!("find-max-{}-{}w.svg", search.scenario, search.workers);
        line(
            dir,
            file,
            &title,
            "offered executions per second",
            "latency (ms)",
            &all,
            files,
        )?;
    }
    Ok(())
}
