//! `artifacts list|show|cat|export`.

use super::args::ArtifactsCommand;
use super::stacks::read_stack;
use super::{exit, CliError, CliResult};
use std::path::Path;
use zenflow_core::artifact_store::{self, ExportError};
use zenflow_core::materializer::columns::{TableSummary, TABLE_KEY};
use zenflow_core::materializer::{render, Encoded};
use zenflow_core::metadata::ArtifactVersion;
use zenflow_core::Stack;

/// `artifacts list|show|cat|export`.
pub(super) fn run(cmd: ArtifactsCommand) -> CliResult {
    match cmd {
        ArtifactsCommand::List { stack, name, limit, json } => {
            let stack = read_stack(&stack.stack)?;
            let versions = stack.block_on(stack.metadata().artifact_versions(name.as_deref(), limit))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&versions).unwrap_or_default());
                return Ok(exit::SUCCESS);
            }
            outln!("{:<38} {:<44} {:>4} {:>10} {:<14} TYPE", "ID", "NAME", "VER", "SIZE", "HASH");
            for v in versions {
                outln!(
                    "{:<38} {:<44} {:>4} {:>10} {:<14} {}",
                    v.id,
                    v.name,
                    v.version,
                    v.metadata.size,
                    v.content_hash.short(),
                    v.type_name
                );
            }
        }
        ArtifactsCommand::Show { id, stack, json } => show(&read_stack(&stack.stack)?, &id, json)?,
        ArtifactsCommand::Cat { id, raw, stack } => {
            let stack = read_stack(&stack.stack)?;
            let v = stack.artifact_version(&id)?;
            let bytes = stack.block_on(artifact_store::read_version(stack.artifacts().as_ref(), &v))?;
            if raw {
                super::out::bytes(&bytes);
            } else {
                outln!("{}", render::text(&Encoded { format: v.format.clone(), bytes }));
            }
        }
        ArtifactsCommand::Export { id, output, stack } => export(&read_stack(&stack.stack)?, &id, &output)?,
        ArtifactsCommand::Head { id, rows, json, stack } => head(&read_stack(&stack.stack)?, &id, rows, json)?,
    }
    Ok(exit::SUCCESS)
}

/// `artifacts head`: a table's first rows.
fn head(stack: &Stack, id: &str, rows: usize, json: bool) -> CliResult<()> {
    let v = stack.artifact_version(id)?;
    let bytes = stack.block_on(artifact_store::read_version(stack.artifacts().as_ref(), &v))?;
    let encoded = Encoded { format: v.format.clone(), bytes };
    let refused = |e: String| CliError::usage(format!("{} v{}: {e}", v.name, v.version));
    if json {
        let head = render::table_head(&encoded, rows).map_err(refused)?;
        outln!("{}", serde_json::to_string_pretty(&head).unwrap_or_default());
    } else {
        out!("{}", render::head(&encoded, rows).map_err(refused)?);
    }
    Ok(())
}

/// `artifacts show`: the version, its metadata field by field, its
/// lineage (runs by name); as text or JSON.
fn show(stack: &Stack, id: &str, json: bool) -> CliResult<()> {
    let v = stack.artifact_version(id)?;
    let lineage = stack.block_on(stack.metadata().lineage(&v.id))?;
    let run_name = |id: &str| stack.get_run(id).ok().flatten().map_or_else(|| id.to_string(), |r| r.name);
    let step = |s: &zenflow_core::metadata::StepRunRecord| serde_json::json!({"step": s.invocation, "step_run": s.id, "run_id": s.run_id, "run_name": run_name(&s.run_id)});
    let v = &lineage.artifact;
    if json {
        let mut object = serde_json::to_value(v).unwrap_or_default();
        object["produced_by"] = lineage.producer.as_ref().map(step).unwrap_or_default();
        object["consumed_by"] = lineage.consumers.iter().map(step).collect();
        outln!("{}", serde_json::to_string_pretty(&object).unwrap_or_default());
        return Ok(());
    }
    outln!("id:           {}", v.id);
    outln!("name:         {} (version {})", v.name, v.version);
    outln!("type:         {}", v.type_name);
    outln!("materializer: {} v{} ({})", v.materializer, v.materializer_version, v.format);
    outln!("content hash: {}", v.content_hash);
    outln!("uri:          {}", v.uri);
    outln!("created:      {}", zenflow_core::time::human(v.created_at));
    for (field, value) in metadata_lines(v) {
        outln!("{:<14}{value}", format!("{field}:"));
    }
    if let Some(table) = TableSummary::of(&v.metadata) {
        out!("\n{}", table.to_text());
    }
    for (what, s) in
        lineage.producer.iter().map(|p| ("produced by", p)).chain(lineage.consumers.iter().map(|c| ("consumed by", c)))
    {
        outln!("{what}:  step {} (step run {}) in run {}", s.invocation, s.id, run_name(&s.run_id));
    }
    Ok(())
}

/// The artifact's metadata as `(field, value)`: size, shape, element type,
/// summary, then what its materializer added.
fn metadata_lines(v: &ArtifactVersion) -> Vec<(String, String)> {
    let m = &v.metadata;
    let mut lines = vec![("size".to_string(), format!("{} bytes", m.size))];
    if let Some(shape) = &m.shape {
        lines.push(("shape".into(), format!("{shape:?}")));
    }
    if let Some(dtype) = &m.dtype {
        lines.push(("dtype".into(), dtype.clone()));
    }
    if let Some(summary) = &m.summary {
        lines.push(("summary".into(), summary.clone()));
    }
    let table = TableSummary::of(m).is_some();
    for (key, value) in m.extra.iter().filter(|(k, _)| !(table && *k == TABLE_KEY)) {
        let value = value.as_str().map_or_else(|| value.to_string(), str::to_string);
        lines.push((key.clone(), value));
    }
    lines
}

/// `artifacts export`: the verified bytes into a file, or to standard
/// output for `-`.
fn export(stack: &Stack, id: &str, output: &Path) -> CliResult<()> {
    let v = stack.artifact_version(id)?;
    if output == Path::new("-") {
        let bytes = stack.block_on(artifact_store::read_version(stack.artifacts().as_ref(), &v))?;
        super::out::bytes(&bytes);
        return Ok(());
    }
    let exported = artifact_store::export_version(stack.artifacts().as_ref(), &v, output);
    let written = stack.stores().block_on(exported)?.map_err(|e| match e {
        ExportError::Store(e) => CliError::from(e),
        write => CliError { code: exit::STEP_FAILED, message: write.to_string() },
    })?;
    eprintln!("wrote {written} bytes of {} v{} ({}) to {}", v.name, v.version, v.format, output.display());
    Ok(())
}
