//! Pipelines: the trait `#[pipeline]` implements, what a body returns, and
//! the ways to run one.

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::materializer::Materialize;
use crate::plan::{OutputRef, Plan, PlanError};
use crate::run::options::RunOptions;
use crate::run::{execute_plan, RunFailed, RunResult};
use crate::stack::Stack;
use serde::{de::DeserializeOwned, Serialize};

/// A pipeline: a body that wires step invocations together.
///
/// `#[pipeline]` turns a function into a unit struct implementing this trait;
/// the function's optional `&Config` argument becomes [`Pipeline::Config`]
/// and what it returns [`Pipeline::Output`].
pub trait Pipeline: Send + Sync + 'static {
    /// The configuration the body reads (`()` when it takes none).
    type Config: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// What the body returns: `()`, a [`Handle`], a tuple of handles, a
    /// `Vec` of them, or a struct of them with `#[derive(Outputs)]`; a run's
    /// [`RunResult::output`] gives back their values.
    type Output: Outputs;

    /// The pipeline's name.
    fn name(&self) -> &'static str;

    /// Runs the body in build mode. [`Pipeline::plan`] calls it after installing the
    /// builder that step calls record into; calling it directly panics at the
    /// first step call.
    fn build(&self, config: &Self::Config) -> Self::Output;

    /// Compiles the plan for `config`.
    fn plan(&self, config: &Self::Config) -> Result<Plan> {
        Ok(compile(self, config)?.0)
    }

    /// Runs the pipeline on `stack` and waits for it. A run in which a step
    /// failed is an error ([`Error::RunFailed`]) that still holds the result.
    fn run(&self, stack: &Stack, config: &Self::Config) -> Result<RunResult<Self::Output>> {
        self.run_with(stack, config, RunOptions::default())
    }

    /// [`Pipeline::run`] with per-run options.
    fn run_with(&self, stack: &Stack, config: &Self::Config, options: RunOptions) -> Result<RunResult<Self::Output>> {
        let (plan, nodes) = compile(self, config)?;
        let result = stack.block_on(run_plan(stack, plan, options))?;
        Ok(result.typed(nodes))
    }

    /// Async form of [`Pipeline::run_with`].
    fn run_async(
        &self,
        stack: &Stack,
        config: &Self::Config,
        options: RunOptions,
    ) -> impl std::future::Future<Output = Result<RunResult<Self::Output>>> + Send {
        let compiled = compile(self, config);
        let stack = stack.clone();
        async move {
            let (plan, nodes) = compiled?;
            Ok(run_plan(&stack, plan, options).await?.typed(nodes))
        }
    }

    /// A past run of this pipeline, as [`find_run`](crate::run::find_run)
    /// finds it (a name, an id or its start, `latest`, `latest:PREFIX`):
    /// the same typed result a fresh run gives.
    fn reopen(&self, stack: &Stack, id_or_name: &str) -> Result<RunResult<Self::Output>> {
        let run = stack.find_run(Some(self.name()), id_or_name)?;
        if run.pipeline != self.name() {
            return Err(Error::usage(format!(
                "run `{}` is a run of pipeline `{}`, not `{}`",
                run.name,
                run.pipeline,
                self.name()
            )));
        }
        Ok(stack.block_on(RunResult::load(stack, run))?.typed(Vec::new()))
    }
}

/// Runs the body of `pipeline` in build mode and compiles it into a plan,
/// with the invocation id of each node of the build.
fn compile<P: Pipeline + ?Sized>(pipeline: &P, config: &P::Config) -> Result<(Plan, Vec<String>)> {
    let name = pipeline.name();
    let config_json = serde_json::to_value(config)
        .map_err(|e| PlanError::Config { pipeline: name.to_string(), message: e.to_string() })?;
    Ok(crate::plan::compile::compile(name, config_json, || pipeline.build(config).handles())?)
}

async fn run_plan(stack: &Stack, plan: Plan, options: RunOptions) -> Result<RunResult> {
    let result = execute_plan(stack, plan, options).await?;
    if result.is_success() {
        Ok(result)
    } else {
        Err(Error::RunFailed(RunFailed(Box::new(result))))
    }
}

