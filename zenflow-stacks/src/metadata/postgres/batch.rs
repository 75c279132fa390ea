//! Group commit for the PostgreSQL store.
//!
//! Writes join one open transaction on a connection the store keeps,
//! committed at most [`COMMIT_WINDOW`] after its first write (by a timer
//! task), or at once by `set_run_status`, `flush` and planned runs. The
//! commit is PostgreSQL's own, with `synchronous_commit` as the server has
//! it: a run is reported finished only after the commit that makes all of
//! it durable. Each write sends its statements pipelined, prepared once per
//! connection: one round trip for the statements, one more when it first
//! takes a name's version lock or checks references it has not seen.
//!
//! **No waiting while holding locks.** Version numbers per artifact name
//! are taken under a transaction-scoped advisory lock on the name. A batch
//! only ever *tries* a lock (`pg_try_advisory_xact_lock`); when another
//! process holds it, the batch is committed first, and the lock is then
//! waited for by a transaction that holds nothing else, in name order. So
//! two processes writing the same names (the same pipeline, at once) never
//! wait for each other in a cycle, and no batch is lost to a deadlock.
//! A new pipeline's row is committed at once, for the same reason.

use super::retry::{self, Attempts};
use super::{bind, message, pg_error, query, Failure, PgResult, PostgresMetadataStore};
use crate::metadata::sql::batch::{BatchLog, KnownIds, Lost, LostRun, RunRow};
use crate::metadata::sql::registry as registry_sql;
use crate::metadata::sql::write::{
    marker_metadata, marker_params, metadata_params, references, Dialect, Ops, Prepared, Reference, Returns,
};
use crate::metadata::sql::{statements as q, SqlRow, Value};
use deadpool_postgres::Object;
use futures::FutureExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::MutexGuard;
use zenflow_core::metadata::*;

/// How long writes may stay in the open transaction before they are
/// committed: the most a crash of this process can take back of what a run
/// recorded, and the longest another process waits for a name's version lock.
pub(super) const COMMIT_WINDOW: Duration = Duration::from_millis(10);

/// Whether artifact version `$1` exists, locked against deletion until the
/// batch commits (see [`crate::metadata::sql::delete`]).
const ARTIFACT_EXISTS_LOCKED: &str = "SELECT EXISTS(SELECT 1 FROM artifact_versions WHERE id = $1 FOR KEY SHARE)";

/// The lock that deletions of runs take: one at a time.
pub(super) const DELETION_LOCK: &str = "zenflow.deletion";

/// Tries the version lock `$1` (see [`version_lock`]).
const TRY_LOCK: &str = "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))";

/// Waits for the version lock `$1`.
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";

/// The server's clock, in the store's microseconds: what heartbeats are
/// recorded and judged by, so that hosts whose clocks disagree do not take
/// each other's live runs for dead.
macro_rules! db_now {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT"
    };
}
const DB_NOW_QUERY: &str = concat!("SELECT ", db_now!());
/// [`q::SET_RUN_STATUS`] with the heartbeat by the server's clock.
const SET_RUN_STATUS_DB_CLOCK: &str = concat!(
    "UPDATE runs SET status = $1, error = $2, ended_at = $3, ",
    "heartbeat_at = CASE WHEN $4::BIGINT IS NULL THEN heartbeat_at ELSE ",
    db_now!(),
    " END WHERE id = $5"
);
/// [`q::HEARTBEAT`] by the server's clock (`$1`, the host's time, unused).
pub(super) const HEARTBEAT_DB_CLOCK: &str =
    concat!("UPDATE runs SET heartbeat_at = ", db_now!(), " WHERE id = $2 AND $1::BIGINT IS NOT NULL");

/// The lock under which version numbers of artifact `name` are taken: one
/// per pipeline (artifact names are `<pipeline>.<invocation>.<output>`, and
/// neither an invocation id nor an output name holds a dot), so a batch
/// takes it once for all of a run's steps, not once per step. Two processes
/// running the same pipeline at once take turns, a batch at a time.
fn version_lock(name: &str) -> String {
    let mut parts = name.rsplitn(3, '.');
    let pipeline = match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(pipeline)) => pipeline,
        _ => name,
    };
    format!("zenflow.versions.{pipeline}")
}

/// The lock of a model's registry rows (versions, aliases, events).
pub(super) fn model_lock(model: &str) -> String {
    format!("zenflow.model.{model}")
}

/// The batch of one store handle.
pub(super) struct Batcher {
    state: tokio::sync::Mutex<State>,
    /// Whether writes of this handle are not committed yet: reads then go
    /// through the batch's connection, to see them.
    uncommitted: AtomicBool,
    /// Ids known to exist (writes that refer only to them skip the check).
    known: Mutex<KnownIds>,
    location: String,
    /// How long a batch stays open ([`COMMIT_WINDOW`] unless set).
    window: Duration,
    /// Where a lost connection is replaced (the schema is current: the
    /// batch's first connection came through the store).
    pool: deadpool_postgres::Pool,
    /// How long an operation rides out an outage ([`retry::DEFAULT_WINDOW`]
    /// unless set).
    pub(super) retry: Duration,
}

/// A write sent without waiting for its answer (see [`Batcher::send`]).
type Unacknowledged = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// A write of the open transaction whose caller has been answered: what a
/// new transaction replays when the connection is lost before the commit.
struct Entry {
    sql: Arc<str>,
    /// Shared with the write's own future, when it was sent without waiting.
    params: Arc<[Owned]>,
    /// The version numbers it returned, which its caller has been given: a
    /// replay must return the same, or it cannot stand in for the write.
    /// Empty for a statement whose answer nobody used.
    versions: Vec<Option<i64>>,
}

impl Entry {
    /// The write `ops`, sent as `sql`, which returned `returned`.
    fn of(ops: &Ops<'_>, sql: Arc<str>, returned: &[i64]) -> Self {
        let params = ops.ops.iter().flat_map(|op| ops.params(op).iter().map(Owned::from)).collect();
        let kinds = ops.ops.iter().map(|op| op.returns).filter(|r| *r != Returns::Nothing);
        let versions = kinds.zip(returned).map(|(r, v)| (r == Returns::Version).then_some(*v)).collect();
        Entry { sql, params, versions }
    }

