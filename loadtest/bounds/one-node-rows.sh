#!/usr/bin/env bash
# Measures one-node-rows.sql with pgbench on a scratch database of the server DATABASE_URL
# names (default: the local server), migrated by the quantumflow binary so the schema is the
# engine's own. Usage:
#
#   loadtest/bounds/one-node-rows.sh [CLIENTS] [SECONDS]
#
# CLIENTS defaults to 16 and SECONDS to 20. The scratch database qf_bound is dropped and
# created again on every run. Build the binary first: cargo build --release -p quantumflow.
set -euo pipefail

clients=${1:-16}
seconds=${2:-20}
server=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
scratch="${server%/*}/qf_bound"

psql "$server" -qc "DROP DATABASE IF EXISTS qf_bound" -c "CREATE DATABASE qf_bound"
DATABASE_URL=$scratch "$root/target/release/quantumflow" migrate up >/dev/null

ids=$(psql "$scratch" -qAt -F ' ' <<'SQL'
INSERT INTO users (email, username, hashed_password) VALUES ('bound@example.com', 'bound', 'x');
WITH w AS (
    INSERT INTO workflows (name, owner_id, status, trigger_config)
    SELECT 'bound', id, 'active', '{"type": "webhook"}' FROM users RETURNING id
), t AS (
    INSERT INTO nodes (workflow_id, name, type) SELECT id, 'trigger', 'trigger' FROM w
    RETURNING id, workflow_id
), a AS (
    INSERT INTO nodes (workflow_id, name, type) SELECT id, 'action', 'transform' FROM w
    RETURNING id
)
SELECT t.workflow_id, t.id, a.id FROM t, a;
SQL
)
read -r workflow trigger action <<<"$ids"
snapshot=$(psql "$scratch" -qAt -c "SELECT jsonb_build_object('workflow', to_jsonb(w),
    'nodes', (SELECT jsonb_agg(n) FROM nodes AS n WHERE n.workflow_id = w.id), 'edges', '[]')
    FROM workflows AS w")

pgbench "$scratch" --no-vacuum --client "$clients" --jobs 2 --time "$seconds" \
    --define workflow="$workflow" --define trigger="$trigger" --define action="$action" \
    --define snapshot="$snapshot" \
    --file "$here/one-node-rows.sql"
