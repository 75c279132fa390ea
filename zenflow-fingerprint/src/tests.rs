//! Each test changes exactly one thing in a small workspace (an app with
//! steps, a workspace crate with a step of its own) and asserts which
//! steps' fingerprints change: those steps re-run, the others stay cached.

use super::*;
use quote::quote;
use std::collections::BTreeSet;

const FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[workspace]\nmembers = [\"app\", \"features\"]\n\
         [workspace.dependencies]\nfeatures = { path = \"features\", version = \"0.1.0\" }\n",
    ),
    (
        "Cargo.lock",
        r#"version = 4

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["features", "smartcore"]

[[package]]
name = "features"
version = "0.1.0"

[[package]]
name = "smartcore"
version = "0.4.1"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#,
    ),
    (
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\n[dependencies]\nfeatures.workspace = true\nsmartcore = \"0.4\"\n",
    ),
    (
        "app/src/main.rs",
        r#"mod model;
use model::{Model, Row};

const THRESHOLD: f64 = 0.5;

fn kept_features() -> Vec<usize> {
    vec![0, 1]
}

fn unrelated() -> u32 {
    // Nothing calls this.
    1
}

#[step]
fn load() -> Vec<f64> {
    features::normalise(vec![1.0, 2.0])
}

#[step]
fn train(x: Vec<f64>) -> Model {
    model::fit(&x, &kept_features())
}

#[step]
fn evaluate(m: Model) -> f64 {
    if m.score() > THRESHOLD { 1.0 } else { 0.0 }
}

#[step]
fn rank(rows: Vec<Row>) -> Vec<Row> {
    let mut rows = rows;
    rows.sort();
    rows
}

fn main() {}
"#,
    ),
    (
        "app/src/model.rs",
        r#"pub struct Model {
    pub w: Vec<f64>,
}

impl Model {
    pub fn score(&self) -> f64 {
        self.w.iter().sum()
    }
}

pub fn fit(x: &[f64], cols: &[usize]) -> Model {
    Model { w: cols.iter().map(|&c| x[c % x.len()]).collect() }
}

#[derive(PartialEq, Eq, PartialOrd)]
pub struct Row(pub i64);

impl Ord for Row {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}
"#,
    ),
    ("app/src/bin/other.rs", "fn main() {\n    println!(\"another binary\");\n}\n"),
    ("features/Cargo.toml", "[package]\nname = \"features\"\nversion = \"0.1.0\"\n"),
    (
        "features/src/lib.rs",
        r#"pub fn normalise(v: Vec<f64>) -> Vec<f64> {
    v
}

pub fn unused() -> u8 {
    0
}

