//! Every statement the metadata stores run, in the SQL both dialects accept.
//!
//! Column lists are macros so that statements stay `&'static str`
//! constants: a driver prepares each once per connection and finds it again
//! by its text.

/// The columns of a run, in the order [`super::rows::run`] reads them.
macro_rules! run_cols {
    () => {
        "id, pipeline, name, status, stack, config, plan, git_commit, started_at, ended_at, error, git_branch, \
         ci_job_url"
    };
}

/// The columns of an artifact version (table alias `av`), in the order
/// [`super::rows::artifact_version`] reads them.
macro_rules! av_cols {
    () => {
        "av.id, av.name, av.version, av.uri, av.content_hash, av.type_name, av.materializer, \
         av.materializer_version, av.format, av.metadata, av.producer_step_run, av.run_id, av.created_at, \
         av.inline_bytes"
    };
}

/// The columns of a step run (table alias `sr`), in the order
/// [`super::rows::step_run`] reads them.
macro_rules! sr_cols {
    () => {
        "sr.id, sr.run_id, sr.invocation, sr.step, sr.status, sr.cache_key, sr.original_step_run, \
         sr.started_at, sr.ended_at, sr.error, sr.attempts, sr.logs"
    };
}

// ---- runs ----

/// Creates the pipeline `$1` (created at `$2`) unless it exists.
pub(crate) const CREATE_PIPELINE: &str =
    "INSERT INTO pipelines (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";

/// Inserts a run unless its name is taken (no row changes then).
pub(crate) const CREATE_RUN: &str = concat!(
    "INSERT INTO runs (",
    run_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, $10, $11) ON CONFLICT (name) DO NOTHING"
);

/// A run by id or name.
pub(crate) const GET_RUN: &str =
    concat!("SELECT ", run_cols!(), " FROM runs WHERE (id = $1 OR name = $1) AND deleted_at IS NULL LIMIT 1");

/// Runs, newest first, of pipeline `$1` (every pipeline when NULL), at most `$2`.
pub(crate) const LIST_RUNS: &str = concat!(
    "SELECT ",
    run_cols!(),
    " FROM runs WHERE (CAST($1 AS TEXT) IS NULL OR pipeline = $1) AND deleted_at IS NULL \
     ORDER BY started_at DESC, id DESC LIMIT $2"
);

/// Runs whose id starts with `$1` (hex digits and dashes only: no
/// wildcard), newest first, at most `$2`.
pub(crate) const RUNS_WITH_ID_PREFIX: &str = concat!(
    "SELECT ",
    run_cols!(),
    " FROM runs WHERE id LIKE CAST($1 AS TEXT) || '%' AND deleted_at IS NULL ORDER BY started_at DESC, id DESC LIMIT $2"
);

/// Sets status `$1`, error `$2` and end `$3` of run `$5`; a heartbeat `$4` when not NULL.
pub(crate) const SET_RUN_STATUS: &str = "UPDATE runs SET status = $1, error = $2, ended_at = $3, \
                                         heartbeat_at = COALESCE($4, heartbeat_at) WHERE id = $5";

/// Closes the step runs of finished run `$2` still marked running (at `$1`):
/// their final record could not be written.
pub(crate) const CLOSE_RUNNING_STEPS: &str = "UPDATE step_runs SET status = 'failed', ended_at = $1, \
     error = COALESCE(error, 'the step''s final record could not be written') \
     WHERE run_id = $2 AND status = 'running'";

/// Records a heartbeat `$1` of run `$2`.
pub(crate) const HEARTBEAT: &str = "UPDATE runs SET heartbeat_at = $1 WHERE id = $2";

/// Fails runs still running with no sign of life since `$1` (error `$2`, at `$3`).
pub(crate) const FAIL_STALE_RUNS: &str = "UPDATE runs SET status = 'failed', error = $1, ended_at = $2 \
     WHERE status = 'running' AND COALESCE(heartbeat_at, started_at) < $3 RETURNING id";

