//! The embedded metadata store: one SQLite file.
//!
//! WAL mode with a busy timeout, so several processes can use one file at
//! once.
//!
//! **Group commit.** Writes join one open write transaction (`BEGIN
//! IMMEDIATE`; a failed write undoes only itself: most writes run in a
//! savepoint, and a step's record, the hot path, has its references checked
//! first so that it cannot fail half-way on a constraint), which is committed — and, by default, synced to disk
//! (`synchronous = FULL`) — at most [`COMMIT_WINDOW`] after its first write,
//! by [`MetadataStore::set_run_status`], by [`MetadataStore::flush`], or when
//! the store is dropped. A chain of quick steps thus costs one synced commit
//! per window instead of one per step, and every record is on disk within
//! the window; a run is reported finished only after the commit that makes
//! all of it durable. Other connections see the records when they are
//! committed, and wait at most a window (plus a commit) for the write lock.
//! A commit that fails is reported by the next call on the store.
//!
//! [`Synchronous::Normal`] commits without syncing (the last commits may be
//! lost on power failure) and must be chosen explicitly.

use super::migrations::{latest, MIGRATIONS};
use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use zenflow_core::metadata::*;
use zenflow_core::{Check, CheckStatus, ContentHash};

/// Marks a SQLite file as a zenflow database (`PRAGMA application_id`, "ZFLW").
const APPLICATION_ID: i64 = 0x5A46_4C57;

/// How long writes may stay in the open transaction before they are
/// committed: the most a power failure can take back of what a run recorded,
/// and the longest another process waits for the write lock (besides the
/// commit itself).
pub const COMMIT_WINDOW: Duration = Duration::from_millis(10);

/// WAL size (in 4 KiB pages) past which the commit that crosses it
/// checkpoints the WAL into the database file (SQLite's automatic
/// checkpoint). It runs on the writing connection with no transaction open,
/// so it copies every frame and the next write starts the WAL over; one
/// checked on another connection while a batch is open never could, and the
/// WAL then grew while each commit checkpointed it again.
const CHECKPOINT_AFTER_PAGES: u64 = 1024;

/// How hard SQLite works to make each commit durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit is on disk before it returns (the default).
    #[default]
    Full,
    /// Commits survive a process crash but the last ones may be lost on power
    /// failure or an OS crash. Faster; opt in knowingly.
    Normal,
}

/// The SQLite implementation of [`MetadataStore`].
pub struct SqliteMetadataStore {
    shared: Arc<Shared>,
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

/// What the store and its committer thread share.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a batch opens, and when the store closes.
    changed: Condvar,
    location: String,
    synchronous: Synchronous,
}

struct State {
    conn: Connection,
    /// Whether the batch's write transaction is open.
    in_transaction: bool,
    /// When the oldest write not yet committed was made (`None`: nothing waits).
    dirty_since: Option<Instant>,
    /// `running` markers not yet written, by step run id. A step that
    /// finishes before its batch commits never needs its marker (nobody
    /// outside this connection could have seen it), so a marker is written
    /// only when its batch commits, or before a read, while its step runs.
    markers: HashMap<String, StepRunWrite>,
    /// Why a batch could not be committed: reported by the next call.
    lost: Option<String>,
    closing: bool,
}

/// Whether a write ends its batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// Commit (and sync) before returning.
    Now,
    /// Leave it to the window.
    Batched,
}

