//! `models ...`: the model registry from the command line. Each command
//! parses, calls the registry, and prints (a table, or JSON with `--json`).

use super::{exit, read_stack, resolve_stack, CliError, CliResult, StackArg};
use clap::{Args, Subcommand};
use zenflow_core::registry::{
    self, find_version, AliasEvent, Expect, ModelVersion, Promoted, Protection, RegistryError, VersionRef,
};

#[derive(Subcommand, Debug)]
pub(super) enum ModelsCommand {
    /// Every registered model, with its versions and aliases.
    List {
        #[command(flatten)]
        stack: StackArg,
        #[command(flatten)]
        out: Json,
    },
    /// A model, or one version: NAME, NAME@VERSION or NAME@ALIAS.
    Show {
        /// `breast-cancer`, `breast-cancer@7`, `breast-cancer@production`.
        reference: String,
        #[command(flatten)]
        stack: StackArg,
        #[command(flatten)]
        out: Json,
    },
    /// A model's versions, newest first, with the aliases each holds.
    Versions {
        /// Model name.
        model: String,
        #[command(flatten)]
        stack: StackArg,
        #[command(flatten)]
        out: Json,
    },
    /// Move an alias to a version, if the expected version still holds it
    /// (compare-and-swap). Exit 4 when another promotion got there first.
    Promote(PromoteArgs),
    /// Promote a version and have the stack's model server serve it
    /// (`[stacks.NAME.deployer]`); on a failed load or warm-up, the alias
    /// moves back and the command exits 4.
    #[cfg(feature = "serve")]
    Deploy(super::serve::DeployArgs),
    /// The alias changes of a model, newest first.
    History {
        /// Model name.
        model: String,
        /// Only changes of this alias.
        #[arg(long)]
        alias: Option<String>,
        /// How many events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        stack: StackArg,
        #[command(flatten)]
        out: Json,
    },
    /// Move an alias back to the version that held it before (compare-and-swap).
    /// A protected alias moves back only to a version whose own run passed.
    Rollback {
        /// Model name.
        model: String,
        /// The alias to move back.
        #[arg(long)]
        alias: String,
        /// Why, for the history (required with --force).
        #[arg(long)]
        reason: Option<String>,
        /// Move a protected alias back to a version without evidence.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        stack: StackArg,
    },
    /// Protect an alias in the registry: from now on it moves, through any
    /// stack, only to a version whose own run passed its quality gate (or
    /// with --force and a --reason). The history records who and when.
    Protect(ProtectArgs),
    /// Lift an alias's protection (a --reason is required; the history records it).
    Unprotect(ProtectArgs),
    /// Two versions side by side: metrics, lineage, data hashes.
    Compare {
        /// Model name.
        model: String,
        /// A version number or an alias.
        a: String,
        /// A version number or an alias.
        b: String,
        #[command(flatten)]
        stack: StackArg,
        #[command(flatten)]
        out: Json,
    },
}

#[derive(Args, Debug)]
pub(super) struct ProtectArgs {
    /// Model name (it need not have a version yet).
    model: String,
    /// The alias (`production`).
    #[arg(long)]
    alias: String,
    /// Why, for the history.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    stack: StackArg,
}

#[derive(Args, Debug)]
pub(super) struct Json {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(super) struct PromoteArgs {
    /// Model name.
    model: String,
    /// The version to promote (`7` or `v7`).
    version: String,
    /// The alias to move (`production`, `staging`, `champion`).
    #[arg(long)]
    to: String,
    /// The version that must hold the alias now (`5`), or `none` if nobody
    /// may hold it yet. Required unless --force.
    #[arg(long, value_name = "VERSION|none")]
    expect: Option<String>,
    /// Why, for the history (required with --force).
    #[arg(long)]
    reason: Option<String>,
    /// Move a protected alias without a run whose quality gate passed; with
    /// no --expect, replace whoever holds it.
    #[arg(long)]
    force: bool,
    /// The run on whose behalf (its quality gate unlocks protected aliases).
    #[arg(long, value_name = "RUN")]
    run: Option<String>,
    #[command(flatten)]
    stack: StackArg,
    #[command(flatten)]
    out: Json,
}

impl From<RegistryError> for CliError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Store(m) => m.into(),
            RegistryError::Conflict { .. } => CliError { code: exit::CONFLICT, message: e.to_string() },
            other => CliError::usage(other),
        }
    }
}

