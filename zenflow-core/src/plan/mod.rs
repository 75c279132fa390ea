//! The plan: a serialisable, stable description of one pipeline run.
//!
//! [`compile`] runs a pipeline body once in build mode and turns the recorded
//! invocations into a [`Plan`]: steps in a deterministic topological order,
//! each with its invocation id, parameters, input edges, ordering edges,
//! outputs (with materializers), code hash and options. The JSON form is
//! stable (keys sorted, steps in plan order) so it can be snapshot-tested,
//! stored with a run and handed to another process.

pub(crate) mod builder;
mod pairs;

pub use pairs::Pairs;

use crate::handle::InputBinding;
use crate::hash::{ContentHash, FieldHasher};
use crate::pipeline::Pipeline;
use crate::step::StepOptions;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BinaryHeap, HashMap};

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
    fn of(codes: &[&crate::step::StepCode]) -> Build {
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
    /// The model.
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

    /// The DAG: one node per invocation (weighted by its id), one edge per
    /// dependency (weighted by the input name, or `None` for `.after`).
    pub fn graph(&self) -> DiGraph<String, Option<String>> {
        let mut g = DiGraph::with_capacity(self.steps.len(), self.steps.len());
        let nodes: HashMap<&str, NodeIndex> =
            self.steps.iter().map(|s| (s.id.as_str(), g.add_node(s.id.clone()))).collect();
        for s in &self.steps {
            let to = nodes[s.id.as_str()];
            for input in &s.inputs {
                for r in &input.from {
                    if let Some(&from) = nodes.get(r.step.as_str()) {
                        g.add_edge(from, to, Some(input.name.clone()));
                    }
                }
            }
            for a in &s.after {
                if let Some(&from) = nodes.get(a.as_str()) {
                    g.add_edge(from, to, None);
                }
            }
        }
        g
    }
}

/// Runs the pipeline body in build mode and compiles the result into a plan.
pub fn compile<P: Pipeline + ?Sized>(pipeline: &P, config: &P::Config) -> Result<Plan, PlanError> {
    Ok(compile_with_nodes(pipeline, config)?.0)
}

/// [`compile`], with the invocation id of each node of the build (what the
/// body's handles point at).
pub(crate) fn compile_with_nodes<P: Pipeline + ?Sized>(
    pipeline: &P,
    config: &P::Config,
) -> Result<(Plan, Vec<String>), PlanError> {
    use crate::pipeline::Outputs;
    let name = pipeline.name();
    let config_json = serde_json::to_value(config)
        .map_err(|e| PlanError::Config { pipeline: name.to_string(), message: e.to_string() })?;
    let (b, built) = builder::with_builder(|| pipeline.build(config));
    let returned = built.map_err(|message| PlanError::BuildPanicked { pipeline: name.to_string(), message })?;
    check_unique_names(&b.nodes)?;
    check_unique_ids(name, &b.nodes)?;

    // Dependencies per node, then a deterministic topological order: Kahn's
    // algorithm always taking the earliest-recorded ready node, so a plan
    // without `.after` keeps the order in which the body called its steps.
    let n = b.nodes.len();
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(n);
    for node in &b.nodes {
        let mut d: Vec<usize> = node
            .inputs
            .iter()
            .flat_map(|i| match i {
                InputBinding::Single { node, .. } => vec![*node],
                InputBinding::List(refs) => refs.iter().map(|(n, _)| *n).collect(),
                InputBinding::Model(_) => Vec::new(),
            })
            .chain(node.after.iter().copied())
            .collect();
        d.sort_unstable();
        d.dedup();
        deps.push(d);
    }
    let order = topological_order(&deps).map_err(|cycle| PlanError::Cycle {
        pipeline: name.to_string(),
        steps: cycle.iter().map(|&i| b.nodes[i].id.clone()).collect(),
    })?;

    let mut steps = Vec::with_capacity(n);
    // Steps of one package share their dependencies: each list is taken once.
    let mut packages: Vec<&crate::step::StepCode> = Vec::new();
    for i in order {
        let node = &b.nodes[i];
        let spec = node.spec;
        if !packages.iter().any(|c| c.dependencies == spec.code.dependencies) {
            packages.push(&spec.code);
        }
        let out_ref = |&(n, o): &(usize, usize)| OutputRef {
            step: b.nodes[n].id.clone(),
            output: b.nodes[n].spec.outputs.get(o).map_or_else(|| o.to_string(), |s| s.name.to_string()),
        };
        let inputs = spec
            .inputs
            .iter()
            .zip(&node.inputs)
            .map(|(s, binding)| match binding {
                InputBinding::Single { node, output } => PlanInput {
                    name: s.name.to_string(),
                    from: vec![out_ref(&(*node, *output))],
                    list: false,
                    model: None,
                },
                InputBinding::List(refs) => PlanInput {
                    name: s.name.to_string(),
                    from: refs.iter().map(out_ref).collect(),
                    list: true,
                    model: None,
                },
                InputBinding::Model(m) => {
                    PlanInput { name: s.name.to_string(), from: Vec::new(), list: false, model: Some(m.clone()) }
                }
            })
            .collect();
        let mut params = BTreeMap::new();
        for (s, value) in spec.params.iter().zip(&node.params) {
            let value = value.clone().map_err(|message| PlanError::Param {
                step: node.id.clone(),
                param: s.name.to_string(),
                message,
            })?;
            params.insert(s.name.to_string(), value);
        }
        let mut after: Vec<String> = node.after.iter().map(|&a| b.nodes[a].id.clone()).collect();
        after.sort();
        after.dedup();
        steps.push(PlanStep {
            id: node.id.clone(),
            step: spec.name.to_string(),
            code_hash: spec.code.hash.to_string(),
            code_items: Pairs::from_text(spec.code.items),
            version: spec.version.map(str::to_string),
            params,
            inputs,
            after,
            outputs: spec
                .outputs
                .iter()
                .map(|o| PlanOutput {
                    name: o.name.to_string(),
                    type_name: o.type_name.to_string(),
                    materializer: o.materializer.to_string(),
                    materializer_version: o.materializer_version,
                })
                .collect(),
            options: spec.options.clone(),
        });
    }
    let outputs = returned
        .handles()
        .iter()
        .map(|&(n, o)| OutputRef {
            step: b.nodes[n].id.clone(),
            output: b.nodes[n].spec.outputs.get(o).map_or_else(|| o.to_string(), |s| s.name.to_string()),
        })
        .collect();
    let nodes = b.nodes.iter().map(|n| n.id.clone()).collect();
    Ok((
        Plan {
            format: PLAN_FORMAT,
            pipeline: name.to_string(),
            config: config_json,
            steps,
            outputs,
            build: Build::of(&packages),
            no_cache: false,
        },
        nodes,
    ))
}

