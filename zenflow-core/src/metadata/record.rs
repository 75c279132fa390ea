//! What a metadata store keeps: runs, step runs, artifact versions and the
//! links between them, with their statuses.

use super::error::MetadataError;
use crate::hash::ContentHash;
use crate::materializer::ArtifactMetadata;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

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
                // `pad`, so that `{:<10}` lines a table up.
                f.pad(self.as_str())
            }
        }
    };
}

status_enum!(
    /// Status of a pipeline run.
    RunStatus {
        /// Planned (`run --pending`, `dag --format argo`) but not started; its steps may be run one by one.
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
    /// The branch it ran for (CI's, else the checkout's), when known.
    #[serde(default)]
    pub git_branch: Option<String>,
    /// The CI job that ran it, when one did.
    #[serde(default)]
    pub ci_job_url: Option<String>,
    /// Start time.
    pub started_at: Timestamp,
    /// End time, once finished.
    pub ended_at: Option<Timestamp>,
    /// Why it failed.
    pub error: Option<String>,
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
pub(crate) const PERMANENT_KEY: &str = "zenflow.permanent";

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
    /// A record of step `step` (invocation `invocation`) of run `run_id`
    /// with nothing in it yet: no attempts, outputs, logs or checks.
    pub fn empty(
        id: String,
        run_id: &str,
        invocation: &str,
        step: &str,
        status: StepStatus,
        started_at: Timestamp,
    ) -> Self {
        StepRunRecord {
            id,
            run_id: run_id.into(),
            invocation: invocation.into(),
            step: step.into(),
            status,
            cache_key: None,
            original_step_run: None,
            started_at,
            ended_at: None,
            error: None,
            attempts: 0,
            logs: Vec::new(),
            metadata: Default::default(),
            checks: Vec::new(),
            outputs: Vec::new(),
            inputs: Vec::new(),
        }
    }

    /// How long the step run took; `None` while it runs.
    pub fn duration(&self) -> Option<std::time::Duration> {
        elapsed(self.started_at, self.ended_at)
    }

    /// Whether it failed for good: another attempt would fail the same way
    /// (the step is not in the binary, its code differs from the plan's).
    pub fn is_permanent_failure(&self) -> bool {
        self.metadata.get(PERMANENT_KEY) == Some(&serde_json::Value::Bool(true))
    }

    /// Hides the secrets in its texts, in place: its error, logs and check
    /// messages (the rules of [`crate::redact`]).
    pub fn redact(&mut self) {
        crate::redact::option_in_place(&mut self.error);
        for line in &mut self.logs {
            crate::redact::in_place(line);
        }
        for check in &mut self.checks {
            crate::redact::in_place(&mut check.message);
        }
    }
}

/// The latest record of step `invocation` among `records`, which are in
/// the order the attempts started (as [`MetadataStore::step_runs`](crate::metadata::MetadataStore::step_runs) gives
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

/// What deleting a run removed from a metadata store
/// ([`super::MetadataStore::delete_run`]).
///
/// A deleted run disappears from every listing and lookup. Its step runs
/// whose artifacts are still used (by a remaining run, as a cache hit or an
/// input; by a model version; or upstream of either, as its lineage) are
/// kept, and keep serving the cache; the rest go, with the artifact
/// versions they produced. A later deletion that frees them removes them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deletion {
    /// The run's id.
    pub run: String,
    /// Step runs removed, of this run and of runs deleted before it that
    /// this deletion freed.
    pub step_runs: u64,
    /// Step runs of deleted runs kept because their artifacts are still used.
    pub kept_step_runs: u64,
    /// Artifact versions removed. Their bytes may still be in the artifact
    /// store, for `gc` to collect once no artifact version has their hash.
    pub artifacts: Vec<ArtifactVersion>,
}
