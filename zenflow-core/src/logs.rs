//! What a step logs, kept with its step run.
//!
//! Every attempt of a step runs inside a `tracing` span named [`SPAN`],
//! with the step run's id as its `step_run` field. A capture layer (the
//! pipeline binary's command line installs one; a library user adds
//! `zenflow::logs::layer()` to their subscriber) hands every event inside
//! such a span to [`append`], which keeps it in the step run's buffer; the
//! runner stores the buffer with the step run. `StepContext::log` lines go
//! to the same buffer, in order with the events. Each step keeps at most
//! [`MAX_LINES`] lines and [`MAX_BYTES`] bytes; what does not fit is
//! counted, and a last line says how much was cut.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// The name of the span of a step's execution.
pub const SPAN: &str = "zenflow.step";

/// The target of the events zenflow emits about what it already keeps with
/// the step run (`StepContext::log` lines, checks, retries): a capture layer
/// skips them.
pub const CONTEXT_TARGET: &str = "zenflow.step.log";

/// The most lines a step run keeps.
pub const MAX_LINES: usize = 5_000;

/// The most bytes of log a step run keeps.
pub const MAX_BYTES: usize = 512 * 1024;

/// The log lines of one step run, bounded.
#[derive(Debug, Default)]
pub struct Buffer {
    lines: Vec<String>,
    bytes: usize,
    cut_lines: usize,
    cut_bytes: usize,
}

impl Buffer {
    /// Keeps `line`, if it fits.
    pub fn push(&mut self, line: String) {
        if self.lines.len() >= MAX_LINES || self.bytes + line.len() > MAX_BYTES {
            self.cut_lines += 1;
            self.cut_bytes += line.len();
            return;
        }
        self.bytes += line.len();
        self.lines.push(line);
    }

    /// The lines kept, and a last one saying what was cut, if anything was;
    /// the buffer starts over.
    pub fn take(&mut self) -> Vec<String> {
        let mut lines = std::mem::take(&mut self.lines);
        lines.extend(self.cut_note());
        *self = Buffer::default();
        lines
    }

    /// What [`take`](Buffer::take) would return, leaving the buffer as it is.
    pub fn snapshot(&self) -> Vec<String> {
        let mut lines = self.lines.clone();
        lines.extend(self.cut_note());
        lines
    }

    fn cut_note(&self) -> Option<String> {
        (self.cut_lines > 0).then(|| {
            format!(
                "[zenflow] log truncated: {} more line(s), {} bytes, were not kept (a step keeps at most {MAX_LINES} \
                 lines and {MAX_BYTES} bytes)",
                self.cut_lines, self.cut_bytes
            )
        })
    }
}

/// A step run's buffer, shared by the runner, the step's context and the
/// capture layer.
pub type SharedBuffer = Arc<Mutex<Buffer>>;

static BUFFERS: LazyLock<Mutex<HashMap<String, SharedBuffer>>> = LazyLock::new(Default::default);

/// The span one attempt of a step runs in: events inside it belong to step
/// run `step_run`.
pub(crate) fn span(step_run: &str, invocation: &str, attempt: u32) -> tracing::Span {
    tracing::info_span!(target: CONTEXT_TARGET, SPAN, step_run = step_run, step = invocation, attempt = attempt)
}

/// The buffers of the step runs executing in this process, while they do.
pub(crate) struct Capture {
    step_run: String,
    buffer: SharedBuffer,
}

impl Capture {
    /// Starts keeping what step run `step_run` logs.
    pub(crate) fn start(step_run: &str) -> Capture {
        let buffer = SharedBuffer::default();
        BUFFERS.lock().unwrap_or_else(PoisonError::into_inner).insert(step_run.to_string(), buffer.clone());
        Capture { step_run: step_run.to_string(), buffer }
    }

    /// The buffer.
    pub(crate) fn buffer(&self) -> &SharedBuffer {
        &self.buffer
    }

    /// Keeps a line of the runner's own (a retry) with the step's.
    pub(crate) fn push(&self, line: String) {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }

    /// Every line kept so far (and the note of what was cut).
    pub(crate) fn lines(&self) -> Vec<String> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        BUFFERS.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.step_run);
    }
}

/// Keeps `line` with step run `step_run`, if it is executing in this
/// process (what a capture layer calls for each event in a [`SPAN`]).
pub fn append(step_run: &str, line: String) {
    let buffer = BUFFERS.lock().unwrap_or_else(PoisonError::into_inner).get(step_run).cloned();
    if let Some(buffer) = buffer {
        buffer.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_keeps_a_bounded_log_and_says_what_it_cut() {
        let mut b = Buffer::default();
        for i in 0..MAX_LINES + 10 {
            b.push(format!("line {i}"));
        }
        let lines = b.take();
        assert_eq!(lines.len(), MAX_LINES + 1);
        assert!(lines[MAX_LINES].contains("10 more line(s)"), "{}", lines[MAX_LINES]);
        let mut b = Buffer::default();
        b.push("x".repeat(MAX_BYTES - 1));
        b.push("too much".into());
        let lines = b.take();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains("1 more line(s), 8 bytes"), "{}", lines[1]);
    }

    #[test]
    fn lines_reach_the_buffer_of_their_step_run_only_while_it_runs() {
        let c = Capture::start("sr-1");
        append("sr-1", "kept".into());
        append("sr-2", "not running here".into());
        assert_eq!(c.lines(), ["kept"]);
        drop(c);
        append("sr-1", "after the end".into());
        assert!(BUFFERS.lock().unwrap().get("sr-1").is_none());
    }
}
