//! Rewriting the database into a new one after archiving: sled is
//! log-structured and keeps its files (and what it holds in memory of
//! them) at the size they reached, reusing the space of removed entries
//! only as new writes come. Once archiving has removed enough of the log
//! (`archived-events` in tree `meta`, at least [`compact_after`] events),
//! opening copies what is left into a new database and puts it in place of
//! the old one, so that the live database's files and memory follow what
//! it holds.
//!
//! In the data directory, while it runs:
//!
//! ```text
//! sled.compacting/   the new database being written (removed on open:
//!                    the old one is still in place)
//! sled.compacted/    the new database, whole and synced: open puts it in
//!                    place of sled/ (finishing what a crash cut short)
//! sled.old/          the old database once replaced (removed on open)
//! ```

use std::path::Path;

use super::{open_config, storage, sync_dir, sync_files, wait_released};
use crate::error::StorageError;

/// The key, in tree `meta`, of how many events archiving removed from the
/// database since it was last rewritten (8 bytes, big-endian).
pub(super) const ARCHIVED_EVENTS: &[u8] = b"archived-events";

/// Archived events after which opening rewrites the database: 100,000, or
/// `LEDGER_COMPACT_AFTER` when set.
pub(super) fn compact_after() -> u64 {
    std::env::var("LEDGER_COMPACT_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn rename(from: &Path, to: &Path) -> Result<(), StorageError> {
    std::fs::rename(from, to).map_err(|e| {
        StorageError::io(
            format!("cannot rename {} to {}", from.display(), to.display()),
            e,
        )
    })
}

fn remove_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::remove_dir_all(dir)
        .map_err(|e| StorageError::io(format!("cannot remove {}", dir.display()), e))
}

/// Finishes or undoes what a rewrite cut short left in `dir`, before the
/// database is opened.
pub(super) fn recover(dir: &Path) -> Result<(), StorageError> {
    let (sled, compacting, compacted, old) = (
        dir.join("sled"),
        dir.join("sled.compacting"),
        dir.join("sled.compacted"),
        dir.join("sled.old"),
    );
    let mut changed = false;
    if compacting.exists() {
        remove_dir(&compacting)?;
        changed = true;
    }
    if compacted.exists() {
        tracing::info!("putting the rewritten database in place");
        if sled.exists() {
            if old.exists() {
                remove_dir(&old)?;
            }
            rename(&sled, &old)?;
        }
        rename(&compacted, &sled)?;
        changed = true;
    }
    if changed {
        sync_dir(dir)?;
    }
    if old.exists() && sled.exists() {
        remove_dir(&old)?;
        sync_dir(dir)?;
    }
    Ok(())
}

/// Whether archiving removed enough of `db` to rewrite it.
pub(super) fn wanted(db: &::sled::Db) -> Result<bool, StorageError> {
    let meta = db.open_tree("meta").map_err(storage)?;
    let archived = meta
        .get(ARCHIVED_EVENTS)
        .map_err(storage)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes);
    Ok(archived >= compact_after())
}

/// Copies `db` (at `dir/sled`) into a new database, puts it in its place
/// and returns it open. When the copy fails (a full disk), the old
/// database stays in place and is returned: the ledger opens as it was,
/// and the next open tries again.
pub(super) fn rewrite(
    dir: &Path,
    db: ::sled::Db,
    config: impl Fn(&Path) -> ::sled::Config,
) -> Result<::sled::Db, StorageError> {
    let (sled, compacting, compacted, old) = (
        dir.join("sled"),
        dir.join("sled.compacting"),
        dir.join("sled.compacted"),
        dir.join("sled.old"),
    );
    tracing::info!("rewriting the database after archiving");
    let copied = match copy(&db, &compacting, &config) {
        Ok(copied) => copied,
        Err(e) => {
            tracing::warn!(error = %e, "cannot rewrite the database; it stays as it is");
            wait_released(&compacting.join("db"));
            if compacting.exists() {
                remove_dir(&compacting)?;
                sync_dir(dir)?;
            }
            return Ok(db);
        }
    };
    rename(&compacting, &compacted)?;
    sync_dir(dir)?;
    drop(db);
    wait_released(&sled.join("db"));
    rename(&sled, &old)?;
    rename(&compacted, &sled)?;
    sync_dir(dir)?;
    remove_dir(&old)?;
    sync_dir(dir)?;
    tracing::info!(entries = copied, "rewrote the database");
    open_config(&config(&sled), &sled)
}

/// Copies every tree of `db` (but the count that asks for a rewrite) into
/// a new database at `to`, synced and closed; returns the entries copied.
fn copy(
    db: &::sled::Db,
    to: &Path,
    config: &impl Fn(&Path) -> ::sled::Config,
) -> Result<u64, StorageError> {
    let new = open_config(&config(to), to)?;
    let mut copied = 0u64;
    for name in db.tree_names() {
        let (from, into) = (
            db.open_tree(&name).map_err(storage)?,
            new.open_tree(&name).map_err(storage)?,
        );
        let mut batch = ::sled::Batch::default();
        let mut n = 0;
        for item in from.iter() {
            let (k, v) = item.map_err(storage)?;
            if name.as_ref() == b"meta" && k.as_ref() == ARCHIVED_EVENTS {
                continue;
            }
            batch.insert(k, v);
            n += 1;
            if n == 4096 {
                into.apply_batch(std::mem::take(&mut batch))
                    .map_err(storage)?;
                copied += n;
                n = 0;
            }
        }
        into.apply_batch(batch).map_err(storage)?;
        copied += n;
    }
    new.flush().map_err(storage)?;
    sync_files(to)?;
    drop(new);
    wait_released(&to.join("db"));
    Ok(copied)
}
