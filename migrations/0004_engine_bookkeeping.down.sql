DROP INDEX idx_workflows_active_webhook_route;

ALTER TABLE workflows
    DROP CONSTRAINT workflows_counters_check,
    DROP COLUMN cancelled_executions,
    ADD CONSTRAINT workflows_counters_check CHECK (
        total_executions >= 0
        AND successful_executions >= 0
        AND failed_executions >= 0
        AND successful_executions + failed_executions <= total_executions
    );

ALTER TABLE executions
    DROP CONSTRAINT executions_remaining_check,
    DROP COLUMN deadline_at,
    DROP COLUMN unhandled_failure,
    DROP COLUMN remaining_nodes;

ALTER TABLE node_runs
    DROP CONSTRAINT node_runs_counters_check,
    DROP CONSTRAINT node_runs_execution_node_key,
    DROP COLUMN fired_edges,
    DROP COLUMN undecided_edges,
    DROP COLUMN attempt;
