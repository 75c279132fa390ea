//! W9's zenflow side: a pipeline binary that registers the decision tree
//! `benches/w9/train_tree.py` exported from scikit-learn (the very tree
//! MLServer and MLflow serve) as model `breast-cancer`, and serves it.
//!
//! `tree_server run --set tree=PATH/tree.json`, `models promote
//! breast-cancer 1 --to production --expect none`, then `serve --model
//! breast-cancer`.

use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use zenflow::prelude::*;
use zenflow::serve::{Inputs, Predict, PredictError, Prediction, Signature, TensorSpec};

/// A binary decision tree in scikit-learn's array layout.
#[derive(Clone, Debug, Serialize, Deserialize, Artifact)]
struct Tree {
    width: usize,
    children_left: Vec<i64>,
    children_right: Vec<i64>,
    feature: Vec<i64>,
    threshold: Vec<f64>,
    leaf_class: Vec<usize>,
    classes: Vec<i64>,
}

impl Tree {
    fn classify(&self, x: &[f64]) -> i64 {
        let mut node = 0usize;
        // Each step goes down a level, so this ends within the tree's depth.
        while let Some(&left) = self.children_left.get(node).filter(|l| **l >= 0) {
            let f = self.feature[node] as usize;
            node = if x[f] <= self.threshold[node] { left as usize } else { self.children_right[node] as usize };
        }
        self.classes[self.leaf_class[node]]
    }
}

impl Predict for Tree {
    fn signature(&self) -> Signature {
        Signature::new([TensorSpec::rows_f64("features", self.width)], [TensorSpec::labels("label")])
    }

    fn predict(&self, inputs: &Inputs) -> Result<Prediction, PredictError> {
        let rows = inputs.rows_f64("features", self.width)?;
        Ok(Prediction::new().labels("label", rows.map(|r| self.classify(r))))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    tree: String,
}

#[derive(Deserialize)]
struct Exported {
    #[serde(flatten)]
    tree: Tree,
    samples: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    request: serde_json::Value,
    expected: serde_json::Value,
}

/// Reads the exported tree and registers it, with scikit-learn's own
/// answers to four held-out rows as its warm-up.
#[step(cache = false, model = "breast-cancer")]
fn register(#[param] tree: String, ctx: &StepContext) -> Result<Tree, BoxError> {
    let text = std::fs::read_to_string(&tree).map_err(|e| format!("{tree}: {e} (run benches/w9/train_tree.py)"))?;
    let exported: Exported = serde_json::from_str(&text).map_err(|e| format!("{tree}: {e}"))?;
    let valid = |i: i64| i < 0 || (i as usize) < exported.tree.children_left.len();
    if !exported.tree.children_left.iter().chain(&exported.tree.children_right).all(|i| valid(*i)) {
        return Err(format!("{tree}: a child index is out of the tree").into());
    }
    for s in exported.samples {
        ctx.model_sample(s.request, s.expected);
    }
    Ok(exported.tree)
}

#[pipeline]
fn tree_server(cfg: &Config) -> Handle<Tree> {
    register(cfg.tree.clone())
}

fn main() -> ExitCode {
    zenflow::cli::Main::new(tree_server).serve::<Tree>().run()
}
