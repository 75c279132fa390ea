//! The core of zenflow: plans, the step runner, materializers, cache keys and
//! the traits every stack component implements.
//!
//! Most users depend on the `zenflow` crate, which re-exports this one together
//! with the macros and the built-in stacks.
//!
//! # Layout
//!
//! Modules stand in layers, and a module uses only the layers below its
//! own: `.ci/module_graph.py` checks it in CI, with every file a module.
//!
//! 1. **Values**: `hash`, `time`, `redact`, `git`, `check`, `appraisal`,
//!    `logs`, `panic`.
//! 2. **Records and contracts**: `materializer`, `metadata::record` and
//!    `metadata::error` (what a store keeps), `registry`, `artifact_store`,
//!    `step::options` and `step::code` (what a step declares), `plan`,
//!    `metadata` (the store trait), `stack::stores` (a stack's stores and
//!    settings, its runtime), `context` (what a step sees while it runs),
//!    `step` (a step and its call).
//! 3. **Building plans**: `plan::builder`, `handle`, `plan::compile`,
//!    `cache` (keys), `why`.
//! 4. **Errors**: `error`, the union of each layer's own error type; it
//!    holds a failed run's [`run::result`].
//! 5. **Runs and stacks**, mostly in `run/`, read top to bottom:
//!    `run::options`, `run::result`, `run::liveness` (heartbeat, run
//!    lock), `run::step` (the step runner: `inputs`, `cache`, `execute`
//!    with retries and timeouts, `outputs`, `register`), `orchestrator`
//!    (the trait engines implement), `stack` (an orchestrator and its
//!    stores), `run::read` (a run read back), `run::outcome` (step and run
//!    states, closing a run: the one place that maps statuses),
//!    `run::predict`, `run::start` (names, the plan, the lock, driving a
//!    run), `run::entrypoint` (a step in a process of its own:
//!    [`run::entrypoint::Request::to_args`] and `from_args` are its one
//!    spelling).
//! 6. **Pipelines**: `pipeline`, the trait `#[pipeline]` implements, which
//!    compiles a body into a plan and runs it.
//!
//! Conformance suites (`conformance`) test implementations of the layer-2
//! and layer-4 traits; they use nothing above the trait they test.

#![warn(missing_docs)]

pub mod appraisal;
pub mod artifact_store;
pub mod cache;
pub mod check;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod context;
pub mod error;
pub mod gc;
#[doc(hidden)]
pub mod git;
pub mod handle;
pub mod hash;
pub mod logs;
pub mod materializer;
pub mod metadata;
pub mod orchestrator;
pub mod panic;
pub mod pipeline;
pub mod plan;
pub mod redact;
pub mod registry;
pub mod run;
pub mod stack;
pub mod step;
#[doc(hidden)]
pub mod time;
pub mod why;

pub use artifact_store::ArtifactStore;
pub use check::{Check, CheckStatus, Direction};
pub use context::StepContext;
pub use error::{BoxError, Error, Result};
pub use handle::{model_alias, Handle, IntoInput, Invocation, ModelAlias, Upstream};
pub use hash::ContentHash;
pub use materializer::{Materialize, Materializer};
pub use metadata::{MetadataStore, RunStatus, StepStatus};
pub use orchestrator::Orchestrator;
pub use pipeline::{Outputs, Pipeline};
pub use plan::Plan;
pub use registry::ModelRegistry;
pub use run::{RunOptions, RunResult, StepRunner};
pub use stack::Stack;
pub use step::{Step, StepSpec};

/// Items used by the code `#[step]` and `#[pipeline]` generate. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::materializer::EncodedValue;
    pub use crate::plan::builder::record;
    pub use crate::plan::builder::InputBinding;
    pub use crate::step::{
        encode_output, parse_size, run_blocking, user_result, ExecuteFn, IoSpec, ParamSpec, Resources, StepCall,
        StepCode, StepError, StepOptions, StepRegistration,
    };
    pub use futures::future::BoxFuture;
    pub use inventory;
    pub use serde_json;

    /// Serialises a parameter for the plan; the error is reported by `compile`.
    /// The value must survive JSON unchanged (NaN and infinities do not:
    /// JSON turns them into `null`), or two different values would share one
    /// cache key.
    pub fn param_value<T: serde::Serialize + serde::de::DeserializeOwned>(
        value: &T,
    ) -> Result<serde_json::Value, String> {
        let json = crate::cache::canonical(serde_json::to_value(value).map_err(|e| e.to_string())?);
        let back = T::deserialize(&json).map_err(|e| {
            format!("it does not read back from JSON ({e}); NaN and infinite floats become null in JSON")
        })?;
        let same = rmp_serde::to_vec(value).ok() == rmp_serde::to_vec(&back).ok();
        if !same {
            return Err("it changes when written as JSON (NaN and infinite floats become null); \
                        use finite numbers or an Option"
                .into());
        }
        Ok(json)
    }

    /// Compile-time check that `T` can be a parameter (points at the user's type).
    pub const fn assert_param<T: crate::step::Param>() {}

    /// Compile-time check that `T` can be an artifact (points at the user's type).
    pub const fn assert_artifact<T: crate::materializer::Materialize>() {}
}
