//! Group commit for the SQLite store.
//!
//! Writes join one open write transaction (`BEGIN IMMEDIATE`), committed at
//! most [`COMMIT_WINDOW`] after its first write: by a write that finds the
//! window passed, by the committer thread when nobody writes, by
//! `set_run_status`, by `flush`, or when the store is dropped.
//!
//! **The sync happens outside the lock.** The connection runs with
//! `synchronous = NORMAL`, so `COMMIT` writes the batch to the WAL and makes
//! it visible without waiting for the disk; with [`Synchronous::Full`] the
//! store then syncs the WAL file itself (what `synchronous = FULL` does
//! inside `COMMIT`), without holding the connection. Reads and the next
//! batch's writes go on while the disk syncs; a run is reported finished
//! only once the sync that makes all of it durable has returned. A commit
//! that later commits sync cover is durable once they are: the WAL is one
//! file written in order, and a sync covers every frame written before it.
//!
//! A commit that fails takes its batch back: the runs that wrote to it are
//! then [`Lost`](crate::metadata::sql::batch::Lost), which the writes of
//! those runs report.

use crate::metadata::sql::batch::{BatchLog, KnownIds, Lost};
use crate::metadata::sql::write::{marker_metadata, marker_params, metadata_params, Ops, Returns};
use crate::metadata::sql::{statements as q, Value};
use rusqlite::Connection;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use zenflow_core::metadata::{MetadataError, StepRunWrite};

/// How long writes may stay in the open transaction before they are
/// committed: the most a power failure can take back of what a run recorded,
/// and the longest another process waits for the write lock (besides the
/// commit itself).
pub const COMMIT_WINDOW: Duration = Duration::from_millis(10);

/// How hard SQLite works to make each commit durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit is on disk before the run that made it is reported
    /// finished (the default).
    #[default]
    Full,
    /// Commits survive a process crash but the last ones may be lost on power
    /// failure or an OS crash. Faster; opt in knowingly.
    Normal,
}

pub(super) type SqlResult<T> = Result<T, MetadataError>;