/// Fails the running step runs of dead run `$3` (error `$1`, at `$2`).
pub(crate) const FAIL_STALE_STEPS: &str =
    "UPDATE step_runs SET status = 'failed', error = $1, ended_at = $2 WHERE run_id = $3 AND status = 'running'";

/// Whether run `$1` exists.
pub(crate) const RUN_EXISTS: &str = "SELECT EXISTS(SELECT 1 FROM runs WHERE id = $1)";

// ---- step runs ----

/// Inserts or replaces a step run.
pub(crate) const UPSERT_STEP_RUN: &str = "INSERT INTO step_runs (id, run_id, invocation, step, status, cache_key, \
     original_step_run, started_at, ended_at, error, attempts, logs) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (id) DO UPDATE SET status = excluded.status, cache_key = excluded.cache_key, \
     original_step_run = excluded.original_step_run, ended_at = excluded.ended_at, \
     error = excluded.error, attempts = excluded.attempts, logs = excluded.logs";

/// A `running` marker: inserted only if its run `$2` exists (a marker is
/// written late, in a batch that a failing statement would take with it),
/// and never over a record already there.
pub(crate) const UPSERT_MARKER: &str = "INSERT INTO step_runs (id, run_id, invocation, step, status, cache_key, \
     original_step_run, started_at, ended_at, error, attempts, logs) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 WHERE EXISTS (SELECT 1 FROM runs WHERE id = $2) \
     ON CONFLICT (id) DO NOTHING";

/// Records artifact version `$1` named `$2` with the next version number of
/// that name. The number is taken under the database's write lock (SQLite)
/// or the name's advisory lock (PostgreSQL). A scalar subquery in `VALUES`,
/// not `INSERT ... SELECT` or `RETURNING`: for those SQLite builds a
/// temporary table on every insert (a third of a step's record), so
/// [`ARTIFACT_VERSION_NUMBER`] reads the number back.
pub(crate) const INSERT_ARTIFACT_VERSION: &str = "INSERT INTO artifact_versions (id, name, version, uri, \
     content_hash, type_name, materializer, materializer_version, format, metadata, producer_step_run, run_id, \
     created_at, inline_bytes) \
     VALUES ($1, $2, (SELECT COALESCE(MAX(version), 0) + 1 FROM artifact_versions WHERE name = $2), \
     $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// [`INSERT_ARTIFACT_VERSION`] returning the number, for PostgreSQL.
pub(crate) const INSERT_ARTIFACT_VERSION_RETURNING: &str = "INSERT INTO artifact_versions (id, name, version, uri, \
     content_hash, type_name, materializer, materializer_version, format, metadata, producer_step_run, run_id, \
     created_at, inline_bytes) \
     VALUES ($1, $2, (SELECT COALESCE(MAX(version), 0) + 1 FROM artifact_versions WHERE name = $2), \
     $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING version";

/// The version number of artifact version `$1`.
pub(crate) const ARTIFACT_VERSION_NUMBER: &str = "SELECT version FROM artifact_versions WHERE id = $1";

/// Links output `$2` (position `$3`) of step run `$1` to artifact version `$4`.
pub(crate) const LINK_OUTPUT: &str = "INSERT INTO step_run_outputs (step_run_id, output, position, \
     artifact_version_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";

/// Links input `$2` (position `$3`) of step run `$1` to artifact version `$4`.
pub(crate) const LINK_INPUT: &str = "INSERT INTO step_run_inputs (step_run_id, input, position, \
     artifact_version_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";

/// Sets metadata `$3` = `$4` of step run `$2` (run `$1`).
pub(crate) const UPSERT_METADATA: &str = "INSERT INTO run_metadata (run_id, step_run_id, key, value) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (step_run_id, key) DO UPDATE SET value = excluded.value";

/// Records a check of a step run.
pub(crate) const UPSERT_CHECK: &str = "INSERT INTO checks (step_run_id, run_id, position, name, status, value, \
     threshold, message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (step_run_id, name) DO UPDATE SET \
     position = excluded.position, status = excluded.status, value = excluded.value, \
     threshold = excluded.threshold, message = excluded.message";

