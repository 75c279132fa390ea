//! `runs delete` and `gc` through the pipeline binary, as a person or a CI
//! job calls them: what goes, what stays, dry runs, bad input, the trash,
//! and a `gc` beside running pipelines.

use std::path::{Path, PathBuf};
use zenflow_tests::project::{code, stderr, stdout};

const BIN: &str = env!("CARGO_BIN_EXE_demo_pipeline");

/// A project folder with its own `.zenflow/`, driving the demo pipeline,
/// whose `generate` output is an object in the artifact store from
/// `size=2000` on (smaller ones are kept in the metadata store).
struct Project(zenflow_tests::project::Project);

impl Project {
    fn new() -> Self {
        Project(zenflow_tests::project::Project::new(BIN))
    }

    /// Runs the pipeline as `name` with `--set` values `sets`.
    fn run_named(&self, name: &str, sets: &[&str]) {
        let mut args = vec!["run", "--run-name", name];
        for s in sets {
            args.extend(["--set", s]);
        }
        let o = self.run(&args);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
    }

    /// The objects on a shelf of the local artifact store.
    fn objects(&self, trash: bool) -> Vec<PathBuf> {
        let root = self.path(".zenflow/artifacts");
        let root = if trash { root.join("trash") } else { root };
        let mut found = Vec::new();
        for fan in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = fan.file_name().to_string_lossy().to_string();
            if name.len() != 2 || !fan.path().is_dir() {
                continue;
            }
            found.extend(std::fs::read_dir(fan.path()).into_iter().flatten().flatten().map(|e| e.path()));
        }
        found.sort();
        found
    }

    /// The names of the runs `runs list` shows, newest first.
    fn run_names(&self) -> Vec<String> {
        let o = self.run(&["runs", "list", "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let runs: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        runs.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
    }

    /// `gc` or `runs delete` with `args`, as JSON.
    fn collect(&self, args: &[&str]) -> serde_json::Value {
        let o = self.run(&[args, &["--json"]].concat());
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
    }
}

impl std::ops::Deref for Project {
    type Target = zenflow_tests::project::Project;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

fn names(report: &serde_json::Value) -> Vec<&str> {
    report["runs"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect()
}

/// The bytes `artifacts cat --raw` prints for `reference`.
fn cat(p: &Project, reference: &str) -> Result<Vec<u8>, String> {
    let o = p.run(&["artifacts", "cat", "--raw", reference]);
    if code(&o) == 0 {
        Ok(o.stdout)
    } else {
        Err(stderr(&o))
    }
}

#[test]
fn runs_delete_removes_a_run_and_what_only_it_used() {
    let p = Project::new();
    p.run_named("first", &["size=3000"]);
    // `generate` is served from `first`'s cache entry: `second` uses its output.
    p.run_named("second", &["size=3000", "threshold=0.1"]);
    p.run_named("third", &["size=4000"]);
    let objects = p.objects(false);
    assert_eq!(objects.len(), 2, "{objects:?}");
    let before = p.run_names();
    let generated = cat(&p, "demo.generate.output@1").unwrap();

    let o = p.run(&["runs", "delete", "first", "--dry-run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("would delete run first (demo, completed"), "{}", stdout(&o));
    assert_eq!((p.run_names(), p.objects(false)), (before.clone(), objects.clone()), "a dry run changes nothing");

    let o = p.run(&["runs", "delete", "first", "--grace", "0s"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    // `second` uses `generate`'s output and `publish`'s (cache hits), so
    // `first`'s `score` too: the lineage of what `publish` produced.
    assert!(text.contains("deleted run first") && text.contains("kept 3 step run(s)"), "{text}");
    assert_eq!(p.run_names(), ["third", "second"]);
    let o = p.run(&["runs", "show", "first"]);
    assert_eq!(code(&o), 2, "a deleted run is not found: {}", stdout(&o));
    assert_eq!(p.objects(false), objects, "`second` still uses the object `first` wrote");
    assert_eq!(cat(&p, "demo.generate.output@1").unwrap(), generated, "and reads it");
    assert_eq!(code(&p.run(&["runs", "show", "second"])), 0);

    let report = p.collect(&["runs", "delete", "third", "--grace", "0s"]);
    assert_eq!(names(&report), ["third"]);
    assert_eq!(report["objects"]["deleted"]["count"], 1, "{report:#}");
    assert_eq!(p.objects(false).len(), 1, "nothing uses `third`'s object");
    assert!(p.objects(true).is_empty(), "a grace of 0s empties the trash at once");
    let gone = cat(&p, "demo.generate.output@2").unwrap_err();
    assert!(gone.contains("has no version 2"), "its version is gone: {gone}");
    // What was deleted can be produced again.
    p.run_named("again", &["size=4000"]);
    assert_eq!(p.objects(false).len(), 2);
    assert_eq!(code(&p.run(&["runs", "show", "again"])), 0);
}

#[test]
fn gc_keeps_the_newest_runs_and_collects_the_rest_after_the_grace_period() {
    let p = Project::new();
    for (name, size) in [("r1", "size=2000"), ("r2", "size=3000"), ("r3", "size=4000")] {
        p.run_named(name, &[size]);
    }
    let dry = p.collect(&["gc", "--keep-last", "1", "--dry-run"]);
    assert_eq!((names(&dry), dry["dry_run"].clone()), (vec!["r2", "r1"], serde_json::json!(true)), "{dry:#}");
    assert_eq!(dry["objects"]["waiting"]["count"], 2, "younger than the default grace of 1h: {dry:#}");
    assert_eq!(p.run_names(), ["r3", "r2", "r1"], "a dry run changes nothing");

    // Deleted runs' objects wait out the grace period before they go.
    let report = p.collect(&["gc", "--keep-last", "1"]);
    assert_eq!(names(&report), ["r2", "r1"]);
    assert_eq!((report["objects"]["waiting"]["count"].clone(), p.objects(false).len()), (serde_json::json!(2), 3));
    let report = p.collect(&["gc", "--grace", "0s"]);
    assert!(names(&report).is_empty(), "no limit deletes no run: {report:#}");
    assert_eq!(report["objects"]["deleted"]["count"], 2, "{report:#}");
    assert_eq!((p.run_names(), p.objects(false).len()), (vec!["r3".to_string()], 1));
    assert!(cat(&p, "demo.generate.output@3").is_ok(), "the kept run's artifacts are whole");

    let o = p.run(&["gc", "--older-than", "1d"]);
    assert_eq!((code(&o), stdout(&o).lines().next()), (0, Some("no runs to delete")), "{}", stderr(&o));
    assert_eq!(p.run_names(), ["r3"]);
}

#[test]
fn bad_input_to_gc_and_runs_delete_is_refused_and_deletes_nothing() {
    let p = Project::new();
    p.run_named("kept", &["size=2000"]);
    for (args, says) in [
        (&["gc", "--older-than", "soon"][..], "not a duration"),
        (&["gc", "--keep-last", "-1"][..], "-1"),
        (&["gc", "--grace", "forever"][..], "not a duration"),
        (&["runs", "delete"][..], "RUN"),
        (&["runs", "delete", "kept", "no-such-run"][..], "no-such-run"),
    ] {
        let o = p.run(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stdout(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(p.run_names(), ["kept"], "every run named is found before any is deleted");
    assert_eq!(p.objects(false).len(), 1);
}

/// An object moved to the trash while a run took it up (the race `gc`'s
/// grace period covers) is still read, and the next `gc` moves it back.
#[test]
fn an_object_in_the_trash_that_a_run_uses_is_read_and_moved_back() {
    let p = Project::new();
    p.run_named("only", &["size=2000"]);
    let [object] = &p.objects(false)[..] else { panic!("one object") };
    let relative = object.strip_prefix(p.path(".zenflow/artifacts")).unwrap();
    let trashed = p.path(".zenflow/artifacts/trash").join(relative);
    std::fs::create_dir_all(trashed.parent().unwrap()).unwrap();
    std::fs::rename(object, &trashed).unwrap();
    let bytes = cat(&p, "demo.generate.output@1").expect("read from the trash");
    assert!(bytes.len() > 16 * 1024);

    let report = p.collect(&["gc", "--grace", "0s"]);
    assert_eq!(report["objects"]["restored"]["count"], 1, "{report:#}");
    assert!(object.exists() && !trashed.exists(), "moved back");
    assert_eq!(cat(&p, "demo.generate.output@1").unwrap(), bytes);
}

/// `gc` deleting old runs over and over while pipelines run beside it
/// (cache hits on what it deletes, steps rewriting bytes it collects)
/// costs no run and loses no artifact.
#[test]
fn gc_beside_running_pipelines_loses_nothing() {
    let p = Project::new();
    p.run_named("warm", &["size=2000"]);
    let done = std::sync::atomic::AtomicBool::new(false);
    let root = p.dir().to_path_buf();
    std::thread::scope(|s| {
        let collector = s.spawn(|| {
            let (mut rounds, mut runs, mut trashed) = (0, 0, 0);
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let o = gc_in(&root, &["gc", "--keep-last", "1", "--grace", "1s", "--json"]);
                assert_eq!(code(&o), 0, "{}", stderr(&o));
                let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
                runs += report["runs"].as_array().map_or(0, Vec::len);
                trashed += report["objects"]["trashed"]["count"].as_u64().unwrap_or(0);
                rounds += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            (rounds, runs, trashed)
        });
        for i in 0..16 {
            // Three outputs in turn: each becomes unused, is collected,
            // and is then served from a cache entry `gc` may be deleting,
            // or written again over an object it is collecting.
            let size = format!("size={}", [2000, 3000, 4000][i % 3]);
            let name = format!("beside-{i}");
            let mut args = vec!["run", "--run-name", &name, "--set", &size];
            if i % 4 == 3 {
                args.push("--no-cache");
            }
            let o = p.run(&args);
            assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
            assert!(cat(&p, "demo.generate.output@latest").is_ok(), "{name}'s output is readable");
            std::thread::sleep(std::time::Duration::from_millis(150));
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        let (rounds, runs, trashed) = collector.join().unwrap();
        assert!(rounds > 5 && runs > 5 && trashed > 0, "gc deleted while the pipelines ran: {rounds} {runs} {trashed}");
    });
    let kept = p.run_names();
    assert_eq!(kept.first().map(String::as_str), Some("beside-15"));
    for name in &kept {
        let o = p.run(&["runs", "show", name, "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(report["status"], "completed", "{name}: {report:#}");
    }
    // Once everything has settled, what remains is whole and serves the cache.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    p.collect(&["gc", "--grace", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    p.collect(&["gc", "--grace", "1s"]);
    assert!(cat(&p, "demo.generate.output@latest").is_ok());
    let o = p.run(&["run", "--run-name", "after", "--set", "size=2000"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("3 cached"), "{}", stdout(&o));
}

/// The binary in project `root` (another thread's view of the project).
fn gc_in(root: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .current_dir(root)
        .env("ZENFLOW_PROJECT_ROOT", root)
        .env_remove("ZENFLOW_STACK")
        .env_remove("RUST_LOG")
        .output()
        .expect("the pipeline binary starts")
}

/// A project whose stack keeps its own database but the artifact folder of
/// another project: its runs and its `gc` are refused, and nothing of
/// either project goes, since each database's `gc` would collect the
/// objects the other's runs write.
#[test]
fn an_artifact_store_another_metadata_store_owns_is_refused() {
    let owner = Project::new();
    owner.run_named("theirs", &["size=2000"]);
    let other = Project::new();
    std::fs::write(
        other.path("zenflow.toml"),
        format!(
            "[stacks.borrowed]\nmetadata_store = \"sqlite://.zenflow/zenflow.db\"\nartifact_store = \"file://{}\"\n",
            owner.path(".zenflow/artifacts").display()
        ),
    )
    .unwrap();
    for args in [
        &["run", "--stack", "borrowed", "--run-name", "mine", "--set", "size=3000"][..],
        &["gc", "--stack", "borrowed", "--keep-last", "0", "--grace", "0s"][..],
    ] {
        let o = other.run(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(err.contains("belongs to another metadata store") && err.contains("zenflow-owner"), "{err}");
    }
    assert_eq!(owner.objects(false).len(), 1, "the owner's object stays, and the borrower wrote none");
    assert_eq!(code(&other.run(&["runs", "show", "mine", "--stack", "borrowed"])), 2, "the refused run never started");
    assert_eq!(owner.collect(&["gc", "--keep-last", "0", "--grace", "0s"])["runs"][0]["name"], "theirs");
}

mod pipelines {
    use zenflow::prelude::*;

    #[step]
    pub fn numbers(#[param] n: i64) -> Vec<i64> {
        (0..n).collect()
    }

    #[step]
    pub fn total(xs: Vec<i64>) -> i64 {
        xs.iter().sum()
    }

    #[pipeline]
    pub fn sums(n: &i64) {
        total(numbers(*n));
    }
}

/// A cache hit whose run a `gc` deletes between the lookup and the write
/// that records it is a miss: the step executes, says why, and the run
/// completes. The deletion runs through another handle, as another
/// process's would, at the moment the cached record is about to be written.
#[test]
fn a_cache_hit_deleted_before_it_is_recorded_is_a_miss() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use zenflow::metadata::{MetadataStore, RunStatus, StepStatus};
    use zenflow::stacks::{LocalOrchestrator, ObjectArtifactStore, SqliteMetadataStore};
    use zenflow::testing::faults::{Faults, FaultyMetadata, Rule};
    use zenflow::Pipeline;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("zenflow.db");
    let deleter = Arc::new(SqliteMetadataStore::open(&db).unwrap());
    let victim: Arc<Mutex<Option<String>>> = Arc::default();
    let fired = Arc::new(AtomicBool::new(false));
    let rule = {
        let (deleter, victim, fired) = (deleter.clone(), victim.clone(), fired.clone());
        Rule::on("write_step_run").when(move |call| {
            let cached = call.step_run.is_some_and(|w| w.status == StepStatus::Cached);
            let run = victim.lock().unwrap().clone();
            if let (true, Some(run)) = (cached, run) {
                if !fired.swap(true, Ordering::SeqCst) {
                    let deleter = deleter.clone();
                    let deleted = std::thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                        rt.block_on(deleter.delete_run(&run, false))
                    });
                    deleted.join().unwrap().expect("the first run is deleted");
                }
            }
            false
        })
    };
    let stack = zenflow::Stack::new(
        "beside-gc",
        Arc::new(LocalOrchestrator::new(1)),
        Arc::new(ObjectArtifactStore::local(dir.path().join("artifacts")).unwrap()),
        Arc::new(FaultyMetadata::new(SqliteMetadataStore::open(&db).unwrap(), Faults::new().with(rule))),
    )
    .with_inline_limit(0);
    let first = pipelines::sums.run(&stack, &5).unwrap();
    *victim.lock().unwrap() = Some(first.id().to_string());
    let second = pipelines::sums.run(&stack, &5).unwrap();
    assert!(fired.load(Ordering::SeqCst), "the deletion ran between the lookup and the write");
    assert_eq!(second.status(), RunStatus::Completed);
    assert_eq!(second.step("numbers").map(|s| s.status), Some(StepStatus::Completed), "executed, not cached");
    let record = stack.block_on(stack.metadata().step_run(&second.step("numbers").unwrap().step_run_id)).unwrap();
    let why = zenflow::why::line(&zenflow::why::of(&record.unwrap()));
    assert!(why.contains("deleted by `gc` or `runs delete` after the cache lookup"), "{why}");
    assert!(stack.get_run(first.id()).unwrap().is_none());
}
