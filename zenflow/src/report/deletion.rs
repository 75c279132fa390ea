//! What `runs delete` and `gc` did, for a terminal.

use super::format::bytes;
use std::fmt::Write;
use zenflow_core::gc::{Report, Tally};

/// The deleted runs, one line each, then what went with them and what
/// became of the artifact store's objects.
pub fn deletion(report: &Report) -> String {
    let mut out = String::new();
    let verb = if report.dry_run { "would delete" } else { "deleted" };
    if report.runs.is_empty() {
        out.push_str("no runs to delete\n");
    }
    for run in &report.runs {
        let started = zenflow_core::time::human(run.started_at);
        let _ = writeln!(out, "{verb} run {} ({}, {}, started {started})", run.name, run.pipeline, run.status);
    }
    if !report.runs.is_empty() {
        let _ = writeln!(
            out,
            "{verb} {} step run(s) and {} artifact version(s)",
            report.step_runs, report.artifact_versions
        );
    }
    if report.kept_step_runs > 0 {
        let _ = writeln!(
            out,
            "kept {} step run(s) of deleted runs: remaining runs or model versions still use what they produced",
            report.kept_step_runs
        );
    }
    let o = &report.objects;
    let dry = |done: &'static str, would: &'static str| if report.dry_run { would } else { done };
    let lines = [
        (o.trashed, dry("moved to the trash", "would move to the trash")),
        (o.deleted, dry("deleted from the trash", "would delete from the trash")),
        (o.restored, dry("moved back from the trash (used again)", "would move back from the trash (used again)")),
        (o.waiting, "unused but younger than the grace period: a later `gc` collects them"),
        (o.in_trash, "in the trash for less than the grace period: a later `gc` deletes them"),
        (o.failed, "the artifact store failed to move or delete (they stay, for a later `gc`)"),
    ];
    for (tally, what) in lines.iter().filter(|(t, _)| t.count > 0) {
        let _ = writeln!(out, "objects {what}: {}", counted(tally));
    }
    for e in &o.errors {
        let _ = writeln!(out, "  {e}");
    }
    out
}

fn counted(t: &Tally) -> String {
    format!("{} ({})", t.count, bytes(t.bytes))
}
