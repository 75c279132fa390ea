//! Runs side by side (`runs compare A B [C...]`): their parameters, metrics
//! with the change from the first run, checks, step statuses, and the steps
//! whose code differs. A row whose values differ is marked.

use super::format::{code, number};
use super::text::parameter_lines;
use super::RunReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use zenflow_core::Plan;

/// Several runs compared, the first being the one the others are measured
/// against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The runs, in the order given: `name`, `id`, `status`, `gate`, `git_commit`.
    pub runs: Vec<ComparedRun>,
    /// The pipeline's parameters, by dotted name (values as JSON).
    pub parameters: Vec<Row<String>>,
    /// Each step's metrics, as `step.metric`.
    pub metrics: Vec<MetricRow>,
    /// Each check's status, as `step.check`.
    pub checks: Vec<Row<String>>,
    /// Each step's status.
    pub steps: Vec<Row<String>>,
    /// The steps whose code is not the same in every run.
    pub code_differs: Vec<String>,
}

/// One compared run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComparedRun {
    /// Run name.
    pub name: String,
    /// Run id.
    pub id: String,
    /// Its status.
    pub status: String,
    /// Its quality gate.
    pub gate: super::Gate,
    /// Its git commit, when known.
    pub git_commit: Option<String>,
}

/// One thing compared: its value in each run (`None`: the run has none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row<T> {
    /// What it is.
    pub name: String,
    /// Its value in each run, in the runs' order.
    pub values: Vec<Option<T>>,
    /// Whether the values are not all the same.
    pub differs: bool,
}

/// A metric compared: its values, and each one's change from the first run's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// `step.metric`.
    pub name: String,
    /// Its value in each run.
    pub values: Vec<Option<f64>>,
    /// Each value minus the first run's (`None` where either is missing).
    pub deltas: Vec<Option<f64>>,
    /// Whether the values are not all the same.
    pub differs: bool,
}

impl Comparison {
    /// Compares the runs of `reports`, each with its plan.
    pub fn of(runs: &[(RunReport, Plan)]) -> Comparison {
        let compared = runs
            .iter()
            .map(|(r, _)| ComparedRun {
                name: r.run_name.clone(),
                id: r.run_id.clone(),
                status: r.status.to_string(),
                gate: r.gate,
                git_commit: r.git_commit.clone(),
            })
            .collect();
        let metrics = rows(runs, |r| r.metrics.iter().map(|m| (format!("{}.{}", m.step, m.name), m.value)).collect())
            .into_iter()
            .map(|row| {
                let first = row.values.first().copied().flatten();
                let deltas = row.values.iter().map(|v| Some(v.as_ref()? - first?)).collect();
                MetricRow { name: row.name, values: row.values, deltas, differs: row.differs }
            })
            .collect();
        Comparison {
            runs: compared,
            parameters: rows(runs, |r| parameter_lines(&r.parameters)),
            metrics,
            checks: rows(runs, |r| {
                r.checks.iter().map(|c| (format!("{}.{}", c.step, c.name), c.status.to_string())).collect()
            }),
            steps: rows(runs, |r| r.steps.iter().map(|s| (s.id.clone(), s.status.clone())).collect()),
            code_differs: Vec::new(),
        }
        .with_code(runs)
    }

    /// Fills `code_differs` from the plans: a step whose code hash is not
    /// the same in every run that has it.
    fn with_code(mut self, runs: &[(RunReport, Plan)]) -> Self {
        let mut hashes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (_, plan) in runs {
            for s in &plan.steps {
                hashes.entry(&s.id).or_default().push(&s.code_hash);
            }
        }
        self.code_differs = hashes
            .into_iter()
            .filter(|(_, h)| h.windows(2).any(|w| w[0] != w[1]))
            .map(|(s, _)| s.to_string())
            .collect();
        self
    }
}

