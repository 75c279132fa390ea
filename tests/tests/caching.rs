//! Caching as DESIGN.md §5 describes it, observed through real runs.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use zenflow::metadata::StepStatus;
use zenflow::prelude::*;
use zenflow::testing::TestStack;
use zenflow::why::{Change, Reason, Scope};
use zenflow::RunOptions;
use zenflow_tests::records::statuses;

static SOURCE_CALLS: AtomicUsize = AtomicUsize::new(0);
static SQUARE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[step]
fn source(#[param] n: i64) -> i64 {
    n
}

#[step]
fn square(x: i64) -> i64 {
    x * x
}

// Counted steps belong to one test only: tests run in parallel.
#[step]
fn counted_source(#[param] n: i64) -> i64 {
    SOURCE_CALLS.fetch_add(1, SeqCst);
    n
}

#[step]
fn counted_square(x: i64) -> i64 {
    SQUARE_CALLS.fetch_add(1, SeqCst);
    x * x
}

#[step]
fn parity(#[param] n: i64) -> i64 {
    n % 2
}

#[step]
fn describe(x: i64) -> String {
    format!("value {x}")
}

#[step(cache = false)]
fn uncached(x: i64) -> i64 {
    x + 1
}

#[step(cache_ttl = "1ms")]
fn fleeting(#[param] n: i64) -> i64 {
    n
}

#[pipeline]
fn short_lived(n: &i64) {
    describe(fleeting(*n));
}

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Branches {
    left: i64,
    right: i64,
}

#[pipeline]
fn chain(n: &i64) {
    let s = source(*n);
    let sq = square(s);
    describe(sq);
}

#[pipeline]
fn counted(n: &i64) {
    let s = counted_source(*n);
    let sq = counted_square(s);
    describe(sq);
}

#[pipeline]
fn branches(cfg: &Branches) {
    let l = parity(cfg.left);
    describe(l);
    let r = source(cfg.right);
    square(r);
}

#[pipeline]
fn with_uncached() {
    let s = parity(3);
    let u = uncached(s);
    describe(u);
}

/// What the run recorded about why `step` ran (or where it came from).
fn why(stack: &TestStack, run: &zenflow::RunResult, step: &str) -> Vec<Reason> {
    let records = stack.step_runs(run.id()).unwrap();
    let record = records.iter().find(|r| r.invocation == step).expect("the step ran");
    let original = record.original_step_run.as_ref().map(|id| stack.block_on(stack.metadata().step_run(id)));
    let original = original.map(|o| o.unwrap().expect("the original step run"));
    let plan_step = run.plan().steps.iter().find(|s| s.id == step).expect("in the plan");
    zenflow::why::reasons(record, plan_step, run.plan().no_cache, original.as_ref())
}

#[test]
fn an_unchanged_rerun_is_served_entirely_from_cache() {
    let stack = TestStack::new();
    let first = counted.run(&stack, &1001).unwrap();
    assert_eq!(first.executed(), ["counted_source", "counted_square", "describe"]);
    assert_eq!(why(&stack, &first, "counted_square"), [Reason::NoEarlierRun]);
    let (sources, squares) = (SOURCE_CALLS.load(SeqCst), SQUARE_CALLS.load(SeqCst));
    assert_eq!((sources, squares), (1, 1));

    let second = counted.run(&stack, &1001).unwrap();
    assert_eq!(second.cached(), ["counted_source", "counted_square", "describe"], "{}", second.summary());
    assert!(second.executed().is_empty());
    assert_eq!(SOURCE_CALLS.load(SeqCst), sources, "step code must not run on a cache hit");
    assert_eq!(SQUARE_CALLS.load(SeqCst), squares, "step code must not run on a cache hit");
    assert_eq!(second.artifact::<String>("describe", "output").unwrap(), "value 1002001");

    // The cached step runs point at the step runs that produced the outputs,
    // and reuse the very same artifact versions.
    let recorded = stack.step_runs(second.id()).unwrap();
    for (cached, original) in recorded.iter().zip(stack.step_runs(first.id()).unwrap()) {
        assert_eq!(cached.status, StepStatus::Cached);
        let from = Reason::Cached { run: first.id().to_string(), step_run: original.id.clone() };
        assert_eq!(why(&stack, &second, &cached.invocation), [from], "a cached step names the run it came from");
        assert_eq!(cached.original_step_run.as_deref(), Some(original.id.as_str()));
        assert_eq!(cached.outputs, original.outputs);
    }
}

#[test]
fn a_changed_parameter_reruns_that_step_and_what_depends_on_it() {
    let stack = TestStack::new();
    branches.run(&stack, &Branches { left: 1, right: 2002 }).unwrap();
    let run = branches.run(&stack, &Branches { left: 1, right: 2003 }).unwrap();
    assert_eq!(
        statuses(&run),
        [
            ("parity", StepStatus::Cached),
            ("describe", StepStatus::Cached),
            ("source", StepStatus::Completed),
            ("square", StepStatus::Completed),
        ]
    );
    assert_eq!(run.artifact::<i64>("square", "output").unwrap(), 2003 * 2003);
    let change = Change { name: "n".into(), old: Some("2002".into()), new: Some("2003".into()) };
    assert_eq!(why(&stack, &run, "source"), [Reason::ParameterChanged { changes: vec![change] }]);
    assert_eq!(
        why(&stack, &run, "square"),
        [Reason::InputChanged { input: "x".into(), upstream: vec!["source".into()] }]
    );
}

