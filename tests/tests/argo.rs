//! `dag --format argo`: the Argo `Workflow` of a run, checked against a
//! golden file and zenflow's own rules; the workflow's commands driven by
//! hand as Argo would drive them (each step's pod, then the exit handler).
//!
//! `.ci/run` also validates the command line's YAML against the Argo
//! Workflow schema (`@kubernetes-models/argo-workflows` from npm).
//!
//! `ZENFLOW_BLESS=1 cargo test -p zenflow-tests --test argo` rewrites the
//! golden file after an intended change.

use serde_json::Value;
use zenflow::prelude::*;
use zenflow::stacks::orchestrator::argo::{self, ArgoError, ArgoOptions};
use zenflow_tests::project::{code, stderr, stdout, Project};

const WORKER: &str = env!("CARGO_BIN_EXE_worker");

#[step]
fn load() -> u32 {
    1
}

#[step(retries = 2, retry_backoff = "500ms", timeout = "90s", resources(cpus = 0.5, memory = "1GiB", gpus = 1))]
fn train(x: u32, #[param] lr: f64) -> u32 {
    x + lr as u32
}

#[step]
fn pick(models: Vec<u32>) -> u32 {
    models.into_iter().max().unwrap_or(0)
}

#[pipeline(name = "argo_demo")]
fn demo() {
    let data = load();
    let models: Vec<_> = [0.1, 0.01].iter().map(|lr| train(data, *lr).id(format!("train_lr_{lr}"))).collect();
    pick(&models);
}

fn run_record(plan: &zenflow::Plan, name: &str) -> zenflow::metadata::RunRecord {
    zenflow::metadata::RunRecord {
        id: "01900000-0000-7000-8000-000000000001".into(),
        pipeline: plan.pipeline.clone(),
        name: name.into(),
        status: zenflow::RunStatus::Pending,
        stack: "k8s".into(),
        config: Value::Null,
        plan_json: plan.to_json(),
        git_commit: None,
        git_branch: None,
        ci_job_url: None,
        started_at: 0,
        ended_at: None,
        error: None,
    }
}

fn options() -> ArgoOptions {
    ArgoOptions {
        image: "ghcr.io/acme/pipeline:1.2.3".into(),
        binary: "/app/pipeline".into(),
        workdir: "/app".into(),
        stack: "k8s".into(),
        secret: "zenflow".into(),
        env: vec![("PGPASSWORD".into(), false), ("S3_ENDPOINT".into(), true)],
        parallelism: Some(4),
        service_account: None,
    }
}

#[test]
fn the_workflow_matches_its_golden_file() {
    let plan = demo.plan(&()).unwrap();
    let doc = argo::workflow(&plan, &run_record(&plan, "argo_demo-20261201-120000-abcdef"), &options()).unwrap();
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/argo_workflow.json");
    if std::env::var_os("ZENFLOW_BLESS").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).expect("the golden file (ZENFLOW_BLESS=1 writes it)");
    assert_eq!(text, expected, "the workflow changed; if on purpose, rerun with ZENFLOW_BLESS=1");
}

