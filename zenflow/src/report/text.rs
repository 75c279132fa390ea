//! The report as plain text for a terminal, and as JSON.

use super::format::duration;
use super::*;
use std::fmt::Write as _;

impl RunReport {
    /// The report as plain text for a terminal: the run, its steps (with
    /// why each ran when `why`), its checks and its metrics.
    pub fn to_text(&self, why: bool) -> String {
        let r = self;
        let mut out = String::new();
        let _ = writeln!(out, "run:      {} ({})", r.run_name, r.run_id);
        let _ = writeln!(
            out,
            "pipeline: {}   stack: {}   commit: {}",
            r.pipeline,
            r.stack,
            r.git_commit.as_deref().unwrap_or("—")
        );
        let _ = writeln!(
            out,
            "status:   {}   gate: {}   started: {}   duration: {}",
            r.status,
            match r.gate {
                Gate::Passed => "passed",
                Gate::Failed => "failed",
            },
            r.started_at,
            r.duration_ms.map_or("—".into(), duration)
        );
        if let Some(e) = &r.error {
            let _ = writeln!(out, "error:    {e}");
        }
        let _ = writeln!(out, "\n{:<28} {:<10} {:>10} {:>8}  NOTE", "STEP", "STATUS", "TIME", "ATTEMPTS");
        for s in &r.steps {
            let _ = writeln!(
                out,
                "{:<28} {:<10} {:>10} {:>8}  {}",
                s.id,
                s.status,
                s.duration_ms.map_or("—".into(), duration),
                s.attempts,
                s.error.as_deref().unwrap_or("")
            );
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
                let _ = writeln!(out, "{:<6} {:<24} {:<20} {}", c.status, c.name, c.step, c.message);
            }
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
