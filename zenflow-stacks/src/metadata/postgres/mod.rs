//! The PostgreSQL metadata store, for stacks shared by CI jobs and workers.
//!
//! The statements and the mapping of rows are the shared SQL layer's
//! ([`crate::metadata::sql`]); this module holds what is PostgreSQL's:
//! connections (a pool sized for parallel steps; TLS as libpq reads
//! `sslmode`, [`tls`]), schema locking ([`schema`]), group commit with
//! pipelined, prepared statements ([`batch`]): the records of a run's steps
//! join one transaction that is committed within [`batch::COMMIT_WINDOW`], with
//! `synchronous_commit` as the server has it, and each write sends its
//! statements in one round trip; and riding out a restart of the server
//! ([`retry`]): reads and writes wait for it, within a window, and the
//! batch a lost connection took with it is replayed.

#[macro_use]
mod batch;
mod retry;
mod schema;
mod tls;

/// The SQL that gives a team's CI two roles on this store, enforced by the
/// database: `zenflow_pr` (a pull request's CI: record runs, register
/// versions, move unprotected aliases) and `zenflow_release` (the CI of
/// `main`: also moves protected aliases and changes protections). Run by the
/// tables' owner after zenflow created them; idempotent. The file explains
/// the grants to make.
pub const ROLES_SQL: &str = include_str!("roles.sql");

use crate::metadata::sql::delete;
use crate::metadata::sql::registry as registry_sql;
use crate::metadata::sql::rows::{self, StepRunParts};
use crate::metadata::sql::statements::{self as q, StepRunQueries};
use crate::metadata::sql::{SqlRow, Value};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::OnceCell;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{NoTls, Row};
use zenflow_core::metadata::*;
use zenflow_core::registry::{
    AliasEvent, AliasHolder, Model, ModelRegistry, ModelVersion, NewModelVersion, Promoted, Promotion, Protection,
    RegistryError,
};

/// The PostgreSQL implementation of [`MetadataStore`].
pub struct PostgresMetadataStore {
    pool: Pool,
    /// The connection heartbeats are recorded on: their own, made by the
    /// heartbeat thread, because the batch's and the pool's connections are
    /// driven by tasks on the steps' runtime, which blocking steps can
    /// starve ([`zenflow_core::heartbeat`]).
    beats: Pool,
    location: String,
    ready: OnceCell<()>,
    tls: tls::TlsSettings,
    /// Whether any connection started a TLS handshake.
    tls_used: Arc<AtomicBool>,
    /// Whether the plaintext warning was given.
    warned: AtomicBool,
    batch: Arc<batch::Batcher>,
    /// How long batches stay open.
    commit_window: std::time::Duration,
    /// How long an operation rides out an outage.
    retry: std::time::Duration,
    /// Opened to read: the schema is checked, never created or migrated.
    read_only: bool,
}

impl std::fmt::Debug for PostgresMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresMetadataStore").field("location", &self.location).finish()
    }
}

type PgResult<T> = Result<T, MetadataError>;

impl ToSql for Value<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Text(v) => v.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT4 => v.map(i32::try_from).transpose()?.to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Real(v) => v.to_sql(ty, out),
            Value::Blob(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // Each variant checks the column type as its Rust type would.
        match *self {
            Value::Text(v) => v.to_sql_checked(ty, out),
            Value::Int(v) if *ty == Type::INT4 => v.map(i32::try_from).transpose()?.to_sql_checked(ty, out),
            Value::Int(v) => v.to_sql_checked(ty, out),
            Value::Real(v) => v.to_sql_checked(ty, out),
            Value::Blob(v) => v.to_sql_checked(ty, out),
        }
    }
}

