//! Run reports for humans and for CI: markdown (a PR comment, a job summary),
//! JSON (for other tools) and JUnit XML (for test-report tooling).
//!
//! A [`RunReport`] is built from what the metadata store recorded, so a report
//! can be written for any past run, not only the one just finished.
//!
//! # JSON schema (`schema: 2`)
//!
//! Version 2 added `parameters` and the gate's `not_evaluated`; a reader of
//! version 1 that took every gate but `failed` as passed must not.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `schema` | int | layout version, 2 |
//! | `pipeline`, `run_id`, `run_name`, `stack` | string | what ran where |
//! | `git_commit` | string \| null | commit of the checkout |
//! | `git_branch` | string \| null | the branch it ran for: CI's (a pull request's source branch), else the checkout's |
//! | `ci_job_url` | string \| null | the CI job that ran it (GitHub Actions run, GitLab job) |
//! | `status` | `"completed"` \| `"failed"` \| `"running"` \| `"pending"` \| `"error"` | the run's status; `"error"`: it could not start or be recorded (then only `schema`, `pipeline`, `stack`, `status`, `error`, empty `metrics` and `checks`, and `steps`: empty when it never started, else what its steps did as the run saw it, without logs) |
//! | `error` | string | why the run could not start or be recorded (`status: "error"` only) |
//! | `parameters` | object | the pipeline's parameters as the run was configured (code defaults, then `--config`, then `--set`) |
//! | `gate` | `"passed"` \| `"failed"` \| `"not_evaluated"` | quality gate: failed when a check failed (or warned, with warnings as errors), passed when the run completed and none did, else not evaluated (a planned or running run, one that failed before its checks) |
//! | `started_at`, `ended_at` | RFC 3339 string \| null | UTC |
//! | `duration_ms` | float \| null | wall time |
//! | `steps[]` | object | `id`, `step`, `status` (`completed`, `cached`, `failed`, `skipped`, `running`), `duration_ms`, `attempts`, `error`, `outputs[]`, `logs[]`, `settings[]` (what differs from the default step options, e.g. `cache off`; omitted when nothing does) |
//! | `steps[].logs[]` | string | what the step logged (`StepContext::log`, `tracing` events, and on process-based orchestrators its stdout and stderr), at most 5,000 lines and 512 KiB a step, the last line saying what was cut |
//! | `steps[].outputs[]` | object | `output`, `artifact_id`, `name`, `version`, `type_name`, `content_hash`, `uri`, `size` |
//! | `metrics[]` | object | `step`, `name`, `value`: numeric metadata logged with `StepContext::log_metadata` |
//! | `checks[]` | object | `step`, `name`, `status` (`pass`, `warn`, `fail`, `skip`), `value`, `threshold`, `message` |
//! | `registered[]` | object | model versions the run's steps registered: `step`, `model`, `version`, `aliases` (omitted when none) |
//! | `models[]` | object | appraisals: `step`, `model`, `candidate_version` (int \| null), `production_version` (int \| null: none yet), `passed`, `note`, `rows[]` of `metric`, `direction`, `candidate`, `production`, `delta`, `threshold`, `status`, `message` |
//! | `dag_mermaid` | string | the plan as a mermaid flowchart |

mod build;
mod colour;
mod compare;
mod deletion;
mod failed;
mod format;
mod graph;
mod junit;
mod listing;
mod markdown;
mod text;

pub use colour::Colour;
pub use compare::{ComparedRun, Comparison, MetricRow, Row};
pub use deletion::deletion;
pub use failed::FailedToRun;
pub use format::duration;
pub use graph::{dot, mermaid};
pub use listing::{runs_table, RunSummary};
pub use markdown::{fit_comment, marker, GITHUB_COMMENT_LIMIT};

use serde::{Deserialize, Serialize};
use zenflow_core::check::CheckStatus;
use zenflow_core::metadata::RunStatus;

/// Version of the JSON layout.
pub const REPORT_SCHEMA: u32 = 2;

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
    /// The branch it ran for (CI's, else the checkout's), when known.
    #[serde(default)]
    pub git_branch: Option<String>,
    /// The CI job that ran it (GitHub Actions run, GitLab job), when known.
    #[serde(default)]
    pub ci_job_url: Option<String>,
    /// The pipeline's parameters as the run was configured (the plan's
    /// config: code defaults, then the config file, then `--set`).
    #[serde(default)]
    pub parameters: serde_json::Value,
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
    /// The pipeline's parameters that differ (by dotted name; `step` empty).
    #[serde(default)]
    pub parameters: Vec<ParamChange>,
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
    /// The run completed and no check failed.
    Passed,
    /// A check failed (or warned, with warnings as errors).
    Failed,
    /// No verdict yet, and none by default: the run has not completed
    /// (planned, running, or failed before all its checks ran) and no
    /// check it recorded failed.
    NotEvaluated,
}

impl Gate {
    /// `passed`, `failed` or `not evaluated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Passed => "passed",
            Gate::Failed => "failed",
            Gate::NotEvaluated => "not evaluated",
        }
    }
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
    /// Its settings that differ from the defaults (`cache off`, `retries
    /// 2 (backoff 200 ms)`, ...), as the run's plan had them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<String>,
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
    /// The model's name.
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

/// The gate of a run with status `run` whose checks have `statuses`: a
/// failed check fails it whatever the run did; it passes only a run that
/// completed.
pub fn gate(run: RunStatus, statuses: impl IntoIterator<Item = CheckStatus>, warnings_as_errors: bool) -> Gate {
    if statuses.into_iter().any(|s| fails_gate(s, warnings_as_errors)) {
        Gate::Failed
    } else if run == RunStatus::Completed {
        Gate::Passed
    } else {
        Gate::NotEvaluated
    }
}

/// Whether a check with `status` fails the quality gate.
pub(crate) fn fails_gate(status: CheckStatus, warnings_as_errors: bool) -> bool {
    status == CheckStatus::Fail || (warnings_as_errors && status == CheckStatus::Warn)
}

#[cfg(test)]
mod tests {
    use super::format::*;
    use super::*;
    use zenflow_core::metadata::{RunRecord, StepStatus};
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
            git_branch: None,
            ci_job_url: None,
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
                settings: Vec::new(),
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
                settings: vec!["retries 2 (backoff 200 ms)".into()],
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
            git_branch: None,
            ci_job_url: None,
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
        let mut failed_step =
            zenflow_core::metadata::StepRunRecord::empty("s".into(), "r-id", "make", "make", StepStatus::Failed, 0);
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
        let done = RunStatus::Completed;
        assert_eq!(gate(done, [CheckStatus::Pass, CheckStatus::Warn], false), Gate::Passed);
        assert_eq!(gate(done, [CheckStatus::Pass, CheckStatus::Warn], true), Gate::Failed);
        assert_eq!(gate(done, [CheckStatus::Fail], false), Gate::Failed);
        assert_eq!(gate(done, [], false), Gate::Passed);
        for unfinished in [RunStatus::Failed, RunStatus::Pending, RunStatus::Running] {
            assert_eq!(gate(unfinished, [CheckStatus::Pass], false), Gate::NotEvaluated, "{unfinished}");
            assert_eq!(gate(unfinished, [CheckStatus::Fail], false), Gate::Failed, "{unfinished}");
        }
    }
}
