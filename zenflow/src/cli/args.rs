//! The command line's arguments, as clap reads them.

use super::models::ModelsCommand;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A zenflow pipeline: run it, inspect its runs and artifacts, report to CI.",
    long_about = "A zenflow pipeline. `run` executes it on a stack (local by default), recording every \
                  run, step and artifact; unchanged steps come from cache. Exit codes: 0 success, \
                  1 a step failed, 2 bad usage or configuration, 3 a quality gate failed, 4 a promotion \
                  lost a compare-and-swap (or a deployment was rolled back)."
)]
pub(super) struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(super) verbose: u8,
    /// Only errors and the final result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(super) quiet: bool,
    /// What to do; `run` when none is given.
    #[command(subcommand)]
    pub(super) command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub(super) enum Command {
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
    Models(ModelsCommand),
    /// List and inspect stacks.
    #[command(subcommand)]
    Stacks(StacksCommand),
    /// Publish a report.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Delete old runs of this pipeline and collect the artifacts nothing
    /// uses any more.
    #[command(long_about = "Delete old runs of this pipeline (with `--older-than`, `--keep-last` or both; \
        neither deletes none) and collect the artifacts nothing uses any more. A running run is never deleted. \
        An artifact version stays while a remaining run uses it (a cache hit, an input), a model version \
        holds it, or it is upstream of either. Unused objects go to the artifact store's trash once older \
        than `--grace`, and are deleted after another `--grace` there (moved back if a run took them up \
        again meanwhile), so a `gc` beside running pipelines loses nothing.")]
    Gc(GcArgs),
    /// Print the shell completion script for this binary
    /// (`source <(training completions bash)`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Serve a registered model over the Open Inference Protocol (KServe
    /// V2): the version holding an alias, swapped without downtime.
    #[cfg(feature = "serve")]
    Serve(super::serve::ServeArgs),
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
pub(super) struct ConfigArgs {
    /// Run config file (YAML, TOML or JSON): `parameters`, per-`steps` settings, `run_name`, `cache`.
    #[arg(long, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Override one value: `key=value`, a dotted path (`learning_rate=0.1`,
    /// `steps.train.retries=3`). Repeatable; wins over --config, which wins over code defaults.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(super) set: Vec<String>,
}

#[derive(Args, Debug)]
pub(super) struct RunArgs {
    #[command(flatten)]
    pub(super) stack: StackArg,
    #[command(flatten)]
    pub(super) config: ConfigArgs,
    /// Execute every step; take nothing from cache.
    #[arg(long)]
    pub(super) no_cache: bool,
    /// Reuse no cached result older than this (`12h`, `7d`), whatever the
    /// steps allow; `cache_ttl` in the run config does the same.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub(super) cache_ttl: Option<std::time::Duration>,
    /// Name of the run (placeholders {date}, {time}, {git_sha}, {pipeline}).
    #[arg(long, value_name = "NAME")]
    pub(super) run_name: Option<String>,
    /// Write a markdown report (for a PR comment or a job summary).
    #[arg(long, value_name = "FILE.md")]
    pub(super) report: Option<PathBuf>,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    pub(super) json: Option<PathBuf>,
    /// Write the checks and steps as JUnit XML.
    #[arg(long, value_name = "FILE.xml")]
    pub(super) junit: Option<PathBuf>,
    /// Print the plan and what would come from cache; record and run nothing.
    #[arg(long, conflicts_with = "pending")]
    pub(super) dry_run: bool,
    /// Record a pending run, execute nothing: its steps are run one by one
    /// by `step-entrypoint --run RUN --step STEP` (what an external
    /// scheduler calls). Prints what would come from cache, as `--dry-run`.
    #[arg(long)]
    pub(super) pending: bool,
    /// A check that warns fails the quality gate.
    #[arg(long)]
    pub(super) warnings_as_errors: bool,
    /// Compare the report with a past run: its name, its id or the start
    /// of it, `latest`, or `latest:PREFIX`, the newest completed run whose
    /// name starts with PREFIX (a PR: `latest:main-`). The report lists the
    /// steps whose code changed, the parameters that differ, and what came
    /// from the cache.
    #[arg(long, value_name = "RUN|latest:PREFIX")]
    pub(super) compare_with: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum DagFormat {
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
pub(super) struct DagArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "mermaid")]
    pub(super) format: DagFormat,
    #[command(flatten)]
    pub(super) config: ConfigArgs,
    #[command(flatten)]
    pub(super) argo: ArgoArgs,
}