impl SqlRow for Row {
    fn text(&self, i: usize) -> PgResult<String> {
        self.try_get(i).map_err(crate::metadata::sql::corrupt)
    }
    fn opt_text(&self, i: usize) -> PgResult<Option<String>> {
        self.try_get(i).map_err(crate::metadata::sql::corrupt)
    }
    fn int(&self, i: usize) -> PgResult<i64> {
        self.opt_int(i)?.ok_or_else(|| crate::metadata::sql::corrupt(format!("column {i} is NULL")))
    }
    fn opt_int(&self, i: usize) -> PgResult<Option<i64>> {
        let narrow = self.columns().get(i).is_some_and(|c| *c.type_() == Type::INT4);
        if narrow {
            self.try_get::<_, Option<i32>>(i).map(|v| v.map(i64::from))
        } else {
            self.try_get::<_, Option<i64>>(i)
        }
        .map_err(crate::metadata::sql::corrupt)
    }
    fn opt_real(&self, i: usize) -> PgResult<Option<f64>> {
        self.try_get(i).map_err(crate::metadata::sql::corrupt)
    }
    fn opt_blob(&self, i: usize) -> PgResult<Option<Vec<u8>>> {
        self.try_get(i).map_err(crate::metadata::sql::corrupt)
    }
    fn flag(&self, i: usize) -> PgResult<bool> {
        self.try_get(i).map_err(crate::metadata::sql::corrupt)
    }
}

