//! The performance targets (the performance study's section 4), each checked against the
//! medians of this run: met or missed, and by how much.
//!
//! Throughput targets are ratios to baselines measured in the same process on the same
//! machine; latency targets are absolute, as the study states them.

use serde::Serialize;

use crate::measure::median;
use crate::report::{Mode, Report, SummaryRow, drain_median, push_p99_median};

/// The worker count the study states its targets at; rows with it are preferred.
const TARGET_WORKERS: usize = 4;

/// Windmill's orchestration overhead per task in the study's 400-task Go flow on one worker
/// (19.70 s / 400 − ~10 ms of work), ms.
pub(crate) const WINDMILL_OVERHEAD_MS: f64 = 39.0;

/// Half the executions per second that a minimal enqueue, claim and complete cycle in plain SQL
/// sustained on the 2-core reference machine with 16 clients (about 4.8k/s): the harness does
/// not measure that cycle itself, so the target is a fixed figure.
const LIFECYCLE_HALF_PER_SEC: f64 = 2_400.0;

/// Which side of the threshold passes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Bound {
    /// The measured value must not exceed the threshold.
    AtMost(f64),
    /// The measured value must reach the threshold.
    AtLeast(f64),
}

/// One target and how this run did against it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TargetResult {
    /// What is measured, e.g. `chain10 per-hop p50 (open loop)`.
    pub(crate) name: String,
    /// The unit of `measured` and the threshold.
    pub(crate) unit: &'static str,
    /// This run's median, when it was measured.
    pub(crate) measured: Option<f64>,
    /// The limit.
    pub(crate) bound: Bound,
    /// Met, missed, or not measured.
    pub(crate) pass: Option<bool>,
    /// Headroom as a share of the threshold, in percent; negative when missed.
    pub(crate) margin_pct: Option<f64>,
    /// In words, for the table.
    pub(crate) verdict: String,
}

/// Checks `measured` against `bound`.
pub(crate) fn evaluate(
    name: impl Into<String>,
    unit: &'static str,
    measured: Option<f64>,
    bound: Bound,
) -> TargetResult {
    let measured = measured.filter(|v| v.is_finite());
    let (pass, margin_pct) = match (measured, bound) {
        (None, _) => (None, None),
        (Some(v), Bound::AtMost(limit)) => (Some(v <= limit), Some((limit - v) / limit * 100.0)),
        (Some(v), Bound::AtLeast(floor)) => (Some(v >= floor), Some((v - floor) / floor * 100.0)),
    };
    let verdict = match (pass, measured, margin_pct) {
        (Some(true), _, Some(m)) => format!("met, {m:.0} % headroom"),
        (Some(false), Some(v), _) => match bound {
            Bound::AtMost(limit) => format!("missed: {:.2}× the limit", v / limit),
            Bound::AtLeast(floor) => format!("missed: {:.0} % short", (floor - v) / floor * 100.0),
        },
        _ => "not measured in this run".to_owned(),
    };
    TargetResult {
        name: name.into(),
        unit,
        measured,
        bound,
        pass,
        margin_pct,
        verdict,
    }
}

/// The summary row of `scenario` driven by `mode`, at the target worker count if there is
/// one.
fn row<'a>(report: &'a Report, scenario: &str, mode: Mode) -> Option<&'a SummaryRow> {
    let rows: Vec<&SummaryRow> = report
        .summary
        .iter()
        .filter(|r| r.scenario == scenario && r.mode == mode)
        .collect();
    rows.iter()
        .find(|r| r.workers == TARGET_WORKERS)
        .or(rows.first())
        .copied()
}

fn figure(report: &Report, scenario: &str, mode: Mode, name: &str) -> Option<f64> {
    row(report, scenario, mode).and_then(|r| r.median(name))
}