#[test]
fn identical_bytes_from_a_rerun_step_keep_downstream_cached() {
    let stack = TestStack::new();
    branches.run(&stack, &Branches { left: 2, right: 7 }).unwrap();
    // parity(4) re-runs (new parameter) but produces the same bytes as parity(2).
    let run = branches.run(&stack, &Branches { left: 4, right: 7 }).unwrap();
    assert_eq!(run.step("parity").unwrap().status, StepStatus::Completed);
    assert_eq!(run.step("describe").unwrap().status, StepStatus::Cached, "{}", run.summary());
}

#[test]
fn a_changed_step_version_reruns_the_step() {
    let stack = TestStack::new();
    let plan = chain.plan(&3003).unwrap();
    stack.block_on(zenflow::run::execute_plan(&stack, plan.clone(), RunOptions::default())).unwrap();

    let mut bumped = plan;
    bumped.steps[1].version = Some("2".into()); // what #[step(version = "2")] records
    let run = stack.block_on(zenflow::run::execute_plan(&stack, bumped, RunOptions::default())).unwrap();
    assert_eq!(
        statuses(&run),
        [("source", StepStatus::Cached), ("square", StepStatus::Completed), ("describe", StepStatus::Cached)],
        "square re-runs; its bytes are unchanged, so describe stays cached"
    );
    assert_eq!(why(&stack, &run, "square"), [Reason::VersionChanged { old: None, new: Some("2".into()) }]);
}

#[test]
fn an_artifact_deleted_from_the_store_turns_a_hit_into_a_miss() {
    let stack = TestStack::new().map(|s| s.with_inline_limit(0));
    let first = chain.run(&stack, &4004).unwrap();
    let gone = first.output_version("square", "output").unwrap().content_hash;
    stack.block_on(stack.artifacts().delete(&gone)).unwrap();

    let run = chain.run(&stack, &4004).unwrap();
    assert_eq!(
        statuses(&run),
        [("source", StepStatus::Cached), ("square", StepStatus::Completed), ("describe", StepStatus::Cached)]
    );
    assert!(stack.block_on(stack.artifacts().exists(&gone)).unwrap(), "the artifact is written again");
    let reasons = why(&stack, &run, "square");
    assert!(
        matches!(&reasons[..], [Reason::ArtifactUnusable { detail, .. }] if detail.contains("is gone from the artifact store")),
        "{reasons:?}"
    );
}

#[test]
fn cache_false_and_the_per_run_switch_disable_the_cache() {
    let stack = TestStack::new();
    with_uncached.run(&stack, &()).unwrap();
    let run = with_uncached.run(&stack, &()).unwrap();
    assert_eq!(
        statuses(&run),
        [("parity", StepStatus::Cached), ("uncached", StepStatus::Completed), ("describe", StepStatus::Cached)],
        "cache = false re-runs the step; same bytes keep describe cached"
    );
    assert_eq!(why(&stack, &run, "uncached"), [Reason::CacheOff { scope: Scope::Step }]);
    let run = with_uncached.run_with(&stack, &(), RunOptions { no_cache: true, ..Default::default() }).unwrap();
    assert_eq!(run.executed(), ["parity", "uncached", "describe"]);
    assert_eq!(why(&stack, &run, "parity"), [Reason::CacheOff { scope: Scope::Run }]);
}

/// A dry run predicts what the run then does, step by step: before any
/// run, after one (a step with the cache off runs, and what reads its
/// output is cached if it gives the same bytes, which the forecast says it
/// assumes), and with the run's cache off.
#[test]
fn a_forecast_says_what_the_run_then_does() {
    use zenflow::run::{predict, Forecast};
    let stack = TestStack::new();
    let forecast_then_run = |options: RunOptions| {
        let plan = with_uncached.plan(&()).unwrap();
        let forecast = stack.block_on(predict(&stack, &plan, options.no_cache)).unwrap();
        let run = with_uncached.run_with(&stack, &(), options).unwrap();
        let predicted: Vec<bool> = forecast.iter().map(|f| matches!(f, Forecast::Cached { .. })).collect();
        let cached: Vec<bool> = run.steps().iter().map(|s| s.status == StepStatus::Cached).collect();
        assert_eq!(predicted, cached, "{forecast:?} against {}", run.summary());
        forecast
    };
    let first = forecast_then_run(RunOptions::default());
    assert!(first.iter().all(|f| matches!(f, Forecast::Run(_))), "{first:?}");
    let second = forecast_then_run(RunOptions::default());
    let Forecast::Cached { assuming, .. } = &second[2] else { panic!("{second:?}") };
    assert_eq!(assuming, &["uncached".to_string()], "describe is cached if `uncached` gives what it gave");
    assert!(matches!(&second[0], Forecast::Cached { assuming, .. } if assuming.is_empty()));
    assert_eq!(second[2].to_string(), "cached if `uncached` outputs what it did last time");
    forecast_then_run(RunOptions { no_cache: true, ..Default::default() });
}

