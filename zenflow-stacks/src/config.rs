//! Stack configuration: `zenflow.toml` at the project root.
//!
//! ```toml
//! [stacks.staging]
//! orchestrator = "local"                      # or { kind = "local", parallelism = 4 }
//! metadata_store = "postgres://zenflow:${PGPASSWORD}@${PGHOST:-127.0.0.1}:5432/zenflow"
//!
//! [stacks.staging.artifact_store]
//! url = "s3://ml-artifacts/staging"
//! endpoint = "${S3_ENDPOINT:-}"               # S3-compatible servers; empty = AWS
//! region = "eu-west-1"
//! access_key_id = "${AWS_ACCESS_KEY_ID}"
//! secret_access_key = "${AWS_SECRET_ACCESS_KEY}"
//! ```
//!
//! `protected_aliases = ["production"]` in a stack table makes those aliases
//! of every model move only with a run whose quality gate passed (or with
//! `--force` and a reason, which the alias history records).
//!
//! `inline_limit = 0` (bytes) in a stack table keeps every output in the
//! artifact store (default: outputs up to 16 KiB live in the metadata store).
//!
//! `durability = "relaxed"` in a stack table makes its local stores skip
//! fsync: a run survives a process crash, but the newest steps may be lost on
//! power failure or an OS crash (they run again). The default, `"full"`, syncs
//! every completed step's record and artifacts.
//!
//! Store URLs: artifacts `file://PATH` (relative to the project root),
//! `memory://`, `s3://BUCKET/PREFIX`; metadata `sqlite://PATH`,
//! `sqlite::memory:`, `postgres://...`. `${VAR}` and `${VAR:-default}` take
//! values from the environment (`$$` is a literal `$`), so credentials live in
//! CI secrets; a missing variable is an error naming it and the stack. With no
//! file, the `local` stack (`.zenflow/` in the project) is the only one; a file
//! may redefine `local` too.

use crate::{LocalOrchestrator, ObjectArtifactStore, SqliteMetadataStore};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zenflow_core::{ArtifactStore, Error, MetadataStore, Result, Stack};

/// The stack file's name, at the project root.
pub const STACK_FILE: &str = "zenflow.toml";

/// A string, or a table with more settings.
#[derive(Clone, Debug)]
enum Decl<T> {
    Url(String),
    Table(T),
}

/// By hand, not `untagged`: a table's own error (an unknown field, a
/// wrong type) reaches the user instead of "did not match any variant".
impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Decl<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(Decl::Url(s)),
            other => other
                .try_into()
                .map(Decl::Table)
                .map_err(|e: toml::de::Error| serde::de::Error::custom(e.message().to_string())),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrchestratorTable {
    kind: String,
    #[serde(default)]
    parallelism: Option<usize>,
    #[serde(default)]
    program: Option<String>,
    #[serde(default)]
    fuse_chains: Option<bool>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    pending_timeout: Option<String>,
    #[serde(default)]
    unreachable_after: Option<String>,
}

/// Where a stack runs its steps.
#[derive(Clone, Debug, PartialEq)]
pub enum OrchestratorConfig {
    /// In this process (`"local"`).
    Local {
        /// Steps at once (default: the number of cores).
        parallelism: Option<usize>,
    },
    /// Each step attempt as a child process (`kind = "subprocess"`).
    Subprocess {
        /// Attempts at once (default: the number of cores).
        parallelism: Option<usize>,
        /// The pipeline binary the children run (default: this program).
        program: Option<PathBuf>,
    },
    /// Each step attempt as a job on a Ray cluster (`kind = "ray"`).
    Ray(RayConfig),
}

/// Settings of the Ray orchestrator.
#[derive(Clone, Debug, PartialEq)]
pub struct RayConfig {
    /// The dashboard (Jobs API) address, `http://127.0.0.1:8265`.
    pub address: String,
    /// Jobs at once (Ray has no queue; default 8).
    pub parallelism: Option<usize>,
    /// The pipeline binary shipped to the cluster (default: this program).
    pub program: Option<PathBuf>,
    /// Run consecutive steps of a chain in one job.
    pub fuse_chains: bool,
    /// How long a job may wait for resources before its step fails.
    pub pending_timeout: std::time::Duration,
    /// How long the head may be unreachable while a job runs before its
    /// step fails.
    pub unreachable_after: std::time::Duration,
}

impl OrchestratorConfig {
    /// `local`, `subprocess` or `ray`.
    pub fn kind(&self) -> &'static str {
        match self {
            OrchestratorConfig::Local { .. } => "local",
            OrchestratorConfig::Subprocess { .. } => "subprocess",
            OrchestratorConfig::Ray(_) => "ray",
        }
    }
}

impl std::fmt::Display for OrchestratorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrchestratorConfig::Local { parallelism: Some(n) } => write!(f, "local (parallelism {n})"),
            OrchestratorConfig::Local { parallelism: None } => write!(f, "local"),
            OrchestratorConfig::Subprocess { parallelism, program } => {
                write!(f, "subprocess")?;
                if let Some(n) = parallelism {
                    write!(f, " (parallelism {n})")?;
                }
                if let Some(p) = program {
                    write!(f, ", program {}", p.display())?;
                }
                Ok(())
            }
            OrchestratorConfig::Ray(r) => {
                write!(f, "ray at {} (parallelism {})", redact_url(&r.address), r.parallelism.unwrap_or(8))?;
                if r.fuse_chains {
                    write!(f, ", chains fused")?;
                }
                Ok(())
            }
        }
    }
}

