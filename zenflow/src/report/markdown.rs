//! The report as GitHub-flavoured markdown: a PR comment, a job summary.

use super::format::{bytes, code, duration, fenced, number, status_icon, text};
use super::*;
use std::fmt::Write as _;

/// The hidden marker that identifies a pipeline's report in a PR comment.
pub fn marker(pipeline: &str) -> String {
    format!("<!-- zenflow-report pipeline={pipeline} -->")
}

/// The most characters GitHub takes in one comment.
pub const GITHUB_COMMENT_LIMIT: usize = 65_536;

/// The markdown report cut to at most `limit` characters, for a PR comment.
///
/// What goes first is what matters least: the artifact and log details,
/// then the pipeline diagram, the metrics table and the steps table. The
/// verdict, the checks and the model tables stay as long as they fit;
/// past that the text is cut at a line, with any open code fence closed.
/// A report that was cut says so, naming what it left out.
pub fn fit_comment(markdown: &str, limit: usize) -> String {
    let len = |s: &str| s.chars().count();
    if len(markdown) <= limit {
        return markdown.to_string();
    }
    // Sections: the head, then each `### ` section (with what follows it).
    let mut parts: Vec<String> = Vec::new();
    for line in markdown.split_inclusive('\n') {
        match parts.last_mut() {
            Some(last) if !line.starts_with("### ") => last.push_str(line),
            _ => parts.push(line.to_string()),
        }
    }
    let mut left_out: Vec<String> = Vec::new();
    let note = |left_out: &[String]| {
        format!(
            "\n> ✂️ Cut to fit GitHub's {limit}-character comment limit: {} left out. The job summary and the \
             report artifact hold all of it.\n",
            left_out.join(", ")
        )
    };
    let total =
        |parts: &[String], left_out: &[String]| parts.iter().map(|p| len(p)).sum::<usize>() + len(&note(left_out));
    // Details blocks first (artifact lists, logs).
    for part in parts.iter_mut() {
        while let (Some(start), Some(end)) = (part.find("<details>"), part.find("</details>")) {
            if end < start {
                break;
            }
            let summary = part[start..end]
                .split("<summary>")
                .nth(1)
                .and_then(|s| s.split("</summary>").next())
                .unwrap_or("details")
                .replace("<code>", "`")
                .replace("</code>", "`");
            left_out.push(summary);
            part.replace_range(start..end + "</details>".len(), "");
        }
    }
    for heading in ["### Pipeline", "### Metrics", "### Steps"] {
        if total(&parts, &left_out) <= limit {
            break;
        }
        if let Some(i) = parts.iter().position(|p| p.starts_with(heading)) {
            parts.remove(i);
            left_out.push(format!("the {} section", heading.trim_start_matches("### ").to_lowercase()));
        }
    }
    let mut out: String = parts.concat();
    if total(&parts, &left_out) > limit {
        left_out.push("the end of the report".into());
        let budget = limit.saturating_sub(len(&note(&left_out)) + 8);
        let mut kept = String::new();
        for line in out.split_inclusive('\n') {
            if len(&kept) + len(line) > budget {
                break;
            }
            kept.push_str(line);
        }
        if kept.lines().filter(|l| l.starts_with("```")).count() % 2 == 1 {
            kept.push_str("```\n");
        }
        out = kept;
    }
    out.push_str(&note(&left_out));
    out
}

