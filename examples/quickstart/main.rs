//! The zenflow quickstart: a small but real training pipeline on the local
//! stack, as a pipeline binary.
//!
//! load the Iris data set -> split it (stratified) -> train a softmax
//! regression for each of several learning rates (fan-out) -> evaluate each ->
//! pick the best (fan-in) -> register it as a version of the model
//! `iris-softmax`.
//!
//! Run it twice: `cargo run --example quickstart`. The second run re-reads the
//! CSV (the `load_iris` step has `cache = false`), finds the bytes unchanged,
//! and serves every downstream step from cache. `cargo run --example
//! quickstart -- --help` shows the rest of its command line: `models
//! promote iris-softmax 1 --to production --expect none`, `models history
//! iris-softmax`, `runs show latest`, ... and `serve --model iris-softmax
//! --alias production` serves the promoted version over the Open Inference
//! Protocol on 127.0.0.1:8080.

use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use zenflow::prelude::*;
use zenflow::serve::{Inputs, Predict, PredictError, Prediction, Signature, TensorSpec};

/// A table of 4-feature samples with class labels.
#[derive(Clone, Debug, Serialize, Deserialize, Artifact)]
struct Dataset {
    features: Vec<[f64; 4]>,
    labels: Vec<usize>,
    classes: Vec<String>,
}

/// Hyperparameters of one training run.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainParams {
    learning_rate: f64,
    epochs: u32,
    l2: f64,
}

/// A softmax regression over standardized features.
#[derive(Clone, Debug, Serialize, Deserialize, Artifact)]
struct Model {
    mean: [f64; 4],
    std: [f64; 4],
    weights: Vec<[f64; 4]>,
    bias: Vec<f64>,
    classes: Vec<String>,
    params: TrainParams,
}

/// Test-set quality of one model.
#[derive(Clone, Debug, Serialize, Deserialize, Artifact)]
struct Metrics {
    accuracy: f64,
    log_loss: f64,
    learning_rate: f64,
}

/// The chosen model and why.
#[derive(Clone, Debug, Serialize, Deserialize, Artifact)]
struct Selection {
    model: Model,
    metrics: Metrics,
    candidates: usize,
}

/// The pipeline's configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Config {
    dataset: String,
    test_fraction: f64,
    seed: u64,
    learning_rates: Vec<f64>,
    epochs: u32,
    l2: f64,
    /// The quality gate: the best model's test accuracy must reach it.
    min_accuracy: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dataset: concat!(env!("CARGO_MANIFEST_DIR"), "/data/iris.csv").to_string(),
            test_fraction: 0.3,
            seed: 7,
            learning_rates: vec![0.01, 0.05, 0.2, 0.8],
            epochs: 300,
            l2: 1e-3,
            min_accuracy: 0.9,
        }
    }
}

/// Reads the CSV every time (no cache): if its bytes did not change, the
/// content hash is the same and everything downstream stays cached.
#[step(cache = false)]
fn load_iris(#[param] path: String, ctx: &StepContext) -> Result<Dataset, Box<dyn std::error::Error + Send + Sync>> {
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read the data set {path}: {e}"))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("the data set is empty")?.split(',').collect();
    let classes: Vec<String> = header.iter().skip(2).map(|s| s.trim().to_string()).collect();
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != 5 {
            return Err(format!("{path}:{}: expected 5 columns, found {}", n + 2, cells.len()).into());
        }
        let mut row = [0.0; 4];
        for (slot, cell) in row.iter_mut().zip(&cells) {
            *slot = cell.trim().parse().map_err(|e| format!("{path}:{}: {e}", n + 2))?;
        }
        let label: usize = cells[4].trim().parse().map_err(|e| format!("{path}:{}: {e}", n + 2))?;
        if label >= classes.len() {
            return Err(format!("{path}:{}: class {label} is not one of {classes:?}", n + 2).into());
        }
        features.push(row);
        labels.push(label);
    }
    ctx.log_metadata("rows", features.len());
    Ok(Dataset { features, labels, classes })
}

