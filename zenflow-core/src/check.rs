//! Checks: named quality results a step records, and that gate a run.
//!
//! A step records checks through [`StepContext::check`](crate::StepContext::check).
//! A failed check does not fail the step; it fails the run's *quality gate*
//! (the pipeline binary exits with code 3), so CI can tell "the code broke"
//! from "the model is not good enough".

use serde::{Deserialize, Serialize};
use std::fmt;

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// The check passed.
    Pass,
    /// Not good, but not blocking (unless warnings count as errors).
    Warn,
    /// The check failed: the run's quality gate fails.
    Fail,
    /// The check could not be evaluated (e.g. no reference to compare with).
    Skip,
}

impl CheckStatus {
    /// The lowercase name stored and reported.
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
            CheckStatus::Skip => "skip",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pass" => CheckStatus::Pass,
            "warn" => CheckStatus::Warn,
            "fail" => CheckStatus::Fail,
            "skip" => CheckStatus::Skip,
            _ => return None,
        })
    }
}

/// A number as check and appraisal messages show it: four decimals,
/// trailing zeros dropped (the records and tables keep the exact values).
pub(crate) fn shown(v: f64) -> String {
    let s = format!("{v:.4}");
    match s.contains('.') {
        true => s.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => s,
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that `{:<6}` lines a table up.
        f.pad(self.as_str())
    }
}

/// Which way a metric improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Larger is better (accuracy, AUC).
    HigherIsBetter,
    /// Smaller is better (loss, error, latency).
    LowerIsBetter,
}

impl Direction {
    /// The worst value still within `tolerance` of `reference`.
    pub fn worst_allowed(self, reference: f64, tolerance: f64) -> f64 {
        match self {
            Direction::HigherIsBetter => reference - tolerance,
            Direction::LowerIsBetter => reference + tolerance,
        }
    }

    /// Whether `value` is at least as good as `than` (false for NaN).
    pub fn at_least_as_good(self, value: f64, than: f64) -> bool {
        match self {
            Direction::HigherIsBetter => value >= than,
            Direction::LowerIsBetter => value <= than,
        }
    }

    /// How much better `value` is than `than` (negative: worse).
    pub fn improvement(self, value: f64, than: f64) -> f64 {
        match self {
            Direction::HigherIsBetter => value - than,
            Direction::LowerIsBetter => than - value,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::HigherIsBetter => "higher is better",
            Direction::LowerIsBetter => "lower is better",
        })
    }
}

/// One check result: name, status, the observed value and the threshold it
/// was held against, and a message for humans.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Name, unique within the step (`accuracy_min`, `no_nulls`).
    pub name: String,
    /// Outcome.
    pub status: CheckStatus,
    /// The observed value, when the check is numeric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The threshold the value was held against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// What was checked and what it found.
    pub message: String,
}

impl Check {
    /// A check with an explicit status.
    pub fn new(name: impl Into<String>, status: CheckStatus, message: impl Into<String>) -> Self {
        Check { name: name.into(), status, value: None, threshold: None, message: message.into() }
    }

    /// A passing check.
    pub fn pass(name: impl Into<String>, message: impl Into<String>) -> Self {
        Check::new(name, CheckStatus::Pass, message)
    }

    /// A warning.
    pub fn warn(name: impl Into<String>, message: impl Into<String>) -> Self {
        Check::new(name, CheckStatus::Warn, message)
    }

    /// A failed check.
    pub fn fail(name: impl Into<String>, message: impl Into<String>) -> Self {
        Check::new(name, CheckStatus::Fail, message)
    }

    /// A check that could not be evaluated.
    pub fn skip(name: impl Into<String>, message: impl Into<String>) -> Self {
        Check::new(name, CheckStatus::Skip, message)
    }

    /// Passes when `value >= threshold`, fails otherwise (and on NaN).
    pub fn at_least(name: impl Into<String>, value: f64, threshold: f64) -> Self {
        let ok = value >= threshold;
        Check {
            name: name.into(),
            status: if ok { CheckStatus::Pass } else { CheckStatus::Fail },
            value: Some(value),
            threshold: Some(threshold),
            message: format!(
                "{} {} the minimum {}",
                shown(value),
                if ok { "meets" } else { "is below" },
                shown(threshold)
            ),
        }
    }

