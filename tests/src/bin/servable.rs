//! A pipeline binary whose model is served, for the serving tests: each
//! run with other settings registers another version of `toy`, and
//! `serve --model toy` serves it.
//!
//! The settings make versions that misbehave in the ways a deployment must
//! survive: `lie` stores a sample answer the model does not give (its
//! warm-up fails), `fail_above` fails real requests whose first feature
//! passes it (the warm-up's do not), `delay_ms` makes each answer slow,
//! and `width` changes the signature.

use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use zenflow::prelude::*;
use zenflow::serve::{Inputs, Predict, PredictError, Prediction, Signature, TensorSpec};

/// `x[0] >= cut` is class 1.
#[derive(Clone, Debug, Serialize, Deserialize, Artifact)]
struct Toy {
    cut: f64,
    width: usize,
    fail_above: Option<f64>,
    delay_ms: u64,
}

impl Predict for Toy {
    fn signature(&self) -> Signature {
        Signature::new([TensorSpec::rows_f64("x", self.width)], [TensorSpec::labels("label")])
    }

    fn predict(&self, inputs: &Inputs) -> Result<Prediction, PredictError> {
        let rows = inputs.rows_f64("x", self.width)?;
        if self.delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.delay_ms));
        }
        let mut labels = Vec::with_capacity(rows.len());
        for r in rows {
            if self.fail_above.is_some_and(|f| r[0] > f) {
                return Err(PredictError::Failed(format!("{} is past what this version can take", r[0])));
            }
            labels.push(i64::from(r[0] >= self.cut));
        }
        Ok(Prediction::new().labels("label", labels))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    cut: f64,
    width: usize,
    fail_above: Option<f64>,
    delay_ms: u64,
    lie: bool,
    /// Deploy the version from the pipeline (a step after the registration).
    deploy: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { cut: 0.5, width: 2, fail_above: None, delay_ms: 0, lie: false, deploy: false }
    }
}

/// Builds the model and registers it with one warm-up request.
#[step(model = "toy")]
fn train(#[param] cfg: Config, ctx: &StepContext) -> Toy {
    let model = Toy { cut: cfg.cut, width: cfg.width, fail_above: cfg.fail_above, delay_ms: cfg.delay_ms };
    let rows = [vec![0.1; cfg.width], vec![0.9; cfg.width]];
    let request = serde_json::json!({
        "inputs": [{"name": "x", "shape": [2, cfg.width], "datatype": "FP64", "data": rows}]
    });
    let mut expected: Vec<i64> = rows.iter().map(|r| i64::from(r[0] >= cfg.cut)).collect();
    if cfg.lie {
        expected.iter_mut().for_each(|l| *l = 1 - *l);
    }
    ctx.model_sample(request, expected);
    ctx.log_metadata("cut", cfg.cut);
    model
}

/// Deploys the version just registered, through the stack's deployer.
#[step]
fn ship(model: Toy, ctx: &StepContext) -> Result<i64, BoxError> {
    let _ = model;
    let deployed = zenflow::deploy::deploy_input(ctx, "model", "toy", &Default::default())?;
    Ok(deployed.to)
}

#[pipeline]
fn servable(cfg: &Config) -> Handle<Toy> {
    let model = train(cfg.clone());
    if cfg.deploy {
        ship(model);
    }
    model
}

fn main() -> ExitCode {
    zenflow::cli::Main::new(servable).serve::<Toy>().run()
}
