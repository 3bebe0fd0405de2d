//! Scratch databases: each drain gets a fresh database on the server it was pointed at, so its
//! tables, indexes and statistics start empty and nothing it does can reach the database under
//! test.

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

use super::BaselineError;

/// PostgreSQL silently truncates longer identifiers, which would make the name we drop differ
/// from the one we meant to create.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Tells apart scratch databases of drains running at once in one process.
static NEXT_SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A database created for one drain. Call [`ScratchDb::drop_database`] when done; a process
/// killed before that leaves the database behind, named after its pid.
#[derive(Debug)]
pub(super) struct ScratchDb {
    name: String,
    url: String,
    options: PgConnectOptions,
    server: PgConnectOptions,
}

impl ScratchDb {
    /// Creates `<db>_<kind>_baseline_<pid>_<n>` next to the database `database_url` names.
    pub(super) async fn create(database_url: &str, kind: &str) -> Result<Self, BaselineError> {
        let server =
            PgConnectOptions::from_str(database_url).map_err(BaselineError::DatabaseUrl)?;
        let base = server
            .get_database()
            .unwrap_or_else(|| server.get_username());
        let name = scratch_name(
            base,
            kind,
            std::process::id(),
            NEXT_SEQUENCE.fetch_add(1, Ordering::Relaxed),
        );
        let url = scratch_url(database_url, &name)?;
        let options = server.clone().database(&name);

        let mut admin = PgConnection::connect_with(&server)
            .await
            .map_err(BaselineError::database("connecting to the server"))?;
        // A database of this name can only be a leftover of a killed process whose pid we now
        // have, so nobody is using it.
        let created = async {
            sqlx::query(drop_statement(&name))
                .execute(&mut admin)
                .await?;
            // The name is made of [a-z0-9_] only (see `scratch_name`), so quoting it suffices.
            sqlx::query(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
                .execute(&mut admin)
                .await
        }
        .await;
        // The admin connection is not needed during the drain, and closing it keeps it out of
        // the server's connection count.
        let _ = admin.close().await;
        created.map_err(BaselineError::database("creating the scratch database"))?;

        Ok(Self {
            name,
            url,
            options,
            server,
        })
    }

    /// A URL for the scratch database, for processes that connect on their own.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// A pool on the scratch database.
    pub(super) async fn pool(&self, max_connections: u32) -> Result<PgPool, BaselineError> {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(self.options.clone())
            .await
            .map_err(BaselineError::database(
                "connecting to the scratch database",
            ))
    }

    /// One connection to the scratch database.
    pub(super) async fn connect(&self) -> Result<PgConnection, BaselineError> {
        PgConnection::connect_with(&self.options)
            .await
            .map_err(BaselineError::database(
                "connecting to the scratch database",
            ))
    }

    /// Drops the database, ending any session still in it.
    pub(super) async fn drop_database(self) -> Result<(), BaselineError> {
        let dropped = async {
            let mut admin = PgConnection::connect_with(&self.server).await?;
            let dropped = sqlx::query(drop_statement(&self.name))
                .execute(&mut admin)
                .await;
            let _ = admin.close().await;
            dropped
        }
        .await;
        match dropped {
            Ok(_) => Ok(()),
            Err(source) => Err(BaselineError::DropScratch {
                name: self.name,
                source,
            }),
        }
    }
}

/// Runs `drain` in a fresh scratch database and drops the database afterwards, also when the
/// drain failed. The drain's own error wins over a failure to drop.
pub(super) async fn in_scratch_db<T>(
    database_url: &str,
    kind: &str,
    drain: impl AsyncFnOnce(&ScratchDb) -> Result<T, BaselineError>,
) -> Result<T, BaselineError> {
    let scratch = ScratchDb::create(database_url, kind).await?;
    let outcome = drain(&scratch).await;
    let dropped = scratch.drop_database().await;
    match (outcome, dropped) {
        (Ok(value), Ok(())) => Ok(value),
        (Ok(_), Err(error)) => Err(error),
        (Err(error), Ok(())) => Err(error),
        (Err(error), Err(drop_error)) => {
            let cause = std::error::Error::source(&drop_error)
                .map(ToString::to_string)
                .unwrap_or_default();
            crate::note(format_args!("warning: {drop_error}: {cause}"));
            Err(error)
        }
    }
}

/// Ends every session in the database `name` and drops it; `WITH (FORCE)` needs PostgreSQL 13.
fn drop_statement(name: &str) -> AssertSqlSafe<String> {
    // The name is made of [a-z0-9_] only (see `scratch_name`), so quoting it suffices.
    AssertSqlSafe(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
}

/// An identifier that needs no escaping inside double quotes: the base name's letters and
/// digits, lowercased, shortened so the unique suffix always fits.
fn scratch_name(base: &str, kind: &str, pid: u32, sequence: u32) -> String {
    let suffix = format!("_{kind}_baseline_{pid}_{sequence}");
    let room = MAX_IDENTIFIER_BYTES.saturating_sub(suffix.len());
    let base: String = base
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .take(room)
        .collect();
    format!("{base}{suffix}")
}

/// `database_url` with only its database changed. sqlx reads query parameters after the path
/// and lets a later `dbname` win, so appending one works for TCP and unix-socket URLs alike
/// (`postgres://u@localhost/db?host=%2Frun%2Fpg`) without rebuilding, and maybe losing, the
/// other parts.
fn scratch_url(database_url: &str, scratch: &str) -> Result<String, BaselineError> {
    let separator = if database_url.contains('?') { '&' } else { '?' };
    let url = format!("{database_url}{separator}dbname={scratch}");
    let names_scratch = PgConnectOptions::from_str(&url)
        .is_ok_and(|options| options.get_database() == Some(scratch));
    if !names_scratch {
        return Err(BaselineError::ScratchUrl {
            scratch: scratch.to_owned(),
        });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_are_lowercase_identifiers_that_fit() {
        let name = scratch_name("Quantum-Flow", "apalis", 4242, 7);
        assert_eq!(name, "quantum_flow_apalis_baseline_4242_7");

        let long = "x".repeat(100);
        let name = scratch_name(&long, "skiplocked", u32::MAX, u32::MAX);
        assert_eq!(name.len(), MAX_IDENTIFIER_BYTES);
        assert!(name.ends_with(&format!("_skiplocked_baseline_{}_{}", u32::MAX, u32::MAX)));
    }

    #[test]
    fn scratch_url_changes_only_the_database() {
        let url = scratch_url("postgres://postgres@127.0.0.1:5432/qf", "qf_scratch").unwrap();
        let options = PgConnectOptions::from_str(&url).unwrap();
        assert_eq!(options.get_database(), Some("qf_scratch"));
        assert_eq!(options.get_host(), "127.0.0.1");
        assert_eq!(options.get_port(), 5432);
        assert_eq!(options.get_username(), "postgres");
    }

    #[test]
    fn scratch_url_keeps_a_unix_socket_and_overrides_a_dbname_parameter() {
        let url = scratch_url(
            "postgres://postgres@localhost:5432/qf?host=%2Ftmp%2Fqf%20socket&dbname=other",
            "qf_scratch",
        )
        .unwrap();
        let options = PgConnectOptions::from_str(&url).unwrap();
        assert_eq!(options.get_database(), Some("qf_scratch"));
        assert_eq!(
            options.get_socket().map(|p| p.to_str().unwrap()),
            Some("/tmp/qf socket")
        );
    }

    #[test]
    fn scratch_url_refuses_a_url_it_cannot_retarget() {
        let error = scratch_url("postgres://postgres@127.0.0.1/qf#frag", "qf_scratch").unwrap_err();
        assert!(matches!(error, BaselineError::ScratchUrl { .. }));
    }
}
