//! The template's whole loop on real services, driven exactly as its
//! workflows drive it: the binary with the template's own `zenflow.toml`
//! (staging and production on PostgreSQL, S3 and a Ray head), its own
//! `serve` as the production model server, and a fake GitHub API that
//! checks and records every request of the sticky comment.
//!
//! ```text
//! cargo test -p gitflow --test services -- --ignored
//! ```
//!
//! It reads the variables the template's stack file reads (`PGHOST`,
//! `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `S3_ENDPOINT`,
//! `S3_BUCKET`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `S3_ALLOW_HTTP`, `RAY_ADDRESS`, `ZENFLOW_SERVER_URL`,
//! `ZENFLOW_DEPLOY_TOKEN`), as a CI job's secrets would set them. The Ray
//! head must have been started with the same ones: its jobs resolve the
//! stack file from their own environment. `.ci/run` does both. The test
//! (re)creates database `PGDATABASE`, so point it at a throwaway one.

mod common;

use common::text;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gitflow");
const MODEL: &str = "breast-cancer";
const PR: u64 = 17;
const GITHUB_TOKEN: &str = "ghs_fake_workflow_token";
/// What an installation token (the workflow's `GITHUB_TOKEN`) comments as.
const BOT: &str = "github-actions[bot]";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: this test needs the template's services (see examples/gitflow/tests/services.rs)")
    })
}

/// A runtime with a worker thread, so that a connection kept open (the
/// lock of the two-merges scenario) is served between calls.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

fn pg_url(database: &str) -> String {
    format!(
        "host={} port={} user={} password={} dbname={database}",
        env("PGHOST"),
        env("PGPORT"),
        env("PGUSER"),
        env("PGPASSWORD")
    )
}

fn connect(rt: &tokio::runtime::Runtime, database: &str) -> tokio_postgres::Client {
    let (client, conn) =
        rt.block_on(tokio_postgres::connect(&pg_url(database), tokio_postgres::NoTls)).expect("connect to PostgreSQL");
    rt.spawn(conn);
    client
}

/// A checkout of the template, as a CI job has it: its configs, its own
/// stack file unchanged, and a commit.
struct Checkout {
    dir: tempfile::TempDir,
}