/// The parameters of a statement as tokio-postgres takes them.
fn bind<'a>(values: &'a [Value<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// A failure of a statement: the database's, or the store's own (a row
/// that does not read back).
enum Failure {
    Pg(tokio_postgres::Error),
    Store(MetadataError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Pg(e)
    }
}

impl From<MetadataError> for Failure {
    fn from(e: MetadataError) -> Self {
        Failure::Store(e)
    }
}

/// Runs query `sql` (prepared once per connection) and maps each row.
async fn query<T>(
    c: &Object,
    sql: &str,
    params: &[Value<'_>],
    map: impl Fn(&Row) -> PgResult<T>,
) -> Result<Vec<T>, Failure> {
    let stmt = c.prepare_cached(sql).await?;
    let rows = c.query(&stmt, &bind(params)).await?;
    Ok(rows.iter().map(map).collect::<PgResult<_>>()?)
}

/// The step runs `queries` find for the parameters `p`, whole: the five queries in one
/// round trip.
async fn load_step_runs(c: &Object, queries: &StepRunQueries, p: &[Value<'_>]) -> Result<Vec<StepRunRecord>, Failure> {
    let (runs, outputs, inputs, metadata, checks) = futures::future::try_join5(
        query(c, queries.runs, p, rows::step_run),
        query(c, queries.outputs, p, rows::output_row),
        query(c, queries.inputs, p, rows::input_row),
        query(c, queries.metadata, p, rows::metadata_row),
        query(c, queries.checks, p, rows::check_row),
    )
    .await?;
    Ok(StepRunParts { runs, outputs, inputs, metadata, checks }.assemble())
}

/// Runs the read `$body`, which has the connection as `$c`, where reads
/// run ([`PostgresMetadataStore::reader`]); again after an outage, within
/// the retry window. (A macro: an async closure taking the connection makes
/// the store's futures lose `Send`.)
macro_rules! read {
    ($store:expr, |$c:ident| $body:expr) => {{
        let mut attempts = retry::Attempts::new($store.retry);
        loop {
            let reader = $store.reader().await?;
            let result = {
                let $c: &Object = reader.client();
                $body
            };
            if let Some(v) = reader.done(result, &mut attempts).await? {
                break v;
            }
        }
    }};
}

/// Runs the registry read `$op`, which has the transaction as `$tx`, where
/// reads run ([`PostgresMetadataStore::reader`]), as [`read!`] does.
macro_rules! registry_read {
    ($store:expr, |$tx:ident| $op:expr) => {{
        let outcome = read!($store, |c| async {
            let mut tx = batch::PgTx { conn: c, location: &$store.location, failed: None, changed: 0 };
            let outcome = {
                let $tx = &mut tx;
                $op
            };
            match tx.failed.take() {
                Some(e) => Err(Failure::Pg(e)),
                None => Ok(outcome),
            }
        }
        .await);
        outcome
    }};
}

impl PostgresMetadataStore {
    /// A store for the database at `url` (`postgres://user:password@host:port/db`),
    /// with a pool of `pool_size` connections (default: 2 × cores, at least 4).
    /// Nothing connects until first use.
    ///
    /// TLS follows libpq's `sslmode` and `sslrootcert` in the URL:
    /// `disable`; `prefer` (the default; it warns once when it falls back
    /// to plaintext with a server on another machine) and `require` encrypt
    /// without checking the server's certificate; `verify-ca` checks that a
    /// trusted CA signed it and `verify-full` also that it names the host.
    /// Both verifying modes need the CA: the PEM file `sslrootcert=/path`,
    /// else `$PGSSLROOTCERT`, else `~/.postgresql/root.crt`, or they refuse
    /// to start; `require` with such a file is `verify-ca`, as in libpq.
    /// `sslrootcert=system` trusts the public CAs (the Mozilla roots bundled
    /// with the build) and implies, and needs, `verify-full`.
    pub fn open(url: &str, pool_size: Option<usize>) -> PgResult<Self> {
        let location = crate::config::redact_url(url);
        let backend = |message: String| MetadataError::Backend { location: location.clone(), message };
        let tls = tls::settings(url).map_err(backend)?;
        let config: tokio_postgres::Config =
            tls.url.parse().map_err(|e: tokio_postgres::Error| backend(format!("not a valid PostgreSQL URL: {e}")))?;
        let tls_used = Arc::new(AtomicBool::new(false));
        let rustls = tls::client_config(&tls).map_err(backend)?;
        let manager = |config: tokio_postgres::Config| {
            let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
            match &rustls {
                None => Manager::from_config(config, NoTls, manager_config),
                Some(rustls) => Manager::from_config(
                    config,
                    tls::Observed {
                        inner: tokio_postgres_rustls::MakeRustlsConnect::new(rustls.clone()),
                        used: tls_used.clone(),
                    },
                    manager_config,
                ),
            }
        };
        let pool = |manager: Manager, size: usize| {
            Pool::builder(manager)
                .max_size(size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(std::time::Duration::from_secs(60)))
                .create_timeout(Some(std::time::Duration::from_secs(10)))
                .build()
                .map_err(|e| MetadataError::Backend { location: location.clone(), message: e.to_string() })
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let beats = pool(manager(config.clone()), 1)?;
        let pool = pool(manager(config), pool_size.unwrap_or((2 * cores).max(4)))?;
        Ok(PostgresMetadataStore {
            batch: Arc::new(batch::Batcher::new(
                location.clone(),
                pool.clone(),
                batch::COMMIT_WINDOW,
                retry::DEFAULT_WINDOW,
            )),
            commit_window: batch::COMMIT_WINDOW,
            retry: retry::DEFAULT_WINDOW,
            read_only: false,
            pool,
            beats,
            location,
            ready: OnceCell::new(),
            tls,
            tls_used,
            warned: AtomicBool::new(false),
        })
    }

    /// The same store, committing each batch of writes within `window`
    /// (default 10 ms): the most a crash of this process takes back, and
    /// the longest another process waits for a version lock this one holds.
    pub fn with_commit_window(mut self, window: std::time::Duration) -> Self {
        self.commit_window = window;
        self.batch = self.new_batch();
        self
    }

    /// The same store, riding out an outage of the database for `window`
    /// (default 30 s) from the first failure of each
    /// read or write: connections refused, sessions ended by a restart or a
    /// failover, serialization failures are retried with backoff, and a
    /// batch whose connection was lost is replayed on a new one. Past the
    /// window, the error says how long it tried. Errors that waiting cannot
    /// mend (a password, a constraint) fail at once.
    pub fn with_retry_window(mut self, window: std::time::Duration) -> Self {
        self.retry = window;
        self.batch = self.new_batch();
        self
    }

    /// The same store, for commands that only read: a database without
    /// zenflow's schema is [`MetadataError::Empty`] and one with an older
    /// schema [`MetadataError::OlderSchema`], instead of being created or
    /// migrated. (Writes are not refused here: the database's grants are
    /// what make a role read-only.)
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    fn new_batch(&self) -> Arc<batch::Batcher> {
        Arc::new(batch::Batcher::new(self.location.clone(), self.pool.clone(), self.commit_window, self.retry))
    }

    fn err(&self, e: impl std::fmt::Display) -> MetadataError {
        MetadataError::Backend { location: self.location.clone(), message: e.to_string() }
    }

    fn pg(&self, e: tokio_postgres::Error) -> MetadataError {
        pg_error(&self.location, &e)
    }

    /// Why no connection could be had, with the server's own words (e.g.
    /// "password authentication failed for user ..."), never the password.
    fn connect_error(&self, e: deadpool_postgres::PoolError) -> MetadataError {
        match e {
            deadpool_postgres::PoolError::Backend(pg) => match self.pg(pg) {
                MetadataError::Backend { location, message } => {
                    let hint = if message.contains("not valid for name") {
                        "; the server's certificate does not name the host connected to: connect by a name it \
                         holds, or use `sslmode=verify-ca` (which checks who signed it, not the name)"
                    } else if message.contains("certificate") {
                        "; the server's certificate was not accepted: give the CA that signed it as \
                         `sslrootcert=/path/to/ca.pem` in the URL (`sslmode=verify-full` also checks that it \
                         names the host; `sslmode=require` encrypts without checking it)"
                    } else if message.contains("server does not support TLS") {
                        "; the server does not offer TLS: turn `ssl` on in its configuration, or connect with \
                         `sslmode=prefer` or `sslmode=disable`"
                    } else {
                        ""
                    };
                    MetadataError::Backend { location, message: format!("cannot connect: {message}{hint}") }
                }
                other => other,
            },
            other => self.err(format!("cannot connect: {other}")),
        }
    }

    /// A pooled connection to a database with the current schema; through
    /// an outage of the retry window.
    async fn client(&self) -> PgResult<Object> {
        let mut attempts = retry::Attempts::new(self.retry);
        let mut client = loop {
            match self.pool.get().await {
                Ok(c) => break c,
                Err(e) if retry::transient_pool(&e) => {
                    let reason = message(self.connect_error(e));
                    attempts.pause(&reason).await.map_err(|why| self.err(why))?;
                }
                Err(e) => return Err(self.connect_error(e)),
            }
        };
        if !self.warned.load(Ordering::Relaxed) {
            let used = self.tls_used.load(Ordering::Relaxed);
            if let Some(warning) = tls::plaintext_warning(&self.tls, used) {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!("{warning}");
                }
            }
        }
        if self.ready.get().is_none() {
            // On this same connection: a second one could wait forever on a
            // pool of one.
            self.ready.get_or_try_init(|| self.migrate(&mut client)).await?;
        }
        Ok(client)
    }

    /// The connection for a read: a pooled one, unless this handle has
    /// writes not yet committed; then its batch's, so that it reads them.
    async fn reader(&self) -> PgResult<batch::Reader<'_>> {
        if self.batch.has_uncommitted() {
            if let Some(reader) = self.batch.reader(self).await? {
                return Ok(reader);
            }
        }
        Ok(batch::Reader::Pool(Box::new(self.client().await?), &self.location))
    }
}

/// What `e` says, without the store's location.
fn message(e: MetadataError) -> String {
    match e {
        MetadataError::Backend { message, .. } => message,
        other => other.to_string(),
    }
}

/// The database's own message (e.g. "password authentication failed"), or
/// the client's with its causes.
fn pg_error(location: &str, e: &tokio_postgres::Error) -> MetadataError {
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                m.push_str(&format!(": {s}"));
                source = s.source();
            }
            m
        }
    };
    MetadataError::Backend { location: location.to_string(), message }
}

