//! Pipelines: the trait `#[pipeline]` implements, and the ways to run one.

use crate::error::{Error, Result};
use crate::plan::{compile, Plan};
use crate::run::{execute_plan, RunFailed, RunResult};
use crate::runner::RunOptions;
use crate::stack::Stack;
use serde::{de::DeserializeOwned, Serialize};

/// A pipeline: a body that wires step invocations together.
///
/// `#[pipeline]` turns a function into a unit struct implementing this trait;
/// the function's optional `&Config` argument becomes [`Pipeline::Config`].
pub trait Pipeline: Send + Sync + 'static {
    /// The configuration the body reads (`()` when it takes none).
    type Config: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The pipeline's name.
    fn name(&self) -> &'static str;

    /// Runs the body in build mode. Called by [`compile`], which installs the
    /// builder that step calls record into; calling it directly panics at the
    /// first step call.
    fn build(&self, config: &Self::Config);

    /// Compiles the plan for `config`.
    fn plan(&self, config: &Self::Config) -> Result<Plan> {
        Ok(compile(self, config)?)
    }

    /// Runs the pipeline on `stack` and waits for it. A run in which a step
    /// failed is an error ([`Error::RunFailed`]) that still holds the result.
    fn run(&self, stack: &Stack, config: &Self::Config) -> Result<RunResult> {
        self.run_with(stack, config, RunOptions::default())
    }

    /// [`Pipeline::run`] with per-run options.
    fn run_with(&self, stack: &Stack, config: &Self::Config, options: RunOptions) -> Result<RunResult> {
        let plan = self.plan(config)?;
        stack.block_on(run_plan(stack, plan, options))?
    }

    /// Async form of [`Pipeline::run_with`].
    fn run_async(
        &self,
        stack: &Stack,
        config: &Self::Config,
        options: RunOptions,
    ) -> impl std::future::Future<Output = Result<RunResult>> + Send {
        let plan = self.plan(config);
        let stack = stack.clone();
        async move { run_plan(&stack, plan?, options).await }
    }
}

async fn run_plan(stack: &Stack, plan: Plan, options: RunOptions) -> Result<RunResult> {
    let result = execute_plan(stack, plan, options).await?;
    if result.is_success() {
        Ok(result)
    } else {
        Err(Error::RunFailed(RunFailed(Box::new(result))))
    }
}
