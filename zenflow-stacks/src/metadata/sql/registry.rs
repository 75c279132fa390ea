//! The model registry in SQL, for both stores: its statements, rows, and
//! every operation written once, over [`Tx`], a transaction a driver
//! provides.
//!
//! A driver runs each operation inside one write transaction, after taking
//! the model's lock (SQLite: the database's write lock; PostgreSQL: an
//! advisory lock on the model), and commits it at once: a promotion is
//! durable and visible to other processes when it returns. Reads run
//! wherever the driver reads.

use super::{corrupt, SqlRow, Value};
use std::collections::BTreeMap;
use zenflow_core::metadata::{now, MetadataError, Timestamp};
use zenflow_core::registry::*;
use zenflow_core::ContentHash;

/// One transaction of a driver, as the registry's operations use it.
///
/// The futures carry no `Send` bound here: the SQLite driver polls them
/// to completion in place, under its lock (its statements never wait), and
/// the PostgreSQL driver's are `Send`, which its callers see.
pub(crate) trait Tx {
    /// Runs a query; each row is mapped by `map`.
    fn query<T: Send + 'static>(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
        map: fn(&dyn SqlRow) -> Result<T, MetadataError>,
    ) -> impl std::future::Future<Output = Result<Vec<T>, MetadataError>>;

    /// Runs a statement; the number of rows it changed.
    fn execute(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> impl std::future::Future<Output = Result<u64, MetadataError>>;
}

macro_rules! mv_cols {
    () => {
        "model, version, artifact_version_id, content_hash, run_id, step_run_id, git_commit, code_hashes, \
         data_hashes, metrics, tags, samples, created_at"
    };
}

macro_rules! event_cols {
    () => {
        "model, seq, alias, from_version, to_version, kind, actor, reason, run_id, ci_job_url, forced, at"
    };
}

const CREATE_MODEL: &str = "INSERT INTO models (name, description, tags, created_at) VALUES ($1, '', '{}', $2) \
     ON CONFLICT (name) DO NOTHING";
const DESCRIBE_MODEL: &str = "INSERT INTO models (name, description, tags, created_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (name) DO UPDATE SET description = excluded.description, tags = excluded.tags";
const MODELS: &str = "SELECT name, description, tags, created_at FROM models ORDER BY name";
const MODEL: &str = "SELECT name, description, tags, created_at FROM models WHERE name = $1";
const VERSION_BY_HASH: &str =
    concat!("SELECT ", mv_cols!(), " FROM model_versions WHERE model = $1 AND content_hash = $2");
const INSERT_VERSION: &str = concat!(
    "INSERT INTO model_versions (",
    mv_cols!(),
    ") VALUES ($1, (SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE model = $1), \
     $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (model, content_hash) DO NOTHING"
);
const VERSIONS: &str = concat!("SELECT ", mv_cols!(), " FROM model_versions WHERE model = $1 ORDER BY version DESC");
const VERSION: &str = concat!("SELECT ", mv_cols!(), " FROM model_versions WHERE model = $1 AND version = $2");
const VERSION_NUMBERS: &str = "SELECT version FROM model_versions WHERE model = $1 ORDER BY version";
const ALIASES: &str = "SELECT alias, version, since FROM model_aliases WHERE model = $1 ORDER BY alias";
const HOLDER: &str = "SELECT alias, version, since FROM model_aliases WHERE model = $1 AND alias = $2";
const SET_ALIAS: &str = "INSERT INTO model_aliases (model, alias, version, since) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version, since = excluded.since";
const DROP_ALIAS: &str = "DELETE FROM model_aliases WHERE model = $1 AND alias = $2";
const APPEND_EVENT: &str = concat!(
    "INSERT INTO model_alias_events (",
    event_cols!(),
    ") VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM model_alias_events WHERE model = $1), \
     $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
);
const LAST_EVENT: &str =
    concat!("SELECT ", event_cols!(), " FROM model_alias_events WHERE model = $1 ORDER BY seq DESC LIMIT 1");
