//! The migrated schema holds every table, column, constraint and index of the data model.

use quantumflow_storage::schema::{self, MigrationSet};
use quantumflow_testkit::TestDb;
use sqlx::PgPool;

/// Every index the data model recommends, with the part of its definition that matters:
/// access method, key expression and, for partial indexes, the predicate.
const INDEXES: &[(&str, &str, &str)] = &[
    (
        "users",
        "idx_users_email",
        "UNIQUE INDEX idx_users_email ON public.users USING btree (email)",
    ),
    ("users", "idx_users_username", "USING btree (username)"),
    (
        "users",
        "idx_users_is_active",
        "USING btree (is_active) WHERE (is_active = true)",
    ),
    ("workflows", "idx_workflows_owner", "USING btree (owner_id)"),
    ("workflows", "idx_workflows_status", "USING btree (status)"),
    (
        "workflows",
        "idx_workflows_is_latest",
        "USING btree (is_latest) WHERE (is_latest = true)",
    ),
    (
        "workflows",
        "idx_workflows_created_at",
        "USING btree (created_at DESC)",
    ),
    (
        "workflows",
        "idx_workflows_owner_status",
        "USING btree (owner_id, status)",
    ),
    (
        "workflows",
        "idx_active_workflows",
        "USING btree (owner_id, created_at DESC) WHERE ((status)::text = 'active'::text)",
    ),
    (
        "workflows",
        "idx_workflows_trigger_config",
        "USING gin (trigger_config)",
    ),
    (
        "workflows",
        "idx_workflows_trigger_type",
        "USING gin (((trigger_config -> 'type'::text)))",
    ),
    (
        "workflows",
        "idx_workflows_settings",
        "USING gin (settings)",
    ),
    (
        "workflows",
        "idx_active_webhooks",
        "USING gin (trigger_config) WHERE (((trigger_config ->> 'type'::text) = 'webhook'::text) \
         AND ((status)::text = 'active'::text))",
    ),
    (
        "workflows",
        "idx_workflow_status_trigger",
        "USING btree (status, ((trigger_config ->> 'type'::text)))",
    ),
    (
        "workflows",
        "idx_workflows_search",
        "USING gin (to_tsvector('english'::regconfig, (((COALESCE(name, ''::character \
         varying))::text || ' '::text) || COALESCE(description, ''::text))))",
    ),
    ("nodes", "idx_nodes_workflow", "USING btree (workflow_id)"),
    ("nodes", "idx_nodes_type", "USING btree (type)"),
    (
        "nodes",
        "idx_nodes_is_enabled",
        "USING btree (is_enabled) WHERE (is_enabled = true)",
    ),
    ("nodes", "idx_nodes_config", "USING gin (config)"),
    (
        "nodes",
        "idx_nodes_connector",
        "USING gin (((config -> 'connector'::text)))",
    ),
    ("edges", "idx_edges_workflow", "USING btree (workflow_id)"),
    ("edges", "idx_edges_source", "USING btree (source_node_id)"),
    ("edges", "idx_edges_target", "USING btree (target_node_id)"),
    ("edges", "idx_edges_type", "USING btree (type)"),
    ("edges", "idx_edges_condition", "USING gin (condition)"),
    (
        "edges",
        "unique_edge",
        "UNIQUE INDEX unique_edge ON public.edges USING btree (workflow_id, source_node_id, \
         target_node_id, type)",
    ),
    (
        "executions",
        "idx_executions_workflow",
        "USING btree (workflow_id)",
    ),
    (
        "executions",
        "idx_executions_status",
        "USING btree (status)",
    ),
    (
        "executions",
        "idx_executions_created_at",
        "USING btree (created_at DESC)",
    ),
    (
        "executions",
        "idx_executions_triggered_by",
        "USING btree (triggered_by)",
    ),
    (
        "executions",
        "idx_executions_workflow_status",
        "USING btree (workflow_id, status)",
    ),
    (
        "executions",
        "idx_executions_workflow_created",
        "USING btree (workflow_id, created_at DESC)",
    ),
    (
        "executions",
        "idx_failed_executions",
        "USING btree (workflow_id, created_at DESC) WHERE ((status)::text = 'failed'::text)",
    ),
    (
        "executions",
        "idx_executions_trigger_data",
        "USING gin (trigger_data)",
    ),
    (
        "executions",
        "idx_executions_input_data",
        "USING gin (input_data)",
    ),
    (
        "node_runs",
        "idx_node_runs_execution",
        "USING btree (execution_id)",
    ),
    ("node_runs", "idx_node_runs_node", "USING btree (node_id)"),
    ("node_runs", "idx_node_runs_status", "USING btree (status)"),
    (
        "node_runs",
        "idx_node_runs_created_at",
        "USING btree (created_at DESC)",
    ),
    (
        "node_runs",
        "idx_node_runs_execution_status",
        "USING btree (execution_id, status)",
    ),
    (
        "connectors",
        "idx_connectors_owner",
        "USING btree (owner_id)",
    ),
    ("connectors", "idx_connectors_type", "USING btree (type)"),
    (
        "connectors",
        "idx_connectors_is_active",
        "USING btree (is_active) WHERE (is_active = true)",
    ),
    ("connectors", "idx_connectors_config", "USING gin (config)"),
    (
        "workflow_counter_deltas",
        "idx_workflow_counter_deltas_workflow",
        "USING btree (workflow_id)",
    ),
    (
        "api_tokens",
        "idx_api_tokens_hash",
        "UNIQUE INDEX idx_api_tokens_hash ON public.api_tokens USING btree (token_hash)",
    ),
    (
        "api_tokens",
        "idx_api_tokens_user",
        "USING btree (user_id, created_at DESC)",
    ),
    (
        "webhook_deliveries",
        "webhook_deliveries_pkey",
        "UNIQUE INDEX webhook_deliveries_pkey ON public.webhook_deliveries USING btree \
         (workflow_id, delivery_id)",
    ),
    (
        "webhook_deliveries",
        "idx_webhook_deliveries_received_at",
        "USING btree (received_at)",
    ),
];

