//! The embedded metadata store: one SQLite file.
//!
//! WAL mode with a busy timeout, so several processes can use one file at
//! once. Writes are grouped into one transaction per [`COMMIT_WINDOW`]
//! ([`commit`] says how, and when they are durable); reads that need none of
//! this handle's uncommitted writes go through a second connection, so they
//! never wait for a batch (WAL readers do not wait for writers).
//!
//! The statements and the mapping of rows are the shared SQL layer's
//! ([`crate::metadata::sql`]); this module holds only what is SQLite's.
//!
//! [`Synchronous::Normal`] commits without syncing (the last commits may be
//! lost on power failure) and must be chosen explicitly.

mod commit;
mod files;
mod schema;

use crate::metadata::sql::batch::RunRow;
use crate::metadata::sql::delete;
use crate::metadata::sql::registry as registry_sql;
use crate::metadata::sql::rows::{self, StepRunParts};
use crate::metadata::sql::statements::{self as q, StepRunQueries};
use crate::metadata::sql::write::{references, Dialect, Ops, Prepared};
use crate::metadata::sql::{SqlRow, Value};
use async_trait::async_trait;
use commit::{execute, run_ops, Commit, Failure, Shared, SqlResult, State};
use rusqlite::{Connection, OpenFlags};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;
use zenflow_core::metadata::*;
use zenflow_core::registry::{
    AliasEvent, AliasHolder, Model, ModelRegistry, ModelVersion, NewModelVersion, Promoted, Promotion, Protection,
    RegistryError,
};

pub use commit::{Synchronous, COMMIT_WINDOW};

/// WAL size (in 4 KiB pages) past which the commit that crosses it
/// checkpoints the WAL into the database file (SQLite's automatic
/// checkpoint). It runs on the writing connection with no transaction open,
/// so it copies every frame and the next write starts the WAL over; one
/// checked on another connection while a batch is open never could, and the
/// WAL then grew while each commit checkpointed it again.
const CHECKPOINT_AFTER_PAGES: u64 = 1024;

/// The SQLite implementation of [`MetadataStore`].
pub struct SqliteMetadataStore {
    shared: Arc<Shared>,
    /// Reads that need no uncommitted write of this handle (`None`: an
    /// in-memory database, which has one connection).
    reader: Option<Mutex<Connection>>,
    /// Commits a batch whose window has passed while nobody writes.
    committer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for SqliteMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteMetadataStore")
            .field("location", &self.shared.location)
            .field("synchronous", &self.shared.synchronous)
            .finish()
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match *self {
            Value::Text(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Int(Some(i)) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
            Value::Real(Some(f)) => ToSqlOutput::Borrowed(ValueRef::Real(f)),
            Value::Blob(Some(b)) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Text(None) | Value::Int(None) | Value::Real(None) | Value::Blob(None) => {
                ToSqlOutput::Borrowed(ValueRef::Null)
            }
        })
    }
}

impl SqlRow for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> SqlResult<String> {
        self.get(i).map_err(conversion)
    }
    fn opt_text(&self, i: usize) -> SqlResult<Option<String>> {
        self.get(i).map_err(conversion)
    }
    fn int(&self, i: usize) -> SqlResult<i64> {
        self.get(i).map_err(conversion)
    }
    fn opt_int(&self, i: usize) -> SqlResult<Option<i64>> {
        self.get(i).map_err(conversion)
    }
    fn opt_real(&self, i: usize) -> SqlResult<Option<f64>> {
        self.get(i).map_err(conversion)
    }
    fn opt_blob(&self, i: usize) -> SqlResult<Option<Vec<u8>>> {
        self.get(i).map_err(conversion)
    }
    fn flag(&self, i: usize) -> SqlResult<bool> {
        self.get(i).map_err(conversion)
    }
}

fn conversion(e: rusqlite::Error) -> MetadataError {
    MetadataError::Corrupt(e.to_string())
}