const HISTORY: &str = concat!(
    "SELECT ",
    event_cols!(),
    " FROM model_alias_events WHERE model = $1 AND (CAST($2 AS TEXT) IS NULL OR alias = $2) \
     ORDER BY seq DESC LIMIT $3"
);
const HOLDER_AT: &str = "SELECT to_version FROM model_alias_events WHERE model = $1 AND alias = $2 AND at <= $3 \
     AND kind IN ('promote', 'rollback') ORDER BY seq DESC LIMIT 1";
const RUN_STATUS: &str = "SELECT status FROM runs WHERE id = $1";
/// Whether a step of run `$1` output an artifact with content hash `$2`
/// (cached steps' outputs are linked to them too).
const RUN_OUTPUT_HASH: &str = "SELECT EXISTS(SELECT 1 FROM step_runs sr \
     JOIN step_run_outputs o ON o.step_run_id = sr.id JOIN artifact_versions av ON av.id = o.artifact_version_id \
     WHERE sr.run_id = $1 AND av.content_hash = $2)";
const IS_PROTECTED: &str = "SELECT EXISTS(SELECT 1 FROM model_protections WHERE model = $1 AND alias = $2)";
const PROTECTIONS: &str = "SELECT model, alias FROM model_protections \
     WHERE (CAST($1 AS TEXT) IS NULL OR model = $1) ORDER BY model, alias";
const PROTECT: &str = "INSERT INTO model_protections (model, alias, since) VALUES ($1, $2, $3)";
const UNPROTECT: &str = "DELETE FROM model_protections WHERE model = $1 AND alias = $2";
const ARTIFACT_EXISTS: &str = "SELECT EXISTS(SELECT 1 FROM artifact_versions WHERE id = $1)";
/// The failed checks of run `$1`, its cached steps' included (they keep
/// the checks of the step runs they reuse).
const RUN_FAILED_CHECKS: &str = "SELECT sr.invocation, c.name FROM checks c JOIN step_runs sr ON sr.run_id = $1 \
     AND (c.step_run_id = sr.id OR c.step_run_id = sr.original_step_run) WHERE c.status = 'fail' \
     ORDER BY sr.invocation, c.name";

/// Every statement, for the tests that check them.
#[cfg(test)]
pub(crate) fn all() -> Vec<&'static str> {
    vec![
        CREATE_MODEL,
        DESCRIBE_MODEL,
        MODELS,
        MODEL,
        VERSION_BY_HASH,
        INSERT_VERSION,
        VERSIONS,
        VERSION,
        VERSION_NUMBERS,
        ALIASES,
        HOLDER,
        SET_ALIAS,
        DROP_ALIAS,
        APPEND_EVENT,
        LAST_EVENT,
        HISTORY,
        HOLDER_AT,
        RUN_STATUS,
        RUN_OUTPUT_HASH,
        IS_PROTECTED,
        PROTECTIONS,
        PROTECT,
        UNPROTECT,
        ARTIFACT_EXISTS,
        RUN_FAILED_CHECKS,
    ]
}

fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, MetadataError> {
    serde_json::from_str(text).map_err(corrupt)
}

fn to_json(value: &impl serde::Serialize) -> Result<String, MetadataError> {
    serde_json::to_string(value).map_err(corrupt)
}

fn model_row(r: &dyn SqlRow) -> Result<Model, MetadataError> {
    Ok(Model { name: r.text(0)?, description: r.text(1)?, tags: json(&r.text(2)?)?, created_at: r.int(3)? })
}

