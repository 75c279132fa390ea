//! The run configuration: code defaults, then a YAML/TOML file, then `--set`.
//!
//! ```yaml
//! run_name: "nightly-{date}-{git_sha}"   # optional; {date} {time} {git_sha} {pipeline}
//! cache: true                            # false = --no-cache
//! parameters:                            # the pipeline's configuration
//!   learning_rate: 0.1
//! steps:                                 # per invocation id, or per step name (all its invocations)
//!   train:
//!     cache: false
//!     retries: 2
//!     timeout: 10m
//!     retry_backoff: 500ms
//!     parameters:
//!       max_depth: 6
//! ```
//!
//! `--set key=value` takes a dotted path into this document; a path that does
//! not start with `run_name`, `cache`, `parameters` or `steps` is a pipeline
//! parameter (`--set learning_rate=0.2` is `--set parameters.learning_rate=0.2`).
//! Every key is checked against what exists and every value against the
//! type it sets; errors name the key and the valid choices.

use serde_json::{Map, Value};
use std::path::Path;
use zenflow_core::plan::Plan;
use zenflow_core::Pipeline;

/// The run config of `pipeline` (its defaults in code, then the file at
/// `file` when given, then each `key=value` of `set`, each checked against
/// the pipeline's configuration type) and the plan it makes: the pipeline's
/// plan with the config's parameters, then its per-step settings.
pub fn plan<P>(pipeline: &P, file: Option<&Path>, set: &[String]) -> Result<(RunConfig, Plan), crate::Error>
where
    P: Pipeline,
    P::Config: Default,
{
    let (doc, config) = RunConfig::load::<P>(file, set)?;
    let mut plan = pipeline.plan(&config)?;
    doc.apply_step_settings(&mut plan)?;
    Ok((doc, plan))
}

impl From<ConfigError> for crate::Error {
    fn from(e: ConfigError) -> Self {
        crate::Error::Usage(e.0)
    }
}

const TOP_LEVEL: [&str; 5] = ["run_name", "cache", "cache_ttl", "parameters", "steps"];
const STEP_FIELDS: [&str; 7] = ["parameters", "cache", "cache_ttl", "retries", "timeout", "retry_backoff", "resources"];

/// The pipeline's configuration read from the `parameters` of a run
/// config; a value that does not fit is named by its full key
/// (`parameters.data.min_rows`), wherever it sits.
pub fn typed_parameters<C: serde::de::DeserializeOwned>(parameters: &Value) -> Result<C, String> {
    serde_path_to_error::deserialize(parameters).map_err(|e| {
        let key = match e.path().to_string().as_str() {
            "." => "parameters".to_string(),
            path => format!("parameters.{path}"),
        };
        format!("`{key}`: {}", e.inner())
    })
}

/// A configuration error: bad file, unknown key, wrong type. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// The merged run configuration document.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// `{ run_name, cache, parameters, steps }`.
    pub doc: Value,
    /// The raw text of `--set steps...` values, by dotted path: a value like
    /// `007` is also tried as the string it was typed as.
    raw: std::collections::BTreeMap<String, String>,
}

impl RunConfig {
    /// The run config of pipeline `P` (its defaults in code, then the file
    /// at `file` when given, then each `key=value` of `set`) and the typed
    /// configuration it makes.
    pub fn load<P>(file: Option<&Path>, set: &[String]) -> Result<(RunConfig, P::Config), ConfigError>
    where
        P: Pipeline,
        P::Config: Default,
    {
        let defaults = serde_json::to_value(P::Config::default())
            .map_err(|e| ConfigError(format!("the pipeline's default configuration does not serialise: {e}")))?;
        let check = |v: &Value| typed_parameters::<P::Config>(v).map(|_| ());
        let mut doc = RunConfig::with_defaults(defaults);
        if let Some(path) = file {
            doc.merge_file(path, &check)?;
        }
        for assignment in set {
            doc.set(assignment, &check)?;
        }
        let config = typed_parameters::<P::Config>(doc.parameters())
            .map_err(|e| ConfigError(format!("the pipeline configuration is invalid: {e}")))?;
        Ok((doc, config))
    }