/// A deterministic, stratified split.
#[step(outputs(train, test))]
fn split(data: Dataset, #[param] test_fraction: f64, #[param] seed: u64) -> (Dataset, Dataset) {
    let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let empty = || Dataset { features: vec![], labels: vec![], classes: data.classes.clone() };
    let (mut train, mut test) = (empty(), empty());
    for class in 0..data.classes.len() {
        let mut idx: Vec<usize> = (0..data.labels.len()).filter(|&i| data.labels[i] == class).collect();
        for i in (1..idx.len()).rev() {
            idx.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        let n_test = (idx.len() as f64 * test_fraction).round() as usize;
        for (k, &i) in idx.iter().enumerate() {
            let part = if k < n_test { &mut test } else { &mut train };
            part.features.push(data.features[i]);
            part.labels.push(class);
        }
    }
    (train, test)
}

fn softmax(z: &mut [f64]) {
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = z
        .iter_mut()
        .map(|v| {
            *v = (*v - max).exp();
            *v
        })
        .sum();
    z.iter_mut().for_each(|v| *v /= sum);
}

impl Model {
    fn probabilities(&self, x: &[f64; 4]) -> Vec<f64> {
        let mut z: Vec<f64> = self
            .weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| b + (0..4).map(|j| w[j] * (x[j] - self.mean[j]) / self.std[j]).sum::<f64>())
            .collect();
        softmax(&mut z);
        z
    }
}

/// Full-batch gradient descent on the softmax cross-entropy with L2.
#[step]
fn train(data: Dataset, #[param] params: TrainParams) -> Model {
    let n = data.features.len().max(1) as f64;
    let k = data.classes.len();
    let mut mean = [0.0; 4];
    let mut std = [0.0; 4];
    for j in 0..4 {
        mean[j] = data.features.iter().map(|x| x[j]).sum::<f64>() / n;
        std[j] = (data.features.iter().map(|x| (x[j] - mean[j]).powi(2)).sum::<f64>() / n).sqrt().max(1e-9);
    }
    let mut model = Model {
        mean,
        std,
        weights: vec![[0.0; 4]; k],
        bias: vec![0.0; k],
        classes: data.classes.clone(),
        params: params.clone(),
    };
    let standardized: Vec<[f64; 4]> =
        data.features.iter().map(|x| std::array::from_fn(|j| (x[j] - mean[j]) / std[j])).collect();
    for _ in 0..params.epochs {
        let mut grad_w = vec![[0.0; 4]; k];
        let mut grad_b = vec![0.0; k];
        for ((x, z), &y) in data.features.iter().zip(&standardized).zip(&data.labels) {
            let p = model.probabilities(x);
            for (c, (gw, gb)) in grad_w.iter_mut().zip(grad_b.iter_mut()).enumerate() {
                let err = p[c] - f64::from(u8::from(c == y));
                *gb += err / n;
                for (g, zj) in gw.iter_mut().zip(z) {
                    *g += err * zj / n;
                }
            }
        }
        for ((w, b), (gw, gb)) in model.weights.iter_mut().zip(model.bias.iter_mut()).zip(grad_w.iter().zip(&grad_b)) {
            *b -= params.learning_rate * gb;
            for (wj, gj) in w.iter_mut().zip(gw) {
                *wj -= params.learning_rate * (gj + params.l2 * *wj);
            }
        }
    }
    model
}

#[step]
fn evaluate(model: Model, test: Dataset, ctx: &StepContext) -> Metrics {
    let n = test.features.len().max(1) as f64;
    let (mut correct, mut loss) = (0usize, 0.0);
    for (x, &y) in test.features.iter().zip(&test.labels) {
        let p = model.probabilities(x);
        correct += usize::from(predict(&model, x) == y);
        loss -= p[y].max(1e-15).ln();
    }
    let metrics =
        Metrics { accuracy: correct as f64 / n, log_loss: loss / n, learning_rate: model.params.learning_rate };
    ctx.log_metadata("accuracy", metrics.accuracy);
    ctx.log_metadata("log_loss", metrics.log_loss);
    metrics
}

