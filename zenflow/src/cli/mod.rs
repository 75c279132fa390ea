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

// First: the modules below print through its macros.
#[macro_use]
mod out;
mod args;
mod artifacts;
mod dag;
mod entrypoint;
mod error;
mod gc;
pub mod github;
mod models;
pub mod progress;
mod run;
mod runs;
#[cfg(feature = "serve")]
mod serve;
mod stacks;

pub(crate) use args::StackArg;
use args::{Cli, Command, ReportCommand, RunsCommand};
use clap::{CommandFactory, FromArgMatches};
pub(crate) use error::CliResult;
pub use error::{exit, CliError};
pub(crate) use stacks::{read_stack, resolve_stack};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;
use zenflow_core::Pipeline;

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
        .with_writer(progress::stderr)
        .with_ansi(crate::report::Colour::when(std::io::stderr().is_terminal()) == crate::report::Colour::Ansi)
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
        Command::Run(args) => run::run(pipeline, args, quiet),
        Command::Dag(args) => dag::run(pipeline, args),
        Command::Runs(RunsCommand::List { stack, limit, all, status, json }) => {
            let filter = runs::Filter { pipeline: (!all).then(|| pipeline.name()), status, limit };
            runs::list(&stack.stack, &filter, json)
        }
        Command::Runs(RunsCommand::Show { run, stack, logs, why, json }) => {
            runs::show(pipeline, run, &stack.stack, runs::Show { logs, why, json })
        }
        Command::Runs(RunsCommand::Compare { runs, stack, format }) => {
            runs::compare(pipeline, &runs, &stack.stack, &format)
        }
        Command::Runs(RunsCommand::Delete { runs, stack, collect }) => {
            gc::delete(pipeline.name(), &runs, &stack.stack, &collect)
        }
        Command::Gc(args) => gc::gc(pipeline.name(), &args),
        Command::Artifacts(cmd) => artifacts::run(cmd),
        Command::Models(cmd) => models::run(cmd),
        Command::Stacks(cmd) => stacks::run(cmd),
        Command::Report(ReportCommand::GithubComment { report }) => github::comment(pipeline, &report),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command().name(pipeline.name()), pipeline.name(), &mut script);
            out::bytes(&script);
            Ok(exit::SUCCESS)
        }
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::serve(extras.loader.as_ref(), pipeline.name(), args),
        Command::StepEntrypoint { args } => entrypoint::run(&args),
        Command::CloseRun { run, stack } => runs::close(&run, &stack.stack),
    }
}