#[test]
fn cached_results_expire_per_step_and_per_run() {
    let stack = TestStack::new();
    short_lived.run(&stack, &7007).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    // `fleeting` lives 1 ms; `describe` has no limit (and gets the same bytes).
    let run = short_lived.run(&stack, &7007).unwrap();
    assert_eq!(statuses(&run), [("fleeting", StepStatus::Completed), ("describe", StepStatus::Cached)]);
    assert!(matches!(why(&stack, &run, "fleeting")[..], [Reason::Expired { ttl_secs: 0, .. }]));
    // A run's limit applies to every step.
    let run = chain.run(&stack, &7007).unwrap();
    assert_eq!(run.executed().len(), 3);
    let day = RunOptions { cache_ttl: Some(std::time::Duration::from_secs(86_400)), ..Default::default() };
    assert_eq!(chain.run_with(&stack, &7007, day).unwrap().cached().len(), 3, "younger than a day");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let instant = RunOptions { cache_ttl: Some(std::time::Duration::from_millis(1)), ..Default::default() };
    let run = chain.run_with(&stack, &7007, instant).unwrap();
    assert_eq!(run.executed(), ["source", "square", "describe"]);
    assert!(matches!(why(&stack, &run, "source")[..], [Reason::Expired { .. }]), "{:?}", why(&stack, &run, "source"));
}

#[test]
fn a_corrupted_artifact_is_reported_with_the_fix_and_repaired_by_rerunning_its_producer() {
    let stack = TestStack::new().map(|s| s.with_inline_limit(0));
    let first = chain.run(&stack, &5005).unwrap();
    let version = first.output_version("square", "output").unwrap().clone();
    let path = stack.path().join(".zenflow/artifacts").join(zenflow::artifact_store::object_key(&version.content_hash));
    assert!(path.is_file(), "artifact file at {}", path.display());
    std::fs::write(&path, b"garbage").unwrap();

    let err = first.artifact::<i64>("square", "output").unwrap_err().to_string();
    assert!(err.contains("corrupted") && err.contains(&version.uri) && err.contains("delete the object"), "{err}");

    // A run that needs it takes the damaged cache entry for a miss: the
    // producer runs again, says why, and replaces the object.
    let mut plan = chain.plan(&5005).unwrap();
    plan.steps[2].version = Some("2".into()); // describe re-runs, and reads square's output
    let run = stack.block_on(zenflow::run::execute_plan(&stack, plan, RunOptions::default())).unwrap();
    assert_eq!(
        statuses(&run),
        [("source", StepStatus::Cached), ("square", StepStatus::Completed), ("describe", StepStatus::Completed)]
    );
    let reasons = why(&stack, &run, "square");
    assert!(
        matches!(&reasons[..], [Reason::ArtifactUnusable { detail, .. }] if detail.contains("corrupted")),
        "{reasons:?}"
    );
    assert_eq!(run.artifact::<String>("describe", "output").unwrap(), "value 25050025");
    assert_eq!(first.artifact::<i64>("square", "output").unwrap(), 25050025, "the old run's artifact is whole again");
    assert_eq!(chain.run(&stack, &5005).unwrap().cached().len(), 3, "repaired: every step is a hit again");
}

#[test]
fn small_outputs_live_in_the_step_record_and_tampering_is_detected() {
    let stack = TestStack::new();
    let run = chain.run(&stack, &6006).unwrap();
    let version = run.output_version("square", "output").unwrap().clone();
    assert_eq!(version.uri, format!("inline:{}", version.content_hash));
    assert_eq!(version.inline.as_deref(), Some(&b"36072036"[..]));
    let file = stack.path().join(".zenflow/artifacts").join(zenflow::artifact_store::object_key(&version.content_hash));
    assert!(!file.exists(), "no artifact file for an inline output");
    assert_eq!(run.artifact::<i64>("square", "output").unwrap(), 36072036);
    // Unchanged re-run: served from cache without any artifact file.
    assert_eq!(chain.run(&stack, &6006).unwrap().cached().len(), 3);

    let conn = rusqlite::Connection::open(stack.path().join(".zenflow/zenflow.db")).unwrap();
    conn.execute("UPDATE artifact_versions SET inline_bytes = x'39' WHERE id = ?1", [&version.id]).unwrap();
    let tampered = stack.block_on(stack.metadata().artifact_version(&version.id)).unwrap().unwrap();
    let err = stack.load::<i64>(&tampered).unwrap_err().to_string();
    assert!(err.contains("is corrupted") && err.contains(&version.uri), "{err}");
}
