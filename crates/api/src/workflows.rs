//! Workflows as resources: `POST /api/v1/workflows` creates one from a single JSON document,
//! `GET /api/v1/workflows/{id}` reads it back in the same shape, `PUT` replaces it with a new
//! document, `DELETE` removes it, and `POST /api/v1/workflows/{id}/activate`, `/pause` and
//! `/archive` move it through its lifecycle. `GET /api/v1/workflows` lists the caller's
//! workflows a page at a time, and `GET /api/v1/workflows/{id}/versions` the versions of one.
//!
//! A replace keeps history: a workflow that is active, or has run, is never rewritten; the
//! document becomes its next version, a new row whose parent is the replaced one, which is
//! archived in the same transaction. Only a draft or paused workflow that never ran is
//! rewritten in place.
//!
//! In both directions edges name their endpoints by node name, as people write them; the
//! stored edges point at node ids, which the response carries as well. A document is checked
//! whole before anything is written: its shape by serde (a 400 on the first mismatch), its
//! content by `check`, which reports every problem at once as a 422 with a JSON pointer to
//! each, so an editor can mark all of them in one round trip.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse};
use chrono::{DateTime, Utc};
use quantumflow_domain::graph::{self, EdgeSpec, NodeSpec};
use quantumflow_domain::{
    EdgeKind, ErrorHandling, NodeKind, RetryPolicy, WorkflowGraph, WorkflowStatus,
};
use quantumflow_storage::StorageError;
use quantumflow_storage::connectors;
use quantumflow_storage::workflows::{
    self, Edge, ListCursor, ListFilter, NewEdge, NewNode, NewWorkflow, Node, Workflow,
    WorkflowDocument,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::FieldError;
use crate::extract::{JsonBody, PathId};
use crate::openapi::{
    BadRequest, Conflict, NotFound, PayloadTooLarge, TokenErrors, Unprocessable,
    UnsupportedMediaType,
};
use crate::signature;
use crate::{ApiError, AppState, paging};

/// Where a workflow lives; the `Location` of a created one is this followed by its id.
const COLLECTION: &str = "/api/v1/workflows";

/// Longest workflow or node name, in characters (`VARCHAR(255)` in the schema).
const NAME_MAX_CHARS: usize = 255;

/// Longest edge label, in characters (`VARCHAR(100)` in the schema).
const LABEL_MAX_CHARS: usize = 100;

/// Every webhook route starts with this, so webhooks never shadow the API's own paths.
const WEBHOOK_PREFIX: &str = "/webhook/";

/// Methods a webhook trigger may listen for.
const WEBHOOK_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The document's top-level fields in the order they are usually written; problems are listed
/// in this order, so they read top to bottom.
const DOCUMENT_ORDER: [&str; 7] = [
    "name",
    "description",
    "status",
    "trigger_config",
    "settings",
    "nodes",
    "edges",
];

/// The unique index that keeps two active workflows from claiming one webhook route.
const ACTIVE_WEBHOOK_ROUTE_INDEX: &str = "idx_workflows_active_webhook_route";

/// The body of `POST /api/v1/workflows` and of `PUT /api/v1/workflows/{id}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    /// Display name: not blank, at most 255 characters.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// On create, `draft` (when absent) or `active`; on replace, any status the workflow may
    /// move to from its current one except `archived` (unchanged when absent).
    pub status: Option<String>,
    /// How the workflow is started.
    pub trigger_config: TriggerConfig,
    /// An object; `timeout`, `retry_policy` and `error_handling` are checked, other keys kept.
    #[serde(default = "empty_object", deserialize_with = "object")]
    #[schema(value_type = Object)]
    pub settings: Value,
    /// The nodes, exactly one of them of type `trigger`.
    pub nodes: Vec<NodeDocument>,
    /// The edges between the nodes.
    #[serde(default)]
    pub edges: Vec<EdgeDocument>,
}

/// `trigger_config`: how a workflow is started.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// `webhook`, `manual` or `schedule`.
    #[serde(rename = "type")]
    pub kind: String,
    /// An object; a webhook's needs `method` and `path`.
    #[serde(default = "empty_object", deserialize_with = "object")]
    #[schema(value_type = Object)]
    pub config: Value,
}

/// A node in a workflow document.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeDocument {
    /// Unique within the workflow; edges refer to the node by it.
    pub name: String,
    /// `trigger`, `action`, `transform`, `condition` or `delay`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text.
    pub description: Option<String>,
    /// Type-specific settings, an object.
    #[serde(default = "empty_object", deserialize_with = "object")]
    #[schema(value_type = Object)]
    pub config: Value,
    /// How the node's input is assembled, an object.
    #[serde(default = "empty_object", deserialize_with = "object")]
    #[schema(value_type = Object)]
    pub input_mapping: Value,
    /// How the node's output is reshaped, an object.
    #[serde(default = "empty_object", deserialize_with = "object")]
    #[schema(value_type = Object)]
    pub output_mapping: Value,
    /// Where the editor draws the node, an object; `{"x": 0, "y": 0}` when absent.
    #[serde(default = "origin", deserialize_with = "object")]
    #[schema(value_type = Object)]
    pub position: Value,
    /// Disabled nodes are skipped; `true` when absent.
    #[serde(default = "enabled")]
    pub is_enabled: bool,
}

