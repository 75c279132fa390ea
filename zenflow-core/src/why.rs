//! Why a step ran (DESIGN.md §5): for each executed step, the reasons it was
//! not served from the cache; for each cached step, the run it came from.
//!
//! The runner records the reasons of a step it executed with the cache on
//! as data with the step run (metadata key `zenflow.why`): it compares the
//! step with the latest earlier run of the same invocation that succeeded
//! (its plan step: code, version, parameters, outputs; its build:
//! dependencies, compiler; the content of its inputs). What the records
//! already say is not stored again: a cached step names the step run it
//! reuses, and the plan says when the cache was off. [`reasons`] puts it
//! all together for `runs show --why`, the reports and the dashboard.

use crate::hash::ContentHash;
use crate::metadata::StepRunRecord;
use crate::plan::{Build, PlanStep};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The step-run metadata key the reasons are recorded under.
pub(crate) const WHY_KEY: &str = "zenflow.why";

/// Which switch turned the cache off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `#[step(cache = false)]`.
    Step,
    /// `--no-cache` (or `no_cache` in the run's configuration).
    Run,
}

/// A value that changed: a dependency's version, a parameter's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The dependency or parameter.
    pub name: String,
    /// Before (`None`: it did not exist).
    pub old: Option<String>,
    /// Now (`None`: it no longer exists).
    pub new: Option<String>,
}

