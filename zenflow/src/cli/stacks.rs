//! Opening the project's stacks for a command, and `stacks list|show|check`.

use super::args::StacksCommand;
use super::{exit, CliError, CliResult};
use zenflow_core::metadata::RunStatus;
use zenflow_core::{Error, Stack};

/// Runs whose process died are shown as failed, not "running" forever.
pub(super) fn close_stale_runs(stack: &Stack) -> CliResult<()> {
    stack.block_on(stack.close_stale_runs())?;
    Ok(())
}

pub(crate) fn project_stacks() -> CliResult<zenflow_stacks::config::Stacks> {
    Ok(zenflow_stacks::config::Stacks::load(&crate::project_root()?)?)
}

/// The stack named `name`, as `zenflow.toml` declares it (`local` is built in).
pub(crate) fn resolve_stack(name: &str) -> CliResult<Stack> {
    project_stacks()?.open(name).map_err(|e| stack_error(name, e))
}

/// Stack `name` for a command that only reads: its stores opened read-only
/// (nothing created, migrated or locked). Runs whose process is gone are
/// closed first, through a writable handle, when there are any and the
/// store can be written.
pub(crate) fn read_stack(name: &str) -> CliResult<Stack> {
    let stacks = project_stacks()?;
    let stack = stacks.open_read_only(name).map_err(|e| stack_error(name, e))?;
    let abandoned =
        stack.project_root().is_some_and(|root| !zenflow_core::run::liveness::lock::abandoned(root).is_empty());
    let running = || stack.list_runs(None, 100).is_ok_and(|runs| runs.iter().any(|r| r.status == RunStatus::Running));
    if abandoned || running() {
        match stacks.open(name) {
            Ok(writable) => close_stale_runs(&writable)?,
            Err(e) => tracing::debug!("runs whose process is gone stay open: the store cannot be written: {e}"),
        }
    }
    Ok(stack)
}

pub(crate) fn stack_error(name: &str, e: Error) -> CliError {
    match e {
        Error::Usage(m) => CliError::usage(m),
        other => CliError::usage(format!("stack `{name}`: {other}")),
    }
}

/// `stacks list|show|check|roles-sql`.
pub(super) fn run(cmd: StacksCommand) -> CliResult {
    let stacks = project_stacks()?;
    match cmd {
        #[cfg(feature = "postgres")]
        StacksCommand::RolesSql => {
            out!("{}", zenflow_stacks::metadata::ROLES_SQL);
            Ok(exit::SUCCESS)
        }
        StacksCommand::List { json } => {
            list(&stacks, json);
            Ok(exit::SUCCESS)
        }
        StacksCommand::Show { name, json } => {
            let fields = stacks.config(&name)?.describe();
            if json {
                let object: serde_json::Map<String, serde_json::Value> =
                    fields.into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
                outln!("{}", serde_json::to_string_pretty(&object).unwrap_or_default());
            } else {
                for (k, v) in fields {
                    outln!("{:<20} {v}", format!("{k}:"));
                }
            }
            Ok(exit::SUCCESS)
        }
        StacksCommand::Check { name } => {
            let probes = stacks.check(&name)?;
            for p in &probes {
                match &p.result {
                    Ok(detail) => outln!("ok      {:<16} {detail}", p.component),
                    Err(e) => outln!("FAILED  {:<16} {e}", p.component),
                }
            }
            Ok(if probes.iter().all(|p| p.result.is_ok()) { exit::SUCCESS } else { exit::STEP_FAILED })
        }
    }
}

/// `stacks list`: each stack's orchestrator and stores, credentials
/// redacted, as a table or JSON.
fn list(stacks: &zenflow_stacks::config::Stacks, json: bool) {
    use zenflow_stacks::config::redact_url;
    let rows: Vec<serde_json::Value> = stacks
        .names()
        .into_iter()
        .map(|name| match stacks.config(&name) {
            Ok(c) => serde_json::json!({
                "name": name,
                "orchestrator": c.orchestrator.kind(),
                "artifact_store": redact_url(&c.artifact_store.url),
                "metadata_store": redact_url(&c.metadata_store.url),
            }),
            Err(e) => serde_json::json!({"name": name, "error": e.to_string()}),
        })
        .collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
        return;
    }
    outln!("{:<12} {:<10} {:<48} METADATA", "STACK", "RUNS ON", "ARTIFACTS");
    let field = |row: &serde_json::Value, key: &str| row[key].as_str().unwrap_or_default().to_string();
    for row in &rows {
        match row.get("error") {
            Some(e) => outln!("{:<12} (invalid: {})", field(row, "name"), e.as_str().unwrap_or_default()),
            None => outln!(
                "{:<12} {:<10} {:<48} {}",
                field(row, "name"),
                field(row, "orchestrator"),
                field(row, "artifact_store"),
                field(row, "metadata_store")
            ),
        }
    }
    if stacks.file().is_none() {
        outln!("\n(no zenflow.toml in the project: only the embedded `local` stack)");
    }
}
