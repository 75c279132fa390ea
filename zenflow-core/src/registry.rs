//! The model registry: models, immutable numbered versions, aliases moved
//! by compare-and-swap, and the log of every alias change.
//!
//! A *model* is a name (with a description and tags). A *model version* is
//! immutable: numbered per model, pointing at the artifact version that
//! holds the model, and recording where it came from (run, step run, git
//! commit, code hashes, the content hashes of the data it was trained on),
//! its metrics, tags, and sample requests with their expected answers.
//! Registering bytes identical to an existing version of the model returns
//! that version.
//!
//! An *alias* names the version that plays a role (`staging` and
//! `production`, or any other valid name such as `champion`). At most one
//! version holds an alias; the database enforces it. An alias moves only by
//! [`ModelRegistry::promote`], a compare-and-swap ("to v7 if v5 still holds
//! it", or "if nobody holds it yet"): of two CI jobs promoting at once,
//! exactly one wins and the other gets [`RegistryError::Conflict`], naming
//! the holder. Repeating a finished promotion is a no-op success. Every
//! change is appended to an event log ([`ModelRegistry::history`]), which
//! answers "who held `production` at time t" and makes [`rollback`] a
//! compare-and-swap back to the previous holder.
//!
//! Every store that implements [`ModelRegistry`] runs the suite in
//! [`crate::conformance::registry`].

use crate::hash::ContentHash;
use crate::metadata::error::MetadataError;
use crate::time::Timestamp;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The alias of the version under review before production.
pub const STAGING: &str = "staging";
/// The alias of the version that serves.
pub const PRODUCTION: &str = "production";

/// The longest alias or model name.
pub const MAX_NAME_LEN: usize = 64;

/// A model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Name.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Free key/value tags.
    pub tags: BTreeMap<String, String>,
    /// When it was first registered.
    pub created_at: Timestamp,
}

/// The content hash of an artifact the producing step consumed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataHash {
    /// The input it came in through.
    pub input: String,
    /// Its content hash.
    pub content_hash: ContentHash,
}

/// A request to replay before a version serves, with the answer it must give.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The request (an Open Inference Protocol request body, for the model server).
    pub request: serde_json::Value,
    /// The outputs it must answer with.
    pub expected: serde_json::Value,
}

/// What a model version records, to be registered.
#[derive(Clone, Debug, PartialEq)]
pub struct NewModelVersion {
    /// The model (created on first registration).
    pub model: String,
    /// The artifact version holding the model.
    pub artifact_version: String,
    /// Its content hash: registering the same bytes again returns the same version.
    pub content_hash: ContentHash,
    /// The run that produced it.
    pub run_id: Option<String>,
    /// The step run that produced it.
    pub step_run: Option<String>,
    /// The git commit of the code that produced it.
    pub git_commit: Option<String>,
    /// The plan's code hashes, by invocation.
    pub code_hashes: BTreeMap<String, String>,
    /// The artifacts the producing step consumed (what it was trained on).
    pub data_hashes: Vec<DataHash>,
    /// Metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Requests to replay before serving, with their expected answers.
    pub samples: Vec<Sample>,
}

/// A registered, immutable model version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// The model's name.
    pub model: String,
    /// 1 for the first version of the model, then 2, ...
    pub version: i64,
    /// The artifact version holding the model.
    pub artifact_version: String,
    /// Its content hash.
    pub content_hash: ContentHash,
    /// The run that produced it.
    pub run_id: Option<String>,
    /// The step run that produced it.
    pub step_run: Option<String>,
    /// The git commit of the code that produced it.
    pub git_commit: Option<String>,
    /// The plan's code hashes, by invocation.
    pub code_hashes: BTreeMap<String, String>,
    /// The artifacts the producing step consumed.
    pub data_hashes: Vec<DataHash>,
    /// Metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Requests to replay before serving.
    pub samples: Vec<Sample>,
    /// When it was registered.
    pub created_at: Timestamp,
    /// The aliases it holds now.
    pub aliases: Vec<String>,
}

