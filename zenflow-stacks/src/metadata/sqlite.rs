//! The embedded metadata store: one SQLite file.
//!
//! WAL mode with a busy timeout, so several processes can use one file at
//! once; every write is one `BEGIN IMMEDIATE` transaction (taking the write
//! lock up front, so concurrent writers queue instead of failing on a lock
//! upgrade). By default each commit is synced to disk (`synchronous = FULL`);
//! [`Synchronous::Normal`] trades the last commits on power loss for speed
//! and must be chosen explicitly.

use super::migrations::{latest, MIGRATIONS};
use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use zenflow_core::metadata::*;
use zenflow_core::{Check, CheckStatus, ContentHash};

/// Marks a SQLite file as a zenflow database (`PRAGMA application_id`, "ZFLW").
const APPLICATION_ID: i64 = 0x5A46_4C57;

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
#[derive(Debug)]
pub struct SqliteMetadataStore {
    conn: Mutex<Connection>,
    location: String,
    synchronous: Synchronous,
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
        migrate(&mut conn, &location)?;
        Ok(SqliteMetadataStore { conn: Mutex::new(conn), location, synchronous })
    }

    /// The file path, when the store is a file.
    pub fn path(&self) -> Option<PathBuf> {
        self.location.strip_prefix("sqlite://").map(PathBuf::from)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> SqlResult<T> {
        blocking(|| {
            let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn).map_err(|e| self.err(e))
        })
    }

    /// [`Self::with`], where the commit need not be synced at once when
    /// `deferred`: the next synced commit syncs it (WAL is append-only).
    fn with_deferred_sync<T>(
        &self,
        deferred: bool,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> SqlResult<T> {
        let relaxed = deferred && self.synchronous == Synchronous::Full;
        self.with(|conn| {
            if relaxed {
                conn.pragma_update(None, "synchronous", "NORMAL")?;
            }
            let result = f(conn);
            if relaxed {
                conn.pragma_update(None, "synchronous", "FULL")?;
            }
            result
        })
    }

    fn err(&self, e: rusqlite::Error) -> MetadataError {
        match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, inner) => MetadataError::Corrupt(inner.to_string()),
            other => MetadataError::Backend { location: self.location.clone(), message: other.to_string() },
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

/// The body of [`MetadataStore::write_step_run`]: one immediate transaction.
fn write_step_run(conn: &mut Connection, write: &StepRunWrite, logs: &str) -> rusqlite::Result<Vec<OutputLink>> {
    let w = &write.step_run;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;

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
    for (position, a) in write.new_outputs.iter().enumerate() {
        let version: i64 = tx
            .prepare_cached("SELECT COALESCE(MAX(version), 0) + 1 FROM artifact_versions WHERE name = ?1")?
            .query_row([&a.name], |r| r.get(0))?;
        let id = uuid::Uuid::now_v7().to_string();
        let metadata = serde_json::to_string(&a.metadata).map_err(json_err)?;
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
    for (key, value) in &w.metadata {
        let value = serde_json::to_string(value).map_err(json_err)?;
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
    tx.commit()?;
    Ok(outputs)
}

#[async_trait]
impl MetadataStore for SqliteMetadataStore {
    fn url(&self) -> String {
        self.location.clone()
    }

    async fn create_run(&self, run: &NewRun) -> SqlResult<RunRecord> {
        let config = serde_json::to_string(&run.plan.config).map_err(|e| MetadataError::Corrupt(e.to_string()))?;
        let plan = run.plan.to_json();
        // The new run is synced by the first synced commit after it (a
        // completed step, the end of the run): losing it before then loses
        // nothing that took work.
        let created = self.with_deferred_sync(true, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let taken: bool =
                tx.query_row("SELECT EXISTS(SELECT 1 FROM runs WHERE name = ?1)", [&run.name], |r| r.get(0))?;
            if taken {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO pipelines (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![run.pipeline, run.started_at],
            )?;
            tx.execute(
                &format!("INSERT INTO runs ({RUN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL)"),
                params![
                    run.id,
                    run.pipeline,
                    run.name,
                    run.status.as_str(),
                    run.stack,
                    config,
                    plan,
                    run.git_commit,
                    run.started_at
                ],
            )?;
            tx.commit()?;
            Ok(true)
        })?;
        if !created {
            return Err(MetadataError::RunNameTaken(run.name.clone()));
        }
        Ok(RunRecord {
            id: run.id.clone(),
            pipeline: run.pipeline.clone(),
            name: run.name.clone(),
            status: run.status,
            stack: run.stack.clone(),
            config: run.plan.config.clone(),
            plan_json: plan,
            git_commit: run.git_commit.clone(),
            started_at: run.started_at,
            ended_at: None,
            error: None,
        })
    }

    async fn set_run_status(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
        ended_at: Option<Timestamp>,
    ) -> SqlResult<()> {
        let changed = self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now();
            let beat = (status == RunStatus::Running).then_some(now);
            let changed = tx.execute(
                "UPDATE runs SET status = ?2, error = ?3, ended_at = ?4, heartbeat_at = COALESCE(?5, heartbeat_at) \
                 WHERE id = ?1",
                params![run_id, status.as_str(), error, ended_at, beat],
            )?;
            if matches!(status, RunStatus::Completed | RunStatus::Failed) {
                tx.execute(
                    "UPDATE step_runs SET status = 'failed', ended_at = ?2, \
                     error = COALESCE(error, 'the step''s final record could not be written') \
                     WHERE run_id = ?1 AND status = 'running'",
                    params![run_id, now],
                )?;
            }
            tx.commit()?;
            Ok(changed)
        })?;
        if changed == 0 {
            return Err(MetadataError::NotFound(format!("run `{run_id}`")));
        }
        Ok(())
    }

    async fn heartbeat(&self, run_id: &str, at: Timestamp) -> SqlResult<()> {
        self.with(|c| c.execute("UPDATE runs SET heartbeat_at = ?2 WHERE id = ?1", params![run_id, at]).map(|_| ()))
    }

    async fn fail_stale_runs(&self, before: Timestamp) -> SqlResult<Vec<String>> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
            tx.commit()?;
            Ok(ids)
        })
    }

    async fn write_step_run(&self, w: &StepRunWrite) -> SqlResult<Vec<OutputLink>> {
        let logs = serde_json::to_string(&w.step_run.logs).map_err(|e| MetadataError::Corrupt(e.to_string()))?;
        // Only what would cost work to lose is synced at once: a completed or
        // failed step run. A `running` marker, a cache hit (a link to outputs
        // that are already durable) or a skip is cheap to redo, and is synced
        // by the next synced commit anyway: in WAL mode a synced commit syncs
        // every earlier one, and a run ends with one. Saves one fsync per
        // executed step and one per cached step.
        let deferred = matches!(w.step_run.status, StepStatus::Running | StepStatus::Cached | StepStatus::Skipped);
        self.with_deferred_sync(deferred, |conn| write_step_run(conn, w, &logs))
    }

    async fn find_cached(&self, cache_key: &str) -> SqlResult<Option<CacheHit>> {
        self.with(|conn| {
            let id: Option<String> = conn
                .prepare_cached(
                    "SELECT id FROM step_runs WHERE cache_key = ?1 AND status = 'completed' \
                     ORDER BY ended_at DESC, id DESC LIMIT 1",
                )?
                .query_row([cache_key], |r| r.get(0))
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT o.output, {AV_COLS} FROM step_run_outputs o \
                 JOIN artifact_versions av ON av.id = o.artifact_version_id \
                 WHERE o.step_run_id = ?1 ORDER BY o.position"
            ))?;
            let outputs = stmt
                .query_map([&id], |r| Ok(OutputLink { output: r.get(0)?, artifact: av_row(r, 1)? }))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(CacheHit { step_run: id, outputs }))
        })
    }
    async fn get_run(&self, id_or_name: &str) -> SqlResult<Option<RunRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1 OR name = ?1 LIMIT 1"))?
                .query_row([id_or_name], run_row)
                .optional()
        })
    }

    async fn list_runs(&self, pipeline: Option<&str>, limit: usize) -> SqlResult<Vec<RunRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {RUN_COLS} FROM runs WHERE (?1 IS NULL OR pipeline = ?1) \
                 ORDER BY started_at DESC, id DESC LIMIT ?2"
            ))?
            .query_map(params![pipeline, limit], run_row)?
            .collect()
        })
    }

    async fn step_runs(&self, run_id: &str) -> SqlResult<Vec<StepRunRecord>> {
        self.with(|c| load_step_runs(c, "sr.run_id = ?1", run_id))
    }

    async fn step_run(&self, id: &str) -> SqlResult<Option<StepRunRecord>> {
        self.with(|c| one_step_run(c, id))
    }

    async fn artifact_version(&self, id: &str) -> SqlResult<Option<ArtifactVersion>> {
        self.with(|c| {
            c.prepare_cached(&format!("SELECT {AV_COLS} FROM artifact_versions av WHERE av.id = ?1"))?
                .query_row([id], |r| av_row(r, 0))
                .optional()
        })
    }

    async fn artifact_versions(&self, name: Option<&str>, limit: usize) -> SqlResult<Vec<ArtifactVersion>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|c| {
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
        self.with(|c| {
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
