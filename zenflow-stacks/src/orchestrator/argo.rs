//! Argo Workflows on Kubernetes: a recorded run as an Argo `Workflow`, one
//! pod per step through the step entrypoint. Argo schedules, retries and
//! times out the pods; each pod records its own step, and the workflow's
//! exit handler closes the run (including steps whose pod died without
//! recording).
//!
//! The document is built here and checked by [`check`] (unique names,
//! known dependencies, no cycles, Argo's name rules, no `{{` of ours where
//! Argo expands expressions) before anyone sees it.

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use zenflow_core::metadata::RunRecord;
use zenflow_core::plan::{Plan, PlanStep};

/// How far past a step's timeout its pod may run before Argo kills it (the
/// entrypoint enforces the timeout itself and records it).
pub const DEADLINE_GRACE_SECS: u64 = 30;

/// The template of the exit handler.
pub const EXIT_TEMPLATE: &str = "zenflow-close-run";

/// What the workflow needs besides the plan.
#[derive(Clone, Debug)]
pub struct ArgoOptions {
    /// The container image holding the pipeline binary and `zenflow.toml`.
    pub image: String,
    /// The binary's path inside the image.
    pub binary: String,
    /// The folder of `zenflow.toml` inside the image (the project root).
    pub workdir: String,
    /// The stack the pods open (by name, from `zenflow.toml`).
    pub stack: String,
    /// The Kubernetes secret holding the values of the stack's `${VAR}`
    /// references, one key per variable.
    pub secret: String,
    /// The variables the stack references, and whether each has a default
    /// (then the secret may lack it).
    pub env: Vec<(String, bool)>,
    /// Pods at once (`spec.parallelism`); none for Argo's default.
    pub parallelism: Option<usize>,
    /// The Kubernetes service account of the pods.
    pub service_account: Option<String>,
}

/// Why a workflow cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgoError {
    /// A string that would reach Argo's `{{...}}` expansion.
    #[error("{what} `{value}` contains `{{{{`, which Argo would expand as an expression; rename it")]
    Expression {
        /// Which value.
        what: String,
        /// The value.
        value: String,
    },
    /// The document breaks a rule Argo enforces.
    #[error("the workflow is invalid: {0}")]
    Invalid(String),
}

/// `s` as an Argo/Kubernetes name: lowercase `[a-z0-9-]`, starting and
/// ending with an alphanumeric, at most `max` characters. When anything
/// had to change, a hash of the original keeps different inputs apart.
pub fn sanitize(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let trimmed = out.trim_matches('-').to_string();
    if trimmed == s && trimmed.len() <= max && !trimmed.is_empty() {
        return trimmed;
    }
    let mut key = zenflow_core::hash::FieldHasher::new("zenflow.argo.name.v1");
    key.str(s);
    let suffix = &key.finish().to_hex()[..8];
    let keep = max.saturating_sub(suffix.len() + 1);
    let head: String = trimmed.chars().take(keep).collect();
    let head = head.trim_end_matches('-');
    if head.is_empty() {
        format!("s-{suffix}")
    } else {
        format!("{head}-{suffix}")
    }
}

fn no_expression(what: &str, value: &str) -> Result<(), ArgoError> {
    if value.contains("{{") {
        return Err(ArgoError::Expression { what: what.to_string(), value: value.to_string() });
    }
    Ok(())
}

/// Kubernetes quantities of a step's resources.
fn resources(r: &zenflow_core::step::Resources) -> Option<Value> {
    if r.is_empty() {
        return None;
    }
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    if let Some(c) = r.cpus {
        // Millicores: exact for every fraction a user writes.
        requests.insert("cpu".into(), json!(format!("{}m", (c * 1000.0).round() as u64)));
    }
    if let Some(m) = r.memory_bytes {
        requests.insert("memory".into(), json!(m.to_string()));
        limits.insert("memory".into(), json!(m.to_string()));
    }
    if let Some(g) = r.gpus.filter(|g| *g > 0) {
        limits.insert("nvidia.com/gpu".into(), json!(g.to_string()));
    }
    let mut out = serde_json::Map::new();
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    Some(Value::Object(out))
}

