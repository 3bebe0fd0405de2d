-- What the execution engine needs beyond the data model: one node run per node, attempt fencing,
-- join counters, the count of unfinished node runs per execution, cancelled executions on the
-- workflow's counters, and one active workflow per webhook route.

ALTER TABLE node_runs
    -- Bumped each time a worker claims the node run. Every later write names the attempt it
    -- belongs to, so a late or duplicate delivery finds a newer attempt and changes nothing.
    ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0,
    -- Incoming edges not decided yet, and those that fired: the node runs when the first
    -- reaches zero with the second above zero, and is skipped when it reaches zero with none.
    ADD COLUMN undecided_edges INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN fired_edges INTEGER NOT NULL DEFAULT 0,
    ADD CONSTRAINT node_runs_execution_node_key UNIQUE (execution_id, node_id),
    ADD CONSTRAINT node_runs_counters_check
        CHECK (attempt >= 0 AND undecided_edges >= 0 AND fired_edges >= 0);

ALTER TABLE executions
    -- Node runs not yet in a final state; the execution finishes when it reaches zero.
    ADD COLUMN remaining_nodes INTEGER NOT NULL DEFAULT 0,
    -- Whether some node failed without an error edge to handle it.
    ADD COLUMN unhandled_failure BOOLEAN NOT NULL DEFAULT FALSE,
    -- When settings.timeout runs out, if the workflow sets one.
    ADD COLUMN deadline_at TIMESTAMPTZ,
    ADD CONSTRAINT executions_remaining_check CHECK (remaining_nodes >= 0);

ALTER TABLE workflows
    ADD COLUMN cancelled_executions INTEGER NOT NULL DEFAULT 0,
    DROP CONSTRAINT workflows_counters_check,
    ADD CONSTRAINT workflows_counters_check CHECK (
        total_executions >= 0
        AND successful_executions >= 0
        AND failed_executions >= 0
        AND cancelled_executions >= 0
        AND successful_executions + failed_executions + cancelled_executions <= total_executions
    );

-- Two active workflows cannot answer the same webhook method and path.
CREATE UNIQUE INDEX idx_workflows_active_webhook_route ON workflows (
    (trigger_config -> 'config' ->> 'method'),
    (trigger_config -> 'config' ->> 'path')
) WHERE status = 'active' AND trigger_config ->> 'type' = 'webhook';