impl OrchestratorTable {
    /// Checks the table's settings against its kind.
    fn resolve(self, stack: &str) -> Result<OrchestratorConfig> {
        let allowed: &[&str] = match self.kind.as_str() {
            "local" => &["parallelism"],
            "subprocess" => &["parallelism", "program"],
            "ray" => &["parallelism", "program", "fuse_chains", "address", "pending_timeout", "unreachable_after"],
            other => {
                return Err(usage(format!(
                    "stack `{stack}`: unknown orchestrator `{other}`; use \"local\", \"subprocess\" or \"ray\""
                )))
            }
        };
        let set = [
            ("parallelism", self.parallelism.is_some()),
            ("program", self.program.is_some()),
            ("fuse_chains", self.fuse_chains.is_some()),
            ("address", self.address.is_some()),
            ("pending_timeout", self.pending_timeout.is_some()),
            ("unreachable_after", self.unreachable_after.is_some()),
        ];
        if let Some((name, _)) = set.iter().find(|(name, on)| *on && !allowed.contains(name)) {
            return Err(usage(format!(
                "stack `{stack}`: `{name}` is not a setting of the {} orchestrator (it takes: {})",
                self.kind,
                allowed.join(", ")
            )));
        }
        if self.parallelism == Some(0) {
            return Err(usage(format!("stack `{stack}`: orchestrator `parallelism` must be at least 1")));
        }
        let program = self.program.map(PathBuf::from);
        Ok(match self.kind.as_str() {
            "local" => OrchestratorConfig::Local { parallelism: self.parallelism },
            "subprocess" => OrchestratorConfig::Subprocess { parallelism: self.parallelism, program },
            _ => {
                let Some(address) = self.address else {
                    return Err(usage(format!(
                        "stack `{stack}`: the ray orchestrator needs `address`, the Ray dashboard's URL \
                         (e.g. \"http://127.0.0.1:8265\")"
                    )));
                };
                if !(address.starts_with("http://") || address.starts_with("https://")) {
                    return Err(usage(format!(
                        "stack `{stack}`: ray `address` `{}` must be an http:// or https:// URL of the Ray dashboard",
                        redact_url(&address)
                    )));
                }
                let duration = |name: &str, value: Option<&str>, default: u64| match value {
                    None => Ok(std::time::Duration::from_secs(default)),
                    Some(t) => zenflow_core::step::parse_duration_ms(t)
                        .map(std::time::Duration::from_millis)
                        .ok_or_else(|| {
                            usage(format!(
                                "stack `{stack}`: ray `{name}` `{t}` is not a duration such as \"15m\" or \"30s\""
                            ))
                        }),
                };
                let pending_timeout = duration("pending_timeout", self.pending_timeout.as_deref(), 15 * 60)?;
                let unreachable_after = duration("unreachable_after", self.unreachable_after.as_deref(), 30)?;
                OrchestratorConfig::Ray(RayConfig {
                    address,
                    parallelism: self.parallelism,
                    program,
                    fuse_chains: self.fuse_chains.unwrap_or(false),
                    pending_timeout,
                    unreachable_after,
                })
            }
        })
    }
}

/// Settings of an artifact store.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactStoreConfig {
    /// `file://`, `memory://` or `s3://bucket/prefix`.
    pub url: String,
    /// S3-compatible endpoint (`http://127.0.0.1:8014`); empty for AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region.
    #[serde(default)]
    pub region: Option<String>,
    /// S3 access key id (default: `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// S3 secret key (default: `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// S3 session token (default: `AWS_SESSION_TOKEN`).
    #[serde(default)]
    pub session_token: Option<String>,
    /// Allow `http://` endpoints (local test servers): `true`, or a string
    /// `"true"`/`"false"`, so that `"${S3_ALLOW_HTTP:-false}"` works.
    #[serde(default, deserialize_with = "bool_or_text")]
    pub allow_http: Option<bool>,
    /// S3: how often a request that failed transiently (HTTP 5xx, 429 or
    /// 408, a dropped connection) is retried before the error is reported
    /// (default 10; 0: never). A number, or text (`"${S3_RETRIES:-10}"`).
    #[serde(default, deserialize_with = "retry_count")]
    pub retries: Option<u32>,
    /// S3: how long a request keeps being retried from its first try, e.g.
    /// `"30s"` (default `"3m"`).
    #[serde(default)]
    pub retry_timeout: Option<String>,
    /// S3: the first wait before a retry, e.g. `"100ms"` (the default);
    /// each next one is up to twice as long, at most 15 s.
    #[serde(default)]
    pub retry_backoff: Option<String>,
}

impl ArtifactStoreConfig {
    /// The retry durations (`retry_timeout`, `retry_backoff`), parsed;
    /// `None` where not set. The error names the setting.
    pub fn retry_durations(&self) -> std::result::Result<(Option<Duration>, Option<Duration>), String> {
        Ok((parse_setting("retry_timeout", &self.retry_timeout)?, parse_setting("retry_backoff", &self.retry_backoff)?))
    }
}

/// A boolean written as one or as text (what `${VAR}` substitution gives).
fn bool_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Option::<Flag>::deserialize(d)? {
        None => Ok(None),
        Some(Flag::Bool(b)) => Ok(Some(b)),
        Some(Flag::Text(t)) => match t.trim() {
            "true" => Ok(Some(true)),
            "false" | "" => Ok(Some(false)),
            other => Err(serde::de::Error::custom(format!("`allow_http` is true or false, not `{other}`"))),
        },
    }
}

/// `retries`, written as a number or as text; the error names the setting.
fn retry_count<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Count {
        Int(i64),
        Text(String),
    }
    let bad = |v: String| serde::de::Error::custom(format!("`retries` is a whole number (0 or more), not {v}"));
    match Option::<Count>::deserialize(d)? {
        None => Ok(None),
        Some(Count::Int(n)) => u32::try_from(n).map(Some).map_err(|_| bad(n.to_string())),
        Some(Count::Text(t)) => t.trim().parse::<u32>().map(Some).map_err(|_| bad(format!("`{t}`"))),
    }
}

