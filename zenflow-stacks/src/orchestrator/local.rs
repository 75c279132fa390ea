//! Runs steps in this process, in parallel, as soon as their inputs are ready.

use async_trait::async_trait;
use futures::FutureExt;
use std::collections::VecDeque;
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
    /// Dependencies of each step that have not succeeded. A step downstream
    /// of a failure never reaches 0, so it never starts.
    waiting: Vec<usize>,
    /// Steps whose dependencies all succeeded, not yet started.
    ready: VecDeque<usize>,
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
                let message = zenflow_core::context::panic_payload_message(payload);
                Err(Error::usage(format!("the step runner panicked: {message}")))
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
                    for &d in &runner.dependents()[pos] {
                        schedule.waiting[d] -= 1;
                        if schedule.waiting[d] == 0 {
                            schedule.ready.push_back(d);
                        }
                    }
                }
                let next = schedule.ready.pop_front();
                if !schedule.ready.is_empty() {
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
        let n = runner.plan().steps.len();
        let waiting: Vec<usize> = runner.dependencies().iter().map(Vec::len).collect();
        let ready = (0..n).filter(|&i| waiting[i] == 0).collect();
        let shared = Arc::new(Shared {
            runner,
            schedule: Mutex::new(Schedule { waiting, ready, first_error: None }),
            more_ready: Notify::new(),
        });
        let mut tasks = JoinSet::new();
        loop {
            {
                let mut schedule = shared.schedule();
                while tasks.len() < self.parallelism {
                    let Some(pos) = schedule.ready.pop_front() else { break };
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
                        shared.schedule().first_error.get_or_insert(Error::usage(format!(
                            "a task of the local orchestrator failed: {e}"
                        )));
                    }
                }
                () = shared.more_ready.notified() => {}
            }
        }
        let error = shared.schedule().first_error.take();
        error.map_or(Ok(()), Err)
    }
}