type SqlResult<T> = Result<T, MetadataError>;

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
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| backend(e.to_string()))?;
        Self::init(conn, location.clone(), synchronous)
    }

    /// A private in-memory database (tests, throwaway runs).
    pub fn in_memory() -> SqlResult<Self> {
        let conn = Connection::open_in_memory()
            .map_err(|e| MetadataError::Backend { location: "sqlite::memory:".into(), message: e.to_string() })?;
        Self::init(conn, "sqlite::memory:".into(), Synchronous::Full)
    }

    fn init(mut conn: Connection, location: String, synchronous: Synchronous) -> SqlResult<Self> {
        let fail = |e: rusqlite::Error| MetadataError::Backend { location: location.clone(), message: e.to_string() };
        conn.busy_timeout(Duration::from_secs(30)).map_err(fail)?;
        // Room for every statement the store uses (rusqlite keeps 16).
        conn.set_prepared_statement_cache_capacity(64);
        check_identity(&conn, &location)?;
        // Switching to WAL needs a moment of exclusive access, and SQLite does
        // not wait for it with the busy handler: retry while others hold locks.
        retry_busy(|| conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)))
            .map_err(fail)?;
        let sync = match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(fail)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(fail)?;
        conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_AFTER_PAGES).map_err(fail)?;
        // A WAL that starts over keeps its file (overwriting is cheaper than
        // growing it); one huge batch must not leave a huge file behind.
        conn.pragma_update(None, "journal_size_limit", CHECKPOINT_AFTER_PAGES * 4096).map_err(fail)?;
        migrate(&mut conn, &location)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                conn,
                in_transaction: false,
                dirty_since: None,
                markers: HashMap::new(),
                lost: None,
                closing: false,
            }),
            changed: Condvar::new(),
            location,
            synchronous,
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
        Ok(SqliteMetadataStore { shared, committer: Some(committer) })
    }

    /// The file path, when the store is a file.
    pub fn path(&self) -> Option<PathBuf> {
        self.shared.location.strip_prefix("sqlite://").map(PathBuf::from)
    }

    /// Reads through the connection, inside the open batch if there is one,
    /// so this process reads its own writes at once. WAL readers never wait
    /// for writers, so this does not leave the async worker thread.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> SqlResult<T> {
        let mut state = self.shared.lock()?;
        self.shared.write_markers(&mut state)?;
        f(&state.conn).map_err(|e| self.shared.err(e))
    }

    /// [`Self::read`] for queries that `running` markers cannot change.
    fn read_unmarked<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> SqlResult<T> {
        let state = self.shared.lock()?;
        f(&state.conn).map_err(|e| self.shared.err(e))
    }

    /// Runs `f` as one atomic write (a savepoint) in the open batch, opening
    /// one if needed, and commits the batch when asked to or when its window
    /// has passed. A write of step run `replaces` drops its pending marker
    /// instead of writing it first.
    fn write<T>(
        &self,
        commit: Commit,
        replaces: Option<&str>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> SqlResult<T> {
        let mut state = self.shared.lock()?;
        match replaces {
            Some(id) => {
                state.markers.remove(id);
            }
            None => self.shared.write_markers(&mut state)?,
        }
        self.shared.begin(&mut state)?;
        let value = atomically(&state.conn, f).map_err(|e| self.shared.failed(&mut state, e))?;
        self.shared.commit_if(&mut state, commit)?;
        Ok(value)
    }
}

