//! Failing, retried, panicking and timed-out steps on the local stack.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;
use zenflow::ext::StepRunner;
use zenflow::metadata::{RunStatus, StepStatus};
use zenflow::prelude::*;
use zenflow::testing::TestStack;
use zenflow::{Error, RunResult};
use zenflow_tests::records::statuses;

static BROKEN: AtomicBool = AtomicBool::new(true);
static FLAKY_ATTEMPTS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
struct TrainingDiverged(f64);

impl std::fmt::Display for TrainingDiverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "training diverged: loss is {}", self.0)
    }
}

impl std::error::Error for TrainingDiverged {}

#[step]
fn base(#[param] n: i64) -> i64 {
    n
}

#[step]
fn fragile(x: i64) -> Result<i64, TrainingDiverged> {
    if BROKEN.load(SeqCst) {
        Err(TrainingDiverged(f64::INFINITY))
    } else {
        Ok(x * 10)
    }
}

#[step]
fn plus_one(x: i64) -> i64 {
    x + 1
}

#[step(retries = 3, retry_backoff = "1ms")]
fn flaky(x: i64, ctx: &StepContext) -> Result<i64, String> {
    FLAKY_ATTEMPTS.fetch_add(1, SeqCst);
    if ctx.attempt() < 3 {
        return Err(format!("transient failure on attempt {}", ctx.attempt()));
    }
    Ok(x)
}

#[step(retries = 1, retry_backoff = "1ms")]
fn always_fails(_x: i64) -> Result<i64, String> {
    Err("the database is down".into())
}

#[step]
fn panics(x: i64) -> i64 {
    if x >= 0 {
        panic!("index out of range: {x}");
    }
    x
}

#[step(timeout = "100ms")]
async fn slow_async(x: i64) -> i64 {
    tokio::time::sleep(Duration::from_secs(30)).await;
    x
}

#[step(timeout = "100ms")]
fn slow_sync(x: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(600));
    x
}

#[pipeline]
fn two_branches(n: &i64) {
    let b = base(*n);
    let bad = fragile(b);
    plus_one(bad);
    let good = plus_one(b);
    plus_one(good);
}

#[pipeline]
fn retried() {
    let b = base(11);
    flaky(b);
}

#[pipeline]
fn exhausted() {
    let b = base(12);
    let f = always_fails(b);
    plus_one(f);
}

#[pipeline]
fn panicking() {
    let b = base(13);
    let p = panics(b);
    plus_one(p);
}

#[pipeline]
fn healthy() {
    let b = base(15);
    plus_one(b);
}

#[pipeline]
fn timing_out() {
    let b = base(14);
    slow_async(b);
    slow_sync(b);
}

fn failed_run(result: zenflow::Result<RunResult>) -> RunResult {
    match result {
        Err(Error::RunFailed(f)) => *f.0,
        Err(other) => panic!("expected a failed run, got the error {other}"),
        Ok(run) => panic!("expected a failed run, got {}", run.summary()),
    }
}

/// [`failed_run`] for a pipeline with an output, typed again.
fn failed_run_of<O>(result: zenflow::Result<RunResult<O>>) -> RunResult<O> {
    match result {
        Err(Error::RunFailed(f)) => f.0.into_typed(),
        Err(other) => panic!("expected a failed run, got the error {other}"),
        Ok(run) => panic!("expected a failed run, got {}", run.summary()),
    }
}

