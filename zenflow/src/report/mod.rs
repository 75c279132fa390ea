//! Run reports for humans and for CI: markdown (a PR comment, a job summary),
//! JSON (for other tools) and JUnit XML (for test-report tooling).
//!
//! A [`RunReport`] is built from what the metadata store recorded, so a report
//! can be written for any past run, not only the one just finished.
//!
//! # JSON schema (`schema: 1`)
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `schema` | int | layout version, 1 |
//! | `pipeline`, `run_id`, `run_name`, `stack` | string | what ran where |
//! | `git_commit` | string \| null | commit of the checkout |
//! | `status` | `"completed"` \| `"failed"` \| `"running"` \| `"pending"` \| `"error"` | the run's status; `"error"`: it could not start or be recorded (then only `schema`, `pipeline`, `stack`, `status`, `error`, empty `metrics` and `checks`, and `steps`: empty when it never started, else what its steps did as the run saw it, without logs) |
//! | `error` | string | why the run could not start or be recorded (`status: "error"` only) |
//! | `gate` | `"passed"` \| `"failed"` | quality gate: failed when a check failed (or warned, with warnings as errors) |
//! | `started_at`, `ended_at` | RFC 3339 string \| null | UTC |
//! | `duration_ms` | float \| null | wall time |
//! | `steps[]` | object | `id`, `step`, `status` (`completed`, `cached`, `failed`, `skipped`, `running`), `duration_ms`, `attempts`, `error`, `outputs[]`, `logs[]` |
//! | `steps[].logs[]` | string | what the step logged (`StepContext::log`, `tracing` events, and on process-based orchestrators its stdout and stderr), at most 5,000 lines and 512 KiB a step, the last line saying what was cut |
//! | `steps[].outputs[]` | object | `output`, `artifact_id`, `name`, `version`, `type_name`, `content_hash`, `uri`, `size` |
//! | `metrics[]` | object | `step`, `name`, `value`: numeric metadata logged with `StepContext::log_metadata` |
//! | `checks[]` | object | `step`, `name`, `status` (`pass`, `warn`, `fail`, `skip`), `value`, `threshold`, `message` |
//! | `registered[]` | object | model versions the run's steps registered: `step`, `model`, `version`, `aliases` (omitted when none) |
//! | `models[]` | object | appraisals: `step`, `model`, `candidate_version` (int \| null), `production_version` (int \| null: none yet), `passed`, `note`, `rows[]` of `metric`, `direction`, `candidate`, `production`, `delta`, `threshold`, `status`, `message` |
//! | `dag_mermaid` | string | the plan as a mermaid flowchart |

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use zenflow_core::check::CheckStatus;
use zenflow_core::metadata::{RunRecord, RunStatus, StepRunRecord, StepStatus};
use zenflow_core::{Plan, Result, Stack};

/// Version of the JSON layout.
pub const REPORT_SCHEMA: u32 = 1;

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

/// Everything a report says about one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Layout version ([`REPORT_SCHEMA`]).
    pub schema: u32,
    /// Pipeline name.
    pub pipeline: String,
    /// Run id.
    pub run_id: String,
    /// Run name.
    pub run_name: String,
    /// Stack name.
    pub stack: String,
    /// Git commit, when known.
    pub git_commit: Option<String>,
    /// The CI job that ran it (GitHub Actions run, GitLab job), when known.
    #[serde(default)]
    pub ci_job_url: Option<String>,
    /// Run status.
    pub status: RunStatus,
    /// Why the run failed, beyond its steps' errors (its process died, the
    /// orchestrator failed), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Quality gate outcome.
    pub gate: Gate,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// End time (RFC 3339).
    pub ended_at: Option<String>,
    /// Wall time in milliseconds.
    pub duration_ms: Option<f64>,
    /// Steps in plan order.
    pub steps: Vec<StepReport>,
    /// Numeric metadata logged by steps.
    pub metrics: Vec<MetricReport>,
    /// Checks recorded by steps.
    pub checks: Vec<CheckReport>,
    /// Appraisals of candidate models against production.
    #[serde(default)]
    pub models: Vec<ModelReport>,
    /// The model versions its steps registered ([`RunReport::with_registered`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registered: Vec<RegisteredReport>,
    /// The plan as a mermaid flowchart.
    pub dag_mermaid: String,
    /// What differs from a baseline run (for a PR: the latest run from main).
    #[serde(default)]
    pub baseline: Option<Baseline>,
}

/// How a run differs from a baseline run: code and parameters, step by step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The baseline's run id.
    pub run_id: String,
    /// Its name.
    pub run_name: String,
    /// Its git commit.
    pub git_commit: Option<String>,
    /// Steps (invocations) whose code hash differs from the baseline's.
    pub code_changed: Vec<String>,
    /// Steps the baseline did not have.
    pub added: Vec<String>,
    /// Steps of the baseline this run does not have.
    pub removed: Vec<String>,
    /// Parameters that differ.
    pub params: Vec<ParamChange>,
}

/// One parameter of one step that differs from the baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamChange {
    /// The step (invocation).
    pub step: String,
    /// The parameter.
    pub param: String,
    /// Its value in the baseline (JSON), `None` when it had none.
    pub before: Option<String>,
    /// Its value in this run (JSON), `None` when it has none.
    pub after: Option<String>,
}

