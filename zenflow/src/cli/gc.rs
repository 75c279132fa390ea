//! `runs delete` and `gc`: deleting runs and collecting what nothing uses.

use super::args::{CollectArgs, GcArgs};
use super::stacks::{close_stale_runs, resolve_stack};
use super::{exit, CliResult};
use zenflow_core::gc::{self, Options, Policy};
use zenflow_core::Stack;

/// `runs delete`: the runs `references` name, all found before any goes.
pub(super) fn delete(pipeline: &str, references: &[String], stack: &str, collect: &CollectArgs) -> CliResult {
    let stack = writable(stack)?;
    let mut runs = Vec::new();
    for reference in references {
        let run = stack.find_run(Some(pipeline), reference)?;
        if !runs.iter().any(|r: &zenflow_core::metadata::RunRecord| r.id == run.id) {
            runs.push(run);
        }
    }
    let report = stack.block_on(gc::delete(stack.stores(), &runs, options(collect)))?;
    print(&report, collect.json)
}

/// `gc`: the runs the policy selects, then the objects nothing uses.
pub(super) fn gc(pipeline: &str, args: &GcArgs) -> CliResult {
    let stack = writable(&args.stack.stack)?;
    let policy = Policy { older_than: args.older_than, keep_last: args.keep_last };
    let scope = (!args.all).then_some(pipeline);
    let report = stack.block_on(gc::gc(stack.stores(), scope, &policy, options(&args.collect)))?;
    print(&report, args.collect.json)
}

/// The stack, with runs whose process died closed: they may go too.
fn writable(name: &str) -> CliResult<Stack> {
    let stack = resolve_stack(name)?;
    close_stale_runs(&stack)?;
    Ok(stack)
}

fn options(collect: &CollectArgs) -> Options {
    Options { grace: collect.grace.unwrap_or(gc::DEFAULT_GRACE), dry_run: collect.dry_run }
}

/// Prints the report; exits 1 when the artifact store failed on some
/// objects (what was deleted stays deleted, and the report says so).
fn print(report: &gc::Report, json: bool) -> CliResult {
    if json {
        outln!("{}", serde_json::to_string_pretty(report).unwrap_or_default());
    } else {
        out!("{}", crate::report::deletion(report));
    }
    Ok(if report.objects.failed.count > 0 { exit::STEP_FAILED } else { exit::SUCCESS })
}
