//! Helpers shared by the integration tests.

/// A project folder driving a pipeline binary the way CI does.
pub mod project {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    /// A temporary project folder (removed when dropped) and the pipeline
    /// binary run in it.
    pub struct Project {
        dir: tempfile::TempDir,
        bin: PathBuf,
    }

    impl Project {
        /// A fresh folder for `bin`.
        pub fn new(bin: impl AsRef<Path>) -> Self {
            Project { dir: tempfile::tempdir().expect("a temporary folder"), bin: bin.as_ref().to_path_buf() }
        }

        /// The folder.
        pub fn dir(&self) -> &Path {
            self.dir.path()
        }

        /// A path inside the folder.
        pub fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// The binary with `args`, in the folder, with the environment CI
        /// would have (no stack or log settings from the caller's).
        pub fn cmd(&self, args: &[&str]) -> Command {
            let mut c = Command::new(&self.bin);
            c.args(args)
                .current_dir(self.dir.path())
                .env("ZENFLOW_PROJECT_ROOT", self.dir.path())
                .env_remove("ZENFLOW_STACK")
                .env_remove("GITHUB_STEP_SUMMARY")
                .env_remove("RUST_LOG");
            c
        }

        /// Runs the binary with `args` to its end.
        pub fn run(&self, args: &[&str]) -> Output {
            self.cmd(args).output().expect("the pipeline binary starts")
        }

        /// [`Project::cmd`] as a user without privileges: `nobody` when
        /// this process is root (root ignores file modes), else this user.
        /// The folder is opened to everyone first.
        pub fn cmd_unprivileged(&self, args: &[&str]) -> Command {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
            if !is_root() {
                return self.cmd(args);
            }
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"])
                .arg(&self.bin)
                .args(args)
                .current_dir(self.dir.path())
                .env("ZENFLOW_PROJECT_ROOT", self.dir.path())
                .env_remove("ZENFLOW_STACK")
                .env_remove("GITHUB_STEP_SUMMARY")
                .env_remove("RUST_LOG");
            c
        }
    }

    /// Whether this process runs as root.
    pub fn is_root() -> bool {
        Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
    }

    /// The exit code (panics on a signal).
    pub fn code(o: &Output) -> i32 {
        o.status.code().expect("exited normally")
    }

    /// Standard output as text.
    pub fn stdout(o: &Output) -> String {
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Standard error as text.
    pub fn stderr(o: &Output) -> String {
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

/// What a run did and recorded, as tests compare it.
pub mod records {
    use zenflow::metadata::{RunRecord, StepRunRecord, StepStatus};
    use zenflow::{RunResult, Stack};

    /// Each step of `run` with its final status, in the order they ended.
    pub fn statuses<O>(run: &RunResult<O>) -> Vec<(&str, StepStatus)> {
        run.steps().iter().map(|s| (s.invocation.as_str(), s.status)).collect()
    }

    /// The latest record of step `id` among `records`.
    pub fn latest<'r>(records: &'r [StepRunRecord], id: &str) -> &'r StepRunRecord {
        records.iter().rev().find(|r| r.invocation == id).unwrap_or_else(|| panic!("no record of `{id}`"))
    }

    /// Asserts that `run` holds, for each of its steps, the latest record
    /// the store holds: what a report built from the result shows is what
    /// one read back from the store shows.
    pub fn assert_records_as_stored<O>(stack: &Stack, run: &RunResult<O>) {
        let all = stack.step_runs(run.id()).unwrap();
        let stored: Vec<StepRunRecord> = run.plan().steps.iter().map(|s| latest(&all, &s.id).clone()).collect();
        assert_eq!(run.records().len(), run.plan().steps.len(), "every step of {} reached an end", run.name());
        assert_eq!(run.records(), stored.as_slice(), "the records of {}", run.name());
    }

    /// The newest run on `stack`, with its step records.
    pub fn latest_run(stack: &Stack) -> (RunRecord, Vec<StepRunRecord>) {
        let run = stack.list_runs(None, 1).unwrap().remove(0);
        let records = stack.step_runs(&run.id).unwrap();
        (run, records)
    }

    /// The JSON document in file `path` (a report).
    pub fn json(path: &std::path::Path) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }
}

