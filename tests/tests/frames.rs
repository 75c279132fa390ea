//! Arrow tables as artifacts, through a pipeline binary built with the
//! `arrow` feature (`cargo test -p zenflow-tests --features arrow --test
//! frames`): stored as Parquet, described in the record, shown by
//! `artifacts show`, `head` and `cat`, exported as a file other tools read.

use zenflow_tests::project::{code, stderr, stdout, Project};

const BIN: &str = env!("CARGO_BIN_EXE_frames");

fn ok(p: &Project, args: &[&str]) -> String {
    let o = p.run(args);
    assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn a_table_is_stored_as_parquet_and_described_in_its_record() {
    let p = Project::new(BIN);
    assert!(ok(&p, &["run"]).contains("(2 executed"));
    assert!(ok(&p, &["run"]).contains("(0 executed, 2 cached"), "a table's cache key is its content");

    let show = ok(&p, &["artifacts", "show", "frames.table.output@1"]);
    assert!(show.contains("materializer: zenflow.parquet v1 (parquet)"), "{show}");
    assert!(show.contains("shape:        [100, 4]"), "{show}");
    let column = |name: &str| show.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_default().to_string();
    let x_line = column("x");
    let x: Vec<&str> = x_line.split_whitespace().collect();
    // 100 rows, every seventh null (i % 7 == 3): 14 nulls; the others i/4, mean 4271/86/4.
    assert_eq!(x, ["x", "Float64", "14", "0", "24.75", "12.415698"], "{show}");
    assert!(column("s").ends_with(" 5"), "five distinct strings: {show}");
    assert!(column("c").ends_with(" 3"), "three categories: {show}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(&p, &["artifacts", "show", "frames.table.output@1", "--json"])).unwrap();
    let table = &json["metadata"]["extra"]["table"];
    assert_eq!(table["rows"], 100);
    assert_eq!(table["columns"][1]["name"], "n");
    assert_eq!(
        (table["columns"][1]["min"].clone(), table["columns"][1]["max"].clone()),
        (serde_json::json!(-5.0), serde_json::json!(94.0))
    );
    assert_eq!(table["columns"][3]["data_type"], "Dictionary(Int32, Utf8)");

    let head = ok(&p, &["artifacts", "head", "frames.table.output@1", "-n", "3"]);
    assert_eq!(
        head,
        "a table of 100 rows × 4 columns\nx     n   s     c\n0.0   -5  id-0  red\n0.25  -4  id-1  green\n0.5   -3  id-2  blue\n(3 of 100 rows)\n"
    );
    let rows: serde_json::Value =
        serde_json::from_str(&ok(&p, &["artifacts", "head", "frames.table.output@1", "-n", "4", "--json"])).unwrap();
    assert_eq!(rows["rows"][3], serde_json::json!([null, -2, "id-3", "red"]), "a null stays null");
    assert_eq!(rows["total"], 100);
    assert!(ok(&p, &["artifacts", "cat", "frames.table.output@1"]).starts_with("a table of 100 rows × 4 columns\nx"));

    ok(&p, &["artifacts", "export", "frames.table.output@1", "-o", "t.parquet"]);
    let file = std::fs::read(p.path("t.parquet")).unwrap();
    assert!(file.starts_with(b"PAR1") && file.ends_with(b"PAR1"), "a Parquet file");

    let o = p.run(&["artifacts", "head", "frames.count.output@1"]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    assert!(stderr(&o).contains("is not a table"), "{}", stderr(&o));
}

#[test]
fn an_empty_table_is_an_artifact() {
    let p = Project::new(BIN);
    ok(&p, &["run", "--set", "rows=0"]);
    let head = ok(&p, &["artifacts", "head", "frames.table.output@latest"]);
    assert_eq!(head, "a table of 0 rows × 4 columns\nx  n  s  c\n");
    let count = ok(&p, &["artifacts", "cat", "frames.count.output@latest"]);
    assert_eq!(count.trim(), "0");
}
