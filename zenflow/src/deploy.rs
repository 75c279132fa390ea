//! The deployer (feature `serve`): moves an alias to a version and makes
//! the stack's model server serve it, or puts everything back.
//!
//! [`deploy`] does, in order:
//! 1. promote the version to the alias with a compare-and-swap against
//!    the holder it read (or the one the caller expects);
//! 2. ask the server to load it (`POST /v2/repository/models/{m}/load`,
//!    with the stack's admin token); a server busy with another load is
//!    asked again until the stack's `wait` runs out;
//! 3. wait until the server's answers carry the new version.
//!
//! If the load or the warm-up fails, or the server does not serve the
//! version in time, the alias moves back by compare-and-swap (a rollback
//! event naming the reason) and [`DeployError::RolledBack`] says why: the
//! command line exits 4 for it, and the report says so. The server never
//! stopped serving the previous version meanwhile.

use crate::registry::{EventKind, Expect, Promoted, RegistryError};
use crate::stack::Stores;
use std::time::{Duration, Instant};
pub use zenflow_stacks::config::Deployer;

/// The check [`deploy_input`] records on its step: passed when the version
/// serves, failed (with the reason) when the deployment was rolled back or
/// lost its compare-and-swap. A run with this check failed exits 4.
pub const DEPLOYMENT_CHECK: &str = "deployment";

/// What to deploy, and on whose behalf.
#[derive(Clone, Debug)]
pub struct DeployOptions {
    /// The alias the server follows (default `production`).
    pub alias: String,
    /// Who must hold the alias now; `None`: whoever holds it when the
    /// deployment starts.
    pub expect: Option<Expect>,
    /// The run on whose behalf (its quality gate unlocks a protected alias).
    pub run_id: Option<String>,
    /// Why, for the alias's history.
    pub reason: Option<String>,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions { alias: crate::registry::PRODUCTION.into(), expect: None, run_id: None, reason: None }
    }
}

/// A finished deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployed {
    /// The model's name.
    pub model: String,
    /// The version that held the alias before.
    pub from: Option<i64>,
    /// The version that serves now.
    pub to: i64,
    /// Whether the alias moved (false: it held the version already).
    pub promoted: bool,
    /// Nothing was done: the alias held the version and the server served
    /// it already (a merge that changed no model).
    pub unchanged: bool,
}

/// Why a deployment did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The stack has no `[stacks.NAME.deployer]`.
    #[error("stack `{stack}` has no deployer: add [stacks.{stack}.deployer] with the model server's `url` and `token = \"${{ZENFLOW_DEPLOY_TOKEN}}\"` to zenflow.toml")]
    NoDeployer {
        /// The stack.
        stack: String,
    },
    /// The registry refused the promotion (a lost compare-and-swap is
    /// [`RegistryError::Conflict`]); nothing changed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The server did not serve the version; the alias is back.
    #[error("deploying v{version} of `{model}` failed, so `{alias}` is back on {}: {reason}", back_on.map_or("no version".to_string(), |v| format!("v{v}")))]
    RolledBack {
        /// The model's name.
        model: String,
        /// The alias.
        alias: String,
        /// The version that did not deploy.
        version: i64,
        /// The version holding the alias again.
        back_on: Option<i64>,
        /// What went wrong.
        reason: String,
    },
    /// The server did not serve the version and the alias could not be
    /// moved back either: someone must look.
    #[error("deploying v{version} of `{model}` failed ({reason}), and moving `{alias}` back failed too: {rollback}")]
    RollbackFailed {
        /// The model's name.
        model: String,
        /// The alias.
        alias: String,
        /// The version that did not deploy.
        version: i64,
        /// What went wrong.
        reason: String,
        /// Why the rollback failed.
        rollback: String,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] crate::Error),
}

impl From<crate::stack::BlockingError> for DeployError {
    fn from(e: crate::stack::BlockingError) -> Self {
        DeployError::Store(e.into())
    }
}