/// Settings of `dag --format argo`.
#[derive(Args, Debug)]
pub(super) struct ArgoArgs {
    /// The stack the pods use (its metadata store records the run).
    #[arg(long, env = "ZENFLOW_STACK", default_value = "local")]
    pub(super) stack: String,
    /// Container image with the pipeline binary and zenflow.toml (default: the stack's `image`).
    #[arg(long)]
    pub(super) image: Option<String>,
    /// The pipeline binary's path in the image (default: /app/<this binary's name>).
    #[arg(long)]
    pub(super) binary: Option<String>,
    /// The folder of zenflow.toml in the image.
    #[arg(long, default_value = "/app")]
    pub(super) workdir: String,
    /// The Kubernetes secret with the values of the stack's `${VAR}` references.
    #[arg(long, default_value = "zenflow")]
    pub(super) secret: String,
    /// Pods at once.
    #[arg(long)]
    pub(super) parallelism: Option<usize>,
    /// The pods' Kubernetes service account.
    #[arg(long)]
    pub(super) service_account: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(super) enum RunsCommand {
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
        /// Only runs with this status (pending runs are listed only so).
        #[arg(long, value_parser = parse_run_status)]
        status: Option<zenflow_core::metadata::RunStatus>,
        /// Print the runs as a JSON array (`id`, `name`, `pipeline`,
        /// `stack`, `status`, `git_commit`, `started_at`, `ended_at`,
        /// `duration_ms`).
        #[arg(long)]
        json: bool,
    },
    /// One run: status, steps, timings, cache hits, checks.
    Show {
        /// The run: its name, its id or the start of it, `latest` (the newest
        /// run of this pipeline that is not pending), or `latest:PREFIX` (the
        /// newest completed one whose name starts with PREFIX).
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
        /// Print the run as the JSON report `run --json` writes (its
        /// schema: `zenflow::report`), logs included.
        #[arg(long, conflicts_with_all = ["logs", "why"])]
        json: bool,
    },
    /// Runs side by side: parameters, metrics (with the change from the
    /// first run), checks, step statuses, the steps whose code differs;
    /// rows that differ are marked.
    Compare {
        /// Two runs or more (names, ids or their start, `latest`,
        /// `latest:PREFIX`); the first is the one the others are measured against.
        #[arg(num_args = 2.., required = true, value_name = "RUN")]
        runs: Vec<String>,
        #[command(flatten)]
        stack: StackArg,
        #[command(flatten)]
        format: CompareFormat,
    },
    /// Delete runs, and collect the artifacts nothing else uses (see `gc`).
    Delete {
        /// The runs (names, ids or their start, `latest`, `latest:PREFIX`).
        #[arg(num_args = 1.., required = true, value_name = "RUN")]
        runs: Vec<String>,
        #[command(flatten)]
        stack: StackArg,
        #[command(flatten)]
        collect: CollectArgs,
    },
}

/// `gc`'s arguments.
#[derive(Args, Debug)]
pub(super) struct GcArgs {
    #[command(flatten)]
    pub(super) stack: StackArg,
    /// Delete runs that started longer ago than this (e.g. 30d, 12h).
    #[arg(long, value_parser = parse_ttl, value_name = "DURATION")]
    pub(super) older_than: Option<std::time::Duration>,
    /// Keep the newest N runs of the pipeline whatever their age (pending
    /// runs are not counted).
    #[arg(long, value_name = "N")]
    pub(super) keep_last: Option<usize>,
    /// Runs of every pipeline in the store, not only this one.
    #[arg(long)]
    pub(super) all: bool,
    #[command(flatten)]
    pub(super) collect: CollectArgs,
}