impl Baseline {
    /// Compares this run's plan with the baseline run's.
    pub fn compare(baseline: &RunRecord, baseline_plan: &Plan, plan: &Plan) -> Baseline {
        let before: BTreeMap<&str, &zenflow_core::plan::PlanStep> =
            baseline_plan.steps.iter().map(|s| (s.id.as_str(), s)).collect();
        let now: BTreeMap<&str, &zenflow_core::plan::PlanStep> =
            plan.steps.iter().map(|s| (s.id.as_str(), s)).collect();
        let mut out = Baseline {
            run_id: baseline.id.clone(),
            run_name: baseline.name.clone(),
            git_commit: baseline.git_commit.clone(),
            code_changed: Vec::new(),
            added: Vec::new(),
            removed: baseline_plan
                .steps
                .iter()
                .filter(|s| !now.contains_key(s.id.as_str()))
                .map(|s| s.id.clone())
                .collect(),
            params: Vec::new(),
        };
        for step in &plan.steps {
            let Some(old) = before.get(step.id.as_str()) else {
                out.added.push(step.id.clone());
                continue;
            };
            if old.code_hash != step.code_hash {
                out.code_changed.push(step.id.clone());
            }
            let keys: std::collections::BTreeSet<&String> = old.params.keys().chain(step.params.keys()).collect();
            for key in keys {
                let (b, a) = (old.params.get(key), step.params.get(key));
                if b != a {
                    out.params.push(ParamChange {
                        step: step.id.clone(),
                        param: key.clone(),
                        before: b.map(|v| v.to_string()),
                        after: a.map(|v| v.to_string()),
                    });
                }
            }
        }
        out
    }

    fn to_markdown(&self, md: &mut String, steps: &[StepReport]) {
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

/// An appraisal in a report: the candidate against production, per metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// The step that appraised.
    pub step: String,
    /// The appraisal.
    #[serde(flatten)]
    pub appraisal: zenflow_core::appraisal::AppraisalResult,
}

/// The quality gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// No check failed.
    Passed,
    /// A check failed (or warned, with warnings as errors).
    Failed,
}

/// One step in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Invocation id.
    pub id: String,
    /// Step name.
    pub step: String,
    /// Final status (`pending` when it has not run).
    pub status: String,
    /// Wall time in milliseconds.
    pub duration_ms: Option<f64>,
    /// Attempts made.
    pub attempts: u32,
    /// Error, for failed and skipped steps.
    pub error: Option<String>,
    /// Outputs.
    pub outputs: Vec<OutputReport>,
    /// What the step logged (empty for a cached step: it ran nothing).
    #[serde(default)]
    pub logs: Vec<String>,
    /// Why it executed, or which run it came from when cached (in a loaded
    /// report that run is named by its name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<zenflow_core::why::Reason>,
}

/// The most lines of a failed step's log a markdown report shows (the end
/// of it; a PR comment has room for little more).
pub const MARKDOWN_LOG_LINES: usize = 40;

/// The most lines of a failed step's log a JUnit report carries.
pub const JUNIT_LOG_LINES: usize = 500;

/// An output artifact in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputReport {
    /// Output name.
    pub output: String,
    /// Artifact version id.
    pub artifact_id: String,
    /// Artifact name.
    pub name: String,
    /// Version number.
    pub version: i64,
    /// Rust type.
    pub type_name: String,
    /// blake3 of the bytes.
    pub content_hash: String,
    /// Where the bytes are.
    pub uri: String,
    /// Size in bytes.
    pub size: u64,
}

impl From<&zenflow_core::metadata::OutputLink> for OutputReport {
    fn from(o: &zenflow_core::metadata::OutputLink) -> Self {
        OutputReport {
            output: o.output.clone(),
            artifact_id: o.artifact.id.clone(),
            name: o.artifact.name.clone(),
            version: o.artifact.version,
            type_name: o.artifact.type_name.clone(),
            content_hash: o.artifact.content_hash.to_hex(),
            uri: o.artifact.uri.clone(),
            size: o.artifact.metadata.size,
        }
    }
}

/// A model version a step of the run registered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegisteredReport {
    /// The step (invocation id) whose output it is.
    pub step: String,
    /// The model.
    pub model: String,
    /// Its version number.
    pub version: i64,
    /// The aliases it held when the report was made.
    pub aliases: Vec<String>,
}

impl RegisteredReport {
    /// `model NAME: vN (the output of step `S`, holds ALIASES)`.
    pub fn line(&self) -> String {
        let aliases =
            if self.aliases.is_empty() { String::new() } else { format!(", holds {}", self.aliases.join(", ")) };
        format!("model {}: v{} (the output of step `{}`{aliases})", self.model, self.version, self.step)
    }
}

/// How a run ended, as a process reports it: the command line's exit codes
/// ([`crate::cli::exit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It completed and every quality gate passed: exit 0.
    Passed,
    /// A step failed, or the run did not finish (why, when known): exit 1.
    Failed(Option<String>),
    /// It completed, but these checks (`step.check (message)`) failed the
    /// quality gate: exit 3.
    GateFailed(Vec<String>),
    /// A deployment it made was rolled back (why): exit 4.
    RolledBack(String),
}