/// Whether artifact version `$1` exists.
pub(crate) const ARTIFACT_EXISTS: &str = "SELECT EXISTS(SELECT 1 FROM artifact_versions WHERE id = $1)";

/// The latest completed step run with cache key `$1`, with its outputs
/// (positions, names and versions; one row of NULLs for a step run without
/// outputs), in one round trip. The step run comes from the partial index
/// `step_runs_cache_hits` alone, in its order.
pub(crate) const CACHE_HIT: &str = concat!(
    "SELECT hit.id, hit.run_id, hit.ended_at, o.position, o.output, ",
    av_cols!(),
    " FROM (SELECT id, run_id, ended_at FROM step_runs WHERE cache_key = $1 AND status = 'completed' \
     ORDER BY ended_at DESC, id DESC LIMIT 1) hit \
     LEFT JOIN step_run_outputs o ON o.step_run_id = hit.id \
     LEFT JOIN artifact_versions av ON av.id = o.artifact_version_id"
);

/// The five queries that load step runs matching one filter (on `sr`, with
/// `$1` bound): the step runs, then their outputs, inputs, metadata and checks.
pub(crate) struct StepRunQueries {
    /// The step runs, in the order they started.
    pub runs: &'static str,
    /// `(step run id, output, artifact version...)`, in output order.
    pub outputs: &'static str,
    /// `(step run id, input, position, artifact version id)`.
    pub inputs: &'static str,
    /// `(step run id, key, value)`.
    pub metadata: &'static str,
    /// `(step run id, name, status, value, threshold, message)`, in check order.
    pub checks: &'static str,
}

macro_rules! step_run_queries {
    ($filter:literal) => {
        StepRunQueries {
            runs: concat!(
                "SELECT ",
                sr_cols!(),
                " FROM step_runs sr WHERE ",
                $filter,
                " ORDER BY sr.started_at, sr.id"
            ),
            outputs: concat!(
                "SELECT o.step_run_id, o.output, ",
                av_cols!(),
                " FROM step_run_outputs o JOIN artifact_versions av ON av.id = o.artifact_version_id \
                 JOIN step_runs sr ON sr.id = o.step_run_id WHERE ",
                $filter,
                " ORDER BY o.step_run_id, o.position"
            ),
            inputs: concat!(
                "SELECT i.step_run_id, i.input, i.position, i.artifact_version_id FROM step_run_inputs i \
                 JOIN step_runs sr ON sr.id = i.step_run_id WHERE ",
                $filter,
                " ORDER BY i.step_run_id, i.input, i.position"
            ),
            metadata: concat!(
                "SELECT m.step_run_id, m.key, m.value FROM run_metadata m \
                 JOIN step_runs sr ON sr.id = m.step_run_id WHERE ",
                $filter,
                " ORDER BY m.step_run_id, m.key"
            ),
            checks: concat!(
                "SELECT c.step_run_id, c.name, c.status, c.value, c.threshold, c.message FROM checks c \
                 JOIN step_runs sr ON sr.id = c.step_run_id WHERE ",
                $filter,
                " ORDER BY c.step_run_id, c.position"
            ),
        }
    };
}

/// The step runs of run `$1`.
pub(crate) const STEP_RUNS_OF_RUN: StepRunQueries = step_run_queries!("sr.run_id = $1");

/// The latest step run of invocation `$2` in run `$1` (the last of its
/// attempts in the order [`STEP_RUNS_OF_RUN`] gives them).
pub(crate) const LATEST_STEP_RUN: StepRunQueries = step_run_queries!(
    "sr.id = (SELECT l.id FROM step_runs l WHERE l.run_id = $1 AND l.invocation = $2 \
     ORDER BY l.started_at DESC, l.id DESC LIMIT 1)"
);

/// Step run `$1`.
pub(crate) const STEP_RUN_BY_ID: StepRunQueries = step_run_queries!("sr.id = $1");

