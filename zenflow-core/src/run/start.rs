//! Starting a run: its name, its plan with the run's switches, the stale
//! runs closed first, the lock and heartbeat, and driving it to its end.

use crate::error::{Error, Result};
use crate::metadata::{self, NewRun, RunRecord, RunStatus, StepStatus};
use crate::plan::Plan;
use crate::run::options::RunOptions;
use crate::run::outcome::{Outcome, StepState};
use crate::run::result::{RunResult, Unrecorded};
use crate::run::step::StepRunner;
use crate::stack::Stack;
use std::sync::Arc;

/// Records a new run of `plan` on `stack` with `status` (`Running` for a
/// run that starts now, `Pending` for one whose steps workers will run),
/// after closing runs whose process died.
///
/// With [`RunOptions::no_cache`], the recorded plan turns the cache off for
/// every step, and with [`RunOptions::cache_ttl`] it shortens each step's
/// time to live, so that workers reading the run from the store do the same.
pub async fn start_run(stack: &Stack, mut plan: Plan, options: &RunOptions, status: RunStatus) -> Result<RunRecord> {
    apply_run_options(&mut plan, options);
    let id = uuid::Uuid::now_v7().to_string();
    let started_at = metadata::now();
    let name = options.run_name.clone().unwrap_or_else(|| default_run_name(&plan.pipeline, started_at, &id));
    let ci = stack.stores().ci();
    let new_run = NewRun {
        id,
        pipeline: plan.pipeline.clone(),
        name,
        stack: stack.name().to_string(),
        status,
        git_commit: stack.project_root().and_then(crate::git::head_commit),
        git_branch: ci.branch.clone().or_else(|| stack.project_root().and_then(crate::git::head_branch)),
        ci_job_url: ci.job_url.clone(),
        plan,
        started_at,
    };
    // Objects this run writes must be ones this store's `gc` knows of.
    crate::gc::claim_artifacts(stack.stores(), true).await?;
    // Runs whose process died are closed first, so nothing stays "running".
    for id in stack.close_stale_runs().await? {
        tracing::warn!(run = %id, "marked a run whose process died as failed");
    }
    Ok(stack.metadata().create_run(&new_run).await?)
}

/// Writes the run's cache switches into its plan: `no_cache` turns every
/// step's cache off (and is noted, so a step can tell whose switch it was),
/// `cache_ttl` caps every step's time to live.
pub fn apply_run_options(plan: &mut Plan, options: &RunOptions) {
    if options.no_cache {
        plan.no_cache = true;
        for step in &mut plan.steps {
            step.options.cache = false;
        }
    }
    if let Some(ttl) = options.cache_ttl {
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        for step in &mut plan.steps {
            step.options.cache_ttl_ms = Some(step.options.cache_ttl_ms.map_or(ttl, |t| t.min(ttl)));
        }
    }
}

/// `<pipeline>-<YYYYMMDD>-<HHMMSS>-<6 hex of the id>`.
pub(crate) fn default_run_name(pipeline: &str, at: metadata::Timestamp, id: &str) -> String {
    let (y, m, d, hh, mm, ss) = crate::time::parts(at);
    let suffix: String = id.chars().filter(|c| *c != '-').rev().take(6).collect();
    format!("{pipeline}-{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}-{suffix}")
}

/// Runs `plan` on `stack`: records the run, lets the stack's orchestrator
/// execute every step, and records the outcome.
pub async fn execute_plan(stack: &Stack, plan: Plan, options: RunOptions) -> Result<RunResult> {
    let started = std::time::Instant::now();
    let record = crate::run::start::start_run(stack, plan, &options, RunStatus::Running).await?;
    let plan = Arc::new(record.plan()?);
    let id = record.id.clone();
    let runner = Arc::new(StepRunner::new(stack.stores().clone(), record, plan.clone(), options));
    // Held until this function returns: if the process dies first, the
    // next command on this machine sees it at once (`run::liveness::lock`).
    let lock = stack.project_root().and_then(|root| {
        crate::run::liveness::lock::hold(root, &id)
            .map_err(|e| tracing::warn!("no run lock (a crash is noticed by the heartbeat only): {e}"))
            .ok()
    });
    let heartbeat = spawn_heartbeat(stack, &id);
    let outcome = stack.orchestrator().execute(runner.clone()).await;
    drop(heartbeat);
    let steps = runner.results();
    let states: Vec<StepState> = plan
        .steps
        .iter()
        .map(|p| match steps.iter().find(|r| r.invocation == p.id) {
            None => StepState::NotStarted,
            Some(r) => match r.status {
                StepStatus::Completed | StepStatus::Cached => StepState::Succeeded,
                StepStatus::Skipped => StepState::Skipped,
                StepStatus::Running => StepState::Running,
                // The orchestrator is done with it: no attempt follows.
                StepStatus::Failed => {
                    StepState::Failed { error: r.error.clone().unwrap_or_else(|| "unknown error".into()), last: true }
                }
            },
        })
        .collect();
    let error = match (&outcome, crate::run::outcome::outcome(&plan, &states)) {
        (Err(e), _) => Some(format!("the orchestrator failed: {e}")),
        (Ok(()), Outcome::Done { error, .. }) => error,
        (Ok(()), Outcome::Open) => Some(format!("only {} of {} steps finished", steps.len(), plan.steps.len())),
    };
    let status = if error.is_some() { RunStatus::Failed } else { RunStatus::Completed };
    let mut error = error;
    crate::redact::option_in_place(&mut error);
    let ended_at = metadata::now();
    let recorded = stack.metadata().set_run_status(&id, status, error.as_deref(), Some(ended_at)).await;
    let mut run = runner.run().clone();
    run.status = status;
    run.error = error;
    run.ended_at = Some(ended_at);
    if let Err(source) = recorded {
        // The run's end is not recorded: leave the evidence that its driver
        // is gone, so that the next command on this machine closes it.
        if let Some(lock) = lock {
            lock.abandon();
        }
        return Err(Error::Unrecorded(Box::new(Unrecorded { run, plan, steps, source })));
    }
    drop(lock);
    Ok(RunResult::new(stack.stores().clone(), run, plan, (steps, runner.take_records()), started.elapsed()))
}

/// Records a heartbeat for `run_id` every [`metadata::HEARTBEAT_INTERVAL`]
/// until the returned guard is dropped: what keeps a long run (or a
/// worker's step) from being taken for dead. It beats on a thread of its
/// own, so steps that block every worker of the runtime do not stop it
/// ([`heartbeat`](crate::run::liveness::heartbeat)).
pub fn spawn_heartbeat(stack: &Stack, run_id: &str) -> crate::run::liveness::heartbeat::Heartbeat {
    crate::run::liveness::heartbeat::start(stack.metadata().clone(), run_id, metadata::HEARTBEAT_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names() {
        assert_eq!(default_run_name("p", 86_400_000_000 + 3_723_000_000, "0-abcdef12"), "p-19700102-010203-21fedc");
    }
}