impl Verdict {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Passed => 0,
            Verdict::Failed(_) => 1,
            Verdict::GateFailed(_) => 3,
            Verdict::RolledBack(_) => 4,
        }
    }

    /// What to tell the person who ran it; nothing when it passed.
    pub fn message(&self) -> Option<String> {
        match self {
            Verdict::Passed | Verdict::Failed(None) => None,
            Verdict::Failed(Some(e)) => Some(format!("run failed: {e}")),
            Verdict::GateFailed(checks) => Some(format!("quality gate failed: {}", checks.join("; "))),
            Verdict::RolledBack(why) => Some(format!("deployment rolled back: {why}")),
        }
    }
}

/// A logged metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricReport {
    /// Invocation id.
    pub step: String,
    /// Metric name.
    pub name: String,
    /// Value.
    pub value: f64,
}

/// A check in a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Invocation id.
    pub step: String,
    /// Check name.
    pub name: String,
    /// Outcome.
    pub status: CheckStatus,
    /// Observed value.
    pub value: Option<f64>,
    /// Threshold.
    pub threshold: Option<f64>,
    /// Message.
    pub message: String,
}

impl RunReport {
    /// Builds the report of run `run_id_or_name` from the stack's metadata.
    /// With `warnings_as_errors`, a warning fails the gate.
    pub fn load(stack: &Stack, run_id_or_name: &str, warnings_as_errors: bool) -> Result<RunReport> {
        let run = stack
            .get_run(run_id_or_name)?
            .ok_or_else(|| zenflow_core::Error::NotFound(format!("no run `{run_id_or_name}`")))?;
        let steps = stack.step_runs(&run.id)?;
        let originals = RunReport::originals(stack, &steps)?;
        let plan = run.plan()?;
        let report = RunReport::new(&run, &plan, &steps, &originals, warnings_as_errors);
        Ok(report.with_registered(stack, &plan).with_run_names(stack))
    }

    /// Names the runs cached steps came from by their names, not their ids.
    fn with_run_names(mut self, stack: &Stack) -> Self {
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for reason in self.steps.iter_mut().flat_map(|s| s.why.iter_mut()) {
            let zenflow_core::why::Reason::Cached { run, .. } = reason else { continue };
            if !names.contains_key(run.as_str()) {
                let name = stack.get_run(run).ok().flatten().map_or_else(|| run.clone(), |r| r.name);
                names.insert(run.clone(), name);
            }
            *run = names[run.as_str()].clone();
        }
        self
    }

    /// The step runs that cached step runs in `step_runs` reuse (their
    /// metrics and checks are reported for the cached step).
    pub fn originals(stack: &Stack, step_runs: &[StepRunRecord]) -> Result<Vec<StepRunRecord>> {
        let mut out = Vec::new();
        for id in step_runs.iter().filter_map(|s| s.original_step_run.as_deref()) {
            if let Some(sr) = stack.block_on(stack.metadata().step_run(id))?? {
                out.push(sr);
            }
        }
        Ok(out)
    }

