-- pgbench script: the rows a one-node execution must write under QuantumFlow's data model, and
-- nothing else. No HTTP, no queue, no worker: three transactions with the same rows, indexes
-- and constraints as the engine's (the trigger's accept, the claim, the finish with its
-- counter row), but each a single round trip of literal SQL. Its rate is a ceiling for the
-- engine's one-node executions per second on the same server, and the ratio between the two
-- is the price of everything else. Run by one-node-rows.sh, which sets the workflow's and its
-- two nodes' ids and a snapshot of it (pgbench substitutes variables as text, hence the quotes).

\set n random(1, 1000000000)

BEGIN;
INSERT INTO executions
    (id, workflow_id, workflow_name, workflow_version, status, trigger_type, trigger_data,
     workflow_snapshot, input_data, started_at, remaining_nodes)
VALUES (gen_random_uuid(), ':workflow', 'bound', 1, 'running', 'webhook',
        jsonb_build_object('method', 'POST', 'path', '/webhook/bound', 'query', '{}'::jsonb,
                           'headers', jsonb_build_object('content-type', 'application/json')),
        ':snapshot',
        jsonb_build_object('n', :n), now(), 1)
RETURNING id AS execution \gset
INSERT INTO node_runs
    (execution_id, node_id, node_name, node_type, status, output_data, undecided_edges,
     fired_edges, started_at, completed_at, duration_ms)
VALUES (':execution', ':trigger', 'trigger', 'trigger', 'success',
        jsonb_build_object('n', :n), 0, 0, now(), now(), 0),
       (':execution', ':action', 'action', 'transform', 'pending', '{}', 0, 1, NULL, NULL, NULL);
COMMIT;

UPDATE node_runs SET status = 'running', attempt = attempt + 1, started_at = now()
WHERE execution_id = ':execution' AND node_id = ':action' AND status = 'pending';

BEGIN;
UPDATE node_runs
SET status = 'success', input_data = jsonb_build_object('n', :n),
    output_data = jsonb_build_object('n', :n), completed_at = now(), duration_ms = 0
WHERE execution_id = ':execution' AND node_id = ':action';
UPDATE executions
SET status = 'success', remaining_nodes = 0, output_data = jsonb_build_object('n', :n),
    completed_at = now(), duration_ms = 1
WHERE id = ':execution';
INSERT INTO workflow_counter_deltas
    (workflow_id, successful_executions, failed_executions, cancelled_executions,
     last_execution_at)
VALUES (':workflow', 1, 0, 0, now());
COMMIT;
