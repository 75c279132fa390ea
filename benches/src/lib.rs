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

/// A fresh local stack in a temporary folder (kept alive by the returned guard).
pub fn fresh_stack() -> (tempfile::TempDir, zenflow::Stack) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let stack = zenflow::local_stack_at(dir.path()).expect("a local stack");
    (dir, stack)
}
