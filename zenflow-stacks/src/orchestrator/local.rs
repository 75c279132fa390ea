//! Runs steps in this process, in parallel, as soon as their inputs are ready.

use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::task::JoinSet;
use zenflow_core::metadata::StepStatus;
use zenflow_core::{Error, Orchestrator, StepRunner};

/// The local orchestrator: each ready step runs as a task in this process
/// (sync step code on a blocking thread), at most `parallelism` at a time. A
/// step starts the moment its last dependency finishes, not level by level.
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

#[async_trait]
impl Orchestrator for LocalOrchestrator {
    fn name(&self) -> &str {
        "local"
    }

    async fn execute(&self, runner: Arc<StepRunner>) -> Result<(), Error> {
        let n = runner.plan().steps.len();
        let mut waiting: Vec<usize> = runner.dependencies().iter().map(Vec::len).collect();
        let mut skipped = vec![false; n];
        let mut ready: VecDeque<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
        let mut running = JoinSet::new();
        let mut positions = std::collections::HashMap::new();
        let mut first_error: Option<Error> = None;

        loop {
            while running.len() < self.parallelism {
                let Some(pos) = ready.pop_front() else { break };
                let runner = runner.clone();
                let task = running.spawn(async move { runner.run_step(pos).await });
                positions.insert(task.id(), pos);
            }
            let Some(joined) = running.join_next_with_id().await else { break };
            let (pos, outcome) = match joined {
                Ok((id, outcome)) => (positions.remove(&id).unwrap_or_default(), outcome),
                Err(e) => {
                    // run_step itself panicked (a bug, not a step failure):
                    // still skip what depends on that step.
                    let pos = positions.remove(&e.id()).unwrap_or_default();
                    (pos, Err(Error::usage(format!("the step runner panicked: {e}"))))
                }
            };
            let succeeded = match outcome {
                Ok(result) => matches!(result.status, StepStatus::Completed | StepStatus::Cached),
                Err(e) => {
                    tracing::error!("step `{}` could not be recorded: {e}", runner.plan().steps[pos].id);
                    first_error.get_or_insert(e);
                    false
                }
            };
            if succeeded {
                for &d in &runner.dependents()[pos] {
                    waiting[d] -= 1;
                    if waiting[d] == 0 && !skipped[d] {
                        ready.push_back(d);
                    }
                }
            } else {
                match runner.skip_dependents(pos).await {
                    Ok(positions) => positions.into_iter().for_each(|p| skipped[p] = true),
                    Err(e) => {
                        first_error.get_or_insert(e);
                        // Still never start what depends on the failure.
                        let mut stack = runner.dependents()[pos].clone();
                        while let Some(p) = stack.pop() {
                            if !std::mem::replace(&mut skipped[p], true) {
                                stack.extend(runner.dependents()[p].iter().copied());
                            }
                        }
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
