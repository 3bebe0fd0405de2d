//! Command-line flags. Every flag can also be set through the environment variable named in
//! its help, so containers are configured without a command line.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use quantumflow_netguard::IpNet;

/// QuantumFlow: a self-hosted workflow execution cluster.
#[derive(Debug, Parser)]
#[command(name = "quantumflow", version, propagate_version = true)]
pub(crate) struct Cli {
    /// PostgreSQL URL. Without it, commands use the private server that `quantumflow up`
    /// runs in --data-dir.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub(crate) database_url: Option<String>,

    /// Where `up` keeps its private PostgreSQL server.
    /// [default: /var/lib/quantumflow as root, else $XDG_DATA_HOME/quantumflow]
    #[arg(long, env = "QUANTUMFLOW_DATA_DIR", global = true)]
    pub(crate) data_dir: Option<PathBuf>,

    /// Log line format.
    #[arg(
        long,
        env = "QUANTUMFLOW_LOG_FORMAT",
        global = true,
        default_value = "text"
    )]
    pub(crate) log_format: LogFormat,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run everything on this machine: a private database (unless DATABASE_URL is set),
    /// migrations, the control plane and a pool of workers, whose http and slack nodes may
    /// also reach loopback addresses (127.0.0.0/8, ::1).
    Up(UpArgs),
    /// Run the control plane (HTTP API) alone.
    Serve(ServeArgs),
    /// Run a worker process alone.
    Worker(WorkerArgs),
    /// Apply, revert or inspect the database schema.
    Migrate(MigrateArgs),
    /// Load the demo data: two users, two connectors and a webhook workflow.
    Seed(SeedArgs),
    /// Create users; API clients then authenticate with their tokens.
    User(UserArgs),
    /// Create, list and revoke API tokens.
    Token(TokenArgs),
    /// Generate keys for connector credentials, and re-encrypt credentials after a rotation.
    Keys(KeysArgs),
}

impl Command {
    /// The service name exported spans carry unless `OTEL_SERVICE_NAME` says otherwise.
    pub(crate) fn service_name(&self) -> &'static str {
        match self {
            Self::Serve(_) => "quantumflow-api",
            Self::Worker(_) => "quantumflow-worker",
            Self::Up(_)
            | Self::Migrate(_)
            | Self::Seed(_)
            | Self::User(_)
            | Self::Token(_)
            | Self::Keys(_) => "quantumflow",
        }
    }
}

/// `QUANTUMFLOW_CREDENTIAL_KEYS` as given; parsed by the command, so that a mistake is
/// explained without clap quoting the value, which is key material.
#[derive(Clone)]
pub(crate) struct KeySpec(pub(crate) String);

impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySpec(..)")
    }
}

#[derive(Debug, Args)]
pub(crate) struct CredentialKeysArgs {
    /// Keys for connector credentials: comma-separated `kid:base64-key` entries (32-byte keys).
    /// The first seals new credentials, the others only open older ones. `up` generates one
    /// into --data-dir when none is given.
    #[arg(long = "credential-keys", value_name = "KID:KEY,...",
          env = quantumflow_secrets::KEYS_VAR, hide_env_values = true,
          value_parser = |s: &str| Ok::<_, std::convert::Infallible>(KeySpec(s.to_owned())))]
    pub(crate) spec: Option<KeySpec>,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "QUANTUMFLOW_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,

    /// Database connections the process may open.
    #[arg(long, env = "QUANTUMFLOW_DB_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) db_pool_size: u32,

    /// How long a request waits for a free database connection, in milliseconds, before it is
    /// answered 503 with Retry-After. Kept short so that a saturated or unreachable database
    /// sheds load at once instead of holding every sender for seconds.
    #[arg(long, env = "QUANTUMFLOW_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub(crate) db_acquire_timeout_ms: u64,

    /// Largest request body accepted, in bytes, for webhooks and the API; larger ones are
    /// answered 413 without being read.
    #[arg(long, env = "QUANTUMFLOW_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    pub(crate) max_body_bytes: u64,

    /// Seconds the API keeps serving after SIGTERM, with /readyz answering 503, so that load
    /// balancers stop sending requests before it stops accepting them; the requests in flight
    /// then finish (each within the 30 s request timeout) before the process exits.
    #[arg(long, value_name = "SECONDS", env = "QUANTUMFLOW_SHUTDOWN_DELAY", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub(crate) shutdown_delay: u64,

    #[command(flatten)]
    pub(crate) keys: CredentialKeysArgs,
}

impl ServeArgs {
    pub(crate) fn db_acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.db_acquire_timeout_ms)
    }
}

#[derive(Debug, Args)]
pub(crate) struct ShutdownGraceArgs {
    /// Seconds the nodes running at SIGTERM may take to finish; nodes still running then are
    /// stopped, which counts as an attempt, and their node runs handed back to the queue, which
    /// takes up to 4 s more. Jobs fetched but not started are handed back at once.
    #[arg(long = "shutdown-grace", value_name = "SECONDS", env = "QUANTUMFLOW_SHUTDOWN_GRACE",
          default_value_t = 25, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub(crate) seconds: u64,
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,

    /// Nodes this process runs at once.
    #[arg(long, env = "QUANTUMFLOW_WORKERS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) workers: u32,

    #[command(flatten)]
    pub(crate) shutdown_grace: ShutdownGraceArgs,

    // `up` allows loopback on top of these blocks; see `Command::Up`.
    #[command(flatten)]
    pub(crate) outbound: OutboundArgs,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Node runs this worker executes at once.
    #[arg(long, env = "QUANTUMFLOW_WORKER_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) concurrency: u32,