/// An edge in a workflow document, naming its endpoints by node name.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeDocument {
    /// Name of the node the edge leaves.
    pub source: String,
    /// Name of the node the edge enters.
    pub target: String,
    /// `default` (when absent), `conditional` or `error`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// For a conditional edge, the condition that must hold; an object.
    #[serde(default = "empty_object", deserialize_with = "object")]
    #[schema(value_type = Object)]
    pub condition: Value,
    /// Shown by the editor; at most 100 characters.
    pub label: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn origin() -> Value {
    json!({"x": 0, "y": 0})
}

fn enabled() -> bool {
    true
}

/// Accepts a JSON object only, kept as a [`Value`] because that is what storage writes.
fn object<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    Map::deserialize(deserializer).map(Value::Object)
}

/// A workflow as the API shows it: the row with its counters, its nodes and its edges.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WorkflowView {
    /// Primary key.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Free text.
    #[schema(required = true)]
    pub description: Option<String>,
    /// Lifecycle status.
    pub status: WorkflowStatus,
    /// How the workflow is started.
    #[schema(value_type = Object)]
    pub trigger_config: Value,
    /// Timeout, retry policy, error handling.
    #[schema(value_type = Object)]
    pub settings: Value,
    /// Starts at 1; each change to an active workflow makes a new version.
    pub version: i32,
    /// Whether this is the newest version.
    pub is_latest: bool,
    /// The version this one was made from.
    #[schema(required = true)]
    pub parent_workflow_id: Option<Uuid>,
    /// Executions started.
    pub total_executions: i32,
    /// Executions that ended `success`.
    pub successful_executions: i32,
    /// Executions that ended `failed`.
    pub failed_executions: i32,
    /// When the last execution started.
    #[schema(required = true)]
    pub last_execution_at: Option<DateTime<Utc>>,
    /// Who owns it.
    pub owner_id: Uuid,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Who created it.
    #[schema(required = true)]
    pub created_by: Option<Uuid>,
    /// Who changed it last.
    #[schema(required = true)]
    pub updated_by: Option<Uuid>,
    /// Its nodes, in document order; left out of listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub nodes: Option<Vec<NodeView>>,
    /// Its edges, in document order; left out of listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub edges: Option<Vec<EdgeView>>,
}

/// A node as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    /// Primary key.
    pub id: Uuid,
    /// Unique within the workflow.
    pub name: String,
    /// What the node does.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Free text.
    #[schema(required = true)]
    pub description: Option<String>,
    /// Type-specific settings.
    #[schema(value_type = Object)]
    pub config: Value,
    /// How the node's input is assembled.
    #[schema(value_type = Object)]
    pub input_mapping: Value,
    /// How the node's output is reshaped.
    #[schema(value_type = Object)]
    pub output_mapping: Value,
    /// Where the editor draws it.
    #[schema(value_type = Object)]
    pub position: Value,
    /// Disabled nodes are skipped.
    pub is_enabled: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// An edge as the API shows it: endpoints by node name, as in the create body, and by id.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EdgeView {
    /// Primary key.
    pub id: Uuid,
    /// Name of the node the edge leaves.
    pub source: String,
    /// Name of the node the edge enters.
    pub target: String,
    /// Id of the node the edge leaves.
    pub source_node_id: Uuid,
    /// Id of the node the edge enters.
    pub target_node_id: Uuid,
    /// When it fires.
    #[serde(rename = "type")]
    pub kind: EdgeKind,
    /// For a conditional edge, the condition that must hold.
    #[schema(value_type = Object)]
    pub condition: Value,
    /// Shown by the editor.
    #[schema(required = true)]
    pub label: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl TryFrom<WorkflowDocument> for WorkflowView {
    type Error = StorageError;

    fn try_from(document: WorkflowDocument) -> Result<Self, StorageError> {
        let names: HashMap<Uuid, &str> = document
            .nodes
            .iter()
            .map(|node| (node.id, node.name.as_str()))
            .collect();
        let edges = document
            .edges
            .into_iter()
            .map(|edge| edge_view(edge, &names))
            .collect::<Result<_, _>>()?;
        let nodes = document.nodes.into_iter().map(node_view).collect();
        Ok(Self {
            nodes: Some(nodes),
            edges: Some(edges),
            ..Self::summary(document.workflow)
        })
    }
}

impl WorkflowView {
    /// The workflow without its nodes and edges, as listings show it.
    pub fn summary(w: Workflow) -> Self {
        Self {
            id: w.id,
            name: w.name,
            description: w.description,
            status: w.status,
            trigger_config: w.trigger_config,
            settings: w.settings,
            version: w.version,
            is_latest: w.is_latest,
            parent_workflow_id: w.parent_workflow_id,
            total_executions: w.total_executions,
            successful_executions: w.successful_executions,
            failed_executions: w.failed_executions,
            last_execution_at: w.last_execution_at,
            owner_id: w.owner_id,
            created_at: w.created_at,
            updated_at: w.updated_at,
            created_by: w.created_by,
            updated_by: w.updated_by,
            nodes: None,
            edges: None,
        }
    }
}

fn node_view(node: Node) -> NodeView {
    NodeView {
        id: node.id,
        name: node.name,
        kind: node.kind,
        description: node.description,
        config: node.config,
        input_mapping: node.input_mapping,
        output_mapping: node.output_mapping,
        position: node.position,
        is_enabled: node.is_enabled,
        created_at: node.created_at,
        updated_at: node.updated_at,
    }
}

