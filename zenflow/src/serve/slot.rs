//! The served model: the live version, the one kept through a bake
//! window, and loading a new version beside them.
//!
//! A load fetches the version's artifact (its hash verified), checks its
//! signature against the live one and its outputs against its signature,
//! replays the sample requests stored with it against their expected
//! answers, and only then swaps it in with one atomic store. A request
//! holds the `Arc` of the version it started on, so a swap never moves it.
//! One load runs at a time; a second is refused, never run twice.

use super::predict::{Inputs, Predict, PredictError, Signature};
use super::protocol::{InferRequest, Tensor, TensorData};
use crate::metadata::ArtifactVersion;
use crate::registry::{EventKind, Expect, ModelVersion};
use crate::{Materialize, Stack};
use arc_swap::ArcSwapOption;
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Loads one artifact version as a model.
type LoadFn = dyn Fn(Stack, ArtifactVersion) -> BoxFuture<'static, crate::Result<Arc<dyn Predict>>> + Send + Sync;

/// Turns an artifact version into a servable model: what
/// `Main::serve::<M>()` registers for the `serve` command.
#[derive(Clone)]
pub struct Loader {
    type_name: &'static str,
    load: Arc<LoadFn>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader").field("type", &self.type_name).finish()
    }
}

impl Loader {
    /// Loads artifacts as `M` (the type the registering step returned).
    pub fn of<M: Predict + Materialize>() -> Self {
        Loader {
            type_name: std::any::type_name::<M>(),
            load: Arc::new(|stack: Stack, version: ArtifactVersion| {
                Box::pin(async move {
                    // Decoding a large model is slow work: not on the I/O threads.
                    let handle = tokio::runtime::Handle::current();
                    let model: M = tokio::task::spawn_blocking(move || handle.block_on(stack.load_async(&version)))
                        .await
                        .map_err(|e| crate::Error::usage(format!("loading the model did not finish: {e}")))??;
                    Ok(Arc::new(model) as Arc<dyn Predict>)
                })
            }),
        }
    }

    /// The Rust type it loads.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}

/// A loaded version, with its request counts.
pub(crate) struct Loaded {
    pub(crate) version: i64,
    pub(crate) version_str: String,
    pub(crate) model: Arc<dyn Predict>,
    pub(crate) signature: Signature,
    pub(crate) requests: AtomicU64,
    pub(crate) failures: AtomicU64,
    /// A moving average of its prediction time, in nanoseconds: first
    /// measured by the warm-up.
    cost_ns: AtomicU64,
}

/// A prediction slower than this runs on the blocking pool, so that slow
/// models do not stall health checks and the accept loop; quicker ones run
/// in place, where a hand-off would cost more than the prediction.
const BLOCKING_ABOVE_NS: u64 = 250_000;

impl Loaded {
    /// Whether its predictions should leave the I/O threads.
    pub(crate) fn is_slow(&self) -> bool {
        self.cost_ns.load(Ordering::Relaxed) > BLOCKING_ABOVE_NS
    }

    /// Predicts, timing it into the average.
    pub(crate) fn predict(&self, request: &InferRequest) -> Result<Vec<Tensor>, PredictError> {
        let started = Instant::now();
        let result = run_predict(self.model.as_ref(), request);
        let took = started.elapsed().as_nanos().min(u128::from(u64::MAX / 8)) as u64;
        let old = self.cost_ns.load(Ordering::Relaxed);
        self.cost_ns.store(old - old / 8 + took / 8, Ordering::Relaxed);
        result
    }
}

/// The version swapped out, kept loaded until `until` in case the new one
/// fails.
struct Bake {
    previous: Arc<Loaded>,
    new_version: i64,
    until: Instant,
}

/// When a freshly swapped-in version is swapped back out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BakePolicy {
    /// How long the previous version stays loaded after a swap.
    pub window: Duration,
    /// The share of failed requests on the new version that swaps back.
    pub max_failure_rate: f64,
    /// Requests the new version must have seen before its rate counts.
    pub min_requests: u64,
}

impl Default for BakePolicy {
    fn default() -> Self {
        BakePolicy { window: Duration::from_secs(300), max_failure_rate: 0.05, min_requests: 20 }
    }
}

