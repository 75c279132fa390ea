//! Helpers for tests of pipelines (feature `testing`): throwaway stacks, a
//! run in one call, and assertions on what each step did.
//!
//! ```
//! use zenflow::prelude::*;
//! use zenflow::testing::{self, RunAssert};
//!
//! #[step]
//! fn double(#[param] x: i64) -> i64 {
//!     x * 2
//! }
//!
//! #[pipeline]
//! fn doubling() -> Handle<i64> {
//!     double(21)
//! }
//!
//! let stack = testing::TestStack::new(); // a temporary folder, removed when dropped
//! let run = testing::run(&stack, &doubling, &()).unwrap();
//! assert_eq!(run.output().unwrap(), 42);
//! run.assert_step("double", StepStatus::Completed);
//! let again = testing::run(&stack, &doubling, &()).unwrap();
//! again.assert_all(StepStatus::Cached);
//! ```

use crate::{Error, Pipeline, Result, RunResult, Stack, StepStatus};

pub mod faults;

/// A stack in a temporary folder (`.zenflow/` inside it), removed when
/// dropped: what [`crate::local_stack`] gives, isolated per test.
pub struct TestStack {
    stack: Stack,
    dir: tempfile::TempDir,
}

impl TestStack {
    /// A fresh local stack in a new temporary folder.
    ///
    /// # Panics
    ///
    /// When no temporary folder can be made or the stores cannot be opened
    /// in it: a broken test machine.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder for the test stack");
        let stack = crate::local_stack_at(dir.path()).expect("a local stack in a temporary folder");
        TestStack { stack, dir }
    }

    /// The folder the stack keeps its state in (its project root).
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The stack.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// The same folder with the stack changed by `f`
    /// (`TestStack::new().map(|s| s.with_inline_limit(0))`).
    pub fn map(self, f: impl FnOnce(Stack) -> Stack) -> Self {
        TestStack { stack: f(self.stack), dir: self.dir }
    }
}

impl Default for TestStack {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for TestStack {
    type Target = Stack;

    fn deref(&self) -> &Stack {
        &self.stack
    }
}

/// Runs `pipeline` with `config` on `stack`, and gives back its result
/// whether or not a step failed (a failed run is still a result to assert
/// on); other errors (the plan, the stores) are errors.
pub fn run<P: Pipeline>(stack: &Stack, pipeline: &P, config: &P::Config) -> Result<RunResult<P::Output>> {
    match pipeline.run(stack, config) {
        Ok(run) => Ok(run),
        Err(Error::RunFailed(failed)) => Ok(failed.0.into_typed()),
        Err(e) => Err(e),
    }
}

/// Assertions on a run's steps, with messages that show the whole run.
pub trait RunAssert {
    /// Asserts the final status of invocation `step`.
    fn assert_step(&self, step: &str, status: StepStatus) -> &Self;
    /// Asserts that every step has `status`.
    fn assert_all(&self, status: StepStatus) -> &Self;
    /// Asserts exactly which invocations have `status`, in plan order.
    fn assert_with_status(&self, status: StepStatus, steps: &[&str]) -> &Self;
}

impl<O> RunAssert for RunResult<O> {
    #[track_caller]
    fn assert_step(&self, step: &str, status: StepStatus) -> &Self {
        match self.step(step) {
            Some(s) => assert_eq!(s.status, status, "step `{step}`:\n{}", self.summary()),
            None => panic!("run has no finished step `{step}`:\n{}", self.summary()),
        }
        self
    }

    #[track_caller]
    fn assert_all(&self, status: StepStatus) -> &Self {
        assert_eq!(self.steps().len(), self.plan().steps.len(), "not every step finished:\n{}", self.summary());
        let others: Vec<&str> =
            self.steps().iter().filter(|s| s.status != status).map(|s| s.invocation.as_str()).collect();
        assert!(others.is_empty(), "steps {others:?} are not {status}:\n{}", self.summary());
        self
    }

    #[track_caller]
    fn assert_with_status(&self, status: StepStatus, steps: &[&str]) -> &Self {
        assert_eq!(self.with_status(status), steps, "steps that are {status}:\n{}", self.summary());
        self
    }
}

/// The current time as the metadata store records it (microseconds since
/// the Unix epoch), for records a test writes by hand.
pub fn now() -> crate::metadata::Timestamp {
    zenflow_core::metadata::now()
}

/// A new unique id, as runs, step runs and artifact versions have.
pub fn unique_id() -> String {
    zenflow_core::metadata::new_id()
}
