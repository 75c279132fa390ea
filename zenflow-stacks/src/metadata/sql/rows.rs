//! Rows to records: one mapping per column list of [`super::statements`],
//! and the assembly of step runs from the five queries that load them.

use super::{corrupt, SqlRow};
use std::collections::{BTreeMap, HashMap};
use zenflow_core::metadata::*;
use zenflow_core::{Check, CheckStatus, ContentHash};

type Result<T> = std::result::Result<T, MetadataError>;

fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(corrupt)
}

/// A row of `run_cols!()`.
pub(crate) fn run(r: &impl SqlRow) -> Result<RunRecord> {
    Ok(RunRecord {
        id: r.text(0)?,
        pipeline: r.text(1)?,
        name: r.text(2)?,
        status: RunStatus::parse(&r.text(3)?)?,
        stack: r.text(4)?,
        config: json(&r.text(5)?)?,
        plan_json: r.text(6)?,
        git_commit: r.opt_text(7)?,
        started_at: r.int(8)?,
        ended_at: r.opt_int(9)?,
        error: r.opt_text(10)?,
        git_branch: r.opt_text(11)?,
        ci_job_url: r.opt_text(12)?,
    })
}

/// The `av_cols!()` of a row, from column `at`.
pub(crate) fn artifact_version(r: &(impl SqlRow + ?Sized), at: usize) -> Result<ArtifactVersion> {
    Ok(ArtifactVersion {
        id: r.text(at)?,
        name: r.text(at + 1)?,
        version: r.int(at + 2)?,
        uri: r.text(at + 3)?,
        content_hash: ContentHash::from_hex(&r.text(at + 4)?).map_err(corrupt)?,
        type_name: r.text(at + 5)?,
        materializer: r.text(at + 6)?,
        materializer_version: r.uint(at + 7)?,
        format: r.text(at + 8)?,
        metadata: json(&r.text(at + 9)?)?,
        producer_step_run: r.text(at + 10)?,
        run_id: r.text(at + 11)?,
        created_at: r.int(at + 12)?,
        inline: r.opt_blob(at + 13)?.map(bytes::Bytes::from),
    })
}

/// A row of `sr_cols!()`, without its outputs, inputs, metadata and checks.
pub(crate) fn step_run(r: &impl SqlRow) -> Result<StepRunRecord> {
    Ok(StepRunRecord {
        id: r.text(0)?,
        run_id: r.text(1)?,
        invocation: r.text(2)?,
        step: r.text(3)?,
        status: StepStatus::parse(&r.text(4)?)?,
        cache_key: r.opt_text(5)?,
        original_step_run: r.opt_text(6)?,
        started_at: r.int(7)?,
        ended_at: r.opt_int(8)?,
        error: r.opt_text(9)?,
        attempts: r.uint(10)?,
        logs: json(&r.text(11)?)?,
        metadata: BTreeMap::new(),
        checks: Vec::new(),
        outputs: Vec::new(),
        inputs: Vec::new(),
    })
}

/// The step run of a cache hit: id, run id, end.
pub(crate) type HitRun = (String, String, i64);

/// A row of [`super::statements::CACHE_HIT`]: the step run, and one of its
/// outputs with its position (none for a step run without outputs).
pub(crate) fn cache_hit_row(r: &impl SqlRow) -> Result<(HitRun, Option<(i64, OutputLink)>)> {
    let run = (r.text(0)?, r.text(1)?, r.opt_int(2)?.unwrap_or_default());
    let output = match r.opt_int(3)? {
        None => None,
        Some(position) => Some((position, OutputLink { output: r.text(4)?, artifact: artifact_version(r, 5)? })),
    };
    Ok((run, output))
}

/// The rows of [`super::statements::CACHE_HIT`] as a hit, outputs in order.
pub(crate) fn cache_hit(rows: Vec<(HitRun, Option<(i64, OutputLink)>)>) -> Option<CacheHit> {
    let (step_run, run_id, ended_at) = rows.first()?.0.clone();
    // Sorted here: an ORDER BY in the query built a temporary B-tree for
    // every hit in SQLite.
    let mut outputs: Vec<(i64, OutputLink)> = rows.into_iter().filter_map(|(_, o)| o).collect();
    outputs.sort_unstable_by_key(|(position, _)| *position);
    Some(CacheHit { step_run, run_id, ended_at, outputs: outputs.into_iter().map(|(_, o)| o).collect() })
}

/// What the five queries of [`super::statements::StepRunQueries`] return.
#[derive(Default)]
pub(crate) struct StepRunParts {
    /// The step runs.
    pub runs: Vec<StepRunRecord>,
    /// `(step run id, output)`.
    pub outputs: Vec<(String, OutputLink)>,
    /// `(step run id, input)`.
    pub inputs: Vec<(String, InputLink)>,
    /// `(step run id, key, value)`.
    pub metadata: Vec<(String, String, serde_json::Value)>,
    /// `(step run id, check)`.
    pub checks: Vec<(String, Check)>,
}

/// A row of the `outputs` query.
pub(crate) fn output_row(r: &impl SqlRow) -> Result<(String, OutputLink)> {
    Ok((r.text(0)?, OutputLink { output: r.text(1)?, artifact: artifact_version(r, 2)? }))
}

/// A row of the `inputs` query.
pub(crate) fn input_row(r: &impl SqlRow) -> Result<(String, InputLink)> {
    Ok((r.text(0)?, InputLink { input: r.text(1)?, position: r.uint(2)?, artifact_version: r.text(3)? }))
}

/// A row of the `metadata` query.
pub(crate) fn metadata_row(r: &impl SqlRow) -> Result<(String, String, serde_json::Value)> {
    Ok((r.text(0)?, r.text(1)?, json(&r.text(2)?)?))
}

/// A row of the `checks` query.
pub(crate) fn check_row(r: &impl SqlRow) -> Result<(String, Check)> {
    let status = r.text(2)?;
    let check = Check {
        name: r.text(1)?,
        status: CheckStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown check status `{status}`")))?,
        value: r.opt_real(3)?,
        threshold: r.opt_real(4)?,
        message: r.text(5)?,
    };
    Ok((r.text(0)?, check))
}

impl StepRunParts {
    /// The step runs with their outputs, inputs, metadata and checks.
    pub(crate) fn assemble(self) -> Vec<StepRunRecord> {
        let mut runs = self.runs;
        let pos: HashMap<String, usize> = runs.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
        for (id, output) in self.outputs {
            if let Some(&i) = pos.get(&id) {
                runs[i].outputs.push(output);
            }
        }
        for (id, input) in self.inputs {
            if let Some(&i) = pos.get(&id) {
                runs[i].inputs.push(input);
            }
        }
        for (id, key, value) in self.metadata {
            if let Some(&i) = pos.get(&id) {
                runs[i].metadata.insert(key, value);
            }
        }
        for (id, check) in self.checks {
            if let Some(&i) = pos.get(&id) {
                runs[i].checks.push(check);
            }
        }
        runs
    }
}
