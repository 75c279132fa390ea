//! `runs list`, `runs show` and `close-run`: the recorded runs of a pipeline.

use super::stacks::{read_stack, resolve_stack};
use super::{exit, CliResult};
use crate::report::{self, RunReport, RunSummary};
use zenflow_core::metadata::{RunRecord, RunStatus};
use zenflow_core::Pipeline;

/// Which runs `runs list` lists.
pub(super) struct Filter<'a> {
    /// Only this pipeline's (every pipeline's when `None`).
    pub(super) pipeline: Option<&'a str>,
    /// Only runs with this status.
    pub(super) status: Option<RunStatus>,
    /// At most this many.
    pub(super) limit: usize,
}

/// `runs list`: the newest runs `filter` keeps, as a table or JSON.
pub(super) fn list(stack: &str, filter: &Filter<'_>, json: bool) -> CliResult {
    let runs = read_stack(stack).and_then(|s| {
        // Filtering by status (pending runs are left out unless asked
        // for) looks past the newest `limit` runs.
        Ok(s.list_runs(filter.pipeline, usize::MAX)?)
    });
    let runs: Vec<_> = match runs {
        Err(e) if e.message.contains(zenflow_core::metadata::NO_RUNS_YET) && !json => {
            outln!("{}", zenflow_core::metadata::NO_RUNS_YET);
            return Ok(exit::SUCCESS);
        }
        Err(e) if e.message.contains(zenflow_core::metadata::NO_RUNS_YET) => Vec::new(),
        other => other?,
    };
    // Pending runs (planned for workers, maybe never started) only when asked for.
    let wanted = |r: &RunRecord| match filter.status {
        Some(s) => r.status == s,
        None => r.status != RunStatus::Pending,
    };
    let hidden =
        if filter.status.is_none() { runs.iter().filter(|r| r.status == RunStatus::Pending).count() } else { 0 };
    let runs: Vec<_> = runs.into_iter().filter(wanted).take(filter.limit).collect();
    if json {
        let summaries: Vec<RunSummary> = runs.iter().map(RunSummary::of).collect();
        outln!("{}", serde_json::to_string_pretty(&summaries).unwrap_or_default());
    } else if runs.is_empty() {
        let of = filter.pipeline.map_or(String::new(), |p| format!(" of pipeline `{p}`"));
        let status = filter.status.map_or(String::new(), |s| format!(" {s}"));
        outln!("no{status} runs{of} here yet (`--all` lists every pipeline's)");
    } else {
        out!("{}", report::runs_table(&runs, report::Colour::for_stdout()));
    }
    if hidden > 0 && !json {
        outln!("({hidden} pending run(s) not shown: `--status pending` lists them)");
    }
    Ok(exit::SUCCESS)
}

/// What `runs show` prints besides the run.
pub(super) struct Show {
    /// Each step's log lines.
    pub(super) logs: bool,
    /// Why each step ran.
    pub(super) why: bool,
    /// The JSON report instead.
    pub(super) json: bool,
}

/// `runs show`: one run, its parameters, steps and checks, and optionally
/// their logs; or its JSON report.
pub(super) fn show<P: Pipeline>(pipeline: &P, run: String, stack: &str, show: Show) -> CliResult {
    let stack = read_stack(stack)?;
    let report = RunReport::of_run(&stack, &stack.find_run(Some(pipeline.name()), &run)?, false)?;
    if show.json {
        outln!("{}", report.to_json());
        return Ok(exit::SUCCESS);
    }
    out!("{}", report.to_terminal(show.why, report::Colour::for_stdout()));
    if show.logs {
        for sr in stack.step_runs(&report.run_id)? {
            outln!("\n--- logs of {} ({}) ---", sr.invocation, sr.status);
            match (&sr.original_step_run, sr.logs.is_empty()) {
                (Some(original), true) => {
                    outln!("(from cache: it ran nothing; the step run it reuses is {original})")
                }
                (None, true) => outln!("(no log lines)"),
                _ => {}
            }
            for line in &sr.logs {
                outln!("{line}");
            }
        }
    }
    Ok(exit::SUCCESS)
}

/// `runs compare`: the runs side by side, as a table, JSON or markdown.
pub(super) fn compare<P: Pipeline>(
    pipeline: &P,
    references: &[String],
    stack: &str,
    format: &super::args::CompareFormat,
) -> CliResult {
    let stack = read_stack(stack)?;
    let mut runs = Vec::with_capacity(references.len());
    for reference in references {
        let run = stack.find_run(Some(pipeline.name()), reference)?;
        let plan = run.plan().map_err(zenflow_core::Error::from)?;
        runs.push((RunReport::of_run(&stack, &run, false)?, plan));
    }
    let comparison = report::Comparison::of(&runs);
    if format.json {
        outln!("{}", serde_json::to_string_pretty(&comparison).unwrap_or_default());
    } else if format.md {
        out!("{}", comparison.to_markdown());
    } else {
        out!("{}", comparison.to_text());
    }
    Ok(exit::SUCCESS)
}

/// `close-run`: closes a run its engine has finished with (Argo's exit handler).
pub(super) fn close(run: &str, stack: &str) -> CliResult {
    let stack = resolve_stack(stack)?;
    let status = stack.block_on(zenflow_core::run::close_ended(&stack, run, "the workflow"))?;
    eprintln!("[zenflow] run {run}: {status}");
    Ok(exit::SUCCESS)
}