/// Runs query `sql` with `params`, mapping each row with `map`.
fn query<T>(
    conn: &Connection,
    sql: &str,
    params: &[Value<'_>],
    map: impl Fn(&rusqlite::Row<'_>) -> SqlResult<T>,
) -> Result<Vec<T>, Failure> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// The step runs `queries` find for the parameters `p`, whole.
fn load_step_runs(conn: &Connection, queries: &StepRunQueries, p: &[Value<'_>]) -> Result<Vec<StepRunRecord>, Failure> {
    let runs = query(conn, queries.runs, p, |r| rows::step_run(r))?;
    if runs.is_empty() {
        return Ok(runs);
    }
    Ok(StepRunParts {
        runs,
        outputs: query(conn, queries.outputs, p, |r| rows::output_row(r))?,
        inputs: query(conn, queries.inputs, p, |r| rows::input_row(r))?,
        metadata: query(conn, queries.metadata, p, |r| rows::metadata_row(r))?,
        checks: query(conn, queries.checks, p, |r| rows::check_row(r))?,
    }
    .assemble())
}

/// Runs `f` in a savepoint: all of its changes stay, or none. (The
/// statements are prepared once per connection, unlike rusqlite's
/// `Savepoint`, which parses them on every use.)
fn atomically<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T, Failure>) -> Result<T, Failure> {
    conn.prepare_cached("SAVEPOINT zenflow_write")?.execute([])?;
    match f(conn) {
        Ok(value) => {
            conn.prepare_cached("RELEASE zenflow_write")?.execute([])?;
            Ok(value)
        }
        Err(e) => {
            // Nothing to add if the transaction itself is gone (the caller checks).
            if !conn.is_autocommit() {
                let _ = conn.prepare_cached("ROLLBACK TO zenflow_write").and_then(|mut s| s.execute([]));
                let _ = conn.prepare_cached("RELEASE zenflow_write").and_then(|mut s| s.execute([]));
            }
            Err(e)
        }
    }
}

impl SqliteMetadataStore {
    /// Opens (creating if needed) the database at `path` with durable commits.
    pub fn open(path: impl AsRef<Path>) -> SqlResult<Self> {
        Self::open_with(path, Synchronous::Full)
    }

    /// Opens the database at `path` with the given durability.
    ///
    /// A file that is not a zenflow database, or whose schema is newer than
    /// this build, is refused before anything is written to it.
    pub fn open_with(path: impl AsRef<Path>, synchronous: Synchronous) -> SqlResult<Self> {
        let path = path.as_ref();
        let location = format!("sqlite://{}", path.display());
        let backend = |message: String| MetadataError::Backend { location: location.clone(), message };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| backend(format!("cannot create folder {}: {e}", parent.display())))?;
        }
        // SQLite would open it read-only, and create the `-wal` and `-shm`
        // files with its read-only mode, which every writer after this one
        // then fails on.
        if path.exists() && !files::writable(path) {
            return Err(backend(format!("cannot write the database: {}", files::not_writable(path))));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| backend(e.to_string()))?;
        let mut store = Self::init(conn, location.clone(), synchronous, Some(path), false).map_err(|e| match e {
            MetadataError::Backend { location, message } if message.contains("readonly database") => {
                MetadataError::Backend { location, message: format!("{message}: {}", files::not_writable(path)) }
            }
            other => other,
        })?;
        let reader =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .and_then(|c| {
                    c.busy_timeout(Duration::from_secs(30))?;
                    c.set_prepared_statement_cache_capacity(64);
                    c.pragma_update(None, "query_only", "ON")?;
                    Ok(c)
                })
                .map_err(|e| backend(format!("cannot open a reading connection: {e}")))?;
        store.reader = Some(Mutex::new(reader));
        Ok(store)
    }

    /// Opens the database at `path` to read only: nothing written, no
    /// schema migrated, no lock taken, no file or folder created (not even
    /// the `-wal` and `-shm` files: a database this process may not write,
    /// and that no writer has open, is read as immutable, since SQLite would
    /// create them with its read-only mode). A store that does not exist
    /// is [`MetadataError::Empty`]; one whose schema is older than this
    /// build's is [`MetadataError::OlderSchema`]; writes fail.
    pub fn open_read_only(path: impl AsRef<Path>) -> SqlResult<Self> {
        let path = path.as_ref();
        let location = format!("sqlite://{}", path.display());
        if !path.exists() {
            return Err(MetadataError::Empty { location });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(files::read_only_uri(path), flags)
            .map_err(|e| MetadataError::Backend { location: location.clone(), message: e.to_string() })?;
        Self::init(conn, location, Synchronous::Full, Some(path), true)
    }

    /// Whether this process may write the database at `path` (and the
    /// `-wal` and `-shm` files beside it): whether
    /// [`SqliteMetadataStore::open_with`] can work on it without leaving
    /// files another writer cannot open.
    pub fn writable(path: impl AsRef<Path>) -> bool {
        files::writable(path.as_ref())
    }

    /// A private in-memory database (tests, throwaway runs).
    pub fn in_memory() -> SqlResult<Self> {
        let conn = Connection::open_in_memory()
            .map_err(|e| MetadataError::Backend { location: "sqlite::memory:".into(), message: e.to_string() })?;
        Self::init(conn, "sqlite::memory:".into(), Synchronous::Full, None, false)
    }

    /// The store on `conn`, migrated to the current schema (`read_only`:
    /// checked to be current instead, and left in whatever journal mode
    /// its writers chose).
    fn init(
        mut conn: Connection,
        location: String,
        synchronous: Synchronous,
        path: Option<&Path>,
        read_only: bool,
    ) -> SqlResult<Self> {
        let fail = |e: rusqlite::Error| MetadataError::Backend { location: location.clone(), message: e.to_string() };
        conn.busy_timeout(Duration::from_secs(30)).map_err(fail)?;
        // Room for every statement the store uses (rusqlite keeps 16).
        conn.set_prepared_statement_cache_capacity(64);
        schema::check_identity(&conn, &location)?;
        if !read_only {
            // Switching to WAL needs a moment of exclusive access, and SQLite
            // does not wait for it with the busy handler: retry while others
            // hold locks.
            schema::retry_busy(|| conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)))
                .map_err(fail)?;
        }
        // NORMAL: COMMIT does not wait for the disk; the store syncs the WAL
        // itself after the commit, outside its lock ([`commit`]).
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(fail)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(fail)?;
        conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_AFTER_PAGES).map_err(fail)?;
        // A WAL that starts over keeps its file (overwriting is cheaper than
        // growing it); one huge batch must not leave a huge file behind.
        conn.pragma_update(None, "journal_size_limit", CHECKPOINT_AFTER_PAGES * 4096).map_err(fail)?;
        if read_only {
            schema::require_current(&conn, &location)?;
        } else {
            schema::migrate(&mut conn, &location)?;
        }
        let wal = path.map(|p| files::companion(p, "-wal"));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                conn,
                in_transaction: false,
                dirty_since: None,
                markers: HashMap::new(),
                log: Default::default(),
                lost: Default::default(),
                known: Default::default(),
                batch: 0,
                sync_wanted: false,
                closing: false,
            }),
            changed: Condvar::new(),
            location,
            synchronous,
            uncommitted: AtomicBool::new(false),
            wal,
            committed: AtomicU64::new(0),
            synced: Mutex::new(0),
            sync_failed: Mutex::new(None),
            #[cfg(test)]
            sync_delay: Mutex::new(Duration::ZERO),
        });
        let committer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("zenflow-sqlite-commit".into())
                .spawn(move || shared.commit_when_due())
                .map_err(|e| MetadataError::Backend {
                    location: "sqlite".into(),
                    message: format!("cannot start the commit thread: {e}"),
                })?
        };
        Ok(SqliteMetadataStore { shared, reader: None, committer: Some(committer) })
    }

    /// The file path, when the store is a file.
    pub fn path(&self) -> Option<PathBuf> {
        self.shared.location.strip_prefix("sqlite://").map(PathBuf::from)
    }

    /// Reads on the reading connection, unless this handle has writes not
    /// yet committed: then inside the batch, so that it reads its own
    /// writes at once. Neither waits for a commit's sync.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Failure>) -> SqlResult<T> {
        if let Some(reader) = self.reader.as_ref().filter(|_| !self.shared.uncommitted.load(Ordering::Acquire)) {
            let conn = reader.lock().unwrap_or_else(PoisonError::into_inner);
            return f(&conn).map_err(|e| self.shared.failure(e));
        }
        let mut state = self.shared.lock();
        self.shared.write_markers(&mut state)?;
        f(&state.conn).map_err(|e| self.shared.failure(e))
    }

    /// Runs `f` as one atomic write (a savepoint) in the open batch, opening
    /// one if needed, and commits the batch when asked to or when its window
    /// has passed; a commit asked for is synced before this returns.
    fn write<T>(&self, commit: Commit, f: impl FnOnce(&mut State) -> Result<T, Failure>) -> SqlResult<T> {
        let mut state = self.shared.lock();
        self.shared.write_markers(&mut state)?;
        self.shared.begin(&mut state)?;
        let value = f(&mut state).map_err(|e| self.failed(&mut state, e))?;
        let committed = self.shared.commit_if(&mut state, commit)?;
        drop(state);
        if let (Commit::Now, Some(batch)) = (commit, committed) {
            self.shared.sync(batch)?;
        }
        Ok(value)
    }

    /// The error of a failed write. SQLite rolls the whole transaction back
    /// on some errors (a full disk, an I/O error): the batch's earlier
    /// writes are then lost too.
    fn failed(&self, state: &mut State, e: Failure) -> MetadataError {
        match e {
            Failure::Sql(e) if state.in_transaction && state.conn.is_autocommit() => self.shared.abandon(state, e),
            other => self.shared.failure(other),
        }
    }

    /// Whether every reference of `w` exists (checked unless known), so
    /// that none of its statements can fail on a constraint half-way.
    fn check_references(state: &mut State, w: &StepRunWrite) -> Result<(), Failure> {
        for r in references(w) {
            let (sql, id) = r.exists_query();
            if r.may_skip() && state.known.contains(id) {
                continue;
            }
            let exists: bool = state.conn.prepare_cached(sql)?.query_row([id], |row| row.get(0))?;
            if !exists {
                return Err(r.missing(w).into());
            }
            state.known.insert(id);
        }
        Ok(())
    }
}

