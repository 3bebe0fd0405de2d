-- The history of runs: one row per execution, one per node within it.

CREATE TABLE executions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_id UUID NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,

    -- Copied from the workflow so history reads without a join and survives renames.
    workflow_name VARCHAR(255),
    workflow_version INTEGER,

    status VARCHAR(20) NOT NULL DEFAULT 'pending',

    trigger_type VARCHAR(50),
    trigger_data JSONB NOT NULL DEFAULT '{}',

    -- The workflow, its nodes, edges and settings as they were when the execution began.
    -- Workers run from this snapshot, never from the live definition.
    workflow_snapshot JSONB NOT NULL,

    input_data JSONB NOT NULL DEFAULT '{}',
    output_data JSONB NOT NULL DEFAULT '{}',

    error_message TEXT,
    error_stack TEXT,

    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    duration_ms INTEGER,

    triggered_by UUID REFERENCES users (id),

    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT executions_status_check
        CHECK (status IN ('pending', 'running', 'success', 'failed', 'cancelled')),
    CONSTRAINT executions_trigger_type_check
        CHECK (trigger_type IN ('manual', 'webhook', 'schedule', 'api')),
    CONSTRAINT executions_duration_check CHECK (duration_ms >= 0)
);

CREATE INDEX idx_executions_workflow ON executions (workflow_id);
CREATE INDEX idx_executions_status ON executions (status);
CREATE INDEX idx_executions_created_at ON executions (created_at DESC);
CREATE INDEX idx_executions_triggered_by ON executions (triggered_by);
CREATE INDEX idx_executions_workflow_status ON executions (workflow_id, status);
CREATE INDEX idx_executions_workflow_created ON executions (workflow_id, created_at DESC);
CREATE INDEX idx_failed_executions ON executions (workflow_id, created_at DESC)
    WHERE status = 'failed';
CREATE INDEX idx_executions_trigger_data ON executions USING GIN (trigger_data);
CREATE INDEX idx_executions_input_data ON executions USING GIN (input_data);

CREATE TABLE node_runs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    execution_id UUID NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    node_id UUID NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,

    node_name VARCHAR(255),
    node_type VARCHAR(50),

    status VARCHAR(20) NOT NULL DEFAULT 'pending',

    input_data JSONB NOT NULL DEFAULT '{}',
    output_data JSONB NOT NULL DEFAULT '{}',

    error_message TEXT,
    error_stack TEXT,

    retry_count INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 3,

    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    duration_ms INTEGER,

    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT node_runs_status_check
        CHECK (status IN ('pending', 'running', 'success', 'failed', 'skipped')),
    CONSTRAINT node_runs_retries_check CHECK (retry_count >= 0 AND max_retries >= 0),
    CONSTRAINT node_runs_duration_check CHECK (duration_ms >= 0)
);

CREATE INDEX idx_node_runs_execution ON node_runs (execution_id);
CREATE INDEX idx_node_runs_node ON node_runs (node_id);
CREATE INDEX idx_node_runs_status ON node_runs (status);
CREATE INDEX idx_node_runs_created_at ON node_runs (created_at DESC);
CREATE INDEX idx_node_runs_execution_status ON node_runs (execution_id, status);
