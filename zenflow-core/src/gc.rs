//! Deleting runs and collecting what nothing uses: `runs delete` and `gc`.
//!
//! Two stores, two phases. The metadata store deletes each run in one
//! transaction ([`MetadataStore::delete_run`]), keeping every artifact
//! version a remaining run, a model version or a kept cache entry uses.
//! Then the artifact store's objects that no artifact version has any more
//! move to the trash, and leave it only after a grace period, when nothing
//! has taken them up again ([`ArtifactStore`] says why that is safe beside
//! running pipelines). A run that is running is never deleted.
//!
//! [`MetadataStore::delete_run`]: crate::metadata::MetadataStore::delete_run

use crate::artifact_store::{ArtifactStore, Shelf, StoredObject};
use crate::error::Result;
use crate::metadata::{ArtifactVersion, RunRecord, RunStatus, Timestamp};
use crate::stack::stores::Stores;
use crate::ContentHash;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How long an unused object waits before `gc` moves it to the trash, and
/// then before it deletes it from there, by default: far longer than any
/// run takes between storing an object and recording it.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// Which runs `gc` deletes. With neither limit, none: `gc` then only
/// collects objects.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Runs that started longer ago than this.
    pub older_than: Option<Duration>,
    /// But never the newest this many (not pending) runs of each pipeline.
    pub keep_last: Option<usize>,
}

/// How a deletion goes.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// How long an unused object stays before it goes to the trash, and in
    /// the trash before it is deleted ([`DEFAULT_GRACE`]). Zero collects at
    /// once: safe only while nothing runs on the stack.
    pub grace: Duration,
    /// Say what would go, and change nothing.
    pub dry_run: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { grace: DEFAULT_GRACE, dry_run: false }
    }
}

/// What a deletion did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// The runs deleted.
    pub runs: Vec<DeletedRun>,
    /// Step runs removed.
    pub step_runs: u64,
    /// Step runs of deleted runs kept, hidden, because what they produced
    /// is still used (they keep serving the cache).
    pub kept_step_runs: u64,
    /// Artifact versions removed.
    pub artifact_versions: u64,
    /// What happened to the artifact store's objects.
    pub objects: Objects,
}

/// A deleted run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeletedRun {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its pipeline.
    pub pipeline: String,
    /// Its status.
    pub status: RunStatus,
    /// When it started.
    pub started_at: Timestamp,
    /// Artifact versions removed with it.
    pub artifact_versions: u64,
}

/// Objects, counted with their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// How many.
    pub count: u64,
    /// Their size in bytes.
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, o: &StoredObject) {
        self.count += 1;
        self.bytes += o.size;
    }
}

/// What collecting the artifact store's objects did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Objects {
    /// Unused objects moved to the trash.
    pub trashed: Tally,
    /// Objects deleted from the trash.
    pub deleted: Tally,
    /// Trashed objects taken up again since, moved back.
    pub restored: Tally,
    /// Unused objects younger than the grace period: a later `gc` trashes them.
    pub waiting: Tally,
    /// Objects in the trash for less than the grace period: a later `gc`
    /// deletes them.
    pub in_trash: Tally,
    /// Objects the store failed to move or delete (see `errors`): they stay
    /// where they are, for a later `gc`.
    pub failed: Tally,
    /// The first few of those failures, each `HASH: error`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The runs among `runs` that `policy` deletes, as of `now`: never a
/// running one; pending ones (planned, maybe never started) only by age,
/// and not counted among the newest kept.
pub fn select(runs: &[RunRecord], policy: &Policy, now: Timestamp) -> Vec<RunRecord> {
    if policy.older_than.is_none() && policy.keep_last.is_none() {
        return Vec::new();
    }
    let old = |r: &RunRecord| policy.older_than.is_none_or(|age| now.saturating_sub(r.started_at) > micros(age));
    let mut by_pipeline: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for r in runs {
        by_pipeline.entry(&r.pipeline).or_default().push(r);
    }
    let mut chosen = Vec::new();
    for mut runs in by_pipeline.into_values() {
        runs.sort_by(|a, b| b.started_at.cmp(&a.started_at).then_with(|| b.id.cmp(&a.id)));
        let mut kept = 0;
        for r in runs {
            match r.status {
                RunStatus::Running => {}
                RunStatus::Pending if policy.older_than.is_some() && old(r) => chosen.push(r.clone()),
                RunStatus::Pending => {}
                _ if policy.keep_last.is_some_and(|n| kept < n) => kept += 1,
                _ if old(r) => chosen.push(r.clone()),
                _ => {}
            }
        }
    }
    chosen
}

