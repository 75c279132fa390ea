//! The conformance suite every [`Orchestrator`](crate::ext::Orchestrator) runs, as
//! the stores run theirs: dependency order, parallel independent branches,
//! failures that skip exactly their dependents, fan-in, ordering without data,
//! and the cache. Each check panics with a message naming the broken promise.
//!
//! A backend's test calls
//! [`run_all`] with a function
//! that builds a fresh stack around the orchestrator under test.

use crate::metadata::StepStatus;
use crate::prelude::*;
use crate::{Error, RunOptions, RunResult, Stack};
use std::collections::HashMap;

/// A source value.
#[step(name = "zf_conformance_source")]
fn source(#[param] value: i64) -> i64 {
    value
}

/// `x + by`.
#[step(name = "zf_conformance_add")]
fn add(x: i64, #[param] by: i64) -> i64 {
    x + by
}

/// Fails when `x` equals `fail_on`.
#[step(name = "zf_conformance_check")]
fn check(x: i64, #[param] fail_on: i64) -> Result<i64, String> {
    if x == fail_on {
        Err(format!("asked to fail on {x}"))
    } else {
        Ok(x)
    }
}

/// The sum of a fan-in.
#[step(name = "zf_conformance_sum")]
fn sum(parts: Vec<i64>) -> i64 {
    parts.iter().sum()
}

/// No data; used for ordering.
#[step(name = "zf_conformance_mark")]
fn mark(#[param] label: String) -> String {
    label
}

/// What the conformance pipeline is configured with.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    /// Fan-out width.
    pub width: i64,
    /// The branch value that fails (`-1`: none).
    pub fail_on: i64,
}

/// source -> width branches (add, check, add) -> sum; a marked step ordered
/// after the source without data.
#[pipeline(name = "zf_conformance")]
pub fn conformance_pipeline(shape: &Shape) -> Handle<i64> {
    let s = source(0);
    let mut parts = Vec::new();
    for i in 0..shape.width {
        let a = add(s, i);
        let c = check(a, shape.fail_on);
        parts.push(add(c, 100));
    }
    let total = sum(parts);
    mark("after source".to_string()).after(s);
    total
}

fn statuses<O>(run: &RunResult<O>) -> HashMap<String, StepStatus> {
    run.steps().iter().map(|s| (s.invocation.clone(), s.status)).collect()
}

/// Runs every orchestrator check; `fresh` builds a new, empty stack around
/// the orchestrator under test each time it is called.
pub fn run_all(fresh: impl Fn() -> Stack) {
    every_step_runs_after_its_inputs(&fresh());
    a_failure_skips_exactly_its_dependents(&fresh());
    an_unchanged_rerun_is_served_from_cache(&fresh());
}

/// Every step completes, in dependency order, and the fan-in sees every branch.
pub fn every_step_runs_after_its_inputs(stack: &Stack) {
    let shape = Shape { width: 8, fail_on: -1 };
    let run = conformance_pipeline.run(stack, &shape).expect("the conformance pipeline completes");
    assert_eq!(run.steps().len(), 2 + 3 * 8 + 1, "every step has a result");
    assert!(run.steps().iter().all(|s| s.status == StepStatus::Completed), "{}", run.summary());
    let expected: i64 = (0..8).map(|i| i + 100).sum();
    assert_eq!(run.output().unwrap(), expected, "the fan-in sees every branch");
    assert_eq!(run.artifact::<i64>("zf_conformance_sum", "output").unwrap(), expected, "by name, the same");
    let records = stack.step_runs(run.id()).unwrap();
    let at = |id: &str| records.iter().find(|r| r.invocation == id).expect("a record per step").clone();
    for step in &run.plan().steps {
        let me = at(&step.id);
        let upstream = step.inputs.iter().flat_map(|i| i.from.iter().map(|r| r.step.clone())).chain(step.after.clone());
        for up in upstream {
            let up = at(&up);
            assert!(
                me.started_at >= up.ended_at.expect("finished"),
                "{} started before its upstream {} finished",
                me.invocation,
                up.invocation
            );
        }
    }
}

/// A failing branch is recorded with its error; its dependents (and only
/// they) are skipped; the other branches finish; the run fails.
pub fn a_failure_skips_exactly_its_dependents(stack: &Stack) {
    let shape = Shape { width: 4, fail_on: 2 };
    let err = conformance_pipeline.run(stack, &shape).expect_err("a failing step fails the run");
    let Error::RunFailed(failed) = err else { panic!("expected RunFailed, got {err}") };
    let run = &failed.0;
    let st = statuses(run);
    let check_ids: Vec<&str> =
        run.plan().steps.iter().filter(|s| s.step == "zf_conformance_check").map(|s| s.id.as_str()).collect();
    assert_eq!(st[check_ids[2]], StepStatus::Failed, "the branch with value 2 fails: {}", run.summary());
    for (i, id) in check_ids.iter().enumerate() {
        if i != 2 {
            assert_eq!(st[*id], StepStatus::Completed, "independent branch {i} finishes");
        }
    }
    let failed_step = run.step(check_ids[2]).unwrap();
    assert!(failed_step.error.as_deref().unwrap_or("").contains("asked to fail on 2"), "{failed_step:?}");
    assert_eq!(st["zf_conformance_sum"], StepStatus::Skipped, "the fan-in depends on the failed branch");
    assert_eq!(st["zf_conformance_mark"], StepStatus::Completed, "a step that does not depend on the failure runs");
    let skipped = run.steps().iter().filter(|s| s.status == StepStatus::Skipped).count();
    assert_eq!(skipped, 2, "exactly the failed branch's last step and the fan-in are skipped: {}", run.summary());
}

/// A second run of an unchanged pipeline executes nothing.
pub fn an_unchanged_rerun_is_served_from_cache(stack: &Stack) {
    let shape = Shape { width: 3, fail_on: -1 };
    conformance_pipeline.run(stack, &shape).expect("first run");
    let again = conformance_pipeline.run(stack, &shape).expect("second run");
    assert!(again.executed().is_empty(), "nothing executes on an unchanged re-run: {}", again.summary());
    assert_eq!(again.cached().len(), again.plan().steps.len());
    let forced = conformance_pipeline
        .run_with(stack, &shape, RunOptions { no_cache: true, ..Default::default() })
        .expect("forced run");
    assert_eq!(forced.executed().len(), forced.plan().steps.len(), "no_cache executes every step");
}
