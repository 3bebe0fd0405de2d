//! `quantumflow user …` and `quantumflow token …`: bootstrapping who may use the API.
//!
//! The API itself needs a token for everything, so the first user and token of a deployment
//! come from here. `token create` prints only the token on stdout, so a script can capture it
//! (`TOKEN=$(quantumflow token create …)`); everything meant for a person goes to stderr.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use chrono::{Duration, Utc};
use quantumflow_api::auth;
use quantumflow_storage::StorageError;
use quantumflow_storage::tokens;
use quantumflow_storage::users::{self, NewUser, User};
use rand::Rng;
use sqlx::PgPool;

use crate::cli::{TokenAction, UserAction};

/// Length of generated passwords: 24 alphanumerics carry about 142 bits.
const GENERATED_PASSWORD_LEN: usize = 24;

pub(crate) async fn user(pool: &PgPool, action: UserAction) -> anyhow::Result<()> {
    crate::commands::serve::check_schema(pool).await?;
    let UserAction::Create {
        email,
        username,
        full_name,
        superuser,
        password_stdin,
    } = action;
    let password = if password_stdin {
        Password::given(read_password_line()?)
    } else {
        Password::generate()
    };
    let hashed = auth::hash_password(password.value())?;
    let created = users::insert(
        pool,
        &NewUser {
            email: &email,
            username: &username,
            hashed_password: &hashed,
            full_name: full_name.as_deref(),
            is_superuser: superuser,
        },
    )
    .await
    .map_err(|err| match err {
        StorageError::Conflict { .. } => {
            anyhow::anyhow!("a user with e-mail {email:?} or username {username:?} already exists")
        }
        StorageError::Invalid { .. } => anyhow::anyhow!("{email:?} is not a valid e-mail address"),
        other => other.into(),
    })?;

    let mut out = std::io::stdout().lock();
    let role = if created.is_superuser {
        "superuser"
    } else {
        "user"
    };
    writeln!(
        out,
        "Created {role} {} <{}> ({}); password: {password}",
        created.username, created.email, created.id
    )?;
    Ok(())
}

pub(crate) async fn token(pool: &PgPool, action: TokenAction) -> anyhow::Result<()> {
    crate::commands::serve::check_schema(pool).await?;
    match action {
        TokenAction::Create {
            user,
            name,
            expires_in_days,
        } => {
            let owner = find_user(pool, &user).await?;
            let expires_at = expires_in_days.map(|days| Utc::now() + Duration::days(days.into()));
            let issued = auth::issue(pool, owner.id, &name, expires_at)
                .await
                .map_err(|err| anyhow::anyhow!("cannot create the token: {err}"))?;
            writeln!(std::io::stdout().lock(), "{}", issued.secret)?;
            writeln!(
                std::io::stderr().lock(),
                "Created token {:?} ({}) for {}; it is shown only this once.",
                issued.token.name,
                issued.token.id,
                owner.username
            )?;
        }
        TokenAction::List { user } => {
            let owner = find_user(pool, &user).await?;
            let listed = tokens::list_for_user(pool, owner.id).await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<36}  {:<24}  {:<10}  {:<20}  {:<20}  STATE",
                "ID", "NAME", "PREFIX", "CREATED", "LAST USED"
            )?;
            let day = |at: chrono::DateTime<Utc>| at.format("%Y-%m-%d %H:%M").to_string();
            for token in listed {
                let state = match (token.revoked_at, token.expires_at) {
                    (Some(at), _) => format!("revoked {}", day(at)),
                    (None, Some(at)) if at <= Utc::now() => format!("expired {}", day(at)),
                    (None, Some(at)) => format!("expires {}", day(at)),
                    (None, None) => "active".to_owned(),
                };
                writeln!(
                    out,
                    "{:<36}  {:<24}  {:<10}  {:<20}  {:<20}  {state}",
                    token.id,
                    token.name,
                    format!("{}…", token.prefix),
                    day(token.created_at),
                    token.last_used_at.map_or_else(|| "never".to_owned(), day),
                )?;
            }
        }
        TokenAction::Revoke { id } => {
            let revoked = tokens::revoke(pool, id, None)
                .await
                .map_err(|err| match err {
                    StorageError::NotFound { .. } => anyhow::anyhow!("there is no token {id}"),
                    other => other.into(),
                })?;
            writeln!(
                std::io::stdout().lock(),
                "Revoked token {:?} ({id}).",
                revoked.name
            )?;
        }
    }
    Ok(())
}

async fn find_user(pool: &PgPool, login: &str) -> anyhow::Result<User> {
    match users::find_by_login(pool, login).await? {
        Some(user) => Ok(user),
        None => bail!("there is no user with e-mail or username {login:?}"),
    }
}

fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("--password-stdin was given but standard input held no password");
    }
    Ok(password)
}

/// A password given by the operator, or generated here.
pub(crate) struct Password {
    value: String,
    /// Whether it was generated here, and so must be shown.
    pub(crate) generated: bool,
}

impl Password {
    /// A password the operator chose; never echoed.
    pub(crate) fn given(value: String) -> Self {
        Self {
            value,
            generated: false,
        }
    }

    /// A random password, shown once.
    pub(crate) fn generate() -> Self {
        let value = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(GENERATED_PASSWORD_LEN)
            .map(char::from)
            .collect();
        Self {
            value,
            generated: true,
        }
    }

    pub(crate) fn value(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Display for Password {
    /// Generated passwords are shown once so the operator can sign in; given ones are never
    /// echoed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.generated {
            write!(f, "{} (generated)", self.value)
        } else {
            f.write_str("(as given)")
        }
    }
}
