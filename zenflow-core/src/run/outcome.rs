//! Where a run stands: each step's state from its latest record, what they
//! decide for the run (the one place that maps step statuses to a run's),
//! and closing a run that nothing can move any more.
//!
//! An in-process orchestrator drives a run from its [`StepRunner`]'s
//! results; a worker process (the step entrypoint) and an engine's exit
//! hook (Argo's `onExit`) see only the metadata store. Both decide with the
//! same function, [`outcome`], over the latest record of each step.

use crate::error::Result;
use crate::metadata::{self, RunStatus, StepRunRecord, StepStatus};
use crate::plan::Plan;
use crate::run::options::RunOptions;
use crate::run::step::StepRunner;
use crate::stack::Stack;

/// Where one step of a run stands, as far as deciding the run goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepState {
    /// No record yet.
    NotStarted,
    /// Recorded as running.
    Running,
    /// Completed or served from cache.
    Succeeded,
    /// Failed, with the reason; `last` when no attempt follows (the retries
    /// are used up, or the failure is permanent).
    Failed {
        /// Why.
        error: String,
        /// Whether no attempt follows.
        last: bool,
    },
    /// Skipped because an upstream step failed.
    Skipped,
}

impl StepState {
    /// The state a step's latest record gives it; `retries` is the step's
    /// retry policy.
    pub fn of(record: Option<&StepRunRecord>, retries: u32) -> StepState {
        let Some(r) = record else { return StepState::NotStarted };
        match r.status {
            StepStatus::Running => StepState::Running,
            StepStatus::Completed | StepStatus::Cached => StepState::Succeeded,
            StepStatus::Skipped => StepState::Skipped,
            StepStatus::Failed => StepState::Failed {
                error: r.error.clone().unwrap_or_else(|| "unknown error".into()),
                // A step that failed before any attempt (an input that could
                // not be resolved) has `attempts` 0: that is its last word.
                last: r.attempts == 0 || r.attempts > retries || r.is_permanent_failure(),
            },
        }
    }
}

/// What the states of a run's steps decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A step is running, or can still start.
    Open,
    /// Nothing can run any more: the run's final status, why it failed, and
    /// the steps (plan positions) that can never run because something
    /// upstream failed, to be recorded as skipped.
    Done {
        /// Completed, or failed.
        status: RunStatus,
        /// Why it failed.
        error: Option<String>,
        /// Steps blocked by a failure, not recorded yet.
        blocked: Vec<usize>,
    },
}

/// Decides a run from the state of each of its steps (in plan order; see
/// [`Plan::dependencies`]).
pub fn outcome(plan: &Plan, states: &[StepState]) -> Outcome {
    let deps = plan.dependencies();
    // In plan order, which is topological: a step is blocked when an
    // upstream step failed for the last time, was skipped, or is blocked.
    let mut blocked = vec![false; states.len()];
    let mut open = false;
    for (i, state) in states.iter().enumerate() {
        let upstream_failed = deps[i]
            .iter()
            .any(|&d| blocked[d] || matches!(states[d], StepState::Skipped | StepState::Failed { last: true, .. }));
        match state {
            StepState::Running | StepState::Failed { last: false, .. } => open = true,
            StepState::NotStarted if upstream_failed => blocked[i] = true,
            StepState::NotStarted => open = true,
            _ => {}
        }
    }
    if open {
        return Outcome::Open;
    }
    let first_failure = states.iter().zip(&plan.steps).find_map(|(s, p)| match s {
        StepState::Failed { error, .. } => Some(format!("step `{}` failed: {error}", p.id)),
        _ => None,
    });
    let status = if first_failure.is_some() { RunStatus::Failed } else { RunStatus::Completed };
    Outcome::Done { status, error: first_failure, blocked: (0..states.len()).filter(|&i| blocked[i]).collect() }
}

/// The state of each step of `plan` from the records of its run.
pub fn states_from_records(plan: &Plan, records: &[StepRunRecord]) -> Vec<StepState> {
    plan.steps.iter().map(|s| StepState::of(metadata::latest_record(records, &s.id), s.options.retries)).collect()
}

/// Closes run `run_id` if nothing can run any more: records the steps a
/// failure blocked as skipped and the run's final status. Returns that
/// status, or `None` while a step runs or can still start. What a worker
/// that ran the last step, or an engine's exit hook, calls.
pub async fn close_if_done(stack: &Stack, run_id: &str) -> Result<Option<RunStatus>> {
    let runner = StepRunner::attach(stack.stores().clone(), run_id, RunOptions::default()).await?;
    if matches!(runner.run().status, RunStatus::Completed | RunStatus::Failed) {
        return Ok(Some(runner.run().status));
    }
    let records = stack.metadata().step_runs(run_id).await?;
    let states = states_from_records(runner.plan(), &records);
    let Outcome::Done { status, mut error, blocked } = outcome(runner.plan(), &states) else { return Ok(None) };
    crate::redact::option_in_place(&mut error);
    for pos in blocked {
        runner.skip(pos, "an upstream step failed").await?;
    }
    stack.metadata().set_run_status(run_id, status, error.as_deref(), Some(metadata::now())).await?;
    stack.metadata().flush().await?;
    Ok(Some(status))
}