impl Checkout {
    fn new() -> Self {
        let stack_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("zenflow.toml");
        let dir = common::checkout(&std::fs::read_to_string(stack_file).unwrap());
        Checkout { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    fn cmd(&self, stack: &str, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env("ZENFLOW_PROJECT_ROOT", self.dir.path())
            .env("ZENFLOW_STACK", stack)
            .env_remove("RUST_LOG")
            .env_remove("GITHUB_STEP_SUMMARY");
        c
    }

    /// The pull-request workflow's run step (`pull-request.yml`).
    fn pull_request(&self, attempt: u32, set: &[&str]) -> Output {
        let name = format!("pr-{PR}-{attempt}-1");
        let mut args = vec!["run", "--config", "configs/staging.yaml", "--run-name", &name];
        args.extend(["--compare-with", "latest:main-", "--report", "report.md", "--json", "report.json"]);
        args.extend(["--junit", "junit.xml"]);
        for s in set {
            args.extend(["--set", s]);
        }
        self.cmd("staging", &args).output().unwrap()
    }

    /// The main workflow's run step (`main.yml`), reporting to `report`.
    fn merge_command(&self, sha: &str, report: &str, set: &[&str]) -> Command {
        let name = format!("main-{sha}-1");
        let mut args = vec!["run", "--config", "configs/production.yaml", "--run-name", &name, "--report", report];
        for s in set {
            args.extend(["--set", s]);
        }
        self.cmd("production", &args)
    }

    fn merge(&self, sha: &str, report: &str, set: &[&str]) -> Output {
        // The main workflow protects production in the registry first.
        let protect = ["models", "protect", "breast-cancer", "--alias", "production", "--reason", "main's gate"];
        let o = self.cmd("production", &protect).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        self.merge_command(sha, report, set).output().unwrap()
    }

    /// The pull-request workflow's comment step.
    fn comment(&self, github: &FakeGithub) -> Output {
        std::fs::write(self.path("event.json"), format!(r#"{{"pull_request": {{"number": {PR}}}}}"#)).unwrap();
        self.cmd("staging", &["report", "github-comment", "--report", "report.md"])
            .env("GITHUB_TOKEN", GITHUB_TOKEN)
            .env("GITHUB_REPOSITORY", "acme/models")
            .env("GITHUB_EVENT_PATH", self.path("event.json"))
            .env("GITHUB_API_URL", &github.url)
            .env_remove("ZENFLOW_GITHUB_COMMENT_AUTHOR")
            .output()
            .unwrap()
    }

    /// The versions of the model and which holds `production`.
    fn production(&self) -> (Option<i64>, usize) {
        let out = self.cmd("production", &["models", "versions", MODEL, "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let list = list.as_array().cloned().unwrap_or_default();
        let holder = list
            .iter()
            .find(|v| v["aliases"].as_array().is_some_and(|a| a.iter().any(|a| a == "production")))
            .and_then(|v| v["version"].as_i64());
        (holder, list.len())
    }
}

/// The template's `serve`, as the production model server.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(checkout: &Checkout) -> Self {
        let url = env("ZENFLOW_SERVER_URL");
        let bind = url.trim_start_matches("http://").trim_end_matches('/').to_string();
        let log = std::fs::File::create(checkout.path("serve.log")).unwrap();
        let mut child = checkout
            .cmd("production", &["serve", "--model", MODEL, "--bind", &bind, "--poll", "200ms", "--wait-for-alias"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains(&format!("on {url}")), "the server printed {line:?}; see serve.log");
        Server { child, url }
    }

    /// The version an infer request is answered by (`None`: no answer).
    fn answers_with(&self) -> Option<String> {
        infer(&agent(), &self.url).ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// One request as a client sends it: 30 features. The answer's version,
/// or what went wrong.
fn infer(agent: &ureq::Agent, url: &str) -> Result<String, String> {
    let row = [
        17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053, 8.589, 153.4,
        0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33, 184.6, 2019.0, 0.1622, 0.6656, 0.7119,
        0.2654, 0.4601, 0.1189,
    ];
    let body = serde_json::json!({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP64", "data": row}]});
    let mut r =
        agent.post(format!("{url}/v2/models/{MODEL}/infer")).send_json(&body).map_err(|e| format!("transport: {e}"))?;
    let status = r.status().as_u16();
    let v: serde_json::Value = r.body_mut().read_json().map_err(|e| format!("HTTP {status}, body: {e}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {v}"));
    }
    match (v["model_version"].as_str(), v["outputs"][0]["data"][0].as_i64()) {
        (Some(version), Some(0 | 1)) => Ok(version.to_string()),
        _ => Err(format!("not an answer: {v}")),
    }
}

/// What clients saw: requests answered, failures, the versions that answered.
type Seen = (u64, Vec<String>, BTreeSet<String>);

/// Clients sending requests until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<std::thread::JoinHandle<Seen>>,
}

impl Load {
    fn start(url: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.to_string());
                std::thread::spawn(move || {
                    let agent = agent();
                    let (mut ok, mut failed, mut versions) = (0, Vec::new(), BTreeSet::new());
                    while !stop.load(Ordering::Relaxed) {
                        match infer(&agent, &url) {
                            Ok(v) => {
                                ok += 1;
                                versions.insert(v);
                            }
                            Err(e) => failed.push(e),
                        }
                        // Steady traffic, not a flood: the machine also
                        // runs the merge's Ray jobs.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    (ok, failed, versions)
                })
            })
            .collect();
        Load { stop, clients }
    }

    /// What all clients saw.
    fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = (0, Vec::new(), BTreeSet::new());
        for c in self.clients {
            let (ok, failed, versions) = c.join().unwrap();
            all.0 += ok;
            all.1.extend(failed);
            all.2.extend(versions);
        }
        all
    }
}

/// A request the fake GitHub API received.
#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    body: String,
}

#[derive(Default)]
struct GithubState {
    requests: Vec<Request>,
    /// Requests it refused (bad token, unknown path, bad body).
    refused: Vec<String>,
    /// The pull request's comments: id, author, body.
    comments: Vec<(u64, String, String)>,
    next_id: u64,
}

/// GitHub's REST API as far as the sticky comment uses it, for one
/// repository (`acme/models`) and one pull request, holding its comments.
/// It answers `GET /user` with 403, as GitHub does for an installation
/// token, so comments are the bot's.
struct FakeGithub {
    url: String,
    state: Arc<Mutex<GithubState>>,
}

impl FakeGithub {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(GithubState { next_id: 1000, ..Default::default() }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let state = shared.clone();
                std::thread::spawn(move || serve_github(stream, &state));
            }
        });
        FakeGithub { url, state }
    }

