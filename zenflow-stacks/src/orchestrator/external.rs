//! The driver every orchestrator that runs steps outside this process
//! shares (child processes, Ray jobs): it schedules ready steps, serves
//! unchanged ones from the cache itself, launches each other attempt
//! through the step entrypoint, reads back what the attempt
//! recorded, retries per the step's policy, and closes the books on
//! attempts that died without recording. What differs between engines is
//! only how one attempt is launched and watched: a [`Launcher`].
//!
//! The metadata store is the source of truth for what a step did; the
//! engine is the source of truth for whether its process is still alive.
//! An attempt that ended without a final record (killed, crashed, stopped,
//! lost with its node) is recorded as failed with the engine's reason, so a
//! run never waits on a step nobody runs any more.

use super::ready::ReadyQueue;
use async_trait::async_trait;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinSet;
use zenflow_core::metadata::{StepRunRecord, StepStatus};
use zenflow_core::plan::PlanStep;
use zenflow_core::{Error, Orchestrator, StepRunner};

/// How long past a step's timeout the driver waits for the attempt to stop
/// by itself (the entrypoint enforces the timeout and records it) before it
/// stops the attempt from outside.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Lines of an attempt's output kept for the record of an attempt that
/// died without recording.
pub const TAIL_LINES: usize = 50;

/// One attempt to launch: a step, or a chain of steps fused into one
/// process, of a recorded run.
#[derive(Debug)]
pub struct Attempt<'a> {
    /// The run's id.
    pub run_id: &'a str,
    /// The run's name, for labels.
    pub run_name: &'a str,
    /// The stack's name: the worker opens the same stack by this name.
    pub stack: &'a str,
    /// The steps, in order.
    pub steps: Vec<&'a PlanStep>,
    /// The attempt number of the first step (the others run their first).
    pub attempt: u32,
    /// How long the attempt may run before the launcher stops it: the
    /// steps' timeouts and [`STOP_GRACE`]; none when a step has no timeout.
    pub deadline: Option<Duration>,
}

impl Attempt<'_> {
    /// The step-entrypoint arguments of this attempt (after the program).
    pub fn entrypoint_args(&self) -> Vec<String> {
        // The driver closes the run: the worker leaves it open.
        let request = zenflow_core::run::entrypoint::Request {
            run: self.run_id.to_string(),
            steps: self.steps.iter().map(|s| s.id.clone()).collect(),
            attempt: self.attempt,
            close: false,
        };
        request.to_args(self.stack)
    }
}

/// How an attempt ended, as the engine saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The entrypoint exited with this code (see
    /// [`zenflow_core::run::entrypoint::Exit`]).
    Exited(i32),
    /// The process died without an exit code, or the engine ended it:
    /// why (the signal, the engine's message).
    Died(String),
    /// The launcher stopped it past its deadline.
    TimedOut(Duration),
    /// It could not be launched; `permanent` when another attempt would
    /// fail the same way (the program does not exist).
    NotLaunched {
        /// Why.
        reason: String,
        /// Whether retrying is pointless.
        permanent: bool,
    },
}

/// What a launcher reports about an ended attempt.
#[derive(Clone, Debug)]
pub struct AttemptEnd {
    /// How it ended.
    pub ended: Ended,
    /// The last lines of its output, for the record when it died without
    /// recording.
    pub tail: Vec<String>,
}

/// Launches and watches one attempt on an engine.
#[async_trait]
pub trait Launcher: Send + Sync + std::fmt::Debug + 'static {
    /// Short name (`subprocess`, `ray`).
    fn name(&self) -> &str;

    /// Called once per run before the first launch (ship the binary).
    /// An error fails the run: nothing could run.
    async fn prepare(&self, _runner: &StepRunner) -> Result<(), Error> {
        Ok(())
    }

    /// Runs `attempt` to its end (or its deadline) and reports how it ended.
    async fn launch(&self, attempt: &Attempt<'_>) -> AttemptEnd;

    /// Called once per run after the last attempt ended (tidy the engine).
    async fn finish(&self) {}
}

/// An [`Orchestrator`] that runs each step attempt through a [`Launcher`].
#[derive(Debug)]
pub struct ExternalOrchestrator<L> {
    launcher: Arc<L>,
    parallelism: usize,
    fuse_chains: bool,
}