fn edge_view(edge: Edge, names: &HashMap<Uuid, &str>) -> Result<EdgeView, StorageError> {
    // The foreign keys only say that an endpoint is some node, not a node of this workflow.
    let name = |column: &'static str, id: Uuid| {
        names
            .get(&id)
            .map(|name| (*name).to_owned())
            .ok_or_else(|| StorageError::Corrupt {
                column,
                detail: format!("edge {} names node {id} of another workflow", edge.id),
            })
    };
    Ok(EdgeView {
        source: name("edges.source_node_id", edge.source_node_id)?,
        target: name("edges.target_node_id", edge.target_node_id)?,
        id: edge.id,
        source_node_id: edge.source_node_id,
        target_node_id: edge.target_node_id,
        kind: edge.kind,
        condition: edge.condition,
        label: edge.label,
        created_at: edge.created_at,
    })
}

/// The `{id}` of a workflow's routes, as the OpenAPI document describes it.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct WorkflowId(
    /// The workflow's id.
    pub Uuid,
);

/// `POST /api/v1/workflows`: checks the document, then writes the workflow, its nodes and its
/// edges in one transaction. Answers 201 with the stored workflow and its `Location`.
#[utoipa::path(
    post,
    path = "/api/v1/workflows",
    operation_id = "createWorkflow",
    tag = "workflows",
    security(("bearer" = [])),
    request_body = CreateWorkflow,
    responses(
        (
            status = CREATED,
            description = "The stored workflow.",
            body = WorkflowView,
            headers(("Location" = String, description = "Where the workflow can be read.")),
        ),
        (status = BAD_REQUEST, response = BadRequest),
        (status = CONFLICT, response = Conflict),
        (status = PAYLOAD_TOO_LARGE, response = PayloadTooLarge),
        (status = UNSUPPORTED_MEDIA_TYPE, response = UnsupportedMediaType),
        (status = UNPROCESSABLE_ENTITY, response = Unprocessable),
        TokenErrors,
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(document): JsonBody<CreateWorkflow>,
) -> Result<impl IntoResponse, ApiError> {
    let checked = check_whole(&state.pool, &document, None, caller.user_id).await?;
    let rows = Rows::of(&document, &checked);
    let workflow = rows.workflow(&document, checked.status, caller.user_id);

    let mut tx = state.pool.begin().await?;
    let stored = workflows::insert_document(&mut tx, &workflow, &rows.nodes, &rows.edges)
        .await
        .map_err(|err| explain_conflict(err, &document.trigger_config.config))?;
    tx.commit().await?;

    let view = WorkflowView::try_from(stored)?;
    let location = format!("{COLLECTION}/{}", view.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view),
    ))
}

/// `GET /api/v1/workflows/{id}`: the workflow with its nodes and edges.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{id}",
    operation_id = "getWorkflow",
    tag = "workflows",
    security(("bearer" = [])),
    params(WorkflowId),
    responses(
        (status = OK, description = "The workflow.", body = WorkflowView),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        TokenErrors,
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<WorkflowView>, ApiError> {
    let document = workflows::read_document(&state.pool, id).await?;
    if !caller.owns(document.workflow.owner_id) {
        return Err(ApiError::NotFound("workflow"));
    }
    Ok(Json(WorkflowView::try_from(document)?))
}

/// The query of `GET /api/v1/workflows`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only workflows in this status.
    #[param(value_type = Option<WorkflowStatus>)]
    pub status: Option<String>,
    /// Only workflows started this way: `webhook`, `manual` or `schedule`.
    #[param(pattern = "^(webhook|manual|schedule)$")]
    pub trigger_type: Option<String>,
    /// Only workflows whose name or description match this web-search style query (quoted
    /// phrases, `or`, `-word`); the best matches come first.
    pub q: Option<String>,
    /// At most this many (1 to 100, 20 when absent).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// Where the previous page ended: its `next_cursor`, from a request with the same
    /// `status`, `trigger_type` and `q`.
    pub cursor: Option<String>,
}

/// One page of workflows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkflowPage {
    /// The latest version of each workflow, without nodes and edges.
    pub workflows: Vec<WorkflowView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Trigger types a workflow can have.
const TRIGGER_TYPES: [&str; 3] = ["webhook", "manual", "schedule"];

/// `GET /api/v1/workflows`: the latest version of each of the caller's workflows (everyone's
/// for a superuser) with their counters, newest first or, with `q`, best match first, a page
/// at a time.
#[utoipa::path(
    get,
    path = "/api/v1/workflows",
    operation_id = "listWorkflows",
    tag = "workflows",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = OK, description = "A page of workflows.", body = WorkflowPage),
        (status = BAD_REQUEST, response = BadRequest),
        TokenErrors,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<WorkflowPage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<WorkflowStatus>)
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("status: {e}")))?;
    let trigger_type = query.trigger_type.as_deref();
    if let Some(kind) = trigger_type
        && !TRIGGER_TYPES.contains(&kind)
    {
        return Err(ApiError::BadRequest(format!(
            "trigger_type must be one of {}, not {kind:?}",
            TRIGGER_TYPES.join(", ")
        )));
    }
    let text = query.q.as_deref();
    if text.is_some_and(|q| q.trim().is_empty()) {
        return Err(ApiError::BadRequest(
            "q must not be blank; leave it out to list every workflow".into(),
        ));
    }
    let limit = paging::limit(query.limit)?;
    let tag = listing_tag(status, trigger_type, text);
    let after = query
        .cursor
        .as_deref()
        .map(|raw| decode_list_cursor(raw, &tag))
        .transpose()?;

    let filter = ListFilter {
        owner_id: caller.owner_filter(),
        status,
        trigger_type,
        text,
        after,
        limit: limit + 1,
    };
    let rows = workflows::list(&state.pool, &filter).await?;
    let (rows, next_cursor) =
        paging::cut(rows, limit, |last| encode_list_cursor(last.cursor(), &tag));
    Ok(Json(WorkflowPage {
        workflows: rows
            .into_iter()
            .map(|listed| WorkflowView::summary(listed.workflow))
            .collect(),
        next_cursor,
    }))
}

