//! The step runner: one implementation shared by every orchestrator.
//!
//! For one invocation of a run it resolves the inputs, computes the cache key,
//! reuses a cached result when it can, and otherwise loads the inputs, calls
//! the step (with retries, timeout and panic capture), saves the outputs and
//! records everything. It works from an in-memory view of the run when the
//! orchestrator is in-process, and from the metadata store alone when it is
//! not ([`StepRunner::attach`]: what `step-entrypoint` uses).

use crate::artifact_store::{self, StoreError};
use crate::cache::cache_key;
use crate::context::StepContext;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::logs;
use crate::materializer::{Encoded, EncodedValue, Handoff};
use crate::metadata::{
    self, ArtifactVersion, InputLink, NewArtifact, OutputLink, RunRecord, StepRunRecord, StepRunWrite, StepStatus,
};
use crate::plan::{OutputRef, Plan, PlanStep};
use crate::stack::Stack;
use crate::step::{self, LoadedInput, StepCall, StepError};
use futures::FutureExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::Instrument;

/// The prefix of the step-run metadata that records how a model input was
/// resolved: `zenflow.model_input.<input>` = `{model, alias, version}`
/// (`version` null when no version held the alias).
pub const MODEL_INPUT_PREFIX: &str = "zenflow.model_input.";

/// Something that happened in a run, for progress displays and logs.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// A step is about to be resolved (cache lookup or execution).
    StepStarted {
        /// Invocation id.
        invocation: &'a str,
    },
    /// A step reached a final state.
    StepFinished {
        /// Its result.
        result: &'a StepResult,
    },
}

/// Receives [`RunEvent`]s; called from the runtime's threads.
pub type Observer = Arc<dyn Fn(&RunEvent<'_>) + Send + Sync>;

/// Per-run switches.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Disable the cache for every step of this run (`--no-cache`).
    pub no_cache: bool,
    /// Run name; generated from the pipeline name and the time when absent.
    pub run_name: Option<String>,
    /// Called on every [`RunEvent`].
    pub observer: Option<Observer>,
    /// Also keep what the step prints to this process's stdout and stderr
    /// with its log (still passed through to where they pointed). The file
    /// descriptors are the process's, so this is for processes that run one
    /// step at a time: what the step entrypoint sets.
    pub capture_stdio: bool,
    /// Reuse no cached result older than this (`--cache-ttl`), whatever the
    /// step allows.
    pub cache_ttl: Option<std::time::Duration>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("no_cache", &self.no_cache)
            .field("run_name", &self.run_name)
            .field("observer", &self.observer.is_some())
            .field("capture_stdio", &self.capture_stdio)
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

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
    /// The output named `name`.
    pub fn output(&self, name: &str) -> Option<&ArtifactVersion> {
        self.outputs.iter().find(|o| o.output == name).map(|o| &o.artifact)
    }
}

/// Refuses to run a step whose code is not the code that planned the run:
/// its results would be recorded under the old code's cache key (a worker
/// built from another commit, a step edited since `run --dry-run`).
fn same_code(spec: &step::StepSpec, step: &PlanStep, run: &str) -> std::result::Result<(), String> {
    let names = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>().join(", ");
    let differs = if spec.code.hash != step.code_hash {
        Some(format!(
            "its code changed (code hash {} in the plan, {} in this binary)",
            &step.code_hash[..12.min(step.code_hash.len())],
            &spec.code.hash[..12]
        ))
    } else if spec.version != step.version.as_deref() {
        Some(format!("its version changed ({:?} in the plan, {:?} in this binary)", step.version, spec.version))
    } else {
        let plan_inputs = names(&mut step.inputs.iter().map(|i| i.name.clone()));
        let code_inputs = names(&mut spec.inputs.iter().map(|i| i.name.to_string()));
        let plan_params = names(&mut step.params.keys().cloned());
        let mut sorted: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
        sorted.sort_unstable();
        let code_params = sorted.join(", ");
        (plan_inputs != code_inputs || plan_params != code_params).then(|| {
            format!("its inputs or parameters changed (plan: inputs [{plan_inputs}], parameters [{plan_params}]; this binary: inputs [{code_inputs}], parameters [{code_params}])")
        })
    };
    match differs {
        Some(why) => Err(format!(
            "step `{}` in this binary is not the one run `{run}` was planned with: {why}; start a new run with this binary instead",
            step.id
        )),
        None => Ok(()),
    }
}

/// A step about to run: its record (running), resolved inputs, and how
/// its model inputs were resolved.
struct Prepared {
    /// Why the cache could not serve the step, when its lookup said.
    miss: Option<crate::why::Reason>,
    write: StepRunWrite,
    inputs: Vec<Vec<ArtifactVersion>>,
    models: Vec<(String, serde_json::Value)>,
    started: std::time::Instant,
    step_run_id: String,
}

