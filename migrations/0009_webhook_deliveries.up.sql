-- Signed webhook deliveries already accepted, so that a repeat of one (a sender's retry, or a
-- captured request replayed) starts nothing and is answered with the original execution.
--
-- The primary key is what makes the check race-free: the row is inserted in the transaction
-- that writes the execution, and a second copy of the delivery, even one committed by another
-- writer at the same moment, waits on the key and then finds it taken.
--
-- Rows older than the retention are pruned by the control plane. The retention is far longer
-- than any signature's timestamp tolerance, so a replay is refused by its stale timestamp long
-- before its row is forgotten.

CREATE TABLE webhook_deliveries (
    workflow_id UUID NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    delivery_id VARCHAR(255) NOT NULL,
    -- Deferred: the delivery is claimed first, then the execution it starts is written, in the
    -- same transaction.
    execution_id UUID NOT NULL REFERENCES executions (id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED,
    received_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,

    PRIMARY KEY (workflow_id, delivery_id)
);

CREATE INDEX idx_webhook_deliveries_received_at ON webhook_deliveries (received_at);