/// Whether a stack is opened for commands that write or only read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    ReadWrite,
    ReadOnly,
}

/// Settings of a metadata store.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataStoreConfig {
    /// `sqlite://PATH`, `sqlite::memory:` or `postgres://...`.
    pub url: String,
    /// Connections in the pool (PostgreSQL); default: 2 × cores, at least 4.
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// PostgreSQL: how long a read or write rides out an outage of the
    /// database (a restart, a failover) from its first failure, e.g.
    /// `"30s"` (the default; `"0s"`: fail at the first error).
    #[serde(default)]
    pub retry_timeout: Option<String>,
}

impl MetadataStoreConfig {
    /// `retry_timeout`, parsed; `None` where not set. The error names the
    /// setting.
    pub fn retry_window(&self) -> std::result::Result<Option<Duration>, String> {
        parse_setting("retry_timeout", &self.retry_timeout)
    }
}

/// The duration setting `name`, written `value`, parsed.
fn parse_setting(name: &str, value: &Option<String>) -> std::result::Result<Option<Duration>, String> {
    match value.as_deref() {
        None => Ok(None),
        Some(t) => zenflow_core::step::parse_duration_ms(t)
            .map(|ms| Some(Duration::from_millis(ms)))
            .ok_or_else(|| format!("`{name}` `{t}` is not a duration such as \"30s\" or \"100ms\"")),
    }
}

// Secrets stay out of `{:?}` and tracing output.
impl std::fmt::Debug for ArtifactStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStoreConfig")
            .field("url", &redact_url(&self.url))
            .field("endpoint", &self.endpoint.as_deref().map(redact_url))
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "***"))
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl std::fmt::Debug for MetadataStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataStoreConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("retry_timeout", &self.retry_timeout)
            .finish()
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StackTable {
    #[serde(default)]
    orchestrator: Option<Decl<OrchestratorTable>>,
    /// `"full"` (default) or `"relaxed"` (local stores skip fsync).
    #[serde(default)]
    durability: Option<String>,
    /// Largest output kept inline in the metadata store, in bytes.
    #[serde(default)]
    inline_limit: Option<usize>,
    /// Aliases that move only with a run whose quality gate passed.
    #[serde(default)]
    protected_aliases: Vec<String>,
    /// The container image of the pipeline binary (`dag --format argo`).
    #[serde(default)]
    image: Option<String>,
    artifact_store: Decl<ArtifactStoreConfig>,
    metadata_store: Decl<MetadataStoreConfig>,
    /// The model server deployments drive.
    #[serde(default)]
    deployer: Option<DeployerTable>,
    /// No experiment tracker exists yet: a table declaring one is refused
    /// (read here only to say so), not silently ignored.
    #[serde(default)]
    tracker: Option<toml::Value>,
}

/// `[stacks.NAME.deployer]`: `url`, `token` (from `${VAR}`), `wait`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployerTable {
    url: String,
    token: String,
    /// How long a deployment waits for the server (`"2m"`; default 2 minutes).
    #[serde(default)]
    wait: Option<String>,
}

impl std::fmt::Debug for DeployerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployerTable").field("url", &self.url).field("wait", &self.wait).finish_non_exhaustive()
    }
}

/// A stack's deployer: the model server it deploys to, and the admin
/// token of that server.
#[derive(Clone, PartialEq, Eq)]
pub struct Deployer {
    /// The server's base URL (`http://127.0.0.1:8080`).
    pub url: String,
    /// Its admin token (from the environment; never printed).
    pub token: String,
    /// How long a deployment waits for the server to load and serve a version.
    pub wait: std::time::Duration,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployer")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("wait", &self.wait)
            .finish()
    }
}

impl DeployerTable {
    fn resolve(self, stack: &str) -> Result<Deployer> {
        let bad = |what: String| usage(format!("stack `{stack}`, deployer: {what}"));
        let url = url::Url::parse(&self.url).map_err(|e| {
            bad(format!("`url` {:?} is not a URL ({e}); write e.g. \"http://127.0.0.1:8080\"", self.url))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!("`url` must be http:// or https://, not {}://", url.scheme())));
        }
        if self.token.trim().is_empty() {
            return Err(
                bad("`token` is empty; write token = \"${ZENFLOW_DEPLOY_TOKEN}\" and set that variable".into()),
            );
        }
        let wait = match self.wait.as_deref() {
            None => std::time::Duration::from_secs(120),
            Some(t) => std::time::Duration::from_millis(
                zenflow_core::step::parse_duration_ms(t)
                    .ok_or_else(|| bad(format!("`wait` `{t}` is not a duration such as \"2m\" or \"30s\"")))?,
            ),
        };
        Ok(Deployer { url: self.url.trim_end_matches('/').to_string(), token: self.token, wait })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StackFile {
    #[serde(default)]
    stacks: BTreeMap<String, toml::Value>,
}

/// One stack's resolved configuration (environment variables substituted).
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Stack name.
    pub name: String,
    /// Where steps run.
    pub orchestrator: OrchestratorConfig,
    /// The artifact store.
    pub artifact_store: ArtifactStoreConfig,
    /// The metadata store.
    pub metadata_store: MetadataStoreConfig,
    /// The model server deployments drive.
    pub deployer: Option<Deployer>,
    /// Durability of the local stores (SQLite, local artifacts).
    pub durability: crate::artifact_store::Durability,
    /// Largest output kept inline in the metadata store (bytes).
    pub inline_limit: usize,
    /// Aliases that move only with a run whose quality gate passed (or forced).
    pub protected_aliases: Vec<String>,
    /// The container image of the pipeline binary, for Kubernetes workflows.
    pub image: Option<String>,
}

