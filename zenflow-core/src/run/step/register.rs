//! Registering a step's output as a version of a model, or refusing to.

use super::StepRunner;
use crate::error::Result;
use crate::metadata::{ArtifactVersion, OutputLink, StepRunWrite, StepStatus};
use crate::plan::PlanStep;
use crate::run::result::StepResult;
use std::sync::Arc;

impl StepRunner {
    /// Registers the output of a step with `model = "..."` as a version of
    /// that model (a no-op when its bytes are already a version of it).
    pub(super) async fn register_model(
        &self,
        step: &PlanStep,
        write: &StepRunWrite,
        outputs: &[OutputLink],
        inputs: &[Vec<ArtifactVersion>],
    ) -> std::result::Result<(), String> {
        let Some(model) = &step.options.model else { return Ok(()) };
        let Some(output) = outputs.first() else {
            return Err(format!("step `{}` registers model `{model}`, but recorded no output", step.id));
        };
        let registry = self.stores.registry().map_err(|e| e.to_string())?;
        let artifact = &output.artifact;
        // What the producing step run logged (for a cached step, the original).
        let produced_here = artifact.producer_step_run == write.step_run.id;
        let (metadata, git_commit) = if produced_here {
            (write.step_run.metadata.clone(), self.run.git_commit.clone())
        } else {
            let original =
                self.stores.metadata().step_run(&artifact.producer_step_run).await.map_err(|e| e.to_string())?;
            let run = self.stores.metadata().get_run(&artifact.run_id).await.map_err(|e| e.to_string())?;
            (original.map(|o| o.metadata).unwrap_or_default(), run.and_then(|r| r.git_commit))
        };
        let mut tags: std::collections::BTreeMap<String, String> = metadata
            .get(crate::context::MODEL_TAGS)
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_default();
        tags.entry("pipeline".into()).or_insert_with(|| self.plan.pipeline.clone());
        tags.entry("stack".into()).or_insert_with(|| self.stores.name().to_string());
        let new = crate::registry::NewModelVersion {
            model: model.clone(),
            artifact_version: artifact.id.clone(),
            content_hash: artifact.content_hash,
            run_id: Some(artifact.run_id.clone()),
            step_run: Some(artifact.producer_step_run.clone()),
            git_commit,
            code_hashes: self.plan.steps.iter().map(|s| (s.id.clone(), s.code_hash.clone())).collect(),
            data_hashes: step
                .inputs
                .iter()
                .zip(inputs)
                .flat_map(|(spec, versions)| {
                    versions
                        .iter()
                        .map(|v| crate::registry::DataHash { input: spec.name.clone(), content_hash: v.content_hash })
                })
                .collect(),
            metrics: metadata.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect(),
            tags,
            samples: metadata
                .get(crate::context::MODEL_SAMPLES)
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default(),
        };
        let version = registry.register(&new).await.map_err(|e| format!("could not register model `{model}`: {e}"))?;
        tracing::info!(step = %step.id, "registered {} v{}", version.model, version.version);
        Ok(())
    }

    /// Re-records a step whose model could not be registered as failed.
    pub(super) async fn refuse_registration(
        &self,
        pos: usize,
        mut write: StepRunWrite,
        started: std::time::Instant,
        error: String,
    ) -> Result<Arc<StepResult>> {
        write.step_run.status = StepStatus::Failed;
        write.step_run.error = Some(error);
        write.step_run.outputs.clear();
        write.new_outputs.clear();
        self.record(&mut write).await?;
        Ok(self.finish(pos, write.step_run, started.elapsed()))
    }
}