pub(super) fn run(cmd: ModelsCommand) -> CliResult {
    match cmd {
        ModelsCommand::List { stack, out } => list(&stack.stack, out.json),
        ModelsCommand::Show { reference, stack, out } => show(&reference, &stack.stack, out.json),
        ModelsCommand::Versions { model, stack, out } => versions(&model, &stack.stack, out.json),
        ModelsCommand::Promote(args) => promote(args),
        #[cfg(feature = "serve")]
        ModelsCommand::Deploy(args) => super::serve::deploy(args),
        ModelsCommand::History { model, alias, limit, stack, out } => {
            history(&model, alias.as_deref(), limit, &stack.stack, out.json)
        }
        ModelsCommand::Rollback { model, alias, reason, force, stack } => {
            rollback(&model, &alias, reason, force, &stack.stack)
        }
        ModelsCommand::Protect(args) => set_protection(args, true),
        ModelsCommand::Unprotect(args) => set_protection(args, false),
        ModelsCommand::Compare { model, a, b, stack, out } => compare(&model, &a, &b, &stack.stack, out.json),
    }
}

/// `models list`: every model, with its version count, latest and aliases.
fn list(stack: &str, json: bool) -> CliResult {
    let stack = read_stack(stack)?;
    let reg = stack.registry()?;
    let rows = stack.block_on(async {
        let mut rows = Vec::new();
        for m in reg.models().await? {
            let versions = reg.versions(&m.name).await?;
            rows.push((m, versions));
        }
        Ok::<_, RegistryError>(rows)
    })?;
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(m, v)| {
                serde_json::json!({
                    "name": m.name, "description": m.description, "tags": m.tags,
                    "versions": v.len(), "latest": v.first().map(|v| v.version),
                    "aliases": aliases_of(v),
                })
            })
            .collect();
        outln!("{}", pretty(&list));
    } else {
        outln!("{:<28} {:>8} {:>7}  ALIASES", "MODEL", "VERSIONS", "LATEST");
        for (m, v) in &rows {
            let latest = v.first().map_or("—".into(), |v| format!("v{}", v.version));
            outln!("{:<28} {:>8} {:>7}  {}", m.name, v.len(), latest, aliases_text(v));
        }
    }
    Ok(exit::SUCCESS)
}

/// `models show NAME[@VERSION|@ALIAS]`: a model, or one of its versions.
fn show(reference: &str, stack: &str, json: bool) -> CliResult {
    let stack = read_stack(stack)?;
    let reg = stack.registry()?;
    let (model, which) = VersionRef::parse(reference)?;
    if which == VersionRef::Latest && !reference.contains('@') {
        let (m, versions) = stack.block_on(async {
            let m = reg.model(&model).await?.ok_or(RegistryError::UnknownModel {
                model: model.clone(),
                known: registry::model_names(reg).await?,
            })?;
            Ok::<_, RegistryError>((m, reg.versions(&model).await?))
        })?;
        if json {
            outln!("{}", pretty(&serde_json::json!({"model": m, "versions": versions})));
        } else {
            outln!("model:       {}", m.name);
            outln!("description: {}", if m.description.is_empty() { "—" } else { &m.description });
            for (k, v) in &m.tags {
                outln!("tag:         {k}={v}");
            }
            outln!("created:     {}", zenflow_core::time::human(m.created_at));
            outln!("versions:    {}", versions.len());
            outln!("aliases:     {}", aliases_text(&versions));
        }
        return Ok(exit::SUCCESS);
    }
    let v = stack.block_on(find_version(reg, &model, &which))?;
    if json {
        outln!("{}", pretty(&v));
    } else {
        let run = v.run_id.as_deref().map(|id| match stack.get_run(id).ok().flatten() {
            Some(run) => format!("{} ({id})", run.name),
            None => id.to_string(),
        });
        out!("{}", version_text(&v, run.as_deref()));
    }
    Ok(exit::SUCCESS)
}

