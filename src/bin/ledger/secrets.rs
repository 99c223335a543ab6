//! `--callback-secrets FILE`: the secrets `serve` and `run` sign callbacks
//! with, re-read when the file changes so that a rotation needs no restart.
//!
//! ```json
//! {"secrets": {"acme": ["whsec-new…", "whsec-old…"], "*": ["…"]}}
//! ```
//!
//! `"*"` holds the secrets of the tenants not named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use execution_ledger::{CallbackSecrets, TenantId};
use serde::Deserialize;

use crate::cli::Usage;

/// How often the file is looked at for a change.
const REREAD: Duration = Duration::from_secs(1);

/// Unknown fields are refused by the decoder, naming them.
#[derive(Deserialize)]
struct SecretsFile {
    secrets: BTreeMap<String, Vec<String>>,
}

/// The secrets read from a file, and the file, to follow.
pub(crate) struct Watched {
    path: PathBuf,
    text: Vec<u8>,
    secrets: CallbackSecrets,
}

/// Reads and checks the file's text into `secrets`; the message says what
/// is wrong, naming the field.
fn apply(text: &[u8], secrets: &CallbackSecrets) -> std::result::Result<(), String> {
    let file: SecretsFile = crate::decode::json(text, "the file").map_err(|e| e.message)?;
    if file.secrets.is_empty() {
        return Err("secrets: empty (name a tenant's secrets, or \"*\"'s for every tenant)".into());
    }
    let mut default = Vec::new();
    let mut tenants = Vec::new();
    for (name, given) in file.secrets {
        if name == "*" {
            default = given;
        } else {
            let tenant: TenantId = name.parse().map_err(|_| {
                format!(
                    "secrets.{name}: not a tenant id (1-128 letters, digits and ._:-) nor \"*\""
                )
            })?;
            tenants.push((tenant, given));
        }
    }
    secrets.replace(tenants, default).map_err(|e| e.to_string())
}

impl Watched {
    /// Reads `path`: a file that cannot be read or holds bad secrets is a
    /// usage error.
    pub(crate) fn load(path: &Path) -> Result<Watched> {
        let text = std::fs::read(path)
            .map_err(|e| Usage(format!("--callback-secrets {}: {e}", path.display())))?;
        let secrets = CallbackSecrets::new();
        apply(&text, &secrets)
            .map_err(|why| Usage(format!("--callback-secrets {}: {why}", path.display())))?;
        Ok(Watched {
            path: path.to_owned(),
            text,
            secrets,
        })
    }

    /// The secrets, kept current: a task re-reads the file every second
    /// and, when it changed, replaces them. A changed file that does not
    /// hold good secrets is logged and the secrets before it are kept.
    /// Call within a tokio runtime.
    pub(crate) fn follow(&self) -> CallbackSecrets {
        let (path, mut last, secrets) =
            (self.path.clone(), self.text.clone(), self.secrets.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(REREAD);
            loop {
                every.tick().await;
                let read = {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || std::fs::read(path)).await
                };
                let text = match read {
                    Ok(Ok(text)) => text,
                    Ok(Err(e)) => {
                        tracing::error!(file = %path.display(), error = %e, "cannot re-read the callback secrets; the ones before are kept");
                        continue;
                    }
                    Err(_) => continue,
                };
                if text == last {
                    continue;
                }
                match apply(&text, &secrets) {
                    // A line like serve's own: the operator who rotates
                    // sees it took.
                    Ok(()) => {
                        use std::io::Write;
                        let _ = writeln!(
                            std::io::stderr(),
                            "callback secrets re-read from {}",
                            path.display()
                        );
                    }
                    Err(why) => {
                        tracing::error!(file = %path.display(), why, "the callback secrets changed but are refused; the ones before are kept")
                    }
                }
                last = text;
            }
        });
        self.secrets.clone()
    }
}
