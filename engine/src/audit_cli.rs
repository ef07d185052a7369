//! `switchboard audit verify | export | check` (PROTOCOL §1, §9).
//!
//! `verify` and `export` read the data directory of a stopped engine (the
//! store is one process's at a time); `check` needs nothing but an export
//! file and, to know who signed it, the operator's public key. Exit status:
//! 0 when everything holds, 1 when something does not (the message names
//! the first bad entry or checkpoint), 2 when the arguments, the
//! configuration, the key or the files cannot be used.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use audit::checkpoint::{AuditPublicKey, load_key_file};
use clap::Subcommand;
use storage::{NullSink, Store, StoreOptions};

use crate::config::Config;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify the stored audit log of a stopped engine: every entry's hash
    /// and chain, and every signed checkpoint's root. Prints
    /// {"ok", "entries", "head"}; exits 0 only when the trail is intact.
    Verify {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The public key (64 hex) to check the checkpoints with; default:
        /// the one of `audit.signing_key_file`.
        #[arg(long)]
        key: Option<String>,
    },
    /// Write one contact's entries, each with its inclusion proof, and the
    /// latest signed checkpoint (JSON lines) for `audit check`. Brings the
    /// audit log up to date and signs a checkpoint first when needed.
    Export {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The customer's WhatsApp id.
        #[arg(long)]
        contact: Option<String>,
        /// Only entries at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Only entries at or before this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Check an export with nothing but the file (and the operator's public
    /// key): every entry, its proof and the checkpoint's signature.
    Check {
        file: PathBuf,
        /// The operator's published public key (64 hex); without it the
        /// file's own key is used and the result says "self-signed".
        #[arg(long)]
        key: Option<String>,
    },
}

/// A refusal: what to print and the exit status.
pub(crate) struct Refusal(pub(crate) i32, pub(crate) String);

fn usage(message: impl Into<String>) -> Refusal {
    Refusal(2, message.into())
}

pub async fn run(command: AuditCommand) -> i32 {
    let outcome = match command {
        AuditCommand::Verify { config, data_dir, key } => verify(config, data_dir, key).await,
        AuditCommand::Export { config, data_dir, contact, from, to, output } => {
            export(config, data_dir, contact, (from, to), output).await
        }
        AuditCommand::Check { file, key } => check(&file, key.as_deref()),
    };
    match outcome {
        Ok(()) => 0,
        Err(Refusal(code, message)) => {
            eprintln!("switchboard audit: {message}");
            code
        }
    }
}

pub(crate) fn load_config(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<Config, Refusal> {
    let mut config = Config::load(config.as_deref(), std::env::vars()).map_err(|error| usage(error.to_string()))?;
    if let Some(data_dir) = data_dir {
        config.server.data_dir = data_dir;
    }
    Ok(config)
}

fn public_key(text: &str) -> Result<AuditPublicKey, Refusal> {
    AuditPublicKey::from_hex(text.trim()).map_err(|error| usage(format!("--key: {error}")))
}

/// Opens the store of a stopped engine (applying its journal, as a start does).
pub(crate) fn open_store(config: &Config) -> Result<Arc<Store>, Refusal> {
    let dir = &config.server.data_dir;
    if !dir.join("switchboard.redb").is_file() {
        return Err(usage(format!("no Switchboard store in {} (see --data-dir)", dir.display())));
    }
    let options =
        StoreOptions { cache_bytes: config.engine.store_cache_mib.max(16) * 1024 * 1024, ..Default::default() };
    Store::open(dir, options, Arc::new(NullSink)).map(Arc::new).map_err(|error| {
        usage(format!(
            "cannot open the store in {}: {error} (is an engine running on it? stop it first, or use GET /api/v1/audit)",
            dir.display()
        ))
    })
}

async fn verify(config: Option<PathBuf>, data_dir: Option<PathBuf>, key: Option<String>) -> Result<(), Refusal> {
    let config = load_config(config, data_dir)?;
    let key = match key {
        Some(text) => public_key(&text)?,
        None => {
            let path = config.audit_key_path();
            load_key_file(&path)
                .map_err(|error| usage(format!("{error}; pass the public key with --key")))?
                .public_key()
        }
    };
    let store = open_store(&config)?;
    let reader = store.reader();
    let verdict = tokio::task::spawn_blocking(move || {
        let snapshot = reader.audit()?;
        let size = snapshot.size()?;
        Ok::<_, crate::audit::AuditError>((crate::audit::verify(&snapshot, &key)?, size))
    })
    .await;
    store.shutdown();
    let (verified, size) =
        verdict.map_err(|error| Refusal(2, error.to_string()))?.map_err(|error| Refusal(2, error.to_string()))?;
    let json = verified.to_json(size);
    println!("{json}");
    match verified {
        crate::audit::Verified::Intact(_) => Ok(()),
        _ => Err(Refusal(1, json["error"].as_str().unwrap_or("the audit log does not verify").to_owned())),
    }
}

async fn export(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    contact: Option<String>,
    range: (Option<String>, Option<String>),
    output: Option<PathBuf>,
) -> Result<(), Refusal> {
    let contact = contact
        .filter(|contact| !contact.is_empty())
        .ok_or_else(|| usage("export needs --contact WA_ID: an export proves one contact's entries"))?;
    let time = |name: &str, text: Option<String>| match text {
        None => Ok(None),
        Some(text) => protocol::time::parse_rfc3339(&text)
            .map(Some)
            .ok_or_else(|| usage(format!("--{name} {text:?} is not an RFC 3339 time like 2026-11-24T10:00:00.000Z"))),
    };
    let range = (time("from", range.0)?, time("to", range.1)?);
    let config = load_config(config, data_dir)?;
    let path = config.audit_key_path();
    let key = load_key_file(&path).map_err(|error| usage(error.to_string()))?;
    let public_key = key.public_key();
    let store = open_store(&config)?;
    let clock: actors::clock::SharedClock = Arc::new(crate::server::SystemClock);
    let written = async {
        let checkpoint = crate::audit::bring_up_to_date(store.clone(), key, clock)
            .await
            .map_err(|error| Refusal(2, error.to_string()))?;
        let reader = store.reader();
        tokio::task::spawn_blocking(move || {
            let snapshot = reader.audit().map_err(|error| Refusal(2, error.to_string()))?;
            crate::audit::export_contact(&snapshot, &contact, range, &checkpoint, &public_key)
                .map_err(|error| Refusal(1, error.to_string()))
        })
        .await
        .map_err(|error| Refusal(2, error.to_string()))?
    }
    .await;
    store.shutdown();
    let file = written?;
    match output {
        Some(path) => {
            std::fs::write(&path, &file).map_err(|error| usage(format!("cannot write {}: {error}", path.display())))?
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&file).map_err(|error| usage(format!("cannot write the export: {error}")))?;
        }
    }
    Ok(())
}

fn check(file: &Path, key: Option<&str>) -> Result<(), Refusal> {
    let bytes = std::fs::read(file).map_err(|error| usage(format!("cannot read {}: {error}", file.display())))?;
    let key = key.map(public_key).transpose()?;
    let summary =
        audit::check(&bytes, key.as_ref()).map_err(|error| Refusal(1, format!("{}: {error}", file.display())))?;
    println!("{summary}");
    Ok(())
}
