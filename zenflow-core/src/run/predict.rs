//! What a run of a plan would serve from cache, predicted before it runs
//! (`run --dry-run`).

use crate::error::Result;
use crate::metadata::{ArtifactVersion, OutputLink};
use crate::plan::{OutputRef, Plan, PlanStep};
use crate::run::step::cache::{look_up, Lookup};
use crate::run::step::inputs::{fails_the_step, resolve, Upstream};
use crate::stack::Stack;
use std::collections::HashMap;

/// What a run would do with a step, predicted before it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forecast {
    /// Served from cache, by this step run.
    Cached {
        /// The step run whose outputs it would reuse.
        step_run: String,
        /// The steps upstream with the cache off (they always run) whose
        /// output this assumes to be what it was in their last run with
        /// the same inputs; empty: no assumption.
        assuming: Vec<String>,
    },
    /// Executed, and why.
    Run(RunReason),
    /// Failed before it starts, as the run would fail it (a model input the
    /// registry cannot resolve), with the error.
    Fails(String),
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
        match self {
            Forecast::Cached { assuming, .. } if assuming.is_empty() => f.write_str("cached"),
            Forecast::Cached { assuming, .. } => {
                let steps: Vec<String> = assuming.iter().map(|s| format!("`{s}`")).collect();
                let (verb, pronoun) = if steps.len() == 1 { ("outputs", "it") } else { ("output", "they") };
                write!(f, "cached if {} {verb} what {pronoun} did last time", steps.join(", "))
            }
            Forecast::Fails(error) => write!(f, "fails: {error}"),
            Forecast::Run(reason) => f.write_str(match reason {
                RunReason::NewInput => "run (an input will be new)",
                RunReason::CacheOff => "run (cache off)",
                RunReason::NoCachedResult => "run (no cached result)",
                RunReason::ArtifactsGone => "run (cached artifacts are gone)",
                RunReason::ArtifactCorrupted => "run (a cached artifact is damaged)",
                RunReason::Expired => "run (cached result expired)",
            }),
        }
    }
}

/// Predicts, step by step in plan order, what a run of `plan` on `stack`
/// would serve from cache: its inputs resolved as the runner resolves them
/// (model inputs as the registry stands now, upstream outputs as predicted),
/// and the cache key looked up as the runner looks it up. A step with the
/// cache off always runs, so its output is known only then: it is predicted
/// to be what the step gave in its last run with the same inputs, and what
/// is cached downstream of it says so ([`Forecast::Cached::assuming`]).
pub async fn predict(stack: &Stack, plan: &Plan, no_cache: bool) -> Result<Vec<Forecast>> {
    let mut known = Predicted::default();
    let mut out = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let resolved = match resolve(stack, step, &mut known).await {
            Ok(Ok(resolved)) => resolved,
            Ok(Err(_)) => {
                out.push(Forecast::Run(RunReason::NewInput));
                continue;
            }
            Err(e) if fails_the_step(&e) => {
                out.push(Forecast::Fails(e.to_string()));
                continue;
            }
            Err(e) => return Err(e),
        };
        let key = resolved.cache_key(step).to_hex();
        let assuming = known.assumed_by(step);
        let forecast = if no_cache {
            Forecast::Run(RunReason::CacheOff)
        } else if !step.options.cache {
            if let Lookup::Hit(hit) = look_up(stack, &key, None).await? {
                let assuming = [assuming, vec![step.id.clone()]].concat();
                known.remember(&step.id, hit.outputs, assuming);
            }
            Forecast::Run(RunReason::CacheOff)
        } else {
            match look_up(stack, &key, step.options.cache_ttl_ms).await? {
                Lookup::Miss => Forecast::Run(RunReason::NoCachedResult),
                Lookup::Gone(_) => Forecast::Run(RunReason::ArtifactsGone),
                Lookup::Corrupted { .. } => Forecast::Run(RunReason::ArtifactCorrupted),
                Lookup::Expired { .. } => Forecast::Run(RunReason::Expired),
                Lookup::Hit(hit) => {
                    known.remember(&step.id, hit.outputs, assuming.clone());
                    Forecast::Cached { step_run: hit.step_run, assuming }
                }
            }
        };
        out.push(forecast);
    }
    Ok(out)
}

/// The outputs known before a run, by step and output: those of the steps
/// predicted to come from cache, and the last outputs of steps with the
/// cache off; with the cache-off steps each depends on.
#[derive(Default)]
struct Predicted {
    outputs: HashMap<(String, String), ArtifactVersion>,
    /// By step: the cache-off steps upstream whose last output its
    /// outputs assume.
    assuming: HashMap<String, Vec<String>>,
}

impl Predicted {
    fn remember(&mut self, step: &str, outputs: Vec<OutputLink>, assuming: Vec<String>) {
        for o in outputs {
            self.outputs.insert((step.to_string(), o.output), o.artifact);
        }
        self.assuming.insert(step.to_string(), assuming);
    }

    /// The cache-off steps whose last output `step`'s inputs assume, in plan order of first mention.
    fn assumed_by(&self, step: &PlanStep) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for from in step.inputs.iter().flat_map(|i| &i.from) {
            for s in self.assuming.get(&from.step).into_iter().flatten() {
                if !all.contains(s) {
                    all.push(s.clone());
                }
            }
        }
        all
    }
}

impl Upstream for Predicted {
    async fn output(&mut self, from: &OutputRef) -> Result<Option<ArtifactVersion>> {
        Ok(self.outputs.get(&(from.step.clone(), from.output.clone())).cloned())
    }
}
