//! What a run of a plan would serve from cache, predicted before it runs
//! (`run --dry-run`).

use crate::error::Result;
use crate::metadata::ArtifactVersion;
use crate::plan::{OutputRef, Plan};
use crate::run::step::cache::{look_up, Lookup};
use crate::run::step::inputs::{resolve, Upstream};
use crate::stack::Stack;
use std::collections::HashMap;

/// What a run would do with a step, predicted before it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forecast {
    /// Served from cache, by this step run.
    Cached {
        /// The step run whose outputs it would reuse.
        step_run: String,
    },
    /// Executed, and why.
    Run(RunReason),
}

/// Why a step would execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunReason {
    /// An input comes from a step that will execute, so its bytes are not
    /// known yet.
    NewInput,
    /// The cache is off for the step or the run.
    CacheOff,
    /// No earlier step run has its cache key.
    NoCachedResult,
    /// The cached result's artifacts are gone from the store.
    ArtifactsGone,
    /// A cached result's artifact is damaged in the store.
    ArtifactCorrupted,
    /// The cached result is older than the step's time to live.
    Expired,
}

impl std::fmt::Display for Forecast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Forecast::Cached { .. } => "cached",
            Forecast::Run(RunReason::NewInput) => "run (an input will be new)",
            Forecast::Run(RunReason::CacheOff) => "run (cache off)",
            Forecast::Run(RunReason::NoCachedResult) => "run (no cached result)",
            Forecast::Run(RunReason::ArtifactsGone) => "run (cached artifacts are gone)",
            Forecast::Run(RunReason::ArtifactCorrupted) => "run (a cached artifact is damaged)",
            Forecast::Run(RunReason::Expired) => "run (cached result expired)",
        })
    }
}

/// Predicts, step by step in plan order, what a run of `plan` on `stack`
/// would serve from cache: its inputs resolved as the runner resolves them
/// (model inputs as the registry stands now, upstream outputs as predicted
/// from cache), and the cache key looked up as the runner looks it up.
pub async fn predict(stack: &Stack, plan: &Plan, no_cache: bool) -> Result<Vec<Forecast>> {
    let mut cached = Predicted::default();
    let mut out = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let prediction = match resolve(stack, step, &mut cached).await? {
            Err(_) => Forecast::Run(RunReason::NewInput),
            Ok(_) if no_cache || !step.options.cache => Forecast::Run(RunReason::CacheOff),
            Ok(resolved) => {
                match look_up(stack, &resolved.cache_key(step).to_hex(), step.options.cache_ttl_ms).await? {
                    Lookup::Miss => Forecast::Run(RunReason::NoCachedResult),
                    Lookup::Gone(_) => Forecast::Run(RunReason::ArtifactsGone),
                    Lookup::Corrupted { .. } => Forecast::Run(RunReason::ArtifactCorrupted),
                    Lookup::Expired { .. } => Forecast::Run(RunReason::Expired),
                    Lookup::Hit(hit) => {
                        for o in hit.outputs {
                            cached.0.insert((step.id.clone(), o.output), o.artifact);
                        }
                        Forecast::Cached { step_run: hit.step_run }
                    }
                }
            }
        };
        out.push(prediction);
    }
    Ok(out)
}

/// The outputs of the steps predicted to come from cache, by step and output:
/// the only upstream outputs known before a run.
#[derive(Default)]
struct Predicted(HashMap<(String, String), ArtifactVersion>);

impl Upstream for Predicted {
    async fn output(&mut self, from: &OutputRef) -> Result<Option<ArtifactVersion>> {
        Ok(self.0.get(&(from.step.clone(), from.output.clone())).cloned())
    }
}