/// The Argo `Workflow` (as JSON; YAML is the same document) that runs the
/// recorded `run` of `plan`.
pub fn workflow(plan: &Plan, run: &RunRecord, options: &ArgoOptions) -> Result<Value, ArgoError> {
    no_expression("the run name", &run.name)?;
    no_expression("the stack name", &options.stack)?;
    no_expression("the image", &options.image)?;
    no_expression("the binary path", &options.binary)?;
    no_expression("the working folder", &options.workdir)?;
    let names = template_names(plan)?;
    let deps = plan.dependencies();
    let mut templates = vec![json!({
        "name": "main",
        "dag": {"tasks": plan.steps.iter().enumerate().map(|(i, step)| {
            let mut task = json!({"name": names[step.id.as_str()], "template": names[step.id.as_str()]});
            let d: Vec<&String> = deps[i].iter().map(|&d| &names[plan.steps[d].id.as_str()]).collect();
            if !d.is_empty() {
                task["dependencies"] = json!(d);
            }
            task
        }).collect::<Vec<_>>()},
    })];
    templates.extend(plan.steps.iter().map(|step| step_template(step, &names[step.id.as_str()], run, options)));
    templates.push(json!({
        "name": EXIT_TEMPLATE,
        "container": container(
            options,
            vec!["close-run".into(), "--run".into(), run.id.clone(), "--stack".into(), options.stack.clone()],
            None,
        ),
    }));
    let mut labels = BTreeMap::new();
    labels.insert("zenflow.io/pipeline", sanitize(&plan.pipeline, 63));
    labels.insert("zenflow.io/run", sanitize(&run.id, 63));
    let mut spec = json!({
        "entrypoint": "main",
        "onExit": EXIT_TEMPLATE,
        "templates": templates,
    });
    if let Some(n) = options.parallelism {
        spec["parallelism"] = json!(n);
    }
    if let Some(sa) = &options.service_account {
        no_expression("the service account", sa)?;
        spec["serviceAccountName"] = json!(sa);
    }
    let doc = json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": sanitize(&run.name, 63),
            "labels": labels,
            "annotations": {"zenflow.io/run-id": run.id, "zenflow.io/run-name": run.name},
        },
        "spec": spec,
    });
    check(&doc)?;
    Ok(doc)
}

/// Template and task names: unique, valid, stable for a step id.
fn template_names(plan: &Plan) -> Result<HashMap<&str, String>, ArgoError> {
    let mut names: HashMap<&str, String> = HashMap::new();
    let mut taken: HashSet<String> = [EXIT_TEMPLATE.to_string(), "main".to_string()].into();
    for step in &plan.steps {
        no_expression("the step id", &step.id)?;
        let mut name = sanitize(&step.id, 63);
        if taken.contains(&name) {
            name = sanitize(&format!("{}~", step.id), 63);
        }
        taken.insert(name.clone());
        names.insert(step.id.as_str(), name);
    }
    Ok(names)
}

/// The container that runs the pipeline binary with `args`: the project's
/// folder, and the stack's secrets as environment variables.
fn container(options: &ArgoOptions, args: Vec<String>, resources: Option<Value>) -> Value {
    let env: Vec<Value> = std::iter::once(json!({"name": "ZENFLOW_PROJECT_ROOT", "value": options.workdir}))
        .chain(options.env.iter().map(|(var, has_default)| {
            let mut key = json!({"name": options.secret, "key": var});
            if *has_default {
                key["optional"] = json!(true);
            }
            json!({"name": var, "valueFrom": {"secretKeyRef": key}})
        }))
        .collect();
    let mut c = json!({
        // Argo calls the main container `main`; the schema wants a name.
        "name": "main",
        "image": options.image,
        "command": [options.binary],
        "args": args,
        "workingDir": options.workdir,
        "env": env,
    });
    if let Some(r) = resources {
        c["resources"] = r;
    }
    c
}

