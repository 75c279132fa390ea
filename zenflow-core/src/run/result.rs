//! What a run did: each step's result, the run's record and plan, and the
//! run's outputs.

use crate::metadata::{self, ArtifactVersion, OutputLink, RunRecord, RunStatus, StepStatus};
use crate::plan::Plan;
use crate::stack::stores::Stores;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The final state of one step in a run.
#[derive(Clone, Debug, PartialEq)]
pub struct StepResult {
    /// Invocation id.
    pub invocation: String,
    /// Final status: completed, cached, failed or skipped.
    pub status: StepStatus,
    /// The recorded step run.
    pub step_run_id: String,
    /// Outputs (empty unless completed or cached).
    pub outputs: Vec<OutputLink>,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// Attempts made (0 when cached or skipped).
    pub attempts: u32,
    /// Wall time spent on the step by the runner.
    pub duration: Duration,
    /// A failure that another attempt cannot fix (the step is not in this
    /// binary, or its code differs from the plan's): not retried.
    pub permanent: bool,
}

impl StepResult {
    /// The result `record` (a step's latest record) says, after `duration`
    /// of the runner's time on the step.
    pub(crate) fn of(record: &metadata::StepRunRecord, duration: Duration) -> StepResult {
        StepResult {
            invocation: record.invocation.clone(),
            status: record.status,
            step_run_id: record.id.clone(),
            outputs: record.outputs.clone(),
            error: record.error.clone(),
            attempts: record.attempts,
            duration,
            permanent: record.is_permanent_failure(),
        }
    }

    /// The output named `name`.
    pub fn output(&self, name: &str) -> Option<&ArtifactVersion> {
        self.outputs.iter().find(|o| o.output == name).map(|o| &o.artifact)
    }
}

/// The outcome of a run: its record, each step's result, and typed access to
/// the outputs. `O` is what the pipeline's body returned
/// ([`Pipeline::Output`](crate::Pipeline::Output)): [`RunResult::output`]
/// gives back its values. Reading its outputs back is in [`super::read`].
pub struct RunResult<O = ()> {
    pub(super) stores: Stores,
    pub(super) run: RunRecord,
    pub(super) plan: Arc<Plan>,
    pub(super) steps: Vec<StepResult>,
    pub(super) records: Arc<[metadata::StepRunRecord]>,
    pub(super) duration: std::time::Duration,
    /// The invocation id of each node of the build the handles point at
    /// (empty for a reopened run).
    pub(super) nodes: Arc<Vec<String>>,
    pub(super) _output: std::marker::PhantomData<fn() -> O>,
}

impl<O> Clone for RunResult<O> {
    fn clone(&self) -> Self {
        RunResult {
            stores: self.stores.clone(),
            run: self.run.clone(),
            plan: self.plan.clone(),
            steps: self.steps.clone(),
            records: self.records.clone(),
            duration: self.duration,
            nodes: self.nodes.clone(),
            _output: std::marker::PhantomData,
        }
    }
}

impl<O> fmt::Debug for RunResult<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunResult")
            .field("run", &self.run.name)
            .field("status", &self.run.status)
            .field("steps", &self.steps.len())
            .finish()
    }
}

impl RunResult {
    /// The untyped result of run `run` of `plan`, on the stack of `stores`:
    /// its steps' results, and their latest records in plan order.
    pub(super) fn new(
        stores: Stores,
        run: RunRecord,
        plan: Arc<Plan>,
        (steps, records): (Vec<StepResult>, Vec<metadata::StepRunRecord>),
        duration: std::time::Duration,
    ) -> RunResult {
        RunResult {
            stores,
            run,
            plan,
            steps,
            records: records.into(),
            duration,
            nodes: Arc::new(Vec::new()),
            _output: std::marker::PhantomData,
        }
    }

    /// This result typed by what a pipeline's body returns (`O` is its
    /// [`Pipeline::Output`](crate::Pipeline::Output)), so that
    /// [`RunResult::output`] gives back its values: what to do with the
    /// result inside [`Error::RunFailed`](crate::Error::RunFailed).
    pub fn into_typed<O>(self) -> RunResult<O> {
        self.typed(Vec::new())
    }

    /// This result, typed by what the pipeline's body returned.
    pub(crate) fn typed<O>(self, nodes: Vec<String>) -> RunResult<O> {
        self.retyped(Arc::new(nodes))
    }
}

impl<O> RunResult<O> {
    /// This result without its output type.
    pub fn erase(self) -> RunResult {
        let nodes = self.nodes.clone();
        self.retyped(nodes)
    }

