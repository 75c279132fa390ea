//! The command line every pipeline binary gets: `zenflow::cli::main(pipeline)`.
//!
//! ```text
//! <pipeline> [run] [--stack NAME] [--config FILE] [--set key=value]... [--no-cache] [--run-name NAME]
//!                [--report FILE.md] [--json FILE] [--junit FILE.xml] [--dry-run] [--warnings-as-errors]
//! <pipeline> dag [--format mermaid|dot|json|argo] [--image IMAGE --stack NAME]
//! <pipeline> runs list | runs show RUN [--logs]
//! <pipeline> artifacts list | artifacts show ID | artifacts export ID --output FILE
//! <pipeline> models list | show NAME[@VERSION|@ALIAS] | versions NAME | promote NAME VERSION --to ALIAS --expect V|none
//!                 | history NAME [--alias A] | rollback NAME --alias A | compare NAME A B
//! <pipeline> stacks list | stacks show NAME
//! <pipeline> report github-comment --report FILE.md
//! ```
//!
//! Exit codes are a contract CI relies on: [`exit::SUCCESS`] 0,
//! [`exit::STEP_FAILED`] 1, [`exit::USAGE`] 2 (bad usage or configuration),
//! [`exit::GATE_FAILED`] 3 (the pipeline ran but a quality gate failed),
//! [`exit::CONFLICT`] 4 (a promotion lost its compare-and-swap).
//!
//! Configuration precedence: `--set` over the `--config` file over the
//! defaults in code (`Default` of the pipeline's config type). See
//! [`crate::run_config`] for the file format.

pub mod github;
mod models;
pub mod progress;
#[cfg(feature = "serve")]
mod serve;

use crate::report::{self, RunReport};
use crate::run_config::{self, expand_run_name, ConfigError, RunConfig};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use zenflow_core::metadata::RunStatus;
use zenflow_core::{Error, Pipeline, Plan, RunOptions, Stack};

/// The exit codes of a pipeline binary.
pub mod exit {
    /// The run completed and every quality gate passed.
    pub const SUCCESS: u8 = 0;
    /// A step failed (or the stores failed).
    pub const STEP_FAILED: u8 = 1;
    /// Bad usage or configuration: unknown stack, bad config, a `--set` key
    /// that does not exist or has the wrong type.
    pub const USAGE: u8 = 2;
    /// The pipeline ran, but a check failed its quality gate.
    pub const GATE_FAILED: u8 = 3;
    /// A promotion lost a compare-and-swap race (another promotion moved
    /// the alias first), or a deployment was rolled back.
    pub const CONFLICT: u8 = 4;
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl CliError {
    pub(crate) fn usage(message: impl std::fmt::Display) -> Self {
        CliError { code: exit::USAGE, message: message.to_string() }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::usage(e)
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        use zenflow_core::metadata::MetadataError;
        let e = match e {
            Error::Registry(r) => return r.into(),
            other => other,
        };
        let code = match &e {
            Error::Plan(_) | Error::Usage(_) | Error::NotFound(_) => exit::USAGE,
            Error::Metadata(
                MetadataError::NotZenflow { .. } | MetadataError::NewerSchema { .. } | MetadataError::RunNameTaken(_),
            ) => exit::USAGE,
            _ => exit::STEP_FAILED,
        };
        CliError { code, message: e.to_string() }
    }
}

impl From<zenflow_core::metadata::MetadataError> for CliError {
    fn from(e: zenflow_core::metadata::MetadataError) -> Self {
        Error::from(e).into()
    }
}

impl From<zenflow_core::artifact_store::StoreError> for CliError {
    fn from(e: zenflow_core::artifact_store::StoreError) -> Self {
        Error::from(e).into()
    }
}

pub(crate) type CliResult<T = u8> = Result<T, CliError>;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A zenflow pipeline: run it, inspect its runs and artifacts, report to CI.",
    long_about = "A zenflow pipeline. `run` executes it on a stack (local by default), recording every \
                  run, step and artifact; unchanged steps come from cache. Exit codes: 0 success, \
                  1 a step failed, 2 bad usage or configuration, 3 a quality gate failed, 4 a promotion \
                  lost a compare-and-swap (or a deployment was rolled back)."
)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors and the final result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// What to do; `run` when none is given.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the pipeline.
    Run(RunArgs),
    /// Print the pipeline's DAG.
    Dag(DagArgs),
    /// List and inspect past runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// List, inspect and export artifact versions.
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// The model registry: versions, aliases, promotions and their history.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// List and inspect stacks.
    #[command(subcommand)]
    Stacks(StacksCommand),
    /// Publish a report.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Serve a registered model over the Open Inference Protocol (KServe
    /// V2): the version holding an alias, swapped without downtime.
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
    /// Execute exactly one step (or a chain) of an existing run (used by
    /// distributed orchestrators): `--run RUN --step STEP... [--attempt N |
    /// --retries-done N] [--no-close] [--stack NAME]`, as
    /// `zenflow::run::entrypoint::Request::to_args` writes them.
    #[command(hide = true)]
    StepEntrypoint {
        /// The request's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Close a run its engine has finished with (an Argo exit handler).
    #[command(hide = true)]
    CloseRun {
        /// Run id (or name).
        #[arg(long)]
        run: String,
        #[command(flatten)]
        stack: StackArg,
    },
}