impl Drop for SqliteMetadataStore {
    /// Commits what is still open.
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}

#[async_trait]
impl MetadataStore for SqliteMetadataStore {
    fn url(&self) -> String {
        self.shared.location.clone()
    }

    async fn create_run(&self, run: &NewRun) -> SqlResult<RunRecord> {
        let config = serde_json::to_string(&run.plan.config).map_err(|e| MetadataError::Corrupt(e.to_string()))?;
        let plan = run.plan.to_json_compact();
        // A planned run (`run --pending`) is for other processes to pick up:
        // commit it now. A running one joins the batch.
        let commit = if run.status == RunStatus::Pending { Commit::Now } else { Commit::Batched };
        let row = RunRow::new(run, &config, &plan);
        let created = self.write(commit, |state| {
            atomically(&state.conn, |c| {
                execute(c, q::CREATE_PIPELINE, &[(&run.pipeline).into(), run.started_at.into()])?;
                Ok(execute(c, q::CREATE_RUN, &row.create_params(run.status.as_str()))? == 1)
            })
            .inspect(|&created| {
                if created {
                    state.log.created(row.clone());
                    state.known.insert(&run.id);
                }
            })
        })?;
        if !created {
            return Err(MetadataError::RunNameTaken(run.name.clone()));
        }
        Ok(run.to_record(plan))
    }