/// Closes a run that its engine has finished with (what Argo's exit
/// handler calls): a step still recorded as running lost its process, and
/// one that never started never will. They are recorded as failed and as
/// skipped, saying so, and the run gets its final status, which is
/// returned. `engine` names who ended it, for those records.
pub async fn close_ended(stack: &Stack, run_id: &str, engine: &str) -> Result<RunStatus> {
    let runner = StepRunner::attach(stack.stores().clone(), run_id, RunOptions::default()).await?;
    if matches!(runner.run().status, RunStatus::Completed | RunStatus::Failed) {
        return Ok(runner.run().status);
    }
    let plan = runner.plan().clone();
    let records = stack.metadata().step_runs(&runner.run().id).await?;
    let mut states = states_from_records(&plan, &records);
    for (pos, step) in plan.steps.iter().enumerate() {
        let latest = metadata::latest_record(&records, &step.id);
        match (&states[pos], latest) {
            (StepState::Running, Some(r)) => {
                let error = format!(
                    "{engine} ended while the step was recorded as running: its process died without recording a result"
                );
                let attempt = r
                    .metadata
                    .get(crate::run::step::WORKER_KEY)
                    .and_then(|w| w["attempt"].as_u64())
                    .map_or(r.attempts.max(1), |a| a as u32);
                runner.record_failure(pos, attempt, Some(r), &error, Vec::new()).await?;
                states[pos] = StepState::Failed { error, last: true };
            }
            // The engine will not retry it any more.
            (StepState::Failed { error, .. }, _) => {
                states[pos] = StepState::Failed { error: error.clone(), last: true }
            }
            _ => {}
        }
    }
    let blocked = match outcome(&plan, &states) {
        Outcome::Done { blocked, .. } => blocked,
        Outcome::Open => Vec::new(),
    };
    for (pos, state) in states.iter_mut().enumerate() {
        if *state == StepState::NotStarted {
            let reason = if blocked.contains(&pos) {
                "an upstream step failed".to_string()
            } else {
                format!("{engine} ended before it ran the step")
            };
            runner.skip(pos, &reason).await?;
            *state = StepState::Skipped;
        }
    }
    let (status, error) = match outcome(&plan, &states) {
        Outcome::Done { status, error, .. } => (status, error),
        Outcome::Open => (RunStatus::Failed, Some(format!("{engine} ended with steps left to run"))),
    };
    let mut error = match (status, error) {
        (RunStatus::Completed, None) if states.contains(&StepState::Skipped) => {
            Some(format!("{engine} ended before every step ran"))
        }
        (_, e) => e,
    };
    crate::redact::option_in_place(&mut error);
    let status = if error.is_some() { RunStatus::Failed } else { status };
    stack.metadata().set_run_status(&runner.run().id, status, error.as_deref(), Some(metadata::now())).await?;
    stack.metadata().flush().await?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::plan::PlanStep;
    use crate::step::StepOptions;

    /// a -> b -> c, and d on its own.
    fn plan() -> Plan {
        let step = |id: &str, after: &[&str]| PlanStep {
            id: id.into(),
            step: id.into(),
            code_hash: "0".into(),
            code_items: Default::default(),
            version: None,
            params: Default::default(),
            inputs: Vec::new(),
            after: after.iter().map(|a| a.to_string()).collect(),
            outputs: Vec::new(),
            options: StepOptions::default(),
        };
        Plan {
            format: crate::plan::PLAN_FORMAT,
            pipeline: "p".into(),
            config: serde_json::Value::Null,
            steps: vec![step("a", &[]), step("b", &["a"]), step("c", &["b"]), step("d", &[])],
            outputs: Vec::new(),
            build: Default::default(),
            no_cache: false,
        }
    }

    #[test]
    fn a_run_is_done_only_when_nothing_can_run_any_more() {
        use StepState::*;
        let failed = |last| Failed { error: "boom".into(), last };
        let p = plan();
        assert_eq!(
            outcome(&p, &[Succeeded, Succeeded, Succeeded, Succeeded]),
            Outcome::Done { status: RunStatus::Completed, error: None, blocked: vec![] }
        );
        assert_eq!(outcome(&p, &[Succeeded, Running, NotStarted, Succeeded]), Outcome::Open, "b runs");
        assert_eq!(outcome(&p, &[Succeeded, Succeeded, Succeeded, NotStarted]), Outcome::Open, "d can start");
        assert_eq!(outcome(&p, &[failed(false), NotStarted, NotStarted, Succeeded]), Outcome::Open, "a is retried");
        assert_eq!(
            outcome(&p, &[failed(true), NotStarted, NotStarted, Succeeded]),
            Outcome::Done {
                status: RunStatus::Failed,
                error: Some("step `a` failed: boom".into()),
                blocked: vec![1, 2],
            },
            "what a failure blocks, transitively, is reported to be recorded as skipped"
        );
        assert_eq!(
            outcome(&p, &[failed(true), NotStarted, NotStarted, NotStarted]),
            Outcome::Open,
            "d does not depend on a: it can still run"
        );
        assert_eq!(
            outcome(&p, &[Succeeded, failed(true), Skipped, Succeeded]),
            Outcome::Done { status: RunStatus::Failed, error: Some("step `b` failed: boom".into()), blocked: vec![] }
        );
    }
}
