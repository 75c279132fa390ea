//! Artifact stores.

mod object;

pub use object::ObjectArtifactStore;
