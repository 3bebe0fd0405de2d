-- A page of the latest workflow versions: best match first for a text query ($4), newest
-- first otherwise, after an optional (rank, created_at, id) cursor ($7, $5, $6).
--
-- The trigger-type and text predicates repeat the expressions of idx_workflows_trigger_type
-- and idx_workflows_search exactly; any other spelling and the planner cannot use them. Without
-- a text query every rank is 0, so one keyset serves both orders. The page is chosen before the
-- counters are joined, so only the rows shown pay for counting their executions.
WITH page AS (
    SELECT w.id, r.rank, w.created_at
    FROM workflows AS w
    CROSS JOIN LATERAL (
        SELECT CASE WHEN $4::text IS NULL THEN 0::real ELSE
                   ts_rank(to_tsvector('english',
                               coalesce(w.name, '') || ' ' || coalesce(w.description, '')),
                           websearch_to_tsquery('english', $4))
               END AS rank
    ) AS r
    WHERE w.is_latest
      AND ($1::uuid IS NULL OR w.owner_id = $1)
      AND ($2::text IS NULL OR w.status = $2)
      AND ($3::text IS NULL OR w.trigger_config -> 'type' @> to_jsonb($3::text))
      AND ($4::text IS NULL
           OR to_tsvector('english', coalesce(name, '') || ' ' || coalesce(description, ''))
              @@ websearch_to_tsquery('english', $4))
      AND ($5::timestamptz IS NULL OR (r.rank, w.created_at, w.id) < ($7::real, $5, $6::uuid))
    ORDER BY r.rank DESC, w.created_at DESC, w.id DESC
    LIMIT $8
)
SELECT w.id, w.name, w.description, w.status, w.trigger_config, w.settings, w.version,
       w.is_latest, w.parent_workflow_id, c.total_executions AS "total_executions!",
       c.successful_executions AS "successful_executions!",
       c.failed_executions AS "failed_executions!",
       c.last_execution_at, w.owner_id, w.created_at, w.updated_at, w.created_by, w.updated_by,
       page.rank AS "rank!"
FROM page
JOIN workflows AS w ON w.id = page.id
JOIN workflow_counters AS c ON c.workflow_id = page.id
ORDER BY page.rank DESC, page.created_at DESC, page.id DESC
