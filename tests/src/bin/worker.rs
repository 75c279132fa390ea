//! A pipeline binary for the tests of process-based orchestrators and the
//! step entrypoint: steps that print, sleep, time out, fail once, fail,
//! and crash (abort, segfault, SIGKILL as the OOM killer sends it). It also
//! links the orchestrator conformance steps, so it can run their runs too
//! (`ZENFLOW_WORKER_PIPELINE=conformance`).

use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use zenflow::prelude::*;

/// What `work` is made of.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Work {
    /// How long `slow` sleeps, in milliseconds.
    slow_ms: u64,
    /// `abort`, `segfault`, `kill` or `stop`: adds a `crash` step that dies so.
    crash: Option<String>,
    /// Lines `loud` prints (0: none).
    lines: u32,
    /// An environment variable: adds a `leaky` step that puts its value in
    /// its log, a check and its error, as a backend's error might.
    leak: Option<String>,
}

/// Prints to stdout and stderr and logs through `tracing`.
#[step]
fn hello(ctx: &StepContext) -> u32 {
    println!("to stdout from {}", ctx.invocation_id());
    eprintln!("to stderr, attempt {}", ctx.attempt());
    tracing::info!(attempt = ctx.attempt(), "an event");
    1
}

/// Sleeps, then passes `x` on.
#[step]
async fn slow(x: u32, #[param] ms: u64) -> u32 {
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    x + 1
}

/// A sync step that would take a minute, with a limit of 300 ms.
#[step(timeout = "300ms")]
fn timed() -> u32 {
    std::thread::sleep(std::time::Duration::from_secs(60));
    0
}

/// Fails its first attempt, succeeds on its second.
#[step(retries = 1, retry_backoff = "10ms")]
fn flaky(ctx: &StepContext) -> Result<u32, String> {
    if ctx.attempt() == 1 {
        return Err("the first attempt fails".into());
    }
    Ok(ctx.attempt())
}

/// Always fails.
#[step]
fn fails() -> Result<u32, String> {
    Err("this step always fails".into())
}

/// Downstream of `fails`: never runs.
#[step]
fn after_fails(x: u32) -> u32 {
    x
}

/// Prints `n` lines.
#[step]
fn loud(#[param] n: u32) -> u32 {
    for i in 0..n {
        println!("line {i}");
    }
    n
}

/// Dies as asked.
#[step(timeout = "200ms")]
fn crash(#[param] how: String) -> u32 {
    eprintln!("about to {how}");
    match how.as_str() {
        "abort" => std::process::abort(),
        // SAFETY: deliberately not: an invalid memory access, as a real
        // segfault is (a raised SIGSEGV is not one: its handler returns).
        "segfault" => unsafe {
            std::ptr::dangling_mut::<u32>().write_volatile(1);
            0
        },
        "kill" => unsafe { libc_raise(9) },
        // Stopped, every thread with it: only a deadline from outside ends it.
        "stop" => unsafe { libc_raise(19) },
        _ => 0,
    }
}

/// Fails with the value of `var` in everything it leaves behind.
#[step]
fn leaky(#[param] var: String, ctx: &StepContext) -> Result<u32, String> {
    let value = std::env::var(&var).unwrap_or_default();
    ctx.log(format!("connecting with {value}"));
    tracing::warn!("retrying with token={value}");
    println!("the secret on stdout: {value}");
    ctx.check(Check::warn("backend", format!("the backend echoed {value}")));
    Err(format!("HTTP 401 from https://admin:{value}@api.internal/v1: {{\"error\": \"bad token {value}\"}}"))
}

unsafe fn libc_raise(signal: i32) -> u32 {
    extern "C" {
        fn raise(sig: i32) -> i32;
    }
    // SAFETY: raising a signal at this process is what the test asks for.
    unsafe { raise(signal) };
    0
}

#[pipeline]
fn work(cfg: &Work) {
    let h = hello();
    slow(h, cfg.slow_ms);
    timed();
    flaky();
    let f = fails();
    after_fails(f);
    if cfg.lines > 0 {
        loud(cfg.lines);
    }
    if let Some(how) = &cfg.crash {
        crash(how.clone());
    }
    if let Some(var) = &cfg.leak {
        leaky(var.clone());
    }
}

/// What the crash drill runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Drill {
    /// Changes every step's output (a fresh run per value).
    seed: u64,
    /// How long each step takes, in milliseconds.
    ms: u64,
}

/// One slow step of the drill's chain.
#[step]
fn tick(prev: u64, #[param] ms: u64) -> Vec<u64> {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    // Some bytes to write, so a kill can land mid-write.
    (0..20_000).map(|i| prev.wrapping_mul(31).wrapping_add(i)).collect()
}

/// Its last element, for the next tick.
#[step]
fn tock(values: Vec<u64>) -> u64 {
    values.last().copied().unwrap_or(0)
}

/// seed -> (tick -> tock) x 6: a chain of slow steps for the crash drill.
#[pipeline]
fn drill(cfg: &Drill) {
    let mut x = seed_of(cfg.seed);
    for i in 0..6 {
        let values = tick(x, cfg.ms).id(format!("tick_{i}"));
        x = tock(values).id(format!("tock_{i}"));
    }
}

#[step]
fn seed_of(#[param] seed: u64) -> u64 {
    seed
}

fn main() -> ExitCode {
    match std::env::var("ZENFLOW_WORKER_PIPELINE").as_deref() {
        Ok("conformance") => zenflow::cli::main(zenflow::conformance::orchestrator::conformance_pipeline),
        Ok("drill") => zenflow::cli::main(drill),
        _ => zenflow::cli::main(work),
    }
}