/// The stacks of a project.
#[derive(Clone, Debug)]
pub struct Stacks {
    root: PathBuf,
    file: Option<PathBuf>,
    raw: BTreeMap<String, toml::Value>,
}

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

impl Stacks {
    /// Reads `zenflow.toml` under `root`, if there is one.
    pub fn load(root: &Path) -> Result<Stacks> {
        let path = root.join(STACK_FILE);
        let (file, raw) = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let parsed: StackFile = toml::from_str(&text)
                    .map_err(|e| usage(format!("{} is not a valid stack file: {e}", path.display())))?;
                (Some(path), parsed.stacks)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, BTreeMap::new()),
            Err(e) => return Err(usage(format!("cannot read {}: {e}", path.display()))),
        };
        Ok(Stacks { root: root.to_path_buf(), file, raw })
    }

    /// The stack file, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Stack names, `local` included.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.raw.keys().cloned().collect();
        if !names.iter().any(|n| n == "local") {
            names.insert(0, "local".into());
        }
        names
    }

    /// The resolved configuration of stack `name`.
    pub fn config(&self, name: &str) -> Result<StackConfig> {
        self.resolve_config(name, false)
    }

    /// `in_place`: the orchestrator table is neither read nor checked (see
    /// [`Stacks::open_in_place`]).
    fn resolve_config(&self, name: &str, in_place: bool) -> Result<StackConfig> {
        let Some(raw) = self.raw.get(name) else {
            if name == "local" {
                return Ok(StackConfig::embedded_local());
            }
            return Err(usage(format!("unknown stack `{name}`; available stacks: {}", self.names().join(", "))));
        };
        let mut value = raw.clone();
        if in_place {
            if let Some(table) = value.as_table_mut() {
                table.remove("orchestrator");
            }
        }
        substitute(&mut value, name, "")?;
        let table: StackTable = value
            .try_into()
            .map_err(|e: toml::de::Error| usage(format!("stack `{name}` in {}: {}", self.file_name(), e.message())))?;
        let orchestrator = match table.orchestrator {
            None => OrchestratorConfig::Local { parallelism: None },
            Some(Decl::Url(kind)) => OrchestratorTable { kind, ..Default::default() }.resolve(name)?,
            Some(Decl::Table(t)) => t.resolve(name)?,
        };
        let (artifact_store, metadata_store) = stores(name, table.artifact_store, table.metadata_store)?;
        if table.tracker.is_some() {
            return Err(usage(format!(
                "stack `{name}` in {}: `tracker` does nothing in this version of zenflow (it has no experiment \
                 tracker yet); remove [stacks.{name}.tracker]",
                self.file_name()
            )));
        }
        let deployer = table.deployer.map(|d| d.resolve(name)).transpose()?;
        let durability = durability(name, table.durability.as_deref())?;
        let inline_limit = table.inline_limit.unwrap_or(zenflow_core::stack::DEFAULT_INLINE_LIMIT);
        for alias in &table.protected_aliases {
            zenflow_core::registry::validate_alias(alias)
                .map_err(|e| usage(format!("stack `{name}`, `protected_aliases`: {e}")))?;
        }
        Ok(StackConfig {
            name: name.into(),
            orchestrator,
            artifact_store,
            metadata_store,
            deployer,
            durability,
            inline_limit,
            protected_aliases: table.protected_aliases,
            image: table.image,
        })
    }

    /// The environment variables stack `name` references (`${VAR}`), each
    /// with whether it has a default: what a worker's environment must
    /// provide (for Kubernetes, from a secret).
    pub fn references(&self, name: &str) -> Result<Vec<(String, bool)>> {
        fn walk(value: &toml::Value, stack: &str, at: &str, out: &mut Vec<(String, bool)>) -> Result<()> {
            match value {
                toml::Value::String(s) => {
                    expand_with(s, stack, at, |var, default| {
                        if !out.iter().any(|(v, _)| v == var) {
                            out.push((var.to_string(), default.is_some()));
                        }
                        Some("-".into())
                    })?;
                }
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        walk(v, stack, &if at.is_empty() { k.clone() } else { format!("{at}.{k}") }, out)?;
                    }
                }
                toml::Value::Array(a) => {
                    for v in a {
                        walk(v, stack, at, out)?;
                    }
                }
                _ => {}
            }
            Ok(())
        }
        let mut out = Vec::new();
        if let Some(raw) = self.raw.get(name) {
            walk(raw, name, "", &mut out)?;
        } else {
            self.config(name)?;
        }
        Ok(out)
    }

    fn file_name(&self) -> String {
        self.file.as_ref().map_or(STACK_FILE.to_string(), |f| f.display().to_string())
    }

    /// Opens stack `name`: connects to its stores (creating schemas as needed).
    pub fn open(&self, name: &str) -> Result<Stack> {
        self.open_with(self.config(name)?, Access::ReadWrite)
    }

    /// Opens stack `name` for a command that only reads: nothing is created
    /// (no folder, no database, no schema), migrated or locked, so it works
    /// on a store this process may not write, or a read-only copy of one.
    /// A store that does not exist yet is
    /// [`MetadataError::Empty`](zenflow_core::metadata::MetadataError::Empty),
    /// one with an older schema
    /// [`MetadataError::OlderSchema`](zenflow_core::metadata::MetadataError::OlderSchema).
    pub fn open_read_only(&self, name: &str) -> Result<Stack> {
        self.open_with(self.config(name)?, Access::ReadOnly)
    }

    /// Opens stack `name` read-write when this process may write its
    /// metadata store (a SQLite file it can write; a PostgreSQL database,
    /// whose grants decide), else as [`Stacks::open_read_only`]: for a
    /// long-running reader that writes rarely, as the model server does
    /// when a bake window moves an alias back, so that it also runs from a
    /// read-only copy of a store.
    pub fn open_writable_or_read_only(&self, name: &str) -> Result<Stack> {
        let config = self.config(name)?;
        let read_only = match config.metadata_store.url.strip_prefix("sqlite://") {
            Some(path) => !SqliteMetadataStore::writable(self.resolve(path)),
            None => false,
        };
        self.open_with(config, if read_only { Access::ReadOnly } else { Access::ReadWrite })
    }

    /// Opens stack `name` for a process that runs its steps in place (an
    /// orchestrator's worker, `step-entrypoint`): its stores and deployer,
    /// with the local orchestrator. The orchestrator table is the driver's
    /// and is not read: on an engine's node its variables may mean
    /// something else (inside a Ray job, `RAY_ADDRESS` is the cluster's
    /// GCS address, not the dashboard URL the driver submits to).
    pub fn open_in_place(&self, name: &str) -> Result<Stack> {
        self.open_with(self.resolve_config(name, true)?, Access::ReadWrite)
    }

    fn open_with(&self, config: StackConfig, access: Access) -> Result<Stack> {
        let name = config.name.as_str();
        let context = |component: &str, e: Error| match e {
            // Said as it is: the command line has its own words for it.
            Error::Metadata(e @ zenflow_core::metadata::MetadataError::Empty { .. }) => Error::Metadata(e),
            e => usage(format!("stack `{name}`, {component}: {e}")),
        };
        let artifacts = self.open_artifacts_with(&config, access).map_err(|e| context("artifact store", e))?;
        let metadata = self.open_metadata_with(&config, access).map_err(|e| context("metadata store", e))?;
        let orchestrator = self.open_orchestrator(&config).map_err(|e| context("orchestrator", e))?;
        let stack = Stack::new(name, orchestrator, artifacts, metadata)
            .with_project_root(&self.root)
            .with_inline_limit(config.inline_limit)
            .with_protected_aliases(config.protected_aliases.clone())
            .with_ci(crate::local::ci_from_env());
        Ok(match config.deployer.clone() {
            Some(d) => stack.with_extension(d),
            None => stack,
        })
    }

    /// Builds the orchestrator of a stack.
    pub fn open_orchestrator(&self, config: &StackConfig) -> Result<Arc<dyn zenflow_core::Orchestrator>> {
        let cores = || std::thread::available_parallelism().map_or(1, |n| n.get());
        let program = |p: &Option<PathBuf>| -> Result<crate::orchestrator::Subprocess> {
            match p {
                Some(p) => Ok(crate::orchestrator::Subprocess::new(self.resolve(&p.to_string_lossy()), &self.root)),
                None => crate::orchestrator::Subprocess::current_exe(&self.root),
            }
        };
        Ok(match &config.orchestrator {
            OrchestratorConfig::Local { parallelism } => {
                Arc::new(parallelism.map_or_else(LocalOrchestrator::default, LocalOrchestrator::new))
            }
            OrchestratorConfig::Subprocess { parallelism, program: p } => Arc::new(
                crate::orchestrator::SubprocessOrchestrator::new(program(p)?, parallelism.unwrap_or_else(cores)),
            ),
            OrchestratorConfig::Ray(ray) => {
                #[cfg(feature = "ray")]
                return Ok(Arc::new(crate::orchestrator::RayOrchestrator::open(ray, &self.root)?));
                #[cfg(not(feature = "ray"))]
                {
                    let _ = ray;
                    return Err(usage(
                        "this binary was built without Ray support: enable the `ray` feature of zenflow",
                    ));
                }
            }
        })
    }

    /// Opens only the artifact store of a stack.
    pub fn open_artifacts(&self, config: &StackConfig) -> Result<Arc<dyn ArtifactStore>> {
        self.open_artifacts_with(config, Access::ReadWrite)
    }

    fn open_artifacts_with(&self, config: &StackConfig, access: Access) -> Result<Arc<dyn ArtifactStore>> {
        let url = config.artifact_store.url.as_str();
        if let Some(path) = url.strip_prefix("file://") {
            let path = self.resolve(path);
            return Ok(Arc::new(match access {
                Access::ReadWrite => ObjectArtifactStore::local_with(path, config.durability)?,
                Access::ReadOnly => ObjectArtifactStore::local_read_only(path)?,
            }));
        }
        if url == "memory://" || url == "memory:" {
            return Ok(Arc::new(ObjectArtifactStore::memory()));
        }
        if url.starts_with("s3://") {
            #[cfg(feature = "s3")]
            return Ok(Arc::new(ObjectArtifactStore::s3(&config.artifact_store)?));
            #[cfg(not(feature = "s3"))]
            return Err(usage("this binary was built without S3 support: enable the `s3` feature of zenflow"));
        }
        Err(usage(format!("unsupported artifact store URL `{url}`; use file://PATH, memory:// or s3://BUCKET/PREFIX")))
    }

    /// Opens only the metadata store of a stack.
    pub fn open_metadata(&self, config: &StackConfig) -> Result<Arc<dyn MetadataStore>> {
        self.open_metadata_with(config, Access::ReadWrite)
    }

    fn open_metadata_with(&self, config: &StackConfig, access: Access) -> Result<Arc<dyn MetadataStore>> {
        let url = config.metadata_store.url.as_str();
        if url == "sqlite::memory:" {
            return Ok(Arc::new(SqliteMetadataStore::in_memory()?));
        }
        if let (Some(path), Access::ReadOnly) = (url.strip_prefix("sqlite://"), access) {
            return Ok(Arc::new(SqliteMetadataStore::open_read_only(self.resolve(path))?));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            let sync = match config.durability {
                crate::artifact_store::Durability::Full => crate::metadata::Synchronous::Full,
                crate::artifact_store::Durability::Relaxed => crate::metadata::Synchronous::Normal,
            };
            return Ok(Arc::new(SqliteMetadataStore::open_with(self.resolve(path), sync)?));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            {
                let mut store = crate::metadata::PostgresMetadataStore::open(url, config.metadata_store.pool_size)?;
                if let Some(window) = config.metadata_store.retry_window().map_err(usage)? {
                    store = store.with_retry_window(window);
                }
                if access == Access::ReadOnly {
                    store = store.read_only();
                }
                return Ok(Arc::new(store));
            }
            #[cfg(not(feature = "postgres"))]
            return Err(usage(
                "this binary was built without PostgreSQL support: enable the `postgres` feature of zenflow",
            ));
        }
        Err(usage(format!(
            "unsupported metadata store URL `{}`; use sqlite://PATH, sqlite::memory: or postgres://...",
            redact_url(url)
        )))
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }
}