/// One reason a step ran, or where a cached step came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// Served from the cache: the outputs of `step_run`, in run `run`.
    Cached {
        /// The run that executed the step.
        run: String,
        /// The step run whose outputs were reused.
        step_run: String,
    },
    /// No earlier run of this invocation succeeded.
    NoEarlierRun,
    /// The cache is off.
    CacheOff {
        /// Who turned it off.
        scope: Scope,
    },
    /// Code the step can run changed: these items (labels such as
    /// "`kept_features` in src/features.rs"); empty when the earlier run
    /// predates item fingerprints.
    CodeChanged {
        /// The items whose code changed, appeared or went away.
        items: Vec<String>,
    },
    /// `#[step(version = "...")]` changed.
    VersionChanged {
        /// Before.
        old: Option<String>,
        /// Now.
        new: Option<String>,
    },
    /// Locked dependencies changed.
    DependencyChanged {
        /// Each dependency with its old and new version.
        changes: Vec<Change>,
    },
    /// The compiler changed.
    CompilerChanged {
        /// The change (`name` is "rustc").
        change: Change,
    },
    /// Parameters changed (values as JSON text).
    ParameterChanged {
        /// Each parameter with its old and new value.
        changes: Vec<Change>,
    },
    /// An input's bytes changed.
    InputChanged {
        /// The input.
        input: String,
        /// The upstream invocations that feed it.
        upstream: Vec<String>,
    },
    /// The step's outputs (names, types or materializers) changed.
    OutputsChanged,
    /// The cached result's artifact cannot be used.
    ArtifactUnusable {
        /// The artifact version's name.
        artifact: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The cached result is older than the cache's time to live.
    Expired {
        /// Its age, in seconds.
        age_secs: u64,
        /// The time to live, in seconds.
        ttl_secs: u64,
    },
    /// Nothing differs from the earlier run, but the cache holds no result
    /// for the key (its entry is in another store, or was deleted).
    NoCacheEntry,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |changes: &[Change]| {
            changes
                .iter()
                .map(|c| {
                    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
                    format!("{} {} -> {}", c.name, show(&c.old), show(&c.new))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Reason::Cached { run, .. } => write!(f, "cached, from run {run}"),
            Reason::NoEarlierRun => f.write_str("no earlier run"),
            Reason::CacheOff { scope: Scope::Step } => f.write_str("cache off for the step (`cache = false`)"),
            Reason::CacheOff { scope: Scope::Run } => f.write_str("cache off for the run (`--no-cache`)"),
            Reason::CodeChanged { items } if items.is_empty() => f.write_str("code changed"),
            Reason::CodeChanged { items } => write!(f, "code changed: {}", items.join(", ")),
            Reason::VersionChanged { old, new } => write!(
                f,
                "step version changed: {} -> {}",
                old.as_deref().unwrap_or("none"),
                new.as_deref().unwrap_or("none")
            ),
            Reason::DependencyChanged { changes } => write!(f, "dependency changed: {}", list(changes)),
            Reason::CompilerChanged { change } => write!(f, "compiler changed: {}", list(std::slice::from_ref(change))),
            Reason::ParameterChanged { changes } => write!(f, "parameter changed: {}", list(changes)),
            Reason::InputChanged { input, upstream } if upstream.is_empty() => write!(f, "input `{input}` changed"),
            Reason::InputChanged { input, upstream } => {
                write!(f, "input `{input}` changed (new bytes from {})", upstream.join(", "))
            }
            Reason::OutputsChanged => f.write_str("outputs changed"),
            Reason::ArtifactUnusable { artifact, detail } => write!(f, "cached artifact {artifact} unusable: {detail}"),
            Reason::Expired { age_secs, ttl_secs } => {
                write!(f, "cache entry expired ({} old, time to live {})", human(*age_secs), human(*ttl_secs))
            }
            Reason::NoCacheEntry => f.write_str("no cache entry for this key in this store"),
        }
    }
}

use crate::time::span as human;

/// The reasons recorded with a step run (empty for step runs recorded
/// before reasons were, cached ones, and those that ran with the cache off:
/// see [`reasons`]).
pub fn of(step_run: &StepRunRecord) -> Vec<Reason> {
    step_run.metadata.get(WHY_KEY).and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
}

/// Why `step_run` (of `step` in `plan`) ran, or where it came from:
/// [`Reason::Cached`] naming `original`'s run for a cached step (the run
/// id, or `original`'s own id when it is not known), [`Reason::CacheOff`]
/// when the plan turned the cache off, else what the runner recorded.
pub fn reasons(
    step_run: &StepRunRecord,
    step: &PlanStep,
    no_cache: bool,
    original: Option<&StepRunRecord>,
) -> Vec<Reason> {
    use crate::metadata::StepStatus;
    match (step_run.status, &step_run.original_step_run) {
        (StepStatus::Cached, Some(from)) => {
            let run = original.map_or_else(|| from.clone(), |o| o.run_id.clone());
            vec![Reason::Cached { run, step_run: from.clone() }]
        }
        (StepStatus::Completed | StepStatus::Failed | StepStatus::Running, _) if !step.options.cache => {
            vec![Reason::CacheOff { scope: if no_cache { Scope::Run } else { Scope::Step } }]
        }
        _ => of(step_run),
    }
}

/// The reasons in one line: "code changed: ...; parameter changed: ...".
pub fn line(reasons: &[Reason]) -> String {
    reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// What an earlier execution of the step was, for [`compare`].
#[derive(Debug)]
pub struct Earlier<'a> {
    /// The step as the earlier run's plan had it.
    pub step: &'a PlanStep,
    /// The earlier run's build.
    pub build: &'a Build,
    /// The content hashes of each input it consumed, by input name.
    pub inputs: BTreeMap<String, Vec<ContentHash>>,
}

/// Why `now` (built as `build`, with inputs of content `inputs`, in input
/// order) could not reuse `earlier`'s result. [`Reason::NoCacheEntry`] when
/// nothing differs.
pub fn compare(earlier: &Earlier<'_>, now: &PlanStep, build: &Build, inputs: &[Vec<ContentHash>]) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let old = earlier.step;
    if old.code_hash != now.code_hash {
        reasons.extend(code_reasons(old, earlier.build, now, build));
    }
    if old.version != now.version {
        reasons.push(Reason::VersionChanged { old: old.version.clone(), new: now.version.clone() });
    }
    let changes = changed(&leaves(&old.params), &leaves(&now.params));
    if !changes.is_empty() {
        reasons.push(Reason::ParameterChanged { changes });
    }
    for (input, hashes) in now.inputs.iter().zip(inputs) {
        if earlier.inputs.get(&input.name).map(Vec::as_slice) != Some(hashes.as_slice()) {
            let mut upstream: Vec<String> = input.from.iter().map(|r| r.step.clone()).collect();
            upstream.extend(input.model.iter().map(|m| format!("model {}@{}", m.model, m.alias)));
            upstream.dedup();
            reasons.push(Reason::InputChanged { input: input.name.clone(), upstream });
        }
    }
    if old.outputs != now.outputs {
        reasons.push(Reason::OutputsChanged);
    }
    if reasons.is_empty() {
        reasons.push(Reason::NoCacheEntry);
    }
    reasons
}

/// The code fingerprint differs: which items, or else which dependencies
/// or compiler.
fn code_reasons(old: &PlanStep, old_build: &Build, now: &PlanStep, build: &Build) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let (before, after): (BTreeMap<&str, &str>, BTreeMap<&str, &str>) =
        (old.code_items.iter().collect(), now.code_items.iter().collect());
    let labels: BTreeSet<&str> = before.keys().chain(after.keys()).copied().collect();
    let items: Vec<String> = labels.into_iter().filter(|l| before.get(l) != after.get(l)).map(str::to_string).collect();
    let known = !old.code_items.is_empty();
    if !items.is_empty() || !known {
        reasons.push(Reason::CodeChanged { items: if known { items } else { Vec::new() } });
    }
    let pairs = |p: &crate::plan::Pairs| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let changes = changed(&pairs(&old_build.dependencies), &pairs(&build.dependencies));
    if !changes.is_empty() {
        reasons.push(Reason::DependencyChanged { changes });
    }
    if old_build.compiler != build.compiler && !old_build.compiler.is_empty() {
        let change =
            Change { name: "rustc".into(), old: Some(old_build.compiler.clone()), new: Some(build.compiler.clone()) };
        reasons.push(Reason::CompilerChanged { change });
    }
    if reasons.is_empty() {
        // The fingerprint moved but no recorded part did (a plan written by
        // hand, a build that could not read its lock): say so plainly.
        reasons.push(Reason::CodeChanged { items: Vec::new() });
    }
    reasons
}

