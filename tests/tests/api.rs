//! The library API: typed outputs, queries, logs and metadata, artifacts of
//! every built-in kind, concurrent runs, async use.

use ndarray::Array2;
use zenflow::metadata::{RunStatus, StepStatus};
use zenflow::prelude::*;
use zenflow::testing::TestStack;
use zenflow::{Error, RunOptions};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Artifact)]
struct Report {
    rows: usize,
    title: String,
}

#[step]
fn make_matrix(#[param] rows: usize, #[param] cols: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(i, j)| (i * cols + j) as f32)
}

#[step(outputs(text, raw, report))]
fn summarise(m: Array2<f32>, ctx: &StepContext) -> (String, Vec<u8>, Report) {
    ctx.log(format!("summarising {} rows", m.nrows()));
    ctx.log_metadata("sum", m.sum());
    ctx.log_metadata("shape", m.shape());
    (format!("{} x {}", m.nrows(), m.ncols()), vec![0, 159, 146, 150], Report { rows: m.nrows(), title: "ok".into() })
}

#[step]
fn count(#[param] n: u64) -> u64 {
    n
}

#[pipeline]
fn matrices(shape: &(usize, usize)) {
    let m = make_matrix(shape.0, shape.1);
    summarise(m);
}

#[pipeline]
fn counting(n: &u64) {
    count(*n);
}

#[test]
fn outputs_load_with_their_types_and_wrong_types_are_refused() {
    let stack = TestStack::new().map(|s| s.with_inline_limit(0)); // every artifact a file, to inspect the .npy
    let run = matrices.run(&stack, &(3, 4)).unwrap();
    let m: Array2<f32> = run.artifact("make_matrix", "output").unwrap();
    assert_eq!(m.shape(), [3, 4]);
    assert_eq!(m[[2, 3]], 11.0);
    assert_eq!(run.artifact::<String>("summarise", "text").unwrap(), "3 x 4");
    assert_eq!(run.artifact::<Vec<u8>>("summarise", "raw").unwrap(), [0, 159, 146, 150]);
    assert_eq!(run.artifact::<Report>("summarise", "report").unwrap(), Report { rows: 3, title: "ok".into() });

    let err = run.artifact::<String>("summarise", "report").unwrap_err().to_string();
    assert!(err.contains("cannot be loaded as `alloc::string::String`") && err.contains("api::Report"), "{err}");
    let err = run.artifact::<String>("summarise", "nope").unwrap_err().to_string();
    assert!(
        err.contains("no output `nope`")
            && err.contains("outputs are: make_matrix.output, summarise.text, summarise.raw"),
        "{err}"
    );
    let err = run.artifact::<String>("nope", "output").unwrap_err().to_string();
    assert!(err.contains("has no step `nope`; its outputs are: make_matrix.output"), "{err}");

    // The array is stored as a .npy file numpy can read: magic, version, header.
    let version = run.output_version("make_matrix", "output").unwrap();
    assert_eq!(version.metadata.shape, Some(vec![3, 4]));
    let path = stack.path().join(".zenflow/artifacts").join(zenflow::artifact_store::object_key(&version.content_hash));
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let data_start = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..data_start]);
    assert!(header.contains("'descr': '<f4'") && header.contains("'shape': (3, 4)"), "{header}");
    assert_eq!(data_start % 64, 0, "the header is padded to a multiple of 64 bytes");
    assert_eq!(bytes.len(), data_start + 12 * 4, "then 12 little-endian f32");
    assert_eq!(&bytes[data_start + 11 * 4..], 11.0f32.to_le_bytes());
}

