//! zenflow: typed ML pipelines for Rust.
//!
//! Write steps and pipelines as plain functions; `#[step]` and `#[pipeline]`
//! turn them into a typed DAG; a [`Stack`] runs it with every artifact
//! versioned and content hashed, every run recorded with lineage, and
//! unchanged steps served from cache.
//!
//! ```
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
//! fn stats() -> Handle<f64> {
//!     let data = load(100);
//!     let (train, _test) = split(data, 5);
//!     mean(train)
//! }
//!
//! fn main() -> zenflow::Result<()> {
//!     let stack = zenflow::memory_stack(2)?; // `zenflow::local_stack()?` keeps it in `.zenflow/`
//!     let run = stats.run(&stack, &())?;
//!     assert_eq!(run.output()?, 50.0); // the mean of the 80 training values
//!     assert_eq!(stats.run(&stack, &())?.cached().len(), 3, "the second run comes from cache");
//!     Ok(())
//! }
//! ```
//!
//! The guides in [`docs`]: [steps](docs::steps), [pipelines](docs::pipelines)
//! (handles, fan-out, typed outputs, invocation ids, helper calls),
//! [stacks and runs](docs::stacks) (caching, shared stacks, durability),
//! [the model registry](docs::registry), [serving](docs::serving), and [the pipeline binary](docs::cli)
//! (its commands, run configuration, exit codes and CI reports). Testing
//! helpers are in `zenflow::testing` (feature `testing`).
//!
//! The root holds what a pipeline author uses; [`ext`] holds the extension
//! points (the traits a new orchestrator, store, registry or materializer
//! implements), and `zenflow::conformance` (feature `conformance`) the
//! suites that check an implementation.
//!
//! # Features
//!
//! - `cli` (default): [`cli::main`], the command line of pipeline binaries,
//!   with clap, a progress display, the GitHub client and log output; it
//!   turns on `log-capture`.
//! - `serve` (default): [`serve`], an Open Inference Protocol model server
//!   (the `serve` command), and [`deploy`], its deployer (`models deploy`).
//! - `log-capture`: [`logs`], the `tracing` layer that keeps what steps log.
//! - `testing`: `zenflow::testing`, throwaway stacks and run assertions.
//! - `postgres`, `s3`: the shared-stack backends.
//! - `ndarray`: `ndarray::Array` artifacts as `.npy` files.
//! - `conformance`: `zenflow::conformance`, the conformance suites of the
//!   store, registry and orchestrator traits.

#![warn(missing_docs)]

// The macros emit `::zenflow::...` paths; this lets the crate use them itself.
extern crate self as zenflow;

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "serve")]
pub mod deploy;
#[cfg(feature = "log-capture")]
pub mod logs;
pub mod report;
#[cfg(feature = "config-files")]
pub mod run_config;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "testing")]
pub mod testing;

pub use zenflow_core::metadata::{RunStatus, StepStatus};
pub use zenflow_core::pipeline::Outputs;
pub use zenflow_core::{
    appraisal, artifact_store, cache, check, gc, materializer, orchestrator, plan, redact, registry, stack, step, why,
};
pub use zenflow_core::{
    model_alias, BoxError, Check, CheckStatus, ContentHash, Direction, Error, Handle, IntoInput, Invocation,
    Materialize, ModelAlias, Pipeline, Plan, Result, RunOptions, RunResult, Stack, Step, StepContext, StepSpec,
    Upstream,
};

/// Extension points: the traits a new orchestrator, store, registry or
/// materializer implements, and what zenflow hands it. Each trait has a
/// conformance suite in `zenflow::conformance` (feature `conformance`).
pub mod ext {
    pub use zenflow_core::run::{Observer, RunEvent, StepResult, StepRunner};
    pub use zenflow_core::stack::Stores;
    pub use zenflow_core::{ArtifactStore, Materializer, MetadataStore, ModelRegistry, Orchestrator};
    pub use zenflow_stacks::orchestrator::external::{Attempt, AttemptEnd, Ended, ExternalOrchestrator, Launcher};
}
pub use zenflow_macros::{pipeline, plain, step, Artifact, Outputs};
pub use zenflow_stacks::local::{local_stack, local_stack_at, memory_stack, project_root};

/// Records of the metadata store: runs, step runs, artifact versions,
/// lineage, and the trait stores implement.
pub mod metadata {
    pub use zenflow_core::metadata::{
        ArtifactVersion, CacheHit, Deletion, InputLink, Lineage, MetadataError, MetadataStore, NewArtifact, NewRun,
        OutputLink, RunRecord, RunStatus, StepRunRecord, StepRunWrite, StepStatus, Timestamp, DEAD_STEP_ERROR,
        HEARTBEAT_INTERVAL, STALE_AFTER,
    };
}

pub use zenflow_core::run;

/// Guides, with examples that are compiled and run as tests.
pub mod docs {
    #[doc = include_str!("docs/steps.md")]
    pub mod steps {}
    #[doc = include_str!("docs/pipelines.md")]
    pub mod pipelines {}
    #[doc = include_str!("docs/stacks.md")]
    pub mod stacks {}
    #[doc = include_str!("docs/caching.md")]
    pub mod caching {}
    #[doc = include_str!("docs/registry.md")]
    pub mod registry {}
    #[cfg(feature = "serve")]
    #[doc = include_str!("docs/serving.md")]
    pub mod serving {}
    #[doc = include_str!("docs/cli.md")]
    pub mod cli {}
}

/// The README's examples, compiled (and run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// Concrete stack components (stores, orchestrators).
pub mod stacks {
    pub use zenflow_stacks::*;
}

/// Everything a pipeline file needs.
pub mod prelude {
    pub use crate::{
        pipeline, plain, step, Artifact, BoxError, Check, CheckStatus, Direction, Handle, Outputs, Pipeline, Result,
        StepContext, StepStatus,
    };
}

#[doc(hidden)]
pub use zenflow_core::__serde_materialize_body;

#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use zenflow_core::__private::*;

    /// Compile-time check that a pipeline's configuration type is usable.
    pub const fn assert_config<T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static>() {}
}
