//! The metadata store: pipelines, runs, step runs, artifact versions, lineage.
//!
//! One small trait, [`MetadataStore`]; every implementation runs the
//! conformance suite in `zenflow_core::conformance`. Writes that belong
//! together (a finished step run with its outputs, input links and logged
//! metadata) are one call, so an implementation can make them one transaction.

use crate::hash::ContentHash;
use crate::materializer::ArtifactMetadata;
use crate::plan::Plan;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Microseconds since the Unix epoch.
pub type Timestamp = i64;

/// How often a running run records a heartbeat.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// A running run with no heartbeat for this long is taken for dead.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(180);

/// The error recorded on a run found dead.
pub const STALE_ERROR: &str = "the process running it stopped without finishing (no heartbeat for 3 minutes); \
                               run the pipeline again to resume from cache";

/// The error recorded on the step runs still running in a run found dead.
pub const DEAD_STEP_ERROR: &str = "its run's process stopped while the step was running";

/// A new, time-ordered unique id (UUID v7) for runs, step runs and artifact versions.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

macro_rules! status_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $v),* }

        impl $name {
            /// The lowercase name stored in the database.
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$v => $s),* }
            }

            /// Parses the stored name.
            pub fn parse(s: &str) -> Result<Self, MetadataError> {
                match s {
                    $($s => Ok($name::$v),)*
                    other => Err(MetadataError::Corrupt(format!(
                        "unknown {} `{other}`", stringify!($name)
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum!(
    /// Status of a pipeline run.
    RunStatus {
        /// Planned (`run --dry-run`) but not started; its steps may be run one by one.
        Pending = "pending",
        /// Still running (or its process died; see `runs` for stale runs).
        Running = "running",
        /// Every step completed or came from cache.
        Completed = "completed",
        /// At least one step failed.
        Failed = "failed",
    }
);

status_enum!(
    /// Status of one step in a run.
    StepStatus {
        /// Executing now.
        Running = "running",
        /// Executed and wrote its outputs.
        Completed = "completed",
        /// Failed (its last attempt, unless another one follows).
        Failed = "failed",
        /// Outputs reused from an earlier step run with the same cache key.
        Cached = "cached",
        /// Not run because a step it depends on failed.
        Skipped = "skipped",
    }
);

impl StepStatus {
    /// Completed or served from cache: its outputs exist.
    pub fn is_success(&self) -> bool {
        matches!(self, StepStatus::Completed | StepStatus::Cached)
    }
}

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
    /// `Running`, or `Pending` for a planned run (`run --dry-run`).
    pub status: RunStatus,
    /// The plan (its config is the run config).
    pub plan: Plan,
    /// Commit of the project's git checkout, when there is one.
    pub git_commit: Option<String>,
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
            started_at: self.started_at,
            ended_at: None,
            error: None,
        }
    }
}

/// A recorded run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Run name.
    pub name: String,
    /// Status.
    pub status: RunStatus,
    /// Stack name.
    pub stack: String,
    /// The run configuration.
    pub config: serde_json::Value,
    /// The plan as JSON.
    pub plan_json: String,
    /// Git commit, when known.
    pub git_commit: Option<String>,
    /// Start time.
    pub started_at: Timestamp,
    /// End time, once finished.
    pub ended_at: Option<Timestamp>,
    /// Why it failed.
    pub error: Option<String>,
}

impl RunRecord {
    /// The run's plan.
    pub fn plan(&self) -> Result<Plan, crate::plan::PlanError> {
        Plan::from_json(&self.plan_json)
    }
}

/// A recorded version of an artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactVersion {
    /// Artifact version id.
    pub id: String,
    /// Artifact name: `<pipeline>.<invocation>.<output>`.
    pub name: String,
    /// 1 for the first version with this name, then 2, ...
    pub version: i64,
    /// Where the bytes are.
    pub uri: String,
    /// blake3 of the bytes.
    pub content_hash: ContentHash,
    /// Rust type name.
    pub type_name: String,
    /// Materializer id.
    pub materializer: String,
    /// Materializer version.
    pub materializer_version: u32,
    /// Encoding format.
    pub format: String,
    /// Size, shape, summary...
    pub metadata: ArtifactMetadata,
    /// The step run that produced it.
    pub producer_step_run: String,
    /// The run that produced it.
    pub run_id: String,
    /// When it was recorded.
    pub created_at: Timestamp,
    /// The bytes, for small artifacts kept in the metadata store itself
    /// (one synced write per step instead of two); `None` when they are in
    /// the artifact store.
    #[serde(skip)]
    pub inline: Option<bytes::Bytes>,
}

