use zenflow::prelude::*;

#[step]
fn source(#[param] n: i64) -> i64 {
    n
}

#[step]
fn scale(x: i64, #[param] factor: i64) -> i64 {
    x * factor
}

#[pipeline]
fn scaling() {
    let a = source(1);
    let b = source(2);
    scale(a, b);
}

fn main() {}
