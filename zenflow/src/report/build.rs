//! A report built from what the stores recorded of a run.

use super::*;
use std::collections::BTreeMap;
use zenflow_core::metadata::{RunRecord, StepRunRecord, StepStatus};
use zenflow_core::{Plan, Result, Stack};

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
            parameters: parameter_changes(&baseline_plan.config, &plan.config),
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
}

/// The pipeline parameters that differ between `before` and `after` (each
/// as [`text::parameter_lines`](super::text) names them), with an empty `step`.
fn parameter_changes(before: &serde_json::Value, after: &serde_json::Value) -> Vec<ParamChange> {
    let before: BTreeMap<String, String> = super::text::parameter_lines(before).into_iter().collect();
    let after: BTreeMap<String, String> = super::text::parameter_lines(after).into_iter().collect();
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .map(|n| ParamChange {
            step: String::new(),
            param: n.clone(),
            before: before.get(n).cloned(),
            after: after.get(n).cloned(),
        })
        .collect()
}

impl RunReport {
    /// Builds the report of the run `reference` names (any reference
    /// [`zenflow_core::run::find_run`] takes) from the stack's metadata.
    /// With `warnings_as_errors`, a warning fails the gate.
    pub fn load(stack: &Stack, reference: &str, warnings_as_errors: bool) -> Result<RunReport> {
        RunReport::of_run(stack, &stack.find_run(None, reference)?, warnings_as_errors)
    }

    /// [`RunReport::load`] for a run already found.
    pub fn of_run(stack: &Stack, run: &RunRecord, warnings_as_errors: bool) -> Result<RunReport> {
        let steps = stack.step_runs(&run.id)?;
        let originals = RunReport::originals(stack, &steps)?;
        let plan = run.plan()?;
        let report = RunReport::new(run, &plan, &steps, &originals, warnings_as_errors);
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
            if let Some(sr) = stack.block_on(stack.metadata().step_run(id))? {
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
        let mut found = Found::default();
        for ps in &plan.steps {
            let Some(sr) = latest(&ps.id) else {
                steps.push(StepReport::pending(ps));
                continue;
            };
            let original = originals.iter().find(|o| sr.original_step_run.as_ref() == Some(&o.id));
            steps.push(StepReport::of(ps, sr, plan.no_cache, original));
            // A cached step run logged nothing itself: its metrics and checks
            // are those of the step run it reuses, which the report shows too.
            let source = match (sr.status, original) {
                (StepStatus::Cached, Some(original)) => original,
                _ => sr,
            };
            found.add(&ps.id, source);
        }
        let Found { metrics, checks, models } = found;
        let gate = gate(run.status, checks.iter().map(|c| c.status), warnings_as_errors);
        RunReport {
            schema: REPORT_SCHEMA,
            pipeline: run.pipeline.clone(),
            run_id: run.id.clone(),
            run_name: run.name.clone(),
            stack: run.stack.clone(),
            git_commit: run.git_commit.clone(),
            git_branch: run.git_branch.clone(),
            error: run.error.clone(),
            ci_job_url: run.ci_job_url.clone(),
            parameters: plan.config.clone(),
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
    /// `actions/runs/ID`, GitLab's `$CI_JOB_URL`), when its record names
    /// none (a run recorded before runs kept it).
    pub fn with_ci_job(mut self, url: Option<String>) -> Self {
        self.ci_job_url = self.ci_job_url.take().or(url);
        self
    }

    /// The checks that fail the quality gate.
    pub fn gate_failures(&self, warnings_as_errors: bool) -> impl Iterator<Item = &CheckReport> {
        self.checks.iter().filter(move |c| fails_gate(c.status, warnings_as_errors))
    }

    /// The verdict on this run: its status, its quality gate (failed by a
    /// warning too when `warnings_as_errors`), and a deployment it rolled
    /// back.
    pub fn verdict(&self, warnings_as_errors: bool) -> Verdict {
        let verdict = match (self.status, self.gate) {
            (RunStatus::Completed, Gate::Passed) => return Verdict::Passed,
            // Never passed by default (`gate` gives a completed run a verdict).
            (RunStatus::Completed, Gate::NotEvaluated) => {
                Verdict::Failed(Some("its quality gate was not evaluated".into()))
            }
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
            let Ok(versions) = stack.block_on(registry.versions(model)) else { continue };
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
}

impl StepReport {
    /// A step with no record yet.
    fn pending(ps: &zenflow_core::plan::PlanStep) -> StepReport {
        StepReport {
            id: ps.id.clone(),
            step: ps.step.clone(),
            status: "pending".into(),
            duration_ms: None,
            attempts: 0,
            error: None,
            outputs: Vec::new(),
            logs: Vec::new(),
            why: Vec::new(),
            settings: ps.options.settings(),
        }
    }

    /// Step `ps` as its latest record `sr` says; `original` is the step run
    /// a cached one reuses.
    fn of(
        ps: &zenflow_core::plan::PlanStep,
        sr: &StepRunRecord,
        no_cache: bool,
        original: Option<&StepRunRecord>,
    ) -> StepReport {
        StepReport {
            id: ps.id.clone(),
            step: ps.step.clone(),
            status: sr.status.as_str().into(),
            duration_ms: sr.duration().map(|d| d.as_secs_f64() * 1000.0),
            attempts: sr.attempts,
            error: sr.error.clone(),
            outputs: sr.outputs.iter().map(OutputReport::from).collect(),
            logs: sr.logs.clone(),
            why: zenflow_core::why::reasons(sr, ps, no_cache, original),
            settings: ps.options.settings(),
        }
    }
}

/// What the steps' records say beyond their status: metrics, checks and
/// appraisals.
#[derive(Default)]
struct Found {
    metrics: Vec<MetricReport>,
    checks: Vec<CheckReport>,
    models: Vec<ModelReport>,
}

impl Found {
    /// Adds what `source`, the record that speaks for step `step`, logged.
    fn add(&mut self, step: &str, source: &StepRunRecord) {
        for (name, value) in &source.metadata {
            if let Some(v) = value.as_f64() {
                self.metrics.push(MetricReport { step: step.to_string(), name: name.clone(), value: v });
            }
        }
        if let Some(appraisal) = appraisal_of(source) {
            self.models.push(ModelReport { step: step.to_string(), appraisal });
        }
        for c in &source.checks {
            self.checks.push(CheckReport {
                step: step.to_string(),
                name: c.name.clone(),
                status: c.status,
                value: c.value,
                threshold: c.threshold,
                message: c.message.clone(),
            });
        }
    }
}

/// The appraisal a step run recorded, with production's version filled in
/// from how the runner resolved the model input when the step did not know it.
fn appraisal_of(source: &StepRunRecord) -> Option<zenflow_core::appraisal::AppraisalResult> {
    let a = source.metadata.get(zenflow_core::appraisal::METADATA_KEY)?;
    let mut appraisal = serde_json::from_value::<zenflow_core::appraisal::AppraisalResult>(a.clone()).ok()?;
    if appraisal.production_version == Some(0) {
        appraisal.production_version = source
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with(zenflow_core::run::MODEL_INPUT_PREFIX))
            .find_map(|(_, v)| (v["model"] == appraisal.model).then(|| v["version"].as_i64()).flatten());
    }
    Some(appraisal)
}
