//! The statements of a step-run write, in the order they run.
//!
//! A driver first checks the write's [`references`] (so that no statement
//! can fail on a foreign key half-way through a group commit), then runs
//! [`Ops`] in order, and builds the outputs it returns with
//! [`Prepared::outputs`] from the version numbers the database assigned.

use super::statements as q;
use super::{corrupt, Value};
use zenflow_core::metadata::*;

/// Everything a step-run write serialises, done before its first
/// statement, so that a value that does not serialise fails the write
/// before it has changed anything.
pub(crate) struct Prepared {
    logs: String,
    /// New artifact versions: ids, content hashes (hex) and metadata (JSON).
    ids: Vec<String>,
    hashes: Vec<String>,
    artifact_metadata: Vec<String>,
    /// The step run's logged metadata values (JSON), in key order.
    values: Vec<String>,
    /// When the new artifact versions are recorded.
    pub now: Timestamp,
}

impl Prepared {
    /// Serialises `w`'s values and gives its new artifact versions their ids.
    pub(crate) fn new(w: &StepRunWrite) -> Result<Self, MetadataError> {
        Ok(Prepared {
            logs: serde_json::to_string(&w.step_run.logs).map_err(corrupt)?,
            ids: w.new_outputs.iter().map(|_| new_id()).collect(),
            hashes: w.new_outputs.iter().map(|a| a.content_hash.to_hex()).collect(),
            artifact_metadata: w
                .new_outputs
                .iter()
                .map(|a| serde_json::to_string(&a.metadata))
                .collect::<Result<_, _>>()
                .map_err(corrupt)?,
            values: w
                .step_run
                .metadata
                .values()
                .map(serde_json::to_string)
                .collect::<Result<_, _>>()
                .map_err(corrupt)?,
            now: now(),
        })
    }

    /// The outputs of `w` as stored: its new versions with the `versions`
    /// the database gave them, then the versions it links.
    pub(crate) fn outputs(&self, w: &StepRunWrite, versions: &[i64]) -> Vec<OutputLink> {
        let sr = &w.step_run;
        let mut outputs = Vec::with_capacity(w.new_outputs.len() + sr.outputs.len());
        for ((a, id), &version) in w.new_outputs.iter().zip(&self.ids).zip(versions) {
            outputs.push(OutputLink {
                output: a.output.clone(),
                artifact: a.to_version(id.clone(), version, &sr.id, &sr.run_id, self.now),
            });
        }
        outputs.extend(sr.outputs.iter().cloned());
        outputs
    }
}

/// Where the two SQL dialects part for a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Numbers new artifact versions in the insert and reads them back
    /// (its `RETURNING` builds a temporary table every time).
    Sqlite,
    /// Returns the number from the insert itself (one statement fewer in
    /// the pipeline).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres,
}

/// What a statement of a write returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Returns {
    /// Nothing the write needs.
    Nothing,
    /// The version number of a new artifact version (one row, one column).
    Version,
    /// How many rows it changed.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Count,
}

/// One statement of a write.
#[derive(Debug)]
pub(crate) struct Op {
    /// The statement.
    pub sql: &'static str,
    /// What it returns.
    pub returns: Returns,
    params: std::ops::Range<usize>,
}

/// Statements to run in order, with their parameters: one write.
#[derive(Default)]
pub(crate) struct Ops<'a> {
    /// The statements, in the order they must run.
    pub ops: Vec<Op>,
    values: Vec<Value<'a>>,
}

impl<'a> Ops<'a> {
    /// Appends a statement.
    pub(crate) fn push(&mut self, sql: &'static str, returns: Returns, params: &[Value<'a>]) {
        let start = self.values.len();
        self.values.extend_from_slice(params);
        self.ops.push(Op { sql, returns, params: start..self.values.len() });
    }

    /// The parameters of `op`.
    pub(crate) fn params(&self, op: &Op) -> &[Value<'a>] {
        &self.values[op.params.clone()]
    }

    /// The statements of the write of `w` (with `p`, its [`Prepared`] values).
    pub(crate) fn step_run(w: &'a StepRunWrite, p: &'a Prepared, dialect: Dialect) -> Self {
        let sr = &w.step_run;
        let links = w.new_outputs.len() + sr.outputs.len() + sr.inputs.len();
        let mut ops = Ops {
            ops: Vec::with_capacity(1 + w.new_outputs.len() + links + sr.metadata.len() + sr.checks.len()),
            values: Vec::with_capacity(12 + 17 * w.new_outputs.len() + 4 * links + 8 * sr.checks.len()),
        };
        ops.push(q::UPSERT_STEP_RUN, Returns::Nothing, &step_run_params(sr, &p.logs));
        ops.new_outputs(w, p, dialect);
        for (position, link) in sr.outputs.iter().enumerate() {
            ops.push(
                q::LINK_OUTPUT,
                Returns::Nothing,
                &[(&sr.id).into(), (&link.output).into(), position.into(), (&link.artifact.id).into()],
            );
        }
        for i in &sr.inputs {
            ops.push(
                q::LINK_INPUT,
                Returns::Nothing,
                &[(&sr.id).into(), (&i.input).into(), i.position.into(), (&i.artifact_version).into()],
            );
        }
        for (key, value) in sr.metadata.keys().zip(&p.values) {
            ops.push(
                q::UPSERT_METADATA,
                Returns::Nothing,
                &[(&sr.run_id).into(), (&sr.id).into(), key.into(), value.into()],
            );
        }
        for (position, c) in sr.checks.iter().enumerate() {
            ops.push(
                q::UPSERT_CHECK,
                Returns::Nothing,
                &[
                    (&sr.id).into(),
                    (&sr.run_id).into(),
                    position.into(),
                    (&c.name).into(),
                    c.status.as_str().into(),
                    c.value.into(),
                    c.threshold.into(),
                    (&c.message).into(),
                ],
            );
        }
        ops
    }

    /// The statements that record the new artifact versions of `w` and
    /// link them as its outputs (SQLite asks for each version's number
    /// after its insert; PostgreSQL's insert returns it).
    fn new_outputs(&mut self, w: &'a StepRunWrite, p: &'a Prepared, dialect: Dialect) {
        let sr = &w.step_run;
        for (position, a) in w.new_outputs.iter().enumerate() {
            let (insert, returns) = match dialect {
                Dialect::Sqlite => (q::INSERT_ARTIFACT_VERSION, Returns::Nothing),
                Dialect::Postgres => (q::INSERT_ARTIFACT_VERSION_RETURNING, Returns::Version),
            };
            self.push(
                insert,
                returns,
                &[
                    (&p.ids[position]).into(),
                    (&a.name).into(),
                    (&a.uri).into(),
                    (&p.hashes[position]).into(),
                    (&a.type_name).into(),
                    (&a.materializer).into(),
                    a.materializer_version.into(),
                    (&a.format).into(),
                    (&p.artifact_metadata[position]).into(),
                    (&sr.id).into(),
                    (&sr.run_id).into(),
                    p.now.into(),
                    Value::Blob(a.inline.as_deref()),
                ],
            );
            if dialect == Dialect::Sqlite {
                self.push(q::ARTIFACT_VERSION_NUMBER, Returns::Version, &[(&p.ids[position]).into()]);
            }
            self.push(
                q::LINK_OUTPUT,
                Returns::Nothing,
                &[(&sr.id).into(), (&a.output).into(), position.into(), (&p.ids[position]).into()],
            );
        }
    }
}