#[test]
fn runs_logs_and_metadata_can_be_queried() {
    let stack = TestStack::new();
    let first = matrices.run(&stack, &(2, 2)).unwrap();
    let second =
        matrices.run_with(&stack, &(2, 3), RunOptions { run_name: Some("nightly-1".into()), ..Default::default() });
    let second = second.unwrap();
    assert_eq!(second.name(), "nightly-1");
    assert!(first.name().starts_with("matrices-"), "{}", first.name());

    assert_eq!(stack.latest_run("matrices").unwrap().unwrap().id, second.id());
    assert_eq!(stack.get_run("nightly-1").unwrap().unwrap().id, second.id());
    assert_eq!(stack.get_run(first.id()).unwrap().unwrap().name, first.name());
    let runs = stack.list_runs(Some("matrices"), 10).unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.status == RunStatus::Completed && r.ended_at.is_some()));
    assert_eq!(runs[1].config, serde_json::json!([2, 2]));
    assert_eq!(runs[1].plan().unwrap(), *first.plan());

    let steps = stack.step_runs(second.id()).unwrap();
    let s = steps.iter().find(|s| s.invocation == "summarise").unwrap();
    assert_eq!(s.logs, ["summarising 2 rows"]);
    assert_eq!(s.metadata["sum"], serde_json::json!(15.0));
    assert_eq!(s.metadata["shape"], serde_json::json!([2, 3]));
    assert_eq!(s.outputs.iter().map(|o| o.output.as_str()).collect::<Vec<_>>(), ["text", "raw", "report"]);

    let err = matrices
        .run_with(&stack, &(2, 3), RunOptions { run_name: Some("nightly-1".into()), ..Default::default() })
        .unwrap_err()
        .to_string();
    assert!(err.contains("a run named `nightly-1` already exists"), "{err}");
    assert_eq!(stack.list_runs(Some("matrices"), 10).unwrap().len(), 2, "the refused run left nothing behind");
}

#[test]
fn a_run_whose_process_died_is_marked_failed_by_the_next_run() {
    let stack = TestStack::new();
    // What a killed process leaves behind: a run still "running", long silent.
    let mut dead = zenflow::conformance::metadata::new_run("counting", "killed-run");
    dead.started_at -= 3_600_000_000;
    stack.block_on(stack.metadata().create_run(&dead)).unwrap();
    let run = counting.run(&stack, &3).unwrap();
    assert!(run.is_success());
    let dead = stack.get_run("killed-run").unwrap().unwrap();
    assert_eq!(dead.status, RunStatus::Failed);
    assert!(dead.error.unwrap().contains("stopped without finishing"));
    assert_eq!(stack.get_run(run.id()).unwrap().unwrap().status, RunStatus::Completed);
}

