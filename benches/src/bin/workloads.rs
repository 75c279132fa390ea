//! The workload runner of `benches/BENCHMARKS.md`: W1–W6 on the local stack.
//!
//! ```text
//! cargo run --release -p benches --bin workloads -- [--only W1_10,W4] [--repeats 5] [--durability relaxed]
//! ```
//!
//! `--durability relaxed` measures the opt-in mode whose local stores skip
//! fsync (see `zenflow_stacks::config`).
//!
//! `W8` runs W1_10 and W2 on a Ray head through the Ray orchestrator
//! (PostgreSQL + S3 stores), beside bare jobs (`true`) submitted through the
//! same Jobs API, alternating, and W1_10 again with `fuse_chains = true`.
//! It takes the head from `ZENFLOW_BENCH_RAY_ADDRESS` and the stores as W7
//! does; `bash benches/w8.sh` starts all three when they are missing.
//!
//! `W7` runs W1_50, W2 and W4 on the staging stack (PostgreSQL metadata, S3
//! artifacts) and, alternating with it, on the local stack, and times one
//! PostgreSQL commit round trip. It takes the servers from
//! `ZENFLOW_BENCH_POSTGRES_URL` (an admin URL: each measurement gets a fresh
//! database) and `ZENFLOW_BENCH_S3_ENDPOINT`, `_BUCKET`, `_ACCESS_KEY`,
//! `_SECRET_KEY`; `bash benches/w7.sh` starts both on 127.0.0.1 when they
//! are missing. It is not in the default list.
//!
//! Prints one JSON line per workload: median, min and max seconds of the
//! timed repeats (after one warm-up), per-step figures, and the peak RSS of
//! the process that ran it. Each workload runs in a child process of its own
//! (so peak RSS is the workload's) on a fresh local stack in a temporary
//! folder: SQLite with every commit synced, artifacts fsynced.

use benches::{bytes, chain, fan};
use serde_json::{json, Value};
use std::process::{Command, ExitCode};
use std::time::Instant;
use zenflow::{Pipeline, RunOptions};

const WORKLOADS: [&str; 8] = ["W1_10", "W1_50", "W2", "W3", "W4", "W5", "W6_plan", "W6_chain"];

