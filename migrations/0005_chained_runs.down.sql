-- Runs started by a finishing node lose the link to the queue job they run under; a worker
-- crash then leaves them running until the execution times out.

DROP INDEX idx_node_runs_carrier;

ALTER TABLE node_runs DROP COLUMN carrier_id;
