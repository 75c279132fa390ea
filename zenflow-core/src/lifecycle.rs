//! The run lifecycle every orchestrator shares: start a run, decide what
//! can still run, close the run when nothing can, and predict what the
//! cache will serve.
//!
//! An in-process orchestrator drives a run from its [`StepRunner`]'s
//! results; a worker process (the step entrypoint) and an engine's exit
//! hook (Argo's `onExit`) see only the metadata store. Both decide with the
//! same function, [`outcome`], over the latest record of each step.

use crate::artifact_store;
use crate::cache::cache_key;
use crate::error::Result;
use crate::hash::ContentHash;
use crate::metadata::{self, NewRun, RunRecord, RunStatus, StepRunRecord, StepStatus};
use crate::plan::Plan;
use crate::runner::{RunOptions, StepRunner};
use crate::stack::Stack;
use std::collections::HashMap;

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
    let new_run = NewRun {
        id,
        pipeline: plan.pipeline.clone(),
        name,
        stack: stack.name().to_string(),
        status,
        git_commit: stack.project_root().and_then(crate::git::head_commit),
        plan,
        started_at,
    };
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
    let runner = StepRunner::attach(stack.clone(), run_id, RunOptions::default()).await?;
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
    let runner = StepRunner::attach(stack.clone(), run_id, RunOptions::default()).await?;
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
                    .get(crate::runner::WORKER_KEY)
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

/// What the cache holds for a cache key.
#[derive(Debug)]
pub enum Lookup {
    /// A step run whose outputs are all in the artifact store.
    Hit(metadata::CacheHit),
    /// A step run whose output (this one) is gone from the artifact store.
    Gone(Box<metadata::ArtifactVersion>),
    /// A step run whose output (this one) is damaged in the store.
    Corrupted {
        /// The output.
        artifact: Box<metadata::ArtifactVersion>,
        /// What the store says about it.
        detail: String,
    },
    /// A step run older than the time to live.
    Expired {
        /// Its age, in seconds.
        age_secs: u64,
        /// The time to live, in seconds.
        ttl_secs: u64,
    },
    /// No step run has the key.
    Miss,
}

/// Looks `key` up as the runner does: the latest completed step run with
/// it, if it is younger than `ttl_ms` (when set) and every one of its
/// artifacts is still in the store, intact
/// ([`artifact_store::version_usable`]).
pub async fn look_up(stack: &Stack, key: &str, ttl_ms: Option<u64>) -> Result<Lookup> {
    let Some(hit) = stack.metadata().find_cached(key).await? else { return Ok(Lookup::Miss) };
    if let Some(ttl_ms) = ttl_ms {
        let age_ms = u64::try_from((metadata::now() - hit.ended_at) / 1000).unwrap_or(0);
        if age_ms > ttl_ms {
            return Ok(Lookup::Expired { age_secs: age_ms / 1000, ttl_secs: ttl_ms / 1000 });
        }
    }
    for o in &hit.outputs {
        match artifact_store::version_usable(stack.artifacts().as_ref(), &o.artifact).await? {
            artifact_store::Usable::Yes => {}
            artifact_store::Usable::Gone => return Ok(Lookup::Gone(Box::new(o.artifact.clone()))),
            artifact_store::Usable::Corrupted(detail) => {
                return Ok(Lookup::Corrupted { artifact: Box::new(o.artifact.clone()), detail })
            }
        }
    }
    Ok(Lookup::Hit(hit))
}

/// What a run would do with a step, predicted before it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// Served from cache, by this step run.
    Cached {
        /// The step run whose outputs it would reuse.
        step_run: String,
    },
    /// Executed, and why.
    Run(RunReason),
}

/// Why a step would execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunReason {
    /// An input comes from a step that will execute, so its bytes are not
    /// known yet.
    NewInput,
    /// The cache is off for the step or the run.
    CacheOff,
    /// No earlier step run has its cache key.
    NoCachedResult,
    /// The cached result's artifacts are gone from the store.
    ArtifactsGone,
    /// A cached result's artifact is damaged in the store.
    ArtifactCorrupted,
    /// The cached result is older than the step's time to live.
    Expired,
}

impl std::fmt::Display for Prediction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Prediction::Cached { .. } => "cached",
            Prediction::Run(RunReason::NewInput) => "run (an input will be new)",
            Prediction::Run(RunReason::CacheOff) => "run (cache off)",
            Prediction::Run(RunReason::NoCachedResult) => "run (no cached result)",
            Prediction::Run(RunReason::ArtifactsGone) => "run (cached artifacts are gone)",
            Prediction::Run(RunReason::ArtifactCorrupted) => "run (a cached artifact is damaged)",
            Prediction::Run(RunReason::Expired) => "run (cached result expired)",
        })
    }
}

/// Predicts, step by step in plan order, what a run of `plan` on `stack`
/// would serve from cache: the cache key the runner would compute from the
/// inputs' content hashes (model inputs resolved as the registry stands
/// now), looked up as the runner looks it up.
pub async fn predict(stack: &Stack, plan: &Plan, no_cache: bool) -> Result<Vec<Prediction>> {
    let registry = stack.metadata().registry();
    let mut known: HashMap<(String, String), ContentHash> = HashMap::new();
    let mut out = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let mut hashes: Option<Vec<Vec<ContentHash>>> = Some(Vec::new());
        for input in &step.inputs {
            let part = match &input.model {
                Some(m) => match registry {
                    Some(r) => match r.resolve(&m.model, &m.alias).await {
                        Ok(Some(v)) => Some(vec![v.content_hash]),
                        Ok(None) | Err(crate::registry::RegistryError::UnknownModel { .. }) => Some(Vec::new()),
                        Err(e) => return Err(e.into()),
                    },
                    None => Some(Vec::new()),
                },
                None => input.from.iter().map(|r| known.get(&(r.step.clone(), r.output.clone())).copied()).collect(),
            };
            match (part, hashes.as_mut()) {
                (Some(p), Some(h)) => h.push(p),
                _ => hashes = None,
            }
        }
        let prediction = match hashes {
            None => Prediction::Run(RunReason::NewInput),
            Some(_) if no_cache || !step.options.cache => Prediction::Run(RunReason::CacheOff),
            Some(hashes) => {
                match look_up(stack, &cache_key(step, &hashes).to_hex(), step.options.cache_ttl_ms).await? {
                    Lookup::Miss => Prediction::Run(RunReason::NoCachedResult),
                    Lookup::Gone(_) => Prediction::Run(RunReason::ArtifactsGone),
                    Lookup::Corrupted { .. } => Prediction::Run(RunReason::ArtifactCorrupted),
                    Lookup::Expired { .. } => Prediction::Run(RunReason::Expired),
                    Lookup::Hit(hit) => {
                        for o in &hit.outputs {
                            known.insert((step.id.clone(), o.output.clone()), o.artifact.content_hash);
                        }
                        Prediction::Cached { step_run: hit.step_run }
                    }
                }
            }
        };
        out.push(prediction);
    }
    Ok(out)
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

    #[test]
    fn run_names() {
        assert_eq!(default_run_name("p", 86_400_000_000 + 3_723_000_000, "0-abcdef12"), "p-19700102-010203-21fedc");
    }
}