/// The version among `versions` that holds the artifact `artifact_id` with
/// content `content_hash`: that very artifact version, or the same bytes
/// stored again (registering bytes registered before returns the earlier
/// version, whose artifact is the earlier one).
pub fn version_holding<'a>(
    versions: &'a [ModelVersion],
    artifact_id: &str,
    content_hash: &ContentHash,
) -> Option<&'a ModelVersion> {
    versions.iter().find(|v| v.artifact_version == artifact_id || v.content_hash == *content_hash)
}

/// Who a promotion expects to hold the alias now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Nobody holds it yet.
    Nobody,
    /// This version holds it.
    Version(i64),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Nobody => f.write_str("nobody"),
            Expect::Version(v) => write!(f, "v{v}"),
        }
    }
}

impl From<Option<i64>> for Expect {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Expect::Nobody, Expect::Version)
    }
}

/// What changed about an alias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A promotion.
    Promote,
    /// A move back to the previous holder ([`rollback`]).
    Rollback,
    /// The alias became protected ([`ModelRegistry::set_protection`]); it
    /// did not move.
    Protect,
    /// The alias stopped being protected; it did not move.
    Unprotect,
}

impl EventKind {
    /// The name stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Promote => "promote",
            EventKind::Rollback => "rollback",
            EventKind::Protect => "protect",
            EventKind::Unprotect => "unprotect",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Result<Self, MetadataError> {
        match s {
            "promote" => Ok(EventKind::Promote),
            "rollback" => Ok(EventKind::Rollback),
            "protect" => Ok(EventKind::Protect),
            "unprotect" => Ok(EventKind::Unprotect),
            other => Err(MetadataError::Corrupt(format!("unknown alias event kind `{other}`"))),
        }
    }

    /// Whether the event moved the alias (a promotion or a rollback).
    pub fn moves(&self) -> bool {
        matches!(self, EventKind::Promote | EventKind::Rollback)
    }
}

/// Protecting an alias of a model, or lifting its protection: a rule the
/// registry keeps and enforces for every client, recorded in the model's
/// alias history.
#[derive(Clone, Debug, PartialEq)]
pub struct Protection {
    /// The model (it need not have a version yet).
    pub model: String,
    /// The alias.
    pub alias: String,
    /// Protect (`true`) or lift the protection (`false`).
    pub protect: bool,
    /// Who asks.
    pub actor: String,
    /// Why (required to lift a protection).
    pub reason: Option<String>,
    /// The CI job, when run in CI.
    pub ci_job_url: Option<String>,
}

impl Protection {
    /// Protects (or, with `protect` false, unprotects) `alias` of `model`
    /// on behalf of `ci`.
    pub fn new(model: impl Into<String>, alias: impl Into<String>, protect: bool, ci: &CiContext) -> Self {
        let ci = ci.clone();
        Protection {
            model: model.into(),
            alias: alias.into(),
            protect,
            actor: ci.actor,
            reason: None,
            ci_job_url: ci.job_url,
        }
    }
}

/// A compare-and-swap of an alias.
#[derive(Clone, Debug, PartialEq)]
pub struct Promotion {
    /// The model's name.
    pub model: String,
    /// The alias.
    pub alias: String,
    /// The version to move it to; `None` takes it off every version.
    pub to: Option<i64>,
    /// Who must hold it now.
    pub expect: Expect,
    /// Who asks (a CI user, `$USER`).
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// The run on whose behalf (its quality gate protects protected aliases).
    pub run_id: Option<String>,
    /// The CI job, when run in CI.
    pub ci_job_url: Option<String>,
    /// Moves a protected alias without evidence (needs a reason).
    pub force: bool,
    /// Whether the client declares the alias protected (the stack's
    /// `protected_aliases`). The registry also protects the aliases it was
    /// told to ([`ModelRegistry::set_protection`]), whatever the client says.
    pub protected: bool,
    /// What kind of change this is.
    pub kind: EventKind,
}

