//! `serve` and `models deploy`: parse, call [`crate::serve`] or
//! [`crate::deploy`], print.

use super::{exit, resolve_stack, CliError, CliResult, StackArg};
use crate::deploy::{DeployError, DeployOptions};
use crate::registry::{Expect, RegistryError};
use crate::serve::{BakePolicy, Loader, ServeOptions, Server};
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Args, Debug)]
pub(super) struct ServeArgs {
    #[command(flatten)]
    stack: StackArg,
    /// The registered model to serve.
    #[arg(long)]
    model: String,
    /// Serve the version holding this alias.
    #[arg(long, default_value = crate::registry::PRODUCTION)]
    alias: String,
    /// Where to listen. Only this machine unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// How often to look up the alias in the registry (`30s`, `2m`; `off`:
    /// only when the deployer calls).
    #[arg(long, default_value = "30s")]
    poll: String,
    /// How long the previous version stays loaded after a swap, to come
    /// back if the new one fails requests.
    #[arg(long, default_value = "5m")]
    bake: String,
    /// The share of failed requests within the bake window that swaps back.
    #[arg(long, default_value_t = 0.05)]
    bake_failure_rate: f64,
    /// The requests a new version must have answered before that share counts.
    #[arg(long, default_value_t = 20)]
    bake_min_requests: u64,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    max_body: usize,
    /// After SIGTERM, how long to go on serving while readiness answers 503
    /// (`5s` behind a Kubernetes Service: longer than its readiness probe's
    /// period), so no request meets a closed port.
    #[arg(long, default_value = "0s")]
    drain_delay: String,
    /// Start even when nobody holds the alias yet (not ready until a
    /// version takes it); without it such an alias is an error.
    #[arg(long)]
    wait_for_alias: bool,
    /// The environment variable holding the admin token (unset: admin calls off).
    #[arg(long, default_value = crate::serve::TOKEN_ENV)]
    token_env: String,
}

fn duration(flag: &str, text: &str) -> CliResult<Duration> {
    zenflow_core::step::parse_duration_ms(text)
        .map(Duration::from_millis)
        .ok_or_else(|| CliError::usage(format!("--{flag} {text}: not a duration such as \"30s\", \"5m\" or \"250ms\"")))
}

pub(super) fn serve(loader: Option<&Loader>, pipeline: &str, args: ServeArgs) -> CliResult {
    let Some(loader) = loader.cloned() else {
        return Err(CliError::usage(format!(
            "`{pipeline}` serves no model type: in its main, write \
             `zenflow::cli::Main::new({pipeline}).serve::<YourModel>().run()` (YourModel implements zenflow::serve::Predict)"
        )));
    };
    if !(0.0..=1.0).contains(&args.bake_failure_rate) {
        return Err(CliError::usage(format!(
            "--bake-failure-rate {} is not a share between 0 and 1",
            args.bake_failure_rate
        )));
    }
    let poll = match args.poll.as_str() {
        "off" | "0" => None,
        p => Some(duration("poll", p)?).filter(|d| !d.is_zero()),
    };
    let options = ServeOptions {
        model: args.model,
        alias: args.alias,
        bind: args.bind,
        poll,
        bake: BakePolicy {
            window: duration("bake", &args.bake)?,
            max_failure_rate: args.bake_failure_rate,
            min_requests: args.bake_min_requests,
        },
        admin_token: std::env::var(&args.token_env).ok().filter(|t| !t.is_empty()),
        max_body: args.max_body,
        drain_delay: duration("drain-delay", &args.drain_delay)?,
        wait_for_alias: args.wait_for_alias,
    };
    let stack = super::stacks::project_stacks()?
        .open_writable_or_read_only(&args.stack.stack)
        .map_err(|e| super::stacks::stack_error(&args.stack.stack, e))?;
    let (model, alias, admin) = (options.model.clone(), options.alias.clone(), options.admin_token.is_some());
    stack.block_on(async {
        let server = Server::bind(stack.clone(), loader, options).await?;
        let addr = server.local_addr()?;
        let admin = if admin { "on" } else { "off" };
        outln!("serving `{model}`@{alias} on http://{addr} (admin calls {admin})");
        let _ = std::io::stdout().flush();
        server.run(crate::serve::shutdown_signal()).await
    })?;
    Ok(exit::SUCCESS)
}

#[derive(Args, Debug)]
pub(super) struct DeployArgs {
    /// Model name.
    model: String,
    /// The version to deploy (`7` or `v7`).
    version: String,
    /// The alias the server follows.
    #[arg(long, default_value = crate::registry::PRODUCTION)]
    alias: String,
    /// The version that must hold the alias now (`5`, or `none`); default:
    /// whoever holds it when the deployment starts.
    #[arg(long, value_name = "VERSION|none")]
    expect: Option<String>,
    /// The run on whose behalf (its quality gate unlocks a protected alias).
    #[arg(long, value_name = "RUN")]
    run: Option<String>,
    /// Why, for the alias's history.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    stack: StackArg,
}

pub(super) fn deploy(args: DeployArgs) -> CliResult {
    let stack = resolve_stack(&args.stack.stack)?;
    let version = super::models::parse_version(&args.version)?;
    let expect = match args.expect.as_deref() {
        None => None,
        Some("none") => Some(Expect::Nobody),
        Some(v) => Some(Expect::Version(super::models::parse_version(v)?)),
    };
    let options = DeployOptions { alias: args.alias, expect, run_id: args.run, reason: args.reason };
    match crate::deploy::deploy(&stack, &args.model, version, &options) {
        Ok(d) => {
            let from = d.from.map_or("no version".into(), |v| format!("v{v}"));
            if d.unchanged {
                outln!("v{} of `{}` already serves as {}: nothing to do", d.to, d.model, options.alias);
            } else if d.promoted {
                outln!(
                    "`{}`@{} moved from {from} to v{}, and the server serves v{}",
                    d.model,
                    options.alias,
                    d.to,
                    d.to
                );
            } else {
                outln!("v{} of `{}` already held {}; the server serves it", d.to, d.model, options.alias);
            }
            Ok(exit::SUCCESS)
        }
        Err(e) => Err(deploy_error(e)),
    }
}

/// A lost compare-and-swap or a rollback exits 4; the rest as usual.
pub(super) fn deploy_error(e: DeployError) -> CliError {
    match e {
        DeployError::RolledBack { .. } | DeployError::RollbackFailed { .. } => {
            CliError { code: exit::CONFLICT, message: e.to_string() }
        }
        DeployError::Registry(r @ RegistryError::Conflict { .. }) => r.into(),
        DeployError::Registry(r) => r.into(),
        DeployError::Store(s) => s.into(),
        e @ DeployError::NoDeployer { .. } => CliError::usage(e),
    }
}
