//! A pipeline binary that registers a model and appraises it against the
//! version in production, driven by the registry tests as CI would.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::process::ExitCode;
use zenflow::appraisal::Appraisal;
use zenflow::prelude::*;
use zenflow::Direction;

/// A threshold classifier: `x >= cut` is class 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Artifact)]
struct Threshold {
    cut: f64,
}

impl Threshold {
    /// Accuracy on `data` labelled by the true cut 0.5.
    fn accuracy(&self, data: &[f64]) -> f64 {
        let right = data.iter().filter(|&&x| (x >= self.cut) == (x >= 0.5)).count();
        right as f64 / data.len().max(1) as f64
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    cut: f64,
    points: u32,
    tolerance: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config { cut: 0.5, points: 100, tolerance: 0.01 }
    }
}

#[step]
fn data(#[param] points: u32) -> Vec<f64> {
    (0..points).map(|i| f64::from(i) / f64::from(points)).collect()
}

#[step(model = "demo-model")]
fn train(data: Vec<f64>, #[param] cut: f64, ctx: &StepContext) -> Threshold {
    let model = Threshold { cut };
    ctx.log_metadata("accuracy", model.accuracy(&data));
    ctx.model_sample(serde_json::json!({"x": [0.9]}), serde_json::json!([1]));
    ctx.model_tag("algorithm", "threshold");
    model
}

/// Scores the candidate and the production version on the same data.
#[step]
fn appraise(
    candidate: Threshold,
    production: Option<Threshold>,
    data: Vec<f64>,
    #[param] tolerance: f64,
    ctx: &StepContext,
) -> bool {
    let score = |m: &Threshold| BTreeMap::from([("accuracy".to_string(), m.accuracy(&data))]);
    let rules = Appraisal::new("demo-model").metric("accuracy", Direction::HigherIsBetter, tolerance);
    let production_metrics = production.as_ref().map(score);
    let production_version = ctx.model_version("production").unwrap_or(0);
    let result = rules.evaluate(&score(&candidate), production_metrics.as_ref().map(|m| (production_version, m)));
    ctx.record_appraisal(&result);
    result.passed
}

#[pipeline]
fn models_demo(cfg: &Config) {
    let d = data(cfg.points);
    let candidate = train(d, cfg.cut);
    appraise(candidate, zenflow::model_alias("demo-model", "production"), d, cfg.tolerance);
}

fn main() -> ExitCode {
    zenflow::cli::main(models_demo)
}
