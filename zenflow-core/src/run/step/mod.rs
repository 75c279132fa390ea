//! The step runner: one implementation shared by every orchestrator.
//!
//! For one invocation of a run it resolves the inputs, computes the cache key,
//! reuses a cached result when it can, and otherwise loads the inputs, calls
//! the step (with retries, timeout and panic capture), saves the outputs and
//! records everything. It works from an in-memory view of the run when the
//! orchestrator is in-process, and from the metadata store alone when it is
//! not ([`StepRunner::attach`]: what `step-entrypoint` uses).

pub(crate) mod cache;
mod execute;
pub(crate) mod inputs;
mod outputs;
mod register;

use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::materializer::{Encoded, Handoff};
use crate::metadata::{self, OutputLink, RunRecord, StepRunRecord, StepRunWrite, StepStatus};
use crate::plan::Plan;
use crate::run::options::{RunEvent, RunOptions};
use crate::run::result::StepResult;
use crate::stack::stores::Stores;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The prefix of the step-run metadata that records how a model input was
/// resolved: `zenflow.model_input.<input>` = `{model, alias, version}`
/// (`version` null when no version held the alias).
pub const MODEL_INPUT_PREFIX: &str = "zenflow.model_input.";

/// The step-run metadata key of the process that runs a step started by
/// the step entrypoint: `{host, pid, attempt}`.
pub(crate) const WORKER_KEY: &str = "zenflow.worker";

/// Runs the steps of one run.
pub struct StepRunner {
    stores: Stores,
    run: RunRecord,
    plan: Arc<Plan>,
    index: HashMap<String, usize>,
    dependents: Vec<Vec<usize>>,
    dependencies: Vec<Vec<usize>>,
    options: RunOptions,
    /// Each step that reached a final state, by plan position.
    finished: Mutex<Vec<Option<Finished>>>,
    /// Whether the plan may come from another build (see [`same_code`]).
    verify_code: bool,
    /// How many inputs of the plan read each output `(position, name)`.
    consumers: HashMap<(usize, String), usize>,
    /// Outputs produced by this runner that steps still to run will read:
    /// they get the bytes (or the value) from memory, not from the store.
    handoffs: Mutex<HashMap<(usize, String), Handed>>,
    /// The latest earlier runs of the pipeline with their step runs, read
    /// once, when a step first has to say why it ran.
    earlier_runs: tokio::sync::OnceCell<Vec<(Arc<Plan>, Vec<StepRunRecord>)>>,
}

/// A step that reached a final state.
#[derive(Clone)]
struct Finished {
    /// Shared with the callers of [`StepRunner::run_step`], not copied.
    result: Arc<StepResult>,
    /// Its latest record, as written, until the run's result takes it.
    record: Option<StepRunRecord>,
}

/// An output kept in memory for the steps of this run that read it.
struct Handed {
    hash: ContentHash,
    /// The bytes, unless the encoding was streamed (then only the store has them).
    encoded: Option<Encoded>,
    value: Option<Handoff>,
    /// Inputs that have not read it yet.
    left: usize,
}

impl std::fmt::Debug for StepRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepRunner").field("run", &self.run.id).field("stack", &self.stores.name()).finish()
    }
}

impl StepRunner {
    /// A runner for a run that has just been created with this plan.
    pub fn new(stores: Stores, run: RunRecord, plan: Arc<Plan>, options: RunOptions) -> Self {
        let index: HashMap<String, usize> = plan.steps.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
        let dependencies = plan.dependencies();
        let mut dependents = vec![Vec::new(); plan.steps.len()];
        for (i, deps) in dependencies.iter().enumerate() {
            for &d in deps {
                dependents[d].push(i);
            }
        }
        let finished = Mutex::new(vec![None; plan.steps.len()]);
        let mut consumers: HashMap<(usize, String), usize> = HashMap::new();
        for input in plan.steps.iter().flat_map(|s| &s.inputs) {
            for r in &input.from {
                if let Some(&pos) = index.get(&r.step) {
                    *consumers.entry((pos, r.output.clone())).or_default() += 1;
                }
            }
        }
        StepRunner {
            stores,
            run,
            plan,
            index,
            dependents,
            dependencies,
            options,
            finished,
            verify_code: false,
            consumers,
            handoffs: Mutex::default(),
            earlier_runs: tokio::sync::OnceCell::new(),
        }
    }