/// The parameters of [`q::UPSERT_MARKER`] for a `running` marker.
pub(crate) fn marker_params(sr: &StepRunRecord) -> [Value<'_>; 12] {
    step_run_params(sr, "[]")
}

/// The parameters of a step run's row ([`q::UPSERT_STEP_RUN`],
/// [`q::UPSERT_MARKER`]), with its logs as JSON.
fn step_run_params<'a>(sr: &'a StepRunRecord, logs: &'a str) -> [Value<'a>; 12] {
    [
        (&sr.id).into(),
        (&sr.run_id).into(),
        (&sr.invocation).into(),
        (&sr.step).into(),
        sr.status.as_str().into(),
        (&sr.cache_key).into(),
        (&sr.original_step_run).into(),
        sr.started_at.into(),
        sr.ended_at.into(),
        (&sr.error).into(),
        sr.attempts.into(),
        logs.into(),
    ]
}

/// The metadata a `running` marker carries (which worker runs it, how its
/// model inputs resolved), as `(key, JSON)` for [`q::UPSERT_METADATA`].
pub(crate) fn marker_metadata(sr: &StepRunRecord) -> Vec<(&str, String)> {
    sr.metadata.iter().map(|(k, v)| (k.as_str(), v.to_string())).collect()
}

/// The parameters of [`q::UPSERT_METADATA`].
pub(crate) fn metadata_params<'a>(sr: &'a StepRunRecord, key: &'a str, json: &'a str) -> [Value<'a>; 4] {
    [(&sr.run_id).into(), (&sr.id).into(), key.into(), json.into()]
}

/// Something a step-run write refers to, which must exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reference<'a> {
    /// Its run.
    Run(&'a str),
    /// An artifact version it links as an input, or as an output it wrote.
    Artifact(&'a str),
    /// An artifact version a cached step run links as its output: a cache
    /// hit, which `gc` may have deleted since the lookup found it.
    Cached(&'a str),
}

impl<'a> Reference<'a> {
    /// The statement that tells whether it exists (one boolean), and its id.
    pub(crate) fn exists_query(&self) -> (&'static str, &'a str) {
        match *self {
            Reference::Run(id) => (q::RUN_EXISTS, id),
            Reference::Artifact(id) | Reference::Cached(id) => (q::ARTIFACT_EXISTS, id),
        }
    }

    /// Whether a check may be skipped for an id the store has seen exist:
    /// not for a cache hit, which a deletion may have removed since.
    pub(crate) fn may_skip(&self) -> bool {
        !matches!(self, Reference::Cached(_))
    }

    /// The error when it does not exist.
    pub(crate) fn missing(&self, w: &StepRunWrite) -> MetadataError {
        MetadataError::NotFound(match *self {
            Reference::Run(id) => format!("run `{id}` of step run `{}`", w.step_run.id),
            Reference::Artifact(id) => format!("artifact version `{id}` linked by step run `{}`", w.step_run.id),
            Reference::Cached(id) => return MetadataError::ArtifactGone(id.to_string()),
        })
    }
}

/// What `w` refers to: its run, then the versions it links.
pub(crate) fn references(w: &StepRunWrite) -> impl Iterator<Item = Reference<'_>> {
    let sr = &w.step_run;
    std::iter::once(Reference::Run(&sr.run_id)).chain(
        sr.outputs
            .iter()
            .map(move |o| match sr.status {
                StepStatus::Cached => Reference::Cached(&o.artifact.id),
                _ => Reference::Artifact(&o.artifact.id),
            })
            .chain(sr.inputs.iter().map(|i| Reference::Artifact(&i.artifact_version))),
    )
}
