//! The plan: a serialisable, stable description of one pipeline run.
//!
//! [`Pipeline::plan`](crate::pipeline::Pipeline::plan) runs a pipeline body
//! once in build mode and turns the recorded invocations into a [`Plan`]: steps in a deterministic topological order,
//! each with its invocation id, parameters, input edges, ordering edges,
//! outputs (with materializers), code hash and options. The JSON form is
//! stable (keys sorted, steps in plan order) so it can be snapshot-tested,
//! stored with a run and handed to another process.

pub(crate) mod builder;
pub(crate) mod compile;
mod pairs;

pub use pairs::Pairs;

use crate::hash::{ContentHash, FieldHasher};
use crate::step::options::StepOptions;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Version of the plan's JSON layout.
pub const PLAN_FORMAT: u32 = 1;

/// A compiled pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Layout version ([`PLAN_FORMAT`]).
    pub format: u32,
    /// Pipeline name.
    pub pipeline: String,
    /// The pipeline's configuration value.
    pub config: serde_json::Value,
    /// Steps in topological order.
    pub steps: Vec<PlanStep>,
    /// The outputs the pipeline's body returns, in order (see
    /// [`crate::pipeline::Outputs`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputRef>,
    /// What the steps were built with (their packages' locked dependencies
    /// and the compiler), to say which of them changed between two runs.
    #[serde(default, skip_serializing_if = "Build::is_empty")]
    pub build: Build,
    /// The run turned the cache off for every step (`--no-cache`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cache: bool,
}

/// The build of a plan's steps: what their code fingerprints cover besides
/// the code itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Build {
    /// The compiler's version (`rustc -V`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub compiler: String,
    /// Name to exact version of every package the steps' packages depend on
    /// (several versions of one name joined with `, `).
    #[serde(default, skip_serializing_if = "Pairs::is_empty")]
    pub dependencies: Pairs,
}

impl Build {
    /// Whether nothing is known about the build (a plan written by hand).
    pub fn is_empty(&self) -> bool {
        self.compiler.is_empty() && self.dependencies.is_empty()
    }

    /// The build of steps whose fingerprints are `codes` (one per package
    /// is enough: steps of one package share their dependencies).
    fn of(codes: &[&crate::step::code::StepCode]) -> Build {
        let compiler = codes.iter().map(|c| c.compiler).find(|c| !c.is_empty()).unwrap_or_default().to_string();
        let dependencies = match codes {
            [one] => Pairs::from_text(one.dependencies),
            _ => {
                let lists: Vec<Pairs> = codes.iter().map(|c| Pairs::from_text(c.dependencies)).collect();
                let mut all: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
                for (name, versions) in lists.iter().flat_map(Pairs::iter) {
                    all.entry(name).or_default().extend(versions.split(", "));
                }
                all.into_iter().map(|(n, v)| (n, v.into_iter().collect::<Vec<_>>().join(", "))).collect()
            }
        };
        Build { compiler, dependencies }
    }
}

/// One step invocation in a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    /// Invocation id, unique in the plan (`train`, `train_2`, ...).
    pub id: String,
    /// Registered step name.
    pub step: String,
    /// The step's code fingerprint ([`crate::step::StepCode`]).
    pub code_hash: String,
    /// Each code item the fingerprint covers, with a short hash of it: what
    /// names the items that changed when the fingerprint did.
    #[serde(default, skip_serializing_if = "Pairs::is_empty")]
    pub code_items: Pairs,
    /// Manual version from `#[step(version = "...")]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Parameter values by name.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Artifact inputs in argument order.
    pub inputs: Vec<PlanInput>,
    /// Invocations that must finish first without passing data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Outputs in order.
    pub outputs: Vec<PlanOutput>,
    /// Options (cache, retries, timeout).
    pub options: StepOptions,
}

/// Where an input's value comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanInput {
    /// Argument name.
    pub name: String,
    /// Upstream outputs: exactly one, or several for a fan-in (`list`).
    pub from: Vec<OutputRef>,
    /// Whether the input is a fan-in list (a `Vec<T>` fed by `Vec<Handle<T>>`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub list: bool,
    /// The registered model whose version holding an alias feeds the input
    /// (then `from` is empty), resolved when the step starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelInput>,
}

/// A registered model's alias, as a step input.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelInput {
    /// The model's name.
    pub model: String,
    /// The alias (`production`).
    pub alias: String,
}

/// An output of an invocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OutputRef {
    /// Invocation id.
    pub step: String,
    /// Output name.
    pub output: String,
}

/// An output of a step in the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanOutput {
    /// Output name.
    pub name: String,
    /// Rust type name.
    pub type_name: String,
    /// Materializer id.
    pub materializer: String,
    /// Materializer version.
    pub materializer_version: u32,
}

