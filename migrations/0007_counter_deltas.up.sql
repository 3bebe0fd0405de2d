-- Ending an execution used to add it to its workflow's counters on the workflow's row. Every
-- execution of a workflow ends on that one row, so under load the ending transactions queued on
-- its lock, each for as long as the one before it took to commit. An ending transaction now
-- records what it adds as a row of workflow_counter_deltas, which nothing else contends for,
-- and a background task folds those rows into the workflows about once a second, deleting them
-- in the same statement. The view workflow_counters adds the rows not folded yet (and the
-- executions still in progress, counted in the total from their start), so counters read
-- through it are exact at every moment.
--
-- No foreign key to workflows: checking it would lock the workflow's row in every ending
-- transaction, the contention this table exists to avoid. The fold drops rows whose workflow
-- has been deleted.

CREATE TABLE workflow_counter_deltas (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id UUID NOT NULL,
    successful_executions INTEGER NOT NULL,
    failed_executions INTEGER NOT NULL,
    cancelled_executions INTEGER NOT NULL,
    -- When the latest of the executions counted here started.
    last_execution_at TIMESTAMPTZ,
    CONSTRAINT workflow_counter_deltas_counts_check CHECK (
        successful_executions >= 0 AND failed_executions >= 0 AND cancelled_executions >= 0
    )
);

CREATE INDEX idx_workflow_counter_deltas_workflow ON workflow_counter_deltas (workflow_id);

CREATE VIEW workflow_counters AS
SELECT w.id AS workflow_id,
       w.total_executions + coalesce(d.successful + d.failed + d.cancelled, 0)
           + r.in_progress AS total_executions,
       w.successful_executions + coalesce(d.successful, 0) AS successful_executions,
       w.failed_executions + coalesce(d.failed, 0) AS failed_executions,
       w.cancelled_executions + coalesce(d.cancelled, 0) AS cancelled_executions,
       greatest(w.last_execution_at, d.latest_start, r.latest_start) AS last_execution_at
FROM workflows AS w
CROSS JOIN LATERAL (
    SELECT sum(successful_executions)::int AS successful,
           sum(failed_executions)::int AS failed,
           sum(cancelled_executions)::int AS cancelled,
           max(last_execution_at) AS latest_start
    FROM workflow_counter_deltas
    WHERE workflow_id = w.id
) AS d
CROSS JOIN LATERAL (
    SELECT count(*)::int AS in_progress, max(created_at) AS latest_start
    FROM executions
    WHERE workflow_id = w.id AND status IN ('pending', 'running')
) AS r;
