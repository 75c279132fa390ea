//! The PostgreSQL metadata store, for stacks shared by CI jobs and workers.
//!
//! The schema and its migrations are the SQLite store's (one history for
//! both). Connections come from a pool sized for parallel steps; the schema
//! is checked and migrated on first use, under an advisory lock, so a process
//! that starts while another migrates waits for it instead of racing it.

use super::migrations::{latest, MIGRATIONS};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::OnceCell;
use tokio_postgres::{NoTls, Row, Transaction};
use zenflow_core::metadata::*;
use zenflow_core::{Check, CheckStatus, ContentHash};

/// Key of the advisory lock that serialises migrations ("ZFLW").
const MIGRATION_LOCK: i64 = 0x5A46_4C57;

/// The PostgreSQL implementation of [`MetadataStore`].
pub struct PostgresMetadataStore {
    pool: Pool,
    location: String,
    ready: OnceCell<()>,
    tls: super::postgres_tls::TlsSettings,
    /// Whether any connection started a TLS handshake.
    tls_used: Arc<AtomicBool>,
    /// Whether the plaintext warning was given.
    warned: AtomicBool,
}

impl std::fmt::Debug for PostgresMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresMetadataStore").field("location", &self.location).finish()
    }
}

type PgResult<T> = Result<T, MetadataError>;

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
        let tls = super::postgres_tls::settings(url).map_err(backend)?;
        let config: tokio_postgres::Config =
            tls.url.parse().map_err(|e: tokio_postgres::Error| backend(format!("not a valid PostgreSQL URL: {e}")))?;
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let tls_used = Arc::new(AtomicBool::new(false));
        let manager = match super::postgres_tls::client_config(&tls).map_err(backend)? {
            None => Manager::from_config(config, NoTls, manager_config),
            Some(rustls) => Manager::from_config(
                config,
                super::postgres_tls::Observed {
                    inner: tokio_postgres_rustls::MakeRustlsConnect::new(rustls),
                    used: tls_used.clone(),
                },
                manager_config,
            ),
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let pool = Pool::builder(manager)
            .max_size(pool_size.unwrap_or((2 * cores).max(4)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(60)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(|e| MetadataError::Backend { location: location.clone(), message: e.to_string() })?;
        Ok(PostgresMetadataStore { pool, location, ready: OnceCell::new(), tls, tls_used, warned: AtomicBool::new(false) })
    }

    fn err(&self, e: impl std::fmt::Display) -> MetadataError {
        MetadataError::Backend { location: self.location.clone(), message: e.to_string() }
    }

    fn pg(&self, e: tokio_postgres::Error) -> MetadataError {
        // The database's own message (e.g. "password authentication failed").
        let message = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => {
                let mut m = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    m.push_str(&format!(": {s}"));
                    source = s.source();
                }
                m
            }
        };
        MetadataError::Backend { location: self.location.clone(), message }
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

    /// A pooled connection to a database with the current schema.
    async fn client(&self) -> PgResult<Object> {
        let mut client = self.pool.get().await.map_err(|e| self.connect_error(e))?;
        if !self.warned.load(Ordering::Relaxed) {
            let used = self.tls_used.load(Ordering::Relaxed);
            if let Some(warning) = super::postgres_tls::plaintext_warning(&self.tls, used) {
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

    /// Whether schema `version` is current; an error when it is newer than
    /// this build.
    fn check_version(&self, version: i64) -> PgResult<bool> {
        if version > latest() {
            return Err(MetadataError::NewerSchema {
                location: self.location.clone(),
                found: version,
                supported: latest(),
            });
        }
        Ok(version == latest())
    }

    async fn migrate(&self, client: &mut Object) -> PgResult<()> {
        let tables: Vec<String> = client
            .query(
                "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = current_schema() \
                 ORDER BY table_name",
                &[],
            )
            .await
            .map_err(|e| self.pg(e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !tables.is_empty() && !tables.iter().any(|t| t == "zenflow_schema") {
            let mut shown = tables.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            if tables.len() > 5 {
                shown.push_str(", ...");
            }
            return Err(MetadataError::NotZenflow {
                location: self.location.clone(),
                detail: format!("its schema holds other tables: {shown}"),
            });
        }
        if tables.iter().any(|t| t == "zenflow_schema") {
            // The common case: read-only, so a role without DDL rights works.
            let version: i64 = client
                .query_one("SELECT COALESCE(MAX(version), 0) FROM zenflow_schema", &[])
                .await
                .map_err(|e| self.pg(e))?
                .get(0);
            if self.check_version(version)? {
                return Ok(());
            }
        }
        let tx = client.transaction().await.map_err(|e| self.pg(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(|e| self.pg(e))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS zenflow_schema (version BIGINT NOT NULL)")
            .await
            .map_err(|e| self.pg(e))?;
        let version: i64 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM zenflow_schema", &[])
            .await
            .map_err(|e| self.pg(e))?
            .get(0);
        self.check_version(version)?;
        for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > version) {
            tx.batch_execute(sql).await.map_err(|e| self.err(format!("schema migration {v} failed: {e}")))?;
        }
        tx.execute("DELETE FROM zenflow_schema", &[]).await.map_err(|e| self.pg(e))?;
        tx.execute("INSERT INTO zenflow_schema (version) VALUES ($1)", &[&latest()]).await.map_err(|e| self.pg(e))?;
        tx.commit().await.map_err(|e| self.pg(e))
    }
}

const RUN_COLS: &str = "id, pipeline, name, status, stack, config, plan, git_commit, started_at, ended_at, error";
const AV_COLS: &str = "av.id, av.name, av.version, av.uri, av.content_hash, av.type_name, av.materializer, \
                       av.materializer_version, av.format, av.metadata, av.producer_step_run, av.run_id, av.created_at, \
                       av.inline_bytes";
const SR_COLS: &str = "sr.id, sr.run_id, sr.invocation, sr.step, sr.status, sr.cache_key, sr.original_step_run, \
                       sr.started_at, sr.ended_at, sr.error, sr.attempts, sr.logs";

fn corrupt(e: impl std::fmt::Display) -> MetadataError {
    MetadataError::Corrupt(e.to_string())
}

fn run_row(r: &Row) -> PgResult<RunRecord> {
    Ok(RunRecord {
        id: r.get(0),
        pipeline: r.get(1),
        name: r.get(2),
        status: RunStatus::parse(r.get(3))?,
        stack: r.get(4),
        config: serde_json::from_str(r.get(5)).map_err(corrupt)?,
        plan_json: r.get(6),
        git_commit: r.get(7),
        started_at: r.get(8),
        ended_at: r.get(9),
        error: r.get(10),
    })
}

fn av_row(r: &Row, at: usize) -> PgResult<ArtifactVersion> {
    Ok(ArtifactVersion {
        id: r.get(at),
        name: r.get(at + 1),
        version: r.get(at + 2),
        uri: r.get(at + 3),
        content_hash: ContentHash::from_hex(r.get(at + 4)).map_err(corrupt)?,
        type_name: r.get(at + 5),
        materializer: r.get(at + 6),
        materializer_version: r.get::<_, i32>(at + 7) as u32,
        format: r.get(at + 8),
        metadata: serde_json::from_str(r.get(at + 9)).map_err(corrupt)?,
        producer_step_run: r.get(at + 10),
        run_id: r.get(at + 11),
        created_at: r.get(at + 12),
        inline: r.get::<_, Option<Vec<u8>>>(at + 13).map(bytes::Bytes::from),
    })
}

fn sr_row(r: &Row) -> PgResult<StepRunRecord> {
    Ok(StepRunRecord {
        id: r.get(0),
        run_id: r.get(1),
        invocation: r.get(2),
        step: r.get(3),
        status: StepStatus::parse(r.get(4))?,
        cache_key: r.get(5),
        original_step_run: r.get(6),
        started_at: r.get(7),
        ended_at: r.get(8),
        error: r.get(9),
        attempts: r.get::<_, i32>(10) as u32,
        logs: serde_json::from_str(r.get(11)).map_err(corrupt)?,
        metadata: BTreeMap::new(),
        checks: Vec::new(),
        outputs: Vec::new(),
        inputs: Vec::new(),
    })
}

impl PostgresMetadataStore {
    /// Step runs matching `filter` (a condition on `sr` with `$1` bound to `arg`).
    async fn load_step_runs(&self, c: &Object, filter: &str, arg: &str) -> PgResult<Vec<StepRunRecord>> {
        let rows = c
            .query(&format!("SELECT {SR_COLS} FROM step_runs sr WHERE {filter} ORDER BY sr.started_at, sr.id"), &[&arg])
            .await
            .map_err(|e| self.pg(e))?;
        let mut runs = rows.iter().map(sr_row).collect::<PgResult<Vec<_>>>()?;
        if runs.is_empty() {
            return Ok(runs);
        }
        let pos: HashMap<String, usize> = runs.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
        let rows = c
            .query(
                &format!(
                    "SELECT o.step_run_id, o.output, {AV_COLS} FROM step_run_outputs o \
                     JOIN artifact_versions av ON av.id = o.artifact_version_id \
                     JOIN step_runs sr ON sr.id = o.step_run_id WHERE {filter} ORDER BY o.step_run_id, o.position"
                ),
                &[&arg],
            )
            .await
            .map_err(|e| self.pg(e))?;
        for row in &rows {
            if let Some(&i) = pos.get(row.get::<_, &str>(0)) {
                runs[i].outputs.push(OutputLink { output: row.get(1), artifact: av_row(row, 2)? });
            }
        }
        let rows = c
            .query(
                &format!(
                    "SELECT i.step_run_id, i.input, i.position, i.artifact_version_id FROM step_run_inputs i \
                     JOIN step_runs sr ON sr.id = i.step_run_id WHERE {filter} ORDER BY i.step_run_id, i.input, i.position"
                ),
                &[&arg],
            )
            .await
            .map_err(|e| self.pg(e))?;
        for row in &rows {
            if let Some(&i) = pos.get(row.get::<_, &str>(0)) {
                runs[i].inputs.push(InputLink {
                    input: row.get(1),
                    position: row.get::<_, i32>(2) as u32,
                    artifact_version: row.get(3),
                });
            }
        }
        let rows = c
            .query(
                &format!(
                    "SELECT m.step_run_id, m.key, m.value FROM run_metadata m \
                     JOIN step_runs sr ON sr.id = m.step_run_id WHERE {filter}"
                ),
                &[&arg],
            )
            .await
            .map_err(|e| self.pg(e))?;
        for row in &rows {
            if let Some(&i) = pos.get(row.get::<_, &str>(0)) {
                runs[i].metadata.insert(row.get(1), serde_json::from_str(row.get(2)).map_err(corrupt)?);
            }
        }
        let rows = c
            .query(
                &format!(
                    "SELECT c.step_run_id, c.name, c.status, c.value, c.threshold, c.message FROM checks c \
                     JOIN step_runs sr ON sr.id = c.step_run_id WHERE {filter} ORDER BY c.step_run_id, c.position"
                ),
                &[&arg],
            )
            .await
            .map_err(|e| self.pg(e))?;
        for row in &rows {
            if let Some(&i) = pos.get(row.get::<_, &str>(0)) {
                let status: &str = row.get(2);
                runs[i].checks.push(Check {
                    name: row.get(1),
                    status: CheckStatus::parse(status)
                        .ok_or_else(|| corrupt(format!("unknown check status `{status}`")))?,
                    value: row.get(3),
                    threshold: row.get(4),
                    message: row.get(5),
                });
            }
        }
        Ok(runs)
    }

    async fn write(
        &self,
        tx: &Transaction<'_>,
        write: &StepRunWrite,
    ) -> Result<Vec<OutputLink>, tokio_postgres::Error> {
        let w = &write.step_run;
        let logs = serde_json::to_string(&w.logs).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "INSERT INTO step_runs (id, run_id, invocation, step, status, cache_key, original_step_run, \
             started_at, ended_at, error, attempts, logs) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, cache_key = excluded.cache_key, \
             original_step_run = excluded.original_step_run, ended_at = excluded.ended_at, \
             error = excluded.error, attempts = excluded.attempts, logs = excluded.logs",
            &[
                &w.id,
                &w.run_id,
                &w.invocation,
                &w.step,
                &w.status.as_str(),
                &w.cache_key,
                &w.original_step_run,
                &w.started_at,
                &w.ended_at,
                &w.error,
                &(w.attempts as i32),
                &logs,
            ],
        )
        .await?;
        let now = now();
        let mut outputs = Vec::with_capacity(write.new_outputs.len() + w.outputs.len());
        for (position, a) in write.new_outputs.iter().enumerate() {
            // Version numbers per artifact name: writers of the same name queue here.
            tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&a.name]).await?;
            let version: i64 = tx
                .query_one("SELECT COALESCE(MAX(version), 0) + 1 FROM artifact_versions WHERE name = $1", &[&a.name])
                .await?
                .get(0);
            let id = new_id();
            let metadata = serde_json::to_string(&a.metadata).unwrap_or_else(|_| "{}".into());
            tx.execute(
                "INSERT INTO artifact_versions (id, name, version, uri, content_hash, type_name, materializer, \
                 materializer_version, format, metadata, producer_step_run, run_id, created_at, inline_bytes) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                &[
                    &id,
                    &a.name,
                    &version,
                    &a.uri,
                    &a.content_hash.to_hex(),
                    &a.type_name,
                    &a.materializer,
                    &(a.materializer_version as i32),
                    &a.format,
                    &metadata,
                    &w.id,
                    &w.run_id,
                    &now,
                    &a.inline.as_deref(),
                ],
            )
            .await?;
            tx.execute(
                "INSERT INTO step_run_outputs (step_run_id, output, position, artifact_version_id) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&w.id, &a.output, &(position as i32), &id],
            )
            .await?;
            outputs.push(OutputLink {
                output: a.output.clone(),
                artifact: a.to_version(id, version, &w.id, &w.run_id, now),
            });
        }
        for (position, link) in w.outputs.iter().enumerate() {
            tx.execute(
                "INSERT INTO step_run_outputs (step_run_id, output, position, artifact_version_id) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&w.id, &link.output, &(position as i32), &link.artifact.id],
            )
            .await?;
            outputs.push(link.clone());
        }
        for i in &w.inputs {
            tx.execute(
                "INSERT INTO step_run_inputs (step_run_id, input, position, artifact_version_id) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&w.id, &i.input, &(i.position as i32), &i.artifact_version],
            )
            .await?;
        }
        for (key, value) in &w.metadata {
            tx.execute(
                "INSERT INTO run_metadata (run_id, step_run_id, key, value) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (step_run_id, key) DO UPDATE SET value = excluded.value",
                &[&w.run_id, &w.id, key, &value.to_string()],
            )
            .await?;
        }
        for (position, c) in w.checks.iter().enumerate() {
            tx.execute(
                "INSERT INTO checks (step_run_id, run_id, position, name, status, value, threshold, message) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (step_run_id, name) DO UPDATE SET \
                 position = excluded.position, status = excluded.status, value = excluded.value, \
                 threshold = excluded.threshold, message = excluded.message",
                &[
                    &w.id,
                    &w.run_id,
                    &(position as i32),
                    &c.name,
                    &c.status.as_str(),
                    &c.value,
                    &c.threshold,
                    &c.message,
                ],
            )
            .await?;
        }
        Ok(outputs)
    }
}

#[async_trait]
impl MetadataStore for PostgresMetadataStore {
    fn url(&self) -> String {
        self.location.clone()
    }

    async fn create_run(&self, run: &NewRun) -> PgResult<RunRecord> {
        let config = serde_json::to_string(&run.plan.config).map_err(corrupt)?;
        let plan = run.plan.to_json_compact();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.pg(e))?;
        tx.execute(
            "INSERT INTO pipelines (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&run.pipeline, &run.started_at],
        )
        .await
        .map_err(|e| self.pg(e))?;
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO runs ({RUN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL) \
                     ON CONFLICT (name) DO NOTHING"
                ),
                &[
                    &run.id,
                    &run.pipeline,
                    &run.name,
                    &run.status.as_str(),
                    &run.stack,
                    &config,
                    &plan,
                    &run.git_commit,
                    &run.started_at,
                ],
            )
            .await
            .map_err(|e| self.pg(e))?;
        if inserted == 0 {
            return Err(MetadataError::RunNameTaken(run.name.clone()));
        }
        tx.commit().await.map_err(|e| self.pg(e))?;
        Ok(run.to_record(plan))
    }

    async fn set_run_status(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
        ended_at: Option<Timestamp>,
    ) -> PgResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.pg(e))?;
        let now = now();
        let beat = (status == RunStatus::Running).then_some(now);
        let changed = tx
            .execute(
                "UPDATE runs SET status = $2, error = $3, ended_at = $4, heartbeat_at = COALESCE($5, heartbeat_at) \
                 WHERE id = $1",
                &[&run_id, &status.as_str(), &error, &ended_at, &beat],
            )
            .await
            .map_err(|e| self.pg(e))?;
        if matches!(status, RunStatus::Completed | RunStatus::Failed) {
            tx.execute(
                "UPDATE step_runs SET status = 'failed', ended_at = $2, \
                 error = COALESCE(error, 'the step''s final record could not be written') \
                 WHERE run_id = $1 AND status = 'running'",
                &[&run_id, &now],
            )
            .await
            .map_err(|e| self.pg(e))?;
        }
        tx.commit().await.map_err(|e| self.pg(e))?;
        if changed == 0 {
            return Err(MetadataError::NotFound(format!("run `{run_id}`")));
        }
        Ok(())
    }

    async fn heartbeat(&self, run_id: &str, at: Timestamp) -> PgResult<()> {
        let c = self.client().await?;
        c.execute("UPDATE runs SET heartbeat_at = $2 WHERE id = $1", &[&run_id, &at]).await.map_err(|e| self.pg(e))?;
        Ok(())
    }

    async fn fail_stale_runs(&self, before: Timestamp) -> PgResult<Vec<String>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.pg(e))?;
        let now = now();
        let ids: Vec<String> = tx
            .query(
                "UPDATE runs SET status = 'failed', error = $2, ended_at = $3 \
                 WHERE status = 'running' AND COALESCE(heartbeat_at, started_at) < $1 RETURNING id",
                &[&before, &STALE_ERROR, &now],
            )
            .await
            .map_err(|e| self.pg(e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for id in &ids {
            tx.execute(
                "UPDATE step_runs SET status = 'failed', error = $2, ended_at = $3 WHERE run_id = $1 AND status = 'running'",
                &[id, &"its run's process stopped while the step was running", &now],
            )
            .await
            .map_err(|e| self.pg(e))?;
        }
        tx.commit().await.map_err(|e| self.pg(e))?;
        Ok(ids)
    }

    async fn write_step_run(&self, write: &StepRunWrite) -> PgResult<Vec<OutputLink>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.pg(e))?;
        let outputs = self.write(&tx, write).await.map_err(|e| self.pg(e))?;
        tx.commit().await.map_err(|e| self.pg(e))?;
        Ok(outputs)
    }

    async fn find_cached(&self, cache_key: &str) -> PgResult<Option<CacheHit>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT id FROM step_runs WHERE cache_key = $1 AND status = 'completed' \
                 ORDER BY ended_at DESC, id DESC LIMIT 1",
                &[&cache_key],
            )
            .await
            .map_err(|e| self.pg(e))?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.get(0);
        let rows = c
            .query(
                &format!(
                    "SELECT o.output, {AV_COLS} FROM step_run_outputs o \
                     JOIN artifact_versions av ON av.id = o.artifact_version_id \
                     WHERE o.step_run_id = $1 ORDER BY o.position"
                ),
                &[&id],
            )
            .await
            .map_err(|e| self.pg(e))?;
        let outputs = rows
            .iter()
            .map(|r| Ok(OutputLink { output: r.get(0), artifact: av_row(r, 1)? }))
            .collect::<PgResult<Vec<_>>>()?;
        Ok(Some(CacheHit { step_run: id, outputs }))
    }

    async fn get_run(&self, id_or_name: &str) -> PgResult<Option<RunRecord>> {
        let c = self.client().await?;
        let row = c
            .query_opt(&format!("SELECT {RUN_COLS} FROM runs WHERE id = $1 OR name = $1 LIMIT 1"), &[&id_or_name])
            .await
            .map_err(|e| self.pg(e))?;
        row.as_ref().map(run_row).transpose()
    }

    async fn list_runs(&self, pipeline: Option<&str>, limit: usize) -> PgResult<Vec<RunRecord>> {
        let c = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = c
            .query(
                &format!(
                    "SELECT {RUN_COLS} FROM runs WHERE ($1::TEXT IS NULL OR pipeline = $1) \
                     ORDER BY started_at DESC, id DESC LIMIT $2"
                ),
                &[&pipeline, &limit],
            )
            .await
            .map_err(|e| self.pg(e))?;
        rows.iter().map(run_row).collect()
    }

    async fn step_runs(&self, run_id: &str) -> PgResult<Vec<StepRunRecord>> {
        let c = self.client().await?;
        self.load_step_runs(&c, "sr.run_id = $1", run_id).await
    }

    async fn step_run(&self, id: &str) -> PgResult<Option<StepRunRecord>> {
        let c = self.client().await?;
        Ok(self.load_step_runs(&c, "sr.id = $1", id).await?.into_iter().next())
    }

    async fn artifact_version(&self, id: &str) -> PgResult<Option<ArtifactVersion>> {
        let c = self.client().await?;
        let row = c
            .query_opt(&format!("SELECT {AV_COLS} FROM artifact_versions av WHERE av.id = $1"), &[&id])
            .await
            .map_err(|e| self.pg(e))?;
        row.as_ref().map(|r| av_row(r, 0)).transpose()
    }

    async fn artifact_versions(&self, name: Option<&str>, limit: usize) -> PgResult<Vec<ArtifactVersion>> {
        let c = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = c
            .query(
                &format!(
                    "SELECT {AV_COLS} FROM artifact_versions av WHERE ($1::TEXT IS NULL OR av.name = $1) \
                     ORDER BY av.created_at DESC, av.version DESC LIMIT $2"
                ),
                &[&name, &limit],
            )
            .await
            .map_err(|e| self.pg(e))?;
        rows.iter().map(|r| av_row(r, 0)).collect()
    }

    async fn lineage(&self, artifact_version: &str) -> PgResult<Lineage> {
        let artifact = self
            .artifact_version(artifact_version)
            .await?
            .ok_or_else(|| MetadataError::NotFound(format!("artifact version `{artifact_version}`")))?;
        let c = self.client().await?;
        let producer = self.load_step_runs(&c, "sr.id = $1", &artifact.producer_step_run).await?.into_iter().next();
        let consumers = self
            .load_step_runs(
                &c,
                "sr.id IN (SELECT step_run_id FROM step_run_inputs WHERE artifact_version_id = $1)",
                artifact_version,
            )
            .await?;
        Ok(Lineage { artifact, producer, consumers })
    }
}