impl Shared {
    /// The connection, unless a batch was lost (reported once, here).
    fn lock(&self) -> SqlResult<MutexGuard<'_, State>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.lost.take() {
            Some(message) => Err(MetadataError::Backend { location: self.location.clone(), message }),
            None => Ok(state),
        }
    }

    /// Something waits to be committed: the window starts now, unless it has already.
    fn dirty(&self, state: &mut State) {
        if state.dirty_since.is_none() {
            state.dirty_since = Some(Instant::now());
            self.changed.notify_all();
        }
    }

    /// Opens the batch's write transaction unless it is open.
    fn begin(&self, state: &mut State) -> SqlResult<()> {
        if !state.in_transaction {
            // May wait for another process's write lock.
            blocking(|| state.conn.execute_batch("BEGIN IMMEDIATE")).map_err(|e| self.err(e))?;
            state.in_transaction = true;
            self.dirty(state);
        }
        Ok(())
    }

    /// Writes the pending `running` markers into the batch. A marker that
    /// cannot be written is only logged: the step's final record follows.
    fn write_markers(&self, state: &mut State) -> SqlResult<()> {
        if state.markers.is_empty() {
            return Ok(());
        }
        self.begin(state)?;
        for (_, marker) in std::mem::take(&mut state.markers) {
            let written = atomically(&state.conn, |conn| {
                let logs = serde_json::to_string(&marker.step_run.logs).map_err(json_err)?;
                write_step_run(conn, &marker, &logs)
            });
            if let Err(e) = written {
                let e = self.failed(state, e);
                tracing::warn!(step = %marker.step_run.invocation, "could not record that the step is running: {e}");
                if !state.in_transaction {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The error of a failed write. SQLite rolls the whole transaction back
    /// on some errors (a full disk, an I/O error): the batch's earlier
    /// writes are then lost too, and the error says so.
    fn failed(&self, state: &mut State, e: rusqlite::Error) -> MetadataError {
        if state.in_transaction && state.conn.is_autocommit() {
            state.in_transaction = false;
            state.dirty_since = None;
            return MetadataError::Backend {
                location: self.location.clone(),
                message: format!("{e}; SQLite rolled back the writes of the last {COMMIT_WINDOW:?} with it"),
            };
        }
        self.err(e)
    }

    /// The error of a write that failed half-way without a savepoint: the
    /// whole batch is rolled back, and the error says so.
    fn abandon(&self, state: &mut State, e: rusqlite::Error) -> MetadataError {
        if state.in_transaction && !state.conn.is_autocommit() {
            let _ = state.conn.execute_batch("ROLLBACK");
        }
        state.in_transaction = false;
        state.dirty_since = None;
        MetadataError::Backend {
            location: self.location.clone(),
            message: format!("{e}; the writes of the last {COMMIT_WINDOW:?} were rolled back with it"),
        }
    }

    /// Commits if asked to, or if the window has passed.
    fn commit_if(&self, state: &mut State, commit: Commit) -> SqlResult<()> {
        let due = state.dirty_since.is_some_and(|t| t.elapsed() >= COMMIT_WINDOW);
        if commit == Commit::Now || due {
            blocking(|| self.commit(state))?;
        }
        Ok(())
    }

    /// Writes the pending markers and commits the batch, if any. A failed
    /// commit rolls the batch back.
    fn commit(&self, state: &mut State) -> SqlResult<()> {
        self.write_markers(state)?;
        state.dirty_since = None;
        if !std::mem::replace(&mut state.in_transaction, false) {
            return Ok(());
        }
        state.conn.execute_batch("COMMIT").map_err(|e| {
            // The transaction may still be open (e.g. an I/O error): end it.
            let _ = state.conn.execute_batch("ROLLBACK");
            MetadataError::Backend {
                location: self.location.clone(),
                message: format!("committing the latest writes failed, and they were rolled back: {e}"),
            }
        })?;
        Ok(())
    }

    /// The committer thread: commits each batch when its window has passed,
    /// and what is left when the store closes.
    fn commit_when_due(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match state.dirty_since {
                _ if state.closing => {
                    if let Err(e) = self.commit(&mut state) {
                        tracing::error!("{e}");
                    }
                    return;
                }
                None => state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner),
                Some(since) => {
                    let age = since.elapsed();
                    if age >= COMMIT_WINDOW {
                        if let Err(e) = self.commit(&mut state) {
                            tracing::error!("{e}");
                            state.lost = Some(e.to_string());
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

    fn err(&self, e: rusqlite::Error) -> MetadataError {
        match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, inner) => MetadataError::Corrupt(inner.to_string()),
            other => MetadataError::Backend { location: self.location.clone(), message: other.to_string() },
        }
    }
}

impl Drop for SqliteMetadataStore {
    /// Commits what is still open.
    fn drop(&mut self) {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner).closing = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}

/// Runs `f` in a savepoint: all of its changes stay, or none. (The
/// statements are prepared once per connection, unlike rusqlite's
/// `Savepoint`, which parses them on every use.)
fn atomically<T>(conn: &Connection, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
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

/// Runs blocking database work (a lock wait, an fsync) without stalling the
/// async runtime: on a multi-threaded runtime the worker hands its other
/// tasks to another thread first.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Refuses files that are not zenflow databases or are too new, without writing.
///
/// All reads happen in one read transaction: another process may be creating
/// the schema right now, and must be seen either entirely or not at all.
fn check_identity(conn: &Connection, location: &str) -> SqlResult<()> {
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

fn migrate(conn: &mut Connection, location: &str) -> SqlResult<()> {
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
fn retry_busy<T>(mut op: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
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

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str, idx: usize) -> rusqlite::Result<T> {
    serde_json::from_str(s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e)))
}

fn conversion(idx: usize, msg: impl ToString) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, msg.to_string().into())
}

/// The latest completed step run with cache key `?1` (served by the
/// partial index `step_runs_cache_hits` alone, in its order).
const CACHE_HIT: &str = "SELECT id FROM step_runs WHERE cache_key = ?1 AND status = 'completed' \
                         ORDER BY ended_at DESC, id DESC LIMIT 1";

/// The outputs of step run `?1` with their positions. Sorted by the caller:
/// an ORDER BY here built a temporary B-tree for every cache hit.
static CACHE_HIT_OUTPUTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT o.position, o.output, {AV_COLS} FROM step_run_outputs o \
         JOIN artifact_versions av ON av.id = o.artifact_version_id WHERE o.step_run_id = ?1"
    )
});

const RUN_COLS: &str = "id, pipeline, name, status, stack, config, plan, git_commit, started_at, ended_at, error";

fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        name: r.get(2)?,
        status: RunStatus::parse(&r.get::<_, String>(3)?).map_err(|e| conversion(3, e))?,
        stack: r.get(4)?,
        config: from_json(&r.get::<_, String>(5)?, 5)?,
        plan_json: r.get(6)?,
        git_commit: r.get(7)?,
        started_at: r.get(8)?,
        ended_at: r.get(9)?,
        error: r.get(10)?,
    })
}

const AV_COLS: &str = "av.id, av.name, av.version, av.uri, av.content_hash, av.type_name, av.materializer, \
                       av.materializer_version, av.format, av.metadata, av.producer_step_run, av.run_id, av.created_at, \
                       av.inline_bytes";

