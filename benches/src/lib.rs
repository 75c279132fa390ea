//! Pipelines shared by the criterion benches (and, later, the workload runner
//! of `BENCHMARKS.md`).

use zenflow::prelude::*;

/// The first step of a chain.
#[step]
pub fn start(#[param] value: i64) -> i64 {
    value
}

/// A trivial step: `x -> x + 1`.
#[step]
pub fn inc(x: i64) -> i64 {
    x + 1
}

/// A chain of `n` trivial steps (`start` then `n - 1` times `inc`).
#[pipeline]
pub fn chain(n: &usize) {
    let mut x = start(0);
    for _ in 1..*n {
        x = inc(x);
    }
}

/// The first step of a fan-out.
#[step]
pub fn source(#[param] value: i64) -> i64 {
    value
}

/// One branch of a fan-out: `x * i`.
#[step]
pub fn times(x: i64, #[param] i: i64) -> i64 {
    x * i
}

/// The fan-in: the sum of all branches.
#[step]
pub fn total(parts: Vec<i64>) -> i64 {
    parts.iter().sum()
}

/// W2: one source, 32 independent steps, one sum (34 steps).
#[pipeline]
pub fn fan(width: &i64) {
    let s = source(3);
    let parts: Vec<_> = (0..*width).map(|i| times(s, i)).collect();
    total(parts);
}

/// W3's producer: `n` f32 values (an `.npy` artifact).
#[step]
pub fn make_array(#[param] n: usize) -> ndarray::Array1<f32> {
    ndarray::Array1::from_shape_fn(n, |i| (i % 1024) as f32)
}

/// W3's consumer: the sum.
#[step]
pub fn array_sum(a: ndarray::Array1<f32>) -> f64 {
    a.iter().map(|&x| f64::from(x)).sum()
}

/// W3: 100 MiB of f32 written as an artifact and read back.
#[pipeline]
pub fn bytes(n: &usize) {
    let a = make_array(*n);
    array_sum(a);
}

/// W5: a one-step pipeline.
#[pipeline]
pub fn one_step() {
    start(1);
}

/// A fresh local stack in a temporary folder (kept alive by the returned guard).
pub fn fresh_stack() -> (tempfile::TempDir, zenflow::Stack) {
    fresh_stack_with(zenflow::stacks::Durability::Full)
}

/// [`fresh_stack`] with a chosen durability of its stores.
pub fn fresh_stack_with(durability: zenflow::stacks::Durability) -> (tempfile::TempDir, zenflow::Stack) {
    use std::sync::Arc;
    use zenflow::stacks::{metadata::Synchronous, LocalOrchestrator, ObjectArtifactStore, SqliteMetadataStore};
    let dir = tempfile::tempdir().expect("a temporary folder");
    let state = dir.path().join(".zenflow");
    let sync = match durability {
        zenflow::stacks::Durability::Full => Synchronous::Full,
        zenflow::stacks::Durability::Relaxed => Synchronous::Normal,
    };
    let stack = zenflow::Stack::new(
        "local",
        Arc::new(LocalOrchestrator::default()),
        Arc::new(ObjectArtifactStore::local_with(state.join("artifacts"), durability).expect("artifact store")),
        Arc::new(SqliteMetadataStore::open_with(state.join("zenflow.db"), sync).expect("metadata store")),
    )
    .with_project_root(dir.path());
    (dir, stack)
}
