//! What a caller can set for one run, and the events it can watch.

use super::result::StepResult;
use std::sync::Arc;

/// Something that happened in a run, for progress displays and logs.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// A step is about to be resolved (cache lookup or execution).
    StepStarted {
        /// Invocation id.
        invocation: &'a str,
    },
    /// A step reached a final state.
    StepFinished {
        /// Its result.
        result: &'a StepResult,
    },
}

/// Receives [`RunEvent`]s; called from the runtime's threads.
pub type Observer = Arc<dyn Fn(&RunEvent<'_>) + Send + Sync>;

/// Per-run switches.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Disable the cache for every step of this run (`--no-cache`).
    pub no_cache: bool,
    /// Run name; generated from the pipeline name and the time when absent.
    pub run_name: Option<String>,
    /// Called on every [`RunEvent`].
    pub observer: Option<Observer>,
    /// Also keep what the step prints to this process's stdout and stderr
    /// with its log (still passed through to where they pointed). The file
    /// descriptors are the process's, so this is for processes that run one
    /// step at a time: what the step entrypoint sets.
    pub capture_stdio: bool,
    /// Reuse no cached result older than this (`--cache-ttl`), whatever the
    /// step allows.
    pub cache_ttl: Option<std::time::Duration>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("no_cache", &self.no_cache)
            .field("run_name", &self.run_name)
            .field("observer", &self.observer.is_some())
            .field("capture_stdio", &self.capture_stdio)
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}