/// What executing a step (all its attempts) produced.
struct Execution {
    outcome: std::result::Result<Vec<EncodedValue>, String>,
    attempts: u32,
    logs: Vec<String>,
    metadata: std::collections::BTreeMap<String, serde_json::Value>,
    checks: Vec<crate::check::Check>,
    /// Another attempt would fail the same way.
    permanent: bool,
}

impl Execution {
    /// Failed before or at attempt `attempt` ran the step's code (its
    /// record must count that attempt, or an orchestrator would take it
    /// for one that died without recording).
    fn failed(error: String, attempt: u32) -> Self {
        Execution {
            outcome: Err(error),
            attempts: attempt,
            logs: Vec::new(),
            metadata: Default::default(),
            checks: Vec::new(),
            permanent: false,
        }
    }

    fn permanent(error: String, attempt: u32) -> Self {
        Execution { permanent: true, ..Execution::failed(error, attempt) }
    }
}

pub use crate::metadata::PERMANENT_KEY;

/// The step-run metadata key of the process that runs a step started by
/// the step entrypoint: `{host, pid, attempt}`.
pub const WORKER_KEY: &str = "zenflow.worker";

/// How many earlier runs a step that executes is compared with, at most,
/// to say why it did.
const EARLIER_RUNS: usize = 10;

/// Runs the steps of one run.
pub struct StepRunner {
    stack: Stack,
    run: RunRecord,
    plan: Arc<Plan>,
    index: HashMap<String, usize>,
    dependents: Vec<Vec<usize>>,
    dependencies: Vec<Vec<usize>>,
    options: RunOptions,
    /// Shared with the callers of [`StepRunner::run_step`], not copied.
    results: Mutex<Vec<Option<Arc<StepResult>>>>,
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
        f.debug_struct("StepRunner").field("run", &self.run.id).field("stack", &self.stack.name()).finish()
    }
}

impl StepRunner {
    /// A runner for a run that has just been created with this plan.
    pub fn new(stack: Stack, run: RunRecord, plan: Arc<Plan>, options: RunOptions) -> Self {
        let index: HashMap<String, usize> = plan.steps.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
        let dependencies = plan.dependencies();
        let mut dependents = vec![Vec::new(); plan.steps.len()];
        for (i, deps) in dependencies.iter().enumerate() {
            for &d in deps {
                dependents[d].push(i);
            }
        }
        let results = Mutex::new(vec![None; plan.steps.len()]);
        let mut consumers: HashMap<(usize, String), usize> = HashMap::new();
        for input in plan.steps.iter().flat_map(|s| &s.inputs) {
            for r in &input.from {
                if let Some(&pos) = index.get(&r.step) {
                    *consumers.entry((pos, r.output.clone())).or_default() += 1;
                }
            }
        }
        StepRunner {
            stack,
            run,
            plan,
            index,
            dependents,
            dependencies,
            options,
            results,
            verify_code: false,
            consumers,
            handoffs: Mutex::default(),
            earlier_runs: tokio::sync::OnceCell::new(),
        }
    }

