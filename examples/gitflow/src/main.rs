//! The gitflow template: one pipeline binary that a data scientist runs
//! locally, a pull request runs on the staging stack, and the merge to
//! `main` runs on the production stack, where it also deploys.
//!
//! load -> validate (schema, missing values, class balance, row count)
//!      -> drift (per-feature Kolmogorov–Smirnov against the production
//!         version's reference data)
//!      -> split -> train a decision tree per `max_depth` (fan-out) ->
//!         evaluate each -> select the best (fan-in)
//!      -> appraise: the candidate and the version holding `production`,
//!         both scored on this run's held-out data
//!      -> register as a version of `breast-cancer` (with warm-up samples)
//!      -> deploy (production config only, and only if every check passed)
//!
//! `gitflow serve --model breast-cancer` serves the model it registers.

use serde::{Deserialize, Serialize};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::tree::decision_tree_classifier::{DecisionTreeClassifier, DecisionTreeClassifierParameters};
use std::collections::BTreeMap;
use std::process::ExitCode;
use zenflow::appraisal::Appraisal;
use zenflow::prelude::*;
use zenflow::registry::Expect;
use zenflow::serve::{Inputs, Predict, PredictError, Prediction, Signature, TensorSpec};

/// The registered model's name.
const MODEL: &str = "breast-cancer";

/// Rows of features with their class (0 malignant, 1 benign).
#[derive(Clone, Debug, Serialize, Deserialize, Artifact)]
struct Dataset {
    variant: String,
    feature_names: Vec<String>,
    rows: Vec<Vec<f64>>,
    labels: Vec<u32>,
}

/// A decision tree, with what later runs compare their data against.
#[derive(Debug, Serialize, Deserialize, Artifact)]
struct TreeModel {
    max_depth: u16,
    /// The data set's columns it reads, in order: a request row has these.
    features: Vec<usize>,
    width: usize,
    tree: DecisionTreeClassifier<f64, u32, DenseMatrix<f64>, Vec<u32>>,
    /// Each feature's training values, sorted (capped): the reference of
    /// the drift check for runs that follow this version.
    reference: Vec<Vec<f64>>,
}

impl TreeModel {
    /// Rows of the full data set, cut to the columns this model reads.
    fn project(&self, rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
        project(&self.features, rows)
    }

    /// Classifies rows of the data set (every column).
    fn classify_data(&self, rows: &[Vec<f64>]) -> Result<Vec<u32>, String> {
        self.classify(&self.project(rows))
    }

    /// Classifies request rows (the model's own columns).
    fn classify(&self, rows: &[Vec<f64>]) -> Result<Vec<u32>, String> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        let x = DenseMatrix::new(rows.len(), self.width, flat, false).map_err(|e| e.to_string())?;
        self.tree.predict(&x).map_err(|e| e.to_string())
    }
}

impl Predict for TreeModel {
    fn signature(&self) -> Signature {
        Signature::new([TensorSpec::rows_f64("features", self.width)], [TensorSpec::labels("label")])
    }

    fn predict(&self, inputs: &Inputs) -> Result<Prediction, PredictError> {
        let rows: Vec<Vec<f64>> = inputs.rows_f64("features", self.width)?.map(<[f64]>::to_vec).collect();
        let labels = self.classify(&rows).map_err(PredictError::Failed)?;
        Ok(Prediction::new().labels("label", labels.into_iter().map(i64::from)))
    }
}

/// `rows` cut to the columns `features` (a missing one reads as NaN).
fn project(features: &[usize], rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    rows.iter().map(|r| features.iter().map(|&f| r.get(f).copied().unwrap_or(f64::NAN)).collect()).collect()
}

/// Held-out quality of one model.
#[derive(Clone, Debug, Serialize, Deserialize, Artifact)]
struct Metrics {
    max_depth: u16,
    accuracy: f64,
    f1: f64,
}

/// The outcome of the data checks.
#[derive(Clone, Debug, Serialize, Deserialize, Artifact)]
struct Verdict {
    passed: bool,
    summary: String,
}