    async fn set_run_status(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
        ended_at: Option<Timestamp>,
    ) -> SqlResult<()> {
        let lost = self.shared.lock().lost.take(run_id);
        if let Some(lost) = lost {
            // Records of this run were lost: it is failed, whatever the
            // caller thought, and so are the steps whose records were lost.
            let location = self.shared.location.clone();
            let message = match lost.error(&location) {
                MetadataError::Backend { message, .. } => message,
                other => other.to_string(),
            };
            let now = now();
            let recorded = self.write(Commit::Now, |state| {
                atomically(&state.conn, |c| run_ops(c, &lost.recovery(run_id, &message, &now)).map_err(Failure::from))
            });
            let error = lost.error(&location);
            if recorded.is_err() {
                self.shared.lock().lost.restore(run_id, lost);
            }
            recorded?;
            return Err(error);
        }
        // The end of a run is the commit that makes all of it durable.
        let changed = self.write(Commit::Now, |state| {
            state.log.touched(run_id);
            atomically(&state.conn, |c| {
                let now = now();
                let beat = (status == RunStatus::Running).then_some(now);
                let changed = execute(
                    c,
                    q::SET_RUN_STATUS,
                    &[status.as_str().into(), error.into(), ended_at.into(), beat.into(), run_id.into()],
                )?;
                if matches!(status, RunStatus::Completed | RunStatus::Failed) {
                    execute(c, q::CLOSE_RUNNING_STEPS, &[now.into(), run_id.into()])?;
                }
                Ok(changed)
            })
        })?;
        if changed == 0 {
            return Err(MetadataError::NotFound(format!("run `{run_id}`")));
        }
        Ok(())
    }