/// One test, because it flips the global switch that breaks `fragile`.
#[test]
fn a_failed_step_skips_its_dependents_keeps_everything_else_and_the_next_run_resumes() {
    let stack = TestStack::new();
    BROKEN.store(true, SeqCst);
    let err = two_branches.run(&stack, &5).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("step `fragile` failed: training diverged: loss is inf")
            && message.contains("1 dependent step(s) skipped")
            && message.contains("resume from cache"),
        "{message}"
    );
    let run = failed_run(Err(err));
    let mut got = statuses(&run);
    got.sort();
    assert_eq!(
        got,
        [
            ("base", StepStatus::Completed),
            ("fragile", StepStatus::Failed),
            ("plus_one", StepStatus::Skipped),
            ("plus_one_2", StepStatus::Completed),
            ("plus_one_3", StepStatus::Completed),
        ],
        "the independent branch finishes"
    );
    assert_eq!(run.artifact::<i64>("plus_one_3", "output").unwrap(), 7);

    // Recorded in the metadata store.
    let record = stack.get_run(run.id()).unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert!(record.error.unwrap().contains("training diverged"));
    let steps = stack.step_runs(run.id()).unwrap();
    let fragile = steps.iter().find(|s| s.invocation == "fragile").unwrap();
    assert_eq!(fragile.error.as_deref(), Some("training diverged: loss is inf"));
    assert!(fragile.outputs.is_empty());
    let skipped = steps.iter().find(|s| s.invocation == "plus_one").unwrap();
    assert_eq!(skipped.error.as_deref(), Some("skipped because upstream step `fragile` failed"));

    // Fixed: only the failed step and what it feeds run again.
    BROKEN.store(false, SeqCst);
    let run = two_branches.run(&stack, &5).unwrap();
    assert_eq!(
        statuses(&run),
        [
            ("base", StepStatus::Cached),
            ("fragile", StepStatus::Completed),
            ("plus_one", StepStatus::Completed),
            ("plus_one_2", StepStatus::Cached),
            ("plus_one_3", StepStatus::Cached),
        ]
    );
    assert_eq!(run.artifact::<i64>("plus_one", "output").unwrap(), 51);

    // The step runner also runs one step of an existing run by id: what a
    // distributed worker does. Re-run `fragile` of the first (failed) run.
    let runner = stack.block_on(StepRunner::attach(stack.stores().clone(), record.id.as_str(), Default::default()));
    let runner = runner.unwrap();
    let pos = runner.position("fragile").unwrap();
    let result = stack.block_on(runner.run_step(pos)).unwrap();
    assert_eq!(result.status, StepStatus::Cached, "the fixed step's result is in the cache now");
    let pos = runner.position("plus_one").unwrap();
    let result = stack.block_on(runner.run_step(pos)).unwrap();
    assert_eq!(result.status, StepStatus::Cached);
    let err = runner.position("nope").unwrap_err().to_string();
    assert!(err.contains("has no step `nope`") && err.contains("fragile"), "{err}");
}

#[test]
fn a_worker_refuses_a_step_whose_code_differs_from_the_plan() {
    let stack = TestStack::new();
    // A run planned by another build: same steps, but `plus_one` had other code.
    let mut plan = healthy.plan(&()).unwrap();
    plan.steps[1].code_hash = "0".repeat(64);
    let run = stack
        .block_on(stack.metadata().create_run(&zenflow::metadata::NewRun {
            id: zenflow::testing::unique_id(),
            pipeline: plan.pipeline.clone(),
            name: "planned-elsewhere".into(),
            stack: "local".into(),
            status: RunStatus::Pending,
            plan,
            git_commit: None,
            git_branch: None,
            ci_job_url: None,
            started_at: zenflow::testing::now(),
        }))
        .unwrap();
    let runner = stack.block_on(StepRunner::attach(stack.stores().clone(), &run.id, Default::default())).unwrap();
    let base = stack.block_on(runner.run_step(0)).unwrap();
    assert_eq!(base.status, StepStatus::Completed, "unchanged steps run");
    let changed = stack.block_on(runner.run_step(1)).unwrap();
    assert_eq!(changed.status, StepStatus::Failed);
    let error = changed.error.clone().unwrap();
    assert!(
        error.contains("is not the one run `planned-elsewhere` was planned with") && error.contains("its code changed"),
        "{error}"
    );
}

#[test]
fn retries_rerun_a_failed_attempt_with_backoff() {
    let stack = TestStack::new();
    let run = retried.run(&stack, &()).unwrap();
    let flaky = run.step("flaky").unwrap();
    assert_eq!(flaky.status, StepStatus::Completed);
    assert_eq!(flaky.attempts, 3);
    assert_eq!(FLAKY_ATTEMPTS.load(SeqCst), 3);
    let logs = &stack.step_runs(run.id()).unwrap()[1].logs;
    assert!(logs[0].starts_with("attempt 1 of 4 failed: transient failure on attempt 1; retrying in"), "{logs:?}");
    assert!(logs[1].starts_with("attempt 2 of 4 failed"), "{logs:?}");
}