/// Parameters by dotted path to each leaf value (JSON text): a struct
/// parameter whose one field changed names that field (`params.epochs`).
fn leaves(params: &BTreeMap<String, serde_json::Value>) -> BTreeMap<String, String> {
    fn walk(path: String, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        match value {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    walk(format!("{path}.{k}"), v, out);
                }
            }
            other => {
                out.insert(path, other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    for (name, value) in params {
        walk(name.clone(), value, &mut out);
    }
    out
}

fn changed(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<Change> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter(|n| old.get(*n) != new.get(*n))
        .map(|n| Change { name: n.clone(), old: old.get(n).cloned(), new: new.get(n).cloned() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> PlanStep {
        PlanStep {
            code_hash: "c1".into(),
            code_items: [("`train` (the step)", "a"), ("`kept_features` in src/main.rs", "b")].into_iter().collect(),
            ..crate::cache::tests::step()
        }
    }

    fn build(smartcore: &str) -> Build {
        Build { compiler: "rustc 1.95.0".into(), dependencies: [("smartcore", smartcore)].into_iter().collect() }
    }

    fn hashes(text: &str) -> Vec<Vec<ContentHash>> {
        vec![vec![ContentHash::of(text.as_bytes())]]
    }

    #[test]
    fn names_what_changed() {
        let old = step();
        let old_build = build("0.4.1");
        let earlier =
            Earlier { step: &old, build: &old_build, inputs: [("data".to_string(), hashes("x").remove(0))].into() };
        assert_eq!(compare(&earlier, &step(), &build("0.4.1"), &hashes("x")), vec![Reason::NoCacheEntry]);

        let mut now = step();
        now.code_hash = "c2".into();
        now.code_items = [("`train` (the step)", "a"), ("`kept_features` in src/main.rs", "c")].into_iter().collect();
        now.params.insert("depth".into(), serde_json::json!(4));
        let reasons = compare(&earlier, &now, &build("0.4.1"), &hashes("y"));
        assert_eq!(
            reasons,
            vec![
                Reason::CodeChanged { items: vec!["`kept_features` in src/main.rs".into()] },
                Reason::ParameterChanged {
                    changes: vec![Change { name: "depth".into(), old: Some("3".into()), new: Some("4".into()) }]
                },
                Reason::InputChanged { input: "data".into(), upstream: vec!["load".into()] },
            ]
        );
        assert_eq!(
            line(&reasons),
            "code changed: `kept_features` in src/main.rs; parameter changed: depth 3 -> 4; \
             input `data` changed (new bytes from load)"
        );

        let mut now = step();
        now.code_hash = "c3".into();
        let reasons = compare(&earlier, &now, &build("0.4.2"), &hashes("x"));
        assert_eq!(line(&reasons), "dependency changed: smartcore 0.4.1 -> 0.4.2");

        let mut old = step();
        old.params.insert("train".into(), serde_json::json!({"epochs": 300, "lr": 0.1}));
        let mut now = old.clone();
        now.params.insert("train".into(), serde_json::json!({"epochs": 120, "lr": 0.1}));
        let earlier = Earlier { step: &old, ..earlier };
        let reasons = compare(&earlier, &now, &build("0.4.1"), &hashes("x"));
        assert_eq!(line(&reasons), "parameter changed: train.epochs 300 -> 120", "a struct names its field");
    }

    #[test]
    fn reasons_round_trip_through_step_run_metadata() {
        let reasons = vec![
            Reason::Cached { run: "r1".into(), step_run: "s1".into() },
            Reason::Expired { age_secs: 90_061, ttl_secs: 86_400 },
            Reason::CacheOff { scope: Scope::Run },
        ];
        let json = serde_json::to_value(&reasons).expect("serialises");
        assert_eq!(json[1]["kind"], "expired");
        let mut record = StepRunRecord::empty("s".into(), "r", "i", "i", crate::metadata::StepStatus::Completed, 0);
        assert!(of(&record).is_empty());
        record.metadata.insert(WHY_KEY.into(), json);
        assert_eq!(of(&record), reasons);
        assert_eq!(
            line(&reasons),
            "cached, from run r1; cache entry expired (1d 1h old, time to live 1d 0h); \
             cache off for the run (`--no-cache`)"
        );
    }
}