/// Limits of the data checks.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
struct DataRules {
    features: usize,
    min_rows: usize,
    max_missing: usize,
    min_class_share: f64,
}

impl Default for DataRules {
    fn default() -> Self {
        DataRules { features: 30, min_rows: 100, max_missing: 0, min_class_share: 0.2 }
    }
}

/// The pipeline's configuration (`configs/*.yaml`, `--set`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    /// `staging` (a sample), `production` (the full set) or `drifted`.
    dataset: String,
    seed: u64,
    test_fraction: f64,
    max_depths: Vec<u16>,
    /// Share of training labels flipped (to try a worse model).
    label_noise: f64,
    /// Features the model leaves out. Its requests then have fewer
    /// columns, so the server refuses it while a version with the old
    /// inputs serves: clients would break.
    drop_features: Vec<String>,
    data: DataRules,
    /// The largest Kolmogorov–Smirnov statistic a feature may show
    /// against the production version's reference data.
    max_drift: f64,
    /// How much worse than production the candidate may score.
    tolerance: f64,
    /// A jump above this over production warns (too good to be true).
    max_jump: f64,
    /// Promote and deploy when every check passed (production only).
    deploy: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dataset: "staging".into(),
            seed: 7,
            test_fraction: 0.3,
            max_depths: vec![2, 3, 5, 8],
            label_noise: 0.0,
            drop_features: Vec::new(),
            data: DataRules::default(),
            max_drift: 0.3,
            tolerance: 0.02,
            max_jump: 0.15,
            deploy: false,
        }
    }
}

/// A small deterministic generator (the data set and split must not
/// depend on a crate's random stream across versions).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The versioned data set: `production` is the 569 rows smartcore ships,
/// `staging` a stratified half of them, `drifted` the full set with its
/// first ten features shifted, as a changed instrument would.
#[step]
fn load(#[param] dataset: String, #[param] seed: u64, ctx: &StepContext) -> Result<Dataset, BoxError> {
    let raw = smartcore::dataset::breast_cancer::load_dataset();
    let width = raw.num_features;
    let mut rows: Vec<Vec<f64>> = raw.data.chunks(width).map(|r| r.iter().map(|v| f64::from(*v)).collect()).collect();
    let mut labels = raw.target.clone();
    match dataset.as_str() {
        "production" => {}
        "staging" => {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let keep: Vec<bool> = (0..rows.len()).map(|_| rng.unit() < 0.5).collect();
            let mut k = keep.iter();
            rows.retain(|_| *k.next().unwrap_or(&false));
            let mut k = keep.iter();
            labels.retain(|_| *k.next().unwrap_or(&false));
        }
        "drifted" => {
            for r in &mut rows {
                for v in r.iter_mut().take(10) {
                    *v *= 1.4;
                }
            }
        }
        other => return Err(format!("unknown dataset `{other}`: use staging, production or drifted").into()),
    }
    ctx.log_metadata("rows", rows.len());
    Ok(Dataset { variant: dataset, feature_names: raw.feature_names.clone(), rows, labels })
}

/// Schema, missing values, class balance and row count.
#[step]
fn validate(data: Dataset, #[param] rules: DataRules, ctx: &StepContext) -> Verdict {
    let mut passed = true;
    let mut record = |check: Check| passed &= ctx.check(check) != CheckStatus::Fail;
    let widths: Vec<usize> = data.rows.iter().map(Vec::len).filter(|w| *w != rules.features).collect();
    record(if widths.is_empty() {
        Check::pass("schema", format!("every row has the {} features", rules.features))
    } else {
        Check::fail("schema", format!("{} rows do not have {} features", widths.len(), rules.features))
    });
    let missing = data.rows.iter().flatten().filter(|v| !v.is_finite()).count();
    record(if missing <= rules.max_missing {
        Check::pass("missing_values", format!("{missing} missing values"))
    } else {
        Check::fail("missing_values", format!("{missing} missing values (at most {})", rules.max_missing))
    });
    let n = data.labels.len().max(1) as f64;
    let positive = data.labels.iter().filter(|l| **l == 1).count() as f64 / n;
    let minority = positive.min(1.0 - positive);
    record(if minority >= rules.min_class_share {
        Check::pass("class_balance", format!("minority class {:.1} % of rows", minority * 100.0))
    } else {
        Check::fail(
            "class_balance",
            format!(
                "minority class {:.1} % of rows (at least {:.0} %)",
                minority * 100.0,
                rules.min_class_share * 100.0
            ),
        )
    });
    record(if data.rows.len() >= rules.min_rows {
        Check::pass("row_count", format!("{} rows", data.rows.len()))
    } else {
        Check::fail("row_count", format!("{} rows (at least {})", data.rows.len(), rules.min_rows))
    });
    Verdict { passed, summary: format!("{} rows of `{}`", data.rows.len(), data.variant) }
}