/// What a load did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadOutcome {
    /// The version passed every stage and serves now.
    Swapped,
    /// It was serving already.
    AlreadyLive,
    /// It was the version kept through a bake window: back without reloading.
    Restored,
}

/// Why a load did not swap.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Another load runs (409).
    #[error("a load of v{0} is in progress; try again when it has finished")]
    Busy(i64),
    /// No such version (404).
    #[error("{0}")]
    NotFound(String),
    /// A stage failed; the live version keeps serving (400).
    #[error("v{version} was not loaded: {reason}")]
    Failed {
        /// The version.
        version: i64,
        /// The stage and what went wrong.
        reason: String,
    },
}

/// The last load's state, for the repository index.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LoadState {
    /// The model's name.
    pub name: String,
    /// The version it concerns.
    pub version: String,
    /// `LOADING`, `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why, when unavailable.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// One served model.
pub(crate) struct Slot {
    pub(crate) name: String,
    alias: String,
    stack: Stack,
    loader: Loader,
    bake_policy: BakePolicy,
    live: ArcSwapOption<Loaded>,
    bake: ArcSwapOption<Bake>,
    loading: tokio::sync::Mutex<()>,
    loading_version: AtomicU64,
    /// Versions whose load failed: the poll does not retry them.
    failed: Mutex<HashSet<i64>>,
    last: Mutex<Option<LoadState>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slot {
    pub(crate) fn new(name: String, alias: String, stack: Stack, loader: Loader, bake_policy: BakePolicy) -> Self {
        Slot {
            name,
            alias,
            stack,
            loader,
            bake_policy,
            live: ArcSwapOption::empty(),
            bake: ArcSwapOption::empty(),
            loading: tokio::sync::Mutex::new(()),
            loading_version: AtomicU64::new(0),
            failed: Mutex::new(HashSet::new()),
            last: Mutex::new(None),
        }
    }

    /// The live version.
    pub(crate) fn live(&self) -> Option<Arc<Loaded>> {
        self.live.load_full()
    }

    /// Version `v`, if loaded (live, or kept through a bake window).
    pub(crate) fn version(&self, v: &str) -> Option<Arc<Loaded>> {
        if let Some(live) = self.live.load_full().filter(|l| l.version_str == v) {
            return Some(live);
        }
        self.bake.load().as_ref().map(|b| b.previous.clone()).filter(|p| p.version_str == v)
    }

    /// The loaded versions, live first.
    pub(crate) fn loaded_versions(&self) -> Vec<String> {
        let mut out: Vec<String> = self.live.load().iter().map(|l| l.version_str.clone()).collect();
        if let Some(b) = self.bake.load().as_ref() {
            out.push(b.previous.version_str.clone());
        }
        out
    }

    /// The last load's state.
    pub(crate) fn last_load(&self) -> Option<LoadState> {
        lock(&self.last).clone()
    }

    /// Counts a request answered by `on`; a failure in its bake window may
    /// swap the previous version back.
    pub(crate) fn record(self: &Arc<Self>, on: &Loaded, failed: bool) {
        let requests = on.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if !failed {
            return;
        }
        let failures = on.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(bake) = self.bake.load_full() else { return };
        if bake.new_version != on.version || Instant::now() > bake.until {
            return;
        }
        let rate = failures as f64 / requests as f64;
        if requests < self.bake_policy.min_requests || rate <= self.bake_policy.max_failure_rate {
            return;
        }
        // Swap back only if `on` is still live: of many failing requests,
        // exactly one does it.
        let current = self.live.load();
        if !current.as_ref().is_some_and(|l| std::ptr::eq(Arc::as_ptr(l), on)) {
            return;
        }
        let prev = self.live.compare_and_swap(&*current, Some(bake.previous.clone()));
        if !prev.as_ref().is_some_and(|l| std::ptr::eq(Arc::as_ptr(l), on)) {
            return;
        }
        self.bake.store(None);
        lock(&self.failed).insert(on.version);
        let reason = format!(
            "v{} failed {failures} of its first {requests} requests ({:.0}%) within its bake window; back on v{}",
            on.version,
            rate * 100.0,
            bake.previous.version
        );
        tracing::warn!(model = %self.name, "{reason}");
        self.set_last(on.version, "UNAVAILABLE", reason.clone());
        let slot = self.clone();
        let (from, to) = (on.version, bake.previous.version);
        tokio::spawn(async move { slot.roll_back_alias(from, to, reason).await });
    }

    /// Moves the alias from `from` back to `to` after a bake-window
    /// rollback (a compare-and-swap: if someone moved it meanwhile, theirs
    /// stands).
    async fn roll_back_alias(&self, from: i64, to: i64, reason: String) {
        let Ok(registry) = self.stack.registry() else { return };
        let mut p = self.stack.promotion(&self.name, &self.alias, Some(to), Expect::Version(from));
        p.kind = EventKind::Rollback;
        p.reason = Some(reason);
        p.force = true;
        if let Err(e) = registry.promote(&p).await {
            tracing::warn!(model = %self.name, "the alias `{}` was not moved back to v{to}: {e}", self.alias);
        }
    }

    fn set_last(&self, version: i64, state: &'static str, reason: String) {
        *lock(&self.last) = Some(LoadState { name: self.name.clone(), version: version.to_string(), state, reason });
    }

    /// Whether the poll should load `version`: not live, not failed before.
    pub(crate) fn wants(&self, version: i64) -> bool {
        self.live.load().as_ref().is_none_or(|l| l.version != version) && !lock(&self.failed).contains(&version)
    }

    /// The version holding the slot's alias now.
    pub(crate) async fn alias_holder(&self) -> Result<Option<i64>, String> {
        let registry = self.stack.registry().map_err(|e| e.to_string())?;
        registry.resolve(&self.name, &self.alias).await.map(|v| v.map(|v| v.version)).map_err(|e| e.to_string())
    }

    /// Loads `version` beside the live one and swaps it in.
    pub(crate) async fn load(self: &Arc<Self>, version: i64) -> Result<LoadOutcome, LoadError> {
        let Ok(_guard) = self.loading.try_lock() else {
            return Err(LoadError::Busy(self.loading_version.load(Ordering::Relaxed) as i64));
        };
        self.loading_version.store(version as u64, Ordering::Relaxed);
        if self.live.load().as_ref().is_some_and(|l| l.version == version) {
            return Ok(LoadOutcome::AlreadyLive);
        }
        if let Some(bake) = self.bake.load_full().filter(|b| b.previous.version == version) {
            self.bake.store(None);
            self.live.store(Some(bake.previous.clone()));
            lock(&self.failed).insert(bake.new_version);
            tracing::info!(model = %self.name, "v{version} is back (it was kept loaded through v{}'s bake window)", bake.new_version);
            self.set_last(version, "READY", String::new());
            return Ok(LoadOutcome::Restored);
        }
        let registry = self.stack.registry().map_err(|e| LoadError::NotFound(e.to_string()))?;
        let record = match registry.version(&self.name, version).await {
            Ok(Some(v)) => v,
            Ok(None) => {
                return Err(LoadError::NotFound(format!("model `{}` has no version {version}", self.name)));
            }
            Err(e) => return Err(LoadError::Failed { version, reason: format!("reading the registry: {e}") }),
        };
        self.set_last(version, "LOADING", String::new());
        tracing::info!(model = %self.name, "loading v{version}");
        match self.prepare(&record).await {
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                let previous = self.live.swap(Some(loaded));
                match previous {
                    Some(previous) => {
                        let until = Instant::now() + self.bake_policy.window;
                        let from = previous.version;
                        self.bake.store(Some(Arc::new(Bake { previous, new_version: version, until })));
                        let slot = self.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep_until(until.into()).await;
                            // Ends this window only, not a later one.
                            let current = slot.bake.load_full();
                            if current.as_ref().is_some_and(|b| b.new_version == version && b.until == until) {
                                slot.bake.compare_and_swap(&current, None);
                            }
                        });
                        tracing::info!(model = %self.name, "v{version} serves (swapped for v{from}, kept loaded for its bake window)");
                    }
                    None => tracing::info!(model = %self.name, "v{version} serves"),
                }
                self.set_last(version, "READY", String::new());
                Ok(LoadOutcome::Swapped)
            }
            Err(reason) => {
                lock(&self.failed).insert(version);
                tracing::warn!(model = %self.name, "v{version} was not loaded: {reason}");
                self.set_last(version, "UNAVAILABLE", reason.clone());
                Err(LoadError::Failed { version, reason })
            }
        }
    }

    /// Every stage before the swap: fetch and verify, schema, warm-up.
    async fn prepare(&self, record: &ModelVersion) -> Result<Loaded, String> {
        let version = record.version;
        let artifact = self
            .stack
            .artifact_version_async(&record.artifact_version)
            .await
            .map_err(|e| format!("fetching its artifact: {e}"))?;
        if artifact.content_hash != record.content_hash {
            return Err(format!(
                "its artifact {} has hash {}, but the registry recorded {}",
                artifact.id, artifact.content_hash, record.content_hash
            ));
        }
        let model = (self.loader.load)(self.stack.clone(), artifact)
            .await
            .map_err(|e| format!("fetching its artifact (as `{}`): {e}", self.loader.type_name))?;
        if record.samples.is_empty() {
            tracing::warn!(model = %self.name, "v{version} has no sample requests: it serves without a warm-up");
        }
        // Off the I/O threads: a slow warm-up must not slow the live version.
        let live = self.live.load().as_ref().map(|l| (l.version, l.signature.clone()));
        let (model_, samples) = (model.clone(), record.samples.clone());
        let (signature, cost_ns) = tokio::task::spawn_blocking(move || warm_up(model_.as_ref(), live, &samples))
            .await
            .map_err(|e| format!("the warm-up did not finish: {e}"))??;
        Ok(Loaded {
            version,
            version_str: version.to_string(),
            model,
            signature,
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            cost_ns: AtomicU64::new(cost_ns),
        })
    }
}