    /// Statement `sql` with `params`, whose answer nobody used.
    fn statement(sql: &str, params: &[Value<'_>]) -> Self {
        Entry { sql: sql.into(), params: params.iter().map(Owned::from).collect(), versions: Vec::new() }
    }
}

pub(super) struct State {
    /// The connection of the batch, kept from one batch to the next.
    conn: Option<Arc<Object>>,
    /// Writes of the open batch sent but not yet answered, in order. (In a
    /// mutex only to make `State` `Sync`; it is reached through `&mut`.)
    pending: Mutex<Vec<Unacknowledged>>,
    /// Whether `BEGIN` was sent.
    open: bool,
    /// When the oldest write not yet committed was made.
    since: Option<Instant>,
    /// Number of the open batch: one more with every commit.
    batch: u64,
    /// Artifact names whose version lock the open transaction holds.
    locks: HashSet<String>,
    /// `running` markers not yet written (see the SQLite store: a step that
    /// finishes within its batch never needs one).
    markers: HashMap<String, StepRunWrite>,
    /// The open transaction's writes, for a replay.
    journal: Vec<Entry>,
    /// Why the open transaction was cut off by a failure that time may
    /// mend: set from then until it is replayed, or given up.
    pub(super) broken: Option<String>,
    /// The transaction whose `COMMIT` went unanswered, by id: whether it
    /// committed is asked before anything is replayed.
    in_doubt: Option<i64>,
    log: BatchLog,
    lost: Lost,
}

impl State {
    fn take_pending(&mut self) -> Vec<Unacknowledged> {
        std::mem::take(self.pending.get_mut().unwrap_or_else(PoisonError::into_inner))
    }

    fn conn(&self) -> Arc<Object> {
        self.conn.clone().expect("an open batch has a connection")
    }
}

/// The connection a read runs on.
pub(super) enum Reader<'a> {
    /// A pooled connection (the read needs nothing uncommitted).
    Pool(Box<Object>, &'a str),
    /// The batch's connection, inside its transaction.
    Batch(MutexGuard<'a, State>, &'a Batcher),
}

impl Reader<'_> {
    /// The connection.
    pub(super) fn client(&self) -> &Object {
        match self {
            Reader::Pool(c, _) => c,
            Reader::Batch(state, _) => state.conn.as_deref().expect("a batch reader has a connection"),
        }
    }

    /// The read's outcome, or `None` when it met an outage, waited, and
    /// is worth trying again. A read that failed inside the batch aborted
    /// its transaction: the batch is replayed if time may mend the failure,
    /// and lost if not.
    pub(super) async fn done<T>(self, result: Result<T, Failure>, attempts: &mut Attempts) -> PgResult<Option<T>> {
        let e = match result {
            Ok(v) => return Ok(Some(v)),
            Err(Failure::Store(e)) => return Err(e),
            Err(Failure::Pg(e)) => e,
        };
        match self {
            Reader::Pool(c, location) => {
                let error = pg_error(location, &e);
                if !retry::transient(&e) {
                    return Err(error);
                }
                // Not back into the pool: it may be what broke.
                drop(Object::take(*c));
                attempts.pause(&message(error)).await.map_err(|why| backend(location, why))?;
                Ok(None)
            }
            Reader::Batch(mut state, batcher) => {
                let error = batcher.lose(&mut state, e).await;
                if state.broken.is_none() {
                    return Err(error);
                }
                batcher.recover(&mut state, attempts).await?;
                Ok(None)
            }
        }
    }
}

fn backend(location: &str, message: String) -> MetadataError {
    MetadataError::Backend { location: location.to_string(), message }
}

/// The registry's transaction on a PostgreSQL connection.
pub(super) struct PgTx<'a> {
    pub conn: &'a Object,
    pub location: &'a str,
    /// The database's error, when a statement failed (the transaction is
    /// then aborted).
    pub failed: Option<tokio_postgres::Error>,
    /// Rows changed: an operation that changed none needs no commit.
    pub changed: u64,
}

impl PgTx<'_> {
    fn failed(&mut self, e: tokio_postgres::Error) -> MetadataError {
        let error = pg_error(self.location, &e);
        self.failed = Some(e);
        error
    }
}

impl registry_sql::Tx for PgTx<'_> {
    async fn query<T: Send + 'static>(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
        map: fn(&dyn SqlRow) -> Result<T, MetadataError>,
    ) -> Result<Vec<T>, MetadataError> {
        match query(self.conn, sql, params, |r| map(r)).await {
            Ok(rows) => Ok(rows),
            Err(Failure::Store(e)) => Err(e),
            Err(Failure::Pg(e)) => Err(self.failed(e)),
        }
    }

    async fn execute(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<u64, MetadataError> {
        let done = async {
            let stmt = self.conn.prepare_cached(sql).await?;
            self.conn.execute(&stmt, &bind(params)).await
        }
        .await;
        match done {
            Ok(n) => {
                self.changed += n;
                Ok(n)
            }
            Err(e) => Err(self.failed(e)),
        }
    }
}

/// A [`Value`] that owns its data, for a write sent without waiting.
enum Owned {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
    Blob(Option<Vec<u8>>),
}

impl From<&Value<'_>> for Owned {
    fn from(v: &Value<'_>) -> Self {
        match *v {
            Value::Text(t) => Owned::Text(t.map(str::to_string)),
            Value::Int(i) => Owned::Int(i),
            Value::Real(r) => Owned::Real(r),
            Value::Blob(b) => Owned::Blob(b.map(<[u8]>::to_vec)),
        }
    }
}

impl Owned {
    fn as_value(&self) -> Value<'_> {
        match self {
            Owned::Text(t) => Value::Text(t.as_deref()),
            Owned::Int(i) => Value::Int(*i),
            Owned::Real(r) => Value::Real(*r),
            Owned::Blob(b) => Value::Blob(b.as_deref()),
        }
    }
}