/// A failure inside a write: SQLite's own, or the store's.
pub(super) enum Failure {
    Sql(rusqlite::Error),
    Store(MetadataError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<MetadataError> for Failure {
    fn from(e: MetadataError) -> Self {
        Failure::Store(e)
    }
}

/// What the store, its committer thread and its readers share.
pub(super) struct Shared {
    pub state: Mutex<State>,
    /// Signalled when a batch opens, when a sync is wanted, and when the store closes.
    pub changed: Condvar,
    pub location: String,
    pub synchronous: Synchronous,
    /// Whether writes of this handle are not committed yet: reads then go
    /// through the writing connection, inside the batch, to see them.
    pub uncommitted: AtomicBool,
    /// The WAL file to sync after each commit (`None`: in memory).
    pub wal: Option<PathBuf>,
    /// Number of the last batch committed, and of the last one on disk.
    pub committed: AtomicU64,
    pub synced: Mutex<u64>,
    /// Why the last sync failed; every durable call reports it from then on.
    pub sync_failed: Mutex<Option<String>>,
    /// Test hook: how long each sync takes on top of the disk's own time.
    #[cfg(test)]
    pub sync_delay: Mutex<Duration>,
}

pub(super) struct State {
    pub conn: Connection,
    /// Whether the batch's write transaction is open.
    pub in_transaction: bool,
    /// When the oldest write not yet committed was made (`None`: nothing waits).
    pub dirty_since: Option<Instant>,
    /// `running` markers not yet written, by step run id. A step that
    /// finishes before its batch commits never needs its marker (nobody
    /// outside this connection could have seen it), so a marker is written
    /// only when its batch commits, or before a read, while its step runs.
    pub markers: HashMap<String, StepRunWrite>,
    /// What the open batch holds, per run.
    pub log: BatchLog,
    /// Runs whose records a failed commit took back.
    pub lost: Lost,
    /// Ids known to exist (writes that refer only to them skip the check).
    pub known: KnownIds,
    /// Number of the open batch.
    pub batch: u64,
    /// A commit whose WAL frames are not synced yet: the committer syncs them.
    pub sync_wanted: bool,
    pub closing: bool,
}

/// Whether a write ends its batch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Commit {
    /// Commit (and sync) before returning.
    Now,
    /// Leave it to the window.
    Batched,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn err(&self, e: rusqlite::Error) -> MetadataError {
        match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, inner) => MetadataError::Corrupt(inner.to_string()),
            other => MetadataError::Backend { location: self.location.clone(), message: other.to_string() },
        }
    }

    pub fn failure(&self, f: Failure) -> MetadataError {
        match f {
            Failure::Sql(e) => self.err(e),
            Failure::Store(e) => e,
        }
    }

    /// Something waits to be committed: the window starts now, unless it has already.
    pub fn dirty(&self, state: &mut State) {
        self.uncommitted.store(true, Ordering::Release);
        if state.dirty_since.is_none() {
            state.dirty_since = Some(Instant::now());
            self.changed.notify_all();
        }
    }

    /// Opens the batch's write transaction unless it is open.
    pub fn begin(&self, state: &mut State) -> SqlResult<()> {
        if !state.in_transaction {
            // May wait for another process's write lock.
            blocking(|| state.conn.execute_batch("BEGIN IMMEDIATE")).map_err(|e| self.err(e))?;
            state.in_transaction = true;
            self.dirty(state);
        }
        Ok(())
    }

    /// Writes the pending `running` markers into the batch. A marker whose
    /// run does not exist is left out, with a warning (the step's final
    /// record, which is checked, follows).
    pub fn write_markers(&self, state: &mut State) -> SqlResult<()> {
        if state.markers.is_empty() {
            return Ok(());
        }
        self.begin(state)?;
        for (_, marker) in std::mem::take(&mut state.markers) {
            let sr = &marker.step_run;
            let written = execute(&state.conn, q::UPSERT_MARKER, &marker_params(sr));
            match written {
                Ok(0) => {
                    tracing::warn!(step = %sr.invocation, "not recording that the step is running: run `{}` does not exist", sr.run_id)
                }
                Ok(_) => {
                    for (key, json) in marker_metadata(sr) {
                        if let Err(e) = execute(&state.conn, q::UPSERT_METADATA, &metadata_params(sr, key, &json)) {
                            return Err(self.abandon(state, e));
                        }
                    }
                    state.log.wrote(sr)
                }
                Err(e) => return Err(self.abandon(state, e)),
            }
        }
        Ok(())
    }

    /// The error of a write that failed half-way: SQLite may have rolled
    /// the transaction back (a full disk, an I/O error), or the write left
    /// half of itself in it. Either way the batch is rolled back, and its
    /// runs lost.
    pub fn abandon(&self, state: &mut State, e: rusqlite::Error) -> MetadataError {
        if state.in_transaction && !state.conn.is_autocommit() {
            let _ = state.conn.execute_batch("ROLLBACK");
        }
        let reason = format!("{e}; the writes of the last {COMMIT_WINDOW:?} were rolled back with it");
        self.lose(state, &reason);
        MetadataError::Backend { location: self.location.clone(), message: reason }
    }

    /// The open batch is gone: its runs are lost.
    fn lose(&self, state: &mut State, reason: &str) {
        state.in_transaction = false;
        state.dirty_since = None;
        state.markers.clear();
        let State { log, lost, known, .. } = state;
        lost.lose(log, reason);
        known.clear();
        self.uncommitted.store(false, Ordering::Release);
    }

    /// Commits if asked to, or if the window has passed. Returns the number
    /// of the batch committed, for [`Shared::sync`].
    pub fn commit_if(&self, state: &mut State, commit: Commit) -> SqlResult<Option<u64>> {
        let due = state.dirty_since.is_some_and(|t| t.elapsed() >= COMMIT_WINDOW);
        if commit == Commit::Now || due {
            let batch = blocking(|| self.commit(state))?;
            if commit == Commit::Batched {
                // Synced by the committer thread, not on this write's path.
                state.sync_wanted = true;
                self.changed.notify_all();
            }
            return Ok(Some(batch));
        }
        Ok(None)
    }

    /// Writes the pending markers and commits the batch, if any (without
    /// syncing). A failed commit rolls the batch back and loses its runs.
    pub fn commit(&self, state: &mut State) -> SqlResult<u64> {
        self.write_markers(state)?;
        state.dirty_since = None;
        if !std::mem::replace(&mut state.in_transaction, false) {
            self.uncommitted.store(false, Ordering::Release);
            return Ok(self.committed.load(Ordering::Acquire));
        }
        if let Err(e) = state.conn.execute_batch("COMMIT") {
            // The transaction may still be open (e.g. an I/O error): end it.
            let _ = state.conn.execute_batch("ROLLBACK");
            let reason = format!("committing them failed, and they were rolled back: {e}");
            self.lose(state, &reason);
            return Err(MetadataError::Backend { location: self.location.clone(), message: reason });
        }
        state.log.clear();
        state.batch += 1;
        self.committed.store(state.batch, Ordering::Release);
        self.uncommitted.store(false, Ordering::Release);
        Ok(state.batch)
    }

    /// Makes batch `batch` and every one before it durable: syncs the WAL
    /// unless a sync since its commit has. Called without the state lock.
    pub fn sync(&self, batch: u64) -> SqlResult<()> {
        let Some(wal) = self.wal.as_ref().filter(|_| self.synchronous == Synchronous::Full) else {
            return Ok(());
        };
        let mut synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        if *synced < batch {
            // Everything committed up to now is in the file; the sync covers it.
            let covered = self.committed.load(Ordering::Acquire);
            #[cfg(test)]
            std::thread::sleep(*self.sync_delay.lock().unwrap_or_else(PoisonError::into_inner));
            let result = blocking(|| std::fs::File::open(wal).and_then(|f| f.sync_data()));
            if let Err(e) = result {
                let message = format!(
                    "syncing {} to disk failed, so recent records may not survive a power failure: {e}",
                    wal.display()
                );
                *self.sync_failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
            } else {
                *synced = covered.max(*synced);
            }
        }
        drop(synced);
        match self.sync_failed.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            Some(message) => Err(MetadataError::Backend { location: self.location.clone(), message }),
            None => Ok(()),
        }
    }

    /// The committer thread: commits each batch when its window has passed,
    /// syncs what writers committed, and commits what is left when the
    /// store closes.
    pub fn commit_when_due(&self) {
        let mut state = self.lock();
        loop {
            if state.closing {
                let committed = self.commit(&mut state);
                drop(state);
                if let Err(e) = committed.and_then(|batch| self.sync(batch)) {
                    tracing::error!("{e}");
                }
                return;
            }
            if std::mem::take(&mut state.sync_wanted) {
                let batch = self.committed.load(Ordering::Acquire);
                drop(state);
                if let Err(e) = self.sync(batch) {
                    tracing::error!("{e}");
                }
                state = self.lock();
                continue;
            }
            match state.dirty_since {
                None => state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner),
                Some(since) => {
                    let age = since.elapsed();
                    if age >= COMMIT_WINDOW {
                        match self.commit(&mut state) {
                            Ok(_) => state.sync_wanted = true,
                            Err(e) => tracing::error!("{e}"),
                        }
                    } else {
                        state = self
                            .changed
                            .wait_timeout(state, COMMIT_WINDOW - age)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                }
            }
        }
    }
}

/// Runs `sql` with `params`; the number of rows changed.
pub(super) fn execute(conn: &Connection, sql: &str, params: &[Value<'_>]) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params))
}

/// Runs `ops` in order; what their [`Returns::Version`] and
/// [`Returns::Count`] statements gave, in order.
pub(super) fn run_ops(conn: &Connection, ops: &Ops<'_>) -> rusqlite::Result<Vec<i64>> {
    let mut versions = Vec::new();
    for op in &ops.ops {
        let mut stmt = conn.prepare_cached(op.sql)?;
        match op.returns {
            Returns::Nothing => {
                stmt.execute(rusqlite::params_from_iter(ops.params(op)))?;
            }
            Returns::Version => {
                versions.push(stmt.query_row(rusqlite::params_from_iter(ops.params(op)), |r| r.get(0))?);
            }
            Returns::Count => {
                let n = stmt.execute(rusqlite::params_from_iter(ops.params(op)))?;
                versions.push(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }
    Ok(versions)
}

/// Runs blocking database work (a lock wait, an fsync) without stalling the
/// async runtime: on a multi-threaded runtime the worker hands its other
/// tasks to another thread first.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
