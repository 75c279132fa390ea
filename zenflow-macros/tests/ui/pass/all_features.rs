//! Everything the macros accept, in one program.
use serde::{Deserialize, Serialize};
use zenflow::prelude::*;

#[derive(Serialize, Deserialize, Artifact)]
struct Table {
    rows: Vec<Vec<f64>>,
}

#[derive(Serialize, Deserialize, Artifact)]
struct Wrapper<T> {
    inner: T,
}

#[derive(Serialize, Deserialize, Clone, Default)]
struct Config {
    n: usize,
    name: String,
}

#[step(name = "load_table", version = "2", retries = 2, retry_backoff = "10ms", timeout = "5m")]
fn load(#[param] n: usize) -> Result<Table, std::io::Error> {
    Ok(Table { rows: vec![vec![0.0; 3]; n] })
}

#[step(outputs(left, right), cache = false)]
async fn split(table: Table, #[param] at: usize, ctx: &StepContext) -> (Table, Table) {
    ctx.log("splitting");
    let mut rows = table.rows;
    let right = rows.split_off(at.min(rows.len()));
    (Table { rows }, Table { rows: right })
}

#[step(timeout = 30, cache_ttl = "7d", resources(cpus = 0.5, memory = "512MiB", gpus = 1))]
fn count(table: Table) -> Wrapper<usize> {
    Wrapper { inner: table.rows.len() }
}

#[step]
fn total(counts: Vec<Wrapper<usize>>) -> usize {
    counts.iter().map(|c| c.inner).sum()
}

#[step]
fn announce(#[param] message: String) {
    println!("{message}");
}

fn helper(n: usize) -> usize {
    n * 2
}

#[pipeline]
fn everything(cfg: &Config) {
    #[plain]
    let n = helper(cfg.n);
    let start = announce(cfg.name.clone());
    let table = load(n).after(start);
    let (left, right) = split(table, 2);
    let counts = vec![count(left), count(right)];
    let sum = total(&counts);
    announce(String::from("done")).after((sum, &counts));
}

#[pipeline]
fn without_config() {
    announce("hi".to_string());
}

fn main() {
    let plan = everything.plan(&Config::default()).unwrap();
    assert_eq!(plan.steps.len(), 7);
    let counted = plan.steps.iter().find(|s| s.step == "count").unwrap();
    assert_eq!(counted.options.resources.memory_bytes, Some(512 << 20));
    assert_eq!(counted.options.resources.cpus, Some(0.5));
    assert_eq!(without_config.name(), "without_config");
    assert_eq!(helper(2), 4);
}