    /// Builds a report from records; `originals` are the step runs that the
    /// cached ones reuse.
    pub fn new(
        run: &RunRecord,
        plan: &Plan,
        step_runs: &[StepRunRecord],
        originals: &[StepRunRecord],
        warnings_as_errors: bool,
    ) -> RunReport {
        // The latest record of each invocation (a step may be re-run by a worker).
        let latest = |id: &str| zenflow_core::metadata::latest_record(step_runs, id);
        let mut steps = Vec::new();
        let mut metrics = Vec::new();
        let mut checks = Vec::new();
        let mut models = Vec::new();
        for ps in &plan.steps {
            let Some(sr) = latest(&ps.id) else {
                steps.push(StepReport {
                    id: ps.id.clone(),
                    step: ps.step.clone(),
                    status: "pending".into(),
                    duration_ms: None,
                    attempts: 0,
                    error: None,
                    outputs: Vec::new(),
                    logs: Vec::new(),
                    why: Vec::new(),
                });
                continue;
            };
            steps.push(StepReport {
                id: ps.id.clone(),
                step: ps.step.clone(),
                status: sr.status.as_str().into(),
                duration_ms: sr.duration().map(|d| d.as_secs_f64() * 1000.0),
                attempts: sr.attempts,
                error: sr.error.clone(),
                outputs: sr.outputs.iter().map(OutputReport::from).collect(),
                logs: sr.logs.clone(),
                why: zenflow_core::why::reasons(
                    sr,
                    ps,
                    plan.no_cache,
                    originals.iter().find(|o| sr.original_step_run.as_ref() == Some(&o.id)),
                ),
            });
            // A cached step run logged nothing itself: its metrics and checks
            // are those of the step run it reuses, which the report shows too.
            let source = match (sr.status, &sr.original_step_run) {
                (StepStatus::Cached, Some(orig)) => originals.iter().find(|s| &s.id == orig).unwrap_or(sr),
                _ => sr,
            };
            for (name, value) in &source.metadata {
                if let Some(v) = value.as_f64() {
                    metrics.push(MetricReport { step: ps.id.clone(), name: name.clone(), value: v });
                }
            }
            if let Some(a) = source.metadata.get(zenflow_core::appraisal::METADATA_KEY) {
                if let Ok(mut appraisal) = serde_json::from_value::<zenflow_core::appraisal::AppraisalResult>(a.clone())
                {
                    // A step that did not know production's number: the
                    // resolution the runner recorded knows it.
                    if appraisal.production_version == Some(0) {
                        appraisal.production_version = source
                            .metadata
                            .iter()
                            .filter(|(k, _)| k.starts_with(zenflow_core::run::MODEL_INPUT_PREFIX))
                            .find_map(|(_, v)| {
                                (v["model"] == appraisal.model).then(|| v["version"].as_i64()).flatten()
                            });
                    }
                    models.push(ModelReport { step: ps.id.clone(), appraisal });
                }
            }
            for c in &source.checks {
                checks.push(CheckReport {
                    step: ps.id.clone(),
                    name: c.name.clone(),
                    status: c.status,
                    value: c.value,
                    threshold: c.threshold,
                    message: c.message.clone(),
                });
            }
        }
        let gate = gate(checks.iter().map(|c| c.status), warnings_as_errors);
        RunReport {
            schema: REPORT_SCHEMA,
            pipeline: run.pipeline.clone(),
            run_id: run.id.clone(),
            run_name: run.name.clone(),
            stack: run.stack.clone(),
            git_commit: run.git_commit.clone(),
            error: run.error.clone(),
            ci_job_url: None,
            status: run.status,
            gate,
            started_at: zenflow_core::time::rfc3339(run.started_at),
            ended_at: run.ended_at.map(zenflow_core::time::rfc3339),
            duration_ms: run.duration().map(|d| d.as_secs_f64() * 1000.0),
            dag_mermaid: mermaid(plan, Some(&steps)),
            steps,
            metrics,
            checks,
            models,
            registered: Vec::new(),
            baseline: None,
        }
    }

    /// Adds what differs from `baseline` (see [`Baseline::compare`]).
    pub fn with_baseline(mut self, baseline: Baseline) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// Links the report to the CI job that ran the run (GitHub's
    /// `actions/runs/ID`, GitLab's `$CI_JOB_URL`).
    pub fn with_ci_job(mut self, url: Option<String>) -> Self {
        self.ci_job_url = url;
        self
    }

    /// The checks that fail the quality gate.
    pub fn gate_failures(&self, warnings_as_errors: bool) -> impl Iterator<Item = &CheckReport> {
        self.checks.iter().filter(move |c| fails_gate(c.status, warnings_as_errors))
    }

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

    /// The verdict on this run: its status, its quality gate (failed by a
    /// warning too when `warnings_as_errors`), and a deployment it rolled
    /// back.
    pub fn verdict(&self, warnings_as_errors: bool) -> Verdict {
        let verdict = match (self.status, self.gate) {
            (RunStatus::Completed, Gate::Passed) => return Verdict::Passed,
            (RunStatus::Completed, Gate::Failed) => Verdict::GateFailed(
                self.gate_failures(warnings_as_errors)
                    .map(|c| format!("{}.{} ({})", c.step, c.name, c.message))
                    .collect(),
            ),
            _ => Verdict::Failed(self.error.clone()),
        };
        #[cfg(feature = "serve")]
        if let Some(c) =
            self.checks.iter().find(|c| c.name == crate::deploy::DEPLOYMENT_CHECK && c.status == CheckStatus::Fail)
        {
            return Verdict::RolledBack(c.message.clone());
        }
        verdict
    }

    /// The model versions this run's steps registered, read from the
    /// registry once per model, and each appraisal's candidate version set
    /// to the one it registered of that model (none if it registered none).
    pub fn with_registered(mut self, stack: &Stack, plan: &Plan) -> Self {
        let Ok(registry) = stack.registry() else { return self };
        let mut models: Vec<&str> = plan.steps.iter().filter_map(|s| s.options.model.as_deref()).collect();
        models.sort_unstable();
        models.dedup();
        for model in models {
            let Ok(Ok(versions)) = stack.block_on(registry.versions(model)) else { continue };
            for step in plan.steps.iter().filter(|s| s.options.model.as_deref() == Some(model)) {
                let outputs = self.steps.iter().filter(|r| r.id == step.id).flat_map(|r| r.outputs.first());
                let held = outputs.filter_map(|o| {
                    let hash = zenflow_core::hash::ContentHash::from_hex(&o.content_hash).ok()?;
                    zenflow_core::registry::version_holding(&versions, &o.artifact_id, &hash)
                });
                self.registered.extend(held.map(|v| RegisteredReport {
                    step: step.id.clone(),
                    model: model.to_string(),
                    version: v.version,
                    aliases: v.aliases.clone(),
                }));
            }
        }
        for m in &mut self.models {
            m.appraisal.candidate_version =
                self.registered.iter().find(|r| r.model == m.appraisal.model).map(|r| r.version);
        }
        self
    }