/// Deletes `runs` (one transaction each), then collects the objects no
/// artifact version has. Refused before anything goes when one of `runs`
/// is running, or when the artifact store belongs to another metadata
/// store ([`claim_artifacts`]). A run another deletion removed
/// meanwhile (two `gc`s at once) is passed over.
pub async fn delete(stores: &Stores, runs: &[RunRecord], options: Options) -> Result<Report> {
    claim_artifacts(stores, !options.dry_run).await?;
    if let Some(running) = runs.iter().find(|r| r.status == RunStatus::Running) {
        let (run, status) = (running.name.clone(), running.status);
        return Err(crate::metadata::MetadataError::RunActive { run, status }.into());
    }
    let mut report = Report { dry_run: options.dry_run, ..Report::default() };
    let mut removed: Vec<ArtifactVersion> = Vec::new();
    for run in runs {
        let deletion = match stores.metadata().delete_run(&run.id, options.dry_run).await {
            Ok(deletion) => deletion,
            Err(crate::metadata::MetadataError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        report.step_runs += deletion.step_runs;
        // A count of the whole store (every deleted run's kept step runs),
        // so the last deletion's is the one that holds.
        report.kept_step_runs = deletion.kept_step_runs;
        report.artifact_versions += deletion.artifacts.len() as u64;
        report.runs.push(DeletedRun {
            id: run.id.clone(),
            name: run.name.clone(),
            pipeline: run.pipeline.clone(),
            status: run.status,
            started_at: run.started_at,
            artifact_versions: deletion.artifacts.len() as u64,
        });
        removed.extend(deletion.artifacts);
    }
    // A dry run removed nothing: what it would have removed no longer counts.
    let forgotten = if options.dry_run { removed.as_slice() } else { &[] };
    report.objects = collect(stores, options, forgotten).await?;
    Ok(report)
}

/// Checks that the artifact store belongs to this metadata store (the
/// [`owner`](ArtifactStore::owner) it records is the metadata store's
/// [`store_id`](crate::metadata::MetadataStore::store_id)), claiming it
/// when nobody has, unless `claim` is false. Another owner is refused: its
/// `gc` collects the objects this store's runs write, which its records do
/// not name. Checked once per [`Stores`]: a run's start pays it, not each
/// step.
pub async fn claim_artifacts(stores: &Stores, claim: bool) -> Result<()> {
    if stores.artifacts_claimed().initialized() {
        return Ok(());
    }
    let me = stores.metadata().store_id().await?;
    let owner = stores.artifacts().owner(claim.then_some(me.as_str())).await?;
    match owner {
        Some(owner) if owner != me => Err(crate::Error::Usage(format!(
            "artifact store {} belongs to another metadata store (id {owner}; {}, this stack's, is {me}): its `gc` \
             would collect the objects this stack writes, which its records do not name. Give this stack an \
             artifact store of its own, or the other stack's metadata store; if that store is gone for good, \
             delete the object `zenflow-owner` at the artifact store's root",
            stores.artifacts().url(),
            stores.metadata().url(),
        ))),
        Some(_) => {
            let _ = stores.artifacts_claimed().set(());
            Ok(())
        }
        None if claim => {
            let _ = stores.artifacts_claimed().set(());
            Ok(())
        }
        None => Ok(()),
    }
}

/// `gc`: deletes the runs of `pipeline` (of every pipeline when `None`)
/// that `policy` selects, then collects objects (of the whole store).
pub async fn gc(stores: &Stores, pipeline: Option<&str>, policy: &Policy, options: Options) -> Result<Report> {
    let runs = stores.metadata().list_runs(pipeline, usize::MAX).await?;
    let chosen = select(&runs, policy, crate::metadata::now());
    delete(stores, &chosen, options).await
}

/// Moves objects no artifact version has (but those of `forgotten`, which
/// a dry run pretends are gone) and older than the grace period to the
/// trash; moves trashed ones an artifact version has taken up again back
/// at once, and deletes the others once they have been there for the
/// grace period. An object that cannot be moved or deleted is counted as
/// failed, and the rest go on.
async fn collect(stores: &Stores, options: Options, forgotten: &[ArtifactVersion]) -> Result<Objects> {
    let artifacts: &dyn ArtifactStore = stores.artifacts().as_ref();
    let grace = micros(options.grace);
    let mut objects = Objects::default();
    let live = artifacts.list(Shelf::Live).await?;
    let used = in_use(stores, forgotten).await?;
    let now = crate::metadata::now();
    for o in live.iter().filter(|o| !used.contains_key(&o.hash)) {
        if now.saturating_sub(o.since) < grace {
            objects.waiting.add(o);
        } else {
            objects.act(o, options.dry_run, Act::Trash, artifacts.trash(&o.hash)).await;
        }
    }
    // Read after the trash is listed: a version recorded before this read
    // is seen, and one recorded after it reused bytes the purge spares
    // (they were trashed less than `grace` ago, far longer than a run
    // takes from storing to recording).
    let trash = artifacts.list(Shelf::Trash).await?;
    let used = in_use(stores, forgotten).await?;
    let now = crate::metadata::now();
    for o in &trash {
        if used.contains_key(&o.hash) {
            objects.act(o, options.dry_run, Act::Restore, artifacts.restore(&o.hash)).await;
        } else if now.saturating_sub(o.since) < grace {
            objects.in_trash.add(o);
        } else {
            objects.act(o, options.dry_run, Act::Purge, artifacts.purge(&o.hash)).await;
        }
    }
    Ok(objects)
}

/// What is done to an object.
#[derive(Clone, Copy)]
enum Act {
    Trash,
    Restore,
    Purge,
}

impl Objects {
    /// Counts `o` as `act` says, once `done` (not run on a dry run) has
    /// done it; as failed, with the store's error, if it could not.
    async fn act(
        &mut self,
        o: &StoredObject,
        dry_run: bool,
        act: Act,
        done: impl std::future::Future<Output = std::result::Result<(), crate::artifact_store::StoreError>>,
    ) {
        if !dry_run {
            if let Err(e) = done.await {
                tracing::warn!("gc: object {}: {e}", o.hash);
                self.failed.add(o);
                if self.errors.len() < MAX_ERRORS {
                    self.errors.push(format!("{}: {e}", o.hash));
                }
                return;
            }
        }
        match act {
            Act::Trash => self.trashed.add(o),
            Act::Restore => self.restored.add(o),
            Act::Purge => self.deleted.add(o),
        }
    }
}

/// How many objects' errors a report keeps (the others are counted).
const MAX_ERRORS: usize = 5;

/// How many artifact versions have each content hash, less `forgotten`.
async fn in_use(stores: &Stores, forgotten: &[ArtifactVersion]) -> Result<HashMap<ContentHash, u64>> {
    let mut used = stores.metadata().content_hashes().await?;
    for v in forgotten {
        if let Some(n) = used.get_mut(&v.content_hash) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                used.remove(&v.content_hash);
            }
        }
    }
    Ok(used)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;

    fn run(name: &str, pipeline: &str, status: RunStatus, days_ago: i64) -> RunRecord {
        RunRecord {
            id: format!("id-{name}"),
            pipeline: pipeline.into(),
            name: name.into(),
            status,
            stack: "local".into(),
            config: serde_json::Value::Null,
            plan_json: String::new(),
            git_commit: None,
            git_branch: None,
            ci_job_url: None,
            started_at: 100 * DAY - days_ago * DAY,
            ended_at: None,
            error: None,
        }
    }

    fn chosen(runs: &[RunRecord], older_than_days: Option<u64>, keep_last: Option<usize>) -> Vec<String> {
        let policy = Policy { older_than: older_than_days.map(|d| Duration::from_secs(d * 86_400)), keep_last };
        select(runs, &policy, 100 * DAY).into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn the_newest_runs_of_each_pipeline_are_kept_and_running_ones_never_go() {
        use RunStatus::*;
        let runs = [
            run("a1", "a", Completed, 1),
            run("a2", "a", Failed, 2),
            run("a3", "a", Completed, 40),
            run("a-now", "a", Running, 50),
            run("b1", "b", Completed, 35),
            run("b2", "b", Completed, 60),
        ];
        assert_eq!(chosen(&runs, None, Some(1)), ["a2", "a3", "b2"]);
        assert_eq!(chosen(&runs, Some(30), None), ["a3", "b1", "b2"]);
        assert_eq!(chosen(&runs, Some(30), Some(2)), ["a3"], "both limits: old and not among the newest");
        assert!(chosen(&runs, None, None).is_empty(), "no limit deletes nothing");
        assert!(chosen(&runs, Some(0), Some(0)).iter().all(|n| n != "a-now"), "never a running run");
    }

    #[test]
    fn pending_runs_go_by_age_only_and_are_not_counted_among_the_newest() {
        use RunStatus::*;
        let runs = [run("p-new", "a", Pending, 0), run("p-old", "a", Pending, 40), run("done", "a", Completed, 1)];
        assert!(
            chosen(&runs, None, Some(0)).iter().all(|n| n.starts_with("done")),
            "keep-last alone spares pending runs"
        );
        assert_eq!(chosen(&runs, Some(30), Some(1)), ["p-old"], "a pending run does not take the kept place");
    }
}
