//! Schema identity and migrations of the SQLite store.
//!
//! A file is a zenflow database when its `application_id` says so (or it
//! is empty); its `user_version` is the migration it reached. Anything else
//! is refused before a byte of it is written.

use super::commit::SqlResult;
use crate::metadata::migrations::{latest, MIGRATIONS};
use rusqlite::{Connection, TransactionBehavior};
use std::time::Duration;
use zenflow_core::metadata::MetadataError;

/// Marks a SQLite file as a zenflow database (`PRAGMA application_id`, "ZFLW").
pub(super) const APPLICATION_ID: i64 = 0x5A46_4C57;

/// Refuses files that are not zenflow databases or are too new, without writing.
///
/// All reads happen in one read transaction: another process may be creating
/// the schema right now, and must be seen either entirely or not at all.
pub(super) fn check_identity(conn: &Connection, location: &str) -> SqlResult<()> {
    let tx = conn
        .unchecked_transaction()
        .map_err(|e| MetadataError::Backend { location: location.to_string(), message: e.to_string() })?;
    let result = read_identity(&tx, location);
    // Read-only: nothing to commit; dropping rolls back.
    drop(tx);
    result
}

fn read_identity(conn: &Connection, location: &str) -> SqlResult<()> {
    let not_ours = |detail: String| MetadataError::NotZenflow { location: location.to_string(), detail };
    let app_id: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
            not_ours("the file is not an SQLite database".into())
        }
        other => MetadataError::Backend { location: location.to_string(), message: other.to_string() },
    })?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| not_ours(e.to_string()))?;
    if app_id != APPLICATION_ID && !tables.is_empty() {
        let mut shown = tables.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if tables.len() > 5 {
            shown.push_str(", ...");
        }
        return Err(not_ours(format!("it is an SQLite database of another application, with tables {shown}")));
    }
    let version: i64 =
        conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| not_ours(e.to_string()))?;
    if version > latest() {
        return Err(MetadataError::NewerSchema { location: location.to_string(), found: version, supported: latest() });
    }
    Ok(())
}

/// Refuses, without writing, a store that is empty (nothing has run) or
/// whose schema is older than this build's: opened to read, it is not
/// migrated.
pub(super) fn require_current(conn: &Connection, location: &str) -> SqlResult<()> {
    let fail = |e: rusqlite::Error| MetadataError::Backend { location: location.to_string(), message: e.to_string() };
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(fail)?;
    if version == 0 {
        return Err(MetadataError::Empty { location: location.to_string() });
    }
    if version < latest() {
        return Err(MetadataError::OlderSchema { location: location.to_string(), found: version, supported: latest() });
    }
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection, location: &str) -> SqlResult<()> {
    let fail = |e: rusqlite::Error| MetadataError::Backend {
        location: location.to_string(),
        message: format!("schema migration failed: {e}"),
    };
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
    // Re-read under the write lock: another process may have migrated meanwhile.
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(fail)?;
    if version > latest() {
        return Err(MetadataError::NewerSchema { location: location.to_string(), found: version, supported: latest() });
    }
    for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > version) {
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", v).map_err(fail)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(fail)?;
    tx.commit().map_err(fail)
}

/// Retries an operation that failed because another connection held a lock
/// the busy handler does not wait for, for up to 30 s.
pub(super) fn retry_busy<T>(mut op: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut delay = Duration::from_millis(1);
    loop {
        match op() {
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}