    /// A runner for an existing run, read back from the metadata store: what a
    /// worker process uses to execute one step of a run it did not start.
    pub async fn attach(stack: Stack, run_id: &str, options: RunOptions) -> Result<Self> {
        let run =
            stack.metadata().get_run(run_id).await?.ok_or_else(|| {
                Error::NotFound(format!("run `{run_id}` does not exist in {}", stack.metadata().url()))
            })?;
        let plan = Arc::new(run.plan()?);
        let mut runner = StepRunner::new(stack, run, plan, options);
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

    /// The stack.
    pub fn stack(&self) -> &Stack {
        &self.stack
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
        self.results.lock().unwrap_or_else(PoisonError::into_inner).iter().flatten().map(|r| (**r).clone()).collect()
    }

    fn emit(&self, event: RunEvent<'_>) {
        if let Some(observer) = &self.options.observer {
            observer(&event);
        }
    }

    fn finish(&self, pos: usize, result: StepResult) -> Arc<StepResult> {
        self.emit(RunEvent::StepFinished { result: &result });
        let result = Arc::new(result);
        self.results.lock().unwrap_or_else(PoisonError::into_inner)[pos] = Some(result.clone());
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
        Ok(self.stack.metadata().write_step_run(write).await?)
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

    /// Serves the step at `pos` from the cache if it may be (cache on, a
    /// hit for its inputs), recording it as cached; `None` when it must
    /// run, with nothing recorded. What an orchestrator that runs steps
    /// elsewhere calls first, so an unchanged step costs no process or job.
    pub async fn serve_cached(&self, pos: usize) -> Result<Option<Arc<StepResult>>> {
        let step = &self.plan.steps[pos];
        if !step.options.cache || self.options.no_cache {
            return Ok(None);
        }
        match self.prepare(pos, 1).await? {
            // Its inputs cannot be resolved: the step's own outcome.
            Err(failed) => Ok(Some(failed)),
            Ok(mut prepared) => self.try_cache(pos, &mut prepared).await,
        }
    }

    /// Resolves the step's inputs and builds its record; `Err` holds the
    /// result of a step that failed before it could start (recorded).
    async fn prepare(&self, pos: usize, first: u32) -> Result<std::result::Result<Prepared, Arc<StepResult>>> {
        let step = &self.plan.steps[pos];
        let started = std::time::Instant::now();
        let started_at = metadata::now();
        let step_run_id = uuid::Uuid::now_v7().to_string();
        let (inputs, models) = match self.resolve_inputs(step).await {
            Ok(resolved) => resolved,
            // A model input that cannot be resolved fails the step, not the run's records.
            Err(Error::Registry(e)) if !matches!(e, crate::registry::RegistryError::Store(_)) => {
                return self.fail_early(pos, step_run_id, started, started_at, e.to_string()).await.map(Err)
            }
            Err(e) => return Err(e),
        };
        let hashes: Vec<Vec<ContentHash>> =
            inputs.iter().map(|links| links.iter().map(|a| a.content_hash).collect()).collect();
        let key = cache_key(step, &hashes).to_hex();
        let input_links: Vec<InputLink> = step
            .inputs
            .iter()
            .zip(&inputs)
            .flat_map(|(spec, versions)| {
                versions.iter().enumerate().map(|(i, v)| InputLink {
                    input: spec.name.clone(),
                    position: i as u32,
                    artifact_version: v.id.clone(),
                })
            })
            .collect();

        let mut record = self.bare_record(pos, step_run_id.clone(), StepStatus::Running, started_at);
        record.cache_key = Some(key.clone());
        record.inputs = input_links;
        let mut write = StepRunWrite { step_run: record, new_outputs: Vec::new() };
        for (input, resolved) in &models {
            write.step_run.metadata.insert(format!("{MODEL_INPUT_PREFIX}{input}"), resolved.clone());
        }
        if self.verify_code {
            // A worker: which process runs it, for the next attempt to tell
            // whether this one is still alive.
            write.step_run.metadata.insert(
                WORKER_KEY.into(),
                serde_json::json!({"host": crate::entrypoint::host(), "pid": std::process::id(), "attempt": first}),
            );
        }

        Ok(Ok(Prepared { miss: None, write, inputs, models, started, step_run_id }))
    }

    /// Records the step as served from cache if the cache holds its key.
    async fn try_cache(&self, pos: usize, prepared: &mut Prepared) -> Result<Option<Arc<StepResult>>> {
        let step = &self.plan.steps[pos];
        let Some(key) = prepared.write.step_run.cache_key.clone() else { return Ok(None) };
        if !step.options.cache || self.options.no_cache {
            return Ok(None);
        }
        let hit = match self.cache_lookup(&key, step.options.cache_ttl_ms).await? {
            Ok(hit) => hit,
            Err(miss) => {
                prepared.miss = miss;
                return Ok(None);
            }
        };
        let mut write = prepared.write.clone();
        let sr = &mut write.step_run;
        sr.status = StepStatus::Cached;
        sr.original_step_run = Some(hit.step_run);
        sr.ended_at = Some(metadata::now());
        sr.outputs = hit.outputs;
        let outputs = self.record(&mut write).await?;
        if let Err(e) = self.register_model(step, &write, &outputs, &prepared.inputs).await {
            return self.refuse_registration(pos, write, prepared.started, e).await.map(Some);
        }
        Ok(Some(self.finish(
            pos,
            StepResult {
                invocation: step.id.clone(),
                status: StepStatus::Cached,
                step_run_id: prepared.step_run_id.clone(),
                outputs,
                error: None,
                attempts: 0,
                duration: prepared.started.elapsed(),
                permanent: false,
            },
        )))
    }

    async fn run_attempts(&self, pos: usize, first: u32, last: u32) -> Result<Arc<StepResult>> {
        self.emit(RunEvent::StepStarted { invocation: &self.plan.steps[pos].id });
        let mut prepared = match self.prepare(pos, first).await? {
            Ok(p) => p,
            Err(failed) => return Ok(failed),
        };
        if let Some(hit) = self.try_cache(pos, &mut prepared).await? {
            return Ok(hit);
        }
        let why = self.why_executed(pos, &prepared).await;
        let Prepared { mut write, inputs, models, started, step_run_id, .. } = prepared;
        let step = &self.plan.steps[pos];
        if !why.is_empty() {
            write.step_run.metadata.insert(crate::why::WHY_KEY.into(), serde_json::to_value(why).unwrap_or_default());
        }
        self.record(&mut write).await?;
        if self.verify_code {
            // A worker: whoever watches it (its orchestrator, an engine's
            // exit handler) must see that it runs, even if it dies mid-step.
            self.stack.metadata().flush().await?;
        }
        let model_versions: std::collections::BTreeMap<String, Option<i64>> =
            models.iter().map(|(input, resolved)| (input.clone(), resolved["version"].as_i64())).collect();
        let execution = match self.load_inputs(step, &inputs).await {
            Ok(loaded) => {
                let env = crate::context::AttemptEnv {
                    models: model_versions,
                    inputs: write.step_run.inputs.clone(),
                    stack: Some(self.stack.clone()),
                };
                self.execute_attempts(step, loaded, &env, &step_run_id, first, last).await
            }
            Err(e) => Execution::failed(e.to_string(), first),
        };
        let attempts = execution.attempts;
        write.step_run.attempts = attempts;
        write.step_run.logs = execution.logs;
        write.step_run.metadata.extend(execution.metadata);
        if execution.permanent {
            write.step_run.metadata.insert(PERMANENT_KEY.into(), serde_json::Value::Bool(true));
        }
        let permanent = execution.permanent;
        write.step_run.checks = execution.checks;
        let mut handed = Vec::new();
        let outcome = match execution.outcome {
            Ok(mut values) => {
                for (i, (o, v)) in step.outputs.iter().zip(&mut values).enumerate() {
                    // A value nobody here reads is dropped now, not kept
                    // alive while its bytes are stored.
                    let value = v.handoff.take();
                    let key = (pos, o.name.clone());
                    if let Some(&left) = self.consumers.get(&key) {
                        let encoded = v.streamed.is_none().then(|| v.encoded.clone());
                        handed.push((i, key, encoded, value, left));
                    }
                }
                self.save_outputs(step, values).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        write.step_run.ended_at = Some(metadata::now());
        let (status, error) = match outcome {
            Ok(new_outputs) => {
                write.new_outputs = new_outputs;
                (StepStatus::Completed, None)
            }
            Err(e) => (StepStatus::Failed, Some(e)),
        };
        write.step_run.status = status;
        write.step_run.error = error;
        let outputs = self.record(&mut write).await?;
        // As recorded, secrets hidden: what the run's result shows too.
        let error = write.step_run.error.clone();
        if error.is_none() {
            if let Err(e) = self.register_model(step, &write, &outputs, &inputs).await {
                return self.refuse_registration(pos, write, started, e).await;
            }
        }
        if let Some(e) = &error {
            tracing::warn!(step = %step.id, "step failed: {e}");
        } else {
            let mut handoffs = self.handoffs.lock().unwrap_or_else(PoisonError::into_inner);
            for (i, key, encoded, value, left) in handed {
                // Streamed outputs got their hash when they were stored.
                if let Some(a) = write.new_outputs.get(i) {
                    handoffs.insert(key, Handed { hash: a.content_hash, encoded, value, left });
                }
            }
        }
        Ok(self.finish(
            pos,
            StepResult {
                invocation: step.id.clone(),
                status,
                step_run_id,
                outputs,
                error,
                attempts,
                duration: started.elapsed(),
                permanent,
            },
        ))
    }

    /// Records the step at `pos`, and everything downstream of it that has
    /// not run, as skipped because `failed` failed. Returns the positions skipped.
    pub async fn skip_dependents(&self, failed: usize) -> Result<Vec<usize>> {
        let failed_id = self.plan.steps[failed].id.clone();
        let mut stack: Vec<usize> = self.dependents[failed].clone();
        let mut skipped = Vec::new();
        while let Some(pos) = stack.pop() {
            let already = self.results.lock().unwrap_or_else(PoisonError::into_inner)[pos].is_some();
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
        Ok(self.finish(
            pos,
            StepResult {
                invocation: step.id.clone(),
                status: StepStatus::Skipped,
                step_run_id: write.step_run.id,
                outputs: Vec::new(),
                error: Some(reason.to_string()),
                attempts: 0,
                duration: Duration::ZERO,
                permanent: false,
            },
        ))
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
    pub fn record_external(&self, pos: usize, record: &StepRunRecord) -> Arc<StepResult> {
        let duration = record.duration().unwrap_or_default();
        self.finish(
            pos,
            StepResult {
                invocation: record.invocation.clone(),
                status: record.status,
                step_run_id: record.id.clone(),
                outputs: record.outputs.clone(),
                error: record.error.clone(),
                attempts: record.attempts,
                duration,
                permanent: record.is_permanent_failure(),
            },
        )
    }

    /// The artifact versions feeding each input of `step`, in input order
    /// (none for a model alias no version holds), and how each model input
    /// was resolved.
    #[allow(clippy::type_complexity)]
    async fn resolve_inputs(
        &self,
        step: &PlanStep,
    ) -> Result<(Vec<Vec<ArtifactVersion>>, Vec<(String, serde_json::Value)>)> {
        let mut recorded: Option<HashMap<String, Vec<OutputLink>>> = None;
        let mut out = Vec::with_capacity(step.inputs.len());
        let mut models = Vec::new();
        for input in &step.inputs {
            if let Some(m) = &input.model {
                let (versions, resolved) = self.resolve_model(m).await?;
                out.push(versions);
                models.push((input.name.clone(), resolved));
                continue;
            }
            let mut versions = Vec::with_capacity(input.from.len());
            for r in &input.from {
                let pos = self.position(&r.step)?;
                let in_memory = self.results.lock().unwrap_or_else(PoisonError::into_inner)[pos]
                    .as_ref()
                    .and_then(|res| res.output(&r.output).cloned());
                let version = match in_memory {
                    Some(v) => v,
                    None => {
                        if recorded.is_none() {
                            recorded = Some(self.recorded_outputs().await?);
                        }
                        recorded
                            .as_ref()
                            .and_then(|m| m.get(&r.step))
                            .and_then(|outs| outs.iter().find(|o| o.output == r.output))
                            .map(|o| o.artifact.clone())
                            .ok_or_else(|| {
                                Error::NotFound(format!(
                                    "input `{}` of step `{}` needs output `{}` of step `{}`, which has not \
                                     completed in run `{}`; run that step first",
                                    input.name, step.id, r.output, r.step, self.run.name
                                ))
                            })?
                    }
                };
                versions.push(version);
            }
            out.push(versions);
        }
        Ok((out, models))
    }

    /// The artifact version of the model version holding `m.alias` now
    /// (none when nobody holds it), and the record of the resolution.
    async fn resolve_model(&self, m: &crate::plan::ModelInput) -> Result<(Vec<ArtifactVersion>, serde_json::Value)> {
        let registry = self.registry()?;
        let Some(version) = registry
            .resolve(&m.model, &m.alias)
            .await
            .map_err(|e| match e {
                // A model that was never registered: nobody holds the alias.
                crate::registry::RegistryError::UnknownModel { .. } => None,
                other => Some(other),
            })
            .or_else(|e| match e {
                None => Ok(None),
                Some(e) => Err(e),
            })?
        else {
            return Ok((Vec::new(), serde_json::json!({"model": m.model, "alias": m.alias, "version": null})));
        };
        let artifact = self.stack.metadata().artifact_version(&version.artifact_version).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "artifact version `{}` of model {} v{}",
                version.artifact_version, version.model, version.version
            ))
        })?;
        let resolved = serde_json::json!({"model": m.model, "alias": m.alias, "version": version.version});
        Ok((vec![artifact], resolved))
    }

    /// The stack's model registry.
    fn registry(&self) -> std::result::Result<&dyn crate::registry::ModelRegistry, crate::registry::RegistryError> {
        self.stack
            .metadata()
            .registry()
            .ok_or_else(|| crate::registry::RegistryError::Unavailable { store: self.stack.metadata().url() })
    }

    /// Registers the output of a step with `model = "..."` as a version of
    /// that model (a no-op when its bytes are already a version of it).
    async fn register_model(
        &self,
        step: &PlanStep,
        write: &StepRunWrite,
        outputs: &[OutputLink],
        inputs: &[Vec<ArtifactVersion>],
    ) -> std::result::Result<(), String> {
        let Some(model) = &step.options.model else { return Ok(()) };
        let Some(output) = outputs.first() else {
            return Err(format!("step `{}` registers model `{model}`, but recorded no output", step.id));
        };
        let registry = self.registry().map_err(|e| e.to_string())?;
        let artifact = &output.artifact;
        // What the producing step run logged (for a cached step, the original).
        let produced_here = artifact.producer_step_run == write.step_run.id;
        let (metadata, git_commit) = if produced_here {
            (write.step_run.metadata.clone(), self.run.git_commit.clone())
        } else {
            let original =
                self.stack.metadata().step_run(&artifact.producer_step_run).await.map_err(|e| e.to_string())?;
            let run = self.stack.metadata().get_run(&artifact.run_id).await.map_err(|e| e.to_string())?;
            (original.map(|o| o.metadata).unwrap_or_default(), run.and_then(|r| r.git_commit))
        };
        let mut tags: std::collections::BTreeMap<String, String> = metadata
            .get(crate::context::MODEL_TAGS)
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_default();
        tags.entry("pipeline".into()).or_insert_with(|| self.plan.pipeline.clone());
        tags.entry("stack".into()).or_insert_with(|| self.stack.name().to_string());
        let new = crate::registry::NewModelVersion {
            model: model.clone(),
            artifact_version: artifact.id.clone(),
            content_hash: artifact.content_hash,
            run_id: Some(artifact.run_id.clone()),
            step_run: Some(artifact.producer_step_run.clone()),
            git_commit,
            code_hashes: self.plan.steps.iter().map(|s| (s.id.clone(), s.code_hash.clone())).collect(),
            data_hashes: step
                .inputs
                .iter()
                .zip(inputs)
                .flat_map(|(spec, versions)| {
                    versions
                        .iter()
                        .map(|v| crate::registry::DataHash { input: spec.name.clone(), content_hash: v.content_hash })
                })
                .collect(),
            metrics: metadata.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect(),
            tags,
            samples: metadata
                .get(crate::context::MODEL_SAMPLES)
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default(),
        };
        let version = registry.register(&new).await.map_err(|e| format!("could not register model `{model}`: {e}"))?;
        tracing::info!(step = %step.id, "registered {} v{}", version.model, version.version);
        Ok(())
    }

    /// Re-records a step whose model could not be registered as failed.
    async fn refuse_registration(
        &self,
        pos: usize,
        mut write: StepRunWrite,
        started: std::time::Instant,
        error: String,
    ) -> Result<Arc<StepResult>> {
        write.step_run.status = StepStatus::Failed;
        write.step_run.error = Some(error);
        write.step_run.outputs.clear();
        write.new_outputs.clear();
        self.record(&mut write).await?;
        Ok(self.finish(
            pos,
            StepResult {
                invocation: write.step_run.invocation.clone(),
                status: StepStatus::Failed,
                step_run_id: write.step_run.id.clone(),
                outputs: Vec::new(),
                error: write.step_run.error.clone(),
                attempts: write.step_run.attempts,
                duration: started.elapsed(),
                permanent: false,
            },
        ))
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

    /// Outputs of the completed or cached step runs of this run, by invocation.
    async fn recorded_outputs(&self) -> Result<HashMap<String, Vec<OutputLink>>> {
        let mut map = HashMap::new();
        for sr in self.stack.metadata().step_runs(&self.run.id).await? {
            if matches!(sr.status, StepStatus::Completed | StepStatus::Cached) {
                map.insert(sr.invocation, sr.outputs);
            }
        }
        Ok(map)
    }

    /// A cache hit younger than `ttl_ms` whose artifacts are all still in
    /// the store; or why there is none, when the lookup can tell.
    async fn cache_lookup(
        &self,
        key: &str,
        ttl_ms: Option<u64>,
    ) -> Result<std::result::Result<metadata::CacheHit, Option<crate::why::Reason>>> {
        use crate::why::Reason;
        Ok(match crate::lifecycle::look_up(&self.stack, key, ttl_ms).await? {
            crate::lifecycle::Lookup::Hit(hit) => Ok(hit),
            crate::lifecycle::Lookup::Expired { age_secs, ttl_secs } => {
                Err(Some(Reason::Expired { age_secs, ttl_secs }))
            }
            crate::lifecycle::Lookup::Gone(artifact) => {
                let store = self.stack.artifacts();
                let detail = if artifact.uri == store.uri(&artifact.content_hash) {
                    format!("{} is gone from the artifact store", artifact.uri)
                } else {
                    // Not lost: another stack on this metadata store wrote it.
                    format!(
                        "{} is not in this stack's artifact store ({}); stacks that share a metadata store \
                         should share their artifact store",
                        artifact.uri,
                        store.url()
                    )
                };
                tracing::warn!(artifact = %artifact.name, "cached artifact {detail}; the step will run again");
                Err(Some(Reason::ArtifactUnusable {
                    artifact: format!("{}@{}", artifact.name, artifact.version),
                    detail,
                }))
            }
            crate::lifecycle::Lookup::Corrupted { artifact, detail } => {
                tracing::warn!(artifact = %artifact.name, "{detail}; the step will run again and rewrite it");
                Err(Some(Reason::ArtifactUnusable {
                    artifact: format!("{}@{}", artifact.name, artifact.version),
                    detail,
                }))
            }
            crate::lifecycle::Lookup::Miss => Err(None),
        })
    }

    /// Why the step at `pos` executes although the cache is on for it (the
    /// plan says when it is off: [`crate::why::reasons`] reads that there,
    /// so nothing is recorded then). Best effort: a store that cannot say
    /// costs the reason, not the step.
    async fn why_executed(&self, pos: usize, prepared: &Prepared) -> Vec<crate::why::Reason> {
        use crate::why::Reason;
        let step = &self.plan.steps[pos];
        if !step.options.cache || self.options.no_cache {
            return Vec::new();
        }
        if let Some(miss) = &prepared.miss {
            return vec![miss.clone()];
        }
        let inputs: Vec<Vec<ContentHash>> =
            prepared.inputs.iter().map(|links| links.iter().map(|a| a.content_hash).collect()).collect();
        match self.earlier(&step.id).await {
            Ok(Some((plan, sr))) => {
                let Some(old) = plan.steps.iter().find(|s| s.id == step.id) else { return vec![Reason::NoEarlierRun] };
                let mut hashes: std::collections::BTreeMap<String, Vec<ContentHash>> = Default::default();
                for link in &sr.inputs {
                    match self.stack.metadata().artifact_version(&link.artifact_version).await {
                        Ok(Some(v)) => hashes.entry(link.input.clone()).or_default().push(v.content_hash),
                        _ => return vec![Reason::NoCacheEntry],
                    }
                }
                let earlier = crate::why::Earlier { step: old, build: &plan.build, inputs: hashes };
                crate::why::compare(&earlier, step, &self.plan.build, &inputs)
            }
            Ok(None) => vec![Reason::NoEarlierRun],
            Err(e) => {
                tracing::debug!(step = %step.id, "could not look up the step's earlier run: {e}");
                Vec::new()
            }
        }
    }

    /// The plan of the latest earlier run of this pipeline in which
    /// `invocation` succeeded (executed or cached), with that step run.
    async fn earlier(&self, invocation: &str) -> Result<Option<(Arc<Plan>, StepRunRecord)>> {
        let runs = self
            .earlier_runs
            .get_or_try_init(|| async {
                let store = self.stack.metadata();
                let mut runs = Vec::new();
                for run in store.list_runs(Some(&self.plan.pipeline), EARLIER_RUNS + 1).await? {
                    if run.id == self.run.id || run.started_at > self.run.started_at {
                        continue;
                    }
                    let Ok(plan) = run.plan() else { continue };
                    runs.push((Arc::new(plan), store.step_runs(&run.id).await?));
                }
                Ok::<_, Error>(runs)
            })
            .await?;
        Ok(runs.iter().find_map(|(plan, steps)| {
            let ok = |s: &&StepRunRecord| {
                s.invocation == invocation && matches!(s.status, StepStatus::Completed | StepStatus::Cached)
            };
            steps.iter().rev().find(ok).map(|sr| (Arc::clone(plan), sr.clone()))
        }))
    }

    /// The in-memory copy of output `from` for one reading input, if this
    /// runner produced it as `version` (any version when `None`); the last
    /// reader takes the value itself.
    #[allow(clippy::type_complexity)]
    fn take_handed(
        &self,
        from: &OutputRef,
        version: Option<&ArtifactVersion>,
    ) -> Option<(Option<Encoded>, Option<Handoff>)> {
        let key = (*self.index.get(&from.step)?, from.output.clone());
        let mut handoffs = self.handoffs.lock().unwrap_or_else(PoisonError::into_inner);
        let handed = handoffs.get_mut(&key)?;
        if version.is_some_and(|v| v.content_hash != handed.hash) {
            return None;
        }
        handed.left = handed.left.saturating_sub(1);
        if handed.left > 0 {
            return Some((handed.encoded.clone(), None));
        }
        let handed = handoffs.remove(&key)?;
        Some((handed.encoded, handed.value))
    }

    async fn load_inputs(&self, step: &PlanStep, inputs: &[Vec<ArtifactVersion>]) -> Result<Vec<LoadedInput>> {
        let store = self.stack.artifacts().as_ref();
        let mut loaded = Vec::with_capacity(inputs.len());
        for (spec, versions) in step.inputs.iter().zip(inputs) {
            if spec.model.is_some() {
                // An `Option<T>`: the model's bytes read as `Some`, or `null`.
                let encoded = match versions.first() {
                    Some(v) => {
                        Encoded { format: v.format.clone(), bytes: artifact_store::read_version(store, v).await? }
                    }
                    None => Encoded::new("json", bytes::Bytes::from_static(b"null")),
                };
                loaded.push(LoadedInput::Single(encoded));
                continue;
            }
            let mut parts = Vec::with_capacity(versions.len());
            let mut value = None;
            for (from, v) in spec.from.iter().zip(versions) {
                // Produced by this run in this process: the bytes are those
                // that were hashed and stored, so they need no re-reading.
                let (encoded, handoff) = self.take_handed(from, Some(v)).unwrap_or((None, None));
                // A fan-in list decodes every part; a single input taking the
                // value needs its bytes only for a retry to decode (without
                // retries they are freed now, not held while the step runs).
                let handoff = handoff.filter(|_| !spec.list);
                let keep_bytes = handoff.is_none() || step.options.retries > 0;
                let bytes = match encoded {
                    _ if !keep_bytes => bytes::Bytes::new(),
                    Some(encoded) => encoded.bytes,
                    // Streamed: only the store has the bytes.
                    None => artifact_store::read_version(store, v).await?,
                };
                parts.push(Encoded { format: v.format.clone(), bytes });
                value = handoff;
            }
            loaded.push(if spec.list {
                LoadedInput::List(parts)
            } else {
                match parts.pop() {
                    Some(p) if parts.is_empty() => match value {
                        Some(value) => LoadedInput::Value(p, value),
                        None => LoadedInput::Single(p),
                    },
                    _ => {
                        return Err(Error::usage(format_args!(
                            "input `{}` of step `{}` must have exactly one source",
                            spec.name, step.id
                        )))
                    }
                }
            });
        }
        Ok(loaded)
    }

    /// Executes attempts `first..=last` of `step`, until one succeeds.
    async fn execute_attempts(
        &self,
        step: &PlanStep,
        inputs: Vec<LoadedInput>,
        env: &crate::context::AttemptEnv,
        step_run_id: &str,
        first: u32,
        last: u32,
    ) -> Execution {
        let spec = match step::lookup(&step.step) {
            Ok(spec) => spec,
            Err(e) => return Execution::permanent(e.to_string(), first),
        };
        if self.verify_code {
            if let Err(e) = same_code(spec, step, &self.run.name) {
                return Execution::permanent(e, first);
            }
        }
        let params: Vec<serde_json::Value> =
            spec.params.iter().map(|p| step.params.get(p.name).cloned().unwrap_or(serde_json::Value::Null)).collect();
        let max_attempts = step.options.retries.saturating_add(1);
        let capture = logs::Capture::start(step_run_id);
        let mut attempt = first;
        loop {
            let ctx = StepContext::for_attempt(
                &self.run.id,
                &self.plan.pipeline,
                &step.id,
                &step.step,
                attempt,
                env.clone(),
                capture.buffer().clone(),
            );
            let call = StepCall::new(spec, inputs.clone(), params.clone(), ctx.clone())
                .with_time_limit(step.options.timeout());
            // Polled in this task (no task per attempt): a panic is caught
            // here, and a timeout drops the step's future. The span marks
            // what the step logs through `tracing` as this step run's.
            let attempt_future = std::panic::AssertUnwindSafe((spec.execute)(call))
                .catch_unwind()
                .instrument(logs::span(step_run_id, &step.id, attempt));
            let stdio = self.options.capture_stdio.then(|| logs::StdioCapture::start(step_run_id));
            let joined = match step.options.timeout() {
                Some(limit) => {
                    tokio::time::timeout(limit, attempt_future).await.unwrap_or(Ok(Err(StepError::TimedOut(limit))))
                }
                None => attempt_future.await,
            };
            if let Some(Some(stdio)) = stdio {
                stdio.finish();
            }
            let outcome = match joined {
                Ok(r) => r,
                Err(payload) => Err(StepError::Panicked(crate::panic::message(payload))),
            };
            let outcome = match outcome {
                Err(e) if attempt < last => {
                    let delay = step.options.backoff(attempt);
                    let line = format!("attempt {attempt} of {max_attempts} failed: {e}; retrying in {delay:?}");
                    tracing::warn!(target: logs::CONTEXT_TARGET, step = %step.id, "{line}");
                    capture.push(line);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                    continue;
                }
                Err(e) if attempt > 1 && attempt == max_attempts => {
                    Err(format!("failed after {max_attempts} attempts: {e}"))
                }
                other => other.map_err(|e| e.to_string()),
            };
            let logs = capture.lines();
            return Execution {
                outcome,
                attempts: attempt,
                logs,
                metadata: ctx.metadata(),
                checks: ctx.checks(),
                permanent: false,
            };
        }
    }

    async fn save_outputs(
        &self,
        step: &PlanStep,
        values: Vec<EncodedValue>,
    ) -> std::result::Result<Vec<NewArtifact>, StoreError> {
        let store = self.stack.artifacts();
        let limit = self.stack.inline_limit();
        // Streamed encodings (large by definition) always go to the store,
        // which hashes them as it writes them.
        let inline = |v: &EncodedValue| v.streamed.is_none() && v.encoded.bytes.len() <= limit;
        let puts = values.iter().map(|v| async {
            match (&v.streamed, v.hash) {
                (Some(streamed), _) => store.put_hashed(streamed.write.clone()).await.map(Some),
                (None, Some(hash)) if !inline(v) => store.put(&hash, v.encoded.bytes.clone()).await.map(|()| None),
                _ => Ok(None),
            }
        });
        let stored = futures::future::try_join_all(puts).await?;
        let mut artifacts = Vec::with_capacity(values.len());
        for ((o, v), stored) in step.outputs.iter().zip(values).zip(stored) {
            let inline = inline(&v);
            let mut metadata = v.metadata;
            let content_hash = match (stored, v.hash) {
                (Some((hash, len)), _) => {
                    metadata.size = len;
                    hash
                }
                (None, Some(hash)) => hash,
                (None, None) => {
                    return Err(StoreError::Backend {
                        store: store.url(),
                        message: format!("output `{}` of step `{}` has no content hash", o.name, step.id),
                    })
                }
            };
            artifacts.push(NewArtifact {
                output: o.name.clone(),
                name: format!("{}.{}.{}", self.plan.pipeline, step.id, o.name),
                uri: if inline { format!("inline:{content_hash}") } else { store.uri(&content_hash) },
                inline: inline.then(|| v.encoded.bytes.clone()),
                content_hash,
                type_name: v.type_name.to_string(),
                materializer: v.materializer.to_string(),
                materializer_version: v.materializer_version,
                format: v.encoded.format,
                metadata,
            });
        }
        Ok(artifacts)
    }
}