#[derive(Args, Debug)]
pub(crate) struct StackArg {
    /// The stack to use.
    #[arg(long, env = "ZENFLOW_STACK", default_value = "local")]
    pub(crate) stack: String,
}

#[derive(Args, Debug)]
struct ConfigArgs {
    /// Run config file (YAML, TOML or JSON): `parameters`, per-`steps` settings, `run_name`, `cache`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override one value: `key=value`, a dotted path (`learning_rate=0.1`,
    /// `steps.train.retries=3`). Repeatable; wins over --config, which wins over code defaults.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    stack: StackArg,
    #[command(flatten)]
    config: ConfigArgs,
    /// Execute every step; take nothing from cache.
    #[arg(long)]
    no_cache: bool,
    /// Reuse no cached result older than this (`12h`, `7d`), whatever the
    /// steps allow; `cache_ttl` in the run config does the same.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    cache_ttl: Option<std::time::Duration>,
    /// Name of the run (placeholders {date}, {time}, {git_sha}, {pipeline}).
    #[arg(long, value_name = "NAME")]
    run_name: Option<String>,
    /// Write a markdown report (for a PR comment or a job summary).
    #[arg(long, value_name = "FILE.md")]
    report: Option<PathBuf>,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the checks and steps as JUnit XML.
    #[arg(long, value_name = "FILE.xml")]
    junit: Option<PathBuf>,
    /// Print the plan and what would come from cache; run nothing. Records a
    /// pending run whose steps `step-entrypoint` can execute.
    #[arg(long)]
    dry_run: bool,
    /// A check that warns fails the quality gate.
    #[arg(long)]
    warnings_as_errors: bool,
    /// Compare the report with a past run: its name or id, or
    /// `latest:PREFIX`, the newest completed run whose name starts with
    /// PREFIX (a PR: `latest:main-`). The report lists the steps whose code
    /// changed, the parameters that differ, and what came from the cache.
    #[arg(long, value_name = "RUN|latest:PREFIX")]
    compare_with: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DagFormat {
    /// A mermaid flowchart (renders in GitHub comments).
    Mermaid,
    /// Graphviz dot.
    Dot,
    /// The plan as JSON.
    Json,
    /// An Argo `Workflow` (YAML) for a new pending run on `--stack`: one pod
    /// per step through the step entrypoint.
    Argo,
}

#[derive(Args, Debug)]
struct DagArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "mermaid")]
    format: DagFormat,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    argo: ArgoArgs,
}

/// Settings of `dag --format argo`.
#[derive(Args, Debug)]
struct ArgoArgs {
    /// The stack the pods use (its metadata store records the run).
    #[arg(long, env = "ZENFLOW_STACK", default_value = "local")]
    stack: String,
    /// Container image with the pipeline binary and zenflow.toml (default: the stack's `image`).
    #[arg(long)]
    image: Option<String>,
    /// The pipeline binary's path in the image (default: /app/<this binary's name>).
    #[arg(long)]
    binary: Option<String>,
    /// The folder of zenflow.toml in the image.
    #[arg(long, default_value = "/app")]
    workdir: String,
    /// The Kubernetes secret with the values of the stack's `${VAR}` references.
    #[arg(long, default_value = "zenflow")]
    secret: String,
    /// Pods at once.
    #[arg(long)]
    parallelism: Option<usize>,
    /// The pods' Kubernetes service account.
    #[arg(long)]
    service_account: Option<String>,
}

