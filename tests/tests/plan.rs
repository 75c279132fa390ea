//! Compiling pipelines into plans: wiring, fan-out/fan-in, ordering, errors.

use std::collections::HashMap;
use zenflow::metadata::StepStatus;
use zenflow::plan::PlanError;
use zenflow::prelude::*;
use zenflow::testing::TestStack;
use zenflow::{Error, Plan};

#[step]
fn seed(#[param] x: i64) -> i64 {
    x
}

#[step]
fn mul(x: i64, #[param] i: i64) -> i64 {
    x * i
}

#[step]
fn sum(parts: Vec<i64>) -> i64 {
    parts.iter().sum()
}

#[step]
fn mark(#[param] label: String, ctx: &StepContext) {
    ctx.log(format!("mark {label}"));
}

#[step]
fn weights(#[param] table: HashMap<(i32, i32), f64>) -> i64 {
    table.len() as i64
}

/// The argument shadows the function's name; options from the attribute.
#[step(version = "3", retries = 2, retry_backoff = "5ms", timeout = "2s", cache = false)]
fn features(features: i64) -> i64 {
    features * 10
}

#[step]
fn scaled(x: i64, #[param] factor: f64) -> f64 {
    x as f64 * factor
}

mod first {
    use zenflow::prelude::*;

    #[step(name = "twin")]
    pub fn twin_a(x: i64) -> i64 {
        x
    }
}

mod second {
    use zenflow::prelude::*;

    #[step(name = "twin")]
    pub fn twin_b(x: i64) -> i64 {
        x + 1
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FanConfig {
    x: i64,
    width: i64,
}

#[pipeline]
fn fan(cfg: &FanConfig) {
    let s = seed(cfg.x);
    let parts: Vec<_> = (0..cfg.width).map(|i| mul(s, i)).collect();
    sum(parts);
}

#[pipeline]
fn ordered() {
    let first = mark("first".to_string());
    let s = seed(1).after(first);
    mark("last".to_string()).after(s);
}

#[pipeline]
fn cyclic() {
    let a = seed(1);
    let b = mul(a, 2);
    let _ = a.after(b);
}

#[pipeline]
fn twins() {
    let s = seed(1);
    first::twin_a(s);
    second::twin_b(s);
}

#[pipeline]
fn unserialisable() {
    let mut table = HashMap::new();
    table.insert((1, 2), 0.5);
    weights(table);
}

#[pipeline]
fn panicky(n: &i64) {
    let s = seed(*n);
    if *n > 0 {
        panic!("the config says n = {n}, which this pipeline does not support");
    }
    mul(s, 2);
}

/// Ordinary Rust in a pipeline body is left alone: primitive and std paths,
/// closures, `drop`, macros other than `vec!`.
#[pipeline]
fn ordinary_rust(n: &i64) {
    let width = std::cmp::max(*n, 2);
    let half = |x: i64| x / 2;
    let factor = f64::from(half(width) as i32);
    let label = format!("{}", u32::try_from(width).unwrap_or(0));
    drop(label);
    let s = seed(width);
    let f = features(s);
    scaled(f, factor);
}

#[pipeline]
fn nan_param() {
    let s = seed(1);
    scaled(s, f64::NAN);
}

#[pipeline(name = "renamed_pipeline")]
fn small(n: &i64) {
    let s = seed(*n);
    let doubled = mul(s, 2);
    let tripled = mul(s, 3);
    sum(vec![doubled, tripled]);
}

#[test]
fn a_fan_out_of_32_steps_fans_in_to_one_vec_input() {
    let cfg = FanConfig { x: 3, width: 32 };
    let plan = fan.plan(&cfg).unwrap();
    assert_eq!(plan.steps.len(), 34);
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids[..4], ["seed", "mul", "mul_2", "mul_3"]);
    assert_eq!(ids[33], "sum");
    let sum_input = &plan.steps[33].inputs[0];
    assert!(sum_input.list);
    assert_eq!(sum_input.from.len(), 32);
    assert_eq!(sum_input.from[31].step, "mul_32", "fan-in keeps the order of the Vec");
    assert_eq!(plan.steps[5].params["i"], serde_json::json!(4));

    let stack = TestStack::new();
    let run = fan.run(&stack, &cfg).unwrap();
    assert_eq!(run.executed().len(), 34);
    assert_eq!(run.artifact::<i64>("sum", "output").unwrap(), 3 * (0..32).sum::<i64>());
    // Lineage: the sum step consumed all 32 artifacts, in order.
    let sum_run = stack.step_runs(run.id()).unwrap().into_iter().find(|s| s.invocation == "sum").unwrap();
    assert_eq!(sum_run.inputs.len(), 32);
    assert_eq!(sum_run.inputs.iter().map(|i| i.position).collect::<Vec<_>>(), (0..32).collect::<Vec<u32>>());
}

#[test]
fn after_orders_steps_without_data() {
    let plan = ordered.plan(&()).unwrap();
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["mark", "seed", "mark_2"]);
    assert_eq!(plan.steps[1].after, ["mark"]);
    assert_eq!(plan.steps[2].after, ["seed"]);
    assert!(plan.steps[0].outputs.is_empty(), "a step returning () has no outputs");