    async fn heartbeat(&self, run_id: &str, at: Timestamp) -> SqlResult<()> {
        self.shared.lock().lost.check(run_id, &self.shared.location)?;
        self.write(Commit::Batched, |state| {
            state.log.touched(run_id);
            execute(&state.conn, q::HEARTBEAT, &[at.into(), run_id.into()]).map(|_| ()).map_err(Failure::from)
        })
    }

    async fn fail_stale_runs(&self, stale_after: std::time::Duration) -> SqlResult<Vec<String>> {
        // One host's file: its clock is the store's.
        let before = now().saturating_sub(i64::try_from(stale_after.as_micros()).unwrap_or(i64::MAX));
        self.write(Commit::Batched, |state| {
            atomically(&state.conn, |c| {
                let now = now();
                let ids: Vec<String> =
                    query(c, q::FAIL_STALE_RUNS, &[STALE_ERROR.into(), now.into(), before.into()], |r| r.text(0))?;
                for id in &ids {
                    execute(c, q::FAIL_STALE_STEPS, &[DEAD_STEP_ERROR.into(), now.into(), id.into()])?;
                }
                Ok(ids)
            })
        })
    }

    async fn write_step_run(&self, w: &StepRunWrite) -> SqlResult<Vec<OutputLink>> {
        let shared = &self.shared;
        if w.step_run.status == StepStatus::Running {
            // Written only if the step is still running when its batch
            // commits (or something reads first).
            let mut state = shared.lock();
            state.lost.check(&w.step_run.run_id, &shared.location)?;
            state.markers.insert(w.step_run.id.clone(), w.clone());
            shared.dirty(&mut state);
            shared.commit_if(&mut state, Commit::Batched)?;
            return Ok(w.step_run.outputs.clone());
        }
        let prepared = Prepared::new(w)?;
        let ops = Ops::step_run(w, &prepared, Dialect::Sqlite);
        let mut state = shared.lock();
        state.lost.check(&w.step_run.run_id, &shared.location)?;
        state.markers.remove(&w.step_run.id);
        shared.begin(&mut state)?;
        Self::check_references(&mut state, w).map_err(|e| self.failed(&mut state, e))?;
        // No savepoint (it would copy every page the batch has changed so
        // far, on every step): with its references checked, a failure now is
        // SQLite's own (an I/O error, a full disk), and takes the batch with it.
        let versions = run_ops(&state.conn, &ops).map_err(|e| shared.abandon(&mut state, e))?;
        let outputs = prepared.outputs(w, &versions);
        state.log.wrote(&w.step_run);
        for o in &outputs {
            state.known.insert(&o.artifact.id);
        }
        shared.commit_if(&mut state, Commit::Batched)?;
        Ok(outputs)
    }

