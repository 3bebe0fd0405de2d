//! `quantumflow migrate`: apply, revert or inspect the schema.

use std::io::Write;

use anyhow::Context;
use quantumflow_storage::schema::{self, MigrationSet};
use sqlx::PgPool;

use crate::cli::MigrateAction;

pub(crate) async fn run(pool: &PgPool, action: &MigrateAction) -> anyhow::Result<()> {
    match action {
        MigrateAction::Up => {
            apply_all(pool).await?;
            print_versions(pool).await
        }
        MigrateAction::Down { to } => {
            let to = *to;
            anyhow::ensure!(to >= 0, "--to must be 0 or a migration version, not {to}");
            schema::revert(pool, MigrationSet::quantumflow(), to)
                .await
                .with_context(|| format!("cannot revert to version {to}"))?;
            if to == 0 {
                quantumflow_queue::drop_schema(pool)
                    .await
                    .context("cannot drop the job queue")?;
            }
            print_versions(pool).await
        }
        MigrateAction::Status => print_status(pool).await,
    }
}

/// Applies every migration set, in order.
pub(crate) async fn apply_all(pool: &PgPool) -> anyhow::Result<()> {
    for set in quantumflow_queue::migration_sets() {
        schema::apply(pool, set)
            .await
            .with_context(|| format!("cannot apply the {} migrations", set.name))?;
    }
    Ok(())
}

async fn print_versions(pool: &PgPool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for set in quantumflow_queue::migration_sets() {
        let report = schema::inspect(pool, set).await?;
        writeln!(out, "{}: version {}", set.name, report.version())?;
    }
    Ok(())
}

async fn print_status(pool: &PgPool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for set in quantumflow_queue::migration_sets() {
        let report = schema::inspect(pool, set).await?;
        let state = if report.is_current() {
            "up to date"
        } else {
            "not up to date"
        };
        writeln!(out, "{} ({state}):", set.name)?;
        for m in &report.migrations {
            let mark = if m.applied { "applied" } else { "pending" };
            writeln!(out, "  {:>14}  {mark:<8} {}", m.version, m.description)?;
        }
        for version in &report.unknown {
            writeln!(
                out,
                "  {version:>14}  unknown  (applied by a newer QuantumFlow)"
            )?;
        }
    }
    Ok(())
}