    let stack = TestStack::new();
    let run = ordered.run(&stack, &()).unwrap();
    let steps = stack.step_runs(run.id()).unwrap();
    let by_id = |id: &str| steps.iter().find(|s| s.invocation == id).unwrap().clone();
    assert!(by_id("seed").started_at >= by_id("mark").ended_at.unwrap());
    assert!(by_id("mark_2").started_at >= by_id("seed").ended_at.unwrap());
    assert_eq!(by_id("mark_2").logs, ["mark last"]);
}

#[test]
fn a_cycle_is_a_plan_error_naming_the_steps() {
    let err = cyclic.plan(&()).unwrap_err();
    let Error::Plan(PlanError::Cycle { steps, .. }) = &err else { panic!("expected a cycle, got {err}") };
    assert_eq!(steps, &["seed", "mul"]);
    assert!(err.to_string().contains("remove one of the `.after(...)` orderings"), "{err}");
}

#[test]
fn two_steps_with_one_name_are_a_plan_error() {
    let err = twins.plan(&()).unwrap_err().to_string();
    assert!(err.contains("plan::first") && err.contains("plan::second") && err.contains("`twin`"), "{err}");
    assert!(err.contains("#[step(name = \"...\")]"), "{err}");
    let err = zenflow::step::lookup("twin").unwrap_err().to_string();
    assert!(err.contains("several steps are named `twin`"), "{err}");
}

#[test]
fn a_parameter_that_fails_to_serialise_is_a_plan_error() {
    let err = unserialisable.plan(&()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Plan(PlanError::Param { .. })), "{msg}");
    assert!(msg.contains("parameter `table` of step `weights`") && msg.contains("key must be a string"), "{msg}");
    let stack = TestStack::new();
    assert!(unserialisable.run(&stack, &()).is_err());
    assert!(stack.list_runs(None, 10).unwrap().is_empty(), "nothing is recorded for a plan that failed");
}

#[test]
fn step_attributes_reach_the_plan_and_ordinary_code_runs_in_the_body() {
    let plan = ordinary_rust.plan(&7).unwrap();
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["seed", "features", "scaled"]);
    assert_eq!(plan.steps[0].params["x"], serde_json::json!(7));
    assert_eq!(plan.steps[2].params["factor"], serde_json::json!(3.0));
    let f = &plan.steps[1];
    assert_eq!(f.version.as_deref(), Some("3"));
    assert_eq!(f.options.retries, 2);
    assert_eq!(f.options.retry_backoff_ms, 5);
    assert_eq!(f.options.timeout_ms, Some(2000));
    assert!(!f.options.cache);
    assert_eq!(features(4), 40, "an argument may shadow the step's name");
    let stack = TestStack::new();
    let run = ordinary_rust.run(&stack, &7).unwrap();
    assert_eq!(run.artifact::<f64>("scaled", "output").unwrap(), 210.0);
}

#[test]
fn a_parameter_that_changes_in_json_is_a_plan_error() {
    let err = nan_param.plan(&()).unwrap_err().to_string();
    assert!(err.contains("parameter `factor` of step `scaled`") && err.contains("NaN"), "{err}");
}

#[test]
fn a_panic_in_the_pipeline_body_is_a_plan_error() {
    let err = panicky.plan(&1).unwrap_err().to_string();
    assert!(err.contains("pipeline `panicky` panicked") && err.contains("n = 1"), "{err}");
    // The builder is not left behind: the next compile on this thread works.
    assert_eq!(panicky.plan(&0).unwrap().steps.len(), 2);
}

