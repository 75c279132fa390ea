//! Appraisal: a candidate model against the version in production, both
//! scored on the same evaluation data in the same run.
//!
//! A step that has scored both models builds an [`Appraisal`] of the rules
//! the candidate must meet (per metric: which way is better, how much worse
//! it may be, and whether a failure blocks or warns), evaluates it, and
//! records the result with [`StepContext::record_appraisal`]: one check per
//! metric, which feed the run's quality gate (exit code 3), and the table
//! the reports show (metric | candidate | production | Δ | threshold | status).
//!
//! ```
//! use std::collections::BTreeMap;
//! use zenflow_core::appraisal::Appraisal;
//! use zenflow_core::check::{CheckStatus, Direction};
//!
//! let rules = Appraisal::new("breast-cancer")
//!     .metric("accuracy", Direction::HigherIsBetter, 0.01)
//!     .max_jump("accuracy", 0.15)
//!     .soft_metric("latency_ms", Direction::LowerIsBetter, 0.5);
//! let candidate = BTreeMap::from([("accuracy".to_string(), 0.95), ("latency_ms".to_string(), 1.2)]);
//! let production = BTreeMap::from([("accuracy".to_string(), 0.93), ("latency_ms".to_string(), 1.0)]);
//! let result = rules.evaluate(&candidate, Some((4, &production)));
//! assert!(result.passed);
//! assert_eq!(result.rows[0].status, CheckStatus::Pass);
//! // No production version yet: passes, with a note.
//! assert!(rules.evaluate(&candidate, None).passed);
//! ```
//!
//! [`StepContext::record_appraisal`]: crate::StepContext::record_appraisal

use crate::check::{shown, Check, CheckStatus, Direction};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The key under which a step run's metadata holds its appraisal.
pub const METADATA_KEY: &str = "zenflow.appraisal";

/// Whether a failed rule blocks the quality gate or only warns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Fails the gate.
    Hard,
    /// Warns (fails the gate only with warnings as errors).
    Soft,
}

/// What one metric of the candidate must meet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRule {
    /// Metric name.
    pub metric: String,
    /// Which way is better.
    pub direction: Direction,
    /// How much worse than production the candidate may be.
    pub tolerance: f64,
    /// An improvement larger than this is suspicious (a leak, a broken
    /// evaluation): it warns.
    pub max_jump: Option<f64>,
    /// Whether a failure blocks or warns.
    pub severity: Severity,
}

/// The rules a candidate must meet against production.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Appraisal {
    /// The model appraised.
    pub model: String,
    /// Per-metric rules, in order.
    pub rules: Vec<MetricRule>,
}

/// One metric of an appraisal, as the reports show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppraisalRow {
    /// Metric name.
    pub metric: String,
    /// Which way is better.
    pub direction: Direction,
    /// The candidate's value.
    pub candidate: Option<f64>,
    /// Production's value, when there is a production version.
    pub production: Option<f64>,
    /// Candidate minus production.
    pub delta: Option<f64>,
    /// The worst value allowed.
    pub threshold: Option<f64>,
    /// Outcome.
    pub status: CheckStatus,
    /// Why.
    pub message: String,
}

/// The outcome of an appraisal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppraisalResult {
    /// The model appraised.
    pub model: String,
    /// The version holding production when the appraisal ran (`None`: none yet).
    pub production_version: Option<i64>,
    /// The candidate's version, once registered.
    pub candidate_version: Option<i64>,
    /// Per-metric outcomes.
    pub rows: Vec<AppraisalRow>,
    /// Whether no hard rule failed.
    pub passed: bool,
    /// A remark for the report (e.g. that there was nothing to compare with).
    pub note: Option<String>,
}

impl Appraisal {
    /// No rules yet, for `model`.
    pub fn new(model: impl Into<String>) -> Self {
        Appraisal { model: model.into(), rules: Vec::new() }
    }

    /// A metric the candidate must not be worse at than production by
    /// more than `tolerance`; a failure blocks.
    pub fn metric(mut self, metric: impl Into<String>, direction: Direction, tolerance: f64) -> Self {
        self.rules.push(MetricRule {
            metric: metric.into(),
            direction,
            tolerance,
            max_jump: None,
            severity: Severity::Hard,
        });
        self
    }

    /// As [`Appraisal::metric`], but a failure only warns.
    pub fn soft_metric(self, metric: impl Into<String>, direction: Direction, tolerance: f64) -> Self {
        let mut a = self.metric(metric, direction, tolerance);
        if let Some(r) = a.rules.last_mut() {
            r.severity = Severity::Soft;
        }
        a
    }

    /// Warns when `metric` improves on production by more than `jump`:
    /// a large jump more often means a broken evaluation than a better model.
    pub fn max_jump(mut self, metric: &str, jump: f64) -> Self {
        if let Some(r) = self.rules.iter_mut().find(|r| r.metric == metric) {
            r.max_jump = Some(jump);
        }
        self
    }