    /// A runner for an existing run, read back from the metadata store: what a
    /// worker process uses to execute one step of a run it did not start.
    pub async fn attach(stores: Stores, run_id: &str, options: RunOptions) -> Result<Self> {
        let run =
            stores.metadata().get_run(run_id).await?.ok_or_else(|| {
                Error::NotFound(format!("run `{run_id}` does not exist in {}", stores.metadata().url()))
            })?;
        let plan = Arc::new(run.plan()?);
        let mut runner = StepRunner::new(stores, run, plan, options);
        // The run was planned by some process, maybe another build.
        runner.verify_code = true;
        // Its other steps run elsewhere: nothing to hand over in memory.
        runner.consumers.clear();
        Ok(runner)
    }

    /// The run.
    pub fn run(&self) -> &RunRecord {
        &self.run
    }

    /// The plan.
    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// The stores of the stack the run is on.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Position of each step's direct dependencies in the plan.
    pub fn dependencies(&self) -> &[Vec<usize>] {
        &self.dependencies
    }

    /// Position of each step's direct dependents in the plan.
    pub fn dependents(&self) -> &[Vec<usize>] {
        &self.dependents
    }

    /// Position of invocation `id` in the plan.
    pub fn position(&self, id: &str) -> Result<usize> {
        self.index.get(id).copied().ok_or_else(|| {
            Error::NotFound(format!(
                "run `{}` of pipeline `{}` has no step `{id}`; its steps are: {}",
                self.run.name,
                self.plan.pipeline,
                self.plan.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Results of the steps that reached a final state, in plan order.
    pub fn results(&self) -> Vec<StepResult> {
        self.finished().iter().flatten().map(|f| (*f.result).clone()).collect()
    }

    /// Takes the latest record of each step that reached a final state, as
    /// written, in plan order: moved, not copied, as a run of many steps
    /// would hold them twice at its peak.
    pub(crate) fn take_records(&self) -> Vec<StepRunRecord> {
        self.finished().iter_mut().flatten().filter_map(|f| f.record.take()).collect()
    }

    /// The result of the step at `pos`, once it reached a final state.
    fn result(&self, pos: usize) -> Option<Arc<StepResult>> {
        self.finished()[pos].as_ref().map(|f| f.result.clone())
    }

    fn finished(&self) -> std::sync::MutexGuard<'_, Vec<Option<Finished>>> {
        self.finished.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, event: RunEvent<'_>) {
        if let Some(observer) = &self.options.observer {
            observer(&event);
        }
    }

    /// Takes the step at `pos` as finished, as `record` (its final record,
    /// as written) says, after `duration` of the runner's time.
    fn finish(&self, pos: usize, record: StepRunRecord, duration: Duration) -> Arc<StepResult> {
        let result = StepResult::of(&record, duration);
        self.emit(RunEvent::StepFinished { result: &result });
        let result = Arc::new(result);
        self.finished()[pos] = Some(Finished { result: result.clone(), record: Some(record) });
        result
    }

    /// Resolves, and if needed executes, the step at plan position `pos`,
    /// with every attempt its retry policy allows. Errors of the step itself
    /// are a `failed` result; `Err` means the stores failed and nothing could
    /// be recorded.
    pub async fn run_step(&self, pos: usize) -> Result<Arc<StepResult>> {
        let last = self.plan.steps[pos].options.retries.saturating_add(1);
        self.run_attempts(pos, 1, last).await
    }

    /// Resolves, and if needed executes, attempt `attempt` alone of the step
    /// at `pos` (no retry: the caller decides whether another attempt
    /// follows). What an orchestrator that runs each attempt elsewhere calls,
    /// through the step entrypoint.
    pub async fn run_attempt(&self, pos: usize, attempt: u32) -> Result<Arc<StepResult>> {
        self.run_attempts(pos, attempt.max(1), attempt.max(1)).await
    }

    /// Writes a step run record, its error, logs and check messages
    /// redacted first (see [`crate::redact`]): every record of this runner
    /// goes through here.
    async fn record(&self, write: &mut StepRunWrite) -> Result<Vec<OutputLink>> {
        write.step_run.redact();
        Ok(self.stores.metadata().write_step_run(write).await?)
    }

    /// A record of the step at `pos` with nothing in it yet: what every
    /// write of this runner starts from.
    fn bare_record(
        &self,
        pos: usize,
        id: String,
        status: StepStatus,
        started_at: metadata::Timestamp,
    ) -> StepRunRecord {
        let step = &self.plan.steps[pos];
        StepRunRecord::empty(id, &self.run.id, &step.id, &step.step, status, started_at)
    }

    /// Records the step at `pos`, and everything downstream of it that has
    /// not run, as skipped because `failed` failed. Returns the positions skipped.
    pub async fn skip_dependents(&self, failed: usize) -> Result<Vec<usize>> {
        let failed_id = self.plan.steps[failed].id.clone();
        let mut stack: Vec<usize> = self.dependents[failed].clone();
        let mut skipped = Vec::new();
        while let Some(pos) = stack.pop() {
            let already = self.finished()[pos].is_some();
            if already || skipped.contains(&pos) {
                continue;
            }
            skipped.push(pos);
            stack.extend(self.dependents[pos].iter().copied());
        }
        skipped.sort_unstable();
        let reason = format!("skipped because upstream step `{failed_id}` failed");
        for &pos in &skipped {
            self.skip(pos, &reason).await?;
        }
        Ok(skipped)
    }

    /// Records the step at `pos` as skipped, for `reason` (an upstream
    /// failure), and returns its result.
    pub async fn skip(&self, pos: usize, reason: &str) -> Result<Arc<StepResult>> {
        let step = &self.plan.steps[pos];
        // What it would have read from memory is not needed for it any more.
        for r in step.inputs.iter().flat_map(|i| &i.from) {
            drop(self.take_handed(r, None));
        }
        let now = metadata::now();
        let mut record = self.bare_record(pos, uuid::Uuid::now_v7().to_string(), StepStatus::Skipped, now);
        record.ended_at = Some(now);
        record.error = Some(reason.to_string());
        let mut write = StepRunWrite { step_run: record, new_outputs: Vec::new() };
        self.record(&mut write).await?;
        Ok(self.finish(pos, write.step_run, Duration::ZERO))
    }

    /// Tells the observer that the step at `pos` is starting: what an
    /// orchestrator that runs the step elsewhere calls as it launches it.
    pub fn announce(&self, pos: usize) {
        self.emit(RunEvent::StepStarted { invocation: &self.plan.steps[pos].id });
    }

    /// Records attempt `attempt` of the step at `pos`, which ran elsewhere
    /// and ended without recording its result (its process died, its job
    /// was stopped or lost), as failed for `error`, with `logs` (what the
    /// orchestrator saw of its output). `running` is the record the attempt
    /// left as running, if any: that record is closed rather than a second
    /// one added. Returns the record written.
    pub async fn record_failure(
        &self,
        pos: usize,
        attempt: u32,
        running: Option<&StepRunRecord>,
        error: &str,
        logs: Vec<String>,
    ) -> Result<StepRunRecord> {
        let now = metadata::now();
        let mut record = match running {
            Some(r) if r.status == StepStatus::Running => r.clone(),
            _ => self.bare_record(pos, uuid::Uuid::now_v7().to_string(), StepStatus::Running, now),
        };
        record.status = StepStatus::Failed;
        record.error = Some(error.to_string());
        record.ended_at = Some(now);
        record.attempts = attempt;
        record.logs.extend(logs);
        record.outputs.clear();
        let mut write = StepRunWrite { step_run: record, new_outputs: Vec::new() };
        self.record(&mut write).await?;
        Ok(write.step_run)
    }

    /// Takes the result of a step that ran elsewhere (a child process, a job
    /// on a cluster) from its latest record, as if this runner had run it:
    /// what an orchestrator calls once the attempt has ended, so that
    /// [`StepRunner::results`] and [`StepRunner::skip_dependents`] see it.
    pub fn record_external(&self, pos: usize, record: StepRunRecord) -> Arc<StepResult> {
        let duration = record.duration().unwrap_or_default();
        self.finish(pos, record, duration)
    }

    /// Records a step that failed before it could start (an input that
    /// cannot be resolved).
    async fn fail_early(
        &self,
        pos: usize,
        step_run_id: String,
        started: std::time::Instant,
        started_at: metadata::Timestamp,
        error: String,
    ) -> Result<Arc<StepResult>> {
        let mut record = self.bare_record(pos, step_run_id, StepStatus::Failed, started_at);
        record.ended_at = Some(metadata::now());
        let write = StepRunWrite { step_run: record, new_outputs: Vec::new() };
        self.refuse_registration(pos, write, started, error).await
    }
}