/// The tag of a workflow listing's cursors ([`paging::tag`]).
fn listing_tag(
    status: Option<WorkflowStatus>,
    trigger_type: Option<&str>,
    q: Option<&str>,
) -> String {
    paging::tag(&json!([
        status.map(WorkflowStatus::as_str),
        trigger_type,
        q
    ]))
}

/// A cursor is the last row's rank as the bits of its `f32`, its `created_at` in microseconds,
/// its id and the listing's tag: exact, so rows of equal rank and timestamp are neither skipped
/// nor repeated.
fn encode_list_cursor(cursor: ListCursor, tag: &str) -> String {
    format!(
        "{:08x}.{}.{}.{tag}",
        cursor.rank.to_bits(),
        cursor.created_at.timestamp_micros(),
        cursor.id.simple()
    )
}

fn decode_list_cursor(raw: &str, tag: &str) -> Result<ListCursor, ApiError> {
    let invalid = || paging::invalid_cursor(raw);
    let [rank, micros, id, from] = raw.split('.').collect::<Vec<_>>()[..] else {
        return Err(invalid());
    };
    let rank = u32::from_str_radix(rank, 16)
        .ok()
        .map(f32::from_bits)
        .filter(|rank| rank.is_finite())
        .ok_or_else(invalid)?;
    let created_at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    let id = Uuid::try_parse(id).map_err(|_| invalid())?;
    paging::check_tag(raw, from, tag, "status, trigger_type and q")?;
    Ok(ListCursor {
        rank,
        created_at,
        id,
    })
}

/// `PUT /api/v1/workflows/{id}`: replaces the workflow with a whole document, checked as on
/// create. A draft or paused workflow that never ran is rewritten in place; any other becomes
/// a new version (see the module's documentation). Answers 200 with the stored workflow, and
/// with a `Location` when the replace made a new version.
#[utoipa::path(
    put,
    path = "/api/v1/workflows/{id}",
    operation_id = "replaceWorkflow",
    tag = "workflows",
    security(("bearer" = [])),
    params(WorkflowId),
    request_body = CreateWorkflow,
    responses(
        (
            status = OK,
            description = "The stored workflow: the same one, or its new version.",
            body = WorkflowView,
            headers((
                "Location" = String,
                description = "Where the new version can be read, when one was made."
            )),
        ),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        (status = CONFLICT, response = Conflict),
        (status = PAYLOAD_TOO_LARGE, response = PayloadTooLarge),
        (status = UNSUPPORTED_MEDIA_TYPE, response = UnsupportedMediaType),
        (status = UNPROCESSABLE_ENTITY, response = Unprocessable),
        TokenErrors,
    ),
)]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    JsonBody(document): JsonBody<CreateWorkflow>,
) -> Result<impl IntoResponse, ApiError> {
    let seen = caller.workflow(&state.pool, id).await?;
    refuse_retired(&state.pool, &seen).await?;
    let checked = check_whole(&state.pool, &document, Some(seen.status), seen.owner_id).await?;
    let rows = Rows::of(&document, &checked);
    let with = rows.workflow(&document, checked.status, seen.owner_id);

    let mut tx = state.pool.begin().await?;
    let locked = workflows::lock(&mut tx, id).await?;
    // The document was checked against the workflow as first read; anything committed since
    // (another replace, a status change) could make that check wrong, so the later request
    // loses rather than overwriting what it never saw.
    if locked.updated_at != seen.updated_at {
        refuse_retired(&mut *tx, &locked).await?;
        return Err(ApiError::Conflict(
            "the workflow changed while this request ran; read it and retry".into(),
        ));
    }
    let by = caller.user_id;
    let in_place =
        locked.status != WorkflowStatus::Active && !workflows::has_executions(&mut *tx, id).await?;
    let stored = if in_place {
        workflows::replace_in_place(&mut tx, id, &with, by, &rows.nodes, &rows.edges).await
    } else {
        workflows::insert_version(&mut tx, &locked, &with, by, &rows.nodes, &rows.edges).await
    }
    .map_err(|err| explain_conflict(err, &document.trigger_config.config))?;
    tx.commit().await?;

    let view = WorkflowView::try_from(stored)?;
    tracing::info!(
        workflow.id = %id,
        workflow.new_id = %view.id,
        workflow.version = view.version,
        in_place,
        "workflow replaced"
    );
    let location = (view.id != id).then(|| (header::LOCATION, format!("{COLLECTION}/{}", view.id)));
    Ok((AppendHeaders(location), Json(view)))
}

