//! The step entrypoint: one attempt of one step (or of a chain of steps)
//! of an existing run, in a process of its own.
//!
//! `<binary> step-entrypoint --run R --step S --attempt N` is how every
//! process-based orchestrator runs a step: a child process, a Ray job, an
//! Argo pod. The contract:
//!
//! - **Idempotent**: a step whose latest record is completed (or cached) is
//!   not run again; the entrypoint exits 0.
//! - **One live attempt**: a step recorded as running by an attempt that may
//!   still be alive is refused. An attempt with a higher number takes over
//!   from a lower one (the orchestrator has given up on it), and so does any
//!   attempt when the recorded one's process is gone from this machine.
//! - It records its own status, enforces the step's timeout itself, and
//!   keeps its logs with the step run, with what the step prints to stdout
//!   and stderr.
//! - **Exit codes**: [`Exit::Done`] 0, the step is done; [`Exit::Failed`] 1,
//!   the step failed (retry per its policy); [`Exit::Permanent`] 2, another
//!   attempt would fail the same way (bad configuration, an unknown run or
//!   step, code that differs from the plan's).
//!
//! With several steps (a chain an orchestrator fused into one job), they
//! run in order until one fails; `attempt` is the attempt number of the
//! first step that runs, the ones after it run their first attempt.

use crate::error::{Error, Result};
use crate::metadata::{latest_record, RunStatus, StepRunRecord, StepStatus};
use crate::run::options::RunOptions;
use crate::run::outcome::StepState;
use crate::run::step::{StepRunner, WORKER_KEY};
use crate::stack::Stack;
use std::time::Duration;

/// What to run.
#[derive(Clone, Debug)]
pub struct Request {
    /// Run id or name.
    pub run: String,
    /// Invocation ids, in order (one, unless a chain was fused).
    pub steps: Vec<String>,
    /// The attempt number (1 for the first attempt) of the first step that runs.
    pub attempt: u32,
    /// Close the run when nothing can run any more after this. An
    /// orchestrator that drives the run itself (and may still retry) passes
    /// `false`; a lone worker (an Argo pod) passes `true`.
    pub close: bool,
}

/// The subcommand of a pipeline binary that runs a [`Request`].
pub const COMMAND: &str = "step-entrypoint";

impl Request {
    /// The command line (after the program) that has a pipeline binary run
    /// this request on stack `stack`.
    pub fn to_args(&self, stack: &str) -> Vec<String> {
        self.args(stack, "--attempt", self.attempt.to_string())
    }

    /// [`Request::to_args`] for an engine that counts the attempts itself:
    /// `retries_done` is what it replaces with the number of attempts made
    /// before this one (Argo's `{{retries}}`); the attempt is one more.
    pub fn to_args_counted_by(&self, stack: &str, retries_done: &str) -> Vec<String> {
        self.args(stack, "--retries-done", retries_done.to_string())
    }

    fn args(&self, stack: &str, attempt_flag: &str, attempt: String) -> Vec<String> {
        let mut args = vec![COMMAND.to_string(), "--run".into(), self.run.clone()];
        for step in &self.steps {
            args.extend(["--step".into(), step.clone()]);
        }
        args.extend([attempt_flag.into(), attempt]);
        if !self.close {
            args.push("--no-close".into());
        }
        args.extend(["--stack".into(), stack.into()]);
        args
    }

    /// The request, and the stack when one is named, of the arguments that
    /// follow [`COMMAND`] on a command line [`Request::to_args`] made. The
    /// error says what is wrong, for an exit with [`Exit::Permanent`].
    pub fn from_args(args: &[String]) -> Result<(Request, Option<String>), String> {
        let mut request = Request { run: String::new(), steps: Vec::new(), attempt: 1, close: true };
        let (mut stack, mut attempt, mut retries_done) = (None, None, None);
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().cloned().ok_or_else(|| format!("`{flag}` needs a value"));
            match flag.as_str() {
                "--run" => request.run = value()?,
                "--step" => request.steps.push(value()?),
                "--attempt" => attempt = Some(number(flag, &value()?)?),
                "--retries-done" => retries_done = Some(number(flag, &value()?)?),
                "--stack" => stack = Some(value()?),
                "--no-close" => request.close = false,
                other => return Err(format!("`{other}` is not an argument of {COMMAND}")),
            }
        }
        request.attempt = match (attempt, retries_done) {
            (Some(_), Some(_)) => return Err("give `--attempt` or `--retries-done`, not both".into()),
            // 0 is refused by `run`, which says which attempts there are.
            (Some(n), None) => n,
            (None, Some(done)) => done.saturating_add(1),
            (None, None) => 1,
        };
        if request.run.is_empty() || request.steps.is_empty() {
            return Err(format!("{COMMAND} needs `--run RUN` and at least one `--step STEP`"));
        }
        Ok((request, stack))
    }
}