/// An artifact produced by a step run, to be recorded.
#[derive(Clone, Debug)]
pub struct NewArtifact {
    /// Output name.
    pub output: String,
    /// Artifact name: `<pipeline>.<invocation>.<output>`.
    pub name: String,
    /// Where the bytes are.
    pub uri: String,
    /// blake3 of the bytes.
    pub content_hash: ContentHash,
    /// Rust type name.
    pub type_name: String,
    /// Materializer id.
    pub materializer: String,
    /// Materializer version.
    pub materializer_version: u32,
    /// Encoding format.
    pub format: String,
    /// Size, shape, summary...
    pub metadata: ArtifactMetadata,
    /// The bytes, when the artifact is small enough to live in the record.
    pub inline: Option<bytes::Bytes>,
}

impl NewArtifact {
    /// The version record for this artifact once a store has given it an id
    /// and a version number.
    pub fn to_version(&self, id: String, version: i64, step_run: &str, run_id: &str, at: Timestamp) -> ArtifactVersion {
        ArtifactVersion {
            id,
            name: self.name.clone(),
            version,
            uri: self.uri.clone(),
            content_hash: self.content_hash,
            type_name: self.type_name.clone(),
            materializer: self.materializer.clone(),
            materializer_version: self.materializer_version,
            format: self.format.clone(),
            metadata: self.metadata.clone(),
            producer_step_run: step_run.to_string(),
            run_id: run_id.to_string(),
            created_at: at,
            inline: self.inline.clone(),
        }
    }
}

/// An output of a step run and the artifact version it points at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputLink {
    /// Output name.
    pub output: String,
    /// The version.
    pub artifact: ArtifactVersion,
}

/// An artifact version a step run consumed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputLink {
    /// Input name.
    pub input: String,
    /// Position in a fan-in list (0 for a single input).
    pub position: u32,
    /// Artifact version id.
    pub artifact_version: String,
}

/// The state of a step run to write (insert or replace).
#[derive(Clone, Debug)]
pub struct StepRunWrite {
    /// The step run; its `outputs` are links to existing versions (cache
    /// hits), and its `inputs` the versions it consumed.
    pub step_run: StepRunRecord,
    /// New artifacts produced by this step run.
    pub new_outputs: Vec<NewArtifact>,
}

/// Step-run metadata that marks a failure as permanent: another attempt
/// would fail the same way.
pub const PERMANENT_KEY: &str = "zenflow.permanent";

/// The time from `started` to `ended`, or nothing while it goes on.
fn elapsed(started: Timestamp, ended: Option<Timestamp>) -> Option<std::time::Duration> {
    ended.map(|e| std::time::Duration::from_micros(u64::try_from(e - started).unwrap_or(0)))
}

impl RunRecord {
    /// How long the run took; `None` while it runs.
    pub fn duration(&self) -> Option<std::time::Duration> {
        elapsed(self.started_at, self.ended_at)
    }
}

impl StepRunRecord {
    /// How long the step run took; `None` while it runs.
    pub fn duration(&self) -> Option<std::time::Duration> {
        elapsed(self.started_at, self.ended_at)
    }

    /// Whether it failed for good: another attempt would fail the same way
    /// (the step is not in the binary, its code differs from the plan's).
    pub fn is_permanent_failure(&self) -> bool {
        self.metadata.get(PERMANENT_KEY) == Some(&serde_json::Value::Bool(true))
    }
}

/// The latest record of step `invocation` among `records`, which are in
/// the order the attempts started (as [`MetadataStore::step_runs`] gives
/// them): the one that says what became of the step.
pub fn latest_record<'a>(records: &'a [StepRunRecord], invocation: &str) -> Option<&'a StepRunRecord> {
    records.iter().rev().find(|r| r.invocation == invocation)
}

