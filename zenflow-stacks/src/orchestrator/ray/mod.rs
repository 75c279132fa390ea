//! Steps as jobs on a Ray cluster, through the Ray Jobs REST API.
//!
//! ```toml
//! [stacks.staging]
//! orchestrator = { kind = "ray", address = "http://127.0.0.1:8265", parallelism = 8 }
//! metadata_store = "postgres://zenflow:${PGPASSWORD}@db:5432/zenflow"
//! artifact_store = { url = "s3://ml-artifacts/staging", endpoint = "${S3_ENDPOINT:-}" }
//! ```
//!
//! - The pipeline binary and `zenflow.toml` are shipped once per content
//!   as a working-directory package (`GET`, then `PUT` on 404).
//! - One job per step attempt (or per fused chain), with a `submission_id`
//!   derived from run, steps and attempt: after an ambiguous submission
//!   failure the job is looked up and adopted if it exists.
//! - Jobs reserve at least one CPU (with none, Ray runs the entrypoint on
//!   the head) and the step's memory and GPUs.
//! - At most `parallelism` jobs at once, since Ray has no queue; a job
//!   pending longer than `pending_timeout` (15 minutes) is stopped and its
//!   step fails.
//! - Status is polled every 50 ms for 3 s, then backing off to once a
//!   second; a job past its step's timeout is stopped. Ended jobs' records
//!   are deleted (Ray keeps every one otherwise) 2 s after they end, when
//!   Ray's own monitor is done with them; each run also sweeps the records
//!   of zenflow jobs that ended more than 10 s before.
//! - A job that failed, was stopped or vanished while its step is recorded
//!   as running is reconciled by the driver ([`super::external`]) with
//!   Ray's message, and the job log's tail.
//! - No credential goes into a job's `runtime_env` (anyone who can list
//!   jobs reads it): workers take store credentials from their own
//!   environment.

pub mod api;
pub mod package;

use super::external::{Attempt, AttemptEnd, Ended, ExternalOrchestrator, Launcher, TAIL_LINES};
use crate::config::RayConfig;
use api::{ApiError, JobInfo, JobStatus, JobsApi, Submission};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zenflow_core::{Error, StepRunner};

/// The Ray orchestrator.
pub type RayOrchestrator = ExternalOrchestrator<Ray>;

/// Jobs at once when `parallelism` is not set.
pub const DEFAULT_PARALLELISM: usize = 8;

/// How long the head may stay unreachable while a job runs before its step
/// is failed (the job's fate is unknown; its step is not waited on).
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(30);

/// How long after a job ended its record is deleted. Ray's job monitor
/// checks the job's supervisor once a second; deleted before the monitor
/// saw the job end, the record comes back as FAILED ("Job supervisor actor
/// died").
const DELETE_AFTER: Duration = Duration::from_secs(2);

/// Finished zenflow jobs older than this are deleted by any run's sweep
/// (the last jobs of a run, left for [`DELETE_AFTER`], and records that
/// came back).
const SWEEP_AFTER_MS: i64 = 10_000;

/// How long after submission a job's status is polled every 50 ms.
const FAST_POLL_FOR: Duration = Duration::from_secs(3);

/// Launches step attempts as Ray jobs.
#[derive(Debug)]
pub struct Ray {
    api: JobsApi,
    program: PathBuf,
    project_root: PathBuf,
    pending_timeout: Duration,
    unreachable_after: Duration,
    /// The `gcs://` URI of the package, once shipped by this process.
    package: tokio::sync::OnceCell<String>,
    /// Ended jobs whose records wait for [`DELETE_AFTER`].
    ended: std::sync::Mutex<Vec<(String, Instant)>>,
}