    /// The report as pretty JSON (see the module docs for the schema).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The report as GitHub-flavoured markdown, with the hidden marker that
    /// lets `report github-comment` update the same comment next time.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let (icon, verdict) = match (self.status, self.gate) {
            (RunStatus::Completed, Gate::Passed) => ("✅", "passed"),
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
        };
        let job = self.ci_job_url.as_deref().map_or(String::new(), |u| format!(" · [CI job]({u})"));
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

        // What a reviewer decides on first: the gate, the checks, what
        // changed against main; then the details.
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

        if let Some(b) = &self.baseline {
            b.to_markdown(&mut md, &self.steps);
        }

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

        if !self.metrics.is_empty() {
            let _ = writeln!(md, "\n### Metrics\n\n| Step | Metric | Value |\n|---|---|---:|");
            for m in &self.metrics {
                let _ = writeln!(md, "| `{}` | {} | {} |", code(&m.step), text(&m.name), number(m.value));
            }
        }

        let _ = writeln!(md, "\n### Pipeline\n\n```mermaid\n{}```", self.dag_mermaid);

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
        let _ = writeln!(md, "\n<sub>run id `{}` · started {}</sub>", self.run_id, self.started_at);
        md
    }

    /// The checks (and failed steps) as JUnit XML: one test case per check,
    /// failures and skips mapped; warnings are failures with
    /// `warnings_as_errors`, otherwise passing cases with the warning in
    /// `system-out`.
    pub fn to_junit(&self, warnings_as_errors: bool) -> String {
        let mut cases = String::new();
        let (mut tests, mut failures, mut skipped) = (0, 0, 0);
        for c in &self.checks {
            tests += 1;
            let detail = format!(
                "{} (value {}, threshold {})",
                c.message,
                c.value.map_or("none".into(), number),
                c.threshold.map_or("none".into(), number)
            );
            // An appraisal's checks are the model's test cases.
            let model = self.models.iter().find(|m| m.step == c.step && c.name.starts_with("appraisal."));
            let class = match model {
                Some(m) => format!("{}.model.{}", self.pipeline, m.appraisal.model),
                None => format!("{}.checks.{}", self.pipeline, c.step),
            };
            let _ = write!(cases, "    <testcase classname=\"{}\" name=\"{}\" time=\"0\">", xml(&class), xml(&c.name));
            match c.status {
                CheckStatus::Pass => {}
                CheckStatus::Fail => {
                    failures += 1;
                    let _ = write!(cases, "<failure message=\"{}\" type=\"check\"/>", xml(&detail));
                }
                CheckStatus::Warn if warnings_as_errors => {
                    failures += 1;
                    let _ = write!(cases, "<failure message=\"{}\" type=\"warning\"/>", xml(&detail));
                }
                CheckStatus::Warn => {
                    let _ = write!(cases, "<system-out>warning: {}</system-out>", xml(&detail));
                }
                CheckStatus::Skip => {
                    skipped += 1;
                    let _ = write!(cases, "<skipped message=\"{}\"/>", xml(&detail));
                }
            }
            cases.push_str("</testcase>\n");
        }
        for s in &self.steps {
            tests += 1;
            let time = s.duration_ms.unwrap_or(0.0) / 1000.0;
            let _ = write!(
                cases,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{time:.3}\">",
                xml(&format!("{}.steps", self.pipeline)),
                xml(&s.id)
            );
            match s.status.as_str() {
                "failed" => {
                    failures += 1;
                    let _ = write!(
                        cases,
                        "<failure message=\"{}\" type=\"step\"/>",
                        xml(s.error.as_deref().unwrap_or("failed"))
                    );
                    if !s.logs.is_empty() {
                        let shown = &s.logs[s.logs.len().saturating_sub(JUNIT_LOG_LINES)..];
                        let _ = write!(cases, "<system-out>{}</system-out>", xml(&shown.join("\n")));
                    }
                }
                "running" => {
                    failures += 1;
                    let _ = write!(cases, "<failure message=\"the step did not finish\" type=\"step\"/>");
                }
                "skipped" | "pending" => {
                    skipped += 1;
                    let _ = write!(cases, "<skipped message=\"{}\"/>", xml(s.error.as_deref().unwrap_or("not run")));
                }
                _ => {}
            }
            cases.push_str("</testcase>\n");
        }
        let step_failed = self.steps.iter().any(|s| matches!(s.status.as_str(), "failed" | "running"));
        if self.status == RunStatus::Failed && !step_failed {
            // Failed outside its steps (the orchestrator, the process): a
            // test report with no failure would show the run green.
            tests += 1;
            failures += 1;
            let _ = writeln!(
                cases,
                "    <testcase classname=\"{}\" name=\"run\" time=\"0\"><failure message=\"{}\" type=\"run\"/></testcase>",
                xml(&self.pipeline),
                xml(self.error.as_deref().unwrap_or("the run failed")),
            );
        }
        let suite = JunitSuite {
            name: &format!("{} / {}", self.pipeline, self.run_name),
            timestamp: Some(&self.started_at),
            tests,
            failures,
            skipped,
            seconds: self.duration_ms.unwrap_or(0.0) / 1000.0,
        };
        suite.document(&cases)
    }
}

