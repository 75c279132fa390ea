//! How values read in a report: numbers, durations, sizes, and text made
//! safe for a markdown table, a code span or XML.

use zenflow_core::check::CheckStatus;

/// A markdown table cell: no pipes, no newlines.
pub(super) fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// Plain text in a markdown cell: HTML-escaped, so `Vec<String>` shows as
/// written and a `<!--` in a message cannot hide the rest of a PR comment.
pub(super) fn text(s: &str) -> String {
    cell(&s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"))
}

/// The inside of a markdown code span (backticks would end it).
pub(super) fn code(s: &str) -> String {
    cell(&s.replace('`', "'"))
}

/// A log line inside a fenced code block: it cannot end the block, and a
/// very long line is cut.
pub(super) fn fenced(line: &str) -> String {
    const MAX: usize = 500;
    let line = line.replace("```", "'''");
    match line.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}… ({} more bytes)", &line[..end], line.len() - end),
        None => line,
    }
}

/// Text inside an XML attribute or element.
pub(super) fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

/// A check's status with its icon.
pub(super) fn status_icon(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::Pass => "✅ pass",
        CheckStatus::Warn => "⚠️ warn",
        CheckStatus::Fail => "❌ fail",
        CheckStatus::Skip => "⏭️ skip",
    }
}

/// `0.93`, `1234`, `1.2e-5`: short, stable numbers.
pub(super) fn number(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_finite() && (v.abs() >= 1e-3 || v == 0.0) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// `12 ms`, `1.5 s`, `2 min 3 s`.
pub fn duration(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        let secs = (ms / 1000.0).round() as u64;
        format!("{} min {} s", secs / 60, secs % 60)
    }
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`.
pub(super) fn bytes(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n if n < 1 << 30 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
    }
}
