//! The exit codes of a pipeline binary, and the errors that carry them.

use crate::run_config::ConfigError;
use zenflow_core::Error;

/// The exit codes of a pipeline binary.
pub mod exit {
    /// The run completed and every quality gate passed.
    pub const SUCCESS: u8 = 0;
    /// A step failed (or the stores failed).
    pub const STEP_FAILED: u8 = 1;
    /// Bad usage or configuration: unknown stack, bad config, a `--set` key
    /// that does not exist or has the wrong type.
    pub const USAGE: u8 = 2;
    /// The pipeline ran, but a check failed its quality gate.
    pub const GATE_FAILED: u8 = 3;
    /// A promotion lost a compare-and-swap race (another promotion moved
    /// the alias first), or a deployment was rolled back.
    pub const CONFLICT: u8 = 4;
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl CliError {
    pub(crate) fn usage(message: impl std::fmt::Display) -> Self {
        CliError { code: exit::USAGE, message: message.to_string() }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::usage(e)
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        use zenflow_core::metadata::MetadataError;
        let e = match e {
            Error::Registry(r) => return r.into(),
            other => other,
        };
        let code = match &e {
            Error::Plan(_) | Error::Usage(_) | Error::NotFound(_) => exit::USAGE,
            Error::Metadata(
                MetadataError::NotZenflow { .. } | MetadataError::NewerSchema { .. } | MetadataError::RunNameTaken(_),
            ) => exit::USAGE,
            _ => exit::STEP_FAILED,
        };
        CliError { code, message: e.to_string() }
    }
}

impl From<zenflow_core::metadata::MetadataError> for CliError {
    fn from(e: zenflow_core::metadata::MetadataError) -> Self {
        Error::from(e).into()
    }
}

impl From<zenflow_core::artifact_store::StoreError> for CliError {
    fn from(e: zenflow_core::artifact_store::StoreError) -> Self {
        Error::from(e).into()
    }
}

pub(crate) type CliResult<T = u8> = Result<T, CliError>;

impl From<zenflow_core::stack::BlockingError> for CliError {
    fn from(e: zenflow_core::stack::BlockingError) -> Self {
        Error::from(e).into()
    }
}
