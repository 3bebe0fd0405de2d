-- Folds the counts not yet folded into the workflows before dropping their table, so that
-- reverting loses none.

DROP VIEW workflow_counters;

UPDATE workflows AS w
SET total_executions = w.total_executions + d.successful + d.failed + d.cancelled,
    successful_executions = w.successful_executions + d.successful,
    failed_executions = w.failed_executions + d.failed,
    cancelled_executions = w.cancelled_executions + d.cancelled,
    last_execution_at = greatest(w.last_execution_at, d.latest_start)
FROM (
    SELECT workflow_id,
           sum(successful_executions)::int AS successful,
           sum(failed_executions)::int AS failed,
           sum(cancelled_executions)::int AS cancelled,
           max(last_execution_at) AS latest_start
    FROM workflow_counter_deltas
    GROUP BY workflow_id
) AS d
WHERE w.id = d.workflow_id;

DROP TABLE workflow_counter_deltas;