/// The envelope of a JUnit document with one test suite.
struct JunitSuite<'a> {
    name: &'a str,
    timestamp: Option<&'a str>,
    tests: usize,
    failures: usize,
    skipped: usize,
    seconds: f64,
}

impl JunitSuite<'_> {
    /// The document around `cases` (`<testcase>` lines).
    fn document(&self, cases: &str) -> String {
        let JunitSuite { tests, failures, skipped, seconds: time, .. } = *self;
        let timestamp = self.timestamp.map_or(String::new(), |t| format!(" timestamp=\"{}\"", xml(t)));
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <testsuites name=\"zenflow\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time:.3}\">\n\
             \x20 <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time:.3}\"{timestamp}>\n\
             {cases}\
             \x20 </testsuite>\n\
             </testsuites>\n",
            xml(self.name),
        )
    }
}

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

/// The gate given check statuses.
pub fn gate(statuses: impl IntoIterator<Item = CheckStatus>, warnings_as_errors: bool) -> Gate {
    let failed = statuses.into_iter().any(|s| s == CheckStatus::Fail || (warnings_as_errors && s == CheckStatus::Warn));
    if failed {
        Gate::Failed
    } else {
        Gate::Passed
    }
}

fn fails_gate(status: CheckStatus, warnings_as_errors: bool) -> bool {
    status == CheckStatus::Fail || (warnings_as_errors && status == CheckStatus::Warn)
}

/// The plan as a mermaid flowchart; with step reports, nodes are styled by status.
pub fn mermaid(plan: &Plan, steps: Option<&[StepReport]>) -> String {
    let mut out = String::from("flowchart LR\n");
    for s in &plan.steps {
        let label = if s.id == s.step { s.id.clone() } else { format!("{}<br/><small>{}</small>", s.id, s.step) };
        let _ = writeln!(out, "  {}[\"{}\"]", node_id(&s.id), label.replace('"', "'"));
    }
    for s in &plan.steps {
        for input in &s.inputs {
            let mut sources: Vec<&str> = input.from.iter().map(|r| r.step.as_str()).collect();
            sources.dedup();
            for from in sources {
                let _ = writeln!(out, "  {} -->|{}| {}", node_id(from), input.name, node_id(&s.id));
            }
        }
        for a in &s.after {
            let _ = writeln!(out, "  {} -.-> {}", node_id(a), node_id(&s.id));
        }
    }
    if let Some(steps) = steps {
        out.push_str(
            "  classDef completed fill:#d4edda,stroke:#28a745\n  classDef cached fill:#e2e3e5,stroke:#6c757d\n  \
             classDef failed fill:#f8d7da,stroke:#dc3545\n  classDef skipped fill:#fff3cd,stroke:#ffc107\n",
        );
        for s in steps {
            if matches!(s.status.as_str(), "completed" | "cached" | "failed" | "skipped") {
                let _ = writeln!(out, "  class {} {}", node_id(&s.id), s.status);
            }
        }
    }
    out
}