/// A run's result holds its steps' latest records as written (failed
/// after retries with their logs, skipped, executed, cached), so its
/// report need not read them back.
#[test]
fn a_runs_result_holds_the_records_the_store_holds() {
    let stack = TestStack::new();
    let failed = failed_run(exhausted.run(&stack, &()));
    assert!(failed.records()[1].logs.iter().any(|l| l.starts_with("attempt 1 of 2 failed")), "{failed:?}");
    let first = healthy.run(&stack, &()).unwrap();
    let cached = healthy.run(&stack, &()).unwrap();
    assert_eq!(cached.cached(), ["base", "plus_one"]);
    for run in [&failed, &first.erase(), &cached.erase()] {
        zenflow_tests::records::assert_records_as_stored(&stack, run);
    }
}

#[test]
fn a_step_that_keeps_failing_gives_up_after_its_retries() {
    let stack = TestStack::new();
    let run = failed_run(exhausted.run(&stack, &()));
    let step = run.step("always_fails").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(step.attempts, 2);
    assert_eq!(step.error.as_deref(), Some("failed after 2 attempts: the database is down"));
    assert_eq!(run.step("plus_one").unwrap().status, StepStatus::Skipped);
}

#[test]
fn a_panic_is_that_steps_failure() {
    let stack = TestStack::new();
    let run = failed_run(panicking.run(&stack, &()));
    let step = run.step("panics").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(step.error.as_deref(), Some("the step panicked: index out of range: 13"));
    assert_eq!(run.step("plus_one").unwrap().status, StepStatus::Skipped);
    // The stack is still usable.
    assert_eq!(healthy.run(&stack, &()).unwrap().artifact::<i64>("plus_one", "output").unwrap(), 16);
}

#[test]
fn a_step_over_its_timeout_fails() {
    let stack = TestStack::new();
    let started = std::time::Instant::now();
    let run = failed_run(timing_out.run(&stack, &()));
    assert!(started.elapsed() < Duration::from_secs(20), "the async step was not cancelled");
    for id in ["slow_async", "slow_sync"] {
        let step = run.step(id).unwrap();
        assert_eq!(step.status, StepStatus::Failed, "{id}");
        assert!(step.error.as_deref().unwrap().contains("did not finish within its timeout of 100ms"), "{step:?}");
    }
}

mod store_failures {
    use std::sync::Arc;
    use zenflow::metadata::*;
    use zenflow::prelude::*;
    use zenflow::stacks::{LocalOrchestrator, ObjectArtifactStore, SqliteMetadataStore};

    use zenflow::testing::faults::{Faults, FaultyArtifacts, FaultyMetadata, Rule};

    /// A stack on SQLite and memory whose stores `faults` may break; every
    /// artifact goes to the artifact store (none inline in the record).
    fn faulty_stack(faults: &Faults) -> zenflow::Stack {
        zenflow::Stack::new(
            "faulty",
            Arc::new(LocalOrchestrator::new(1)),
            Arc::new(FaultyArtifacts::new(ObjectArtifactStore::memory(), faults.clone())),
            Arc::new(FaultyMetadata::new(SqliteMetadataStore::in_memory().unwrap(), faults.clone())),
        )
        .with_inline_limit(0)
    }

    /// The final (not `running`) record of step `id`.
    fn final_record_of(id: &'static str) -> impl Fn(&zenflow::testing::faults::Call<'_>) -> bool {
        move |c| c.step_run.is_some_and(|w| w.invocation == id && w.status != StepStatus::Running)
    }

    #[step(cache = false)]
    fn first() -> i64 {
        1
    }

    #[step(cache = false)]
    fn then(x: i64) -> i64 {
        x + 1
    }

    /// first -> then -> then_2 -> then_3, and first -> then_4 beside them.
    #[pipeline]
    fn chain_and_branch() {
        let a = first();
        let b = then(a);
        let c = then(b);
        then(c);
        then(a);
    }