    fn seed_comment(&self, author: &str, body: &str) {
        let mut s = self.state.lock().unwrap();
        let id = s.next_id;
        s.next_id += 1;
        s.comments.push((id, author.into(), body.into()));
    }

    fn comments(&self) -> Vec<(u64, String, String)> {
        self.state.lock().unwrap().comments.clone()
    }

    fn take_requests(&self) -> Vec<Request> {
        std::mem::take(&mut self.state.lock().unwrap().requests)
    }

    fn refused(&self) -> Vec<String> {
        self.state.lock().unwrap().refused.clone()
    }
}

fn serve_github(stream: std::net::TcpStream, state: &Mutex<GithubState>) {
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut buf = vec![0; length];
    let _ = reader.read_exact(&mut buf);
    let body = String::from_utf8_lossy(&buf).to_string();
    let (status, answer) = {
        let mut s = state.lock().unwrap();
        s.requests.push(Request { method: method.clone(), path: path.clone(), body: body.clone() });
        github_answer(&mut s, &method, &path, &headers, &body)
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

fn github_answer(
    s: &mut GithubState,
    method: &str,
    path: &str,
    headers: &BTreeMap<String, String>,
    body: &str,
) -> (u16, String) {
    let refuse = |s: &mut GithubState, status: u16, why: String| {
        s.refused.push(format!("{method} {path}: {why}"));
        (status, serde_json::json!({ "message": why }).to_string())
    };
    if headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {GITHUB_TOKEN}")) {
        return refuse(s, 401, "Bad credentials".into());
    }
    if headers.get("accept").map(String::as_str) != Some("application/vnd.github+json") {
        return refuse(s, 415, format!("Accept is {:?}", headers.get("accept")));
    }
    let comments = format!("/repos/acme/models/issues/{PR}/comments");
    let text_of = |body: &str| serde_json::from_str::<serde_json::Value>(body).ok()?["body"].as_str().map(String::from);
    match method {
        "GET" if path == "/user" => (403, r#"{"message": "Resource not accessible by integration"}"#.into()),
        "GET" if path.starts_with(&format!("{comments}?")) => {
            let page: usize = path.split("page=").last().and_then(|p| p.parse().ok()).unwrap_or(1);
            let list: Vec<serde_json::Value> = s
                .comments
                .iter()
                .skip((page - 1) * 100)
                .take(100)
                .map(|(id, user, body)| serde_json::json!({"id": id, "user": {"login": user}, "body": body}))
                .collect();
            (200, serde_json::Value::from(list).to_string())
        }
        "POST" if path == comments => match text_of(body) {
            Some(text) => {
                let id = s.next_id;
                s.next_id += 1;
                s.comments.push((id, BOT.into(), text));
                (201, serde_json::json!({ "id": id }).to_string())
            }
            None => refuse(s, 422, "no `body`".into()),
        },
        "PATCH" => {
            let id = path.strip_prefix("/repos/acme/models/issues/comments/").and_then(|i| i.parse::<u64>().ok());
            let Some(id) = id else { return refuse(s, 404, "Not Found".into()) };
            let Some(text) = text_of(body) else { return refuse(s, 422, "no `body`".into()) };
            match s.comments.iter_mut().find(|c| c.0 == id) {
                // GitHub lets a token edit only its own user's comments.
                Some(c) if c.1 == BOT => {
                    c.2 = text;
                    (200, serde_json::json!({ "id": id }).to_string())
                }
                Some(_) => refuse(s, 403, format!("comment {id} is not the bot's")),
                None => refuse(s, 404, "Not Found".into()),
            }
        }
        _ => refuse(s, 404, "Not Found".into()),
    }
}

/// A JUnit file's test cases: (class, name, failed), checked against the
/// suite's own counts.
fn junit(xml: &str) -> Vec<(String, String, bool)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut cases, mut declared) = (Vec::<(String, String, bool)>::new(), (0usize, 0usize));
    let attr = |e: &quick_xml::events::BytesStart<'_>, name: &str| {
        e.attributes()
            .flatten()
            .find(|a| a.key.as_ref() == name)
            .map(|a| a.normalized_value(quick_xml::XmlVersion::Explicit1_0).unwrap().into_owned())
            .unwrap_or_default()
    };
    loop {
        match reader.read_event().expect("the JUnit file is well-formed XML") {
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                "testsuite" => {
                    declared.0 += attr(&e, "tests").parse::<usize>().unwrap();
                    declared.1 += attr(&e, "failures").parse::<usize>().unwrap();
                }
                "testcase" => cases.push((attr(&e, "classname"), attr(&e, "name"), false)),
                "failure" => cases.last_mut().expect("a failure inside a test case").2 = true,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(declared.0, cases.len(), "the suite's `tests` count");
    assert_eq!(declared.1, cases.iter().filter(|c| c.2).count(), "the suite's `failures` count");
    cases
}

fn case<'c>(cases: &'c [(String, String, bool)], name: &str) -> &'c (String, String, bool) {
    cases.iter().find(|c| c.1 == name).unwrap_or_else(|| panic!("no test case `{name}` in {cases:?}"))
}

