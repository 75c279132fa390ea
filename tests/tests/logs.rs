//! What a step logs is kept with its step run: `StepContext::log` lines,
//! `tracing` events (sync, async, on a blocking thread) and `log` records,
//! in order, bounded, with the cut stated.

use std::sync::Once;
use zenflow::logs::{MAX_BYTES, MAX_LINES};
use zenflow::prelude::*;
use zenflow::report::RunReport;
use zenflow::testing::{self, RunAssert, TestStack};

/// One subscriber for the whole test binary: the capture layer only.
fn capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| assert!(zenflow::logs::install(), "nothing else installs a subscriber in this binary"));
}

#[step]
fn chatty(ctx: &StepContext) -> u32 {
    ctx.log("first, by the context");
    tracing::info!(rows = 3, source = "csv", "loaded");
    tracing::warn!("two rows had no label");
    log::info!("from the log crate");
    tracing::debug!("below the capture level");
    ctx.log("last, by the context");
    3
}

#[step]
async fn waits() -> u32 {
    tracing::info!("before the await");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    tracing::info!("after the await");
    1
}

// A time limit runs the sync body on a blocking thread.
#[step(timeout = "10s")]
fn on_a_blocking_thread() -> u32 {
    tracing::info!(thread = ?std::thread::current().name(), "blocking");
    2
}

#[pipeline]
fn talking() {
    chatty();
    waits();
    on_a_blocking_thread();
}

#[test]
fn tracing_events_and_log_records_inside_a_step_are_kept_with_its_step_run_in_order() {
    capture();
    let stack = TestStack::new();
    tracing::info!("outside any step: kept nowhere");
    let run = testing::run(&stack, &talking, &()).unwrap();
    run.assert_all(StepStatus::Completed);
    assert_eq!(
        run.logs("chatty").unwrap(),
        [
            "first, by the context",
            "loaded rows=3 source=csv",
            "WARN two rows had no label",
            "from the log crate",
            "last, by the context"
        ]
    );
    assert_eq!(run.logs("waits").unwrap(), ["before the await", "after the await"]);
    let blocking = run.logs("on_a_blocking_thread").unwrap();
    assert_eq!(blocking.len(), 1, "{blocking:?}");
    assert!(blocking[0].starts_with("blocking thread=Some("), "{blocking:?}");

    // A reopened run reads the same; a cached step ran (and logged) nothing.
    let again = testing::run(&stack, &talking, &()).unwrap();
    again.assert_all(StepStatus::Cached);
    assert!(again.logs("chatty").unwrap().is_empty());
    let reopened = stack.run_result(run.id()).unwrap();
    assert_eq!(reopened.logs("chatty").unwrap().len(), 5);
}

#[step]
fn noisy(#[param] tag: String, #[param] lines: usize) -> usize {
    for i in 0..lines {
        tracing::info!("{tag} {i}");
    }
    lines
}

#[pipeline]
fn two_noisy() {
    noisy("a".to_string(), 300).id("a");
    noisy("b".to_string(), 300).id("b");
}

#[test]
fn steps_running_at_once_keep_only_their_own_events() {
    capture();
    let stack = zenflow::memory_stack(2).unwrap();
    let run = testing::run(&stack, &two_noisy, &()).unwrap();
    for tag in ["a", "b"] {
        let logs = run.logs(tag).unwrap();
        let expected: Vec<String> = (0..300).map(|i| format!("{tag} {i}")).collect();
        assert_eq!(logs, expected, "step {tag}");
    }
}

#[pipeline]
fn flood() {
    noisy("line".to_string(), MAX_LINES + 7);
}

#[test]
fn a_step_keeps_a_bounded_log_and_says_what_it_cut() {
    capture();
    let stack = zenflow::memory_stack(1).unwrap();
    let run = testing::run(&stack, &flood, &()).unwrap();
    run.assert_step("noisy", StepStatus::Completed);
    let logs = run.logs("noisy").unwrap();
    assert_eq!(logs.len(), MAX_LINES + 1);
    assert_eq!(logs[MAX_LINES - 1], format!("line {}", MAX_LINES - 1));
    let note = &logs[MAX_LINES];
    assert!(note.starts_with("[zenflow] log truncated: 7 more line(s)"), "{note}");
    assert!(note.contains(&format!("{MAX_LINES} lines and {MAX_BYTES} bytes")), "{note}");
}

#[step(retries = 1, retry_backoff = "1ms")]
fn flaky(ctx: &StepContext) -> Result<u32, String> {
    tracing::warn!(attempt = ctx.attempt(), "trying");
    if ctx.attempt() == 1 {
        return Err("not yet".into());
    }
    Ok(1)
}

#[step]
fn fails() -> Result<u32, String> {
    for i in 0..60 {
        tracing::info!("working {i}");
    }
    tracing::error!("the data ran out");
    Err("no data".into())
}

#[pipeline]
fn retried_and_failed() {
    flaky();
    fails();
}

#[test]
fn retries_are_logged_between_attempts_and_reports_show_a_failed_steps_log() {
    capture();
    let stack = TestStack::new();
    let run = testing::run(&stack, &retried_and_failed, &()).unwrap();
    run.assert_step("flaky", StepStatus::Completed).assert_step("fails", StepStatus::Failed);
    assert_eq!(
        run.logs("flaky").unwrap(),
        ["WARN trying attempt=1", "attempt 1 of 2 failed: not yet; retrying in 1ms", "WARN trying attempt=2"]
    );

    let report = RunReport::load(&stack, run.id(), false).unwrap();
    let failed = report.steps.iter().find(|s| s.id == "fails").unwrap();
    assert_eq!(failed.logs.len(), 61);
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["steps"][1]["logs"][60], "ERROR the data ran out");

    // Markdown shows the end of a failed step's log only; a step that
    // completed has no log section.
    let md = report.to_markdown();
    assert!(md.contains("<summary>Log of <code>fails</code> (last 40 of 61 lines)</summary>"), "{md}");
    assert!(md.contains("working 59\nERROR the data ran out\n```"), "{md}");
    assert!(!md.contains("working 20\n"), "only the last 40 lines: {md}");
    assert!(!md.contains("Log of <code>flaky</code>"), "{md}");
    let xml = report.to_junit(false);
    assert!(xml.contains("working 0\nworking 1\n"), "JUnit carries the whole (short) log: {xml}");
}