    fn retyped<P>(self, nodes: Arc<Vec<String>>) -> RunResult<P> {
        RunResult {
            stores: self.stores,
            run: self.run,
            plan: self.plan,
            steps: self.steps,
            records: self.records,
            duration: self.duration,
            nodes,
            _output: std::marker::PhantomData,
        }
    }

    /// The record of the run.
    pub fn record(&self) -> &RunRecord {
        &self.run
    }

    /// Run id.
    pub fn id(&self) -> &str {
        &self.run.id
    }

    /// Run name.
    pub fn name(&self) -> &str {
        &self.run.name
    }

    /// Final status.
    pub fn status(&self) -> RunStatus {
        self.run.status
    }

    /// Whether every step completed or came from cache.
    pub fn is_success(&self) -> bool {
        self.run.status == RunStatus::Completed
    }

    /// The plan that ran.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Wall time of the whole run.
    pub fn duration(&self) -> std::time::Duration {
        self.duration
    }

    /// Every step's result, in plan order.
    pub fn steps(&self) -> &[StepResult] {
        &self.steps
    }

    /// The latest record of each step that reached a final state, in plan
    /// order: the step runs the metadata store holds for the run (logs,
    /// metadata, checks), without reading them back.
    pub fn records(&self) -> &[metadata::StepRunRecord] {
        &self.records
    }

    /// The result of invocation `id`.
    pub fn step(&self, id: &str) -> Option<&StepResult> {
        self.steps.iter().find(|s| s.invocation == id)
    }

    /// Invocation ids with the given status, in plan order.
    pub fn with_status(&self, status: StepStatus) -> Vec<&str> {
        self.steps.iter().filter(|s| s.status == status).map(|s| s.invocation.as_str()).collect()
    }

    /// Invocation ids that executed (completed).
    pub fn executed(&self) -> Vec<&str> {
        self.with_status(StepStatus::Completed)
    }

    /// Invocation ids served from cache.
    pub fn cached(&self) -> Vec<&str> {
        self.with_status(StepStatus::Cached)
    }

    /// One line: the run, its status, its time, and how many of its steps
    /// executed, came from cache, failed and were skipped.
    pub fn headline(&self) -> String {
        let count = |s| self.steps.iter().filter(|r| r.status == s).count();
        format!(
            "run {} of pipeline {}: {} in {:.1?} ({} executed, {} cached, {} failed, {} skipped)",
            self.run.name,
            self.plan.pipeline,
            self.run.status,
            self.duration,
            count(StepStatus::Completed),
            count(StepStatus::Cached),
            count(StepStatus::Failed),
            count(StepStatus::Skipped),
        )
    }

    /// [`RunResult::headline`], then a line per step: its status, time and error.
    pub fn summary(&self) -> String {
        let mut out = self.headline();
        for s in &self.steps {
            out.push_str(&format!("\n  {:<10} {:<24} {:>9.1?}", s.status.as_str(), s.invocation, s.duration));
            if let Some(e) = &s.error {
                out.push_str(&format!("  {e}"));
            }
        }
        out
    }
}

/// A run whose end could not be recorded (its metadata store failed at the
/// last write): what it did, from the run's own memory, for a report. Its
/// record says `running` until the next command on the machine marks it
/// failed (the run leaves its lock behind for that).
#[derive(Debug)]
pub struct Unrecorded {
    /// The run, with the status and error it would have recorded.
    pub run: RunRecord,
    /// Its plan.
    pub plan: Arc<Plan>,
    /// What each step that finished did.
    pub steps: Vec<StepResult>,
    /// Why its end could not be recorded.
    pub source: metadata::MetadataError,
}

impl fmt::Display for Unrecorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the end of run `{}` could not be recorded: {}. The next command on this machine marks it failed; \
             run the pipeline again to resume from the cache",
            self.run.name, self.source
        )
    }
}

impl std::error::Error for Unrecorded {}

/// A run that did not complete; the result is kept so its steps can be inspected.
#[derive(Debug)]
pub struct RunFailed(pub Box<RunResult>);

impl fmt::Display for RunFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.0;
        write!(
            f,
            "run `{}` of pipeline `{}` failed: {}",
            r.run.name,
            r.plan.pipeline,
            r.run.error.as_deref().unwrap_or("unknown error")
        )?;
        let skipped = r.with_status(StepStatus::Skipped).len();
        if skipped > 0 {
            write!(f, "; {skipped} dependent step(s) skipped")?;
        }
        write!(f, ". Completed artifacts are kept: fix the cause and run again to resume from cache")
    }
}

impl std::error::Error for RunFailed {}