#[async_trait]
impl MetadataStore for PostgresMetadataStore {
    fn url(&self) -> String {
        self.location.clone()
    }

    async fn create_run(&self, run: &NewRun) -> PgResult<RunRecord> {
        self.batch.create_run(self, run).await
    }

    async fn set_run_status(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
        ended_at: Option<Timestamp>,
    ) -> PgResult<()> {
        self.batch.set_run_status(self, run_id, status, error, ended_at).await
    }

    async fn heartbeat(&self, run_id: &str, at: Timestamp) -> PgResult<()> {
        // Not in the batch: see `beats`. A run's row is visible here once
        // its batch commits (within the commit window; see the trait), and
        // nothing in a batch holds a lock on it that this update waits for.
        let mut c = self.beats.get().await.map_err(|e| self.connect_error(e))?;
        let beat = async {
            let stmt = c.prepare_cached(batch::HEARTBEAT_DB_CLOCK).await?;
            let tx = c.transaction().await?;
            // One stuck behind a lock is given up by the server too, not
            // only here, so the next does not queue behind it. (Per
            // transaction, not in the connection's startup options, which
            // connection poolers may refuse.)
            tx.batch_execute("SET LOCAL statement_timeout = '10s'").await?;
            tx.execute(&stmt, &bind(&[at.into(), run_id.into()])).await?;
            tx.commit().await
        };
        let result = match tokio::time::timeout(std::time::Duration::from_secs(10), beat).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => self.pg(e),
            Err(_) => self.err("the heartbeat got no answer within 10 s"),
        };
        // The connection may be dead without the client knowing (a
        // dropped network path): the next beat makes a new one.
        drop(Object::take(c));
        Err(result)
    }

    async fn fail_stale_runs(&self, stale_after: std::time::Duration) -> PgResult<Vec<String>> {
        self.batch.fail_stale_runs(self, stale_after).await
    }

    async fn write_step_run(&self, write: &StepRunWrite) -> PgResult<Vec<OutputLink>> {
        self.batch.write_step_run(self, write).await
    }

    async fn flush(&self) -> PgResult<()> {
        self.batch.flush(self).await
    }

    async fn find_cached(&self, cache_key: &str) -> PgResult<Option<CacheHit>> {
        let rows = read!(self, |c| query(c, q::CACHE_HIT, &[cache_key.into()], rows::cache_hit_row).await);
        let hit = rows::cache_hit(rows);
        if let Some(hit) = &hit {
            self.batch.known(hit.outputs.iter().map(|o| o.artifact.id.as_str()));
        }
        Ok(hit)
    }

    async fn get_run(&self, id_or_name: &str) -> PgResult<Option<RunRecord>> {
        Ok(read!(self, |c| query(c, q::GET_RUN, &[id_or_name.into()], rows::run).await).pop())
    }

    async fn list_runs(&self, pipeline: Option<&str>, limit: usize) -> PgResult<Vec<RunRecord>> {
        Ok(read!(self, |c| query(c, q::LIST_RUNS, &[pipeline.into(), limit.into()], rows::run).await))
    }

    async fn runs_with_id_prefix(&self, prefix: &str, limit: usize) -> PgResult<Vec<RunRecord>> {
        if !zenflow_core::metadata::is_id_prefix(prefix) {
            return Ok(Vec::new());
        }
        let params = [prefix.into(), limit.into()];
        Ok(read!(self, |c| query(c, q::RUNS_WITH_ID_PREFIX, &params, rows::run).await))
    }

    async fn step_runs(&self, run_id: &str) -> PgResult<Vec<StepRunRecord>> {
        Ok(read!(self, |c| load_step_runs(c, &q::STEP_RUNS_OF_RUN, &[run_id.into()]).await))
    }

    async fn latest_step_run(&self, run_id: &str, invocation: &str) -> PgResult<Option<StepRunRecord>> {
        let p = [Value::from(run_id), Value::from(invocation)];
        Ok(read!(self, |c| load_step_runs(c, &q::LATEST_STEP_RUN, &p).await).pop())
    }

    async fn step_run(&self, id: &str) -> PgResult<Option<StepRunRecord>> {
        Ok(read!(self, |c| load_step_runs(c, &q::STEP_RUN_BY_ID, &[id.into()]).await).pop())
    }

    async fn artifact_version(&self, id: &str) -> PgResult<Option<ArtifactVersion>> {
        Ok(read!(self, |c| query(c, q::ARTIFACT_VERSION, &[id.into()], |r| rows::artifact_version(r, 0)).await).pop())
    }

    async fn artifact_versions(&self, name: Option<&str>, limit: usize) -> PgResult<Vec<ArtifactVersion>> {
        let params = [name.into(), limit.into()];
        Ok(read!(self, |c| query(c, q::ARTIFACT_VERSIONS, &params, |r| rows::artifact_version(r, 0)).await))
    }

    async fn artifact_version_named(&self, name: &str, version: Option<i64>) -> PgResult<Option<ArtifactVersion>> {
        let params = [name.into(), version.into()];
        Ok(read!(self, |c| query(c, q::ARTIFACT_VERSION_NAMED, &params, |r| rows::artifact_version(r, 0)).await).pop())
    }

    fn registry(&self) -> Option<&dyn ModelRegistry> {
        Some(self)
    }

    async fn delete_run(&self, run_id: &str, dry_run: bool) -> PgResult<Deletion> {
        let at = now();
        let deleted: Result<Deletion, RegistryError> = registry_write!(@locked self, batch::DELETION_LOCK, |tx| {
            delete::delete_run(tx, run_id, at, delete::Locking::RowLocks, dry_run).await.map_err(RegistryError::from)
        });
        deleted.map_err(|e| delete::store_error(e, &self.location))
    }

    async fn store_id(&self) -> PgResult<String> {
        // Read first: only the first call, ever, writes.
        let found = read!(self, |c| query(c, delete::IDENTITY, &[], |r| r.text(0)).await);
        if let Some(id) = found.into_iter().next() {
            return Ok(id);
        }
        let id: Result<String, RegistryError> = registry_write!(@locked self, batch::DELETION_LOCK, |tx| {
            delete::store_id(tx).await.map_err(RegistryError::from)
        });
        id.map_err(|e| delete::store_error(e, &self.location))
    }

    async fn content_hashes(&self) -> PgResult<std::collections::HashMap<zenflow_core::ContentHash, u64>> {
        let found = read!(self, |c| query(c, delete::CONTENT_HASHES, &[], delete::hash_count).await);
        Ok(found.into_iter().collect())
    }

    async fn lineage(&self, artifact_version: &str) -> PgResult<Lineage> {
        Ok(read!(self, |client| async {
            let artifact =
                query(client, q::ARTIFACT_VERSION, &[artifact_version.into()], |r| rows::artifact_version(r, 0))
                    .await?
                    .pop()
                    .ok_or_else(|| MetadataError::NotFound(format!("artifact version `{artifact_version}`")))?;
            let (producer, consumers) = futures::future::try_join(
                load_step_runs(client, &q::STEP_RUN_BY_ID, &[artifact.producer_step_run.as_str().into()]),
                load_step_runs(client, &q::CONSUMERS_OF, &[artifact_version.into()]),
            )
            .await?;
            Ok(Lineage { artifact, producer: producer.into_iter().next(), consumers })
        }
        .await))
    }
}