fn version_row(r: &dyn SqlRow) -> Result<ModelVersion, MetadataError> {
    Ok(ModelVersion {
        model: r.text(0)?,
        version: r.int(1)?,
        artifact_version: r.text(2)?,
        content_hash: ContentHash::from_hex(&r.text(3)?).map_err(corrupt)?,
        run_id: r.opt_text(4)?,
        step_run: r.opt_text(5)?,
        git_commit: r.opt_text(6)?,
        code_hashes: json(&r.text(7)?)?,
        data_hashes: json(&r.text(8)?)?,
        metrics: json(&r.text(9)?)?,
        tags: json(&r.text(10)?)?,
        samples: json(&r.text(11)?)?,
        created_at: r.int(12)?,
        aliases: Vec::new(),
    })
}

fn holder_row(r: &dyn SqlRow) -> Result<AliasHolder, MetadataError> {
    Ok(AliasHolder { alias: r.text(0)?, version: r.int(1)?, since: r.int(2)? })
}

fn event_row(r: &dyn SqlRow) -> Result<AliasEvent, MetadataError> {
    Ok(AliasEvent {
        model: r.text(0)?,
        seq: r.int(1)?,
        alias: r.text(2)?,
        from: r.opt_int(3)?,
        to: r.opt_int(4)?,
        kind: EventKind::parse(&r.text(5)?)?,
        actor: r.text(6)?,
        reason: r.opt_text(7)?,
        run_id: r.opt_text(8)?,
        ci_job_url: r.opt_text(9)?,
        forced: r.int(10)? != 0,
        at: r.int(11)?,
    })
}

fn int_row(r: &dyn SqlRow) -> Result<i64, MetadataError> {
    r.int(0)
}

fn opt_int_row(r: &dyn SqlRow) -> Result<Option<i64>, MetadataError> {
    r.opt_int(0)
}

fn bool_row(r: &dyn SqlRow) -> Result<bool, MetadataError> {
    r.flag(0)
}

fn pair_row(r: &dyn SqlRow) -> Result<(String, String), MetadataError> {
    Ok((r.text(0)?, r.text(1)?))
}

fn text_row(r: &dyn SqlRow) -> Result<String, MetadataError> {
    r.text(0)
}

/// Fills in the aliases each version holds.
async fn with_aliases(
    tx: &mut impl Tx,
    model: &str,
    mut versions: Vec<ModelVersion>,
) -> Result<Vec<ModelVersion>, MetadataError> {
    if versions.is_empty() {
        return Ok(versions);
    }
    for h in tx.query(ALIASES, &[model.into()], holder_row).await? {
        if let Some(v) = versions.iter_mut().find(|v| v.version == h.version) {
            v.aliases.push(h.alias);
        }
    }
    Ok(versions)
}

async fn unknown_model(tx: &mut impl Tx, model: &str) -> Result<RegistryError, MetadataError> {
    let known = tx.query(MODELS, &[], model_row).await?.into_iter().map(|m| m.name).collect();
    Ok(RegistryError::UnknownModel { model: model.into(), known })
}

async fn require_model(tx: &mut impl Tx, model: &str) -> Result<(), RegistryError> {
    if tx.query(MODEL, &[model.into()], model_row).await?.is_empty() {
        return Err(unknown_model(tx, model).await?);
    }
    Ok(())
}