/// The schema checks and the warm-up: the signature, and the slowest
/// warm-up prediction in nanoseconds.
fn warm_up(
    model: &dyn Predict,
    live: Option<(i64, Signature)>,
    samples: &[crate::registry::Sample],
) -> Result<(Signature, u64), String> {
    let signature = model.signature();
    if let Some(problem) = signature.problems() {
        return Err(format!("its signature: {problem}"));
    }
    if let Some((live_version, live)) = live.filter(|(_, s)| *s != signature) {
        return Err(format!(
            "its signature differs from the live v{live_version}'s, which clients rely on: {} against {}",
            describe(&signature),
            describe(&live)
        ));
    }
    let mut cost_ns = 0u64;
    for (n, sample) in samples.iter().enumerate() {
        let which = format!("warm-up request {} of {}", n + 1, samples.len());
        let request =
            InferRequest::from_value(sample.request.clone()).map_err(|e| format!("{which} is not valid: {e}"))?;
        let started = Instant::now();
        let outputs = run_predict(model, &request).map_err(|e| format!("{which}: {e}"))?;
        cost_ns = cost_ns.max(started.elapsed().as_nanos().min(u128::from(u64::MAX / 8)) as u64);
        check_outputs(&signature, &outputs).map_err(|e| format!("{which}: {e}"))?;
        compare(&outputs, &sample.expected).map_err(|e| format!("{which}: {e}"))?;
    }
    Ok((signature, cost_ns))
}