impl Promotion {
    /// Moves `alias` of `model` to version `to` if `expect` holds it now,
    /// on behalf of `ci`.
    pub fn new(
        model: impl Into<String>,
        alias: impl Into<String>,
        to: Option<i64>,
        expect: Expect,
        ci: &CiContext,
    ) -> Self {
        let ci = ci.clone();
        Promotion {
            model: model.into(),
            alias: alias.into(),
            to,
            expect,
            actor: ci.actor,
            reason: None,
            run_id: None,
            ci_job_url: ci.job_url,
            force: false,
            protected: false,
            kind: EventKind::Promote,
        }
    }
}

/// One change of an alias, as the event log holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AliasEvent {
    /// The model's name.
    pub model: String,
    /// Position in the model's log: 1, 2, ... with no gaps.
    pub seq: i64,
    /// The alias.
    pub alias: String,
    /// The previous holder.
    pub from: Option<i64>,
    /// The new holder (`None`: nobody).
    pub to: Option<i64>,
    /// Promotion or rollback.
    pub kind: EventKind,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// On behalf of which run.
    pub run_id: Option<String>,
    /// The CI job.
    pub ci_job_url: Option<String>,
    /// Whether it was forced past a protection.
    pub forced: bool,
    /// When.
    pub at: Timestamp,
}

/// The version holding an alias, and since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasHolder {
    /// The alias.
    pub alias: String,
    /// The version.
    pub version: i64,
    /// Since when (the event that moved it there).
    pub since: Timestamp,
}

/// What a promotion did.
#[derive(Clone, Debug, PartialEq)]
pub enum Promoted {
    /// The alias moved; the event appended.
    Moved(AliasEvent),
    /// The alias already had the wanted holder: nothing changed (a retry).
    AlreadyHeld,
}

/// Why the registry refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// An alias or model name breaks the naming rule.
    #[error("`{name}` is not a valid {what} name: {rule}")]
    InvalidName {
        /// Alias or model.
        what: &'static str,
        /// The name.
        name: String,
        /// The rule.
        rule: String,
    },
    /// No such model.
    #[error("no model named `{model}`; registered models: {}", list(known))]
    UnknownModel {
        /// The name asked for.
        model: String,
        /// The models there are.
        known: Vec<String>,
    },
    /// No such version of the model.
    #[error("model `{model}` has no version {version}; its versions: {}", list(known))]
    UnknownVersion {
        /// The model's name.
        model: String,
        /// The version asked for.
        version: i64,
        /// Its versions.
        known: Vec<i64>,
    },
    /// Nobody holds the alias.
    #[error("no version of model `{model}` holds alias `{alias}`; aliases held: {}", list(held))]
    UnknownAlias {
        /// The model's name.
        model: String,
        /// The alias asked for.
        alias: String,
        /// The aliases held, as `alias=vN`.
        held: Vec<String>,
    },
    /// The compare-and-swap lost: someone else holds the alias.
    #[error(
        "alias `{alias}` of model `{model}` is held by {} (expected {expected}); another promotion got there \
         first: re-read it (`models show {model}@{alias}`) and decide again",
        holder_text(holder)
    )]
    Conflict {
        /// The model's name.
        model: String,
        /// The alias.
        alias: String,
        /// What the promotion expected.
        expected: Expect,
        /// The actual holder and since when (`None`: nobody).
        holder: Option<(i64, Timestamp)>,
    },
    /// A protected alias moves only to a version with evidence: a run
    /// that produced its bytes and passed every check.
    #[error(
        "alias `{alias}` of model `{model}` is protected: it moves only to a version whose own run passed its \
         quality gate ({why}); to move it anyway, pass --force with a --reason, which the history records"
    )]
    Protected {
        /// The model's name.
        model: String,
        /// The alias.
        alias: String,
        /// What is missing.
        why: String,
    },
    /// A forced move without a reason.
    #[error("forcing alias `{alias}` of model `{model}` needs a reason (--reason TEXT), for the history")]
    ReasonRequired {
        /// The model's name.
        model: String,
        /// The alias.
        alias: String,
    },
    /// Lifting a protection without a reason.
    #[error("unprotecting alias `{alias}` of model `{model}` needs a reason (--reason TEXT), for the history")]
    UnprotectReasonRequired {
        /// The model's name.
        model: String,
        /// The alias.
        alias: String,
    },
    /// A rollback with no previous holder recorded.
    #[error("alias `{alias}` of model `{model}` has no earlier holder to roll back to")]
    NothingToRollBack {
        /// The model's name.
        model: String,
        /// The alias.
        alias: String,
    },
    /// The stack's metadata store keeps no registry.
    #[error("the metadata store {store} keeps no model registry; use a SQLite or PostgreSQL metadata store")]
    Unavailable {
        /// The store's URL.
        store: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] MetadataError),
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

