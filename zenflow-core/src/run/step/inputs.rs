//! A step's inputs: resolved to artifact versions (model inputs through
//! the registry), then loaded, from memory when this run produced them.

use super::StepRunner;
use crate::artifact_store;
use crate::error::{Error, Result};
use crate::materializer::{Encoded, Handoff};
use crate::metadata::{ArtifactVersion, OutputLink, StepStatus};
use crate::plan::{OutputRef, PlanStep};
use crate::step::LoadedInput;
use std::collections::HashMap;
use std::sync::PoisonError;

impl StepRunner {
    /// The artifact versions feeding each input of `step`, in input order
    /// (none for a model alias no version holds), and how each model input
    /// was resolved.
    #[allow(clippy::type_complexity)]
    pub(super) async fn resolve_inputs(
        &self,
        step: &PlanStep,
    ) -> Result<(Vec<Vec<ArtifactVersion>>, Vec<(String, serde_json::Value)>)> {
        let mut recorded: Option<HashMap<String, Vec<OutputLink>>> = None;
        let mut out = Vec::with_capacity(step.inputs.len());
        let mut models = Vec::new();
        for input in &step.inputs {
            if let Some(m) = &input.model {
                let (versions, resolved) = self.resolve_model(m).await?;
                out.push(versions);
                models.push((input.name.clone(), resolved));
                continue;
            }
            let mut versions = Vec::with_capacity(input.from.len());
            for r in &input.from {
                let pos = self.position(&r.step)?;
                let in_memory = self.results.lock().unwrap_or_else(PoisonError::into_inner)[pos]
                    .as_ref()
                    .and_then(|res| res.output(&r.output).cloned());
                let version = match in_memory {
                    Some(v) => v,
                    None => {
                        if recorded.is_none() {
                            recorded = Some(self.recorded_outputs().await?);
                        }
                        recorded
                            .as_ref()
                            .and_then(|m| m.get(&r.step))
                            .and_then(|outs| outs.iter().find(|o| o.output == r.output))
                            .map(|o| o.artifact.clone())
                            .ok_or_else(|| {
                                Error::NotFound(format!(
                                    "input `{}` of step `{}` needs output `{}` of step `{}`, which has not \
                                     completed in run `{}`; run that step first",
                                    input.name, step.id, r.output, r.step, self.run.name
                                ))
                            })?
                    }
                };
                versions.push(version);
            }
            out.push(versions);
        }
        Ok((out, models))
    }

    /// The artifact version of the model version holding `m.alias` now
    /// (none when nobody holds it), and the record of the resolution.
    pub(super) async fn resolve_model(
        &self,
        m: &crate::plan::ModelInput,
    ) -> Result<(Vec<ArtifactVersion>, serde_json::Value)> {
        let registry = self.stores.registry()?;
        let Some(version) = crate::registry::holder(registry, &m.model, &m.alias).await? else {
            return Ok((Vec::new(), serde_json::json!({"model": m.model, "alias": m.alias, "version": null})));
        };
        let artifact = self.stores.metadata().artifact_version(&version.artifact_version).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "artifact version `{}` of model {} v{}",
                version.artifact_version, version.model, version.version
            ))
        })?;
        let resolved = serde_json::json!({"model": m.model, "alias": m.alias, "version": version.version});
        Ok((vec![artifact], resolved))
    }

    /// Outputs of the completed or cached step runs of this run, by invocation.
    pub(super) async fn recorded_outputs(&self) -> Result<HashMap<String, Vec<OutputLink>>> {
        let mut map = HashMap::new();
        for sr in self.stores.metadata().step_runs(&self.run.id).await? {
            if matches!(sr.status, StepStatus::Completed | StepStatus::Cached) {
                map.insert(sr.invocation, sr.outputs);
            }
        }
        Ok(map)
    }

    /// The in-memory copy of output `from` for one reading input, if this
    /// runner produced it as `version` (any version when `None`); the last
    /// reader takes the value itself.
    #[allow(clippy::type_complexity)]
    pub(super) fn take_handed(
        &self,
        from: &OutputRef,
        version: Option<&ArtifactVersion>,
    ) -> Option<(Option<Encoded>, Option<Handoff>)> {
        let key = (*self.index.get(&from.step)?, from.output.clone());
        let mut handoffs = self.handoffs.lock().unwrap_or_else(PoisonError::into_inner);
        let handed = handoffs.get_mut(&key)?;
        if version.is_some_and(|v| v.content_hash != handed.hash) {
            return None;
        }
        handed.left = handed.left.saturating_sub(1);
        if handed.left > 0 {
            return Some((handed.encoded.clone(), None));
        }
        let handed = handoffs.remove(&key)?;
        Some((handed.encoded, handed.value))
    }

    pub(super) async fn load_inputs(
        &self,
        step: &PlanStep,
        inputs: &[Vec<ArtifactVersion>],
    ) -> Result<Vec<LoadedInput>> {
        let store = self.stores.artifacts().as_ref();
        let mut loaded = Vec::with_capacity(inputs.len());
        for (spec, versions) in step.inputs.iter().zip(inputs) {
            if spec.model.is_some() {
                // An `Option<T>`: the model's bytes read as `Some`, or `null`.
                let encoded = match versions.first() {
                    Some(v) => {
                        Encoded { format: v.format.clone(), bytes: artifact_store::read_version(store, v).await? }
                    }
                    None => Encoded::new("json", bytes::Bytes::from_static(b"null")),
                };
                loaded.push(LoadedInput::Single(encoded));
                continue;
            }
            let mut parts = Vec::with_capacity(versions.len());
            let mut value = None;
            for (from, v) in spec.from.iter().zip(versions) {
                // Produced by this run in this process: the bytes are those
                // that were hashed and stored, so they need no re-reading.
                let (encoded, handoff) = self.take_handed(from, Some(v)).unwrap_or((None, None));
                // A fan-in list decodes every part; a single input taking the
                // value needs its bytes only for a retry to decode (without
                // retries they are freed now, not held while the step runs).
                let handoff = handoff.filter(|_| !spec.list);
                let keep_bytes = handoff.is_none() || step.options.retries > 0;
                let bytes = match encoded {
                    _ if !keep_bytes => bytes::Bytes::new(),
                    Some(encoded) => encoded.bytes,
                    // Streamed: only the store has the bytes.
                    None => artifact_store::read_version(store, v).await?,
                };
                parts.push(Encoded { format: v.format.clone(), bytes });
                value = handoff;
            }
            loaded.push(if spec.list {
                LoadedInput::List(parts)
            } else {
                match parts.pop() {
                    Some(p) if parts.is_empty() => match value {
                        Some(value) => LoadedInput::Value(p, value),
                        None => LoadedInput::Single(p),
                    },
                    _ => {
                        return Err(Error::usage(format_args!(
                            "input `{}` of step `{}` must have exactly one source",
                            spec.name, step.id
                        )))
                    }
                }
            });
        }
        Ok(loaded)
    }
}