/// How `gc` and `runs delete` collect.
#[derive(Args, Debug)]
pub(super) struct CollectArgs {
    /// How long an unused object waits before it goes to the trash, and
    /// in the trash before it is deleted (1h when not given). `0s` collects
    /// at once: only while nothing runs on the stack.
    #[arg(long, value_parser = parse_ttl, value_name = "DURATION")]
    pub(super) grace: Option<std::time::Duration>,
    /// Say what would be deleted, and change nothing (each run is
    /// weighed alone).
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Print what was deleted as JSON (`zenflow_core::gc::Report`).
    #[arg(long)]
    pub(super) json: bool,
}

/// How `runs compare` prints.
#[derive(Args, Debug)]
#[group(multiple = false)]
pub(super) struct CompareFormat {
    /// As JSON (`zenflow::report::Comparison`).
    #[arg(long)]
    pub(super) json: bool,
    /// As markdown tables, for a pull request.
    #[arg(long)]
    pub(super) md: bool,
}

#[derive(Subcommand, Debug)]
pub(super) enum ArtifactsCommand {
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
        /// Print the versions as a JSON array (the fields of
        /// `zenflow::metadata::ArtifactVersion`).
        #[arg(long)]
        json: bool,
    },
    /// One artifact version with its metadata and lineage.
    Show {
        /// Artifact version id, `name@N` or `name@latest`.
        #[arg(value_name = "ARTIFACT")]
        id: String,
        #[command(flatten)]
        stack: StackArg,
        /// Print it as JSON: the version's fields, `produced_by` and
        /// `consumed_by` (`step`, `step_run`, `run_id`, `run_name`).
        #[arg(long)]
        json: bool,
    },
    /// Print an artifact version's value for a person: JSON indented, text
    /// as it is, an array's type, shape and first values (verified against
    /// its hash first).
    Cat {
        /// Artifact version id, `name@N` or `name@latest`.
        #[arg(value_name = "ARTIFACT")]
        id: String,
        /// The stored bytes as they are.
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        stack: StackArg,
    },
    /// The first rows of a table artifact (a data frame stored as Parquet).
    Head {
        /// Artifact version id, `name@N` or `name@latest`.
        #[arg(value_name = "ARTIFACT")]
        id: String,
        /// How many rows.
        #[arg(short = 'n', long, default_value_t = 20)]
        rows: usize,
        /// Print `columns`, `rows` (arrays of values) and `total` as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        stack: StackArg,
    },
    /// Write an artifact version's bytes to a file (verified against its hash).
    Export {
        /// Artifact version id, `name@N` or `name@latest`.
        #[arg(value_name = "ARTIFACT")]
        id: String,
        /// Where to write the bytes (`-`: standard output).
        #[arg(long, short)]
        output: PathBuf,
        #[command(flatten)]
        stack: StackArg,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum StacksCommand {
    /// The stacks of this project (`zenflow.toml`, plus the embedded `local`).
    List {
        /// Print them as a JSON array (`name`, `orchestrator`,
        /// `artifact_store`, `metadata_store`, or `name` and `error`).
        #[arg(long)]
        json: bool,
    },
    /// A stack's components, credentials redacted.
    Show {
        /// Stack name.
        name: String,
        /// Print them as one JSON object, field by field.
        #[arg(long)]
        json: bool,
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
pub(super) enum ReportCommand {
    /// Post a markdown report as one sticky pull-request comment (created, or updated in place).
    GithubComment {
        /// The markdown report written by `run --report`.
        #[arg(long, value_name = "FILE.md")]
        report: PathBuf,
    },
}

/// `--cache-ttl`: a duration such as `12h` or `7d`.
fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    zenflow_core::step::parse_duration_ms(text)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is not a duration: write one such as 30m, 12h or 7d"))
}

/// `--status`: a run status by its name.
fn parse_run_status(text: &str) -> Result<zenflow_core::metadata::RunStatus, String> {
    zenflow_core::metadata::RunStatus::parse(text)
        .map_err(|_| format!("`{text}` is not a run status: pending, running, completed or failed"))
}