#[step]
fn clean(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().filter(|x| x.is_finite()).collect()
}
"#,
    ),
];

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("a temporary folder");
        for (path, text) in FILES {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        Workspace { dir }
    }

    fn edit(&self, path: &str, from: &str, to: &str) {
        let path = self.dir.path().join(path);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "`{from}` is in {}", path.display());
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    }

    /// Every step's fingerprint, as `#[step]` computes it for each package.
    fn fingerprints(&self) -> BTreeMap<String, Fingerprint> {
        let mut all = BTreeMap::new();
        for (package, main) in [("app", "src/main.rs"), ("features", "src/lib.rs")] {
            let dir = self.dir.path().join(package);
            let project = Project::load(&dir, package, "0.1.0", &["tests", "benches"]);
            let source = std::fs::read_to_string(dir.join(main)).expect("read");
            let file = syn::parse_file(&source).expect("the fixture parses");
            for item in file.items {
                let syn::Item::Fn(f) = item else { continue };
                if !f.attrs.iter().any(|a| a.path().is_ident("step")) {
                    continue;
                }
                let (sig, block) = (&f.sig, &f.block);
                let name = f.sig.ident.to_string();
                all.insert(name.clone(), project.fingerprint(&name, quote!(#sig #block)));
            }
        }
        assert_eq!(all.len(), 5, "every step of the fixture is found");
        all
    }

    /// The steps whose fingerprint `change` changes.
    fn rerun_by(&self, change: impl FnOnce(&Workspace)) -> BTreeSet<String> {
        let before = self.fingerprints();
        change(self);
        let after = self.fingerprints();
        before.keys().filter(|s| before[*s].hash != after[*s].hash).cloned().collect()
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_helper_in_the_same_file() {
    let ws = Workspace::new();
    let rerun = ws.rerun_by(|w| w.edit("app/src/main.rs", "vec![0, 1]", "vec![0]"));
    assert_eq!(rerun, set(&["train"]));
    let fp = &ws.fingerprints()["train"];
    let labels: Vec<&str> = fp.items.iter().map(|(label, _)| label.as_str()).collect();
    assert!(labels.contains(&"`kept_features` in app/src/main.rs"), "{labels:?}");
    assert!(labels.contains(&"`train` (the step)"), "{labels:?}");
    assert!(!labels.contains(&"`train` in app/src/main.rs"), "the step's own code is counted once: {labels:?}");
}

#[test]
fn a_helper_in_another_module() {
    let ws = Workspace::new();
    let rerun = ws.rerun_by(|w| w.edit("app/src/model.rs", "x[c % x.len()]", "x[0]"));
    assert_eq!(rerun, set(&["train"]));
}

#[test]
fn a_const() {
    let ws = Workspace::new();
    let rerun = ws.rerun_by(|w| w.edit("app/src/main.rs", "THRESHOLD: f64 = 0.5", "THRESHOLD: f64 = 0.7"));
    assert_eq!(rerun, set(&["evaluate"]));
}

#[test]
fn a_method_of_a_local_struct() {
    let ws = Workspace::new();
    // `train` returns a `Model`, so it reaches `Model`'s methods too: over,
    // never under.
    let rerun = ws.rerun_by(|w| w.edit("app/src/model.rs", "self.w.iter().sum()", "self.w.iter().product()"));
    assert_eq!(rerun, set(&["evaluate", "train"]));
}

#[test]
fn a_trait_impl_used_implicitly() {
    let ws = Workspace::new();
    let rerun = ws.rerun_by(|w| w.edit("app/src/model.rs", "self.0.cmp(&other.0)", "other.0.cmp(&self.0)"));
    assert_eq!(rerun, set(&["rank"]));
}

#[test]
fn a_function_of_another_workspace_crate() {
    let ws = Workspace::new();
    let rerun = ws.rerun_by(|w| w.edit("features/src/lib.rs", "    v\n}", "    v.into_iter().rev().collect()\n}"));
    assert_eq!(rerun, set(&["load"]));
    let rerun = ws.rerun_by(|w| w.edit("features/src/lib.rs", "    0\n", "    1\n"));
    assert!(rerun.is_empty(), "a function nothing calls re-runs nothing: {rerun:?}");
}

#[test]
fn a_dependency_version() {
    let ws = Workspace::new();
    let rerun = ws.rerun_by(|w| w.edit("Cargo.lock", "version = \"0.4.1\"", "version = \"0.4.2\""));
    // `clean` lives in `features`, which does not depend on smartcore.
    assert_eq!(rerun, set(&["evaluate", "load", "rank", "train"]));
    let fp = &ws.fingerprints()["train"];
    assert_eq!(fp.dependencies.get("smartcore").map(String::as_str), Some("0.4.2"));
    assert_eq!(fp.compiler, COMPILER);
    assert!(COMPILER.starts_with("rustc "), "{COMPILER}");
}

#[test]
fn edits_that_reach_no_step() {
    let ws = Workspace::new();
    let rerun = ws.rerun_by(|w| {
        w.edit("app/src/main.rs", "// Nothing calls this.", "// Nothing calls this, and nothing will.");
        w.edit("app/src/main.rs", "    1\n}", "    2\n}");
        w.edit("app/src/bin/other.rs", "another binary", "yet another binary");
        w.edit("app/src/main.rs", "#[step]\nfn load", "/// Loads.\n#[step]\nfn load");
        w.edit("app/src/model.rs", "pub struct Model {\n    pub w", "pub struct Model {\n    /// Weights.\n    pub w");
    });
    assert!(rerun.is_empty(), "{rerun:?}");
}

#[test]
fn the_step_itself() {
    let ws = Workspace::new();
    let rerun = ws.rerun_by(|w| w.edit("app/src/main.rs", "rows.sort();", "rows.sort();\n    rows.reverse();"));
    assert_eq!(rerun, set(&["rank"]));
}
