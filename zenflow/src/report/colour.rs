//! Colour for text meant for a terminal: statuses at a glance, and none
//! where it would be noise (a pipe, a file, `NO_COLOR`).

use std::io::IsTerminal;

/// Whether terminal text is coloured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Colour {
    /// Plain text.
    #[default]
    Never,
    /// ANSI colours.
    Ansi,
}

impl Colour {
    /// [`Colour::Ansi`] when standard output is a terminal (see [`Colour::when`]).
    pub fn for_stdout() -> Colour {
        Colour::when(std::io::stdout().is_terminal())
    }

    /// [`Colour::Ansi`] for a stream that is a `terminal`, unless `NO_COLOR`
    /// is set and not empty (<https://no-color.org>) or `TERM` is `dumb`.
    pub fn when(terminal: bool) -> Colour {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        if terminal && !no_color && !dumb {
            Colour::Ansi
        } else {
            Colour::Never
        }
    }

    /// `status` left-aligned in `width` columns, coloured by what it says:
    /// green for done and passed, cyan for cached, red for failed, yellow
    /// for running, pending and warnings, dim for skipped. The padding is
    /// outside the colour, so columns line up either way.
    pub fn status(self, status: &str, width: usize) -> String {
        let pad = " ".repeat(width.saturating_sub(status.chars().count()));
        let code = match status {
            "completed" | "passed" | "pass" => "32",
            "cached" => "36",
            "failed" | "fail" | "error" => "31",
            "running" | "pending" | "warn" | "not evaluated" => "33",
            "skipped" | "skip" => "2",
            _ => return format!("{status}{pad}"),
        };
        match self {
            Colour::Never => format!("{status}{pad}"),
            Colour::Ansi => format!("\x1b[{code}m{status}\x1b[0m{pad}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_coloured_only_when_asked_and_keep_their_width() {
        assert_eq!(Colour::Never.status("failed", 9), "failed   ");
        assert_eq!(Colour::Ansi.status("failed", 9), "\x1b[31mfailed\x1b[0m   ");
        assert_eq!(Colour::Ansi.status("completed", 9), "\x1b[32mcompleted\x1b[0m");
        assert_eq!(Colour::Ansi.status("frobbed", 9), "frobbed  ", "an unknown word stays plain");
    }
}
