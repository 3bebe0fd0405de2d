//! `report.md`: the report's tables for people. Every figure is also in `report.json`.

use std::fmt::Write;

use crate::measure::LatencySummary;
use crate::report::{EngineRun, Mode, Report, Stat, SummaryRow};

/// Renders the whole report.
pub(crate) fn render(report: &Report) -> String {
    let mut md = String::new();
    header(&mut md, report);
    targets(&mut md, report);
    baselines(&mut md, report);
    burn_down(&mut md, report);
    open_loop(&mut md, report);
    searches(&mut md, report);
    sequential(&mut md, report);
    runs(&mut md, report);
    statements(&mut md, report);
    charts(&mut md, report);
    md
}

fn num(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "n/a".to_owned(),
    }
}

/// A median with its range over repeats, e.g. `1520 (1480–1600)`.
fn spread(stat: Option<&Stat>, decimals: usize) -> String {
    match stat {
        Some(s) if s.min < s.max => format!(
            "{} ({}–{})",
            num(Some(s.median), decimals),
            num(Some(s.min), decimals),
            num(Some(s.max), decimals)
        ),
        Some(s) => num(Some(s.median), decimals),
        None => "n/a".to_owned(),
    }
}

fn latency(l: &LatencySummary) -> String {
    if l.count == 0 {
        return "n/a".to_owned();
    }
    format!(
        "{:.1} / {:.1} / {:.1} / {:.1} / {:.1}",
        l.p50_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.max_ms
    )
}

fn header(md: &mut String, report: &Report) {
    let m = &report.machine;
    let _ = writeln!(md, "# QuantumFlow load test, {}\n", m.date);
    let _ = writeln!(md, "Command: `{}`\n", m.command_line);
    let _ = writeln!(md, "| | |\n|---|---|");
    let commit = match (&m.git_commit, m.git_dirty) {
        (Some(c), Some(true)) => format!("{c} (with uncommitted changes)"),
        (Some(c), _) => c.clone(),
        (None, _) => "n/a".to_owned(),
    };
    let rows = [
        ("git commit", commit),
        ("QuantumFlow binary", m.quantumflow_binary.clone()),
        ("processors", m.nproc.to_string()),
        (
            "CPU",
            m.cpu_model.clone().unwrap_or_else(|| "n/a".to_owned()),
        ),
        ("memory", format!("{} GiB", num(m.memory_gib, 1))),
        (
            "kernel",
            m.kernel.clone().unwrap_or_else(|| "n/a".to_owned()),
        ),
        (
            "PostgreSQL",
            format!("{} ({})", m.postgres_version, m.postgres_server),
        ),
        (
            "pg_stat_statements",
            if m.pg_stat_statements {
                "loaded"
            } else {
                "not loaded: statements n/a"
            }
            .to_owned(),
        ),
    ];
    for (name, value) in rows {
        let _ = writeln!(md, "| {name} | {value} |");
    }
    if !m.postgres_settings.is_empty() {
        let settings: Vec<String> = m
            .postgres_settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(md, "| server settings | {} |", settings.join(", "));
    }
    let _ = writeln!(
        md,
        "\nClient, cluster and database share this machine. Figures are medians over repeats \
         (range in brackets); ratios compare with baselines measured in this same run.\n"
    );
}

fn targets(md: &mut String, report: &Report) {
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(
        md,
        "| target | measured | limit | verdict |\n|---|---:|---:|---|"
    );
    for t in &report.targets {
        let limit = match t.bound {
            crate::targets::Bound::AtMost(v) => format!("≤ {v}"),
            crate::targets::Bound::AtLeast(v) => format!("≥ {v}"),
        };
        let mark = match t.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "—",
        };
        let _ = writeln!(
            md,
            "| {} | {} {} | {limit} | {mark}: {} |",
            t.name,
            num(t.measured, 2),
            t.unit,
            t.verdict
        );
    }
    let _ = writeln!(md);
}

