//! Orchestrators.

mod local;

pub use local::LocalOrchestrator;