/// Runs `ops` as one statement: each becomes a data-modifying `WITH` query
/// of one `INSERT`/`UPDATE` (their placeholders renumbered), so a write is
/// one message and one answer, not one per statement (each costs a
/// `Sync`, a flush and a wake-up on both sides). Returns what its
/// [`Returns::Version`] and [`Returns::Count`] statements gave, in order.
///
/// The parts run on one snapshot, so none may read what another writes:
/// true of a write's statements, which touch distinct rows (the artifact
/// version's number is read from versions committed before).
async fn run_ops(c: &Object, ops: &Ops<'_>) -> Result<Vec<i64>, tokio_postgres::Error> {
    let combined = combine(ops);
    let stmt = c.prepare_cached(&combined).await?;
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        ops.ops.iter().flat_map(|op| bind(ops.params(op))).collect();
    let versions = ops.ops.iter().filter(|op| op.returns != Returns::Nothing).count();
    if versions == 0 {
        c.execute(&stmt, &params).await?;
        return Ok(Vec::new());
    }
    let row = c.query_one(&stmt, &params).await?;
    (0..versions).map(|i| row.try_get::<_, i64>(i)).collect()
}

/// The one statement of [`run_ops`] for `ops`, built once per sequence of
/// statements (a step's shape: how many inputs, outputs, checks).
fn combine(ops: &Ops<'_>) -> std::sync::Arc<str> {
    type Shapes = Mutex<HashMap<Vec<usize>, std::sync::Arc<str>>>;
    static SHAPES: std::sync::LazyLock<Shapes> = std::sync::LazyLock::new(Default::default);
    let shape: Vec<usize> = ops.ops.iter().map(|op| op.sql.as_ptr() as usize).collect();
    if let Some(sql) = SHAPES.lock().unwrap_or_else(PoisonError::into_inner).get(&shape) {
        return sql.clone();
    }
    let mut with = Vec::with_capacity(ops.ops.len());
    let mut returned = Vec::new();
    let mut offset = 0;
    for (i, op) in ops.ops.iter().enumerate() {
        match op.returns {
            Returns::Nothing => with.push(format!("w{i} AS ({})", renumber(op.sql, offset))),
            Returns::Version => {
                with.push(format!("w{i} AS ({})", renumber(op.sql, offset)));
                returned.push(format!("(SELECT version FROM w{i})"));
            }
            Returns::Count => {
                with.push(format!("w{i} AS ({} RETURNING 1)", renumber(op.sql, offset)));
                returned.push(format!("(SELECT count(*) FROM w{i})"));
            }
        }
        offset += ops.params(op).len();
    }
    let tail = if returned.is_empty() { "1".to_string() } else { returned.join(", ") };
    let sql: std::sync::Arc<str> = format!("WITH {} SELECT {tail}", with.join(", ")).into();
    SHAPES.lock().unwrap_or_else(PoisonError::into_inner).insert(shape, sql.clone());
    sql
}

/// `sql` with every placeholder `$n` written `$(n + offset)`.
fn renumber(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
        let n: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(0);
        out.push_str(&format!("${}", n + offset));
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

/// Runs one statement per value of `args`, pipelined; the first column of
/// each one's single row.
async fn each<T: for<'r> tokio_postgres::types::FromSql<'r>>(
    c: &Object,
    sql: &str,
    args: &[&str],
) -> Result<Vec<T>, tokio_postgres::Error> {
    if args.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = c.prepare_cached(sql).await?;
    let stmt = &stmt;
    futures::future::try_join_all(args.iter().map(|a| async move {
        c.query_one(stmt, &[a as &(dyn tokio_postgres::types::ToSql + Sync)]).await?.try_get(0)
    }))
    .await
}

/// Runs `$attempt` (an expression awaiting one try) until it succeeds or
/// fails for good: after an outage cut it off, once the lost transaction is
/// replayed ([`Batcher::recover`]); returns from the enclosing function when
/// the retry window has passed. So an attempt must redo what it wrote
/// before it failed, and journal what it wrote once it succeeds. (A macro:
/// an async closure taking `&mut State` makes the store's futures lose `Send`.)
macro_rules! retrying {
    ($batcher:expr, $state:expr, $attempt:expr) => {{
        let mut attempts = $crate::metadata::postgres::retry::Attempts::new($batcher.retry);
        loop {
            $batcher.recover($state, &mut attempts).await?;
            match $attempt {
                Err(_) if $state.broken.is_some() => continue,
                done => break done,
            }
        }
    }};
}

/// Runs the registry operation `$op`, which has the transaction as `$tx`,
/// in the batch of `$store`, under the model's lock (`@locked`: the lock
/// named), and commits at once:
/// durable and visible to others when it returns. A refusal wrote nothing
/// (the operations check before they write). Cut off by an outage, the
/// operation runs again, reading again what it checks, unless its commit
/// turns out to have gone through.
macro_rules! registry_write {
    ($store:expr, $model:expr, |$tx:ident| $op:expr) => {
        registry_write!(@locked $store, &batch::model_lock($model), |$tx| $op)
    };
    (@locked $store:expr, $lock:expr, |$tx:ident| $op:expr) => {{
        let batcher = &$store.batch;
        let mut guard = batcher.lock_state().await;
        let state: &mut batch::State = &mut guard;
        let mut in_doubt = None;
        let done = retrying!(
            batcher,
            state,
            async {
                let c = match batcher.begin_registry($store, state, $lock, &mut in_doubt).await? {
                    Ok(c) => c,
                    Err(outcome) => return Ok(outcome),
                };
                let mut tx = batch::PgTx { conn: &c, location: &$store.location, failed: None, changed: 0 };
                let outcome = {
                    let $tx = &mut tx;
                    $op
                };
                let failed = tx.failed.take();
                batcher.end_registry(state, failed, outcome, &mut in_doubt).await
            }
            .await
        );
        done?
    }};
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // The last holder is gone (the store, and the commit timer, whose
        // runtime stopped before it fired): nothing can commit any more.
        if self.has_uncommitted() {
            tracing::warn!(
                "{}: writes of the last {:?} were not committed: the runtime stopped before the \
                 store committed them; call `flush` (or finish the run) before stopping it",
                self.location,
                self.window
            );
        }
    }
}

impl Batcher {
    /// The batch of a store at `location` whose connections come from
    /// `pool`, committing within `window` and riding out outages of `retry`.
    pub(super) fn new(location: String, pool: deadpool_postgres::Pool, window: Duration, retry: Duration) -> Self {
        Batcher {
            state: tokio::sync::Mutex::new(State {
                conn: None,
                pending: Mutex::new(Vec::new()),
                open: false,
                since: None,
                batch: 0,
                locks: HashSet::new(),
                markers: HashMap::new(),
                journal: Vec::new(),
                broken: None,
                in_doubt: None,
                log: BatchLog::default(),
                lost: Lost::default(),
            }),
            uncommitted: AtomicBool::new(false),
            known: Mutex::new(KnownIds::default()),
            location,
            window,
            pool,
            retry,
        }
    }

