//! Deleting a run, in SQL for both stores, written once over
//! [`Tx`](super::registry::Tx): what [`MetadataStore::delete_run`] does.
//!
//! A deleted run is hidden at once (`deleted_at`). Then every step run of a
//! deleted run that nothing uses any more goes, with what it wrote. A step
//! run is *used* when a step run of a remaining run was served from it
//! (`original_step_run`: a cache entry, even one without outputs, and the
//! checks a cached step reports), an artifact version it produced is
//! linked by a remaining run (a cache hit, an input) or held by a model
//! version, it belongs to a run a model version names (the evidence a
//! protected alias is judged by: every check of that run), or it produced
//! what a used step run links (an input: the lineage; a cached output: what
//! the kept record points at). A deleted run with no step run left goes too.
//!
//! **Beside running writers.** A writer that links an existing artifact
//! version checks, in its own transaction, that it exists: SQLite runs one
//! write transaction at a time, and PostgreSQL's check takes a key-share
//! lock on the row that this transaction's row locks conflict with. So
//! either the deletion sees the link, and keeps what it links, or the
//! writer sees the version gone ([`MetadataError::ArtifactGone`]).
//!
//! [`MetadataStore::delete_run`]: zenflow_core::metadata::MetadataStore::delete_run

use super::registry::Tx;
use super::statements as q;
use super::{rows, SqlRow};
use zenflow_core::metadata::{ArtifactVersion, Deletion, MetadataError, RunStatus, Timestamp};

/// Run `$1`'s status and name, unless it is deleted.
const RUN: &str = "SELECT status, name FROM runs WHERE id = $1 AND deleted_at IS NULL";

/// Hides run `$2` as deleted at `$1`, unless it is running (on
/// PostgreSQL the condition is checked again once a concurrent start of a
/// pending run commits). Its name is free again: a deleted run that is
/// kept goes by its id.
const HIDE: &str =
    "UPDATE runs SET deleted_at = $1, name = id WHERE id = $2 AND deleted_at IS NULL AND status <> 'running'";

/// `gone`: the step runs of deleted runs; `used`: those of them still used
/// (see the module's documentation).
macro_rules! usage {
    () => {
        "WITH RECURSIVE \
         gone(id) AS (SELECT sr.id FROM runs r JOIN step_runs sr ON sr.run_id = r.id \
           WHERE r.deleted_at IS NOT NULL), \
         used(id) AS (\
           SELECT s.original_step_run FROM runs k JOIN step_runs s ON s.run_id = k.id \
           WHERE k.deleted_at IS NULL AND s.original_step_run IN (SELECT id FROM gone) \
           UNION \
           SELECT sr.id FROM step_runs sr JOIN model_versions mv ON mv.run_id = sr.run_id \
           WHERE sr.id IN (SELECT id FROM gone) \
           UNION \
           SELECT av.producer_step_run FROM gone g JOIN artifact_versions av ON av.producer_step_run = g.id \
           WHERE EXISTS (SELECT 1 FROM step_run_outputs o JOIN step_runs s ON s.id = o.step_run_id \
               JOIN runs k ON k.id = s.run_id WHERE o.artifact_version_id = av.id AND k.deleted_at IS NULL) \
             OR EXISTS (SELECT 1 FROM step_run_inputs i JOIN step_runs s ON s.id = i.step_run_id \
               JOIN runs k ON k.id = s.run_id WHERE i.artifact_version_id = av.id AND k.deleted_at IS NULL) \
             OR EXISTS (SELECT 1 FROM model_versions mv WHERE mv.artifact_version_id = av.id) \
           UNION \
           SELECT av.producer_step_run FROM used u \
             JOIN (SELECT step_run_id, artifact_version_id FROM step_run_inputs \
               UNION ALL SELECT step_run_id, artifact_version_id FROM step_run_outputs) l ON l.step_run_id = u.id \
             JOIN artifact_versions av ON av.id = l.artifact_version_id \
           WHERE av.producer_step_run IN (SELECT id FROM gone)) "
    };
}

/// The step runs of deleted runs that nothing uses.
const UNUSED: &str = concat!(usage!(), "SELECT g.id FROM gone g WHERE g.id NOT IN (SELECT id FROM used) ORDER BY g.id");

/// How many step runs of deleted runs are still used.
const USED: &str = concat!(usage!(), "SELECT COUNT(*) FROM used");

/// PostgreSQL: locks the artifact versions [`UNUSED`] step runs produced,
/// failing at once (`55P03`, retried) if a writer holds one: it is linking
/// it, and the next attempt sees that link.
pub(crate) const LOCK_UNUSED: &str = concat!(
    usage!(),
    "SELECT av.id FROM artifact_versions av WHERE av.producer_step_run IN \
     (SELECT g.id FROM gone g WHERE g.id NOT IN (SELECT id FROM used)) FOR UPDATE NOWAIT"
);

/// What refers to step run `$1`, in the order it must go: before the
/// artifact versions (its input and output links) and the step run itself.
const LINKS: [&str; 4] = [
    "DELETE FROM checks WHERE step_run_id = $1",
    "DELETE FROM run_metadata WHERE step_run_id = $1",
    "DELETE FROM step_run_inputs WHERE step_run_id = $1",
    "DELETE FROM step_run_outputs WHERE step_run_id = $1",
];
const ARTIFACTS: &str = "DELETE FROM artifact_versions WHERE producer_step_run = $1";
const STEP_RUN: &str = "DELETE FROM step_runs WHERE id = $1";

/// Deleted runs with no step run left.
const EMPTY_RUNS: &str = "DELETE FROM runs WHERE deleted_at IS NOT NULL \
     AND NOT EXISTS (SELECT 1 FROM step_runs sr WHERE sr.run_id = runs.id)";

