//! The parsers that read text from users or the network, property-tested:
//! `zenflow.toml` with `${VAR}` expansion, run configs and `--set` paths,
//! plans read back from the store, GitHub's comment lists and event file,
//! and Open Inference Protocol requests. None may panic or hang, and each
//! malformed input gets an error that names the place. The cases found
//! along the way are kept as plain tests at the end (the corpus).

use proptest::prelude::*;
use serde_json::{json, Value};
use zenflow::cli::github::{marked_comment, GithubEnv};
use zenflow::run_config::RunConfig;
use zenflow::serve::InferRequest;
use zenflow::stacks::config::Stacks;

fn config() -> ProptestConfig {
    // No failure files written into the source tree: the corpus below
    // keeps what was found.
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

/// Text built from the pieces a stack file is made of, so that the cases
/// reach past the TOML parser into expansion and validation.
fn stack_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("[stacks.s]\n".to_string()),
        Just("[stacks.s.artifact_store]\n".to_string()),
        Just("[stacks.s.deployer]\n".to_string()),
        Just("metadata_store = ".to_string()),
        Just("artifact_store = ".to_string()),
        Just("orchestrator = ".to_string()),
        Just("url = ".to_string()),
        Just("token = ".to_string()),
        Just("wait = ".to_string()),
        Just("retries = ".to_string()),
        Just("retry_timeout = ".to_string()),
        Just("allow_http = ".to_string()),
        Just("protected_aliases = ".to_string()),
        Just("\"sqlite::memory:\"\n".to_string()),
        Just("\"memory://\"\n".to_string()),
        Just("\"s3://b/p\"\n".to_string()),
        Just("{ kind = \"ray\", address = \"${RAY_ADDRESS:-x}\" }\n".to_string()),
        Just("\"${".to_string()),
        Just("${ZF_UNSET_VAR}".to_string()),
        Just("${ZF_UNSET_VAR:-".to_string()),
        Just("$$".to_string()),
        Just("}\"\n".to_string()),
        Just("\"\n".to_string()),
        Just("[\"production\", 1]\n".to_string()),
        Just("-3\n".to_string()),
        Just("\"10 parsecs\"\n".to_string()),
        "[ -~]{0,12}".prop_map(|s| s),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn stack_files_never_panic_and_errors_name_the_place(text in stack_text()) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("zenflow.toml"), &text).unwrap();
        match Stacks::load(dir.path()) {
            Err(e) => prop_assert!(e.to_string().contains("zenflow.toml"), "{e}"),
            Ok(stacks) => {
                for name in stacks.names() {
                    if let Err(e) = stacks.config(&name) {
                        let e = e.to_string();
                        prop_assert!(e.contains(&format!("stack `{name}`")), "{e}\n--- for ---\n{text}");
                    }
                }
            }
        }
    }

    #[test]
    fn set_assignments_never_panic_and_errors_name_the_key(
        key in "[a-z_.\\[\\]0-9]{0,20}",
        value in "[ -~]{0,20}",
    ) {
        let defaults = json!({"lr": 0.1, "layers": [1, 2], "nested": {"depth": 3, "name": "x"}, "flag": false});
        let mut cfg = RunConfig::with_defaults(defaults);
        let check = |v: &Value| -> Result<(), String> {
            let ok = v["lr"].is_number() && v["layers"].is_array() && v["nested"]["depth"].is_i64() && v["flag"].is_boolean();
            if ok { Ok(()) } else { Err(format!("does not fit: {v}")) }
        };
        let assignment = format!("{key}={value}");
        if let Err(e) = cfg.set(&assignment, &check) {
            let e = e.to_string();
            prop_assert!(e.contains("--set"), "{e} (for {assignment})");
            if !key.trim().is_empty() {
                prop_assert!(e.contains(key.trim()), "{e} names no key (for {assignment})");
            }
        }
        // And without `=` (the key strategy holds none).
        prop_assert!(cfg.set(&key, &check).is_err());
    }

    #[test]
    fn run_config_files_never_panic(text in "[ -~\n]{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        for ext in ["yaml", "toml", "json"] {
            let path = dir.path().join(format!("run.{ext}"));
            std::fs::write(&path, &text).unwrap();
            let mut cfg = RunConfig::with_defaults(json!({"lr": 0.1}));
            if let Err(e) = cfg.merge_file(&path, &|_| Ok(())) {
                prop_assert!(e.to_string().contains("run."), "{e}");
            }
        }
    }

    #[test]
    fn plans_read_back_from_the_store_never_panic(mutation in mutation()) {
        let record = run_record(mutation.apply(&plan_json()));
        // A bad plan is an error naming it, never a panic.
        let _ = record.plan();
    }

    #[test]
    fn github_comment_pages_never_panic_and_only_the_authors_marked_comment_is_taken(page in json_value()) {
        let marker = "<!-- zenflow-report pipeline=p -->";
        match marked_comment(&page, "bot", marker) {
            Err(e) => prop_assert!(!page.is_array() && e.contains("JSON array"), "{e}"),
            Ok((Some(id), len)) => {
                let list = page.as_array().unwrap();
                prop_assert_eq!(len, list.len());
                prop_assert!(list.iter().any(|c| c["id"].as_u64() == Some(id)
                    && c["user"]["login"] == "bot"
                    && c["body"].as_str().is_some_and(|b| b.contains(marker))));
            }
            Ok((None, _)) => {}
        }
    }

    #[test]
    fn github_event_files_never_panic(text in "[ -~]{0,120}") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("event.json");
        std::fs::write(&path, &text).unwrap();
        let path = path.to_string_lossy().into_owned();
        let env = |k: &str| match k {
            "GITHUB_TOKEN" => Some("t".to_string()),
            "GITHUB_REPOSITORY" => Some("o/r".to_string()),
            "GITHUB_EVENT_PATH" => Some(path.clone()),
            _ => None,
        };
        if let Err(e) = GithubEnv::from_env(env) {
            prop_assert!(e.usage && e.message.contains("event"), "{}", e.message);
        }
    }

    #[test]
    fn inference_requests_never_panic_or_allocate_without_bound(req in infer_request()) {
        let body = serde_json::to_vec(&req).unwrap();
        if let Ok(parsed) = InferRequest::parse(&body) {
            // What parses is consistent: every input's data fits its shape.
            for t in &parsed.inputs {
                let n = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
                prop_assert_eq!(n, Some(t.data.len() as u64));
            }
        }
    }

    #[test]
    fn inference_request_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = InferRequest::parse(&body);
    }
}