#[test]
fn the_plan_json_is_stable() {
    let plan = small.plan(&4).unwrap();
    assert_eq!(plan.pipeline, "renamed_pipeline");
    // The exact text of `to_json`, with what changes with the source, the
    // lock file and the compiler masked: code hashes, code items, the build.
    let mut masked = plan.clone();
    for step in &mut masked.steps {
        assert_eq!(step.code_hash.len(), 64, "code hashes are blake3 hex");
        step.code_hash = "<code hash>".into();
        let own = format!("`{}` (the step)", step.step);
        assert!(step.code_items.get(&own).is_some(), "{own} in {:?}", step.code_items);
        step.code_items = [("<items>", "<hashes>")].into_iter().collect();
    }
    assert!(masked.build.compiler.starts_with("rustc "), "{:?}", masked.build.compiler);
    assert!(masked.build.dependencies.get("serde").is_some_and(|v| !v.contains(", ")), "{:?}", masked.build);
    masked.build.compiler = "<compiler>".into();
    masked.build.dependencies = [("<name>", "<version>")].into_iter().collect();
    let got = masked.to_json() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots/plan_small.json");
    if std::env::var_os("ZENFLOW_BLESS").is_some() {
        std::fs::write(path, &got).unwrap();
    }
    let expected = std::fs::read_to_string(path).expect("snapshot missing: run with ZENFLOW_BLESS=1 to write it");
    assert_eq!(got, expected, "plan JSON changed; if intended, re-run with ZENFLOW_BLESS=1 and review the diff");

    assert_eq!(Plan::from_json(&plan.to_json()).unwrap(), plan);
    assert_eq!(Plan::from_json(&plan.to_json_compact()).unwrap(), plan, "the stored form reads back too");
    assert!(plan.to_json_compact().len() < plan.to_json().len());
    assert_eq!(small.plan(&4).unwrap().hash(), plan.hash(), "same input, same plan");
    assert_ne!(small.plan(&5).unwrap().hash(), plan.hash());
    let newer = plan.to_json().replacen("\"format\": 1", "\"format\": 99", 1);
    let err = Plan::from_json(&newer).unwrap_err().to_string();
    assert!(err.contains("plan format 99 is not supported"), "{err}");
}

#[test]
fn the_plan_is_a_dag() {
    let plan = small.plan(&4).unwrap();
    let edges = plan.edges();
    assert_eq!(plan.steps.len(), 4);
    assert_eq!(edges.len(), 4); // seed->mul, seed->mul_2, mul->sum, mul_2->sum
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    let at = |id: &str| ids.iter().position(|s| *s == id).unwrap();
    assert!(edges.iter().all(|e| at(e.from) < at(e.to)), "acyclic: every edge points forward in plan order");
    assert_eq!(plan.dependencies(), vec![vec![], vec![0], vec![0], vec![1, 2]]);
}

#[test]
fn steps_stay_plain_functions() {
    assert_eq!(mul(6, 7), 42);
    assert_eq!(sum(vec![1, 2, 3]), 6);
    let ctx = StepContext::detached("mark");
    mark("unit".into(), &ctx);
    assert_eq!(ctx.logs(), ["mark unit"]);
    assert_eq!(second::twin_b(1), 2);
}

#[test]
fn every_step_is_registered_by_name() {
    let names = zenflow::step::registered_steps();
    for name in ["seed", "mul", "sum", "mark", "weights", "twin"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let spec = zenflow::step::lookup("mul").unwrap();
    assert_eq!(spec.inputs[0].name, "x");
    assert_eq!(spec.params[0].name, "i");
    assert_eq!(spec.outputs[0].type_name, "i64");
    assert!(spec.module_path.ends_with("plan"));
    let err = zenflow::step::lookup("nope").unwrap_err().to_string();
    assert!(err.contains("no step named `nope`"), "{err}");
}

#[test]
fn lineage_links_producers_and_consumers() {
    let stack = TestStack::new();
    let run = small.run(&stack, &4).unwrap();
    let seed_out = run.output_version("seed", "output").unwrap();
    let lineage = stack.block_on(stack.metadata().lineage(&seed_out.id)).unwrap();
    assert_eq!(lineage.producer.unwrap().invocation, "seed");
    let mut consumers: Vec<_> = lineage.consumers.iter().map(|c| c.invocation.as_str()).collect();
    consumers.sort();
    assert_eq!(consumers, ["mul", "mul_2"]);
    assert_eq!(seed_out.name, "renamed_pipeline.seed.output");
    assert_eq!(run.step("sum").unwrap().status, StepStatus::Completed);
}
