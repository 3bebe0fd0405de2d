//! Workflows with their nodes and edges.
//!
//! A workflow is written as one document: the workflow row, its nodes and its edges go in
//! together in the caller's transaction, edges referring to nodes by position in the document.

use chrono::{DateTime, Utc};
use quantumflow_domain::{EdgeKind, NodeKind, WorkflowStatus};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::{Result, StorageError};

/// The SQL of [`find_active_webhook`], for tests that inspect its plan.
pub const ACTIVE_TRIGGER_SQL: &str = include_str!("../queries/workflow_by_active_trigger.sql");

/// A workflow definition with its counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Workflow {
    /// Primary key.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Free text, searched together with the name.
    pub description: Option<String>,
    /// Lifecycle status.
    pub status: WorkflowStatus,
    /// How the workflow is started, e.g. `{"type": "webhook", "config": {…}}`.
    pub trigger_config: Value,
    /// Timeout, retry policy, error handling.
    pub settings: Value,
    /// Starts at 1; each change to an active workflow makes a new version.
    pub version: i32,
    /// Whether this row is the newest version.
    pub is_latest: bool,
    /// The version this one was made from.
    pub parent_workflow_id: Option<Uuid>,
    /// Executions started. The row counts them as they end, in the transaction that ends them,
    /// so that starting one writes nothing shared; [`get`] and [`list`] add those in progress.
    pub total_executions: i32,
    /// Executions that ended `success`.
    pub successful_executions: i32,
    /// Executions that ended `failed`.
    pub failed_executions: i32,
    /// When the last execution started (kept on the row, like the counters, as they end).
    pub last_execution_at: Option<DateTime<Utc>>,
    /// Who owns it.
    pub owner_id: Uuid,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: Option<Uuid>,
    /// Who changed it last.
    pub updated_by: Option<Uuid>,
}

/// A node of a workflow.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Node {
    /// Primary key.
    pub id: Uuid,
    /// The workflow it belongs to.
    pub workflow_id: Uuid,
    /// Unique within the workflow.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// What the node does.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Type-specific settings.
    pub config: Value,
    /// How the node's input is assembled from earlier outputs.
    pub input_mapping: Value,
    /// How the node's output is reshaped.
    pub output_mapping: Value,
    /// Where the editor draws it.
    pub position: Value,
    /// Disabled nodes are skipped.
    pub is_enabled: bool,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
}

/// An edge of a workflow's DAG.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Edge {
    /// Primary key.
    pub id: Uuid,
    /// The workflow it belongs to.
    pub workflow_id: Uuid,
    /// Where it starts.
    pub source_node_id: Uuid,
    /// Where it ends.
    pub target_node_id: Uuid,
    /// When it fires.
    #[serde(rename = "type")]
    pub kind: EdgeKind,
    /// For conditional edges, the condition that must hold.
    pub condition: Value,
    /// Shown by the editor.
    pub label: Option<String>,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
}

/// A workflow row to create.
#[derive(Debug, Clone)]
pub struct NewWorkflow<'a> {
    /// Display name.
    pub name: &'a str,
    /// Free text.
    pub description: Option<&'a str>,
    /// Initial status.
    pub status: WorkflowStatus,
    /// Trigger configuration.
    pub trigger_config: &'a Value,
    /// Workflow settings.
    pub settings: &'a Value,
    /// Owner, also recorded as creator.
    pub owner_id: Uuid,
}

/// A node to create.
#[derive(Debug, Clone)]
pub struct NewNode<'a> {
    /// Unique within the workflow.
    pub name: &'a str,
    /// Free text.
    pub description: Option<&'a str>,
    /// What the node does.
    pub kind: NodeKind,
    /// Type-specific settings.
    pub config: &'a Value,
    /// Input mapping.
    pub input_mapping: &'a Value,
    /// Output mapping.
    pub output_mapping: &'a Value,
    /// Editor position.
    pub position: &'a Value,
    /// Whether the node runs.
    pub is_enabled: bool,
}

