//! A private PostgreSQL server, run from the machine's own server binaries.
//!
//! `quantumflow up` uses it when no `DATABASE_URL` is given, and the test runner uses it on a
//! machine with no server running. The server lives in a data directory of its own, listens
//! only on a unix socket inside that directory (so it never collides with another server's
//! port, and only its owner can connect), and is stopped by [`LocalPg::stop`].
//!
//! # Layout of the data directory
//!
//! - `pgdata/`: the cluster, created by `initdb` on first start and reused afterwards.
//! - `socket/`: the server's unix socket.
//! - `postgres.log`: the server's own log.
//! - `quantumflow.lock`: held while a process owns the server, so two cannot share it.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid, User};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::process::{Child, Command};

/// How long a starting server may take to accept connections; initdb'd clusters that were
/// shut down uncleanly replay their WAL first, which can take a while on a slow disk.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a fast shutdown may take before the server is told to quit immediately.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The port number only names the socket file (`.s.PGSQL.5432`); no TCP port is opened.
const SOCKET_PORT: u16 = 5432;

/// The superuser that `initdb` creates; trust authentication over a socket that only the
/// data directory's owner can reach.
pub const SUPERUSER: &str = "postgres";

/// Where a server's binaries are searched for, after `PATH`.
const BINARY_GLOB_ROOT: &str = "/usr/lib/postgresql";

/// Why the private server could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    /// Neither `PATH` nor the distribution's directory has the server binaries.
    #[error(
        "PostgreSQL's server binaries (initdb, postgres) are not on PATH or under \
         {BINARY_GLOB_ROOT}/*/bin; install PostgreSQL's server package (Debian/Ubuntu: \
         apt-get install postgresql, Fedora: dnf install postgresql-server, macOS: brew install \
         postgresql) or set DATABASE_URL to an existing server"
    )]
    BinariesNotFound,

    /// Running as root with no unprivileged account to hand the server to.
    #[error(
        "running as root, and PostgreSQL refuses to run as root, but there is no {user:?} \
         system user to run it as; create one (useradd --system {user}), run as an ordinary \
         user, or set DATABASE_URL"
    )]
    NoServiceUser {
        /// The account looked for.
        user: String,
    },

    /// The server's account cannot reach the data directory.
    #[error(
        "the {user} user cannot reach {}: {} is not searchable by other users; choose a data \
         directory such as /var/lib/quantumflow or make that directory searchable (chmod o+x)",
        data_dir.display(), blocked.display()
    )]
    Unreachable {
        /// The server's account.
        user: String,
        /// The data directory.
        data_dir: PathBuf,
        /// The first ancestor the account cannot enter.
        blocked: PathBuf,
    },

    /// Another process owns the data directory.
    #[error(
        "data directory {} is in use by another quantumflow process; stop that process, or \
         choose another directory with --data-dir",
        .0.display()
    )]
    InUse(PathBuf),

    /// The unix socket's path would exceed the operating system's limit.
    #[error(
        "the socket path under {} is too long for a unix socket ({len} bytes, limit {max}); \
         choose a shorter data directory",
        dir.display()
    )]
    SocketPathTooLong {
        /// The socket directory.
        dir: PathBuf,
        /// The path's length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A file-system operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done, e.g. `create`.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },

    /// `initdb` or `postgres` exited with an error.
    #[error("{program} failed: {log}")]
    ServerFailed {
        /// The program that failed.
        program: &'static str,
        /// The end of its output.
        log: String,
    },

    /// The server started but never accepted connections.
    #[error("the private PostgreSQL server did not accept connections within {0:?}; see {1}")]
    NotReady(Duration, String),

    /// Talking to the started server failed.
    #[error("cannot prepare the private server's database")]
    Database(#[source] sqlx::Error),
}

type Result<T, E = LocalPgError> = std::result::Result<T, E>;

/// How to run the private server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Holds the cluster, the socket, the log and the lock file.
    pub data_dir: PathBuf,
    /// Database created on first start, if it is missing.
    pub database: String,
    /// `false` trades crash safety for speed (no fsync), which suits throw-away test clusters.
    pub durable: bool,
    /// Extra `name=value` server settings.
    pub settings: Vec<(String, String)>,
    /// When running as root, the account the server runs as.
    pub service_user: String,
}

impl Options {
    /// Options for a durable server in `data_dir` with database `database`.
    pub fn new(data_dir: impl Into<PathBuf>, database: impl Into<String>) -> Self {
        Self {
            data_dir: data_dir.into(),
            database: database.into(),
            durable: true,
            settings: Vec::new(),
            service_user: SUPERUSER.to_owned(),
        }
    }
}