/// The plan as Graphviz dot.
pub fn dot(plan: &Plan) -> String {
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];\n", plan.pipeline.replace('"', "'"));
    for s in &plan.steps {
        let _ = writeln!(out, "  \"{}\" [label=\"{}\\n({})\"];", s.id, s.id, s.step);
    }
    for s in &plan.steps {
        for input in &s.inputs {
            for r in &input.from {
                let _ = writeln!(out, "  \"{}\" -> \"{}\" [label=\"{}\"];", r.step, s.id, input.name);
            }
        }
        for a in &s.after {
            let _ = writeln!(out, "  \"{a}\" -> \"{}\" [style=dashed];", s.id);
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid node ids must be plain words; invocation ids are, but keep it safe.
fn node_id(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// A markdown table cell: no pipes, no newlines.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// Plain text in a markdown cell: HTML-escaped, so `Vec<String>` shows as
/// written and a `<!--` in a message cannot hide the rest of a PR comment.
fn text(s: &str) -> String {
    cell(&s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"))
}

/// The inside of a markdown code span (backticks would end it).
fn code(s: &str) -> String {
    cell(&s.replace('`', "'"))
}

/// A log line inside a fenced code block: it cannot end the block, and a
/// very long line is cut.
fn fenced(line: &str) -> String {
    const MAX: usize = 500;
    let line = line.replace("```", "'''");
    match line.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}… ({} more bytes)", &line[..end], line.len() - end),
        None => line,
    }
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

/// `0.93`, `1234`, `1.2e-5`: short, stable numbers.
fn status_icon(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::Pass => "✅ pass",
        CheckStatus::Warn => "⚠️ warn",
        CheckStatus::Fail => "❌ fail",
        CheckStatus::Skip => "⏭️ skip",
    }
}

fn number(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_finite() && (v.abs() >= 1e-3 || v == 0.0) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// `12 ms`, `1.5 s`, `2 min 3 s`.
pub fn duration(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        let secs = (ms / 1000.0).round() as u64;
        format!("{} min {} s", secs / 60, secs % 60)
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n if n < 1 << 30 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zenflow_core::why::Reason;

    mod baseline_pipeline {
        use crate::prelude::*;

        #[step]
        pub fn make(#[param] n: u32) -> u32 {
            n
        }

        #[step]
        pub fn double(x: u32) -> u32 {
            x * 2
        }

        #[pipeline]
        pub fn twice(n: &u32) -> Handle<u32> {
            double(make(*n))
        }
    }

    #[test]
    fn a_baseline_names_changed_code_and_parameters() {
        use crate::Pipeline;
        let run = |name: &str| RunRecord {
            id: format!("{name}-id"),
            name: name.into(),
            pipeline: "twice".into(),
            stack: "local".into(),
            status: RunStatus::Completed,
            started_at: 0,
            ended_at: Some(1),
            git_commit: Some("0123456789abcdef".into()),
            error: None,
            config: serde_json::Value::Null,
            plan_json: String::new(),
        };
        let mut main_plan = baseline_pipeline::twice.plan(&3).unwrap();
        let pr_plan = baseline_pipeline::twice.plan(&4).unwrap();
        main_plan.steps[1].code_hash = "an older version of double".into();
        main_plan.steps.push(main_plan.steps[0].clone());
        main_plan.steps[2].id = "gone".into();
        let b = Baseline::compare(&run("main-7"), &main_plan, &pr_plan);
        assert_eq!(b.code_changed, vec!["double".to_string()]);
        assert_eq!(b.removed, vec!["gone".to_string()]);
        assert!(b.added.is_empty());
        assert_eq!(
            b.params,
            vec![ParamChange {
                step: "make".into(),
                param: "n".into(),
                before: Some("3".into()),
                after: Some("4".into())
            }]
        );
        let mut md = String::new();
        let why = |reason| vec![reason];
        let steps = vec![
            StepReport {
                id: "make".into(),
                step: "make".into(),
                status: "cached".into(),
                duration_ms: None,
                attempts: 1,
                error: None,
                outputs: Vec::new(),
                logs: Vec::new(),
                why: why(Reason::Cached { run: "main-7".into(), step_run: "s".into() }),
            },
            StepReport {
                id: "double".into(),
                step: "double".into(),
                status: "completed".into(),
                duration_ms: None,
                attempts: 1,
                error: None,
                outputs: Vec::new(),
                logs: Vec::new(),
                why: why(Reason::CodeChanged { items: vec!["`helper` in src/main.rs".into()] }),
            },
        ];
        b.to_markdown(&mut md, &steps);
        assert!(md.contains("### Against `main-7` (commit `0123456789ab`)"), "{md}");
        let lead = md.lines().find(|l| l.starts_with("- ")).unwrap_or_default();
        assert_eq!(lead, "- **Why steps ran:**", "the reasons lead what changed: {md}");
        assert!(md.contains("  - `double`: code changed: `helper` in src/main.rs\n"), "{md}");
        assert!(md.contains("- **Code changed:** `double`"), "{md}");
        assert!(md.contains("- **Steps gone:** `gone`"), "{md}");
        assert!(md.contains("- **From the shared cache:** 1 of 2 steps: `make`"), "{md}");
        assert!(md.contains("| `make` | n | `3` | `4` |"), "{md}");
        let same = Baseline::compare(&run("main-8"), &pr_plan, &pr_plan);
        let mut md = String::new();
        same.to_markdown(&mut md, &[]);
        assert!(md.contains("no step's code changed") && md.contains("**Parameters:** the same."), "{md}");
    }

    /// A report shaped like `to_markdown`'s, with `rows` rows per table.
    fn long_report(rows: usize) -> String {
        let mut md = format!("{}\n## ⚠️ zenflow · `p` — quality gate failed\n\n**Run** `r`\n\n", marker("p"));
        md.push_str("### Steps\n\n| Step | Status |\n|---|---|\n");
        (0..rows).for_each(|i| md.push_str(&format!("| `step_{i}` | ✅ completed |\n")));
        md.push_str("\n<details><summary>Log of <code>train</code> (40 lines)</summary>\n\n```text\n");
        (0..rows).for_each(|i| md.push_str(&format!("log line {i}\n")));
        md.push_str("```\n</details>\n");
        md.push_str("\n### Metrics\n\n| Step | Metric | Value |\n|---|---|---:|\n");
        (0..rows).for_each(|i| md.push_str(&format!("| `evaluate_{i}` | accuracy | 0.9{i} |\n")));
        md.push_str("\n### Checks\n\n| | Check |\n|---|---|\n| ❌ fail | appraisal.accuracy |\n");
        md.push_str("\n### Model `m` — ❌ failed\n\n| Metric | Candidate |\n|---|---:|\n| `accuracy` | 0.9 |\n");
        md.push_str("\n### Pipeline\n\n```mermaid\nflowchart LR\n");
        (0..rows).for_each(|i| md.push_str(&format!("  s{i}[\"s{i}\"]\n")));
        md.push_str("```\n\n<details><summary>Artifacts (3)</summary>\n\n| a |\n</details>\n");
        md
    }

    fn fences_balanced(s: &str) -> bool {
        s.lines().filter(|l| l.starts_with("```")).count() % 2 == 0
    }

    #[test]
    fn a_report_that_fits_is_left_alone() {
        let md = long_report(10);
        assert_eq!(fit_comment(&md, GITHUB_COMMENT_LIMIT), md);
    }

    #[test]
    fn a_long_report_is_cut_by_section_and_says_so() {
        let md = long_report(3_000);
        assert!(md.chars().count() > GITHUB_COMMENT_LIMIT);
        let cut = fit_comment(&md, GITHUB_COMMENT_LIMIT);
        assert!(cut.chars().count() <= GITHUB_COMMENT_LIMIT, "{} chars", cut.chars().count());
        assert!(cut.starts_with(&marker("p")), "the marker stays first: the comment is found by it");
        for kept in ["quality gate failed", "### Checks", "appraisal.accuracy", "### Model `m`"] {
            assert!(cut.contains(kept), "{kept} was cut");
        }
        assert!(!cut.contains("log line 1\n") && !cut.contains("flowchart"), "details and the diagram go first");
        assert!(cut.contains("Cut to fit GitHub's 65536-character comment limit"), "{}", &cut[cut.len() - 400..]);
        assert!(
            cut.contains("Log of `train` (40 lines)") && cut.contains("Artifacts (3)"),
            "it names what it left out"
        );
        assert!(fences_balanced(&cut));
    }

    #[test]
    fn a_report_too_long_even_without_its_details_is_cut_at_a_line_with_fences_closed() {
        let mut md = format!("{}\n## verdict\n\n### Checks\n\n```text\n", marker("p"));
        (0..20_000).for_each(|i| md.push_str(&format!("check output line {i}\n")));
        md.push_str("```\n");
        let cut = fit_comment(&md, 10_000);
        assert!(cut.chars().count() <= 10_000);
        assert!(cut.starts_with(&marker("p")) && cut.contains("## verdict"));
        assert!(fences_balanced(&cut), "an open fence would swallow the note");
        assert!(cut.trim_end().ends_with("report artifact hold all of it."), "{}", &cut[cut.len() - 300..]);
        assert!(cut.contains("the end of the report left out"));
    }

    /// A run that failed outside its steps (here the orchestrator, before
    /// any step ran) says why at the top of the comment, and its JUnit has
    /// a failure, so a test report does not show it green.
    #[test]
    fn a_run_failed_outside_its_steps_says_why_and_fails_its_junit() {
        use crate::Pipeline;
        let plan = baseline_pipeline::twice.plan(&3).unwrap();
        let run = RunRecord {
            id: "r-id".into(),
            name: "r".into(),
            pipeline: "twice".into(),
            stack: "ray".into(),
            status: RunStatus::Failed,
            started_at: 0,
            ended_at: Some(1),
            git_commit: None,
            error: Some("the orchestrator failed: the Ray head at <http://127.0.0.1:8265> refused".into()),
            config: serde_json::Value::Null,
            plan_json: String::new(),
        };
        let report = RunReport::new(&run, &plan, &[], &[], false);
        let md = report.to_markdown();
        assert!(
            md.contains(
                "> **Why it failed:** the orchestrator failed: the Ray head at &lt;http://127.0.0.1:8265&gt; refused"
            ),
            "{md}"
        );
        let junit = report.to_junit(false);
        assert!(junit.contains("tests=\"3\" failures=\"1\" skipped=\"2\""), "{junit}");
        assert!(
            junit.contains(
                "name=\"run\" time=\"0\"><failure message=\"the orchestrator failed: the Ray head at \
                            &lt;http://127.0.0.1:8265&gt; refused\" type=\"run\"/>"
            ),
            "{junit}"
        );

        // A failed step is its own failure: no `run` case besides it.
        let mut failed_step = crate::conformance::metadata::step_write("r-id", "make", StepStatus::Failed).step_run;
        failed_step.error = Some("boom".into());
        let junit = RunReport::new(&run, &plan, &[failed_step], &[], false).to_junit(false);
        assert!(junit.contains("failures=\"1\"") && junit.contains("message=\"boom\" type=\"step\""), "{junit}");
        assert!(!junit.contains("name=\"run\""), "{junit}");

        // A completed run has neither.
        let done =
            RunReport::new(&RunRecord { status: RunStatus::Completed, error: None, ..run }, &plan, &[], &[], false);
        assert!(!done.to_markdown().contains("Why it failed"));
        assert!(!done.to_junit(false).contains("name=\"run\""));
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(number(0.93), "0.93");
        assert_eq!(number(12.0), "12");
        assert_eq!(number(0.000012), "1.200e-5");
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        assert_eq!(xml("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
        assert_eq!(duration(0.5), "500 µs");
        assert_eq!(duration(1500.0), "1.50 s");
        assert_eq!(duration(119_700.0), "2 min 0 s");
        assert_eq!(text("Vec<String> <!-- x"), "Vec&lt;String&gt; &lt;!-- x");
        assert_eq!(code("a`b|c"), "a'b\\|c");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(gate([CheckStatus::Pass, CheckStatus::Warn], false), Gate::Passed);
        assert_eq!(gate([CheckStatus::Pass, CheckStatus::Warn], true), Gate::Failed);
        assert_eq!(gate([CheckStatus::Fail], false), Gate::Failed);
    }
}