#[derive(Subcommand, Debug)]
enum RunsCommand {
    /// The most recent runs of this pipeline.
    List {
        #[command(flatten)]
        stack: StackArg,
        /// How many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Runs of every pipeline in the store, not only this one.
        #[arg(long)]
        all: bool,
    },
    /// One run: status, steps, timings, cache hits, checks.
    Show {
        /// Run id or name (`latest` for the most recent run of this pipeline).
        run: String,
        #[command(flatten)]
        stack: StackArg,
        /// Also print each step's log lines.
        #[arg(long)]
        logs: bool,
        /// Say why each step ran (what changed since its last run), or
        /// which run a cached step came from.
        #[arg(long)]
        why: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ArtifactsCommand {
    /// The most recent artifact versions.
    List {
        #[command(flatten)]
        stack: StackArg,
        /// Only versions of this artifact name (`<pipeline>.<step>.<output>`).
        #[arg(long)]
        name: Option<String>,
        /// How many versions.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One artifact version with its metadata and lineage.
    Show {
        /// Artifact version id, `name@N` or `name@latest`.
        #[arg(value_name = "ARTIFACT")]
        id: String,
        #[command(flatten)]
        stack: StackArg,
    },
    /// Write an artifact version's bytes to a file (verified against its hash).
    Export {
        /// Artifact version id, `name@N` or `name@latest`.
        #[arg(value_name = "ARTIFACT")]
        id: String,
        /// Where to write the bytes.
        #[arg(long, short)]
        output: PathBuf,
        #[command(flatten)]
        stack: StackArg,
    },
}

#[derive(Subcommand, Debug)]
enum StacksCommand {
    /// The stacks of this project (`zenflow.toml`, plus the embedded `local`).
    List,
    /// A stack's components, credentials redacted.
    Show {
        /// Stack name.
        name: String,
    },
    /// Connect to each component of a stack, create the metadata schema if
    /// missing, write and read back a probe artifact, and report each result.
    Check {
        /// Stack name.
        name: String,
    },
    /// Print the SQL that gives a team's CI two PostgreSQL roles, enforced
    /// by the database: `zenflow_pr` for pull requests (cannot move a
    /// protected alias, even with raw SQL) and `zenflow_release` for `main`.
    #[cfg(feature = "postgres")]
    RolesSql,
}

#[derive(Subcommand, Debug)]
enum ReportCommand {
    /// Post a markdown report as one sticky pull-request comment (created, or updated in place).
    GithubComment {
        /// The markdown report written by `run --report`.
        #[arg(long, value_name = "FILE.md")]
        report: PathBuf,
    },
}

/// Runs the pipeline binary's command line: `fn main() -> ExitCode { zenflow::cli::main(training) }`.
pub fn main<P>(pipeline: P) -> ExitCode
where
    P: Pipeline,
    P::Config: Default,
{
    Main::new(pipeline).run()
}

/// [`main`] with explicit arguments (the first is the program name).
pub fn main_from<P, I, T>(pipeline: P, args: I) -> ExitCode
where
    P: Pipeline,
    P::Config: Default,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Main::new(pipeline).run_from(args)
}

/// A pipeline binary's command line, with what it adds to [`main`]: the
/// model type its `serve` command serves.
///
/// `fn main() -> ExitCode { zenflow::cli::Main::new(training).serve::<Model>().run() }`
#[derive(Debug)]
pub struct Main<P> {
    pipeline: P,
    #[cfg(feature = "serve")]
    loader: Option<crate::serve::Loader>,
}

impl<P> Main<P>
where
    P: Pipeline,
    P::Config: Default,
{
    /// The command line of `pipeline`.
    pub fn new(pipeline: P) -> Self {
        Main {
            pipeline,
            #[cfg(feature = "serve")]
            loader: None,
        }
    }

    /// `serve` loads registered versions as `M` (the type the step that
    /// registers the model returns) and answers with its [`Predict`](crate::serve::Predict).
    #[cfg(feature = "serve")]
    pub fn serve<M: crate::serve::Predict + crate::Materialize>(mut self) -> Self {
        self.loader = Some(crate::serve::Loader::of::<M>());
        self
    }

    /// Runs it with this process's arguments.
    pub fn run(self) -> ExitCode {
        self.run_from(std::env::args_os())
    }

    /// Runs it with explicit arguments (the first is the program name).
    pub fn run_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let pipeline = self.pipeline;
        let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let parse = |args: &[OsString]| {
            Cli::command().name(pipeline.name()).try_get_matches_from(args).and_then(|m| Cli::from_arg_matches(&m))
        };
        let cli = match parse(&args) {
            // No command: the binary runs its pipeline (`cargo run --example quickstart`).
            Ok(Cli { command: None, .. }) => {
                args.insert(1.min(args.len()), "run".into());
                parse(&args)
            }
            other => other,
        };
        let cli = match cli {
            Ok(cli) => cli,
            // --help and --version exit 0, usage errors 2: clap's own contract.
            Err(e) => e.exit(),
        };
        init_tracing(cli.verbose, cli.quiet);
        let extras = Extras {
            #[cfg(feature = "serve")]
            loader: self.loader,
        };
        match dispatch(&pipeline, &extras, cli) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {}", zenflow_core::redact::text(&e.message));
                ExitCode::from(e.code)
            }
        }
    }
}

