//! `dag`: the pipeline's plan as mermaid, dot, JSON or an Argo workflow.

use super::args::{ArgoArgs, ConfigArgs, DagArgs, DagFormat};
use super::stacks::{project_stacks, resolve_stack};
use super::{exit, CliError, CliResult};
use crate::report;
use crate::run_config::{self, RunConfig};
use zenflow_core::{Pipeline, Plan};

pub(super) fn plan_for<P>(pipeline: &P, args: &ConfigArgs) -> CliResult<(RunConfig, Plan)>
where
    P: Pipeline,
    P::Config: Default,
{
    Ok(run_config::plan(pipeline, args.config.as_deref(), &args.set)?)
}

/// `dag --format ...`.
pub(super) fn run<P>(pipeline: &P, args: DagArgs) -> CliResult
where
    P: Pipeline,
    P::Config: Default,
{
    let (_, plan) = plan_for(pipeline, &args.config)?;
    match args.format {
        DagFormat::Mermaid => out!("{}", report::mermaid(&plan, None)),
        DagFormat::Dot => out!("{}", report::dot(&plan)),
        DagFormat::Json => outln!("{}", plan.to_json()),
        DagFormat::Argo => out!("{}", argo_workflow(plan, &args.argo)?),
    }
    Ok(exit::SUCCESS)
}

/// Records a pending run of `plan` on the stack and writes its workflow.
fn argo_workflow(plan: zenflow_core::Plan, args: &ArgoArgs) -> CliResult<String> {
    use zenflow_stacks::orchestrator::argo;
    let stacks = project_stacks()?;
    let config = stacks.config(&args.stack).map_err(|e| CliError::usage(e.to_string()))?;
    let image = args.image.clone().or(config.image.clone()).ok_or_else(|| {
        CliError::usage(format!(
            "no container image: pass --image, or set `image = \"...\"` in stack `{}` of zenflow.toml",
            args.stack
        ))
    })?;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => {
            let exe = std::env::current_exe().map_err(|e| CliError::usage(format!("cannot find this binary: {e}")))?;
            let name = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            format!("{}/{name}", args.workdir.trim_end_matches('/'))
        }
    };
    let options = argo::ArgoOptions {
        image,
        binary,
        workdir: args.workdir.clone(),
        stack: args.stack.clone(),
        secret: args.secret.clone(),
        env: stacks.references(&args.stack).map_err(|e| CliError::usage(e.to_string()))?,
        parallelism: args.parallelism,
        service_account: args.service_account.clone(),
    };
    let stack = resolve_stack(&args.stack)?;
    let run = stack.block_on(zenflow_core::run::start_run(
        &stack,
        plan,
        &zenflow_core::RunOptions::default(),
        zenflow_core::metadata::RunStatus::Pending,
    ))?;
    let plan = run.plan().map_err(|e| CliError::usage(e.to_string()))?;
    let doc = argo::workflow(&plan, &run, &options).map_err(|e| CliError::usage(e.to_string()))?;
    stack.block_on(stack.metadata().flush())?;
    eprintln!("recorded pending run {} ({}) on stack `{}`", run.name, run.id, args.stack);
    serde_saphyr::to_string(&doc).map_err(|e| CliError::usage(format!("cannot write the workflow as YAML: {e}")))
}