/// Holds every promotion of the registry back, inside PostgreSQL: an
/// `EXCLUSIVE` lock on the alias table lets reads through (both runs
/// resolve `production` and appraise) but no alias write, until opened.
struct PromotionGate {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl PromotionGate {
    fn close() -> Self {
        let rt = runtime();
        let client = connect(&rt, &env("PGDATABASE"));
        rt.block_on(client.batch_execute("BEGIN; LOCK TABLE model_aliases IN EXCLUSIVE MODE")).unwrap();
        PromotionGate { rt, client }
    }

    /// Waits until runs `names` have both appraised their candidate (each
    /// against the version serving now: no promotion passed the gate),
    /// while `children` still run.
    fn wait_for_appraisals(&self, names: [&str; 2], children: &mut [&mut Child]) {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let row = self
                .rt
                .block_on(self.client.query_one(
                    "SELECT count(*) FROM step_runs s JOIN runs r ON r.id = s.run_id \
                     WHERE s.invocation = 'appraise' AND s.status = 'completed' AND r.name IN ($1, $2)",
                    &[&names[0], &names[1]],
                ))
                .unwrap();
            if row.get::<_, i64>(0) == 2 {
                return;
            }
            for c in children.iter_mut() {
                if let Some(status) = c.try_wait().unwrap() {
                    panic!("a merge ended ({status}) before both had appraised");
                }
            }
            assert!(Instant::now() < deadline, "the merges did not both appraise within 10 minutes");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn open(self) {
        self.rt.block_on(self.client.batch_execute("COMMIT")).unwrap();
    }
}

#[test]
#[ignore = "needs PostgreSQL, S3, a Ray head and the template's variables: run by .ci/run"]
fn the_gitflow_loop_on_postgres_s3_and_ray() {
    // A clean registry: the database of this test, created anew.
    let database = env("PGDATABASE");
    assert!(database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "PGDATABASE {database:?}");
    {
        let rt = runtime();
        let admin = connect(&rt, "postgres");
        rt.block_on(admin.batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))).unwrap();
        rt.block_on(admin.batch_execute(&format!("CREATE DATABASE {database}"))).unwrap();
    }
    let ci = Checkout::new();
    let github = FakeGithub::start();
    // Someone else's comment carrying the marker: never taken.
    github.seed_comment("mallory", "<!-- zenflow-report pipeline=gitflow --> pwned");
    let server = Server::start(&ci);
    let mut phase = Phase::default();