/// `models versions NAME`: every version, newest first.
fn versions(model: &str, stack: &str, json: bool) -> CliResult {
    let stack = read_stack(stack)?;
    let versions = stack.block_on(stack.registry()?.versions(model))?;
    if json {
        outln!("{}", pretty(&versions));
    } else {
        outln!("{:>7}  {:<20} {:<14} {:<24} METRICS", "VERSION", "REGISTERED (UTC)", "HASH", "ALIASES");
        for v in &versions {
            outln!(
                "{:>7}  {:<20} {:<14} {:<24} {}",
                format!("v{}", v.version),
                zenflow_core::time::human(v.created_at),
                v.content_hash.short(),
                if v.aliases.is_empty() { "—".into() } else { v.aliases.join(", ") },
                metrics_text(v)
            );
        }
    }
    Ok(exit::SUCCESS)
}

/// `models history NAME`: what happened to its aliases, newest first.
fn history(model: &str, alias: Option<&str>, limit: usize, stack: &str, json: bool) -> CliResult {
    let stack = read_stack(stack)?;
    let events = stack.block_on(stack.registry()?.history(model, alias, limit))?;
    if json {
        outln!("{}", pretty(&events));
    } else {
        out!("{}", history_text(&events));
    }
    Ok(exit::SUCCESS)
}

/// `models rollback NAME --alias A`: the alias back where it was before.
fn rollback(model: &str, alias: &str, reason: Option<String>, force: bool, stack: &str) -> CliResult {
    let stack = resolve_stack(stack)?;
    let mut template = stack.promotion(model, alias, None, Expect::Nobody);
    template.reason = reason;
    template.force = force;
    let outcome = stack.block_on(registry::rollback(stack.registry()?, model, alias, template))?;
    match outcome {
        Promoted::Moved(e) => outln!("{}", moved_text(&e)),
        Promoted::AlreadyHeld => outln!("alias `{alias}` of `{model}` was already there; nothing changed"),
    }
    Ok(exit::SUCCESS)
}

/// `models compare NAME A B`: two versions side by side.
fn compare(model: &str, a: &str, b: &str, stack: &str, json: bool) -> CliResult {
    let stack = read_stack(stack)?;
    let reg = stack.registry()?;
    let which = |s: &str| VersionRef::parse(&format!("{model}@{s}")).map(|(_, w)| w);
    let (wa, wb) = (which(a)?, which(b)?);
    let (va, vb) = stack.block_on(async {
        Ok::<_, RegistryError>((find_version(reg, model, &wa).await?, find_version(reg, model, &wb).await?))
    })?;
    if json {
        outln!("{}", pretty(&serde_json::json!({"a": va, "b": vb})));
    } else {
        out!("{}", compare_text(&va, &vb));
    }
    Ok(exit::SUCCESS)
}