fn number(flag: &str, value: &str) -> Result<u32, String> {
    value.parse().map_err(|_| format!("`{flag}` takes a whole number, not `{value}`"))
}

/// The exit code of the entrypoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: every step is done (completed, cached, or was already).
    Done,
    /// 1: a step failed; another attempt may succeed.
    Failed,
    /// 2: another attempt would fail the same way.
    Permanent,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Failed => 1,
            Exit::Permanent => 2,
        }
    }

    /// The exit for process exit code `code`, if it is one of the contract's.
    pub fn from_code(code: i32) -> Option<Exit> {
        match code {
            0 => Some(Exit::Done),
            1 => Some(Exit::Failed),
            2 => Some(Exit::Permanent),
            _ => None,
        }
    }
}

/// What happened to one step.
#[derive(Clone, Debug)]
pub struct StepSummary {
    /// Invocation id.
    pub invocation: String,
    /// Its status now.
    pub status: StepStatus,
    /// True when it was done before this process started (nothing ran).
    pub already_done: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// Time spent on it here.
    pub duration: Duration,
}

/// What the entrypoint did.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The steps it got to, in order.
    pub steps: Vec<StepSummary>,
    /// The exit code.
    pub exit: Exit,
    /// The run's final status, when this closed it.
    pub closed: Option<RunStatus>,
}

/// Why the entrypoint could not run the step.
#[derive(Debug, thiserror::Error)]
pub enum EntrypointError {
    /// Another attempt would fail the same way (exit 2).
    #[error("{0}")]
    Permanent(String),
    /// The stores failed (exit 1: a later attempt may find them back).
    #[error(transparent)]
    Store(Error),
}

impl EntrypointError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            EntrypointError::Permanent(_) => Exit::Permanent,
            EntrypointError::Store(_) => Exit::Failed,
        }
    }
}

impl From<Error> for EntrypointError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(m) | Error::Usage(m) => EntrypointError::Permanent(m),
            Error::Plan(e) => EntrypointError::Permanent(e.to_string()),
            other => EntrypointError::Store(other),
        }
    }
}

/// Runs `request` against `stack` (see the module docs for the contract).
pub async fn run(stack: &Stack, request: &Request) -> Result<Summary, EntrypointError> {
    if request.steps.is_empty() {
        return Err(EntrypointError::Permanent("no step to run: pass --step".into()));
    }
    let options = RunOptions { capture_stdio: true, ..RunOptions::default() };
    let runner = StepRunner::attach(stack.stores().clone(), &request.run, options).await?;
    let positions = request.steps.iter().map(|s| runner.position(s)).collect::<Result<Vec<_>, _>>()?;
    let run = runner.run().clone();
    if matches!(run.status, RunStatus::Completed | RunStatus::Failed) {
        // A finished run is closed for good: its steps are as recorded.
        let records = stack.metadata().step_runs(&run.id).await.map_err(Error::from)?;
        let done = positions.iter().all(
            |&p| matches!(latest_record(&records, &runner.plan().steps[p].id).map(|r| r.status), Some(s) if s.is_success()),
        );
        if !done {
            return Err(EntrypointError::Permanent(format!(
                "run `{}` is {} already; start a new run",
                run.name, run.status
            )));
        }
    }
    // This worker's step keeps the run alive while it lasts.
    let heartbeat = crate::run::start::spawn_heartbeat(stack, &run.id);
    let outcome = run_chain(&runner, &positions, request.attempt).await;
    drop(heartbeat);
    // The step's record must be durable before this worker reports it.
    stack.metadata().flush().await.map_err(Error::from)?;
    let (steps, exit) = outcome?;
    let closed = if request.close { crate::run::outcome::close_if_done(stack, &run.id).await? } else { None };
    Ok(Summary { steps, exit, closed })
}