/// The two-sample Kolmogorov–Smirnov statistic of sorted samples.
fn ks(a: &[f64], b: &[f64]) -> f64 {
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

fn sorted_columns(rows: &[Vec<f64>], width: usize, cap: usize) -> Vec<Vec<f64>> {
    (0..width)
        .map(|f| {
            let mut col: Vec<f64> = rows.iter().filter_map(|r| r.get(f)).copied().filter(|v| v.is_finite()).collect();
            col.sort_by(f64::total_cmp);
            if col.len() > cap {
                // Evenly spaced quantiles keep the distribution.
                col = (0..cap).map(|k| col[k * (col.len() - 1) / (cap - 1)]).collect();
            }
            col
        })
        .collect()
}

/// Each feature of this run's data against the production version's
/// reference data: the largest KS statistic must stay under `max_drift`.
#[step]
fn drift(data: Dataset, production: Option<TreeModel>, #[param] max_drift: f64, ctx: &StepContext) -> Verdict {
    let Some(production) = production else {
        ctx.check(Check::pass("drift", "no production version yet: nothing to compare with"));
        return Verdict { passed: true, summary: "no reference".into() };
    };
    // The columns the production version read, as it saw them in training.
    let current = sorted_columns(&production.project(&data.rows), production.width, 1000);
    let mut stats: Vec<(f64, &str)> = current
        .iter()
        .zip(&production.reference)
        .zip(production.features.iter().map(|&f| data.feature_names.get(f).map_or("?", String::as_str)))
        .map(|((c, r), name)| (ks(c, r), name))
        .collect();
    stats.sort_by(|a, b| b.0.total_cmp(&a.0));
    let over: Vec<String> =
        stats.iter().filter(|(d, _)| *d > max_drift).map(|(d, n)| format!("{n} (KS {d:.2})")).collect();
    let (worst, worst_name) = stats.first().copied().unwrap_or((0.0, "none"));
    ctx.log_metadata("max_ks", worst);
    let check = if over.is_empty() {
        Check::pass("drift", format!("largest KS {worst:.2} ({worst_name}), threshold {max_drift}"))
    } else {
        Check::fail("drift", format!("{} features drifted past KS {max_drift}: {}", over.len(), over.join(", ")))
    };
    let passed = ctx.check(check) != CheckStatus::Fail;
    Verdict { passed, summary: format!("largest KS {worst:.2}") }
}

/// A deterministic, stratified split.
#[step(outputs(train, test))]
fn split(data: Dataset, #[param] test_fraction: f64, #[param] seed: u64) -> (Dataset, Dataset) {
    let mut rng = Rng(seed | 1);
    let empty = || Dataset { rows: Vec::new(), labels: Vec::new(), ..data.clone() };
    let (mut train, mut test) = (empty(), empty());
    for class in [0u32, 1] {
        let mut idx: Vec<usize> = (0..data.labels.len()).filter(|&i| data.labels[i] == class).collect();
        for i in (1..idx.len()).rev() {
            idx.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let n_test = (idx.len() as f64 * test_fraction).round() as usize;
        for (k, &i) in idx.iter().enumerate() {
            let part = if k < n_test { &mut test } else { &mut train };
            part.rows.push(data.rows[i].clone());
            part.labels.push(class);
        }
    }
    (train, test)
}

/// A decision tree of depth `max_depth`; `label_noise` flips that share
/// of the training labels first.
#[step]
fn train(
    train: Dataset,
    #[param] max_depth: u16,
    #[param] label_noise: f64,
    #[param] drop_features: Vec<String>,
    #[param] seed: u64,
) -> Result<TreeModel, BoxError> {
    for name in &drop_features {
        if !train.feature_names.contains(name) {
            return Err(
                format!("drop_features: no feature `{name}`; the data set has {:?}", train.feature_names).into()
            );
        }
    }
    let features: Vec<usize> =
        (0..train.feature_names.len()).filter(|&f| !drop_features.contains(&train.feature_names[f])).collect();
    let width = features.len();
    let mut labels = train.labels.clone();
    let mut rng = Rng(seed.wrapping_add(u64::from(max_depth)) | 1);
    for l in &mut labels {
        if rng.unit() < label_noise {
            *l = 1 - *l;
        }
    }
    let rows = project(&features, &train.rows);
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let x = DenseMatrix::new(rows.len(), width, flat, false)?;
    let mut params = DecisionTreeClassifierParameters::default().with_max_depth(max_depth);
    params.seed = Some(seed);
    let tree = DecisionTreeClassifier::fit(&x, &labels, params)?;
    Ok(TreeModel { max_depth, features, width, tree, reference: sorted_columns(&rows, width, 200) })
}

fn score(model: &TreeModel, test: &Dataset) -> Result<BTreeMap<String, f64>, BoxError> {
    let predicted = model.classify_data(&test.rows)?;
    let n = test.labels.len().max(1) as f64;
    let correct = predicted.iter().zip(&test.labels).filter(|(p, y)| p == y).count() as f64;
    let tp = predicted.iter().zip(&test.labels).filter(|(p, y)| **p == 1 && **y == 1).count() as f64;
    let fp = predicted.iter().zip(&test.labels).filter(|(p, y)| **p == 1 && **y == 0).count() as f64;
    let fn_ = predicted.iter().zip(&test.labels).filter(|(p, y)| **p == 0 && **y == 1).count() as f64;
    let f1 = if tp == 0.0 { 0.0 } else { 2.0 * tp / (2.0 * tp + fp + fn_) };
    Ok(BTreeMap::from([("accuracy".to_string(), correct / n), ("f1".to_string(), f1)]))
}

#[step]
fn evaluate(model: TreeModel, test: Dataset, ctx: &StepContext) -> Result<Metrics, BoxError> {
    let s = score(&model, &test)?;
    ctx.log_metadata("accuracy", s["accuracy"]);
    ctx.log_metadata("f1", s["f1"]);
    Ok(Metrics { max_depth: model.max_depth, accuracy: s["accuracy"], f1: s["f1"] })
}

/// Fan-in: the most accurate tree (the shallower one on a tie).
#[step]
fn select(models: Vec<TreeModel>, metrics: Vec<Metrics>) -> Result<TreeModel, BoxError> {
    let best = (0..metrics.len())
        .max_by(|&a, &b| {
            metrics[a].accuracy.total_cmp(&metrics[b].accuracy).then(metrics[b].max_depth.cmp(&metrics[a].max_depth))
        })
        .ok_or("no candidate was trained")?;
    models.into_iter().nth(best).ok_or_else(|| "the candidates and their metrics differ in number".into())
}

/// The tolerances of the appraisal.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Rules {
    tolerance: f64,
    max_jump: f64,
}

/// What the appraisal decided, and against which version.
#[derive(Clone, Debug, Serialize, Deserialize, Artifact)]
struct Appraised {
    passed: bool,
    /// The version that held `production` (none yet: `None`). A deployment
    /// replaces only this one: a merge appraised against v3 must not
    /// replace the v4 another merge deployed meanwhile.
    against: Option<i64>,
}

/// The candidate and the version holding `production`, both scored on
/// this run's held-out data: worse by more than the tolerance fails, a
/// jump past `max_jump` warns.
#[step]
fn appraise(
    candidate: TreeModel,
    production: Option<TreeModel>,
    test: Dataset,
    #[param] rules: Rules,
    ctx: &StepContext,
) -> Result<Appraised, BoxError> {
    let appraisal = Appraisal::new(MODEL)
        .metric("accuracy", Direction::HigherIsBetter, rules.tolerance)
        .metric("f1", Direction::HigherIsBetter, rules.tolerance)
        .max_jump("accuracy", rules.max_jump);
    let candidate_scores = score(&candidate, &test)?;
    let production_scores = production.as_ref().map(|p| score(p, &test)).transpose()?;
    let against = production.as_ref().and(ctx.model_version("production"));
    let result = appraisal.evaluate(&candidate_scores, production_scores.as_ref().map(|s| (against.unwrap_or(0), s)));
    ctx.record_appraisal(&result);
    Ok(Appraised { passed: result.passed, against })
}

/// Registers the candidate once appraised (its tags say how it fared),
/// with four held-out rows and its answers as the server's warm-up.
#[step(model = "breast-cancer")]
fn register(
    candidate: TreeModel,
    appraised: Appraised,
    test: Dataset,
    ctx: &StepContext,
) -> Result<TreeModel, BoxError> {
    let s = score(&candidate, &test)?;
    ctx.log_metadata("accuracy", s["accuracy"]);
    ctx.log_metadata("f1", s["f1"]);
    ctx.log_metadata("max_depth", candidate.max_depth);
    let rows = candidate.project(&test.rows[..test.rows.len().min(4)]);
    let answers = candidate.classify(&rows)?;
    for (row, answer) in rows.iter().zip(answers) {
        ctx.model_sample(
            serde_json::json!({"inputs": [{"name": "features", "shape": [1, row.len()], "datatype": "FP64", "data": row}]}),
            serde_json::json!([answer]),
        );
    }
    ctx.model_tag("algorithm", "decision-tree");
    ctx.model_tag("appraisal", if appraised.passed { "passed" } else { "failed" });
    ctx.model_tag("appraised_against", appraised.against.map_or("none".into(), |v| format!("v{v}")));
    Ok(candidate)
}

/// Promotes and deploys the registered version, only if every check of
/// the run passed (the stack's protected `production` alias holds the
/// registry to the same rule).
#[step]
fn deploy(
    model: TreeModel,
    appraised: Appraised,
    data: Verdict,
    drifted: Verdict,
    ctx: &StepContext,
) -> Result<String, BoxError> {
    let _ = model;
    if !(appraised.passed && data.passed && drifted.passed) {
        return Ok("not deployed: a check failed".into());
    }
    let expect = match appraised.against {
        Some(v) => Expect::Version(v),
        None => Expect::Nobody,
    };
    let options = zenflow::deploy::DeployOptions { expect: Some(expect), ..Default::default() };
    let d = zenflow::deploy::deploy_input(ctx, "model", MODEL, &options)?;
    Ok(format!("v{} serves", d.to))
}

#[pipeline]
fn gitflow(cfg: &Config) -> Handle<TreeModel> {
    // The version serving now, read when each of these steps starts.
    let production = || zenflow::model_alias(MODEL, "production");
    let data = load(cfg.dataset.clone(), cfg.seed);
    let valid = validate(data, cfg.data.clone());
    let drifted = drift(data, production(), cfg.max_drift);
    let (train_set, test_set) = split(data, cfg.test_fraction, cfg.seed);
    let mut models = Vec::new();
    let mut metrics = Vec::new();
    for &depth in &cfg.max_depths {
        let model = train(train_set, depth, cfg.label_noise, cfg.drop_features.clone(), cfg.seed)
            .id(format!("train_depth_{depth}"));
        metrics.push(evaluate(model, test_set).id(format!("evaluate_depth_{depth}")));
        models.push(model);
    }
    let best = select(models, metrics);
    let rules = Rules { tolerance: cfg.tolerance, max_jump: cfg.max_jump };
    let appraised = appraise(best, production(), test_set, rules);
    let registered = register(best, appraised, test_set);
    if cfg.deploy {
        deploy(registered, appraised, valid, drifted);
    }
    registered
}

fn main() -> ExitCode {
    zenflow::cli::Main::new(gitflow).serve::<TreeModel>().run()
}