#[test]
fn the_workflow_says_what_argo_must_do() {
    let plan = demo.plan(&()).unwrap();
    let doc = argo::workflow(&plan, &run_record(&plan, "argo_demo-1"), &options()).unwrap();
    let spec = &doc["spec"];
    assert_eq!(spec["parallelism"], 4);
    assert_eq!(spec["onExit"], argo::EXIT_TEMPLATE);
    let templates = spec["templates"].as_array().unwrap();
    let template = |name: &str| templates.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("{name}"));
    let tasks = template("main")["dag"]["tasks"].as_array().unwrap().clone();
    let names: Vec<&str> = tasks.iter().map(|t| t["name"].as_str().unwrap()).collect();
    // Ids are renamed to Argo's rules (`train_lr_0_1` -> `train-lr-0-1-<hash>`),
    // kept apart by a hash.
    assert_eq!(names.len(), 4);
    let train = names.iter().find(|n| n.starts_with("train-lr-0-1-")).unwrap();
    assert!(names
        .iter()
        .all(|n| n.len() <= 63 && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')));
    let pick = tasks.iter().find(|t| t["name"] == "pick").unwrap();
    assert_eq!(pick["dependencies"].as_array().unwrap().len(), 2);
    // One container per step running the entrypoint, with an explicit command.
    let t = template(train);
    let c = &t["container"];
    assert_eq!(c["command"], serde_json::json!(["/app/pipeline"]));
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(
        &args[..5],
        ["step-entrypoint", "--run", "01900000-0000-7000-8000-000000000001", "--step", "train_lr_0_1"]
    );
    assert_eq!(&args[5..7], ["--retries-done", "{{retries}}"]);
    // Retries, never after exit 2; the deadline; resources.
    assert_eq!(t["retryStrategy"]["limit"], "2");
    assert!(t["retryStrategy"]["expression"].as_str().unwrap().contains("asInt(lastRetry.exitCode) != 2"));
    assert_eq!(t["activeDeadlineSeconds"], 90 + argo::DEADLINE_GRACE_SECS);
    assert_eq!(c["resources"]["requests"]["cpu"], "500m");
    assert_eq!(c["resources"]["requests"]["memory"], (1u64 << 30).to_string());
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert!(template("load").get("retryStrategy").is_none(), "no retries, no strategy");
    // Secrets by reference only.
    let env = c["env"].as_array().unwrap();
    let pg = env.iter().find(|e| e["name"] == "PGPASSWORD").unwrap();
    assert_eq!(pg["valueFrom"]["secretKeyRef"], serde_json::json!({"name": "zenflow", "key": "PGPASSWORD"}));
    assert!(env.iter().all(|e| e.get("value").is_none() || e["name"] == "ZENFLOW_PROJECT_ROOT"));
    let s3 = env.iter().find(|e| e["name"] == "S3_ENDPOINT").unwrap();
    assert_eq!(s3["valueFrom"]["secretKeyRef"]["optional"], true, "a variable with a default may be missing");
    // The exit handler closes the run.
    let close: Vec<&str> = template(argo::EXIT_TEMPLATE)["container"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(close[0], "close-run");
    assert_eq!(argo::check(&doc), Ok(()));
}

#[test]
fn user_strings_never_reach_argos_expressions() {
    let plan = demo.plan(&()).unwrap();
    let e = argo::workflow(&plan, &run_record(&plan, "nightly-{{workflow.name}}"), &options()).unwrap_err();
    assert_eq!(e, ArgoError::Expression { what: "the run name".into(), value: "nightly-{{workflow.name}}".into() });
    let mut o = options();
    o.stack = "{{inputs.parameters.stack}}".into();
    assert!(matches!(argo::workflow(&plan, &run_record(&plan, "ok"), &o), Err(ArgoError::Expression { .. })));
}

/// A project for the worker binary whose `k8s` stack references a secret.
fn k8s_project() -> Project {
    let p = Project::new(WORKER);
    std::fs::write(
        p.path("zenflow.toml"),
        "[stacks.k8s]\nimage = \"registry.local/worker:1\"\nartifact_store = \"file://.zenflow/artifacts\"\n\
         metadata_store = \"sqlite://.zenflow/${ZF_TEST_DB_FILE:-zenflow.db}\"\n",
    )
    .unwrap();
    p
}

#[test]
fn the_command_line_records_a_pending_run_and_writes_yaml() {
    let p = k8s_project();
    let o = p.run(&["dag", "--format", "argo", "--stack", "k8s"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let yaml = stdout(&o);
    assert!(yaml.contains("kind: Workflow") && yaml.contains("image: registry.local/worker:1"), "{yaml}");
    assert!(yaml.contains("secretKeyRef") && yaml.contains("ZF_TEST_DB_FILE"), "{yaml}");
    assert!(stderr(&o).contains("recorded pending run"), "{}", stderr(&o));
    let stack = zenflow::stacks::config::Stacks::load(p.dir()).unwrap().open("k8s").unwrap();
    let runs = stack.list_runs(None, 5).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, zenflow::RunStatus::Pending);
    assert!(yaml.contains(&runs[0].id), "the workflow runs the recorded run");

    // No image anywhere: a clear error, and nothing recorded.
    std::fs::write(
        p.path("zenflow.toml"),
        "[stacks.bare]\nartifact_store = \"file://a\"\nmetadata_store = \"sqlite://b.db\"\n",
    )
    .unwrap();
    let o = p.run(&["dag", "--format", "argo", "--stack", "bare"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no container image: pass --image, or set `image"), "{}", stderr(&o));
    assert!(!p.path("b.db").exists(), "nothing recorded");
}

#[test]
fn the_exit_handler_closes_a_run_whose_pods_never_ran_or_died() {
    let p = k8s_project();
    let o = p.run(&["dag", "--format", "argo", "--stack", "k8s", "--set", "slow_ms=10", "--set", "crash=kill"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let stack = zenflow::stacks::config::Stacks::load(p.dir()).unwrap().open("k8s").unwrap();
    let run = stack.list_runs(None, 1).unwrap().remove(0);
    // The pod of `hello` ran; the pod of `crash` was killed (SIGKILL) with
    // its step recorded as running; the workflow ended before the others.
    let pod = |step: &str| {
        p.run(&["step-entrypoint", "--run", &run.id, "--step", step, "--retries-done", "0", "--stack", "k8s"])
    };
    assert_eq!(code(&pod("hello")), 0);
    assert_eq!(pod("crash").status.code(), None, "killed by a signal");
    let o = p.run(&["close-run", "--run", &run.id, "--stack", "k8s"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let run = stack.get_run(&run.id).unwrap().unwrap();
    assert_eq!(run.status, zenflow::RunStatus::Failed);
    let records = stack.step_runs(&run.id).unwrap();
    let latest = |id: &str| records.iter().rev().find(|r| r.invocation == id).unwrap().clone();
    assert!(latest("hello").status.is_success());
    let crash = latest("crash");
    assert_eq!(crash.status, zenflow::StepStatus::Failed);
    assert_eq!(
        crash.error.as_deref(),
        Some("the workflow ended while the step was recorded as running: its process died without recording a result")
    );
    assert_eq!(records.iter().filter(|r| r.invocation == "crash").count(), 1, "its running record was closed");
    let flaky = latest("flaky");
    assert_eq!(flaky.status, zenflow::StepStatus::Skipped);
    assert_eq!(flaky.error.as_deref(), Some("the workflow ended before it ran the step"));
    assert!(run.error.as_deref().unwrap().starts_with("step `crash` failed"), "{:?}", run.error);
    // Idempotent: a second exit handler changes nothing.
    let o = p.run(&["close-run", "--run", &run.id, "--stack", "k8s"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stack.step_runs(&run.id).unwrap().len(), records.len());
}
