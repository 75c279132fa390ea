//! Serving a step from the cache: its key's lookup (the latest completed
//! step run with the key, young enough, its artifacts intact), and why a
//! step that executes did.

use super::inputs::Prepared;
use super::StepRunner;
use crate::artifact_store;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::metadata::{self, StepRunRecord, StepStatus};
use crate::plan::Plan;
use crate::run::result::StepResult;
use crate::stack::stores::Stores;
use std::sync::Arc;

/// How many earlier runs a step that executes is compared with, at most,
/// to say why it did.
const EARLIER_RUNS: usize = 10;

/// What the cache holds for a cache key.
#[derive(Debug)]
pub enum Lookup {
    /// A step run whose outputs are all in the artifact store.
    Hit(metadata::CacheHit),
    /// A step run whose output (this one) is gone from the artifact store.
    Gone(Box<metadata::ArtifactVersion>),
    /// A step run whose output (this one) is damaged in the store.
    Corrupted {
        /// The output.
        artifact: Box<metadata::ArtifactVersion>,
        /// What the store says about it.
        detail: String,
    },
    /// A step run older than the time to live.
    Expired {
        /// Its age, in seconds.
        age_secs: u64,
        /// The time to live, in seconds.
        ttl_secs: u64,
    },
    /// No step run has the key.
    Miss,
}

/// Looks `key` up as the runner does: the latest completed step run with
/// it, if it is younger than `ttl_ms` (when set) and every one of its
/// artifacts is still in the store, intact
/// ([`artifact_store::version_usable`]).
pub async fn look_up(stores: &Stores, key: &str, ttl_ms: Option<u64>) -> Result<Lookup> {
    let Some(hit) = stores.metadata().find_cached(key).await? else { return Ok(Lookup::Miss) };
    if let Some(ttl_ms) = ttl_ms {
        let age_ms = u64::try_from((metadata::now() - hit.ended_at) / 1000).unwrap_or(0);
        if age_ms > ttl_ms {
            return Ok(Lookup::Expired { age_secs: age_ms / 1000, ttl_secs: ttl_ms / 1000 });
        }
    }
    for o in &hit.outputs {
        match artifact_store::version_usable(stores.artifacts().as_ref(), &o.artifact).await? {
            artifact_store::Usable::Yes => {}
            artifact_store::Usable::Gone => return Ok(Lookup::Gone(Box::new(o.artifact.clone()))),
            artifact_store::Usable::Corrupted(detail) => {
                return Ok(Lookup::Corrupted { artifact: Box::new(o.artifact.clone()), detail })
            }
        }
    }
    Ok(Lookup::Hit(hit))
}

impl StepRunner {
    /// Serves the step at `pos` from the cache if it may be (cache on, a
    /// hit for its inputs), recording it as cached; `None` when it must
    /// run, with nothing recorded. What an orchestrator that runs steps
    /// elsewhere calls first, so an unchanged step costs no process or job.
    pub async fn serve_cached(&self, pos: usize) -> Result<Option<Arc<StepResult>>> {
        let step = &self.plan.steps[pos];
        if !step.options.cache || self.options.no_cache {
            return Ok(None);
        }
        match self.prepare(pos, 1).await? {
            // Its inputs cannot be resolved: the step's own outcome.
            Err(failed) => Ok(Some(failed)),
            Ok(mut prepared) => self.try_cache(pos, &mut prepared).await,
        }
    }

