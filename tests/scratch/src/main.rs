//! A user's pipeline, built by `tests/tests/fingerprint.rs` from a copy of
//! this folder: each test edits one thing and asserts which steps re-run.

mod features;

use zenflow::prelude::*;

/// Rows below this are dropped.
const FLOOR: f64 = 0.0;

#[derive(serde::Serialize, serde::Deserialize, zenflow::Artifact, Clone, Debug, PartialEq)]
struct Row(Vec<f64>);

impl PartialOrd for Row {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.0.first().partial_cmp(&other.0.first())
    }
}

fn unrelated() -> u32 {
    // Nothing calls this.
    7
}

#[step]
fn load(#[param] n: u32) -> Vec<Row> {
    (0..n).map(|i| Row(vec![f64::from(i), f64::from(i % 3), 1.0])).collect()
}

#[step]
fn clean(rows: Vec<Row>) -> Vec<Row> {
    rows.into_iter().filter(|r| r.0.iter().all(|v| *v >= FLOOR)).collect()
}

#[step]
fn train(rows: Vec<Row>) -> Vec<f64> {
    let kept = features::kept_features();
    kept.iter().map(|&c| rows.iter().map(|r| r.0[c]).sum::<f64>()).collect()
}

#[step]
fn rank(rows: Vec<Row>) -> Vec<Row> {
    let mut rows = rows;
    rows.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
    rows
}

#[pipeline]
fn scratch() {
    let rows = clean(load(12));
    train(rows.clone());
    rank(rows);
}

fn main() -> std::process::ExitCode {
    let _ = unrelated;
    zenflow::cli::main(scratch)
}