/// Refuses to replace a version that is no longer current, naming the one that is.
async fn refuse_retired(db: impl PgExecutor<'_>, workflow: &Workflow) -> Result<(), ApiError> {
    if workflow.is_latest && workflow.status != WorkflowStatus::Archived {
        return Ok(());
    }
    let chain = workflows::versions(db, workflow.id).await?;
    let latest = chain
        .iter()
        .find(|version| version.is_latest)
        .unwrap_or(workflow);
    Err(ApiError::Conflict(if latest.id == workflow.id {
        format!(
            "the workflow is archived and keeps its definition for its history; its latest \
             version is this one, {}, and cannot be replaced",
            latest.id
        )
    } else {
        format!(
            "version {} of this workflow has been replaced; the latest version is {} \
             (version {}), replace that one",
            workflow.version, latest.id, latest.version
        )
    }))
}

/// The versions of a workflow as the API shows them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionList {
    /// Newest first, without nodes and edges.
    pub versions: Vec<WorkflowView>,
}

/// `GET /api/v1/workflows/{id}/versions`: every version of the workflow `id` belongs to,
/// newest first, whichever version `id` is.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{id}/versions",
    operation_id = "listWorkflowVersions",
    tag = "workflows",
    security(("bearer" = [])),
    params(WorkflowId),
    responses(
        (status = OK, description = "Every version, newest first.", body = VersionList),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        TokenErrors,
    ),
)]
pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<VersionList>, ApiError> {
    caller.workflow(&state.pool, id).await?;
    let chain = workflows::versions(&state.pool, id).await?;
    Ok(Json(VersionList {
        versions: chain.into_iter().map(WorkflowView::summary).collect(),
    }))
}

/// `POST /api/v1/workflows/{id}/activate`: the workflow starts accepting triggers.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{id}/activate",
    operation_id = "activateWorkflow",
    tag = "workflows",
    security(("bearer" = [])),
    params(WorkflowId),
    responses(
        (status = OK, description = "The workflow, activated.", body = WorkflowView),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        (status = CONFLICT, response = Conflict),
        TokenErrors,
    ),
)]
pub async fn activate(
    state: State<AppState>,
    caller: Caller,
    id: PathId,
) -> Result<Json<WorkflowView>, ApiError> {
    transition(state, caller, id, WorkflowStatus::Active).await
}

/// `POST /api/v1/workflows/{id}/pause`: the workflow keeps its definition but accepts no
/// triggers; executions already running finish.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{id}/pause",
    operation_id = "pauseWorkflow",
    tag = "workflows",
    security(("bearer" = [])),
    params(WorkflowId),
    responses(
        (status = OK, description = "The workflow, paused.", body = WorkflowView),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        (status = CONFLICT, response = Conflict),
        TokenErrors,
    ),
)]
pub async fn pause(
    state: State<AppState>,
    caller: Caller,
    id: PathId,
) -> Result<Json<WorkflowView>, ApiError> {
    transition(state, caller, id, WorkflowStatus::Paused).await
}

/// `POST /api/v1/workflows/{id}/archive`: the workflow is retired for good, kept for its
/// history.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{id}/archive",
    operation_id = "archiveWorkflow",
    tag = "workflows",
    security(("bearer" = [])),
    params(WorkflowId),
    responses(
        (status = OK, description = "The workflow, archived.", body = WorkflowView),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        (status = CONFLICT, response = Conflict),
        TokenErrors,
    ),
)]
pub async fn archive(
    state: State<AppState>,
    caller: Caller,
    id: PathId,
) -> Result<Json<WorkflowView>, ApiError> {
    transition(state, caller, id, WorkflowStatus::Archived).await
}

/// Whether a workflow in `from` may move to `to`. Archiving is final; a paused workflow is
/// resumed by activating it; moving to the status it is already in changes nothing and is
/// allowed, so a retried request gets the same answer.
fn may_move(from: WorkflowStatus, to: WorkflowStatus) -> bool {
    use WorkflowStatus::{Active, Archived, Draft, Paused};
    from == to
        || matches!(
            (from, to),
            (Draft | Paused, Active) | (Active, Paused) | (Draft | Active | Paused, Archived)
        )
}

async fn transition(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    to: WorkflowStatus,
) -> Result<Json<WorkflowView>, ApiError> {
    let workflow = caller.workflow(&state.pool, id).await?;
    let from = workflow.status;
    if !may_move(from, to) {
        return Err(ApiError::Conflict(format!(
            "the workflow is {from} and cannot become {to}; archived workflows stay archived, \
             and drafts are activated before they are paused"
        )));
    }
    if from != to {
        let route = workflow
            .trigger_config
            .get("config")
            .unwrap_or(&Value::Null);
        let moved = workflows::set_status(&state.pool, id, from, to, Some(caller.user_id))
            .await
            .map_err(|err| explain_conflict(err, route))?;
        if !moved {
            return Err(ApiError::Conflict(
                "the workflow's status changed while this request ran; read it and retry".into(),
            ));
        }
        tracing::info!(workflow.id = %id, from = %from, to = %to, "workflow status changed");
    }
    let mut conn = state.pool.acquire().await?;
    let document = workflows::get_document(&mut conn, id).await?;
    Ok(Json(WorkflowView::try_from(document)?))
}

