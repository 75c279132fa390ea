//! A pipeline binary whose steps pass Arrow tables (feature `arrow`),
//! driven by `tests/frames.rs` as CI would.

use arrow_array::types::Int32Type;
use arrow_array::{DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray};
use std::process::ExitCode;
use std::sync::Arc;
use zenflow::prelude::*;

/// `rows` rows: a float, an integer, a string and a categorical column;
/// every seventh `x` is null.
#[step]
fn table(#[param] rows: usize) -> RecordBatch {
    let x = Float64Array::from_iter((0..rows).map(|i| (i % 7 != 3).then_some(i as f64 / 4.0)));
    let n = Int64Array::from_iter_values((0..rows).map(|i| i as i64 - 5));
    let s = StringArray::from_iter_values((0..rows).map(|i| format!("id-{}", i % 5)));
    let c = DictionaryArray::<Int32Type>::from_iter((0..rows).map(|i| ["red", "green", "blue"][i % 3]));
    RecordBatch::try_from_iter([
        ("x", Arc::new(x) as _),
        ("n", Arc::new(n) as _),
        ("s", Arc::new(s) as _),
        ("c", Arc::new(c) as _),
    ])
    .expect("columns of one length")
}

/// The table's row count, read from the table the previous step wrote.
#[step]
fn count(t: RecordBatch) -> u64 {
    t.num_rows() as u64
}

/// How big a table the pipeline makes.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct FramesConfig {
    rows: usize,
}

impl Default for FramesConfig {
    fn default() -> Self {
        FramesConfig { rows: 100 }
    }
}

#[pipeline]
fn frames(cfg: &FramesConfig) {
    count(table(cfg.rows));
}

fn main() -> ExitCode {
    zenflow::cli::main(frames)
}
