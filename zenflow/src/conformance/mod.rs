//! Conformance suites, as `object_store` has its `integration` module: one
//! per extension trait, each a set of checks that panic with a message
//! naming the broken promise. An implementation's tests call the suite's
//! `run_all` with a fresh instance.
//!
//! - [`artifact_store`], [`metadata`] and [`registry`]: the store and
//!   registry traits (from `zenflow-core`);
//! - [`orchestrator`]: the [`Orchestrator`](crate::ext::Orchestrator) trait,
//!   through whole pipeline runs. Its fixture steps are registered in every
//!   binary built with the `conformance` feature.

pub use zenflow_core::conformance::{artifact_store, metadata, registry};

pub mod orchestrator;
