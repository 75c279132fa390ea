//! Trying each component of a stack, as `stacks check` reports it.

use crate::config::Stacks;
use zenflow_core::metadata::MetadataStore;
use zenflow_core::Result;

/// One component of a stack, tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Which: `metadata store`, `artifact store`, `orchestrator` or
    /// `protection`.
    pub component: &'static str,
    /// What was found, or why it failed.
    pub result: std::result::Result<String, String>,
}

impl Stacks {
    /// Tries each component of stack `name`: connects to its metadata store
    /// (creating or migrating its schema), writes, reads back and deletes a
    /// probe object in its artifact store, names its orchestrator, and
    /// compares the aliases the stack declares protected with what the
    /// registry protects. An error only when the stack is not declared.
    pub fn check(&self, name: &str) -> Result<Vec<Probe>> {
        let config = self.config(name)?;
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(zenflow_core::Error::Runtime)?;
        let metadata = self.open_metadata(&config).map_err(|e| e.to_string());
        let metadata_result = match &metadata {
            Ok(store) => rt
                .block_on(store.list_runs(None, 1))
                .map(|_| format!("{} (schema current)", store.url()))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        let artifact_result = match self.open_artifacts(&config) {
            Ok(store) => rt.block_on(probe_artifacts(store.as_ref())),
            Err(e) => Err(e.to_string()),
        };
        let mut probes = vec![
            Probe { component: "metadata store", result: metadata_result },
            Probe { component: "artifact store", result: artifact_result },
            Probe { component: "orchestrator", result: Ok(config.orchestrator.to_string()) },
        ];
        if let Ok(store) = &metadata {
            let result = rt.block_on(protection(store.as_ref(), &config.protected_aliases));
            probes.push(Probe { component: "protection", result });
        }
        Ok(probes)
    }
}

/// Writes, reads back (verified) and deletes a probe object.
async fn probe_artifacts(store: &dyn zenflow_core::ArtifactStore) -> std::result::Result<String, String> {
    let probe = format!("zenflow stack check {}", zenflow_core::metadata::new_id()).into_bytes();
    let hash = zenflow_core::ContentHash::of(&probe);
    store.put(&hash, probe.clone().into()).await.map_err(|e| e.to_string())?;
    let back = zenflow_core::artifact_store::get_verified(store, &hash).await.map_err(|e| e.to_string())?;
    store.delete(&hash).await.map_err(|e| e.to_string())?;
    if back.as_ref() != probe.as_slice() {
        return Err("the probe object read back differently".to_string());
    }
    Ok(format!("{} (wrote, read back and deleted a probe object)", store.url()))
}

/// Whether the registry protects what the stack file declares protected.
async fn protection(store: &dyn MetadataStore, declared: &[String]) -> std::result::Result<String, String> {
    let Some(registry) = store.registry() else { return Ok("no model registry in this store".into()) };
    let diff = zenflow_core::registry::compare_protection(registry, declared).await.map_err(|e| e.to_string())?;
    let list =
        |pairs: &[(String, String)]| pairs.iter().map(|(m, a)| format!("{m}@{a}")).collect::<Vec<_>>().join(", ");
    if let Some((m, a)) = diff.unprotected.first() {
        return Err(format!(
            "declared protected in zenflow.toml but not by the registry, so any stack on this store can move them: \
             {}; protect them with `models protect {m} --alias {a}`",
            list(&diff.unprotected)
        ));
    }
    Ok(match (declared.is_empty(), diff.undeclared.is_empty()) {
        (_, false) => {
            format!("the registry protects {} (this stack file does not declare them)", list(&diff.undeclared))
        }
        (true, true) => "no protected alias".into(),
        (false, true) => format!("the registry protects what zenflow.toml declares ({})", declared.join(", ")),
    })
}