/// Every column of the data model, plus the engine's bookkeeping columns: table, column, type,
/// default (as PostgreSQL prints it).
const COLUMNS: &[(&str, &str, &str, Option<&str>)] = &[
    ("users", "id", "uuid", Some("gen_random_uuid()")),
    ("users", "email", "character varying(255)", None),
    ("users", "username", "character varying(100)", None),
    ("users", "hashed_password", "character varying(255)", None),
    ("users", "full_name", "character varying(255)", None),
    ("users", "is_active", "boolean", Some("true")),
    ("users", "is_superuser", "boolean", Some("false")),
    (
        "users",
        "created_at",
        "timestamp with time zone",
        Some("CURRENT_TIMESTAMP"),
    ),
    (
        "users",
        "updated_at",
        "timestamp with time zone",
        Some("CURRENT_TIMESTAMP"),
    ),
    ("users", "last_login_at", "timestamp with time zone", None),
    ("workflows", "id", "uuid", Some("gen_random_uuid()")),
    ("workflows", "name", "character varying(255)", None),
    ("workflows", "description", "text", None),
    (
        "workflows",
        "status",
        "character varying(20)",
        Some("'draft'::character varying"),
    ),
    ("workflows", "trigger_config", "jsonb", Some("'{}'::jsonb")),
    ("workflows", "settings", "jsonb", Some("'{}'::jsonb")),
    ("workflows", "version", "integer", Some("1")),
    ("workflows", "is_latest", "boolean", Some("true")),
    ("workflows", "parent_workflow_id", "uuid", None),
    ("workflows", "total_executions", "integer", Some("0")),
    ("workflows", "successful_executions", "integer", Some("0")),
    ("workflows", "failed_executions", "integer", Some("0")),
    (
        "workflows",
        "last_execution_at",
        "timestamp with time zone",
        None,
    ),
    ("workflows", "owner_id", "uuid", None),
    (
        "workflows",
        "created_at",
        "timestamp with time zone",
        Some("CURRENT_TIMESTAMP"),
    ),
    (
        "workflows",
        "updated_at",
        "timestamp with time zone",
        Some("CURRENT_TIMESTAMP"),
    ),
    ("workflows", "created_by", "uuid", None),
    ("workflows", "cancelled_executions", "integer", Some("0")),
    ("workflows", "updated_by", "uuid", None),
    ("nodes", "id", "uuid", Some("gen_random_uuid()")),
    ("nodes", "workflow_id", "uuid", None),
    ("nodes", "name", "character varying(255)", None),
    ("nodes", "description", "text", None),
    ("nodes", "type", "character varying(50)", None),
    ("nodes", "config", "jsonb", Some("'{}'::jsonb")),
    ("nodes", "input_mapping", "jsonb", Some("'{}'::jsonb")),
    ("nodes", "output_mapping", "jsonb", Some("'{}'::jsonb")),
    (
        "nodes",
        "position",
        "jsonb",
        Some(r#"'{"x": 0, "y": 0}'::jsonb"#),
    ),
    ("nodes", "is_enabled", "boolean", Some("true")),
    (
        "nodes",
        "created_at",
        "timestamp with time zone",
        Some("CURRENT_TIMESTAMP"),
    ),
    (
        "nodes",
        "updated_at",
        "timestamp with time zone",
        Some("CURRENT_TIMESTAMP"),
    ),
    ("edges", "id", "uuid", Some("gen_random_uuid()")),
    ("edges", "workflow_id", "uuid", None),
    ("edges", "source_node_id", "uuid", None),
    ("edges", "target_node_id", "uuid", None),
    (
        "edges",
        "type",
        "character varying(20)",
        Some("'default'::character varying"),
    ),
    ("edges", "condition", "jsonb", Some("'{}'::jsonb")),
    ("edges", "label", "character varying(100)", None),
    (
        "edges",
        "created_at",
        "timestamp with time zone",
        Some("CURRENT_TIMESTAMP"),
    ),
    ("executions", "id", "uuid", Some("gen_random_uuid()")),
    ("executions", "workflow_id", "uuid", None),
    (
        "executions",
        "workflow_name",
        "character varying(255)",
        None,
    ),
    ("executions", "workflow_version", "integer", None),
    ("executions", "remaining_nodes", "integer", Some("0")),
    ("executions", "unhandled_failure", "boolean", Some("false")),
    (
        "executions",
        "deadline_at",
        "timestamp with time zone",
        None,
    ),
    (
        "executions",
        "status",
        "character varying(20)",
        Some("'pending'::character varying"),
    ),
    ("executions", "trigger_type", "character varying(50)", None),
    ("executions", "trigger_data", "jsonb", Some("'{}'::jsonb")),
    ("executions", "traceparent", "character varying(55)", None),
    ("executions", "tracestate", "character varying(512)", None),
    ("executions", "workflow_snapshot", "jsonb", None),
    ("executions", "input_data", "jsonb", Some("'{}'::jsonb")),
    ("executions", "output_data", "jsonb", Some("'{}'::jsonb")),
    ("executions", "error_message", "text", None),
    ("executions", "error_stack", "text", None),
    ("executions", "started_at", "timestamp with time zone", None),
    (
        "executions",
        "completed_at",
        "timestamp with time zone",
        None,
    ),
    ("executions", "duration_ms", "integer", None),
    ("executions", "triggered_by", "uuid", None),
    (
        "executions",
        "created_at",
        "timestamp with time zone",
        Some("CURRENT_TIMESTAMP"),
    ),
    ("node_runs", "id", "uuid", Some("gen_random_uuid()")),
    ("node_runs", "execution_id", "uuid", None),
    ("node_runs", "node_id", "uuid", None),
    ("node_runs", "node_name", "character varying(255)", None),
    ("node_runs", "node_type", "character varying(50)", None),
    (
        "node_runs",
        "status",
        "character varying(20)",
        Some("'pending'::character varying"),
    ),
    ("node_runs", "input_data", "jsonb", Some("'{}'::jsonb")),
    ("node_runs", "output_data", "jsonb", Some("'{}'::jsonb")),
    ("node_runs", "error_message", "text", None),
    ("node_runs", "error_stack", "text", None),
    ("node_runs", "retry_count", "integer", Some("0")),
    ("node_runs", "attempt", "integer", Some("0")),
    ("node_runs", "undecided_edges", "integer", Some("0")),
    ("node_runs", "fired_edges", "integer", Some("0")),
    ("node_runs", "carrier_id", "uuid", None),
    ("node_runs", "max_retries", "integer", Some("3")),
    ("node_runs", "started_at", "timestamp with time zone", None),
    (
        "node_runs",
        "completed_at",
        "timestamp with time zone",
        None,
    ),
    ("node_runs", "duration_ms", "integer", None),
    (
        "node_runs",
        "created_at",
        "timestamp with time zone",
        Some("CURRENT_TIMESTAMP"),
    ),
    ("connectors", "id", "uuid", Some("gen_random_uuid()")),
    ("connectors", "name", "character varying(255)", None),
    ("connectors", "type", "character varying(50)", None),
    ("connectors", "description", "text", None),
    ("connectors", "config", "jsonb", Some("'{}'::jsonb")),
    ("connectors", "credentials", "jsonb", Some("'{}'::jsonb")),
    ("connectors", "is_active", "boolean", Some("true")),
    (
        "connectors",
        "last_tested_at",
        "timestamp with time zone",
        None,
    ),
    ("connectors", "test_status", "character varying(20)", None),
    ("connectors", "owner_id", "uuid", None),
    (
        "connectors",
        "created_at",
        "timestamp with time zone",
        Some("CURRENT_TIMESTAMP"),
    ),
    (
        "connectors",
        "updated_at",
        "timestamp with time zone",
        Some("CURRENT_TIMESTAMP"),
    ),
    ("connectors", "created_by", "uuid", None),
    ("connectors", "updated_by", "uuid", None),
    ("workflow_counter_deltas", "id", "bigint", None),
    ("workflow_counter_deltas", "workflow_id", "uuid", None),
    (
        "workflow_counter_deltas",
        "successful_executions",
        "integer",
        None,
    ),
    (
        "workflow_counter_deltas",
        "failed_executions",
        "integer",
        None,
    ),
    (
        "workflow_counter_deltas",
        "cancelled_executions",
        "integer",
        None,
    ),
    (
        "workflow_counter_deltas",
        "last_execution_at",
        "timestamp with time zone",
        None,
    ),
    ("api_tokens", "id", "uuid", Some("gen_random_uuid()")),
    ("api_tokens", "user_id", "uuid", None),
    ("api_tokens", "name", "character varying(100)", None),
    ("api_tokens", "token_hash", "bytea", None),
    ("api_tokens", "prefix", "character varying(16)", None),
    (
        "api_tokens",
        "created_at",
        "timestamp with time zone",
        Some("CURRENT_TIMESTAMP"),
    ),
    ("api_tokens", "expires_at", "timestamp with time zone", None),
    (
        "api_tokens",
        "last_used_at",
        "timestamp with time zone",
        None,
    ),
    ("api_tokens", "revoked_at", "timestamp with time zone", None),
    ("webhook_deliveries", "workflow_id", "uuid", None),
    (
        "webhook_deliveries",
        "delivery_id",
        "character varying(255)",
        None,
    ),
    ("webhook_deliveries", "execution_id", "uuid", None),
    (
        "webhook_deliveries",
        "received_at",
        "timestamp with time zone",
        Some("CURRENT_TIMESTAMP"),
    ),
];

/// Foreign keys: table, column, referenced table, ON DELETE rule.
const FOREIGN_KEYS: &[(&str, &str, &str, &str)] = &[
    ("workflows", "owner_id", "users", "CASCADE"),
    ("workflows", "parent_workflow_id", "workflows", "NO ACTION"),
    ("workflows", "created_by", "users", "NO ACTION"),
    ("workflows", "updated_by", "users", "NO ACTION"),
    ("nodes", "workflow_id", "workflows", "CASCADE"),
    ("edges", "workflow_id", "workflows", "CASCADE"),
    ("edges", "source_node_id", "nodes", "CASCADE"),
    ("edges", "target_node_id", "nodes", "CASCADE"),
    ("executions", "workflow_id", "workflows", "CASCADE"),
    ("executions", "triggered_by", "users", "NO ACTION"),
    ("node_runs", "execution_id", "executions", "CASCADE"),
    ("node_runs", "node_id", "nodes", "CASCADE"),
    ("connectors", "owner_id", "users", "CASCADE"),
    ("connectors", "created_by", "users", "NO ACTION"),
    ("connectors", "updated_by", "users", "NO ACTION"),
    ("api_tokens", "user_id", "users", "CASCADE"),
    ("webhook_deliveries", "workflow_id", "workflows", "CASCADE"),
    (
        "webhook_deliveries",
        "execution_id",
        "executions",
        "CASCADE",
    ),
];

async fn migrated_empty_db() -> TestDb {
    let db = TestDb::empty().await;
    schema::apply(db.pool(), MigrationSet::quantumflow())
        .await
        .unwrap();
    db
}

#[tokio::test]
async fn every_index_of_the_data_model_exists_with_its_method_and_predicate() {
    let db = migrated_empty_db().await;

    for (table, name, definition) in INDEXES {
        let found: Option<(String, String)> = sqlx::query_as(
            "SELECT tablename::text, indexdef FROM pg_indexes \
             WHERE schemaname = 'public' AND indexname = $1",
        )
        .bind(name)
        .fetch_optional(db.pool())
        .await
        .unwrap();
        let (found_table, indexdef) = found.unwrap_or_else(|| panic!("index {name} is missing"));
        assert_eq!(&found_table, table, "index {name} is on the wrong table");
        assert!(indexdef.contains(definition), "index {name}: {indexdef}");
    }
}

#[tokio::test]
async fn the_over_indexing_mistakes_are_left_out() {
    let db = migrated_empty_db().await;

    let found: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE indexname = ANY($1) ORDER BY 1",
    )
    .bind([
        "idx_workflows_name",
        "idx_workflows_description",
        "idx_workflows_version",
    ])
    .fetch_all(db.pool())
    .await
    .unwrap();

    assert!(found.is_empty(), "{found:?}");
}