impl Ray {
    /// A launcher for the head at `address`, shipping `program`.
    pub fn new(address: &str, program: PathBuf, project_root: PathBuf) -> Result<Self, Error> {
        let api =
            JobsApi::new(address).map_err(|e| Error::usage(format!("cannot build an HTTP client for Ray: {e}")))?;
        Ok(Ray {
            api,
            program,
            project_root,
            pending_timeout: Duration::from_secs(15 * 60),
            unreachable_after: UNREACHABLE_AFTER,
            package: tokio::sync::OnceCell::new(),
            ended: std::sync::Mutex::default(),
        })
    }

    /// Fails a step whose job waited this long for resources.
    pub fn with_pending_timeout(mut self, limit: Duration) -> Self {
        self.pending_timeout = limit;
        self
    }

    /// Fails a step whose job's head was unreachable this long.
    pub fn with_unreachable_after(mut self, limit: Duration) -> Self {
        self.unreachable_after = limit;
        self
    }

    /// The Jobs API client.
    pub fn api(&self) -> &JobsApi {
        &self.api
    }
}

impl ExternalOrchestrator<Ray> {
    /// The orchestrator a `kind = "ray"` table declares, for the project at `root`.
    pub fn open(config: &RayConfig, root: &Path) -> Result<Self, Error> {
        let program = match &config.program {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => root.join(p),
            None => std::env::current_exe().map_err(|e| {
                Error::usage(format!("cannot find this program's executable to ship to Ray ({e}); set `program`"))
            })?,
        };
        let launcher = Ray::new(&config.address, program, root.to_path_buf())?
            .with_pending_timeout(config.pending_timeout)
            .with_unreachable_after(config.unreachable_after);
        Ok(ExternalOrchestrator::new(launcher, config.parallelism.unwrap_or(DEFAULT_PARALLELISM))
            .with_fused_chains(config.fuse_chains))
    }
}

/// The job id of an attempt: run, steps and attempt, in the characters Ray
/// and its log file names accept. Step ids are sanitized, so a hash of the
/// exact ids keeps two different lists apart.
pub fn submission_id(run_id: &str, steps: &[&str], attempt: u32) -> String {
    let mut key = zenflow_core::hash::FieldHasher::new("zenflow.ray.submission.v1");
    for s in steps {
        key.str(s);
    }
    let first: String = steps
        .first()
        .copied()
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(40)
        .collect();
    let more = if steps.len() > 1 { format!("-and-{}", steps.len() - 1) } else { String::new() };
    format!("zenflow-{run_id}-{first}{more}-{}-a{attempt}", &key.finish().to_hex()[..8])
}

/// How long to wait before polling a job submitted `waited` ago: every
/// 50 ms while a short step may end (a job takes ~0.7 s on an idle head,
/// and each poll past its end is the step's cost), then backing off to
/// once a second for long ones.
fn poll_delay(waited: Duration) -> Duration {
    let Some(past) = waited.checked_sub(FAST_POLL_FOR) else {
        return Duration::from_millis(50);
    };
    // Capped before it becomes a Duration: 1.5^x overflows one within minutes.
    Duration::from_secs_f64((0.05 * 1.5f64.powf(past.as_secs_f64().min(60.0))).min(1.0))
}

/// `s` quoted for the shell Ray runs the entrypoint in.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@".contains(c)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What an attempt needs, for Ray: at least one CPU.
fn submission(attempt: &Attempt<'_>, working_dir: &str) -> Submission {
    let ids: Vec<&str> = attempt.steps.iter().map(|s| s.id.as_str()).collect();
    let mut entrypoint = format!("ZENFLOW_PROJECT_ROOT=. ./{}", package::BINARY);
    for arg in attempt.entrypoint_args() {
        entrypoint.push(' ');
        entrypoint.push_str(&shell_quote(&arg));
    }
    // Fused steps have the same resources (see `external::units`).
    let resources = attempt.steps.first().map(|s| s.options.resources).unwrap_or_default();
    let metadata = BTreeMap::from([
        ("zenflow.run".to_string(), attempt.run_id.to_string()),
        ("zenflow.run_name".to_string(), attempt.run_name.to_string()),
        ("zenflow.steps".to_string(), ids.join(",")),
        ("zenflow.attempt".to_string(), attempt.attempt.to_string()),
        ("zenflow.stack".to_string(), attempt.stack.to_string()),
    ]);
    Submission {
        entrypoint,
        submission_id: submission_id(attempt.run_id, &ids, attempt.attempt),
        runtime_env: BTreeMap::from([("working_dir".to_string(), working_dir.to_string())]),
        metadata,
        entrypoint_num_cpus: resources.cpus.unwrap_or(1.0).max(1.0),
        entrypoint_num_gpus: resources.gpus.filter(|g| *g > 0),
        entrypoint_memory: resources.memory_bytes,
    }
}