/// [`ModelRegistry::register`], in the model's write transaction.
pub(crate) async fn register(tx: &mut impl Tx, v: &NewModelVersion) -> Result<ModelVersion, RegistryError> {
    validate_model_name(&v.model)?;
    let hash = v.content_hash.to_hex();
    let exists = tx.query(ARTIFACT_EXISTS, &[(&v.artifact_version).into()], bool_row).await?;
    if !exists.first().copied().unwrap_or(false) {
        return Err(MetadataError::NotFound(format!(
            "artifact version `{}` (of the model version to register)",
            v.artifact_version
        ))
        .into());
    }
    let at = now();
    let [code, data, metrics, tags, samples] = [
        to_json(&v.code_hashes)?,
        to_json(&v.data_hashes)?,
        to_json(&v.metrics)?,
        to_json(&v.tags)?,
        to_json(&v.samples)?,
    ];
    tx.execute(CREATE_MODEL, &[(&v.model).into(), at.into()]).await?;
    // Identical bytes are the version that has them (UNIQUE content hash),
    // however many runs register them at once.
    tx.execute(
        INSERT_VERSION,
        &[
            (&v.model).into(),
            (&v.artifact_version).into(),
            (&hash).into(),
            (&v.run_id).into(),
            (&v.step_run).into(),
            (&v.git_commit).into(),
            (&code).into(),
            (&data).into(),
            (&metrics).into(),
            (&tags).into(),
            (&samples).into(),
            at.into(),
        ],
    )
    .await?;
    let found = tx.query(VERSION_BY_HASH, &[(&v.model).into(), (&hash).into()], version_row).await?;
    let Some(version) = found.into_iter().next() else {
        return Err(
            MetadataError::Corrupt(format!("model `{}`: the version just registered is not there", v.model)).into()
        );
    };
    Ok(with_aliases(tx, &v.model, vec![version]).await?.remove(0))
}

/// [`ModelRegistry::describe_model`].
pub(crate) async fn describe(
    tx: &mut impl Tx,
    model: &str,
    description: &str,
    tags: &BTreeMap<String, String>,
) -> Result<Model, RegistryError> {
    validate_model_name(model)?;
    let tags = to_json(tags)?;
    tx.execute(DESCRIBE_MODEL, &[model.into(), description.into(), (&tags).into(), now().into()]).await?;
    let found = tx.query(MODEL, &[model.into()], model_row).await?;
    found.into_iter().next().ok_or_else(|| MetadataError::Corrupt(format!("model `{model}` vanished")).into())
}

/// [`ModelRegistry::models`].
pub(crate) async fn models(tx: &mut impl Tx) -> Result<Vec<Model>, RegistryError> {
    Ok(tx.query(MODELS, &[], model_row).await?)
}

/// [`ModelRegistry::model`].
pub(crate) async fn model(tx: &mut impl Tx, model: &str) -> Result<Option<Model>, RegistryError> {
    Ok(tx.query(MODEL, &[model.into()], model_row).await?.into_iter().next())
}

/// [`ModelRegistry::versions`].
pub(crate) async fn versions(tx: &mut impl Tx, model: &str) -> Result<Vec<ModelVersion>, RegistryError> {
    require_model(tx, model).await?;
    let versions = tx.query(VERSIONS, &[model.into()], version_row).await?;
    Ok(with_aliases(tx, model, versions).await?)
}

/// [`ModelRegistry::version`].
pub(crate) async fn version(
    tx: &mut impl Tx,
    model: &str,
    version: i64,
) -> Result<Option<ModelVersion>, RegistryError> {
    require_model(tx, model).await?;
    let found = tx.query(VERSION, &[model.into(), version.into()], version_row).await?;
    Ok(with_aliases(tx, model, found).await?.into_iter().next())
}

/// [`ModelRegistry::aliases`].
pub(crate) async fn aliases(tx: &mut impl Tx, model: &str) -> Result<Vec<AliasHolder>, RegistryError> {
    require_model(tx, model).await?;
    Ok(tx.query(ALIASES, &[model.into()], holder_row).await?)
}

/// [`ModelRegistry::resolve`].
pub(crate) async fn resolve(tx: &mut impl Tx, model: &str, alias: &str) -> Result<Option<ModelVersion>, RegistryError> {
    validate_alias(alias)?;
    require_model(tx, model).await?;
    let Some(holder) = tx.query(HOLDER, &[model.into(), alias.into()], holder_row).await?.into_iter().next() else {
        return Ok(None);
    };
    let found = tx.query(VERSION, &[model.into(), holder.version.into()], version_row).await?;
    Ok(with_aliases(tx, model, found).await?.into_iter().next())
}

