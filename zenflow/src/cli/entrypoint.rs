//! `step-entrypoint`: one attempt of a step in a process of its own.

use super::stacks::{project_stacks, stack_error};
use super::{CliError, CliResult};

/// Runs one attempt of a step (or a chain) of an existing run, then ends the
/// process at once: a timed-out sync step may still hold a thread, which
/// must not keep the process alive.
pub(super) fn run(args: &[String]) -> ! {
    use std::io::Write as _;
    use zenflow_core::run::entrypoint::{self, Exit, Request};
    let code = (|| -> CliResult {
        let (request, stack) = Request::from_args(args)
            .map_err(|e| CliError { code: Exit::Permanent.code(), message: format!("{e}; see --help") })?;
        let name = stack.or_else(|| std::env::var("ZENFLOW_STACK").ok()).unwrap_or_else(|| "local".into());
        // The step runs here, whatever orchestrator sent it.
        let stack = project_stacks()?.open_in_place(&name).map_err(|e| stack_error(&name, e))?;
        let report = stack
            .stores()
            .block_on(entrypoint::run(&stack, &request))?
            .map_err(|e| CliError { code: e.exit().code(), message: e.to_string() })?;
        let mut err = crate::logs::stderr();
        for s in &report.steps {
            let how = if s.already_done { "already done".to_string() } else { format!("in {:.1?}", s.duration) };
            let _ = writeln!(err, "[zenflow] {}: {} {how}", s.invocation, s.status);
            if let Some(e) = &s.error {
                let _ = writeln!(err, "error: {e}");
            }
        }
        if let Some(status) = report.closed {
            let _ = writeln!(err, "[zenflow] run {}: {status}", request.run);
        }
        Ok(report.exit.code())
    })()
    .unwrap_or_else(|e| {
        eprintln!("error: {}", zenflow_core::redact::text(&e.message));
        e.code
    });
    let _ = std::io::stdout().flush();
    std::process::exit(i32::from(code))
}
