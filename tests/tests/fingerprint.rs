//! The code fingerprint through a pipeline binary, as a user meets it: a
//! copy of `tests/scratch` is built with cargo, run, edited in one place,
//! rebuilt and run again; the run's JSON report says which steps re-ran and
//! why. (`zenflow-fingerprint`'s own tests cover every kind of edit on the
//! fingerprint alone.)

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

struct Scratch {
    dir: tempfile::TempDir,
    runs: usize,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("scratch/src");
        std::fs::create_dir_all(dir.path().join("src")).expect("mkdir");
        for file in ["main.rs", "features.rs"] {
            std::fs::copy(src.join(file), dir.path().join("src").join(file)).expect("copy");
        }
        let zenflow = Path::new(WORKSPACE).join("zenflow").canonicalize().expect("the zenflow crate");
        let manifest = format!(
            "[package]\nname = \"scratch\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
             [dependencies]\nserde = {{ version = \"1\", features = [\"derive\"] }}\n\
             zenflow = {{ path = {:?}, default-features = false, features = [\"cli\"] }}\n\n\
             [profile.dev]\ndebug = false\n\n[workspace]\n",
            zenflow.display().to_string()
        );
        std::fs::write(dir.path().join("Cargo.toml"), manifest).expect("write Cargo.toml");
        // The workspace's lock: the same versions, nothing to download.
        std::fs::copy(Path::new(WORKSPACE).join("Cargo.lock"), dir.path().join("Cargo.lock")).expect("copy the lock");
        Scratch { dir, runs: 0 }
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.dir.path().join("src").join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "`{from}` is in {file}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    }

    /// Builds the binary as cargo does for its user, and keeps a copy of it
    /// (other tests may build the same package into the same folder).
    fn build(&self) -> PathBuf {
        let target = Path::new(WORKSPACE).join("target/scratch");
        let out = Command::new(env!("CARGO"))
            .args(["build", "--offline", "--quiet"])
            .current_dir(self.dir.path())
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .output()
            .expect("cargo runs");
        assert!(out.status.success(), "the scratch project builds:\n{}", String::from_utf8_lossy(&out.stderr));
        let copy = self.dir.path().join("pipeline");
        std::fs::copy(target.join("debug/scratch"), &copy).expect("copy the binary");
        copy
    }

    /// Builds, runs, and returns the run's JSON report by step id.
    fn run(&mut self) -> serde_json::Map<String, Value> {
        let bin = self.build();
        self.runs += 1;
        let report = self.dir.path().join(format!("run-{}.json", self.runs));
        let out = Command::new(&bin)
            .args(["run", "--json"])
            .arg(&report)
            .current_dir(self.dir.path())
            .env("ZENFLOW_PROJECT_ROOT", self.dir.path())
            .env_remove("ZENFLOW_STACK")
            .output()
            .expect("the pipeline runs");
        assert!(out.status.success(), "the run succeeds:\n{}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&std::fs::read(&report).expect("the report")).expect("JSON");
        let steps = report["steps"].as_array().expect("steps").iter();
        steps.map(|s| (s["id"].as_str().expect("an id").to_string(), s.clone())).collect()
    }
}

/// The ids of the steps that executed (were not served from the cache).
fn executed(steps: &serde_json::Map<String, Value>) -> Vec<&str> {
    steps.iter().filter(|(_, s)| s["status"] == "completed").map(|(id, _)| id.as_str()).collect()
}

#[test]
fn an_edit_re_runs_exactly_the_steps_that_reach_it_and_says_why() {
    let mut scratch = Scratch::new();
    let first = scratch.run();
    assert_eq!(executed(&first).len(), 4, "{first:?}");
    assert_eq!(first["train"]["why"], serde_json::json!([{"kind": "no_earlier_run"}]));

    // A helper in another module: the hole of issue 22, where `train` came
    // from the cache and the gate compared the old model.
    scratch.edit("features.rs", "vec![0, 1]", "vec![0, 2]");
    let second = scratch.run();
    assert_eq!(executed(&second), ["train"]);
    assert_eq!(
        second["train"]["why"],
        serde_json::json!([{"kind": "code_changed", "items": ["`kept_features` in src/features.rs"]}])
    );
    let cached_from = &second["rank"]["why"][0];
    assert_eq!((&cached_from["kind"], cached_from["run"].as_str().is_some()), (&"cached".into(), true));

    // A `const`: `clean` re-runs; its output bytes are the same, so the
    // steps after it stay cached.
    scratch.edit("main.rs", "const FLOOR: f64 = 0.0;", "const FLOOR: f64 = -1.0;");
    let third = scratch.run();
    assert_eq!(executed(&third), ["clean"]);
    assert_eq!(
        third["clean"]["why"],
        serde_json::json!([{"kind": "code_changed", "items": ["`FLOOR` in src/main.rs"]}])
    );

    // What reaches no step: a comment, an unused function, a doc comment.
    scratch.edit("main.rs", "// Nothing calls this.", "// Nothing calls this yet.");
    scratch.edit("main.rs", "    7\n}", "    8\n}");
    scratch.edit("features.rs", "/// The columns `train` uses.", "/// The columns that `train` uses.");
    let fourth = scratch.run();
    assert!(executed(&fourth).is_empty(), "{fourth:?}");
}