impl RunReport {
    /// The report as GitHub-flavoured markdown, with the hidden marker that
    /// lets `report github-comment` update the same comment next time.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        self.md_header(&mut md);
        // What a reviewer decides on first: the gate, the checks, what
        // changed against main; then the details.
        self.md_models(&mut md);
        self.md_registered(&mut md);
        self.md_checks(&mut md);
        if let Some(b) = &self.baseline {
            b.to_markdown(&mut md, &self.steps);
        }
        self.md_steps(&mut md);
        self.md_failed_logs(&mut md);
        self.md_metrics(&mut md);
        self.md_parameters(&mut md);
        let _ = writeln!(
            md,
            "\n<details><summary>Pipeline ({} steps)</summary>\n\n```mermaid\n{}```\n</details>",
            self.steps.len(),
            self.dag_mermaid
        );
        self.md_artifacts(&mut md);
        let _ = writeln!(md, "\n<sub>run id `{}` · started {}</sub>", self.run_id, self.started_at);
        md
    }

    /// The marker, the verdict, the run in one line, its step counts, and why it failed.
    fn md_header(&self, md: &mut String) {
        let (icon, verdict) = match (self.status, self.gate) {
            (RunStatus::Completed, Gate::Passed) => ("✅", "passed"),
            (RunStatus::Completed, Gate::NotEvaluated) => ("⚠️", "quality gate not evaluated"),
            (RunStatus::Completed, Gate::Failed) => ("⚠️", "quality gate failed"),
            (RunStatus::Failed, _) => ("❌", "failed"),
            (RunStatus::Running, _) => ("⏳", "running"),
            (RunStatus::Pending, _) => ("📝", "planned"),
        };
        let _ = writeln!(md, "{}", marker(&self.pipeline));
        let _ = writeln!(md, "## {icon} zenflow · `{}` — {verdict}\n", self.pipeline);
        let commit = self
            .git_commit
            .as_deref()
            .map_or("no git commit".to_string(), |c| format!("commit `{}`", &c[..c.len().min(12)]));
        let gate = match self.gate {
            Gate::Passed => "quality gate passed",
            Gate::Failed => "quality gate **failed**",
            Gate::NotEvaluated => "quality gate not evaluated",
        };
        let job = self.ci_job_url.as_deref().map_or(String::new(), |u| format!(" · [CI job]({u})"));
        let commit = match &self.git_branch {
            Some(branch) => format!("{commit} on `{}`", code(branch)),
            None => commit,
        };
        let _ = writeln!(
            md,
            "**Run** `{}` · stack `{}` · {commit} · **{}** in {} · {gate}{job}  ",
            code(&self.run_name),
            code(&self.stack),
            self.status,
            self.duration_ms.map_or("—".into(), duration)
        );
        let count = |s: &str| self.steps.iter().filter(|x| x.status == s).count();
        let _ = writeln!(
            md,
            "**Steps** {} executed · {} cached · {} failed · {} skipped\n",
            count("completed"),
            count("cached"),
            count("failed"),
            count("skipped")
        );
        if let Some(error) = self.error.as_deref().filter(|_| self.status == RunStatus::Failed) {
            let _ = writeln!(md, "> **Why it failed:** {}\n", text(error));
        }
    }

    /// A table per appraised model: candidate against production, metric by metric.
    fn md_models(&self, md: &mut String) {
        for m in &self.models {
            let a = &m.appraisal;
            let verdict = if a.passed { "✅ passed" } else { "❌ failed" };
            let version = |v: Option<i64>| v.map_or("—".to_string(), |v| format!("v{v}"));
            let _ = writeln!(
                md,
                "\n### Model `{}` — {verdict}\n\ncandidate {} · production {} · appraised by `{}`\n",
                code(&a.model),
                version(a.candidate_version),
                a.production_version.map_or("none yet".to_string(), |v| format!("v{v}")),
                code(&m.step)
            );
            if let Some(note) = &a.note {
                let _ = writeln!(md, "_{}_\n", text(note));
            }
            let _ = writeln!(
                md,
                "| Metric | Candidate | Production | Δ | Threshold | Status |\n|---|---:|---:|---:|---:|---|"
            );
            for r in &a.rows {
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {} | {} | {} | {} |",
                    code(&r.metric),
                    r.candidate.map_or("—".into(), number),
                    r.production.map_or("—".into(), number),
                    r.delta.map_or("—".into(), number),
                    r.threshold.map_or("—".into(), number),
                    status_icon(r.status)
                );
            }
        }
    }

    /// The model versions the run registered, whether or not a step
    /// appraised them.
    fn md_registered(&self, md: &mut String) {
        if self.registered.is_empty() {
            return;
        }
        let _ = writeln!(md, "\n### Registered\n");
        for r in &self.registered {
            let aliases = if r.aliases.is_empty() {
                String::new()
            } else {
                format!(
                    " · holds {}",
                    r.aliases.iter().map(|a| format!("`{}`", code(a))).collect::<Vec<_>>().join(", ")
                )
            };
            let _ = writeln!(
                md,
                "- model `{}` **v{}** · from step `{}`{aliases}",
                code(&r.model),
                r.version,
                code(&r.step)
            );
        }
    }

    /// The pipeline's parameters, folded; those that differ from the
    /// baseline first, with the value they had there.
    fn md_parameters(&self, md: &mut String) {
        let lines = super::text::parameter_lines(&self.parameters);
        if lines.is_empty() {
            return;
        }
        let changed = self.baseline.as_ref().map(|b| &b.parameters);
        let before = |name: &str| changed.and_then(|c| c.iter().find(|p| p.param == name));
        let (mut first, rest): (Vec<_>, Vec<_>) = lines.iter().partition(|(name, _)| before(name).is_some());
        first.extend(rest);
        let _ = writeln!(
            md,
            "\n<details><summary>Parameters ({})</summary>\n\n| Parameter | Value |\n|---|---|",
            lines.len()
        );
        for (name, value) in first {
            let was = before(name)
                .map_or(String::new(), |p| format!(" (was `{}`)", code(p.before.as_deref().unwrap_or("unset"))));
            let _ = writeln!(md, "| `{}` | `{}`{was} |", code(name), code(value));
        }
        let _ = writeln!(md, "\n</details>");
    }

    /// Every check with its value, threshold and message.
    fn md_checks(&self, md: &mut String) {
        if !self.checks.is_empty() {
            let _ = writeln!(
                md,
                "\n### Checks\n\n| | Check | Step | Value | Threshold | Message |\n|---|---|---|---:|---:|---|"
            );
            for c in &self.checks {
                let icon = status_icon(c.status);
                let _ = writeln!(
                    md,
                    "| {icon} | {} | `{}` | {} | {} | {} |",
                    text(&c.name),
                    code(&c.step),
                    c.value.map_or("—".into(), number),
                    c.threshold.map_or("—".into(), number),
                    text(&c.message)
                );
            }
        }
    }

    /// Every step: status, time, why it ran, its error.
    fn md_steps(&self, md: &mut String) {
        let _ = writeln!(md, "\n### Steps\n\n| Step | Status | Time | Why | Note |\n|---|---|---:|---|---|");
        for s in &self.steps {
            let status_icon = match s.status.as_str() {
                "completed" => "✅",
                "cached" => "♻️",
                "failed" => "❌",
                "skipped" => "⏭️",
                _ => "⏳",
            };
            let _ = writeln!(
                md,
                "| `{}` | {status_icon} {} | {} | {} | {} |",
                code(&s.id),
                s.status,
                s.duration_ms.map_or("—".into(), duration),
                text(&zenflow_core::why::line(&s.why)),
                s.error.as_deref().map(text).unwrap_or_default()
            );
        }
    }

    /// The end of each failed step's log, folded.
    fn md_failed_logs(&self, md: &mut String) {
        for s in self.steps.iter().filter(|s| s.status == "failed" && !s.logs.is_empty()) {
            let shown = &s.logs[s.logs.len().saturating_sub(MARKDOWN_LOG_LINES)..];
            let which = if shown.len() < s.logs.len() {
                format!("last {} of {} lines", shown.len(), s.logs.len())
            } else {
                format!("{} lines", shown.len())
            };
            let _ =
                writeln!(md, "\n<details><summary>Log of <code>{}</code> ({which})</summary>\n\n```text", text(&s.id));
            for line in shown {
                let _ = writeln!(md, "{}", fenced(line));
            }
            let _ = writeln!(md, "```\n\n`runs show {} --logs` prints all of it.\n</details>", code(&self.run_id));
        }
    }

    /// The numeric metadata the steps logged.
    fn md_metrics(&self, md: &mut String) {
        if !self.metrics.is_empty() {
            let _ = writeln!(md, "\n### Metrics\n\n| Step | Metric | Value |\n|---|---|---:|");
            for m in &self.metrics {
                let _ = writeln!(md, "| `{}` | {} | {} |", code(&m.step), text(&m.name), number(m.value));
            }
        }
    }

    /// The artifacts the run produced, folded.
    fn md_artifacts(&self, md: &mut String) {
        let outputs: Vec<(&StepReport, &OutputReport)> =
            self.steps.iter().flat_map(|s| s.outputs.iter().map(move |o| (s, o))).collect();
        if !outputs.is_empty() {
            let _ = writeln!(
            md,
            "\n<details><summary>Artifacts ({})</summary>\n\n| Artifact | Version | Type | Size | Hash | Id |\n|---|---:|---|---:|---|---|",
            outputs.len()
        );
            for (_, o) in outputs {
                let _ = writeln!(
                    md,
                    "| `{}` | {} | `{}` | {} | `{}` | `{}` |",
                    code(&o.name),
                    o.version,
                    code(&o.type_name),
                    bytes(o.size),
                    &o.content_hash[..12],
                    o.artifact_id
                );
            }
            let _ = writeln!(md, "\n</details>");
        }
    }
}