impl<L: Launcher> ExternalOrchestrator<L> {
    /// At most `parallelism` attempts at once (at least 1).
    pub fn new(launcher: L, parallelism: usize) -> Self {
        ExternalOrchestrator { launcher: Arc::new(launcher), parallelism: parallelism.max(1), fuse_chains: false }
    }

    /// Runs consecutive steps of a chain (each the only dependent of the
    /// one before, with the same resources) as one attempt. Each still
    /// records its own step run, cache entry and logs.
    pub fn with_fused_chains(mut self, fuse: bool) -> Self {
        self.fuse_chains = fuse;
        self
    }

    /// The launcher.
    pub fn launcher(&self) -> &L {
        &self.launcher
    }

    /// The configured parallelism.
    pub fn parallelism(&self) -> usize {
        self.parallelism
    }

    /// Whether chains are fused.
    pub fn fuses_chains(&self) -> bool {
        self.fuse_chains
    }
}

/// Refuses stores that a process other than this one cannot open.
fn shared_stores(runner: &StepRunner, orchestrator: &str) -> Result<(), Error> {
    let stack = runner.stores();
    let metadata = stack.metadata().url();
    let artifacts = stack.artifacts().url();
    let private = |url: &str| url.starts_with("sqlite::memory") || url.starts_with("memory:");
    for (what, url) in [("metadata store", &metadata), ("artifact store", &artifacts)] {
        if private(url) {
            return Err(Error::usage(format!(
                "stack `{}`: the {orchestrator} orchestrator runs steps in other processes, which cannot see the \
                 in-memory {what} `{url}`; use a file or server store (sqlite://PATH, file://PATH, postgres://, s3://)",
                stack.name()
            )));
        }
    }
    if stack.project_root().is_none() {
        return Err(Error::usage(format!(
            "stack `{}`: the {orchestrator} orchestrator needs the project root, where its workers find \
             zenflow.toml; open the stack with zenflow_stacks::Stacks",
            stack.name()
        )));
    }
    Ok(())
}

/// The units the plan runs as: single steps, or fused chains. Each unit's
/// dependencies are those of its first step.
fn units(runner: &StepRunner, fuse: bool) -> Vec<Vec<usize>> {
    let plan = runner.plan();
    let n = plan.steps.len();
    let deps = runner.dependencies();
    let dependents = runner.dependents();
    if !fuse {
        return (0..n).map(|i| vec![i]).collect();
    }
    let joins = |a: usize, b: usize| {
        dependents[a].len() == 1
            && dependents[a][0] == b
            && deps[b].len() == 1
            && plan.steps[a].options.resources == plan.steps[b].options.resources
    };
    let mut taken = vec![false; n];
    let mut out = Vec::new();
    for start in 0..n {
        if taken[start] || (deps[start].len() == 1 && joins(deps[start][0], start)) {
            continue;
        }
        let mut unit = vec![start];
        taken[start] = true;
        let mut at = start;
        while dependents[at].len() == 1 && joins(at, dependents[at][0]) {
            at = dependents[at][0];
            taken[at] = true;
            unit.push(at);
        }
        out.push(unit);
    }
    // Plan order is topological: a step that continues a chain was taken
    // with its predecessor's unit before the loop reached it.
    out
}

// Poisoning only follows a panic, which already fails the run.
fn lock(s: &Mutex<Schedule>) -> std::sync::MutexGuard<'_, Schedule> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Schedule {
    /// Of units.
    ready: ReadyQueue,
    first_error: Option<Error>,
}

#[async_trait]
impl<L: Launcher> Orchestrator for ExternalOrchestrator<L> {
    fn name(&self) -> &str {
        self.launcher.name()
    }