/// The union of what `of` gives for each run, as rows in first-seen order.
fn rows<T: Clone + PartialEq>(runs: &[(RunReport, Plan)], of: impl Fn(&RunReport) -> Vec<(String, T)>) -> Vec<Row<T>> {
    let listed: Vec<Vec<(String, T)>> = runs.iter().map(|(r, _)| of(r)).collect();
    let mut names: Vec<String> = Vec::new();
    for (name, _) in listed.iter().flatten() {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let per_run: Vec<BTreeMap<String, T>> = listed.into_iter().map(|l| l.into_iter().collect()).collect();
    names
        .into_iter()
        .map(|name| {
            let values: Vec<Option<T>> = per_run.iter().map(|m| m.get(&name).cloned()).collect();
            let differs = values.windows(2).any(|w| w[0] != w[1]);
            Row { name, values, differs }
        })
        .collect()
}

/// A section of the rendered comparison: its title and its rows (whether
/// the row differs, its name, a cell per run).
type Section = (&'static str, Vec<(bool, String, Vec<String>)>);

impl Comparison {
    /// The comparison as sections of cells, as both renderings show them.
    fn sections(&self) -> Vec<Section> {
        let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
        let cells = |rows: &[Row<String>]| -> Vec<(bool, String, Vec<String>)> {
            rows.iter().map(|r| (r.differs, r.name.clone(), r.values.iter().map(text).collect())).collect()
        };
        let metric = |m: &MetricRow| -> Vec<String> {
            m.values
                .iter()
                .zip(&m.deltas)
                .enumerate()
                .map(|(i, (v, d))| match (v, d) {
                    (None, _) => "—".into(),
                    (Some(v), Some(d)) if i > 0 && *d != 0.0 => {
                        format!("{} ({}{})", number(*v), if *d > 0.0 { "+" } else { "" }, number(*d))
                    }
                    (Some(v), _) => number(*v),
                })
                .collect()
        };
        let run_rows = vec![
            (false, "id".to_string(), self.runs.iter().map(|r| r.id.clone()).collect()),
            (
                self.runs.windows(2).any(|w| w[0].status != w[1].status),
                "status".into(),
                self.runs.iter().map(|r| r.status.clone()).collect(),
            ),
            (
                self.runs.windows(2).any(|w| w[0].gate != w[1].gate),
                "gate".into(),
                self.runs.iter().map(|r| r.gate.as_str().to_string()).collect(),
            ),
            (
                self.runs.windows(2).any(|w| w[0].git_commit != w[1].git_commit),
                "commit".into(),
                self.runs
                    .iter()
                    .map(|r| r.git_commit.as_deref().map_or("—".into(), |c| c.chars().take(12).collect()))
                    .collect(),
            ),
        ];
        vec![
            ("RUN", run_rows),
            ("PARAMETER", cells(&self.parameters)),
            ("METRIC", self.metrics.iter().map(|m| (m.differs, m.name.clone(), metric(m))).collect()),
            ("CHECK", cells(&self.checks)),
            ("STEP", cells(&self.steps)),
        ]
    }

    /// A table for a terminal: a column per run, `*` before a row whose
    /// values differ, a metric's change from the first run in brackets.
    pub fn to_text(&self) -> String {
        let sections = self.sections();
        let all = || sections.iter().flat_map(|(_, rows)| rows.iter());
        let name_width = all().map(|(_, n, _)| n.chars().count()).max().unwrap_or(0).max(9);
        let widths: Vec<usize> = (0..self.runs.len())
            .map(|i| {
                all()
                    .map(|(_, _, c)| c[i].chars().count())
                    .chain([self.runs[i].name.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |mark: &str, name: &str, cells: &[String]| {
            let mut l = format!("{mark} {name:<name_width$}");
            for (c, w) in cells.iter().zip(&widths) {
                let _ = write!(l, "  {c:<w$}");
            }
            l.trim_end().to_string() + "\n"
        };
        let names: Vec<String> = self.runs.iter().map(|r| r.name.clone()).collect();
        let mut out = line(" ", "", &names);
        for (title, rows) in &sections {
            if rows.is_empty() {
                continue;
            }
            out.push_str(&format!("\n{title}\n"));
            for (differs, name, cells) in rows {
                out.push_str(&line(if *differs { "*" } else { " " }, name, cells));
            }
        }
        if !self.code_differs.is_empty() {
            let _ = writeln!(out, "\ncode differs: {}", self.code_differs.join(", "));
        }
        out
    }

    /// The same as markdown tables, for a pull request: differing rows in bold.
    pub fn to_markdown(&self) -> String {
        let mut md = String::from("## Runs compared\n");
        let header: Vec<String> = self.runs.iter().map(|r| format!("`{}`", code(&r.name))).collect();
        for (title, rows) in self.sections() {
            if rows.is_empty() {
                continue;
            }
            let _ = write!(
                md,
                "\n| {} | {} |\n|---|{}\n",
                title.to_lowercase(),
                header.join(" | "),
                "---|".repeat(header.len())
            );
            for (differs, name, cells) in rows {
                let name = if differs { format!("**`{}`**", code(&name)) } else { format!("`{}`", code(&name)) };
                // In code spans: a value is shown as it is, never read as HTML.
                let cells: Vec<String> = cells.iter().map(|c| format!("`{}`", code(c))).collect();
                let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
            }
        }
        if !self.code_differs.is_empty() {
            let steps: Vec<String> = self.code_differs.iter().map(|s| format!("`{}`", code(s))).collect();
            let _ = writeln!(md, "\n**Code differs:** {}", steps.join(", "));
        }
        md
    }
}