impl StackConfig {
    /// Lines describing the stack, with credentials redacted.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("stack".to_string(), self.name.clone()),
            ("orchestrator".into(), self.orchestrator.to_string()),
            ("artifact store".into(), redact_url(&self.artifact_store.url)),
        ];
        let a = &self.artifact_store;
        if let Some(e) = a.endpoint.as_deref().filter(|e| !e.is_empty()) {
            out.push(("  endpoint".into(), redact_url(e)));
        }
        if let Some(r) = &a.region {
            out.push(("  region".into(), r.clone()));
        }
        if let Some(k) = &a.access_key_id {
            out.push(("  access key id".into(), k.clone()));
        }
        if a.secret_access_key.is_some() {
            out.push(("  secret access key".into(), "***".into()));
        }
        if a.session_token.is_some() {
            out.push(("  session token".into(), "***".into()));
        }
        out.push(("metadata store".into(), redact_url(&self.metadata_store.url)));
        if let Some(n) = self.metadata_store.pool_size {
            out.push(("  pool size".into(), n.to_string()));
        }
        if let Some(t) = &self.metadata_store.retry_timeout {
            out.push(("  retry timeout".into(), t.clone()));
        }
        if self.inline_limit != zenflow_core::stack::DEFAULT_INLINE_LIMIT {
            out.push(("inline limit".into(), format!("{} bytes", self.inline_limit)));
        }
        if !self.protected_aliases.is_empty() {
            out.push(("protected aliases".into(), self.protected_aliases.join(", ")));
        }
        if self.durability == crate::artifact_store::Durability::Relaxed {
            out.push(("durability".into(), "relaxed (local stores do not fsync)".into()));
        }
        if let Some(d) = &self.deployer {
            out.push(("deployer".into(), format!("{} (token ***, wait {:?})", redact_url(&d.url), d.wait)));
        }
        out
    }
}

