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
    let lines = [
        (o.trashed, if report.dry_run { "would move to the trash" } else { "moved to the trash" }),
        (o.deleted, if report.dry_run { "would delete from the trash" } else { "deleted from the trash" }),
        (o.restored, "back from the trash: a run took them up again"),
        (o.waiting, "unused but younger than the grace period: a later `gc` collects them"),
        (o.in_trash, "in the trash for less than the grace period: a later `gc` deletes them"),
    ];
    for (tally, what) in lines.iter().filter(|(t, _)| t.count > 0) {
        let _ = writeln!(out, "objects {what}: {}", counted(tally));
    }
    out
}

fn counted(t: &Tally) -> String {
    format!("{} ({})", t.count, bytes(t.bytes))
}
