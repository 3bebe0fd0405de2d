-- Every node run that ends updates its execution's row (`remaining_nodes`), so a 10-node
-- execution is rewritten about a dozen times. None of those updates change an indexed column,
-- so PostgreSQL can keep them on the row's page (a HOT update) and skip every index, the two
-- GIN indexes over the payload included, but only if the page has room for the new version.
-- Leaving half of each page free gives it that room. It applies to pages written from now on;
-- `VACUUM FULL executions` rewrites the existing ones.

ALTER TABLE executions SET (fillfactor = 50);
