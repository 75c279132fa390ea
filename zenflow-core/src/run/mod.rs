//! Runs: starting one, running its steps, recording what they did, and
//! closing it.
//!
//! The files read top to bottom, each using only those before it:
//! [`options`] (what a caller sets), [`result`] (what a run did),
//! [`liveness`] (heartbeat and run lock), [`step`] (the [`StepRunner`]:
//! inputs, cache, execution, outputs, model registration), [`read`] (a run read back), [`outcome`](mod@outcome)
//! (step states, the run's status, closing a run), [`predict`](mod@predict) (what the
//! cache would serve), [`start`] (starting and driving a run), and
//! [`entrypoint`] (one step in a process of its own).

pub mod entrypoint;
pub mod find;
pub mod liveness;
pub mod options;
pub mod outcome;
pub mod predict;
pub mod read;
pub mod result;
pub mod start;
pub mod step;

pub use find::{find_run, RUN_REFERENCE_HELP};
pub use options::{Observer, RunEvent, RunOptions};
pub use outcome::{close_ended, close_if_done, outcome, states_from_records, Outcome, StepState};
pub use predict::{predict, Forecast, RunReason};
pub use result::{RunFailed, RunResult, StepResult, Unrecorded};
pub use start::{apply_run_options, execute_plan, spawn_heartbeat, start_run};
pub use step::{StepRunner, MODEL_INPUT_PREFIX};