/// The template of one step: a pod running its step entrypoint, with the
/// step's retries, timeout and resources.
fn step_template(step: &PlanStep, name: &str, run: &RunRecord, options: &ArgoOptions) -> Value {
    // A lone pod closes the run when nothing can run after it; Argo
    // counts its retries (`{{retries}}`: 0 on the first attempt).
    let request = zenflow_core::run::entrypoint::Request {
        run: run.id.clone(),
        steps: vec![step.id.clone()],
        attempt: 1,
        close: true,
    };
    let args = request.to_args_counted_by(&options.stack, "{{retries}}");
    let mut t = json!({
        "name": name,
        "metadata": {"labels": {"zenflow.io/run": sanitize(&run.id, 63), "zenflow.io/step": name}},
        "container": container(options, args, resources(&step.options.resources)),
    });
    if step.options.retries > 0 {
        t["retryStrategy"] = json!({
            "limit": step.options.retries.to_string(),
            "retryPolicy": "Always",
            // Exit 2 is permanent (bad configuration, code that differs
            // from the plan): another pod would fail the same way.
            "expression": "lastRetry.status == \"Error\" || (lastRetry.status == \"Failed\" && asInt(lastRetry.exitCode) != 2)",
            "backoff": {"duration": format!("{}ms", step.options.retry_backoff_ms.max(1)), "factor": "2"},
        });
    }
    if let Some(limit) = step.options.timeout() {
        t["activeDeadlineSeconds"] = json!(limit.as_secs_f64().ceil() as u64 + DEADLINE_GRACE_SECS);
    }
    t
}