/// `DELETE /api/v1/workflows/{id}`: removes the workflow with its nodes, edges and executions.
/// Answers 204; a workflow that is gone, or another user's, is a 404.
#[utoipa::path(
    delete,
    path = "/api/v1/workflows/{id}",
    operation_id = "deleteWorkflow",
    tag = "workflows",
    security(("bearer" = [])),
    params(WorkflowId),
    responses(
        (status = NO_CONTENT, description = "The workflow is gone."),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        TokenErrors,
    ),
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    caller.workflow(&state.pool, id).await?;
    workflows::delete(&state.pool, id).await?;
    tracing::info!(workflow.id = %id, "workflow deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// What [`check`] learned from a valid document.
#[derive(Debug)]
struct Checked {
    status: WorkflowStatus,
    /// Nodes and edges in document order, with kinds parsed and edges resolved to indices.
    graph: WorkflowGraph,
}

/// Checks a document's content and returns every problem found, in document order. `current`
/// is the status of the workflow the document replaces, `None` for a new one.
fn check(
    document: &CreateWorkflow,
    current: Option<WorkflowStatus>,
) -> Result<Checked, Vec<FieldError>> {
    let mut problems = Vec::new();

    check_name("/name", &document.name, &mut problems);
    let status = match current {
        None => check_status(document.status.as_deref(), &mut problems),
        Some(from) => check_next_status(from, document.status.as_deref(), &mut problems),
    };
    check_trigger(&document.trigger_config, &mut problems);
    check_settings(&document.settings, &mut problems);

    // The graph is checked even when some kinds are unknown, so that its problems are reported
    // in the same answer: an unknown node type stands in as an action (not a second trigger),
    // an unknown edge type as a default edge.
    let mut nodes = Vec::with_capacity(document.nodes.len());
    for (i, node) in document.nodes.iter().enumerate() {
        if node.name.chars().count() > NAME_MAX_CHARS {
            problems.push(too_long(format!("/nodes/{i}/name"), NAME_MAX_CHARS));
        }
        // A node may override the workflow's retry policy; a bad one would only fail when the
        // node first fails, so it is caught here.
        if let Some(policy) = node.config.get("retry_policy") {
            check_retry_policy(
                &format!("/nodes/{i}/config/retry_policy"),
                policy,
                &mut problems,
            );
        }
        let kind = node.kind.parse::<NodeKind>().unwrap_or_else(|err| {
            problems.push(FieldError::new(format!("/nodes/{i}/type"), err.to_string()));
            NodeKind::Action
        });
        // A literal duration out of range would only fail when the node runs; a template is
        // checked then, once it has a value.
        let durations: &[&str] = if kind == NodeKind::Delay {
            &["seconds", "timeout"]
        } else {
            &["timeout"]
        };
        for key in durations {
            if let Some(seconds) = node.config.get(*key).filter(|s| !s.is_string())
                && let Err(detail) = graph::node_seconds(seconds)
            {
                problems.push(FieldError::new(format!("/nodes/{i}/config/{key}"), detail));
            }
        }
        nodes.push(NodeSpec {
            name: node.name.clone(),
            kind,
        });
    }
    let mut edges = Vec::with_capacity(document.edges.len());
    for (i, edge) in document.edges.iter().enumerate() {
        let kind = match edge.kind.as_deref() {
            None => EdgeKind::Default,
            Some(text) => text.parse::<EdgeKind>().unwrap_or_else(|err| {
                problems.push(FieldError::new(format!("/edges/{i}/type"), err.to_string()));
                EdgeKind::Default
            }),
        };
        if edge
            .label
            .as_ref()
            .is_some_and(|label| label.chars().count() > LABEL_MAX_CHARS)
        {
            problems.push(too_long(format!("/edges/{i}/label"), LABEL_MAX_CHARS));
        }
        edges.push(EdgeSpec {
            source: edge.source.clone(),
            target: edge.target.clone(),
            kind,
        });
    }
    let graph = WorkflowGraph::build(nodes, &edges).map_err(|found| {
        let found = found.into_iter();
        problems.extend(found.map(|p| FieldError::new(p.pointer, p.message)));
    });

    match graph {
        Ok(graph) if problems.is_empty() => Ok(Checked { status, graph }),
        _ => {
            // A stable sort: problems within one node or edge keep the order they were found.
            problems.sort_by_key(|problem| document_position(&problem.pointer));
            Err(problems)
        }
    }
}

fn check_name(pointer: &str, name: &str, problems: &mut Vec<FieldError>) {
    if name.trim().is_empty() {
        problems.push(FieldError::new(pointer, "must not be empty"));
    } else if name.chars().count() > NAME_MAX_CHARS {
        problems.push(too_long(pointer.to_owned(), NAME_MAX_CHARS));
    }
}

fn too_long(pointer: String, max: usize) -> FieldError {
    FieldError::new(pointer, format!("must be at most {max} characters long"))
}

/// The status to create the workflow in; paused and archived make no sense for a new one.
fn check_status(status: Option<&str>, problems: &mut Vec<FieldError>) -> WorkflowStatus {
    match status {
        None | Some("draft") => WorkflowStatus::Draft,
        Some("active") => WorkflowStatus::Active,
        Some(other) => {
            let detail =
                format!("must be \"draft\" or \"active\" for a new workflow, not {other:?}");
            problems.push(FieldError::new("/status", detail));
            WorkflowStatus::Draft
        }
    }
}

/// The status a replacing document leaves a workflow in, now `from`: unchanged when the
/// document names none, else any the workflow may move to except `archived`, which has its own
/// route.
fn check_next_status(
    from: WorkflowStatus,
    status: Option<&str>,
    problems: &mut Vec<FieldError>,
) -> WorkflowStatus {
    let Some(text) = status else {
        return from;
    };
    let allowed = [
        WorkflowStatus::Draft,
        WorkflowStatus::Active,
        WorkflowStatus::Paused,
    ];
    match text.parse::<WorkflowStatus>() {
        Ok(to) if allowed.contains(&to) && may_move(from, to) => to,
        _ => {
            let reachable: Vec<String> = allowed
                .into_iter()
                .filter(|to| may_move(from, *to))
                .map(|to| format!("\"{to}\""))
                .collect();
            let detail = format!(
                "the workflow is {from}, so it can be replaced as {}, not {text:?}; archiving \
                 has its own route",
                reachable.join(" or ")
            );
            problems.push(FieldError::new("/status", detail));
            from
        }
    }
}

fn check_trigger(trigger: &TriggerConfig, problems: &mut Vec<FieldError>) {
    match trigger.kind.as_str() {
        "webhook" => {}
        "manual" | "schedule" => {
            if trigger.config.get("signature").is_some() {
                let detail = "only webhook triggers receive signed deliveries";
                problems.push(FieldError::new(SIGNATURE_POINTER, detail));
            }
            return;
        }
        other => {
            let detail = format!(
                "unknown trigger type {other:?}, expected one of: webhook, manual, schedule"
            );
            problems.push(FieldError::new("/trigger_config/type", detail));
            return;
        }
    }

    let methods = WEBHOOK_METHODS.join(", ");
    match trigger.config.get("method") {
        Some(Value::String(method)) if WEBHOOK_METHODS.contains(&method.as_str()) => {}
        found => {
            let detail = match found {
                Some(other) => format!("must be one of {methods}, not {other}"),
                None => format!("a webhook trigger needs a method, one of {methods}"),
            };
            problems.push(FieldError::new("/trigger_config/config/method", detail));
        }
    }
    match trigger.config.get("path") {
        Some(Value::String(path))
            if path.starts_with(WEBHOOK_PREFIX) && path.len() > WEBHOOK_PREFIX.len() => {}
        found => {
            let rule = format!("must start with {WEBHOOK_PREFIX:?} followed by the route's name");
            let detail = match found {
                Some(other) => format!("{rule}, as in \"/webhook/new-user\"; not {other}"),
                None => format!("a webhook trigger needs a path; it {rule}"),
            };
            problems.push(FieldError::new("/trigger_config/config/path", detail));
        }
    }
    if let Some(signature) = trigger.config.get("signature") {
        check_signature(signature, problems);
    }
}

/// Where a webhook's signature settings are, in a workflow document.
const SIGNATURE_POINTER: &str = "/trigger_config/config/signature";

/// Checks the shape of `trigger_config.config.signature`; whether its connector exists and
/// is the caller's is [`check_signing_connector`]'s part.
fn check_signature(signature: &Value, problems: &mut Vec<FieldError>) {
    let Some(fields) = signature.as_object() else {
        let detail = "must be an object with scheme and connector_id";
        problems.push(FieldError::new(SIGNATURE_POINTER, detail));
        return;
    };
    let schemes = signature::SCHEMES.join(", ");
    for name in fields.keys() {
        if !["scheme", "connector_id", "tolerance_seconds"].contains(&name.as_str()) {
            let detail = "unknown field; expected scheme, connector_id or tolerance_seconds";
            problems.push(FieldError::new(
                format!("{SIGNATURE_POINTER}/{name}"),
                detail,
            ));
        }
    }
    let scheme = fields.get("scheme");
    match scheme {
        Some(Value::String(name)) if signature::SCHEMES.contains(&name.as_str()) => {}
        found => {
            let detail = match found {
                Some(other) => {
                    format!("unknown signature scheme {other}, expected one of: {schemes}")
                }
                None => format!("a signature needs a scheme, one of: {schemes}"),
            };
            problems.push(FieldError::new(
                format!("{SIGNATURE_POINTER}/scheme"),
                detail,
            ));
        }
    }
    let connector = fields.get("connector_id");
    if connector
        .and_then(Value::as_str)
        .is_none_or(|id| Uuid::try_parse(id).is_err())
    {
        let detail = match connector {
            Some(other) => {
                format!("must be the UUID of a connector holding the secrets, not {other}")
            }
            None => {
                "a signature needs the connector_id of the connector holding the secrets".to_owned()
            }
        };
        problems.push(FieldError::new(
            format!("{SIGNATURE_POINTER}/connector_id"),
            detail,
        ));
    }
    if let Some(tolerance) = fields.get("tolerance_seconds") {
        let max = signature::MAX_TOLERANCE_SECONDS;
        let pointer = format!("{SIGNATURE_POINTER}/tolerance_seconds");
        if scheme.and_then(Value::as_str) != Some("standard-webhooks") {
            let detail = "only the standard-webhooks scheme has a timestamp to check";
            problems.push(FieldError::new(pointer, detail));
        } else if !tolerance.as_u64().is_some_and(|t| (1..=max).contains(&t)) {
            let detail =
                format!("must be a whole number of seconds from 1 to {max}, not {tolerance}");
            problems.push(FieldError::new(pointer, detail));
        }
    }
}

/// The problem with a webhook's signing connector, if it names one that does not exist or
/// is not the caller's; both read the same, so that ids of others' connectors cannot be probed.
/// Checks a document whole for a workflow owned by `owner`: its content with [`check`], and
/// the signing connector it names, which must be the owner's; every problem at once.
async fn check_whole(
    pool: &PgPool,
    document: &CreateWorkflow,
    current: Option<WorkflowStatus>,
    owner: Uuid,
) -> Result<Checked, ApiError> {
    let connector = check_signing_connector(pool, &document.trigger_config, owner).await?;
    match (check(document, current), connector) {
        (Ok(checked), None) => Ok(checked),
        (Ok(_), Some(problem)) => Err(ApiError::Invalid(vec![problem])),
        (Err(mut problems), connector) => {
            problems.extend(connector);
            problems.sort_by_key(|problem| document_position(&problem.pointer));
            Err(ApiError::Invalid(problems))
        }
    }
}

async fn check_signing_connector(
    pool: &PgPool,
    trigger: &TriggerConfig,
    owner: Uuid,
) -> Result<Option<FieldError>, ApiError> {
    let id = trigger
        .config
        .pointer("/signature/connector_id")
        .and_then(Value::as_str)
        .and_then(|id| Uuid::try_parse(id).ok());
    let Some(id) = id else {
        return Ok(None);
    };
    let owned = match connectors::get(pool, id).await {
        Ok(connector) => connector.owner_id == owner,
        Err(StorageError::NotFound { .. }) => false,
        Err(err) => return Err(err.into()),
    };
    Ok((!owned).then(|| {
        FieldError::new(
            format!("{SIGNATURE_POINTER}/connector_id"),
            "no connector of yours has this id",
        )
    }))
}

fn check_settings(settings: &Value, problems: &mut Vec<FieldError>) {
    if let Some(policy) = settings.get("retry_policy") {
        check_retry_policy("/settings/retry_policy", policy, problems);
    }
    if let Some(handling) = settings.get("error_handling")
        && ErrorHandling::deserialize(handling).is_err()
    {
        let detail = format!("must be \"stop\" or \"continue\", not {handling}");
        problems.push(FieldError::new("/settings/error_handling", detail));
    }
    if let Some(timeout) = settings.get("timeout")
        && !timeout
            .as_f64()
            .is_some_and(|seconds| seconds.is_finite() && seconds > 0.0)
    {
        let detail = format!("must be a positive number of seconds, not {timeout}");
        problems.push(FieldError::new("/settings/timeout", detail));
    }
}

fn check_retry_policy(pointer: &str, policy: &Value, problems: &mut Vec<FieldError>) {
    if let Err(err) = RetryPolicy::deserialize(policy) {
        problems.push(FieldError::new(
            pointer,
            format!("is not a retry policy: {err}"),
        ));
    }
}

/// Sort key of a problem: its top-level field, then the index of the node or edge.
fn document_position(pointer: &str) -> (usize, usize) {
    let mut segments = pointer.split('/').skip(1);
    let field = segments.next().unwrap_or_default();
    let field = DOCUMENT_ORDER
        .iter()
        .position(|known| *known == field)
        .unwrap_or(DOCUMENT_ORDER.len());
    let index = segments.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (field, index)
}

/// A checked document in the shape storage writes.
struct Rows<'a> {
    /// `{"type": …, "config": …}`.
    trigger_config: Value,
    nodes: Vec<NewNode<'a>>,
    edges: Vec<NewEdge<'a>>,
}