#[tokio::test]
async fn every_column_has_its_type_and_default() {
    let db = migrated_empty_db().await;

    let actual: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod), \
                pg_get_expr(d.adbin, d.adrelid) \
         FROM pg_attribute a \
         JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 \
           AND NOT a.attisdropped AND c.relname <> '_sqlx_migrations' \
         ORDER BY 1, 2",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();

    let mut expected: Vec<(String, String, String, Option<String>)> = COLUMNS
        .iter()
        .map(|(t, c, ty, d)| {
            (
                t.to_string(),
                c.to_string(),
                ty.to_string(),
                d.map(String::from),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(actual, expected);
}

#[tokio::test]
async fn foreign_keys_cascade_where_the_data_model_says() {
    let db = migrated_empty_db().await;

    for (table, column, referenced, rule) in FOREIGN_KEYS {
        let found: Option<(String, String)> = sqlx::query_as(
            "SELECT ccu.table_name::text, rc.delete_rule::text \
             FROM information_schema.key_column_usage kcu \
             JOIN information_schema.referential_constraints rc \
               ON rc.constraint_name = kcu.constraint_name \
             JOIN information_schema.constraint_column_usage ccu \
               ON ccu.constraint_name = kcu.constraint_name \
             WHERE kcu.table_name = $1 AND kcu.column_name = $2",
        )
        .bind(table)
        .bind(column)
        .fetch_optional(db.pool())
        .await
        .unwrap();
        let (found_ref, found_rule) =
            found.unwrap_or_else(|| panic!("{table}.{column} has no foreign key"));
        assert_eq!(
            (&found_ref[..], &found_rule[..]),
            (*referenced, *rule),
            "{table}.{column}"
        );
    }
}

#[tokio::test]
async fn the_data_models_named_constraints_exist() {
    let db = migrated_empty_db().await;

    let check = |name: &'static str, kind: char| {
        let pool = db.pool().clone();
        async move {
            let found: Option<String> =
                sqlx::query_scalar("SELECT contype::text FROM pg_constraint WHERE conname = $1")
                    .bind(name)
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            assert_eq!(
                found.as_deref(),
                Some(&kind.to_string()[..]),
                "constraint {name}"
            );
        }
    };
    check("users_email_check", 'c').await;
    check("no_self_loop", 'c').await;
    check("unique_edge", 'u').await;
}

/// A textual fingerprint of everything the migrations create.
async fn catalog(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 'table ' || c.relname || '.' || a.attname || ' ' \
                || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped \
           AND c.relname <> '_sqlx_migrations' \
         UNION ALL \
         SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public' \
           AND tablename <> '_sqlx_migrations' \
         UNION ALL \
         SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid) \
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace \
           AND conrelid <> 'public._sqlx_migrations'::regclass \
         UNION ALL \
         SELECT 'options ' || relname || ' ' || array_to_string(reloptions, ',') \
         FROM pg_class WHERE relnamespace = 'public'::regnamespace AND reloptions IS NOT NULL \
         UNION ALL \
         SELECT 'function ' || proname || '(' || pg_get_function_arguments(oid) || ') ' \
                || pg_get_function_result(oid) \
         FROM pg_proc WHERE pronamespace = 'public'::regnamespace \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn down_to_zero_and_up_again_gives_the_same_catalog() {
    let db = migrated_empty_db().await;
    let before = catalog(db.pool()).await;

    schema::revert(db.pool(), MigrationSet::quantumflow(), 0)
        .await
        .unwrap();
    let emptied = catalog(db.pool()).await;
    schema::apply(db.pool(), MigrationSet::quantumflow())
        .await
        .unwrap();
    let after = catalog(db.pool()).await;

    assert!(emptied.is_empty(), "left behind: {emptied:?}");
    assert!(
        before.len() > 150,
        "suspiciously small catalog: {}",
        before.len()
    );
    assert_eq!(before, after);
}

#[tokio::test]
async fn reverting_one_step_removes_only_the_newest_tables() {
    let db = migrated_empty_db().await;

    schema::revert(db.pool(), MigrationSet::quantumflow(), 2)
        .await
        .unwrap();
    let report = schema::inspect(db.pool(), MigrationSet::quantumflow())
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
         AND tablename <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();

    assert_eq!(
        tables,
        ["connectors", "edges", "nodes", "users", "workflows"]
    );
    assert_eq!(report.version(), 2);
    assert_eq!(
        report.pending().map(|m| m.version).collect::<Vec<_>>(),
        [3, 4, 5, 6, 7, 8, 9, 10, 11]
    );
}

#[tokio::test]
async fn applying_twice_is_a_no_op() {
    let db = migrated_empty_db().await;
    let before = catalog(db.pool()).await;

    schema::apply(db.pool(), MigrationSet::quantumflow())
        .await
        .unwrap();

    assert_eq!(catalog(db.pool()).await, before);
    let report = schema::inspect(db.pool(), MigrationSet::quantumflow())
        .await
        .unwrap();
    assert!(report.is_current());
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_binary_is_recognised() {
    let db = migrated_empty_db().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    )
    .execute(db.pool())
    .await
    .unwrap();

    let report = schema::inspect(db.pool(), MigrationSet::quantumflow())
        .await
        .unwrap();
    let err = schema::apply(db.pool(), MigrationSet::quantumflow())
        .await
        .unwrap_err();

    assert_eq!(report.unknown, [9999]);
    assert!(!report.is_current());
    assert!(err.to_string().contains("newer QuantumFlow"), "{err}");
}

#[tokio::test]
async fn execution_pages_keep_room_for_updates_in_place() {
    let db = migrated_empty_db().await;
    let options = |pool: PgPool| async move {
        sqlx::query_scalar::<_, Option<Vec<String>>>(
            "SELECT reloptions FROM pg_class WHERE oid = 'public.executions'::regclass",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };

    let migrated = options(db.pool().clone()).await;
    schema::revert(db.pool(), MigrationSet::quantumflow(), 5)
        .await
        .unwrap();
    let reverted = options(db.pool().clone()).await;

    assert_eq!(migrated, Some(vec!["fillfactor=50".to_owned()]));
    assert_eq!(reverted, None);
}

#[tokio::test]
async fn reverting_the_counter_deltas_folds_them_into_the_workflows_first() {
    let db = migrated_empty_db().await;
    sqlx::raw_sql(
        "INSERT INTO users (email, username, hashed_password) \
             VALUES ('o@example.com', 'o', 'x'); \
         INSERT INTO workflows (name, owner_id, total_executions, successful_executions) \
             SELECT 'w', id, 2, 2 FROM users; \
         INSERT INTO workflow_counter_deltas \
             (workflow_id, successful_executions, failed_executions, cancelled_executions) \
             SELECT id, 3, 1, 0 FROM workflows",
    )
    .execute(db.pool())
    .await
    .unwrap();

    schema::revert(db.pool(), MigrationSet::quantumflow(), 6)
        .await
        .unwrap();

    let counters: (i32, i32, i32) = sqlx::query_as(
        "SELECT total_executions, successful_executions, failed_executions FROM workflows",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(counters, (6, 5, 1));
}
