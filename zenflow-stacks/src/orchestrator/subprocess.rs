//! Each step attempt as a child process of the pipeline binary, through
//! the step entrypoint: a step that aborts, segfaults or is killed takes
//! only its own process down, and is recorded as failed with the signal
//! named.
//!
//! ```toml
//! [stacks.isolated]
//! orchestrator = { kind = "subprocess", parallelism = 4 }   # program = "target/release/my-pipeline"
//! ```

use super::external::{Attempt, AttemptEnd, Ended, ExternalOrchestrator, Launcher, TAIL_LINES};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use zenflow_core::Error;

/// The subprocess orchestrator: [`Subprocess`] attempts, at most
/// `parallelism` at once.
pub type SubprocessOrchestrator = ExternalOrchestrator<Subprocess>;

/// Launches attempts as child processes of `program` (the pipeline
/// binary) in the project root, with this process's environment: workers
/// take store credentials from it, as the parent did.
#[derive(Clone, Debug)]
pub struct Subprocess {
    program: PathBuf,
    env: Vec<(OsString, OsString)>,
    project_root: PathBuf,
}

impl Subprocess {
    /// Children run `program`; `project_root` is where they find
    /// `zenflow.toml` (and their working directory).
    pub fn new(program: impl Into<PathBuf>, project_root: impl Into<PathBuf>) -> Self {
        Subprocess { program: program.into(), env: Vec::new(), project_root: project_root.into() }
    }

    /// Children run this process's own executable: the pipeline binary that
    /// was started with `run`.
    pub fn current_exe(project_root: impl Into<PathBuf>) -> Result<Self, Error> {
        let program = std::env::current_exe().map_err(|e| {
            Error::usage(format!(
                "cannot find this program's executable for the subprocess orchestrator ({e}); set `program` in its table"
            ))
        })?;
        Ok(Subprocess::new(program, project_root))
    }

    /// Sets an environment variable for the children.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The program the children run.
    pub fn program(&self) -> &Path {
        &self.program
    }
}

/// What a signal that killed a step's process usually means.
pub fn describe_signal(signal: i32) -> String {
    let what = match signal {
        4 => "SIGILL: an illegal instruction",
        6 => "SIGABRT: the process aborted",
        7 => "SIGBUS: a bus error",
        8 => "SIGFPE: an arithmetic fault",
        9 => {
            "SIGKILL: killed from outside; the kernel's out-of-memory (OOM) killer sends it when the \
             machine runs out of memory"
        }
        11 => "SIGSEGV: a segmentation fault (an invalid memory access)",
        13 => "SIGPIPE: it wrote to a closed pipe",
        15 => "SIGTERM: asked to terminate",
        _ => "",
    };
    if what.is_empty() {
        format!("killed by signal {signal}")
    } else {
        format!("killed by signal {signal} ({what})")
    }
}

type Tail = Arc<Mutex<VecDeque<String>>>;

fn push(tail: &Tail, line: String) {
    let mut t = tail.lock().unwrap_or_else(PoisonError::into_inner);
    if t.len() == TAIL_LINES {
        t.pop_front();
    }
    t.push_back(line);
}

/// Passes a child's output through to this process's stream, one line at a
/// time, keeping the last lines. The entrypoint's own status lines are not
/// passed on: this process reports the step itself.
async fn pump(reader: impl AsyncRead + Unpin, stream: &'static str, tail: Tail) {
    use std::io::Write as _;
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if !line.starts_with("[zenflow] ") {
            let _ = if stream == "stdout" {
                writeln!(std::io::stdout(), "{line}")
            } else {
                writeln!(std::io::stderr(), "{line}")
            };
        }
        push(&tail, format!("[{stream}] {line}"));
    }
}

#[async_trait]
impl Launcher for Subprocess {
    fn name(&self) -> &str {
        "subprocess"
    }

    async fn launch(&self, attempt: &Attempt<'_>) -> AttemptEnd {
        let tail: Tail = Arc::default();
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(attempt.entrypoint_args())
            .current_dir(&self.project_root)
            .env("ZENFLOW_PROJECT_ROOT", &self.project_root)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let permanent = matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied);
                return AttemptEnd {
                    ended: Ended::NotLaunched {
                        reason: format!(
                            "cannot start `{}`: {e}; `program` of the subprocess orchestrator must be the pipeline binary",
                            self.program.display()
                        ),
                        permanent,
                    },
                    tail: Vec::new(),
                };
            }
        };
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(out, "stdout", tail.clone())));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(err, "stderr", tail.clone())));
        }
        let waited = match attempt.deadline {
            Some(limit) => tokio::time::timeout(limit, child.wait()).await.map_err(|_| limit),
            None => Ok(child.wait().await),
        };
        let ended = match waited {
            Err(limit) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Ended::TimedOut(limit)
            }
            Ok(Err(e)) => Ended::Died(format!("waiting for the step's process failed: {e}")),
            Ok(Ok(status)) => match status.code() {
                Some(code) => Ended::Exited(code),
                None => Ended::Died(signal_of(&status)),
            },
        };
        // A grandchild that kept the pipes open must not hold the step.
        for p in pumps {
            let _ = tokio::time::timeout(Duration::from_secs(1), p).await;
        }
        let tail = tail.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect();
        AttemptEnd { ended, tail }
    }
}

#[cfg(unix)]
fn signal_of(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    status.signal().map_or_else(|| format!("it ended with {status}"), describe_signal)
}

#[cfg(not(unix))]
fn signal_of(status: &std::process::ExitStatus) -> String {
    format!("it ended with {status}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named() {
        assert_eq!(
            describe_signal(11),
            "killed by signal 11 (SIGSEGV: a segmentation fault (an invalid memory access))"
        );
        assert!(describe_signal(9).contains("out-of-memory (OOM) killer"));
        assert!(describe_signal(6).contains("SIGABRT"));
        assert_eq!(describe_signal(40), "killed by signal 40");
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let tail: Tail = Arc::default();
        for i in 0..(TAIL_LINES + 5) {
            push(&tail, i.to_string());
        }
        let t = tail.lock().unwrap();
        assert_eq!(t.len(), TAIL_LINES);
        assert_eq!(t.front().map(String::as_str), Some("5"));
    }
}
