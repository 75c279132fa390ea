//! The schema history of the metadata store, shared by every SQL backend.
//!
//! Each migration is applied once, in order, inside a write transaction; the
//! database records the version it reached. The SQL is the common subset of
//! SQLite and PostgreSQL (TEXT ids, BIGINT timestamps in microseconds).

/// `(version, statements)` in order. Never edit a released migration: add one.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE pipelines (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL REFERENCES pipelines(name),
    name TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    stack TEXT NOT NULL,
    config TEXT NOT NULL,
    plan TEXT NOT NULL,
    git_commit TEXT,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    error TEXT
);
CREATE INDEX runs_by_pipeline ON runs(pipeline, started_at);
CREATE TABLE step_runs (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    invocation TEXT NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    cache_key TEXT,
    original_step_run TEXT,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    error TEXT,
    attempts INTEGER NOT NULL,
    logs TEXT NOT NULL
);
CREATE INDEX step_runs_by_run ON step_runs(run_id, started_at);
CREATE INDEX step_runs_by_cache_key ON step_runs(cache_key, status, ended_at);
CREATE TABLE artifact_versions (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    uri TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    type_name TEXT NOT NULL,
    materializer TEXT NOT NULL,
    materializer_version INTEGER NOT NULL,
    format TEXT NOT NULL,
    metadata TEXT NOT NULL,
    producer_step_run TEXT NOT NULL REFERENCES step_runs(id),
    run_id TEXT NOT NULL REFERENCES runs(id),
    created_at BIGINT NOT NULL,
    UNIQUE (name, version)
);
CREATE INDEX artifact_versions_by_hash ON artifact_versions(content_hash);
CREATE TABLE step_run_outputs (
    step_run_id TEXT NOT NULL REFERENCES step_runs(id),
    output TEXT NOT NULL,
    position INTEGER NOT NULL,
    artifact_version_id TEXT NOT NULL REFERENCES artifact_versions(id),
    PRIMARY KEY (step_run_id, output)
);
CREATE TABLE step_run_inputs (
    step_run_id TEXT NOT NULL REFERENCES step_runs(id),
    input TEXT NOT NULL,
    position INTEGER NOT NULL,
    artifact_version_id TEXT NOT NULL REFERENCES artifact_versions(id),
    PRIMARY KEY (step_run_id, input, position)
);
CREATE INDEX step_run_inputs_by_artifact ON step_run_inputs(artifact_version_id);
CREATE TABLE run_metadata (
    run_id TEXT NOT NULL REFERENCES runs(id),
    step_run_id TEXT NOT NULL REFERENCES step_runs(id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (step_run_id, key)
);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE checks (
    step_run_id TEXT NOT NULL REFERENCES step_runs(id),
    run_id TEXT NOT NULL REFERENCES runs(id),
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    value DOUBLE PRECISION,
    threshold DOUBLE PRECISION,
    message TEXT NOT NULL,
    PRIMARY KEY (step_run_id, name)
);
CREATE INDEX checks_by_run ON checks(run_id);
"#,
    ),
    (
        3,
        r#"
ALTER TABLE runs ADD COLUMN heartbeat_at BIGINT;
CREATE INDEX runs_by_status ON runs(status);
"#,
    ),
    (
        4,
        r#"
ALTER TABLE artifact_versions ADD COLUMN inline_bytes BYTEA;
"#,
    ),
    (
        5,
        // Random keys (hashes) put every insert on a different index page,
        // which a group commit then writes out: keep only what a query
        // uses. Only completed step runs serve cache hits; nothing looks
        // artifacts up by content hash.
        r#"
DROP INDEX step_runs_by_cache_key;
CREATE INDEX step_runs_cache_hits ON step_runs(cache_key, ended_at) WHERE status = 'completed';
DROP INDEX artifact_versions_by_hash;
"#,
    ),
    (
        6,
        // With the step run's id in the index, a cache lookup reads the
        // index alone and in order (the id breaks ties of `ended_at`): no
        // visit of the table, no sort.
        r#"
DROP INDEX step_runs_cache_hits;
CREATE INDEX step_runs_cache_hits ON step_runs(cache_key, ended_at, id) WHERE status = 'completed';
"#,
    ),
    (
        7,
        // The model registry. A model version is immutable and numbered per
        // model; identical bytes are one version (UNIQUE content hash). One
        // row per alias: at most one version holds it. The event log has
        // one gapless sequence per model, so it is linear.
        r#"
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE model_versions (
    model TEXT NOT NULL REFERENCES models(name),
    version BIGINT NOT NULL,
    artifact_version_id TEXT NOT NULL REFERENCES artifact_versions(id),
    content_hash TEXT NOT NULL,
    run_id TEXT,
    step_run_id TEXT,
    git_commit TEXT,
    code_hashes TEXT NOT NULL,
    data_hashes TEXT NOT NULL,
    metrics TEXT NOT NULL,
    tags TEXT NOT NULL,
    samples TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (model, version),
    UNIQUE (model, content_hash)
);
CREATE TABLE model_aliases (
    model TEXT NOT NULL,
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    since BIGINT NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES model_versions(model, version)
);
CREATE TABLE model_alias_events (
    model TEXT NOT NULL REFERENCES models(name),
    seq BIGINT NOT NULL,
    alias TEXT NOT NULL,
    from_version BIGINT,
    to_version BIGINT,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    run_id TEXT,
    ci_job_url TEXT,
    forced INTEGER NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (model, seq)
);
CREATE INDEX model_alias_events_by_alias ON model_alias_events(model, alias, seq);
"#,
    ),
    (
        8,
        // A cache hit names its run (why a cached step is cached: "from run
        // X"): the index still covers the whole lookup.
        r#"
DROP INDEX step_runs_cache_hits;
CREATE INDEX step_runs_cache_hits ON step_runs(cache_key, ended_at, id, run_id) WHERE status = 'completed';
"#,
    ),
    (
        9,
        // Protection is a rule of the registry: the aliases it names move
        // only to versions with evidence, whichever client asks. Changes
        // are events in model_alias_events (kinds protect, unprotect).
        r#"
CREATE TABLE model_protections (
    model TEXT NOT NULL REFERENCES models(name),
    alias TEXT NOT NULL,
    since BIGINT NOT NULL,
    PRIMARY KEY (model, alias)
);
"#,
    ),
    (
        10,
        // Where a run came from: its branch and CI job (`runs show`).
        // Deleting runs (`runs delete`, `gc`). A deleted run whose step runs
        // still serve others (a cache hit, an input, a model version) is
        // kept, hidden, with those step runs only: `deleted_at` says so.
        // Deleting a step run or an artifact version looks up what refers
        // to it (the foreign keys): these indexes keep that a lookup, not a
        // scan. Their keys are time-ordered ids, so inserts mostly append
        // (a cache hit's link points at an older version). The
        // store's identity (one row, set on first use) tells an artifact
        // store which metadata store's records say what its objects are for.
        r#"
CREATE TABLE store_identity (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    id TEXT NOT NULL
);
ALTER TABLE runs ADD COLUMN deleted_at BIGINT;
ALTER TABLE runs ADD COLUMN git_branch TEXT;
ALTER TABLE runs ADD COLUMN ci_job_url TEXT;
CREATE INDEX runs_deleted ON runs(deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX step_run_outputs_by_artifact ON step_run_outputs(artifact_version_id);
CREATE INDEX artifact_versions_by_producer ON artifact_versions(producer_step_run);
"#,
    ),
];

/// The newest schema version this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}