/// Fan-in: every candidate model with its metrics; keeps the best, and
/// checks that it is good enough (a failed check fails the quality gate:
/// the run exits 3, and a protected alias will not take the version).
#[step]
fn select_best(
    models: Vec<Model>,
    metrics: Vec<Metrics>,
    #[param] min_accuracy: f64,
    ctx: &StepContext,
) -> Result<Selection, String> {
    let best = (0..metrics.len())
        .max_by(|&a, &b| {
            metrics[a]
                .accuracy
                .total_cmp(&metrics[b].accuracy)
                .then(metrics[b].log_loss.total_cmp(&metrics[a].log_loss))
        })
        .ok_or("no candidate models were trained")?;
    ctx.check(Check::at_least("accuracy_min", metrics[best].accuracy, min_accuracy));
    Ok(Selection { model: models[best].clone(), metrics: metrics[best].clone(), candidates: models.len() })
}

/// The selected model, registered as a version of `iris-softmax` (the
/// same bytes again are the same version), with its test metrics and a
/// request the model server replays before it serves the version.
#[step(model = "iris-softmax")]
fn register(best: Selection, test: Dataset, ctx: &StepContext) -> Model {
    ctx.log_metadata("accuracy", best.metrics.accuracy);
    ctx.log_metadata("log_loss", best.metrics.log_loss);
    ctx.log_metadata("learning_rate", best.metrics.learning_rate);
    if let (Some(x), Some(&y)) = (test.features.first(), test.labels.first()) {
        let request = serde_json::json!({
            "inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP64", "data": x}]
        });
        let predicted = predict(&best.model, x);
        if predicted == y {
            ctx.model_sample(request, serde_json::json!([predicted]));
        }
    }
    best.model
}

/// The class the model predicts for `x`.
fn predict(model: &Model, x: &[f64; 4]) -> usize {
    let p = model.probabilities(x);
    (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0)
}

/// Each training run is named by its learning rate (`train_lr_0_05`), so
/// `--set steps.train_lr_0_05.retries=2` and the reports keep meaning the
/// same call when the list of rates changes.
#[pipeline]
fn quickstart(cfg: &Config) -> Handle<Model> {
    let data = load_iris(cfg.dataset.clone());
    let (train_set, test_set) = split(data, cfg.test_fraction, cfg.seed);
    let mut models = Vec::new();
    let mut scores = Vec::new();
    for &learning_rate in &cfg.learning_rates {
        let params = TrainParams { learning_rate, epochs: cfg.epochs, l2: cfg.l2 };
        let model = train(train_set, params).id(format!("train_lr_{learning_rate}"));
        scores.push(evaluate(model, test_set).id(format!("evaluate_lr_{learning_rate}")));
        models.push(model);
    }
    let best = select_best(models, scores, cfg.min_accuracy);
    register(best, test_set)
}

/// The model served: rows of 4 features in; a class label (and the
/// probability of each class) out.
impl Predict for Model {
    fn signature(&self) -> Signature {
        Signature::new(
            [TensorSpec::rows_f64("features", 4)],
            [TensorSpec::labels("label"), TensorSpec::probabilities("probabilities", self.classes.len())],
        )
    }

    fn predict(&self, inputs: &Inputs) -> Result<Prediction, PredictError> {
        let rows: Vec<[f64; 4]> = inputs.rows_f64("features", 4)?.map(|r| std::array::from_fn(|j| r[j])).collect();
        Prediction::new().labels("label", rows.iter().map(|x| predict(self, x) as i64)).probabilities(
            "probabilities",
            self.classes.len(),
            rows.iter().map(|x| self.probabilities(x)),
        )
    }
}

/// The pipeline's command line: `run` (the default), `dag`, `runs`,
/// `artifacts`, `models`, `stacks`, and `serve` for the model
/// (`serve --model iris-softmax --alias production`).
fn main() -> ExitCode {
    zenflow::cli::Main::new(quickstart).serve::<Model>().run()
}
