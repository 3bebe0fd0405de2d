-- A workflow's versions form a chain: each version names the one it replaced in
-- parent_workflow_id. workflow_lineage(id) returns the ids of every version in the chain of
-- version `id`, itself included, whichever version `id` is; none when no workflow has that id.
-- Listing a workflow's versions and deleting a workflow both read the chain through it, so
-- the walk is written once.
--
-- Expand only: older binaries walk the chain with their own query.

CREATE FUNCTION workflow_lineage(version_id UUID) RETURNS SETOF UUID
LANGUAGE sql STABLE STRICT AS $$
    WITH RECURSIVE root AS (
        -- Up from the given version to the first one, which has no parent.
        SELECT id, parent_workflow_id FROM workflows WHERE id = version_id
        UNION ALL
        SELECT w.id, w.parent_workflow_id
        FROM workflows AS w JOIN root ON w.id = root.parent_workflow_id
    ),
    chain AS (
        -- Down from the first version through every later one.
        SELECT id FROM root WHERE parent_workflow_id IS NULL
        UNION ALL
        SELECT w.id FROM workflows AS w JOIN chain ON w.parent_workflow_id = chain.id
    )
    SELECT id FROM chain
$$;