fn holder_text(holder: &Option<(i64, Timestamp)>) -> String {
    match holder {
        None => "nobody".into(),
        Some((v, since)) => format!("v{v} since {}", crate::time::rfc3339(*since)),
    }
}

/// Checks an alias name: 1 to 64 characters of `[a-z0-9_-]`.
pub fn validate_alias(alias: &str) -> Result<(), RegistryError> {
    validate("alias", alias, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-', "[a-z0-9_-]")
}

/// Checks a model name: 1 to 64 characters of `[A-Za-z0-9_.-]`, starting
/// with a letter or digit.
pub fn validate_model_name(model: &str) -> Result<(), RegistryError> {
    validate("model", model, |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'), "[A-Za-z0-9_.-]")?;
    if !model.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(RegistryError::InvalidName {
            what: "model",
            name: model.into(),
            rule: "it must start with a letter or a digit".into(),
        });
    }
    Ok(())
}

fn validate(what: &'static str, name: &str, ok: impl Fn(char) -> bool, chars: &str) -> Result<(), RegistryError> {
    let bad = |rule: String| Err(RegistryError::InvalidName { what, name: name.into(), rule });
    if name.is_empty() {
        return bad(format!("it is empty; use 1 to {MAX_NAME_LEN} characters of {chars}"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return bad(format!("it is {} characters long; at most {MAX_NAME_LEN} are allowed", name.chars().count()));
    }
    if let Some(c) = name.chars().find(|c| !ok(*c)) {
        return bad(format!("it holds `{c}`; only {chars} are allowed"));
    }
    Ok(())
}

/// Who and where: the actor and CI job a promotion records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiContext {
    /// `$GITHUB_ACTOR`, `$GITLAB_USER_LOGIN`, `$USER`, or `unknown`.
    pub actor: String,
    /// The CI job's URL: GitHub's `$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID`, or GitLab's `$CI_JOB_URL`.
    pub job_url: Option<String>,
    /// The branch CI built: a pull request's source branch
    /// (`$GITHUB_HEAD_REF`, `$CI_MERGE_REQUEST_SOURCE_BRANCH_NAME`), else the
    /// branch pushed (`$GITHUB_REF_NAME`, `$CI_COMMIT_BRANCH`). CI checks a
    /// commit out detached, so the checkout cannot tell.
    pub branch: Option<String>,
}

impl CiContext {
    /// Nobody known: actor `unknown`, no job.
    pub fn unknown() -> Self {
        CiContext { actor: "unknown".into(), job_url: None, branch: None }
    }

    /// Reads the context from environment variables (through `get`).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        let actor = var("GITHUB_ACTOR")
            .or_else(|| var("GITLAB_USER_LOGIN"))
            .or_else(|| var("USER"))
            .unwrap_or_else(|| "unknown".into());
        let github = match (var("GITHUB_SERVER_URL"), var("GITHUB_REPOSITORY"), var("GITHUB_RUN_ID")) {
            (Some(server), Some(repo), Some(run)) => {
                Some(format!("{}/{repo}/actions/runs/{run}", server.trim_end_matches('/')))
            }
            _ => None,
        };
        let branch = var("GITHUB_HEAD_REF")
            .or_else(|| var("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME"))
            .or_else(|| var("GITHUB_ACTIONS").and_then(|_| var("GITHUB_REF_NAME")))
            .or_else(|| var("CI_COMMIT_BRANCH"));
        CiContext { actor, job_url: github.or_else(|| var("CI_JOB_URL")), branch }
    }
}

/// Which version of a model: `NAME@7` (or `@v7`), `NAME@production`, or
/// `NAME` alone (the newest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionRef {
    /// The newest version.
    Latest,
    /// A version number.
    Number(i64),
    /// The version holding an alias.
    Alias(String),
}