fn av_row(r: &Row<'_>, at: usize) -> rusqlite::Result<ArtifactVersion> {
    let hash: String = r.get(at + 4)?;
    Ok(ArtifactVersion {
        id: r.get(at)?,
        name: r.get(at + 1)?,
        version: r.get(at + 2)?,
        uri: r.get(at + 3)?,
        content_hash: ContentHash::from_hex(&hash).map_err(|e| conversion(at + 4, e))?,
        type_name: r.get(at + 5)?,
        materializer: r.get(at + 6)?,
        materializer_version: r.get(at + 7)?,
        format: r.get(at + 8)?,
        metadata: from_json(&r.get::<_, String>(at + 9)?, at + 9)?,
        producer_step_run: r.get(at + 10)?,
        run_id: r.get(at + 11)?,
        created_at: r.get(at + 12)?,
        inline: r.get::<_, Option<Vec<u8>>>(at + 13)?.map(bytes::Bytes::from),
    })
}

const SR_COLS: &str = "sr.id, sr.run_id, sr.invocation, sr.step, sr.status, sr.cache_key, sr.original_step_run, \
                       sr.started_at, sr.ended_at, sr.error, sr.attempts, sr.logs";

fn sr_row(r: &Row<'_>) -> rusqlite::Result<StepRunRecord> {
    Ok(StepRunRecord {
        id: r.get(0)?,
        run_id: r.get(1)?,
        invocation: r.get(2)?,
        step: r.get(3)?,
        status: StepStatus::parse(&r.get::<_, String>(4)?).map_err(|e| conversion(4, e))?,
        cache_key: r.get(5)?,
        original_step_run: r.get(6)?,
        started_at: r.get(7)?,
        ended_at: r.get(8)?,
        error: r.get(9)?,
        attempts: r.get(10)?,
        logs: from_json(&r.get::<_, String>(11)?, 11)?,
        metadata: BTreeMap::new(),
        checks: Vec::new(),
        outputs: Vec::new(),
        inputs: Vec::new(),
    })
}

/// Loads step runs matching `filter` (a condition on `sr`, with `?1` bound to
/// `arg`), with their outputs, inputs and metadata.
fn load_step_runs(conn: &Connection, filter: &str, arg: &str) -> rusqlite::Result<Vec<StepRunRecord>> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {SR_COLS} FROM step_runs sr WHERE {filter} ORDER BY sr.started_at, sr.id"))?;
    let mut runs: Vec<StepRunRecord> = stmt.query_map([arg], sr_row)?.collect::<Result<_, _>>()?;
    if runs.is_empty() {
        return Ok(runs);
    }
    let pos: HashMap<String, usize> = runs.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();

    let mut stmt = conn.prepare_cached(&format!(
        "SELECT o.step_run_id, o.output, {AV_COLS} FROM step_run_outputs o \
         JOIN artifact_versions av ON av.id = o.artifact_version_id \
         JOIN step_runs sr ON sr.id = o.step_run_id WHERE {filter} ORDER BY o.step_run_id, o.position"
    ))?;
    let mut rows = stmt.query([arg])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        if let Some(&i) = pos.get(&id) {
            runs[i].outputs.push(OutputLink { output: row.get(1)?, artifact: av_row(row, 2)? });
        }
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT i.step_run_id, i.input, i.position, i.artifact_version_id FROM step_run_inputs i \
         JOIN step_runs sr ON sr.id = i.step_run_id WHERE {filter} ORDER BY i.step_run_id, i.input, i.position"
    ))?;
    let mut rows = stmt.query([arg])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        if let Some(&i) = pos.get(&id) {
            runs[i].inputs.push(InputLink { input: row.get(1)?, position: row.get(2)?, artifact_version: row.get(3)? });
        }
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT m.step_run_id, m.key, m.value FROM run_metadata m \
         JOIN step_runs sr ON sr.id = m.step_run_id WHERE {filter}"
    ))?;
    let mut rows = stmt.query([arg])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        if let Some(&i) = pos.get(&id) {
            runs[i].metadata.insert(row.get(1)?, from_json(&row.get::<_, String>(2)?, 2)?);
        }
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT c.step_run_id, c.name, c.status, c.value, c.threshold, c.message FROM checks c \
         JOIN step_runs sr ON sr.id = c.step_run_id WHERE {filter} ORDER BY c.step_run_id, c.position"
    ))?;
    let mut rows = stmt.query([arg])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        if let Some(&i) = pos.get(&id) {
            let status: String = row.get(2)?;
            runs[i].checks.push(Check {
                name: row.get(1)?,
                status: CheckStatus::parse(&status)
                    .ok_or_else(|| conversion(2, format!("unknown check status `{status}`")))?,
                value: row.get(3)?,
                threshold: row.get(4)?,
                message: row.get(5)?,
            });
        }
    }
    Ok(runs)
}

fn one_step_run(conn: &Connection, id: &str) -> rusqlite::Result<Option<StepRunRecord>> {
    Ok(load_step_runs(conn, "sr.id = ?1", id)?.into_iter().next())
}

