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
use zenflow_core::metadata::RunStatus;
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
    let stack = resolve_stack(&args.stack.stack)?;
    let (plan, options) = planned(pipeline, args, &stack)?;
    if args.dry_run {
        return dry_run(&stack, plan, options);
    }
    let progress = progress::Progress::new(progress_mode(quiet), plan.steps.len());
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

    let report = report_of(&stack, pipeline.name(), &result, args)?;
    let report_errors = write_report_texts(
        args,
        [report.to_markdown(), report.to_json() + "\n", report.to_junit(args.warnings_as_errors)],
    );
    for e in &report_errors {
        eprintln!("error: {e}");
    }
    if !quiet {
        println!("{}", result.summary());
        for registered in &report.registered {
            println!("{}", registered.line());
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
/// job and the run `--compare-with` names (a note when there is none).
fn report_of(stack: &Stack, pipeline: &str, result: &zenflow_core::RunResult, args: &RunArgs) -> CliResult<RunReport> {
    // The records the run wrote, not read back: only the step runs its
    // cached steps reuse come from the store.
    let originals = RunReport::originals(stack, result.records())?;
    let ci_job = stack.ci().job_url.clone();
    let report = RunReport::new(result.record(), result.plan(), result.records(), &originals, args.warnings_as_errors)
        .with_registered(stack, result.plan())
        .with_ci_job(ci_job);
    let Some(selector) = &args.compare_with else { return Ok(report) };
    Ok(match baseline_run(stack, pipeline, selector, result.id()) {
        Ok(Some((run, plan))) => report.with_baseline(report::Baseline::compare(&run, &plan, result.plan())),
        Ok(None) => {
            eprintln!("note: no run matches --compare-with {selector}: the report compares with nothing");
            report
        }
        Err(e) => {
            eprintln!("warning: --compare-with {selector}: {}", e.message);
            report
        }
    })
}

/// The run `--compare-with` names, with its plan: a name or id, or
/// `latest:PREFIX` (the newest completed run of `pipeline` but `this_run`
/// whose name starts with PREFIX).
fn baseline_run(
    stack: &Stack,
    pipeline: &str,
    selector: &str,
    this_run: &str,
) -> CliResult<Option<(zenflow_core::metadata::RunRecord, zenflow_core::Plan)>> {
    let run = match selector.strip_prefix("latest:") {
        Some(prefix) => stack
            .list_runs(Some(pipeline), 1000)?
            .into_iter()
            .find(|r| r.id != this_run && r.status == RunStatus::Completed && r.name.starts_with(prefix)),
        None => stack.get_run(selector)?,
    };
    let Some(run) = run else { return Ok(None) };
    let plan = run.plan().map_err(|e| CliError::usage(format!("the plan of run {}: {e}", run.name)))?;
    Ok(Some((run, plan)))
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

/// Records a pending run and prints what would run and what would come from cache.
fn dry_run(stack: &Stack, mut plan: Plan, options: RunOptions) -> CliResult {
    let no_cache = options.no_cache;
    zenflow_core::run::apply_run_options(&mut plan, &options);
    let predictions = stack.block_on(zenflow_core::run::predict(stack, &plan, no_cache))?;
    let steps: Vec<(String, String)> = plan.steps.iter().map(|s| (s.id.clone(), s.step.clone())).collect();
    let record = stack.block_on(zenflow_core::run::start_run(stack, plan, &options, RunStatus::Pending))?;
    println!("{:<28} {:<24} PREDICTION", "STEP", "FUNCTION");
    for ((id, step), prediction) in steps.iter().zip(&predictions) {
        println!("{id:<28} {step:<24} {prediction}");
    }
    let cached = predictions.iter().filter(|p| matches!(p, zenflow_core::run::Forecast::Cached { .. })).count();
    println!(
        "\nplanned run {} ({}): {} step(s), {cached} from cache; nothing was executed",
        record.name,
        record.id,
        predictions.len()
    );
    Ok(exit::SUCCESS)
}