/// Workloads that need servers, run only when asked for.
const ON_SERVERS: [&str; 2] = ["W7", "W8"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // W8 ships this binary to Ray: its jobs run steps through the entrypoint.
    if args.get(1).map(String::as_str) == Some("step-entrypoint") {
        return zenflow::cli::main(chain);
    }
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let repeats: usize = value("--repeats").and_then(|r| r.parse().ok()).unwrap_or(5).max(1);
    let durability = match value("--durability").as_deref() {
        None | Some("full") => zenflow::stacks::Durability::Full,
        Some("relaxed") => zenflow::stacks::Durability::Relaxed,
        Some(other) => {
            eprintln!("--durability is full or relaxed, not `{other}`");
            return ExitCode::from(2);
        }
    };
    if let Some(w) = value("--child") {
        return match child(&w, repeats, durability) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{w}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let only: Vec<String> = value("--only")
        .map(|o| o.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| WORKLOADS.iter().map(|w| w.to_string()).collect());
    let exe = std::env::current_exe().expect("own path");
    let mut failed = false;
    for w in &only {
        if !WORKLOADS.contains(&w.as_str()) && !ON_SERVERS.contains(&w.as_str()) {
            eprintln!("unknown workload `{w}`; workloads: {}, {}", WORKLOADS.join(", "), ON_SERVERS.join(", "));
            return ExitCode::from(2);
        }
        let level = if durability == zenflow::stacks::Durability::Full { "full" } else { "relaxed" };
        let out =
            Command::new(&exe).args(["--child", w, "--repeats", &repeats.to_string(), "--durability", level]).output();
        match out {
            Ok(o) if o.status.success() => print!("{}", String::from_utf8_lossy(&o.stdout)),
            Ok(o) => {
                failed = true;
                eprint!("{}", String::from_utf8_lossy(&o.stderr));
            }
            Err(e) => {
                failed = true;
                eprintln!("{w}: cannot start the child process: {e}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Peak resident set of this process, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string())))
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Restarts the peak-RSS count (Linux: `/proc/self/clear_refs`), so that
/// [`peak_rss_mib`] tells the peak of what runs next; false if it cannot.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

struct Stats {
    median: f64,
    min: f64,
    max: f64,
    /// Every timed repeat, in the order they ran.
    samples: Vec<f64>,
}

fn stats(samples: Vec<f64>) -> Stats {
    let mut v = samples.clone();
    v.sort_by(f64::total_cmp);
    Stats { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1], samples }
}

/// One warm-up, then `repeats` timed calls.
fn time(repeats: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<Stats, String> {
    f()?;
    let mut v = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64());
    }
    Ok(stats(v))
}

fn line(workload: &str, steps: usize, s: &Stats, extra: Value) -> String {
    let mut j = json!({
        "workload": workload,
        "steps": steps,
        "median_s": s.median,
        "min_s": s.min,
        "max_s": s.max,
        "per_step_s": if steps > 0 { json!(s.median / steps as f64) } else { Value::Null },
        "peak_rss_mib": peak_rss_mib(),
        "samples_s": s.samples,
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut j, extra) {
        m.extend(e);
    }
    j.to_string()
}

fn no_cache() -> RunOptions {
    RunOptions { no_cache: true, ..Default::default() }
}

fn run<P: Pipeline>(p: &P, stack: &zenflow::Stack, cfg: &P::Config, options: RunOptions) -> Result<(), String> {
    p.run_with(stack, cfg, options).map(|_| ()).map_err(|e| e.to_string())
}

fn child(w: &str, repeats: usize, durability: zenflow::stacks::Durability) -> Result<String, String> {
    if w == "W7" {
        return staging::w7(repeats);
    }
    if w == "W8" {
        return on_ray::w8(repeats);
    }
    let (_dir, stack) = benches::fresh_stack_with(durability);
    Ok(match w {
        "W1_10" | "W1_50" => {
            let n = if w == "W1_10" { 10 } else { 50 };
            let s = time(repeats, || run(&chain, &stack, &n, no_cache()))?;
            line(w, n, &s, json!({}))
        }
        "W2" => {
            let s = time(repeats, || run(&fan, &stack, &32, no_cache()))?;
            line(w, 34, &s, json!({}))
        }
        "W3" => {
            let n = 25 * 1024 * 1024; // 100 MiB of f32
                                      // Each repeat on a fresh stack (content addressing would
                                      // otherwise find the artifact stored already), and each paired
                                      // with the raw write + fsync + read of the same number of bytes
                                      // to a new file, so both see the same disk at the same time.
                                      // Peak RSS of the pipeline runs alone (the raw runs hold 200 MiB).
            let mut pipeline_peak: Option<f64> = Some(0.0);
            let mut pipeline = || -> Result<f64, String> {
                let (_d, stack) = benches::fresh_stack_with(durability);
                let counted = reset_peak_rss();
                let t = Instant::now();
                run(&bytes, &stack, &n, no_cache())?;
                let secs = t.elapsed().as_secs_f64();
                pipeline_peak = pipeline_peak.filter(|_| counted).map(|p| p.max(peak_rss_mib()));
                Ok(secs)
            };
            let raw = |i: usize| -> Result<f64, String> {
                use std::io::Write;
                let path = _dir.path().join(format!("raw{i}.bin"));
                // Made before the clock starts, and freed before the next
                // pipeline run (so peak RSS is the pipeline's).
                let data = vec![7u8; n * 4];
                let t = Instant::now();
                let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
                f.write_all(&data).map_err(|e| e.to_string())?;
                f.sync_all().map_err(|e| e.to_string())?;
                drop(f);
                let back = std::fs::read(&path).map_err(|e| e.to_string())?;
                let secs = t.elapsed().as_secs_f64();
                if back.len() != data.len() {
                    return Err("short read".into());
                }
                std::fs::remove_file(&path).map_err(|e| e.to_string())?;
                Ok(secs)
            };
            pipeline()?;
            raw(0)?;
            let (mut ours, mut raws) = (Vec::new(), Vec::new());
            for i in 1..=repeats {
                ours.push(pipeline()?);
                raws.push(raw(i)?);
            }
            let (s, raw) = (stats(ours), stats(raws));
            let mut extra = json!({
                "raw_write_read_median_s": raw.median,
                "raw_samples_s": raw.samples,
                "ratio_to_raw": s.median / raw.median,
            });
            if let (Some(peak), Value::Object(m)) = (pipeline_peak, &mut extra) {
                m.insert("peak_rss_mib".into(), json!(peak));
            }
            line(w, 2, &s, extra)
        }
        "W4" => {
            run(&chain, &stack, &10, RunOptions::default())?;
            let s = time(repeats, || {
                let r = chain.run(&stack, &10).map_err(|e| e.to_string())?;
                if r.cached().len() != 10 {
                    return Err(format!("expected 10 cached steps, got {}", r.cached().len()));
                }
                Ok(())
            })?;
            line(w, 10, &s, json!({"cache": true}))
        }
        "W5" => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("one_step");
            if !exe.exists() {
                return Err(format!(
                    "{} is missing: build it with `cargo build --release -p benches --bins`",
                    exe.display()
                ));
            }
            let mut i = 0;
            let s = time(repeats, || {
                i += 1;
                let project = _dir.path().join(format!("p{i}"));
                std::fs::create_dir_all(&project).map_err(|e| e.to_string())?;
                let out = Command::new(&exe)
                    .args(["run", "-q"])
                    .env("ZENFLOW_PROJECT_ROOT", &project)
                    .output()
                    .map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(String::from_utf8_lossy(&out.stderr).into_owned());
                }
                Ok(())
            })?;
            line(w, 1, &s, json!({"cold_process": true}))
        }
        "W6_plan" => {
            let mut out = Vec::new();
            for n in [100usize, 1000, 10_000] {
                let s = time(repeats, || chain.plan(&n).map(|_| ()).map_err(|e| e.to_string()))?;
                out.push(json!({"steps": n, "median_s": s.median, "per_step_s": s.median / n as f64}));
            }
            let s = time(repeats, || fan.plan(&1000).map(|_| ()).map_err(|e| e.to_string()))?;
            out.push(json!({"fan_out": 1000, "median_s": s.median, "per_step_s": s.median / 1002.0}));
            let big = &out[2];
            json!({"workload": w, "sizes": out, "median_s": big["median_s"], "peak_rss_mib": peak_rss_mib()})
                .to_string()
        }
        "W6_chain" => {
            let mut out = Vec::new();
            for n in [100usize, 1000, 10_000] {
                let (_d, stack) = benches::fresh_stack_with(durability);
                let t = Instant::now();
                run(&chain, &stack, &n, no_cache())?;
                let secs = t.elapsed().as_secs_f64();
                out.push(json!({"steps": n, "seconds": secs, "per_step_s": secs / n as f64}));
            }
            let (_d, stack) = benches::fresh_stack_with(durability);
            let t = Instant::now();
            run(&fan, &stack, &1000, no_cache())?;
            let secs = t.elapsed().as_secs_f64();
            out.push(json!({"fan_out": 1000, "seconds": secs, "per_step_s": secs / 1002.0}));
            json!({"workload": w, "sizes": out, "median_s": out[2]["seconds"], "peak_rss_mib": peak_rss_mib()})
                .to_string()
        }
        other => return Err(format!("unknown workload {other}")),
    })
}

/// W8: W1_10 and W2 on a Ray head through the Ray orchestrator, beside a
/// bare job (`true`) submitted through the same Jobs API, in one run.
mod on_ray {
    use super::*;
    use zenflow::stacks::orchestrator::ray::api::{JobStatus, JobsApi, Submission};

    fn var(name: &str) -> Result<String, String> {
        std::env::var(name)
            .map_err(|_| format!("{name} is not set: run `bash benches/w8.sh`, which starts the servers"))
    }

    /// A project whose `ray` and `ray_fused` stacks run on the head, with a
    /// fresh database each and one S3 prefix.
    fn project(rt: &tokio::runtime::Runtime) -> Result<tempfile::TempDir, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let address = var("ZENFLOW_BENCH_RAY_ADDRESS")?;
        let mut toml = String::new();
        for (n, (name, fuse)) in [("ray", false), ("ray_fused", true)].into_iter().enumerate() {
            let db = staging::fresh_database(rt, 100 + n)?;
            toml.push_str(&format!(
                "[stacks.{name}]\norchestrator = {{ kind = \"ray\", address = \"{address}\", parallelism = 8, \
                 fuse_chains = {fuse} }}\nmetadata_store = \"{db}\"\n[stacks.{name}.artifact_store]\n\
                 url = \"s3://{bucket}/bench-ray-{pid}-{n}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n\
                 access_key_id = \"{key}\"\nsecret_access_key = \"{secret}\"\nallow_http = true\n\n",
                bucket = var("ZENFLOW_BENCH_S3_BUCKET")?,
                pid = std::process::id(),
                endpoint = var("ZENFLOW_BENCH_S3_ENDPOINT")?,
                key = var("ZENFLOW_BENCH_S3_ACCESS_KEY")?,
                secret = var("ZENFLOW_BENCH_S3_SECRET_KEY")?,
            ));
        }
        std::fs::write(dir.path().join("zenflow.toml"), toml).map_err(|e| e.to_string())?;
        Ok(dir)
    }

    /// `n` bare jobs (`true`, one CPU each) submitted at once and polled
    /// every 50 ms until all succeeded: seconds from the first submission.
    fn bare_jobs(rt: &tokio::runtime::Runtime, api: &JobsApi, n: usize, tag: &str) -> Result<f64, String> {
        rt.block_on(async {
            let t = Instant::now();
            let ids: Vec<String> =
                (0..n).map(|i| format!("zenflow-bench-bare-{tag}-{i}-{}", std::process::id())).collect();
            for id in &ids {
                let job = Submission {
                    entrypoint: "true".into(),
                    submission_id: id.clone(),
                    runtime_env: Default::default(),
                    metadata: Default::default(),
                    entrypoint_num_cpus: 1.0,
                    entrypoint_num_gpus: None,
                    entrypoint_memory: None,
                };
                api.submit(&job).await.map_err(|e| e.to_string())?;
            }
            let mut left = ids.clone();
            while !left.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let mut still = Vec::new();
                for id in left {
                    match api.job(&id).await.map_err(|e| e.to_string())?.status {
                        JobStatus::Succeeded => {}
                        s if s.is_terminal() => return Err(format!("bare job {id} ended {s:?}")),
                        _ => still.push(id),
                    }
                }
                left = still;
            }
            let secs = t.elapsed().as_secs_f64();
            for id in &ids {
                let _ = api.delete(id).await;
            }
            Ok(secs)
        })
    }

    pub fn w8(repeats: usize) -> Result<String, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let dir = project(&rt)?;
        let stacks = zenflow::stacks::config::Stacks::load(dir.path()).map_err(|e| e.to_string())?;
        let ray = stacks.open("ray").map_err(|e| e.to_string())?;
        let fused = stacks.open("ray_fused").map_err(|e| e.to_string())?;
        let api = JobsApi::new(&var("ZENFLOW_BENCH_RAY_ADDRESS")?)?;
        // Ships the package (once) and warms the head.
        run(&chain, &ray, &2, no_cache())?;
        let mut lines = Vec::new();
        // Alternating with the bare jobs, so that both see the same head.
        let (mut single, mut batch, mut w1, mut w2, mut w1_fused) = (vec![], vec![], vec![], vec![], vec![]);
        for r in 0..repeats {
            single.push(bare_jobs(&rt, &api, 1, &format!("single{r}"))?);
            batch.push(bare_jobs(&rt, &api, 32, &format!("batch{r}"))? / 32.0);
            let t = Instant::now();
            run(&chain, &ray, &10, no_cache())?;
            w1.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            run(&fan, &ray, &32, no_cache())?;
            w2.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            run(&chain, &fused, &10, no_cache())?;
            w1_fused.push(t.elapsed().as_secs_f64());
        }
        let (single, batch) = (stats(single), stats(batch));
        let (w1, w2, w1_fused) = (stats(w1), stats(w2), stats(w1_fused));
        // A chain runs one job at a time: its per-step cost against one bare
        // job. The fan's 32 branches run at once (up to the head's CPUs):
        // against bare jobs submitted 32 at once. Overlap: how many steps ran
        // at once, on average, compared with running them one after another.
        let w1_step = w1.median / 10.0;
        let w2_step = w2.median / 34.0;
        lines.push(line(
            "W8_W1_10",
            10,
            &w1,
            json!({
                "stack": "ray+postgres+s3",
                "bare_job_median_s": single.median,
                "bare_job_min_s": single.min,
                "bare_job_max_s": single.max,
                "ratio_to_bare_job": w1_step / single.median,
            }),
        ));
        lines.push(line(
            "W8_W2",
            34,
            &w2,
            json!({
                "stack": "ray+postgres+s3",
                "bare_job_32_at_once_per_job_s": batch.median,
                "ratio_to_bare_job": w2_step / batch.median,
                "steps_overlap": 34.0 * w1_step / w2.median,
                "bare_jobs_overlap": single.median / batch.median,
            }),
        ));
        lines.push(line(
            "W8_W1_10_fused",
            10,
            &w1_fused,
            json!({
                "stack": "ray+postgres+s3, fuse_chains = true",
                "unfused_median_s": w1.median,
                "speedup_over_unfused": w1.median / w1_fused.median,
                "ratio_to_bare_job": (w1_fused.median / 10.0) / single.median,
            }),
        ));
        Ok(lines.join("\n"))
    }
}