    /// Address of the worker's admin listener: `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "QUANTUMFLOW_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN)]
    pub(crate) admin_listen: SocketAddr,

    #[command(flatten)]
    pub(crate) shutdown_grace: ShutdownGraceArgs,

    #[command(flatten)]
    pub(crate) outbound: OutboundArgs,

    #[command(flatten)]
    pub(crate) keys: CredentialKeysArgs,
}

/// The worker's admin address: beside the control plane's 8080, and on loopback like it, so a
/// worker exposes nothing until told to (the Kubernetes manifests listen on every address).
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";

#[derive(Debug, Args)]
pub(crate) struct OutboundArgs {
    /// A CIDR block (or single address) that http and slack nodes may reach although it is
    /// internal: loopback, private, link-local and other non-public addresses are refused
    /// otherwise. Repeat the flag or separate blocks with commas.
    #[arg(long = "allow-outbound", value_name = "CIDR", env = "QUANTUMFLOW_ALLOW_OUTBOUND",
          value_delimiter = ',', value_parser = quantumflow_netguard::parse_block)]
    pub(crate) allow: Vec<IpNet>,
}

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    #[command(subcommand)]
    pub(crate) action: MigrateAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum MigrateAction {
    /// Apply every pending migration (QuantumFlow's tables and the job queue's).
    Up,
    /// Revert QuantumFlow's migrations down to a version; 0 also drops the job queue.
    Down {
        /// The version to keep; everything newer is reverted.
        #[arg(long)]
        to: i64,
    },
    /// Show which migrations are applied.
    Status,
}

#[derive(Debug, Args)]
pub(crate) struct SeedArgs {
    /// E-mail of the admin user.
    #[arg(
        long,
        env = "QUANTUMFLOW_SEED_ADMIN_EMAIL",
        default_value = "admin@quantumflow.com"
    )]
    pub(crate) admin_email: String,

    /// Password of the admin user; generated and printed once when not given.
    #[arg(long, env = "QUANTUMFLOW_SEED_ADMIN_PASSWORD", hide_env_values = true)]
    pub(crate) admin_password: Option<String>,

    /// E-mail of the demo user.
    #[arg(
        long,
        env = "QUANTUMFLOW_SEED_DEMO_EMAIL",
        default_value = "demo@quantumflow.com"
    )]
    pub(crate) demo_email: String,

    /// Password of the demo user; generated and printed once when not given.
    #[arg(long, env = "QUANTUMFLOW_SEED_DEMO_PASSWORD", hide_env_values = true)]
    pub(crate) demo_password: Option<String>,

    /// Incoming-webhook URL for the Slack connector; without it the connector is created
    /// inactive.
    #[arg(
        long,
        env = "QUANTUMFLOW_SEED_SLACK_WEBHOOK_URL",
        hide_env_values = true
    )]
    pub(crate) slack_webhook_url: Option<String>,

    /// API key for the e-mail connector; without it the connector is created inactive.
    #[arg(long, env = "QUANTUMFLOW_SEED_EMAIL_API_KEY", hide_env_values = true)]
    pub(crate) email_api_key: Option<String>,

    #[command(flatten)]
    pub(crate) keys: CredentialKeysArgs,
}

#[derive(Debug, Args)]
pub(crate) struct UserArgs {
    #[command(subcommand)]
    pub(crate) action: UserAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserAction {
    /// Create a user. The password is read from standard input with --password-stdin, or
    /// generated and printed once.
    Create {
        /// E-mail address; must be unique.
        #[arg(long)]
        email: String,
        /// Login name; must be unique.
        #[arg(long)]
        username: String,
        /// Display name.
        #[arg(long)]
        full_name: Option<String>,
        /// Make the user a superuser, who sees and changes everything.
        #[arg(long)]
        superuser: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    pub(crate) action: TokenAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenAction {
    /// Create an API token for a user and print it; it is shown this once.
    Create {
        /// The user's e-mail address or login name.
        #[arg(long)]
        user: String,
        /// What the token is for, e.g. ci-deploy.
        #[arg(long)]
        name: String,
        /// Days until the token stops working by itself; never when absent.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=3650))]
        expires_in_days: Option<u16>,
    },
    /// List a user's tokens (never their secrets).
    List {
        /// The user's e-mail address or login name.
        #[arg(long)]
        user: String,
    },
    /// Revoke a token by id; it stops working at once.
    Revoke {
        /// The token's id, as `token list` shows it.
        id: uuid::Uuid,
    },
}

#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    pub(crate) action: KeysAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysAction {
    /// Print a new random `kid:base64-key` entry for QUANTUMFLOW_CREDENTIAL_KEYS.
    Generate,
    /// Re-encrypt every connector's credentials with the active (first) key, and encrypt those
    /// still stored in clear. Safe to run again; run it after putting a new key first.
    Rotate {
        /// Connectors re-encrypted per transaction.
        #[arg(long, default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch_size: u32,

        #[command(flatten)]
        keys: CredentialKeysArgs,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn outbound_blocks_repeat_and_split_on_commas() {
        let line = "quantumflow worker --allow-outbound 10.1.2.0/24,::1/128 \
                    --allow-outbound 127.0.0.1";

        let parsed = Cli::try_parse_from(line.split_whitespace()).map(|cli| cli.command);

        let Ok(Command::Worker(WorkerArgs { outbound, .. })) = parsed else {
            panic!("not a worker command line: {parsed:?}");
        };
        let blocks: Vec<String> = outbound.allow.iter().map(ToString::to_string).collect();
        assert_eq!(blocks, ["10.1.2.0/24", "::1/128", "127.0.0.1/32"]);
    }
}
