//! Orchestrators decide where and when each step of a run executes.
//!
//! Every orchestrator drives the same [`StepRunner`]: it only chooses the
//! order (respecting dependencies), the parallelism and the place (a thread
//! here, a child process, a job on a cluster). Failure handling is shared:
//! [`StepRunner::skip_dependents`] marks what can no longer run.

use crate::error::Error;
use crate::run::step::StepRunner;
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;

/// Runs all steps of a run.
#[async_trait]
pub trait Orchestrator: Send + Sync + fmt::Debug + 'static {
    /// Short name (`local`, `subprocess`, `ray`).
    fn name(&self) -> &str;

    /// Executes every step of `runner`'s plan in dependency order, each through
    /// [`StepRunner::run_step`]; when a step fails, its dependents are skipped
    /// and independent branches still finish. Returns when no step can run
    /// any more; step failures are results, not errors.
    async fn execute(&self, runner: Arc<StepRunner>) -> Result<(), Error>;
}
