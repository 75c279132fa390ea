//! The heartbeats of running runs: what tells other processes that a run's
//! process is alive ([`MetadataStore::heartbeat`], judged by
//! [`MetadataStore::fail_stale_runs`]).
//!
//! They are recorded on a thread of their own, with a runtime of its own,
//! not on the runtime that runs the steps. A step that blocks a worker
//! thread (an `async` step calling blocking code, or sync code that was
//! quick last time and is not now) can occupy every worker of that runtime
//! for as long as it likes; a heartbeat task there would stop with it, and
//! other processes would then fail a run that is still working. One thread
//! serves every run of the process; the beats due together are recorded
//! together, so a store whose `heartbeat` blocks the thread (SQLite waiting
//! for a lock another process holds) holds up that round of beats, never
//! the steps.

use crate::metadata::{self, MetadataStore};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long a beat may take (or its interval, if longer) before it is
/// abandoned: enough to connect to a remote database, short enough that
/// the next beats of the process's other runs are not held up for long.
const BEAT_TIME_LIMIT: Duration = Duration::from_secs(10);

/// Keeps one run's heartbeat going until it is dropped.
#[must_use = "the heartbeat stops when this is dropped"]
pub struct Heartbeat {
    key: Option<u64>,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat").field("beating", &self.key.is_some()).finish()
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            // Dropped outside the lock: the last handle of a store may do
            // blocking work as it goes (join a commit thread).
            let gone: Vec<Beating> = {
                let mut runs = BEATS.runs();
                let (gone, kept) = std::mem::take(&mut *runs).into_iter().partition(|r| r.key == key);
                *runs = kept;
                gone
            };
            drop(gone);
            // A beat of this run under way may still land: harmless, the
            // run's status says whether it is over.
        }
    }
}

/// Records a heartbeat for `run_id` in `metadata` every `every`, first
/// `every` from now, until the returned guard is dropped. A beat still
/// waiting after `every` (and at least 10 s) is abandoned with a warning;
/// a store that blocks inside `heartbeat` (see the module docs) cannot be
/// cut short.
pub fn start(metadata: Arc<dyn MetadataStore>, run_id: &str, every: Duration) -> Heartbeat {
    let Some(beats) = beats() else {
        return Heartbeat { key: None };
    };
    let key = {
        let mut runs = beats.runs();
        let key = beats.next_key();
        let due = Instant::now().checked_add(every).unwrap_or_else(far_future);
        runs.push(Beating { key, metadata, run_id: run_id.to_string(), every, due });
        key
    };
    beats.changed.notify_one();
    Heartbeat { key: Some(key) }
}

struct Beating {
    key: u64,
    metadata: Arc<dyn MetadataStore>,
    run_id: String,
    every: Duration,
    due: Instant,
}

struct Beats {
    runs: Mutex<Vec<Beating>>,
    changed: Condvar,
    keys: std::sync::atomic::AtomicU64,
}

impl Beats {
    fn runs(&self) -> std::sync::MutexGuard<'_, Vec<Beating>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_key(&self) -> u64 {
        self.keys.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The thread's loop: wait for the next beat due, record every beat
    /// due at once, repeat.
    fn serve(&self, runtime: &tokio::runtime::Runtime) {
        loop {
            let due: Vec<(Arc<dyn MetadataStore>, String, Duration)> = {
                let mut runs = self.runs();
                loop {
                    let now = Instant::now();
                    if runs.iter().any(|r| r.due <= now) {
                        break;
                    }
                    runs = match runs.iter().map(|r| r.due - now).min() {
                        None => self.changed.wait(runs).unwrap_or_else(PoisonError::into_inner),
                        Some(wait) => self.changed.wait_timeout(runs, wait).unwrap_or_else(PoisonError::into_inner).0,
                    };
                }
                let now = Instant::now();
                runs.iter_mut()
                    .filter(|r| r.due <= now)
                    .map(|r| {
                        r.due = now.checked_add(r.every).unwrap_or_else(far_future);
                        (r.metadata.clone(), r.run_id.clone(), r.every)
                    })
                    .collect()
            };
            runtime.block_on(futures::future::join_all(due.iter().map(|(store, id, every)| async move {
                let limit = (*every).max(BEAT_TIME_LIMIT);
                match tokio::time::timeout(limit, store.heartbeat(id, metadata::now())).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        let e = e.to_string();
                        tracing::warn!("could not record the heartbeat of run `{id}`: {}", crate::redact::text(&e))
                    }
                    Err(_) => {
                        tracing::warn!("the heartbeat of run `{id}` did not finish within {limit:?}: abandoned")
                    }
                }
            })));
        }
    }
}

/// A time that does not come (for an interval too long to add to now).
fn far_future() -> Instant {
    let year = Duration::from_secs(365 * 24 * 3600);
    Instant::now().checked_add(year * 100).unwrap_or_else(|| Instant::now() + year)
}

/// Every run's heartbeat in this process.
static BEATS: Beats =
    Beats { runs: Mutex::new(Vec::new()), changed: Condvar::new(), keys: std::sync::atomic::AtomicU64::new(0) };

/// Whether the heartbeat thread runs (it is started on first use).
static STARTED: OnceLock<bool> = OnceLock::new();

/// The process's heartbeats, with their thread started; `None` if it
/// cannot start.
fn beats() -> Option<&'static Beats> {
    let started = *STARTED.get_or_init(|| {
        let spawned = tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|runtime| {
            std::thread::Builder::new().name("zenflow-heartbeat".into()).spawn(move || BEATS.serve(&runtime))
        });
        spawned
            .map_err(|e| {
                tracing::error!(
                    "no heartbeats: cannot start their thread: {e}; other processes will take this process's \
                     runs for dead after {:?}",
                    metadata::STALE_AFTER
                )
            })
            .is_ok()
    });
    started.then_some(&BEATS)
}