fn promote(args: PromoteArgs) -> CliResult {
    let stack = resolve_stack(&args.stack.stack)?;
    let reg = stack.registry()?;
    let to = parse_version(&args.version)?;
    let expect = match (args.expect.as_deref(), args.force) {
        (Some("none"), _) => Some(Expect::Nobody),
        (Some(v), _) => Some(Expect::Version(parse_version(v)?)),
        (None, true) => None,
        (None, false) => {
            return Err(CliError::usage(format!(
                "give the holder you expect to replace: --expect VERSION, or --expect none if nobody holds \
                 `{}` yet (`models show {}@{}` says who does); or --force with a --reason",
                args.to, args.model, args.to
            )))
        }
    };
    // Cited as any run reference; recorded by id.
    let run_id = match &args.run {
        Some(reference) => Some(stack.find_run(None, reference).map_err(|e| {
            let e = CliError::from(e);
            CliError { message: format!("--run {reference}: {}", e.message), ..e }
        })?),
        None => None,
    }
    .map(|run| run.id);
    let outcome = stack.block_on(async {
        let expect = match expect {
            Some(e) => e,
            // Forced with no expectation: whoever holds it now.
            None => reg.resolve(&args.model, &args.to).await?.map(|v| v.version).into(),
        };
        let mut p = stack.promotion(&args.model, &args.to, Some(to), expect);
        p.reason = args.reason.clone();
        p.force = args.force;
        p.run_id = run_id;
        reg.promote(&p).await
    })?;
    if args.out.json {
        let json = match &outcome {
            Promoted::Moved(e) => serde_json::json!({"moved": true, "event": e}),
            Promoted::AlreadyHeld => serde_json::json!({"moved": false}),
        };
        outln!("{}", pretty(&json));
    } else {
        match &outcome {
            Promoted::Moved(e) => outln!("{}", moved_text(e)),
            Promoted::AlreadyHeld => {
                outln!("v{to} of `{}` already holds `{}`; nothing changed", args.model, args.to)
            }
        }
    }
    Ok(exit::SUCCESS)
}

pub(super) fn parse_version(text: &str) -> Result<i64, CliError> {
    text.trim_start_matches('v')
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| CliError::usage(format!("`{text}` is not a version number (write `7` or `v7`)")))
}

fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn aliases_of(versions: &[ModelVersion]) -> serde_json::Map<String, serde_json::Value> {
    versions.iter().flat_map(|v| v.aliases.iter().map(move |a| (a.clone(), serde_json::json!(v.version)))).collect()
}

fn aliases_text(versions: &[ModelVersion]) -> String {
    let held: Vec<String> =
        versions.iter().flat_map(|v| v.aliases.iter().map(move |a| format!("{a}=v{}", v.version))).collect();
    if held.is_empty() {
        "—".into()
    } else {
        held.join(", ")
    }
}

fn metrics_text(v: &ModelVersion) -> String {
    v.metrics.iter().map(|(k, m)| format!("{k}={m:.4}")).collect::<Vec<_>>().join(" ")
}

/// A version as `models show` prints it; `run` is how to name its run.
fn version_text(v: &ModelVersion, run: Option<&str>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "model:        {} v{}", v.model, v.version);
    let _ = writeln!(out, "aliases:      {}", if v.aliases.is_empty() { "—".into() } else { v.aliases.join(", ") });
    let _ = writeln!(out, "registered:   {}", zenflow_core::time::human(v.created_at));
    let _ = writeln!(out, "artifact:     {} ({})", v.artifact_version, v.content_hash);
    let _ = writeln!(out, "run:          {}", run.unwrap_or("—"));
    let _ = writeln!(out, "step run:     {}", v.step_run.as_deref().unwrap_or("—"));
    let _ = writeln!(out, "git commit:   {}", v.git_commit.as_deref().unwrap_or("—"));
    for (k, m) in &v.metrics {
        let _ = writeln!(out, "metric:       {k} = {m}");
    }
    for (k, t) in &v.tags {
        let _ = writeln!(out, "tag:          {k} = {t}");
    }
    for d in &v.data_hashes {
        let _ = writeln!(out, "trained on:   {} {}", d.input, d.content_hash);
    }
    let _ = writeln!(out, "samples:      {} request(s) replayed before it serves", v.samples.len());
    out
}

fn set_protection(args: ProtectArgs, protect: bool) -> CliResult {
    let ProtectArgs { model, alias, reason, stack } = args;
    let stack = resolve_stack(&stack.stack)?;
    let change = Protection { reason, ..Protection::new(&model, &alias, protect, stack.ci()) };
    let event = stack.block_on(stack.registry()?.set_protection(&change))?;
    let state = if protect { "protected" } else { "not protected" };
    match event {
        Some(e) => outln!("alias `{alias}` of `{model}` is now {state} (event {}, by {})", e.seq, e.actor),
        None => outln!("alias `{alias}` of `{model}` was already {state}; nothing changed"),
    }
    Ok(exit::SUCCESS)
}

