//! Runs steps in this process, in parallel, as soon as their inputs are ready.

use super::ready::ReadyQueue;
use async_trait::async_trait;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use zenflow_core::metadata::StepStatus;
use zenflow_core::{Error, Orchestrator, StepRunner};

/// The local orchestrator: ready steps run as tasks in this process (sync
/// step code in place or on a blocking thread), at most `parallelism` at a
/// time. A step starts the moment its last dependency finishes, not level
/// by level.
#[derive(Debug, Clone)]
pub struct LocalOrchestrator {
    parallelism: usize,
}

impl Default for LocalOrchestrator {
    /// Parallelism = the number of cores.
    fn default() -> Self {
        LocalOrchestrator::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

impl LocalOrchestrator {
    /// Runs at most `parallelism` steps at once (at least 1).
    pub fn new(parallelism: usize) -> Self {
        LocalOrchestrator { parallelism: parallelism.max(1) }
    }

    /// The configured parallelism.
    pub fn parallelism(&self) -> usize {
        self.parallelism
    }
}

/// What the tasks of one run share.
struct Schedule {
    ready: ReadyQueue,
    first_error: Option<Error>,
}

struct Shared {
    runner: Arc<StepRunner>,
    schedule: Mutex<Schedule>,
    /// Wakes the orchestrator when a task leaves ready steps to others.
    more_ready: Notify,
}

impl Shared {
    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs step `pos`, then, while steps are ready, the next one, in this
    /// task: a chain runs without a task spawned or woken per step. Other
    /// ready steps are left to the orchestrator, which starts them as tasks
    /// of their own while there is room.
    async fn run_from(self: Arc<Self>, mut pos: usize) {
        loop {
            let runner = &self.runner;
            let outcome = AssertUnwindSafe(runner.run_step(pos)).catch_unwind().await.unwrap_or_else(|payload| {
                // A bug, not a step failure: still skip what depends on that step.
                let message = zenflow_core::panic::message(payload);
                Err(Error::Panicked(format!("the step runner panicked: {message}")))
            });
            let succeeded = match outcome {
                Ok(result) => matches!(result.status, StepStatus::Completed | StepStatus::Cached),
                Err(e) => {
                    tracing::error!("step `{}` could not be recorded: {e}", runner.plan().steps[pos].id);
                    self.schedule().first_error.get_or_insert(e);
                    false
                }
            };
            if !succeeded {
                // Records them as skipped; they would never start anyway.
                if let Err(e) = runner.skip_dependents(pos).await {
                    self.schedule().first_error.get_or_insert(e);
                }
            }
            let next = {
                let mut schedule = self.schedule();
                if succeeded {
                    schedule.ready.succeeded(pos);
                }
                let next = schedule.ready.next();
                if schedule.ready.has_ready() {
                    self.more_ready.notify_one();
                }
                next
            };
            match next {
                Some(p) => pos = p,
                None => return,
            }
        }
    }
}

#[async_trait]
impl Orchestrator for LocalOrchestrator {
    fn name(&self) -> &str {
        "local"
    }

    async fn execute(&self, runner: Arc<StepRunner>) -> Result<(), Error> {
        let ready = ReadyQueue::new(runner.dependencies());
        let shared = Arc::new(Shared {
            runner,
            schedule: Mutex::new(Schedule { ready, first_error: None }),
            more_ready: Notify::new(),
        });
        let mut tasks = JoinSet::new();
        loop {
            {
                let mut schedule = shared.schedule();
                while tasks.len() < self.parallelism {
                    let Some(pos) = schedule.ready.next() else { break };
                    tasks.spawn(shared.clone().run_from(pos));
                }
            }
            if tasks.is_empty() {
                break;
            }
            tokio::select! {
                joined = tasks.join_next() => {
                    if let Some(Err(e)) = joined {
                        // Scheduling itself failed (a bug): what that task
                        // would have run next never starts.
                        shared
                            .schedule()
                            .first_error
                            .get_or_insert(Error::Panicked(format!("a task of the local orchestrator failed: {e}")));
                    }
                }
                () = shared.more_ready.notified() => {}
            }
        }
        let error = shared.schedule().first_error.take();
        error.map_or(Ok(()), Err)
    }
}