/// A recorded step run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRunRecord {
    /// Step run id.
    pub id: String,
    /// Run id.
    pub run_id: String,
    /// Invocation id in the plan.
    pub invocation: String,
    /// Registered step name.
    pub step: String,
    /// Status.
    pub status: StepStatus,
    /// Cache key (hex).
    pub cache_key: Option<String>,
    /// For cached step runs: the step run that produced the outputs.
    pub original_step_run: Option<String>,
    /// Start time.
    pub started_at: Timestamp,
    /// End time.
    pub ended_at: Option<Timestamp>,
    /// Error text.
    pub error: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Logged lines.
    pub logs: Vec<String>,
    /// Logged key/value metadata.
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Checks the step recorded.
    #[serde(default)]
    pub checks: Vec<crate::check::Check>,
    /// Outputs in order.
    pub outputs: Vec<OutputLink>,
    /// Consumed artifact versions.
    pub inputs: Vec<InputLink>,
}

/// A completed step run whose outputs can serve a cache hit.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheHit {
    /// The step run that produced the outputs.
    pub step_run: String,
    /// The run it belongs to.
    pub run_id: String,
    /// When it ended (what a cache's time to live is measured from).
    pub ended_at: Timestamp,
    /// Its outputs.
    pub outputs: Vec<OutputLink>,
}

/// Where an artifact version came from and where it went.
#[derive(Clone, Debug, PartialEq)]
pub struct Lineage {
    /// The version.
    pub artifact: ArtifactVersion,
    /// The step run that produced it.
    pub producer: Option<StepRunRecord>,
    /// Step runs that consumed it.
    pub consumers: Vec<StepRunRecord>,
}

/// How [`MetadataError::Empty`] starts: what a listing says instead of an
/// empty table.
pub const NO_RUNS_YET: &str = "no runs yet here";

/// Why the metadata store failed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The database exists but is not a zenflow database.
    #[error(
        "{location} is not a zenflow metadata database ({detail}); \
             point the stack at another database, or move the file away to start a fresh one"
    )]
    NotZenflow {
        /// Path or URL.
        location: String,
        /// What was found instead.
        detail: String,
    },
    /// The schema was written by a newer zenflow.
    #[error(
        "{location} has metadata schema version {found}, but this build of zenflow supports up to {supported}; \
             upgrade zenflow to use this database (it was left unchanged)"
    )]
    NewerSchema {
        /// Path or URL.
        location: String,
        /// Version found.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The schema is older than this build's, and the store was opened
    /// read-only, so it was not migrated.
    #[error(
        "{location} has metadata schema version {found}, older than this build's {supported}, and a command that \
             only reads does not migrate it: run `stacks check STACK` (it migrates the schema), or any run, first"
    )]
    OlderSchema {
        /// Path or URL.
        location: String,
        /// Version found.
        found: i64,
        /// The version this build writes.
        supported: i64,
    },
    /// Opened to read, the store does not exist yet: nothing has run here.
    #[error("{}: {location} does not exist yet (the first run creates it)", NO_RUNS_YET)]
    Empty {
        /// Path or URL.
        location: String,
    },
    /// A record refers to something that does not exist.
    #[error("{0} was not found in the metadata store")]
    NotFound(String),
    /// A run with that name exists already.
    #[error("a run named `{0}` already exists; choose another run name")]
    RunNameTaken(String),
    /// A stored value could not be read back.
    #[error("the metadata store holds an unreadable value: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("metadata store {location} failed: {message}")]
    Backend {
        /// Path or URL.
        location: String,
        /// What went wrong.
        message: String,
    },
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
    /// [`crate::heartbeat`]), so one sent before the run's creation is
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

    /// The step runs of a run, in the order they started.
    async fn step_runs(&self, run_id: &str) -> Result<Vec<StepRunRecord>, MetadataError>;

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

    /// The model registry kept in the same database, if this store has one.
    fn registry(&self) -> Option<&dyn crate::registry::ModelRegistry> {
        None
    }
}
