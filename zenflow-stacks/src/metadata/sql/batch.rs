//! What both stores remember about their group commits.
//!
//! A write joins an open batch and returns before the batch is committed.
//! If the commit then fails, the writes it lost have already been reported
//! as done, so the store keeps, per batch, which runs wrote what
//! ([`BatchLog`]). A lost batch becomes [`Lost`] runs: every later write of
//! such a run fails with the reason, and closing the run records it as
//! failed, with the step runs the batch lost as failed too ([`Lost::recovery`]).
//! Writes of other runs go on unaffected.

use super::statements as q;
use super::write::{Ops, Returns};
use std::collections::{HashMap, HashSet};
use zenflow_core::metadata::*;

/// A run created in a batch, as much as it takes to record it again.
#[derive(Clone, Debug)]
pub(crate) struct RunRow {
    id: String,
    pipeline: String,
    name: String,
    stack: String,
    config: String,
    plan: String,
    git_commit: Option<String>,
    started_at: Timestamp,
    git_branch: Option<String>,
    ci_job_url: Option<String>,
}

impl RunRow {
    /// The row of `run` (its config and plan as stored).
    pub(crate) fn new(run: &NewRun, config: &str, plan: &str) -> Self {
        RunRow {
            id: run.id.clone(),
            pipeline: run.pipeline.clone(),
            name: run.name.clone(),
            stack: run.stack.clone(),
            config: config.to_string(),
            plan: plan.to_string(),
            git_commit: run.git_commit.clone(),
            started_at: run.started_at,
            git_branch: run.git_branch.clone(),
            ci_job_url: run.ci_job_url.clone(),
        }
    }

    /// The parameters of [`q::CREATE_RUN`] that record this run with `status`.
    pub(crate) fn create_params<'a>(&'a self, status: &'a str) -> [super::Value<'a>; 11] {
        [
            (&self.id).into(),
            (&self.pipeline).into(),
            (&self.name).into(),
            status.into(),
            (&self.stack).into(),
            (&self.config).into(),
            (&self.plan).into(),
            (&self.git_commit).into(),
            self.started_at.into(),
            (&self.git_branch).into(),
            (&self.ci_job_url).into(),
        ]
    }
}

/// A step run recorded in a batch.
#[derive(Clone, Debug)]
struct StepRow {
    id: String,
    invocation: String,
    step: String,
    started_at: Timestamp,
}

#[derive(Debug, Default)]
struct RunLog {
    created: Option<RunRow>,
    steps: Vec<StepRow>,
}

/// The runs that wrote to the open batch, and what they wrote.
#[derive(Debug, Default)]
pub(crate) struct BatchLog {
    runs: HashMap<String, RunLog>,
}

impl BatchLog {
    /// Run `row` was created in this batch.
    pub(crate) fn created(&mut self, row: RunRow) {
        let id = row.id.clone();
        self.runs.entry(id).or_default().created = Some(row);
    }

    /// Step run `sr` was written in this batch. (A step run written twice,
    /// its marker then its record, is listed twice: recording the loss
    /// rewrites it, which is idempotent, and a check would cost every write.)
    pub(crate) fn wrote(&mut self, sr: &StepRunRecord) {
        let steps = match self.runs.get_mut(&sr.run_id) {
            Some(run) => &mut run.steps,
            None => &mut self.runs.entry(sr.run_id.clone()).or_default().steps,
        };
        steps.push(StepRow {
            id: sr.id.clone(),
            invocation: sr.invocation.clone(),
            step: sr.step.clone(),
            started_at: sr.started_at,
        });
    }

    /// Run `id` changed in this batch (its status, a heartbeat).
    pub(crate) fn touched(&mut self, id: &str) {
        self.runs.entry(id.to_string()).or_default();
    }

    /// Forgets the batch (it was committed).
    pub(crate) fn clear(&mut self) {
        self.runs.clear();
    }
}

/// A run whose records a failed commit took back.
#[derive(Debug)]
pub(crate) struct LostRun {
    reason: String,
    created: Option<RunRow>,
    steps: Vec<StepRow>,
}

