//! The pipeline binary driven from outside, as CI drives it: exit codes,
//! configuration precedence, reports, dry runs, the step entrypoint, and the
//! sticky PR comment against a local HTTP server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;
use zenflow_tests::project::{code, stderr, stdout};
use zenflow_tests::records::json;

const BIN: &str = env!("CARGO_BIN_EXE_demo_pipeline");

/// A project folder with its own `.zenflow/`, driving the demo pipeline.
struct Project(zenflow_tests::project::Project);

impl Project {
    fn new() -> Self {
        Project(zenflow_tests::project::Project::new(BIN))
    }
}

impl std::ops::Deref for Project {
    type Target = zenflow_tests::project::Project;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

#[test]
fn a_successful_run_exits_0_and_writes_every_report() {
    let p = Project::new();
    let summary = p.path("summary.md");
    let o = p
        .cmd(&["run", "--report", "r.md", "--json", "r.json", "--junit", "r.xml"])
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let r = json(&p.path("r.json"));
    assert_eq!(r["schema"], 2);
    assert_eq!(r["pipeline"], "demo");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["gate"], "passed");
    assert_eq!(r["stack"], "local");
    let steps: Vec<(&str, &str)> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("generate", "completed"), ("score", "completed"), ("publish", "completed")]);
    assert_eq!(r["metrics"][0]["name"], "mean");
    assert_eq!(r["metrics"][0]["value"], 0.45);
    let checks: Vec<(&str, &str)> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(checks, [("mean_min", "pass"), ("size_max", "warn")]);
    assert_eq!(r["checks"][0]["threshold"], 0.4);
    assert_eq!(r["steps"][2]["outputs"][0]["name"], "demo.publish.output");

    let md = std::fs::read_to_string(p.path("r.md")).unwrap();
    assert!(md.starts_with("<!-- zenflow-report pipeline=demo -->\n## ✅ zenflow · `demo` — passed"), "{md}");
    for needle in [
        "**completed** in ",
        " · quality gate passed  \n**Steps** 3 executed · 0 cached · 0 failed · 0 skipped\n",
        "| `score` | ✅ completed |",
        "| ✅ pass | mean_min | `score` | 0.45 | 0.4 |",
        "| ⚠️ warn | size_max | `score` | 10 | 8 |",
        "```mermaid\nflowchart LR\n",
        "generate -->|values| score",
        "`demo.publish.output`",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in\n{md}");
    }
    assert_eq!(std::fs::read_to_string(&summary).unwrap(), format!("{md}\n"), "the job summary gets the report");

    let junit = junit_cases(&p.path("r.xml"));
    assert_eq!(junit.len(), 5, "2 checks + 3 steps: {junit:?}");
    assert!(junit.iter().all(|c| c.2.is_none()), "no failures: {junit:?}");
    assert_eq!(junit[1].3.as_deref(), Some("warning: 10 exceeds the maximum 8 (value 10, threshold 8)"));

    // The second run comes from cache.
    let o = p.run(&["run", "--json", "r2.json"]);
    assert_eq!(code(&o), 0);
    let r = json(&p.path("r2.json"));
    assert!(r["steps"].as_array().unwrap().iter().all(|s| s["status"] == "cached"), "{r}");
    assert_eq!(r["checks"][0]["name"], "mean_min", "cached steps report the checks of the run they reuse");
}

/// (classname, name, failure message, system-out) of each JUnit test case.
fn junit_cases(path: &Path) -> Vec<(String, String, Option<String>, Option<String>)> {
    use quick_xml::events::Event;
    let xml = std::fs::read_to_string(path).unwrap();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut cases = Vec::new();
    let mut in_out = false;
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &str| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == name)
                        .map(|a| a.normalized_value(quick_xml::XmlVersion::Explicit1_0).unwrap().into_owned())
                };
                match e.name().as_ref() {
                    "testcase" => cases.push((attr("classname").unwrap(), attr("name").unwrap(), None, None)),
                    "failure" => cases.last_mut().unwrap().2 = attr("message"),
                    "system-out" => in_out = true,
                    _ => {}
                }
            }
            Event::Text(t) if in_out => {
                cases.last_mut().unwrap().3 = Some(t.html_content().into_owned());
                in_out = false;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    cases
}