impl<O: Outputs> RunResult<O> {
    /// The values of what the pipeline's body returned (loaded from the
    /// artifact store, verified).
    ///
    /// ```text
    /// #[pipeline]
    /// fn training(cfg: &Config) -> Handle<Selection> { ... }
    /// let best: Selection = training.run(&stack, &cfg)?.output()?;
    /// ```
    pub fn output(&self) -> Result<O::Values> {
        O::load(self, &mut self.plan().outputs.iter())
    }
}

/// What a pipeline's body can return: handles whose values a run gives back
/// typed ([`RunResult::output`]).
///
/// Implemented for `()`, [`Handle<T>`], tuples of up to four handles,
/// `Vec<Handle<T>>`, and structs of handles with `#[derive(Outputs)]`.
pub trait Outputs: Send + Sync + 'static {
    /// The values of the handles, once a run has produced them.
    type Values;

    /// The builder positions of the handles, in order.
    #[doc(hidden)]
    fn handles(&self) -> Vec<(usize, usize)>;

    /// Loads the values from a run, given the plan's outputs in the order
    /// [`Outputs::handles`] gave them.
    #[doc(hidden)]
    fn load<O>(run: &RunResult<O>, refs: &mut std::slice::Iter<'_, OutputRef>) -> Result<Self::Values>;
}

/// The next of a plan's outputs, or the error that says there are fewer
/// than the pipeline's type has.
#[doc(hidden)]
pub fn next_output<'a>(refs: &mut std::slice::Iter<'a, OutputRef>, pipeline: &str) -> Result<&'a OutputRef> {
    refs.next().ok_or_else(|| {
        Error::usage(format!(
            "the plan of this run of `{pipeline}` records fewer outputs than the pipeline returns; it was \
             planned by another build: read its outputs with `run.artifact(step, output)`"
        ))
    })
}

impl Outputs for () {
    type Values = ();

    fn handles(&self) -> Vec<(usize, usize)> {
        Vec::new()
    }

    fn load<O>(_run: &RunResult<O>, _refs: &mut std::slice::Iter<'_, OutputRef>) -> Result<()> {
        Ok(())
    }
}

impl<T: Materialize + Send + Sync> Outputs for Handle<T> {
    type Values = T;

    fn handles(&self) -> Vec<(usize, usize)> {
        vec![self.__position()]
    }

    fn load<O>(run: &RunResult<O>, refs: &mut std::slice::Iter<'_, OutputRef>) -> Result<T> {
        let r = next_output(refs, &run.plan().pipeline)?;
        run.artifact(&r.step, &r.output)
    }
}

impl<T: Materialize + Send + Sync> Outputs for Vec<Handle<T>> {
    type Values = Vec<T>;

    fn handles(&self) -> Vec<(usize, usize)> {
        self.iter().map(Handle::__position).collect()
    }

    /// Every remaining output (a `Vec` of handles is the last or only output).
    fn load<O>(run: &RunResult<O>, refs: &mut std::slice::Iter<'_, OutputRef>) -> Result<Vec<T>> {
        refs.map(|r| run.artifact(&r.step, &r.output)).collect()
    }
}

macro_rules! tuple_outputs {
    ($($t:ident),+) => {
        impl<$($t: Outputs),+> Outputs for ($($t,)+) {
            type Values = ($($t::Values,)+);

            #[allow(non_snake_case)]
            fn handles(&self) -> Vec<(usize, usize)> {
                let ($($t,)+) = self;
                let mut all = Vec::new();
                $(all.extend($t.handles());)+
                all
            }

            fn load<O>(run: &RunResult<O>, refs: &mut std::slice::Iter<'_, OutputRef>) -> Result<Self::Values> {
                Ok(($($t::load(run, refs)?,)+))
            }
        }
    };
}

tuple_outputs!(A);
tuple_outputs!(A, B);
tuple_outputs!(A, B, C);
tuple_outputs!(A, B, C, D);