impl Baseline {
    pub(super) fn to_markdown(&self, md: &mut String, steps: &[StepReport]) {
        let commit =
            self.git_commit.as_deref().map_or(String::new(), |c| format!(" (commit `{}`)", &c[..c.len().min(12)]));
        let _ = writeln!(md, "\n### Against `{}`{commit}\n", code(&self.run_name));
        let list = |ids: &[String]| ids.iter().map(|i| format!("`{}`", code(i))).collect::<Vec<_>>().join(", ");
        // Why what ran ran: the first thing a reviewer of a change asks.
        let ran: Vec<&StepReport> = steps.iter().filter(|s| s.status != "cached" && !s.why.is_empty()).collect();
        if !ran.is_empty() {
            let _ = writeln!(md, "- **Why steps ran:**");
            for s in ran {
                let _ = writeln!(md, "  - `{}`: {}", code(&s.id), text(&zenflow_core::why::line(&s.why)));
            }
        }
        if self.code_changed.is_empty() && self.added.is_empty() && self.removed.is_empty() {
            let _ = writeln!(md, "- **Code:** no step's code changed.");
        } else {
            if !self.code_changed.is_empty() {
                let _ = writeln!(md, "- **Code changed:** {}", list(&self.code_changed));
            }
            if !self.added.is_empty() {
                let _ = writeln!(md, "- **New steps:** {}", list(&self.added));
            }
            if !self.removed.is_empty() {
                let _ = writeln!(md, "- **Steps gone:** {}", list(&self.removed));
            }
        }
        let cached: Vec<String> = steps.iter().filter(|s| s.status == "cached").map(|s| s.id.clone()).collect();
        let _ = if cached.is_empty() {
            writeln!(md, "- **From the shared cache:** none")
        } else {
            writeln!(md, "- **From the shared cache:** {} of {} steps: {}", cached.len(), steps.len(), list(&cached))
        };
        if self.params.is_empty() {
            let _ = writeln!(md, "- **Parameters:** the same.");
        } else {
            let _ = writeln!(md, "\n| Step | Parameter | `{}` | this run |\n|---|---|---|---|", code(&self.run_name));
            for p in &self.params {
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {} | {} |",
                    code(&p.step),
                    text(&p.param),
                    p.before.as_deref().map_or("—".into(), |v| format!("`{}`", code(v))),
                    p.after.as_deref().map_or("—".into(), |v| format!("`{}`", code(v)))
                );
            }
        }
    }
}