/// What [`LocalPg::stop`] left behind in the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The server is stopped: no server runs in the data directory.
    Stopped,
    /// The server this handle started is gone, but another one, which it did not start (an
    /// operator restarted the server by hand, say), runs in the data directory and was left
    /// running.
    OtherStillRunning {
        /// The other server's postmaster.
        pid: u32,
    },
}

/// A running private server. Stop it with [`LocalPg::stop`]; dropping it leaves the server
/// running until the next start in the same directory stops it.
#[derive(Debug)]
pub struct LocalPg {
    child: Child,
    data_dir: PathBuf,
    database: String,
    // Held for as long as the server runs; the kernel releases it if this process dies.
    _lock: File,
}

/// The paths inside a data directory.
struct Layout {
    pgdata: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    lock: PathBuf,
}

impl Layout {
    fn new(data_dir: &Path) -> Self {
        Self {
            pgdata: data_dir.join("pgdata"),
            socket: data_dir.join("socket"),
            log: data_dir.join("postgres.log"),
            lock: data_dir.join("quantumflow.lock"),
        }
    }
}

/// The account the server processes run as.
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    /// Whether it differs from this process's own, so files must be handed over.
    switch: bool,
}

impl LocalPg {
    /// Starts the server, creating the cluster and the database on first use.
    pub async fn start(options: &Options) -> Result<Self> {
        let binaries = find_binaries()?;
        let account = server_account(&options.service_user)?;
        let layout = Layout::new(&options.data_dir);

        create_dir(&options.data_dir, 0o755)?;
        let lock = lock_data_dir(&options.data_dir, &layout.lock)?;
        if account.switch {
            check_reachable(&account, &options.data_dir)?;
        }
        check_socket_path(&layout.socket)?;

        create_dir(&layout.socket, 0o700)?;
        chown_to(&account, &layout.socket)?;
        stop_leftover_server(&layout.pgdata).await?;
        if !layout.pgdata.join("PG_VERSION").exists() {
            init_cluster(&binaries, &account, &layout, options.durable).await?;
        }

        let child = spawn_server(&binaries, &account, &layout, options)?;
        let mut server = Self {
            child,
            data_dir: options.data_dir.clone(),
            database: options.database.clone(),
            _lock: lock,
        };
        server.wait_until_ready(&layout).await?;
        server.ensure_database().await?;
        tracing::info!(data_dir = %server.data_dir.display(), "private PostgreSQL server ready");
        Ok(server)
    }

    /// Connection options for the server's database.
    pub fn connect_options(&self) -> PgConnectOptions {
        connect_options(&self.data_dir, &self.database)
    }

    /// A `postgres://` URL for the server's database.
    pub fn url(&self) -> String {
        url(&self.data_dir, &self.database)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server with a fast shutdown: open sessions are closed, nothing is lost. Then
    /// checks that no server runs in the data directory any more: one restarted by hand (with
    /// `pg_ctl restart`, say) is not the process this handle started, and is left running.
    pub async fn stop(mut self) -> Result<Stopped> {
        let started = self.child.id();
        match self.child.try_wait() {
            Ok(Some(status)) => tracing::warn!(
                %status,
                "the private PostgreSQL server this process started had already exited"
            ),
            _ => self.shut_down().await,
        }
        let pgdata = Layout::new(&self.data_dir).pgdata;
        // The pid file of the server just stopped may outlive it after an immediate shutdown;
        // its pid is then ours, not another server's.
        if let Some(pid) = running_postmaster(&pgdata).filter(|&pid| Some(pid) != started) {
            tracing::warn!(
                pid,
                data_dir = %self.data_dir.display(),
                "a PostgreSQL server that this process did not start (restarted by hand?) still \
                 runs in the data directory; stop it with `pg_ctl stop -D {}` as the server's \
                 user or `kill -INT {pid}`, or the next `quantumflow up` here stops it",
                pgdata.display()
            );
            return Ok(Stopped::OtherStillRunning { pid });
        }
        tracing::info!("private PostgreSQL server stopped");
        Ok(Stopped::Stopped)
    }

    /// Stops the server this handle started and waits for it to exit.
    async fn shut_down(&mut self) {
        let Some(pid) = self.child.id() else {
            return;
        };
        let pid = Pid::from_raw(pid as i32);

        // SIGINT is PostgreSQL's fast shutdown; SIGQUIT, its immediate one, is only for a
        // server that ignores the first.
        let _ = kill(pid, Signal::SIGINT);
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("private PostgreSQL server did not stop in time; quitting it");
            let _ = kill(pid, Signal::SIGQUIT);
            let _ = self.child.wait().await;
        }
    }