/// zenflow's own checks of a workflow: names by Argo's rules and unique,
/// every template and dependency known, no cycle, and `{{` only in our
/// `{{retries}}` argument.
pub fn check(doc: &Value) -> Result<(), ArgoError> {
    let spec = &doc["spec"];
    let templates = spec["templates"].as_array().map(Vec::as_slice).unwrap_or_default();
    let known = template_set(templates)?;
    for key in ["entrypoint", "onExit"] {
        let t = spec[key].as_str().unwrap_or("");
        if !known.contains(t) {
            return invalid(format!("`{key}` names no template: `{t}`"));
        }
    }
    let Some(main) = templates.iter().find(|t| t["name"] == spec["entrypoint"]) else {
        return invalid("no entrypoint template".into());
    };
    let tasks = main["dag"]["tasks"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut task_names = HashSet::new();
    for task in tasks {
        let name = task["name"].as_str().unwrap_or("");
        if !valid_name(name) || !task_names.insert(name) {
            return invalid(format!("task name `{name}` is invalid or not unique"));
        }
        let template = task["template"].as_str().unwrap_or("");
        if !known.contains(template) {
            return invalid(format!("task `{name}` runs unknown template `{template}`"));
        }
    }
    check_order(tasks, &task_names)?;
    // `{{` anywhere but our own `{{retries}}` argument.
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(doc, &mut all);
    if let Some(s) = all.iter().find(|s| s.contains("{{") && **s != "{{retries}}") {
        return invalid(format!("`{s}` would be expanded by Argo"));
    }
    Ok(())
}

fn invalid<T>(message: String) -> Result<T, ArgoError> {
    Err(ArgoError::Invalid(message))
}

/// A name by Argo's rules: `[a-z0-9-]`, at most 63 characters, no dash at
/// either end.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

/// The templates' names, each valid and unique.
fn template_set(templates: &[Value]) -> Result<HashSet<&str>, ArgoError> {
    let mut known = HashSet::new();
    for t in templates {
        let name = t["name"].as_str().unwrap_or("");
        if !valid_name(name) {
            return invalid(format!("template name `{name}` is not [a-z0-9-], at most 63 characters"));
        }
        if !known.insert(name) {
            return invalid(format!("two templates are named `{name}`"));
        }
    }
    Ok(known)
}

/// Every dependency names a task, and an order exists (Kahn's algorithm).
fn check_order(tasks: &[Value], task_names: &HashSet<&str>) -> Result<(), ArgoError> {
    let mut waiting: HashMap<&str, usize> = HashMap::new();
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for task in tasks {
        let name = task["name"].as_str().unwrap_or("");
        let deps = task["dependencies"].as_array().map(Vec::as_slice).unwrap_or_default();
        for d in deps {
            let d = d.as_str().unwrap_or("");
            if !task_names.contains(d) {
                return invalid(format!("task `{name}` depends on unknown task `{d}`"));
            }
            dependents.entry(d).or_default().push(name);
        }
        waiting.insert(name, deps.len());
    }
    let mut ready: Vec<&str> = waiting.iter().filter(|(_, n)| **n == 0).map(|(t, _)| *t).collect();
    let mut ordered = 0;
    while let Some(t) = ready.pop() {
        ordered += 1;
        for d in dependents.get(t).map(Vec::as_slice).unwrap_or_default() {
            // Every dependent was entered in `waiting` above.
            let Some(n) = waiting.get_mut(d) else { continue };
            *n -= 1;
            if *n == 0 {
                ready.push(d);
            }
        }
    }
    if ordered != tasks.len() {
        return invalid("the tasks' dependencies form a cycle".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_argos_rules_and_stay_apart() {
        assert_eq!(sanitize("train", 63), "train");
        let a = sanitize("train_lr_0.1", 63);
        assert!(a.starts_with("train-lr-0-1-") && a.len() == "train-lr-0-1-".len() + 8, "{a}");
        assert_ne!(a, sanitize("train-lr-0.1", 63), "different ids, different names");
        let long = sanitize(&"x".repeat(100), 63);
        assert_eq!(long.len(), 63);
        assert!(sanitize("___", 63).starts_with("s-"));
        assert!(sanitize("Q-{{workflow.name}}", 63)
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }

    #[test]
    fn the_checks_catch_what_argo_would_refuse() {
        let doc = |tasks: Value| {
            json!({"spec": {"entrypoint": "main", "onExit": "main", "templates": [
                {"name": "main", "dag": {"tasks": tasks}}, {"name": "a"}
            ]}})
        };
        assert_eq!(check(&doc(json!([{"name": "a", "template": "a"}]))), Ok(()));
        let e = check(&doc(json!([{"name": "a", "template": "a", "dependencies": ["b"]}]))).unwrap_err();
        assert_eq!(e, ArgoError::Invalid("task `a` depends on unknown task `b`".into()));
        let e = check(&doc(json!([
            {"name": "a", "template": "a", "dependencies": ["b"]},
            {"name": "b", "template": "a", "dependencies": ["a"]}
        ])))
        .unwrap_err();
        assert_eq!(e, ArgoError::Invalid("the tasks' dependencies form a cycle".into()));
        let e = check(&doc(json!([{"name": "a", "template": "a"}, {"name": "a", "template": "a"}]))).unwrap_err();
        assert_eq!(e, ArgoError::Invalid("task name `a` is invalid or not unique".into()));
        let e = check(&doc(json!([{"name": "A_b", "template": "a"}]))).unwrap_err();
        assert!(matches!(e, ArgoError::Invalid(m) if m.contains("`A_b` is invalid")));
        let mut d = doc(json!([{"name": "a", "template": "a"}]));
        d["spec"]["templates"][1]["container"] = json!({"args": ["{{workflow.parameters.x}}"]});
        assert!(matches!(check(&d), Err(ArgoError::Invalid(m)) if m.contains("would be expanded")));
    }
}
