//! Signed webhook deliveries already accepted, for recognising a repeat of one.
//!
//! A delivery is claimed in the transaction that writes the execution it starts. The table's
//! primary key decides between copies: within one statement, within one transaction, or
//! across transactions committing at the same moment, exactly one claim of a key succeeds and
//! the others find the winner with [`originals`].
//!
//! A new version of a workflow inherits the deliveries its parent accepted, so that a repeat
//! sent after the replace is still a repeat. The claim and the copy made by a replace must not
//! miss each other: the claim holds its workflow row `FOR SHARE`, which a replace's lock waits
//! for, and a claim that waited for a replace to commit finds its workflow superseded and
//! copies what it claims to the later versions itself.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::Result;

/// A delivery that is to start an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// The workflow it was sent to.
    pub workflow_id: Uuid,
    /// The sender's id for it.
    pub delivery_id: &'a str,
    /// The execution it starts if it is the first of its id.
    pub execution_id: Uuid,
}

/// Deliveries as the three arrays that `UNNEST` turns back into rows.
struct Columns<'a> {
    workflow_ids: Vec<Uuid>,
    delivery_ids: Vec<&'a str>,
    execution_ids: Vec<Uuid>,
}

impl<'a> Columns<'a> {
    fn of<'b>(deliveries: impl IntoIterator<Item = &'b Delivery<'a>>) -> Self
    where
        'a: 'b,
    {
        let mut columns = Self {
            workflow_ids: Vec::new(),
            delivery_ids: Vec::new(),
            execution_ids: Vec::new(),
        };
        for delivery in deliveries {
            columns.workflow_ids.push(delivery.workflow_id);
            columns.delivery_ids.push(delivery.delivery_id);
            columns.execution_ids.push(delivery.execution_id);
        }
        columns
    }
}

/// Records each delivery whose id is new for its workflow, and returns the executions of those
/// recorded. A delivery whose id is taken, by an earlier transaction, a concurrent one (whose
/// commit this waits for) or an earlier entry of `deliveries`, is left out.
pub async fn claim(conn: &mut PgConnection, deliveries: &[Delivery<'_>]) -> Result<Vec<Uuid>> {
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let columns = Columns::of(deliveries);
    // Locked in id order, so that two groups sharing workflows cannot deadlock.
    let superseded = sqlx::query_scalar!(
        r#"
        SELECT id FROM (
            SELECT id, is_latest FROM workflows WHERE id = ANY($1) ORDER BY id FOR SHARE
        ) AS held
        WHERE NOT is_latest
        "#,
        &columns.workflow_ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    // WITH ORDINALITY keeps the order of `deliveries`, so the first copy of a repeated id is
    // the one that wins.
    let claimed = sqlx::query_scalar!(
        r#"
        INSERT INTO webhook_deliveries (workflow_id, delivery_id, execution_id)
        SELECT workflow_id, delivery_id, execution_id
        FROM UNNEST($1::uuid[], $2::varchar[], $3::uuid[]) WITH ORDINALITY
             AS t(workflow_id, delivery_id, execution_id, position)
        ORDER BY position
        ON CONFLICT (workflow_id, delivery_id) DO NOTHING
        RETURNING execution_id
        "#,
        &columns.workflow_ids,
        &columns.delivery_ids as &[&str],
        &columns.execution_ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    if !superseded.is_empty() {
        let inherited = deliveries
            .iter()
            .filter(|d| superseded.contains(&d.workflow_id) && claimed.contains(&d.execution_id));
        copy_to_later_versions(conn, &Columns::of(inherited)).await?;
    }
    Ok(claimed)
}

/// Gives every version after each delivery's workflow the same record, as a replace that
/// committed before the claim would have done had it seen it.
async fn copy_to_later_versions(conn: &mut PgConnection, deliveries: &Columns<'_>) -> Result<()> {
    sqlx::query!(
        r#"
        WITH RECURSIVE later (workflow_id, delivery_id, execution_id) AS (
            SELECT w.id, k.delivery_id, k.execution_id
            FROM UNNEST($1::uuid[], $2::varchar[], $3::uuid[])
                 AS k(workflow_id, delivery_id, execution_id)
            JOIN workflows w ON w.parent_workflow_id = k.workflow_id
            UNION ALL
            SELECT w.id, l.delivery_id, l.execution_id
            FROM later l
            JOIN workflows w ON w.parent_workflow_id = l.workflow_id
        )
        INSERT INTO webhook_deliveries (workflow_id, delivery_id, execution_id)
        SELECT workflow_id, delivery_id, execution_id FROM later
        ON CONFLICT (workflow_id, delivery_id) DO NOTHING
        "#,
        &deliveries.workflow_ids,
        &deliveries.delivery_ids as &[&str],
        &deliveries.execution_ids,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The executions recorded for `keys` (workflow, delivery id), as (workflow, delivery id,
/// execution); keys with no record are absent.
pub async fn originals(
    conn: &mut PgConnection,
    keys: &[(Uuid, &str)],
) -> Result<Vec<(Uuid, String, Uuid)>> {
    let workflow_ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let delivery_ids: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let rows = sqlx::query!(
        r#"
        SELECT d.workflow_id, d.delivery_id, d.execution_id
        FROM webhook_deliveries d
        JOIN UNNEST($1::uuid[], $2::varchar[]) AS k(workflow_id, delivery_id)
          ON d.workflow_id = k.workflow_id AND d.delivery_id = k.delivery_id
        "#,
        &workflow_ids,
        &delivery_ids as &[&str],
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.workflow_id, r.delivery_id, r.execution_id))
        .collect())
}

/// Forgets deliveries received before `before`, and returns how many.
pub async fn prune(db: impl PgExecutor<'_>, before: DateTime<Utc>) -> Result<u64> {
    let pruned = sqlx::query!(
        "DELETE FROM webhook_deliveries WHERE received_at < $1",
        before
    )
    .execute(db)
    .await?;
    Ok(pruned.rows_affected())
}
