//! A step's inputs: resolved to artifact versions (model inputs through
//! the registry), which gives the step its cache key and its record
//! ([`Prepared`]), then loaded, from memory when this run produced them.
//! The resolution is one rule, [`resolve`], that the runner and a
//! forecast ([`crate::run::predict`]) share; they differ only in where an
//! upstream step's outputs are found ([`Upstream`]).

use super::{StepRunner, MODEL_INPUT_PREFIX, WORKER_KEY};
use crate::artifact_store;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::materializer::{Encoded, Handoff};
use crate::metadata::{self, ArtifactVersion, InputLink, StepRunRecord, StepRunWrite, StepStatus};
use crate::plan::{ModelInput, OutputRef, PlanStep};
use crate::run::result::StepResult;
use crate::stack::stores::Stores;
use crate::step::LoadedInput;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

/// A step's inputs resolved to artifact versions.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The versions feeding each input, in input order (none for a model
    /// alias no version holds).
    pub versions: Vec<Vec<ArtifactVersion>>,
    /// How each model input was resolved: the input's name and
    /// `{model, alias, version}` (`version` null when nobody holds the alias).
    pub models: Vec<(String, serde_json::Value)>,
}

impl Resolved {
    /// The cache key of `step` run on these inputs.
    pub fn cache_key(&self, step: &PlanStep) -> ContentHash {
        let hashes: Vec<Vec<ContentHash>> =
            self.versions.iter().map(|links| links.iter().map(|a| a.content_hash).collect()).collect();
        crate::cache::cache_key(step, &hashes)
    }
}

/// Where the outputs of a step's upstream steps are found while its inputs
/// are resolved.
pub(crate) trait Upstream {
    /// The version of output `from`, or `None` while it is not known.
    async fn output(&mut self, from: &OutputRef) -> Result<Option<ArtifactVersion>>;
}

/// The first upstream output a step reads that is not known.
#[derive(Debug)]
pub(crate) struct Unknown<'p> {
    /// The input that reads it.
    pub input: &'p str,
    /// The output.
    pub from: &'p OutputRef,
}

/// Resolves the inputs of `step`: a model input to the version holding
/// its alias in the registry of `stores` now, an upstream output through
/// `upstream`. `Ok(Err(_))` names the first upstream output `upstream`
/// does not know.
pub(crate) async fn resolve<'p>(
    stores: &Stores,
    step: &'p PlanStep,
    upstream: &mut impl Upstream,
) -> Result<std::result::Result<Resolved, Unknown<'p>>> {
    let mut resolved = Resolved { versions: Vec::with_capacity(step.inputs.len()), models: Vec::new() };
    for input in &step.inputs {
        if let Some(m) = &input.model {
            let (versions, how) = resolve_model(stores, m).await?;
            resolved.versions.push(versions);
            resolved.models.push((input.name.clone(), how));
            continue;
        }
        let mut versions = Vec::with_capacity(input.from.len());
        for from in &input.from {
            match upstream.output(from).await? {
                Some(version) => versions.push(version),
                None => return Ok(Err(Unknown { input: &input.name, from })),
            }
        }
        resolved.versions.push(versions);
    }
    Ok(Ok(resolved))
}

/// Whether an error resolving a step's inputs fails that step (a model
/// input the registry cannot resolve), rather than the run's records (the
/// store itself failed).
pub(crate) fn fails_the_step(e: &Error) -> bool {
    matches!(e, Error::Registry(r) if !matches!(r, crate::registry::RegistryError::Store(_)))
}

/// The artifact version of the model version holding `m.alias` now (none
/// when nobody holds it), and the record of the resolution.
async fn resolve_model(stores: &Stores, m: &ModelInput) -> Result<(Vec<ArtifactVersion>, serde_json::Value)> {
    let registry = stores.registry()?;
    let Some(version) = crate::registry::holder(registry, &m.model, &m.alias).await? else {
        return Ok((Vec::new(), serde_json::json!({"model": m.model, "alias": m.alias, "version": null})));
    };
    let artifact = stores.metadata().artifact_version(&version.artifact_version).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "artifact version `{}` of model {} v{}",
            version.artifact_version, version.model, version.version
        ))
    })?;
    let resolved = serde_json::json!({"model": m.model, "alias": m.alias, "version": version.version});
    Ok((vec![artifact], resolved))
}

