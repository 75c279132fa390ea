//! Cache keys (DESIGN.md §5).
//!
//! A step's cache key is the blake3 of its name, code hash and manual version,
//! its parameters (canonical JSON: keys sorted), the content hashes of its
//! inputs, and its outputs' names, types and materializers. Because inputs
//! enter by content hash, an upstream step that re-runs and produces identical
//! bytes leaves everything downstream cached.

use crate::hash::{ContentHash, FieldHasher};
use crate::plan::PlanStep;

/// Computes the cache key of `step` given the content hashes of its inputs
/// (one list per input, in input order; a fan-in has several).
pub fn cache_key(step: &PlanStep, inputs: &[Vec<ContentHash>]) -> ContentHash {
    let mut h = FieldHasher::new("zenflow.cache.v1");
    h.str(&step.step).str(&step.code_hash).str(step.version.as_deref().unwrap_or(""));
    h.field(&(step.params.len() as u64).to_le_bytes());
    for (name, value) in &step.params {
        h.str(name).str(&canonical(value.clone()).to_string());
    }
    h.field(&(inputs.len() as u64).to_le_bytes());
    for (input, hashes) in step.inputs.iter().zip(inputs) {
        h.str(&input.name).field(&[u8::from(input.list)]);
        h.field(&(hashes.len() as u64).to_le_bytes());
        for hash in hashes {
            h.field(&hash.to_hex().into_bytes());
        }
    }
    h.field(&(step.outputs.len() as u64).to_le_bytes());
    for o in &step.outputs {
        h.str(&o.name).str(&o.type_name).str(&o.materializer).field(&o.materializer_version.to_le_bytes());
    }
    h.finish()
}

/// The value with every object's keys sorted, so its JSON text is canonical
/// even where `serde_json` keeps insertion order (`preserve_order`).
pub fn canonical(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::{OutputRef, PlanInput, PlanOutput};
    use crate::step::StepOptions;

    /// A step `train` with a parameter `depth`, an input `data` from `load`
    /// and one output: the fixture of the cache's and the reasons' tests.
    pub(crate) fn step() -> PlanStep {
        PlanStep {
            id: "train".into(),
            step: "train".into(),
            code_hash: "abc".into(),
            code_items: Default::default(),
            version: None,
            params: [("depth".to_string(), serde_json::json!(3))].into_iter().collect(),
            inputs: vec![PlanInput {
                name: "data".into(),
                from: vec![OutputRef { step: "load".into(), output: "output".into() }],
                list: false,
                model: None,
            }],
            after: vec![],
            outputs: vec![PlanOutput {
                name: "output".into(),
                type_name: "f64".into(),
                materializer: "zenflow.serde".into(),
                materializer_version: 1,
            }],
            options: StepOptions::default(),
        }
    }

    #[test]
    fn every_ingredient_changes_the_key() {
        let input = vec![vec![ContentHash::of(b"data")]];
        let base = cache_key(&step(), &input);
        assert_eq!(base, cache_key(&step(), &input), "deterministic");
        let mut s = step();
        s.params.insert("depth".into(), serde_json::json!(4));
        assert_ne!(base, cache_key(&s, &input), "param");
        let mut s = step();
        s.version = Some("2".into());
        assert_ne!(base, cache_key(&s, &input), "version");
        let mut s = step();
        s.code_hash = "abd".into();
        assert_ne!(base, cache_key(&s, &input), "code");
        assert_ne!(base, cache_key(&step(), &[vec![ContentHash::of(b"other")]]), "input bytes");
        let mut s = step();
        s.outputs[0].materializer_version = 2;
        assert_ne!(base, cache_key(&s, &input), "materializer version");
        let mut s = step();
        s.id = "train_2".into();
        assert_eq!(base, cache_key(&s, &input), "the invocation id is not part of the key");
    }

    /// Keys are stored: a change to how they are derived makes every cached
    /// result unreachable, so it must be deliberate (bump the domain).
    #[test]
    fn the_key_derivation_is_stable() {
        let key = cache_key(&step(), &[vec![ContentHash::of(b"data")]]);
        assert_eq!(key.to_hex(), "7419ddb6fcd60893db88330eb75c4e9a65788948ef86b4737918762ae1edd184");
    }
}