    /// Records the step as served from cache if the cache holds its key.
    pub(super) async fn try_cache(&self, pos: usize, prepared: &mut Prepared) -> Result<Option<Arc<StepResult>>> {
        let step = &self.plan.steps[pos];
        let Some(key) = prepared.write.step_run.cache_key.clone() else { return Ok(None) };
        if !step.options.cache || self.options.no_cache {
            return Ok(None);
        }
        let hit = match self.cache_lookup(&key, step.options.cache_ttl_ms).await? {
            Ok(hit) => hit,
            Err(miss) => {
                prepared.miss = miss;
                return Ok(None);
            }
        };
        let mut write = prepared.write.clone();
        let sr = &mut write.step_run;
        sr.status = StepStatus::Cached;
        sr.original_step_run = Some(hit.step_run);
        sr.ended_at = Some(metadata::now());
        sr.outputs = hit.outputs;
        let outputs = match self.record(&mut write).await {
            Ok(outputs) => outputs,
            // Deleted since the lookup (a `gc` beside this run): a miss.
            Err(Error::Metadata(metadata::MetadataError::ArtifactGone(id))) => {
                tracing::warn!(step = %step.id, "the cache entry's artifact version {id} was deleted; the step will run");
                prepared.miss = Some(crate::why::Reason::ArtifactUnusable {
                    artifact: id,
                    detail: "deleted by `gc` or `runs delete` after the cache lookup".into(),
                });
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = self.register_model(step, &write, &outputs, &prepared.inputs).await {
            return self.refuse_registration(pos, write, prepared.started, e).await.map(Some);
        }
        write.step_run.outputs = outputs;
        Ok(Some(self.finish(pos, write.step_run, prepared.started.elapsed())))
    }

    /// A cache hit younger than `ttl_ms` whose artifacts are all still in
    /// the store; or why there is none, when the lookup can tell.
    pub(super) async fn cache_lookup(
        &self,
        key: &str,
        ttl_ms: Option<u64>,
    ) -> Result<std::result::Result<metadata::CacheHit, Option<crate::why::Reason>>> {
        use crate::why::Reason;
        Ok(match crate::run::step::cache::look_up(&self.stores, key, ttl_ms).await? {
            crate::run::step::cache::Lookup::Hit(hit) => Ok(hit),
            crate::run::step::cache::Lookup::Expired { age_secs, ttl_secs } => {
                Err(Some(Reason::Expired { age_secs, ttl_secs }))
            }
            crate::run::step::cache::Lookup::Gone(artifact) => {
                let store = self.stores.artifacts();
                let detail = if artifact.uri == store.uri(&artifact.content_hash) {
                    format!("{} is gone from the artifact store", artifact.uri)
                } else {
                    // Not lost: another stack on this metadata store wrote it.
                    format!(
                        "{} is not in this stack's artifact store ({}); stacks that share a metadata store \
                         should share their artifact store",
                        artifact.uri,
                        store.url()
                    )
                };
                tracing::warn!(artifact = %artifact.name, "cached artifact {detail}; the step will run again");
                Err(Some(Reason::ArtifactUnusable {
                    artifact: format!("{}@{}", artifact.name, artifact.version),
                    detail,
                }))
            }
            crate::run::step::cache::Lookup::Corrupted { artifact, detail } => {
                tracing::warn!(artifact = %artifact.name, "{detail}; the step will run again and rewrite it");
                Err(Some(Reason::ArtifactUnusable {
                    artifact: format!("{}@{}", artifact.name, artifact.version),
                    detail,
                }))
            }
            crate::run::step::cache::Lookup::Miss => Err(None),
        })
    }

    /// Why the step at `pos` executes although the cache is on for it (the
    /// plan says when it is off: [`crate::why::reasons`] reads that there,
    /// so nothing is recorded then). Best effort: a store that cannot say
    /// costs the reason, not the step.
    pub(super) async fn why_executed(&self, pos: usize, prepared: &Prepared) -> Vec<crate::why::Reason> {
        use crate::why::Reason;
        let step = &self.plan.steps[pos];
        if !step.options.cache || self.options.no_cache {
            return Vec::new();
        }
        if let Some(miss) = &prepared.miss {
            return vec![miss.clone()];
        }
        let inputs: Vec<Vec<ContentHash>> =
            prepared.inputs.iter().map(|links| links.iter().map(|a| a.content_hash).collect()).collect();
        match self.earlier(&step.id).await {
            Ok(Some((plan, sr))) => {
                let Some(old) = plan.steps.iter().find(|s| s.id == step.id) else { return vec![Reason::NoEarlierRun] };
                let mut hashes: std::collections::BTreeMap<String, Vec<ContentHash>> = Default::default();
                for link in &sr.inputs {
                    match self.stores.metadata().artifact_version(&link.artifact_version).await {
                        Ok(Some(v)) => hashes.entry(link.input.clone()).or_default().push(v.content_hash),
                        _ => return vec![Reason::NoCacheEntry],
                    }
                }
                let earlier = crate::why::Earlier { step: old, build: &plan.build, inputs: hashes };
                crate::why::compare(&earlier, step, &self.plan.build, &inputs)
            }
            Ok(None) => vec![Reason::NoEarlierRun],
            Err(e) => {
                tracing::debug!(step = %step.id, "could not look up the step's earlier run: {e}");
                Vec::new()
            }
        }
    }

    /// The plan of the latest earlier run of this pipeline in which
    /// `invocation` succeeded (executed or cached), with that step run.
    pub(super) async fn earlier(&self, invocation: &str) -> Result<Option<(Arc<Plan>, StepRunRecord)>> {
        let runs = self
            .earlier_runs
            .get_or_try_init(|| async {
                let store = self.stores.metadata();
                let mut runs = Vec::new();
                for run in store.list_runs(Some(&self.plan.pipeline), EARLIER_RUNS + 1).await? {
                    if run.id == self.run.id || run.started_at > self.run.started_at {
                        continue;
                    }
                    let Ok(plan) = run.plan() else { continue };
                    runs.push((Arc::new(plan), store.step_runs(&run.id).await?));
                }
                Ok::<_, Error>(runs)
            })
            .await?;
        Ok(runs.iter().find_map(|(plan, steps)| {
            let ok = |s: &&StepRunRecord| {
                s.invocation == invocation && matches!(s.status, StepStatus::Completed | StepStatus::Cached)
            };
            steps.iter().rev().find(ok).map(|sr| (Arc::clone(plan), sr.clone()))
        }))
    }
}
