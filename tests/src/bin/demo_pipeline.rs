//! A small pipeline binary driven by the command-line tests, as CI would.

use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use zenflow::prelude::*;
use zenflow::Check;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
struct DemoConfig {
    size: usize,
    threshold: f64,
    fail_step: bool,
    label: String,
    nested: Nested,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Nested {
    scale: f64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig { size: 10, threshold: 0.4, fail_step: false, label: "demo".into(), nested: Nested { scale: 1.0 } }
    }
}

#[step]
fn generate(#[param] size: usize, #[param] scale: f64, ctx: &StepContext) -> Vec<f64> {
    ctx.log(format!("generating {size} values"));
    (0..size).map(|i| scale * i as f64 / size.max(1) as f64).collect()
}

#[step]
fn score(values: Vec<f64>, #[param] threshold: f64, #[param] fail: bool, ctx: &StepContext) -> Result<f64, String> {
    tracing::info!(values = values.len(), "scoring");
    if fail {
        tracing::error!("giving up as asked");
        return Err("boom: this step was asked to fail".into());
    }
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    ctx.log_metadata("mean", mean);
    ctx.check(Check::at_least("mean_min", mean, threshold));
    ctx.check(Check::at_most("size_max", values.len() as f64, 8.0).soft());
    Ok(mean)
}

#[step]
fn publish(score: f64, #[param] label: String, ctx: &StepContext) -> String {
    ctx.log(format!("publishing {label}"));
    format!("{label}: {score:.3}")
}

#[pipeline]
fn demo(cfg: &DemoConfig) {
    let values = generate(cfg.size, cfg.nested.scale);
    let s = score(values, 0.0_f64.max(cfg.threshold), cfg.fail_step);
    publish(s, cfg.label.clone());
}

fn main() -> ExitCode {
    zenflow::cli::main(demo)
}