fn baselines(md: &mut String, report: &Report) {
    let b = &report.baselines;
    if b.apalis_drain.is_empty() && b.skip_locked.is_empty() && b.apalis_push.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Baselines\n");
    let _ = writeln!(
        md,
        "| baseline | repeat | W×C | jobs | seconds | jobs/s | commits/job | statements/job |\n\
         |---|---:|---|---:|---:|---:|---:|---:|"
    );
    for run in b.apalis_drain.iter().chain(&b.skip_locked) {
        let r = &run.result;
        let _ = writeln!(
            md,
            "| {} | {} | {}×{} | {} | {:.2} | {:.0} | {} | {} |",
            r.name,
            run.repeat,
            run.workers,
            run.concurrency,
            r.jobs,
            r.seconds,
            r.jobs_per_sec,
            num(r.commits_per_job, 2),
            num(r.statements_per_job, 2)
        );
    }
    if !b.apalis_push.is_empty() {
        let _ = writeln!(
            md,
            "\napalis `push()` on an open loop (latency from the intended send, ms):\n\n\
             | repeat | offered/s | achieved/s | p50 / p95 / p99 / p99.9 / max | errors | commits/push | statements/push |\n\
             |---:|---:|---:|---|---|---:|---:|"
        );
        for p in &b.apalis_push {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {} | {} | {} | {} |",
                p.repeat,
                p.rate,
                p.achieved_rate,
                latency(&p.latency),
                errors(&p.errors),
                num(p.commits_per_push, 2),
                num(p.statements_per_push, 2)
            );
        }
    }
    let _ = writeln!(md);
}