#[test]
fn the_git_commit_of_the_project_is_recorded() {
    let stack = TestStack::new();
    let sha = "89abcdef0123456789abcdef0123456789abcdef";
    std::fs::create_dir_all(stack.path().join(".git/refs/heads")).unwrap();
    std::fs::write(stack.path().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(stack.path().join(".git/refs/heads/main"), format!("{sha}\n")).unwrap();
    let run = counting.run(&stack, &1).unwrap();
    assert_eq!(run.record().git_commit.as_deref(), Some(sha));
    assert_eq!(stack.get_run(run.id()).unwrap().unwrap().git_commit.as_deref(), Some(sha));
}

#[test]
fn several_processes_worth_of_stacks_can_run_on_one_project_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|i| {
            let root = dir.path().to_path_buf();
            std::thread::spawn(move || {
                // Each thread opens its own stack: its own SQLite connection,
                // as another process would.
                let stack = zenflow::local_stack_at(&root).unwrap();
                let run = counting.run(&stack, &(i % 2)).unwrap();
                run.artifact::<u64>("count", "output").unwrap()
            })
        })
        .collect();
    let values: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(values, [0, 1, 0, 1, 0, 1, 0, 1]);
    let stack = zenflow::local_stack_at(dir.path()).unwrap();
    let runs = stack.list_runs(Some("counting"), 100).unwrap();
    assert_eq!(runs.len(), 8);
    assert!(runs.iter().all(|r| r.status == RunStatus::Completed));
    let statuses: Vec<StepStatus> =
        runs.iter().flat_map(|r| stack.step_runs(&r.id).unwrap()).map(|s| s.status).collect();
    assert_eq!(statuses.len(), 8);
    assert!(statuses.contains(&StepStatus::Completed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_run_from_async_code() {
    let dir = tempfile::tempdir().unwrap();
    let stack = zenflow::local_stack_at(dir.path()).unwrap();
    let run = counting.run_async(&stack, &42, RunOptions::default()).await.unwrap();
    assert_eq!(run.artifact_async::<u64>("count", "output").await.unwrap(), 42);
    // The blocking API says what to use instead of deadlocking.
    let err = counting.run(&stack, &42).unwrap_err();
    assert!(matches!(err, Error::Usage(_)) && err.to_string().contains("run_async"), "{err}");
}

mod parallelism {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::{Duration, Instant};
    use zenflow::prelude::*;

    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    /// Stays busy until a second step is running too (or 300 ms pass), and
    /// records how many ran at once.
    #[step(cache = false)]
    fn busy(#[param] i: u32) -> u32 {
        occupy(i)
    }

    /// [`busy`], after an input.
    #[step(cache = false)]
    fn busy_after(x: u32, #[param] i: u32) -> u32 {
        occupy(i) + x
    }

    #[step(cache = false)]
    fn seed() -> u32 {
        0
    }

    fn occupy(i: u32) -> u32 {
        let now = RUNNING.fetch_add(1, SeqCst) + 1;
        PEAK.fetch_max(now, SeqCst);
        let deadline = Instant::now() + Duration::from_millis(300);
        while RUNNING.load(SeqCst) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        RUNNING.fetch_sub(1, SeqCst);
        i
    }

    #[pipeline]
    fn wide() {
        for i in 0..4 {
            busy(i);
        }
    }

    /// The four become ready together, when the seed finishes (in the task
    /// that ran it, not at the start).
    #[pipeline]
    fn fanned() {
        let s = seed();
        for i in 0..4 {
            busy_after(s, i);
        }
    }

    fn peak_with<P: Pipeline<Config = ()>>(pipeline: &P, parallelism: usize) -> usize {
        PEAK.store(0, SeqCst);
        let stack = zenflow::memory_stack(parallelism).unwrap();
        let run = pipeline.run(&stack, &()).unwrap();
        assert!(run.executed().len() >= 4);
        PEAK.load(SeqCst)
    }

    /// One test, as both halves share the counters.
    #[test]
    fn independent_steps_run_in_parallel_up_to_the_configured_bound() {
        assert_eq!(peak_with(&wide, 1), 1, "parallelism 1 runs one step at a time");
        assert_eq!(peak_with(&wide, 2), 2, "parallelism 2 runs two independent steps at once");
        assert_eq!(peak_with(&fanned, 1), 1);
        assert_eq!(peak_with(&fanned, 2), 2, "steps a finishing step makes ready run in parallel too");
    }
}

/// A program that runs pipelines itself reads run-config files as the
/// command line does: defaults, then the file, then `key=value` overrides.
#[test]
fn a_program_plans_a_pipeline_from_a_run_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.yaml");
    std::fs::write(&file, "parameters: 7\nsteps:\n  count:\n    retries: 2\n").unwrap();
    let (doc, plan) = zenflow::run_config::plan(&counting, Some(&file), &[]).unwrap();
    assert_eq!(doc.parameters(), &serde_json::json!(7));
    assert_eq!(plan.steps[0].options.retries, 2);
    let (_, plan) = zenflow::run_config::plan(&counting, Some(&file), &["steps.count.retries=4".into()]).unwrap();
    assert_eq!(plan.steps[0].options.retries, 4, "an override wins over the file");
    let e = zenflow::run_config::plan(&counting, Some(&file), &["steps.count.retries=-1".into()]).unwrap_err();
    assert!(
        matches!(&e, zenflow::Error::Usage(m) if m.contains("`steps.count.retries` must be a whole number")),
        "{e}"
    );
}

#[test]
fn a_stack_keeps_one_extension_per_type_and_the_next_of_a_type_replaces_it() {
    #[derive(Debug, PartialEq)]
    struct Server(&'static str);
    let stack = zenflow::memory_stack(1).unwrap();
    assert_eq!(stack.extension::<Server>(), None, "nothing until one is kept");
    let stack = stack.with_extension(Server("a")).with_extension(7_u32).with_extension(Server("b"));
    assert_eq!(stack.extension::<Server>(), Some(&Server("b")), "the later value of a type wins");
    assert_eq!(stack.extension::<u32>(), Some(&7), "other types are kept beside it");
    let rebuilt = stack.with_inline_limit(0);
    assert_eq!(rebuilt.extension::<u32>(), Some(&7), "a stack rebuilt with other settings keeps them");
    assert_eq!(rebuilt.stores().extension::<Server>(), Some(&Server("b")), "its stores hold them: a step sees them");
}
