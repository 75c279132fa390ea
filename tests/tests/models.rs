//! The model registry through a pipeline binary, as CI drives it: a step
//! registers its output as a model version, another appraises it against
//! the version in production, and `models ...` promotes, shows, compares,
//! rolls back, with the exit codes CI relies on.

use std::path::PathBuf;
use std::process::{Command, Output};
use zenflow_tests::records::json;

const BIN: &str = env!("CARGO_BIN_EXE_model_pipeline");

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Self {
        Project { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(self.dir.path())
            .env("ZENFLOW_PROJECT_ROOT", self.dir.path())
            .env("USER", "tester")
            .env_remove("ZENFLOW_STACK")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env_remove("GITHUB_ACTOR")
            .env_remove("GITHUB_RUN_ID")
            .env_remove("CI_JOB_URL")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    /// Runs and expects exit code `code`; returns stdout.
    fn ok(&self, args: &[&str], code: i32) -> String {
        let o = self.run(args);
        assert_eq!(o.status.code(), Some(code), "{args:?}\n{}\n{}", out(&o), err(&o));
        out(&o)
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn status_of(report: &serde_json::Value, step: &str) -> String {
    report["steps"].as_array().unwrap().iter().find(|s| s["id"] == step).unwrap()["status"].as_str().unwrap().into()
}

#[test]
fn a_pipeline_registers_appraises_and_promotes_its_model() {
    let p = Project::new();
    // First run: v1 is registered; nothing holds production, so the
    // appraisal passes with a note.
    p.ok(&["run", "-q", "--json", "r1.json", "--report", "r1.md"], 0);
    let versions: serde_json::Value =
        serde_json::from_str(&p.ok(&["models", "versions", "demo-model", "--json"], 0)).unwrap();
    let v1 = &versions[0];
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["metrics"]["accuracy"], 1.0);
    assert_eq!(v1["tags"]["algorithm"], "threshold");
    assert_eq!(v1["samples"].as_array().unwrap().len(), 1, "{v1}");
    assert_eq!(v1["data_hashes"][0]["input"], "data");
    assert!(v1["code_hashes"]["train"].is_string(), "{v1}");
    let md = std::fs::read_to_string(p.path("r1.md")).unwrap();
    assert!(md.contains("### Model `demo-model`") && md.contains("no version holds production yet"), "{md}");

    // Unchanged: everything cached, and registering again creates nothing.
    p.ok(&["run", "-q", "--json", "r2.json"], 0);
    let r2 = json(&p.path("r2.json"));
    assert_eq!(status_of(&r2, "appraise"), "cached");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&p.ok(&["models", "versions", "demo-model", "--json"], 0))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Promotion is a compare-and-swap.
    let moved = p.ok(&["models", "promote", "demo-model", "1", "--to", "production", "--expect", "none"], 0);
    assert!(
        moved.contains("promote `production` of `demo-model`: nobody -> v1") && moved.contains("tester"),
        "{moved}"
    );
    let again = p.ok(&["models", "promote", "demo-model", "1", "--to", "production", "--expect", "none"], 0);
    assert!(again.contains("already holds"), "a retry is a no-op: {again}");

    // The appraisal reads production when it starts: it runs again after a
    // promotion (the train step stays cached), and is cached after that.
    p.ok(&["run", "-q", "--json", "r3.json"], 0);
    let r3 = json(&p.path("r3.json"));
    assert_eq!((status_of(&r3, "train"), status_of(&r3, "appraise")), ("cached".into(), "completed".into()));
    p.ok(&["run", "-q", "--json", "r4.json"], 0);
    assert_eq!(status_of(&json(&p.path("r4.json")), "appraise"), "cached");

    // A worse candidate (v2) fails the appraisal against v1: exit 3, and
    // the report's model section says why.
    let o = p.run(&["run", "-q", "--set", "cut=0.4", "--json", "r5.json", "--report", "r5.md", "--junit", "r5.xml"]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("appraisal.accuracy"), "{}", err(&o));
    let md = std::fs::read_to_string(p.path("r5.md")).unwrap();
    assert!(md.contains("| `accuracy` | 0.9 | 1 | -0.1 | 0.99 | ❌ fail |"), "{md}");
    assert!(md.contains("production v1"), "{md}");
    let r5 = json(&p.path("r5.json"));
    assert_eq!(r5["models"][0]["production_version"], 1, "{}", r5["models"]);
    assert_eq!(r5["models"][0]["rows"][0]["status"], "fail");
    let junit = std::fs::read_to_string(p.path("r5.xml")).unwrap();
    assert!(junit.contains("appraisal.accuracy"), "{junit}");

    // A stale expectation loses with exit 4, naming the holder and since when.
    let o = p.run(&["models", "promote", "demo-model", "2", "--to", "production", "--expect", "none"]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(err(&o).contains("held by v1 since"), "{}", err(&o));
    p.ok(&["models", "promote", "demo-model", "2", "--to", "production", "--expect", "1", "--reason", "try it"], 0);

    // Who holds what, and since when.
    let show = p.ok(&["models", "show", "demo-model@production"], 0);
    assert!(show.contains("demo-model v2") && show.contains("aliases:      production"), "{show}");
    let r5_run = format!("run:          {} ({})", r5["run_name"].as_str().unwrap(), r5["run_id"].as_str().unwrap());
    assert!(show.contains(&r5_run), "the run by its name: {show}");
    let list = p.ok(&["models", "list"], 0);
    assert!(list.contains("demo-model") && list.contains("production=v2"), "{list}");
    let history = p.ok(&["models", "history", "demo-model", "--alias", "production"], 0);
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{history}");
    assert!(rows[0].contains("v1 -> v2") && rows[0].contains("try it"), "newest first: {history}");
    let compare = p.ok(&["models", "compare", "demo-model", "1", "production"], 0);
    assert!(compare.contains("accuracy") && compare.contains("-0.1000"), "{compare}");
    assert!(compare.contains("content hash") && compare.contains("differs"), "{compare}");

    // Rolling back is a compare-and-swap back, recorded as an event.
    let back = p.ok(&["models", "rollback", "demo-model", "--alias", "production", "--reason", "v2 is worse"], 0);
    assert!(back.contains("rollback `production` of `demo-model`: v2 -> v1"), "{back}");
    let events: serde_json::Value =
        serde_json::from_str(&p.ok(&["models", "history", "demo-model", "--json"], 0)).unwrap();
    assert_eq!(events[0]["kind"], "rollback");
    assert_eq!(events.as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect::<Vec<_>>(), [3, 2, 1]);
}

#[test]
fn bad_registry_input_exits_2_naming_what_exists() {
    let p = Project::new();
    p.ok(&["run", "-q"], 0);
    let cases: [(&[&str], &str); 7] = [
        (&["models", "show", "no-such-model"], "registered models: demo-model"),
        (&["models", "show", "demo-model@9"], "its versions: 1"),
        (&["models", "show", "demo-model@production"], "aliases held: none"),
        (&["models", "promote", "demo-model", "1", "--to", "Prod", "--expect", "none"], "only [a-z0-9_-]"),
        (&["models", "promote", "demo-model", "1", "--to", "", "--expect", "none"], "it is empty"),
        (&["models", "promote", "demo-model", "3", "--to", "production", "--expect", "none"], "has no version 3"),
        (&["models", "promote", "demo-model", "1", "--to", "production"], "--expect none"),
    ];
    for (args, says) in cases {
        let o = p.run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
        assert!(err(&o).contains(says), "{args:?}: {}", err(&o));
    }
    let long = "x".repeat(65);
    let o = p.run(&["models", "promote", "demo-model", "1", "--to", &long, "--expect", "none"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("at most 64"), "{}", err(&o));
    // Nothing changed.
    assert!(p.ok(&["models", "history", "demo-model"], 0).lines().count() == 1);
    let o = p.run(&["models", "rollback", "demo-model", "--alias", "production"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("no earlier holder"), "{}", err(&o));
}

#[test]
fn a_protected_alias_moves_only_with_a_passing_run_or_forced_with_a_reason() {
    let p = Project::new();
    std::fs::write(
        p.path("zenflow.toml"),
        "[stacks.local]\nartifact_store = \"file://.zenflow/artifacts\"\nmetadata_store = \"sqlite://.zenflow/zenflow.db\"\n\
         protected_aliases = [\"production\"]\n",
    )
    .unwrap();
    p.ok(&["run", "-q", "--json", "good.json"], 0);
    let good_run = json(&p.path("good.json"))["run_id"].as_str().unwrap().to_string();
    // Runs are cited by name, as every other command takes them.
    let good_name = json(&p.path("good.json"))["run_name"].as_str().unwrap().to_string();
    let o = p.run(&["models", "promote", "demo-model", "1", "--to", "production", "--expect", "none"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("protected") && err(&o).contains("--force"), "{}", err(&o));
    // A run whose gate failed does not unlock it.
    std::fs::write(p.path("worse.yaml"), "parameters:\n  cut: 0.4\n").unwrap();
    p.ok(&["models", "promote", "demo-model", "1", "--to", "staging", "--expect", "none"], 0);
    let o = p.run(&["models", "promote", "demo-model", "1", "--to", "production", "--expect", "none", "--run", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("--run nope: no run matches `nope`"), "{}", err(&o));
    p.ok(&["models", "promote", "demo-model", "1", "--to", "production", "--expect", "none", "--run", &good_name], 0);
    let o = p.run(&["run", "-q", "--config", "worse.yaml", "--json", "bad.json"]);
    assert_eq!(o.status.code(), Some(3));
    let bad_run = json(&p.path("bad.json"))["run_id"].as_str().unwrap().to_string();
    let o = p.run(&["models", "promote", "demo-model", "2", "--to", "production", "--expect", "1", "--run", &bad_run]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("appraise.appraisal.accuracy"), "{}", err(&o));
    let o = p.run(&["models", "promote", "demo-model", "2", "--to", "production", "--expect", "1", "--force"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("needs a reason"), "{}", err(&o));
    p.ok(&["models", "promote", "demo-model", "2", "--to", "production", "--force", "--reason", "incident 42"], 0);
    let events: serde_json::Value =
        serde_json::from_str(&p.ok(&["models", "history", "demo-model", "--json"], 0)).unwrap();
    assert_eq!(events[0]["forced"], true);
    assert_eq!(events[0]["reason"], "incident 42");
    assert_eq!(events[1]["run_id"], good_run.as_str());
}

/// Two stacks on one metadata store but separate artifact stores: the
/// second cannot read the version the first registered. The step that
/// needs it fails with an error that says so, recorded by the step's own
/// process (a worker of the subprocess orchestrator), not reported as a
/// process that died without a record.
#[test]
fn a_stack_reading_another_stores_artifact_says_they_must_share_it() {
    let p = Project::new();
    let bin = BIN;
    std::fs::write(
        p.path("zenflow.toml"),
        format!(
            "[stacks.a]\nmetadata_store = \"sqlite://.zenflow/shared.db\"\nartifact_store = \"file://.zenflow/a\"\n\
             inline_limit = 0\n\n\
             [stacks.b]\norchestrator = {{ kind = \"subprocess\", program = {bin:?} }}\n\
             metadata_store = \"sqlite://.zenflow/shared.db\"\nartifact_store = \"file://.zenflow/b\"\ninline_limit = 0\n"
        ),
    )
    .unwrap();
    p.ok(&["run", "-q", "--stack", "a"], 0);
    p.ok(&["models", "promote", "demo-model", "1", "--to", "production", "--expect", "none", "--stack", "a"], 0);

    // A different model (its bytes are not in store `b` already).
    let o = p.run(&["run", "--stack", "b", "--set", "cut=0.7", "--json", "b.json"]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", out(&o), err(&o));
    let report = json(&p.path("b.json"));
    let appraise = report["steps"].as_array().unwrap().iter().find(|s| s["id"] == "appraise").unwrap();
    assert_eq!(appraise["status"], "failed");
    let error = appraise["error"].as_str().unwrap();
    assert!(
        error.contains("is not in this stack's artifact store (file://")
            && error.contains("Stacks that share a metadata store must share their artifact store too"),
        "{error}"
    );
    assert!(error.contains("/.zenflow/a/"), "it names where the record says it is: {error}");
    // Nothing was lost: on its own stack the version still reads.
    p.ok(&["run", "-q", "--stack", "a", "--no-cache"], 0);
}