    async fn flush(&self) -> SqlResult<()> {
        let mut state = self.shared.lock();
        let batch = self.shared.commit_if(&mut state, Commit::Now)?;
        drop(state);
        match batch {
            Some(batch) => self.shared.sync(batch),
            None => Ok(()),
        }
    }

    async fn find_cached(&self, cache_key: &str) -> SqlResult<Option<CacheHit>> {
        let hit = self
            .read(|c| Ok(rows::cache_hit(query(c, q::CACHE_HIT, &[cache_key.into()], |r| rows::cache_hit_row(r))?)))?;
        if let Some(hit) = &hit {
            let mut state = self.shared.lock();
            for o in &hit.outputs {
                state.known.insert(&o.artifact.id);
            }
        }
        Ok(hit)
    }

    async fn get_run(&self, id_or_name: &str) -> SqlResult<Option<RunRecord>> {
        self.read(|c| Ok(query(c, q::GET_RUN, &[id_or_name.into()], |r| rows::run(r))?.pop()))
    }

    async fn list_runs(&self, pipeline: Option<&str>, limit: usize) -> SqlResult<Vec<RunRecord>> {
        self.read(|c| query(c, q::LIST_RUNS, &[pipeline.into(), limit.into()], |r| rows::run(r)))
    }

    async fn runs_with_id_prefix(&self, prefix: &str, limit: usize) -> SqlResult<Vec<RunRecord>> {
        if !zenflow_core::metadata::is_id_prefix(prefix) {
            return Ok(Vec::new());
        }
        self.read(|c| query(c, q::RUNS_WITH_ID_PREFIX, &[prefix.into(), limit.into()], |r| rows::run(r)))
    }

    async fn step_runs(&self, run_id: &str) -> SqlResult<Vec<StepRunRecord>> {
        self.read(|c| load_step_runs(c, &q::STEP_RUNS_OF_RUN, &[run_id.into()]))
    }

    async fn latest_step_run(&self, run_id: &str, invocation: &str) -> SqlResult<Option<StepRunRecord>> {
        self.read(|c| Ok(load_step_runs(c, &q::LATEST_STEP_RUN, &[run_id.into(), invocation.into()])?.pop()))
    }

    async fn step_run(&self, id: &str) -> SqlResult<Option<StepRunRecord>> {
        self.read(|c| Ok(load_step_runs(c, &q::STEP_RUN_BY_ID, &[id.into()])?.pop()))
    }

    async fn artifact_version(&self, id: &str) -> SqlResult<Option<ArtifactVersion>> {
        self.read(|c| Ok(query(c, q::ARTIFACT_VERSION, &[id.into()], |r| rows::artifact_version(r, 0))?.pop()))
    }

    async fn artifact_versions(&self, name: Option<&str>, limit: usize) -> SqlResult<Vec<ArtifactVersion>> {
        self.read(|c| query(c, q::ARTIFACT_VERSIONS, &[name.into(), limit.into()], |r| rows::artifact_version(r, 0)))
    }

    async fn artifact_version_named(&self, name: &str, version: Option<i64>) -> SqlResult<Option<ArtifactVersion>> {
        self.read(|c| {
            Ok(query(c, q::ARTIFACT_VERSION_NAMED, &[name.into(), version.into()], |r| rows::artifact_version(r, 0))?
                .pop())
        })
    }

    fn registry(&self) -> Option<&dyn ModelRegistry> {
        Some(self)
    }

    async fn delete_run(&self, run_id: &str, dry_run: bool) -> SqlResult<Deletion> {
        let at = now();
        self.registry_write(async |tx| Ok(delete::delete_run(tx, run_id, at, delete::Locking::Serial, dry_run).await?))
            .map_err(|e| delete::store_error(e, &self.shared.location))
    }

    async fn store_id(&self) -> SqlResult<String> {
        // Read first: only the first call, ever, writes.
        if let Some(id) = self.read(|c| Ok(query(c, delete::IDENTITY, &[], |r| r.text(0))?.pop()))? {
            return Ok(id);
        }
        self.registry_write(async |tx| Ok(delete::store_id(tx).await?))
            .map_err(|e| delete::store_error(e, &self.shared.location))
    }

