//! `artifacts list|show|export`.

use super::args::ArtifactsCommand;
use super::stacks::read_stack;
use super::{exit, CliError, CliResult};

/// `artifacts list|show|export`.
pub(super) fn run(cmd: ArtifactsCommand) -> CliResult {
    match cmd {
        ArtifactsCommand::List { stack, name, limit } => {
            let stack = read_stack(&stack.stack)?;
            let versions = stack.block_on(stack.metadata().artifact_versions(name.as_deref(), limit))?;
            println!("{:<38} {:<44} {:>4} {:>10} {:<14} TYPE", "ID", "NAME", "VER", "SIZE", "HASH");
            for v in versions {
                println!(
                    "{:<38} {:<44} {:>4} {:>10} {:<14} {}",
                    v.id,
                    v.name,
                    v.version,
                    v.metadata.size,
                    v.content_hash.short(),
                    v.type_name
                );
            }
            Ok(exit::SUCCESS)
        }
        ArtifactsCommand::Show { id, stack } => {
            let stack = read_stack(&stack.stack)?;
            let v = stack.artifact_version(&id)?;
            let lineage = stack.block_on(stack.metadata().lineage(&v.id))?;
            let v = &lineage.artifact;
            println!("id:           {}", v.id);
            println!("name:         {} (version {})", v.name, v.version);
            println!("type:         {}", v.type_name);
            println!("materializer: {} v{} ({})", v.materializer, v.materializer_version, v.format);
            println!("content hash: {}", v.content_hash);
            println!("uri:          {}", v.uri);
            println!("created:      {}", zenflow_core::time::human(v.created_at));
            println!("metadata:     {}", serde_json::to_string(&v.metadata).unwrap_or_default());
            if let Some(p) = &lineage.producer {
                println!("produced by:  step {} (step run {}) in run {}", p.invocation, p.id, p.run_id);
            }
            for c in &lineage.consumers {
                println!("consumed by:  step {} (step run {}) in run {}", c.invocation, c.id, c.run_id);
            }
            Ok(exit::SUCCESS)
        }
        ArtifactsCommand::Export { id, output, stack } => {
            let stack = read_stack(&stack.stack)?;
            let v = stack.artifact_version(&id)?;
            let exported = zenflow_core::artifact_store::export_version(stack.artifacts().as_ref(), &v, &output);
            let written = stack.stores().block_on(exported)?.map_err(|e| match e {
                zenflow_core::artifact_store::ExportError::Store(e) => CliError::from(e),
                write => CliError { code: exit::STEP_FAILED, message: write.to_string() },
            })?;
            eprintln!("wrote {written} bytes of {} v{} ({}) to {}", v.name, v.version, v.format, output.display());
            Ok(exit::SUCCESS)
        }
    }
}