/// An edge to create, naming its endpoints by their index in the document's node list.
#[derive(Debug, Clone)]
pub struct NewEdge<'a> {
    /// Index of the source node.
    pub source: usize,
    /// Index of the target node.
    pub target: usize,
    /// When it fires.
    pub kind: EdgeKind,
    /// Condition of a conditional edge.
    pub condition: &'a Value,
    /// Editor label.
    pub label: Option<&'a str>,
}

/// A workflow as stored: the row, its nodes and its edges.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkflowDocument {
    /// The workflow row.
    #[serde(flatten)]
    pub workflow: Workflow,
    /// Its nodes, in creation order.
    pub nodes: Vec<Node>,
    /// Its edges, in creation order.
    pub edges: Vec<Edge>,
}

struct WorkflowRow {
    id: Uuid,
    name: String,
    description: Option<String>,
    status: String,
    trigger_config: Value,
    settings: Value,
    version: i32,
    is_latest: bool,
    parent_workflow_id: Option<Uuid>,
    total_executions: i32,
    successful_executions: i32,
    failed_executions: i32,
    last_execution_at: Option<DateTime<Utc>>,
    owner_id: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    created_by: Option<Uuid>,
    updated_by: Option<Uuid>,
}

/// Builds a [`Workflow`] from any record with the columns of `workflows`: each query macro
/// gives its query a record type of its own, and a listing's has a rank besides. Returns early
/// with [`StorageError::Corrupt`] on an unknown status.
macro_rules! workflow_from {
    ($row:expr) => {{
        let r = $row;
        Workflow {
            status: r
                .status
                .parse()
                .map_err(|e| StorageError::corrupt("workflows.status", &e))?,
            id: r.id,
            name: r.name,
            description: r.description,
            trigger_config: r.trigger_config,
            settings: r.settings,
            version: r.version,
            is_latest: r.is_latest,
            parent_workflow_id: r.parent_workflow_id,
            total_executions: r.total_executions,
            successful_executions: r.successful_executions,
            failed_executions: r.failed_executions,
            last_execution_at: r.last_execution_at,
            owner_id: r.owner_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
            created_by: r.created_by,
            updated_by: r.updated_by,
        }
    }};
}

impl TryFrom<WorkflowRow> for Workflow {
    type Error = StorageError;

    fn try_from(r: WorkflowRow) -> Result<Self> {
        Ok(workflow_from!(r))
    }
}

