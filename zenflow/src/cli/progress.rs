//! Progress of a run: a live display on a terminal, one plain line per
//! finished step in CI, nothing with `--quiet`. While the live display is
//! up, log lines go above it ([`stderr`]), not through it.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use zenflow_core::metadata::StepStatus;
use zenflow_core::run::{Observer, RunEvent};

/// The live display up now, which log lines go above.
static LIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Standard error for log lines: above the live display while it is up
/// (so a line is not drawn through the bar), else as it is. A
/// `tracing_subscriber` writer (`MakeWriter`).
pub fn stderr() -> LogWriter {
    LogWriter
}

/// What [`stderr`] gives: one log line's writes.
#[derive(Debug)]
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let live = LIVE.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match live {
            Some(bar) => bar.suspend(|| zenflow_core::logs::stderr().write(buf)),
            None => zenflow_core::logs::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        zenflow_core::logs::stderr().flush()
    }
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Nothing.
    Quiet,
    /// One line per step start and finish (no terminal, e.g. CI).
    Plain,
    /// A live progress bar (a terminal).
    Live,
}

#[derive(Default)]
struct Counts {
    running: usize,
    done: usize,
    cached: usize,
    failed: usize,
    skipped: usize,
}

/// Renders run events.
pub struct Progress {
    mode: Mode,
    bar: Option<ProgressBar>,
    counts: Mutex<Counts>,
    total: usize,
    started: Instant,
}

impl Progress {
    /// A display for a run of `total` steps.
    pub fn new(mode: Mode, total: usize) -> Arc<Self> {
        let bar = (mode == Mode::Live).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            *LIVE.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar.clone());
            bar
        });
        Arc::new(Progress { mode, bar, counts: Mutex::default(), total, started: Instant::now() })
    }

    /// The observer to hand to the run.
    pub fn observer(self: &Arc<Self>) -> Observer {
        let me = self.clone();
        Arc::new(move |event: &RunEvent<'_>| me.on(event))
    }

    fn on(&self, event: &RunEvent<'_>) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            RunEvent::StepStarted { .. } => c.running += 1,
            RunEvent::StepFinished { result } => {
                if result.status != StepStatus::Skipped {
                    c.running = c.running.saturating_sub(1);
                }
                c.done += 1;
                match result.status {
                    StepStatus::Cached => c.cached += 1,
                    StepStatus::Failed => c.failed += 1,
                    StepStatus::Skipped => c.skipped += 1,
                    _ => {}
                }
                let line = match &result.error {
                    Some(e) => format!("{}: {} after {:.1?}: {e}", result.invocation, result.status, result.duration),
                    None => format!("{}: {} in {:.1?}", result.invocation, result.status, result.duration),
                };
                match (&self.bar, self.mode) {
                    (Some(bar), _) => {
                        if result.status == StepStatus::Failed {
                            bar.println(format!("✗ {line}"));
                        }
                        bar.inc(1);
                    }
                    (None, Mode::Plain) => eprintln!("[zenflow] {line}"),
                    _ => {}
                }
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{} running · {} cached · {} failed · {} skipped",
                c.running, c.cached, c.failed, c.skipped
            ));
        }
    }

    /// Takes the live display down without a summary (a run that ended in
    /// an error): nothing is left spinning under the message that follows.
    fn take_down(&self) {
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
            *LIVE.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// Ends the display: the live one is cleared, leaving its summary on a
    /// line of its own (the plain one's lines said it all).
    pub fn finish(&self) {
        let c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let summary = format!(
            "{}/{} steps finished in {:.1?}: {} executed, {} cached, {} failed, {} skipped",
            c.done,
            self.total,
            self.started.elapsed(),
            c.done - c.cached - c.failed - c.skipped,
            c.cached,
            c.failed,
            c.skipped
        );
        if self.bar.is_some() {
            self.take_down();
            eprintln!("[zenflow] {summary}");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.take_down();
    }
}
