//! A run as a person names it: `latest`, `latest:PREFIX`, its name, its
//! id, or the start of its id, the one rule every command that takes a run
//! follows.

use crate::error::{Error, Result};
use crate::metadata::{is_id_prefix, MetadataStore, RunRecord, RunStatus};
use crate::stack::Stack;

/// How many of the newest runs `latest` and `latest:PREFIX` look through.
const LATEST_SCAN: usize = 1000;

/// The fewest characters of an id taken as its start (git takes four).
pub const MIN_ID_PREFIX: usize = 4;

/// How many runs an ambiguous id prefix lists.
const CANDIDATES: usize = 5;

/// What may name a run, for the messages that ask for one.
pub const RUN_REFERENCE_HELP: &str =
    "a run's name, its id or the start of it (4 characters at least), `latest`, or `latest:PREFIX`";

/// The run `reference` names, among the runs of `pipeline` (of every
/// pipeline when `None`) for `latest` and `latest:PREFIX`:
///
/// - `latest`: the newest run that started (not one still pending);
/// - `latest:PREFIX`: the newest completed run whose name starts with
///   PREFIX (a pull request's baseline: `latest:main-`);
/// - a run's name, or its id;
/// - the start of exactly one run's id, at least [`MIN_ID_PREFIX`]
///   characters, as git takes a commit's.
///
/// Errors: [`Error::NotFound`] when nothing matches, saying what may be
/// given; [`Error::Usage`] for the start of several ids, listing them.
pub async fn find_run(store: &dyn MetadataStore, pipeline: Option<&str>, reference: &str) -> Result<RunRecord> {
    let found = match reference.strip_prefix("latest") {
        Some("") => {
            let runs = store.list_runs(pipeline, LATEST_SCAN).await?;
            runs.into_iter().find(|r| r.status != RunStatus::Pending)
        }
        Some(rest) if rest.starts_with(':') => {
            let prefix = &rest[1..];
            let runs = store.list_runs(pipeline, LATEST_SCAN).await?;
            runs.into_iter().find(|r| r.status == RunStatus::Completed && r.name.starts_with(prefix))
        }
        _ => match store.get_run(reference).await? {
            Some(run) => Some(run),
            None => by_id_prefix(store, reference).await?,
        },
    };
    found.ok_or_else(|| {
        let of = pipeline.map_or(String::new(), |p| format!(" of pipeline `{p}`"));
        Error::NotFound(format!("no run{of} matches `{reference}` in {}; give {RUN_REFERENCE_HELP}", store.url()))
    })
}

/// The one run whose id starts with `prefix`, if any; an error naming the
/// candidates when several do.
async fn by_id_prefix(store: &dyn MetadataStore, prefix: &str) -> Result<Option<RunRecord>> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.len() < MIN_ID_PREFIX || !is_id_prefix(&prefix) {
        return Ok(None);
    }
    let mut runs = store.runs_with_id_prefix(&prefix, CANDIDATES + 1).await?;
    if runs.len() <= 1 {
        return Ok(runs.pop());
    }
    let listed: Vec<String> = runs.iter().take(CANDIDATES).map(|r| format!("{} ({})", r.id, r.name)).collect();
    let more = if runs.len() > CANDIDATES { ", ..." } else { "" };
    Err(Error::usage(format!(
        "`{prefix}` starts the ids of several runs: {}{more}; give more of the id, or the run's name",
        listed.join(", ")
    )))
}

impl Stack {
    /// [`find_run`] on this stack's metadata store.
    pub fn find_run(&self, pipeline: Option<&str>, reference: &str) -> Result<RunRecord> {
        self.block_on(find_run(self.metadata().as_ref(), pipeline, reference))
    }

    /// The newest run of `pipeline` that is not pending (`latest`, as
    /// [`find_run`] reads it); `None` before its first run.
    pub fn latest_run(&self, pipeline: &str) -> Result<Option<RunRecord>> {
        match self.find_run(Some(pipeline), "latest") {
            Ok(run) => Ok(Some(run)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