    /// Holds the candidate's metrics against production's (`None`: no
    /// version holds production yet, which passes with a note).
    pub fn evaluate(
        &self,
        candidate: &BTreeMap<String, f64>,
        production: Option<(i64, &BTreeMap<String, f64>)>,
    ) -> AppraisalResult {
        let mut rows = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            let value = candidate.get(&rule.metric).copied();
            let reference = production.and_then(|(_, m)| m.get(&rule.metric).copied());
            let row = |status, threshold, message: String| AppraisalRow {
                metric: rule.metric.clone(),
                direction: rule.direction,
                candidate: value,
                production: reference,
                delta: value.zip(reference).map(|(c, p)| c - p),
                threshold,
                status,
                message,
            };
            let failed = match rule.severity {
                Severity::Hard => CheckStatus::Fail,
                Severity::Soft => CheckStatus::Warn,
            };
            rows.push(match (value, production, reference) {
                (None, _, _) => row(failed, None, format!("the candidate has no metric `{}`", rule.metric)),
                (Some(_), None, _) => {
                    row(CheckStatus::Pass, None, "no version holds production yet: nothing to compare with".into())
                }
                (Some(_), Some((v, _)), None) => {
                    row(CheckStatus::Skip, None, format!("production (v{v}) has no metric `{}`", rule.metric))
                }
                (Some(c), Some(_), Some(p)) => {
                    let threshold = rule.direction.worst_allowed(p, rule.tolerance);
                    let (c, p, value, reference) = (shown(c), shown(p), c, p);
                    let (c_raw, p_raw) = (value, reference);
                    let gain = rule.direction.improvement(c_raw, p_raw);
                    if !rule.direction.at_least_as_good(c_raw, threshold) {
                        row(
                            failed,
                            Some(threshold),
                            format!(
                                "{c} is worse than production's {p} by more than {} ({})",
                                rule.tolerance, rule.direction
                            ),
                        )
                    } else if rule.max_jump.is_some_and(|j| gain > j) {
                        row(
                            CheckStatus::Warn,
                            Some(threshold),
                            format!(
                                "{c} beats production's {p} by {gain:.4}, more than the {} expected: check the \
                                 evaluation",
                                rule.max_jump.unwrap_or_default()
                            ),
                        )
                    } else {
                        row(CheckStatus::Pass, Some(threshold), format!("{c} vs production's {p}: not worse"))
                    }
                }
            });
        }
        let passed = !rows.iter().any(|r| r.status == CheckStatus::Fail);
        AppraisalResult {
            model: self.model.clone(),
            production_version: production.map(|(v, _)| v),
            candidate_version: None,
            rows,
            passed,
            note: production.is_none().then(|| "no version holds production yet: the candidate passes".to_string()),
        }
    }
}

impl AppraisalResult {
    /// One check per metric, named `appraisal.<metric>`.
    pub fn checks(&self) -> Vec<Check> {
        self.rows
            .iter()
            .map(|r| Check {
                name: format!("appraisal.{}", r.metric),
                status: r.status,
                value: r.candidate,
                threshold: r.threshold,
                message: r.message.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn rules_hold_the_candidate_against_production() {
        let a = Appraisal::new("m")
            .metric("accuracy", Direction::HigherIsBetter, 0.01)
            .max_jump("accuracy", 0.05)
            .soft_metric("loss", Direction::LowerIsBetter, 0.05)
            .metric("recall", Direction::HigherIsBetter, 0.0);
        let prod = m(&[("accuracy", 0.90), ("loss", 0.20), ("recall", 0.8)]);
        let status = |c: &BTreeMap<String, f64>| -> Vec<CheckStatus> {
            a.evaluate(c, Some((3, &prod))).rows.iter().map(|r| r.status).collect()
        };
        use CheckStatus::*;
        assert_eq!(status(&m(&[("accuracy", 0.895), ("loss", 0.24), ("recall", 0.8)])), [Pass, Pass, Pass]);
        assert_eq!(status(&m(&[("accuracy", 0.85), ("loss", 0.30), ("recall", 0.79)])), [Fail, Warn, Fail]);
        // A suspiciously large jump warns; a missing metric fails.
        assert_eq!(status(&m(&[("accuracy", 0.999), ("loss", 0.2)])), [Warn, Pass, Fail]);
        let r = a.evaluate(&m(&[("accuracy", 0.85), ("loss", 0.2), ("recall", 0.9)]), Some((3, &prod)));
        assert!(!r.passed);
        assert_eq!(r.production_version, Some(3));
        let row = &r.rows[0];
        assert_eq!((row.candidate, row.production), (Some(0.85), Some(0.90)));
        assert!((row.delta.unwrap() + 0.05).abs() < 1e-9 && (row.threshold.unwrap() - 0.89).abs() < 1e-9);
        assert_eq!(row.message, "0.85 is worse than production's 0.9 by more than 0.01 (higher is better)");
        let long =
            a.evaluate(&m(&[("accuracy", 0.9047619047619048), ("loss", 0.2), ("recall", 0.8)]), Some((3, &prod)));
        assert_eq!(
            long.rows[0].message, "0.9048 vs production's 0.9: not worse",
            "messages round; tables keep the values"
        );
        assert_eq!(long.rows[0].candidate, Some(0.9047619047619048));
        let checks = r.checks();
        assert_eq!(checks[0].name, "appraisal.accuracy");
        assert_eq!(checks[0].status, CheckStatus::Fail);
        // Soft failures do not fail the appraisal.
        let soft = a.evaluate(&m(&[("accuracy", 0.9), ("loss", 0.9), ("recall", 0.8)]), Some((3, &prod)));
        assert!(soft.passed);
    }

    #[test]
    fn no_production_version_passes_with_a_note() {
        let a = Appraisal::new("m").metric("accuracy", Direction::HigherIsBetter, 0.0);
        let r = a.evaluate(&m(&[("accuracy", 0.5)]), None);
        assert!(r.passed);
        assert_eq!(r.rows[0].status, CheckStatus::Pass);
        assert!(r.note.as_deref().unwrap().contains("no version holds production"));
    }
}
