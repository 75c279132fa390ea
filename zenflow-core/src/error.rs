//! Error types shared by every zenflow component.
//!
//! Each error names the thing that went wrong (a step, an artifact, a store) and,
//! where there is one, the fix. Components keep their own small error enums and
//! convert into [`Error`] at the API boundary.

use std::fmt;

pub use crate::step::BoxError;

/// Result alias used across the public API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error the zenflow API returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline could not be turned into a plan.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// The artifact store failed.
    #[error(transparent)]
    Store(#[from] crate::artifact_store::StoreError),
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    /// A value could not be turned into bytes or back.
    #[error(transparent)]
    Materialize(#[from] crate::materializer::MaterializeError),
    /// The model registry refused or failed.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// A step failed; the message carries the step's own error.
    #[error(transparent)]
    Step(#[from] crate::step::StepError),
    /// The run finished but a step failed; the result is inside.
    #[error(transparent)]
    RunFailed(crate::run::result::RunFailed),
    /// An output of a run was requested that the run does not have.
    #[error("{0}")]
    NotFound(String),
    /// Invalid use of the API, with a message that says what to do instead.
    #[error("{0}")]
    Usage(String),
    /// The async runtime could not be started.
    #[error("could not start the zenflow runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A bug in zenflow, not in the pipeline: a task of its own panicked
    /// (what it was doing, and the panic's message).
    #[error("{0}: this is a bug in zenflow, please report it")]
    Panicked(String),
    /// The run ended, but its end could not be recorded; what its steps
    /// did, as the run saw it, is inside.
    #[error(transparent)]
    Unrecorded(Box<crate::run::result::Unrecorded>),
}

impl Error {
    /// Builds a [`Error::Usage`] error from anything printable.
    pub fn usage(msg: impl fmt::Display) -> Self {
        Error::Usage(msg.to_string())
    }
}

impl From<crate::stack::stores::BlockingError> for Error {
    fn from(e: crate::stack::stores::BlockingError) -> Self {
        match e {
            crate::stack::stores::BlockingError::Runtime(io) => Error::Runtime(io),
            e @ crate::stack::stores::BlockingError::InAsync => Error::usage(e),
        }
    }
}