/// What [`Main`] adds to the commands.
struct Extras {
    #[cfg(feature = "serve")]
    loader: Option<crate::serve::Loader>,
}

fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::prelude::*;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let print = tracing_subscriber::fmt::layer()
        // Not into a step's captured stderr (the capture layer keeps events).
        .with_writer(crate::logs::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);
    // The filter above decides what is printed, not what a step keeps.
    let _ = tracing_subscriber::registry().with(print).with(crate::logs::layer()).try_init();
}

fn dispatch<P>(pipeline: &P, extras: &Extras, cli: Cli) -> CliResult
where
    P: Pipeline,
    P::Config: Default,
{
    // Only `serve` reads the extras (the model loader).
    #[cfg(not(feature = "serve"))]
    let _ = extras;
    let quiet = cli.quiet;
    let Some(command) = cli.command else {
        return Err(CliError::usage("no command given; see --help"));
    };
    match command {
        Command::Run(args) => run(pipeline, args, quiet),
        Command::Dag(args) => dag(pipeline, args),
        Command::Runs(RunsCommand::List { stack, limit, all }) => {
            let runs = read_stack(&stack.stack).and_then(|s| Ok(s.list_runs((!all).then(|| pipeline.name()), limit)?));
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
        Command::Runs(RunsCommand::Show { run, stack, logs, why }) => {
            let stack = read_stack(&stack.stack)?;
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
        Command::Artifacts(cmd) => artifacts(cmd),
        Command::Models(cmd) => models::run(cmd),
        Command::Stacks(cmd) => stacks(cmd),
        Command::Report(ReportCommand::GithubComment { report }) => github_comment(pipeline, &report),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::serve(extras.loader.as_ref(), pipeline.name(), args),
        Command::StepEntrypoint { args } => step_entrypoint(&args),
        Command::CloseRun { run, stack } => {
            let stack = resolve_stack(&stack.stack)?;
            let status = stack.block_on(zenflow_core::run::close_ended(&stack, &run, "the workflow"))??;
            eprintln!("[zenflow] run {run}: {status}");
            Ok(exit::SUCCESS)
        }
    }
}

/// Runs whose process died are shown as failed, not "running" forever.
fn close_stale_runs(stack: &Stack) -> CliResult<()> {
    stack.block_on(stack.close_stale_runs())??;
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

fn stacks(cmd: StacksCommand) -> CliResult {
    let stacks = project_stacks()?;
    match cmd {
        #[cfg(feature = "postgres")]
        StacksCommand::RolesSql => {
            print!("{}", zenflow_stacks::metadata::ROLES_SQL);
            Ok(exit::SUCCESS)
        }
        StacksCommand::List => {
            println!("{:<12} {:<10} {:<48} METADATA", "STACK", "RUNS ON", "ARTIFACTS");
            for name in stacks.names() {
                match stacks.config(&name) {
                    Ok(c) => println!(
                        "{:<12} {:<10} {:<48} {}",
                        name,
                        c.orchestrator.kind(),
                        zenflow_stacks::config::redact_url(&c.artifact_store.url),
                        zenflow_stacks::config::redact_url(&c.metadata_store.url)
                    ),
                    Err(e) => println!("{name:<12} (invalid: {e})"),
                }
            }
            if stacks.file().is_none() {
                println!("\n(no zenflow.toml in the project: only the embedded `local` stack)");
            }
            Ok(exit::SUCCESS)
        }
        StacksCommand::Show { name } => {
            let config = stacks.config(&name)?;
            for (k, v) in config.describe() {
                println!("{:<20} {v}", format!("{k}:"));
            }
            Ok(exit::SUCCESS)
        }
        StacksCommand::Check { name } => {
            let probes = stacks.check(&name)?;
            for p in &probes {
                match &p.result {
                    Ok(detail) => println!("ok      {:<16} {detail}", p.component),
                    Err(e) => println!("FAILED  {:<16} {e}", p.component),
                }
            }
            Ok(if probes.iter().all(|p| p.result.is_ok()) { exit::SUCCESS } else { exit::STEP_FAILED })
        }
    }
}

fn plan_for<P>(pipeline: &P, args: &ConfigArgs) -> CliResult<(RunConfig, Plan)>
where
    P: Pipeline,
    P::Config: Default,
{
    Ok(run_config::plan(pipeline, args.config.as_deref(), &args.set)?)
}

fn dag<P>(pipeline: &P, args: DagArgs) -> CliResult
where
    P: Pipeline,
    P::Config: Default,
{
    let (_, plan) = plan_for(pipeline, &args.config)?;
    match args.format {
        DagFormat::Mermaid => print!("{}", report::mermaid(&plan, None)),
        DagFormat::Dot => print!("{}", report::dot(&plan)),
        DagFormat::Json => println!("{}", plan.to_json()),
        DagFormat::Argo => print!("{}", argo_workflow(plan, &args.argo)?),
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
    ))??;
    let plan = run.plan().map_err(|e| CliError::usage(e.to_string()))?;
    let doc = argo::workflow(&plan, &run, &options).map_err(|e| CliError::usage(e.to_string()))?;
    stack.block_on(stack.metadata().flush())??;
    eprintln!("recorded pending run {} ({}) on stack `{}`", run.name, run.id, args.stack);
    serde_saphyr::to_string(&doc).map_err(|e| CliError::usage(format!("cannot write the workflow as YAML: {e}")))
}

fn run<P>(pipeline: &P, args: RunArgs, quiet: bool) -> CliResult
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
    let (doc, plan) = plan_for(pipeline, &args.config)?;
    let git = zenflow_core::git::head_commit(stack.project_root().unwrap_or_else(|| std::path::Path::new(".")));
    let run_name = match args.run_name.as_deref().or(doc.run_name()) {
        Some(template) => Some(expand_run_name(template, pipeline.name(), git.as_deref())?),
        None => None,
    };
    let no_cache = args.no_cache || !doc.cache();
    let cache_ttl = args.cache_ttl.or(doc.cache_ttl());
    if args.dry_run {
        return dry_run(&stack, plan, run_name, no_cache, cache_ttl);
    }

    let mode = if quiet {
        progress::Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        progress::Mode::Live
    } else {
        progress::Mode::Plain
    };
    let progress = progress::Progress::new(mode, plan.steps.len());
    let options =
        RunOptions { no_cache, cache_ttl, run_name, observer: Some(progress.observer()), ..RunOptions::default() };
    let result = stack.block_on(zenflow_core::run::execute_plan(&stack, plan, options))?.map_err(|e| {
        if let Error::Unrecorded(run) = &e {
            *unrecorded = report::FailedToRun::steps_of(run);
        }
        let mut e = CliError::from(e);
        e.message = format!("stack `{}`: {}", stack.name(), e.message);
        e
    })?;
    progress.finish();

    let step_runs = stack.step_runs(result.id())?;
    let originals = RunReport::originals(&stack, &step_runs)?;
    let ci_job = stack.ci().job_url.clone();
    let report = RunReport::new(result.record(), result.plan(), &step_runs, &originals, args.warnings_as_errors)
        .with_registered(&stack, result.plan())
        .with_ci_job(ci_job);
    let report = match &args.compare_with {
        None => report,
        Some(selector) => match baseline_run(&stack, pipeline.name(), selector, result.id()) {
            Ok(Some((run, plan))) => report.with_baseline(report::Baseline::compare(&run, &plan, result.plan())),
            Ok(None) => {
                eprintln!("note: no run matches --compare-with {selector}: the report compares with nothing");
                report
            }
            Err(e) => {
                eprintln!("warning: --compare-with {selector}: {}", e.message);
                report
            }
        },
    };
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

/// `--cache-ttl`: a duration such as `12h` or `7d`.
fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    zenflow_core::step::parse_duration_ms(text)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is not a duration: write one such as 30m, 12h or 7d"))
}

/// Records a pending run and prints what would run and what would come from cache.
fn dry_run(
    stack: &Stack,
    mut plan: Plan,
    run_name: Option<String>,
    no_cache: bool,
    cache_ttl: Option<std::time::Duration>,
) -> CliResult {
    let options = RunOptions { run_name, no_cache, cache_ttl, ..RunOptions::default() };
    zenflow_core::run::apply_run_options(&mut plan, &options);
    let predictions = stack.block_on(zenflow_core::run::predict(stack, &plan, no_cache))??;
    let steps: Vec<(String, String)> = plan.steps.iter().map(|s| (s.id.clone(), s.step.clone())).collect();
    let record = stack.block_on(zenflow_core::run::start_run(stack, plan, &options, RunStatus::Pending))??;
    println!("{:<28} {:<24} PREDICTION", "STEP", "FUNCTION");
    for ((id, step), prediction) in steps.iter().zip(&predictions) {
        println!("{id:<28} {step:<24} {prediction}");
    }
    let cached = predictions.iter().filter(|p| matches!(p, zenflow_core::run::Prediction::Cached { .. })).count();
    println!(
        "\nplanned run {} ({}): {} step(s), {cached} from cache; nothing was executed",
        record.name,
        record.id,
        predictions.len()
    );
    Ok(exit::SUCCESS)
}

/// Runs one attempt of a step (or a chain) of an existing run, then ends the
/// process at once: a timed-out sync step may still hold a thread, which
/// must not keep the process alive.
fn step_entrypoint(args: &[String]) -> ! {
    use std::io::Write as _;
    use zenflow_core::run::entrypoint::{self, Exit, Request};
    let code = (|| -> CliResult {
        let (request, stack) = Request::from_args(args)
            .map_err(|e| CliError { code: Exit::Permanent.code(), message: format!("{e}; see --help") })?;
        let name = stack.or_else(|| std::env::var("ZENFLOW_STACK").ok()).unwrap_or_else(|| "local".into());
        // The step runs here, whatever orchestrator sent it.
        let stack = project_stacks()?.open_in_place(&name).map_err(|e| stack_error(&name, e))?;
        let report = stack
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

fn artifacts(cmd: ArtifactsCommand) -> CliResult {
    match cmd {
        ArtifactsCommand::List { stack, name, limit } => {
            let stack = read_stack(&stack.stack)?;
            let versions = stack.block_on(stack.metadata().artifact_versions(name.as_deref(), limit))??;
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
            let lineage = stack.block_on(stack.metadata().lineage(&v.id))??;
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
            let written = stack.block_on(exported)?.map_err(|e| match e {
                zenflow_core::artifact_store::ExportError::Store(e) => CliError::from(e),
                write => CliError { code: exit::STEP_FAILED, message: write.to_string() },
            })?;
            eprintln!("wrote {written} bytes of {} v{} ({}) to {}", v.name, v.version, v.format, output.display());
            Ok(exit::SUCCESS)
        }
    }
}

fn github_comment<P: Pipeline>(pipeline: &P, path: &PathBuf) -> CliResult {
    let body = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read the report {}: {e}", path.display())))?;
    let marker = body
        .lines()
        .next()
        .filter(|l| l.starts_with("<!-- zenflow-report"))
        .map(str::to_string)
        .unwrap_or_else(|| report::marker(pipeline.name()));
    let body = if body.contains(&marker) { body } else { format!("{marker}\n{body}") };
    let body = report::fit_comment(&body, report::GITHUB_COMMENT_LIMIT);
    let env = github::GithubEnv::from_env(|k| std::env::var(k).ok()).map_err(|e| CliError::usage(e.message))?;
    match env.upsert_comment(&marker, &body) {
        Ok(github::Posted::Created(id)) => println!("created comment {id} on pull request #{}", env.pr()),
        Ok(github::Posted::Updated(id)) => println!("updated comment {id} on pull request #{}", env.pr()),
        Err(e) => {
            return Err(CliError { code: if e.usage { exit::USAGE } else { exit::STEP_FAILED }, message: e.message })
        }
    }
    Ok(exit::SUCCESS)
}