impl VersionRef {
    /// Splits `NAME[@VERSION|@ALIAS]`.
    pub fn parse(text: &str) -> Result<(String, VersionRef), RegistryError> {
        let (model, which) = match text.split_once('@') {
            None => (text, VersionRef::Latest),
            Some((model, which)) => {
                let digits = which.strip_prefix('v').filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
                let which = match (which.parse::<i64>(), digits.and_then(|d| d.parse::<i64>().ok())) {
                    (Ok(n), _) | (_, Some(n)) => VersionRef::Number(n),
                    _ => {
                        validate_alias(which)?;
                        VersionRef::Alias(which.to_string())
                    }
                };
                (model, which)
            }
        };
        validate_model_name(model)?;
        Ok((model.to_string(), which))
    }
}

/// The version `which` names, or the error that lists what there is.
pub async fn find_version(
    registry: &dyn ModelRegistry,
    model: &str,
    which: &VersionRef,
) -> Result<ModelVersion, RegistryError> {
    let versions = registry.versions(model).await?;
    let found = match which {
        VersionRef::Latest => versions.first().cloned(),
        VersionRef::Number(n) => versions.iter().find(|v| v.version == *n).cloned(),
        VersionRef::Alias(a) => versions.iter().find(|v| v.aliases.contains(a)).cloned(),
    };
    found.ok_or_else(|| match which {
        VersionRef::Alias(alias) => RegistryError::UnknownAlias {
            model: model.into(),
            alias: alias.clone(),
            held: versions.iter().flat_map(|v| v.aliases.iter().map(move |a| format!("{a}=v{}", v.version))).collect(),
        },
        VersionRef::Number(n) => RegistryError::UnknownVersion {
            model: model.into(),
            version: *n,
            known: versions.iter().rev().map(|v| v.version).collect(),
        },
        VersionRef::Latest => RegistryError::UnknownVersion { model: model.into(), version: 1, known: Vec::new() },
    })
}

/// Storage of models, versions, aliases and their history.
#[async_trait]
pub trait ModelRegistry: Send + Sync + fmt::Debug {
    /// Registers a version (creating the model if needed), or returns the
    /// existing version whose bytes are identical. Its artifact version
    /// must exist.
    async fn register(&self, version: &NewModelVersion) -> Result<ModelVersion, RegistryError>;