impl<'a> Rows<'a> {
    fn of(document: &'a CreateWorkflow, checked: &Checked) -> Self {
        let trigger = &document.trigger_config;
        // The graph keeps the document's order and, being valid, resolved every edge, so its
        // nodes and edges pair up one to one with the document's.
        let nodes = document
            .nodes
            .iter()
            .zip(checked.graph.nodes())
            .map(|(node, spec)| NewNode {
                name: &node.name,
                description: node.description.as_deref(),
                kind: spec.kind,
                config: &node.config,
                input_mapping: &node.input_mapping,
                output_mapping: &node.output_mapping,
                position: &node.position,
                is_enabled: node.is_enabled,
            })
            .collect();
        let edges = document
            .edges
            .iter()
            .zip(checked.graph.edges())
            .map(|(edge, resolved)| NewEdge {
                source: resolved.source,
                target: resolved.target,
                kind: resolved.kind,
                condition: &edge.condition,
                label: edge.label.as_deref(),
            })
            .collect();
        Self {
            trigger_config: json!({"type": trigger.kind, "config": trigger.config}),
            nodes,
            edges,
        }
    }

    /// The workflow row of `document` (which these rows were made of), owned by `owner_id`.
    fn workflow(
        &'a self,
        document: &'a CreateWorkflow,
        status: WorkflowStatus,
        owner_id: Uuid,
    ) -> NewWorkflow<'a> {
        NewWorkflow {
            name: &document.name,
            description: document.description.as_deref(),
            status,
            trigger_config: &self.trigger_config,
            settings: &document.settings,
            owner_id,
        }
    }
}

/// Says which route is taken when an active workflow claims a webhook route (`route`, the
/// trigger's `config` with its method and path) another active workflow already answers;
/// other errors keep their general mapping.
fn explain_conflict(err: StorageError, route: &Value) -> ApiError {
    match err {
        StorageError::Conflict { constraint } if constraint == ACTIVE_WEBHOOK_ROUTE_INDEX => {
            let field = |name| route.get(name).and_then(Value::as_str);
            ApiError::Conflict(format!(
                "another active workflow already answers {} {}; keep this one inactive or \
                 choose another path",
                field("method").unwrap_or_default(),
                field("path").unwrap_or_default(),
            ))
        }
        other => other.into(),
    }
}