/// Refuses two invocations with one id, and ids `.id(...)` left empty.
fn check_unique_ids(pipeline: &str, nodes: &[builder::Node]) -> Result<(), PlanError> {
    let site = |n: &builder::Node| match n.named_at {
        Some(at) => format!("the call at {} named at {at}", n.called_at),
        None => format!("the call at {}", n.called_at),
    };
    let mut seen: HashMap<&str, &builder::Node> = HashMap::new();
    for n in nodes {
        if n.id.is_empty() {
            return Err(PlanError::InvalidInvocationId {
                given: n.given_id.clone().unwrap_or_default(),
                at: n.named_at.map_or_else(|| n.called_at.to_string(), |a| a.to_string()),
            });
        }
        if let Some(first) = seen.insert(&n.id, n) {
            return Err(PlanError::DuplicateInvocation {
                pipeline: pipeline.to_string(),
                id: n.id.clone(),
                first: site(first),
                second: site(n),
            });
        }
    }
    Ok(())
}

fn check_unique_names(nodes: &[builder::Node]) -> Result<(), PlanError> {
    let mut by_name: HashMap<&str, &'static crate::step::StepSpec> = HashMap::new();
    for node in nodes {
        let spec = node.spec;
        if let Some(other) = by_name.insert(spec.name, spec) {
            if !std::ptr::eq(other, spec) {
                let mut modules = vec![other.module_path.to_string(), spec.module_path.to_string()];
                modules.sort();
                return Err(PlanError::DuplicateStepName { step: spec.name.to_string(), modules });
            }
        }
    }
    Ok(())
}

/// Kahn's algorithm with a min-heap of ready nodes. On a cycle, returns the
/// nodes of one cycle (found with petgraph's strongly connected components).
fn topological_order(deps: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = deps.len();
    let mut indegree = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, d) in deps.iter().enumerate() {
        indegree[i] = d.len();
        for &u in d {
            dependents[u].push(i);
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(std::cmp::Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(std::cmp::Reverse(d));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    let mut g = DiGraph::<usize, ()>::with_capacity(n, n);
    let idx: Vec<NodeIndex> = (0..n).map(|i| g.add_node(i)).collect();
    for (i, d) in deps.iter().enumerate() {
        for &u in d {
            g.add_edge(idx[u], idx[i], ());
        }
    }
    let cycle = petgraph::algo::tarjan_scc(&g)
        .into_iter()
        .find(|c| c.len() > 1 || c.iter().any(|&x| g.contains_edge(x, x)))
        .map(|c| {
            let mut v: Vec<usize> = c.into_iter().map(|x| g[x]).collect();
            v.sort_unstable();
            v
        })
        .unwrap_or_default();
    Err(cycle)
}

#[cfg(test)]
mod tests {
    use super::topological_order;

    #[test]
    fn keeps_recorded_order_when_possible() {
        assert_eq!(topological_order(&[vec![], vec![0], vec![0], vec![1, 2]]).unwrap(), vec![0, 1, 2, 3]);
        // node 0 ordered after node 2
        assert_eq!(topological_order(&[vec![2], vec![], vec![]]).unwrap(), vec![1, 2, 0]);
    }

    #[test]
    fn reports_the_nodes_of_a_cycle() {
        let err = topological_order(&[vec![], vec![0, 2], vec![1], vec![]]).unwrap_err();
        assert_eq!(err, vec![1, 2]);
    }
}
