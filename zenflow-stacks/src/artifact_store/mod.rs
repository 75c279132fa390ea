//! Artifact stores.

mod object;

pub use object::{Durability, ObjectArtifactStore};