/// What the service tier's tests share: the servers `.ci/services.sh`
/// started, found through the variables it exported.
pub mod services {
    /// The variable `name`, which `.ci/services.sh` exports.
    pub fn env(name: &str) -> String {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set: this service test needs it (see .ci/services.sh)"))
    }

    /// A runtime of two workers.
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    /// `prefix` and a suffix no other call on this machine gives, valid as
    /// an SQL name.
    pub fn unique(prefix: &str) -> String {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        format!("{prefix}_{}_{nanos}_{n}", std::process::id())
    }

    /// A fresh, empty database on the service tier's server; its URL.
    pub fn fresh_database(rt: &tokio::runtime::Runtime) -> String {
        let admin = env("ZENFLOW_TEST_POSTGRES_URL");
        let name = unique("zf");
        rt.block_on(async {
            let (client, conn) =
                tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("connect as admin");
            tokio::spawn(conn);
            client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
        });
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_string();
        format!("{base}/{name}")
    }
}

/// Races on the model registry between two processes of the `registry_race`
/// binary, for the SQLite test and the PostgreSQL service test.
pub mod registry_race {
    use std::process::Command;
    use std::sync::Arc;
    use zenflow::conformance::metadata::{artifact, new_run, step_write};
    use zenflow::metadata::{MetadataStore, StepStatus};

    /// Records `n` artifact versions `race.art.output` v1..vn (artifact `i`
    /// has the bytes of artifact `i - 1` when `pairs`, so registrations of
    /// odd and even neighbours race on identical bytes).
    pub fn seed(store: &dyn MetadataStore, n: usize) -> tokio::runtime::Runtime {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let run = store.create_run(&new_run("race", "race-seed")).await.unwrap();
            for i in 0..n {
                let mut w = step_write(&run.id, "art", StepStatus::Completed);
                w.new_outputs = vec![artifact("race", "art", format!("model bytes {}", i / 2).as_bytes())];
                store.write_step_run(&w).await.unwrap();
            }
            store.flush().await.unwrap();
        });
        rt
    }

    /// Runs two race processes at once; their JSON lines.
    pub fn race(bin: &str, store: &str, what: &str, firsts: [i64; 2], threads: usize) -> Vec<serde_json::Value> {
        let children: Vec<_> = firsts
            .iter()
            .map(|first| {
                Command::new(bin)
                    .args([store, what, "race-model", &first.to_string(), &threads.to_string()])
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut lines = Vec::new();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "a race process failed");
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                lines.push(serde_json::from_str(line).unwrap());
            }
        }
        lines
    }

    /// The assertions both stores must pass, after [`seed`].
    pub fn races_hold(bin: &str, store: &str, open: impl Fn() -> Arc<dyn MetadataStore>) {
        // Sixteen registrations, pairs of identical bytes: eight versions.
        let registered = race(bin, store, "register", [1, 9], 8);
        assert!(registered.iter().all(|r| r["version"].is_i64()), "{registered:?}");
        let s = open();
        let reg = s.registry().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut numbers: Vec<i64> =
            rt.block_on(reg.versions("race-model")).unwrap().into_iter().map(|v| v.version).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=8).collect::<Vec<_>>(), "one version per distinct bytes, dense: {registered:?}");
        for pair in registered.chunks(2) {
            assert_eq!(pair[0]["version"], pair[1]["version"], "identical bytes, one version: {registered:?}");
        }

        // Sixteen promotions of versions 1..8 (each from both processes), all
        // expecting nobody.
        let outcomes = race(bin, store, "promote", [1, 1], 8);
        let winners: Vec<&serde_json::Value> = outcomes.iter().filter(|o| o["moved"] == true).collect();
        assert_eq!(winners.len(), 1, "exactly one wins: {outcomes:?}");
        let winner = winners[0]["to"].as_i64().unwrap();
        for o in &outcomes {
            // The winner's twin in the other process finds its promotion done: a no-op.
            let retry = o["moved"] == false && o["to"] == winner;
            assert!(
                o["moved"] == true || retry || o["conflict"] == winner,
                "the others get the conflict naming v{winner}: {o}"
            );
        }
        let conflicts = outcomes.iter().filter(|o| o["conflict"] == winner).count();
        assert!(conflicts >= 14, "{outcomes:?}");
        let log = rt.block_on(reg.history("race-model", None, 100)).unwrap();
        assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [1], "{log:?}");
        assert_eq!(log[0].to, Some(winner));
    }
}
