//! What a new user touches first: typed pipeline outputs, stable invocation
//! ids, reopening past runs, and helper calls inside a pipeline body.

use serde::{Deserialize, Serialize};
use zenflow::prelude::*;
use zenflow::testing::{self, RunAssert, TestStack};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Artifact)]
struct Score {
    lr: f64,
    value: f64,
}

#[step]
fn data(#[param] n: u32) -> Vec<f64> {
    (0..n).map(f64::from).collect()
}

#[step]
fn train(data: Vec<f64>, #[param] lr: f64) -> Score {
    Score { lr, value: data.iter().sum::<f64>() * lr }
}

#[step]
fn best(scores: Vec<Score>) -> Score {
    scores.into_iter().max_by(|a, b| a.value.total_cmp(&b.value)).unwrap_or(Score { lr: 0.0, value: 0.0 })
}

/// Not a step: called with `plain!`.
fn doubled(lrs: &[f64]) -> Vec<f64> {
    lrs.iter().map(|x| x * 2.0).collect()
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Sweep {
    lrs: Vec<f64>,
}

/// Named fan-out: the ids follow the learning rate, not the loop position.
#[pipeline]
fn sweep(cfg: &Sweep) -> Handle<Score> {
    let d = data(10);
    let lrs = plain!(doubled(&cfg.lrs));
    let scores: Vec<_> = lrs.iter().map(|&lr| train(d, lr).id(format!("train_lr_{lr}"))).collect();
    best(scores)
}

#[derive(Outputs)]
struct Both {
    best: Handle<Score>,
    data: Handle<Vec<f64>>,
}

#[pipeline]
fn both() -> Both {
    let d = data(4);
    let s = train(d, 0.5);
    Both { best: best(vec![s]), data: d }
}

#[pipeline]
fn pair() -> (Handle<Score>, Handle<Vec<f64>>) {
    let d = data(3);
    (train(d, 1.0), d)
}

#[pipeline]
fn all_scores() -> Vec<Handle<Score>> {
    let d = data(2);
    vec![train(d, 1.0), train(d, 2.0)]
}

#[test]
fn a_pipeline_gives_back_what_its_body_returns_typed() {
    let stack = TestStack::new();
    let run = sweep.run(&stack, &Sweep { lrs: vec![0.05, 0.1] }).unwrap();
    let top: Score = run.output().unwrap();
    assert_eq!(top, Score { lr: 0.2, value: 9.0 });
    let b = both.run(&stack, &()).unwrap();
    let values = b.output().unwrap();
    assert_eq!((values.best.lr, values.data.len()), (0.5, 4));
    let (score, data) = pair.run(&stack, &()).unwrap().output().unwrap();
    assert_eq!((score.value, data), (3.0, vec![0.0, 1.0, 2.0]));
    let all = all_scores.run(&stack, &()).unwrap().output().unwrap();
    assert_eq!(all.iter().map(|s| s.lr).collect::<Vec<_>>(), [1.0, 2.0]);
}

#[test]
fn named_invocations_keep_their_ids_when_the_loop_is_reordered() {
    let a = sweep.plan(&Sweep { lrs: vec![0.05, 0.1, 0.3] }).unwrap();
    let b = sweep.plan(&Sweep { lrs: vec![0.3, 0.05, 0.1] }).unwrap();
    let ids = |p: &zenflow::Plan| {
        let mut v: Vec<String> = p.steps.iter().map(|s| s.id.clone()).collect();
        v.sort();
        v
    };
    // Characters outside [A-Za-z0-9_-] become `_`: 0.1 * 2 = 0.2 -> `train_lr_0_2`.
    assert_eq!(ids(&a), ["best", "data", "train_lr_0_1", "train_lr_0_2", "train_lr_0_6"]);
    assert_eq!(ids(&a), ids(&b), "reordering the loop keeps every id");
    let p = |plan: &zenflow::Plan, id: &str| plan.step(id).unwrap().params["lr"].clone();
    assert_eq!(p(&a, "train_lr_0_6"), p(&b, "train_lr_0_6"), "the same id is the same call");
    // The plan's outputs name what the body returned.
    assert_eq!((a.outputs[0].step.as_str(), a.outputs[0].output.as_str()), ("best", "output"));
}

#[pipeline]
fn clash() {
    let d = data(1);
    train(d, 1.0).id("same");
    train(d, 2.0).id("same");
}

#[pipeline]
fn empty_id() {
    let d = data(1);
    train(d, 1.0).id("   ");
}

#[test]
fn a_duplicate_or_empty_id_is_a_plan_error_naming_the_call_sites() {
    let err = clash.plan(&()).unwrap_err().to_string();
    assert!(err.contains("have the id `same`"), "{err}");
    // Both calls and where they were named, as file:line:column.
    assert_eq!(err.matches("tests/tests/outputs.rs:").count(), 4, "{err}");
    assert!(err.contains(".id(\"...\")"), "{err}");
    let err = empty_id.plan(&()).unwrap_err().to_string();
    assert!(err.contains("no usable id") && err.contains("tests/tests/outputs.rs:"), "{err}");
}

#[test]
fn unnamed_calls_are_numbered_in_call_order() {
    let plan = all_scores.plan(&()).unwrap();
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["data", "train", "train_2"]);
}

#[test]
fn a_past_run_reopens_with_the_same_typed_result() {
    let stack = TestStack::new();
    let fresh = sweep.run(&stack, &Sweep { lrs: vec![0.1] }).unwrap();
    let reopened = sweep.reopen(&stack, "latest").unwrap();
    assert_eq!(reopened.output().unwrap(), fresh.output().unwrap());
    assert_eq!(reopened.id(), fresh.id());
    assert_eq!(sweep.reopen(&stack, fresh.name()).unwrap().status(), zenflow::RunStatus::Completed);
    let untyped = stack.run_result("latest").unwrap();
    assert_eq!(untyped.artifact::<Score>("best", "output").unwrap().lr, 0.2);
    // Handles belong to the build that planned the run.
    let err = untyped.erase().get(&zenflow::Handle::<Score>::__new(0, 0)).unwrap_err().to_string();
    assert!(err.contains("not from the build"), "{err}");
    let err = both.reopen(&stack, fresh.id()).unwrap_err().to_string();
    assert!(err.contains("is a run of pipeline `sweep`, not `both`"), "{err}");
    let err = sweep.reopen(&stack, "no-such-run").unwrap_err().to_string();
    assert!(err.contains("no run of pipeline `sweep` matches `no-such-run`"), "{err}");
}

#[test]
fn a_lookup_by_name_that_matches_nothing_lists_what_there_is() {
    let stack = TestStack::new();
    let run = both.run(&stack, &()).unwrap();
    let err = run.artifact::<Score>("trian", "output").unwrap_err().to_string();
    assert!(err.contains("no step `trian`") && err.contains("data.output, train.output, best.output"), "{err}");
    let err = run.artifact::<Score>("train", "outptu").unwrap_err().to_string();
    assert!(err.contains("no output `outptu`") && err.contains("best.output"), "{err}");
}

#[test]
fn the_testing_helpers_run_and_assert() {
    let stack = zenflow::memory_stack(2).unwrap();
    let run = testing::run(&stack, &both, &()).unwrap();
    run.assert_all(StepStatus::Completed).assert_step("best", StepStatus::Completed);
    let again = testing::run(&stack, &both, &()).unwrap();
    again.assert_all(StepStatus::Cached).assert_with_status(StepStatus::Completed, &[]);
}