fn describe(s: &Signature) -> String {
    let list = |specs: &[super::protocol::TensorSpec]| {
        specs.iter().map(|t| format!("{} {} {:?}", t.name, t.datatype, t.shape)).collect::<Vec<_>>().join(", ")
    };
    format!("inputs [{}] outputs [{}]", list(&s.inputs), list(&s.outputs))
}

/// Runs a prediction, a panic turned into [`PredictError::Failed`].
pub(crate) fn run_predict(model: &dyn Predict, request: &InferRequest) -> Result<Vec<Tensor>, PredictError> {
    let inputs = Inputs::new(request);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.predict(&inputs))) {
        Ok(result) => result.map(super::predict::Prediction::into_tensors),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(PredictError::Failed(format!("it panicked: {what}")))
        }
    }
}

/// Each output the model gave is one its signature declares, of that type and shape.
pub(crate) fn check_outputs(signature: &Signature, outputs: &[Tensor]) -> Result<(), String> {
    for t in outputs {
        let Some(spec) = signature.outputs.iter().find(|s| s.name == t.name) else {
            return Err(format!("the model gave an output `{}` its signature does not declare", t.name));
        };
        if spec.datatype != t.datatype || !spec.admits(&t.shape) {
            return Err(format!(
                "output `{}` is {} {:?}, but the signature declares {} {:?}",
                t.name, t.datatype, t.shape, spec.datatype, spec.shape
            ));
        }
    }
    Ok(())
}