/// The step runs that consumed artifact version `$1`.
pub(crate) const CONSUMERS_OF: StepRunQueries =
    step_run_queries!("sr.id IN (SELECT step_run_id FROM step_run_inputs WHERE artifact_version_id = $1)");

// ---- artifact versions ----

/// Artifact version `$1`.
pub(crate) const ARTIFACT_VERSION: &str = concat!("SELECT ", av_cols!(), " FROM artifact_versions av WHERE av.id = $1");

/// The artifact versions step run `$1` produced.
pub(crate) const ARTIFACTS_PRODUCED_BY: &str =
    concat!("SELECT ", av_cols!(), " FROM artifact_versions av WHERE av.producer_step_run = $1 ORDER BY av.id");

/// Artifact versions, newest first, named `$1` (every name when NULL), at most `$2`.
pub(crate) const ARTIFACT_VERSIONS: &str = concat!(
    "SELECT ",
    av_cols!(),
    " FROM artifact_versions av WHERE (CAST($1 AS TEXT) IS NULL OR av.name = $1) \
     ORDER BY av.created_at DESC, av.version DESC LIMIT $2"
);

/// Version `$2` of the artifact named `$1`, or its latest when `$2` is NULL.
pub(crate) const ARTIFACT_VERSION_NAMED: &str = concat!(
    "SELECT ",
    av_cols!(),
    " FROM artifact_versions av WHERE av.name = $1 AND (CAST($2 AS BIGINT) IS NULL OR av.version = $2) \
     ORDER BY av.version DESC LIMIT 1"
);

/// Every statement, for the tests that check them.
#[cfg(test)]
pub(crate) fn all() -> Vec<&'static str> {
    let mut all = vec![
        CREATE_PIPELINE,
        CREATE_RUN,
        GET_RUN,
        LIST_RUNS,
        RUNS_WITH_ID_PREFIX,
        SET_RUN_STATUS,
        CLOSE_RUNNING_STEPS,
        HEARTBEAT,
        FAIL_STALE_RUNS,
        FAIL_STALE_STEPS,
        RUN_EXISTS,
        UPSERT_STEP_RUN,
        UPSERT_MARKER,
        INSERT_ARTIFACT_VERSION,
        INSERT_ARTIFACT_VERSION_RETURNING,
        ARTIFACT_VERSION_NUMBER,
        LINK_OUTPUT,
        LINK_INPUT,
        UPSERT_METADATA,
        UPSERT_CHECK,
        ARTIFACT_EXISTS,
        CACHE_HIT,
        ARTIFACT_VERSION,
        ARTIFACTS_PRODUCED_BY,
        ARTIFACT_VERSIONS,
        ARTIFACT_VERSION_NAMED,
    ];
    for q in [STEP_RUNS_OF_RUN, LATEST_STEP_RUN, STEP_RUN_BY_ID, CONSUMERS_OF] {
        all.extend([q.runs, q.outputs, q.inputs, q.metadata, q.checks]);
    }
    all
}

/// Checks that each statement names its parameters `$1`, `$2`, ... first
/// in that order: SQLite numbers `$N` parameters by first appearance,
/// PostgreSQL by `N`, and they agree only then.
#[cfg(test)]
pub(crate) fn check_placeholders(statements: &[&str]) {
    let mut wrong = Vec::new();
    for sql in statements {
        let mut seen: Vec<u32> = Vec::new();
        let bytes = sql.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' {
                let digits: String = sql[i + 1..].chars().take_while(|c| c.is_ascii_digit()).collect();
                let n: u32 = digits.parse().unwrap_or_else(|_| panic!("a bare `$` in {sql}"));
                if !seen.contains(&n) {
                    if n as usize != seen.len() + 1 {
                        wrong.push(format!("`${n}` appears out of order in {sql}"));
                    }
                    seen.push(n);
                }
                i += digits.len();
            }
            i += 1;
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_first_appear_in_ascending_order() {
        super::check_placeholders(&super::all());
    }
}