/// A change to a text: a byte replaced, a range cut, or a piece inserted.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, char),
    Cut(usize, usize),
    Insert(usize, String),
}

impl Mutation {
    fn apply(&self, text: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        let at = |i: usize| i % (chars.len() + 1);
        match self {
            Mutation::Replace(i, c) => {
                let mut v = chars.clone();
                if !v.is_empty() {
                    let i = i % v.len();
                    v[i] = *c;
                }
                v.into_iter().collect()
            }
            Mutation::Cut(a, len) => {
                let a = at(*a);
                let b = (a + len).min(chars.len());
                chars[..a].iter().chain(&chars[b..]).collect()
            }
            Mutation::Insert(i, s) => {
                let i = at(*i);
                chars[..i].iter().collect::<String>() + s + &chars[i..].iter().collect::<String>()
            }
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), prop::sample::select(vec!['"', '{', '}', '[', ']', ',', ':', '0', '-', 'x', '\\']))
            .prop_map(|(i, c)| Mutation::Replace(i, c)),
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Mutation::Cut(a, n)),
        (any::<usize>(), prop::sample::select(vec!["null", "-1", "1e400", "\"\"", "[]", "{}", "18446744073709551616"]))
            .prop_map(|(i, s)| Mutation::Insert(i, s.to_string())),
    ]
}

/// A real plan's JSON, as the store holds it.
fn plan_json() -> String {
    use zenflow::prelude::*;
    #[step]
    fn one(#[param] x: i64) -> i64 {
        x
    }
    #[step]
    fn two(a: i64) -> i64 {
        a + 1
    }
    #[pipeline]
    fn tiny() {
        two(one(3));
    }
    serde_json::to_string(&tiny.plan(&()).unwrap()).unwrap()
}

fn run_record(plan_json: String) -> zenflow::metadata::RunRecord {
    zenflow::metadata::RunRecord {
        id: "r".into(),
        pipeline: "tiny".into(),
        name: "r".into(),
        status: zenflow::RunStatus::Completed,
        stack: "local".into(),
        config: Value::Null,
        plan_json,
        git_commit: None,
        git_branch: None,
        ci_job_url: None,
        started_at: 0,
        ended_at: None,
        error: None,
    }
}

/// Any JSON value, a few levels deep, biased toward comment-list shapes.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop::sample::select(vec!["bot", "mallory", "<!-- zenflow-report pipeline=p -->", "x"]).prop_map(|s| json!(s)),
    ];
    let comment = (any::<Option<u32>>(), prop::sample::select(vec!["bot", "mallory", ""]), any::<bool>()).prop_map(
        |(id, login, marked)| {
            json!({"id": id, "user": {"login": login}, "body": if marked { "report <!-- zenflow-report pipeline=p -->" } else { "hi" }})
        },
    );
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,5}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![prop::collection::vec(comment, 0..6).prop_map(Value::Array), value]
}