    async fn wait_until_ready(&mut self, layout: &Layout) -> Result<()> {
        let options = connect_options(&self.data_dir, "postgres");
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| io("wait for", &layout.log, e))?
            {
                let log = tail(&layout.log);
                return Err(LocalPgError::ServerFailed {
                    program: "postgres",
                    log: format!("exited with {status}: {log}"),
                });
            }
            if options.connect().await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let log = layout.log.display().to_string();
                return Err(LocalPgError::NotReady(READY_TIMEOUT, log));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ensure_database(&self) -> Result<()> {
        let mut conn = connect_options(&self.data_dir, "postgres")
            .connect()
            .await
            .map_err(LocalPgError::Database)?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&self.database)
                .fetch_one(&mut conn)
                .await
                .map_err(LocalPgError::Database)?;
        if !exists {
            let quoted = self.database.replace('"', "\"\"");
            let sql = format!("CREATE DATABASE \"{quoted}\"");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .map_err(LocalPgError::Database)?;
        }
        Ok(())
    }
}

/// Connection options for a private server in `data_dir`, whoever started it.
pub fn connect_options(data_dir: &Path, database: &str) -> PgConnectOptions {
    PgConnectOptions::new()
        .socket(data_dir.join("socket"))
        .port(SOCKET_PORT)
        .username(SUPERUSER)
        .database(database)
}

/// A `postgres://` URL for a private server in `data_dir`.
pub fn url(data_dir: &Path, database: &str) -> String {
    let socket = data_dir.join("socket");
    let host: String = socket
        .to_string_lossy()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("postgres://{SUPERUSER}@localhost:{SOCKET_PORT}/{database}?host={host}")
}

/// Whether a private server seems to be running in `data_dir` (its socket exists).
pub fn is_running(data_dir: &Path) -> bool {
    data_dir
        .join("socket")
        .join(format!(".s.PGSQL.{SOCKET_PORT}"))
        .exists()
}

struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
}

/// The PostgreSQL program `name` (such as `pg_dump`), looked up where the server's own
/// binaries are: on `PATH`, then in the newest versioned directory.
pub fn find_program(name: &str) -> Option<PathBuf> {
    search_dirs()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

fn find_binaries() -> Result<Binaries> {
    search_dirs()
        .iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .map(|dir| Binaries {
            initdb: dir.join("initdb"),
            postgres: dir.join("postgres"),
        })
        .ok_or(LocalPgError::BinariesNotFound)
}

/// Where PostgreSQL's programs may be, in order of preference.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();

    // Debian and Ubuntu keep one directory per major version; prefer the newest.
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir(BINARY_GLOB_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    dirs.extend(versioned.into_iter().map(|(_, dir)| dir));
    dirs
}

fn server_account(service_user: &str) -> Result<Account> {
    let me = Uid::effective();
    if !me.is_root() {
        let gid = nix::unistd::Gid::effective().as_raw();
        return Ok(Account {
            name: "current".into(),
            uid: me.as_raw(),
            gid,
            switch: false,
        });
    }
    match User::from_name(service_user) {
        Ok(Some(user)) => Ok(Account {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            switch: true,
        }),
        _ => Err(LocalPgError::NoServiceUser {
            user: service_user.to_owned(),
        }),
    }
}

fn check_reachable(account: &Account, data_dir: &Path) -> Result<()> {
    let absolute = fs::canonicalize(data_dir).map_err(|e| io("resolve", data_dir, e))?;
    for dir in absolute.ancestors() {
        let meta = fs::metadata(dir).map_err(|e| io("inspect", dir, e))?;
        let searchable = meta.mode() & 0o001 != 0
            || (meta.uid() == account.uid && meta.mode() & 0o100 != 0)
            || (meta.gid() == account.gid && meta.mode() & 0o010 != 0);
        if !searchable {
            return Err(LocalPgError::Unreachable {
                user: account.name.clone(),
                data_dir: data_dir.to_owned(),
                blocked: dir.to_owned(),
            });
        }
    }
    Ok(())
}

fn check_socket_path(socket_dir: &Path) -> Result<()> {
    // sockaddr_un holds 108 bytes including the terminating NUL.
    const MAX: usize = 107;
    let len = socket_dir
        .join(format!(".s.PGSQL.{SOCKET_PORT}"))
        .as_os_str()
        .len();
    if len > MAX {
        return Err(LocalPgError::SocketPathTooLong {
            dir: socket_dir.to_owned(),
            len,
            max: MAX,
        });
    }
    Ok(())
}

fn create_dir(path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| io("create", path, e))
}

fn chown_to(account: &Account, path: &Path) -> Result<()> {
    if account.switch {
        std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
            .map_err(|e| io("hand over", path, e))?;
    }
    Ok(())
}

fn lock_data_dir(data_dir: &Path, lock_path: &Path) -> Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .map_err(|e| io("open", lock_path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(LocalPgError::InUse(data_dir.to_owned())),
        Err(fs::TryLockError::Error(e)) => Err(io("lock", lock_path, e)),
    }
}