    /// Sets a model's description and tags (creating it without versions).
    async fn describe_model(
        &self,
        model: &str,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Model, RegistryError>;

    /// Every model, by name.
    async fn models(&self) -> Result<Vec<Model>, RegistryError>;

    /// A model by name.
    async fn model(&self, model: &str) -> Result<Option<Model>, RegistryError>;

    /// A model's versions, newest first, each with the aliases it holds.
    async fn versions(&self, model: &str) -> Result<Vec<ModelVersion>, RegistryError>;

    /// One version (with its aliases).
    async fn version(&self, model: &str, version: i64) -> Result<Option<ModelVersion>, RegistryError>;

    /// The aliases of a model and who holds them.
    async fn aliases(&self, model: &str) -> Result<Vec<AliasHolder>, RegistryError>;

    /// The version holding `alias` now, if any.
    async fn resolve(&self, model: &str, alias: &str) -> Result<Option<ModelVersion>, RegistryError>;

    /// Moves an alias by compare-and-swap, atomically appending the event.
    /// Errors: [`RegistryError::Conflict`] when `expect` does not hold it,
    /// [`RegistryError::UnknownModel`] / [`RegistryError::UnknownVersion`],
    /// [`RegistryError::InvalidName`], [`RegistryError::Protected`] and
    /// [`RegistryError::ReasonRequired`]; nothing changes then.
    async fn promote(&self, promotion: &Promotion) -> Result<Promoted, RegistryError>;

    /// Alias changes of a model, newest first (of one alias if given).
    async fn history(&self, model: &str, alias: Option<&str>, limit: usize) -> Result<Vec<AliasEvent>, RegistryError>;

    /// The version that held `alias` at time `at` (`None`: nobody).
    async fn holder_at(&self, model: &str, alias: &str, at: Timestamp) -> Result<Option<i64>, RegistryError>;

    /// Protects an alias, or lifts its protection, appending the event to
    /// the model's history in the same transaction (the model is created
    /// when it has no version yet). `None` when it already was so. Errors:
    /// [`RegistryError::InvalidName`], and
    /// [`RegistryError::UnprotectReasonRequired`] without a reason to lift.
    async fn set_protection(&self, change: &Protection) -> Result<Option<AliasEvent>, RegistryError>;

    /// The protected aliases as `(model, alias)`, of one model or of all.
    async fn protections(&self, model: Option<&str>) -> Result<Vec<(String, String)>, RegistryError>;
}

/// Moves `alias` back to the version that held it before the current one
/// (or to nobody, if nobody did): a compare-and-swap against the current
/// holder, recorded as a [`EventKind::Rollback`]. `template` gives the actor,
/// reason, run and CI job (its model, alias, versions and kind are set here).
pub async fn rollback(
    registry: &dyn ModelRegistry,
    model: &str,
    alias: &str,
    template: Promotion,
) -> Result<Promoted, RegistryError> {
    validate_alias(alias)?;
    // Protection changes are in the history too; they move nothing.
    let last = registry.history(model, Some(alias), usize::MAX).await?.into_iter().find(|e| e.kind.moves());
    let Some(last) = last else {
        if registry.model(model).await?.is_none() {
            return Err(RegistryError::UnknownModel { model: model.into(), known: model_names(registry).await? });
        }
        return Err(RegistryError::NothingToRollBack { model: model.into(), alias: alias.into() });
    };
    let promotion = Promotion {
        model: model.into(),
        alias: alias.into(),
        to: last.from,
        expect: last.to.into(),
        kind: EventKind::Rollback,
        ..template
    };
    registry.promote(&promotion).await
}

/// How the aliases a stack declares protected (`protected_aliases`) differ
/// from the ones the registry protects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtectionDiff {
    /// `(model, alias)` the stack declares but the registry does not
    /// protect: other stacks on the same store can move them.
    pub unprotected: Vec<(String, String)>,
    /// `(model, alias)` the registry protects but the stack does not declare
    /// (still protected: the registry's rule holds for every client).
    pub undeclared: Vec<(String, String)>,
}

/// Compares the aliases a stack declares protected with what the registry
/// protects, for every registered model.
pub async fn compare_protection(
    registry: &dyn ModelRegistry,
    declared: &[String],
) -> Result<ProtectionDiff, RegistryError> {
    let kept = registry.protections(None).await?;
    let mut diff = ProtectionDiff::default();
    for model in model_names(registry).await? {
        for alias in declared {
            if !kept.iter().any(|(m, a)| *m == model && a == alias) {
                diff.unprotected.push((model.clone(), alias.clone()));
            }
        }
    }
    diff.undeclared = kept.into_iter().filter(|(_, a)| !declared.contains(a)).collect();
    Ok(diff)
}

/// The version of `model` holding `alias` now, as a step's model input sees
/// it: none when nobody holds the alias, and none when the model was never
/// registered (its first run is the one that registers it).
pub async fn holder(
    registry: &dyn ModelRegistry,
    model: &str,
    alias: &str,
) -> Result<Option<ModelVersion>, RegistryError> {
    match registry.resolve(model, alias).await {
        Err(RegistryError::UnknownModel { .. }) => Ok(None),
        other => other,
    }
}

/// The names of every model, for error messages.
pub async fn model_names(registry: &dyn ModelRegistry) -> Result<Vec<String>, RegistryError> {
    Ok(registry.models().await?.into_iter().map(|m| m.name).collect())
}

/// An alias moving from a holder (or nobody) to a version (or nobody).
pub type Move = (Option<i64>, Option<i64>);

