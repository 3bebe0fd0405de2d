-- The chain of versions is walked by each query again.
DROP FUNCTION workflow_lineage(UUID);