    phase.next("scenario 4");
    // 4. The first merge: no production version yet, so the candidate (a
    // shallow tree) is promoted and deployed, on Ray.
    let o = ci.merge("a1", "merge-1.md", &["max_depths=[2]"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (first, _) = ci.production();
    let first = first.expect("the first merge promoted a version");
    assert_eq!(server.answers_with(), Some(first.to_string()));
    let report = ci.read("merge-1.md");
    assert!(report.contains(&format!("v{first} of `{MODEL}` serves as `production` (before: no version)")), "{report}");
    // Its steps ran as jobs of the Ray head, which still holds the record
    // of the last one (the runner deletes the others' as it goes).
    let jobs: serde_json::Value =
        agent().get(format!("{}/api/jobs/", env("RAY_ADDRESS"))).call().unwrap().body_mut().read_json().unwrap();
    let ran: BTreeSet<String> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["metadata"]["zenflow.run_name"] == "main-a1-1")
        .flat_map(|j| {
            j["metadata"]["zenflow.steps"].as_str().unwrap_or("").split(',').map(String::from).collect::<Vec<_>>()
        })
        .collect();
    assert!(ran.contains("deploy"), "the last step ran as no Ray job: {ran:?}");

    phase.next("scenario 1");
    // 1. A pull request on staging: exit 0, a sticky comment with the gate
    // table, a JUnit file a test-report step can parse.
    let o = ci.pull_request(1, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let cases = junit(&ci.read("junit.xml"));
    assert_eq!(case(&cases, "appraisal.accuracy").0, format!("gitflow.model.{MODEL}"));
    assert!(!case(&cases, "appraisal.accuracy").2 && !case(&cases, "drift").2, "{cases:?}");
    let c = ci.comment(&github);
    assert_eq!(c.status.code(), Some(0), "{}", text(&c));
    let posted = github.comments();
    assert_eq!(posted.len(), 2, "{posted:?}");
    let (id, author, body) = posted[1].clone();
    assert_eq!(
        (author.as_str(), text(&c).trim()),
        (BOT, format!("created comment {id} on pull request #{PR}").as_str())
    );
    assert_eq!(body, ci.read("report.md"));
    assert!(body.contains("| Metric | Candidate | Production | Δ | Threshold | Status |"), "{body}");
    assert!(body.contains("| `accuracy` |") && body.contains(&format!("production v{first}")), "{body}");
    assert!(body.contains("### Against `main-a1-1`"), "compared with the merge's run: {body}");
    assert!(body.contains("```mermaid"), "{body}");
    let requests = github.take_requests();
    let methods: Vec<(&str, &str)> = requests.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
    assert_eq!(
        methods,
        [
            ("GET", "/user"),
            ("GET", "/repos/acme/models/issues/17/comments?per_page=100&page=1"),
            ("POST", "/repos/acme/models/issues/17/comments"),
        ]
    );
    assert!(!requests[2].body.is_empty());
    assert_eq!(ci.production(), (Some(first), 2), "a pull request registers a version and deploys none");

    phase.next("scenario 2");
    // 2. A pull request with a worse model (a tree of depth 1: one leaf,
    // the majority class): exit 3, the
    // same comment updated in place, nothing moved to production.
    let o = ci.pull_request(2, &["max_depths=[1]"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(case(&junit(&ci.read("junit.xml")), "appraisal.accuracy").2, "the gate's test case failed");
    let c = ci.comment(&github);
    assert_eq!(text(&c).trim(), format!("updated comment {id} on pull request #{PR}"), "{}", text(&c));
    let posted = github.comments();
    assert_eq!(posted.len(), 2, "still one report comment: {posted:?}");
    assert_eq!(posted[0].2, "<!-- zenflow-report pipeline=gitflow --> pwned", "the other user's comment is untouched");
    assert_eq!(posted[1].2, ci.read("report.md"));
    assert!(posted[1].2.contains("❌") && posted[1].2.contains("accuracy"), "{}", posted[1].2);
    assert_eq!(github.take_requests().last().map(|r| r.method.clone()), Some("PATCH".into()));
    assert_eq!(ci.production().0, Some(first), "nothing is registered as production");

    phase.next("scenario 3");
    // 3. A pull request with drifted data: the drift check fails, exit 3.
    let o = ci.pull_request(3, &["dataset=drifted"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(case(&junit(&ci.read("junit.xml")), "drift").2);
    assert!(ci.read("report.md").contains("features drifted past KS"), "{}", ci.read("report.md"));
    assert_eq!(ci.production().0, Some(first));

    phase.next("scenario 5");
    // 5. A better merge while clients send requests: none fails, and the
    // new version answers afterwards.
    let load = Load::start(&server.url, 4);
    std::thread::sleep(Duration::from_millis(300));
    let o = ci.merge("b2", "merge-2.md", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let (answered, failed, versions) = load.stop();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (second, _) = ci.production();
    let second = second.unwrap();
    assert_ne!(second, first);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the deployment: {:?}",
        failed.len(),
        answered,
        &failed[..failed.len().min(5)]
    );
    assert!(answered > 100, "the clients sent only {answered} requests");
    assert_eq!(versions, BTreeSet::from([first.to_string(), second.to_string()]), "both versions answered");
    assert_eq!(server.answers_with(), Some(second.to_string()));

    phase.next("scenario 6");
    // 6. A merge whose model the server refuses at warm-up (it dropped a
    // feature: clients' requests would no longer fit): rolled back, the
    // old version still serving, exit 4, and the report says why.
    let o = ci.merge("c3", "merge-3.md", &[r#"drop_features=["mean fractal dimension"]"#]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert_eq!(ci.production().0, Some(second), "the alias is back on the old version");
    assert_eq!(server.answers_with(), Some(second.to_string()));
    let report = ci.read("merge-3.md");
    assert!(report.contains(&format!("so `production` is back on v{second}")), "{report}");
    assert!(report.contains("signature differs"), "the report says why: {report}");

    phase.next("scenario 7");
    // 7. Two merges at once, both appraised against the version serving:
    // exactly one promotion wins; the other exits 4 naming the holder.
    let gate = PromotionGate::close();
    let spawn = |sha: &str, report: &str, depth: &str| {
        let mut c = ci.merge_command(sha, report, &[depth]);
        Killed(c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
    };
    let (mut a, mut b) = (spawn("d4", "merge-4.md", "max_depths=[6]"), spawn("e5", "merge-5.md", "max_depths=[8]"));
    gate.wait_for_appraisals(["main-d4-1", "main-e5-1"], &mut [&mut a.0, &mut b.0]);
    gate.open();
    let codes = (a.0.wait().unwrap().code(), b.0.wait().unwrap().code());
    let (winner, loser) = match codes {
        (Some(0), Some(4)) => ("merge-4.md", "merge-5.md"),
        (Some(4), Some(0)) => ("merge-5.md", "merge-4.md"),
        other => panic!(
            "expected one merge to exit 0 and the other 4, got {other:?}\n{}\n{}",
            ci.read("merge-4.md"),
            ci.read("merge-5.md")
        ),
    };
    let (third, _) = ci.production();
    let third = third.unwrap();
    assert!(third > second);
    assert!(ci.read(winner).contains(&format!("v{third} of `{MODEL}` serves as `production` (before: v{second})")));
    let lost = ci.read(loser);
    assert!(lost.contains(&format!("held by v{third}")), "the loser names the holder: {lost}");
    assert_eq!(server.answers_with(), Some(third.to_string()));

    assert_eq!(github.refused(), Vec::<String>::new(), "every GitHub request was well-formed");
    phase.next("done");
}

/// A child process, killed if the test fails while it runs.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prints how long each scenario took (CI's log shows where time goes).
#[derive(Default)]
struct Phase(Option<(String, Instant)>);

impl Phase {
    fn next(&mut self, name: &str) {
        if let Some((last, started)) = self.0.take() {
            eprintln!("[gitflow e2e] {last}: {:.1?}", started.elapsed());
        }
        self.0 = Some((name.to_string(), Instant::now()));
    }
}