/// Why a pipeline could not be compiled into a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The pipeline's configuration could not be serialised.
    #[error("the configuration of pipeline `{pipeline}` could not be serialised: {message}")]
    Config {
        /// Pipeline name.
        pipeline: String,
        /// Cause.
        message: String,
    },
    /// A parameter value could not be serialised.
    #[error(
        "parameter `{param}` of step `{step}` could not be serialised: {message}; \
             parameters must serialise to JSON (for example, maps need string keys)"
    )]
    Param {
        /// Invocation id.
        step: String,
        /// Parameter name.
        param: String,
        /// Cause.
        message: String,
    },
    /// `.after(...)` created a cycle.
    #[error("pipeline `{pipeline}` has a cycle through steps {}; remove one of the `.after(...)` orderings", steps.join(" -> "))]
    Cycle {
        /// Pipeline name.
        pipeline: String,
        /// Invocation ids on the cycle.
        steps: Vec<String>,
    },
    /// Two different step functions share a name.
    #[error("steps in {} are all named `{step}`; give each a unique name with #[step(name = \"...\")]", modules.join(" and "))]
    DuplicateStepName {
        /// Step name.
        step: String,
        /// Modules defining a step with that name.
        modules: Vec<String>,
    },
    /// The pipeline body panicked while being built.
    #[error("the body of pipeline `{pipeline}` panicked while building the plan: {message}")]
    BuildPanicked {
        /// Pipeline name.
        pipeline: String,
        /// Panic message.
        message: String,
    },
    /// The plan JSON could not be read.
    #[error("could not read the plan: {0}")]
    Json(String),
    /// Two invocations have one id.
    #[error(
        "two invocations of pipeline `{pipeline}` have the id `{id}`: {first} and {second}; give one of them \
         another id with `.id(\"...\")`"
    )]
    DuplicateInvocation {
        /// Pipeline name.
        pipeline: String,
        /// The id.
        id: String,
        /// Where the first was made (and named).
        first: String,
        /// Where the second was made (and named).
        second: String,
    },
    /// An invocation id that is empty (or nothing but invalid characters).
    #[error("the invocation named at {at} has no usable id (`{given}`); use letters, digits, `_` and `-`")]
    InvalidInvocationId {
        /// What `.id(...)` was given.
        given: String,
        /// Where.
        at: String,
    },
}

/// One dependency of a plan ([`Plan::edges`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge<'a> {
    /// The invocation that must come first.
    pub from: &'a str,
    /// The invocation that waits for it.
    pub to: &'a str,
    /// The input of `to` it feeds; `None` for an `.after` ordering.
    pub input: Option<&'a str>,
}

impl Plan {
    /// Pretty, stable JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The plan as compact JSON, for storage: what every run records, so it
    /// is kept small ([`Plan::from_json`] reads both forms).
    pub fn to_json_compact(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Reads a plan from JSON.
    pub fn from_json(json: &str) -> Result<Plan, PlanError> {
        let plan: Plan = serde_json::from_str(json).map_err(|e| PlanError::Json(e.to_string()))?;
        if plan.format != PLAN_FORMAT {
            return Err(PlanError::Json(format!(
                "plan format {} is not supported by this build (it reads format {PLAN_FORMAT})",
                plan.format
            )));
        }
        Ok(plan)
    }

    /// A hash of the whole plan.
    pub fn hash(&self) -> ContentHash {
        FieldHasher::new("zenflow.plan.v1").str(&self.to_json()).finish()
    }

    /// Position of each invocation id in [`Plan::steps`].
    pub fn index(&self) -> HashMap<&str, usize> {
        self.steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect()
    }

    /// The step with invocation id `id`.
    pub fn step(&self, id: &str) -> Option<&PlanStep> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Invocation ids each step directly depends on (data and ordering), by position.
    pub fn dependencies(&self) -> Vec<Vec<usize>> {
        let index = self.index();
        self.steps
            .iter()
            .map(|s| {
                let mut deps: Vec<usize> = s
                    .inputs
                    .iter()
                    .flat_map(|i| i.from.iter().map(|r| r.step.as_str()))
                    .chain(s.after.iter().map(String::as_str))
                    .filter_map(|id| index.get(id).copied())
                    .collect();
                deps.sort_unstable();
                deps.dedup();
                deps
            })
            .collect()
    }

    /// The DAG's edges: one per dependency, from the invocation that must
    /// come first to the one that waits, with the input it feeds (`None` for
    /// an `.after` ordering); in plan order of the waiting step.
    pub fn edges(&self) -> Vec<Edge<'_>> {
        let known = |id: &str| self.steps.iter().any(|s| s.id == id);
        let mut out = Vec::new();
        for s in &self.steps {
            for input in &s.inputs {
                for r in input.from.iter().filter(|r| known(&r.step)) {
                    out.push(Edge { from: &r.step, to: &s.id, input: Some(&input.name) });
                }
            }
            for a in s.after.iter().filter(|a| known(a)) {
                out.push(Edge { from: a, to: &s.id, input: None });
            }
        }
        out
    }
}
