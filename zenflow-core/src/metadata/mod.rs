//! The metadata store: pipelines, runs, step runs, artifact versions, lineage.
//!
//! One small trait, [`MetadataStore`]; every implementation runs the
//! conformance suite in `zenflow_core::conformance`. Writes that belong
//! together (a finished step run with its outputs, input links and logged
//! metadata) are one call, so an implementation can make them one transaction.

pub(crate) mod error;
pub(crate) mod record;

pub use crate::time::{now, Timestamp};
pub use error::*;
pub use record::*;

use crate::plan::Plan;
use async_trait::async_trait;
use std::fmt;

/// A run about to start.
#[derive(Clone, Debug)]
pub struct NewRun {
    /// Run id (a UUID).
    pub id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Human-readable run name (unique per store).
    pub name: String,
    /// Name of the stack it runs on.
    pub stack: String,
    /// `Running`, or `Pending` for a planned run (`run --pending`).
    pub status: RunStatus,
    /// The plan (its config is the run config).
    pub plan: Plan,
    /// Commit of the project's git checkout, when there is one.
    pub git_commit: Option<String>,
    /// The branch it ran for: CI's, else the checkout's, when known.
    pub git_branch: Option<String>,
    /// The CI job that ran it, when one did.
    pub ci_job_url: Option<String>,
    /// Start time.
    pub started_at: Timestamp,
}

impl NewRun {
    /// The record of this run once a store has created it, with the plan as
    /// the store keeps it.
    pub fn to_record(&self, plan_json: String) -> RunRecord {
        RunRecord {
            id: self.id.clone(),
            pipeline: self.pipeline.clone(),
            name: self.name.clone(),
            status: self.status,
            stack: self.stack.clone(),
            config: self.plan.config.clone(),
            plan_json,
            git_commit: self.git_commit.clone(),
            git_branch: self.git_branch.clone(),
            ci_job_url: self.ci_job_url.clone(),
            started_at: self.started_at,
            ended_at: None,
            error: None,
        }
    }
}

impl RunRecord {
    /// The run's plan.
    pub fn plan(&self) -> Result<Plan, crate::plan::PlanError> {
        Plan::from_json(&self.plan_json)
    }
}