/// Compares outputs with a sample's expected answer: the data of the first
/// output (a JSON array), outputs by name (`{"label": [1]}`), or a whole
/// response (`{"outputs": [{"name": .., "data": ..}]}`).
pub(crate) fn compare(outputs: &[Tensor], expected: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    let by_name: Vec<(Option<String>, &Value)> = match expected {
        Value::Array(_) => vec![(None, expected)],
        Value::Object(o) => match o.get("outputs") {
            Some(Value::Array(list)) => list
                .iter()
                .map(|t| {
                    (t.get("name").and_then(Value::as_str).map(String::from), t.get("data").unwrap_or(&Value::Null))
                })
                .collect(),
            _ => o.iter().map(|(k, v)| (Some(k.clone()), v)).collect(),
        },
        other => return Err(format!("the expected answer {other} is neither an array nor an object of outputs")),
    };
    for (name, want) in by_name {
        let tensor = match &name {
            None => outputs.first().ok_or("the model gave no outputs")?,
            Some(n) => {
                outputs.iter().find(|t| &t.name == n).ok_or_else(|| format!("the model gave no output `{n}`"))?
            }
        };
        let mut flat = Vec::new();
        flatten(want, &mut flat);
        let equal = flat.len() == tensor.data.len()
            && match &tensor.data {
                TensorData::Float(v) => v.iter().zip(&flat).all(|(a, b)| b.as_f64().is_some_and(|b| close(*a, b))),
                TensorData::Int(v) => v.iter().zip(&flat).all(|(a, b)| b.as_f64().is_some_and(|b| *a as f64 == b)),
                TensorData::Bool(v) => v.iter().zip(&flat).all(|(a, b)| b.as_bool() == Some(*a)),
                TensorData::Bytes(v) => v.iter().zip(&flat).all(|(a, b)| b.as_str() == Some(a.as_str())),
            };
        if !equal {
            let got = serde_json::to_string(&tensor.data).unwrap_or_default();
            return Err(format!("output `{}` answered {got}, but {want} was expected", tensor.name));
        }
    }
    Ok(())
}

fn flatten<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::super::protocol::Datatype;
    use super::*;
    use serde_json::json;

    fn labels(data: Vec<i64>) -> Tensor {
        Tensor {
            name: "label".into(),
            shape: vec![data.len() as u64],
            datatype: Datatype::INT64,
            data: TensorData::Int(data),
        }
    }

    #[test]
    fn expected_answers_in_each_form() {
        let out = [labels(vec![1, 0])];
        assert_eq!(compare(&out, &json!([1, 0])), Ok(()));
        assert_eq!(compare(&out, &json!({"label": [[1], [0]]})), Ok(()));
        assert_eq!(compare(&out, &json!({"outputs": [{"name": "label", "data": [1, 0]}]})), Ok(()));
        assert_eq!(compare(&out, &json!([1, 1])), Err("output `label` answered [1,0], but [1,1] was expected".into()));
        assert_eq!(compare(&out, &json!({"p": [1]})), Err("the model gave no output `p`".into()));
        assert!(compare(&out, &json!(3)).is_err());
    }

    #[test]
    fn outputs_must_match_the_signature() {
        let sig = Signature::new(
            [super::super::protocol::TensorSpec::rows_f64("x", 2)],
            [super::super::protocol::TensorSpec::labels("label")],
        );
        assert_eq!(check_outputs(&sig, &[labels(vec![1])]), Ok(()));
        let mut wrong = labels(vec![1]);
        wrong.name = "y".into();
        assert!(check_outputs(&sig, &[wrong]).unwrap_err().contains("does not declare"));
    }
}
