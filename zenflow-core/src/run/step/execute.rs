//! Executing a step: its record started, its attempts with retries,
//! timeouts and panics caught, and the code checked against the plan's.

use super::inputs::Prepared;
use super::{Handed, StepRunner};
use crate::context::StepContext;
use crate::error::Result;
use crate::logs;
use crate::materializer::EncodedValue;
use crate::metadata::{self, ArtifactVersion, StepRunWrite, StepStatus, PERMANENT_KEY};
use crate::plan::PlanStep;
use crate::run::options::RunEvent;
use crate::run::result::StepResult;
use crate::step::{self, LoadedInput, StepCall, StepError};
use futures::FutureExt;
use std::sync::{Arc, PoisonError};
use tracing::Instrument;

/// Refuses to run a step whose code is not the code that planned the run:
/// its results would be recorded under the old code's cache key (a worker
/// built from another commit, a step edited since `run --pending`).
pub(super) fn same_code(spec: &step::StepSpec, step: &PlanStep, run: &str) -> std::result::Result<(), String> {
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

/// An output that steps of this run still to run will read, before its
/// hash is known.
struct Handover {
    /// Its position among the step's outputs.
    index: usize,
    key: (usize, String),
    encoded: Option<crate::materializer::Encoded>,
    value: Option<crate::materializer::Handoff>,
    /// How many inputs read it.
    left: usize,
}

/// What executing a step (all its attempts) produced.
pub(super) struct Execution {
    pub(super) outcome: std::result::Result<Vec<EncodedValue>, String>,
    pub(super) attempts: u32,
    pub(super) logs: Vec<String>,
    pub(super) metadata: std::collections::BTreeMap<String, serde_json::Value>,
    pub(super) checks: Vec<crate::check::Check>,
    /// Another attempt would fail the same way.
    pub(super) permanent: bool,
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

impl StepRunner {
    pub(super) async fn run_attempts(&self, pos: usize, first: u32, last: u32) -> Result<Arc<StepResult>> {
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
        self.record_running(&mut write, why).await?;
        let execution = self.execute(step, &write, &inputs, &models, &step_run_id, (first, last)).await;
        let handovers = self.settle(pos, &mut write, execution).await;
        let outputs = self.record(&mut write).await?;
        // As recorded, secrets hidden: what the run's result shows too.
        if write.step_run.error.is_none() {
            if let Err(e) = self.register_model(step, &write, &outputs, &inputs).await {
                return self.refuse_registration(pos, write, started, e).await;
            }
        }
        match &write.step_run.error {
            Some(e) => tracing::warn!(step = %step.id, "step failed: {e}"),
            None => self.hand_over(handovers, &write),
        }
        write.step_run.outputs = outputs;
        Ok(self.finish(pos, write.step_run, started.elapsed()))
    }

    /// Records that the step runs, and why, where whoever watches it can
    /// see it.
    async fn record_running(&self, write: &mut StepRunWrite, why: Vec<crate::why::Reason>) -> Result<()> {
        if !why.is_empty() {
            write.step_run.metadata.insert(crate::why::WHY_KEY.into(), serde_json::to_value(why).unwrap_or_default());
        }
        self.record(write).await?;
        if self.verify_code {
            // A worker: whoever watches it (its orchestrator, an engine's
            // exit handler) must see that it runs, even if it dies mid-step.
            self.stores.metadata().flush().await?;
        }
        Ok(())
    }

    /// Loads the step's inputs and runs attempts `first..=last` of it.
    async fn execute(
        &self,
        step: &PlanStep,
        write: &StepRunWrite,
        inputs: &[Vec<ArtifactVersion>],
        models: &[(String, serde_json::Value)],
        step_run_id: &str,
        (first, last): (u32, u32),
    ) -> Execution {
        let model_versions: std::collections::BTreeMap<String, Option<i64>> =
            models.iter().map(|(input, resolved)| (input.clone(), resolved["version"].as_i64())).collect();
        match self.load_inputs(step, inputs).await {
            Ok(loaded) => {
                let env = crate::context::AttemptEnv {
                    models: model_versions,
                    inputs: write.step_run.inputs.clone(),
                    stores: Some(self.stores.clone()),
                };
                self.execute_attempts(step, loaded, &env, step_run_id, first, last).await
            }
            Err(e) => Execution::failed(e.to_string(), first),
        }
    }

    /// Writes what the attempts of the step at `pos` produced into its
    /// record, and stores its outputs; gives back the outputs that steps
    /// still to run will read from memory.
    async fn settle(&self, pos: usize, write: &mut StepRunWrite, execution: Execution) -> Vec<Handover> {
        let step = &self.plan.steps[pos];
        write.step_run.attempts = execution.attempts;
        write.step_run.logs = execution.logs;
        write.step_run.metadata.extend(execution.metadata);
        if execution.permanent {
            write.step_run.metadata.insert(PERMANENT_KEY.into(), serde_json::Value::Bool(true));
        }
        write.step_run.checks = execution.checks;
        let mut handovers = Vec::new();
        let outcome = match execution.outcome {
            Ok(mut values) => {
                for (index, (o, v)) in step.outputs.iter().zip(&mut values).enumerate() {
                    // A value nobody here reads is dropped now, not kept
                    // alive while its bytes are stored.
                    let value = v.handoff.take();
                    let key = (pos, o.name.clone());
                    if let Some(&left) = self.consumers.get(&key) {
                        let encoded = v.streamed.is_none().then(|| v.encoded.clone());
                        handovers.push(Handover { index, key, encoded, value, left });
                    }
                }
                self.save_outputs(step, values).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        write.step_run.ended_at = Some(metadata::now());
        match outcome {
            Ok(new_outputs) => {
                write.new_outputs = new_outputs;
                write.step_run.status = StepStatus::Completed;
            }
            Err(e) => {
                write.step_run.status = StepStatus::Failed;
                write.step_run.error = Some(e);
            }
        }
        handovers
    }

    /// Keeps the outputs in `handovers` in memory for the steps that read
    /// them, under the hashes their record gave them.
    fn hand_over(&self, handovers: Vec<Handover>, write: &StepRunWrite) {
        let mut handoffs = self.handoffs.lock().unwrap_or_else(PoisonError::into_inner);
        for Handover { index, key, encoded, value, left } in handovers {
            // Streamed outputs got their hash when they were stored.
            if let Some(a) = write.new_outputs.get(index) {
                handoffs.insert(key, Handed { hash: a.content_hash, encoded, value, left });
            }
        }
    }

    /// Executes attempts `first..=last` of `step`, until one succeeds.
    pub(super) async fn execute_attempts(
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
            let outcome = self.attempt(spec, call, step, step_run_id, attempt).await;
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

    /// One attempt of `step`: its call polled in this task (no task per
    /// attempt), so a panic is caught here and a timeout drops the step's
    /// future. The span marks what the step logs through `tracing` as this
    /// step run's; with `capture_stdio`, what it prints is kept too.
    async fn attempt(
        &self,
        spec: &'static step::StepSpec,
        call: StepCall,
        step: &PlanStep,
        step_run_id: &str,
        attempt: u32,
    ) -> std::result::Result<Vec<EncodedValue>, StepError> {
        let attempt_future = std::panic::AssertUnwindSafe((spec.execute)(call)).catch_unwind().instrument(logs::span(
            step_run_id,
            &step.id,
            attempt,
        ));
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
        match joined {
            Ok(r) => r,
            Err(payload) => Err(StepError::Panicked(crate::panic::message(payload))),
        }
    }
}