    /// Passes when `value <= threshold`, fails otherwise (and on NaN).
    pub fn at_most(name: impl Into<String>, value: f64, threshold: f64) -> Self {
        let ok = value <= threshold;
        Check {
            name: name.into(),
            status: if ok { CheckStatus::Pass } else { CheckStatus::Fail },
            value: Some(value),
            threshold: Some(threshold),
            message: format!(
                "{} {} the maximum {}",
                shown(value),
                if ok { "is within" } else { "exceeds" },
                shown(threshold)
            ),
        }
    }

    /// Compares a metric with a reference (e.g. the production model's):
    /// passes when `value` is not worse than `reference` by more than
    /// `tolerance`, in the metric's [`Direction`]. Skips when there is no
    /// reference.
    ///
    /// ```
    /// # use zenflow_core::check::{Check, CheckStatus, Direction};
    /// let c = Check::not_worse_than("accuracy", 0.89, Some(0.90), 0.02, Direction::HigherIsBetter);
    /// assert_eq!(c.status, CheckStatus::Pass);
    /// let c = Check::not_worse_than("log_loss", 0.30, Some(0.20), 0.05, Direction::LowerIsBetter);
    /// assert_eq!(c.status, CheckStatus::Fail);
    /// ```
    pub fn not_worse_than(
        name: impl Into<String>,
        value: f64,
        reference: Option<f64>,
        tolerance: f64,
        direction: Direction,
    ) -> Self {
        let name = name.into();
        let Some(reference) = reference else {
            return Check {
                name,
                status: CheckStatus::Skip,
                value: Some(value),
                threshold: None,
                message: "no reference value to compare with".into(),
            };
        };
        let threshold = direction.worst_allowed(reference, tolerance);
        let ok = direction.at_least_as_good(value, threshold);
        Check {
            name,
            status: if ok { CheckStatus::Pass } else { CheckStatus::Fail },
            value: Some(value),
            threshold: Some(threshold),
            message: format!(
                "{} vs reference {} ({direction}, tolerance {}): {}",
                shown(value),
                shown(reference),
                shown(tolerance),
                if ok { "not worse" } else { "worse" }
            ),
        }
    }

    /// Turns a failure into a warning (a soft gate).
    pub fn soft(mut self) -> Self {
        if self.status == CheckStatus::Fail {
            self.status = CheckStatus::Warn;
        }
        self
    }

    /// Replaces the message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_numbers_short_and_the_records_keep_them_whole() {
        let c = Check::at_least("accuracy_min", 1.0 / 3.0, 0.9);
        assert_eq!(c.message, "0.3333 is below the minimum 0.9");
        assert_eq!(c.value, Some(1.0 / 3.0));
        assert_eq!(Check::at_most("size_max", 10.0, 8.0).message, "10 exceeds the maximum 8");
        let c = Check::not_worse_than("loss", 0.123456, Some(0.1), 0.01, Direction::LowerIsBetter);
        assert!(c.message.starts_with("0.1235 vs reference 0.1 ("), "{}", c.message);
    }

    #[test]
    fn thresholds() {
        assert_eq!(Check::at_least("a", 0.9, 0.8).status, CheckStatus::Pass);
        assert_eq!(Check::at_least("a", 0.7, 0.8).status, CheckStatus::Fail);
        assert_eq!(Check::at_least("a", f64::NAN, 0.8).status, CheckStatus::Fail, "NaN never passes");
        assert_eq!(Check::at_most("l", 0.1, 0.2).status, CheckStatus::Pass);
        assert_eq!(Check::at_most("l", 0.3, 0.2).status, CheckStatus::Fail);
        assert_eq!(Check::at_least("a", 0.7, 0.8).soft().status, CheckStatus::Warn);
    }

    #[test]
    fn comparisons_with_a_reference() {
        use Direction::{HigherIsBetter as Up, LowerIsBetter as Down};
        let c = Check::not_worse_than("acc", 0.89, Some(0.9), 0.02, Up);
        assert_eq!((c.status, c.threshold.map(|t| (t * 100.0).round())), (CheckStatus::Pass, Some(88.0)));
        assert_eq!(Check::not_worse_than("acc", 0.85, Some(0.9), 0.02, Up).status, CheckStatus::Fail);
        assert_eq!(Check::not_worse_than("loss", 0.21, Some(0.2), 0.02, Down).status, CheckStatus::Pass);
        assert_eq!(Check::not_worse_than("loss", 0.25, Some(0.2), 0.02, Down).status, CheckStatus::Fail);
        assert_eq!(Check::not_worse_than("acc", 0.5, None, 0.0, Up).status, CheckStatus::Skip);
        assert_eq!(Check::not_worse_than("acc", f64::NAN, Some(0.9), 0.1, Up).status, CheckStatus::Fail);
    }
}