fn errors(e: &crate::drive::Errors) -> String {
    if e.is_empty() {
        return "none".to_owned();
    }
    e.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rows(report: &Report, mode: Mode) -> impl Iterator<Item = &SummaryRow> {
    report.summary.iter().filter(move |r| r.mode == mode)
}

fn burn_down(md: &mut String, report: &Report) {
    if rows(report, Mode::BurnDown).next().is_none() {
        return;
    }
    let _ = writeln!(md, "## Engine, burn-down (queue N, then drain)\n");
    let _ = writeln!(
        md,
        "| scenario | W×C | N | repeats | drain s (from worker start) | executions/s | node runs/s | ÷ apalis drain | ÷ skip-locked | \
         per-hop p50 / p99 ms | commits / node run | statements / node run | worker CPU ms / node run |\n\
         |---|---|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|"
    );
    for r in rows(report, Mode::BurnDown) {
        let f = |name| r.figures.get(name);
        let ratio = |name: &str| num(r.ratios.get(name).copied(), 2);
        let _ = writeln!(
            md,
            "| {} | {}×{} | {} | {} | {} ({}) | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            r.scenario,
            r.workers,
            r.concurrency,
            r.executions_sent,
            r.repeats,
            num(r.median("seconds"), 2),
            num(r.median("seconds_from_worker_start"), 2),
            spread(f("executions_per_sec"), 0),
            spread(f("node_runs_per_sec"), 0),
            ratio("node_runs_per_sec / apalis_drain_jobs_per_sec"),
            ratio("node_runs_per_sec / skip_locked_jobs_per_sec"),
            num(r.median("hop_p50_ms"), 1),
            num(r.median("hop_p99_ms"), 1),
            spread(f("commits_per_node_run"), 2),
            spread(f("statements_per_node_run"), 2),
            spread(f("worker_cpu_ms_per_node_run"), 3),
        );
    }
    let _ = writeln!(
        md,
        "\nThe drain is timed from the first node run's start to the last execution's completion \
         (database clock), as the baselines are timed from when their consumers start; the time \
         from spawning the workers is in brackets. Per-hop latency under a full backlog measures \
         queueing, not transition cost; see the open-loop table for hops at moderate load.\n"
    );
}

fn open_loop(md: &mut String, report: &Report) {
    if rows(report, Mode::OpenLoop).next().is_none() {
        return;
    }
    let _ = writeln!(md, "## Engine, open loop (fixed arrival rate)\n");
    let _ = writeln!(
        md,
        "| scenario | W×C | offered/s | repeats | accepted/s | accept p50 / p99 / p99.9 ms | ÷ apalis push p99 | \
         trigger→completion p50 / p99 / max ms | per-hop p50 / p99 ms | node runs/s | commits / node run | statements / node run |\n\
         |---|---|---:|---:|---:|---|---:|---|---|---:|---:|---:|"
    );
    for r in rows(report, Mode::OpenLoop) {
        let f = |name| r.figures.get(name);
        let _ = writeln!(
            md,
            "| {} | {}×{} | {} | {} | {} | {} / {} / {} | {} | {} / {} / {} | {} / {} | {} | {} | {} |",
            r.scenario,
            r.workers,
            r.concurrency,
            num(r.offered_rate, 0),
            r.repeats,
            spread(f("accept_rate"), 0),
            num(r.median("accept_p50_ms"), 2),
            spread(f("accept_p99_ms"), 2),
            num(r.median("accept_p999_ms"), 2),
            num(r.ratios.get("accept_p99 / apalis_push_p99").copied(), 2),
            num(r.median("completion_p50_ms"), 1),
            spread(f("completion_p99_ms"), 1),
            num(r.median("completion_max_ms"), 1),
            num(r.median("hop_p50_ms"), 2),
            num(r.median("hop_p99_ms"), 2),
            spread(f("node_runs_per_sec"), 0),
            spread(f("commits_per_node_run"), 2),
            spread(f("statements_per_node_run"), 2),
        );
    }
    let _ = writeln!(
        md,
        "\nAccept latency is measured from each webhook's intended send time (corrected for \
         coordinated omission). Commits and statements per node run include the accept \
         transaction and every background query of the cluster, divided by the node runs \
         executed.\n"
    );
}

fn searches(md: &mut String, report: &Report) {
    for s in &report.searches {
        let _ = writeln!(
            md,
            "## find-max: {} ({}×{}, repeat {}, SLO p99 ≤ {:.0} ms)\n",
            s.scenario, s.workers, s.concurrency, s.repeat, s.slo_ms
        );
        let _ = writeln!(
            md,
            "Highest sustainable rate: **{}** executions/s. Stopped because: {}. Counters exact: {} \
             (accepted {}, total_executions {}, successful_executions {}).\n",
            num(s.max_sustainable_rate, 0),
            s.stopped_because,
            s.counters.exact,
            s.counters.accepted,
            s.counters.total_executions,
            s.counters.successful_executions
        );
        let _ = writeln!(
            md,
            "| offered/s | accepted/s | accept p99 ms | completion p50 / p99 / max ms | unfinished after grace | jobs pending | errors | kept up |\n\
             |---:|---:|---:|---|---:|---:|---|---|"
        );
        for step in &s.steps {
            let _ = writeln!(
                md,
                "| {:.0} | {:.0} | {:.1} | {:.1} / {:.1} / {:.1} | {} | {} | {} | {} |",
                step.rate,
                step.achieved_rate,
                step.accept.p99_ms,
                step.completion.p50_ms,
                step.completion.p99_ms,
                step.completion.max_ms,
                step.unfinished_after_grace,
                step.jobs_pending_at_end,
                errors(&step.errors),
                if step.kept_up {
                    "yes".to_owned()
                } else {
                    format!("no: {}", step.problems.join("; "))
                }
            );
        }
        let _ = writeln!(md);
    }
}

fn sequential(md: &mut String, report: &Report) {
    if report.sequential.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Sequential tasks on one worker (the Windmill study's shape)\n"
    );
    let _ = writeln!(
        md,
        "| repeat | tasks × sleep | status | wall s | Σ node s | overhead / task ms | wall / task − sleep ms | Windmill ms | transition p50 / p99 ms |\n\
         |---:|---|---|---:|---:|---:|---:|---:|---|"
    );
    for s in &report.sequential {
        let t = &s.timing;
        let _ = writeln!(
            md,
            "| {} | {} × {} ms | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} / {:.2} |",
            s.repeat,
            s.tasks,
            s.sleep_ms,
            t.status,
            t.wall_seconds,
            t.node_seconds,
            s.overhead_per_task_ms,
            s.overhead_vs_nominal_ms,
            crate::targets::WINDMILL_OVERHEAD_MS,
            t.transition.p50_ms,
            t.transition.p99_ms
        );
    }
    let _ = writeln!(
        md,
        "\nOverhead per task is (wall − Σ node durations) / tasks; \"wall / task − sleep\" counts \
         as the study does, with each task's request time included in the node duration.\n"
    );
}

fn runs(md: &mut String, report: &Report) {
    if report.runs.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Every engine run\n");
    let _ = writeln!(
        md,
        "| scenario | mode | rep | W×C | sent | ok / failed / unfinished | retries | errors | seconds | \
         accept p50 / p95 / p99 / p99.9 / max ms | completion p50 / p99 / max ms | backlog start → end (jobs, executions) | \
         worker CPU s / peak MiB | control plane CPU s / peak MiB | postgres CPU s | counters exact |\n\
         |---|---|---:|---|---:|---|---:|---|---:|---|---|---|---|---|---:|---|"
    );
    for r in &report.runs {
        run_row(md, r);
    }
    let _ = writeln!(md);
}

fn run_row(md: &mut String, r: &EngineRun) {
    let o = &r.outcomes;
    let c = &r.cpu;
    let _ = writeln!(
        md,
        "| {} | {} | {} | {}×{} | {} | {} / {} / {} | {} | {} | {:.2} | {} | {:.1} / {:.1} / {:.1} | {}, {} → {}, {} | {:.1} / {:.0} | {:.1} / {:.0} | {} | {} |",
        r.scenario,
        r.mode.name(),
        r.repeat,
        r.workers,
        r.concurrency,
        r.executions_sent,
        o.succeeded,
        o.failed,
        o.unfinished,
        o.retries,
        errors(&r.errors),
        r.seconds,
        latency(&r.accept),
        o.completion.p50_ms,
        o.completion.p99_ms,
        o.completion.max_ms,
        r.backlog_start.jobs_pending,
        r.backlog_start.executions_unfinished,
        r.backlog_end.jobs_pending,
        r.backlog_end.executions_unfinished,
        c.workers_cpu_seconds,
        c.workers_peak_rss_mb,
        c.control_plane_cpu_seconds,
        c.control_plane_peak_rss_mb,
        num(c.postgres_cpu_seconds, 1),
        r.counters.exact
    );
}

/// Where the database's time went in the first repeat of each configuration.
fn statements(md: &mut String, report: &Report) {
    let first: Vec<&EngineRun> = report
        .runs
        .iter()
        .filter(|r| r.repeat == 1 && !r.top_statements.is_empty())
        .collect();
    if first.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Where the database time went\n\n\
         The statements that took the most execution time in each run's database \
         (`pg_stat_statements`, lock waits included; first repeat of each configuration).\n"
    );
    for run in first {
        let rate = run
            .offered_rate
            .map_or(String::new(), |r| format!(" at {r:.0}/s"));
        let _ = writeln!(
            md,
            "### {} {}{rate}, {}×{}\n\n| calls | total s | mean ms | rows | statement |\n|---:|---:|---:|---:|---|",
            run.scenario,
            run.mode.name(),
            run.workers,
            run.concurrency
        );
        for st in &run.top_statements {
            let query = st.query.replace('|', "\\|");
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.3} | {} | `{query}` |",
                st.calls,
                st.total_ms / 1000.0,
                st.mean_ms,
                st.rows
            );
        }
        let _ = writeln!(md);
    }
}

fn charts(md: &mut String, report: &Report) {
    if report.charts.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Charts\n");
    for file in &report.charts {
        let _ = writeln!(md, "![{file}]({file})\n");
    }
}
