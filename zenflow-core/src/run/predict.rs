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
pub enum Prediction {
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

impl std::fmt::Display for Prediction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Prediction::Cached { .. } => "cached",
            Prediction::Run(RunReason::NewInput) => "run (an input will be new)",
            Prediction::Run(RunReason::CacheOff) => "run (cache off)",
            Prediction::Run(RunReason::NoCachedResult) => "run (no cached result)",
            Prediction::Run(RunReason::ArtifactsGone) => "run (cached artifacts are gone)",
            Prediction::Run(RunReason::ArtifactCorrupted) => "run (a cached artifact is damaged)",
            Prediction::Run(RunReason::Expired) => "run (cached result expired)",
        })
    }
}

/// Predicts, step by step in plan order, what a run of `plan` on `stack`
/// would serve from cache: the cache key the runner would compute from the
/// inputs' content hashes (model inputs resolved as the registry stands
/// now), looked up as the runner looks it up.
pub async fn predict(stack: &Stack, plan: &Plan, no_cache: bool) -> Result<Vec<Prediction>> {
    let registry = stack.metadata().registry();
    let mut known: HashMap<(String, String), ContentHash> = HashMap::new();
    let mut out = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let mut hashes: Option<Vec<Vec<ContentHash>>> = Some(Vec::new());
        for input in &step.inputs {
            let part = match &input.model {
                Some(m) => match registry {
                    Some(r) => match r.resolve(&m.model, &m.alias).await {
                        Ok(Some(v)) => Some(vec![v.content_hash]),
                        Ok(None) | Err(crate::registry::RegistryError::UnknownModel { .. }) => Some(Vec::new()),
                        Err(e) => return Err(e.into()),
                    },
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
            None => Prediction::Run(RunReason::NewInput),
            Some(_) if no_cache || !step.options.cache => Prediction::Run(RunReason::CacheOff),
            Some(hashes) => {
                match look_up(stack, &cache_key(step, &hashes).to_hex(), step.options.cache_ttl_ms).await? {
                    Lookup::Miss => Prediction::Run(RunReason::NoCachedResult),
                    Lookup::Gone(_) => Prediction::Run(RunReason::ArtifactsGone),
                    Lookup::Corrupted { .. } => Prediction::Run(RunReason::ArtifactCorrupted),
                    Lookup::Expired { .. } => Prediction::Run(RunReason::Expired),
                    Lookup::Hit(hit) => {
                        for o in &hit.outputs {
                            known.insert((step.id.clone(), o.output.clone()), o.artifact.content_hash);
                        }
                        Prediction::Cached { step_run: hit.step_run }
                    }
                }
            }
        };
        out.push(prediction);
    }
    Ok(out)
}