    /// When the store cannot record a step, the run fails and says why;
    /// nothing downstream of that step starts (it is recorded as skipped),
    /// and a branch beside it still finishes and is recorded.
    #[test]
    fn a_store_that_cannot_record_a_step_fails_the_run_and_starts_nothing_after_it() {
        let faults = Faults::new()
            .with(Rule::on("write_step_run").when(final_record_of("then_2")).fail("disk full (simulated)"));
        let stack = faulty_stack(&faults);
        let run = super::failed_run(chain_and_branch.run(&stack, &()));
        assert_eq!(run.status(), RunStatus::Failed);
        let error = run.record().error.clone().unwrap_or_default();
        assert!(error.contains("disk full (simulated)"), "{error}");
        let status = |id: &str| run.step(id).map(|s| s.status);
        assert_eq!(status("first"), Some(StepStatus::Completed));
        assert_eq!(status("then"), Some(StepStatus::Completed));
        assert_eq!(status("then_2"), None, "its record could not be written");
        assert_eq!(status("then_3"), Some(StepStatus::Skipped));
        assert_eq!(status("then_4"), Some(StepStatus::Completed));
        // What the store holds says the same.
        let recorded = stack.block_on(stack.metadata().step_runs(run.id())).unwrap();
        let stored = |id: &str| recorded.iter().find(|s| s.invocation == id).map(|s| s.status);
        assert_eq!(stored("then_3"), Some(StepStatus::Skipped));
        assert_eq!(stored("then_4"), Some(StepStatus::Completed));
        let reread = stack.block_on(stack.metadata().get_run(run.id())).unwrap().unwrap();
        assert_eq!(reread.status, RunStatus::Failed);
    }

    #[step]
    fn source(#[param] n: i64) -> Vec<i64> {
        (0..n).collect()
    }

    #[step]
    fn square(xs: Vec<i64>) -> Vec<i64> {
        xs.iter().map(|x| x * x).collect()
    }

    #[step]
    fn total(xs: Vec<i64>, #[param] offset: i64) -> i64 {
        xs.iter().sum::<i64>() + offset
    }

    /// source -> square -> total(offset): a new `offset` re-runs only
    /// `total`, which then reads `square`'s output from the store.
    #[pipeline]
    fn sums(offset: &i64) -> Handle<i64> {
        total(square(source(100)), *offset)
    }

    /// What `source`, `square` and `total` did in `run`, against `expected`.
    fn assert_statuses<O>(run: &zenflow::RunResult<O>, expected: [StepStatus; 3], why: &str) {
        let got: Vec<StepStatus> =
            ["source", "square", "total"].iter().map(|id| run.step(id).unwrap().status).collect();
        assert_eq!(got, expected, "{why}: {}", run.summary());
    }

    /// The artifact store fails a write: the run fails saying so, the step
    /// has no output recorded, and the next run resumes from cache.
    #[test]
    fn an_artifact_write_that_fails_fails_its_step_and_the_next_run_resumes() {
        let faults = Faults::new()
            .with(Rule::on("*").when(|c| c.op.starts_with("put")).nth(2).fail("no space left on device (simulated)"));
        let stack = faulty_stack(&faults);
        // The second write: `square`'s output.
        let run = super::failed_run_of(sums.run(&stack, &0));
        let square = run.step("square").unwrap();
        assert_eq!(square.status, StepStatus::Failed);
        assert!(square.error.as_deref().unwrap().contains("no space left on device (simulated)"), "{square:?}");
        assert!(square.outputs.is_empty(), "nothing half-written is visible");
        assert_eq!(run.step("total").unwrap().status, StepStatus::Skipped);
        assert_eq!(faults.injected().len(), 1);

        faults.clear();
        let again = sums.run(&stack, &0).unwrap();
        assert_statuses(
            &again,
            [StepStatus::Cached, StepStatus::Completed, StepStatus::Completed],
            "the next run resumes",
        );
        assert_eq!(again.output().unwrap(), (0..100).map(|x| x * x).sum::<i64>());
    }

    /// A read that fails: the step that reads fails with a clear error;
    /// nothing it would have written is recorded; with the store healthy
    /// again the next run resumes.
    #[test]
    fn a_failed_read_fails_the_reader_and_the_next_run_resumes() {
        let rule = Rule::on("*").when(|c| c.op.starts_with("get")).fail("connection reset (simulated)");
        {
            let says = "connection reset (simulated)";
            let faults = Faults::new();
            let stack = faulty_stack(&faults);
            sums.run(&stack, &0).unwrap();
            let faults = faults.with(rule);
            // A new offset: `total` runs again and reads `square` from the store.
            let run = super::failed_run_of(sums.run(&stack, &1));
            let total = run.step("total").unwrap();
            assert_eq!(total.status, StepStatus::Failed, "{says}");
            assert!(total.error.as_deref().unwrap().contains(says), "{total:?}");
            assert!(total.outputs.is_empty());
            assert!(!faults.injected().is_empty());

            faults.clear();
            let again = sums.run(&stack, &1).unwrap();
            assert_statuses(&again, [StepStatus::Cached, StepStatus::Cached, StepStatus::Completed], says);
            assert_eq!(again.output().unwrap(), (0..100).map(|x| x * x).sum::<i64>() + 1);
        }
    }

