//! The template's loop on one machine, driven as its workflows drive it:
//! the pipeline binary on a local stack with a deployer, and its own
//! `serve` answering. (The same loop on PostgreSQL, S3 and Ray runs in the
//! service tier.)

mod common;

use common::text;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_gitflow");
const TOKEN: &str = "gitflow-test-token";

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Self {
        // The template's stacks, on this machine's stores.
        let dir = common::checkout(
            r#"
[stacks.staging]
metadata_store = "sqlite://.zenflow/zenflow.db"
artifact_store = "file://.zenflow/artifacts"

[stacks.production]
metadata_store = "sqlite://.zenflow/zenflow.db"
artifact_store = "file://.zenflow/artifacts"
protected_aliases = ["production"]

[stacks.production.deployer]
url = "${ZENFLOW_SERVER_URL:-http://127.0.0.1:9}"
token = "${ZENFLOW_DEPLOY_TOKEN:-unset}"
wait = "20s"
"#,
        );
        Project { dir }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env("ZENFLOW_PROJECT_ROOT", self.dir.path())
            .env("ZENFLOW_DEPLOY_TOKEN", TOKEN)
            .env_remove("ZENFLOW_STACK")
            .env_remove("RUST_LOG")
            .env_remove("GITHUB_STEP_SUMMARY");
        c
    }

    fn run(&self, args: &[&str], server: Option<&str>) -> Output {
        let mut c = self.cmd(args);
        if let Some(url) = server {
            c.env("ZENFLOW_SERVER_URL", url);
        }
        c.output().unwrap()
    }

    fn newest_version(&self) -> i64 {
        let out = self.run(&["models", "versions", "breast-cancer", "--stack", "production", "--json"], None);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array().unwrap().iter().filter_map(|v| v["version"].as_i64()).max().unwrap()
    }

    fn production(&self) -> Option<i64> {
        let out = self.run(&["models", "versions", "breast-cancer", "--stack", "production", "--json"], None);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array()?
            .iter()
            .find(|v| v["aliases"].as_array().is_some_and(|a| a.iter().any(|a| a == "production")))
            .and_then(|v| v["version"].as_i64())
    }
}

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(p: &Project) -> Server {
    let mut child = p
        .cmd(&[
            "serve",
            "--stack",
            "production",
            "--model",
            "breast-cancer",
            "--bind",
            "127.0.0.1:0",
            "--poll",
            "200ms",
            "--wait-for-alias",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_string();
    Server(child, url)
}

fn served_version(url: &str) -> Option<String> {
    let body = serde_json::json!({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP64", "data": vec![10.0; 30]}]});
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.post(format!("{url}/v2/models/breast-cancer/infer")).send_json(&body).ok()?;
    let v: serde_json::Value = r.body_mut().read_json().ok()?;
    v["model_version"].as_str().map(String::from)
}

#[test]
fn from_a_laptop_to_production() {
    let p = Project::new();
    // Experiment locally: exit 0, a first version, nothing deployed.
    let o = p.run(&["run", "--config", "configs/local.yaml"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // As the main workflow does first: the registry guards production.
    let o = p.run(&["models", "protect", "breast-cancer", "--alias", "production", "--stack", "production"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // The first merge: production data, every check passes, so it is
    // promoted and deployed; the server (waiting for a version) serves it.
    let server = serve(&p);
    let o = p.run(
        &[
            "run",
            "--stack",
            "production",
            "--config",
            "configs/production.yaml",
            "--run-name",
            "main-1",
            "--report",
            "main.md",
        ],
        Some(&server.1),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let first = p.production().expect("the merge promoted a version");
    assert_eq!(served_version(&server.1), Some(first.to_string()));
    let report = std::fs::read_to_string(p.dir.path().join("main.md")).unwrap();
    assert!(report.contains(&format!("v{first} of `breast-cancer` serves as `production`")), "{report}");

    // A merge that changes no model (a docs-only commit): registration finds
    // the same bytes, the deployment finds them serving, and the run is green
    // without touching the server.
    let o = p.run(
        &["run", "--stack", "production", "--config", "configs/production.yaml"]
            .into_iter()
            .chain(["--run-name", "main-2", "--report", "main-2.md"])
            .collect::<Vec<_>>(),
        Some(&server.1),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report = std::fs::read_to_string(p.dir.path().join("main-2.md")).unwrap();
    assert!(
        report.contains(&format!("v{first} of `breast-cancer` already serves as `production`: nothing to deploy")),
        "{report}"
    );
    assert_eq!(p.production(), Some(first));
    assert_eq!(served_version(&server.1), Some(first.to_string()));
    let history = p.run(&["models", "history", "breast-cancer", "--stack", "production"], None);
    assert_eq!(text(&history).matches("-> v").count(), 1, "one promotion, not two: {}", text(&history));

    // A PR on staging, appraised against production: passes, deploys nothing.
    let o = p.run(
        &["run", "--stack", "staging", "--config", "configs/staging.yaml", "--junit", "junit.xml"]
            .into_iter()
            .chain(["--compare-with", "latest:main-", "--report", "pr.md"])
            .collect::<Vec<_>>(),
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let pr = std::fs::read_to_string(p.dir.path().join("pr.md")).unwrap();
    assert!(pr.contains("### Against `main-2`"), "{}\n{pr}", text(&o));
    // A reviewer reads the verdict and the gate first, the step list last.
    let at = |s: &str| pr.find(s).unwrap_or_else(|| panic!("no {s:?} in {pr}"));
    assert!(at("## ✅") < at("### Model `breast-cancer`") && at("### Model") < at("### Checks"), "{pr}");
    assert!(at("### Checks") < at("### Against") && at("### Against") < at("### Steps"), "{pr}");
    // The candidate is the version this run registered: the same tree as
    // the local experiment's (same data, same code), so that one, v1.
    assert!(pr.contains(&format!("candidate v1 · production v{first}")), "{pr}");
    assert!(pr.contains("| `load` | dataset | `\"production\"` | `\"staging\"` |"), "{pr}");
    // The PR has the same code; only the production config deploys.
    assert!(pr.contains("- **Steps gone:** `deploy`") && !pr.contains("Code changed"), "{pr}");
    assert!(std::fs::read_to_string(p.dir.path().join("junit.xml")).unwrap().contains("<testsuite"));
    assert_eq!(p.production(), Some(first));

    // A PR with a worse model (noisy labels): the gate fails, exit 3.
    let o =
        p.run(&["run", "--stack", "staging", "--config", "configs/staging.yaml", "--set", "label_noise=0.35"], None);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("accuracy"), "{}", text(&o));

    // A PR with drifted data: the drift check fails, exit 3.
    let o = p.run(&["run", "--stack", "staging", "--config", "configs/staging.yaml", "--set", "dataset=drifted"], None);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("drift"), "{}", text(&o));

    // A worse model merged anyway: nothing moves, the old version serves.
    let o = p.run(
        &["run", "--stack", "production", "--config", "configs/production.yaml", "--set", "label_noise=0.35"],
        Some(&server.1),
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(p.production(), Some(first));
    assert_eq!(served_version(&server.1), Some(first.to_string()));

    // That worse version cannot be moved into production around the gate:
    // not through the staging stack, whose file declares no protection,
    // and not by citing another run whose checks passed.
    let worse = p.newest_version();
    assert!(worse > first, "the worse run registered its own version");
    let (v, from) = (worse.to_string(), first.to_string());
    let promote = ["models", "promote", "breast-cancer", v.as_str(), "--to", "production", "--expect", from.as_str()];
    let o = p.run(&[&promote[..], &["--stack", "staging"]].concat(), None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is protected") && text(&o).contains("no run was given"), "{}", text(&o));
    let o = p.run(&[&promote[..], &["--stack", "staging", "--run", "main-2"]].concat(), None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains(&format!("is no evidence for v{worse}")), "{}", text(&o));
    // The staging stack declares nothing; the registry's rule holds anyway.
    let o = p.run(&["stacks", "check", "staging"], None);
    let expected = "the registry protects breast-cancer@production (this stack file does not declare them)";
    assert!(text(&o).contains(expected), "{}", text(&o));
    let o = p.run(&["stacks", "check", "production"], None);
    assert!(text(&o).contains("the registry protects what zenflow.toml declares (production)"), "{}", text(&o));
    assert_eq!(p.production(), Some(first), "production never moved");
}

/// `run --report` appends the report to the job summary itself: a workflow
/// that appended it again would show it twice.
#[test]
fn the_workflows_leave_the_job_summary_to_the_run() {
    for workflow in ["pull-request.yml", "main.yml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows").join(workflow);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("--report report.md"), "{workflow} writes the report");
        assert!(!text.contains("GITHUB_STEP_SUMMARY"), "{workflow} appends the report to the job summary again");
    }
}
