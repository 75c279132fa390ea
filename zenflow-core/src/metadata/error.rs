//! Why a metadata store failed.

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
    /// A cached step run links an artifact version that no longer exists:
    /// `gc` or `runs delete` removed it after the cache lookup found it.
    /// The step is not served from that cache entry (the runner executes it).
    #[error(
        "artifact version `{0}` is gone: `gc` or `runs delete` removed it after the cache lookup found it; \
             the step runs again instead"
    )]
    ArtifactGone(String),
    /// The run cannot be deleted while it may still write.
    #[error(
        "run `{run}` is {status}: it may still write, so it cannot be deleted; wait for it to end (a run whose \
             process died is marked failed once its heartbeat lapses, by `runs list`)"
    )]
    RunActive {
        /// The run's name.
        run: String,
        /// Its status (`running`).
        status: super::RunStatus,
    },
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
