//! `run`: the pipeline on a stack, its reports, and the exit code CI reads.

use super::args::RunArgs;
use super::dag::plan_for;
use super::progress;
use super::stacks::resolve_stack;
use super::{exit, CliError, CliResult};
use crate::report::{self, RunReport};
use crate::run_config::expand_run_name;
use std::io::IsTerminal;
use std::path::PathBuf;
use zenflow_core::metadata::{RunRecord, RunStatus};
use zenflow_core::run::Forecast;
use zenflow_core::{Error, Pipeline, Plan, RunOptions, Stack};

/// `run`: runs the pipeline as `args` say and writes the reports asked for,
/// also when the run cannot start or finish.
pub(super) fn run<P>(pipeline: &P, args: RunArgs, quiet: bool) -> CliResult
where
    P: Pipeline,
    P::Config: Default,
{
    check_report_paths(&args)?;
    // CI reads the reports: a run that cannot start or finish still gets
    // them, saying why, instead of leaving the PR comment and the test
    // report empty.
    let mut unrecorded = Vec::new();
    run_checked(pipeline, &args, quiet, &mut unrecorded).inspect_err(|e| {
        let report = report::FailedToRun {
            pipeline: pipeline.name(),
            stack: &args.stack.stack,
            error: &e.message,
            steps: &unrecorded,
        };
        let texts = [report.to_markdown(), report.to_json() + "\n", report.to_junit()];
        for e in write_report_texts(&args, texts) {
            eprintln!("error: {e}");
        }
    })
}

/// Runs the pipeline as `args` say, and reports; a run whose end could not
/// be recorded leaves what its steps did in `unrecorded`.
fn run_checked<P>(pipeline: &P, args: &RunArgs, quiet: bool, unrecorded: &mut Vec<report::StepReport>) -> CliResult
where
    P: Pipeline,
    P::Config: Default,
{
    if args.dry_run || args.pending {
        return forecast(pipeline, args);
    }
    let stack = resolve_stack(&args.stack.stack)?;
    let (plan, options) = planned(pipeline, args, &stack)?;
    // Before the run: `latest` and `latest:PREFIX` mean a run before this one.
    let baseline = args.compare_with.as_deref().and_then(|selector| baseline_run(&stack, pipeline.name(), selector));
    let mode = progress_mode(quiet);
    let progress = progress::Progress::new(mode, plan.steps.len());
    let options = RunOptions { observer: Some(progress.observer()), ..options };
    let result = stack.stores().block_on(zenflow_core::run::execute_plan(&stack, plan, options))?.map_err(|e| {
        if let Error::Unrecorded(run) = &e {
            *unrecorded = report::FailedToRun::steps_of(run);
        }
        let mut e = CliError::from(e);
        e.message = format!("stack `{}`: {}", stack.name(), e.message);
        e
    })?;
    progress.finish();

    let report = report_of(&stack, &result, baseline, args)?;
    let report_errors = write_report_texts(
        args,
        [report.to_markdown(), report.to_json() + "\n", report.to_junit(args.warnings_as_errors)],
    );
    for e in &report_errors {
        eprintln!("error: {e}");
    }
    // The one-line result always; a line per step unless the progress
    // lines already gave one.
    match mode {
        progress::Mode::Live => outln!("{}", result.summary()),
        progress::Mode::Plain | progress::Mode::Quiet => outln!("{}", result.headline()),
    }
    if quiet {
        // The progress lines that would have said so are off: errors are not.
        for s in result.steps().iter().filter(|s| s.status == zenflow_core::metadata::StepStatus::Failed) {
            eprintln!("error: step `{}` failed: {}", s.invocation, s.error.as_deref().unwrap_or("unknown error"));
        }
    } else {
        for registered in &report.registered {
            outln!("{}", registered.line());
        }
    }
    let verdict = report.verdict(args.warnings_as_errors);
    if let Some(message) = verdict.message() {
        eprintln!("{message}");
    }
    let code = verdict.exit_code();
    // The run's own outcome wins; a missing report fails an otherwise green run.
    Ok(if code == exit::SUCCESS && !report_errors.is_empty() { exit::STEP_FAILED } else { code })
}

/// The plan `args` ask for, and the run's options: its name (a template
/// from `--run-name` or the run config), the cache switches.
fn planned<P>(pipeline: &P, args: &RunArgs, stack: &Stack) -> CliResult<(Plan, RunOptions)>
where
    P: Pipeline,
    P::Config: Default,
{
    let (doc, plan) = plan_for(pipeline, &args.config)?;
    let git = zenflow_core::git::head_commit(stack.project_root().unwrap_or_else(|| std::path::Path::new(".")));
    let run_name = match args.run_name.as_deref().or(doc.run_name()) {
        Some(template) => Some(expand_run_name(template, pipeline.name(), git.as_deref())?),
        None => None,
    };
    let no_cache = args.no_cache || !doc.cache();
    let cache_ttl = args.cache_ttl.or(doc.cache_ttl());
    Ok((plan, RunOptions { no_cache, cache_ttl, run_name, ..RunOptions::default() }))
}

/// Live progress on a terminal, plain lines elsewhere, nothing with `--quiet`.
fn progress_mode(quiet: bool) -> progress::Mode {
    if quiet {
        progress::Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        progress::Mode::Live
    } else {
        progress::Mode::Plain
    }
}