/// Runs `f` where the stack's blocking calls may run: on a thread of its
/// own when called from a step (or other async code).
fn outside_runtime<T: Send>(f: impl FnOnce() -> Result<T, DeployError> + Send) -> Result<T, DeployError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(f).join().unwrap_or_else(|_| {
            Err(DeployError::Store(crate::Error::Panicked("the deployment thread panicked".into())))
        })
    })
}

/// Deploys, from a step, the version of `model` registered from what the
/// step's input `input` consumed (the output of the step with `model =
/// "..."`), on behalf of the step's run: its checks so far are the quality
/// gate of a protected alias. Records the [`DEPLOYMENT_CHECK`] on the step.
///
/// ```no_run
/// # use zenflow::prelude::*;
/// # #[derive(Clone, serde::Serialize, serde::Deserialize, Artifact)] struct Model;
/// #[step]
/// fn deploy(model: Model, appraised: bool, ctx: &StepContext) -> Result<String, BoxError> {
///     if !appraised {
///         return Ok("not deployed: the appraisal failed".into());
///     }
///     let d = zenflow::deploy::deploy_input(ctx, "model", "breast-cancer", &Default::default())?;
///     Ok(format!("v{} serves", d.to))
/// }
/// ```
pub fn deploy_input(
    ctx: &crate::StepContext,
    input: &str,
    model: &str,
    options: &DeployOptions,
) -> Result<Deployed, DeployError> {
    let stack = ctx
        .stores()
        .ok_or_else(|| DeployError::Store(crate::Error::usage("a detached step context has no stack to deploy on")))?;
    let artifact = ctx.input_artifact(input).ok_or_else(|| {
        DeployError::Store(crate::Error::usage(format!(
            "step `{}` has no input `{input}` to deploy",
            ctx.invocation_id()
        )))
    })?;
    let mut options = options.clone();
    options.run_id.get_or_insert_with(|| ctx.run_id().to_string());
    let result = outside_runtime(|| {
        let registry = stack.registry()?;
        let versions = stack.block_on(registry.versions(model))??;
        let consumed = stack.block_on(stack.metadata().artifact_version(artifact))?.map_err(crate::Error::from)?;
        let version = consumed
            .and_then(|a| crate::registry::version_holding(&versions, artifact, &a.content_hash))
            .map(|v| v.version)
            .ok_or_else(|| {
                DeployError::Store(crate::Error::usage(format!(
                    "input `{input}` (artifact {artifact}) is no version of model `{model}`: it must come from the \
                     step with `model = \"{model}\"`"
                )))
            })?;
        deploy_here(stack, model, version, &options)
    });
    use crate::{Check, CheckStatus};
    match &result {
        Ok(d) if d.unchanged => {
            ctx.check(Check::new(
                DEPLOYMENT_CHECK,
                CheckStatus::Pass,
                format!("v{} of `{model}` already serves as `{}`: nothing to deploy", d.to, options.alias),
            ));
        }
        Ok(d) => {
            let from = d.from.map_or("no version".into(), |v| format!("v{v}"));
            ctx.check(Check::new(
                DEPLOYMENT_CHECK,
                CheckStatus::Pass,
                format!("v{} of `{model}` serves as `{}` (before: {from})", d.to, options.alias),
            ));
        }
        Err(
            e @ (DeployError::RolledBack { .. }
            | DeployError::RollbackFailed { .. }
            | DeployError::Registry(RegistryError::Conflict { .. })),
        ) => {
            ctx.check(Check::new(DEPLOYMENT_CHECK, CheckStatus::Fail, e.to_string()));
        }
        Err(_) => {}
    }
    result
}

/// Deploys `version` of `model` through the stack's deployer (see the
/// module docs). Blocking; callable from a step, where it runs on a thread
/// of its own.
pub fn deploy(stack: &Stores, model: &str, version: i64, options: &DeployOptions) -> Result<Deployed, DeployError> {
    outside_runtime(|| deploy_here(stack, model, version, options))
}