    async fn execute(&self, runner: Arc<StepRunner>) -> Result<(), Error> {
        shared_stores(&runner, self.launcher.name())?;
        // Workers read the run from the store: it must be there, not batched.
        runner.stores().metadata().flush().await?;
        self.launcher.prepare(&runner).await?;
        let units = Arc::new(units(&runner, self.fuse_chains));
        let mut unit_of = vec![0; runner.plan().steps.len()];
        for (u, steps) in units.iter().enumerate() {
            for &p in steps {
                unit_of[p] = u;
            }
        }
        // Unit-level dependencies: those of each unit's first step.
        let unit_deps: Vec<Vec<usize>> =
            units.iter().map(|steps| runner.dependencies()[steps[0]].iter().map(|&d| unit_of[d]).collect()).collect();
        let schedule = Mutex::new(Schedule { ready: ReadyQueue::new(&unit_deps), first_error: None });
        // Tasks, not futures polled by this one: a unit must make progress
        // (and release what it holds in the store) while this task awaits
        // the store itself.
        let mut running: JoinSet<(usize, Result<bool, Error>)> = JoinSet::new();
        loop {
            {
                let mut s = lock(&schedule);
                while running.len() < self.parallelism {
                    let Some(u) = s.ready.next() else { break };
                    let runner = runner.clone();
                    let steps = units[u].clone();
                    let launcher = self.launcher.clone();
                    running.spawn(async move { (u, run_unit(&*launcher, &runner, &steps).await) });
                }
            }
            let Some(joined) = running.join_next().await else { break };
            let (u, outcome) = match joined {
                Ok(done) => done,
                Err(e) => {
                    // A bug (a panic in the driver): what that unit would
                    // have run next never starts.
                    lock(&schedule).first_error.get_or_insert(Error::Panicked(format!(
                        "a task of the {} orchestrator failed: {e}",
                        self.name()
                    )));
                    continue;
                }
            };
            let succeeded = match outcome {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::error!("step `{}` could not be recorded: {e}", runner.plan().steps[units[u][0]].id);
                    lock(&schedule).first_error.get_or_insert(e);
                    false
                }
            };
            if succeeded {
                lock(&schedule).ready.succeeded(u);
            } else {
                // The unit's failed step: the first without a success.
                let results = runner.results();
                let failed = units[u]
                    .iter()
                    .copied()
                    .find(|&p| {
                        !results.iter().any(|r| r.invocation == runner.plan().steps[p].id && r.status.is_success())
                    })
                    .unwrap_or(units[u][0]);
                if let Err(e) = runner.skip_dependents(failed).await {
                    lock(&schedule).first_error.get_or_insert(e);
                }
            }
        }
        self.launcher.finish().await;
        let error = lock(&schedule).first_error.take();
        error.map_or(Ok(()), Err)
    }
}

/// Why an attempt that left no final record ended, for that record.
fn reason(ended: &Ended, steps: &str) -> String {
    match ended {
        Ended::Exited(code) => format!("the step's process exited with code {code} without recording a result"),
        Ended::Died(why) => format!("the step's process died without recording a result: {why}"),
        Ended::TimedOut(after) => format!(
            "timed out: {steps} did not stop within {after:.1?} (its timeout and {STOP_GRACE:?} of grace) and was stopped"
        ),
        Ended::NotLaunched { reason, .. } => format!("the step could not be launched: {reason}"),
    }
}

/// Runs one unit to its end: every attempt its first failing step's
/// policy allows. `Ok(true)` when every step of the unit succeeded.
async fn run_unit<L: Launcher>(launcher: &L, runner: &StepRunner, unit: &[usize]) -> Result<bool, Error> {
    let plan = runner.plan();
    let mut from = 0;
    let mut attempt = 1;
    for &p in unit {
        runner.announce(p);
    }
    // Unchanged steps are served from cache here: no process, no job.
    while from < unit.len() {
        match runner.serve_cached(unit[from]).await? {
            Some(result) if result.status.is_success() => from += 1,
            Some(_) => {
                runner.stores().metadata().flush().await?;
                return Ok(false);
            }
            None => break,
        }
    }
    if from == unit.len() {
        return Ok(true);
    }
    loop {
        let report = launch(launcher, runner, &unit[from..], attempt).await;
        let Some((at, record, made)) = first_failure(runner, unit, from, attempt, &report).await? else {
            runner.stores().metadata().flush().await?;
            return Ok(true);
        };
        let options = &plan.steps[unit[at]].options;
        let permanent = matches!(report.ended, Ended::Exited(2) | Ended::NotLaunched { permanent: true, .. })
            || record.is_permanent_failure();
        if permanent || made > options.retries {
            runner.record_external(unit[at], record);
            runner.stores().metadata().flush().await?;
            return Ok(false);
        }
        let delay = options.backoff(made);
        tracing::warn!(
            step = %plan.steps[unit[at]].id,
            "attempt {made} of {} failed: {}; retrying in {delay:?}",
            options.retries + 1,
            record.error.as_deref().unwrap_or("unknown error")
        );
        tokio::time::sleep(delay).await;
        from = at;
        attempt = made + 1;
    }
}