fn moved_text(e: &AliasEvent) -> String {
    let show = |v: Option<i64>| v.map_or("nobody".into(), |v| format!("v{v}"));
    format!(
        "{} `{}` of `{}`: {} -> {} (event {}, by {}{})",
        e.kind.as_str(),
        e.alias,
        e.model,
        show(e.from),
        show(e.to),
        e.seq,
        e.actor,
        e.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
    )
}

fn history_text(events: &[AliasEvent]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4}  {:<20} {:<12} {:<9} {:>6} -> {:<6} {:<14} REASON",
        "SEQ", "AT (UTC)", "ALIAS", "KIND", "FROM", "TO", "BY"
    );
    let show = |v: Option<i64>| v.map_or("—".into(), |v| format!("v{v}"));
    for e in events {
        let _ = writeln!(
            out,
            "{:>4}  {:<20} {:<12} {:<9} {:>6} -> {:<6} {:<14} {}{}{}",
            e.seq,
            zenflow_core::time::human(e.at),
            e.alias,
            e.kind.as_str(),
            show(e.from),
            show(e.to),
            e.actor,
            if e.forced { "[forced] " } else { "" },
            e.reason.as_deref().unwrap_or(""),
            e.ci_job_url.as_ref().map(|u| format!(" ({u})")).unwrap_or_default()
        );
    }
    out
}

fn compare_text(a: &ModelVersion, b: &ModelVersion) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let (na, nb) = (format!("v{}", a.version), format!("v{}", b.version));
    let _ = writeln!(out, "{:<24} {:>16} {:>16} {:>12}", a.model, na, nb, "Δ (b − a)");
    let mut metrics: Vec<&String> = a.metrics.keys().chain(b.metrics.keys()).collect();
    metrics.sort();
    metrics.dedup();
    let num = |m: Option<&f64>| m.map_or("—".into(), |x| format!("{x:.4}"));
    for m in metrics {
        let (x, y) = (a.metrics.get(m), b.metrics.get(m));
        let delta = x.zip(y).map_or("—".into(), |(x, y)| format!("{:+.4}", y - x));
        let _ = writeln!(out, "{:<24} {:>16} {:>16} {:>12}", m, num(x), num(y), delta);
    }
    let same = |p: bool| if p { "same" } else { "differs" };
    let _ = writeln!(
        out,
        "{:<24} {:>16} {:>16} {:>12}",
        "content hash",
        a.content_hash.short(),
        b.content_hash.short(),
        same(a.content_hash == b.content_hash)
    );
    let short = |s: &Option<String>| s.as_deref().map_or("—".to_string(), |s| s.chars().take(12).collect());
    let _ = writeln!(
        out,
        "{:<24} {:>16} {:>16} {:>12}",
        "run",
        short(&a.run_id),
        short(&b.run_id),
        same(a.run_id == b.run_id)
    );
    let _ = writeln!(
        out,
        "{:<24} {:>16} {:>16} {:>12}",
        "git commit",
        short(&a.git_commit),
        short(&b.git_commit),
        same(a.git_commit == b.git_commit)
    );
    let data = |v: &ModelVersion| {
        v.data_hashes.iter().map(|d| format!("{}:{}", d.input, d.content_hash.short())).collect::<Vec<_>>().join(",")
    };
    let _ = writeln!(
        out,
        "{:<24} {:>16} {:>16} {:>12}",
        "training data",
        data(a),
        data(b),
        same(a.data_hashes == b.data_hashes)
    );
    let mut steps: Vec<&String> = a.code_hashes.keys().chain(b.code_hashes.keys()).collect();
    steps.sort();
    steps.dedup();
    for s in steps {
        let (x, y) = (a.code_hashes.get(s), b.code_hashes.get(s));
        if x != y {
            let h = |h: Option<&String>| h.map_or("—".to_string(), |h| h.chars().take(12).collect());
            let _ = writeln!(out, "{:<24} {:>16} {:>16} {:>12}", format!("code of {s}"), h(x), h(y), "differs");
        }
    }
    out
}