    pub(super) fn has_uncommitted(&self) -> bool {
        self.uncommitted.load(Ordering::Acquire)
    }

    fn known_ids(&self) -> std::sync::MutexGuard<'_, KnownIds> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers that `ids` exist.
    pub(super) fn known<'a>(&self, ids: impl Iterator<Item = &'a str>) {
        let mut known = self.known_ids();
        for id in ids {
            known.insert(id);
        }
    }

    /// After an outage cut the open transaction off: waits, connects
    /// again and replays the transaction, until it stands again or the
    /// retry window has passed (then the batch is lost, with that reason).
    pub(super) async fn recover(&self, state: &mut State, attempts: &mut Attempts) -> PgResult<()> {
        while let Some(reason) = state.broken.take() {
            if let Err(gave_up) = attempts.pause(&reason).await {
                state.in_doubt = None;
                return Err(self.lose_because(state, gave_up).await);
            }
            if let Err(e) = self.reopen(state).await {
                if state.broken.is_none() {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// A new connection with the open transaction as it was: whether an
    /// unanswered commit went through is asked first; if not, the version
    /// locks are taken again and the journal replayed.
    async fn reopen(&self, state: &mut State) -> PgResult<()> {
        let c = match self.pool.get().await {
            Ok(c) => Arc::new(c),
            Err(e) if retry::transient_pool(&e) => return Err(self.cut_off(state, format!("cannot connect: {e}"))),
            Err(e) => return Err(self.backend(format!("cannot connect: {e}"))),
        };
        state.conn = Some(c.clone());
        if let Some(xid) = state.in_doubt {
            match c.query_one("SELECT txid_status($1)::TEXT", &[&xid]).await {
                Err(e) => return Err(self.lose(state, e).await),
                Ok(row) => match row.try_get::<_, Option<String>>(0).ok().flatten().as_deref() {
                    Some("committed") => {
                        self.committed(state);
                        return Ok(());
                    }
                    Some("in progress") => {
                        return Err(self.cut_off(state, "the commit cut off is still in progress".into()))
                    }
                    _ => state.in_doubt = None,
                },
            }
        }
        if state.journal.is_empty() && state.locks.is_empty() {
            // Nothing to stand up again: the next write opens a transaction.
            state.open = false;
            return Ok(());
        }
        let replayed = async {
            c.batch_execute("BEGIN").await?;
            let mut locks: Vec<&String> = state.locks.iter().collect();
            locks.sort_unstable();
            for name in locks {
                c.query_one(LOCK, &[name as &(dyn tokio_postgres::types::ToSql + Sync)]).await?;
            }
            replay(&c, &state.journal).await
        }
        .await;
        match replayed {
            Ok(None) => {
                state.open = true;
                tracing::info!("{}: the connection is back; {} write(s) replayed", self.location, state.journal.len());
                Ok(())
            }
            Ok(Some(mismatch)) => Err(self.lose_because(state, mismatch).await),
            Err(e) => Err(self.lose(state, e).await),
        }
    }

    /// Sends `ops` in the open batch without waiting for the answer: for
    /// writes whose answer the caller does not need (nothing the database
    /// assigns), so that the caller's next statement follows in the same
    /// round trip. Its references are checked first, so it fails only if
    /// the database does; then the batch is lost (or replayed), which the
    /// run's next write or its commit reports.
    async fn send(&self, state: &mut State, ops: &Ops<'_>) -> Result<(), tokio_postgres::Error> {
        let c = state.conn();
        // Prepared first (once per connection), so that the write itself is
        // one message, sent when its future is first polled, below.
        let sql = combine(ops);
        let stmt = c.prepare_cached(&sql).await?;
        let entry = Entry::of(ops, sql, &[]);
        let params = entry.params.clone();
        let mut write: Unacknowledged = Box::pin(async move {
            let values: Vec<Value<'_>> = params.iter().map(Owned::as_value).collect();
            c.execute(&stmt, &bind(&values)).await.map(|_| ())
        });
        match std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await {
            std::task::Poll::Ready(done) => done?,
            std::task::Poll::Pending => state.pending.get_mut().unwrap_or_else(PoisonError::into_inner).push(write),
        }
        state.journal.push(entry);
        Ok(())
    }

    /// The answers of writes sent without waiting: the first error.
    async fn acknowledge(pending: Vec<Unacknowledged>) -> Result<(), tokio_postgres::Error> {
        for write in pending {
            write.await?;
        }
        Ok(())
    }

    fn backend(&self, message: String) -> MetadataError {
        backend(&self.location, message)
    }

    /// The batch's connection for a read, with the pending markers written,
    /// if this handle has uncommitted writes.
    pub(super) async fn reader<'a>(self: &'a Arc<Self>, store: &PostgresMetadataStore) -> PgResult<Option<Reader<'a>>> {
        let mut guard = self.state.lock().await;
        let state: &mut State = &mut guard;
        retrying!(
            self,
            state,
            async {
                if !state.markers.is_empty() {
                    self.open(store, state).await?;
                    self.write_markers(state).await?;
                }
                Ok(())
            }
            .await
        )?;
        if !state.open {
            return Ok(None);
        }
        Ok(Some(Reader::Batch(guard, self)))
    }

    /// The connection of the batch (taken from the pool when there is none).
    async fn connect(&self, store: &PostgresMetadataStore, state: &mut State) -> PgResult<()> {
        if state.conn.as_ref().is_some_and(|c| c.is_closed()) {
            if state.open || !state.journal.is_empty() {
                // The server rolled the open batch back when it lost it.
                return Err(self.cut_off(state, "the connection to the database closed with a batch open".into()));
            }
            state.conn = None;
        }
        if state.conn.is_none() {
            state.conn = Some(Arc::new(store.client().await?));
        }
        Ok(())
    }

    /// Opens the batch's transaction unless it is open.
    async fn open(self: &Arc<Self>, store: &PostgresMetadataStore, state: &mut State) -> PgResult<()> {
        self.connect(store, state).await?;
        if !state.open {
            let c = state.conn();
            // Sent now, answered with the batch's next statements: no
            // round trip of its own. (tokio-postgres sends a request when its
            // future is first polled, and discards the answer of one
            // dropped.) Should it fail, so do the statements after it, and
            // the batch is lost with their error.
            if c.batch_execute("BEGIN").now_or_never().is_some_and(|r| r.is_err()) {
                return Err(self.cut_off(state, "cannot start a transaction: the connection is closed".into()));
            }
            state.open = true;
            self.dirty(state);
        }
        Ok(())
    }

    /// Something waits to be committed: the window starts now, unless it
    /// has already, and a timer commits it when it ends.
    fn dirty(self: &Arc<Self>, state: &mut State) {
        self.uncommitted.store(true, Ordering::Release);
        if state.since.is_none() {
            state.since = Some(Instant::now());
            let batch = state.batch;
            let me = self.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    tokio::time::sleep(me.window).await;
                    let mut state = me.state.lock().await;
                    if state.batch == batch && state.since.is_some() {
                        if let Err(e) = me.commit(&mut state).await {
                            tracing::error!("{e}");
                        }
                    }
                });
            }
        }
    }

    /// Writes the pending markers into the open batch: one round trip.
    async fn write_markers(&self, state: &mut State) -> PgResult<()> {
        if state.markers.is_empty() {
            return Ok(());
        }
        let markers: Vec<StepRunWrite> = state.markers.values().cloned().collect();
        let conn = state.conn();
        let c: &Object = &conn;
        let mut entries = Vec::new();
        let written = async {
            let stmt = c.prepare_cached(q::UPSERT_MARKER).await?;
            let stmt = &stmt;
            let params: Vec<_> = markers.iter().map(|m| marker_params(&m.step_run)).collect();
            let counts =
                futures::future::try_join_all(params.iter().map(|p| async move { c.execute(stmt, &bind(p)).await }))
                    .await?;
            entries.extend(params.iter().map(|p| Entry::statement(q::UPSERT_MARKER, p)));
            // Their metadata (which worker runs them), for the markers written.
            let meta = c.prepare_cached(q::UPSERT_METADATA).await?;
            let meta = &meta;
            let rows: Vec<(&StepRunWrite, &str, String)> = markers
                .iter()
                .zip(&counts)
                .filter(|(_, n)| **n > 0)
                .flat_map(|(m, _)| marker_metadata(&m.step_run).into_iter().map(move |(k, j)| (m, k, j)))
                .collect();
            let params: Vec<_> = rows.iter().map(|(m, key, json)| metadata_params(&m.step_run, key, json)).collect();
            futures::future::try_join_all(params.iter().map(|p| async move { c.execute(meta, &bind(p)).await }))
                .await?;
            entries.extend(params.iter().map(|p| Entry::statement(q::UPSERT_METADATA, p)));
            Ok::<_, tokio_postgres::Error>(counts)
        }
        .await;
        let counts = match written {
            Ok(counts) => counts,
            // The markers stay, to be written again after a replay.
            Err(e) => return Err(self.lose(state, e).await),
        };
        state.markers.clear();
        state.journal.extend(entries);
        for (m, n) in markers.iter().zip(counts) {
            let sr = &m.step_run;
            if n == 0 {
                tracing::warn!(step = %sr.invocation, "not recording that the step is running: run `{}` does not exist", sr.run_id);
            } else {
                state.log.wrote(sr);
            }
        }
        Ok(())
    }

    /// A statement of the batch failed: PostgreSQL aborted its transaction.
    /// If time may mend the failure, the batch is only cut off (to be
    /// replayed, see [`Batcher::recover`]); if not, it is rolled back and
    /// its runs are lost.
    async fn lose(&self, state: &mut State, e: tokio_postgres::Error) -> MetadataError {
        // An earlier write sent without waiting may be what failed (the
        // statements after it then only say the transaction is aborted).
        let e = match Self::acknowledge(state.take_pending()).await {
            Err(first) => first,
            Ok(()) => e,
        };
        let reason = message(pg_error(&self.location, &e));
        if retry::transient(&e) {
            return self.cut_off(state, reason);
        }
        self.lose_because(state, reason).await
    }

    /// The open transaction is gone to an outage; what it held is kept, to
    /// be replayed on a new connection.
    fn cut_off(&self, state: &mut State, reason: String) -> MetadataError {
        state.take_pending();
        if let Some(c) = state.conn.take() {
            // Not back into the pool: it is closed, or inside an aborted
            // transaction.
            if let Ok(c) = Arc::try_unwrap(c) {
                drop(Object::take(c));
            }
        }
        state.open = false;
        state.broken = Some(reason.clone());
        self.backend(reason)
    }

    /// The batch is lost for `reason`: rolled back, and its runs marked lost.
    async fn lose_because(&self, state: &mut State, reason: String) -> MetadataError {
        let reason = format!("{reason}; the writes of the last {:?} were rolled back with it", self.window);
        if let Some(c) = &state.conn {
            if c.batch_execute("ROLLBACK").await.is_err() {
                state.conn = None;
            }
        }
        self.forget(state, &reason);
        self.backend(reason)
    }

    /// The open batch is gone: its runs are lost.
    fn forget(&self, state: &mut State, reason: &str) {
        state.take_pending();
        state.open = false;
        state.since = None;
        state.batch += 1;
        state.locks.clear();
        state.markers.clear();
        state.journal.clear();
        state.broken = None;
        state.in_doubt = None;
        let State { log, lost, .. } = state;
        lost.lose(log, reason);
        self.known_ids().clear();
        self.uncommitted.store(false, Ordering::Release);
    }

    /// The open batch is committed: durable, and nothing to replay.
    fn committed(&self, state: &mut State) {
        state.open = false;
        state.since = None;
        state.batch += 1;
        state.locks.clear();
        state.journal.clear();
        state.in_doubt = None;
        state.log.clear();
        self.uncommitted.store(!state.markers.is_empty(), Ordering::Release);
    }

    /// Writes the markers and commits the batch, if any; through an outage
    /// within the retry window. A failed commit loses the batch's runs.
    async fn commit(&self, state: &mut State) -> PgResult<()> {
        retrying!(
            self,
            state,
            async {
                if !state.markers.is_empty() {
                    match state.conn.clone() {
                        // Markers are only added with a connection.
                        None => state.markers.clear(),
                        Some(c) => {
                            if !state.open {
                                if let Err(e) = c.batch_execute("BEGIN").await {
                                    return Err(self.lose(state, e).await);
                                }
                                state.open = true;
                            }
                            self.write_markers(state).await?;
                        }
                    }
                }
                state.since = None;
                if !state.open {
                    self.uncommitted.store(false, Ordering::Release);
                    return Ok(());
                }
                self.commit_with(state, None).await.map(|_| ())
            }
            .await
        )
    }

    /// Sends `last` (when given) and `COMMIT` together, one round trip, and
    /// returns what `last` returned. The batch must be open.
    ///
    /// Cut off by an outage, the transaction is asked about on the next
    /// connection: committed, or to be replayed and the caller's attempt
    /// made again ([`Batcher::retrying`]).
    async fn commit_with(&self, state: &mut State, last: Option<&Ops<'_>>) -> PgResult<Vec<i64>> {
        state.since = None;
        let c = state.conn();
        let pending = Self::acknowledge(state.take_pending());
        // Its id, asked for in the same round trip: how to find out, should
        // the answer to COMMIT be lost, whether it committed. (An answer
        // comes before the next statement runs, so without the id, the
        // COMMIT did not run.)
        let xid = c.query_one("SELECT txid_current()", &[]);
        let ran = async {
            match last {
                None => Ok(Vec::new()),
                Some(ops) => run_ops(&c, ops).await,
            }
        };
        // If anything before it failed, PostgreSQL takes this COMMIT as a ROLLBACK.
        let (acknowledged, xid, ran, committed) =
            futures::future::join4(pending, xid, ran, c.batch_execute("COMMIT")).await;
        let failed = match (acknowledged, ran, committed) {
            (Ok(()), Ok(values), Ok(())) => {
                self.committed(state);
                return Ok(values);
            }
            (Err(e), _, _) | (Ok(()), Err(e), _) | (Ok(()), Ok(_), Err(e)) => e,
        };
        if retry::transient(&failed) {
            state.in_doubt = xid.ok().and_then(|row| row.try_get::<_, i64>(0).ok());
            return Err(self.lose(state, failed).await);
        }
        let reason = message(pg_error(&self.location, &failed));
        Err(self.lose_because(state, format!("committing them failed: {reason}")).await)
    }

    /// Commits if the window has passed.
    async fn commit_if_due(&self, state: &mut State) -> PgResult<()> {
        if state.since.is_some_and(|t| t.elapsed() >= self.window) {
            self.commit(state).await?;
        }
        Ok(())
    }

    /// Checks that what `w` refers to exists (unless known: one round trip
    /// otherwise), and takes the version locks of its new artifact names
    /// (one round trip, once per batch). A lock another process holds is
    /// waited for only once this batch is committed (see the module's
    /// documentation).
    async fn prepare_write(
        self: &Arc<Self>,
        store: &PostgresMetadataStore,
        state: &mut State,
        w: &StepRunWrite,
    ) -> PgResult<()> {
        let unknown: Vec<Reference<'_>> = {
            let known = self.known_ids();
            let mut seen = HashSet::new();
            references(w)
                .filter(|r| !(r.may_skip() && known.contains(r.exists_query().1)) && seen.insert(r.exists_query().1))
                .collect()
        };
        let mut names: Vec<String> = w.new_outputs.iter().map(|a| version_lock(&a.name)).collect();
        names.sort_unstable();
        names.dedup();
        if !unknown.is_empty() {
            let c = state.conn();
            let runs: Vec<&str> =
                unknown.iter().filter(|r| matches!(r, Reference::Run(_))).map(|r| r.exists_query().1).collect();
            let artifacts: Vec<&str> =
                unknown.iter().filter(|r| !matches!(r, Reference::Run(_))).map(|r| r.exists_query().1).collect();
            let sent = futures::future::try_join(
                each::<bool>(&c, q::RUN_EXISTS, &runs),
                each::<bool>(&c, ARTIFACT_EXISTS_LOCKED, &artifacts),
            )
            .await;
            let (runs_exist, artifacts_exist) = match sent {
                Ok(v) => v,
                Err(e) => return Err(self.lose(state, e).await),
            };
            for (id, exists) in runs.iter().zip(&runs_exist).chain(artifacts.iter().zip(&artifacts_exist)) {
                if !exists {
                    let r = unknown.iter().find(|r| r.exists_query().1 == *id).copied().unwrap_or(Reference::Run(id));
                    return Err(r.missing(w));
                }
            }
            self.known(runs.iter().chain(&artifacts).copied());
        }
        self.lock(store, state, &names).await
    }

    /// Takes the locks `names` (sorted) in the open batch: tried first; if
    /// another process holds one, the batch is committed, so as to wait
    /// holding nothing, and then every name is waited for, in order.
    async fn lock(
        self: &Arc<Self>,
        store: &PostgresMetadataStore,
        state: &mut State,
        names: &[String],
    ) -> PgResult<()> {
        let unlocked: Vec<&str> = names.iter().map(String::as_str).filter(|n| !state.locks.contains(*n)).collect();
        if unlocked.is_empty() {
            return Ok(());
        }
        let c = state.conn();
        let locked = match each::<bool>(&c, TRY_LOCK, &unlocked).await {
            Ok(v) => v,
            Err(e) => return Err(self.lose(state, e).await),
        };
        for (name, got) in unlocked.iter().zip(&locked) {
            if *got {
                state.locks.insert(name.to_string());
            }
        }
        if locked.iter().all(|got| *got) {
            return Ok(());
        }
        self.wait_for_locks(store, state, names).await
    }

    /// Commits the batch and waits for `names` (sorted) in a new one.
    async fn wait_for_locks(
        self: &Arc<Self>,
        store: &PostgresMetadataStore,
        state: &mut State,
        names: &[String],
    ) -> PgResult<()> {
        self.commit(state).await?;
        self.open(store, state).await?;
        let c = state.conn();
        for name in names {
            if let Err(e) = c.query_one(LOCK, &[name as &(dyn tokio_postgres::types::ToSql + Sync)]).await {
                return Err(self.lose(state, e).await);
            }
            state.locks.insert(name.to_string());
        }
        Ok(())
    }

    /// The batch's state, locked.
    pub(super) async fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().await
    }

    /// The start of an attempt at a registry operation (or a deletion): the
    /// batch open, under the advisory lock `lock` (the model's, for the
    /// registry); its connection. `None` with the
    /// outcome when an earlier attempt's commit, unanswered, turned out to
    /// have gone through (`in_doubt`).
    pub(super) async fn begin_registry<T>(
        self: &Arc<Self>,
        store: &PostgresMetadataStore,
        state: &mut State,
        lock: &str,
        in_doubt: &mut Option<(u64, T)>,
    ) -> PgResult<Result<Arc<Object>, T>> {
        if let Some((batch, outcome)) = in_doubt.take() {
            if state.batch > batch {
                return Ok(Err(outcome));
            }
        }
        self.open(store, state).await?;
        self.lock(store, state, &[lock.to_string()]).await?;
        Ok(Ok(state.conn()))
    }

    /// The end of an attempt at a registry operation, whose statements
    /// gave `outcome` (or failed, `failed`): committed at once, so durable
    /// and visible to others when it returns. A commit cut off by an outage
    /// leaves the outcome `in_doubt`, for the next attempt to return if it
    /// went through.
    pub(super) async fn end_registry<T>(
        &self,
        state: &mut State,
        failed: Option<tokio_postgres::Error>,
        outcome: T,
        in_doubt: &mut Option<(u64, T)>,
    ) -> PgResult<T> {
        if let Some(e) = failed {
            return Err(self.lose(state, e).await);
        }
        let batch = state.batch;
        match self.commit_with(state, None).await {
            Ok(_) => Ok(outcome),
            Err(e) => {
                *in_doubt = Some((batch, outcome));
                Err(e)
            }
        }
    }

    pub(super) async fn write_step_run(
        self: &Arc<Self>,
        store: &PostgresMetadataStore,
        w: &StepRunWrite,
    ) -> PgResult<Vec<OutputLink>> {
        if w.step_run.status == StepStatus::Running {
            // Written only if the step is still running when its batch
            // commits (or something reads first).
            let mut guard = self.state.lock().await;
            let state: &mut State = &mut guard;
            state.lost.check(&w.step_run.run_id, &self.location)?;
            retrying!(self, state, self.connect(store, state).await)?;
            state.markers.insert(w.step_run.id.clone(), w.clone());
            self.dirty(state);
            return Ok(w.step_run.outputs.clone());
        }
        let prepared = Prepared::new(w)?;
        let ops = Ops::step_run(w, &prepared, Dialect::Postgres);
        let mut guard = self.state.lock().await;
        let state: &mut State = &mut guard;
        state.lost.check(&w.step_run.run_id, &self.location)?;
        state.markers.remove(&w.step_run.id);
        let outputs = retrying!(
            self,
            state,
            async {
                self.open(store, state).await?;
                self.prepare_write(store, state, w).await?;
                let versions = if w.new_outputs.is_empty() {
                    // Nothing for the database to assign: no need to wait.
                    self.send(state, &ops).await.map(|()| Vec::new())
                } else {
                    let c = state.conn();
                    run_ops(&c, &ops).await.inspect(|v| state.journal.push(Entry::of(&ops, combine(&ops), v)))
                };
                match versions {
                    Ok(v) => Ok(prepared.outputs(w, &v)),
                    Err(e) => Err(self.lose(state, e).await),
                }
            }
            .await
        )?;
        state.log.wrote(&w.step_run);
        self.known(outputs.iter().map(|o| o.artifact.id.as_str()));
        self.commit_if_due(state).await?;
        Ok(outputs)
    }

    pub(super) async fn create_run(
        self: &Arc<Self>,
        store: &PostgresMetadataStore,
        run: &NewRun,
    ) -> PgResult<RunRecord> {
        let config = serde_json::to_string(&run.plan.config).map_err(crate::metadata::sql::corrupt)?;
        let plan = run.plan.to_json_compact();
        let row = RunRow::new(run, &config, &plan);
        let mut ops = Ops::default();
        ops.push(q::CREATE_PIPELINE, Returns::Count, &[(&run.pipeline).into(), run.started_at.into()]);
        ops.push(q::CREATE_RUN, Returns::Count, &row.create_params(run.status.as_str()));
        let mut guard = self.state.lock().await;
        let state: &mut State = &mut guard;
        let (new_pipeline, inserted) = retrying!(
            self,
            state,
            async {
                self.open(store, state).await?;
                let c = state.conn();
                match run_ops(&c, &ops).await {
                    Ok(counts) => {
                        state.journal.push(Entry::of(&ops, combine(&ops), &counts));
                        Ok((counts[0], counts[1]))
                    }
                    Err(e) => Err(self.lose(state, e).await),
                }
            }
            .await
        )?;
        if inserted == 1 {
            state.log.created(row.clone());
            self.known(std::iter::once(run.id.as_str()));
        }
        // A planned run is for other processes to pick up; a new pipeline's
        // row must not stay locked while this batch waits for anything.
        if run.status == RunStatus::Pending || new_pipeline == 1 {
            self.commit(state).await?;
        } else {
            self.commit_if_due(state).await?;
        }
        if inserted == 0 {
            return Err(MetadataError::RunNameTaken(run.name.clone()));
        }
        Ok(run.to_record(plan))
    }

    pub(super) async fn set_run_status(
        self: &Arc<Self>,
        store: &PostgresMetadataStore,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
        ended_at: Option<Timestamp>,
    ) -> PgResult<()> {
        let mut guard = self.state.lock().await;
        let state: &mut State = &mut guard;
        if let Some(lost) = state.lost.take(run_id) {
            return self.record_loss(store, state, run_id, lost).await;
        }
        let changed = retrying!(
            self,
            state,
            async {
                self.open(store, state).await?;
                self.write_markers(state).await?;
                state.log.touched(run_id);
                let now = now();
                let beat = (status == RunStatus::Running).then_some(now);
                let mut ops = Ops::default();
                ops.push(
                    SET_RUN_STATUS_DB_CLOCK,
                    Returns::Count,
                    &[status.as_str().into(), error.into(), ended_at.into(), beat.into(), run_id.into()],
                );
                if matches!(status, RunStatus::Completed | RunStatus::Failed) {
                    ops.push(q::CLOSE_RUNNING_STEPS, Returns::Nothing, &[now.into(), run_id.into()]);
                }
                // The end of a run is the commit that makes all of it durable.
                self.commit_with(state, Some(&ops)).await
            }
            .await
        )?;
        if changed.first().copied().unwrap_or(0) == 0 {
            return Err(MetadataError::NotFound(format!("run `{run_id}`")));
        }
        Ok(())
    }

    /// Records that run `run_id` lost records (`lost`): it is failed,
    /// whatever its caller thought, and so are the steps whose records were
    /// lost. Returns the loss as the error.
    async fn record_loss(
        self: &Arc<Self>,
        store: &PostgresMetadataStore,
        state: &mut State,
        run_id: &str,
        lost: LostRun,
    ) -> PgResult<()> {
        let error = lost.error(&self.location);
        let message = match &error {
            MetadataError::Backend { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let now = now();
        let recorded = async {
            retrying!(
                self,
                state,
                async {
                    self.open(store, state).await?;
                    let c = state.conn();
                    if let Err(e) = run_ops(&c, &lost.recovery(run_id, &message, &now)).await {
                        return Err(self.lose(state, e).await);
                    }
                    self.commit_with(state, None).await.map(drop)
                }
                .await
            )
        }
        .await;
        if let Err(e) = recorded {
            state.lost.restore(run_id, lost);
            return Err(e);
        }
        Err(error)
    }

    pub(super) async fn fail_stale_runs(
        self: &Arc<Self>,
        store: &PostgresMetadataStore,
        stale_after: std::time::Duration,
    ) -> PgResult<Vec<String>> {
        let mut guard = self.state.lock().await;
        let state: &mut State = &mut guard;
        let ids = retrying!(self, state, self.fail_stale_once(store, state, stale_after).await)?;
        if ids.is_empty() {
            self.commit_if_due(state).await?;
        } else {
            // Others should see at once that these runs are over.
            self.commit(state).await?;
        }
        Ok(ids)
    }

    /// Marks runs failed that gave no sign of life for `stale_after`, by the
    /// server's clock, and their running steps with them; journaled.
    async fn fail_stale_once(
        self: &Arc<Self>,
        store: &PostgresMetadataStore,
        state: &mut State,
        stale_after: std::time::Duration,
    ) -> PgResult<Vec<String>> {
        self.open(store, state).await?;
        let now = now();
        let c = state.conn();
        let found = async {
            let db_now = query(&c, DB_NOW_QUERY, &[], |r| r.int(0)).await?.first().copied().unwrap_or(now);
            let before = db_now.saturating_sub(i64::try_from(stale_after.as_micros()).unwrap_or(i64::MAX));
            let params = [Value::from(STALE_ERROR), now.into(), before.into()];
            let ids = query(&c, q::FAIL_STALE_RUNS, &params, |r| r.text(0)).await?;
            let mut entries = vec![Entry::statement(q::FAIL_STALE_RUNS, &params)];
            let stmt = c.prepare_cached(q::FAIL_STALE_STEPS).await?;
            let (c, stmt) = (&c, &stmt);
            let steps: Vec<[Value<'_>; 3]> =
                ids.iter().map(|id| [DEAD_STEP_ERROR.into(), now.into(), id.into()]).collect();
            futures::future::try_join_all(steps.iter().map(|p| async move { c.execute(stmt, &bind(p)).await })).await?;
            entries.extend(steps.iter().map(|p| Entry::statement(q::FAIL_STALE_STEPS, p)));
            Ok::<_, Failure>((ids, entries))
        }
        .await;
        match found {
            Ok((ids, entries)) => {
                if !ids.is_empty() {
                    state.journal.extend(entries);
                }
                Ok(ids)
            }
            Err(Failure::Store(e)) => Err(e),
            Err(Failure::Pg(e)) => Err(self.lose(state, e).await),
        }
    }

    pub(super) async fn flush(self: &Arc<Self>, _store: &PostgresMetadataStore) -> PgResult<()> {
        let mut guard = self.state.lock().await;
        let state: &mut State = &mut guard;
        self.commit(state).await
    }
}

/// Runs the `journal` again on `c`, in one round trip: `Some` with the
/// reason when a statement gave another version number than it gave the
/// first time (another process took it while the database was away).
async fn replay(c: &Object, journal: &[Entry]) -> Result<Option<String>, tokio_postgres::Error> {
    let statements = futures::future::try_join_all(journal.iter().map(|e| c.prepare_cached(&e.sql))).await?;
    let returned = futures::future::try_join_all(journal.iter().zip(&statements).map(|(e, stmt)| async move {
        let values: Vec<Value<'_>> = e.params.iter().map(Owned::as_value).collect();
        if e.versions.is_empty() {
            c.execute(stmt, &bind(&values)).await.map(|_| Vec::new())
        } else {
            let row = c.query_one(stmt, &bind(&values)).await?;
            (0..e.versions.len()).map(|i| row.try_get::<_, i64>(i)).collect()
        }
    }))
    .await?;
    for (e, got) in journal.iter().zip(returned) {
        if e.versions.iter().zip(&got).any(|(want, got)| want.is_some_and(|w| w != *got)) {
            return Ok(Some(
                "while the database was away, another process took the version numbers this batch had \
                 given its artifacts"
                    .into(),
            ));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_renumbered() {
        assert_eq!(super::renumber("VALUES ($1, $2, $1) WHERE x = $10", 3), "VALUES ($4, $5, $4) WHERE x = $13");
        assert_eq!(super::renumber("no parameters", 7), "no parameters");
    }

    #[test]
    fn version_locks_are_per_pipeline() {
        assert_eq!(super::version_lock("training.train_2.output"), "zenflow.versions.training");
        assert_eq!(super::version_lock("my.dotted.pipeline.load.train"), "zenflow.versions.my.dotted.pipeline");
        assert_eq!(super::version_lock("odd"), "zenflow.versions.odd");
        assert_ne!(super::model_lock("training"), super::version_lock("training.a.b"));
    }
}