/// Storage of pipelines, runs, step runs, artifact versions and lineage.
#[async_trait]
pub trait MetadataStore: Send + Sync + fmt::Debug + 'static {
    /// The store's URL, e.g. `sqlite:///project/.zenflow/zenflow.db`.
    fn url(&self) -> String;

    /// Records a new run (with the status in `run`), creating its pipeline if needed.
    async fn create_run(&self, run: &NewRun) -> Result<RunRecord, MetadataError>;

    /// Sets a run's status, error and end time (`ended_at` is `None` while
    /// it is not finished). Setting `running` also records a heartbeat;
    /// finishing a run closes its step runs still marked `running` as failed
    /// (a step whose final record could not be written).
    async fn set_run_status(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
        ended_at: Option<Timestamp>,
    ) -> Result<(), MetadataError>;

    /// Records that the process running `run_id` is alive; `at` is this
    /// host's time. A store shared by hosts with a clock of its own (a
    /// database server) records its own time instead, so that the hosts'
    /// clocks need not agree. It may go over a connection of its own (see
    /// [`crate::run::liveness::heartbeat`]), so one sent before the run's creation is
    /// committed ([`MetadataStore::flush`], or the commit window) may not
    /// find the run; heartbeats come every [`HEARTBEAT_INTERVAL`], far
    /// apart from that window.
    async fn heartbeat(&self, run_id: &str, at: Timestamp) -> Result<(), MetadataError>;

    /// Marks runs still `running` whose last sign of life (heartbeat, or
    /// start) is older than `stale_after`, by the store's clock (see
    /// [`MetadataStore::heartbeat`]), as failed, with their `running` step
    /// runs: their process died (killed, crashed, machine lost). Returns the
    /// ids of the runs marked.
    async fn fail_stale_runs(&self, stale_after: std::time::Duration) -> Result<Vec<String>, MetadataError>;

    /// Inserts or replaces a step run together with its outputs, input links
    /// and metadata, atomically. Returns the step run's outputs (new versions
    /// with their assigned ids and version numbers, then linked ones).
    ///
    /// Durability: a store may group writes and commit them together (as a
    /// database's group commit does), but everything written is durable, and
    /// visible to other processes, once [`MetadataStore::set_run_status`] or
    /// [`MetadataStore::flush`] has returned, and a store that groups writes
    /// commits each group within a bounded window on its own (the SQLite
    /// store: 10 ms). A store that cannot commit a group reports it from its
    /// next call.
    async fn write_step_run(&self, write: &StepRunWrite) -> Result<Vec<OutputLink>, MetadataError>;

    /// Makes every earlier write durable and visible to other processes:
    /// what a worker process calls before it exits. A no-op for stores that
    /// commit each write on its own.
    async fn flush(&self) -> Result<(), MetadataError> {
        Ok(())
    }

    /// The latest completed step run with this cache key, if any.
    async fn find_cached(&self, cache_key: &str) -> Result<Option<CacheHit>, MetadataError>;

    /// A run by id, or by name.
    async fn get_run(&self, id_or_name: &str) -> Result<Option<RunRecord>, MetadataError>;

    /// Runs, newest first, optionally of one pipeline.
    async fn list_runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, MetadataError>;

    /// Runs whose id starts with `prefix`, newest first, at most `limit`:
    /// what a person who typed the start of an id means. A prefix holding
    /// anything but lowercase hex digits and dashes ([`is_id_prefix`])
    /// matches nothing. Stores override
    /// it with a query of their own; every store must agree with the default.
    async fn runs_with_id_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<RunRecord>, MetadataError> {
        if !is_id_prefix(prefix) {
            return Ok(Vec::new());
        }
        let all = self.list_runs(None, usize::MAX).await?;
        Ok(all.into_iter().filter(|r| r.id.starts_with(prefix)).take(limit).collect())
    }

    /// The step runs of a run, in the order they started.
    async fn step_runs(&self, run_id: &str) -> Result<Vec<StepRunRecord>, MetadataError>;

    /// The latest record of step `invocation` in run `run_id`, the one that
    /// says what became of it: what [`latest_record`] picks from
    /// [`MetadataStore::step_runs`], without reading the run's other step
    /// runs. Stores override it with a query of their own; every store
    /// must agree with the default.
    async fn latest_step_run(&self, run_id: &str, invocation: &str) -> Result<Option<StepRunRecord>, MetadataError> {
        Ok(latest_record(&self.step_runs(run_id).await?, invocation).cloned())
    }

    /// A step run by id (with its outputs, inputs, metadata and checks).
    async fn step_run(&self, id: &str) -> Result<Option<StepRunRecord>, MetadataError>;

    /// An artifact version by id.
    async fn artifact_version(&self, id: &str) -> Result<Option<ArtifactVersion>, MetadataError>;

    /// Artifact versions, newest first, optionally only those with `name`.
    async fn artifact_versions(&self, name: Option<&str>, limit: usize) -> Result<Vec<ArtifactVersion>, MetadataError>;

    /// Version `version` of the artifact named `name`, or its latest
    /// version when `version` is `None`.
    async fn artifact_version_named(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<ArtifactVersion>, MetadataError>;

    /// Producer and consumers of an artifact version.
    async fn lineage(&self, artifact_version: &str) -> Result<Lineage, MetadataError>;

    /// Deletes run `run_id` (an id), in one transaction: the run leaves
    /// every listing and lookup, and what it alone used goes with it (see
    /// [`Deletion`]). Never an artifact version a model version holds, or
    /// one a remaining run uses. A run still `running` is refused
    /// ([`MetadataError::RunActive`]); an unknown or already deleted one is
    /// [`MetadataError::NotFound`]. With `dry_run`, the deletion is rolled
    /// back: the result says what it would remove, and nothing changes.
    ///
    /// A step run written after the deletion may not link an artifact
    /// version it removed: that write fails with
    /// [`MetadataError::ArtifactGone`], so a cache hit found before the
    /// deletion is never recorded against missing bytes.
    async fn delete_run(&self, run_id: &str, dry_run: bool) -> Result<Deletion, MetadataError>;

    /// The store's identity: the same through every handle on it, and
    /// different for another database. `gc` records it in the artifact
    /// store it collects, and refuses one another metadata store claimed:
    /// objects there may be used by runs this store does not know. Stores
    /// override the default (the store's URL) with an id kept in the store.
    async fn store_id(&self) -> Result<String, MetadataError> {
        Ok(self.url())
    }

    /// How many artifact versions have each content hash: which objects of
    /// an artifact store are still used. Stores override it with a query of
    /// their own; every store must agree with the default.
    async fn content_hashes(&self) -> Result<std::collections::HashMap<crate::ContentHash, u64>, MetadataError> {
        let mut counts = std::collections::HashMap::new();
        for v in self.artifact_versions(None, usize::MAX).await? {
            *counts.entry(v.content_hash).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// The model registry kept in the same database, if this store has one.
    fn registry(&self) -> Option<&dyn crate::registry::ModelRegistry> {
        None
    }
}

/// Whether `text` can start a run id: lowercase hex digits and dashes, as
/// ids are written; nothing a SQL `LIKE` would read as a wildcard or match
/// regardless of case.
pub fn is_id_prefix(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-')
}
