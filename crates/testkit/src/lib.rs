//! Test support: every test gets a database of its own, freshly migrated.
//!
//! The server comes from `DATABASE_URL`; `cargo xtask test` sets it, starting a private server
//! first when none is given. The first test to need one builds a template database with all
//! migrations applied (QuantumFlow's and the queue's), under an advisory lock so that
//! concurrent test processes build it once; each test then copies the template, which takes a
//! few milliseconds instead of a full migration run. The template's name carries a hash of the
//! migrations, so changing one builds a new template.
//!
//! A test's database is dropped when its [`TestDb`] is dropped, so a failed test's database is
//! only left behind if the process dies.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Key of the advisory lock taken while a template database is built.
const TEMPLATE_LOCK: i64 = 0x5146_7465_6d70; // "QFtemp"

/// Prefix of the per-test databases, so stale ones are easy to find and drop.
pub const TEST_DB_PREFIX: &str = "qf_test_";

/// A database owned by one test.
#[derive(Debug)]
pub struct TestDb {
    pool: PgPool,
    options: PgConnectOptions,
    name: String,
}

impl TestDb {
    /// A new database with every migration applied.
    pub async fn new() -> Self {
        let template = template().await;
        Self::create(Some(template)).await
    }

    /// A new, empty database: no tables, no migrations.
    pub async fn empty() -> Self {
        Self::create(None).await
    }

    async fn create(template: Option<&str>) -> Self {
        let name = format!("{TEST_DB_PREFIX}{}", Uuid::new_v4().simple());
        let source = template.unwrap_or("template0");
        let mut admin = admin().await;
        execute(
            &mut admin,
            &format!("CREATE DATABASE {name} TEMPLATE {source}"),
        )
        .await;
        admin.close().await.expect("close admin connection");

        let options = server_options().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .expect("connect to the test database");
        Self {
            pool,
            options,
            name,
        }
    }

    /// A pool of connections to the database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Connection options for the database, e.g. to open a connection of one's own.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// A URL for the database, for handing to a process under test.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    #[expect(
        clippy::print_stderr,
        reason = "test output is the only place to report it"
    )]
    fn drop(&mut self) {
        // Drop runs outside async code, possibly on a runtime that is shutting down, so the
        // database is dropped from a thread with a runtime of its own.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            rt.map(|rt| {
                rt.block_on(async {
                    let mut admin = admin().await;
                    execute(
                        &mut admin,
                        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    )
                    .await;
                });
            })
        })
        .join();
        if dropped.is_err() {
            eprintln!("note: could not drop test database {}", self.name);
        }
    }
}

/// The server named by `DATABASE_URL`.
pub fn server_options() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set. Run the tests with `cargo xtask test`, which starts a \
             private PostgreSQL server when there is none, or point DATABASE_URL at a server \
             where this user may create databases"
        )
    });
    PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))
}

async fn admin() -> PgConnection {
    let options = server_options();
    // Connect to the database the URL names, falling back to `postgres` when it names none.
    let options = if options.get_database().is_some() {
        options
    } else {
        options.database("postgres")
    };
    options
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server from DATABASE_URL: {e}"))
}

async fn execute(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The name of a template database with every migration applied, built on first use.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE.get_or_init(build_template).await
}

async fn build_template() -> String {
    let sets = quantumflow_queue::migration_sets();
    let mut hasher = DefaultHasher::new();
    for set in &sets {
        for m in set.migrator.iter() {
            (m.version, &m.checksum[..]).hash(&mut hasher);
        }
    }
    let name = format!("qf_template_{:016x}", hasher.finish());

    let mut admin = admin().await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut admin)
        .await
        .unwrap();

    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    if !exists {
        // Build under a scratch name and rename when complete, so a crash half-way never
        // leaves a template that looks finished.
        let building = format!("{name}_building");
        execute(
            &mut admin,
            &format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
        )
        .await;
        execute(
            &mut admin,
            &format!("CREATE DATABASE {building} TEMPLATE template0"),
        )
        .await;

        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(server_options().database(&building))
            .await
            .expect("connect to the template database");
        for set in sets {
            quantumflow_storage::schema::apply(&pool, set)
                .await
                .unwrap_or_else(|e| panic!("apply {} migrations to the template: {e}", set.name));
        }
        pool.close().await;
        execute(
            &mut admin,
            &format!("ALTER DATABASE {building} RENAME TO {name}"),
        )
        .await;
    }

    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    name
}
