//! `runs list`, `runs show` and `close-run`: the recorded runs of a pipeline.

use super::stacks::{read_stack, resolve_stack};
use super::{exit, CliError, CliResult};
use crate::report::{self, RunReport};
use zenflow_core::Pipeline;

/// `runs list`: the newest runs (of this pipeline unless `all`).
pub(super) fn list<P: Pipeline>(pipeline: &P, stack: &str, limit: usize, all: bool) -> CliResult {
    let runs = read_stack(stack).and_then(|s| Ok(s.list_runs((!all).then(|| pipeline.name()), limit)?));
    let runs = match runs {
        Err(e) if e.message.contains(zenflow_core::metadata::NO_RUNS_YET) => {
            println!("{}", zenflow_core::metadata::NO_RUNS_YET);
            return Ok(exit::SUCCESS);
        }
        other => other?,
    };
    println!("{:<44} {:<10} {:<20} {:>10}  PIPELINE", "RUN", "STATUS", "STARTED (UTC)", "DURATION");
    for r in runs {
        let dur = r.duration().map_or("—".into(), |d| report::duration(d.as_secs_f64() * 1000.0));
        println!(
            "{:<44} {:<10} {:<20} {:>10}  {}",
            r.name,
            r.status,
            zenflow_core::time::human(r.started_at),
            dur,
            r.pipeline
        );
    }
    Ok(exit::SUCCESS)
}

/// `runs show`: one run, its steps and checks, and optionally their logs.
pub(super) fn show<P: Pipeline>(pipeline: &P, run: String, stack: &str, logs: bool, why: bool) -> CliResult {
    let stack = read_stack(stack)?;
    let id = if run == "latest" {
        stack
            .latest_run(pipeline.name())?
            .ok_or_else(|| CliError::usage(format!("pipeline `{}` has no runs yet", pipeline.name())))?
            .id
    } else {
        run
    };
    if stack.get_run(&id)?.is_none() {
        return Err(CliError::usage(format!("no run `{id}` in {}", stack.metadata().url())));
    }
    let report = RunReport::load(&stack, &id, false)?;
    print!("{}", report.to_text(why));
    if logs {
        for sr in stack.step_runs(&report.run_id)? {
            println!("\n--- logs of {} ({}) ---", sr.invocation, sr.status);
            match (&sr.original_step_run, sr.logs.is_empty()) {
                (Some(original), true) => {
                    println!("(from cache: it ran nothing; the step run it reuses is {original})")
                }
                (None, true) => println!("(no log lines)"),
                _ => {}
            }
            for line in &sr.logs {
                println!("{line}");
            }
        }
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