fn deploy_here(stack: &Stores, model: &str, version: i64, options: &DeployOptions) -> Result<Deployed, DeployError> {
    let deployer =
        stack.extension::<Deployer>().ok_or_else(|| DeployError::NoDeployer { stack: stack.name().into() })?.clone();
    let registry = stack.registry()?;
    let alias = options.alias.as_str();
    let (from, moved) = stack.block_on(async {
        let holder = registry.resolve(model, alias).await?.map(|v| v.version);
        let expect = options.expect.unwrap_or_else(|| holder.into());
        let mut p = stack.promotion(model, alias, Some(version), expect);
        p.run_id = options.run_id.clone();
        p.reason = options.reason.clone();
        let moved = matches!(registry.promote(&p).await?, Promoted::Moved(_));
        Ok::<_, RegistryError>((holder, moved))
    })??;
    if !moved && serving(&agent(&deployer), &deployer, model).ok().flatten() == Some(version) {
        // Asking for a load would swap in the same version: leave it be.
        return Ok(Deployed { model: model.into(), from, to: version, promoted: false, unchanged: true });
    }
    match serve_version(&deployer, model, version) {
        Ok(()) => Ok(Deployed { model: model.into(), from, to: version, promoted: moved, unchanged: false }),
        Err(reason) if !moved => Err(DeployError::RollbackFailed {
            model: model.into(),
            alias: alias.into(),
            version,
            reason,
            rollback: "the alias held this version before the deployment; nothing to move back to".into(),
        }),
        Err(reason) => {
            let back = stack.block_on(async {
                let mut p = stack.promotion(model, alias, from, Expect::Version(version));
                p.kind = EventKind::Rollback;
                p.reason = Some(format!("deploying v{version} failed: {reason}"));
                p.run_id = options.run_id.clone();
                // Putting back what held the alias needs no quality gate.
                p.force = true;
                registry.promote(&p).await
            })?;
            match back {
                Ok(_) => Err(DeployError::RolledBack {
                    model: model.into(),
                    alias: alias.into(),
                    version,
                    back_on: from,
                    reason,
                }),
                Err(e) => Err(DeployError::RollbackFailed {
                    model: model.into(),
                    alias: alias.into(),
                    version,
                    reason,
                    rollback: e.to_string(),
                }),
            }
        }
    }
}

/// The deployer's HTTP client: statuses as values, bounded by its wait.
fn agent(deployer: &Deployer) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(deployer.wait))
        .http_status_as_error(false)
        .user_agent("zenflow-deployer")
        .build()
        .into()
}

/// The version the server serves now, if any; `Err` when it does not answer.
fn serving(agent: &ureq::Agent, deployer: &Deployer, model: &str) -> Result<Option<i64>, String> {
    let metadata = format!("{}/v2/models/{model}", deployer.url);
    let mut response = agent.get(&metadata).call().map_err(|e| e.to_string())?;
    if response.status().as_u16() != 200 {
        return Ok(None);
    }
    let m = response.body_mut().read_json::<super::serve::ModelMetadata>().map_err(|e| e.to_string())?;
    Ok(m.versions.first().and_then(|v| v.parse().ok()))
}

/// Asks the server to load `version` and waits until it serves it.
fn serve_version(deployer: &Deployer, model: &str, version: i64) -> Result<(), String> {
    let deadline = Instant::now() + deployer.wait;
    let agent = agent(deployer);
    let base = &deployer.url;
    let load = format!("{base}/v2/repository/models/{model}/load");
    let auth = format!("Bearer {}", deployer.token);
    let body = serde_json::json!({ "parameters": { "version": version } });
    loop {
        let mut response = agent
            .post(&load)
            .header("Authorization", &auth)
            .send_json(&body)
            .map_err(|e| format!("the model server at {base} did not answer: {e}"))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        match status {
            200 => break,
            // Another load runs: ours comes after it.
            409 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            _ => {
                let reason = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                    .unwrap_or_else(|| text.chars().take(300).collect());
                return Err(format!("the model server refused the load (HTTP {status}): {reason}"));
            }
        }
    }
    // The load answered once the swap was done; a server behind a load
    // balancer may take longer to show it on every replica.
    loop {
        let serving = serving(&agent, deployer, model).ok().flatten();
        if serving == Some(version) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the model server did not serve v{version} within {:?} (it serves {})",
                deployer.wait,
                serving.map_or("nothing".into(), |v| format!("v{v}"))
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
