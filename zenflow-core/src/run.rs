//! Starting a run of a plan on a stack, and its result.

use crate::error::{Error, Result};
use crate::materializer::Materialize;
use crate::metadata::{self, ArtifactVersion, NewRun, RunRecord, RunStatus, StepStatus};
use crate::plan::Plan;
use crate::runner::{RunOptions, StepResult, StepRunner};
use crate::stack::Stack;
use std::fmt;
use std::sync::Arc;

/// Runs `plan` on `stack`: records the run, lets the stack's orchestrator
/// execute every step, and records the outcome.
pub async fn execute_plan(stack: &Stack, plan: Plan, options: RunOptions) -> Result<RunResult> {
    let started = std::time::Instant::now();
    let id = uuid::Uuid::now_v7().to_string();
    let started_at = metadata::now();
    let name = options.run_name.clone().unwrap_or_else(|| default_run_name(&plan.pipeline, started_at, &id));
    let new_run = NewRun {
        id: id.clone(),
        pipeline: plan.pipeline.clone(),
        name,
        stack: stack.name().to_string(),
        status: RunStatus::Running,
        git_commit: stack.project_root().and_then(crate::git::head_commit),
        plan,
        started_at,
    };
    // Runs whose process died are closed first, so nothing stays "running".
    for id in stack.close_stale_runs().await? {
        tracing::warn!(run = %id, "marked a run whose process died as failed");
    }
    let record = stack.metadata().create_run(&new_run).await?;
    let plan = Arc::new(new_run.plan);
    let runner = Arc::new(StepRunner::new(stack.clone(), record, plan.clone(), options));
    let heartbeat = spawn_heartbeat(stack, &id);
    let outcome = stack.orchestrator().execute(runner.clone()).await;
    heartbeat.abort();
    let steps = runner.results();
    let failed: Vec<&StepResult> = steps.iter().filter(|s| s.status == StepStatus::Failed).collect();
    let error = match (&outcome, failed.first()) {
        (Err(e), _) => Some(format!("the orchestrator failed: {e}")),
        (Ok(()), Some(first)) => {
            Some(format!("step `{}` failed: {}", first.invocation, first.error.as_deref().unwrap_or("unknown error")))
        }
        (Ok(()), None) if steps.len() < plan.steps.len() => {
            Some(format!("only {} of {} steps finished", steps.len(), plan.steps.len()))
        }
        _ => None,
    };
    let status = if error.is_some() { RunStatus::Failed } else { RunStatus::Completed };
    let ended_at = metadata::now();
    stack.metadata().set_run_status(&id, status, error.as_deref(), Some(ended_at)).await?;
    let mut run = runner.run().clone();
    run.status = status;
    run.error = error;
    run.ended_at = Some(ended_at);
    Ok(RunResult { stack: stack.clone(), run, plan, steps, duration: started.elapsed() })
}

/// Records a heartbeat for `run_id` every [`metadata::HEARTBEAT_INTERVAL`]
/// until the returned task is aborted: what keeps a long run (or a worker's
/// step) from being taken for dead.
pub fn spawn_heartbeat(stack: &Stack, run_id: &str) -> tokio::task::JoinHandle<()> {
    let metadata = stack.metadata().clone();
    let id = run_id.to_string();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(metadata::HEARTBEAT_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = metadata.heartbeat(&id, metadata::now()).await {
                tracing::warn!("could not record the run's heartbeat: {e}");
            }
        }
    })
}

/// `<pipeline>-<YYYYMMDD>-<HHMMSS>-<6 hex of the id>`.
fn default_run_name(pipeline: &str, at: metadata::Timestamp, id: &str) -> String {
    let (y, m, d, hh, mm, ss) = crate::time::parts(at);
    let suffix: String = id.chars().filter(|c| *c != '-').rev().take(6).collect();
    format!("{pipeline}-{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}-{suffix}")
}

/// The outcome of a run: its record, each step's result, and typed access to
/// the outputs.
#[derive(Clone)]
pub struct RunResult {
    stack: Stack,
    run: RunRecord,
    plan: Arc<Plan>,
    steps: Vec<StepResult>,
    duration: std::time::Duration,
}

impl fmt::Debug for RunResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunResult")
            .field("run", &self.run.name)
            .field("status", &self.run.status)
            .field("steps", &self.steps.len())
            .finish()
    }
}

impl RunResult {
    /// The run record.
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

    /// The recorded version of output `output` of invocation `step`.
    pub fn output_version(&self, step: &str, output: &str) -> Result<&ArtifactVersion> {
        let result = self
            .step(step)
            .ok_or_else(|| Error::NotFound(format!("run `{}` has no finished step `{step}`", self.run.name)))?;
        result.output(output).ok_or_else(|| {
            Error::NotFound(format!(
                "step `{step}` of run `{}` has no output `{output}` (status {}; outputs: {})",
                self.run.name,
                result.status,
                result.outputs.iter().map(|o| o.output.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Loads output `output` of invocation `step` as a `T` (blocking).
    pub fn output<T: Materialize>(&self, step: &str, output: &str) -> Result<T> {
        self.stack.load(self.output_version(step, output)?)
    }

    /// Async form of [`RunResult::output`].
    pub async fn output_async<T: Materialize>(&self, step: &str, output: &str) -> Result<T> {
        self.stack.load_async(self.output_version(step, output)?).await
    }

    /// A few lines saying what ran, what came from cache, and what failed.
    pub fn summary(&self) -> String {
        let count = |s| self.steps.iter().filter(|r| r.status == s).count();
        let mut out = format!(
            "run {} of pipeline {}: {} in {:.1?} ({} executed, {} cached, {} failed, {} skipped)",
            self.run.name,
            self.plan.pipeline,
            self.run.status,
            self.duration,
            count(StepStatus::Completed),
            count(StepStatus::Cached),
            count(StepStatus::Failed),
            count(StepStatus::Skipped),
        );
        for s in &self.steps {
            out.push_str(&format!("\n  {:<10} {:<24} {:>9.1?}", s.status.as_str(), s.invocation, s.duration));
            if let Some(e) = &s.error {
                out.push_str(&format!("  {e}"));
            }
        }
        out
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names() {
        assert_eq!(default_run_name("p", 86_400_000_000 + 3_723_000_000, "0-abcdef12"), "p-19700102-010203-21fedc");
    }
}