struct NodeRow {
    id: Uuid,
    workflow_id: Uuid,
    name: String,
    description: Option<String>,
    kind: String,
    config: Value,
    input_mapping: Value,
    output_mapping: Value,
    position: Value,
    is_enabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<NodeRow> for Node {
    type Error = StorageError;

    fn try_from(r: NodeRow) -> Result<Self> {
        Ok(Self {
            kind: r
                .kind
                .parse()
                .map_err(|e| StorageError::corrupt("nodes.type", &e))?,
            id: r.id,
            workflow_id: r.workflow_id,
            name: r.name,
            description: r.description,
            config: r.config,
            input_mapping: r.input_mapping,
            output_mapping: r.output_mapping,
            position: r.position,
            is_enabled: r.is_enabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

struct EdgeRow {
    id: Uuid,
    workflow_id: Uuid,
    source_node_id: Uuid,
    target_node_id: Uuid,
    kind: String,
    condition: Value,
    label: Option<String>,
    created_at: DateTime<Utc>,
}

impl TryFrom<EdgeRow> for Edge {
    type Error = StorageError;

    fn try_from(r: EdgeRow) -> Result<Self> {
        Ok(Self {
            kind: r
                .kind
                .parse()
                .map_err(|e| StorageError::corrupt("edges.type", &e))?,
            id: r.id,
            workflow_id: r.workflow_id,
            source_node_id: r.source_node_id,
            target_node_id: r.target_node_id,
            condition: r.condition,
            label: r.label,
            created_at: r.created_at,
        })
    }
}

fn convert<R, T: TryFrom<R, Error = StorageError>>(rows: Vec<R>) -> Result<Vec<T>> {
    rows.into_iter().map(T::try_from).collect()
}

/// Creates a workflow with its nodes and edges. Run it inside a transaction: on error the
/// caller's rollback leaves nothing half-written.
///
/// An edge whose index names no node is refused as [`StorageError::Invalid`]; validate the
/// graph with [`quantumflow_domain::WorkflowGraph`] first to report such mistakes properly.
pub async fn insert_document(
    conn: &mut PgConnection,
    workflow: &NewWorkflow<'_>,
    nodes: &[NewNode<'_>],
    edges: &[NewEdge<'_>],
) -> Result<WorkflowDocument> {
    let row = sqlx::query_as!(
        WorkflowRow,
        r#"
        INSERT INTO workflows
            (name, description, status, trigger_config, settings, owner_id, created_by, updated_by)
        VALUES ($1, $2, $3, $4, $5, $6, $6, $6)
        RETURNING id, name, description, status, trigger_config, settings, version, is_latest,
                  parent_workflow_id, total_executions, successful_executions,
                  failed_executions, last_execution_at, owner_id, created_at, updated_at,
                  created_by, updated_by
        "#,
        workflow.name,
        workflow.description,
        workflow.status.as_str(),
        workflow.trigger_config,
        workflow.settings,
        workflow.owner_id,
    )
    .fetch_one(&mut *conn)
    .await?;
    let workflow = Workflow::try_from(row)?;

    let nodes = insert_nodes(&mut *conn, workflow.id, nodes).await?;
    let edges = insert_edges(&mut *conn, workflow.id, &nodes, edges).await?;
    Ok(WorkflowDocument {
        workflow,
        nodes,
        edges,
    })
}

async fn insert_nodes(
    conn: &mut PgConnection,
    workflow_id: Uuid,
    nodes: &[NewNode<'_>],
) -> Result<Vec<Node>> {
    // One statement for all nodes: UNNEST turns the parallel arrays back into rows, and
    // WITH ORDINALITY keeps the document's order for the RETURNING list.
    // Ids are time-ordered (UUIDv7, monotonic within this process) so that reading a document
    // back by (created_at, id) returns its nodes in the order they were written.
    let ids: Vec<Uuid> = nodes.iter().map(|_| Uuid::now_v7()).collect();
    let names: Vec<&str> = nodes.iter().map(|n| n.name).collect();
    let descriptions: Vec<Option<&str>> = nodes.iter().map(|n| n.description).collect();
    let kinds: Vec<&str> = nodes.iter().map(|n| n.kind.as_str()).collect();
    let configs: Vec<Value> = nodes.iter().map(|n| n.config.clone()).collect();
    let inputs: Vec<Value> = nodes.iter().map(|n| n.input_mapping.clone()).collect();
    let outputs: Vec<Value> = nodes.iter().map(|n| n.output_mapping.clone()).collect();
    let positions: Vec<Value> = nodes.iter().map(|n| n.position.clone()).collect();
    let enabled: Vec<bool> = nodes.iter().map(|n| n.is_enabled).collect();

    let rows = sqlx::query_as!(
        NodeRow,
        r#"
        WITH input AS (
            SELECT *
            FROM UNNEST($2::varchar[], $3::text[], $4::varchar[], $5::jsonb[], $6::jsonb[],
                        $7::jsonb[], $8::jsonb[], $9::bool[], $10::uuid[])
                 WITH ORDINALITY
                 AS t(name, description, type, config, input_mapping, output_mapping,
                      position, is_enabled, id, ord)
        ),
        inserted AS (
            INSERT INTO nodes
                (id, workflow_id, name, description, type, config, input_mapping,
                 output_mapping, position, is_enabled)
            SELECT id, $1, name, description, type, config, input_mapping, output_mapping,
                   position, is_enabled
            FROM input
            ORDER BY ord
            RETURNING id, workflow_id, name, description, type, config, input_mapping,
                      output_mapping, position, is_enabled, created_at, updated_at
        )
        SELECT inserted.id AS "id!", inserted.workflow_id AS "workflow_id!",
               inserted.name AS "name!", inserted.description,
               inserted.type AS "kind!", inserted.config AS "config!",
               inserted.input_mapping AS "input_mapping!",
               inserted.output_mapping AS "output_mapping!",
               inserted.position AS "position!", inserted.is_enabled AS "is_enabled!",
               inserted.created_at AS "created_at!", inserted.updated_at AS "updated_at!"
        FROM inserted
        JOIN input USING (name)
        ORDER BY input.ord
        "#,
        workflow_id,
        &names as &[&str],
        &descriptions as &[Option<&str>],
        &kinds as &[&str],
        &configs,
        &inputs,
        &outputs,
        &positions,
        &enabled,
        &ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    convert(rows)
}

async fn insert_edges(
    conn: &mut PgConnection,
    workflow_id: Uuid,
    nodes: &[Node],
    edges: &[NewEdge<'_>],
) -> Result<Vec<Edge>> {
    let node_id = |index: usize| {
        nodes
            .get(index)
            .map(|n| n.id)
            .ok_or_else(|| StorageError::Invalid {
                constraint: format!("edge endpoint {index} names no node of the document"),
            })
    };
    let sources = edges
        .iter()
        .map(|e| node_id(e.source))
        .collect::<Result<Vec<_>>>()?;
    let targets = edges
        .iter()
        .map(|e| node_id(e.target))
        .collect::<Result<Vec<_>>>()?;
    let ids: Vec<Uuid> = edges.iter().map(|_| Uuid::now_v7()).collect();
    let kinds: Vec<&str> = edges.iter().map(|e| e.kind.as_str()).collect();
    let conditions: Vec<Value> = edges.iter().map(|e| e.condition.clone()).collect();
    let labels: Vec<Option<&str>> = edges.iter().map(|e| e.label).collect();

    let rows = sqlx::query_as!(
        EdgeRow,
        r#"
        INSERT INTO edges
            (id, workflow_id, source_node_id, target_node_id, type, condition, label)
        SELECT id, $1, source, target, type, condition, label
        FROM UNNEST($2::uuid[], $3::uuid[], $4::varchar[], $5::jsonb[], $6::varchar[],
                    $7::uuid[])
             WITH ORDINALITY AS t(source, target, type, condition, label, id, ord)
        ORDER BY ord
        RETURNING id, workflow_id, source_node_id, target_node_id, type AS kind, condition,
                  label, created_at
        "#,
        workflow_id,
        &sources,
        &targets,
        &kinds as &[&str],
        &conditions,
        &labels as &[Option<&str>],
        &ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    convert(rows)
}

/// Looks a workflow up by id.
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Workflow> {
    let row = sqlx::query_as!(
        WorkflowRow,
        r#"
        SELECT id, name, description, status, trigger_config, settings, version, is_latest,
               parent_workflow_id, c.total_executions AS "total_executions!",
               c.successful_executions AS "successful_executions!",
               c.failed_executions AS "failed_executions!",
               c.last_execution_at, owner_id, created_at, updated_at, created_by, updated_by
        FROM workflows AS w
        JOIN workflow_counters AS c ON c.workflow_id = w.id
        WHERE id = $1
        "#,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(StorageError::NotFound { entity: "workflow" })?;
    Workflow::try_from(row)
}

/// Loads a workflow with its nodes and edges.
pub async fn get_document(conn: &mut PgConnection, id: Uuid) -> Result<WorkflowDocument> {
    let workflow = get(&mut *conn, id).await?;
    let nodes = sqlx::query_as!(
        NodeRow,
        r#"
        SELECT id, workflow_id, name, description, type AS kind, config, input_mapping,
               output_mapping, position, is_enabled, created_at, updated_at
        FROM nodes
        WHERE workflow_id = $1
        ORDER BY created_at, id
        "#,
        id,
    )
    .fetch_all(&mut *conn)
    .await?;
    let edges = sqlx::query_as!(
        EdgeRow,
        r#"
        SELECT id, workflow_id, source_node_id, target_node_id, type AS kind, condition, label,
               created_at
        FROM edges
        WHERE workflow_id = $1
        ORDER BY created_at, id
        "#,
        id,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(WorkflowDocument {
        workflow,
        nodes: convert(nodes)?,
        edges: convert(edges)?,
    })
}

/// Loads a workflow with its nodes and edges as they were at one moment.
///
/// [`get_document`] reads the row, the nodes and the edges in three statements; outside a
/// transaction, a replace committing between them would pair old nodes with new edges. Here
/// the three share one snapshot.
pub async fn read_document(pool: &sqlx::PgPool, id: Uuid) -> Result<WorkflowDocument> {
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let document = get_document(&mut tx, id).await?;
    tx.commit().await?;
    Ok(document)
}

/// The active workflow listening for webhooks with `method` at `path`, if any.
pub async fn find_active_webhook(
    db: impl PgExecutor<'_>,
    method: &str,
    path: &str,
) -> Result<Option<Workflow>> {
    let pattern = webhook_trigger(method, path);
    let rows = sqlx::query_file_as!(
        WorkflowRow,
        "queries/workflow_by_active_trigger.sql",
        pattern
    )
    .fetch_all(db)
    .await?;
    let mut rows = rows.into_iter();
    let first = rows.next().map(Workflow::try_from).transpose()?;
    if let (Some(first), Some(_)) = (&first, rows.next()) {
        // Activation refuses a second claim on a method and path, so this means the rows were
        // written around that check; serve the oldest and say so loudly.
        tracing::warn!(
            workflow.id = %first.id,
            method,
            path,
            "several active workflows claim one webhook"
        );
    }
    Ok(first)
}

/// The containment pattern that [`find_active_webhook`] looks for.
pub fn webhook_trigger(method: &str, path: &str) -> Value {
    json!({"type": "webhook", "config": {"method": method, "path": path}})
}

/// The SQL of [`list`], for tests that inspect its plan.
pub const LIST_SQL: &str = include_str!("../queries/workflows_list.sql");

/// Filters and position for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter<'a> {
    /// Only workflows of this owner.
    pub owner_id: Option<Uuid>,
    /// Only workflows in this status.
    pub status: Option<WorkflowStatus>,
    /// Only workflows whose trigger is of this type (served by `idx_workflows_trigger_type`).
    pub trigger_type: Option<&'a str>,
    /// Only workflows whose name or description match this web-search style query (served by
    /// `idx_workflows_search`); results are then ordered by relevance.
    pub text: Option<&'a str>,
    /// Only rows after this one, the last of the previous page of the same filters.
    pub after: Option<ListCursor>,
    /// At most this many rows.
    pub limit: i64,
}

/// Where a page of [`list`] ended: its last row's sort key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListCursor {
    /// The row's rank, exactly as [`list`] returned it; 0 without a text query.
    pub rank: f32,
    /// The row's `created_at`.
    pub created_at: DateTime<Utc>,
    /// The row's id, breaking ties between equal ranks and timestamps.
    pub id: Uuid,
}

/// A workflow as [`list`] returns it, with the rank it was sorted by.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// The workflow row with its counters.
    pub workflow: Workflow,
    /// How well it matches the text query (`ts_rank`); 0 without one.
    pub rank: f32,
}

impl Listed {
    /// The cursor that resumes a listing right after this row.
    pub fn cursor(&self) -> ListCursor {
        ListCursor {
            rank: self.rank,
            created_at: self.workflow.created_at,
            id: self.workflow.id,
        }
    }
}

/// Lists the latest versions of workflows, newest first or, with a text query, best match
/// first, after `filter.after` when given.
pub async fn list(db: impl PgExecutor<'_>, filter: &ListFilter<'_>) -> Result<Vec<Listed>> {
    let after = filter.after;
    let rows = sqlx::query_file!(
        "queries/workflows_list.sql",
        filter.owner_id,
        filter.status.map(WorkflowStatus::as_str),
        filter.trigger_type,
        filter.text,
        after.map(|c| c.created_at),
        after.map(|c| c.id),
        after.map(|c| c.rank),
        filter.limit,
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            let rank = r.rank;
            Ok(Listed {
                workflow: workflow_from!(r),
                rank,
            })
        })
        .collect()
}

/// The versions of the workflow chain `id` belongs to, newest first: every row reachable from
/// it through `parent_workflow_id`, in either direction (the SQL function `workflow_lineage`).
pub async fn versions(db: impl PgExecutor<'_>, id: Uuid) -> Result<Vec<Workflow>> {
    let rows = sqlx::query_as!(
        WorkflowRow,
        r#"
        SELECT w.id, name, description, status, trigger_config, settings, version, is_latest,
               parent_workflow_id, c.total_executions AS "total_executions!",
               c.successful_executions AS "successful_executions!",
               c.failed_executions AS "failed_executions!",
               c.last_execution_at, owner_id, created_at, updated_at, created_by, updated_by
        FROM workflow_lineage($1) AS chain (id)
        JOIN workflows AS w ON w.id = chain.id
        JOIN workflow_counters AS c ON c.workflow_id = w.id
        ORDER BY version DESC, created_at DESC, w.id DESC
        "#,
        id,
    )
    .fetch_all(db)
    .await?;
    convert(rows)
}

/// Locks workflow `id` for the rest of the caller's transaction and reads it (its counters as
/// the row holds them, without executions not folded in yet).
///
/// The lock is `FOR UPDATE`, which also waits for, and then holds off, executions being
/// recorded for the workflow (their foreign key takes a key-share lock on this row), so a
/// replace sees every execution committed before it and none starts under it.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Workflow> {
    let row = sqlx::query_as!(
        WorkflowRow,
        r#"
        SELECT id, name, description, status, trigger_config, settings, version, is_latest,
               parent_workflow_id, total_executions, successful_executions, failed_executions,
               last_execution_at, owner_id, created_at, updated_at, created_by, updated_by
        FROM workflows
        WHERE id = $1
        FOR UPDATE
        "#,
        id,
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StorageError::NotFound { entity: "workflow" })?;
    Workflow::try_from(row)
}

/// Whether any execution of workflow `id` was ever recorded.
pub async fn has_executions(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool> {
    let found = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM executions WHERE workflow_id = $1) AS "found!""#,
        id,
    )
    .fetch_one(db)
    .await?;
    Ok(found)
}

/// Rewrites workflow `id` in place on behalf of user `by`: its row takes `with`, and its nodes
/// and edges are replaced by `nodes` and `edges`. Run it in the transaction that [`lock`]ed the
/// row. A replace never moves ownership: `with.owner_id` must be the workflow's owner, or the
/// workflow is not found.
///
/// Node runs belong to nodes and go with them, so only a workflow without executions should be
/// rewritten this way; [`insert_version`] keeps the history of one that has run. `updated_at`
/// moves strictly forward even if the clock does not, since caches of the document compare it.
pub async fn replace_in_place(
    conn: &mut PgConnection,
    id: Uuid,
    with: &NewWorkflow<'_>,
    by: Uuid,
    nodes: &[NewNode<'_>],
    edges: &[NewEdge<'_>],
) -> Result<WorkflowDocument> {
    let done = sqlx::query!(
        r#"
        UPDATE workflows
        SET name = $2, description = $3, status = $4, trigger_config = $5, settings = $6,
            updated_by = $7, updated_at = greatest(now(), updated_at + interval '1 microsecond')
        WHERE id = $1 AND owner_id = $8
        "#,
        id,
        with.name,
        with.description,
        with.status.as_str(),
        with.trigger_config,
        with.settings,
        by,
        with.owner_id,
    )
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StorageError::NotFound { entity: "workflow" });
    }
    // Edges go with their nodes (ON DELETE CASCADE).
    sqlx::query!("DELETE FROM nodes WHERE workflow_id = $1", id)
        .execute(&mut *conn)
        .await?;
    let nodes = insert_nodes(&mut *conn, id, nodes).await?;
    insert_edges(&mut *conn, id, &nodes, edges).await?;
    get_document(conn, id).await
}

/// Makes `with` the next version of `previous` on behalf of user `by`; `previous` must be the
/// latest version and [`lock`]ed by the caller's transaction. The new row gets `version + 1`,
/// `previous` as its parent and `is_latest`, and keeps `previous`'s owner (`with.owner_id` is
/// not read); `previous` is archived first, so that its webhook route is free for the new
/// version within the same transaction. The webhook deliveries `previous` accepted are copied
/// to the new version, so a repeat of one is still answered as a duplicate.
pub async fn insert_version(
    conn: &mut PgConnection,
    previous: &Workflow,
    with: &NewWorkflow<'_>,
    by: Uuid,
    nodes: &[NewNode<'_>],
    edges: &[NewEdge<'_>],
) -> Result<WorkflowDocument> {
    sqlx::query!(
        r#"
        UPDATE workflows
        SET status = 'archived', is_latest = false, updated_by = $2,
            updated_at = greatest(now(), updated_at + interval '1 microsecond')
        WHERE id = $1
        "#,
        previous.id,
        by,
    )
    .execute(&mut *conn)
    .await?;
    let id = sqlx::query_scalar!(
        r#"
        INSERT INTO workflows
            (name, description, status, trigger_config, settings, version, is_latest,
             parent_workflow_id, owner_id, created_by, updated_by)
        VALUES ($1, $2, $3, $4, $5, $6::int + 1, true, $7, $8, $9, $9)
        RETURNING id
        "#,
        with.name,
        with.description,
        with.status.as_str(),
        with.trigger_config,
        with.settings,
        previous.version,
        previous.id,
        previous.owner_id,
        by,
    )
    .fetch_one(&mut *conn)
    .await?;
    let nodes = insert_nodes(&mut *conn, id, nodes).await?;
    insert_edges(&mut *conn, id, &nodes, edges).await?;
    // The new version answers the same senders: a delivery the old one accepted is still a
    // repeat, so its id goes along (the executions stay with the version that ran them).
    sqlx::query!(
        r#"
        INSERT INTO webhook_deliveries (workflow_id, delivery_id, execution_id, received_at)
        SELECT $2, delivery_id, execution_id, received_at
        FROM webhook_deliveries
        WHERE workflow_id = $1
        "#,
        previous.id,
        id,
    )
    .execute(&mut *conn)
    .await?;
    get_document(conn, id).await
}

/// Moves a workflow to `status`, as long as it is still in `from` (a compare-and-set, so two
/// concurrent changes cannot both win).
pub async fn set_status(
    db: impl PgExecutor<'_>,
    id: Uuid,
    from: WorkflowStatus,
    to: WorkflowStatus,
    by: Option<Uuid>,
) -> Result<bool> {
    let done = sqlx::query!(
        r#"
        UPDATE workflows
        SET status = $3, updated_at = now(), updated_by = coalesce($4, updated_by)
        WHERE id = $1 AND status = $2
        "#,
        id,
        from.as_str(),
        to.as_str(),
        by,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets one value deep inside `settings` (`jsonb_set`), creating the key if missing; returns the
/// new settings.
pub async fn set_setting(
    db: impl PgExecutor<'_>,
    id: Uuid,
    path: &[&str],
    value: &Value,
) -> Result<Value> {
    sqlx::query_scalar!(
        r#"
        UPDATE workflows
        SET settings = jsonb_set(settings, $2::text[], $3, true), updated_at = now()
        WHERE id = $1
        RETURNING settings
        "#,
        id,
        path as &[&str],
        value,
    )
    .fetch_optional(db)
    .await?
    .ok_or(StorageError::NotFound { entity: "workflow" })
}

/// Merges `patch` into `settings` at the top level (`||`); returns the new settings.
pub async fn merge_settings(db: impl PgExecutor<'_>, id: Uuid, patch: &Value) -> Result<Value> {
    sqlx::query_scalar!(
        r#"
        UPDATE workflows
        SET settings = settings || $2, updated_at = now()
        WHERE id = $1
        RETURNING settings
        "#,
        id,
        patch,
    )
    .fetch_optional(db)
    .await?
    .ok_or(StorageError::NotFound { entity: "workflow" })
}

/// Removes a top-level key from `settings` (`- key`); returns the new settings.
pub async fn remove_setting(db: impl PgExecutor<'_>, id: Uuid, key: &str) -> Result<Value> {
    sqlx::query_scalar!(
        r#"
        UPDATE workflows
        SET settings = settings - $2::text, updated_at = now()
        WHERE id = $1
        RETURNING settings
        "#,
        id,
        key,
    )
    .fetch_optional(db)
    .await?
    .ok_or(StorageError::NotFound { entity: "workflow" })
}

/// Nodes whose `config.connector` is `connector` (containment, served by `idx_nodes_config`).
pub async fn nodes_using_connector(db: impl PgExecutor<'_>, connector: &str) -> Result<Vec<Node>> {
    let rows = sqlx::query_as!(
        NodeRow,
        r#"
        SELECT id, workflow_id, name, description, type AS kind, config, input_mapping,
               output_mapping, position, is_enabled, created_at, updated_at
        FROM nodes
        WHERE config @> jsonb_build_object('connector', $1::text)
        ORDER BY created_at, id
        "#,
        connector,
    )
    .fetch_all(db)
    .await?;
    convert(rows)
}

/// Nodes of a workflow whose `config.headers` has a header named `header` (`?`).
pub async fn nodes_sending_header(
    db: impl PgExecutor<'_>,
    workflow_id: Uuid,
    header: &str,
) -> Result<Vec<Node>> {
    let rows = sqlx::query_as!(
        NodeRow,
        r#"
        SELECT id, workflow_id, name, description, type AS kind, config, input_mapping,
               output_mapping, position, is_enabled, created_at, updated_at
        FROM nodes
        WHERE workflow_id = $1 AND config -> 'headers' ? $2
        ORDER BY created_at, id
        "#,
        workflow_id,
        header,
    )
    .fetch_all(db)
    .await?;
    convert(rows)
}

/// Deletes a workflow with every version of it and, by cascade, their nodes, edges and
/// executions.
pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> Result<()> {
    // Versions are one workflow's history, and each names its parent, so they go together:
    // any version's id removes them all, in one statement, which the parent keys allow.
    let done = sqlx::query!(
        r#"
        DELETE FROM workflows WHERE id IN (SELECT workflow_lineage($1))
        "#,
        id,
    )
    .execute(db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StorageError::NotFound { entity: "workflow" });
    }
    Ok(())
}

/// The methods for which some active workflow listens at webhook `path`, to tell "wrong
/// method" (405) from "no such webhook" (404).
pub async fn webhook_methods(db: impl PgExecutor<'_>, path: &str) -> Result<Vec<String>> {
    let methods = sqlx::query_scalar!(
        r#"
        SELECT DISTINCT trigger_config -> 'config' ->> 'method' AS "method!"
        FROM workflows
        WHERE trigger_config @> jsonb_build_object('type', 'webhook',
                                                   'config', jsonb_build_object('path', $1::text))
          AND trigger_config ->> 'type' = 'webhook'
          AND status = 'active'
          AND trigger_config -> 'config' ->> 'method' IS NOT NULL
        ORDER BY 1
        "#,
        path,
    )
    .fetch_all(db)
    .await?;
    Ok(methods)
}
