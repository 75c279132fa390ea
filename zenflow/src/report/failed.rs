//! The report of a run that could not start or be recorded.

use super::format::{code, text, xml};
use super::junit::JunitSuite;
use super::markdown::marker;
use super::*;
use std::fmt::Write as _;

/// The report of a run that could not start or be recorded (the stack could
/// not be opened, its metadata store was unreachable, the configuration was
/// wrong): CI still gets a PR comment, a JSON report and a failed test case,
/// saying why.
#[derive(Clone, Copy, Debug)]
pub struct FailedToRun<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// The stack it was to run on.
    pub stack: &'a str,
    /// What went wrong.
    pub error: &'a str,
    /// What the run's steps did, as the run saw it, when it ran but its end
    /// could not be recorded ([`FailedToRun::steps_of`]); empty when it
    /// never started.
    pub steps: &'a [StepReport],
}

impl FailedToRun<'_> {
    /// The steps of `run` that finished, from its own memory, in plan order.
    pub fn steps_of(run: &zenflow_core::run::Unrecorded) -> Vec<StepReport> {
        run.plan
            .steps
            .iter()
            .filter_map(|ps| {
                let r = run.steps.iter().find(|r| r.invocation == ps.id)?;
                Some(StepReport {
                    id: ps.id.clone(),
                    step: ps.step.clone(),
                    status: r.status.as_str().into(),
                    duration_ms: Some(r.duration.as_secs_f64() * 1000.0),
                    attempts: r.attempts,
                    error: r.error.clone(),
                    outputs: r.outputs.iter().map(OutputReport::from).collect(),
                    logs: Vec::new(),
                    why: Vec::new(),
                    settings: Vec::new(),
                })
            })
            .collect()
    }
}

impl FailedToRun<'_> {
    /// Markdown, with the same marker as a run's report (so it replaces the
    /// pipeline's earlier PR comment).
    pub fn to_markdown(&self) -> String {
        let known = if self.steps.is_empty() {
            "no step result is known.".to_string()
        } else {
            let mut s =
                "as the run saw them, its steps did this:\n\n| step | status | error |\n|---|---|---|\n".to_string();
            for step in self.steps {
                let error = step.error.as_deref().map(text).unwrap_or_default();
                let _ = writeln!(s, "| {} | {} | {error} |", code(&step.id), step.status);
            }
            s
        };
        format!(
            "{}\n## ❌ zenflow · `{}` — could not run\n\nOn stack `{}` the run could not start or could not be \
             recorded; {known}\n\n> {}\n",
            marker(self.pipeline),
            code(self.pipeline),
            code(self.stack),
            text(self.error)
        )
    }

    /// JSON with `status: "error"` (see the module's schema).
    pub fn to_json(&self) -> String {
        let report = serde_json::json!({
            "schema": REPORT_SCHEMA,
            "pipeline": self.pipeline,
            "stack": self.stack,
            "status": "error",
            "error": self.error,
            "steps": self.steps,
            "metrics": [],
            "checks": [],
        });
        serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// JUnit XML with one failed test case, `run`.
    pub fn to_junit(&self) -> String {
        let suite =
            JunitSuite { name: self.pipeline, timestamp: None, tests: 1, failures: 1, skipped: 0, seconds: 0.0 };
        suite.document(&format!(
            "    <testcase classname=\"{}\" name=\"run\" time=\"0\"><failure message=\"{}\" type=\"run\"/></testcase>\n",
            xml(self.pipeline),
            xml(self.error),
        ))
    }
}