#[async_trait]
impl ModelRegistry for PostgresMetadataStore {
    async fn register(&self, version: &NewModelVersion) -> Result<ModelVersion, RegistryError> {
        registry_write!(self, &version.model, |tx| registry_sql::register(tx, version).await)
    }

    async fn describe_model(
        &self,
        model: &str,
        description: &str,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Result<Model, RegistryError> {
        registry_write!(self, model, |tx| registry_sql::describe(tx, model, description, tags).await)
    }

    async fn models(&self) -> Result<Vec<Model>, RegistryError> {
        registry_read!(self, |tx| registry_sql::models(tx).await)
    }

    async fn model(&self, model: &str) -> Result<Option<Model>, RegistryError> {
        registry_read!(self, |tx| registry_sql::model(tx, model).await)
    }

    async fn versions(&self, model: &str) -> Result<Vec<ModelVersion>, RegistryError> {
        registry_read!(self, |tx| registry_sql::versions(tx, model).await)
    }

    async fn version(&self, model: &str, version: i64) -> Result<Option<ModelVersion>, RegistryError> {
        registry_read!(self, |tx| registry_sql::version(tx, model, version).await)
    }

    async fn aliases(&self, model: &str) -> Result<Vec<AliasHolder>, RegistryError> {
        registry_read!(self, |tx| registry_sql::aliases(tx, model).await)
    }

    async fn resolve(&self, model: &str, alias: &str) -> Result<Option<ModelVersion>, RegistryError> {
        registry_read!(self, |tx| registry_sql::resolve(tx, model, alias).await)
    }

    async fn promote(&self, promotion: &Promotion) -> Result<Promoted, RegistryError> {
        registry_write!(self, &promotion.model, |tx| registry_sql::promote(tx, promotion).await)
    }

    async fn history(&self, model: &str, alias: Option<&str>, limit: usize) -> Result<Vec<AliasEvent>, RegistryError> {
        registry_read!(self, |tx| registry_sql::history(tx, model, alias, limit).await)
    }

    async fn holder_at(&self, model: &str, alias: &str, at: Timestamp) -> Result<Option<i64>, RegistryError> {
        registry_read!(self, |tx| registry_sql::holder_at(tx, model, alias, at).await)
    }

    async fn set_protection(&self, change: &Protection) -> Result<Option<AliasEvent>, RegistryError> {
        registry_write!(self, &change.model, |tx| registry_sql::set_protection(tx, change).await)
    }

    async fn protections(&self, model: Option<&str>) -> Result<Vec<(String, String)>, RegistryError> {
        registry_read!(self, |tx| registry_sql::protections(tx, model).await)
    }
}