const SAVEPOINT: &str = "SAVEPOINT zenflow_dry_run";
const ROLLBACK: &str = "ROLLBACK TO SAVEPOINT zenflow_dry_run";
const RELEASE: &str = "RELEASE SAVEPOINT zenflow_dry_run";

/// Whether a store must lock what it deletes first ([`LOCK_UNUSED`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locking {
    /// One write transaction at a time (SQLite): nothing to lock.
    Serial,
    /// Concurrent writers (PostgreSQL): lock, failing if a writer holds it.
    RowLocks,
}

/// Deletes run `run_id` in `tx` (see the module's documentation); with
/// `dry_run`, undoes it before returning what it did.
pub(crate) async fn delete_run(
    tx: &mut impl Tx,
    run_id: &str,
    at: Timestamp,
    locking: Locking,
    dry_run: bool,
) -> Result<Deletion, MetadataError> {
    let run = tx.query(RUN, &[run_id.into()], |r| Ok((r.text(0)?, r.text(1)?))).await?;
    let Some((status, name)) = run.into_iter().next() else {
        return Err(MetadataError::NotFound(format!("run `{run_id}`")));
    };
    let status = RunStatus::parse(&status)?;
    if status == RunStatus::Running {
        return Err(MetadataError::RunActive { run: name, status });
    }
    if dry_run {
        tx.execute(SAVEPOINT, &[]).await?;
    }
    let deleted = remove(tx, run_id, at, locking).await;
    if dry_run {
        tx.execute(ROLLBACK, &[]).await?;
        tx.execute(RELEASE, &[]).await?;
    }
    deleted
}

/// Hides the run, then removes every unused step run of a deleted run.
async fn remove(tx: &mut impl Tx, run_id: &str, at: Timestamp, locking: Locking) -> Result<Deletion, MetadataError> {
    if tx.execute(HIDE, &[at.into(), run_id.into()]).await? == 0 {
        return Err(MetadataError::RunActive { run: run_id.to_string(), status: RunStatus::Running });
    }
    if locking == Locking::RowLocks {
        tx.query(LOCK_UNUSED, &[], |_| Ok(())).await?;
    }
    let unused = tx.query(UNUSED, &[], |r| r.text(0)).await?;
    let kept = tx.query(USED, &[], |r| r.int(0)).await?.pop().unwrap_or(0);
    for id in &unused {
        for sql in LINKS {
            tx.execute(sql, &[id.into()]).await?;
        }
    }
    let mut artifacts: Vec<ArtifactVersion> = Vec::new();
    for id in &unused {
        artifacts.extend(tx.query(q::ARTIFACTS_PRODUCED_BY, &[id.into()], produced).await?);
        tx.execute(ARTIFACTS, &[id.into()]).await?;
    }
    for id in &unused {
        tx.execute(STEP_RUN, &[id.into()]).await?;
    }
    tx.execute(EMPTY_RUNS, &[]).await?;
    Ok(Deletion {
        run: run_id.to_string(),
        step_runs: unused.len() as u64,
        kept_step_runs: u64::try_from(kept).unwrap_or(0),
        artifacts,
    })
}

fn produced(r: &dyn SqlRow) -> Result<ArtifactVersion, MetadataError> {
    rows::artifact_version(r, 0)
}

/// Sets the store's identity to `$1` unless it has one.
const CLAIM_IDENTITY: &str = "INSERT INTO store_identity (one, id) VALUES (1, $1) ON CONFLICT (one) DO NOTHING";
/// The store's identity.
pub(crate) const IDENTITY: &str = "SELECT id FROM store_identity WHERE one = 1";

/// The store's identity (see [`MetadataStore::store_id`]), set to a new
/// id by the first call.
///
/// [`MetadataStore::store_id`]: zenflow_core::metadata::MetadataStore::store_id
pub(crate) async fn store_id(tx: &mut impl Tx) -> Result<String, MetadataError> {
    tx.execute(CLAIM_IDENTITY, &[zenflow_core::metadata::new_id().as_str().into()]).await?;
    let id = tx.query(IDENTITY, &[], |r| r.text(0)).await?.pop();
    id.ok_or_else(|| MetadataError::Corrupt("the store has no identity".into()))
}

/// How many artifact versions have each content hash.
pub(crate) const CONTENT_HASHES: &str = "SELECT content_hash, COUNT(*) FROM artifact_versions GROUP BY content_hash";

/// The store's error within a registry write's error: a deletion has no
/// refusal of the registry's own.
pub(crate) fn store_error(e: zenflow_core::registry::RegistryError, location: &str) -> MetadataError {
    match e {
        zenflow_core::registry::RegistryError::Store(e) => e,
        other => MetadataError::Backend { location: location.to_string(), message: other.to_string() },
    }
}

/// A row of [`CONTENT_HASHES`].
pub(crate) fn hash_count(r: &(impl SqlRow + ?Sized)) -> Result<(zenflow_core::ContentHash, u64), MetadataError> {
    let hash = zenflow_core::ContentHash::from_hex(&r.text(0)?).map_err(super::corrupt)?;
    Ok((hash, u64::try_from(r.int(1)?).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_first_appear_in_ascending_order() {
        let mut all = vec![super::RUN, super::HIDE, super::UNUSED, super::USED, super::LOCK_UNUSED];
        all.extend(super::LINKS);
        all.extend([super::ARTIFACTS, super::STEP_RUN, super::EMPTY_RUNS, super::CONTENT_HASHES]);
        all.extend([super::CLAIM_IDENTITY, super::IDENTITY]);
        super::super::statements::check_placeholders(&all);
    }
}
