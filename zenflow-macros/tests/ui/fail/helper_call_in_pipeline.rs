use zenflow::prelude::*;

#[step]
fn source(#[param] n: i64) -> i64 {
    n
}

fn double(n: i64) -> i64 {
    n * 2
}

#[pipeline]
fn helpers() {
    source(double(1));
}

fn main() {}
