//! A step whose error, log, output and check carry the stack's own secret
//! (as a backend's error text may: a response body, a URL with
//! credentials): nothing the run leaves behind shows it. Not the store's
//! files, not the reports, not the command line's output, not `runs show`.
//! In this process (the local orchestrator) and in a worker process (the
//! subprocess orchestrator).

use std::path::Path;
use zenflow_tests::project::{code, stderr, stdout, Project};

const WORKER: &str = env!("CARGO_BIN_EXE_worker");
const SECRET: &str = "Sup3r-Secret-deploy-token-71";

fn project() -> Project {
    let p = Project::new(WORKER);
    let stack = |name: &str, orchestrator: &str| {
        format!(
            "[stacks.{name}]\norchestrator = {orchestrator}\nartifact_store = \"file://.zenflow/artifacts\"\n\
             metadata_store = \"sqlite://.zenflow/zenflow.db\"\n\n[stacks.{name}.deployer]\n\
             url = \"http://127.0.0.1:9\"\ntoken = \"${{ZF_LEAK_TOKEN}}\"\n\n"
        )
    };
    let toml =
        stack("here", "\"local\"") + &stack("sub", &format!("{{ kind = \"subprocess\", program = {WORKER:?} }}"));
    std::fs::write(p.path("zenflow.toml"), toml).unwrap();
    p
}

/// Every file under `dir` (the store's database, its WAL, artifacts).
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `captured`: the step runs in a process of its own, whose stdout and
/// stderr zenflow passes on (redacted); an in-process step's own `println!`
/// goes to the terminal directly.
fn leaks_nothing(stack: &str, captured: bool) {
    let p = project();
    let o = p
        .cmd(&["run", "--stack", stack, "--set", "leak=ZF_LEAK_TOKEN", "--report", "r.md", "--json", "r.json"])
        .args(["--junit", "r.xml"])
        .env("ZF_LEAK_TOKEN", SECRET)
        .env("GITHUB_STEP_SUMMARY", p.path("summary.md"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let printed = format!("{}{}", stdout(&o), stderr(&o));
    let by_zenflow: String = printed
        .lines()
        .filter(|l| captured || !l.starts_with("the secret on stdout:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!by_zenflow.contains(SECRET), "the command line printed the secret:\n{printed}");
    if captured {
        assert!(printed.contains("the secret on stdout: ***"), "the step's own output, redacted:\n{printed}");
    }

    // The record says what happened, with the secret hidden.
    let show =
        p.cmd(&["runs", "show", "latest", "--logs", "--stack", stack]).env("ZF_LEAK_TOKEN", SECRET).output().unwrap();
    let shown = stdout(&show);
    assert_eq!(code(&show), 0, "{}", stderr(&show));
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("HTTP 401 from https://admin:***@api.internal/v1"), "{shown}");
    assert!(shown.contains("connecting with ***"), "the step's log line, redacted: {shown}");

    for report in ["r.md", "r.json", "r.xml", "summary.md"] {
        let text = std::fs::read_to_string(p.path(report)).unwrap();
        assert!(!text.contains(SECRET), "{report} shows the secret:\n{text}");
        assert!(text.contains("***"), "{report} says something was hidden:\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p.path("r.json")).unwrap())
        .expect("the JSON report is still JSON");
    let leaky = json["steps"].as_array().unwrap().iter().find(|s| s["id"] == "leaky").unwrap();
    assert_eq!(leaky["status"], "failed");
    assert_eq!(
        leaky["error"], "HTTP 401 from https://admin:***@api.internal/v1: {\"error\": \"bad token ***\"}",
        "the rest of the error is kept"
    );

    // Nor do the store's own bytes (the database, its WAL, the artifacts).
    let store = files(&p.path(".zenflow"));
    assert!(store.iter().any(|f| f.to_string_lossy().ends_with("zenflow.db")), "{store:?}");
    for f in store {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "{} holds the secret", f.display());
    }
}

#[test]
fn a_step_that_leaks_the_stacks_secret_in_process_leaves_no_trace_of_it() {
    leaks_nothing("here", false);
}

#[test]
fn a_worker_process_that_leaks_the_stacks_secret_leaves_no_trace_of_it() {
    leaks_nothing("sub", true);
}