/// Ray's account of a job that did not end well, for the step's record.
fn ray_says(info: &JobInfo) -> String {
    let message = info.message.as_deref().unwrap_or("no message");
    // Ray appends the whole log tail to the message; the record has it apart.
    let message = message.split(", last available logs").next().unwrap_or(message);
    match &info.error_type {
        Some(t) => format!("Ray says {t}: {message}"),
        None => format!("Ray says: {message}"),
    }
}

/// How an ended job ended, for the driver.
fn ended(info: &JobInfo) -> Ended {
    match (info.status, info.driver_exit_code) {
        (JobStatus::Succeeded, code) => Ended::Exited(code.unwrap_or(0)),
        // The entrypoint's own verdicts: it recorded the step.
        (JobStatus::Failed, Some(code @ (1 | 2))) => Ended::Exited(code),
        // Ray runs the entrypoint in a shell: 128 + N after signal N.
        (JobStatus::Failed, Some(code)) if (129..160).contains(&code) => {
            Ended::Died(format!("{}; {}", super::describe_signal(code - 128), ray_says(info)))
        }
        (JobStatus::Failed, Some(code)) => Ended::Died(format!("it exited with code {code}; {}", ray_says(info))),
        (JobStatus::Stopped, _) => Ended::Died(format!("its Ray job was stopped; {}", ray_says(info))),
        (_, _) => Ended::Died(ray_says(info)),
    }
}

impl Ray {
    /// Ships the package unless the cluster has it; its `gcs://` URI.
    async fn ship(&self) -> Result<String, Error> {
        let program = self.program.clone();
        let root = self.project_root.clone();
        let built = tokio::task::spawn_blocking(move || package::build(&program, &root))
            .await
            .map_err(|e| Error::usage(format!("building the package for Ray failed: {e}")))?
            .map_err(Error::usage)?;
        let fail = |e: ApiError| Error::usage(format!("cannot ship the pipeline binary to Ray: {e}"));
        if !self.api.has_package(&built.name).await.map_err(fail)? {
            let started = Instant::now();
            let size = built.zip.len();
            self.api.put_package(&built.name, built.zip).await.map_err(fail)?;
            tracing::info!("shipped {} ({size} bytes) to Ray in {:.1?}", built.name, started.elapsed());
        }
        Ok(format!("gcs://{}", built.name))
    }

    /// Submits, adopting the job when an earlier try may have created it.
    async fn submit(&self, job: &Submission) -> Result<(), Ended> {
        let id = &job.submission_id;
        let mut last = None;
        for delay in [0, 500, 1_000, 2_000] {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            match self.api.submit(job).await {
                Ok(()) => return Ok(()),
                Err(e @ (ApiError::Unreachable { .. } | ApiError::Refused { status: 500.., .. })) => {
                    // It may exist: a lost answer, or an earlier try that went through.
                    if self.api.job(id).await.is_ok() {
                        tracing::debug!(job = %id, "adopted a job whose submission had no clear answer");
                        return Ok(());
                    }
                    last = Some(e);
                }
                Err(e) => {
                    return Err(Ended::NotLaunched { reason: format!("Ray refused job {id}: {e}"), permanent: true })
                }
            }
        }
        let reason = last.map_or_else(|| "no answer".to_string(), |e| e.to_string());
        Err(Ended::NotLaunched { reason: format!("cannot submit job {id}: {reason}"), permanent: false })
    }

