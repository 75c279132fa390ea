//! zenflow: typed ML pipelines for Rust.
//!
//! Write steps and pipelines as plain functions; `#[step]` and `#[pipeline]`
//! turn them into a typed DAG; a [`Stack`] runs it with every artifact
//! versioned and content hashed, every run recorded with lineage, and
//! unchanged steps served from cache.
//!
//! ```no_run
//! use zenflow::prelude::*;
//!
//! #[step]
//! fn load(#[param] n: u32) -> Vec<f64> {
//!     (0..n).map(f64::from).collect()
//! }
//!
//! #[step(outputs(train, test))]
//! fn split(data: Vec<f64>, #[param] test_every: usize) -> (Vec<f64>, Vec<f64>) {
//!     let (test, train): (Vec<_>, Vec<_>) = data.iter().enumerate().partition(|(i, _)| i % test_every == 0);
//!     (train.into_iter().map(|(_, x)| *x).collect(), test.into_iter().map(|(_, x)| *x).collect())
//! }
//!
//! #[step]
//! fn mean(values: Vec<f64>) -> f64 {
//!     values.iter().sum::<f64>() / values.len().max(1) as f64
//! }
//!
//! #[pipeline]
//! fn stats() {
//!     let data = load(100);
//!     let (train, _test) = split(data, 5);
//!     mean(train);
//! }
//!
//! fn main() -> zenflow::Result<()> {
//!     let stack = zenflow::local_stack()?;
//!     let run = stats.run(&stack, &())?;
//!     let m: f64 = run.output("mean", "output")?;
//!     println!("{m} ({} steps from cache)", run.cached().len());
//!     Ok(())
//! }
//! ```
//!
//! # Steps
//!
//! `#[step]` accepts sync and `async fn`s returning `T` or `Result<T, E>`
//! (any `E: Into<Box<dyn Error + Send + Sync>>`). Arguments are artifact
//! inputs (outputs of other steps), `#[param]` parameters (serde values that
//! go into the plan and the cache key), and optionally one `&StepContext`.
//! Options: `name = "..."`, `outputs(a, b)` (a tuple return as named
//! outputs), `cache = false`, `retries = N`, `retry_backoff = "200ms"`,
//! `timeout = "30s"`, `version = "..."` (bump to invalidate the cache after
//! changing code the step calls). The function stays an ordinary function.
//!
//! # Pipelines
//!
//! In a `#[pipeline]` body a step call records an invocation and returns
//! [`Artifact<T>`](struct@Artifact) handles. A call is treated as a step call when its callee is
//! a plain lowercase path (`train(...)`, `steps::train(...)`); calls of types
//! and methods (`Vec::new()`, `x.clone()`) are left alone (calls inside macro
//! arguments such as `vec![...]` are rewritten too), and a
//! `let` marked `#[plain]` is not rewritten, for ordinary helper functions.

#![warn(missing_docs)]

// The macros emit `::zenflow::...` paths; this lets the crate use them itself.
extern crate self as zenflow;

pub mod cli;
/// Behind the `conformance` feature: its fixture steps are registered in every
/// binary that includes it.
#[cfg(feature = "conformance")]
pub mod orchestrator_conformance;
pub mod report;

pub use zenflow_core::*;
pub use zenflow_macros::{pipeline, step, Artifact};
pub use zenflow_stacks::local::{local_stack, local_stack_at, project_root};

/// A runtime for blocking calls outside a stack (e.g. checking a store).
pub(crate) fn stack_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::Runtime)
}

/// Concrete stack components (stores, orchestrators).
pub mod stacks {
    pub use zenflow_stacks::*;
}

/// Everything a pipeline file needs.
pub mod prelude {
    pub use crate::{pipeline, step, Artifact, Pipeline, StepContext};
}

#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use zenflow_core::__private::*;

    /// Compile-time check that a pipeline's configuration type is usable.
    pub const fn assert_config<T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static>() {}
}
