//! The context a step may ask for with a `&StepContext` argument.

use crate::check::{Check, CheckStatus};
use crate::logs::{SharedBuffer, CONTEXT_TARGET};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// What a running step knows about its run, and where it logs.
///
/// Log lines and logged metadata are stored with the step run in the metadata
/// store. Outside a pipeline, [`StepContext::detached`] gives a context for unit
/// tests that keeps everything in memory.
#[derive(Clone, Debug)]
pub struct StepContext {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    run_id: String,
    pipeline: String,
    invocation: String,
    step: String,
    attempt: u32,
    logs: SharedBuffer,
    metadata: Mutex<BTreeMap<String, serde_json::Value>>,
    checks: Mutex<Vec<Check>>,
    /// What the run resolved for this attempt.
    env: AttemptEnv,
}

/// What a step's run resolved before the attempt: the versions its model
/// inputs resolved to, the artifact versions of its inputs, and the stack.
#[derive(Debug, Default, Clone)]
pub(crate) struct AttemptEnv {
    /// Model input versions, by input name.
    pub(crate) models: BTreeMap<String, Option<i64>>,
    /// The artifact versions it consumes.
    pub(crate) inputs: Vec<crate::metadata::record::InputLink>,
    /// The stores of the stack it runs on.
    pub(crate) stores: Option<crate::stack::stores::Stores>,
}

impl StepContext {
    /// A context for step `invocation` (of step `step`) in run `run_id`.
    pub fn new(run_id: &str, pipeline: &str, invocation: &str, step: &str, attempt: u32) -> Self {
        Self::for_attempt(run_id, pipeline, invocation, step, attempt, AttemptEnv::default(), SharedBuffer::default())
    }

    /// The context of one attempt in a run: it knows which versions its
    /// model inputs resolved to, and logs into the step run's buffer (shared
    /// with the capture of `tracing` events, so lines keep their order).
    pub(crate) fn for_attempt(
        run_id: &str,
        pipeline: &str,
        invocation: &str,
        step: &str,
        attempt: u32,
        env: AttemptEnv,
        logs: SharedBuffer,
    ) -> Self {
        StepContext {
            inner: Arc::new(Inner {
                run_id: run_id.to_string(),
                pipeline: pipeline.to_string(),
                invocation: invocation.to_string(),
                step: step.to_string(),
                attempt,
                logs,
                metadata: Mutex::default(),
                checks: Mutex::default(),
                env,
            }),
        }
    }

    /// The version of the model that input `input` (a
    /// [`model_alias`](crate::model_alias)) resolved to when the step
    /// started; `None` when no version held the alias, or the input is not
    /// a model input.
    pub fn model_version(&self, input: &str) -> Option<i64> {
        self.inner.env.models.get(input).copied().flatten()
    }

    /// The id of the artifact version input `input` consumed (the first,
    /// for a fan-in list); `None` outside a run or for no such input.
    pub fn input_artifact(&self, input: &str) -> Option<&str> {
        self.inner.env.inputs.iter().find(|l| l.input == input).map(|l| l.artifact_version.as_str())
    }

    /// The stores of the stack the step runs on (`None` for a detached context): for
    /// steps that act on it, such as a deployment
    /// (`zenflow::deploy::deploy_input`).
    pub fn stores(&self) -> Option<&crate::stack::stores::Stores> {
        self.inner.env.stores.as_ref()
    }

    /// A context outside any run, for calling a step function directly in tests.
    pub fn detached(step: &str) -> Self {
        StepContext::new("detached", "detached", step, step, 1)
    }

    /// Id of the run this step belongs to.
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// Name of the pipeline.
    pub fn pipeline(&self) -> &str {
        &self.inner.pipeline
    }

    /// Invocation id of this step in the plan (unique within the run).
    pub fn invocation_id(&self) -> &str {
        &self.inner.invocation
    }

    /// Registered name of the step.
    pub fn step_name(&self) -> &str {
        &self.inner.step
    }

    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// Logs a line; it is kept with the step run (with the `tracing` events
    /// the step emits, in order) and also emitted through `tracing`.
    pub fn log(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!(target: CONTEXT_TARGET, step = %self.inner.invocation, "{line}");
        self.inner.logs.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }

    /// Records a key/value pair (a metric, a count, a description) with the step
    /// run. A later value for the same key replaces the earlier one.
    pub fn log_metadata(&self, key: impl Into<String>, value: impl Serialize) {
        let key = key.into();
        let value = serde_json::to_value(value)
            .unwrap_or_else(|e| serde_json::Value::String(format!("<not serialisable: {e}>")));
        self.inner.metadata.lock().unwrap_or_else(PoisonError::into_inner).insert(key, value);
    }

    /// Records a check result with the step run and returns its status. A
    /// failed check does not fail the step: it fails the run's quality gate.
    /// A later check with the same name replaces the earlier one.
    ///
    /// ```
    /// # use zenflow_core::{StepContext, check::{Check, CheckStatus}};
    /// let ctx = StepContext::detached("evaluate");
    /// let accuracy = 0.93;
    /// assert_eq!(ctx.check(Check::at_least("accuracy", accuracy, 0.9)), CheckStatus::Pass);
    /// ```
    pub fn check(&self, check: Check) -> CheckStatus {
        let status = check.status;
        tracing::info!(target: CONTEXT_TARGET, step = %self.inner.invocation, check = %check.name, %status, "{}", check.message);
        let mut checks = self.inner.checks.lock().unwrap_or_else(PoisonError::into_inner);
        match checks.iter_mut().find(|c| c.name == check.name) {
            Some(existing) => *existing = check,
            None => checks.push(check),
        }
        status
    }

    /// Records the outcome of an appraisal ([`crate::appraisal`]): one check
    /// per metric (`appraisal.<metric>`), which feed the run's quality gate,
    /// and the table the reports show. Returns the worst status.
    pub fn record_appraisal(&self, result: &crate::appraisal::AppraisalResult) -> CheckStatus {
        self.log_metadata(crate::appraisal::METADATA_KEY, result);
        result.checks().into_iter().map(|c| self.check(c)).max().unwrap_or(CheckStatus::Pass)
    }

    /// Adds a request to replay, with the answer it must give, to the model
    /// version this step's output becomes (`#[step(model = "...")]`): the
    /// model server sends it before the version serves, and refuses a
    /// version whose answer differs.
    pub fn model_sample(&self, request: impl Serialize, expected: impl Serialize) {
        let sample = serde_json::json!({
            "request": serde_json::to_value(request).unwrap_or(serde_json::Value::Null),
            "expected": serde_json::to_value(expected).unwrap_or(serde_json::Value::Null),
        });
        let mut metadata = self.inner.metadata.lock().unwrap_or_else(PoisonError::into_inner);
        let samples = metadata.entry(MODEL_SAMPLES.to_string()).or_insert_with(|| serde_json::json!([]));
        if let Some(list) = samples.as_array_mut() {
            list.push(sample);
        }
    }

    /// Sets a tag of the model version this step's output becomes.
    pub fn model_tag(&self, key: impl Into<String>, value: impl Into<String>) {
        let mut metadata = self.inner.metadata.lock().unwrap_or_else(PoisonError::into_inner);
        let tags = metadata.entry(MODEL_TAGS.to_string()).or_insert_with(|| serde_json::json!({}));
        if let Some(map) = tags.as_object_mut() {
            map.insert(key.into(), serde_json::Value::String(value.into()));
        }
    }

    /// The checks recorded so far.
    pub fn checks(&self) -> Vec<Check> {
        self.inner.checks.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The lines logged so far (by [`log`](StepContext::log) and, in a run,
    /// the step's `tracing` events), with a note of what the size cap cut.
    pub fn logs(&self) -> Vec<String> {
        self.inner.logs.lock().unwrap_or_else(PoisonError::into_inner).snapshot()
    }

    /// The metadata logged so far.
    pub fn metadata(&self) -> BTreeMap<String, serde_json::Value> {
        self.inner.metadata.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The step-run metadata key of the samples of [`StepContext::model_sample`].
pub(crate) const MODEL_SAMPLES: &str = "zenflow.model.samples";

/// The step-run metadata key of the tags of [`StepContext::model_tag`].
pub(crate) const MODEL_TAGS: &str = "zenflow.model.tags";