    /// Polls a submitted job to its end, stopping it past its pending
    /// limit or its deadline.
    async fn watch(&self, id: &str, deadline: Option<Duration>) -> Ended {
        let submitted = Instant::now();
        let mut running_since: Option<Instant> = None;
        let mut unreachable_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(poll_delay(submitted.elapsed())).await;
            let info = match self.api.job(id).await {
                Ok(info) => {
                    unreachable_since = None;
                    info
                }
                Err(ApiError::NotFound) => {
                    return Ended::Died(format!(
                        "Ray has no job {id} any more (404): the cluster lost it, e.g. its head restarted"
                    ))
                }
                Err(e) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.unreachable_after {
                        return Ended::Died(format!(
                            "lost contact with Ray for {:.0?} while job {id} ran ({e}); its process may be gone with the \
                             head, so the step is not waited on",
                            since.elapsed()
                        ));
                    }
                    continue;
                }
            };
            match info.status {
                JobStatus::Pending => {
                    if submitted.elapsed() >= self.pending_timeout {
                        // A job waiting for resources its supervisor needs too
                        // may not stop; Ray then fails it after its own start
                        // timeout, and its record stays until then.
                        if let Err(e) = self.api.stop(id).await {
                            tracing::warn!(job = %id, "could not stop a job past its pending limit: {e}");
                        }
                        self.wait_stopped(id).await;
                        return Ended::Died(format!(
                            "job {id} waited {:.0?} for resources without starting (pending_timeout); the cluster \
                             has no room for what the step asks; {}",
                            self.pending_timeout,
                            ray_says(&info)
                        ));
                    }
                }
                JobStatus::Running => {
                    let since = *running_since.get_or_insert_with(Instant::now);
                    if let Some(limit) = deadline {
                        if since.elapsed() >= limit {
                            if let Err(e) = self.api.stop(id).await {
                                tracing::warn!(job = %id, "could not stop a job past its deadline: {e}");
                            }
                            self.wait_stopped(id).await;
                            return Ended::TimedOut(limit);
                        }
                    }
                }
                _ => return ended(&info),
            }
        }
    }

    /// Waits (briefly) for a stopped job to end, so its record is final
    /// before the step's is written.
    async fn wait_stopped(&self, id: &str) {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            match self.api.job(id).await {
                Ok(info) if !info.status.is_terminal() => tokio::time::sleep(Duration::from_millis(200)).await,
                _ => return,
            }
        }
    }

    /// Deletes the records of ended jobs that have waited [`DELETE_AFTER`],
    /// keeping the others.
    async fn delete_ended(&self) {
        let due: Vec<String> = {
            let mut ended = self.ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (due, keep): (Vec<_>, Vec<_>) = ended.drain(..).partition(|(_, at)| at.elapsed() >= DELETE_AFTER);
            *ended = keep;
            due.into_iter().map(|(id, _)| id).collect()
        };
        for id in due {
            if let Err(e) = self.api.delete(&id).await {
                tracing::warn!(job = %id, "could not delete an ended job's record: {e}");
            }
        }
    }

    /// Deletes the records of every zenflow job that ended more than 10 s
    /// ago: the last jobs of earlier runs, and records Ray brought back.
    /// Returns how many it deleted.
    pub async fn sweep(&self) -> Result<usize, ApiError> {
        let jobs = self.api.jobs().await?;
        // The head stamps jobs with its clock; ours is close enough (NTP) for
        // a margin of seconds, and a record deleted a little early only
        // comes back to be swept next time.
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut deleted = 0;
        for j in jobs.as_array().into_iter().flatten() {
            let ours = j["metadata"]["zenflow.run"].is_string();
            let ended = j["end_time"].as_i64().is_some_and(|e| now - e > SWEEP_AFTER_MS);
            let terminal = matches!(j["status"].as_str(), Some("SUCCEEDED" | "FAILED" | "STOPPED"));
            if let (true, true, true, Some(id)) = (ours, ended, terminal, j["submission_id"].as_str()) {
                if self.api.delete(id).await.is_ok() {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// The last lines of a job's log.
    async fn tail(&self, id: &str) -> Vec<String> {
        match self.api.logs(id).await {
            Ok(log) => {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(TAIL_LINES)..].iter().map(|l| (*l).to_string()).collect()
            }
            Err(e) => vec![format!("[zenflow] the job's log could not be read: {e}")],
        }
    }
}

#[async_trait]
impl Launcher for Ray {
    fn name(&self) -> &str {
        "ray"
    }

    async fn prepare(&self, runner: &StepRunner) -> Result<(), Error> {
        for (what, url) in [
            ("metadata store", runner.stores().metadata().url()),
            ("artifact store", runner.stores().artifacts().url()),
        ] {
            let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("file://"));
            if path.is_some_and(|p| !Path::new(p).is_absolute()) {
                return Err(Error::usage(format!(
                    "stack `{}`: Ray workers run in a folder of their own, where the relative {what} `{url}` is \
                     another store; use postgres:// and s3:// (or an absolute path on a one-machine cluster)",
                    runner.stores().name()
                )));
            }
        }
        self.package.get_or_try_init(|| self.ship()).await?;
        if let Err(e) = self.sweep().await {
            tracing::warn!("could not delete the records of finished jobs: {e}");
        }
        Ok(())
    }

    async fn finish(&self) {
        // Those not due yet stay for the next run's sweep: waiting for them
        // would add seconds to every run.
        self.delete_ended().await;
    }

    async fn launch(&self, attempt: &Attempt<'_>) -> AttemptEnd {
        let Some(working_dir) = self.package.get() else {
            return AttemptEnd {
                ended: Ended::NotLaunched { reason: "the package was not shipped".into(), permanent: true },
                tail: Vec::new(),
            };
        };
        self.delete_ended().await;
        let job = submission(attempt, working_dir);
        if let Err(ended) = self.submit(&job).await {
            return AttemptEnd { ended, tail: Vec::new() };
        }
        let ended = self.watch(&job.submission_id, attempt.deadline).await;
        let clean = matches!(ended, Ended::Exited(0));
        let tail = if clean { Vec::new() } else { self.tail(&job.submission_id).await };
        let lost = matches!(&ended, Ended::Died(m) if m.starts_with("lost contact") || m.starts_with("Ray has no job"));
        if !lost {
            self.ended
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((job.submission_id, Instant::now()));
        }
        AttemptEnd { ended, tail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zenflow_core::plan::PlanStep;

    /// A step that runs for minutes (or a day) is polled once a second; the
    /// back-off once overflowed a Duration after about two minutes and
    /// panicked the driver.
    #[test]
    fn polls_back_off_to_once_a_second_and_stay_there() {
        assert_eq!(poll_delay(Duration::ZERO), Duration::from_millis(50));
        assert_eq!(poll_delay(FAST_POLL_FOR - Duration::from_millis(1)), Duration::from_millis(50));
        let d = poll_delay(FAST_POLL_FOR + Duration::from_secs(2));
        assert!(d > Duration::from_millis(100) && d < Duration::from_millis(120), "{d:?}");
        for waited in [130, 3_600, 86_400 * 365] {
            assert_eq!(poll_delay(Duration::from_secs(waited)), Duration::from_secs(1), "after {waited} s");
        }
        let mut last = Duration::ZERO;
        for ms in (0..20_000).step_by(250) {
            let d = poll_delay(Duration::from_millis(ms));
            assert!(d >= last, "never faster again");
            last = d;
        }
    }

    fn step(id: &str, resources: serde_json::Value) -> PlanStep {
        serde_json::from_value(serde_json::json!({
            "id": id, "step": "s", "code_hash": "00", "params": {}, "inputs": [], "outputs": [],
            "options": {"cache": true, "retries": 0, "retry_backoff_ms": 0, "resources": resources}
        }))
        .unwrap()
    }

    #[test]
    fn submission_ids_tell_runs_steps_and_attempts_apart() {
        let a = submission_id("r1", &["train_lr_0.1"], 1);
        assert!(a.starts_with("zenflow-r1-train_lr_0_1-") && a.ends_with("-a1"), "{a}");
        assert_ne!(a, submission_id("r1", &["train_lr_0.1"], 2));
        assert_ne!(a, submission_id("r1", &["train_lr_0_1"], 1), "sanitized alike, told apart by the hash");
        assert_ne!(a, submission_id("r2", &["train_lr_0.1"], 1));
        assert!(submission_id("r1", &["a", "b", "c"], 1).contains("-a-and-2-"));
    }

    #[test]
    fn a_submission_reserves_a_cpu_and_the_steps_resources_and_holds_no_environment() {
        let s = step("train", serde_json::json!({"memory_bytes": 1_073_741_824_u64, "gpus": 1}));
        let attempt =
            Attempt { run_id: "r1", run_name: "q-1", stack: "my stack", steps: vec![&s], attempt: 2, deadline: None };
        let job = submission(&attempt, "gcs://_ray_pkg_zenflow_x.zip");
        assert_eq!(job.entrypoint_num_cpus, 1.0);
        assert_eq!(job.entrypoint_memory, Some(1 << 30));
        assert_eq!(job.entrypoint_num_gpus, Some(1));
        assert_eq!(
            job.entrypoint,
            "ZENFLOW_PROJECT_ROOT=. ./zenflow-pipeline step-entrypoint --run r1 --step train --attempt 2 --no-close \
             --stack 'my stack'"
        );
        assert_eq!(job.runtime_env.keys().collect::<Vec<_>>(), ["working_dir"], "nothing but the package");
        assert_eq!(job.metadata["zenflow.steps"], "train");
        assert_eq!(job.metadata["zenflow.attempt"], "2");
        let half = step("small", serde_json::json!({"cpus": 0.5}));
        let attempt = Attempt { steps: vec![&half], ..attempt };
        assert_eq!(submission(&attempt, "gcs://x").entrypoint_num_cpus, 1.0, "at least one CPU");
    }

    #[test]
    fn shell_quoting_keeps_arguments_whole() {
        assert_eq!(shell_quote("train_2"), "train_2");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn ended_jobs_are_read_as_the_entrypoint_contract_says() {
        let info = |status, code: Option<i32>, message: &str| JobInfo {
            status,
            message: Some(message.into()),
            error_type: Some("JOB_ENTRYPOINT_COMMAND_ERROR".into()),
            driver_exit_code: code,
        };
        assert_eq!(ended(&info(JobStatus::Succeeded, Some(0), "")), Ended::Exited(0));
        assert_eq!(ended(&info(JobStatus::Failed, Some(2), "")), Ended::Exited(2));
        let Ended::Died(why) = ended(&info(
            JobStatus::Failed,
            Some(137),
            "Job entrypoint command failed with exit code 137, last available logs (truncated to 20,000 chars):\nx",
        )) else {
            panic!()
        };
        assert!(why.starts_with("killed by signal 9 (SIGKILL"), "{why}");
        assert!(
            why.ends_with("Ray says JOB_ENTRYPOINT_COMMAND_ERROR: Job entrypoint command failed with exit code 137"),
            "{why}"
        );
        let Ended::Died(why) = ended(&info(JobStatus::Stopped, None, "Job was intentionally stopped.")) else {
            panic!()
        };
        assert!(why.contains("stopped") && why.contains("intentionally"), "{why}");
    }
}