/// Launches attempt `attempt` of the steps at `positions` (a chain runs in
/// one process), with a deadline of their timeouts and a grace period.
async fn launch<L: Launcher>(launcher: &L, runner: &StepRunner, positions: &[usize], attempt: u32) -> AttemptEnd {
    let steps: Vec<&PlanStep> = positions.iter().map(|&p| &runner.plan().steps[p]).collect();
    let deadline = steps
        .iter()
        .map(|s| s.options.timeout())
        .try_fold(Duration::ZERO, |sum, t| t.map(|t| sum + t))
        .map(|t| t + STOP_GRACE);
    let job = Attempt {
        run_id: &runner.run().id,
        run_name: &runner.run().name,
        stack: runner.stores().name(),
        steps,
        attempt,
        deadline,
    };
    launcher.launch(&job).await
}

/// After an attempt of `unit[from..]`: takes the steps it completed, and
/// gives the first one that did not (its position in `unit`, its record,
/// the attempt it made). A step that left nothing final is recorded as
/// failed, saying how its attempt ended.
async fn first_failure(
    runner: &StepRunner,
    unit: &[usize],
    from: usize,
    attempt: u32,
    report: &AttemptEnd,
) -> Result<Option<(usize, StepRunRecord, u32)>, Error> {
    let plan = runner.plan();
    let names = unit[from..].iter().map(|&p| format!("`{}`", plan.steps[p].id)).collect::<Vec<_>>().join(", ");
    let metadata = runner.stores().metadata();
    for (i, &p) in unit[from..].iter().enumerate() {
        let this_attempt = if i == 0 { attempt } else { 1 };
        // Only this step's latest record: reading the whole run after every
        // attempt made a run's bookkeeping quadratic in its steps.
        let latest = metadata.latest_step_run(&runner.run().id, &plan.steps[p].id).await?;
        match latest {
            Some(r) if r.status.is_success() => {
                runner.record_external(p, r);
            }
            Some(r) if r.status == StepStatus::Failed && r.attempts >= this_attempt => {
                return Ok(Some((from + i, r, this_attempt)));
            }
            other => {
                // Nothing final from this attempt: it died, was stopped,
                // never started, or (a later step of a chain) was never
                // reached. A record it left as running is closed.
                let running = other.as_ref().filter(|r| r.status == StepStatus::Running);
                let record = runner
                    .record_failure(p, this_attempt, running, &reason(&report.ended, &names), tail_logs(report))
                    .await?;
                return Ok(Some((from + i, record, this_attempt)));
            }
        }
    }
    Ok(None)
}

/// The tail of an attempt's output, introduced, for a record.
fn tail_logs(report: &AttemptEnd) -> Vec<String> {
    if report.tail.is_empty() {
        return vec!["[zenflow] the attempt's output had no lines".into()];
    }
    let mut lines = vec![format!("[zenflow] the last {} lines of the attempt's output:", report.tail.len())];
    lines.extend(report.tail.iter().cloned());
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoint_arguments_follow_the_contract() {
        let step: PlanStep = serde_json::from_value(serde_json::json!({
            "id": "train_lr_0.1", "step": "train", "code_hash": "00", "params": {}, "inputs": [], "outputs": [],
            "options": {"cache": true, "retries": 0, "retry_backoff_ms": 0}
        }))
        .unwrap();
        let attempt =
            Attempt { run_id: "r1", run_name: "n", stack: "staging", steps: vec![&step], attempt: 3, deadline: None };
        assert_eq!(
            attempt.entrypoint_args(),
            [
                "step-entrypoint",
                "--run",
                "r1",
                "--step",
                "train_lr_0.1",
                "--attempt",
                "3",
                "--no-close",
                "--stack",
                "staging"
            ]
        );
    }
}
