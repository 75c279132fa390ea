//! Standard output for the commands: a reader that goes away (`| head`)
//! ends the process quietly, with the status a process killed by SIGPIPE
//! has, instead of a panic ("failed printing to stdout: Broken pipe").
//!
//! Rust ignores SIGPIPE (so that a server's write to a closed socket is an
//! error, not its death); restoring it for the whole process would also
//! kill a run on a closed pipe to a child or a database socket, so only
//! what the commands print goes through here.

use std::io::Write;

/// The exit status of a process a closed pipe ended: 128 + SIGPIPE (13).
pub(crate) const CLOSED_PIPE: i32 = 141;

/// Writes `args` (and a newline when `newline`) to standard output.
pub(crate) fn write(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = written {
        drop(out);
        gone(&e);
    }
}

/// Writes `bytes` to standard output as they are.
pub(crate) fn bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        drop(out);
        gone(&e);
    }
}

/// Ends the process after a failed write to standard output: quietly when
/// its reader went away, else saying why.
fn gone(e: &std::io::Error) -> ! {
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
    std::process::exit(CLOSED_PIPE)
}

/// `println!` for the commands' output ([`write`]).
macro_rules! outln {
    () => { $crate::cli::out::write(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!($($arg)*), true) };
}

/// `print!` for the commands' output ([`write`]).
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!($($arg)*), false) };
}
