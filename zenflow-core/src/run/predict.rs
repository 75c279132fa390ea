//! What a run of a plan would serve from cache, predicted before it runs
//! (`run --dry-run`).

use crate::cache::cache_key;
use crate::error::Result;
use crate::hash::ContentHash;
use crate::plan::Plan;
use crate::run::step::cache::{look_up, Lookup};
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
/// would serve from cache: the cache key the runner would compute from the
/// inputs' content hashes (model inputs resolved as the registry stands
/// now), looked up as the runner looks it up.
pub async fn predict(stack: &Stack, plan: &Plan, no_cache: bool) -> Result<Vec<Forecast>> {
    let registry = stack.metadata().registry();
    let mut known: HashMap<(String, String), ContentHash> = HashMap::new();
    let mut out = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let mut hashes: Option<Vec<Vec<ContentHash>>> = Some(Vec::new());
        for input in &step.inputs {
            let part = match &input.model {
                Some(m) => match registry {
                    Some(r) => Some(
                        crate::registry::holder(r, &m.model, &m.alias)
                            .await?
                            .map(|v| v.content_hash)
                            .into_iter()
                            .collect(),
                    ),
                    None => Some(Vec::new()),
                },
                None => input.from.iter().map(|r| known.get(&(r.step.clone(), r.output.clone())).copied()).collect(),
            };
            match (part, hashes.as_mut()) {
                (Some(p), Some(h)) => h.push(p),
                _ => hashes = None,
            }
        }
        let prediction = match hashes {
            None => Forecast::Run(RunReason::NewInput),
            Some(_) if no_cache || !step.options.cache => Forecast::Run(RunReason::CacheOff),
            Some(hashes) => {
                match look_up(stack, &cache_key(step, &hashes).to_hex(), step.options.cache_ttl_ms).await? {
                    Lookup::Miss => Forecast::Run(RunReason::NoCachedResult),
                    Lookup::Gone(_) => Forecast::Run(RunReason::ArtifactsGone),
                    Lookup::Corrupted { .. } => Forecast::Run(RunReason::ArtifactCorrupted),
                    Lookup::Expired { .. } => Forecast::Run(RunReason::Expired),
                    Lookup::Hit(hit) => {
                        for o in &hit.outputs {
                            known.insert((step.id.clone(), o.output.clone()), o.artifact.content_hash);
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