    /// The document with the pipeline's code defaults.
    pub fn with_defaults(parameters: Value) -> Self {
        let mut doc = Map::new();
        doc.insert("run_name".into(), Value::Null);
        doc.insert("cache".into(), Value::Bool(true));
        doc.insert("cache_ttl".into(), Value::Null);
        doc.insert("parameters".into(), parameters);
        doc.insert("steps".into(), Value::Object(Map::new()));
        RunConfig { doc: Value::Object(doc), raw: Default::default() }
    }

    /// Merges a YAML, TOML or JSON file over the current values.
    /// `check_params` validates the merged pipeline parameters.
    pub fn merge_file(
        &mut self,
        path: &Path,
        check_params: &dyn Fn(&Value) -> Result<(), String>,
    ) -> Result<(), ConfigError> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read the run config {shown}: {e}")))?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let file: Value = match ext.as_str() {
            "toml" => toml::from_str(&text).map_err(|e| ConfigError(format!("{shown} is not valid TOML: {e}")))?,
            "json" => {
                serde_json::from_str(&text).map_err(|e| ConfigError(format!("{shown} is not valid JSON: {e}")))?
            }
            _ => serde_saphyr::from_str(&text).map_err(|e| ConfigError(format!("{shown} is not valid YAML: {e}")))?,
        };
        let file = match file {
            Value::Null => return Ok(()),
            Value::Object(m) => m,
            other => return err(format!("{shown} must be a mapping with keys {}, not {other}", TOP_LEVEL.join(", "))),
        };
        for (key, value) in file {
            if !TOP_LEVEL.contains(&key.as_str()) {
                return err(format!(
                    "{shown}: unknown key `{key}`; the run config has {} (pipeline parameters go under `parameters`)",
                    TOP_LEVEL.join(", ")
                ));
            }
            let slot = &mut self.doc[key.as_str()];
            merge(slot, value, &key).map_err(|e| ConfigError(format!("{shown}: {}", e.0)))?;
        }
        check_params(&self.doc["parameters"]).map_err(|e| ConfigError(format!("{shown}: {e}")))?;
        self.check_top_level_types().map_err(|e| ConfigError(format!("{shown}: {}", e.0)))
    }

    /// Applies one `--set key=value`.
    pub fn set(
        &mut self,
        assignment: &str,
        check_params: &dyn Fn(&Value) -> Result<(), String>,
    ) -> Result<(), ConfigError> {
        let Some((key, raw)) = assignment.split_once('=') else {
            return err(format!("`--set {assignment}`: expected key=value, e.g. --set learning_rate=0.1"));
        };
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return err(format!(
                "`--set {assignment}`: the key `{key}` is not a dotted path like `parameters.learning_rate`"
            ));
        }
        let mut path: Vec<&str> = key.split('.').collect();
        if !TOP_LEVEL.contains(&path[0]) {
            path.insert(0, "parameters");
        }
        let dotted = path.join(".");
        // Try the value as YAML (numbers, booleans, lists), then as a plain string.
        let candidates: Vec<Value> = match serde_saphyr::from_str::<Value>(raw) {
            Ok(Value::Null) if !raw.trim().is_empty() && raw.trim() != "null" && raw.trim() != "~" => {
                vec![Value::String(raw.to_string())]
            }
            Ok(v) if v != Value::String(raw.to_string()) => vec![v, Value::String(raw.to_string())],
            _ => vec![Value::String(raw.to_string())],
        };
        match path[0] {
            "parameters" => {
                self.check_parameter_path(&path[1..], &dotted)?;
                let mut last = String::new();
                for candidate in &candidates {
                    let mut doc = self.doc.clone();
                    insert(&mut doc, &path, candidate.clone());
                    match check_params(&doc["parameters"]) {
                        Ok(()) => {
                            self.doc = doc;
                            return Ok(());
                        }
                        Err(e) => last = e,
                    }
                }
                err(format!("`--set {dotted}={raw}`: the value does not fit: {last}"))
            }
            "steps" => {
                if path.len() < 3 || !STEP_FIELDS.contains(&path[2]) || (path[2] == "parameters" && path.len() != 4) {
                    return err(format!(
                        "`--set {dotted}`: step settings are `steps.<step>.<field>` with field one of {} \
                         (a step parameter is `steps.<step>.parameters.<name>`)",
                        STEP_FIELDS.join(", ")
                    ));
                }
                // Types of step settings are checked against the plan later.
                insert(&mut self.doc, &path, candidates[0].clone());
                self.raw.insert(dotted, raw.to_string());
                Ok(())
            }
            field => {
                if path.len() != 1 {
                    return err(format!("`--set {dotted}`: `{field}` has no sub-keys"));
                }
                for candidate in &candidates {
                    let mut doc = self.doc.clone();
                    insert(&mut doc, &path, candidate.clone());
                    let before = std::mem::replace(&mut self.doc, doc);
                    if self.check_top_level_types().is_ok() {
                        return Ok(());
                    }
                    self.doc = before;
                }
                err(format!(
                    "`--set {dotted}={raw}`: {}",
                    if field == "cache" { "expected true or false" } else { "expected a string" }
                ))
            }
        }
    }

    fn check_parameter_path(&self, path: &[&str], dotted: &str) -> Result<(), ConfigError> {
        let mut node = &self.doc["parameters"];
        for (i, segment) in path.iter().enumerate() {
            let Value::Object(map) = node else {
                let parent =
                    if i == 0 { "parameters".to_string() } else { format!("parameters.{}", path[..i].join(".")) };
                return err(format!("`--set {dotted}`: `{parent}` is a single value, it has no key `{segment}`"));
            };
            match map.get(*segment) {
                Some(child) => node = child,
                // An empty object is a map: any key may be added.
                None if map.is_empty() => return Ok(()),
                None => {
                    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
                    keys.sort_unstable();
                    return err(format!(
                        "`--set {dotted}`: unknown parameter `{segment}`; valid keys here: {}",
                        keys.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_top_level_types(&self) -> Result<(), ConfigError> {
        if !matches!(self.doc["run_name"], Value::Null | Value::String(_)) {
            return err("`run_name` must be a string");
        }
        if !self.doc["cache"].is_boolean() {
            return err("`cache` must be true or false");
        }
        if !self.doc["cache_ttl"].is_null() {
            duration_ms(&self.doc["cache_ttl"], "cache_ttl")?;
        }
        if !self.doc["steps"].is_object() {
            return err("`steps` must be a mapping of step names to settings");
        }
        Ok(())
    }

    /// The pipeline parameters.
    pub fn parameters(&self) -> &Value {
        &self.doc["parameters"]
    }

    /// Whether the cache is on for this run.
    pub fn cache(&self) -> bool {
        self.doc["cache"].as_bool().unwrap_or(true)
    }

    /// How long a cached result may be reused in this run, if the run
    /// config limits it (`cache_ttl: 7d`).
    pub fn cache_ttl(&self) -> Option<std::time::Duration> {
        let v = &self.doc["cache_ttl"];
        (!v.is_null()).then(|| duration_ms(v, "cache_ttl").ok()).flatten().map(std::time::Duration::from_millis)
    }

    /// The run name template, if any.
    pub fn run_name(&self) -> Option<&str> {
        self.doc["run_name"].as_str()
    }

    /// Applies `steps:` settings to a compiled plan, checking each against
    /// the plan's invocations, the steps' parameters and their types.
    pub fn apply_step_settings(&self, plan: &mut Plan) -> Result<(), ConfigError> {
        let Some(steps) = self.doc["steps"].as_object() else { return Ok(()) };
        for (key, settings) in steps {
            // A step name means all its invocations (`train`, `train_2`, ...);
            // otherwise an invocation id means that one.
            let by_name: Vec<usize> =
                plan.steps.iter().enumerate().filter(|(_, s)| &s.step == key).map(|(i, _)| i).collect();
            let targets = if by_name.is_empty() {
                plan.steps.iter().position(|s| &s.id == key).into_iter().collect()
            } else {
                by_name
            };
            if targets.is_empty() {
                let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
                return err(format!(
                    "`steps.{key}`: pipeline `{}` has no step or invocation named `{key}`; its steps are: {}",
                    plan.pipeline,
                    ids.join(", ")
                ));
            }
            let Some(settings) = settings.as_object() else {
                return err(format!("`steps.{key}` must be a mapping of {}", STEP_FIELDS.join(", ")));
            };
            for i in targets {
                apply_settings(&mut plan.steps[i], key, settings, &self.raw)?;
            }
        }
        Ok(())
    }
}

fn apply_settings(
    step: &mut zenflow_core::plan::PlanStep,
    key: &str,
    settings: &Map<String, Value>,
    raw: &std::collections::BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (field, value) in settings {
        let at = format!("steps.{key}.{field}");
        match field.as_str() {
            "cache" => {
                step.options.cache =
                    value.as_bool().ok_or_else(|| ConfigError(format!("`{at}` must be true or false")))?
            }
            "retries" => {
                step.options.retries = value
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| ConfigError(format!("`{at}` must be a whole number of retries, got {value}")))?
            }
            "timeout" => step.options.timeout_ms = Some(duration_ms(value, &at)?),
            "cache_ttl" => step.options.cache_ttl_ms = Some(duration_ms(value, &at)?),
            "retry_backoff" => step.options.retry_backoff_ms = duration_ms(value, &at)?,
            "parameters" => apply_parameters(step, &at, value, raw)?,
            "resources" => apply_resources(&mut step.options.resources, &at, value)?,
            other => {
                return err(format!(
                    "`steps.{key}`: unknown setting `{other}`; settings are {}",
                    STEP_FIELDS.join(", ")
                ))
            }
        }
    }
    Ok(())
}

/// `steps.KEY.parameters`: each value checked against the step's parameter
/// of that name (a value typed on the command line is also tried as text).
fn apply_parameters(
    step: &mut zenflow_core::plan::PlanStep,
    at: &str,
    value: &Value,
    raw: &std::collections::BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let Some(params) = value.as_object() else {
        return err(format!("`{at}` must be a mapping of parameter names to values"));
    };
    let spec = zenflow_core::step::lookup(&step.step).map_err(|e| ConfigError(e.to_string()))?;
    for (name, v) in params {
        let Some(p) = spec.params.iter().find(|p| p.name == name) else {
            let names: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
            return err(format!(
                "`{at}.{name}`: step `{}` has no parameter `{name}`; its parameters are: {}",
                step.step,
                if names.is_empty() { "(none)".to_string() } else { names.join(", ") }
            ));
        };
        // A value typed on the command line may be a string that
        // looks like a number (`007`): try it as typed, too.
        let typed = raw.get(&format!("{at}.{name}")).map(|r| Value::String(r.clone()));
        let fitted = std::iter::once(v.clone()).chain(typed).find(|c| (p.check)(c).is_ok()).ok_or_else(|| {
            ConfigError(format!(
                "`{at}.{name}`: {v} does not fit the parameter's type `{}`: {}",
                p.type_name,
                (p.check)(v).err().unwrap_or_default()
            ))
        })?;
        step.params.insert(name.clone(), fitted);
    }
    Ok(())
}

/// `steps.KEY.resources`: cpus, memory and gpus.
fn apply_resources(r: &mut zenflow_core::step::Resources, at: &str, value: &Value) -> Result<(), ConfigError> {
    let Some(resources) = value.as_object() else {
        return err(format!("`{at}` must be a mapping of cpus, memory and gpus"));
    };
    for (name, v) in resources {
        match name.as_str() {
            "cpus" => {
                r.cpus = Some(
                    v.as_f64()
                        .filter(|c| *c > 0.0 && c.is_finite())
                        .ok_or_else(|| ConfigError(format!("`{at}.cpus` must be a number of CPUs above 0, got {v}")))?,
                )
            }
            "memory" => {
                let size = match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => zenflow_core::step::parse_size(s),
                    _ => None,
                };
                r.memory_bytes = Some(size.ok_or_else(|| {
                    ConfigError(format!("`{at}.memory` must be a size such as \"512MiB\", \"4GiB\" or \"2G\", got {v}"))
                })?)
            }
            "gpus" => {
                r.gpus = Some(
                    v.as_u64()
                        .and_then(|g| u32::try_from(g).ok())
                        .ok_or_else(|| ConfigError(format!("`{at}.gpus` must be a whole number of GPUs, got {v}")))?,
                )
            }
            other => return err(format!("`{at}`: unknown resource `{other}`; resources are cpus, memory, gpus")),
        }
    }
    Ok(())
}

fn duration_ms(value: &Value, at: &str) -> Result<u64, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "`{at}` must be a duration such as \"250ms\", \"30s\", \"5m\", \"1h\" or \"7d\", got {value}"
        ))
    };
    match value {
        Value::Number(n) => n.as_u64().map(|s| s * 1000).ok_or_else(bad),
        Value::String(s) => zenflow_core::step::parse_duration_ms(s).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// Deep-merges `value` into `slot`: objects key by key, anything else replaces.
fn merge(slot: &mut Value, value: Value, at: &str) -> Result<(), ConfigError> {
    match (slot, value) {
        (Value::Object(base), Value::Object(over)) => {
            let is_map = base.is_empty();
            for (k, v) in over {
                match base.get_mut(&k) {
                    Some(child) => merge(child, v, &format!("{at}.{k}"))?,
                    None if is_map || at == "steps" || at.starts_with("steps.") => {
                        base.insert(k, v);
                    }
                    None => {
                        let mut keys: Vec<&str> = base.keys().map(String::as_str).collect();
                        keys.sort_unstable();
                        return err(format!("unknown key `{at}.{k}`; valid keys here: {}", keys.join(", ")));
                    }
                }
            }
            Ok(())
        }
        (slot, value) => {
            *slot = value;
            Ok(())
        }
    }
}

fn insert(doc: &mut Value, path: &[&str], value: Value) {
    let mut node = doc;
    for segment in &path[..path.len() - 1] {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        node = node
            .as_object_mut()
            .map(|m| m.entry(segment.to_string()).or_insert_with(|| Value::Object(Map::new())))
            .expect("just made an object");
    }
    if let Some(map) = node.as_object_mut() {
        map.insert(path[path.len() - 1].to_string(), value);
    }
}

/// Expands `{date}`, `{time}`, `{git_sha}` and `{pipeline}` in a run name.
pub fn expand_run_name(template: &str, pipeline: &str, git_sha: Option<&str>) -> Result<String, ConfigError> {
    let (y, mo, d, h, mi, s) = zenflow_core::time::parts(zenflow_core::metadata::now());
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            return err(format!("run name `{template}`: unclosed `{{`"));
        };
        let name = &rest[start + 1..start + len];
        match name {
            "date" => out.push_str(&format!("{y:04}-{mo:02}-{d:02}")),
            "time" => out.push_str(&format!("{h:02}{mi:02}{s:02}")),
            "pipeline" => out.push_str(pipeline),
            "git_sha" => match git_sha {
                Some(sha) => out.push_str(&sha[..sha.len().min(12)]),
                None => return err(format!("run name `{template}` uses {{git_sha}}, but the project is not a git checkout with a commit")),
            },
            other => {
                return err(format!(
                    "run name `{template}`: unknown placeholder `{{{other}}}`; use {{date}}, {{time}}, {{git_sha}} or {{pipeline}}"
                ))
            }
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    if out.trim().is_empty() {
        return err("the run name is empty");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn typed(v: &Value) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct P {
            lr: f64,
            name: String,
            nested: N,
            tags: std::collections::BTreeMap<String, i64>,
        }
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct N {
            depth: u32,
        }
        <P as serde::Deserialize>::deserialize(v).map(|_| ()).map_err(|e| e.to_string())
    }

    fn base() -> RunConfig {
        RunConfig::with_defaults(json!({"lr": 0.1, "name": "a", "nested": {"depth": 3}, "tags": {}}))
    }

    #[test]
    fn set_type_checks_and_names_the_key() {
        let mut c = base();
        c.set("lr=0.5", &typed).unwrap();
        c.set("parameters.nested.depth=7", &typed).unwrap();
        c.set("name=007", &typed).unwrap();
        c.set("tags.x=3", &typed).unwrap();
        assert_eq!(c.parameters(), &json!({"lr": 0.5, "name": "007", "nested": {"depth": 7}, "tags": {"x": 3}}));
        let e = c.set("lr=fast", &typed).unwrap_err().0;
        assert!(e.contains("`--set parameters.lr=fast`") && e.contains("f64"), "{e}");
        let e = c.set("nested.depht=1", &typed).unwrap_err().0;
        assert!(e.contains("unknown parameter `depht`") && e.contains("depth"), "{e}");
        let e = c.set("lr", &typed).unwrap_err().0;
        assert!(e.contains("expected key=value"), "{e}");
        let e = c.set("cache=maybe", &typed).unwrap_err().0;
        assert!(e.contains("true or false"), "{e}");
        c.set("cache=false", &typed).unwrap();
        assert!(!c.cache());
        let e = c.set("steps.train.colour=red", &typed).unwrap_err().0;
        assert!(e.contains("retries"), "{e}");
    }

    #[test]
    fn a_step_name_sets_every_invocation_an_id_sets_one() {
        let mut plan: Plan = serde_json::from_value(json!({
            "format": 1, "pipeline": "p", "config": null,
            "steps": [
                {"id": "train", "step": "train", "code_hash": "h", "params": {}, "inputs": [], "outputs": [],
                 "options": {"cache": true, "retries": 0, "retry_backoff_ms": 200}},
                {"id": "train_2", "step": "train", "code_hash": "h", "params": {}, "inputs": [], "outputs": [],
                 "options": {"cache": true, "retries": 0, "retry_backoff_ms": 200}}
            ]
        }))
        .unwrap();
        let mut c = base();
        c.set("steps.train.retries=3", &typed).unwrap();
        c.set("steps.train_2.cache=false", &typed).unwrap();
        c.apply_step_settings(&mut plan).unwrap();
        assert_eq!((plan.steps[0].options.retries, plan.steps[1].options.retries), (3, 3));
        assert_eq!((plan.steps[0].options.cache, plan.steps[1].options.cache), (true, false));

        let mut c = base();
        c.set("steps.train_2.resources.cpus=0.5", &typed).unwrap();
        c.set("steps.train_2.resources.memory=2GiB", &typed).unwrap();
        c.set("steps.train_2.resources.gpus=1", &typed).unwrap();
        c.apply_step_settings(&mut plan).unwrap();
        let r = plan.steps[1].options.resources;
        assert_eq!((r.cpus, r.memory_bytes, r.gpus), (Some(0.5), Some(2 << 30), Some(1)));
        assert!(plan.steps[0].options.resources.is_empty());
        for (bad, message) in [
            ("steps.train.resources.cpus=0", "`steps.train.resources.cpus` must be a number of CPUs above 0, got 0"),
            ("steps.train.resources.memory=lots", "`steps.train.resources.memory` must be a size such as"),
            ("steps.train.resources.gpus=0.5", "`steps.train.resources.gpus` must be a whole number of GPUs"),
            ("steps.train.resources.tpus=1", "unknown resource `tpus`; resources are cpus, memory, gpus"),
        ] {
            let mut c = base();
            c.set(bad, &typed).unwrap();
            let before = plan.clone();
            let e = c.apply_step_settings(&mut plan).unwrap_err().to_string();
            assert!(e.contains(message), "{bad}: {e}");
            assert_eq!(plan.steps[0].options, before.steps[0].options, "{bad}: the plan is left as it was");
        }
    }

    #[test]
    fn run_names() {
        assert_eq!(
            expand_run_name("x-{pipeline}-{git_sha}", "p", Some("abcdef0123456789")).unwrap(),
            "x-p-abcdef012345"
        );
        assert!(expand_run_name("{nope}", "p", None).unwrap_err().0.contains("unknown placeholder"));
        assert!(expand_run_name("{git_sha}", "p", None).unwrap_err().0.contains("not a git checkout"));
        assert_eq!(expand_run_name("{date}", "p", None).unwrap().len(), 10);
    }
}