/// The outputs of a run's steps as a runner sees them: its own results,
/// else the latest record of the step (a step another process ran).
struct RunOutputs<'r> {
    runner: &'r StepRunner,
    /// The latest record of each step read so far, by invocation.
    recorded: HashMap<String, Option<StepRunRecord>>,
}

impl Upstream for RunOutputs<'_> {
    async fn output(&mut self, from: &OutputRef) -> Result<Option<ArtifactVersion>> {
        let pos = self.runner.position(&from.step)?;
        let in_memory = self.runner.result(pos).and_then(|res| res.output(&from.output).cloned());
        if in_memory.is_some() {
            return Ok(in_memory);
        }
        if !self.recorded.contains_key(&from.step) {
            let runner = self.runner;
            let latest = runner.stores.metadata().latest_step_run(&runner.run.id, &from.step).await?;
            self.recorded.insert(from.step.clone(), latest);
        }
        Ok(self.recorded[&from.step]
            .as_ref()
            .filter(|r| matches!(r.status, StepStatus::Completed | StepStatus::Cached))
            .and_then(|r| r.outputs.iter().find(|o| o.output == from.output))
            .map(|o| o.artifact.clone()))
    }
}

/// A step about to run: its record (running), resolved inputs, and how
/// its model inputs were resolved.
pub(super) struct Prepared {
    /// Why the cache could not serve the step, when its lookup said.
    pub(super) miss: Option<crate::why::Reason>,
    pub(super) write: StepRunWrite,
    pub(super) inputs: Vec<Vec<ArtifactVersion>>,
    pub(super) models: Vec<(String, serde_json::Value)>,
    pub(super) started: std::time::Instant,
    pub(super) step_run_id: String,
}

impl StepRunner {
    /// Resolves the step's inputs and builds its record; `Err` holds the
    /// result of a step that failed before it could start (recorded).
    pub(super) async fn prepare(
        &self,
        pos: usize,
        first: u32,
    ) -> Result<std::result::Result<Prepared, Arc<StepResult>>> {
        let step = &self.plan.steps[pos];
        let started = std::time::Instant::now();
        let started_at = metadata::now();
        let step_run_id = uuid::Uuid::now_v7().to_string();
        let resolved = match self.resolve_inputs(step).await {
            Ok(resolved) => resolved,
            Err(e) if fails_the_step(&e) => {
                return self.fail_early(pos, step_run_id, started, started_at, e.to_string()).await.map(Err)
            }
            Err(e) => return Err(e),
        };
        let key = resolved.cache_key(step).to_hex();
        let Resolved { versions: inputs, models } = resolved;
        let input_links: Vec<InputLink> = step
            .inputs
            .iter()
            .zip(&inputs)
            .flat_map(|(spec, versions)| {
                versions.iter().enumerate().map(|(i, v)| InputLink {
                    input: spec.name.clone(),
                    position: i as u32,
                    artifact_version: v.id.clone(),
                })
            })
            .collect();

        let mut record = self.bare_record(pos, step_run_id.clone(), StepStatus::Running, started_at);
        record.cache_key = Some(key.clone());
        record.inputs = input_links;
        let mut write = StepRunWrite { step_run: record, new_outputs: Vec::new() };
        for (input, resolved) in &models {
            write.step_run.metadata.insert(format!("{MODEL_INPUT_PREFIX}{input}"), resolved.clone());
        }
        if self.verify_code {
            // A worker: which process runs it, for the next attempt to tell
            // whether this one is still alive.
            write.step_run.metadata.insert(
                WORKER_KEY.into(),
                serde_json::json!({"host": crate::run::entrypoint::host(), "pid": std::process::id(), "attempt": first}),
            );
        }

        Ok(Ok(Prepared { miss: None, write, inputs, models, started, step_run_id }))
    }

    /// The inputs of `step` in this run: upstream outputs from this
    /// runner's results or the run's records.
    pub(super) async fn resolve_inputs(&self, step: &PlanStep) -> Result<Resolved> {
        let mut upstream = RunOutputs { runner: self, recorded: HashMap::new() };
        resolve(&self.stores, step, &mut upstream).await?.map_err(|Unknown { input, from }| {
            Error::NotFound(format!(
                "input `{input}` of step `{}` needs output `{}` of step `{}`, which has not completed in run \
                 `{}`; run that step first",
                step.id, from.output, from.step, self.run.name
            ))
        })
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