/// What a store decides about a promotion, given what holds the alias now
/// and, for a protected alias, whether the target version's evidence
/// passed (`None`: the alias is not protected): written once, for every
/// store.
#[doc(hidden)]
pub fn decide(
    p: &Promotion,
    holder: Option<(i64, Timestamp)>,
    evidence: Option<Result<(), String>>,
) -> Result<Option<Move>, RegistryError> {
    let current = holder.map(|(v, _)| v);
    if current == p.to {
        return Ok(None); // Already there: a retry of a finished promotion.
    }
    let matches = match p.expect {
        Expect::Nobody => current.is_none(),
        Expect::Version(v) => current == Some(v),
    };
    if !matches {
        return Err(RegistryError::Conflict {
            model: p.model.clone(),
            alias: p.alias.clone(),
            expected: p.expect,
            holder,
        });
    }
    if p.force && p.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(RegistryError::ReasonRequired { model: p.model.clone(), alias: p.alias.clone() });
    }
    if let (false, Some(Err(why))) = (p.force, evidence) {
        return Err(RegistryError::Protected { model: p.model.clone(), alias: p.alias.clone(), why });
    }
    Ok(Some((current, p.to)))
}

/// What a run recorded, as the evidence for moving a protected alias to a
/// version needs it.
#[doc(hidden)]
#[derive(Clone, Debug, Default)]
pub struct RunEvidence {
    /// The run's status, if the run exists.
    pub status: Option<crate::metadata::record::RunStatus>,
    /// `step.check` of each check of the run that failed.
    pub failed_checks: Vec<String>,
    /// Whether one of its steps output the version's bytes.
    pub produced: bool,
}

