//! Reading a run back: a recorded run as a [`RunResult`], and a result's
//! outputs and logs.

use super::result::{RunResult, StepResult};
use crate::error::{Error, Result};
use crate::materializer::Materialize;
use crate::metadata::{self, ArtifactVersion, RunRecord};
use crate::stack::{load_version, Stack};
use std::sync::Arc;

impl Stack {
    /// A recorded run, as the result a fresh run gives (untyped: a
    /// pipeline's [`Pipeline::reopen`](crate::Pipeline::reopen) gives it
    /// typed): any run [`find_run`](super::find_run) finds, `latest` being
    /// the newest run in the store that is not pending.
    pub fn run_result(&self, reference: &str) -> Result<RunResult> {
        let run = self.find_run(None, reference)?;
        self.block_on(RunResult::load(self, run))
    }
}

impl RunResult {
    /// The result of a recorded run, read back from the stack's metadata store.
    pub async fn load(stack: &Stack, run: RunRecord) -> Result<RunResult> {
        let plan = Arc::new(run.plan()?);
        let records = stack.metadata().step_runs(&run.id).await?;
        // The latest record of each invocation, in plan order.
        let latest: Vec<_> =
            plan.steps.iter().filter_map(|s| metadata::latest_record(&records, &s.id)).cloned().collect();
        let steps = latest.iter().map(|r| StepResult::of(r, r.duration().unwrap_or_default())).collect();
        let duration = run.duration().unwrap_or_default();
        Ok(RunResult::new(stack.stores().clone(), run, plan, (steps, latest), duration))
    }
}

impl<O> RunResult<O> {
    /// Every `step.output` of the plan, for error messages.
    fn output_names(&self) -> String {
        let all: Vec<String> = self
            .plan
            .steps
            .iter()
            .flat_map(|s| s.outputs.iter().map(move |o| format!("{}.{}", s.id, o.name)))
            .collect();
        if all.is_empty() {
            "none".into()
        } else {
            all.join(", ")
        }
    }

    /// The recorded version of output `output` of invocation `step`.
    pub fn output_version(&self, step: &str, output: &str) -> Result<&ArtifactVersion> {
        let result = self.step(step).ok_or_else(|| {
            let planned = self.plan.step(step).is_some();
            Error::NotFound(if planned {
                format!("step `{step}` of run `{}` did not finish", self.run.name)
            } else {
                format!("run `{}` has no step `{step}`; its outputs are: {}", self.run.name, self.output_names())
            })
        })?;
        result.output(output).ok_or_else(|| {
            Error::NotFound(format!(
                "step `{step}` of run `{}` has no output `{output}` (status {}); the run's outputs are: {}",
                self.run.name,
                result.status,
                self.output_names()
            ))
        })
    }

    /// Loads output `output` of invocation `step` as a `T` (blocking): the
    /// lookup by name, for dynamic use.
    pub fn artifact<T: Materialize>(&self, step: &str, output: &str) -> Result<T> {
        self.stores.block_on(self.artifact_async(step, output))?
    }

    /// Async form of [`RunResult::artifact`].
    pub async fn artifact_async<T: Materialize>(&self, step: &str, output: &str) -> Result<T> {
        load_version(&self.stores, self.output_version(step, output)?).await
    }

    /// The value behind `handle`, a handle of the build that planned this
    /// run (one the body returned, or kept in its output struct).
    pub fn get<T: Materialize>(&self, handle: &crate::handle::Handle<T>) -> Result<T> {
        let (node, output) = handle.__position();
        let step = self.nodes.get(node).ok_or_else(|| {
            Error::usage(
                "this handle is not from the build that planned this run (a reopened run has none): read \
                 its outputs with `run.output()` or `run.artifact(step, output)`",
            )
        })?;
        let spec = self.plan.step(step).ok_or_else(|| Error::NotFound(format!("step `{step}` of this run")))?;
        let name = spec.outputs.get(output).map(|o| o.name.clone()).unwrap_or_else(|| output.to_string());
        self.artifact(step, &name)
    }

    /// What invocation `step` logged, as stored with its step run
    /// (`StepContext::log` lines and the `tracing` events a capture layer
    /// kept, with a note of what the size cap cut). A cached step ran
    /// nothing, so it logged nothing.
    pub fn logs(&self, step: &str) -> Result<Vec<String>> {
        let result = self
            .step(step)
            .ok_or_else(|| Error::NotFound(format!("run `{}` has no finished step `{step}`", self.run.name)))?;
        let record = self.stores.block_on(self.stores.metadata().step_run(&result.step_run_id))??;
        Ok(record.map(|r| r.logs).unwrap_or_default())
    }
}
