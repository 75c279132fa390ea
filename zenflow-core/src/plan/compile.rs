//! From a pipeline body to a [`Plan`]: run it once in build mode, check the
//! recorded invocations, and order them.

use super::builder::{self, InputBinding};
use super::{Build, OutputRef, Pairs, Plan, PlanError, PlanInput, PlanOutput, PlanStep, PLAN_FORMAT};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// Runs `build` (a pipeline body) in build mode and compiles what it
/// recorded into the plan of pipeline `name` with run config `config`;
/// `build` returns the (node, output) positions the pipeline returns. Also
/// gives the invocation id of each node of the build, what the body's
/// handles point at.
pub(crate) fn compile(
    name: &str,
    config: serde_json::Value,
    build: impl FnOnce() -> Vec<(usize, usize)>,
) -> Result<(Plan, Vec<String>), PlanError> {
    let (b, returned) = builder::with_builder(build);
    let returned = returned.map_err(|message| PlanError::BuildPanicked { pipeline: name.to_string(), message })?;
    check_unique_names(&b.nodes)?;
    check_unique_ids(name, &b.nodes)?;
    let order = topological_order(&dependencies(&b.nodes)).map_err(|cycle| PlanError::Cycle {
        pipeline: name.to_string(),
        steps: cycle.iter().map(|&i| b.nodes[i].id.clone()).collect(),
    })?;
    // Steps of one package share their dependencies: each list is taken once.
    let mut packages: Vec<&crate::step::StepCode> = Vec::new();
    let mut steps = Vec::with_capacity(order.len());
    for i in order {
        let code = &b.nodes[i].spec.code;
        if !packages.iter().any(|c| c.dependencies == code.dependencies) {
            packages.push(code);
        }
        steps.push(plan_step(&b.nodes, i)?);
    }
    let plan = Plan {
        format: PLAN_FORMAT,
        pipeline: name.to_string(),
        config,
        steps,
        outputs: returned.iter().map(|&at| output_ref(&b.nodes, at)).collect(),
        build: Build::of(&packages),
        no_cache: false,
    };
    Ok((plan, b.nodes.iter().map(|n| n.id.clone()).collect()))
}

/// The nodes each node waits for (inputs and `.after`), sorted.
fn dependencies(nodes: &[builder::Node]) -> Vec<Vec<usize>> {
    nodes
        .iter()
        .map(|node| {
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
            d
        })
        .collect()
}

/// Output `output` of node `node`, by the names the plan uses.
fn output_ref(nodes: &[builder::Node], (node, output): (usize, usize)) -> OutputRef {
    let n = &nodes[node];
    OutputRef {
        step: n.id.clone(),
        output: n.spec.outputs.get(output).map_or_else(|| output.to_string(), |s| s.name.to_string()),
    }
}

/// The plan's step for node `i`: its inputs by name, its parameters as
/// JSON, its ordering edges, outputs, code and options.
fn plan_step(nodes: &[builder::Node], i: usize) -> Result<PlanStep, PlanError> {
    let node = &nodes[i];
    let spec = node.spec;
    let inputs = spec
        .inputs
        .iter()
        .zip(&node.inputs)
        .map(|(s, binding)| {
            let name = s.name.to_string();
            match binding {
                InputBinding::Single { node, output } => {
                    PlanInput { name, from: vec![output_ref(nodes, (*node, *output))], list: false, model: None }
                }
                InputBinding::List(refs) => PlanInput {
                    name,
                    from: refs.iter().map(|&at| output_ref(nodes, at)).collect(),
                    list: true,
                    model: None,
                },
                InputBinding::Model(m) => PlanInput { name, from: Vec::new(), list: false, model: Some(m.clone()) },
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
    let mut after: Vec<String> = node.after.iter().map(|&a| nodes[a].id.clone()).collect();
    after.sort();
    after.dedup();
    let outputs = spec
        .outputs
        .iter()
        .map(|o| PlanOutput {
            name: o.name.to_string(),
            type_name: o.type_name.to_string(),
            materializer: o.materializer.to_string(),
            materializer_version: o.materializer_version,
        })
        .collect();
    Ok(PlanStep {
        id: node.id.clone(),
        step: spec.name.to_string(),
        code_hash: spec.code.hash.to_string(),
        code_items: Pairs::from_text(spec.code.items),
        version: spec.version.map(str::to_string),
        params,
        inputs,
        after,
        outputs,
        options: spec.options.clone(),
    })
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
