-- A worker that finishes a node may start one of its successors at once, in the transaction
-- that records the finish, instead of queueing a job for it: a chain of nodes then costs one
-- queue job, not one per node. Such a run has no queue job of its own; it runs under the job
-- of the run that started the chain, and `carrier_id` names that run. If the worker dies, the
-- queue hands that job to another worker, which takes over whichever run of the chain is
-- unfinished.

ALTER TABLE node_runs ADD COLUMN carrier_id UUID;

CREATE INDEX idx_node_runs_carrier ON node_runs (carrier_id) WHERE carrier_id IS NOT NULL;
