//! Orchestrators: where a run's steps execute.
//!
//! - [`LocalOrchestrator`]: tasks in this process.
//! - [`SubprocessOrchestrator`]: each step attempt as a child process.
//! - `RayOrchestrator` (feature `ray`): each step attempt as a Ray job.
//! - [`argo`]: a run as an Argo `Workflow` for Kubernetes to run.
//! - [`external`]: the driver shared by orchestrators that run attempts
//!   outside this process, through the step entrypoint.

pub mod argo;
pub mod external;
mod local;
#[cfg(feature = "ray")]
pub mod ray;
mod ready;
mod subprocess;

pub use external::ExternalOrchestrator;
pub use local::LocalOrchestrator;
#[cfg(feature = "ray")]
pub use ray::{Ray, RayOrchestrator};
pub use subprocess::{describe_signal, Subprocess, SubprocessOrchestrator};