    async fn content_hashes(&self) -> SqlResult<HashMap<zenflow_core::ContentHash, u64>> {
        self.read(|c| Ok(query(c, delete::CONTENT_HASHES, &[], |r| delete::hash_count(r))?.into_iter().collect()))
    }

    async fn lineage(&self, artifact_version: &str) -> SqlResult<Lineage> {
        self.read(|c| {
            let artifact = query(c, q::ARTIFACT_VERSION, &[artifact_version.into()], |r| rows::artifact_version(r, 0))?
                .pop()
                .ok_or_else(|| MetadataError::NotFound(format!("artifact version `{artifact_version}`")))?;
            let producer = load_step_runs(c, &q::STEP_RUN_BY_ID, &[artifact.producer_step_run.as_str().into()])?.pop();
            let consumers = load_step_runs(c, &q::CONSUMERS_OF, &[artifact_version.into()])?;
            Ok(Lineage { artifact, producer, consumers })
        })
    }
}

#[cfg(test)]
mod tests;

/// The registry's transaction on a SQLite connection: every statement runs
/// at once, so the registry's futures complete in one poll ([`at_once`]).
struct SqliteTx<'a> {
    conn: &'a Connection,
    location: &'a str,
    /// SQLite's own error, when a statement failed (it may have rolled the
    /// whole transaction back).
    failed: Option<rusqlite::Error>,
    /// Rows changed: an operation that changed none needs no commit.
    changed: u64,
}

impl SqliteTx<'_> {
    fn fail(&mut self, e: rusqlite::Error) -> MetadataError {
        let error = match &e {
            rusqlite::Error::FromSqlConversionFailure(_, _, inner) => MetadataError::Corrupt(inner.to_string()),
            other => MetadataError::Backend { location: self.location.to_string(), message: other.to_string() },
        };
        self.failed = Some(e);
        error
    }
}

impl registry_sql::Tx for SqliteTx<'_> {
    fn query<T: Send + 'static>(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
        map: fn(&dyn SqlRow) -> Result<T, MetadataError>,
    ) -> impl std::future::Future<Output = Result<Vec<T>, MetadataError>> {
        let rows = match query(self.conn, sql, params, |r| map(r)) {
            Ok(rows) => Ok(rows),
            Err(Failure::Store(e)) => Err(e),
            Err(Failure::Sql(e)) => Err(self.fail(e)),
        };
        std::future::ready(rows)
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> impl std::future::Future<Output = Result<u64, MetadataError>> {
        let changed = match execute(self.conn, sql, params) {
            Ok(n) => {
                self.changed += n as u64;
                Ok(n as u64)
            }
            Err(e) => Err(self.fail(e)),
        };
        std::future::ready(changed)
    }
}

/// The output of a future that completes in one poll (a registry operation
/// over [`SqliteTx`], whose statements never wait).
fn at_once<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(output) => output,
        // SqliteTx's futures are all ready: nothing can be pending.
        std::task::Poll::Pending => unreachable!("a SQLite registry operation waited"),
    }
}

