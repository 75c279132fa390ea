use zenflow::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
struct Config {
    n: i64,
}

#[pipeline]
fn training(cfg: Config) {
    let _ = cfg.n;
}

fn main() {}