/// Runs whose records a failed commit took back, by id.
#[derive(Debug, Default)]
pub(crate) struct Lost {
    runs: HashMap<String, LostRun>,
}

impl Lost {
    /// The batch of `log` could not be committed because of `reason`.
    pub(crate) fn lose(&mut self, log: &mut BatchLog, reason: &str) {
        for (id, run) in log.runs.drain() {
            let lost = self.runs.entry(id).or_insert_with(|| LostRun {
                reason: reason.to_string(),
                created: None,
                steps: Vec::new(),
            });
            lost.created = lost.created.take().or(run.created);
            lost.steps.extend(run.steps);
        }
    }

    /// Whether run `id` lost records.
    #[cfg(test)]
    pub(crate) fn has(&self, id: &str) -> bool {
        self.runs.contains_key(id)
    }

    /// The error of a write of run `id` after its records were lost.
    pub(crate) fn check(&self, id: &str, location: &str) -> Result<(), MetadataError> {
        match self.runs.get(id) {
            None => Ok(()),
            Some(lost) => Err(lost.error(location)),
        }
    }

    /// Takes run `id`'s loss, to record it.
    pub(crate) fn take(&mut self, id: &str) -> Option<LostRun> {
        self.runs.remove(id)
    }

    /// Puts back a loss that could not be recorded.
    pub(crate) fn restore(&mut self, id: &str, lost: LostRun) {
        self.runs.insert(id.to_string(), lost);
    }
}

impl LostRun {
    /// Why: the commit's own error, and what it means.
    pub(crate) fn error(&self, location: &str) -> MetadataError {
        MetadataError::Backend {
            location: location.to_string(),
            message: format!(
                "records of this run were lost: {}; the steps they recorded are marked failed, run the \
                 pipeline again to redo them",
                self.reason
            ),
        }
    }

    /// The statements that record the loss of run `run_id` at `now`: the
    /// run again if the loss took it, every lost step run as failed, and
    /// the run as failed.
    pub(crate) fn recovery<'a>(&'a self, run_id: &'a str, error: &'a str, now: &'a Timestamp) -> Ops<'a> {
        let mut ops = Ops::default();
        if let Some(r) = &self.created {
            ops.push(q::CREATE_PIPELINE, Returns::Nothing, &[(&r.pipeline).into(), r.started_at.into()]);
            ops.push(q::CREATE_RUN, Returns::Nothing, &r.create_params("failed"));
        }
        for s in &self.steps {
            ops.push(
                q::UPSERT_STEP_RUN,
                Returns::Nothing,
                &[
                    (&s.id).into(),
                    run_id.into(),
                    (&s.invocation).into(),
                    (&s.step).into(),
                    "failed".into(),
                    super::Value::Text(None),
                    super::Value::Text(None),
                    s.started_at.into(),
                    (*now).into(),
                    error.into(),
                    0u32.into(),
                    "[]".into(),
                ],
            );
        }
        ops.push(
            q::SET_RUN_STATUS,
            Returns::Nothing,
            &["failed".into(), error.into(), (*now).into(), super::Value::Int(None), run_id.into()],
        );
        ops.push(q::CLOSE_RUNNING_STEPS, Returns::Nothing, &[(*now).into(), run_id.into()]);
        ops
    }
}

/// Ids of runs and artifact versions this handle has seen in the database
/// (records are never deleted): a write that refers only to these needs no
/// check that they exist. Bounded; forgets everything when full, and when
/// a batch is lost (the ids it created are gone).
#[derive(Debug, Default)]
pub(crate) struct KnownIds {
    ids: HashSet<String>,
}

impl KnownIds {
    const CAPACITY: usize = 16_384;

    /// Remembers that `id` exists.
    pub(crate) fn insert(&mut self, id: &str) {
        if self.ids.len() >= Self::CAPACITY {
            self.ids.clear();
        }
        if !self.ids.contains(id) {
            self.ids.insert(id.to_string());
        }
    }

    /// Whether `id` is known to exist.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.ids.clear();
    }
}