#[test]
fn a_failed_step_exits_1_and_a_failed_gate_exits_3() {
    let p = Project::new();
    let o = p.run(&["run", "--set", "fail_step=true", "--json", "f.json", "--junit", "f.xml", "--report", "f.md"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("boom: this step was asked to fail"), "{}", stderr(&o));
    let r = json(&p.path("f.json"));
    assert_eq!(r["status"], "failed");
    assert_eq!(r["gate"], "not_evaluated", "a run that failed before its checks passed no gate");
    assert_eq!(r["steps"][1]["status"], "failed");
    assert_eq!(r["steps"][2]["status"], "skipped");
    // The failed step's own `tracing` events are in its report entry.
    assert_eq!(r["steps"][1]["logs"], serde_json::json!(["scoring values=10", "ERROR giving up as asked"]));
    let md = std::fs::read_to_string(p.path("f.md")).unwrap();
    assert!(md.contains("quality gate not evaluated") && !md.contains("quality gate passed"), "{md}");
    assert!(md.contains("<summary>Log of <code>score</code> (2 lines)</summary>"), "{md}");
    assert!(md.contains("```text\nscoring values=10\nERROR giving up as asked\n```"), "{md}");
    let xml = std::fs::read_to_string(p.path("f.xml")).unwrap();
    assert!(xml.contains("<system-out>scoring values=10\nERROR giving up as asked</system-out>"), "{xml}");
    let cases = junit_cases(&p.path("f.xml"));
    assert_eq!(cases.iter().find(|c| c.1 == "score").unwrap().2.as_deref(), Some("boom: this step was asked to fail"));

    let o = p.run(&["run", "--set", "threshold=0.9", "--junit", "g.xml", "--json", "g.json"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("quality gate failed: score.mean_min (0.45 is below the minimum 0.9)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(json(&p.path("g.json"))["gate"], "failed");
    let failed: Vec<_> = junit_cases(&p.path("g.xml")).into_iter().filter(|c| c.2.is_some()).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].1, "mean_min");

    // A warning passes the gate unless warnings count as errors.
    assert_eq!(code(&p.run(&["run"])), 0);
    let o = p.run(&["run", "--warnings-as-errors", "--junit", "w.xml"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("score.size_max"), "{}", stderr(&o));
    let failed: Vec<_> = junit_cases(&p.path("w.xml")).into_iter().filter(|c| c.2.is_some()).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].1, "size_max");
}

#[test]
fn bad_usage_and_configuration_exit_2_with_the_key_and_the_choices() {
    let p = Project::new();
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--stack", "prod"], "unknown stack `prod`; available stacks: local"),
        (&["run", "--set", "nope=1"], "unknown parameter `nope`; valid keys here: fail_step, label, nested, size, threshold"),
        (&["run", "--set", "nested.sclae=2"], "unknown parameter `sclae`; valid keys here: scale"),
        (&["run", "--set", "size=many"], "`--set parameters.size=many`: the value does not fit: `parameters.size`: invalid type: string \"many\", expected usize"),
        (&["run", "--cache-ttl", "a week"], "`a week` is not a duration: write one such as 30m, 12h or 7d"),
        (&["run", "--set", "size"], "expected key=value"),
        (&["run", "--set", "steps.scorer.retries=2"], "`steps.scorer`: pipeline `demo` has no step or invocation named `scorer`; its steps are: generate, score, publish"),
        (&["run", "--set", "steps.score.parameters.treshold=2"], "step `score` has no parameter `treshold`; its parameters are: threshold, fail"),
        (&["run", "--set", "steps.score.parameters.threshold=high"], "does not fit the parameter's type `f64`"),
        (&["run", "--set", "steps.score.retries=-1"], "`steps.score.retries` must be a whole number of retries"),
        (&["run", "--run-name", "x-{branch}"], "unknown placeholder `{branch}`"),
        (&["run", "--config", "missing.yaml"], "cannot read the run config missing.yaml"),
        (&["run", "--junit", "no/such/dir/j.xml"], "--junit no/such/dir/j.xml: the folder no/such/dir does not exist"),
        (&["runs", "show", "no-such-run"], "no run of pipeline `demo` matches `no-such-run`"),
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
    ];
    for (args, expected) in cases {
        let o = p.run(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(expected), "{args:?}: expected {expected:?} in {}", stderr(&o));
    }
    let o = p.cmd(&["run"]).env("ZENFLOW_STACK", "staging").output().unwrap();
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("unknown stack `staging`"), "{}", stderr(&o));

    std::fs::write(p.path("bad.yaml"), "parameters: [unclosed\n").unwrap();
    let o = p.run(&["run", "--config", "bad.yaml"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("bad.yaml is not valid YAML"), "{}", stderr(&o));
    std::fs::write(p.path("typo.yaml"), "paramters:\n  size: 3\n").unwrap();
    let o = p.run(&["run", "--config", "typo.yaml"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("unknown key `paramters`"), "{}", stderr(&o));
    // Every wrong type is named by its full key, at any depth, in any format.
    let wrong_types = [
        (
            "wrong.toml",
            "[parameters]\nsize = \"ten\"\n",
            "`parameters.size`: invalid type: string \"ten\", expected usize",
        ),
        (
            "wrong.yaml",
            "parameters:\n  threshold: high\n",
            "`parameters.threshold`: invalid type: string \"high\", expected f64",
        ),
        (
            "nested.yaml",
            "parameters:\n  nested:\n    scale: lots\n",
            "`parameters.nested.scale`: invalid type: string \"lots\"",
        ),
        ("ttl.yaml", "cache_ttl: soon\n", "`cache_ttl` must be a duration"),
    ];
    for (file, text, expected) in wrong_types {
        std::fs::write(p.path(file), text).unwrap();
        let o = p.run(&["run", "--config", file]);
        assert_eq!(code(&o), 2, "{file}: {}", stderr(&o));
        assert!(stderr(&o).contains(&format!("{file}: {expected}")), "{file}: {}", stderr(&o));
    }

    let list = p.run(&["runs", "list"]);
    assert_eq!(code(&list), 0);
    assert_eq!(stdout(&list).lines().count(), 1, "only the header: no refused command recorded a run");
}

fn plan_params(p: &Project, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["dag", "--format", "json"];
    all.extend_from_slice(args);
    let o = p.run(&all);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    serde_json::json!({
        "size": plan["steps"][0]["params"]["size"],
        "scale": plan["steps"][0]["params"]["scale"],
        "label": plan["steps"][2]["params"]["label"],
        "threshold": plan["steps"][1]["params"]["threshold"],
        "retries": plan["steps"][1]["options"]["retries"],
    })
}

#[test]
fn several_processes_share_one_local_project() {
    let p = Project::new();
    let children: Vec<_> = (0..4)
        .map(|i| {
            p.cmd(&["run", "-q", "--set", &format!("size={}", 10 + i % 2), "--run-name", &format!("proc-{i}")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let list = stdout(&p.run(&["runs", "list"]));
    for i in 0..4 {
        assert!(list.contains(&format!("proc-{i}")), "{list}");
    }
    assert_eq!(list.matches("completed").count(), 4, "{list}");
    let artifacts = stdout(&p.run(&["artifacts", "list", "--name", "demo.generate.output", "--limit", "100"]));
    assert!(artifacts.lines().count() >= 3, "both sizes produced a version: {artifacts}");
}

#[test]
fn set_wins_over_the_config_file_which_wins_over_code_defaults() {
    let p = Project::new();
    assert_eq!(
        plan_params(&p, &[]),
        serde_json::json!({"size": 10, "scale": 1.0, "label": "demo", "threshold": 0.4, "retries": 0})
    );
    std::fs::write(
        p.path("staging.yaml"),
        "parameters:\n  size: 5\n  label: from-file\n  nested:\n    scale: 2.0\nsteps:\n  score:\n    retries: 2\n    parameters:\n      threshold: 0.1\n",
    )
    .unwrap();
    assert_eq!(
        plan_params(&p, &["--config", "staging.yaml"]),
        serde_json::json!({"size": 5, "scale": 2.0, "label": "from-file", "threshold": 0.1, "retries": 2})
    );
    assert_eq!(
        plan_params(
            &p,
            &[
                "--config",
                "staging.yaml",
                "--set",
                "label=from-set",
                "--set",
                "steps.score.retries=4",
                "--set",
                "nested.scale=3"
            ]
        ),
        serde_json::json!({"size": 5, "scale": 3.0, "label": "from-set", "threshold": 0.1, "retries": 4})
    );
    // The same file as TOML.
    std::fs::write(p.path("staging.toml"), "run_name = \"nightly-{pipeline}\"\n[parameters]\nsize = 7\n").unwrap();
    assert_eq!(plan_params(&p, &["--config", "staging.toml"])["size"], 7);
    let o = p.run(&["run", "--config", "staging.toml", "--json", "t.json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&p.path("t.json"))["run_name"], "nightly-demo");
    // A label that looks like a number stays a string, also as a step parameter.
    assert_eq!(plan_params(&p, &["--set", "label=007"])["label"], "007");
    assert_eq!(plan_params(&p, &["--set", "steps.publish.parameters.label=007"])["label"], "007");
    assert_eq!(plan_params(&p, &["--set", "steps.score.parameters.threshold=0.25"])["threshold"], 0.25);
}

#[test]
fn dry_run_predicts_the_cache_and_the_entrypoint_runs_its_steps_one_by_one() {
    let p = Project::new();
    // A dry run records nothing: in a fresh folder, not even `.zenflow/`.
    let o = p.run(&["run", "--dry-run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("generate") && out.contains("run (no cached result)"), "{out}");
    assert!(out.contains("run (an input will be new)"), "{out}");
    assert!(out.contains("3 step(s), 0 from cache; nothing was recorded or executed"), "{out}");
    assert!(!p.path(".zenflow").exists(), "a dry run created the store");
    // `--pending` records the run for workers, and forecasts the same.
    let o = p.run(&["run", "--pending", "--run-name", "planned-1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("pending run planned-1 ("), "{}", stdout(&o));
    let list = stdout(&p.run(&["runs", "list"]));
    assert!(!list.contains("planned-1") && list.contains("1 pending run(s) not shown"), "hidden by default: {list}");
    let list = stdout(&p.run(&["runs", "list", "--status", "pending"]));
    assert!(list.contains("planned-1") && list.contains("pending"), "{list}");
    let show = stdout(&p.run(&["runs", "show", "planned-1"]));
    assert!(show.contains("gate: not evaluated"), "a planned run passed no gate: {show}");

    // A worker executes the planned run's steps one by one, by name.
    for step in ["generate", "score", "publish"] {
        let o = p.run(&["step-entrypoint", "--run", "planned-1", "--step", step]);
        assert_eq!(code(&o), 0, "{step}: {}", stderr(&o));
        assert!(stderr(&o).contains(&format!("{step}: completed")), "{}", stderr(&o));
    }
    let show = stdout(&p.run(&["runs", "show", "planned-1", "--logs"]));
    assert!(show.contains("status:   completed"), "the last step closes the run: {show}");
    assert!(show.contains("generating 10 values") && show.contains("publishing demo"), "{show}");
    // A `tracing` event of the step, kept with it by the binary's capture layer.
    assert!(show.contains("scoring values=10"), "{show}");

    // Now everything is cached, and the dry run says so, recording nothing.
    let before = stdout(&p.run(&["runs", "list", "--json"]));
    let out = stdout(&p.run(&["run", "--dry-run"]));
    assert_eq!(out.matches(" cached").count(), 3, "{out}");
    assert!(out.contains("3 step(s), 3 from cache"), "{out}");
    assert_eq!(stdout(&p.run(&["runs", "list", "--json"])), before, "the dry run recorded a run");

    let o = p.run(&["step-entrypoint", "--run", "planned-1", "--step", "nope"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("has no step `nope`; its steps are: generate, score, publish"), "{}", stderr(&o));
    let o = p.run(&["step-entrypoint", "--run", "no-such-run", "--step", "score"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

/// Every command that takes a run takes it as a person names it: its
/// name, its id or the start of it (git-style: an ambiguous start lists the
/// candidates), `latest`, and `latest:PREFIX`.
#[test]
fn a_run_is_named_by_its_name_its_id_or_the_start_of_it_or_latest() {
    let p = Project::new();
    let mut ids = Vec::new();
    for name in ["main-1", "pr-7", "main-2"] {
        let o = p.run(&["run", "--run-name", name, "--json", "r.json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        ids.push(json(&p.path("r.json"))["run_id"].as_str().unwrap().to_string());
    }
    let shown = |reference: &str| {
        let o = p.run(&["runs", "show", reference]);
        assert_eq!(code(&o), 0, "{reference}: {}", stderr(&o));
        stdout(&o).lines().next().unwrap_or_default().to_string()
    };
    let common = |a: &str, b: &str| a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    for (i, name) in ["main-1", "pr-7", "main-2"].iter().enumerate() {
        let shared = (0..3).filter(|&j| j != i).map(|j| common(&ids[i], &ids[j])).max().unwrap();
        let start = &ids[i][..(shared + 1).max(4)];
        assert_eq!(shown(start), format!("run:      {name} ({})", ids[i]), "by the start of its id");
        assert_eq!(shown(&start.to_uppercase()), shown(name), "in capitals too");
        assert_eq!(shown(&ids[i]), shown(name), "by its id");
    }
    assert_eq!(code(&p.run(&["run", "--pending", "--run-name", "planned"])), 0);
    assert!(shown("latest").starts_with("run:      main-2 "), "a pending run is not the latest");
    assert!(shown("latest:pr-").starts_with("run:      pr-7 "));
    assert!(shown("latest:main-").starts_with("run:      main-2 "));

    let all = &ids[0][..common(&ids[0], &ids[1]).min(common(&ids[1], &ids[2])).min(common(&ids[0], &ids[2]))];
    // UUIDv7s made seconds apart share their first characters (a time).
    assert!(all.len() >= 4, "{ids:?}");
    let o = p.run(&["runs", "show", all]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("starts the ids of several runs"), "{}", stderr(&o));
    assert!(ids.iter().all(|id| stderr(&o).contains(id.as_str())), "every candidate listed: {}", stderr(&o));
    let o = p.run(&["runs", "show", "nope-9"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no run of pipeline `demo` matches `nope-9`"), "{}", stderr(&o));
    assert!(stderr(&o).contains("`latest:PREFIX`"), "it says what may be given: {}", stderr(&o));

    // The baseline is the newest completed run before this one.
    let o = p.run(&["run", "--run-name", "main-3", "--compare-with", "latest:main-", "--json", "c.json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&p.path("c.json"))["baseline"]["run_name"], "main-2");
}

/// `runs list` lines its columns up, filters by status, says when there
/// is nothing, and with `--json` gives every run as an object; `runs show`
/// shows the run's parameters, and with `--json` its whole report.
#[test]
fn runs_list_and_show_as_tables_and_as_json() {
    let p = Project::new();
    assert_eq!(code(&p.run(&["run", "--run-name", "a-rather-long-run-name", "--set", "size=12"])), 0);
    assert_eq!(code(&p.run(&["run", "--run-name", "bad", "--set", "fail_step=true"])), 1);
    let list = stdout(&p.run(&["runs", "list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    let status_at = lines[0].find("STATUS").unwrap();
    assert!(lines[1..]
        .iter()
        .all(|l| l[status_at..].starts_with("failed ") || l[status_at..].starts_with("completed")));
    assert!(!list.contains('\x1b'), "no colour into a pipe: {list:?}");
    let started_at = lines[0].find("STARTED").unwrap();
    assert!(lines[1..].iter().all(|l| l[started_at..].starts_with("20")), "columns line up: {list}");

    let o = p.run(&["runs", "list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let runs: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let names: Vec<&str> = runs.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bad", "a-rather-long-run-name"]);
    let fields: Vec<&str> = runs[0].as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected =
        ["id", "name", "pipeline", "stack", "status", "git_commit", "started_at", "ended_at", "duration_ms"];
    expected.sort_unstable();
    assert_eq!(fields, expected, "the documented schema");
    assert_eq!(runs[0]["status"], "failed");

    let failed = stdout(&p.run(&["runs", "list", "--status", "failed"]));
    assert!(failed.contains("bad") && !failed.contains("a-rather-long"), "{failed}");
    let none = stdout(&p.run(&["runs", "list", "--status", "pending"]));
    assert_eq!(none.trim(), "no pending runs of pipeline `demo` here yet (`--all` lists every pipeline's)");
    let o = p.run(&["runs", "list", "--status", "done"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("pending, running, completed or failed"), "{}", stderr(&o));

    let show = stdout(&p.run(&["runs", "show", "a-rather-long-run-name"]));
    assert!(show.lines().any(|l| l.starts_with("size ") && l.ends_with(" 12")), "{show}");
    let o = p.run(&["runs", "show", "bad", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!((report["run_name"].as_str(), report["gate"].as_str()), (Some("bad"), Some("not_evaluated")));
    assert_eq!(report["parameters"]["fail_step"], true);
    assert_eq!(report["steps"][1]["logs"][0], "scoring values=10");
}

/// `runs show` says where a run came from (its CI job and branch, as CI's
/// variables said when it ran, not when it is shown) and each step's
/// settings that differ from the defaults.
#[test]
fn runs_show_says_where_a_run_came_from_and_each_steps_settings() {
    let p = Project::new();
    let o = p
        .cmd(&["run", "--run-name", "from-ci", "--no-cache"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_SERVER_URL", "https://github.example")
        .env("GITHUB_REPOSITORY", "team/models")
        .env("GITHUB_RUN_ID", "4242")
        .env("GITHUB_HEAD_REF", "feature/frames")
        .env("GITHUB_REF_NAME", "17/merge")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let show = stdout(&p.run(&["runs", "show", "from-ci"]));
    assert!(show.contains("branch: feature/frames"), "{show}");
    assert!(show.contains("ci job:   https://github.example/team/models/actions/runs/4242"), "{show}");
    assert!(show.lines().any(|l| l.starts_with("generate ") && l.ends_with(" cache off")), "{show}");
    let report: serde_json::Value =
        serde_json::from_str(&stdout(&p.run(&["runs", "show", "from-ci", "--json"]))).unwrap();
    assert_eq!(report["git_branch"], "feature/frames");
    assert_eq!(report["ci_job_url"], "https://github.example/team/models/actions/runs/4242");
    assert_eq!(report["steps"][0]["settings"], serde_json::json!(["cache off"]));

    assert_eq!(code(&p.run(&["run", "--run-name", "local"])), 0);
    let show = stdout(&p.run(&["runs", "show", "local"]));
    assert!(!show.contains("ci job:") && !show.contains("SETTINGS"), "no CI, default settings: {show}");
}

/// Off a terminal (CI), each step is one line as it finishes and the
/// result one line at the end; `-q` prints the result line only (and errors).
#[test]
fn off_a_terminal_each_step_is_one_line_and_quiet_leaves_the_result() {
    let p = Project::new();
    let o = p.run(&["run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    for step in ["generate", "score", "publish"] {
        let mentions = err.lines().chain(stdout(&o).lines()).filter(|l| l.contains(step)).count();
        assert_eq!(mentions, 1, "`{step}` once: {err}{}", stdout(&o));
    }
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    assert!(stdout(&o).starts_with("run ") && stdout(&o).contains("completed"), "{}", stdout(&o));

    let o = p.run(&["-q", "run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    let out = stdout(&o);
    assert!(out.lines().count() == 1 && out.contains("(0 executed, 3 cached, 0 failed, 0 skipped)"), "{out}");
    let o = p.run(&["-q", "run", "--set", "fail_step=true"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("boom: this step was asked to fail"), "errors still show: {}", stderr(&o));
}

/// `runs show` lists the run's artifacts; `artifacts cat` prints a value
/// for a person, and `cat --raw` and `export -o -` its bytes, verified.
#[test]
fn an_artifact_is_read_as_text_or_as_its_bytes() {
    let p = Project::new();
    assert_eq!(code(&p.run(&["run", "--run-name", "r1"])), 0);
    let shown = stdout(&p.run(&["runs", "show", "r1"]));
    let artifact = |output: &str| -> String {
        let line = shown.lines().find(|l| l.starts_with(output)).unwrap_or_else(|| panic!("{output}: {shown}"));
        line.split_whitespace().last().unwrap().to_string()
    };
    let publish = artifact("publish.output ");
    assert!(shown.contains("demo.publish.output@1"), "{shown}");

    let o = p.run(&["artifacts", "cat", &publish]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "demo: 0.450\n"), "{}", stderr(&o));
    let o = p.run(&["artifacts", "cat", &publish, "--raw"]);
    assert_eq!(o.stdout, b"demo: 0.450");
    let o = p.run(&["artifacts", "export", "demo.publish.output@1", "-o", "-"]);
    assert_eq!((code(&o), &o.stdout[..]), (0, &b"demo: 0.450"[..]), "{}", stderr(&o));
    assert!(!p.path("-").exists(), "no file named `-`");

    let values = stdout(&p.run(&["artifacts", "cat", &artifact("generate.output ")]));
    assert!(values.starts_with("[\n  0.0,\n  0.1,"), "JSON, indented: {values}");
    let meta = stdout(&p.run(&["artifacts", "show", &publish]));
    assert!(meta.lines().any(|l| l == "size:         11 bytes"), "{meta}");
    assert!(meta.contains("in run r1"), "runs by name: {meta}");
    assert_eq!(code(&p.run(&["artifacts", "cat", "demo.publish.output@9"])), 2);
}

/// Every list and show command has `--json`: one document a script parses.
#[test]
fn artifacts_and_stacks_list_and_show_as_json() {
    let p = Project::new();
    assert_eq!(code(&p.run(&["run", "--run-name", "j1"])), 0);
    let parse = |args: &[&str]| -> serde_json::Value {
        let o = p.run(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)))
    };
    let versions = parse(&["artifacts", "list", "--json"]);
    let names: Vec<&str> = versions.as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"demo.publish.output") && names.len() == 3, "{names:?}");
    let shown = parse(&["artifacts", "show", "demo.publish.output@1", "--json"]);
    assert_eq!(shown["version"], 1);
    assert_eq!(
        (shown["produced_by"]["step"].as_str(), shown["produced_by"]["run_name"].as_str()),
        (Some("publish"), Some("j1"))
    );
    assert_eq!(shown["consumed_by"], serde_json::json!([]));
    let generated = parse(&["artifacts", "show", "demo.generate.output@1", "--json"]);
    assert_eq!(generated["consumed_by"][0]["step"], "score");
    let stacks = parse(&["stacks", "list", "--json"]);
    assert_eq!(stacks[0]["name"], "local");
    assert_eq!(stacks[0]["orchestrator"], "local");
    let local = parse(&["stacks", "show", "local", "--json"]);
    assert!(local.as_object().is_some_and(|o| !o.is_empty()), "{local}");
}

/// `completions SHELL` prints a completion script that names the binary's
/// commands; bash accepts it.
#[test]
fn completions_for_bash_zsh_and_fish() {
    let p = Project::new();
    for shell in ["bash", "zsh", "fish"] {
        let o = p.run(&["completions", shell]);
        assert_eq!(code(&o), 0, "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        assert!(script.contains("demo") && script.contains("artifacts") && script.contains("--stack"), "{shell}");
    }
    let script = p.path("demo.bash");
    std::fs::write(&script, p.run(&["completions", "bash"]).stdout).unwrap();
    let o = std::process::Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(o.status.success(), "bash -n: {}", stderr(&o));
    assert_eq!(code(&p.run(&["completions", "tcsh"])), 2);
}

/// A stack table zenflow cannot act on is refused with the key, not kept
/// as a setting that silently does nothing.
#[test]
fn a_tracker_table_is_refused_until_a_tracker_exists() {
    let p = Project::new();
    let toml = "[stacks.exp]\nartifact_store = \"file://.zenflow/artifacts\"\n\
                metadata_store = \"sqlite://.zenflow/zenflow.db\"\n[stacks.exp.tracker]\nkind = \"mlflow\"\n";
    std::fs::write(p.path("zenflow.toml"), toml).unwrap();
    for args in [&["run", "--stack", "exp"][..], &["stacks", "show", "exp"]] {
        let o = p.run(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("`tracker` does nothing") && stderr(&o).contains("[stacks.exp.tracker]"),
            "{}",
            stderr(&o)
        );
    }
    assert!(!p.path(".zenflow/zenflow.db").exists(), "nothing ran");
}

/// `runs compare` puts runs side by side: a changed parameter and the
/// metric it moved are marked, the metric with its change from the first
/// run; `--json` and `--md` say the same.
#[test]
fn runs_compare_marks_what_differs() {
    let p = Project::new();
    assert_eq!(code(&p.run(&["run", "--run-name", "base"])), 0);
    assert_eq!(code(&p.run(&["run", "--run-name", "more", "--set", "size=20"])), 0);
    let o = p.run(&["runs", "compare", "base", "more"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let table = stdout(&o);
    let row = |name: &str| -> String {
        table
            .lines()
            .find(|l| l.get(2..).is_some_and(|rest| rest.starts_with(&format!("{name} "))))
            .unwrap_or_else(|| panic!("{name}: {table}"))
            .to_string()
    };
    let size = row("size");
    assert!(size.starts_with("* ") && size.split_whitespace().collect::<Vec<_>>()[2..] == ["10", "20"], "{table}");
    assert!(row("threshold").starts_with("  "), "the same value is not marked: {table}");
    let mean = row("score.mean");
    assert!(mean.starts_with("* ") && mean.ends_with("0.475 (+0.025)"), "{table}");
    assert!(row("generate").starts_with("  "), "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&p.run(&["runs", "compare", "base", "more", "--json"]))).unwrap();
    assert_eq!(json["runs"][1]["name"], "more");
    let size = json["parameters"].as_array().unwrap().iter().find(|r| r["name"] == "size").unwrap();
    assert_eq!(
        (size["values"].clone(), size["differs"].clone()),
        (serde_json::json!(["10", "20"]), serde_json::json!(true))
    );
    let md = stdout(&p.run(&["runs", "compare", "base", "more", "--md"]));
    assert!(md.contains("| **`size`** | `10` | `20` |"), "{md}");
    assert_eq!(code(&p.run(&["runs", "compare", "base"])), 2, "two runs at least");
}

/// A reader that goes away (`| head`) ends a command quietly, with the
/// status a closed pipe gives a process (141), not a panic.
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    use std::process::Stdio;
    let p = Project::new();
    assert_eq!(code(&p.run(&["run"])), 0);
    for args in [&["runs", "show", "latest", "--logs"][..], &["runs", "list"], &["dag"], &["artifacts", "list"]] {
        let mut child = p.cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // Gone before the first line is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(141), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}

#[test]
fn the_entrypoint_leaves_a_finished_run_as_it_was() {
    let p = Project::new();
    let o = p.run(&["run", "--set", "fail_step=true", "--run-name", "partial"]);
    assert_eq!(code(&o), 1);
    let before = stdout(&p.run(&["runs", "show", "partial"]));
    // A finished run is history: its failed step is not run again in it
    // (a new run resumes from cache instead) ...
    let o = p.run(&["step-entrypoint", "--run", "partial", "--step", "score"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("run `partial` is failed already; start a new run"), "{}", stderr(&o));
    // ... and a step that completed in it is done: exit 0, nothing runs.
    let o = p.run(&["step-entrypoint", "--run", "partial", "--step", "generate"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("generate: completed already done"), "{}", stderr(&o));
    assert_eq!(stdout(&p.run(&["runs", "show", "partial"])), before, "nothing was recorded");
}

#[test]
fn runs_artifacts_dag_and_stacks_can_be_inspected() {
    let p = Project::new();
    assert_eq!(code(&p.run(&["run", "--run-name", "first"])), 0);
    let list = stdout(&p.run(&["runs", "list"]));
    assert!(list.lines().nth(1).unwrap().starts_with("first"), "{list}");
    let show = stdout(&p.run(&["runs", "show", "latest"]));
    assert!(show.contains("run:      first") && show.contains("mean_min"), "{show}");

    let artifacts = stdout(&p.run(&["artifacts", "list", "--name", "demo.publish.output"]));
    let id = artifacts.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let shown = stdout(&p.run(&["artifacts", "show", &id]));
    assert!(shown.contains("produced by:  step publish") && shown.contains("alloc::string::String"), "{shown}");
    let o = p.run(&["artifacts", "export", &id, "--output", "out.txt"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(p.path("out.txt")).unwrap(), "demo: 0.450");
    // A large artifact lives in the artifact store; a damaged one is not
    // exported, and no partial file is left behind.
    assert_eq!(code(&p.run(&["run", "-q", "--set", "size=5000"])), 0);
    let big = stdout(&p.run(&["artifacts", "list", "--name", "demo.generate.output"]));
    let big_id = big.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let shown_big = stdout(&p.run(&["artifacts", "show", &big_id]));
    let hash = shown_big.lines().find_map(|l| l.strip_prefix("content hash: ")).unwrap().trim().to_string();
    let object = p.path(".zenflow/artifacts").join(&hash[..2]).join(&hash);
    assert!(object.is_file(), "{shown_big}");
    std::fs::write(&object, "not the array").unwrap();
    let o = p.run(&["artifacts", "export", &big_id, "--output", "bad.txt"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("is corrupted"), "{}", stderr(&o));
    assert!(!p.path("bad.txt").exists() && !p.path(".bad.txt.zenflow-partial").exists());
    let gen = stdout(&p.run(&["artifacts", "list", "--name", "demo.generate.output"]));
    let gen_id = gen.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let shown = stdout(&p.run(&["artifacts", "show", &gen_id]));
    assert!(shown.contains("consumed by:  step score"), "{shown}");
    assert_eq!(code(&p.run(&["artifacts", "show", "nope"])), 2);

    // By name: `name@N` and `name@latest`.
    let latest = stdout(&p.run(&["artifacts", "show", "demo.generate.output@latest"]));
    assert!(latest.contains(&format!("id:           {big_id}")) && latest.contains("(version 2)"), "{latest}");
    let first = stdout(&p.run(&["artifacts", "show", "demo.generate.output@1"]));
    assert!(first.contains("(version 1)") && !first.contains(&big_id), "{first}");
    let o = p.run(&["artifacts", "export", "demo.publish.output@1", "--output", "v1.txt"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(p.path("v1.txt")).unwrap(), "demo: 0.450");
    let bad: &[(&str, &str)] = &[
        ("demo.generate.output@7", "artifact `demo.generate.output` has no version 7; its latest is 2"),
        ("demo.generate.output@x", "after `@` comes a version number (1, 2, ...) or `latest`, not `x`"),
        ("demo.generate.output@0", "not `0`"),
        ("nope@latest", "no artifact named `nope`"),
    ];
    for (reference, message) in bad {
        let o = p.run(&["artifacts", "export", reference, "--output", "never.txt"]);
        assert_eq!(code(&o), 2, "{reference}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{reference}: {}", stderr(&o));
        assert!(!p.path("never.txt").exists());
    }

    let mermaid = stdout(&p.run(&["dag"]));
    assert!(mermaid.starts_with("flowchart LR\n") && mermaid.contains("score -->|score| publish"), "{mermaid}");
    let dot = stdout(&p.run(&["dag", "--format", "dot"]));
    assert!(
        dot.starts_with("digraph \"demo\"") && dot.contains("\"generate\" -> \"score\" [label=\"values\"]"),
        "{dot}"
    );

    let stacks = stdout(&p.run(&["stacks", "list"]));
    assert!(stacks.contains("local") && stacks.contains("sqlite://"), "{stacks}");
    assert_eq!(code(&p.run(&["stacks", "show", "prod"])), 2);

    let help = stdout(&p.run(&["--help"]));
    assert!(help.contains("3 a quality gate failed") && help.contains("artifacts"), "{help}");
    assert!(!help.contains("step-entrypoint"), "the worker hook is hidden: {help}");
}

/// A request the fake GitHub API received.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

/// Serves `responses` in order on 127.0.0.1, one connection each, and sends
/// every request it reads. Stops after the last response or 20 s.
fn fake_github(responses: Vec<(u16, String)>) -> (String, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (status, body) in responses {
            let Ok((stream, _)) = listener.accept() else { return };
            stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap().to_string(), parts.next().unwrap().to_string());
            let (mut length, mut authorization) = (0, None);
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "authorization" => authorization = Some(value.trim().to_string()),
                    _ => {}
                }
            }
            let mut buf = vec![0; length];
            reader.read_exact(&mut buf).unwrap();
            tx.send(Request { method, path, authorization, body: String::from_utf8(buf).unwrap() }).unwrap();
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
    });
    (url, rx)
}

#[test]
fn the_report_becomes_one_sticky_pr_comment() {
    let p = Project::new();
    assert_eq!(code(&p.run(&["run", "--report", "report.md"])), 0);
    std::fs::write(p.path("event.json"), r#"{"action": "synchronize", "pull_request": {"number": 17}}"#).unwrap();
    let comment = |api: &str| {
        p.cmd(&["report", "github-comment", "--report", "report.md"])
            .env("GITHUB_TOKEN", "ghs_secret_token_123")
            .env("GITHUB_REPOSITORY", "acme/models")
            .env("GITHUB_EVENT_PATH", p.path("event.json"))
            .env("GITHUB_API_URL", api)
            .output()
            .unwrap()
    };
    let report = std::fs::read_to_string(p.path("report.md")).unwrap();

    let me = r#"{"login": "zenflow-bot"}"#.to_string();
    // First time: no comment with the marker yet, so one is created.
    let (api, requests) = fake_github(vec![
        (200, me.clone()),
        (200, r#"[{"id": 5, "body": "an unrelated comment", "user": {"login": "alice"}}]"#.into()),
        (201, r#"{"id": 99}"#.into()),
    ]);
    let o = comment(&api);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "created comment 99 on pull request #17");
    let user = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((user.method.as_str(), user.path.as_str()), ("GET", "/user"));
    let list = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (list.method.as_str(), list.path.as_str()),
        ("GET", "/repos/acme/models/issues/17/comments?per_page=100&page=1")
    );
    assert_eq!(list.authorization.as_deref(), Some("Bearer ghs_secret_token_123"));
    let create = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((create.method.as_str(), create.path.as_str()), ("POST", "/repos/acme/models/issues/17/comments"));
    let body: serde_json::Value = serde_json::from_str(&create.body).unwrap();
    assert_eq!(body["body"], report.as_str());

    // Next time: the marked comment is found and updated in place; one
    // that someone else wrote with the marker in it is left alone.
    let existing = serde_json::json!([
        {"id": 5, "body": "hi", "user": {"login": "alice"}},
        {"id": 7, "body": format!("copied: {report}"), "user": {"login": "mallory"}},
        {"id": 99, "body": report, "user": {"login": "zenflow-bot"}},
    ])
    .to_string();
    let (api, requests) = fake_github(vec![(200, me.clone()), (200, existing), (200, r#"{"id": 99}"#.into())]);
    let o = comment(&api);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "updated comment 99 on pull request #17");
    requests.recv_timeout(Duration::from_secs(5)).unwrap();
    requests.recv_timeout(Duration::from_secs(5)).unwrap();
    let update = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((update.method.as_str(), update.path.as_str()), ("PATCH", "/repos/acme/models/issues/comments/99"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&update.body).unwrap()["body"], report.as_str());

    // The workflow's own token cannot read /user: its comments are
    // github-actions[bot]'s, and only those are taken.
    let existing = serde_json::json!([
        {"id": 7, "body": report, "user": {"login": "mallory"}},
        {"id": 42, "body": report, "user": {"login": "github-actions[bot]"}},
    ])
    .to_string();
    let (api, requests) = fake_github(vec![
        (403, r#"{"message": "Resource not accessible by integration"}"#.into()),
        (200, existing),
        (200, r#"{"id": 42}"#.into()),
    ]);
    let o = comment(&api);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "updated comment 42 on pull request #17");
    for _ in 0..2 {
        requests.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    assert_eq!(requests.recv_timeout(Duration::from_secs(5)).unwrap().path, "/repos/acme/models/issues/comments/42");
    // Only a marked comment by someone else: a new one is created.
    let existing = serde_json::json!([{"id": 7, "body": report, "user": {"login": "mallory"}}]).to_string();
    let (api, _requests) = fake_github(vec![(200, me.clone()), (200, existing), (201, r#"{"id": 100}"#.into())]);
    let o = comment(&api);
    assert_eq!(stdout(&o).trim(), "created comment 100 on pull request #17", "{}", stderr(&o));

    // A refused token: exit 1, a hint, and never the token itself.
    let (api, _requests) = fake_github(vec![(401, r#"{"message": "Bad credentials"}"#.into())]);
    let o = comment(&api);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(err.contains("HTTP 401 (the token was refused)") && err.contains("Bad credentials"), "{err}");
    assert!(!err.contains("ghs_secret_token_123") && !stdout(&o).contains("ghs_secret_token_123"));

    // Missing environment: exit 2, naming the variable.
    let o = p.cmd(&["report", "github-comment", "--report", "report.md"]).env_remove("GITHUB_TOKEN").output().unwrap();
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("GITHUB_TOKEN is not set"), "{}", stderr(&o));
}

/// A run that cannot start still leaves CI its reports, saying why: a
/// stack whose variable is unset (exit 2), and one whose metadata store
/// refuses connections (exit 1).
#[test]
fn a_run_that_cannot_start_still_writes_every_report_saying_why() {
    let p = Project::new();
    std::fs::write(
        p.path("zenflow.toml"),
        "[stacks.unset]\nartifact_store = \"memory://\"\nmetadata_store = \"${ZF_NO_SUCH_VARIABLE}\"\n\n\
         [stacks.down]\nartifact_store = \"memory://\"\n\
         metadata_store = \"postgres://zenflow:hunter2@127.0.0.1:1/zenflow\"\n",
    )
    .unwrap();
    for (stack, exit, says) in [("unset", 2, "ZF_NO_SUCH_VARIABLE"), ("down", 1, "127.0.0.1:1")] {
        let summary = p.path(&format!("{stack}-summary.md"));
        let o = p
            .cmd(&["run", "--stack", stack, "--report", "r.md", "--json", "r.json", "--junit", "r.xml"])
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env_remove("ZF_NO_SUCH_VARIABLE")
            .output()
            .unwrap();
        assert_eq!(code(&o), exit, "{stack}: {}", stderr(&o));
        let md = std::fs::read_to_string(p.path("r.md")).unwrap();
        assert!(md.starts_with("<!-- zenflow-report pipeline=demo -->"), "{md}");
        assert!(md.contains("could not run") && md.contains(says), "{stack}: {md}");
        assert_eq!(std::fs::read_to_string(&summary).unwrap().trim(), md.trim());
        let r = json(&p.path("r.json"));
        assert_eq!((r["status"].as_str(), r["stack"].as_str()), (Some("error"), Some(stack)));
        assert!(r["error"].as_str().is_some_and(|e| e.contains(says)), "{r}");
        let cases = junit_cases(&p.path("r.xml"));
        assert_eq!(cases.len(), 1, "{cases:?}");
        assert_eq!(cases[0].1, "run");
        assert!(cases[0].2.as_deref().is_some_and(|f| f.contains(says)), "{cases:?}");
        for text in [md, r.to_string(), std::fs::read_to_string(p.path("r.xml")).unwrap()] {
            assert!(!text.contains("hunter2"), "the password leaked: {text}");
        }
    }
}

#[test]
fn runs_show_why_says_what_changed_and_where_cached_steps_came_from() {
    let p = Project::new();
    let first = p.run(&["run", "-q", "--run-name", "first"]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let o = p.run(&["run", "-q", "--set", "size=11", "--set", "label=other", "--json", "r.json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = p.run(&["runs", "show", "latest", "--why"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let why: Vec<&str> = out.lines().skip_while(|l| !l.ends_with(" WHY")).take_while(|l| !l.is_empty()).collect();
    let line = |step: &str| why.iter().find(|l| l.starts_with(step)).copied().unwrap_or_default().to_string();
    assert!(line("generate").ends_with("parameter changed: size 10 -> 11"), "{out}");
    assert!(line("score").ends_with("input `values` changed (new bytes from generate)"), "{out}");
    assert!(line("publish").contains("parameter changed: label \"demo\" -> \"other\""), "{out}");
    // The JSON report carries the same reasons, as data.
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p.path("r.json")).unwrap()).unwrap();
    assert_eq!(report["steps"][0]["why"][0]["kind"], "parameter_changed", "{report}");

    // Unchanged: every step names the run it came from; an expiry of 0s re-runs them all.
    let o = p.run(&["run", "-q", "--set", "size=11", "--set", "label=other"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&p.run(&["runs", "show", "latest", "--why"]));
    let named = report["run_name"].as_str().unwrap();
    assert_eq!(out.matches(&format!("cached, from run {named}")).count(), 3, "{out}");
    let o = p.run(&["run", "-q", "--cache-ttl", "0s"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&p.run(&["runs", "show", "latest", "--why"]));
    assert!(out.contains("cache entry expired"), "{out}");
}