/// Every target, against the report's medians.
pub(crate) fn evaluate_all(report: &Report) -> Vec<TargetResult> {
    let open = Mode::OpenLoop;
    let mut targets = Vec::new();

    let search_rate = median(
        &report
            .searches
            .iter()
            .filter_map(|s| s.max_sustainable_rate)
            .collect::<Vec<_>>(),
    );

    targets.push(evaluate(
        "one-node max sustainable executions/s, exact counters (0.5 × the raw SQL lifecycle \
         limit of about 4.8k/s on the reference machine)",
        "/s",
        search_rate,
        Bound::AtLeast(LIFECYCLE_HALF_PER_SEC),
    ));

    let burn = row(report, "chain10", Mode::BurnDown);
    let burn_rate = burn.and_then(|r| r.median("node_runs_per_sec"));
    let apalis_at_burn = burn.and_then(|r| drain_median(&report.baselines.apalis_drain, r.workers));
    let skip_locked_at_burn =
        burn.and_then(|r| drain_median(&report.baselines.skip_locked, r.workers));
    targets.push(evaluate(
        "chain10 burn-down node runs/s ÷ apalis drain jobs/s",
        "×",
        burn_rate.zip(apalis_at_burn).map(|(a, b)| a / b),
        Bound::AtLeast(1.5),
    ));
    targets.push(evaluate(
        "chain10 burn-down node runs/s ÷ SKIP LOCKED one-at-a-time jobs/s",
        "×",
        burn_rate.zip(skip_locked_at_burn).map(|(a, b)| a / b),
        Bound::AtLeast(0.5),
    ));

    let latency_targets = [
        (
            "one-node",
            "completion_p50_ms",
            "trigger→completion p50",
            12.0,
        ),
        (
            "one-node",
            "completion_p99_ms",
            "trigger→completion p99",
            30.0,
        ),
        ("chain10", "hop_p50_ms", "per-hop p50", 6.0),
        (
            "chain10",
            "completion_p50_ms",
            "trigger→completion p50",
            60.0,
        ),
        (
            "chain10",
            "completion_p99_ms",
            "trigger→completion p99",
            150.0,
        ),
        (
            "fanout100",
            "completion_p50_ms",
            "trigger→completion p50",
            100.0,
        ),
    ];
    for (scenario, name, words, limit) in latency_targets {
        targets.push(evaluate(
            format!("{scenario} {words} (open loop)"),
            "ms",
            figure(report, scenario, open, name),
            Bound::AtMost(limit),
        ));
    }

    let push = push_p99_median(&report.baselines.apalis_push);
    targets.push(evaluate(
        "webhook accept p99 (ingest, open loop) ÷ apalis push() p99",
        "×",
        figure(report, "ingest", open, "accept_p99_ms")
            .zip(push)
            .map(|(a, b)| a / b),
        Bound::AtMost(1.0),
    ));
    targets.push(evaluate(
        "commits per node run (chain10 open loop, accept included)",
        "commits",
        figure(report, "chain10", open, "commits_per_node_run"),
        Bound::AtMost(1.0),
    ));
    targets.push(evaluate(
        "statements per node run (chain10 open loop, accept included)",
        "statements",
        figure(report, "chain10", open, "statements_per_node_run"),
        Bound::AtMost(4.0),
    ));

    let overhead = median(
        &report
            .sequential
            .iter()
            .filter(|s| s.tasks >= 400)
            .map(|s| s.overhead_vs_nominal_ms)
            .collect::<Vec<_>>(),
    );
    targets.push(evaluate(
        "sequential 400 × 10 ms on one worker: overhead per task (Windmill ~39 ms)",
        "ms",
        overhead,
        Bound::AtMost(WINDMILL_OVERHEAD_MS / 4.0),
    ));
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upper_bound_reports_headroom_or_how_far_over() {
        let met = evaluate("latency", "ms", Some(9.0), Bound::AtMost(12.0));
        let missed = evaluate("latency", "ms", Some(24.0), Bound::AtMost(12.0));

        assert_eq!(met.pass, Some(true));
        assert_eq!(met.margin_pct, Some(25.0));
        assert_eq!(met.verdict, "met, 25 % headroom");
        assert_eq!(missed.pass, Some(false));
        assert_eq!(missed.margin_pct, Some(-100.0));
        assert_eq!(missed.verdict, "missed: 2.00× the limit");
    }

    #[test]
    fn a_lower_bound_reports_how_far_short() {
        let missed = evaluate("ratio", "×", Some(0.4), Bound::AtLeast(1.0));
        let met = evaluate("ratio", "×", Some(1.0), Bound::AtLeast(1.0));

        assert_eq!(missed.pass, Some(false));
        assert_eq!(missed.verdict, "missed: 60 % short");
        assert_eq!(met.pass, Some(true));
        assert_eq!(met.margin_pct, Some(0.0));
    }

    #[test]
    fn a_target_without_a_measurement_is_neither_met_nor_missed() {
        let result = evaluate("ratio", "×", None, Bound::AtLeast(1.0));
        let nan = evaluate("ratio", "×", Some(f64::NAN), Bound::AtLeast(1.0));

        assert_eq!(result.pass, None);
        assert_eq!(nan.pass, None);
        assert_eq!(result.verdict, "not measured in this run");
    }

    #[test]
    fn an_empty_report_measures_no_target() {
        let targets = evaluate_all(&Report::default());

        assert!(!targets.is_empty());
        assert!(targets.iter().all(|t| t.pass.is_none()), "{targets:?}");
    }
}