/// The postmaster running in `pgdata` by its pid file, if the process it names exists.
fn running_postmaster(pgdata: &Path) -> Option<u32> {
    let contents = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: u32 = contents.lines().next()?.trim().parse().ok()?;
    // A server run as another account cannot be signalled, but it exists.
    match kill(Pid::from_raw(i32::try_from(pid).ok()?), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => Some(pid),
        Err(_) => None,
    }
}

/// Stops a server that an earlier owner of the data directory left running (it was killed
/// before it could stop the server). We hold the lock, so nobody else is using it.
async fn stop_leftover_server(pgdata: &Path) -> Result<()> {
    let pid_file = pgdata.join("postmaster.pid");
    let Ok(contents) = fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    let Some(pid) = contents
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return Ok(());
    };
    let pid = Pid::from_raw(pid);
    if kill(pid, None).is_err() {
        // Not running: PostgreSQL itself removes a stale pid file on start.
        return Ok(());
    }

    tracing::warn!(%pid, "stopping a private PostgreSQL server left running by an earlier process");
    let _ = kill(pid, Signal::SIGINT);
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    while pid_file.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if pid_file.exists() {
        let _ = kill(pid, Signal::SIGQUIT);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

async fn init_cluster(
    bin: &Binaries,
    account: &Account,
    layout: &Layout,
    durable: bool,
) -> Result<()> {
    create_dir(&layout.pgdata, 0o700)?;
    chown_to(account, &layout.pgdata)?;

    let mut cmd = Command::new(&bin.initdb);
    cmd.arg("--pgdata")
        .arg(&layout.pgdata)
        .args([
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
        ])
        .args(["--locale", "C", "--no-instructions"]);
    if !durable {
        cmd.arg("--no-sync");
    }
    as_account(&mut cmd, account);

    let output = cmd.output().await.map_err(|e| io("run", &bin.initdb, e))?;
    if !output.status.success() {
        // Leave no half-made cluster behind: the next start would take it for a real one.
        let _ = fs::remove_dir_all(&layout.pgdata);
        let log = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(LocalPgError::ServerFailed {
            program: "initdb",
            log,
        });
    }
    Ok(())
}

fn spawn_server(
    bin: &Binaries,
    account: &Account,
    layout: &Layout,
    options: &Options,
) -> Result<Child> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(&layout.log)
        .map_err(|e| io("open", &layout.log, e))?;
    let log_err = log.try_clone().map_err(|e| io("open", &layout.log, e))?;

    let mut settings = vec![
        ("listen_addresses".to_owned(), String::new()),
        ("unix_socket_permissions".to_owned(), "0700".to_owned()),
        ("max_connections".to_owned(), "200".to_owned()),
    ];
    if !options.durable {
        for name in ["fsync", "synchronous_commit", "full_page_writes"] {
            settings.push((name.to_owned(), "off".to_owned()));
        }
    }
    settings.extend(options.settings.iter().cloned());

    let mut cmd = Command::new(&bin.postgres);
    cmd.arg("-D")
        .arg(&layout.pgdata)
        .arg("-k")
        .arg(&layout.socket);
    cmd.arg("-p").arg(SOCKET_PORT.to_string());
    for (name, value) in &settings {
        cmd.arg("-c").arg(format!("{name}={value}"));
    }
    as_account(&mut cmd, account);
    cmd.stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: a Ctrl-C in the terminal reaches only us, and we stop the
        // server after everything that uses it has drained.
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn().map_err(|e| io("start", &bin.postgres, e))
}

fn as_account(cmd: &mut Command, account: &Account) {
    if account.switch {
        cmd.uid(account.uid).gid(account.gid);
        // The server resolves relative paths and writes temporary files from its working
        // directory, which must be one the account can enter.
        cmd.current_dir("/");
    }
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> LocalPgError {
    LocalPgError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The last few lines of a log file, for an error message.
fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(2048)));
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_escape_the_socket_path() {
        let url = url(Path::new("/var/lib/quantum flow"), "qf");

        assert_eq!(
            url,
            "postgres://postgres@localhost:5432/qf?host=%2Fvar%2Flib%2Fquantum%20flow%2Fsocket"
        );
    }

    #[test]
    fn a_second_lock_on_a_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("quantumflow.lock");
        let _held = lock_data_dir(dir.path(), &lock).unwrap();

        let err = lock_data_dir(dir.path(), &lock).unwrap_err();

        assert!(matches!(err, LocalPgError::InUse(_)), "{err}");
    }

    #[test]
    fn over_long_socket_paths_are_refused() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));

        assert!(matches!(
            check_socket_path(&long),
            Err(LocalPgError::SocketPathTooLong { .. })
        ));
    }
}
