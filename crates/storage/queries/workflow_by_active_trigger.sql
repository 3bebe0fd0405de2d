-- The active workflow whose trigger_config contains $1, e.g.
-- {"type": "webhook", "config": {"method": "POST", "path": "/webhook/new-user"}}.
--
-- Containment (@>) is what the GIN indexes on trigger_config answer; the literal predicates on
-- type and status let the planner pick the small partial index idx_active_webhooks.
SELECT id, name, description, status, trigger_config, settings, version, is_latest,
       parent_workflow_id, total_executions, successful_executions, failed_executions,
       last_execution_at, owner_id, created_at, updated_at, created_by, updated_by
FROM workflows
WHERE trigger_config @> $1
  AND trigger_config ->> 'type' = 'webhook'
  AND status = 'active'
ORDER BY created_at, id
LIMIT 2