/// W7: the staging stack beside the local one.
mod staging {
    use super::*;

    fn var(name: &str) -> Result<String, String> {
        std::env::var(name)
            .map_err(|_| format!("{name} is not set: run `bash benches/w7.sh`, which starts the servers"))
    }

    /// A fresh database on the benchmark's server; its URL.
    pub(super) fn fresh_database(rt: &tokio::runtime::Runtime, n: usize) -> Result<String, String> {
        let admin = var("ZENFLOW_BENCH_POSTGRES_URL")?;
        let name = format!("zf_bench_{}_{n}", std::process::id());
        rt.block_on(async {
            let (client, conn) =
                tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            client.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).await.map_err(|e| e.to_string())?;
            client.batch_execute(&format!("CREATE DATABASE {name}")).await.map_err(|e| e.to_string())
        })?;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_string();
        Ok(format!("{base}/{name}"))
    }

    /// A fresh PostgreSQL + S3 stack (a new database, a new S3 prefix).
    fn fresh_staging(rt: &tokio::runtime::Runtime, n: usize) -> Result<(tempfile::TempDir, zenflow::Stack), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let db = fresh_database(rt, n)?;
        let toml = format!(
            "[stacks.staging]\nmetadata_store = \"{db}\"\n[stacks.staging.artifact_store]\n\
             url = \"s3://{bucket}/bench-{pid}-{n}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"{key}\"\nsecret_access_key = \"{secret}\"\nallow_http = true\n",
            bucket = var("ZENFLOW_BENCH_S3_BUCKET")?,
            pid = std::process::id(),
            endpoint = var("ZENFLOW_BENCH_S3_ENDPOINT")?,
            key = var("ZENFLOW_BENCH_S3_ACCESS_KEY")?,
            secret = var("ZENFLOW_BENCH_S3_SECRET_KEY")?,
        );
        std::fs::write(dir.path().join("zenflow.toml"), toml).map_err(|e| e.to_string())?;
        let stack = zenflow::stacks::config::Stacks::load(dir.path())
            .and_then(|s| s.open("staging"))
            .map_err(|e| e.to_string())?;
        Ok((dir, stack))
    }

    /// The median time of `BEGIN; INSERT; COMMIT` (one synced commit) on the server.
    fn commit_round_trip(rt: &tokio::runtime::Runtime) -> Result<Stats, String> {
        let url = fresh_database(rt, 0)?;
        rt.block_on(async {
            let (client, conn) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            client.batch_execute("CREATE TABLE probe (n BIGINT)").await.map_err(|e| e.to_string())?;
            let mut samples = Vec::new();
            for i in 0..51i64 {
                let t = Instant::now();
                client
                    .batch_execute(&format!("BEGIN; INSERT INTO probe VALUES ({i}); COMMIT"))
                    .await
                    .map_err(|e| e.to_string())?;
                if i > 0 {
                    samples.push(t.elapsed().as_secs_f64());
                }
            }
            Ok(stats(samples))
        })
    }

    /// One timed run of a workload on a stack.
    type RunOnce = dyn Fn(&zenflow::Stack) -> Result<(), String>;

    pub fn w7(repeats: usize) -> Result<String, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let commit = commit_round_trip(&rt)?;
        let mut lines = Vec::new();
        for (n, w) in ["W1_50", "W2", "W4"].into_iter().enumerate() {
            let (steps, run_once): (usize, Box<RunOnce>) = match w {
                "W1_50" => (50, Box::new(|s| run(&chain, s, &50, no_cache()))),
                "W2" => (34, Box::new(|s| run(&fan, s, &32, no_cache()))),
                _ => (
                    10,
                    Box::new(|s| {
                        let r = chain.run(s, &10).map_err(|e| e.to_string())?;
                        if r.cached().len() != 10 {
                            return Err(format!("expected 10 cached steps, got {}", r.cached().len()));
                        }
                        Ok(())
                    }),
                ),
            };
            // Both stacks fresh; W4 fills its cache first. Then the same
            // number of timed runs on each, alternating, so that both see
            // the same machine.
            let (_local_dir, local) = benches::fresh_stack();
            let (_staging_dir, staging) = fresh_staging(&rt, n + 1)?;
            for stack in [&local, &staging] {
                if w == "W4" {
                    run(&chain, stack, &10, RunOptions::default())?;
                }
                run_once(stack)?;
            }
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..repeats {
                let t = Instant::now();
                run_once(&staging)?;
                ours.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                run_once(&local)?;
                theirs.push(t.elapsed().as_secs_f64());
            }
            let (s, l) = (stats(ours), stats(theirs));
            lines.push(line(
                &format!("W7_{w}"),
                steps,
                &s,
                json!({
                    "stack": "postgres+s3",
                    "local_median_s": l.median,
                    "local_samples_s": l.samples,
                    "ratio_to_local": s.median / l.median,
                    "pg_commit_round_trip_median_s": commit.median,
                    "pg_commit_round_trip_min_s": commit.min,
                }),
            ));
        }
        Ok(lines.join("\n"))
    }
}