    /// A store that returns damaged bytes: the cache hit that would reuse
    /// them is a miss, so the producer runs again (and says why), and its
    /// consumer gets the bytes it made; the run succeeds.
    #[step]
    fn with_model(current: Option<i64>, x: i64) -> i64 {
        current.unwrap_or(0) + x
    }

    #[pipeline]
    fn reads_a_model() {
        let x = first();
        with_model(zenflow::model_alias::<i64>("some-model", "production"), x);
    }

    /// A model input the stack cannot resolve (its store keeps no
    /// registry) fails that step, in the forecast as in the run.
    #[test]
    fn an_unresolvable_model_input_fails_its_step_in_the_forecast_and_the_run() {
        use zenflow::run::{predict, Forecast};
        let faults = Faults::new().with(Rule::on("registry").fail("no registry here"));
        let stack = faulty_stack(&faults);
        let plan = reads_a_model.plan(&()).unwrap();
        let forecast = stack.block_on(predict(&stack, &plan, false)).unwrap();
        let Forecast::Fails(error) = &forecast[1] else { panic!("{forecast:?}") };
        assert!(error.contains("keeps no model registry"), "{error}");
        assert_eq!(forecast[1].to_string(), format!("fails: {error}"));
        let err = reads_a_model.run(&stack, &()).unwrap_err();
        let zenflow::Error::RunFailed(failed) = err else { panic!("{err}") };
        let step = failed.0.step("with_model").unwrap();
        assert_eq!((step.status, step.error.as_deref()), (StepStatus::Failed, Some(error.as_str())));
    }

    #[test]
    fn a_corrupted_cached_output_is_made_again() {
        let faults = Faults::new();
        let stack = faulty_stack(&faults);
        sums.run(&stack, &0).unwrap();
        let faults = faults.with(Rule::on("*").when(|c| c.op.starts_with("get")).corrupt());
        let run = sums.run(&stack, &1).unwrap();
        // Every read is damaged: each cached output is made again.
        assert_statuses(&run, [StepStatus::Completed, StepStatus::Completed, StepStatus::Completed], "made again");
        assert!(!faults.injected().is_empty());
        faults.clear();
        assert_eq!(run.output().unwrap(), (0..100).map(|x| x * x).sum::<i64>() + 1);
        let records = stack.block_on(stack.metadata().step_runs(run.id())).unwrap();
        let square = records.iter().find(|r| r.invocation == "square").expect("square ran");
        let why = zenflow::why::of(square);
        assert!(
            matches!(&why[..], [zenflow::why::Reason::ArtifactUnusable { detail, .. }] if detail.contains("is corrupted")),
            "{why:?}"
        );
    }

    /// The step's artifact is written, then its record cannot be: the run
    /// fails, nothing points at the object (no output, no version, no cache
    /// entry), and the next run executes the step again (writing the same
    /// object is a no-op) and goes on.
    #[test]
    fn a_commit_that_fails_after_the_artifact_was_written_leaves_nothing_visible() {
        let faults = Faults::new().with(
            Rule::on("write_step_run").when(final_record_of("square")).times(1).fail("database is locked (simulated)"),
        );
        let stack = faulty_stack(&faults);
        let run = super::failed_run_of(sums.run(&stack, &0));
        let writes: u64 = ["put", "put_stream", "put_writer", "put_hashed"].iter().map(|op| faults.calls(op)).sum();
        assert!(writes >= 2, "base's and square's artifacts were written before the commit failed ({writes} writes)");
        assert!(
            run.record().error.clone().unwrap_or_default().contains("database is locked (simulated)"),
            "{}",
            run.summary()
        );
        let recorded = stack.block_on(stack.metadata().step_runs(run.id())).unwrap();
        assert!(
            recorded
                .iter()
                .filter(|r| r.invocation == "square")
                .all(|r| r.status != StepStatus::Completed && r.outputs.is_empty()),
            "{recorded:?}"
        );
        let versions = stack.block_on(stack.metadata().artifact_versions(None, 100)).unwrap();
        assert!(
            versions.iter().all(|v| !v.name.ends_with("square.output")),
            "no version of square's output: {versions:?}"
        );

        let again = sums.run(&stack, &0).unwrap();
        assert_statuses(
            &again,
            [StepStatus::Cached, StepStatus::Completed, StepStatus::Completed],
            "the next run resumes",
        );
    }
}