async fn run_chain(
    runner: &StepRunner,
    positions: &[usize],
    first_attempt: u32,
) -> Result<(Vec<StepSummary>, Exit), EntrypointError> {
    let stack = runner.stores();
    let plan = runner.plan().clone();
    let mut reports = Vec::new();
    let mut attempt = first_attempt;
    for &pos in positions {
        let step = &plan.steps[pos];
        let records = stack.metadata().step_runs(&runner.run().id).await.map_err(Error::from)?;
        let mine = latest_record(&records, &step.id);
        if let Some(r) = mine.filter(|r| r.status.is_success()) {
            reports.push(StepSummary {
                invocation: step.id.clone(),
                status: r.status,
                already_done: true,
                error: None,
                duration: Duration::ZERO,
            });
            continue;
        }
        let max = step.options.retries.saturating_add(1);
        if attempt == 0 || attempt > max {
            return Err(EntrypointError::Permanent(format!(
                "step `{}` allows {max} attempt(s) (retries = {}); there is no attempt {attempt}",
                step.id, step.options.retries
            )));
        }
        if let Some(r) = mine.filter(|r| r.status == StepStatus::Running) {
            if let Some(why) = still_running(r, attempt) {
                return Err(EntrypointError::Permanent(format!(
                    "step `{}` is being run by {why}; this attempt ({attempt}) does not run it again. If that \
                     process is gone, run attempt {} to take over",
                    step.id,
                    attempt.max(recorded_attempt(r).unwrap_or(attempt)) + 1
                )));
            }
        }
        for &d in &runner.dependencies()[pos] {
            let up = &plan.steps[d];
            let state = StepState::of(latest_record(&records, &up.id), up.options.retries);
            if state != StepState::Succeeded {
                return Err(EntrypointError::Permanent(format!(
                    "step `{}` needs step `{}`, which has not completed in run `{}`; run it first",
                    step.id,
                    up.id,
                    runner.run().name
                )));
            }
        }
        if runner.run().status == RunStatus::Pending {
            // Checked, about to run: the planned run starts.
            stack
                .metadata()
                .set_run_status(&runner.run().id, RunStatus::Running, None, None)
                .await
                .map_err(Error::from)?;
        }
        let result = runner.run_attempt(pos, attempt).await?;
        reports.push(StepSummary {
            invocation: step.id.clone(),
            status: result.status,
            already_done: false,
            error: result.error.clone(),
            duration: result.duration,
        });
        if !result.status.is_success() {
            let exit = if result.permanent { Exit::Permanent } else { Exit::Failed };
            return Ok((reports, exit));
        }
        attempt = 1;
    }
    Ok((reports, Exit::Done))
}

fn recorded_attempt(r: &StepRunRecord) -> Option<u32> {
    r.metadata.get(WORKER_KEY)?.get("attempt")?.as_u64().and_then(|a| u32::try_from(a).ok())
}

/// Who may still be running step run `r`, unless attempt `attempt` may
/// take over from it.
fn still_running(r: &StepRunRecord, attempt: u32) -> Option<String> {
    let worker = r.metadata.get(WORKER_KEY);
    let recorded = recorded_attempt(r);
    if recorded.is_some_and(|a| a < attempt) {
        // The orchestrator started a later attempt: it gave up on that one.
        return None;
    }
    let host = worker.and_then(|w| w.get("host")?.as_str().map(str::to_string));
    let pid = worker.and_then(|w| w.get("pid")?.as_u64()).and_then(|p| u32::try_from(p).ok());
    let who = match (&host, pid, recorded) {
        (Some(h), Some(p), Some(a)) => format!("attempt {a} (process {p} on {h})"),
        _ => "another process (it recorded no worker)".to_string(),
    };
    match (host, pid) {
        (Some(h), Some(p)) if h == self::host() && (p == std::process::id() || !alive(p)) => None,
        _ => Some(who),
    }
}

/// This machine's host name.
pub fn host() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer outlives the call and its length is passed.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into())
}

/// Whether process `pid` exists on this machine.
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Request;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(String::from).collect()
    }

    #[test]
    fn a_request_survives_its_command_line() {
        let chain = Request { run: "r1".into(), steps: vec!["a".into(), "b_0.1".into()], attempt: 3, close: false };
        let line = chain.to_args("staging");
        assert_eq!(
            line.join(" "),
            "step-entrypoint --run r1 --step a --step b_0.1 --attempt 3 --no-close --stack staging"
        );
        let (back, stack) = Request::from_args(&line[1..]).unwrap();
        assert_eq!((back.run, back.steps, back.attempt, back.close), (chain.run, chain.steps, 3, false));
        assert_eq!(stack.as_deref(), Some("staging"));

        let pod = Request { run: "r2".into(), steps: vec!["train".into()], attempt: 1, close: true };
        let line = pod.to_args_counted_by("prod", "{{retries}}");
        assert_eq!(line.join(" "), "step-entrypoint --run r2 --step train --retries-done {{retries}} --stack prod");
        // What the engine runs, its third attempt.
        let line = line.join(" ").replace("{{retries}}", "2");
        let (back, _) = Request::from_args(&args(&line)[1..]).unwrap();
        assert_eq!((back.attempt, back.close), (3, true));
    }

    #[test]
    fn a_bad_command_line_says_what_is_wrong() {
        let bad = |line: &str| Request::from_args(&args(line)).unwrap_err();
        assert_eq!(bad("--run r --step s --attempt x"), "`--attempt` takes a whole number, not `x`");
        assert_eq!(
            bad("--run r --step s --attempt 2 --retries-done 1"),
            "give `--attempt` or `--retries-done`, not both"
        );
        assert_eq!(bad("--run r --step"), "`--step` needs a value");
        assert_eq!(bad("--run r --steps s"), "`--steps` is not an argument of step-entrypoint");
        assert_eq!(bad("--run r"), "step-entrypoint needs `--run RUN` and at least one `--step STEP`");
    }
}