/// Whether `run` is evidence for `version` (with content `hash`): it exists,
/// did not fail, failed no check, and one of its steps output exactly those
/// bytes (it produced the version, or re-made and appraised the same bytes
/// later). The reason, naming what is missing, when it is not. Written
/// once, for every store.
#[doc(hidden)]
pub fn judge_evidence(run: &str, version: i64, hash: &ContentHash, found: &RunEvidence) -> Result<(), String> {
    use crate::metadata::record::RunStatus;
    match found.status {
        None => return Err(format!("run `{run}` does not exist")),
        Some(RunStatus::Failed) => return Err(format!("run `{run}` failed")),
        Some(RunStatus::Pending) => return Err(format!("run `{run}` has not run")),
        Some(RunStatus::Running | RunStatus::Completed) => {}
    }
    if !found.failed_checks.is_empty() {
        return Err(format!("checks of run `{run}` failed: {}", found.failed_checks.join(", ")));
    }
    if !found.produced {
        return Err(format!(
            "run `{run}` is no evidence for v{version}: none of its steps output its bytes ({}); cite the run \
             that produced v{version}, or a later run that appraised exactly it",
            hash.short()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names_follow_the_rule() {
        for ok in ["production", "staging", "champion", "canary-2", "a_b", "0"] {
            validate_alias(ok).unwrap();
        }
        for (bad, says) in [
            ("", "empty"),
            ("Production", "`P`"),
            ("prod uction", "` `"),
            ("prod.v2", "`.`"),
            (&"x".repeat(65), "65 characters"),
        ] {
            let err = validate_alias(bad).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("alias"), "{bad:?}: {err}");
        }
        validate_model_name("breast-cancer.v2").unwrap();
        assert!(validate_model_name("-x").unwrap_err().to_string().contains("start with"));
    }

    #[test]
    fn version_references() {
        let p = |s: &str| VersionRef::parse(s).unwrap();
        assert_eq!(p("bc"), ("bc".into(), VersionRef::Latest));
        assert_eq!(p("bc@7"), ("bc".into(), VersionRef::Number(7)));
        assert_eq!(p("bc@v12"), ("bc".into(), VersionRef::Number(12)));
        assert_eq!(p("bc@production"), ("bc".into(), VersionRef::Alias("production".into())));
        assert_eq!(p("bc@v"), ("bc".into(), VersionRef::Alias("v".into())));
        assert!(matches!(VersionRef::parse("bc@Prod"), Err(RegistryError::InvalidName { what: "alias", .. })));
        assert!(matches!(VersionRef::parse("@7"), Err(RegistryError::InvalidName { what: "model", .. })));
    }

    #[test]
    fn ci_context_names_the_job() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let gh = CiContext::from_env(env(&[
            ("GITHUB_ACTOR", "octocat"),
            ("GITHUB_SERVER_URL", "https://github.example/"),
            ("GITHUB_REPOSITORY", "acme/models"),
            ("GITHUB_RUN_ID", "42"),
            ("USER", "runner"),
        ]));
        assert_eq!(gh.actor, "octocat");
        assert_eq!(gh.job_url.as_deref(), Some("https://github.example/acme/models/actions/runs/42"));
        let gl = CiContext::from_env(env(&[("GITLAB_USER_LOGIN", "dev"), ("CI_JOB_URL", "https://gl.example/j/7")]));
        assert_eq!((gl.actor.as_str(), gl.job_url.as_deref()), ("dev", Some("https://gl.example/j/7")));
        let none = CiContext::from_env(env(&[]));
        assert_eq!((none.actor.as_str(), none.job_url), ("unknown", None));
    }

    #[test]
    fn decisions() {
        let p = |to: i64, expect: Expect| Promotion {
            model: "m".into(),
            alias: "production".into(),
            to: Some(to),
            expect,
            actor: "a".into(),
            reason: None,
            run_id: Some("r".into()),
            ci_job_url: None,
            force: false,
            protected: false,
            kind: EventKind::Promote,
        };
        assert_eq!(decide(&p(7, Expect::Version(5)), Some((5, 1)), None).unwrap(), Some((Some(5), Some(7))));
        assert_eq!(decide(&p(7, Expect::Version(5)), Some((7, 1)), None).unwrap(), None, "a retry");
        assert_eq!(decide(&p(1, Expect::Nobody), None, None).unwrap(), Some((None, Some(1))));
        let err = decide(&p(7, Expect::Version(5)), Some((6, 0)), None).unwrap_err();
        assert!(matches!(err, RegistryError::Conflict { holder: Some((6, 0)), .. }), "{err}");
        assert!(err.to_string().contains("held by v6 since 1970-01-01"), "{err}");
        let protected = Promotion { protected: true, ..p(7, Expect::Version(5)) };
        let err = decide(&protected, Some((5, 1)), Some(Err("check `accuracy` failed".into()))).unwrap_err();
        assert!(matches!(err, RegistryError::Protected { .. }) && err.to_string().contains("accuracy"), "{err}");
        assert!(decide(&protected, Some((5, 1)), Some(Ok(()))).unwrap().is_some());
        let forced = Promotion { force: true, ..protected.clone() };
        assert!(matches!(decide(&forced, Some((5, 1)), None).unwrap_err(), RegistryError::ReasonRequired { .. }));
        let forced = Promotion { reason: Some("hotfix".into()), ..forced };
        assert!(decide(&forced, Some((5, 1)), Some(Err("no evidence".into()))).unwrap().is_some());
    }

    #[test]
    fn evidence_names_what_is_missing() {
        use crate::metadata::record::RunStatus;
        let hash = ContentHash::of(b"v3");
        let judge = |found: RunEvidence| judge_evidence("r", 3, &hash, &found);
        let ok = RunEvidence { status: Some(RunStatus::Completed), failed_checks: vec![], produced: true };
        assert_eq!(judge(ok.clone()), Ok(()));
        assert_eq!(
            judge(RunEvidence { status: Some(RunStatus::Running), ..ok.clone() }),
            Ok(()),
            "a run deploying itself"
        );
        assert_eq!(judge(RunEvidence::default()), Err("run `r` does not exist".into()));
        assert_eq!(judge(RunEvidence { status: Some(RunStatus::Failed), ..ok.clone() }), Err("run `r` failed".into()));
        let failed = RunEvidence { failed_checks: vec!["appraise.accuracy".into()], ..ok.clone() };
        assert_eq!(judge(failed), Err("checks of run `r` failed: appraise.accuracy".into()));
        let other = judge(RunEvidence { produced: false, ..ok }).unwrap_err();
        assert!(other.starts_with("run `r` is no evidence for v3: none of its steps output its bytes"), "{other}");
    }
}
