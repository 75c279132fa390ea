//! A run in a list: what `runs list` prints, and its `--json` schema.

use super::format::duration;
use serde::{Deserialize, Serialize};
use zenflow_core::metadata::{RunRecord, RunStatus};

/// A run as `runs list --json` gives it (one object of its array).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Run id.
    pub id: String,
    /// Run name.
    pub name: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Stack name.
    pub stack: String,
    /// Status.
    pub status: RunStatus,
    /// Git commit, when known.
    pub git_commit: Option<String>,
    /// Start time (RFC 3339, UTC).
    pub started_at: String,
    /// End time (RFC 3339, UTC), while it has not ended `None`.
    pub ended_at: Option<String>,
    /// Wall time in milliseconds, while it has not ended `None`.
    pub duration_ms: Option<f64>,
}

impl RunSummary {
    /// The summary of `run`.
    pub fn of(run: &RunRecord) -> RunSummary {
        RunSummary {
            id: run.id.clone(),
            name: run.name.clone(),
            pipeline: run.pipeline.clone(),
            stack: run.stack.clone(),
            status: run.status,
            git_commit: run.git_commit.clone(),
            started_at: zenflow_core::time::rfc3339(run.started_at),
            ended_at: run.ended_at.map(zenflow_core::time::rfc3339),
            duration_ms: run.duration().map(|d| d.as_secs_f64() * 1000.0),
        }
    }
}

/// The runs as a table for a terminal, one line each, newest first, the
/// statuses coloured as `colour` says.
pub fn runs_table(runs: &[RunRecord], colour: super::Colour) -> String {
    let name_width = runs.iter().map(|r| r.name.chars().count()).max().unwrap_or(0).max(3);
    let mut out =
        format!("{:<name_width$}  {:<9}  {:<19}  {:>9}  PIPELINE\n", "RUN", "STATUS", "STARTED (UTC)", "DURATION");
    for r in runs {
        let took = r.duration().map_or("—".into(), |d| duration(d.as_secs_f64() * 1000.0));
        out.push_str(&format!(
            "{:<name_width$}  {}  {:<19}  {:>9}  {}\n",
            r.name,
            colour.status(r.status.as_str(), 9),
            zenflow_core::time::human(r.started_at),
            took,
            r.pipeline
        ));
    }
    out
}
