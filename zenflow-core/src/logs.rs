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

/// Keeps what this process prints to stdout and stderr, line by line, with
/// step run `step_run` (`[stdout] ...`, `[stderr] ...`), and still passes it
/// on to where the streams pointed (a terminal, a job's log). The streams
/// are the process's own file descriptors, so only one step may be
/// captured at a time: what the step entrypoint does, one step per process.
pub(crate) struct StdioCapture {
    #[cfg(unix)]
    inner: unix::Redirect,
}

impl StdioCapture {
    /// Starts capturing (`None` where the streams cannot be redirected:
    /// not on Unix, or the redirection failed, which is logged).
    pub(crate) fn start(step_run: &str) -> Option<StdioCapture> {
        #[cfg(unix)]
        {
            match unix::Redirect::start(step_run) {
                Ok(inner) => Some(StdioCapture { inner }),
                Err(e) => {
                    tracing::warn!("cannot capture the step's stdout and stderr: {e}");
                    None
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = step_run;
            None
        }
    }

    /// Puts the streams back and waits (briefly) for the last lines.
    pub(crate) fn finish(self) {
        #[cfg(unix)]
        self.inner.finish();
    }
}

/// A writer to this process's stderr as it was before a step's output was
/// captured: for log output that must not land in the step's own log (the
/// command line prints its `tracing` output here).
pub fn stderr() -> impl std::io::Write {
    OriginalStderr
}

struct OriginalStderr;

/// The stream underneath, unredacted.
struct RawStderr;

impl std::io::Write for RawStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        #[cfg(unix)]
        if let Some(n) = unix::write_original_stderr(buf) {
            return n;
        }
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl std::io::Write for OriginalStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // A formatter writes an event whole: redact it as text (see
        // `crate::redact`), and report the caller's bytes as written.
        match crate::redact::bytes(buf) {
            Some(hidden) => RawStderr.write_all(hidden.as_bytes()).map(|()| buf.len()),
            None => RawStderr.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        RawStderr.flush()
    }
}

#[cfg(unix)]
mod unix {
    use std::fs::File;
    use std::io::Write;
    use std::os::fd::{FromRawFd, RawFd};
    use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock, PoisonError};
    use std::time::{Duration, Instant};

    /// A copy of stderr as it was, while a capture runs.
    static ORIGINAL_STDERR: Mutex<Option<File>> = Mutex::new(None);

    pub(super) fn write_original_stderr(buf: &[u8]) -> Option<std::io::Result<usize>> {
        let mut original = ORIGINAL_STDERR.lock().unwrap_or_else(PoisonError::into_inner);
        original.as_mut().map(|f| f.write(buf))
    }