/// The report of a finished run, with the versions it registered, its CI
/// job and how it differs from `baseline`.
fn report_of(
    stack: &Stack,
    result: &zenflow_core::RunResult,
    baseline: Option<(RunRecord, Plan)>,
    args: &RunArgs,
) -> CliResult<RunReport> {
    // The records the run wrote, not read back: only the step runs its
    // cached steps reuse come from the store.
    let originals = RunReport::originals(stack, result.records())?;
    let ci_job = stack.ci().job_url.clone();
    let report = RunReport::new(result.record(), result.plan(), result.records(), &originals, args.warnings_as_errors)
        .with_registered(stack, result.plan())
        .with_ci_job(ci_job);
    Ok(match baseline {
        Some((run, plan)) => report.with_baseline(report::Baseline::compare(&run, &plan, result.plan())),
        None => report,
    })
}

/// The run `--compare-with` names, with its plan ([`zenflow_core::run::find_run`]
/// among the runs of `pipeline`); none, with a note saying why, when there
/// is none or it cannot be read: the report then compares with nothing.
fn baseline_run(stack: &Stack, pipeline: &str, selector: &str) -> Option<(RunRecord, Plan)> {
    let found = stack.find_run(Some(pipeline), selector).and_then(|run| Ok((run.plan()?, run)));
    match found {
        Ok((plan, run)) => Some((run, plan)),
        Err(Error::NotFound(_)) => {
            eprintln!("note: no run matches --compare-with {selector}: the report compares with nothing");
            None
        }
        Err(e) => {
            eprintln!("warning: --compare-with {selector}: {e}");
            None
        }
    }
}

/// Refuses, before anything runs, report paths whose folder does not exist.
fn check_report_paths(args: &RunArgs) -> CliResult<()> {
    for (flag, path) in [("--report", &args.report), ("--json", &args.json), ("--junit", &args.junit)] {
        let Some(path) = path else { continue };
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !parent.is_dir() {
            return Err(CliError::usage(format!(
                "{flag} {}: the folder {} does not exist; create it first",
                path.display(),
                parent.display()
            )));
        }
    }
    Ok(())
}

/// Writes every requested report (`[markdown, json, junit]`) and appends
/// the markdown to `GITHUB_STEP_SUMMARY`; a report that cannot be written is
/// an error, but the others are still written.
fn write_report_texts(args: &RunArgs, texts: [String; 3]) -> Vec<String> {
    // What CI publishes shows no secret (see `zenflow::redact`).
    let [markdown, json, junit] = texts.map(|t| zenflow_core::redact::text(&t).into_owned());
    let mut errors = Vec::new();
    let mut write = |path: &PathBuf, text: &str, what: &str| {
        if let Err(e) = std::fs::write(path, text) {
            errors.push(format!("cannot write the {what} to {}: {e}", path.display()));
        }
    };
    if let Some(path) = &args.report {
        write(path, &markdown, "markdown report");
    }
    if let Some(path) = &args.json {
        write(path, &json, "JSON report");
    }
    if let Some(path) = &args.junit {
        write(path, &junit, "JUnit report");
    }
    if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|v| !v.is_empty()) {
        use std::io::Write;
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&summary)
            .and_then(|mut f| f.write_all(format!("{markdown}\n").as_bytes()));
        if let Err(e) = appended {
            eprintln!(
                "warning: could not append the report to GITHUB_STEP_SUMMARY ({}): {e}",
                PathBuf::from(summary).display()
            );
        }
    }
    errors
}

/// `--dry-run`: prints what a run would execute and what it would serve
/// from cache, recording nothing (the stores are opened read-only; where
/// nothing has run yet, nothing is cached). `--pending`: the same, and
/// records the run as pending, for `step-entrypoint` to execute its steps.
fn forecast<P>(pipeline: &P, args: &RunArgs) -> CliResult
where
    P: Pipeline,
    P::Config: Default,
{
    let stack = if args.pending {
        resolve_stack(&args.stack.stack)?
    } else {
        match super::stacks::read_stack(&args.stack.stack) {
            Err(e) if e.message.contains(zenflow_core::metadata::NO_RUNS_YET) => crate::memory_stack(1)?,
            other => other?,
        }
    };
    let (mut plan, options) = planned(pipeline, args, &stack)?;
    zenflow_core::run::apply_run_options(&mut plan, &options);
    let predictions = stack.block_on(zenflow_core::run::predict(&stack, &plan, options.no_cache))?;
    outln!("{:<28} {:<24} PREDICTION", "STEP", "FUNCTION");
    for (step, prediction) in plan.steps.iter().zip(&predictions) {
        outln!("{:<28} {:<24} {prediction}", step.id, step.step);
    }
    let cached = predictions.iter().filter(|p| matches!(p, Forecast::Cached { .. })).count();
    let assumed = predictions.iter().any(|p| matches!(p, Forecast::Cached { assuming, .. } if !assuming.is_empty()));
    let note = if assumed { " (if the steps with the cache off output what they did last time)" } else { "" };
    let counts = format!("{} step(s), {cached} from cache{note}", predictions.len());
    if !args.pending {
        outln!("\n{counts}; nothing was recorded or executed");
        return Ok(exit::SUCCESS);
    }
    let record = stack.block_on(zenflow_core::run::start_run(&stack, plan, &options, RunStatus::Pending))?;
    outln!(
        "\npending run {} ({}): {counts}; `step-entrypoint --run {}` executes its steps",
        record.name,
        record.id,
        record.name
    );
    Ok(exit::SUCCESS)
}
