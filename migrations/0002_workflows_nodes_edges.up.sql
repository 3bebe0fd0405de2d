-- Workflow definitions: the workflow row, its nodes, and the edges of its DAG.

CREATE TABLE workflows (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name VARCHAR(255) NOT NULL,
    description TEXT,

    status VARCHAR(20) NOT NULL DEFAULT 'draft',

    -- {"type": "webhook", "config": {"method": "POST", "path": "/webhook/abc123"}}
    trigger_config JSONB NOT NULL DEFAULT '{}',
    -- {"timeout": 3600, "retry_policy": {"max_retries": 3, "retry_delay": 60},
    --  "error_handling": "continue"}
    settings JSONB NOT NULL DEFAULT '{}',

    version INTEGER NOT NULL DEFAULT 1,
    is_latest BOOLEAN NOT NULL DEFAULT TRUE,
    parent_workflow_id UUID REFERENCES workflows (id),

    -- Denormalised counters, kept exact by the engine in the transaction that finishes each
    -- execution.
    total_executions INTEGER NOT NULL DEFAULT 0,
    successful_executions INTEGER NOT NULL DEFAULT 0,
    failed_executions INTEGER NOT NULL DEFAULT 0,
    last_execution_at TIMESTAMPTZ,

    owner_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,

    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    created_by UUID REFERENCES users (id),
    updated_by UUID REFERENCES users (id),

    CONSTRAINT workflows_status_check
        CHECK (status IN ('draft', 'active', 'paused', 'archived')),
    CONSTRAINT workflows_version_check CHECK (version >= 1),
    CONSTRAINT workflows_counters_check CHECK (
        total_executions >= 0
        AND successful_executions >= 0
        AND failed_executions >= 0
        AND successful_executions + failed_executions <= total_executions
    )
);

CREATE INDEX idx_workflows_owner ON workflows (owner_id);
CREATE INDEX idx_workflows_status ON workflows (status);
CREATE INDEX idx_workflows_is_latest ON workflows (is_latest) WHERE is_latest = TRUE;
CREATE INDEX idx_workflows_created_at ON workflows (created_at DESC);
CREATE INDEX idx_workflows_owner_status ON workflows (owner_id, status);
CREATE INDEX idx_active_workflows ON workflows (owner_id, created_at DESC)
    WHERE status = 'active';

-- JSONB: containment lookups of triggers, filters by trigger type, settings queries.
CREATE INDEX idx_workflows_trigger_config ON workflows USING GIN (trigger_config);
CREATE INDEX idx_workflows_trigger_type ON workflows USING GIN ((trigger_config -> 'type'));
CREATE INDEX idx_workflows_settings ON workflows USING GIN (settings);
CREATE INDEX idx_active_webhooks ON workflows USING GIN (trigger_config)
    WHERE trigger_config ->> 'type' = 'webhook' AND status = 'active';
CREATE INDEX idx_workflow_status_trigger ON workflows (status, (trigger_config ->> 'type'));

-- Full-text search over name and description. Queries must repeat this exact expression for
-- the planner to use the index.
CREATE INDEX idx_workflows_search ON workflows USING GIN (
    to_tsvector('english', coalesce(name, '') || ' ' || coalesce(description, ''))
);

CREATE TABLE nodes (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_id UUID NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,

    name VARCHAR(255) NOT NULL,
    description TEXT,
    type VARCHAR(50) NOT NULL,

    config JSONB NOT NULL DEFAULT '{}',
    input_mapping JSONB NOT NULL DEFAULT '{}',
    output_mapping JSONB NOT NULL DEFAULT '{}',
    position JSONB NOT NULL DEFAULT '{"x": 0, "y": 0}',

    is_enabled BOOLEAN NOT NULL DEFAULT TRUE,

    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT nodes_type_check
        CHECK (type IN ('trigger', 'action', 'transform', 'condition', 'delay')),
    -- Edges and templates refer to nodes by name, so a name must identify one node.
    CONSTRAINT nodes_workflow_name_key UNIQUE (workflow_id, name)
);

CREATE INDEX idx_nodes_workflow ON nodes (workflow_id);
CREATE INDEX idx_nodes_type ON nodes (type);
CREATE INDEX idx_nodes_is_enabled ON nodes (is_enabled) WHERE is_enabled = TRUE;
CREATE INDEX idx_nodes_config ON nodes USING GIN (config);
CREATE INDEX idx_nodes_connector ON nodes USING GIN ((config -> 'connector'));

CREATE TABLE edges (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_id UUID NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,

    source_node_id UUID NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    target_node_id UUID NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,

    type VARCHAR(20) NOT NULL DEFAULT 'default',
    -- {"expression": "{{output.status}} == 'success'", "operator": "equals", "value": "success"}
    condition JSONB NOT NULL DEFAULT '{}',
    label VARCHAR(100),

    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT no_self_loop CHECK (source_node_id != target_node_id),
    CONSTRAINT unique_edge UNIQUE (workflow_id, source_node_id, target_node_id, type),
    CONSTRAINT edges_type_check CHECK (type IN ('default', 'conditional', 'error'))
);

CREATE INDEX idx_edges_workflow ON edges (workflow_id);
CREATE INDEX idx_edges_source ON edges (source_node_id);
CREATE INDEX idx_edges_target ON edges (target_node_id);
CREATE INDEX idx_edges_type ON edges (type);
CREATE INDEX idx_edges_condition ON edges USING GIN (condition);
