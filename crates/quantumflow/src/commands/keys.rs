//! `quantumflow keys`: keys for connector credentials, and where each command finds them.
//!
//! Every command takes its keys from `QUANTUMFLOW_CREDENTIAL_KEYS` (or `--credential-keys`).
//! `up` keeps a generated key in its data directory when none is given; the other commands
//! read that file too when they work on `up`'s private database (no `DATABASE_URL`), so
//! `seed` and `keys rotate` against a one-machine setup need no configuration.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use quantumflow_secrets::{KEYS_VAR, Keyring, StoredForm};
use sqlx::PgPool;

use crate::cli::{CredentialKeysArgs, KeysAction};
use crate::commands::serve;
use crate::database;

/// The file in the data directory holding `up`'s generated key.
const KEY_FILE: &str = "credential-keys";

/// The keys for this command: the flag or variable, else the file `up` generated in
/// `data_dir` when the command uses `up`'s private database; `None` when neither is there.
pub(crate) fn configured(
    args: &CredentialKeysArgs,
    data_dir: &Path,
    url: Option<&str>,
) -> anyhow::Result<Option<Arc<Keyring>>> {
    if let Some(spec) = &args.spec {
        return Ok(Some(Arc::new(Keyring::parse(&spec.0)?)));
    }
    if url.is_some() {
        return Ok(None);
    }
    let path = data_dir.join(KEY_FILE);
    match read_key_file(&path)? {
        Some(spec) => Ok(Some(Arc::new(parse_file(&spec, &path)?))),
        None => Ok(None),
    }
}

/// The keys for `up`: like [`configured`], but a first start without any generates a key into
/// the data directory, readable by this user only.
pub(crate) fn for_up(args: &CredentialKeysArgs, data_dir: &Path) -> anyhow::Result<Arc<Keyring>> {
    if let Some(spec) = &args.spec {
        return Ok(Arc::new(Keyring::parse(&spec.0)?));
    }
    let path = data_dir.join(KEY_FILE);
    if let Some(spec) = read_key_file(&path)? {
        tracing::info!(path = %path.display(), "credential keys read from the data directory");
        return Ok(Arc::new(parse_file(&spec, &path)?));
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let entry = Keyring::generate_entry();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{entry}").with_context(|| format!("cannot write {}", path.display()))?;
    let keyring = Keyring::parse(&entry)?;
    tracing::warn!(
        path = %path.display(),
        kid = keyring.active_kid(),
        "generated a key for connector credentials; back this file up, or set {KEYS_VAR} to \
         its content: without it the stored credentials cannot be read"
    );
    Ok(Arc::new(keyring))
}

/// The key file's content, or `None` when there is no file; refuses a file others can read.
fn read_key_file(path: &PathBuf) -> anyhow::Result<Option<String>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} can be read by other users (mode {:o}); run `chmod 600` on it",
            path.display(),
            mode & 0o777
        );
    }
    let mut spec = String::new();
    file.read_to_string(&mut spec)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(spec.trim().to_owned()))
}

fn parse_file(spec: &str, path: &Path) -> anyhow::Result<Keyring> {
    Keyring::parse(spec).with_context(|| format!("in {}", path.display()))
}

/// Runs `keys generate` or `keys rotate`.
pub(crate) async fn run(
    action: &KeysAction,
    data_dir: &Path,
    url: Option<&str>,
) -> anyhow::Result<()> {
    match action {
        KeysAction::Generate => {
            writeln!(std::io::stdout().lock(), "{}", Keyring::generate_entry())?;
            Ok(())
        }
        KeysAction::Rotate { batch_size, keys } => {
            let Some(keyring) = configured(keys, data_dir, url)? else {
                bail!(
                    "keys rotate needs the keys: set {KEYS_VAR} to the new key followed by the \
                     old ones, as in \"new:…,old:…\""
                );
            };
            let pool =
                database::connect_configured(url, data_dir, 2, database::ACQUIRE_TIMEOUT).await?;
            serve::check_schema(&pool).await?;
            rotate(&pool, &keyring, *batch_size).await
        }
    }
}

/// Re-seals with the active key every connector not already sealed with it.
async fn rotate(pool: &PgPool, keyring: &Keyring, batch_size: u32) -> anyhow::Result<()> {
    let (mut from_clear, mut from_old) = (0_u64, 0_u64);
    let rotation = quantumflow_storage::connectors::rotate(
        pool,
        keyring.active_kid(),
        i64::from(batch_size),
        |id, stored| {
            let clear = quantumflow_secrets::reveal(Some(keyring), id, stored)
                .map_err(|err| err.to_string())?;
            let sealed = keyring.seal(id, &clear).map_err(|err| err.to_string())?;
            match quantumflow_secrets::stored_form(stored) {
                StoredForm::Clear => from_clear += 1,
                StoredForm::Sealed { .. } => from_old += 1,
            }
            Ok(sealed)
        },
    )
    .await
    .context("cannot re-encrypt connector credentials")?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Sealed with key {:?}: {from_old} connectors re-encrypted from older keys, {from_clear} \
         encrypted for the first time.",
        keyring.active_kid()
    )?;
    if rotation.refused.is_empty() {
        return Ok(());
    }
    let mut err = std::io::stderr().lock();
    for (id, reason) in &rotation.refused {
        writeln!(err, "connector {id}: {reason}")?;
    }
    bail!(
        "{} connectors could not be re-encrypted and keep their old credentials (listed above)",
        rotation.refused.len()
    )
}