/// [`ModelRegistry::history`].
pub(crate) async fn history(
    tx: &mut impl Tx,
    model: &str,
    alias: Option<&str>,
    limit: usize,
) -> Result<Vec<AliasEvent>, RegistryError> {
    if let Some(a) = alias {
        validate_alias(a)?;
    }
    require_model(tx, model).await?;
    Ok(tx.query(HISTORY, &[model.into(), alias.into(), limit.into()], event_row).await?)
}

/// [`ModelRegistry::holder_at`].
pub(crate) async fn holder_at(
    tx: &mut impl Tx,
    model: &str,
    alias: &str,
    at: Timestamp,
) -> Result<Option<i64>, RegistryError> {
    validate_alias(alias)?;
    require_model(tx, model).await?;
    let found = tx.query(HOLDER_AT, &[model.into(), alias.into(), at.into()], opt_int_row).await?;
    Ok(found.into_iter().next().flatten())
}

/// Whether the alias `p` moves is protected (by the client's declaration
/// or by the registry's own rule) and, if so, whether the target version's
/// evidence passed: the cited run (for a rollback without one, the run that
/// produced the version) exists, did not fail, failed no check, and output
/// the version's bytes. `None`: not protected, or forced.
async fn evidence(tx: &mut impl Tx, p: &Promotion) -> Result<Option<Result<(), String>>, RegistryError> {
    if p.force {
        return Ok(None);
    }
    let kept = tx.query(IS_PROTECTED, &[(&p.model).into(), (&p.alias).into()], bool_row).await?;
    if !(p.protected || kept.first().copied().unwrap_or(false)) {
        return Ok(None);
    }
    let Some(to) = p.to else { return Ok(Some(Err("it cannot be taken off every version".into()))) };
    let version = tx.query(VERSION, &[(&p.model).into(), to.into()], version_row).await?;
    let Some(version) = version.into_iter().next() else { return Ok(Some(Err(format!("v{to} does not exist")))) };
    let run = match (&p.run_id, p.kind, &version.run_id) {
        (Some(run), _, _) => run.clone(),
        (None, EventKind::Rollback, Some(producer)) => producer.clone(),
        (None, EventKind::Rollback, None) => return Ok(Some(Err(format!("v{to} records no run that produced it")))),
        (None, _, _) => {
            return Ok(Some(Err(format!(
            "no run was given: pass --run with the run that produced v{to}, or a later run that appraised exactly it"
        ))))
        }
    };
    let status = tx.query(RUN_STATUS, &[(&run).into()], text_row).await?;
    let status = status.first().map(|s| zenflow_core::metadata::RunStatus::parse(s)).transpose()?;
    let failed = tx.query(RUN_FAILED_CHECKS, &[(&run).into()], pair_row).await?;
    let hash = version.content_hash.to_hex();
    let produced = tx.query(RUN_OUTPUT_HASH, &[(&run).into(), (&hash).into()], bool_row).await?;
    let found = RunEvidence {
        status,
        failed_checks: failed.iter().map(|(step, check)| format!("{step}.{check}")).collect(),
        produced: produced.first().copied().unwrap_or(false),
    };
    Ok(Some(judge_evidence(&run, to, &version.content_hash, &found)))
}

/// [`ModelRegistry::set_protection`], in the model's write transaction.
pub(crate) async fn set_protection(tx: &mut impl Tx, c: &Protection) -> Result<Option<AliasEvent>, RegistryError> {
    validate_model_name(&c.model)?;
    validate_alias(&c.alias)?;
    if !c.protect && c.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(RegistryError::UnprotectReasonRequired { model: c.model.clone(), alias: c.alias.clone() });
    }
    let at = now();
    tx.execute(CREATE_MODEL, &[(&c.model).into(), at.into()]).await?;
    let is = tx.query(IS_PROTECTED, &[(&c.model).into(), (&c.alias).into()], bool_row).await?;
    if is.first().copied().unwrap_or(false) == c.protect {
        return Ok(None);
    }
    let (sql, kind) = if c.protect { (PROTECT, EventKind::Protect) } else { (UNPROTECT, EventKind::Unprotect) };
    let params: Vec<Value<'_>> = if c.protect {
        vec![(&c.model).into(), (&c.alias).into(), at.into()]
    } else {
        vec![(&c.model).into(), (&c.alias).into()]
    };
    tx.execute(sql, &params).await?;
    let event = AliasEvent {
        model: c.model.clone(),
        seq: 0,
        alias: c.alias.clone(),
        from: None,
        to: None,
        kind,
        actor: c.actor.clone(),
        reason: c.reason.clone(),
        run_id: None,
        ci_job_url: c.ci_job_url.clone(),
        forced: false,
        at,
    };
    append_event(tx, &event).await.map(Some)
}