impl SqliteMetadataStore {
    /// Runs a registry operation as one write (a savepoint in the batch),
    /// committed and synced before it returns if it changed anything:
    /// nothing of it stays when it fails, for any reason.
    fn registry_write<T>(
        &self,
        op: impl AsyncFnOnce(&mut SqliteTx<'_>) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let location = self.shared.location.clone();
        let mut refused = None;
        let mut changed = 0;
        let written = self.write(Commit::Batched, |state| {
            atomically(&state.conn, |c| {
                let mut tx = SqliteTx { conn: c, location: &location, failed: None, changed: 0 };
                let outcome = at_once(op(&mut tx));
                changed = tx.changed;
                match outcome {
                    Ok(v) => Ok(Some(v)),
                    Err(e) => match tx.failed.take() {
                        Some(sql) => Err(Failure::Sql(sql)),
                        None => match e {
                            RegistryError::Store(e) => Err(Failure::Store(e)),
                            other => {
                                // Roll the savepoint back, then report the refusal.
                                refused = Some(other);
                                Err(Failure::Store(MetadataError::Corrupt("refused".into())))
                            }
                        },
                    },
                }
            })
        });
        match (written, refused) {
            (_, Some(refusal)) => Err(refusal),
            (Ok(Some(v)), None) => {
                // A registry change is durable and visible when it returns.
                if changed > 0 {
                    let mut state = self.shared.lock();
                    let batch = self.shared.commit_if(&mut state, Commit::Now)?;
                    drop(state);
                    if let Some(batch) = batch {
                        self.shared.sync(batch)?;
                    }
                }
                Ok(v)
            }
            (Ok(None), None) => Err(MetadataError::Corrupt("a registry write returned nothing".into()).into()),
            (Err(e), None) => Err(e.into()),
        }
    }

    /// Runs a registry read.
    fn registry_read<T>(
        &self,
        op: impl AsyncFnOnce(&mut SqliteTx<'_>) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let location = self.shared.location.clone();
        let mut outcome = None;
        self.read(|c| {
            let mut tx = SqliteTx { conn: c, location: &location, failed: None, changed: 0 };
            outcome = Some(at_once(op(&mut tx)));
            Ok(())
        })?;
        outcome.unwrap_or_else(|| Err(MetadataError::Corrupt("a registry read returned nothing".into()).into()))
    }
}

#[async_trait]
impl ModelRegistry for SqliteMetadataStore {
    async fn register(&self, version: &NewModelVersion) -> Result<ModelVersion, RegistryError> {
        self.registry_write(async |tx| registry_sql::register(tx, version).await)
    }

    async fn describe_model(
        &self,
        model: &str,
        description: &str,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Result<Model, RegistryError> {
        self.registry_write(async |tx| registry_sql::describe(tx, model, description, tags).await)
    }

    async fn models(&self) -> Result<Vec<Model>, RegistryError> {
        self.registry_read(async |tx| registry_sql::models(tx).await)
    }

    async fn model(&self, model: &str) -> Result<Option<Model>, RegistryError> {
        self.registry_read(async |tx| registry_sql::model(tx, model).await)
    }

    async fn versions(&self, model: &str) -> Result<Vec<ModelVersion>, RegistryError> {
        self.registry_read(async |tx| registry_sql::versions(tx, model).await)
    }

    async fn version(&self, model: &str, version: i64) -> Result<Option<ModelVersion>, RegistryError> {
        self.registry_read(async |tx| registry_sql::version(tx, model, version).await)
    }

    async fn aliases(&self, model: &str) -> Result<Vec<AliasHolder>, RegistryError> {
        self.registry_read(async |tx| registry_sql::aliases(tx, model).await)
    }

    async fn resolve(&self, model: &str, alias: &str) -> Result<Option<ModelVersion>, RegistryError> {
        self.registry_read(async |tx| registry_sql::resolve(tx, model, alias).await)
    }

    async fn promote(&self, promotion: &Promotion) -> Result<Promoted, RegistryError> {
        self.registry_write(async |tx| registry_sql::promote(tx, promotion).await)
    }

    async fn history(&self, model: &str, alias: Option<&str>, limit: usize) -> Result<Vec<AliasEvent>, RegistryError> {
        self.registry_read(async |tx| registry_sql::history(tx, model, alias, limit).await)
    }

    async fn holder_at(&self, model: &str, alias: &str, at: Timestamp) -> Result<Option<i64>, RegistryError> {
        self.registry_read(async |tx| registry_sql::holder_at(tx, model, alias, at).await)
    }

    async fn set_protection(&self, change: &Protection) -> Result<Option<AliasEvent>, RegistryError> {
        self.registry_write(async |tx| registry_sql::set_protection(tx, change).await)
    }

    async fn protections(&self, model: Option<&str>) -> Result<Vec<(String, String)>, RegistryError> {
        self.registry_read(async |tx| registry_sql::protections(tx, model).await)
    }
}