    fn check(r: libc::c_int, what: &str) -> std::io::Result<libc::c_int> {
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return Err(std::io::Error::new(e.kind(), format!("{what}: {e}")));
        }
        Ok(r)
    }

    /// While a capture runs: per stream, the socket's read end and a copy of
    /// where the stream pointed, for [`on_crash`] (-1: none).
    static DRAIN: [AtomicI32; 4] = [const { AtomicI32::new(-1) }; 4];

    /// Per stream: bytes the reader has passed on, and bytes it has taken
    /// from the socket. The difference is still in the socket but already
    /// passed on: [`on_crash`] skips it.
    static PASSED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
    static TAKEN: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

    /// Per stream: the reader is passing bytes on and has not counted them
    /// in [`PASSED`] yet. It runs on while a crashing thread is in
    /// [`on_crash`], which waits for it (briefly) rather than pass the same
    /// bytes on a second time.
    static PASSING: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];

    /// How long [`on_crash`] waits for a reader to finish passing bytes on.
    const PASSING_WAIT: Duration = Duration::from_millis(200);

    /// The signals of a crash, whose handler passes on what the capture
    /// still holds before the process dies.
    const CRASH_SIGNALS: [libc::c_int; 5] = [libc::SIGABRT, libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE];

    /// The handlers that were installed before ours, put back by [`on_crash`].
    static PREVIOUS: OnceLock<Vec<(libc::c_int, libc::sigaction)>> = OnceLock::new();

    /// Installs [`on_crash`] for the crash signals, once per process.
    fn install_crash_handler() {
        PREVIOUS.get_or_init(|| {
            let mut previous = Vec::new();
            for signal in CRASH_SIGNALS {
                // SAFETY: sigaction with a zeroed, then filled, action whose
                // handler only makes async-signal-safe calls.
                unsafe {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    action.sa_sigaction = on_crash as *const () as libc::sighandler_t;
                    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                    libc::sigemptyset(&mut action.sa_mask);
                    let mut old: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(signal, &action, &mut old) == 0 {
                        previous.push((signal, old));
                    }
                }
            }
            previous
        });
    }

    /// On a crash, a line the step printed just before it may still sit in
    /// the capture's socket, which dies with this process: copy what is there
    /// to where the stream pointed (the orchestrator reads it), then let
    /// the previous handler (or the default action) have the signal. Only
    /// async-signal-safe calls (recv, write, sigaction, raise).
    extern "C" fn on_crash(signal: libc::c_int, _info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
        // Small: the handler may run on the signal stack (a few KiB), and
        // an unoptimised build's frames are large.
        let mut buf = [0u8; 256];
        for (i, pair) in DRAIN.chunks(2).enumerate() {
            let (read, out) = (pair[0].load(Ordering::Acquire), pair[1].load(Ordering::Acquire));
            if read < 0 || out < 0 {
                continue;
            }
            wait_while_passing(i);
            let mut skip = PASSED[i].load(Ordering::Acquire).saturating_sub(TAKEN[i].load(Ordering::Acquire));
            // SAFETY: descriptors this process owns while the capture runs;
            // the buffer is on this handler's stack.
            unsafe {
                while skip > 0 {
                    let n =
                        libc::recv(read, buf.as_mut_ptr().cast(), (skip as usize).min(buf.len()), libc::MSG_DONTWAIT);
                    if n <= 0 {
                        break;
                    }
                    skip -= n as u64;
                }
                loop {
                    let n = libc::recv(read, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT);
                    if n <= 0 {
                        break;
                    }
                    libc::write(out, buf.as_ptr().cast(), n as usize);
                }
            }
        }
        if let Some(previous) = PREVIOUS.get() {
            for (s, old) in previous {
                if *s == signal {
                    // SAFETY: puts back the action saved at install time,
                    // then re-raises: it runs once this handler returns.
                    unsafe {
                        libc::sigaction(signal, old, std::ptr::null_mut());
                        libc::raise(signal);
                    }
                }
            }
        }
    }

    /// Waits, in 1 ms sleeps and at most [`PASSING_WAIT`], while the reader
    /// of stream `i` passes bytes on. Async-signal-safe (nanosleep).
    fn wait_while_passing(i: usize) {
        let step = libc::timespec { tv_sec: 0, tv_nsec: 1_000_000 };
        for _ in 0..PASSING_WAIT.as_millis() {
            if !PASSING[i].load(Ordering::Acquire) {
                return;
            }
            // SAFETY: nanosleep with a valid request and no remainder.
            unsafe { libc::nanosleep(&step, std::ptr::null_mut()) };
        }
    }

    /// `fd` (1 or 2) pointed at a socket whose reader keeps and forwards lines.
    struct Stream {
        fd: RawFd,
        saved: RawFd,
        /// The socket's read end (owned by the reader thread).
        read: RawFd,
        reader: std::thread::JoinHandle<()>,
    }

    pub(super) struct Redirect {
        streams: Vec<Stream>,
    }

    impl Redirect {
        pub(super) fn start(step_run: &str) -> std::io::Result<Redirect> {
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            let mut redirect = Redirect { streams: Vec::new() };
            for (fd, tag) in [(1, "stdout"), (2, "stderr")] {
                // On failure, the streams already redirected are put back by drop.
                redirect.streams.push(Stream::start(fd, tag, step_run)?);
            }
            // SAFETY: `dup` of a descriptor this process owns; the new one
            // is owned by the `File`.
            let copy = check(unsafe { libc::dup(redirect.streams[1].saved) }, "dup")?;
            *ORIGINAL_STDERR.lock().unwrap_or_else(PoisonError::into_inner) = Some(unsafe { File::from_raw_fd(copy) });
            for (i, s) in redirect.streams.iter().enumerate() {
                DRAIN[2 * i].store(s.read, Ordering::Release);
                DRAIN[2 * i + 1].store(s.saved, Ordering::Release);
            }
            install_crash_handler();
            Ok(redirect)
        }

        pub(super) fn finish(mut self) {
            self.restore();
        }

        fn restore(&mut self) {
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            ORIGINAL_STDERR.lock().unwrap_or_else(PoisonError::into_inner).take();
            for d in &DRAIN {
                d.store(-1, Ordering::Release);
            }
            let deadline = Instant::now() + Duration::from_millis(500);
            for s in self.streams.drain(..) {
                // SAFETY: puts back the descriptor saved by `Stream::start`;
                // this also closes the socket's write end held at `fd`.
                unsafe {
                    libc::dup2(s.saved, s.fd);
                    libc::close(s.saved);
                }
                // The reader ends at the socket's end of file, unless a process
                // the step started still holds it: then it is left behind.
                while !s.reader.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if s.reader.is_finished() {
                    let _ = s.reader.join();
                }
            }
        }
    }

    impl Drop for Redirect {
        fn drop(&mut self) {
            self.restore();
        }
    }

    impl Stream {
        fn start(fd: RawFd, tag: &'static str, step_run: &str) -> std::io::Result<Stream> {
            let mut ends = [0 as libc::c_int; 2];
            // SAFETY: plain descriptor calls; each new descriptor is closed
            // below or owned by a `File`.
            unsafe {
                // A socket, not a pipe: its reader can peek (see `forward`).
                check(
                    libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, ends.as_mut_ptr()),
                    "socketpair",
                )?;
                let (read, write) = (ends[0], ends[1]);
                libc::fcntl(read, libc::F_SETFD, libc::FD_CLOEXEC);
                let saved = match check(libc::dup(fd), "dup") {
                    Ok(saved) => saved,
                    Err(e) => {
                        libc::close(read);
                        libc::close(write);
                        return Err(e);
                    }
                };
                libc::fcntl(saved, libc::F_SETFD, libc::FD_CLOEXEC);
                let tee = check(libc::dup(saved), "dup");
                let redirected = check(libc::dup2(write, fd), "dup2");
                libc::close(write);
                let (tee, ()) = match (tee, redirected) {
                    (Ok(tee), Ok(_)) => (tee, ()),
                    (tee, redirected) => {
                        if let Ok(t) = tee {
                            libc::close(t);
                        }
                        libc::dup2(saved, fd);
                        libc::close(saved);
                        libc::close(read);
                        return Err(redirected.err().or(tee.err()).unwrap_or_else(std::io::Error::last_os_error));
                    }
                };
                let socket = File::from_raw_fd(read);
                let tee = File::from_raw_fd(tee);
                let step_run = step_run.to_string();
                let reader = std::thread::Builder::new()
                    .name(format!("zenflow-{tag}"))
                    .spawn(move || forward(socket, tee, usize::from(fd == 2), tag, &step_run))?;
                Ok(Stream { fd, saved, read, reader })
            }
        }
    }

    /// Copies what the step writes to `tee` and keeps it, line by line,
    /// with the step run. Bytes are peeked, passed on, and only then taken
    /// from the socket: until they reached `tee` they are still in the
    /// socket, where [`on_crash`] finds them if the process dies. While
    /// they are being passed on, [`PASSING`] says so, and the handler waits
    /// for them to be counted instead of passing them on again.
    fn forward(socket: File, mut tee: File, stream: usize, tag: &str, step_run: &str) {
        use std::os::fd::AsRawFd as _;
        let fd = socket.as_raw_fd();
        let mut buf = [0u8; 8192];
        let mut line = Vec::new();
        let keep = |line: &mut Vec<u8>| {
            let text = String::from_utf8_lossy(line);
            super::append(step_run, format!("[{tag}] {}", text.trim_end_matches(['\n', '\r'])));
            line.clear();
        };
        loop {
            // SAFETY: `fd` is the socket this thread owns; `buf` is ours.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                if !line.is_empty() {
                    keep(&mut line);
                }
                return;
            }
            let n = n as usize;
            // What reaches the terminal (a CI log) hides secrets too; the
            // kept lines are redacted with the step's record. Cheaply: a
            // crash handler waits while `PASSING` is set.
            PASSING[stream].store(true, Ordering::Release);
            let _ = match crate::redact::bytes(&buf[..n]) {
                Some(hidden) => tee.write_all(hidden.as_bytes()),
                None => tee.write_all(&buf[..n]),
            };
            PASSED[stream].fetch_add(n as u64, Ordering::Release);
            PASSING[stream].store(false, Ordering::Release);
            // SAFETY: as above; takes exactly the bytes just peeked.
            unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), n, 0) };
            TAKEN[stream].fetch_add(n as u64, Ordering::Release);
            for &b in &buf[..n] {
                line.push(b);
                if b == b'\n' {
                    keep(&mut line);
                }
            }
        }
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
