//! The report as plain text for a terminal, and as JSON.

use super::format::duration;
use super::*;
use std::fmt::Write as _;

impl RunReport {
    /// The lines that say which run this is, where it came from, and how it went.
    fn header(&self, colour: Colour) -> String {
        let r = self;
        let mut out = String::new();
        let _ = writeln!(out, "run:      {} ({})", r.run_name, r.run_id);
        let branch = r.git_branch.as_deref().map_or(String::new(), |b| format!("   branch: {b}"));
        let _ = writeln!(
            out,
            "pipeline: {}   stack: {}   commit: {}{branch}",
            r.pipeline,
            r.stack,
            r.git_commit.as_deref().unwrap_or("—")
        );
        let _ = writeln!(
            out,
            "status:   {}   gate: {}   started: {}   duration: {}",
            colour.status(r.status.as_str(), 0),
            colour.status(r.gate.as_str(), 0),
            r.started_at,
            r.duration_ms.map_or("—".into(), duration)
        );
        if let Some(job) = &r.ci_job_url {
            let _ = writeln!(out, "ci job:   {job}");
        }
        if let Some(e) = &r.error {
            let _ = writeln!(out, "error:    {e}");
        }
        out
    }

    /// The report as plain text for a terminal: the run, its steps (with
    /// why each ran when `why`), its checks and its metrics.
    pub fn to_text(&self, why: bool) -> String {
        self.to_terminal(why, Colour::Never)
    }

    /// [`RunReport::to_text`], statuses coloured as `colour` says.
    pub fn to_terminal(&self, why: bool, colour: Colour) -> String {
        let r = self;
        let mut out = self.header(colour);
        let parameters = parameter_lines(&r.parameters);
        if !parameters.is_empty() {
            let _ = writeln!(out, "\nPARAMETER{:<19} VALUE", "");
            for (name, value) in parameters {
                let _ = writeln!(out, "{name:<28} {value}");
            }
        }
        let _ = writeln!(out, "\n{:<28} {:<10} {:>10} {:>8}  NOTE", "STEP", "STATUS", "TIME", "ATTEMPTS");
        for s in &r.steps {
            let _ = writeln!(
                out,
                "{:<28} {} {:>10} {:>8}  {}",
                s.id,
                colour.status(&s.status, 10),
                s.duration_ms.map_or("—".into(), duration),
                s.attempts,
                s.error.as_deref().unwrap_or("")
            );
        }
        if r.steps.iter().any(|s| !s.settings.is_empty()) {
            let _ = writeln!(out, "\n{:<28} SETTINGS", "STEP");
            for s in r.steps.iter().filter(|s| !s.settings.is_empty()) {
                let _ = writeln!(out, "{:<28} {}", s.id, s.settings.join(", "));
            }
        }
        let outputs: Vec<(&StepReport, &OutputReport)> =
            r.steps.iter().flat_map(|s| s.outputs.iter().map(move |o| (s, o))).collect();
        if !outputs.is_empty() {
            let _ = writeln!(out, "\n{:<28} {:<44} ID", "OUTPUT", "ARTIFACT");
            for (s, o) in outputs {
                let output = format!("{}.{}", s.id, o.output);
                let _ = writeln!(out, "{output:<28} {:<44} {}", format!("{}@{}", o.name, o.version), o.artifact_id);
            }
        }
        if why {
            let _ = writeln!(out, "\n{:<28} WHY", "STEP");
            for s in &r.steps {
                let line = zenflow_core::why::line(&s.why);
                let _ = writeln!(out, "{:<28} {}", s.id, if line.is_empty() { "—" } else { &line });
            }
        }
        if !r.checks.is_empty() {
            let _ = writeln!(out, "\n{:<6} {:<24} {:<20} MESSAGE", "CHECK", "NAME", "STEP");
            for c in &r.checks {
                let status = colour.status(c.status.as_str(), 6);
                let _ = writeln!(out, "{status} {:<24} {:<20} {}", c.name, c.step, c.message);
            }
        }
        for registered in &r.registered {
            let _ = writeln!(out, "\n{}", registered.line());
        }
        if !r.metrics.is_empty() {
            let _ = writeln!(out, "\n{:<24} {:<24} VALUE", "STEP", "METRIC");
            for m in &r.metrics {
                let _ = writeln!(out, "{:<24} {:<24} {}", m.step, m.name, m.value);
            }
        }
        out
    }

    /// The report as pretty JSON (see the module docs for the schema).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// The parameters as `(name, value)` lines: an object's fields by dotted
/// name, down to values that are not objects (lists stay whole, as JSON).
pub(crate) fn parameter_lines(parameters: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(fields) => {
                for (name, v) in fields {
                    let name = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                    walk(&name, v, out);
                }
            }
            serde_json::Value::Null if prefix.is_empty() => {}
            other => out.push((if prefix.is_empty() { "(value)".into() } else { prefix.into() }, other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", parameters, &mut out);
    out
}
