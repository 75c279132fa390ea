//! Orchestrators: where a run's steps execute.
//!
//! - [`LocalOrchestrator`]: tasks in this process.
//! - [`SubprocessOrchestrator`]: each step attempt as a child process.
//! - [`external`]: the driver shared by orchestrators that run attempts
//!   outside this process, through the step entrypoint.

pub mod external;
mod local;
mod subprocess;

pub use external::ExternalOrchestrator;
pub use local::LocalOrchestrator;
pub use subprocess::{describe_signal, Subprocess, SubprocessOrchestrator};
