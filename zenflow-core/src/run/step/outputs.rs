//! A step's outputs: encoded values stored (or kept inline) and described
//! as new artifact versions.

use super::StepRunner;
use crate::artifact_store::StoreError;
use crate::materializer::EncodedValue;
use crate::metadata::NewArtifact;
use crate::plan::PlanStep;

impl StepRunner {
    pub(super) async fn save_outputs(
        &self,
        step: &PlanStep,
        values: Vec<EncodedValue>,
    ) -> std::result::Result<Vec<NewArtifact>, StoreError> {
        let store = self.stores.artifacts();
        let limit = self.stores.inline_limit();
        // Streamed encodings (large by definition) always go to the store,
        // which hashes them as it writes them.
        let inline = |v: &EncodedValue| v.streamed.is_none() && v.encoded.bytes.len() <= limit;
        let puts = values.iter().map(|v| async {
            match (&v.streamed, v.hash) {
                (Some(streamed), _) => store.put_hashed(streamed.write.clone()).await.map(Some),
                (None, Some(hash)) if !inline(v) => store.put(&hash, v.encoded.bytes.clone()).await.map(|()| None),
                _ => Ok(None),
            }
        });
        let stored = futures::future::try_join_all(puts).await?;
        let mut artifacts = Vec::with_capacity(values.len());
        for ((o, v), stored) in step.outputs.iter().zip(values).zip(stored) {
            let inline = inline(&v);
            let mut metadata = v.metadata;
            let content_hash = match (stored, v.hash) {
                (Some((hash, len)), _) => {
                    metadata.size = len;
                    hash
                }
                (None, Some(hash)) => hash,
                (None, None) => {
                    return Err(StoreError::Backend {
                        store: store.url(),
                        message: format!("output `{}` of step `{}` has no content hash", o.name, step.id),
                    })
                }
            };
            artifacts.push(NewArtifact {
                output: o.name.clone(),
                name: format!("{}.{}.{}", self.plan.pipeline, step.id, o.name),
                uri: if inline { format!("inline:{content_hash}") } else { store.uri(&content_hash) },
                inline: inline.then(|| v.encoded.bytes.clone()),
                content_hash,
                type_name: v.type_name.to_string(),
                materializer: v.materializer.to_string(),
                materializer_version: v.materializer_version,
                format: v.encoded.format,
                metadata,
            });
        }
        Ok(artifacts)
    }
}