/// The URL with every secret hidden: the password, and query parameters
/// that look like secrets (`password`, `secret`, `token`, `key`). A URL that
/// does not parse is hidden whole: it might be a password with a `/` in it.
pub fn redact_url(raw: &str) -> String {
    if !raw.contains("://") {
        return raw.to_string(); // sqlite::memory:, plain paths
    }
    let Ok(mut url) = url::Url::parse(raw) else {
        let scheme = raw.split("://").next().unwrap_or("");
        return format!("{scheme}://<hidden: not a well-formed URL>");
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                // In a URL, a parameter named like a key (`key=`, `apikey=`) is one too.
                let secret = zenflow_core::redact::is_secret_name(&k) || k.to_ascii_lowercase().ends_with("key");
                (k.into_owned(), if secret { "***".to_string() } else { v.into_owned() })
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string().replace("%2A%2A%2A", "***")
}

/// Replaces `${VAR}` / `${VAR:-default}` in every string of `value`.
fn substitute(value: &mut toml::Value, stack: &str, at: &str) -> Result<()> {
    match value {
        toml::Value::String(s) => *s = expand(s, stack, at)?,
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let at = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                substitute(v, stack, &at)?;
            }
        }
        toml::Value::Array(a) => {
            for v in a.iter_mut() {
                substitute(v, stack, at)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(s: &str, stack: &str, at: &str) -> Result<String> {
    // Every secret resolved from the environment is hidden in what this
    // process records and prints from now on (`zenflow_core::redact`).
    let field = at.rsplit('.').next().unwrap_or(at);
    let secret_field = zenflow_core::redact::is_secret_name(field);
    expand_with(s, stack, at, |k, _| {
        let value = std::env::var(k).ok();
        if let Some(v) = &value {
            if secret_field || zenflow_core::redact::is_secret_name(k) {
                zenflow_core::redact::register_secret(v);
            }
        }
        value
    })
}

/// Expands the `${VAR}` references of `s`; `get` is given each variable's
/// name and default.
fn expand_with(
    s: &str,
    stack: &str,
    at: &str,
    mut get: impl FnMut(&str, Option<&str>) -> Option<String>,
) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
            continue;
        }
        let Some(body) = rest.strip_prefix("${") else {
            out.push('$');
            rest = &rest[1..];
            continue;
        };
        let end = body.find('}').ok_or_else(|| usage(format!("stack `{stack}`, `{at}`: unclosed `${{` in `{s}`")))?;
        let inner = &body[..end];
        let (var, default) = match inner.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (inner, None),
        };
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(usage(format!("stack `{stack}`, `{at}`: `${{{inner}}}` is not a variable reference")));
        }
        match (get(var, default).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(usage(format!(
                    "stack `{stack}`: environment variable `{var}` is not set (used in `{at}`); \
                     set it, or give a default with `${{{var}:-default}}`"
                )))
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A stack's two stores, their retry settings checked.
fn stores(
    name: &str,
    artifact_store: Decl<ArtifactStoreConfig>,
    metadata_store: Decl<MetadataStoreConfig>,
) -> Result<(ArtifactStoreConfig, MetadataStoreConfig)> {
    let artifact_store = match artifact_store {
        Decl::Url(url) => ArtifactStoreConfig { url, ..Default::default() },
        Decl::Table(t) => t,
    };
    artifact_store.retry_durations().map_err(|e| usage(format!("stack `{name}`, artifact_store: {e}")))?;
    let metadata_store = match metadata_store {
        Decl::Url(url) => MetadataStoreConfig { url, ..Default::default() },
        Decl::Table(t) => t,
    };
    metadata_store.retry_window().map_err(|e| usage(format!("stack `{name}`, metadata_store: {e}")))?;
    if metadata_store.retry_timeout.is_some() && !metadata_store.url.starts_with("postgres") {
        return Err(usage(format!(
            "stack `{name}`, metadata_store: `retry_timeout` is for a PostgreSQL store; SQLite waits for its \
             own locks and has no server to wait for"
        )));
    }
    Ok((artifact_store, metadata_store))
}

/// `durability = "full" | "relaxed"`.
fn durability(name: &str, value: Option<&str>) -> Result<crate::artifact_store::Durability> {
    Ok(match value {
        None | Some("full") => crate::artifact_store::Durability::Full,
        Some("relaxed") => crate::artifact_store::Durability::Relaxed,
        Some(other) => {
            return Err(usage(format!(
                "stack `{name}`: durability `{other}` is not one of \"full\" (every record and artifact synced to \
                 disk) or \"relaxed\" (survives a process crash; the newest steps may be lost on power failure)"
            )))
        }
    })
}

impl StackConfig {
    /// The `local` stack every project has without a `zenflow.toml`:
    /// threads, files and SQLite under `.zenflow/`.
    fn embedded_local() -> StackConfig {
        StackConfig {
            name: "local".into(),
            orchestrator: OrchestratorConfig::Local { parallelism: None },
            artifact_store: ArtifactStoreConfig { url: "file://.zenflow/artifacts".into(), ..Default::default() },
            metadata_store: MetadataStoreConfig { url: "sqlite://.zenflow/zenflow.db".into(), ..Default::default() },
            deployer: None,
            durability: Default::default(),
            inline_limit: zenflow_core::stack::DEFAULT_INLINE_LIMIT,
            protected_aliases: Vec::new(),
            image: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "HOST" => Some("db.internal".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn variables_defaults_and_errors() {
        let x = |s: &str| expand_with(s, "staging", "metadata_store", |k, _| env(k));
        assert_eq!(x("pg://${HOST}:5432").unwrap(), "pg://db.internal:5432");
        assert_eq!(x("${MISSING:-127.0.0.1}").unwrap(), "127.0.0.1");
        assert_eq!(x("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(x("cost $$5 and $x").unwrap(), "cost $5 and $x");
        let e = x("${PGPASSWORD}").unwrap_err().to_string();
        assert!(
            e.contains("stack `staging`") && e.contains("`PGPASSWORD` is not set") && e.contains("metadata_store"),
            "{e}"
        );
        assert!(x("${oops").unwrap_err().to_string().contains("unclosed"));
        assert!(x("${A B}").unwrap_err().to_string().contains("not a variable reference"));
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("postgres://zen:s3cret@127.0.0.1:5432/db"), "postgres://zen:***@127.0.0.1:5432/db");
        assert_eq!(redact_url("postgres://zen@h/db?password=abc&x=1"), "postgres://zen@h/db?password=***&x=1");
        assert_eq!(
            redact_url("postgres://127.0.0.1/zf?user=zen&password=s3cret"),
            "postgres://127.0.0.1/zf?user=zen&password=***"
        );
        assert_eq!(redact_url("s3://bucket/prefix"), "s3://bucket/prefix");
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        // A password with a `/` that was not percent-encoded: hidden whole.
        let r = redact_url("postgres://zen:ab/cd@host/db");
        assert!(!r.contains("ab/cd") && !r.contains("cd@host"), "{r}");
    }

    /// Inside a Ray job `RAY_ADDRESS` is the GCS address (`host:port`): a
    /// stack file that reads it for the dashboard URL must still open on
    /// the worker, which runs its step in place.
    #[test]
    fn a_worker_opens_its_stack_without_the_drivers_orchestrator() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(STACK_FILE),
            "[stacks.ray]\norchestrator = { kind = \"ray\", address = \"127.0.0.1:6380\" }\n\
             artifact_store = \"memory://\"\nmetadata_store = \"sqlite::memory:\"\nprotected_aliases = [\"production\"]\n",
        )
        .unwrap();
        let stacks = Stacks::load(dir.path()).unwrap();
        let Err(e) = stacks.open("ray") else { panic!("the driver checks its orchestrator") };
        let e = e.to_string();
        assert!(e.contains("ray `address` `127.0.0.1:6380` must be an http:// or https:// URL"), "{e}");
        let worker = stacks.open_in_place("ray").unwrap();
        assert_eq!((worker.name(), worker.orchestrator().name()), ("ray", "local"));
        assert!(worker.is_protected("production"), "the rest of the stack is as declared");
    }

    #[test]
    fn a_metadata_stores_retry_timeout_is_checked_where_the_stack_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let load = |store: &str| {
            let file = format!("[stacks.s]\nartifact_store = \"memory://\"\n[stacks.s.metadata_store]\n{store}");
            std::fs::write(dir.path().join(STACK_FILE), file).unwrap();
            Stacks::load(dir.path()).unwrap().config("s")
        };
        let pg = load("url = \"postgres://u@127.0.0.1/db\"\nretry_timeout = \"45s\"\n").unwrap();
        assert_eq!(pg.metadata_store.retry_window(), Ok(Some(Duration::from_secs(45))));
        assert!(pg.describe().contains(&("  retry timeout".to_string(), "45s".to_string())));
        let e = load("url = \"postgres://u@127.0.0.1/db\"\nretry_timeout = \"soon\"\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "stack `s`, metadata_store: `retry_timeout` `soon` is not a duration such as \"30s\" or \"100ms\""
        );
        let e = load("url = \"sqlite://z.db\"\nretry_timeout = \"5s\"\n").unwrap_err().to_string();
        assert!(e.starts_with("stack `s`, metadata_store: `retry_timeout` is for a PostgreSQL store"), "{e}");
    }

    #[test]
    fn stacks_from_a_file() {
        let dir = std::env::temp_dir().join(format!("zf-stacks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(STACK_FILE),
            "[stacks.ci]\norchestrator = { kind = \"local\", parallelism = 3 }\ndurability = \"relaxed\"\ninline_limit = 0\nartifact_store = \"memory://\"\nmetadata_store = \"sqlite::memory:\"\n[stacks.ci.deployer]\nurl = \"http://127.0.0.1:8080/\"\ntoken = \"t0k3n\"\nwait = \"30s\"\n\n[stacks.bad]\nartifact_store = \"ftp://x\"\nmetadata_store = \"sqlite::memory:\"\n",
        )
        .unwrap();
        let stacks = Stacks::load(&dir).unwrap();
        assert_eq!(stacks.names(), ["local", "bad", "ci"]);
        let ci = stacks.config("ci").unwrap();
        assert_eq!(ci.orchestrator, OrchestratorConfig::Local { parallelism: Some(3) });
        assert_eq!(
            ci.deployer,
            Some(Deployer {
                url: "http://127.0.0.1:8080".into(),
                token: "t0k3n".into(),
                wait: std::time::Duration::from_secs(30)
            })
        );
        assert!(!format!("{ci:?}").contains("t0k3n"), "the token is not printed");
        assert!(!ci.describe().iter().any(|(_, v)| v.contains("t0k3n")));
        assert_eq!(ci.durability, crate::artifact_store::Durability::Relaxed);
        assert_eq!(ci.inline_limit, 0);
        let stack = stacks.open("ci").unwrap();
        assert_eq!(stack.extension::<Deployer>().map(|d| d.url.as_str()), Some("http://127.0.0.1:8080"));
        assert_eq!(stack.name(), "ci");
        assert_eq!(stack.inline_limit(), 0);
        assert_eq!(stack.artifacts().url(), "memory://");
        let e = stacks.open("bad").unwrap_err().to_string();
        assert!(
            e.contains("stack `bad`, artifact store") && e.contains("unsupported artifact store URL `ftp://x`"),
            "{e}"
        );
        let e = stacks.open("prod").unwrap_err().to_string();
        assert!(e.contains("unknown stack `prod`; available stacks: local, bad, ci"), "{e}");
        std::fs::write(dir.join(STACK_FILE), "[stacks.x]\nartifact_store = \"memory://\"\n").unwrap();
        let e = Stacks::load(&dir).unwrap().config("x").unwrap_err().to_string();
        assert!(e.contains("stack `x`") && e.contains("metadata_store"), "{e}");
        let deployer = |table: &str| {
            let file = format!("[stacks.d]\nartifact_store = \"memory://\"\nmetadata_store = \"sqlite::memory:\"\n[stacks.d.deployer]\n{table}");
            std::fs::write(dir.join(STACK_FILE), file).unwrap();
            Stacks::load(&dir).unwrap().config("d").unwrap_err().to_string()
        };
        assert_eq!(
            deployer("url = \"ftp://h:1\"\ntoken = \"x\"\n"),
            "stack `d`, deployer: `url` must be http:// or https://, not ftp://"
        );
        assert_eq!(
            deployer("url = \"127.0.0.1:8080\"\ntoken = \"x\"\n"),
            "stack `d`, deployer: `url` \"127.0.0.1:8080\" is not a URL (relative URL without a base); write e.g. \"http://127.0.0.1:8080\""
        );
        assert_eq!(
            deployer("url = \"http://h:1\"\ntoken = \"\"\n"),
            "stack `d`, deployer: `token` is empty; write token = \"${ZENFLOW_DEPLOY_TOKEN}\" and set that variable"
        );
        assert_eq!(
            deployer("url = \"http://h:1\"\ntoken = \"x\"\nwait = \"soon\"\n"),
            "stack `d`, deployer: `wait` `soon` is not a duration such as \"2m\" or \"30s\""
        );
        assert!(deployer("url = \"http://h:1\"\n").contains("missing field `token`"));
        // allow_http as text, as `${VAR:-false}` gives it.
        let s3 = |flag: &str| {
            let file = format!(
                "[stacks.s]\nmetadata_store = \"sqlite::memory:\"\n[stacks.s.artifact_store]\nurl = \"s3://b/p\"\nallow_http = {flag}\n"
            );
            std::fs::write(dir.join(STACK_FILE), file).unwrap();
            Stacks::load(&dir).unwrap().config("s").map(|c| c.artifact_store.allow_http)
        };
        assert_eq!(s3("true").unwrap(), Some(true));
        assert_eq!(s3("\"${ZF_UNSET_ALLOW_HTTP:-true}\"").unwrap(), Some(true));
        assert_eq!(s3("\"${ZF_UNSET_ALLOW_HTTP:-false}\"").unwrap(), Some(false));
        let e = s3("\"maybe\"").unwrap_err().to_string();
        assert!(e.contains("`allow_http` is true or false, not `maybe`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