/// Appends `event` to its model's log (the store numbers it: `seq` is
/// ignored) and returns it as recorded.
async fn append_event(tx: &mut impl Tx, e: &AliasEvent) -> Result<AliasEvent, RegistryError> {
    let params = [
        (&e.model).into(),
        (&e.alias).into(),
        e.from.into(),
        e.to.into(),
        e.kind.as_str().into(),
        (&e.actor).into(),
        (&e.reason).into(),
        (&e.run_id).into(),
        (&e.ci_job_url).into(),
        i64::from(e.forced).into(),
        e.at.into(),
    ];
    tx.execute(APPEND_EVENT, &params).await?;
    let event = tx.query(LAST_EVENT, &[(&e.model).into()], event_row).await?;
    event.into_iter().next().ok_or_else(|| {
        MetadataError::Corrupt(format!("model `{}`: the event just appended is not there", e.model)).into()
    })
}

/// [`ModelRegistry::protections`].
pub(crate) async fn protections(tx: &mut impl Tx, model: Option<&str>) -> Result<Vec<(String, String)>, RegistryError> {
    Ok(tx.query(PROTECTIONS, &[model.into()], pair_row).await?)
}

/// [`ModelRegistry::promote`], in the model's write transaction: checks,
/// the compare-and-swap, and the event, or nothing.
pub(crate) async fn promote(tx: &mut impl Tx, p: &Promotion) -> Result<Promoted, RegistryError> {
    validate_model_name(&p.model)?;
    validate_alias(&p.alias)?;
    require_model(tx, &p.model).await?;
    if let Some(to) = p.to {
        if tx.query(VERSION, &[(&p.model).into(), to.into()], version_row).await?.is_empty() {
            let known = tx.query(VERSION_NUMBERS, &[(&p.model).into()], int_row).await?;
            return Err(RegistryError::UnknownVersion { model: p.model.clone(), version: to, known });
        }
    }
    let holder = tx
        .query(HOLDER, &[(&p.model).into(), (&p.alias).into()], holder_row)
        .await?
        .into_iter()
        .next()
        .map(|h| (h.version, h.since));
    let evidence = evidence(tx, p).await?;
    let Some((from, to)) = decide(p, holder, evidence)? else {
        return Ok(Promoted::AlreadyHeld);
    };
    let at = now();
    match to {
        Some(v) => tx.execute(SET_ALIAS, &[(&p.model).into(), (&p.alias).into(), v.into(), at.into()]).await?,
        None => tx.execute(DROP_ALIAS, &[(&p.model).into(), (&p.alias).into()]).await?,
    };
    let event = AliasEvent {
        model: p.model.clone(),
        seq: 0,
        alias: p.alias.clone(),
        from,
        to,
        kind: p.kind,
        actor: p.actor.clone(),
        reason: p.reason.clone(),
        run_id: p.run_id.clone(),
        ci_job_url: p.ci_job_url.clone(),
        forced: p.force,
        at,
    };
    append_event(tx, &event).await.map(Promoted::Moved)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_first_appear_in_ascending_order() {
        super::super::statements::check_placeholders(&super::all());
    }
}
