-- The newest executions of one workflow, newest first, after an optional (created_at, id)
-- cursor, optionally of one status; served by idx_executions_workflow_created without a sort.
SELECT id, workflow_id, workflow_name, workflow_version, status, trigger_type, trigger_data,
       input_data, output_data, error_message, error_stack, started_at, completed_at,
       duration_ms, triggered_by, created_at, traceparent
FROM executions
WHERE workflow_id = $1
  AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
  AND ($5::text IS NULL OR status = $5)
ORDER BY created_at DESC, id DESC
LIMIT $4