/// What a step-run write refers to, if it does not exist: its run, or an
/// artifact version it links as an input or an output. Checked first, so
/// that the write's statements cannot fail on a constraint half-way.
fn missing_reference(conn: &Connection, write: &StepRunWrite) -> rusqlite::Result<Option<String>> {
    let w = &write.step_run;
    let run_exists: bool =
        conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM runs WHERE id = ?1)")?.query_row([&w.run_id], |r| r.get(0))?;
    if !run_exists {
        return Ok(Some(format!("run `{}` of step run `{}`", w.run_id, w.id)));
    }
    let linked = w.outputs.iter().map(|o| &o.artifact.id).chain(w.inputs.iter().map(|i| &i.artifact_version));
    for id in linked {
        let exists: bool = conn
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM artifact_versions WHERE id = ?1)")?
            .query_row([id], |r| r.get(0))?;
        if !exists {
            return Ok(Some(format!("artifact version `{id}` linked by step run `{}`", w.id)));
        }
    }
    Ok(None)
}

/// The body of [`MetadataStore::write_step_run`]. Once its references are
/// checked ([`missing_reference`]), no statement here can fail on a
/// constraint: every insert is new (fresh ids, a version number taken under
/// the write lock) or an upsert. Values are serialised before the first
/// statement.
fn write_step_run(tx: &Connection, write: &StepRunWrite, logs: &str) -> rusqlite::Result<Vec<OutputLink>> {
    let w = &write.step_run;
    let artifact_metadata: Vec<String> = write
        .new_outputs
        .iter()
        .map(|a| serde_json::to_string(&a.metadata))
        .collect::<Result<_, _>>()
        .map_err(json_err)?;
    let metadata_values: Vec<String> =
        w.metadata.values().map(serde_json::to_string).collect::<Result<_, _>>().map_err(json_err)?;

    tx.prepare_cached(
        "INSERT INTO step_runs (id, run_id, invocation, step, status, cache_key, original_step_run, \
             started_at, ended_at, error, attempts, logs) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, cache_key = excluded.cache_key, \
             original_step_run = excluded.original_step_run, ended_at = excluded.ended_at, \
             error = excluded.error, attempts = excluded.attempts, logs = excluded.logs",
    )?
    .execute(params![
        w.id,
        w.run_id,
        w.invocation,
        w.step,
        w.status.as_str(),
        w.cache_key,
        w.original_step_run,
        w.started_at,
        w.ended_at,
        w.error,
        w.attempts,
        logs
    ])?;
    let now = now();
    let mut outputs = Vec::with_capacity(write.new_outputs.len() + w.outputs.len());
    for (position, (a, metadata)) in write.new_outputs.iter().zip(&artifact_metadata).enumerate() {
        let version: i64 = tx
            .prepare_cached("SELECT COALESCE(MAX(version), 0) + 1 FROM artifact_versions WHERE name = ?1")?
            .query_row([&a.name], |r| r.get(0))?;
        let id = uuid::Uuid::now_v7().to_string();
        tx.prepare_cached(
            "INSERT INTO artifact_versions (id, name, version, uri, content_hash, type_name, materializer, \
                 materializer_version, format, metadata, producer_step_run, run_id, created_at, inline_bytes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?
        .execute(params![
            id,
            a.name,
            version,
            a.uri,
            a.content_hash.to_hex(),
            a.type_name,
            a.materializer,
            a.materializer_version,
            a.format,
            metadata,
            w.id,
            w.run_id,
            now,
            a.inline.as_deref()
        ])?;
        tx.prepare_cached(
            "INSERT INTO step_run_outputs (step_run_id, output, position, artifact_version_id) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )?
        .execute(params![w.id, a.output, position as i64, id])?;
        outputs
            .push(OutputLink { output: a.output.clone(), artifact: a.to_version(id, version, &w.id, &w.run_id, now) });
    }
    for (position, link) in w.outputs.iter().enumerate() {
        tx.prepare_cached(
            "INSERT INTO step_run_outputs (step_run_id, output, position, artifact_version_id) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )?
        .execute(params![w.id, link.output, position as i64, link.artifact.id])?;
        outputs.push(link.clone());
    }
    for i in &w.inputs {
        tx.prepare_cached(
            "INSERT INTO step_run_inputs (step_run_id, input, position, artifact_version_id) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )?
        .execute(params![w.id, i.input, i.position, i.artifact_version])?;
    }
    for (key, value) in w.metadata.keys().zip(&metadata_values) {
        tx.prepare_cached(
            "INSERT INTO run_metadata (run_id, step_run_id, key, value) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (step_run_id, key) DO UPDATE SET value = excluded.value",
        )?
        .execute(params![w.run_id, w.id, key, value])?;
    }
    for (position, c) in w.checks.iter().enumerate() {
        tx.prepare_cached(
            "INSERT INTO checks (step_run_id, run_id, position, name, status, value, threshold, message) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (step_run_id, name) DO UPDATE SET \
             position = excluded.position, status = excluded.status, value = excluded.value, \
             threshold = excluded.threshold, message = excluded.message",
        )?
        .execute(params![
            w.id,
            w.run_id,
            position as i64,
            c.name,
            c.status.as_str(),
            c.value,
            c.threshold,
            c.message
        ])?;
    }
    Ok(outputs)
}

#[async_trait]
impl MetadataStore for SqliteMetadataStore {
    fn url(&self) -> String {
        self.shared.location.clone()
    }

    async fn create_run(&self, run: &NewRun) -> SqlResult<RunRecord> {
        let config = serde_json::to_string(&run.plan.config).map_err(|e| MetadataError::Corrupt(e.to_string()))?;
        let plan = run.plan.to_json_compact();
        // A planned run (`run --dry-run`) is for other processes to pick up:
        // commit it now. A running one joins the batch.
        let commit = if run.status == RunStatus::Pending { Commit::Now } else { Commit::Batched };
        let created = self.write(commit, None, |tx| {
            // Cached statements: parsing one costs more than running it.
            let taken: bool = tx
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM runs WHERE name = ?1)")?
                .query_row([&run.name], |r| r.get(0))?;
            if taken {
                return Ok(false);
            }
            tx.prepare_cached(
                "INSERT INTO pipelines (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![run.pipeline, run.started_at])?;
            tx.prepare_cached(&format!(
                "INSERT INTO runs ({RUN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL)"
            ))?
            .execute(params![
                run.id,
                run.pipeline,
                run.name,
                run.status.as_str(),
                run.stack,
                config,
                plan,
                run.git_commit,
                run.started_at
            ])?;
            Ok(true)
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
        // The end of a run is the commit that makes all of it durable.
        let changed = self.write(Commit::Now, None, |tx| {
            let now = now();
            let beat = (status == RunStatus::Running).then_some(now);
            let changed = tx
                .prepare_cached(
                    "UPDATE runs SET status = ?2, error = ?3, ended_at = ?4, \
                     heartbeat_at = COALESCE(?5, heartbeat_at) WHERE id = ?1",
                )?
                .execute(params![run_id, status.as_str(), error, ended_at, beat])?;
            if matches!(status, RunStatus::Completed | RunStatus::Failed) {
                tx.prepare_cached(
                    "UPDATE step_runs SET status = 'failed', ended_at = ?2, \
                     error = COALESCE(error, 'the step''s final record could not be written') \
                     WHERE run_id = ?1 AND status = 'running'",
                )?
                .execute(params![run_id, now])?;
            }
            Ok(changed)
        })?;
        if changed == 0 {
            return Err(MetadataError::NotFound(format!("run `{run_id}`")));
        }
        Ok(())
    }

    async fn heartbeat(&self, run_id: &str, at: Timestamp) -> SqlResult<()> {
        self.write(Commit::Batched, None, |c| {
            c.prepare_cached("UPDATE runs SET heartbeat_at = ?2 WHERE id = ?1")?
                .execute(params![run_id, at])
                .map(|_| ())
        })
    }

    async fn fail_stale_runs(&self, before: Timestamp) -> SqlResult<Vec<String>> {
        self.write(Commit::Batched, None, |tx| {
            let now = now();
            let ids: Vec<String> = tx
                .prepare_cached(
                    "UPDATE runs SET status = 'failed', error = ?2, ended_at = ?3 \
                     WHERE status = 'running' AND COALESCE(heartbeat_at, started_at) < ?1 RETURNING id",
                )?
                .query_map(params![before, STALE_ERROR, now], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in &ids {
                tx.prepare_cached(
                    "UPDATE step_runs SET status = 'failed', error = ?2, ended_at = ?3 \
                     WHERE run_id = ?1 AND status = 'running'",
                )?
                .execute(params![id, "its run's process stopped while the step was running", now])?;
            }
            Ok(ids)
        })
    }

    async fn write_step_run(&self, w: &StepRunWrite) -> SqlResult<Vec<OutputLink>> {
        if w.step_run.status == StepStatus::Running {
            // Written only if the step is still running when its batch
            // commits (or something reads first).
            let mut state = self.shared.lock()?;
            state.markers.insert(w.step_run.id.clone(), w.clone());
            self.shared.dirty(&mut state);
            self.shared.commit_if(&mut state, Commit::Batched)?;
            return Ok(w.step_run.outputs.clone());
        }
        let logs = serde_json::to_string(&w.step_run.logs).map_err(|e| MetadataError::Corrupt(e.to_string()))?;
        let mut state = self.shared.lock()?;
        state.markers.remove(&w.step_run.id);
        self.shared.begin(&mut state)?;
        if let Some(missing) = missing_reference(&state.conn, w).map_err(|e| self.shared.failed(&mut state, e))? {
            return Err(MetadataError::NotFound(missing));
        }
        // No savepoint (it would copy every page the batch has changed so
        // far, on every step): with its references checked, a failure now is
        // SQLite's own (an I/O error, a full disk), and takes the batch with it.
        let outputs = write_step_run(&state.conn, w, &logs).map_err(|e| self.shared.abandon(&mut state, e))?;
        self.shared.commit_if(&mut state, Commit::Batched)?;
        Ok(outputs)
    }

    async fn flush(&self) -> SqlResult<()> {
        let mut state = self.shared.lock()?;
        self.shared.commit_if(&mut state, Commit::Now)
    }

    async fn find_cached(&self, cache_key: &str) -> SqlResult<Option<CacheHit>> {
        // Only completed step runs count: pending markers cannot change the answer.
        self.read_unmarked(|conn| {
            let id: Option<String> = conn.prepare_cached(CACHE_HIT)?.query_row([cache_key], |r| r.get(0)).optional()?;
            let Some(id) = id else { return Ok(None) };
            let mut stmt = conn.prepare_cached(&CACHE_HIT_OUTPUTS)?;
            let mut outputs = stmt
                .query_map([&id], |r| {
                    Ok((r.get::<_, i64>(0)?, OutputLink { output: r.get(1)?, artifact: av_row(r, 2)? }))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            outputs.sort_unstable_by_key(|(position, _)| *position);
            Ok(Some(CacheHit { step_run: id, outputs: outputs.into_iter().map(|(_, o)| o).collect() }))
        })
    }
    async fn get_run(&self, id_or_name: &str) -> SqlResult<Option<RunRecord>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1 OR name = ?1 LIMIT 1"))?
                .query_row([id_or_name], run_row)
                .optional()
        })
    }

    async fn list_runs(&self, pipeline: Option<&str>, limit: usize) -> SqlResult<Vec<RunRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {RUN_COLS} FROM runs WHERE (?1 IS NULL OR pipeline = ?1) \
                 ORDER BY started_at DESC, id DESC LIMIT ?2"
            ))?
            .query_map(params![pipeline, limit], run_row)?
            .collect()
        })
    }

    async fn step_runs(&self, run_id: &str) -> SqlResult<Vec<StepRunRecord>> {
        self.read(|c| load_step_runs(c, "sr.run_id = ?1", run_id))
    }

    async fn step_run(&self, id: &str) -> SqlResult<Option<StepRunRecord>> {
        self.read(|c| one_step_run(c, id))
    }

    async fn artifact_version(&self, id: &str) -> SqlResult<Option<ArtifactVersion>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {AV_COLS} FROM artifact_versions av WHERE av.id = ?1"))?
                .query_row([id], |r| av_row(r, 0))
                .optional()
        })
    }

    async fn artifact_versions(&self, name: Option<&str>, limit: usize) -> SqlResult<Vec<ArtifactVersion>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {AV_COLS} FROM artifact_versions av WHERE (?1 IS NULL OR av.name = ?1) \
                 ORDER BY av.created_at DESC, av.version DESC LIMIT ?2"
            ))?
            .query_map(params![name, limit], |r| av_row(r, 0))?
            .collect()
        })
    }

    async fn lineage(&self, artifact_version: &str) -> SqlResult<Lineage> {
        let artifact = self
            .artifact_version(artifact_version)
            .await?
            .ok_or_else(|| MetadataError::NotFound(format!("artifact version `{artifact_version}`")))?;
        self.read(|c| {
            let producer = one_step_run(c, &artifact.producer_step_run)?;
            let consumers = load_step_runs(
                c,
                "sr.id IN (SELECT step_run_id FROM step_run_inputs WHERE artifact_version_id = ?1)",
                artifact_version,
            )?;
            Ok(Lineage { artifact, producer, consumers })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zenflow_core::conformance::metadata::{new_run, step_write};

    fn step_run(run_id: &str, invocation: &str) -> StepRunWrite {
        step_write(run_id, invocation, StepStatus::Completed)
    }

    /// A step-run write that fails half-way (here: a trigger refuses its
    /// artifact version, as a full disk could) leaves no half of it: the
    /// batch is rolled back, the error says so, and the store goes on.
    #[tokio::test]
    async fn a_write_failing_half_way_rolls_its_batch_back() {
        use zenflow_core::conformance::metadata::artifact;
        let store = SqliteMetadataStore::in_memory().unwrap();
        let run = store.create_run(&new_run("p", "r")).await.unwrap();
        store.flush().await.unwrap();
        store
            .shared
            .state
            .lock()
            .unwrap()
            .conn
            .execute_batch(
                "CREATE TEMP TRIGGER refuse BEFORE INSERT ON artifact_versions \
                 BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END;",
            )
            .unwrap();
        store.write_step_run(&step_run(&run.id, "earlier")).await.unwrap();
        let mut half = step_run(&run.id, "half");
        half.new_outputs = vec![artifact("p", "half", b"1")];
        let err = store.write_step_run(&half).await.unwrap_err();
        assert!(err.to_string().contains("disk full (simulated)"), "{err}");
        assert!(err.to_string().contains("rolled back"), "{err}");
        assert!(store.step_runs(&run.id).await.unwrap().is_empty(), "neither half a record nor the batch is kept");
        store.shared.state.lock().unwrap().conn.execute_batch("DROP TRIGGER refuse").unwrap();
        store.write_step_run(&half).await.unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.step_runs(&run.id).await.unwrap().len(), 1);
    }

    /// A cache lookup is a search of one index, in that index's order: no
    /// scan of every step run, no visit of the table, no sort.
    #[test]
    fn the_cache_lookup_reads_its_index_only() {
        let store = SqliteMetadataStore::in_memory().unwrap();
        let state = store.shared.state.lock().unwrap();
        let plan = |sql: &str| -> Vec<String> {
            state
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(["k"], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let hit = plan(CACHE_HIT);
        assert!(hit.iter().any(|l| l.contains("USING COVERING INDEX step_runs_cache_hits")), "{hit:?}");
        let outputs = plan(&CACHE_HIT_OUTPUTS);
        for p in [&hit, &outputs] {
            assert!(!p.iter().any(|l| l.contains("TEMP B-TREE") || l.starts_with("SCAN")), "{p:?}");
        }
    }

    /// A batch whose commit fails is rolled back and reported by the next
    /// call, once; the store goes on working.
    #[tokio::test]
    async fn a_failed_commit_is_reported_by_the_next_call() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetadataStore::open(dir.path().join("z.db")).unwrap();
        let run = store.create_run(&new_run("p", "r")).await.unwrap();
        store.flush().await.unwrap();
        store.write_step_run(&step_run(&run.id, "good")).await.unwrap();
        // A row that breaks a foreign key, checked at commit only: the
        // commit of the batch fails (as a full disk would make it fail).
        {
            let state = store.shared.state.lock().unwrap();
            state.conn.pragma_update(None, "defer_foreign_keys", "ON").unwrap();
            state
                .conn
                .execute(
                    "INSERT INTO step_run_inputs (step_run_id, input, position, artifact_version_id) \
                     VALUES ('no-such-step-run', 'x', 0, 'no-such-version')",
                    [],
                )
                .unwrap();
        }
        // The committer thread commits the batch within the window, and fails.
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.shared.state.lock().unwrap().lost.is_none() {
            assert!(Instant::now() < deadline, "the batch was not committed within 5 s");
            std::thread::sleep(Duration::from_millis(2));
        }
        let err = store.step_runs(&run.id).await.unwrap_err();
        assert!(err.to_string().contains("rolled back"), "{err}");
        assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
        // Reported once; nothing of the failed batch was kept; writes go on.
        assert!(store.step_runs(&run.id).await.unwrap().is_empty());
        store.write_step_run(&step_run(&run.id, "again")).await.unwrap();
        store.flush().await.unwrap();
        let again = SqliteMetadataStore::open(dir.path().join("z.db")).unwrap();
        assert_eq!(again.step_runs(&run.id).await.unwrap().len(), 1);
    }

    /// A WAL past the checkpoint limit is copied into the database and
    /// starts over: its file stays at the limit however much is written
    /// (it grew without end while checkpoints ran beside an open batch).
    #[tokio::test]
    async fn the_wal_starts_over_once_past_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetadataStore::open(dir.path().join("z.db")).unwrap();
        let run = store.create_run(&new_run("p", "r")).await.unwrap();
        let limit = CHECKPOINT_AFTER_PAGES * 4096;
        let wal = || std::fs::metadata(dir.path().join("z.db-wal")).unwrap().len();
        let mut largest = 0;
        for i in 0..12 {
            let mut big = step_run(&run.id, &format!("big{i}"));
            big.step_run.logs = vec!["x".repeat(1 << 20)];
            store.write_step_run(&big).await.unwrap();
            store.flush().await.unwrap();
            largest = largest.max(wal());
        }
        for i in 0..20 {
            store.write_step_run(&step_run(&run.id, &format!("small{i}"))).await.unwrap();
            store.flush().await.unwrap();
        }
        // Never more than the limit and one 1 MiB batch; cut back after.
        assert!(largest < limit + (2 << 20), "12 MiB of commits grew the WAL to {largest} bytes");
        assert!(wal() <= limit, "the WAL did not start over: {} bytes", wal());
        drop(store);
        let again = SqliteMetadataStore::open(dir.path().join("z.db")).unwrap();
        assert_eq!(again.step_runs(&run.id).await.unwrap().len(), 32);
    }
}
