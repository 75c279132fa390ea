//! The report as JUnit XML, for test-report tooling.

use super::format::{number, xml};
use super::*;
use std::fmt::Write as _;

impl RunReport {
    /// The checks (and failed steps) as JUnit XML: one test case per check,
    /// failures and skips mapped; warnings are failures with
    /// `warnings_as_errors`, otherwise passing cases with the warning in
    /// `system-out`.
    pub fn to_junit(&self, warnings_as_errors: bool) -> String {
        let mut cases = String::new();
        let mut tally = Tally::default();
        self.check_cases(warnings_as_errors, &mut cases, &mut tally);
        self.step_cases(&mut cases, &mut tally);
        let step_failed = self.steps.iter().any(|s| matches!(s.status.as_str(), "failed" | "running"));
        if self.status == RunStatus::Failed && !step_failed {
            // Failed outside its steps (the orchestrator, the process): a
            // test report with no failure would show the run green.
            tally.tests += 1;
            tally.failures += 1;
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
            tests: tally.tests,
            failures: tally.failures,
            skipped: tally.skipped,
            seconds: self.duration_ms.unwrap_or(0.0) / 1000.0,
        };
        suite.document(&cases)
    }

    /// A test case per check: failures and skips mapped, warnings failing
    /// only with `warnings_as_errors`.
    fn check_cases(&self, warnings_as_errors: bool, cases: &mut String, tally: &mut Tally) {
        for c in &self.checks {
            tally.tests += 1;
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
                    tally.failures += 1;
                    let _ = write!(cases, "<failure message=\"{}\" type=\"check\"/>", xml(&detail));
                }
                CheckStatus::Warn if warnings_as_errors => {
                    tally.failures += 1;
                    let _ = write!(cases, "<failure message=\"{}\" type=\"warning\"/>", xml(&detail));
                }
                CheckStatus::Warn => {
                    let _ = write!(cases, "<system-out>warning: {}</system-out>", xml(&detail));
                }
                CheckStatus::Skip => {
                    tally.skipped += 1;
                    let _ = write!(cases, "<skipped message=\"{}\"/>", xml(&detail));
                }
            }
            cases.push_str("</testcase>\n");
        }
    }

    /// A test case per step: failed and unfinished steps fail, skipped and
    /// pending ones are skipped.
    fn step_cases(&self, cases: &mut String, tally: &mut Tally) {
        for s in &self.steps {
            tally.tests += 1;
            let time = s.duration_ms.unwrap_or(0.0) / 1000.0;
            let _ = write!(
                cases,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{time:.3}\">",
                xml(&format!("{}.steps", self.pipeline)),
                xml(&s.id)
            );
            match s.status.as_str() {
                "failed" => {
                    tally.failures += 1;
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
                    tally.failures += 1;
                    let _ = write!(cases, "<failure message=\"the step did not finish\" type=\"step\"/>");
                }
                "skipped" | "pending" => {
                    tally.skipped += 1;
                    let _ = write!(cases, "<skipped message=\"{}\"/>", xml(s.error.as_deref().unwrap_or("not run")));
                }
                _ => {}
            }
            cases.push_str("</testcase>\n");
        }
    }
}

/// How many test cases, failures and skips a document holds.
#[derive(Default)]
struct Tally {
    tests: usize,
    failures: usize,
    skipped: usize,
}

/// The envelope of a JUnit document with one test suite.
pub(super) struct JunitSuite<'a> {
    pub(super) name: &'a str,
    pub(super) timestamp: Option<&'a str>,
    pub(super) tests: usize,
    pub(super) failures: usize,
    pub(super) skipped: usize,
    pub(super) seconds: f64,
}

impl JunitSuite<'_> {
    /// The document around `cases` (`<testcase>` lines).
    pub(super) fn document(&self, cases: &str) -> String {
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