/// Requests near the protocol's shapes: names, shapes (huge and negative
/// included), datatypes, data of the right or wrong length and type.
fn infer_request() -> impl Strategy<Value = Value> {
    let dim = prop_oneof![0i64..4, Just(-1), Just(i64::MAX), Just(1 << 40)];
    let datatype = prop::sample::select(vec!["FP64", "FP32", "INT64", "INT32", "BOOL", "BYTES", "FP16", "fp64", ""]);
    let datum = prop_oneof![
        any::<f64>().prop_map(|f| json!(f)),
        any::<i32>().prop_map(|n| json!(n)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(json!("s")),
        Just(json!([1, 2])),
        Just(Value::Null),
    ];
    let tensor = ("[a-z]{0,6}", prop::collection::vec(dim, 0..4), datatype, prop::collection::vec(datum, 0..8))
        .prop_map(
            |(name, shape, datatype, data)| json!({"name": name, "shape": shape, "datatype": datatype, "data": data}),
        );
    (prop::collection::vec(tensor, 0..3), any::<Option<u8>>())
        .prop_map(|(inputs, id)| json!({"id": id.map(|i| i.to_string()), "inputs": inputs}))
}

/// The corpus: inputs the properties above found, or that once broke a
/// parser elsewhere, kept as plain regression tests.
#[test]
fn corpus() {
    let dir = tempfile::tempdir().unwrap();
    let stack = |text: &str| {
        std::fs::write(dir.path().join("zenflow.toml"), text).unwrap();
        Stacks::load(dir.path()).and_then(|s| s.config("s")).map(|_| ()).map_err(|e| e.to_string())
    };
    // An unclosed reference, an empty name, a default that is itself a reference.
    assert!(stack("[stacks.s]\nmetadata_store = \"${\"\nartifact_store = \"memory://\"\n")
        .unwrap_err()
        .contains("unclosed"));
    assert!(stack("[stacks.s]\nmetadata_store = \"${}\"\nartifact_store = \"memory://\"\n")
        .unwrap_err()
        .contains("not a variable reference"));
    // A default is text, not expanded again: it runs to the first `}`.
    std::fs::write(
        dir.path().join("zenflow.toml"),
        "[stacks.s]\nmetadata_store = \"${ZF_UNSET:-${X}}\"\nartifact_store = \"memory://\"\n",
    )
    .unwrap();
    assert_eq!(Stacks::load(dir.path()).unwrap().config("s").unwrap().metadata_store.url, "${X}");
    // A negative retry count is no number of retries.
    let e = stack(
        "[stacks.s]\nmetadata_store = \"sqlite::memory:\"\n[stacks.s.artifact_store]\nurl = \"memory://\"\nretries = -3\n",
    )
    .unwrap_err();
    assert!(e.contains("stack `s`") && e.contains("retries"), "{e}");

    // `--set` with an empty path segment, a bare `=`, a key of dots.
    let mut cfg = RunConfig::with_defaults(json!({"lr": 0.1}));
    for bad in ["=1", "a..b=1", ".=1", "parameters.=2"] {
        assert!(cfg.set(bad, &|_| Ok(())).unwrap_err().to_string().contains("--set"), "{bad}");
    }

    // Plans: numbers past i64, a step list that is an object, nothing at all.
    for bad in ["", "null", "{\"steps\": {}}", "{\"pipeline\": 18446744073709551616}"] {
        assert!(run_record(bad.into()).plan().is_err(), "{bad:?}");
    }

    // Comment pages: not an array; ids that are strings or negative; an
    // object where the login should be.
    assert!(marked_comment(&json!({"message": "rate limited"}), "bot", "m").is_err());
    let page = json!([
        {"id": "7", "user": {"login": "bot"}, "body": "m"},
        {"id": -1, "user": {"login": "bot"}, "body": "m"},
        {"id": 3, "user": {"login": {"nested": "bot"}}, "body": "m"},
        {"id": 4, "user": {"login": "bot"}, "body": "m"},
    ]);
    assert_eq!(marked_comment(&page, "bot", "m").unwrap(), (Some(4), 4));

    // OIP: a shape whose product overflows; a dimension of 2^40 with no
    // data; negative dimensions; a datum of the wrong type.
    for body in [
        json!({"inputs": [{"name": "x", "shape": [i64::MAX, i64::MAX], "datatype": "FP64", "data": [1.0]}]}),
        json!({"inputs": [{"name": "x", "shape": [1_i64 << 40], "datatype": "FP64", "data": []}]}),
        json!({"inputs": [{"name": "x", "shape": [-1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}),
        json!({"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": ["1"]}]}),
    ] {
        let e = InferRequest::parse(&serde_json::to_vec(&body).unwrap()).unwrap_err().to_string();
        assert!(e.contains("`x`") || e.contains("shape") || e.contains("data"), "{e} for {body}");
    }
}
